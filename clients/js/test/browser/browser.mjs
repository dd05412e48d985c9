// The JS client in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core;
// no browser download), run by tests/e2e/test_browser.py against a gateway over TLS with a
// self-signed certificate (LOGWAY_URL, a relay that keeps its origin across restarts).
//
// The page is the gateway's own /healthz, so the module runs same-origin with the API and no
// test route is needed: logway.js is imported from a blob: URL made of the file's text. The
// page produces records, consumes them with the client's EventSource transport, and the
// gateway is killed (-9) and then stopped (SIGTERM) and restarted under it; the records the
// page received must be exactly the records produced: nothing lost, nothing twice. Then: a
// saved cursor resumes through a new EventSource and through the fetch transport (what a
// page that sends a token uses), and a failed EventSource surfaces its typed error.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const GATEWAY_URL = process.env.LOGWAY_URL;
const CONTROL_URL = process.env.LOGWAY_CONTROL_URL;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
assert.ok(GATEWAY_URL && CONTROL_URL, 'run through pytest: tests/e2e/test_browser.py');
const GUARD_MS = 30_000; // only a guard against hanging; nothing asserts a duration
const BATCH = 30;

async function restart(kill) {
  const response = await fetch(`${CONTROL_URL}/restart${kill ? '?kill=1' : ''}`, { method: 'POST' });
  assert.equal(response.status, 200, await response.text());
}

const userDataDir = await mkdtemp(join(tmpdir(), 'logway-chromium-'));
const logs = [];
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    ignoreHTTPSErrors: true, // the gateway's self-signed certificate
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (message) => logs.push(`console.${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => logs.push(`pageerror: ${error.message}`));

  const response = await page.goto(`${GATEWAY_URL}/healthz`);
  assert.equal(response.status(), 200);
  const source = await readFile(new URL('../../logway.js', import.meta.url), 'utf8');
  const setup = await page.evaluate(async ({ source, batch }) => {
    const module = await import(URL.createObjectURL(new Blob([source], { type: 'text/javascript' })));
    const client = new module.LogwayClient(); // baseUrl '': this origin
    const topic = `browser-${Date.now()}`;
    await client.createTopic(topic, { partitions: 3 });
    const producer = client.producer({ lingerMs: 10, retryBackoffMs: 100, maxBackoffMs: 1000 });
    const state = { client, topic, producer, produced: [], received: [], errors: [], consumer: null };
    window.logwayTest = state;
    state.produce = async (from) => {
      const sent = [];
      for (let i = from; i < from + batch; i++) {
        sent.push(producer.send(topic, { i, text: `record ${i} ✓` }, { key: `k${i % 7}`, headers: { n: String(i) } }));
      }
      state.produced.push(...(await Promise.all(sent)).map((m) => `${m.partition}/${m.offset}`));
    };
    await state.produce(0);
    state.consumer = client.consumer(topic, { from: 'earliest' });
    (async () => {
      try {
        for await (const record of state.consumer) {
          state.received.push({ place: `${record.partition}/${record.offset}`, i: record.value.i, n: record.headers.n });
        }
      } catch (err) {
        state.errors.push(`${err.name}: ${err.message}`);
      }
    })();
    const navigation = performance.getEntriesByType('navigation')[0];
    return { topic, transport: state.consumer.transport, protocol: navigation.nextHopProtocol };
  }, { source, batch: BATCH });
  assert.equal(setup.transport, 'eventsource', 'a page with no headers to send streams with EventSource');
  assert.equal(setup.protocol, 'h2', 'the page came over HTTP/2 (TLS, ALPN)');

  const waitForRecords = (count) =>
    page.waitForFunction(
      (count) => window.logwayTest.errors.length > 0 || window.logwayTest.received.length >= count,
      count,
      { timeout: GUARD_MS, polling: 50 },
    );
  await waitForRecords(BATCH);

  let phase = 1;
  for (const kill of [true, false]) {
    await restart(kill); // the stream breaks under the page; the gateway comes back on its data
    await page.evaluate((from) => window.logwayTest.produce(from), phase * BATCH);
    phase++;
    await waitForRecords(phase * BATCH);
  }
  await page.waitForTimeout(300); // let a duplicate, if there were one, arrive before counting

  const result = await page.evaluate(async () => {
    const state = window.logwayTest;
    const summary = {
      produced: state.produced,
      received: state.received,
      errors: state.errors,
      reconnects: state.consumer.reconnects,
      cursor: state.consumer.cursor,
    };
    await state.consumer.close();

    // a new EventSource resumes from a saved cursor (?cursor=), as the consumer does when
    // EventSource gives up; records produced meanwhile arrive, nothing before them
    const resumed = state.client.consumer(state.topic, { cursor: summary.cursor });
    await state.producer.send(state.topic, { i: 'after' }, { key: 'k0' });
    const next = await resumed.next();
    summary.resumed = { transport: resumed.transport, value: next.value.value.i };
    await resumed.close();
    // with headers to send (a token) the page streams with fetch and the module's SSE parser
    const module = state.client.constructor;
    const withToken = new module({ token: 'not-checked' }).consumer(state.topic, { cursor: summary.cursor });
    const fetched = await withToken.next();
    summary.fetched = { transport: withToken.transport, value: fetched.value.value.i };
    await withToken.close();

    // EventSource hides why a stream failed; the consumer asks and throws the typed error
    const missing = state.client.consumer(`${state.topic}-missing`, { maxReconnectAttempts: 0 });
    summary.missing = await missing.next().then(
      () => 'no error',
      (err) => `${err.name} ${err.status} ${err.topic}`,
    );
    await state.producer.close();
    return summary;
  });
  assert.deepEqual(result.errors, []);
  const places = result.received.map((r) => r.place);
  assert.equal(new Set(places).size, places.length, 'a record was delivered twice');
  assert.deepEqual([...places].sort(), [...result.produced].sort(), 'the page did not get exactly what was produced');
  assert.deepEqual(result.received.map((r) => r.i).sort((a, b) => a - b), [...Array(3 * BATCH).keys()]);
  assert.ok(result.received.every((r) => r.n === String(r.i)), 'headers came through');
  assert.ok(result.reconnects >= 2, `EventSource reconnected after each restart (${result.reconnects})`);
  assert.deepEqual(result.resumed, { transport: 'eventsource', value: 'after' });
  assert.deepEqual(result.fetched, { transport: 'fetch', value: 'after' });
  assert.equal(result.missing, `UnknownTopic 404 ${setup.topic}-missing`);
  console.log(JSON.stringify({ ok: true, records: places.length, reconnects: result.reconnects, ...setup }));
} catch (err) {
  console.error(logs.join('\n'));
  throw err;
} finally {
  await context?.close();
  await rm(userDataDir, { recursive: true, force: true });
}
