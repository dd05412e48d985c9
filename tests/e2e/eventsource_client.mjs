// A standard EventSource in front of logway: the `eventsource` package from npm (a WHATWG
// implementation over fetch: it gives up for good on any status but 200, and reconnects
// with its Last-Event-ID after a stream that ends or a network error), from clients/js's
// devDependencies. Driven by tests/e2e/test_proxies.py; prints one JSON object a line.
//
//   node eventsource_client.mjs follow URL
//       {"open": n} each time the stream opens, {"record": {partition, offset, value}} per
//       record event, {"error": message} per error event; ends when stdin closes (exit 0),
//       or with {"gave_up": message} and exit 3 when the EventSource stops for good.
//   node eventsource_client.mjs latency COUNT TOPIC NAME=BASE_URL...
//       opens a stream of TOPIC through each base URL, then COUNT times, taking the bases in
//       turn, produces one record through a base and times it until its event arrives on that
//       base's stream; prints {"latency_ms": {NAME: [ms, ...]}}.
//
// Environment: LOGWAY_JS_DIR (clients/js, where `eventsource` is installed);
// NODE_EXTRA_CA_CERTS trusts the proxies' test certificate.

import { createRequire } from 'node:module';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

const require = createRequire(path.join(process.env.LOGWAY_JS_DIR, 'package.json'));
const { EventSource } = require('eventsource');

const print = (object) => process.stdout.write(JSON.stringify(object) + '\n');

function follow(url) {
  const source = new EventSource(url);
  let opens = 0;
  source.addEventListener('open', () => print({ open: ++opens }));
  source.addEventListener('record', (event) => {
    const { partition, offset, value } = JSON.parse(event.data);
    print({ record: { partition, offset, value } });
  });
  source.addEventListener('error', (event) => {
    if (source.readyState === EventSource.CLOSED) {
      print({ gave_up: event.message ?? 'closed' });
      process.exit(3);
    }
    print({ error: event.message ?? null });
  });
  process.stdin.on('end', () => {
    source.close();
    process.exit(0);
  });
  process.stdin.resume();
}

async function latency(count, topic, bases) {
  const streams = await Promise.all(
    bases.map(async ([name, base]) => {
      const waiting = new Map(); // value -> resolve
      const source = new EventSource(`${base}/v1/topics/${topic}/events?from=latest`);
      source.addEventListener('record', (event) => {
        const value = JSON.parse(event.data).value;
        waiting.get(value)?.(performance.now());
        waiting.delete(value);
      });
      await new Promise((resolve, reject) => {
        source.addEventListener('open', resolve, { once: true });
        source.addEventListener('error', (e) => reject(new Error(`${name}: ${e.message}`)), {
          once: true,
        });
      });
      return { name, base, source, waiting, samples: [] };
    }),
  );
  for (let i = 0; i < count; i++) {
    const stream = streams[i % streams.length];
    const value = `${stream.name}-${i}`;
    const arrived = new Promise((resolve) => stream.waiting.set(value, resolve));
    const started = performance.now();
    const response = await fetch(`${stream.base}/v1/topics/${topic}/records`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ records: [{ value }] }),
    });
    if (response.status !== 200) throw new Error(`produce: ${response.status} ${await response.text()}`);
    await response.arrayBuffer();
    stream.samples.push((await arrived) - started);
  }
  for (const stream of streams) stream.source.close();
  print({ latency_ms: Object.fromEntries(streams.map((s) => [s.name, s.samples])) });
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'follow') {
  follow(args[0]);
} else if (mode === 'latency') {
  const [count, topic, ...named] = args;
  await latency(Number(count), topic, named.map((pair) => pair.split(/=(.*)/s, 2)));
} else {
  throw new Error(`unknown mode ${mode}`);
}
