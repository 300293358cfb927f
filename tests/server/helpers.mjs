// Starts the real `edgelm serve` binary on a free loopback port for a test.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const defaultModel = path.join(repoRoot, 'models/stories260K/stories260K.bin');

// $EDGELM_BIN, else the first build folder that has one.
export function serverBinary() {
  if (process.env.EDGELM_BIN) return path.resolve(process.env.EDGELM_BIN);
  for (const dir of ['build', 'build-server', 'build-release']) {
    const candidate = path.join(repoRoot, dir, 'bin/edgelm');
    if (existsSync(candidate)) return candidate;
  }
  throw new Error('edgelm binary not found: build it (cmake --build build --target edgelm_cli) or set EDGELM_BIN');
}

// Resolves once the server prints its address. `args` are extra serve flags.
export async function startServer({ args = [], env = {}, model = defaultModel } = {}) {
  const proc = spawn(serverBinary(), ['serve', '-m', model, '--port', '0', '--quiet', ...args], {
    env: { ...process.env, EDGELM_API_KEY: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const url = await new Promise((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => reject(new Error(`server did not start in 30 s: ${stderr}`)), 30000);
    proc.stdout.on('data', (d) => {
      stdout += d;
      const match = stdout.match(/listening on (http:\/\/[^\s]+)/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening: ${stderr}`));
    });
  });
  return {
    url,
    baseURL: `${url}/v1`,
    proc,
    exited,
    stderr: () => stderr,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}

// Reads a streaming response body to the end and returns the SSE data payloads.
export async function readSse(response) {
  const text = await response.text();
  return text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
}

export async function metric(server, name) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
