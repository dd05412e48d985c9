// The consumer across gateway restarts (kill -9 and SIGTERM), run by
// tests/e2e/test_client_js.py, which restarts the gateway when asked (helpers.restartGateway).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { LogwayClient } from '../logway.js';
import { GATEWAY_URL, allRecords, restartGateway, startGateway, stopGateway, take, uniqueTopic } from './helpers.mjs';

const client = new LogwayClient({ baseUrl: GATEWAY_URL });

function assertExactlyOnce(seen, count) {
  const places = seen.map((r) => `${r.partition}/${r.offset}`);
  assert.equal(new Set(places).size, places.length, 'a record was delivered twice');
  assert.deepEqual(seen.map((r) => r.value.i).sort((a, b) => a - b), [...Array(count).keys()], 'a record was lost');
  for (const partition of new Set(seen.map((r) => r.partition))) {
    const offsets = seen.filter((r) => r.partition === partition).map((r) => r.offset);
    assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b), 'offsets out of order');
  }
}

for (const kill of [true, false]) {
  test(`the consumer resumes across a gateway ${kill ? 'kill -9' : 'SIGTERM'} with nothing lost or duplicated`, async () => {
    const topic = uniqueTopic('clicks');
    await client.createTopic(topic, { partitions: 3 });
    await client.produce(topic, Array.from({ length: 60 }, (_, i) => ({ value: { i }, key: String(i) })));

    // A token makes the consumer use fetch (EventSource cannot send headers): the Node path.
    const authed = new LogwayClient({ baseUrl: GATEWAY_URL, token: 'not-checked' });
    const consumer = authed.consumer(topic, { from: 'earliest', reconnectDelayMs: 50, maxReconnectDelayMs: 300 });
    const seen = await take(consumer, 25);
    const cursorBefore = consumer.cursor;

    await restartGateway({ kill });
    await client.produce(topic, Array.from({ length: 40 }, (_, i) => ({ value: { i: 60 + i } })));
    await take(consumer, 100, seen);
    assert.ok(consumer.reconnects >= 1, 'the consumer reconnected');
    assert.notEqual(consumer.cursor, cursorBefore);
    await consumer.close();
    assertExactlyOnce(seen, 100);
    assert.equal((await allRecords(client, topic)).length, 100);
  });
}

test('the producer retries a batch while the gateway is down and writes it once', async () => {
  const topic = uniqueTopic('payments');
  await client.createTopic(topic, { partitions: 2 });
  const producer = client.producer({ lingerMs: 0, retryBackoffMs: 50, maxBackoffMs: 300 });
  const first = await Promise.all(Array.from({ length: 20 }, (_, i) => producer.send(topic, { i }, { key: String(i) })));
  const attemptsBefore = producer.attempts;
  await stopGateway({ kill: true });
  // sent while the gateway is down: retried (with the batch's one key) until it is back
  const second = Array.from({ length: 20 }, (_, i) => producer.send(topic, { i: 20 + i }, { key: String(i) }));
  await new Promise((resolve) => setTimeout(resolve, 200));
  await startGateway();
  const metadata = [...first, ...(await Promise.all(second))];
  await producer.close();
  assert.ok(producer.attempts - attemptsBefore >= 2, 'the batch was retried');
  const stored = await allRecords(client, topic);
  assertExactlyOnce(stored, 40);
  assert.deepEqual(
    new Set(metadata.map((m) => `${m.partition}/${m.offset}`)),
    new Set(stored.map((r) => `${r.partition}/${r.offset}`)),
  );
});
