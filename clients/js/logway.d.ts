// Types of logway.js: the browser and Node client for the logway HTTP gateway.

export declare const PROBLEM_BASE: 'https://logway.dev/problems/';

/** Any JSON value (what `value` carries). */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type Bytes = Uint8Array | ArrayBuffer | ArrayBufferView;

// -- errors -----------------------------------------------------------------------------------

export interface LogwayErrorInit {
  status?: number | null;
  title?: string | null;
  type?: string | null;
  extensions?: Record<string, unknown>;
  retryAfterMs?: number | null;
}

/** Root of every error this module throws; `slug` is the problem type's last path segment. */
export declare class LogwayError extends Error {
  static readonly slug: string;
  static readonly retriable: boolean;
  constructor(detail: string, init?: LogwayErrorInit);
  readonly detail: string;
  readonly status: number | null;
  readonly title: string | null;
  /** The problem `type` URI ('about:blank' when there was none). */
  readonly type: string;
  /** The problem's extension members (everything but type, title, status, detail). */
  readonly extensions: Readonly<Record<string, unknown>>;
  /** From a Retry-After header, when the gateway sent one. */
  readonly retryAfterMs: number | null;
  /** Whether sending the same request again may succeed. */
  retriable: boolean;
  get slug(): string;
}
/** The request got no HTTP answer (refused, reset, timed out). It may have been applied. */
export declare class ConnectionFailed extends LogwayError {}
/** The gateway answered something this client cannot read. */
export declare class ProtocolViolation extends LogwayError {}

export declare class BadJson extends LogwayError {}
export declare class InvalidTopicName extends LogwayError {}
export declare class BadCursor extends LogwayError {}
export declare class IncompleteBody extends LogwayError {}
export declare class CorsRejected extends LogwayError {}
export declare class InvalidGroupName extends LogwayError {}
export declare class InvalidMemberId extends LogwayError {}
export declare class InvalidOffsets extends LogwayError {}
/** No credentials, or ones the gateway does not accept (401). */
export declare class Unauthorized extends LogwayError {}
/** The credentials do not allow this operation (403). */
export declare class Forbidden extends LogwayError {}
export declare class NotFound extends LogwayError {}
export declare class UnknownTopic extends LogwayError {
  readonly topic: string | null;
}
export declare class UnknownPartition extends LogwayError {
  readonly topic: string | null;
  readonly partition: number | null;
}
export declare class UnknownGroup extends LogwayError {
  readonly group: string | null;
}
/** The member left, expired or the gateway restarted since it joined: join again. */
export declare class UnknownMember extends LogwayError {}
export declare class MethodNotAllowed extends LogwayError {}
export declare class NotAcceptable extends LogwayError {}
export declare class TopicExists extends LogwayError {
  readonly existingPartitions: number | null;
}
/** A commit named a generation that a rebalance has replaced. */
export declare class FencedGeneration extends LogwayError {
  readonly generation: number | null;
  readonly currentGeneration: number | null;
}
export declare class NotPartitionOwner extends LogwayError {}
export declare class GroupNotEmpty extends LogwayError {}
export declare class GroupProtocolConflict extends LogwayError {}
export declare class BodyTooLarge extends LogwayError {}
export declare class RecordTooLarge extends LogwayError {}
export declare class TooManyRecords extends LogwayError {}
export declare class UnsupportedMediaType extends LogwayError {}
/** The offset is outside [logStartOffset, endOffset] (retention or a recreated topic). */
export declare class OffsetOutOfRange extends LogwayError {
  readonly offset: number | null;
  readonly logStartOffset: number | null;
  readonly endOffset: number | null;
}
export declare class ValidationError extends LogwayError {
  readonly errors: Array<{ pointer?: string; parameter?: string; detail: string }>;
}
export declare class IdempotencyKeyReused extends LogwayError {}
/** The key's request was written, but retention has since deleted its records; nothing was written again. */
export declare class IdempotentRecordsDeleted extends LogwayError {}
export declare class UnknownSchemaVersion extends LogwayError {}
/** One change that breaks the topic's compatibility rule. */
export interface SchemaIncompatibility {
  rule: Compatibility;
  reader_version: number | null;
  writer_version: number | null;
  change: string;
  location: string;
  detail: string;
}
export declare class IncompatibleSchema extends LogwayError {
  readonly incompatibilities: SchemaIncompatibility[];
}
export declare class SchemaVersionConflict extends LogwayError {}
export declare class InvalidSchema extends LogwayError {
  readonly errors: Array<{ pointer?: string; detail: string }>;
}
export declare class SchemaViolation extends LogwayError {
  readonly errors: Array<{ pointer?: string; keyword?: string; schema_pointer?: string; detail: string }>;
  readonly schemaVersion: number | null;
}
/** Too many requests from this client; `retryAfterMs` says when to try again. */
export declare class RateLimited extends LogwayError {}
/** This client holds the most streams a gateway allows one client. */
export declare class TooManyStreams extends LogwayError {}
export declare class InternalError extends LogwayError {}
export declare class StorageWriteError extends LogwayError {}
export declare class CorruptRecord extends LogwayError {}
export declare class StorageUnavailable extends LogwayError {}
export declare class ShuttingDown extends LogwayError {}
/** The gateway holds all the streams it can; another one (or later) may have room. */
export declare class StreamCapacity extends LogwayError {}
export declare class ProduceCapacity extends LogwayError {}
export declare class DiskFull extends LogwayError {}

/** Every problem type this client knows, by slug. */
export declare const PROBLEM_TYPES: ReadonlyMap<string, typeof LogwayError>;
/** The typed error for a problem document; unknown types give LogwayError itself. */
export declare function errorFromProblem(status: number, problem: unknown, retryAfterMs?: number | null): LogwayError;

// -- values -----------------------------------------------------------------------------------

/** A record to produce. Bytes are sent as `value_base64` and come back as `valueBytes`. */
export interface NewRecord {
  value?: JsonValue | Bytes;
  key?: string | null;
  headers?: Record<string, string>;
  partition?: number;
}

/** A record read back: `value` (parsed JSON) or `valueBytes` (raw bytes; then value is null). */
export interface LogRecord {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  /** Log-append time, ms since the epoch. */
  readonly timestamp: number;
  readonly key: string | null;
  readonly value: JsonValue;
  readonly valueBytes: Uint8Array | null;
  readonly headers: Readonly<Record<string, string>>;
  /** What to commit once this record is processed (offset + 1, Kafka's convention). */
  readonly nextOffset: number;
}

/** Where an acknowledged record was written. */
export interface RecordMetadata {
  topic: string;
  partition: number;
  offset: number;
  timestamp: number;
}

export interface PartitionInfo {
  partition: number;
  logStartOffset: number;
  endOffset: number;
  bytes: number;
}

/** Kafka's names: retention.ms, retention.bytes, segment.bytes, segment.ms (-1: unlimited). */
export type TopicConfig = Record<string, number>;

export interface TopicInfo {
  name: string;
  partitions: PartitionInfo[];
  config: Readonly<TopicConfig>;
  /** The schema version produce checks records against (null: none). */
  schemaVersion: number | null;
  compatibility: Compatibility | null;
}

export interface TopicSummary {
  name: string;
  partitions: number;
}

export interface PullResult {
  records: LogRecord[];
  /** The offset to read next. */
  nextOffset: number;
  /** The partition's end offset when the response was built. */
  endOffset: number;
}

/** A consumer-group generation as announced to this member. */
export interface Assignment {
  memberId: string;
  generation: number;
  partitions: number[];
}

export interface GroupSummary {
  group: string;
  state: string;
  generation: number;
  members: number;
}

export interface GroupDescription {
  group: string;
  state: string;
  generation: number;
  protocol: string | null;
  members: Array<{ memberId: string; topic: string; partitions: number[] }>;
  /** Committed offset (null: nothing committed yet) and lag behind the end, per partition. */
  partitions: Array<{ topic: string; partition: number; committedOffset: number | null; endOffset: number; lag: number }>;
}

/** Where a group seek moves: the log start, the end, or the first record at a time in ms. */
export type SeekTarget = 'earliest' | 'latest' | number;
export type StartPosition = 'earliest' | 'latest' | number;
export type Offsets = Map<number, number> | Record<number, number>;

export declare function encodeRecord(record: NewRecord): string;
export declare function decodeRecord(doc: unknown): LogRecord;
export declare function bytesToBase64(bytes: Bytes): string;
export declare function base64ToBytes(text: string): Uint8Array;
export declare function pathSegment(name: string): string;

// -- client -----------------------------------------------------------------------------------

export interface LogwayClientOptions {
  /** The gateway's URL; '' (the default) in a page the gateway serves. */
  baseUrl?: string;
  /** Sent with every request. */
  headers?: Record<string, string>;
  /** Adds `Authorization: Bearer <token>`. */
  token?: string;
  /** Replaces the global fetch. */
  fetch?: typeof globalThis.fetch;
  /** Bounds each request (long polls add their waitMs). Default 10 s. */
  timeoutMs?: number;
}

export interface RequestOptions {
  json?: unknown;
  body?: BodyInit;
  params?: Record<string, string | number | undefined | null>;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export type JsonSchema = boolean | Record<string, unknown>;
export type Compatibility =
  | 'BACKWARD'
  | 'BACKWARD_TRANSITIVE'
  | 'FORWARD'
  | 'FORWARD_TRANSITIVE'
  | 'FULL'
  | 'FULL_TRANSITIVE'
  | 'NONE';
export interface SchemaVersion {
  topic?: string;
  version: number;
  registered_at: number;
  schema: JsonSchema;
  key_schema?: JsonSchema;
  headers_schema?: JsonSchema;
}
export interface SchemaVersionList {
  topic: string;
  compatibility: Compatibility;
  latest_version: number | null;
  versions: SchemaVersion[];
}

export declare class LogwayClient {
  constructor(options?: LogwayClientOptions);
  readonly baseUrl: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly fetch: typeof globalThis.fetch;
  readonly customFetch: boolean;
  readonly timeoutMs: number;
  url(path: string, params?: Record<string, string | number | undefined | null>): string;
  /** One exchange; a non-2xx answer throws its typed error. */
  request(method: string, path: string, options?: RequestOptions): Promise<Response>;
  requestJson<T = unknown>(method: string, path: string, options?: RequestOptions): Promise<T>;

  /** Create `topic`, or return it when it exists with the same settings (else TopicExists). */
  createTopic(topic: string, options?: { partitions?: number; config?: TopicConfig }): Promise<TopicInfo>;
  describeTopic(topic: string): Promise<TopicInfo>;
  listTopics(): Promise<TopicSummary[]>;
  deleteTopic(topic: string): Promise<void>;

  /** Register JSON Schemas (draft 2020-12) for the topic's values, and keys and headers if given. */
  registerSchema(
    topic: string,
    schema: JsonSchema,
    options?: { keySchema?: JsonSchema; headersSchema?: JsonSchema },
  ): Promise<SchemaVersion>;
  schemas(topic: string): Promise<SchemaVersionList>;
  schema(topic: string, version?: number | 'latest'): Promise<SchemaVersion>;
  setSchemaCompatibility(topic: string, compatibility: Compatibility): Promise<Compatibility>;

  /** Write `records` in one request, all or nothing; offsets in request order. */
  produce(
    topic: string,
    records: NewRecord[],
    options?: { idempotencyKey?: string; signal?: AbortSignal },
  ): Promise<RecordMetadata[]>;
  produceEncoded(
    topic: string,
    body: string,
    count: number,
    options?: { idempotencyKey?: string; signal?: AbortSignal },
  ): Promise<RecordMetadata[]>;
  /** Records of one partition from `offset` (default the log start); `waitMs` long-polls. */
  pull(
    topic: string,
    partition: number,
    options?: { offset?: number; maxRecords?: number; maxBytes?: number; waitMs?: number; signal?: AbortSignal },
  ): Promise<PullResult>;

  listGroups(): Promise<GroupSummary[]>;
  /** Members with their partitions, committed offsets (null: none) and lag per partition. */
  describeGroup(group: string): Promise<GroupDescription>;
  /** Move the group's committed offsets of `topic`; resolves to partition → new offset. */
  seekGroup(group: string, topic: string, to: SeekTarget): Promise<Map<number, number>>;
  deleteGroup(group: string): Promise<void>;
  /** Commit {partition: next offset to read} for a member of `generation`. */
  commitOffsets(group: string, memberId: string, generation: number, topic: string, offsets: Offsets): Promise<void>;

  producer(options?: ProducerOptions): Producer;
  consumer(topic: string, options?: ConsumerOptions): Consumer;
}

// -- producer ---------------------------------------------------------------------------------

export interface ProducerOptions {
  /** How long a record waits for company before its batch leaves. Default 5. */
  lingerMs?: number;
  /** Default 500. */
  maxBatchRecords?: number;
  /** Encoded JSON bytes per batch. Default 1 MiB. */
  maxBatchBytes?: number;
  /** First retry delay, doubling. Default 100. */
  retryBackoffMs?: number;
  /** Default 5000. */
  maxBackoffMs?: number;
  /** Give up retrying a batch this long after its first attempt. Default 120 000. */
  deliveryTimeoutMs?: number;
}

/** Batches records per topic; retries each batch with one Idempotency-Key. */
export declare class Producer {
  constructor(client: LogwayClient, options?: ProducerOptions);
  readonly client: LogwayClient;
  /** Requests sent, retries included. */
  readonly attempts: number;
  /** Batches acknowledged. */
  readonly batches: number;
  /** Queue one record; resolves to where it was written. */
  send(
    topic: string,
    value: JsonValue | Bytes,
    options?: { key?: string | null; headers?: Record<string, string>; partition?: number },
  ): Promise<RecordMetadata>;
  sendRecord(topic: string, record: NewRecord): Promise<RecordMetadata>;
  /** Send everything queued now and wait for every answer (errors stay in the promises). */
  flush(): Promise<void>;
  /** Flush, then refuse further sends. */
  close(): Promise<void>;
}

// -- consumer ---------------------------------------------------------------------------------

export interface ConsumerOptions {
  /** Where partitions without a cursor (or group commit) start. The gateway's default: 'latest'. */
  from?: StartPosition;
  /** Read only these partitions (not with `group`). */
  partitions?: number[];
  /** Resume a stream from a cursor saved earlier (`consumer.cursor`). */
  cursor?: string | null;
  /** Join this consumer group. */
  group?: string | null;
  /**
   * 'auto' (default): the consumer commits what the application processed (a record counts
   * once the next one is asked for) every `autoCommitIntervalMs` and on close();
   * 'manual': call commit().
   */
  commit?: 'auto' | 'manual';
  /** How often commit 'auto' commits. Default 1000. */
  autoCommitIntervalMs?: number;
  /** Called (and awaited) on each new generation of the group. */
  onAssignment?: (assignment: Assignment) => void | Promise<void>;
  /** 'auto' (default): EventSource when usable, else fetch. */
  transport?: 'auto' | 'eventsource' | 'fetch';
  /** First reconnect delay (default: the server's `retry:`, else 1000), doubling. */
  reconnectDelayMs?: number | null;
  /** Default 30 000. */
  maxReconnectDelayMs?: number;
  /** Consecutive failed connections before giving up (default: never). */
  maxReconnectAttempts?: number | null;
  /** Reconnect a stream silent this long (fetch transport). Default 60 000. */
  readTimeoutMs?: number;
  /** EventSource's withCredentials. */
  withCredentials?: boolean;
}

/** A live stream of a topic's records with automatic reconnect and resume. */
export declare class Consumer implements AsyncIterableIterator<LogRecord> {
  constructor(client: LogwayClient, topic: string, options?: ConsumerOptions);
  readonly client: LogwayClient;
  readonly topic: string;
  /** The resolved transport. */
  readonly transport: 'eventsource' | 'fetch';
  /** The cursor after the last record handed out: save it to resume later. */
  readonly cursor: string | null;
  /** The current generation, for group members. */
  readonly assignment: Assignment | null;
  /** Connections opened after the first one. */
  readonly reconnects: number;
  /** The server's `retry:` (fetch transport). */
  readonly serverRetryMs: number | null;
  [Symbol.asyncIterator](): AsyncIterableIterator<LogRecord>;
  next(): Promise<IteratorResult<LogRecord, undefined>>;
  return(): Promise<IteratorResult<LogRecord, undefined>>;
  /**
   * End the stream; a group member leaves the group. With commit 'auto', first commits what
   * was processed (and, with `processedLast`, the record last handed out).
   */
  close(options?: { processedLast?: boolean }): Promise<void>;
  /** Commit after `records`, explicit `offsets`, or (default) what was handed out since the latest assignment. */
  commit(options?: { records?: Iterable<LogRecord>; offsets?: Offsets }): Promise<void>;
}

/** An incremental text/event-stream parser. */
export interface SseEvent {
  event: string;
  id: string;
  data: string;
  retry: number | null;
}
export declare class SseParser {
  constructor();
  readonly lastEventId: string;
  readonly retry: number | null;
  push(chunk: string): SseEvent[];
}
