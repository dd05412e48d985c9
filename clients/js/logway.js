// logway: browser and Node (>= 20) client for the logway HTTP gateway. One ES module, no
// dependencies, no build step; types in logway.d.ts.
//
//   LogwayClient   the HTTP API as methods: topics, produce, pull, consumer-group admin, commit
//   Producer       batches records per topic (linger, max batch) and retries safely: one
//                  Idempotency-Key per batch, the same on every attempt, exponential backoff
//   Consumer       `for await (const record of consumer)` over Server-Sent Events, reconnecting
//                  by itself and resuming from the last cursor (no loss, no duplicates);
//                  consumer groups with assignment callbacks and auto or manual commit
//
// Errors. Every error is a LogwayError. A problem+json answer becomes the subclass registered
// for its `type` (UnknownTopic, OffsetOutOfRange, ...); a type this client does not know
// becomes a plain LogwayError, so a newer gateway never breaks an older client.
// ConnectionFailed: no HTTP answer (refused, reset, timed out); ProtocolViolation: an answer
// this client cannot read. `retriable` says whether the same request may succeed later.

export const PROBLEM_BASE = 'https://logway.dev/problems/';
const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_RECONNECT_DELAY_MS = 1000;
const DEFAULT_AUTO_COMMIT_INTERVAL_MS = 1000;

// -- errors ------------------------------------------------------------------------------------

export class LogwayError extends Error {
  /** The problem type's last path segment ('' for errors that are not problems). */
  static slug = '';
  static retriable = false;

  constructor(detail, { status, title, type, extensions, retryAfterMs } = {}) {
    const prefix = status != null ? `${status} ` : '';
    super(`${prefix}${title ? `${title}: ` : ''}${detail ?? ''}`);
    this.name = new.target.name;
    this.detail = detail ?? '';
    this.status = status ?? null;
    this.title = title ?? null;
    const slug = new.target.slug;
    this.type = type ?? (slug ? PROBLEM_BASE + slug : 'about:blank');
    this.extensions = Object.freeze({ ...(extensions ?? {}) });
    this.retryAfterMs = retryAfterMs ?? null;
    this.retriable = new.target.retriable;
  }

  get slug() {
    return this.constructor.slug;
  }
}

/** The request got no HTTP answer (refused, reset, timed out). It may have been applied. */
export class ConnectionFailed extends LogwayError {
  static retriable = true;
}

/** The gateway answered something this client cannot read. */
export class ProtocolViolation extends LogwayError {}

const BY_SLUG = new Map();

function problemClass(name, slug, retriable = false, members = {}) {
  // A named class per problem type, so `err instanceof UnknownTopic` and `err.name` work.
  const cls = { [name]: class extends LogwayError {} }[name];
  cls.slug = slug;
  cls.retriable = retriable;
  for (const [prop, getter] of Object.entries(members)) {
    Object.defineProperty(cls.prototype, prop, { get: getter, configurable: true });
  }
  BY_SLUG.set(slug, cls);
  return cls;
}

function intExtension(name) {
  return function () {
    const value = this.extensions[name];
    return Number.isInteger(value) ? value : null;
  };
}

function stringExtension(name) {
  return function () {
    const value = this.extensions[name];
    return typeof value === 'string' ? value : null;
  };
}

export const BadJson = problemClass('BadJson', 'bad-json');
export const InvalidTopicName = problemClass('InvalidTopicName', 'invalid-topic-name');
export const BadCursor = problemClass('BadCursor', 'bad-cursor');
export const IncompleteBody = problemClass('IncompleteBody', 'incomplete-body');
export const CorsRejected = problemClass('CorsRejected', 'cors-rejected');
export const InvalidGroupName = problemClass('InvalidGroupName', 'invalid-group-name');
export const InvalidMemberId = problemClass('InvalidMemberId', 'invalid-member-id');
export const InvalidOffsets = problemClass('InvalidOffsets', 'invalid-offsets');
/** No credentials, or ones the gateway does not accept (401). */
export const Unauthorized = problemClass('Unauthorized', 'unauthorized');
/** The credentials do not allow this operation (403). */
export const Forbidden = problemClass('Forbidden', 'forbidden');
export const NotFound = problemClass('NotFound', 'not-found');
export const UnknownTopic = problemClass('UnknownTopic', 'unknown-topic', false, {
  topic: stringExtension('topic'),
});
export const UnknownPartition = problemClass('UnknownPartition', 'unknown-partition', false, {
  topic: stringExtension('topic'),
  partition: intExtension('partition'),
});
export const UnknownGroup = problemClass('UnknownGroup', 'unknown-group', false, {
  group: stringExtension('group'),
});
export const UnknownMember = problemClass('UnknownMember', 'unknown-member');
export const MethodNotAllowed = problemClass('MethodNotAllowed', 'method-not-allowed');
export const NotAcceptable = problemClass('NotAcceptable', 'not-acceptable');
export const TopicExists = problemClass('TopicExists', 'topic-exists', false, {
  existingPartitions: intExtension('existing_partitions'),
});
export const FencedGeneration = problemClass('FencedGeneration', 'fenced-generation', false, {
  generation: intExtension('generation'),
  currentGeneration: intExtension('current_generation'),
});
export const NotPartitionOwner = problemClass('NotPartitionOwner', 'not-partition-owner');
export const GroupNotEmpty = problemClass('GroupNotEmpty', 'group-not-empty');
export const GroupProtocolConflict = problemClass('GroupProtocolConflict', 'group-protocol-conflict');
export const BodyTooLarge = problemClass('BodyTooLarge', 'body-too-large');
export const RecordTooLarge = problemClass('RecordTooLarge', 'record-too-large');
export const TooManyRecords = problemClass('TooManyRecords', 'too-many-records');
export const UnsupportedMediaType = problemClass('UnsupportedMediaType', 'unsupported-media-type');
export const OffsetOutOfRange = problemClass('OffsetOutOfRange', 'offset-out-of-range', false, {
  offset: intExtension('offset'),
  logStartOffset: intExtension('log_start_offset'),
  endOffset: intExtension('end_offset'),
});
export const ValidationError = problemClass('ValidationError', 'validation-error', false, {
  errors: function () {
    const value = this.extensions.errors;
    return Array.isArray(value) ? value : [];
  },
});
export const IdempotencyKeyReused = problemClass('IdempotencyKeyReused', 'idempotency-key-reused');
export const IdempotentRecordsDeleted = problemClass('IdempotentRecordsDeleted', 'idempotent-records-deleted');
const listExtension = (name) =>
  function () {
    const value = this.extensions[name];
    return Array.isArray(value) ? value : [];
  };
export const UnknownSchemaVersion = problemClass('UnknownSchemaVersion', 'unknown-schema-version');
/** The new schema breaks the topic's compatibility rule; `incompatibilities` say how and why. */
export const IncompatibleSchema = problemClass('IncompatibleSchema', 'incompatible-schema', false, {
  incompatibilities: listExtension('incompatibilities'),
});
export const SchemaVersionConflict = problemClass('SchemaVersionConflict', 'schema-version-conflict');
/** Not a usable draft 2020-12 JSON Schema; `errors` point into the request. */
export const InvalidSchema = problemClass('InvalidSchema', 'invalid-schema', false, {
  errors: listExtension('errors'),
});
/** A record does not match the topic's schema; nothing was written. */
export const SchemaViolation = problemClass('SchemaViolation', 'schema-violation', false, {
  errors: listExtension('errors'),
  schemaVersion: intExtension('schema_version'),
});
/** Too many requests from this client; `retryAfterMs` says when to try again. */
export const RateLimited = problemClass('RateLimited', 'rate-limited', true);
/** This client holds the most streams a gateway allows one client. */
export const TooManyStreams = problemClass('TooManyStreams', 'too-many-streams', true);
export const InternalError = problemClass('InternalError', 'internal-error', true);
export const StorageWriteError = problemClass('StorageWriteError', 'storage-write-error', true);
export const CorruptRecord = problemClass('CorruptRecord', 'corrupt-record');
export const StorageUnavailable = problemClass('StorageUnavailable', 'storage-unavailable', true);
export const ShuttingDown = problemClass('ShuttingDown', 'shutting-down', true);
/** The gateway holds all the streams it can; another one (or later) may have room. */
export const StreamCapacity = problemClass('StreamCapacity', 'stream-capacity', true);
/** The gateway holds all the produce bytes it admits at once; retry after `retryAfterMs`. */
export const ProduceCapacity = problemClass('ProduceCapacity', 'produce-capacity', true);
export const DiskFull = problemClass('DiskFull', 'disk-full');

/** Every problem type this client knows, by slug. */
export const PROBLEM_TYPES = BY_SLUG;

/**
 * The typed error for a problem document; unknown types give the root class. A 5xx without a
 * known type is retriable (a proxy's 502/503/504), other unknowns are not.
 */
export function errorFromProblem(status, problem, retryAfterMs = null) {
  const doc = problem && typeof problem === 'object' && !Array.isArray(problem) ? problem : {};
  const type = typeof doc.type === 'string' ? doc.type : null;
  const cls = (type && type.startsWith(PROBLEM_BASE) && BY_SLUG.get(type.slice(PROBLEM_BASE.length))) || null;
  const { type: _t, title, status: docStatus, detail, ...extensions } = doc;
  const error = new (cls ?? LogwayError)(
    typeof detail === 'string' ? detail : typeof title === 'string' ? title : '',
    {
      status: Number.isInteger(docStatus) ? docStatus : status,
      title: typeof title === 'string' ? title : null,
      type,
      extensions,
      retryAfterMs,
    },
  );
  if (cls === null && status >= 500 && ![501, 505, 507].includes(status)) error.retriable = true;
  return error;
}

function retryAfterMs(response) {
  const raw = response.headers.get('retry-after');
  if (raw == null) return null;
  const seconds = Number(raw);
  return Number.isFinite(seconds) ? Math.max(0, seconds * 1000) : null;
}

async function errorFromResponse(response) {
  let text = '';
  try {
    text = await response.text();
  } catch {
    // the body broke off: the status still says what happened
  }
  let problem = null;
  try {
    problem = text ? JSON.parse(text) : null;
  } catch {
    problem = null;
  }
  if (!problem || typeof problem !== 'object' || Array.isArray(problem)) {
    problem = { title: response.statusText || `HTTP ${response.status}`, detail: text.slice(0, 500) };
  }
  return errorFromProblem(response.status, problem, retryAfterMs(response));
}

// -- values ------------------------------------------------------------------------------------

function isBytes(value) {
  return value instanceof Uint8Array || value instanceof ArrayBuffer || ArrayBuffer.isView(value);
}

function toUint8Array(value) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
}

/** Standard base64 with padding (RFC 4648 section 4) of bytes, in browsers and Node alike. */
export function bytesToBase64(bytes) {
  const view = toUint8Array(bytes);
  let binary = '';
  for (let i = 0; i < view.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, view.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

export function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * A record to produce as the wire wants it. `value` is any JSON value; bytes (Uint8Array,
 * ArrayBuffer, a typed array) are sent as `value_base64` and come back as `valueBytes`.
 */
export function encodeRecord(record) {
  if (record === null || typeof record !== 'object') throw new TypeError('a record is an object');
  const { key = null, value = null, headers, partition } = record;
  if (key !== null && typeof key !== 'string') throw new TypeError('key must be a string or null');
  const doc = { key };
  if (isBytes(value)) doc.value_base64 = bytesToBase64(value);
  else doc.value = value === undefined ? null : value;
  if (headers != null) {
    for (const [name, text] of Object.entries(headers)) {
      if (typeof text !== 'string') throw new TypeError(`header ${name} must be a string`);
    }
    if (Object.keys(headers).length) doc.headers = { ...headers };
  }
  if (partition != null) {
    if (!Number.isInteger(partition) || partition < 0) {
      throw new RangeError('partition must be a non-negative integer');
    }
    doc.partition = partition;
  }
  return JSON.stringify(doc);
}

/** A record read back: `value` (parsed JSON) or `valueBytes` (raw bytes, then value is null). */
export function decodeRecord(doc) {
  if (!doc || typeof doc !== 'object' || !Number.isInteger(doc.offset) || !Number.isInteger(doc.partition)) {
    throw new ProtocolViolation(`not a record: ${JSON.stringify(doc)?.slice(0, 200)}`);
  }
  let valueBytes = null;
  if (typeof doc.value_base64 === 'string') {
    try {
      valueBytes = base64ToBytes(doc.value_base64);
    } catch (err) {
      throw new ProtocolViolation(`a record whose value_base64 is not base64: ${err}`);
    }
  }
  return {
    topic: doc.topic,
    partition: doc.partition,
    offset: doc.offset,
    timestamp: doc.timestamp,
    key: doc.key ?? null,
    value: valueBytes === null ? (doc.value ?? null) : null,
    valueBytes,
    headers: Object.freeze({ ...(doc.headers ?? {}) }),
    /** What to commit once this record is processed (Kafka's convention). */
    nextOffset: doc.offset + 1,
  };
}

function decodeTopic(doc) {
  if (!doc || typeof doc.name !== 'string' || !Array.isArray(doc.partitions)) {
    throw new ProtocolViolation('not a topic description');
  }
  return {
    name: doc.name,
    partitions: doc.partitions.map((p) => ({
      partition: p.partition,
      logStartOffset: p.log_start_offset,
      endOffset: p.end_offset,
      bytes: p.bytes,
    })),
    config: Object.freeze({ ...(doc.config ?? {}) }),
    schemaVersion: doc.schema_version ?? null,
    compatibility: doc.compatibility ?? null,
  };
}

function decodeAssignment(doc) {
  if (!doc || typeof doc.member_id !== 'string' || !Number.isInteger(doc.generation) || !Array.isArray(doc.partitions)) {
    throw new ProtocolViolation('not an assignment');
  }
  return { memberId: doc.member_id, generation: doc.generation, partitions: [...doc.partitions] };
}

/** A topic or group name as one URL path segment. */
export function pathSegment(name) {
  return encodeURIComponent(name);
}

function query(params) {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null);
  if (!entries.length) return '';
  return '?' + new URLSearchParams(entries.map(([k, v]) => [k, String(v)])).toString();
}

function randomKey() {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

// -- client ------------------------------------------------------------------------------------

/**
 * The logway HTTP API. `baseUrl` may be '' in a browser page served by the gateway.
 * `headers` go on every request; `token` adds `Authorization: Bearer <token>`. `fetch`
 * replaces the global fetch (e.g. a fetch with a custom agent). Nothing here retries: the
 * Producer and Consumer decide what is safe to send again.
 */
export class LogwayClient {
  constructor({ baseUrl = '', headers = {}, token, fetch: fetchImpl, timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
    this.baseUrl = String(baseUrl).replace(/\/+$/, '');
    this.headers = { ...headers };
    if (token) this.headers.Authorization = `Bearer ${token}`;
    this.customFetch = fetchImpl != null;
    this.fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
    this.timeoutMs = timeoutMs;
  }

  url(path, params = {}) {
    return this.baseUrl + path + query(params);
  }

  /** One exchange; a non-2xx answer throws its typed error. Returns the Response. */
  async request(method, path, { json, body, params, headers, signal, timeoutMs } = {}) {
    const sendHeaders = { ...this.headers, ...(headers ?? {}) };
    if (json !== undefined) body = JSON.stringify(json);
    if (body !== undefined && !Object.keys(sendHeaders).some((h) => h.toLowerCase() === 'content-type')) {
      sendHeaders['Content-Type'] = 'application/json';
    }
    const timeout = AbortSignal.timeout(timeoutMs ?? this.timeoutMs);
    const abort = signal ? AbortSignal.any([signal, timeout]) : timeout;
    let response;
    try {
      response = await this.fetch(this.url(path, params), { method, headers: sendHeaders, body, signal: abort });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new ConnectionFailed(`${method} ${path}: ${err?.cause?.message ?? err?.message ?? err}`);
    }
    if (!response.ok) throw await errorFromResponse(response);
    return response;
  }

  async requestJson(method, path, options = {}) {
    const response = await this.request(method, path, options);
    let text;
    try {
      text = await response.text();
    } catch (err) {
      throw new ConnectionFailed(`${method} ${path}: the answer broke off: ${err?.message ?? err}`);
    }
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new ProtocolViolation(`${method} ${path}: the gateway answered something that is not JSON: ${err.message}`);
    }
  }

  // topics

  /** Create `topic`, or return it when it exists with the same settings (else TopicExists). */
  async createTopic(topic, { partitions, config } = {}) {
    const doc = {};
    if (partitions != null) doc.partitions = partitions;
    if (config) doc.config = { ...config };
    return decodeTopic(await this.requestJson('PUT', `/v1/topics/${pathSegment(topic)}`, { json: doc }));
  }

  async describeTopic(topic) {
    return decodeTopic(await this.requestJson('GET', `/v1/topics/${pathSegment(topic)}`));
  }

  async listTopics() {
    const doc = await this.requestJson('GET', '/v1/topics');
    return doc.topics.map((t) => ({ name: t.name, partitions: t.partitions }));
  }

  async deleteTopic(topic) {
    await this.request('DELETE', `/v1/topics/${pathSegment(topic)}`);
  }

  // schemas

  /** Register JSON Schemas (draft 2020-12) for the topic's values, and keys and headers if given. */
  async registerSchema(topic, schema, { keySchema, headersSchema } = {}) {
    const json = { schema };
    if (keySchema !== undefined) json.key_schema = keySchema;
    if (headersSchema !== undefined) json.headers_schema = headersSchema;
    return this.requestJson('POST', `/v1/topics/${pathSegment(topic)}/schemas`, { json });
  }

  /** Every kept version, the topic's compatibility rule and the latest version number. */
  async schemas(topic) {
    return this.requestJson('GET', `/v1/topics/${pathSegment(topic)}/schemas`);
  }

  /** One version (`latest`: the one produce checks records against). */
  async schema(topic, version = 'latest') {
    return this.requestJson('GET', `/v1/topics/${pathSegment(topic)}/schemas/${version}`);
  }

  async setSchemaCompatibility(topic, compatibility) {
    const path = `/v1/topics/${pathSegment(topic)}/schemas/compatibility`;
    return (await this.requestJson('PUT', path, { json: { compatibility } })).compatibility;
  }

  // records

  /**
   * Write `records` in one request, all or nothing; offsets come back in request order. With
   * `idempotencyKey`, sending the same request again returns the first result and writes
   * nothing twice (the Producer does that for you, with retries).
   */
  async produce(topic, records, { idempotencyKey, signal } = {}) {
    const body = `{"records":[${records.map(encodeRecord).join(',')}]}`;
    return this.produceEncoded(topic, body, records.length, { idempotencyKey, signal });
  }

  /** `produce` for a body encoded once (so a retry sends the same bytes). */
  async produceEncoded(topic, body, count, { idempotencyKey, signal } = {}) {
    const headers = idempotencyKey ? { 'Idempotency-Key': idempotencyKey } : {};
    const doc = await this.requestJson('POST', `/v1/topics/${pathSegment(topic)}/records`, { body, headers, signal });
    if (!doc || !Array.isArray(doc.offsets) || doc.offsets.length !== count) {
      throw new ProtocolViolation(`expected ${count} offsets in ${JSON.stringify(doc)?.slice(0, 200)}`);
    }
    return doc.offsets.map((o) => ({ topic, partition: o.partition, offset: o.offset, timestamp: o.timestamp }));
  }

  /**
   * Records of one partition from `offset` (default: the log start). With `waitMs`, waits
   * that long for a record when `offset` is the end (long poll). Below the log start:
   * OffsetOutOfRange, whose `logStartOffset` says where to go on.
   */
  async pull(topic, partition, { offset, maxRecords, maxBytes, waitMs, signal } = {}) {
    const doc = await this.requestJson('GET', `/v1/topics/${pathSegment(topic)}/partitions/${partition}/records`, {
      params: { offset, max_records: maxRecords, max_bytes: maxBytes, wait_ms: waitMs || undefined },
      timeoutMs: this.timeoutMs + (waitMs ?? 0),
      signal,
    });
    if (!doc || !Array.isArray(doc.records)) throw new ProtocolViolation('not a pull response');
    return { records: doc.records.map(decodeRecord), nextOffset: doc.next_offset, endOffset: doc.end_offset };
  }

  // consumer groups

  async listGroups() {
    const doc = await this.requestJson('GET', '/v1/groups');
    if (!Array.isArray(doc?.groups)) throw new ProtocolViolation('not a group list');
    return doc.groups.map((g) => ({ group: g.group, state: g.state, generation: g.generation, members: g.members }));
  }

  /** Members with their partitions, committed offsets (null: none) and lag per partition. */
  async describeGroup(group) {
    const doc = await this.requestJson('GET', `/v1/groups/${pathSegment(group)}`);
    if (!Array.isArray(doc?.members) || !Array.isArray(doc?.partitions)) throw new ProtocolViolation('not a group');
    return {
      group: doc.group,
      state: doc.state,
      generation: doc.generation,
      protocol: doc.protocol ?? null,
      members: doc.members.map((m) => ({ memberId: m.member_id, topic: m.topic, partitions: [...m.partitions] })),
      partitions: doc.partitions.map((p) => ({
        topic: p.topic,
        partition: p.partition,
        committedOffset: p.committed_offset ?? null,
        endOffset: p.end_offset,
        lag: p.lag,
      })),
    };
  }

  /**
   * Move the group's committed offsets of `topic` to the log start ('earliest'), the end
   * ('latest') or the first record at or after a time in ms; live members restart from them
   * in a new generation. Resolves to a Map of partition to new committed offset.
   */
  async seekGroup(group, topic, to) {
    const doc = await this.requestJson('POST', `/v1/groups/${pathSegment(group)}/seek`, { json: { topic, to } });
    if (!Array.isArray(doc?.offsets)) throw new ProtocolViolation('not a seek response');
    return new Map(doc.offsets.map((o) => [o.partition, o.offset]));
  }

  async deleteGroup(group) {
    await this.request('DELETE', `/v1/groups/${pathSegment(group)}`);
  }

  /**
   * Commit {partition: next offset to read} for a member of `generation` (a Map or an
   * object). FencedGeneration when a rebalance replaced it, NotPartitionOwner when the
   * member does not own a partition.
   */
  async commitOffsets(group, memberId, generation, topic, offsets) {
    const entries = offsets instanceof Map ? [...offsets] : Object.entries(offsets);
    const list = entries
      .map(([p, o]) => ({ topic, partition: Number(p), offset: o }))
      .sort((a, b) => a.partition - b.partition);
    await this.request('POST', `/v1/groups/${pathSegment(group)}/offsets`, {
      json: { member_id: memberId, generation, offsets: list },
    });
  }

  producer(options) {
    return new Producer(this, options);
  }

  consumer(topic, options) {
    return new Consumer(this, topic, options);
  }
}

// -- producer ----------------------------------------------------------------------------------

/**
 * Batches records per topic and delivers them with safe retries. `send()` queues a record
 * and returns a promise of where it landed. Per topic, records wait up to `lingerMs` for
 * company; a batch leaves once it holds `maxBatchRecords` records or `maxBatchBytes` of JSON.
 * One batch per topic is in flight at a time, so a topic's records are written in send order,
 * also across retries. A batch is encoded once with one Idempotency-Key, reused on every
 * attempt: an attempt that was written but whose answer was lost is answered with the first
 * result and writes nothing twice. Retried: no answer, 5xx other than 507 (retriable errors),
 * with exponential backoff (`retryBackoffMs` doubling up to `maxBackoffMs`, jitter, at least
 * any Retry-After) until `deliveryTimeoutMs` after the first attempt.
 */
export class Producer {
  constructor(
    client,
    {
      lingerMs = 5,
      maxBatchRecords = 500,
      maxBatchBytes = 1024 * 1024,
      retryBackoffMs = 100,
      maxBackoffMs = 5000,
      deliveryTimeoutMs = 120_000,
    } = {},
  ) {
    if (!(maxBatchRecords >= 1) || !(maxBatchBytes >= 1)) {
      throw new RangeError('maxBatchRecords and maxBatchBytes must be positive');
    }
    Object.assign(this, { client, lingerMs, maxBatchRecords, maxBatchBytes, retryBackoffMs, maxBackoffMs, deliveryTimeoutMs });
    /** Requests sent, retries included. */
    this.attempts = 0;
    /** Batches whose answer came back (the number of distinct Idempotency-Keys used). */
    this.batches = 0;
    this._topics = new Map();
    this._flushing = 0;
    this._closed = false;
    this._stop = new AbortController();
  }

  /** Queue one record; the promise resolves to where it was written (or rejects). */
  send(topic, value, { key = null, headers, partition } = {}) {
    return this.sendRecord(topic, { value, key, headers, partition });
  }

  sendRecord(topic, record) {
    if (this._closed) return Promise.reject(new Error('the producer is closed'));
    let encoded;
    try {
      encoded = encodeRecord(record);
    } catch (err) {
      return Promise.reject(err);
    }
    let queue = this._topics.get(topic);
    if (!queue) {
      queue = { pending: [], pendingBytes: 0, firstAt: 0, inFlight: null, timer: null };
      this._topics.set(topic, queue);
    }
    if (!queue.pending.length) queue.firstAt = Date.now();
    const promise = new Promise((resolve, reject) => {
      queue.pending.push({ encoded, resolve, reject, settled: null });
    });
    const pending = queue.pending[queue.pending.length - 1];
    pending.settled = promise.then(
      () => undefined,
      () => undefined,
    );
    queue.pendingBytes += encoded.length + 1;
    this._schedule(topic, queue);
    return promise;
  }

  /** Send everything queued now, without lingering, and wait for every answer. Never throws. */
  async flush() {
    const waits = [];
    for (const queue of this._topics.values()) {
      for (const p of queue.pending) waits.push(p.settled);
      if (queue.inFlight) waits.push(queue.inFlight);
    }
    this._flushing++;
    try {
      for (const [topic, queue] of this._topics) this._schedule(topic, queue);
      await Promise.all(waits);
    } finally {
      this._flushing--;
    }
  }

  /** Flush, then refuse further sends. */
  async close() {
    if (this._closed) return;
    await this.flush();
    this._closed = true;
    this._stop.abort();
  }

  _full(queue) {
    return queue.pending.length >= this.maxBatchRecords || queue.pendingBytes >= this.maxBatchBytes;
  }

  _schedule(topic, queue) {
    if (queue.inFlight || !queue.pending.length) return;
    const wait = this._full(queue) || this._flushing ? 0 : queue.firstAt + this.lingerMs - Date.now();
    if (wait <= 0) {
      if (queue.timer) clearTimeout(queue.timer);
      queue.timer = null;
      // after the current task, so records sent together leave together even with lingerMs 0
      queue.inFlight = Promise.resolve().then(() => this._sendBatch(topic, queue));
    } else if (!queue.timer) {
      queue.timer = setTimeout(() => {
        queue.timer = null;
        this._schedule(topic, queue);
      }, wait);
    }
  }

  async _sendBatch(topic, queue) {
    let count = 0;
    let size = 0;
    for (const p of queue.pending) {
      const grown = size + p.encoded.length + 1;
      if (count && (count === this.maxBatchRecords || grown > this.maxBatchBytes)) break;
      count++;
      size = grown;
    }
    const batch = queue.pending.splice(0, count);
    queue.pendingBytes -= size;
    if (queue.pending.length) queue.firstAt = Date.now();
    try {
      await this._deliver(topic, batch);
    } catch (err) {
      for (const p of batch) p.reject(err); // a bug must not leave promises (and flush) hanging
    } finally {
      queue.inFlight = null;
      this._schedule(topic, queue);
    }
  }

  async _deliver(topic, batch) {
    const body = `{"records":[${batch.map((p) => p.encoded).join(',')}]}`;
    const idempotencyKey = randomKey();
    const deadline = Date.now() + this.deliveryTimeoutMs;
    for (let attempt = 1; ; attempt++) {
      this.attempts++;
      let offsets;
      try {
        offsets = await this.client.produceEncoded(topic, body, batch.length, { idempotencyKey });
      } catch (err) {
        const delay = this._backoffMs(attempt, err?.retryAfterMs);
        if (err instanceof LogwayError && err.retriable && Date.now() + delay < deadline) {
          await sleep(delay);
          continue;
        }
        for (const p of batch) p.reject(err);
        return;
      }
      this.batches++;
      batch.forEach((p, i) => p.resolve(offsets[i]));
      return;
    }
  }

  _backoffMs(attempt, retryAfter) {
    const delay = Math.min(this.maxBackoffMs, this.retryBackoffMs * 2 ** (attempt - 1)) * (0.8 + Math.random() * 0.4);
    // Jitter above Retry-After too: producers refused together must not all come back at once.
    return Math.max(delay, (retryAfter ?? 0) * (1 + Math.random() * 0.2));
  }
}

// -- server-sent events ------------------------------------------------------------------------

/**
 * An incremental text/event-stream parser (the WHATWG rules): feed text chunks, get events
 * `{event, id, data, retry}`. `id` is the last event id in force for the event.
 */
export class SseParser {
  constructor() {
    this.buffer = '';
    this.lastEventId = '';
    this.retry = null;
    this._reset();
  }

  _reset() {
    this.eventType = '';
    this.data = [];
    this.hasData = false;
  }

  push(chunk) {
    this.buffer += chunk;
    const events = [];
    let start = 0;
    for (;;) {
      let end = -1;
      let next = -1;
      for (let i = start; i < this.buffer.length; i++) {
        const c = this.buffer.charCodeAt(i);
        if (c === 10) {
          end = i;
          next = i + 1;
          break;
        }
        if (c === 13) {
          if (i + 1 === this.buffer.length) break; // a CR at the end: wait to see if LF follows
          end = i;
          next = this.buffer.charCodeAt(i + 1) === 10 ? i + 2 : i + 1;
          break;
        }
      }
      if (end < 0) break;
      const event = this._line(this.buffer.slice(start, end));
      if (event) events.push(event);
      start = next;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  _line(line) {
    if (line === '') {
      if (!this.hasData) {
        this._reset();
        return null;
      }
      const event = { event: this.eventType || 'message', id: this.lastEventId, data: this.data.join('\n'), retry: this.retry };
      this._reset();
      return event;
    }
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.eventType = value;
    else if (field === 'data') {
      this.data.push(value);
      this.hasData = true;
    } else if (field === 'id') {
      if (!value.includes('\0')) this.lastEventId = value;
    } else if (field === 'retry') {
      if (/^[0-9]+$/.test(value)) this.retry = Number(value);
    }
    return null;
  }
}

// -- consumer ----------------------------------------------------------------------------------

/**
 * Streams `topic`; iterate with `for await (const record of consumer)`.
 *
 * Resume: every SSE record carries a cursor (`id:`) holding the next offset of every
 * partition the stream reads. The consumer keeps the cursor of the last record it handed
 * out and reconnects with it, so a dropped connection or a gateway restart loses nothing
 * and repeats nothing. Transports: `'eventsource'` (the browser's EventSource, which
 * reconnects by itself with Last-Event-ID; when it gives up, the consumer opens a new one
 * with `?cursor=`), `'fetch'` (fetch + this module's SSE parser, with Last-Event-ID; the
 * only one in Node and the one for requests that need headers such as Authorization).
 * `'auto'` picks EventSource when the page has it and the client sends no headers and uses
 * the global fetch.
 *
 * Options: `from` ('earliest', 'latest' (the gateway's default) or a time in ms) for
 * partitions without a cursor or group commit; `partitions` to read only those; `cursor` to
 * resume a saved stream; `group` to join a consumer group (a member that reconnects starts
 * from its group's commits, not from a cursor: at least once), with `commit: 'auto'`
 * (default) or 'manual'; `onAssignment(assignment)` on each generation.
 *
 * Commits, as Kafka's consumers make them. With `commit: 'auto'` the consumer commits what
 * your code has processed: a record counts as processed once you ask for the next one;
 * every `autoCommitIntervalMs` (1000) it commits the processed positions with the
 * generation they were delivered in, and once more on `close()`. Never a record it merely
 * received: when your code crashes or the member is replaced, at most one interval of
 * processed records comes again, plus the one in hand. Leaving a `for await` loop (by
 * `break` or by an exception: an iterator cannot tell them apart) leaves the record in hand
 * uncommitted; `close({ processedLast: true })` commits it too. Hand records to other work
 * and move on, and they count as processed: then use 'manual' and call `commit()` once they
 * are done. Reconnects wait the server's
 * `retry:` (or `reconnectDelayMs`), doubling while the gateway stays away, up to
 * `maxReconnectDelayMs`; `maxReconnectAttempts` bounds consecutive failures (default:
 * forever, like EventSource). A stream silent for `readTimeoutMs` (heartbeats arrive every
 * 15 s by default) is reconnected.
 */
export class Consumer {
  constructor(
    client,
    topic,
    {
      from,
      partitions,
      cursor = null,
      group = null,
      commit = 'auto',
      autoCommitIntervalMs = DEFAULT_AUTO_COMMIT_INTERVAL_MS,
      onAssignment,
      transport = 'auto',
      reconnectDelayMs = null,
      maxReconnectDelayMs = 30_000,
      maxReconnectAttempts = null,
      readTimeoutMs = 60_000,
      withCredentials = false,
    } = {},
  ) {
    if (group != null && partitions != null) throw new Error('a group member reads the partitions the group assigns it');
    if (commit !== 'auto' && commit !== 'manual') throw new Error("commit must be 'auto' or 'manual'");
    if (!(autoCommitIntervalMs > 0)) throw new Error('autoCommitIntervalMs must be positive');
    if (!['auto', 'eventsource', 'fetch'].includes(transport)) throw new Error("transport must be 'auto', 'eventsource' or 'fetch'");
    this.client = client;
    this.topic = topic;
    this.from = from ?? null;
    this.partitions = partitions == null ? null : [...new Set(partitions)].sort((a, b) => a - b);
    this.group = group;
    this.commitMode = commit;
    this.autoCommitIntervalMs = autoCommitIntervalMs;
    this.onAssignment = onAssignment ?? null;
    this.cursor = cursor;
    this.assignment = null;
    /** Connections opened after the first one. */
    this.reconnects = 0;
    this.serverRetryMs = null;
    const eventSourceUsable =
      typeof globalThis.EventSource === 'function' && !client.customFetch && Object.keys(client.headers).length === 0;
    if (transport === 'eventsource' && !eventSourceUsable) {
      throw new Error('EventSource is not available here or cannot send this client\'s headers');
    }
    this.transport = transport === 'auto' ? (eventSourceUsable ? 'eventsource' : 'fetch') : transport;
    this.reconnectDelayMs = reconnectDelayMs;
    this.maxReconnectDelayMs = maxReconnectDelayMs;
    this.maxReconnectAttempts = maxReconnectAttempts;
    this.readTimeoutMs = readTimeoutMs;
    this.withCredentials = withCredentials;
    this._delivered = new Map();
    // commit: 'auto': the record in hand (not processed yet), and what was processed
    this._inHand = null;
    this._processed = new Map();
    this._processedIn = null; // { memberId, generation } the processed records came in
    this._committed = new Map();
    this._committer = null;
    this._closed = false;
    this._stop = new AbortController();
    this._records = null;
    this._wake = null;
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  next() {
    if (this._closed) return Promise.resolve({ value: undefined, done: true });
    this._records ??= this._run();
    return this._records.next();
  }

  async return() {
    await this.close();
    return { value: undefined, done: true };
  }

  /**
   * End the stream (a group member leaves when its connection closes). With commit 'auto',
   * first commits what was processed; `processedLast` counts the record last handed out as
   * processed too.
   */
  async close({ processedLast = false } = {}) {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._committer);
    if (processedLast) this._movedPast();
    if (this._autoCommits()) await this._commitProcessed();
    this._stop.abort();
    this._wake?.();
    await this._records?.return(); // runs the transport's cleanup (closes an EventSource)
  }

  /**
   * Commit the group's position: after `records` (each partition's last), or explicit
   * `offsets` ({partition: next offset to read}), or by default everything this consumer has
   * handed out since the latest assignment. FencedGeneration when a rebalance happened since.
   */
  async commit({ records, offsets } = {}) {
    if (this.group == null) throw new Error('commit() needs a consumer in a group');
    if (this.assignment == null) throw new Error('no assignment yet: iterate the consumer first');
    let positions = new Map();
    if (offsets != null) positions = new Map(offsets instanceof Map ? offsets : Object.entries(offsets).map(([p, o]) => [Number(p), o]));
    else if (records != null) {
      for (const r of records) positions.set(r.partition, Math.max(positions.get(r.partition) ?? 0, r.nextOffset));
    } else positions = new Map(this._delivered);
    if (!positions.size) return;
    await this.client.commitOffsets(this.group, this.assignment.memberId, this.assignment.generation, this.topic, positions);
  }

  _autoCommits() {
    return this.group != null && this.commitMode === 'auto';
  }

  _handingOut(record) {
    if (!this._autoCommits() || this.assignment == null) return;
    const { memberId, generation } = this.assignment;
    this._inHand = { memberId, generation, partition: record.partition, nextOffset: record.nextOffset };
    if (this._committer == null) this._scheduleCommit();
  }

  _scheduleCommit() {
    this._committer = setTimeout(() => this._commitEvery(), this.autoCommitIntervalMs);
    this._committer.unref?.(); // Node: a pending commit alone does not keep the process alive
  }

  /** The record in hand is processed (the application asked for the next one). */
  _movedPast() {
    const hand = this._inHand;
    if (hand == null) return;
    this._inHand = null;
    const from = this._processedIn;
    if (from == null || from.memberId !== hand.memberId || from.generation !== hand.generation) {
      // positions of a fenced generation are of no use
      this._processed = new Map();
      this._committed = new Map();
      this._processedIn = { memberId: hand.memberId, generation: hand.generation };
    }
    this._processed.set(hand.partition, hand.nextOffset);
  }

  async _commitEvery() {
    await this._commitProcessed();
    if (!this._closed) this._scheduleCommit();
  }

  /** Commit what was processed and not committed yet; a refusal or failure leaves those records to come again. */
  async _commitProcessed() {
    const from = this._processedIn;
    const positions = new Map([...this._processed].filter(([p, o]) => this._committed.get(p) !== o));
    if (from == null || !positions.size) return;
    try {
      await this.client.commitOffsets(this.group, from.memberId, from.generation, this.topic, positions);
    } catch (err) {
      if (!(err instanceof LogwayError)) throw err;
      const refused = err instanceof FencedGeneration || err instanceof NotPartitionOwner || err instanceof UnknownMember;
      if (refused && from === this._processedIn) this._processed = new Map(); // it never will be accepted
      return;
    }
    if (from === this._processedIn) for (const [p, o] of positions) this._committed.set(p, o);
  }

  _params() {
    const params = {};
    if (this.from != null) params.from = String(this.from);
    if (this.partitions != null) params.partitions = this.partitions.join(',');
    if (this.group != null) params.group = this.group; // the gateway never commits for this client
    return params;
  }

  _path() {
    return `/v1/topics/${pathSegment(this.topic)}/events`;
  }

  _delayMs(failures) {
    const base = this.reconnectDelayMs ?? this.serverRetryMs ?? DEFAULT_RECONNECT_DELAY_MS;
    return Math.min(this.maxReconnectDelayMs, base * 2 ** Math.max(0, failures - 1));
  }

  async *_run() {
    try {
      yield* this._reconnecting();
    } finally {
      clearTimeout(this._committer); // an error ended the stream: nothing more to commit
    }
  }

  async *_reconnecting() {
    let failures = 0;
    let first = true;
    while (!this._closed) {
      if (!first) this.reconnects++;
      first = false;
      try {
        const events = this.transport === 'eventsource' ? this._eventSourceEvents() : this._fetchEvents();
        for await (const sse of events) {
          const record = await this._handle(sse);
          if (record) {
            failures = 0;
            this.cursor = sse.id || this.cursor;
            this._delivered.set(record.partition, record.nextOffset);
            this._handingOut(record);
            yield record;
            this._movedPast();
          }
        }
        failures = 0; // a clean end (the gateway restarting): reconnect and resume
      } catch (err) {
        if (this._closed) return;
        if (!(err instanceof LogwayError) || !err.retriable) throw err;
        failures++;
        if (this.maxReconnectAttempts != null && failures > this.maxReconnectAttempts) throw err;
      }
      if (this._closed) return;
      await sleep(this._delayMs(failures), this._stop.signal);
    }
  }

  /** Apply a control event; return the record of a record event. */
  async _handle(sse) {
    if (sse.retry != null) this.serverRetryMs = sse.retry;
    switch (sse.event) {
      case 'record':
        return decodeRecord(parseData(sse.data));
      case 'gap':
        this.cursor = sse.id || this.cursor;
        return null;
      case 'assignment': {
        const assignment = decodeAssignment(parseData(sse.data));
        this.assignment = assignment;
        this.cursor = assignment.partitions.length ? sse.id || null : null; // empty: no id
        // a position handed out before may belong to a partition that restarted (a seek)
        this._delivered = new Map();
        if (this.onAssignment) await this.onAssignment(assignment);
        return null;
      }
      case 'error': {
        const problem = parseData(sse.data);
        throw errorFromProblem(Number.isInteger(problem?.status) ? problem.status : 500, problem);
      }
      default:
        return null;
    }
  }

  async *_fetchEvents() {
    const controller = new AbortController();
    const signal = AbortSignal.any([controller.signal, this._stop.signal]);
    const headers = { ...this.client.headers, Accept: 'text/event-stream', 'Cache-Control': 'no-store' };
    if (this.cursor && this.group == null) headers['Last-Event-ID'] = this.cursor; // a member restarts from its group's commits
    let timedOut = false;
    let timer = null;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, this.readTimeoutMs);
    };
    try {
      arm();
      let response;
      try {
        response = await this.client.fetch(this.client.url(this._path(), this._params()), { headers, signal });
      } catch (err) {
        throw new ConnectionFailed(`stream of ${this.topic}: ${err?.cause?.message ?? err?.message ?? err}`);
      }
      if (!response.ok) throw await errorFromResponse(response);
      if (!response.body) throw new ProtocolViolation('a stream response without a body');
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser();
      try {
        for (;;) {
          arm();
          let chunk;
          try {
            chunk = await reader.read();
          } catch (err) {
            throw new ConnectionFailed(`stream of ${this.topic}: ${timedOut ? `silent for ${this.readTimeoutMs} ms` : (err?.cause?.message ?? err?.message ?? err)}`);
          }
          if (chunk.done) return;
          clearTimeout(timer); // the consumer may take its time with what was read
          for (const event of parser.push(chunk.value)) yield event;
        }
      } finally {
        reader.cancel().catch(() => {});
      }
    } finally {
      clearTimeout(timer);
      controller.abort();
    }
  }

  async *_eventSourceEvents() {
    const params = this._params();
    if (this.cursor && this.group == null) params.cursor = this.cursor; // a new EventSource cannot send Last-Event-ID
    const source = new EventSource(this.client.url(this._path(), params), { withCredentials: this.withCredentials });
    const queue = [];
    let closed = false;
    let wake = null;
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    const push = (event) => (e) => {
      queue.push({ event, id: e.lastEventId, data: e.data, retry: null });
      notify();
    };
    for (const type of ['record', 'gap', 'assignment']) source.addEventListener(type, push(type));
    let opened = false;
    source.addEventListener('open', () => {
      if (opened) this.reconnects++; // EventSource reconnected by itself with Last-Event-ID
      opened = true;
    });
    source.addEventListener('error', (e) => {
      if (typeof e.data === 'string') {
        push('error')(e); // the gateway's `event: error`: the stream ends, do not reconnect
        source.close();
      } else if (source.readyState === EventSource.CLOSED) {
        closed = true; // EventSource gave up (a non-200 answer): find out why, then go on
        notify();
      }
    });
    this._wake = notify;
    try {
      for (;;) {
        if (queue.length) {
          yield queue.shift();
          continue;
        }
        if (this._closed) return;
        if (closed) {
          await this._probe();
          throw new ConnectionFailed(`stream of ${this.topic}: EventSource closed`);
        }
        await new Promise((resolve) => (wake = resolve));
      }
    } finally {
      source.close();
      this._wake = null;
    }
  }

  /** EventSource hides why it failed: ask once with fetch, to throw the typed error. */
  async _probe() {
    const params = this._params();
    if (this.cursor && this.group == null) params.cursor = this.cursor;
    const controller = new AbortController();
    let response;
    try {
      response = await this.client.fetch(this.client.url(this._path(), params), {
        headers: { Accept: 'text/event-stream' },
        signal: AbortSignal.any([controller.signal, this._stop.signal, AbortSignal.timeout(this.client.timeoutMs)]),
      });
    } catch {
      return; // no answer: a connection failure, retried
    }
    if (!response.ok) throw await errorFromResponse(response);
    controller.abort();
  }
}

function parseData(data) {
  try {
    return JSON.parse(data);
  } catch (err) {
    throw new ProtocolViolation(`an SSE event whose data is not JSON: ${err.message}`);
  }
}
