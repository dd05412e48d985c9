// Consumer groups through the JS client against a real gateway (LOGWAY_URL), run by
// tests/e2e/test_client_js.py: assignment callbacks, rebalancing, manual commits and the
// default commits of what the application processed, fencing, group admin.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { FencedGeneration, LogwayClient, UnknownGroup } from '../logway.js';
import { GATEWAY_URL, restartGateway, take, uniqueTopic } from './helpers.mjs';

const client = new LogwayClient({ baseUrl: GATEWAY_URL });
const GUARD_MS = 30_000; // only a guard against hanging; nothing asserts a duration

/** Resolve once `condition()` holds, re-checking every 50 ms (fails after the guard). */
async function until(condition, what) {
  const deadline = Date.now() + GUARD_MS;
  for (;;) {
    const value = await condition();
    if (value) return value;
    assert.ok(Date.now() < deadline, `never happened: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Keep reading a consumer in the background into `into`, until it is closed. */
function drain(consumer, into, errors) {
  return (async () => {
    try {
      for await (const record of consumer) into.push(record);
    } catch (err) {
      errors.push(err);
    }
  })();
}

async function committed(group) {
  const doc = await client.describeGroup(group);
  return new Map(doc.partitions.map((p) => [p.partition, p.committedOffset]));
}

test('two members split the partitions, announce each generation, and commit manually', async () => {
  const topic = uniqueTopic('orders');
  const group = uniqueTopic('billing');
  await client.createTopic(topic, { partitions: 4 });
  const announced = { a: [], b: [] };
  const options = { group, from: 'earliest', commit: 'manual' };
  const a = client.consumer(topic, { ...options, onAssignment: (x) => announced.a.push(x) });
  const b = client.consumer(topic, { ...options, onAssignment: (x) => announced.b.push(x) });
  const got = { a: [], b: [] };
  const errors = [];
  const running = [drain(a, got.a, errors), drain(b, got.b, errors)];

  // both members in one generation, owning disjoint partitions that cover the topic
  await until(() => {
    const [x, y] = [a.assignment, b.assignment];
    return x && y && x.generation === y.generation && x.partitions.length + y.partitions.length === 4;
  }, 'a generation with both members');
  const owned = [...a.assignment.partitions, ...b.assignment.partitions].sort();
  assert.deepEqual(owned, [0, 1, 2, 3]);
  assert.ok(announced.a.length >= 1 && announced.b.length >= 1, 'onAssignment was called');
  assert.deepEqual(announced.a.at(-1), a.assignment);

  await client.produce(topic, Array.from({ length: 40 }, (_, i) => ({ value: { i }, partition: i % 4 })));
  await until(() => got.a.length + got.b.length >= 40, 'all 40 records delivered');
  const seen = [...got.a, ...got.b].map((r) => r.value.i).sort((x, y) => x - y);
  assert.deepEqual(seen, [...Array(40).keys()], 'each record to exactly one member');
  assert.ok(got.a.every((r) => a.assignment.partitions.includes(r.partition)));
  assert.ok(got.b.every((r) => b.assignment.partitions.includes(r.partition)));

  await a.commit(); // everything a handed out
  await b.commit({ records: got.b });
  assert.deepEqual(await committed(group), new Map([[0, 10], [1, 10], [2, 10], [3, 10]]));
  const listed = await client.listGroups();
  assert.ok(listed.some((g) => g.group === group && g.members === 2));
  const described = await client.describeGroup(group);
  assert.deepEqual(described.members.map((m) => m.memberId).sort(), [a.assignment.memberId, b.assignment.memberId].sort());
  assert.ok(described.partitions.every((p) => p.lag === 0));

  // a member that left: its partitions go to the other in a new generation
  const before = b.assignment.generation;
  await a.close();
  await until(() => b.assignment.generation > before && b.assignment.partitions.length === 4, 'b owns all');
  await client.produce(topic, [{ value: { i: 40 }, partition: 0 }, { value: { i: 41 }, partition: 1 }]);
  await until(() => got.b.some((r) => r.value.i === 40) && got.b.some((r) => r.value.i === 41), 'b gets the new records');
  await b.close();
  await Promise.all(running);
  assert.deepEqual(errors, []);
});

test('a commit from a replaced generation is fenced', async () => {
  const topic = uniqueTopic('fenced');
  const group = uniqueTopic('g');
  await client.createTopic(topic, { partitions: 2 });
  const a = client.consumer(topic, { group, from: 'earliest' });
  const errors = [];
  const gotA = [];
  const runningA = drain(a, gotA, errors);
  await until(() => a.assignment?.partitions.length === 2, 'a owns both partitions');
  const old = a.assignment;
  const b = client.consumer(topic, { group, from: 'earliest' });
  const runningB = drain(b, [], errors);
  await until(() => a.assignment.generation > old.generation, 'a new generation');
  await assert.rejects(
    client.commitOffsets(group, old.memberId, old.generation, topic, { 0: 0 }),
    (err) => err instanceof FencedGeneration && err.status === 409,
  );
  await Promise.all([a.close(), b.close()]);
  await Promise.all([runningA, runningB]);
  assert.deepEqual(errors, []);
});

test('by default a member commits what was processed, never the record in hand; seek and delete', async () => {
  const topic = uniqueTopic('auto');
  const group = uniqueTopic('g');
  await client.createTopic(topic, { partitions: 1 });
  await client.produce(topic, Array.from({ length: 10 }, (_, i) => ({ value: i })));
  const first = client.consumer(topic, { group, from: 'earliest', autoCommitIntervalMs: 50 });
  assert.deepEqual((await take(first, 10)).map((r) => r.value), [...Array(10).keys()]);
  // records 0..8 were processed (the next one was asked for); 9 is still in hand
  await until(async () => (await committed(group)).get(0) === 9, 'periodic commit of 9');
  await first.close();
  assert.equal((await committed(group)).get(0), 9, 'close() commits what was processed, not 9');

  await client.produce(topic, [{ value: 10 }, { value: 11 }]);
  const second = client.consumer(topic, { group, from: 'earliest', autoCommitIntervalMs: 3_600_000 });
  assert.deepEqual((await take(second, 3)).map((r) => r.value), [9, 10, 11], 'starts at the committed offset');
  await second.close({ processedLast: true });
  assert.equal((await committed(group)).get(0), 12, 'the record in hand counted as processed');

  assert.deepEqual(await client.seekGroup(group, topic, 'earliest'), new Map([[0, 0]]));
  const described = await client.describeGroup(group);
  assert.deepEqual(described.partitions, [{ topic, partition: 0, committedOffset: 0, endOffset: 12, lag: 12 }]);
  assert.equal((await committed(group)).get(0), 0);
  await client.deleteGroup(group);
  await assert.rejects(client.describeGroup(group), UnknownGroup);
});

test('a member reconnects across a gateway restart and resumes from its commits (at least once)', async () => {
  const topic = uniqueTopic('restarted');
  const group = uniqueTopic('g');
  await client.createTopic(topic, { partitions: 1 });
  await client.produce(topic, Array.from({ length: 10 }, (_, i) => ({ value: i })));
  const assignments = [];
  const member = client.consumer(topic, {
    group,
    from: 'earliest',
    commit: 'manual',
    reconnectDelayMs: 50,
    maxReconnectDelayMs: 300,
    onAssignment: (a) => assignments.push(a),
  });
  const got = await take(member, 10);
  await member.commit({ offsets: { 0: 6 } }); // records 6..9 handed out but not committed
  await restartGateway({ kill: true });
  await client.produce(topic, [{ value: 10 }]);
  await take(member, 15, got);
  assert.deepEqual(got.slice(10).map((r) => r.value), [6, 7, 8, 9, 10], 'redelivered from the commit, then new');
  assert.ok(member.reconnects >= 1);
  assert.ok(assignments.length >= 2, 'the member joined again');
  await member.commit();
  await member.close();
  assert.equal((await committed(group)).get(0), 11);
});
