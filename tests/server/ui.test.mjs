// Browser test of the chat page at GET /: headless Chromium (Debian's
// /usr/bin/chromium, or $CHROMIUM) driven by playwright-core.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { startServer, metric, sleep } from './helpers.mjs';

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const LAUNCH_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

let server;
let browser;

before(async () => {
  // 30 ms per token: slow enough to watch the text stream and press stop.
  server = await startServer({ args: ['--debug-token-delay-ms', '30'] });
  if (existsSync(executablePath)) {
    browser = await chromium.launch({ executablePath, args: LAUNCH_ARGS, headless: true });
  }
});

after(async () => {
  if (browser) await browser.close();
  await server.stop();
});

test('chat page streams a reply, stops on demand and keeps the conversation', async (t) => {
  if (!browser) {
    t.skip(`no Chromium at ${executablePath} (apt-get install chromium)`);
    return;
  }
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e));
  await page.goto(server.url);
  await page.locator('#model-name', { hasText: 'stories260K' }).waitFor();

  // Send a message; the reply must grow while streaming.
  await page.fill('#prompt', 'Once upon a time');
  await page.click('#send');
  const reply = page.locator('.message.assistant .content').last();
  await page.waitForFunction(() => {
    const nodes = document.querySelectorAll('.message.assistant .content');
    return nodes.length && nodes[nodes.length - 1].textContent.length > 0;
  });
  const early = (await reply.textContent()).length;
  await page.waitForFunction((n) => {
    const nodes = document.querySelectorAll('.message.assistant .content');
    return nodes[nodes.length - 1].textContent.length > n;
  }, early);
  assert.equal(await page.isEnabled('#stop'), true, 'stop is enabled while generating');
  assert.equal(await page.isEnabled('#send'), false);

  // Stop: the text stops growing and the server frees the slot.
  const cancelledBefore = await metric(server, 'edgelm_requests_cancelled_total');
  await page.click('#stop');
  await page.locator('#status', { hasText: 'stopped' }).waitFor();
  const stoppedText = await reply.textContent();
  await sleep(300);
  assert.equal(await reply.textContent(), stoppedText, 'no text after stop');
  assert.equal(await page.isEnabled('#send'), true);
  for (let i = 0; i < 50 && (await metric(server, 'edgelm_slots_busy')) !== 0; i++) await sleep(50);
  assert.equal(await metric(server, 'edgelm_slots_busy'), 0);
  assert.equal(await metric(server, 'edgelm_requests_cancelled_total'), cancelledBefore + 1);

  // Settings apply: a short max_tokens finishes on its own.
  await page.click('#toggle-settings');
  await page.fill('#max_tokens', '4');
  await page.fill('#system', 'Tell a story.');
  await page.fill('#prompt', 'The dog');
  await page.press('#prompt', 'Enter');
  await page.locator('#status', { hasText: 'done (length)' }).waitFor();
  assert.equal(await page.locator('.message').count(), 4);

  // The conversation survives a reload (localStorage).
  await page.reload();
  await page.locator('.message').nth(3).waitFor();
  assert.equal(await page.locator('.message.user').count(), 2);
  assert.equal((await page.locator('.message.user .content').first().textContent()), 'Once upon a time');
  assert.equal(await page.inputValue('#max_tokens'), '4');

  await page.click('#clear');
  assert.equal(await page.locator('.message').count(), 0);
  assert.deepEqual(pageErrors, []);
  await page.close();
});
