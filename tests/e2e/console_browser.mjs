// Drives the web console in headless Chromium (Debian's /usr/bin/chromium, never a
// downloaded browser) through playwright-core from clients/js's devDependencies.
//
// Environment (set by tests/e2e/test_console.py):
//   CONSOLE_URL      the console page (e.g. http://127.0.0.1:PORT/console, or behind a prefix)
//   CONSOLE_TOPIC    a topic that exists, CONSOLE_GROUP a group with committed offsets on it
//   CONSOLE_COOKIE   optional "name=value": an auth cookie set before the page loads
//   CONSOLE_TOKEN    optional: typed into the token field when the page asks for one
//   SCREENSHOT_PATH  where to save the screenshot (PNG)
//   USER_DATA_DIR    a fresh Chromium profile directory
//   LOGWAY_JS_DIR    clients/js (where playwright-core is installed)
//
// Checks: the page loads over the gateway (no request fails), the topic and group are
// shown, a record produced through the form appears in the live tail (filtered by its key
// and a header), the topic's end offset and the group's lag go up by one, the topic's
// Contract tab shows its schema versions, rule and an example record, nothing the page does
// breaks its Content-Security-Policy, and the screenshot is saved. Exits non-zero with the
// reason and the browser's console output otherwise.

import { createRequire } from 'node:module';
import path from 'node:path';

import { launchChromium } from './chromium.mjs';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const require = createRequire(path.join(env('LOGWAY_JS_DIR'), 'package.json'));
const { chromium } = require('playwright-core');

const url = env('CONSOLE_URL');
const topic = env('CONSOLE_TOPIC');
const group = env('CONSOLE_GROUP');
const cookie = process.env.CONSOLE_COOKIE || null;
const token = process.env.CONSOLE_TOKEN || null;
const screenshotPath = env('SCREENSHOT_PATH');
const GUARD_MS = 15_000; // the longest any one step may take (a guard, not an assertion)

const context = await launchChromium(chromium, env('USER_DATA_DIR'), {
  ignoreHTTPSErrors: true, // the test's nginx has a self-signed certificate
  viewport: { width: 1440, height: 960 },
  deviceScaleFactor: 1,
});
const browserLog = [];
const failures = [];
try {
  if (cookie) {
    const [name, value] = cookie.split('=');
    await context.addCookies([{ name, value, url: new URL(url).origin, httpOnly: true, sameSite: 'Strict' }]);
  }
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(GUARD_MS);
  page.on('console', (message) => {
    browserLog.push(`[${message.type()}] ${message.text()}`);
    // the page's Content-Security-Policy must allow everything the console does
    if (message.text().includes('Content Security Policy')) failures.push(`CSP: ${message.text()}`);
  });
  page.on('pageerror', (error) => failures.push(`page error: ${error.message}`));
  page.on('response', (response) => {
    if (response.status() >= 400) failures.push(`${response.status()} ${response.request().method()} ${response.url()}`);
  });

  const started = Date.now();
  const step = (text) => console.log(`· [${((Date.now() - started) / 1000).toFixed(1)} s] ${text}`);
  await page.goto(url);
  if (token) {
    await page.locator('[data-testid=status]', { hasText: 'sign-in required' }).waitFor();
    failures.length = 0; // the 401s that made the console ask for a token were expected
    step('the console asks for a token');
    await page.fill('#token', token);
    await page.click('#token-form button');
  }
  await page.locator('[data-testid=status].status-ok').waitFor();
  step(`connected: ${await page.locator('[data-testid=status]').textContent()}`);

  // topics and groups as the gateway reports them
  const lagCell = page.locator(`[data-testid="group-lag-${group}"]`);
  await lagCell.waitFor();
  const lagBefore = Number(await lagCell.getAttribute('data-lag'));
  step(`group ${group} shows lag ${lagBefore}`);
  await page.locator(`.topic-name`, { hasText: topic }).first().waitFor();
  const endCells = page.locator(`[data-testid^="end-${topic}-"]`);
  const endsBefore = await endCells.allTextContents();
  step(`topic ${topic} shows end offsets ${endsBefore.join(', ')}`);

  // the live tail, filtered on a key and a header
  const key = 'c-07'; // a customer with earlier orders: only the header filter singles the new one out
  await page.selectOption('[data-testid=tail-topic]', topic);
  await page.selectOption('#tail-form [name=from]', 'earliest');
  await page.fill('#tail-form [name=key]', key);
  await page.fill('#tail-form [name=header]', 'source=console');
  await page.click('[data-testid=tail-toggle]');
  await page.locator('[data-testid=tail-status]', { hasText: 'live on' }).waitFor();
  step('live tail started');

  // produce through the form
  await page.fill('#produce-form [name=topic]', topic);
  await page.fill('#produce-form [name=key]', key);
  await page.fill('#produce-form [name=headers]', 'source: console\nevent-type: OrderCreated');
  await page.fill('#produce-form [name=value]', '{"type": "OrderCreated", "order_id": "o-09001", "customer_id": "c-07", "total_cents": 4200}');
  await page.click('#produce-form button[type=submit]');
  const result = page.locator('[data-testid=produce-result].ok');
  await result.waitFor();
  step(`produced: ${await result.textContent()}`);

  const row = page.locator(`#tail-rows tr[data-key="${key}"]`);
  await row.waitFor();
  const rowText = await row.textContent();
  if (!rowText.includes('o-09001') || !rowText.includes('source: console')) {
    throw new Error(`the tail row does not show the record: ${rowText}`);
  }
  const shown = page.locator('#tail-rows tr:not(.placeholder)');
  if ((await shown.count()) !== 1) throw new Error(`the filters let ${await shown.count()} rows through, expected 1`);
  step('the record is in the live tail, the only one with its key and header');
  await page.fill('#tail-form [name=header]', '');
  const keys = await shown.evaluateAll((rows) => rows.map((r) => r.dataset.key));
  if (keys.length < 2 || keys.some((k) => k !== key)) throw new Error(`the key filter shows keys ${keys}`);
  step(`without the header filter, the key filter shows the ${keys.length} records of ${key}`);

  await page.waitForFunction(
    ([selector, before]) => Number(document.querySelector(selector)?.getAttribute('data-lag')) === before + 1,
    [`[data-testid="group-lag-${group}"]`, lagBefore],
    { timeout: GUARD_MS },
  );
  step(`group ${group} lag went from ${lagBefore} to ${lagBefore + 1}`);
  await page.waitForFunction(
    ([prefix, before]) => {
      const cells = [...document.querySelectorAll(`[data-testid^="${prefix}"]`)];
      const sum = (values) => values.reduce((n, v) => n + Number(String(v).replace(/,/g, '')), 0);
      return sum(cells.map((c) => c.textContent)) === sum(before) + 1;
    },
    [`end-${topic}-`, endsBefore],
    { timeout: GUARD_MS },
  );
  step('the topic end offsets grew by one');

  await page.locator('#tail-rows tr', { hasText: 'o-09001' }).first().click();
  const detail = await page.locator('#tail-rows tr.record-detail pre').textContent();
  if (!detail.includes('"order_id": "o-09001"')) throw new Error(`the record's detail row shows ${detail}`);
  step('a click on the row shows the whole record');

  // the topic's Contract tab: its schema versions, the rule, an example record
  await page.click(`[data-testid="tab-contract-${topic}"]`);
  const versions = page.locator(`[data-testid="versions-${topic}"] tbody tr`);
  await versions.nth(1).waitFor();
  const rule = await page.locator(`[data-testid="compatibility-${topic}"]`).textContent();
  const example = JSON.parse(await page.locator(`[data-testid="contract-example-${topic}"]`).textContent());
  if ((await versions.count()) !== 2 || rule !== 'BACKWARD' || example.value.type !== 'OrderCreated') {
    throw new Error(`the Contract tab shows ${await versions.count()} versions, rule ${rule}, example ${JSON.stringify(example)}`);
  }
  step(`the Contract tab shows 2 versions, ${rule}, and an example ${JSON.stringify(example.value)}`);

  if (failures.length) throw new Error(`requests failed:\n${failures.join('\n')}`);
  await page.evaluate(() => document.activeElement?.blur());
  await page.waitForTimeout(300); // let the highlight animations settle before the picture
  await page.screenshot({ path: screenshotPath, fullPage: true });
  step(`screenshot saved to ${screenshotPath}`);
} catch (err) {
  console.error(`FAILED: ${err.stack ?? err}`);
  if (failures.length) console.error(`failed requests and page errors:\n${failures.join('\n')}`);
  console.error(`browser console:\n${browserLog.join('\n')}`);
  process.exitCode = 1;
} finally {
  await context.close();
}
