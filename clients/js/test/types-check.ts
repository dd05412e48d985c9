// Compiled (never run) by `tsc -p clients/js/tsconfig.json`: typed code against logway.d.ts.
import {
  type Assignment,
  type LogRecord,
  LogwayClient,
  LogwayError,
  OffsetOutOfRange,
  type RecordMetadata,
  UnknownTopic,
} from '../logway.js';

export async function example(): Promise<number> {
  const client = new LogwayClient({ baseUrl: 'http://127.0.0.1:8080', token: 't' });
  await client.createTopic('orders', { partitions: 3, config: { 'retention.ms': -1 } });
  const offsets: RecordMetadata[] = await client.produce('orders', [
    { key: 'k', value: { total: 1 }, headers: { trace: 'x' } },
    { value: new Uint8Array([1, 2]) },
  ]);
  const producer = client.producer({ lingerMs: 5, maxBatchRecords: 100 });
  const meta: RecordMetadata = await producer.send('orders', { n: 1 }, { key: 'k' });
  await producer.close();
  const pulled = await client.pull('orders', meta.partition, { offset: meta.offset, waitMs: 100 });
  const consumer = client.consumer('orders', {
    group: 'billing',
    commit: 'manual',
    onAssignment: (a: Assignment) => {
      void a.partitions.length;
    },
  });
  for await (const record of consumer) {
    const r: LogRecord = record;
    if (r.valueBytes === null) void r.value;
    await consumer.commit({ records: [r] });
    break;
  }
  try {
    await client.pull('orders', 0, { offset: 1_000_000 });
  } catch (err) {
    if (err instanceof OffsetOutOfRange) return err.logStartOffset ?? 0;
    if (err instanceof UnknownTopic) return err.topic?.length ?? 0;
    if (err instanceof LogwayError && err.retriable) return -1;
    throw err;
  }
  return offsets.length + pulled.records.length + pulled.nextOffset;
}
