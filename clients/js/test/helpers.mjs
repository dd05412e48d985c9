// Shared by the node tests: the gateway under test (LOGWAY_URL) and its restart switch
// (LOGWAY_CONTROL_URL, served by tests/e2e/js_harness.py).
import assert from 'node:assert/strict';

export const GATEWAY_URL = process.env.LOGWAY_URL;
export const CONTROL_URL = process.env.LOGWAY_CONTROL_URL;
assert.ok(GATEWAY_URL, 'LOGWAY_URL names the gateway under test (run through pytest: tests/e2e/test_client_js.py)');

async function control(action, kill) {
  assert.ok(CONTROL_URL, 'LOGWAY_CONTROL_URL is needed to stop and start the gateway');
  const response = await fetch(`${CONTROL_URL}/${action}${kill ? '?kill=1' : ''}`, { method: 'POST' });
  assert.equal(response.status, 200, await response.text());
}

/** Ask pytest to restart the gateway on the same port and data; resolves once it is healthy. */
export const restartGateway = ({ kill = true } = {}) => control('restart', kill);
/** Stop the gateway (kill -9 by default, else SIGTERM); resolves once it has exited. */
export const stopGateway = ({ kill = true } = {}) => control('stop', kill);
/** Start the stopped gateway again on its port and data; resolves once it is healthy. */
export const startGateway = () => control('start', false);

let counter = 0;
/** A topic name of its own for each test. */
export function uniqueTopic(prefix) {
  return `${prefix}-${process.pid}-${Date.now()}-${counter++}`;
}

/** Every record of every partition, by pulls (independent of the consumer under test). */
export async function allRecords(client, topic) {
  const records = [];
  for (const partition of (await client.describeTopic(topic)).partitions) {
    let offset = partition.logStartOffset;
    while (offset < partition.endOffset) {
      const result = await client.pull(topic, partition.partition, { offset, maxRecords: 1000 });
      records.push(...result.records);
      offset = result.nextOffset;
    }
  }
  return records;
}

/** Take `count` records from a consumer, failing instead of hanging past `guardMs`. */
export async function take(consumer, count, into = [], guardMs = 30_000) {
  const guard = setTimeout(() => consumer.close(), guardMs);
  try {
    while (into.length < count) {
      const { value, done } = await consumer.next();
      assert.ok(!done, `the consumer ended after ${into.length} of ${count} records`);
      into.push(value);
    }
  } finally {
    clearTimeout(guard);
  }
  return into;
}
