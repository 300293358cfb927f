// Bounded loopback load test for `edgelm serve`.
//
//   node load.mjs [--requests 200] [--concurrency 8] [--max-tokens 32] [--parallel 2]
//                 [--queue-limit 16] [--model PATH] [--timeout-s 300]
//
// Starts its own server, measures a single-stream baseline, then sends
// `requests` streaming chat completions from `concurrency` clients. Reports
// requests/s, p50/p99 time to first token, aggregate vs single-stream
// tokens/s, and checks that no request was lost and that the server's RSS
// stayed flat. Exits non-zero if a check fails; never runs unbounded.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startServer, defaultModel, metric } from './helpers.mjs';

const { values: opts } = parseArgs({
  options: {
    requests: { type: 'string', default: '200' },
    concurrency: { type: 'string', default: '8' },
    'max-tokens': { type: 'string', default: '32' },
    parallel: { type: 'string', default: '2' },
    'queue-limit': { type: 'string', default: '16' },
    model: { type: 'string', default: defaultModel },
    'timeout-s': { type: 'string', default: '300' },
  },
});
const REQUESTS = Number(opts.requests);
const CONCURRENCY = Number(opts.concurrency);
const MAX_TOKENS = Number(opts['max-tokens']);

const prompts = ['Once upon a time', 'The little dog', 'Lily and Ben went to the park', 'One day, a cat',
  'Tom had a red ball', 'The sun was shining'];

function rssKiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(status.match(/VmRSS:\s+(\d+)/)[1]);
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// One streaming request; resolves with its timings, never rejects.
async function streamOnce(server, i) {
  const started = performance.now();
  const result = { ok: false, status: 0, ttftMs: NaN, totalMs: NaN, tokens: 0, error: '' };
  try {
    const response = await fetch(`${server.baseURL}/chat/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        messages: [{ role: 'user', content: prompts[i % prompts.length] }],
        max_tokens: MAX_TOKENS, temperature: 0.8, seed: i, stream: true, stream_options: { include_usage: true },
      }),
    });
    result.status = response.status;
    if (!response.ok) {
      result.error = await response.text();
      return result;
    }
    const decoder = new TextDecoder();
    let buffer = '';
    let done = false;
    for await (const bytes of response.body) {
      buffer += decoder.decode(bytes, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const data = buffer.slice(6, end);  // strip "data: "
        buffer = buffer.slice(end + 2);
        if (data === '[DONE]') { done = true; continue; }
        const chunk = JSON.parse(data);
        if (chunk.usage) result.tokens = chunk.usage.completion_tokens;
        if (chunk.choices?.[0]?.delta?.content && Number.isNaN(result.ttftMs)) {
          result.ttftMs = performance.now() - started;
        }
      }
    }
    result.totalMs = performance.now() - started;
    result.ok = done && result.tokens > 0;
    if (!done) result.error = 'stream ended without [DONE]';
  } catch (error) {
    result.error = String(error);
  }
  return result;
}

async function main() {
  const server = await startServer({
    model: opts.model, args: ['--parallel', opts.parallel, '--queue-limit', opts['queue-limit']],
  });
  const watchdog = setTimeout(() => {
    console.error(`load test exceeded ${opts['timeout-s']} s; aborting`);
    server.proc.kill('SIGKILL');
    process.exit(2);
  }, Number(opts['timeout-s']) * 1000);
  const failures = [];
  try {
    // Warm-up, then the single-stream baseline.
    for (let i = 0; i < 5; i++) await streamOnce(server, i);
    const rssBefore = rssKiB(server.proc.pid);
    const baseline = [];
    for (let i = 0; i < 10; i++) baseline.push(await streamOnce(server, i));
    const baseTokens = baseline.reduce((s, r) => s + r.tokens, 0);
    const baseSeconds = baseline.reduce((s, r) => s + r.totalMs, 0) / 1000;
    const singleTokS = baseTokens / baseSeconds;

    // The concurrent run: CONCURRENCY clients share a counter of REQUESTS.
    const results = [];
    let next = 0;
    const started = performance.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < REQUESTS) {
        const i = next++;
        results.push(await streamOnce(server, i));
      }
    }));
    const seconds = (performance.now() - started) / 1000;
    const rssAfter = rssKiB(server.proc.pid);

    const ok = results.filter((r) => r.ok);
    const ttft = ok.map((r) => r.ttftMs).filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
    const tokens = ok.reduce((s, r) => s + r.tokens, 0);
    const serverTokens = await metric(server, 'edgelm_completion_tokens_total');
    const report = {
      requests: REQUESTS, concurrency: CONCURRENCY, parallel: Number(opts.parallel), max_tokens: MAX_TOKENS,
      succeeded: ok.length,
      failed: results.length - ok.length,
      seconds: +seconds.toFixed(2),
      requests_per_s: +(results.length / seconds).toFixed(1),
      ttft_p50_ms: +percentile(ttft, 50).toFixed(1),
      ttft_p99_ms: +percentile(ttft, 99).toFixed(1),
      aggregate_tokens_per_s: +(tokens / seconds).toFixed(1),
      single_stream_tokens_per_s: +singleTokS.toFixed(1),
      speedup_vs_single_stream: +((tokens / seconds) / singleTokS).toFixed(2),
      rss_before_mib: +(rssBefore / 1024).toFixed(1),
      rss_after_mib: +(rssAfter / 1024).toFixed(1),
      server_completion_tokens_total: serverTokens,
    };
    console.log(JSON.stringify(report, null, 2));

    if (results.length !== REQUESTS) failures.push(`${REQUESTS - results.length} requests never finished`);
    if (ok.length !== REQUESTS) {
      const sample = results.find((r) => !r.ok);
      failures.push(`${REQUESTS - ok.length} requests failed (e.g. status ${sample.status}: ${sample.error.slice(0, 200)})`);
    }
    // Tokens the clients saw must all be accounted for by the server.
    const clientTokens = tokens + baseTokens + 0;
    if (serverTokens < clientTokens) failures.push(`server counted ${serverTokens} tokens < clients' ${clientTokens}`);
    // RSS flat: allow allocator noise, not growth with the request count.
    const growthKiB = rssAfter - rssBefore;
    if (growthKiB > Math.max(16 * 1024, rssBefore * 0.25)) failures.push(`RSS grew by ${(growthKiB / 1024).toFixed(1)} MiB`);
  } finally {
    clearTimeout(watchdog);
    const { code } = await server.stop();
    if (code !== 0) failures.push(`server exited with ${code}`);
  }
  if (failures.length) {
    console.error(`FAIL: ${failures.join('; ')}`);
    process.exit(1);
  }
  console.log('OK: no request lost, RSS flat');
}

main();
