// Integration tests: the real `edgelm serve` binary with the bundled
// stories260K model, driven by the official `openai` client and raw HTTP.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import OpenAI from 'openai';
import { startServer, readSse, metric, sleep } from './helpers.mjs';

const PROMPT = 'Once upon a time';

describe('edgelm serve (default options)', () => {
  let server;
  let client;
  before(async () => {
    server = await startServer();
    client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => {
    const { code } = await server.stop();
    assert.equal(code, 0, 'SIGTERM exits 0');
  });

  test('GET /health and /v1/models', async () => {
    const health = await (await fetch(`${server.url}/health`)).json();
    assert.equal(health.status, 'ok');
    const models = await client.models.list();
    assert.equal(models.data.length, 1);
    assert.equal(models.data[0].id, 'stories260K');
    assert.equal(models.data[0].object, 'model');
    const one = await client.models.retrieve('stories260K');
    assert.equal(one.id, 'stories260K');
  });

  test('chat completion (non-streaming) has the OpenAI shape', async () => {
    const completion = await client.chat.completions.create({
      model: 'stories260K', messages: [{ role: 'user', content: PROMPT }], max_tokens: 12, temperature: 0,
    });
    assert.match(completion.id, /^chatcmpl-/);
    assert.equal(completion.object, 'chat.completion');
    assert.equal(typeof completion.created, 'number');
    assert.equal(completion.model, 'stories260K');
    assert.equal(completion.choices.length, 1);
    const choice = completion.choices[0];
    assert.equal(choice.index, 0);
    assert.equal(choice.message.role, 'assistant');
    assert.ok(choice.message.content.length > 0);
    assert.equal(choice.finish_reason, 'length');
    assert.equal(completion.usage.completion_tokens, 12);
    assert.ok(completion.usage.prompt_tokens > 0);
    assert.equal(completion.usage.total_tokens, completion.usage.prompt_tokens + 12);
  });

  test('greedy and seeded sampling are reproducible', async () => {
    const ask = (extra) => client.completions.create({ prompt: PROMPT, max_tokens: 20, ...extra });
    const [a, b] = await Promise.all([ask({ temperature: 0 }), ask({ temperature: 0 })]);
    assert.equal(a.choices[0].text, b.choices[0].text);
    const c = await ask({ temperature: 1, seed: 7 });
    const d = await ask({ temperature: 1, seed: 7 });
    assert.equal(c.choices[0].text, d.choices[0].text);
  });

  test('text completion with echo', async () => {
    const completion = await client.completions.create({ prompt: PROMPT, max_tokens: 5, temperature: 0, echo: true });
    assert.equal(completion.object, 'text_completion');
    assert.match(completion.id, /^cmpl-/);
    assert.ok(completion.choices[0].text.startsWith(PROMPT));
    assert.equal(completion.usage.completion_tokens, 5);
  });

  test('streaming chat matches non-streaming and ends with [DONE]', async () => {
    const params = { messages: [{ role: 'user', content: PROMPT }], max_tokens: 16, temperature: 0 };
    const whole = await client.chat.completions.create(params);
    const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let roleSeen = false;
    let finish = null;
    let usage = null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      if (chunk.choices.length === 0) continue;
      const choice = chunk.choices[0];
      if (choice.delta.role) roleSeen = true;
      text += choice.delta.content ?? '';
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    assert.ok(roleSeen, 'first chunk carries the role');
    assert.ok(chunks >= 3);
    assert.equal(text, whole.choices[0].message.content);
    assert.equal(finish, 'length');
    assert.deepEqual(usage, whole.usage);

    const raw = await fetch(`${server.baseURL}/chat/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ ...params, stream: true }),
    });
    assert.equal(raw.status, 200);
    assert.match(raw.headers.get('content-type'), /^text\/event-stream/);
    const events = await readSse(raw);
    assert.equal(events.at(-1), '[DONE]');
    assert.ok(events.slice(0, -1).every((e) => !JSON.parse(e).usage), 'no usage without include_usage');
  });

  test('streaming text completion', async () => {
    const stream = await client.completions.create({ prompt: PROMPT, max_tokens: 8, temperature: 0, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    const whole = await client.completions.create({ prompt: PROMPT, max_tokens: 8, temperature: 0 });
    assert.equal(text, whole.choices[0].text);
  });

  test('stop strings end generation and are not returned', async () => {
    const free = await client.completions.create({ prompt: PROMPT, max_tokens: 40, temperature: 0 });
    const text = free.choices[0].text;
    const word = text.trim().split(/\s+/)[2];  // a word the model is going to say
    const stopped = await client.completions.create({ prompt: PROMPT, max_tokens: 40, temperature: 0, stop: [word] });
    assert.equal(stopped.choices[0].finish_reason, 'stop');
    assert.ok(!stopped.choices[0].text.includes(word));
    assert.ok(text.startsWith(stopped.choices[0].text));
  });

  test('embeddings: float and base64 (the client default)', async () => {
    const floats = await client.embeddings.create({ input: ['hello there', 'a cat'], encoding_format: 'float' });
    assert.equal(floats.object, 'list');
    assert.equal(floats.data.length, 2);
    const v = floats.data[0].embedding;
    assert.ok(v.length > 0);
    const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
    assert.ok(Math.abs(norm - 1) < 1e-3, `unit norm, got ${norm}`);
    assert.ok(floats.usage.prompt_tokens > 0);
    const b64 = await client.embeddings.create({ input: ['hello there', 'a cat'] });
    for (let i = 0; i < v.length; i++) assert.ok(Math.abs(b64.data[0].embedding[i] - v[i]) < 1e-6);
  });

  test('errors: OpenAI shape and status', async () => {
    const post = (route, body, headers = {}) => fetch(`${server.baseURL}${route}`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body,
    });
    const expectError = async (response, status, param) => {
      assert.equal(response.status, status);
      const json = await response.json();
      assert.equal(typeof json.error.message, 'string');
      assert.equal(typeof json.error.type, 'string');
      assert.ok('param' in json.error && 'code' in json.error);
      if (param !== undefined) assert.equal(json.error.param, param);
      return json.error;
    };
    await expectError(await post('/chat/completions', '{"messages": ['), 400);
    await expectError(await post('/chat/completions', '[1,2]'), 400);
    await expectError(await post('/chat/completions', JSON.stringify({ messages: 'hi' })), 400, 'messages');
    await expectError(await post('/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 'x' }], temperature: 'hot' })), 400, 'temperature');
    await expectError(await post('/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 'x' }], n: 2 })), 400, 'n');
    await expectError(await post('/completions', JSON.stringify({ prompt: 'x', max_tokens: 0 })), 400, 'max_tokens');
    await expectError(await post('/completions', JSON.stringify({ prompt: 'x', max_tokens: 1000000 })), 400, 'max_tokens');
    const long = await expectError(await post('/completions', JSON.stringify({ prompt: 'hello '.repeat(2000) })), 400, 'prompt');
    assert.equal(long.code, 'context_length_exceeded');
    const unknown = await expectError(await post('/completions', JSON.stringify({ prompt: 'x', model: 'gpt-4' })), 404, 'model');
    assert.equal(unknown.code, 'model_not_found');
    const json = await expectError(await post('/completions', JSON.stringify({ prompt: 'x', response_format: { type: 'json_object' } })), 400, 'response_format');
    assert.match(json.message, /json_object/);
    await expectError(await post('/completions', '{"a":' + '['.repeat(5000)), 400);
    await expectError(await post('/completions', Buffer.from('{"prompt": "a\xff"}', 'latin1')), 400);
    const big = await expectError(await post('/completions', JSON.stringify({ prompt: 'x'.repeat(10 * 1024 * 1024) })), 413);
    assert.equal(big.code, 'request_too_large');
    await expectError(await fetch(`${server.url}/no/such/route`), 404);

    // The openai client surfaces the same errors as typed exceptions.
    await assert.rejects(
      client.chat.completions.create({ messages: [{ role: 'user', content: 'x' }], model: 'nope' }),
      (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
    await assert.rejects(
      client.completions.create({ prompt: 'x', top_p: 7 }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'top_p');
    assert.equal((await (await fetch(`${server.url}/health`)).json()).status, 'ok');
  });

  test('malformed HTTP never takes the server down', async () => {
    const { hostname, port } = new URL(server.url);
    // Resolves with whatever came back once the response headers are in, the
    // server closed, or 3 s passed. `end` half-closes like a client that left
    // (httplib then treats the socket as dead and may not answer: that is fine).
    const exchange = (payload, { end = false } = {}) => new Promise((resolve) => {
      const socket = net.connect(Number(port), hostname);
      let reply = '';
      const finish = () => { socket.destroy(); resolve(reply); };
      socket.on('data', (d) => { reply += d; if (reply.includes('\r\n\r\n')) finish(); });
      socket.on('close', finish);
      socket.on('error', finish);
      socket.write(payload);
      if (end) socket.end();
      setTimeout(finish, 3000);
    });
    assert.match(await exchange('GARBAGE\r\n\r\n'), /^HTTP\/1\.1 400/);
    assert.match(await exchange(`GET /${'a'.repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`), /^HTTP\/1\.1 (414|400)/);
    // Truncated body: the client promises 100 bytes, sends 10 and leaves.
    await exchange('POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"prompt":', { end: true });
    // Bad chunked encoding.
    assert.match(await exchange('POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n'), /^HTTP\/1\.1 400/);
    // Headers that never end.
    await exchange(`GET /health HTTP/1.1\r\n${'X-A: b\r\n'.repeat(2000)}`, { end: true });
    const health = await fetch(`${server.url}/health`);
    assert.equal(health.status, 200);
  });

  test('GET / serves the chat page', async () => {
    const page = await fetch(server.url);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type'), /text\/html/);
    const html = await page.text();
    assert.match(html, /<script src="\/app.js">/);
    const js = await fetch(`${server.url}/app.js`);
    assert.match(js.headers.get('content-type'), /javascript/);
    assert.ok((await js.text()).includes('/v1/chat/completions'));
    assert.equal(page.headers.get('access-control-allow-origin'), null, 'CORS is off by default');
  });

  test('/metrics exposes Prometheus counters', async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    for (const name of ['edgelm_requests_total', 'edgelm_prompt_tokens_total', 'edgelm_completion_tokens_total',
      'edgelm_time_to_first_token_seconds_bucket', 'edgelm_decode_tokens_per_second_bucket', 'edgelm_queue_depth',
      'edgelm_errors_total', 'edgelm_slots']) {
      assert.ok(text.includes(name), name);
    }
    assert.ok((await metric(server, 'edgelm_completion_tokens_total')) > 0);
    assert.match(text, /edgelm_requests_total\{route="\/v1\/chat\/completions",status="200"\} \d+/);
  });
});

describe('edgelm serve: slots, queue, disconnects', () => {
  // Tokens are slowed to 20 ms so requests overlap deterministically.
  let server;
  before(async () => {
    server = await startServer({ args: ['--parallel', '1', '--queue-limit', '1', '--debug-token-delay-ms', '20'] });
  });
  after(async () => { await server.stop(); });

  const streamRequest = (maxTokens, signal) => fetch(`${server.baseURL}/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, signal,
    body: JSON.stringify({ prompt: PROMPT, max_tokens: maxTokens, stream: true, temperature: 0 }),
  });

  test('a full queue answers 429', async () => {
    const running = streamRequest(30);   // takes the slot
    await sleep(100);
    const queued = streamRequest(5);     // waits in the queue
    await sleep(100);
    const rejected = await streamRequest(5);
    assert.equal(rejected.status, 429);
    const error = (await rejected.json()).error;
    assert.equal(error.type, 'rate_limit_error');
    assert.equal(error.code, 'queue_full');
    for (const response of [await running, await queued]) {
      assert.equal(response.status, 200);
      assert.equal((await readSse(response)).at(-1), '[DONE]');
    }
  });

  test('a client that disconnects mid-stream frees its slot at once', async () => {
    const cancelledBefore = await metric(server, 'edgelm_requests_cancelled_total');
    const controller = new AbortController();
    const response = await streamRequest(400, controller.signal);  // 400 tokens * 20 ms = 8 s
    assert.equal(response.status, 200);
    const reader = response.body.getReader();
    await reader.read();  // the first chunk arrived: generation is running
    await sleep(100);
    controller.abort();
    const started = Date.now();
    // With one slot, this can only run once the abandoned generation stopped.
    const next = await fetch(`${server.baseURL}/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ prompt: PROMPT, max_tokens: 3 }),
    });
    assert.equal(next.status, 200);
    assert.equal((await next.json()).usage.completion_tokens, 3);  // headers come early; wait for the body
    const elapsed = Date.now() - started;
    assert.ok(elapsed < 3000, `slot freed after ${elapsed} ms`);
    assert.equal(await metric(server, 'edgelm_requests_cancelled_total'), cancelledBefore + 1);
    assert.equal(await metric(server, 'edgelm_slots_busy'), 0);
  });
});

describe('edgelm serve: API key and CORS', () => {
  test('--api-key guards every route but /health', async () => {
    const server = await startServer({ args: ['--api-key', 'sekret'] });
    try {
      assert.equal((await fetch(`${server.url}/health`)).status, 200);
      for (const route of ['/v1/models', '/metrics']) {
        const response = await fetch(`${server.url}${route}`);
        assert.equal(response.status, 401, route);
        assert.equal((await response.json()).error.code, 'invalid_api_key');
      }
      const post = await fetch(`${server.baseURL}/completions`, {
        method: 'POST', body: JSON.stringify({ prompt: 'x', max_tokens: 2 }), headers: { Authorization: 'Bearer wrong' },
      });
      assert.equal(post.status, 401);
      const bad = new OpenAI({ baseURL: server.baseURL, apiKey: 'wrong', maxRetries: 0 });
      await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError);
      const good = new OpenAI({ baseURL: server.baseURL, apiKey: 'sekret', maxRetries: 0 });
      const completion = await good.completions.create({ prompt: 'x', max_tokens: 2 });
      assert.equal(completion.usage.completion_tokens, 2);
    } finally {
      await server.stop();
    }
  });

  test('EDGELM_API_KEY works like --api-key', async () => {
    const server = await startServer({ env: { EDGELM_API_KEY: 'from-env' } });
    try {
      assert.equal((await fetch(`${server.baseURL}/models`)).status, 401);
      const ok = await fetch(`${server.baseURL}/models`, { headers: { Authorization: 'Bearer from-env' } });
      assert.equal(ok.status, 200);
    } finally {
      await server.stop();
    }
  });

  test('--cors-origin adds CORS headers and answers preflights', async () => {
    const server = await startServer({ args: ['--cors-origin', '*'] });
    try {
      const response = await fetch(`${server.baseURL}/models`, { headers: { Origin: 'http://example.com' } });
      assert.equal(response.headers.get('access-control-allow-origin'), '*');
      const preflight = await fetch(`${server.baseURL}/chat/completions`, {
        method: 'OPTIONS',
        headers: { Origin: 'http://example.com', 'Access-Control-Request-Method': 'POST' },
      });
      assert.equal(preflight.status, 204);
      assert.match(preflight.headers.get('access-control-allow-headers'), /Authorization/);
    } finally {
      await server.stop();
    }
  });
});

describe('edgelm serve: shutdown', () => {
  test('SIGTERM stops accepting, cancels in-flight work after the deadline, exits 0', async () => {
    const server = await startServer({ args: ['--debug-token-delay-ms', '20', '--shutdown-timeout', '1'] });
    const response = await fetch(`${server.baseURL}/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ prompt: PROMPT, max_tokens: 400, stream: true }),  // ~8 s
    });
    const body = readSse(response);
    await sleep(200);
    const signalled = Date.now();
    server.proc.kill('SIGTERM');
    const events = await body;
    assert.equal(events.at(-1), '[DONE]', 'the stream is finished properly');
    const { code } = await server.exited;
    assert.equal(code, 0);
    assert.ok(Date.now() - signalled < 6000, 'exits within the deadline');
    await assert.rejects(fetch(`${server.url}/health`));
  });
});
