// What the browser tests share: their command line, timed steps, waiting, child processes
// with logs, a throwaway redis-server and Debian's chromium.

import { spawn } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { chromium } from 'playwright-core';

// --name value pairs of the command line.
export const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
export const outDir = path.resolve(args.out || '.');

const started = Date.now();
export const step = (text) => console.log(`[${((Date.now() - started) / 1000).toFixed(2)}s] ${text}`);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Polls `fn` every 50 ms until it returns true; the last error thrown is in the timeout's message.
export async function until(what, fn, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await fn()) return;
    } catch (e) {
      last = e;
    }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

function redisPing(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.setTimeout(500, () => s.destroy());
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      resolve(d.toString().startsWith('+PONG'));
      s.destroy();
    });
    s.on('error', () => resolve(false));
    s.on('close', () => resolve(false));
  });
}

// A child process whose output goes to a log file in the temporary directory.
export class child {
  constructor(name, argv, env, logDir) {
    this.name = name;
    this.logPath = path.join(logDir, `${name}.log`);
    const log = createWriteStream(this.logPath, { flags: 'a' });
    this.proc = spawn(argv[0], argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout.pipe(log);
    this.proc.stderr.pipe(log);
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code ?? 128)));
  }
  async stop(timeoutMs = 10000) {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.exited;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
  output() {
    try {
      return readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }
}

// A redis-server without persistence on a free port, answering PING; added to `children`.
export async function startRedis(dir, children) {
  const port = await freePort();
  const redis = new child('redis-server',
    ['redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    process.env, dir);
  children.push(redis);
  await until('redis-server PING', () => redisPing(port));
  return port;
}

// The stargazer environment of a test: the offline echo model, no config file of the machine.
export function stargazerEnv(extra = {}) {
  const env = { ...process.env, SG_LLM_PROVIDER: 'echo', SG_LOG_LEVEL: 'info', ...extra };
  delete env.SG_LLM_API_KEY;
  delete env.SG_CONFIG;
  return env;
}

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.SG_CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--no-first-run', '--disable-sync'],
  });
}
