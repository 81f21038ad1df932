// Browser test of web chat sign-in (docs/webchat.md, "Sign-in"): Debian's chromium driven
// by playwright-core against a real `stargazer --role=standalone --webchat-auth invite`
// (echo worker) and a real redis-server, both started here on free ports. A browser
// without a session is refused and told to use its link; an invite link signs a browser
// in (HttpOnly, SameSite=Strict cookie; the name is the invite's) and it chats; the same
// link in another browser is refused; revoking the person throws the first browser out.
//
//   node webchat_auth.test.mjs --binary build/debug/roles/stargazer --out build/debug/test
//
// Run by CTest through run.sh (label `browser`), after webchat.test.mjs.

import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { args, outDir, step, sleep, freePort, until, child, startRedis, stargazerEnv, launchChromium } from './harness.mjs';

const ADMIN_KEY = 'browser-test-admin-key';

// A WebSocket handshake without a cookie, as a program would send it: status and body.
function bareUpgrade(port) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, path: '/webchat/ws',
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode, body: '' });
    });
    req.on('response', (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'sg-browser-auth-'));
const children = [];
let browser;

async function main() {
  if (!args.binary) throw new Error('give --binary <stargazer>');
  const redisPort = await startRedis(tmp, children);
  const httpPort = await freePort();
  const env = stargazerEnv({ SG_ADMIN_API_KEY: ADMIN_KEY });
  const stargazer = new child('stargazer',
    [path.resolve(args.binary), '--role=standalone', `--redis-url=redis://127.0.0.1:${redisPort}`,
      `--http-port=${httpPort}`, '--node-id=browser-auth-test', '--webchat-auth=invite'],
    env, tmp);
  children.push(stargazer);
  const origin = `http://127.0.0.1:${httpPort}`;
  await until('stargazer /readyz', async () => (await fetch(`${origin}/readyz`)).status === 200);
  step(`redis-server on ${redisPort}, stargazer standalone (sign-in by invite) on ${httpPort}`);

  const adminCall = async (method, route, body) => {
    const res = await fetch(`${origin}${route}`, {
      method,
      headers: { Authorization: `Bearer ${ADMIN_KEY}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  };

  // A program without a session: the upgrade is refused with 401 and a JSON error.
  const bare = await bareUpgrade(httpPort);
  if (bare.status !== 401 || !bare.body.includes('"code":"no_session"'))
    throw new Error(`an upgrade without a session answered ${bare.status} ${bare.body}`);
  step('a WebSocket upgrade without a session is refused: 401 no_session');

  browser = await launchChromium();
  const problems = [];
  const watch = (page) => {
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    });
  };

  // A browser without a session: told to use its link; no name to type; nothing connects.
  const ada = await browser.newContext({ viewport: { width: 1180, height: 760 } });
  const page = await ada.newPage();
  watch(page);
  await page.goto(`${origin}/`);
  const status = page.locator('#signin-status');
  await status.and(page.locator('[data-state="signed-out"]')).waitFor({ timeout: 10000 });
  if (!/invite link/.test(await status.innerText())) throw new Error(`signed-out text: ${await status.innerText()}`);
  if (await page.locator('#name-input').isVisible()) throw new Error('the name field shows in invite mode');
  if (!(await page.locator('#composer-text').isDisabled())) throw new Error('the composer is enabled without a session');
  const refused = await page.evaluate(() => new Promise((resolve) => {
    const ws = new WebSocket(`ws://${location.host}/webchat/ws`);
    ws.onopen = () => resolve('open');
    ws.onclose = () => resolve('closed');
  }));
  if (refused !== 'closed') throw new Error('a WebSocket without a session opened');
  step('without a session: the page says to use the invite link, the WebSocket is refused');

  // Sign in with a link; the name is the invite's.
  const invite = await adminCall('POST', '/webchat/invites', { name: 'Ada Lovelace', rooms: ['lobby', 'dev'] });
  if (invite.status !== 201) throw new Error(`invite: ${invite.status} ${JSON.stringify(invite.body)}`);
  const link = invite.body.link;
  if (!link.startsWith(`${origin}/webchat/signin#`)) throw new Error(`link: ${link}`);
  await page.goto(link);
  await status.and(page.locator('[data-state="signed-in"]')).waitFor({ timeout: 10000 });
  if ((await status.innerText()) !== 'Signed in as Ada Lovelace') throw new Error(`status: ${await status.innerText()}`);
  if (page.url() !== `${origin}/#lobby` && page.url() !== `${origin}/`)
    throw new Error(`the token stayed in the address bar: ${page.url()}`);
  const cookies = await ada.cookies();
  const session = cookies.find((c) => c.name === 'sg_webchat_session');
  if (!session || !session.httpOnly || session.sameSite !== 'Strict' || session.path !== '/webchat')
    throw new Error(`session cookie: ${JSON.stringify(session)}`);
  if (await page.evaluate(() => document.cookie.includes('sg_webchat_session')))
    throw new Error('the page can read the session cookie');
  await page.locator('#connection[data-state="connected"]').waitFor({ timeout: 10000 });
  await page.locator('#room-title').filter({ hasText: '# lobby' }).waitFor({ timeout: 10000 });
  if (!(await page.locator('#identity').innerText()).includes('Ada Lovelace')) throw new Error('identity not shown');
  step('signed in with the link as "Ada Lovelace", cookie HttpOnly and SameSite=Strict, joined #lobby');

  await page.locator('#composer-text').fill('Hello from a signed-in browser');
  await page.keyboard.press('Enter');
  await page.locator('#messages li.message.mine .author', { hasText: 'Ada Lovelace' }).waitFor({ timeout: 10000 });
  await page.locator('#messages li.message.bot .text', { hasText: 'Hello from a signed-in browser' })
    .waitFor({ timeout: 10000 });
  step('message sent under the invite\'s name, the bot replied');

  // A room outside the invite is refused by the page (and by the server).
  await page.locator('#room-input').fill('secret');
  await page.locator('#join-button').click();
  await page.locator('#join-error').filter({ hasText: 'lobby, dev' }).waitFor({ timeout: 5000 });
  step('a room outside the invite is refused');

  // The same link in another browser: used up.
  const other = await browser.newContext();
  const second = await other.newPage();
  watch(second);
  await second.goto(link);
  const secondStatus = second.locator('#signin-status');
  await secondStatus.and(second.locator('[data-state="signed-out"]')).waitFor({ timeout: 10000 });
  if (!/already used/.test(await secondStatus.innerText())) throw new Error(`second use: ${await secondStatus.innerText()}`);
  if ((await other.cookies()).some((c) => c.name === 'sg_webchat_session')) throw new Error('the second browser got a cookie');
  step('the link does not work a second time');

  mkdirSync(outDir, { recursive: true });
  const shot = path.join(outDir, 'webchat-signed-in.png');
  await page.screenshot({ path: shot });
  step(`screenshot: ${shot}`);

  // Revoking the person throws the browser out within 5 s.
  const revokedAt = Date.now();
  const revoked = await adminCall('DELETE', `/webchat/users/${encodeURIComponent('Ada Lovelace')}`);
  if (revoked.status !== 200 || revoked.body.sessions !== 1) throw new Error(`revoke: ${JSON.stringify(revoked.body)}`);
  await status.and(page.locator('[data-state="signed-out"]')).waitFor({ timeout: 5000 });
  if (!/revoked/.test(await status.innerText())) throw new Error(`after revocation: ${await status.innerText()}`);
  if (!(await page.locator('#composer-text').isDisabled())) throw new Error('the composer stayed enabled');
  step(`revoked: the page was signed out after ${Date.now() - revokedAt} ms and says so`);
  await page.reload();
  await status.and(page.locator('[data-state="signed-out"]')).waitFor({ timeout: 10000 });
  step('after a reload it stays signed out');
  await page.screenshot({ path: path.join(outDir, 'webchat-signed-out.png') });

  // HTTP errors of refused requests (401, 410) are expected; nothing else is.
  const real = problems.filter((p) => !/WebSocket connection to .* failed|Failed to load resource/.test(p));
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
step(failed ? 'webchat sign-in browser test failed' : 'webchat sign-in browser test passed');
process.exit(failed ? 1 : 0);
