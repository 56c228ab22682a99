// The web console in a real browser: Debian's Chromium driven by playwright-core (npm).
//
//   node tests/console/console_test.mjs <floodgate binary>
//
// Starts a real `floodgate serve` on free 127.0.0.1 ports with an admin token, sends it real
// checks, then opens each view of /ui and checks what it renders: the overview's cards, the
// live traffic table, the top limited key, every rule with its counters, an edit with an error
// (the line is shown), a valid edit applied through the token dialog (and refused without it),
// and the algorithms replay. No page error, and no request leaves the node. With
// SCREENSHOT_DIR set, saves one PNG per view there (docs/console.md shows them).
// Bounded: every wait has a deadline, and the whole run stops after 150 s.

import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import {chromium} from 'playwright-core';

const binary = process.argv[2];
const shots = process.env.SCREENSHOT_DIR;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const TOKEN = 'console-test-token-3f9a';
const WAIT = 20000;

const hardStop = setTimeout(() => {
  console.error('FAIL: the console test ran past 150 s');
  process.exit(1);
}, 150000);

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const {port} = server.address();
      server.close(() => resolve(port));
    });
  });
}

const CONFIG = `domain: api
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: path
    rate_limit: {unit: second, requests_per_unit: 100, algorithm: token_bucket, burst: 200}
`;

async function startServer() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'floodgate-console-'));
  fs.mkdirSync(path.join(dir, 'config'));
  fs.writeFileSync(path.join(dir, 'config', 'api.yaml'), CONFIG);
  const http = await freePort();
  const grpc = await freePort();
  const child = spawn(binary, ['serve', '--config', path.join(dir, 'config'),
                               '--http', `127.0.0.1:${http}`, '--grpc', `127.0.0.1:${grpc}`,
                               '--admin-token', TOKEN, '--state-dir', path.join(dir, 'state')],
                      {stdio: ['ignore', 'ignore', 'pipe']});
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const base = `http://127.0.0.1:${http}`;
  const deadline = Date.now() + WAIT;
  for (;;) {
    if (child.exitCode != null) throw new Error(`floodgate exited: ${stderr}`);
    try {
      const r = await fetch(`${base}/healthcheck`);
      if (r.ok) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`floodgate did not answer /healthcheck: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));  // polling for the server to listen
  }
  return {base, child, dir, stderr: () => stderr};
}

async function check(base, query) {
  const r = await fetch(`${base}/v1/check?domain=api&${query}`);
  return r.status;
}

async function main() {
  assert.ok(binary && fs.existsSync(binary), 'usage: console_test.mjs <floodgate binary>');
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  const server = await startServer();
  const {base} = server;
  let browser;
  try {
    // 30 checks of one user against its limit of 5 a minute: 5 allowed, 25 refused.
    const statuses = [];
    for (let i = 0; i < 30; i++) statuses.push(await check(base, 'user=alice'));
    assert.equal(statuses.filter((s) => s === 200).length, 5);
    assert.equal(statuses.filter((s) => s === 429).length, 25);
    for (let i = 0; i < 3; i++) assert.equal(await check(base, 'user=bob'), 200);

    browser = await chromium.launch({executablePath: CHROMIUM,
                                     args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage']});
    const page = await browser.newPage({viewport: {width: 1280, height: 900}});
    const pageErrors = [];
    const consoleErrors = [];
    const foreign = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('request', (r) => { if (!r.url().startsWith(base)) foreign.push(r.url()); });
    const shot = async (name) => {
      if (shots) await page.screenshot({path: path.join(shots, `console-${name}.png`), fullPage: true});
    };

    // Overview: this node's cards.
    const response = await page.goto(`${base}/ui`);
    assert.equal(response.status(), 200);
    const csp = (await response.allHeaders())['content-security-policy'] ?? '';
    assert.match(csp, /default-src 'self'/, 'the page is served with a strict CSP');
    await page.waitForSelector('body[data-loaded="overview"]', {timeout: WAIT});
    assert.equal(await page.textContent('[data-card="node"] .value'), 'single node');
    assert.match(await page.textContent('[data-card="config"] .value'), /^\d+$/);
    assert.equal(await page.textContent('[data-card="domains"] .value'), '1');
    assert.match(await page.textContent('#cluster-summary'), /Single node/);
    await shot('overview');

    // Live traffic: checks sent while the page scrapes show as rates for the domain.
    await page.goto(`${base}/ui/#traffic`);
    let sending = true;
    const sender = (async () => {
      for (let i = 0; sending; i++) {
        await check(base, `user=u${i}`);  // a new user each time: allowed
        await check(base, 'user=alice');  // spent: refused
      }
    })();
    await page.waitForFunction(() => {
      const row = document.querySelector('#traffic-now tr[data-domain="api"]');
      return row && Number(row.cells[1].textContent) > 0 && Number(row.cells[2].textContent) > 0 &&
             Number(document.body.dataset.points) >= 3;  // three points: the charts draw lines
    }, null, {timeout: WAIT});
    sending = false;
    await sender;
    await page.waitForFunction(() => document.querySelectorAll('#traffic-legend span').length >= 3,
                               null, {timeout: WAIT});
    await shot('traffic');

    // Top limited keys: alice, refused at least 25 times.
    await page.goto(`${base}/ui/#top`);
    await page.waitForSelector('#top-keys tr[data-key="user=alice"]', {timeout: WAIT});
    const top = await page.$$eval('#top-keys tbody tr', (rows) =>
        rows.map((r) => ({descriptor: r.dataset.key, refused: Number(r.cells[3].textContent)})));
    assert.equal(top[0].descriptor, 'user=alice');
    assert.ok(top[0].refused >= 25, `alice refused ${top[0].refused} times`);
    await shot('top');

    // Limits: both rules, with their counters.
    await page.goto(`${base}/ui/#limits`);
    await page.waitForSelector('.domain[data-domain="api"] tr[data-rule="api.user"]', {timeout: WAIT});
    const userRule = await page.textContent('tr[data-rule="api.user"]');
    assert.match(userRule, /5 per minute/);
    assert.match(userRule, /fixed_window/);
    const refusedCell = await page.textContent('tr[data-rule="api.user"] td:nth-child(7)');
    assert.ok(Number(refusedCell) >= 25, `refused counter ${refusedCell}`);
    const pathRule = await page.textContent('tr[data-rule="api.path"]');
    assert.match(pathRule, /token_bucket/);
    assert.match(pathRule, /burst 200/);

    // An edit with an error: the error names its line, and the gutter marks it.
    await page.click('button[data-edit="api"]');
    await page.fill('#editor-text', CONFIG.replace('requests_per_unit: 5}', 'requests_per_unit: -5}'));
    await page.click('#editor-validate');
    await page.waitForSelector('#editor-result.bad', {timeout: WAIT});
    assert.match(await page.textContent('#editor-result'), /^Line 4: .*requests_per_unit/);
    assert.equal((await page.textContent('#editor-gutter .err')).trim(), '4');
    await shot('limits-error');

    // A valid edit: the diff shows it; applying without the token is refused; with it, live.
    const edited = CONFIG.replace('requests_per_unit: 5}', 'requests_per_unit: 7}');
    await page.fill('#editor-text', edited);
    await page.click('#editor-diff');
    const diff = await page.textContent('#editor-difftext');
    assert.match(diff, /-\s+rate_limit: \{unit: minute, requests_per_unit: 5\}/);
    assert.match(diff, /\+\s+rate_limit: \{unit: minute, requests_per_unit: 7\}/);
    await page.click('#editor-apply');
    await page.waitForSelector('#token-dialog[open]', {timeout: WAIT});
    await page.click('#token-cancel');
    await page.waitForFunction(() => /needs the admin token/.test(
        document.querySelector('#editor-result').textContent), null, {timeout: WAIT});
    let live = await (await fetch(`${base}/v1/config`)).json();
    assert.match(live.domains.api, /requests_per_unit: 5\}/, 'nothing applied without the token');

    await page.click('#editor-apply');
    await page.waitForSelector('#token-dialog[open]', {timeout: WAIT});
    await page.fill('#token-input', TOKEN);
    await page.click('#token-ok');
    // Apply validates first ("Valid: ..."), then sends the change: wait for its own answer.
    await page.waitForFunction(() => /^(Applied|Not applied)/.test(
        document.querySelector('#editor-result').textContent), null, {timeout: WAIT});
    assert.match(await page.textContent('#editor-result'), /^Applied: config version \d+ is live/);
    live = await (await fetch(`${base}/v1/config`)).json();
    assert.match(live.domains.api, /requests_per_unit: 7\}/);
    await page.waitForFunction(() => /7 per minute/.test(
        document.querySelector('tr[data-rule="api.user"]')?.textContent ?? ''), null, {timeout: WAIT});
    assert.ok(!(await page.content()).includes(TOKEN), 'the page never shows the token');
    assert.equal(await page.inputValue('#token-input'), '');
    await shot('limits');

    // Algorithms: a burst at a window's edge; fixed window lets about twice the limit through
    // in one window's span, sliding window does not.
    await page.goto(`${base}/ui/#algorithms`);
    await page.waitForSelector('#sim-totals tr[data-algorithm="fixed_window"]', {timeout: WAIT});
    const totals = Object.fromEntries(await page.$$eval('#sim-totals tbody tr', (rows) =>
        rows.map((r) => [r.dataset.algorithm, Number(r.cells[3].textContent)])));
    for (const name of ['fixed_window', 'sliding_window', 'token_bucket', 'leaky_bucket']) {
      assert.ok(name in totals, `${name} replayed`);
    }
    assert.ok(totals.fixed_window > 10, `fixed window's worst window ${totals.fixed_window}`);
    assert.ok(totals.sliding_window <= 10, `sliding window's worst window ${totals.sliding_window}`);
    await shot('algorithms');

    assert.deepEqual(pageErrors, [], 'no page errors');
    // The refused apply (401) and the invalid YAML (400) are logged by Chromium as failed loads;
    // nothing else may be.
    const unexpected = consoleErrors.filter(
        (t) => !/Failed to load resource: the server responded with a status of 40[01]/.test(t));
    assert.deepEqual(unexpected, [], 'no console errors');
    assert.deepEqual(foreign, [], 'no request leaves the node');
    console.log(`PASS: console views rendered; top key ${top[0].descriptor} refused ${top[0].refused}; ` +
                `worst window fixed ${totals.fixed_window} vs sliding ${totals.sliding_window}`);
  } finally {
    if (browser) await browser.close();
    server.child.kill('SIGTERM');
    fs.rmSync(server.dir, {recursive: true, force: true});
  }
}

main().then(() => {
  clearTimeout(hardStop);
  process.exit(0);
}, (e) => {
  console.error('FAIL:', e.stack ?? e);
  process.exit(1);
});
