// Browser test of the web chat: Debian's chromium driven by playwright-core against a
// real `stargazer --role=standalone` (echo worker) and a real redis-server, both started
// here on free ports. It sets a name, joins, sends a message and sees the bot's reply,
// reloads and sees the history, restarts stargazer and sees the page reconnect and work
// again, and saves a screenshot.
//
//   node webchat.test.mjs --binary build/debug/roles/stargazer --out build/debug/test
//   node webchat.test.mjs --url http://127.0.0.1:8080/ --out /tmp   # against a running server (no restart step)
//
// Run by CTest through run.sh (label `browser`).

import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { args, outDir, step, sleep, freePort, until, child, startRedis, stargazerEnv, launchChromium } from './harness.mjs';


const tmp = mkdtempSync(path.join(os.tmpdir(), 'sg-browser-'));
const children = [];
let browser;

async function startStargazer(httpPort, redisPort) {
  const env = stargazerEnv();
  const p = new child(
    'stargazer',
    [path.resolve(args.binary), '--role=standalone', `--redis-url=redis://127.0.0.1:${redisPort}`,
      `--http-port=${httpPort}`, '--node-id=browser-test'],
    env,
    tmp,
  );
  children.push(p);
  await until('stargazer /readyz', async () => (await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status === 200);
  return p;
}

async function main() {
  let url = args.url;
  let stargazer;
  let httpPort;
  let redisPort;
  if (!url) {
    if (!args.binary) throw new Error('give --binary <stargazer> or --url <page>');
    redisPort = await startRedis(tmp, children);
    httpPort = await freePort();
    stargazer = await startStargazer(httpPort, redisPort);
    url = `http://127.0.0.1:${httpPort}/`;
    step(`redis-server on ${redisPort}, stargazer standalone on ${httpPort}`);
  }

  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1180, height: 760 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  step('browser launched');

  await page.goto(url);
  const connection = page.locator('#connection');
  await connection.and(page.locator('[data-state="connected"]')).waitFor({ timeout: 10000 });
  step('page loaded and connected');

  // Accessible structure: labelled fields, a live log for messages.
  for (const id of ['name-input', 'room-input', 'composer-text']) {
    if ((await page.locator(`label[for="${id}"]`).count()) !== 1) throw new Error(`#${id} has no label`);
  }
  if ((await page.locator('#messages').getAttribute('role')) !== 'log') throw new Error('#messages is not a log');
  if ((await page.locator('#messages').getAttribute('aria-live')) !== 'polite') throw new Error('#messages is not live');

  // Choose a name with the keyboard only and join the default room.
  const room = `browser-${Date.now().toString(36)}`;
  await page.locator('#name-input').focus();
  await page.keyboard.type('Ada');
  await page.locator('#room-input').fill(room);
  await page.keyboard.press('Enter');
  await page.locator('#room-title').filter({ hasText: `# ${room}` }).waitFor();
  if (!(await page.locator('#composer-text').evaluate((e) => document.activeElement === e)))
    throw new Error('the message box does not have the focus after joining');
  step(`joined #${room}`);

  const send = async (text) => {
    await page.locator('#composer-text').fill(text);
    await page.keyboard.press('Enter');
    await page.locator('#messages li.message.mine .text', { hasText: text }).waitFor({ timeout: 10000 });
    await page.locator('#messages li.message.bot .text', { hasText: text }).waitFor({ timeout: 10000 });
  };
  await send('Hello from the browser test');
  step('message sent, the bot replied');
  await page.locator('#typing').filter({ hasText: /^$/ }).waitFor({ timeout: 10000 });

  await page.reload();
  await connection.and(page.locator('[data-state="connected"]')).waitFor({ timeout: 10000 });
  await page.locator('#room-title').filter({ hasText: `# ${room}` }).waitFor();
  await page.locator('#messages li.message.bot .text', { hasText: 'Hello from the browser test' }).waitFor();
  if ((await page.locator('#messages li.message').count()) !== 2) throw new Error('history after reload is not 2 messages');
  if ((await page.locator('#name-input').inputValue()) !== 'Ada') throw new Error('the name was not kept');
  step('reloaded: name and history are back');

  if (stargazer) {
    const code = await stargazer.stop();
    if (code !== 0) throw new Error(`stargazer exited with ${code}:\n${stargazer.output()}`);
    await connection.and(page.locator('[data-state="offline"]')).waitFor({ timeout: 10000 });
    step(`stargazer stopped; the page shows: ${await connection.innerText()}`);
    stargazer = await startStargazer(httpPort, redisPort);
    await connection.and(page.locator('[data-state="connected"]')).waitFor({ timeout: 20000 });
    await page.locator('#composer-text:not([disabled])').waitFor();
    step('stargazer restarted; the page reconnected by itself');
    await send('Still here after the restart');
    if ((await page.locator('#messages li.message').count()) !== 4) throw new Error('expected 4 messages after the restart');
    step('message after the restart answered');
  }

  mkdirSync(outDir, { recursive: true });
  const shot = path.join(outDir, 'webchat.png');
  await page.screenshot({ path: shot });
  step(`screenshot: ${shot}`);

  const origin = new URL(url).origin;
  const foreign = requests.filter((r) => !r.startsWith(origin) && !r.startsWith(origin.replace('http', 'ws')));
  if (foreign.length > 0) throw new Error(`the page fetched from elsewhere: ${foreign.join(', ')}`);
  const real = problems.filter((p) => !/WebSocket connection to .* failed|ERR_CONNECTION_REFUSED/.test(p));
  if (real.length > 0) throw new Error(real.join('\n'));
}

let failed = false;
try {
  await main();
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.stack || e}`);
  for (const c of children) console.error(`---- ${c.name} output ----\n${c.output().slice(-4000)}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const c of children.reverse()) await c.stop();
  rmSync(tmp, { recursive: true, force: true });
}
step(failed ? 'webchat browser test failed' : 'webchat browser test passed');
process.exit(failed ? 1 : 0);
