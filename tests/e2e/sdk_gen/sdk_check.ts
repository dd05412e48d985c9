// Produces and pulls records, and gets bad input back as typed problems, through
// openapi-fetch typed by openapi-typescript's output for openapi/openapi.yaml (schema.d.ts,
// generated beside this file at test time). Compiled with `tsc --strict` (a spec change
// that breaks these calls' types fails there), then run by node against the gateway in
// LOGWAY_URL; exits non-zero on any mismatch.
import createClient from 'openapi-fetch';
import type { components, paths } from './schema.js';

declare const process: { env: Record<string, string | undefined>; exitCode?: number };

type Problem = components['schemas']['Problem'];
type LogRecord = components['schemas']['Record'];

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

const baseUrl = process.env.LOGWAY_URL;
check(baseUrl, 'LOGWAY_URL names the gateway');
const client = createClient<paths>({ baseUrl });
const topic = `ts-sdk-${Date.now()}`;

const created = await client.PUT('/v1/topics/{topic}', {
  params: { path: { topic } },
  body: { partitions: 2, config: { 'retention.ms': -1 } },
});
check(created.response.status === 201 && created.data, `create: ${JSON.stringify(created.error)}`);
check(created.data.partitions.length === 2, 'two partitions');

const produced = await client.POST('/v1/topics/{topic}/records', {
  params: { path: { topic }, header: { 'Idempotency-Key': `${topic}-1` } },
  body: {
    records: [
      { key: 'customer-1', value: { order: 1, note: 'ünïcødé' }, headers: { trace: 't1' }, partition: 0 },
      { key: null, value_base64: 'AAEC/w==', partition: 0 },
      { value: [1, 2, 3], partition: 1 },
    ],
  },
});
check(produced.data, `produce: ${JSON.stringify(produced.error)}`);
const offsets: components['schemas']['ProduceResponse']['offsets'] = produced.data.offsets;
check(offsets.length === 3 && offsets[0]?.offset === 0 && offsets[1]?.offset === 1, 'offsets in order');

const pulled = await client.GET('/v1/topics/{topic}/partitions/{partition}/records', {
  params: { path: { topic, partition: 0 }, query: { offset: 0, max_records: 10 } },
});
check(pulled.data, `pull: ${JSON.stringify(pulled.error)}`);
const records: LogRecord[] = pulled.data.records;
check(pulled.data.next_offset === 2 && pulled.data.end_offset === 2, 'next and end offsets');
const [first, second] = records;
check(first && second, 'two records');
check(first.key === 'customer-1' && first.headers['trace'] === 't1', 'key and headers');
check(JSON.stringify(first.value) === JSON.stringify({ order: 1, note: 'ünïcødé' }), 'JSON value');
check(second.value_base64 === 'AAEC/w==' && second.key === null, 'bytes value');

const missing = await client.GET('/v1/topics/{topic}', { params: { path: { topic: `${topic}-missing` } } });
const problem: Problem | undefined = missing.error;
check(missing.response.status === 404, 'a missing topic is a 404');
check(problem?.type === 'https://logway.dev/problems/unknown-topic', `problem type: ${JSON.stringify(problem)}`);

// Bad input: the error is the typed problem body (every 4xx/5xx response is a Problem)
const invalid = await client.POST('/v1/topics/{topic}/records', {
  params: { path: { topic } },
  body: { records: [{ value: 1 }, { value_base64: 'no base64!' }] },
});
const invalidProblem: Problem | undefined = invalid.error;
check(invalid.response.status === 422 && invalidProblem, 'a bad record is a 422');
check(invalidProblem.type === 'https://logway.dev/problems/validation-error', `422 type: ${invalidProblem.type}`);
check(invalidProblem.errors?.[0]?.pointer === '/records/1/value_base64', 'the problem names the member');

const beyond = await client.GET('/v1/topics/{topic}/partitions/{partition}/records', {
  params: { path: { topic, partition: 0 }, query: { offset: 99 } },
});
const beyondProblem: Problem | undefined = beyond.error;
check(beyond.response.status === 416 && beyondProblem, 'an offset beyond the end is a 416');
check(beyondProblem.type === 'https://logway.dev/problems/offset-out-of-range', `416 type: ${beyondProblem.type}`);
check(beyondProblem.log_start_offset === 0 && beyondProblem.end_offset === 2, 'the problem names the log range');

// The stream formats are types too: a record event as an EventSource sees it, a record as an NDJSON line
const recordEvent: components['schemas']['SseEvent'] = { event: 'record', id: '1.AAEC', data: JSON.stringify(first) };
const ndjsonLine: components['schemas']['NdjsonLine'] = first;
check(recordEvent.event === 'record' && ndjsonLine === first, 'stream types');

const deleted = await client.DELETE('/v1/topics/{topic}', { params: { path: { topic } } });
check(deleted.response.status === 204, 'deleted');
console.log(JSON.stringify({ ok: true, topic, records: records.length }));
