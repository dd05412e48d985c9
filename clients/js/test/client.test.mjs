// The client, producer and consumer against a real gateway (LOGWAY_URL), run by
// tests/e2e/test_client_js.py with `node --test`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  BadCursor,
  ConnectionFailed,
  IncompatibleSchema,
  SchemaViolation,
  InvalidTopicName,
  LogwayClient,
  LogwayError,
  NotAcceptable,
  OffsetOutOfRange,
  PROBLEM_BASE,
  PROBLEM_TYPES,
  RecordTooLarge,
  SseParser,
  TopicExists,
  UnknownPartition,
  UnknownTopic,
  ValidationError,
  errorFromProblem,
} from '../logway.js';
import { GATEWAY_URL, allRecords, take, uniqueTopic } from './helpers.mjs';

const client = new LogwayClient({ baseUrl: GATEWAY_URL });

test('produce and pull round-trip keys, headers, JSON values and bytes', async () => {
  const topic = uniqueTopic('orders');
  const values = [
    { order: 1, items: [{ sku: 'A-1', qty: 2 }], note: 'ünïcødé ✓' },
    [1, 2.5, null, true, 'x'],
    'a string',
    0,
    null,
    new Uint8Array([0, 255, 32, 114, 97, 119, 254, 10]),
    new Uint8Array(),
  ];
  const sent = values.map((value, i) => ({ value, key: `customer-${i % 3}`, headers: { trace: `t${i}`, n: String(i) } }));
  sent.push({ value: { pinned: true }, partition: 2 });
  sent.push({ value: new TextEncoder().encode('keyless bytes').buffer });

  const created = await client.createTopic(topic, { partitions: 3, config: { 'retention.ms': -1 } });
  assert.equal(created.name, topic);
  assert.equal(created.partitions.length, 3);
  assert.equal(created.config['retention.ms'], -1);
  assert.deepEqual(await client.createTopic(topic, { partitions: 3, config: { 'retention.ms': -1 } }), created);
  assert.ok((await client.listTopics()).some((t) => t.name === topic && t.partitions === 3));

  const metadata = await client.produce(topic, sent);
  assert.equal(metadata.length, sent.length);
  assert.equal(metadata.at(-2).partition, 2);
  const partitionsByKey = new Map();
  sent.forEach((r, i) => {
    if (r.key) partitionsByKey.set(r.key, new Set([...(partitionsByKey.get(r.key) ?? []), metadata[i].partition]));
  });
  for (const partitions of partitionsByKey.values()) assert.equal(partitions.size, 1, 'one key, one partition');

  for (const [i, record] of sent.entries()) {
    const meta = metadata[i];
    const { records, nextOffset } = await client.pull(topic, meta.partition, { offset: meta.offset, maxRecords: 1 });
    assert.equal(records.length, 1);
    const [got] = records;
    assert.deepEqual([got.topic, got.partition, got.offset, got.nextOffset], [topic, meta.partition, meta.offset, meta.offset + 1]);
    assert.equal(nextOffset, meta.offset + 1);
    assert.equal(got.timestamp, meta.timestamp);
    assert.equal(got.key, record.key ?? null);
    assert.deepEqual({ ...got.headers }, record.headers ?? {});
    if (record.value instanceof Uint8Array || record.value instanceof ArrayBuffer) {
      assert.deepEqual(got.valueBytes, new Uint8Array(record.value));
      assert.equal(got.value, null);
    } else {
      assert.deepEqual(got.value, record.value);
      assert.equal(got.valueBytes, null);
    }
  }

  const described = await client.describeTopic(topic);
  assert.equal(described.partitions.reduce((n, p) => n + p.endOffset, 0), sent.length);
  await client.deleteTopic(topic);
  assert.ok(!(await client.listTopics()).some((t) => t.name === topic));
});

test('pull long-polls until a record arrives', async () => {
  const topic = uniqueTopic('polled');
  await client.createTopic(topic, { partitions: 1 });
  const waiting = client.pull(topic, 0, { offset: 0, waitMs: 20_000 });
  await client.produce(topic, [{ value: 'late' }]);
  const { records } = await waiting;
  assert.deepEqual(records.map((r) => r.value), ['late']);
});

test('the producer batches by count and by bytes and keeps the order', async () => {
  const topic = uniqueTopic('batched');
  await client.createTopic(topic, { partitions: 1 });
  const producer = client.producer({ lingerMs: 60_000, maxBatchRecords: 10 });
  const sent = Array.from({ length: 95 }, (_, i) => producer.send(topic, { i }, { key: 'k' }));
  await producer.flush(); // the last 5 would linger for a minute without it
  const metadata = await Promise.all(sent);
  assert.equal(producer.attempts, 10); // 9 full batches of 10, then the flushed 5
  assert.deepEqual(metadata.map((m) => m.offset), [...Array(95).keys()]);
  await producer.close();
  await assert.rejects(producer.send(topic, 1), /closed/);

  const recordBytes = JSON.stringify({ key: null, value: 'x'.repeat(1000) }).length + 1;
  const bySize = client.producer({ lingerMs: 60_000, maxBatchBytes: 3 * recordBytes + 10 });
  const big = Array.from({ length: 12 }, () => bySize.send(topic, 'x'.repeat(1000)));
  await bySize.close();
  await Promise.all(big);
  assert.equal(bySize.attempts, 4); // 3 records fit a batch, a 4th would not

  const values = (await allRecords(client, topic)).map((r) => r.value);
  assert.deepEqual(values, [...Array.from({ length: 95 }, (_, i) => ({ i })), ...Array(12).fill('x'.repeat(1000))]);
});

test('the producer lingers: records sent together leave in one batch', async () => {
  const topic = uniqueTopic('lingered');
  await client.createTopic(topic, { partitions: 1 });
  const producer = client.producer({ lingerMs: 200 });
  const metadata = await Promise.all(Array.from({ length: 30 }, (_, i) => producer.send(topic, i)));
  assert.equal(producer.attempts, 1);
  assert.deepEqual(metadata.map((m) => m.offset), [...Array(30).keys()]);
  await producer.close();
});

test('a retried batch reuses its Idempotency-Key: an answer lost after the write writes nothing twice', async () => {
  const topic = uniqueTopic('payments');
  await client.createTopic(topic, { partitions: 2 });
  // The request reaches the real gateway, which writes the batch; its answer is then thrown
  // away, as a reset connection would, so the producer has to retry.
  const sentKeys = [];
  let swallow = 2;
  const lossy = async (url, init) => {
    sentKeys.push(new Headers(init.headers).get('idempotency-key'));
    const response = await fetch(url, init);
    if (swallow > 0 && init.method === 'POST') {
      swallow--;
      await response.arrayBuffer();
      throw new TypeError('fetch failed: the answer was lost');
    }
    return response;
  };
  const producer = new LogwayClient({ baseUrl: GATEWAY_URL, fetch: lossy }).producer({ lingerMs: 0, retryBackoffMs: 20, maxBackoffMs: 100 });
  const metadata = await Promise.all(Array.from({ length: 20 }, (_, i) => producer.send(topic, { n: i }, { key: String(i) })));
  await producer.close();
  assert.equal(producer.attempts, 3);
  assert.equal(producer.batches, 1);
  assert.equal(new Set(sentKeys).size, 1, 'every attempt carried the same key');
  const stored = await allRecords(client, topic);
  assert.deepEqual(stored.map((r) => r.value.n).sort((a, b) => a - b), [...Array(20).keys()], 'lost or duplicated');
  assert.deepEqual(
    new Set(metadata.map((m) => `${m.partition}/${m.offset}`)),
    new Set(stored.map((r) => `${r.partition}/${r.offset}`)),
  );

  // the same key with another body is refused, never applied
  const key = 'fixed-key-1';
  await client.produce(topic, [{ value: 1 }], { idempotencyKey: key });
  const replay = await client.produce(topic, [{ value: 1 }], { idempotencyKey: key });
  assert.equal(replay.length, 1);
  await assert.rejects(client.produce(topic, [{ value: 2 }], { idempotencyKey: key }), (err) => err.slug === 'idempotency-key-reused');
  assert.equal((await allRecords(client, topic)).length, 21);
});

test('the producer gives up at once on errors that a retry cannot fix', async () => {
  const producer = client.producer({ lingerMs: 0 });
  await assert.rejects(producer.send('bad name!', 1), InvalidTopicName);
  assert.equal(producer.attempts, 1);
  await producer.close();
});

test('typed errors from a real gateway carry the problem members', async () => {
  const topic = uniqueTopic('typed');
  await client.createTopic(topic, { partitions: 2 });
  await client.produce(topic, [{ value: 1, partition: 0 }]);

  await assert.rejects(client.describeTopic(uniqueTopic('missing')), (err) => {
    assert.ok(err instanceof UnknownTopic && err instanceof LogwayError);
    assert.equal(err.status, 404);
    assert.equal(err.type, PROBLEM_BASE + 'unknown-topic');
    assert.match(err.topic, /^missing-/);
    assert.equal(err.retriable, false);
    return true;
  });
  await assert.rejects(client.createTopic(topic, { partitions: 5 }), (err) => err instanceof TopicExists && err.existingPartitions === 2);
  await assert.rejects(client.createTopic('bad name!'), InvalidTopicName);
  await assert.rejects(client.pull(topic, 7), (err) => err instanceof UnknownPartition && err.partition === 7);
  await assert.rejects(client.pull(topic, 0, { offset: 5 }), (err) => {
    assert.ok(err instanceof OffsetOutOfRange);
    assert.deepEqual([err.offset, err.logStartOffset, err.endOffset], [5, 0, 1]);
    return true;
  });
  await assert.rejects(client.pull(topic, 0, { maxRecords: 0 }), (err) => err instanceof ValidationError && err.errors.length > 0);
  await assert.rejects(client.produce(topic, [{ value: 'x'.repeat(2 * 1024 * 1024) }]), RecordTooLarge);
  await assert.rejects(
    client.request('GET', `/v1/topics/${topic}/events`, { headers: { Accept: 'text/html' } }),
    NotAcceptable,
  );
  const badCursor = client.consumer(topic, { cursor: 'not-a-cursor', transport: 'fetch' });
  await assert.rejects(badCursor.next(), BadCursor);
  await badCursor.close();
  const missing = client.consumer(uniqueTopic('missing'), { transport: 'fetch' });
  await assert.rejects(missing.next(), UnknownTopic);

  const unreachable = new LogwayClient({ baseUrl: 'http://127.0.0.1:1', timeoutMs: 2000 });
  await assert.rejects(unreachable.listTopics(), (err) => err instanceof ConnectionFailed && err.retriable);
});

test('every problem type maps to its class; unknown types to the root', () => {
  for (const [slug, cls] of PROBLEM_TYPES) {
    const err = errorFromProblem(400, { type: PROBLEM_BASE + slug, title: 't', status: 400, detail: 'd' });
    assert.equal(err.constructor, cls);
    assert.equal(err.slug, slug);
  }
  const unknown = errorFromProblem(418, { type: 'https://example.com/teapot', title: 'Teapot', detail: 'short and stout', extra: 1 });
  assert.equal(unknown.constructor, LogwayError);
  assert.equal(unknown.extensions.extra, 1);
  assert.equal(unknown.retriable, false);
  assert.equal(errorFromProblem(502, {}).retriable, true);
});

test('every problem type the gateway serves in its OpenAPI document has a class', async () => {
  const doc = await client.requestJson('GET', '/openapi.json');
  const served = doc.components['x-problem-types'].map((p) => p.type.slice(PROBLEM_BASE.length));
  const missing = served.filter((slug) => !PROBLEM_TYPES.has(slug));
  assert.deepEqual(missing, [], 'problem types without a JS class');
});

test('the consumer reads chosen partitions from a start, and resumes from a saved cursor', async () => {
  const topic = uniqueTopic('views');
  await client.createTopic(topic, { partitions: 3 });
  await client.produce(topic, Array.from({ length: 30 }, (_, i) => ({ value: i, partition: i % 3 })));

  const some = client.consumer(topic, { from: 'earliest', partitions: [0, 2] });
  assert.equal(some.transport, 'fetch');
  const firstTen = await take(some, 10);
  assert.ok(firstTen.every((r) => r.partition !== 1));
  const cursor = some.cursor;
  await some.close();
  assert.deepEqual(await some.next(), { value: undefined, done: true });

  const resumed = client.consumer(topic, { from: 'latest', partitions: [0, 2], cursor });
  const rest = await take(resumed, 10);
  await resumed.close();
  const seen = [...firstTen, ...rest].map((r) => r.value).sort((a, b) => a - b);
  assert.deepEqual(seen, [...Array(30).keys()].filter((i) => i % 3 !== 1));

  // from a timestamp: the first record appended at or after it, in each partition
  const [old] = await client.produce(topic, [{ value: 'old', partition: 1 }]);
  while (Date.now() < old.timestamp + 2) await new Promise((resolve) => setTimeout(resolve, 1));
  await client.produce(topic, [{ value: 'new', partition: 1 }]);
  const since = client.consumer(topic, { from: old.timestamp + 1, partitions: [1] });
  const [record] = await take(since, 1);
  assert.equal(record.value, 'new');
  await since.close();
});

test('for await ... break closes the stream', async () => {
  const topic = uniqueTopic('loop');
  await client.createTopic(topic, { partitions: 1 });
  await client.produce(topic, [{ value: 1 }, { value: 2 }, { value: 3 }]);
  const consumer = client.consumer(topic, { from: 'earliest' });
  const got = [];
  for await (const record of consumer) {
    got.push(record.value);
    if (got.length === 2) break;
  }
  assert.deepEqual(got, [1, 2]);
  assert.deepEqual(await consumer.next(), { value: undefined, done: true });
});

test('the SSE parser follows the WHATWG rules', () => {
  const parser = new SseParser();
  const text = 'retry: 1500\r\n: ping\r\nevent: record\r\nid: c1\r\ndata: {"a":\r\ndata: 1}\r\n\r\nid: c2\n\ndata:x\r\rdata: y\n\n';
  const events = [];
  for (const ch of text) events.push(...parser.push(ch)); // one character at a time
  assert.deepEqual(events, [
    { event: 'record', id: 'c1', data: '{"a":\n1}', retry: 1500 },
    { event: 'message', id: 'c2', data: 'x', retry: 1500 },
    { event: 'message', id: 'c2', data: 'y', retry: 1500 },
  ]);
});

test('schemas: register, evolve, refuse a breaking change, and a violating record is a typed error', async () => {
  const topic = uniqueTopic('contracts');
  await client.createTopic(topic, { partitions: 1 });
  const v1 = {
    type: 'object',
    properties: { id: { type: 'string' }, amount: { type: 'number', minimum: 0 } },
    required: ['id', 'amount'],
    additionalProperties: false,
  };
  assert.equal((await client.registerSchema(topic, v1)).version, 1);
  const v2 = { ...v1, properties: { ...v1.properties, note: { type: 'string' } } };
  assert.equal((await client.registerSchema(topic, v2)).version, 2);
  const breaking = { ...v2, required: ['id', 'amount', 'note'] };
  await assert.rejects(client.registerSchema(topic, breaking), (error) => {
    assert.ok(error instanceof IncompatibleSchema);
    assert.equal(error.incompatibilities[0].change, 'REQUIRED_ATTRIBUTE_ADDED');
    return true;
  });
  const listed = await client.schemas(topic);
  assert.deepEqual([listed.latest_version, listed.compatibility], [2, 'BACKWARD']);
  assert.deepEqual((await client.schema(topic, 1)).schema, v1);
  await assert.rejects(client.produce(topic, [{ value: { id: 'a', amount: 1 } }, { value: { id: 'b', amount: -1 } }]), (error) => {
    assert.ok(error instanceof SchemaViolation);
    assert.equal(error.schemaVersion, 2);
    assert.deepEqual(error.errors.map((e) => [e.pointer, e.keyword]), [['/records/1/value/amount', 'minimum']]);
    return true;
  });
  await client.produce(topic, [{ value: { id: 'c', amount: 2 } }]);
  const [record] = await allRecords(client, topic);
  assert.equal(record.headers['logway-schema-version'], '2');
  assert.equal(await client.setSchemaCompatibility(topic, 'FULL'), 'FULL');
});
