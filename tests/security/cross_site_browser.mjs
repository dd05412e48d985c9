// The cross-site attack on consumer groups, and the legitimate use, in headless Chromium
// (Debian's /usr/bin/chromium through playwright-core from clients/js's devDependencies).
// Run by tests/security/test_cross_site.py.
//
// The victim's browser holds the gateway's auth cookie (HttpOnly, SameSite=Strict). Pages
// on two other origins of 127.0.0.1 (same site as the gateway, as a subdomain would be):
//   EVIL_URL/        an <img> whose src streams topic `secret` in group `payments` with
//                    commit=auto, and a no-cors fetch of the same URL;
//   GOOD_URL/image   the same <img> on the allowed origin (a no-cors destination);
//   GOOD_URL/        the allowed app: an EventSource (withCredentials) in group `payments`.
// Checks, through the API with the admin key: after the image and the fetch, group
// `payments` does not exist (nobody joined, nothing was committed); the EventSource gets
// its assignment and every record of `secret`, and is the group's one member.
//
// Environment: GATEWAY_URL, EVIL_URL, GOOD_URL, VICTIM_KEY, ADMIN_KEY, RECORDS, PARTITIONS,
// USER_DATA_DIR, LOGWAY_JS_DIR.

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

import { launchChromium } from '../e2e/chromium.mjs';

const env = (name) => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const require = createRequire(path.join(env('LOGWAY_JS_DIR'), 'package.json'));
const { chromium } = require('playwright-core');

const gateway = env('GATEWAY_URL');
const attackPath = '/v1/topics/secret/events?group=payments&commit=auto&from=earliest';
const records = Number(env('RECORDS'));
const partitions = Number(env('PARTITIONS'));
const GUARD_MS = 20_000; // the longest any one step may take (a guard, not an assertion)

async function group() {
  const response = await fetch(`${gateway}/v1/groups/payments`, {
    headers: { 'x-api-key': env('ADMIN_KEY') },
  });
  return { status: response.status, body: await response.json() };
}

const context = await launchChromium(chromium, env('USER_DATA_DIR'));
const log = [];
try {
  await context.addCookies([
    { name: 'logway_token', value: env('VICTIM_KEY'), url: gateway, httpOnly: true, sameSite: 'Strict' },
  ]);
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(GUARD_MS);
  page.on('console', (message) => log.push(`[${message.type()}] ${message.text()}`));
  page.on('request', (request) => {
    if (request.url().startsWith(gateway)) log.push(`request ${request.url()}`);
  });

  // 1. the attacker's page: an image and a no-cors fetch
  await page.goto(`${env('EVIL_URL')}/`);
  await page.waitForFunction(() => document.getElementById('attack').complete);
  const fetched = await page.evaluate(
    (url) => fetch(url, { mode: 'no-cors', credentials: 'include' }).then((r) => r.type, (e) => `rejected: ${e}`),
    gateway + attackPath,
  );
  console.log(`· the attacker's image completed; its no-cors fetch: ${fetched}`);
  assert.equal((await group()).status, 404, 'an image or a no-cors fetch on another origin joined the group');

  // 2. the same image on the allowed origin's page
  await page.goto(`${env('GOOD_URL')}/image`);
  await page.waitForFunction(() => document.getElementById('attack').complete);
  assert.equal((await group()).status, 404, "an image on the allowed origin's page joined the group");
  console.log("· an image on the allowed origin's page did not join either");

  // 3. the allowed app's EventSource streams as a member of the group
  await page.goto(`${env('GOOD_URL')}/`);
  const streamed = await page.evaluate(
    ({ url, records }) =>
      new Promise((resolve, reject) => {
        const source = new EventSource(url, { withCredentials: true });
        window.source = source; // kept open until the group is checked
        const got = { assignment: null, records: 0 };
        source.addEventListener('assignment', (e) => (got.assignment = JSON.parse(e.data)));
        source.addEventListener('record', () => {
          got.records += 1;
          if (got.records === records) resolve(got);
        });
        source.onerror = () => reject(new Error(`EventSource failed (readyState ${source.readyState})`));
      }),
    { url: gateway + attackPath, records },
  );
  assert.equal(streamed.assignment.partitions.length, partitions, JSON.stringify(streamed));
  const joined = await group();
  assert.equal(joined.status, 200);
  assert.deepEqual(
    joined.body.members.map((m) => m.member_id),
    [streamed.assignment.member_id],
    'the EventSource is the group\'s one member',
  );
  await page.evaluate(() => window.source.close());
  console.log(`· the allowed EventSource got its assignment and ${streamed.records} records`);
} catch (error) {
  console.log(log.join('\n'));
  throw error;
} finally {
  await context.close();
}
