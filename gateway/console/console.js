// The logway console: topics, consumer groups (live), a live tail and a produce form.
//
// Plain JS over the JS client (./logway.js, served next to this file). Every URL is
// relative to this module, so the console works wherever the gateway is mounted: the API
// is one level up from /console/console.js. With auth on, the token typed in the top bar
// is kept in memory only (a reload asks again) and sent as a bearer token; streams then use
// the client's fetch transport, which can send that header. A session cookie the gateway
// accepts (auth_cookie) works without typing anything, as fetch sends same-origin cookies.

import { LogwayClient, Unauthorized, Forbidden } from './logway.js';

const API_BASE = new URL('..', import.meta.url).href.replace(/\/+$/, '');
const REFRESH_MS = 1000;
const TAIL_KEEP = 500; // records kept for the tail (filters re-apply to all of them)

const $ = (selector) => document.querySelector(selector);
let token = null;
let client = new LogwayClient({ baseUrl: API_BASE });

// -- DOM helpers --------------------------------------------------------------------------

/** An element with attributes and children (strings become text nodes: nothing is parsed). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || (value === false && !name.startsWith('aria-'))) continue;
    if (name === 'class') el.className = value;
    else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true && !name.startsWith('aria-') ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const number = new Intl.NumberFormat('en-US');
function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function shortId(id) {
  return id.length > 12 ? `${id.slice(0, 8)}…` : id;
}

function describeError(err) {
  return err?.detail || err?.message || String(err);
}

// -- connection status and token -------------------------------------------------------

function setStatus(kind, text) {
  const status = $('#status');
  status.className = `status status-${kind}`;
  status.textContent = text;
}

function needsToken(err) {
  return err instanceof Unauthorized;
}

$('#token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  token = $('#token').value.trim() || null;
  client = new LogwayClient({ baseUrl: API_BASE, token: token ?? undefined });
  if (tail.consumer) startTail(); // reopen the stream with the new credentials
  refresh();
});

// -- topics -------------------------------------------------------------------------------

const collapsedTopics = new Set();
let topicNames = [];
const contractTabs = new Set(); // topics showing their Contract tab instead of partitions
const contracts = new Map(); // topic -> {schemaVersion, data | error}, loaded when shown

async function loadTopics() {
  const summaries = await client.listTopics();
  summaries.sort((a, b) => a.name.localeCompare(b.name));
  return Promise.all(summaries.map((t) => client.describeTopic(t.name)));
}

function renderTopics(topics) {
  const box = $('#topics');
  const records = (p) => p.endOffset - p.logStartOffset;
  const total = topics.reduce((n, t) => n + t.partitions.reduce((m, p) => m + p.bytes, 0), 0);
  $('#topics-summary').textContent = topics.length
    ? `${topics.length} topic${topics.length === 1 ? '' : 's'} · ${formatBytes(total)} on disk`
    : '';
  if (!topics.length) {
    box.replaceChildren(h('p', { class: 'empty' }, 'No topics yet. Produce a record to a topic (with auto-create on) or create one with PUT /v1/topics/{topic}.'));
    return;
  }
  box.replaceChildren(
    ...topics.map((topic) => {
      const open = !collapsedTopics.has(topic.name);
      const count = topic.partitions.reduce((n, p) => n + records(p), 0);
      const size = topic.partitions.reduce((n, p) => n + p.bytes, 0);
      const head = h(
        'div',
        {
          class: 'topic-head',
          role: 'button',
          tabindex: 0,
          'aria-expanded': open,
          onclick: () => {
            if (open) collapsedTopics.add(topic.name);
            else collapsedTopics.delete(topic.name);
            renderTopics(topics);
          },
        },
        h('span', { class: 'caret' }, open ? '▾' : '▸'),
        h('span', { class: 'topic-name' }, topic.name),
        h('span', { class: 'badge' }, `${topic.partitions.length} partition${topic.partitions.length === 1 ? '' : 's'}`),
        h('span', { class: 'muted' }, `${number.format(count)} records · ${formatBytes(size)}`),
      );
      const tabs = open
        ? h(
            'div',
            { class: 'tabs', role: 'tablist' },
            ...[
              ['partitions', 'Partitions'],
              ['contract', topic.schemaVersion ? `Contract · v${topic.schemaVersion}` : 'Contract'],
            ].map(([id, label]) =>
              h(
                'button',
                {
                  type: 'button',
                  role: 'tab',
                  class: (id === 'contract') === contractTabs.has(topic.name) ? 'tab tab-on' : 'tab',
                  'aria-selected': (id === 'contract') === contractTabs.has(topic.name),
                  'data-testid': `tab-${id}-${topic.name}`,
                  onclick: () => {
                    if (id === 'contract') contractTabs.add(topic.name);
                    else contractTabs.delete(topic.name);
                    renderTopics(topics);
                  },
                },
                label,
              ),
            ),
          )
        : null;
      if (open && contractTabs.has(topic.name)) {
        return h('div', { class: 'topic' }, head, tabs, contractView(topic, () => renderTopics(topics)));
      }
      const table = open
        ? h(
            'div',
            { class: 'table-wrap' },
            h(
              'table',
              { class: 'table', 'data-topic': topic.name },
              h('thead', {}, h('tr', {}, h('th', {}, 'Partition'), h('th', { class: 'num' }, 'Log start'), h('th', { class: 'num' }, 'End offset'), h('th', { class: 'num' }, 'Records'), h('th', { class: 'num' }, 'Size'))),
              h(
                'tbody',
                {},
                topic.partitions.map((p) =>
                  h(
                    'tr',
                    {},
                    h('td', {}, h('span', { class: 'chip' }, p.partition)),
                    h('td', { class: 'num' }, number.format(p.logStartOffset)),
                    h('td', { class: 'num', 'data-testid': `end-${topic.name}-${p.partition}` }, number.format(p.endOffset)),
                    h('td', { class: 'num' }, number.format(records(p))),
                    h('td', { class: 'num' }, formatBytes(p.bytes)),
                  ),
                ),
              ),
            ),
          )
        : null;
      return h('div', { class: 'topic' }, head, tabs, table);
    }),
  );
}

// -- a topic's contract: schema versions, compatibility, an example record -----------------

function contractView(topic, rerender) {
  const known = contracts.get(topic.name);
  if (!known || known.schemaVersion !== topic.schemaVersion) {
    contracts.set(topic.name, { schemaVersion: topic.schemaVersion, data: null, error: null });
    client
      .schemas(topic.name)
      .then((data) => contracts.set(topic.name, { schemaVersion: topic.schemaVersion, data, error: null }))
      .catch((error) => contracts.set(topic.name, { schemaVersion: topic.schemaVersion, data: null, error }))
      .finally(rerender);
  }
  const { data, error } = contracts.get(topic.name);
  const box = (...children) => h('div', { class: 'contract', 'data-testid': `contract-${topic.name}` }, ...children);
  if (error) return box(h('p', { class: 'empty' }, `Cannot read the schemas: ${describeError(error)}`));
  if (!data) return box(h('p', { class: 'empty' }, 'Loading…'));
  const rule = h('span', { class: 'badge badge-accent', 'data-testid': `compatibility-${topic.name}` }, data.compatibility);
  if (!data.versions.length) {
    return box(
      h('p', {}, 'Compatibility ', rule),
      h('p', { class: 'empty' }, `No schema: ${topic.name} takes any JSON. Register one with POST /v1/topics/${topic.name}/schemas (or logway schemas register).`),
    );
  }
  const latest = data.versions[data.versions.length - 1];
  const example = { value: exampleOf(latest.schema) };
  return box(
    h('p', {}, 'Compatibility ', rule, ' · produce checks records against ', h('span', { class: 'chip' }, `version ${latest.version}`)),
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'table compact', 'data-testid': `versions-${topic.name}` },
        h('thead', {}, h('tr', {}, h('th', {}, 'Version'), h('th', {}, 'Registered'), h('th', {}, 'Properties'))),
        h(
          'tbody',
          {},
          [...data.versions].reverse().map((v) =>
            h(
              'tr',
              {},
              h('td', {}, h('span', { class: v === latest ? 'chip chip-on' : 'chip' }, v.version)),
              h('td', {}, new Date(v.registered_at).toLocaleString()),
              h('td', { class: 'mono' }, Object.keys(v.schema?.properties ?? {}).join(', ') || '—'),
            ),
          ),
        ),
      ),
    ),
    h('details', { class: 'schema' }, h('summary', {}, `Schema of version ${latest.version}`), h('pre', {}, JSON.stringify(latest.schema, null, 2))),
    h(
      'div',
      { class: 'example' },
      h(
        'div',
        { class: 'label-row' },
        'An example record',
        h('span', { class: 'hint' }, JSON.stringify(latest.schema).includes('"pattern"') ? ' generated from the schema; strings under a pattern are placeholders' : ' generated from the schema'),
      ),
      h('pre', { 'data-testid': `contract-example-${topic.name}` }, JSON.stringify(example, null, 2)),
      h(
        'button',
        {
          type: 'button',
          class: 'btn btn-ghost',
          onclick: () => {
            const form = $('#produce-form');
            form.topic.value = topic.name;
            form.value.value = JSON.stringify(example.value, null, 2);
            form.value.focus();
          },
        },
        'Use in the produce form',
      ),
    ),
  );
}

/** A value valid under common schemas: examples, const, enum, defaults, else by type. */
function exampleOf(schema, depth = 0) {
  if (schema === true || schema == null || depth > 6) return null;
  if (Array.isArray(schema.examples) && schema.examples.length) return schema.examples[0];
  if ('const' in schema) return schema.const;
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  if ('default' in schema) return schema.default;
  const branch = schema.anyOf?.[0] ?? schema.oneOf?.[0];
  if (branch) return exampleOf(branch, depth + 1);
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') ?? 'null' : schema.type;
  if (type === 'object' || (!type && schema.properties)) {
    const required = new Set(schema.required ?? []);
    const out = {};
    for (const [name, sub] of Object.entries(schema.properties ?? {})) {
      if (required.has(name) || depth === 0) out[name] = exampleOf(sub, depth + 1);
    }
    return out;
  }
  if (type === 'array') return [exampleOf(schema.items ?? true, depth + 1)];
  if (type === 'integer') return Math.max(schema.minimum ?? 1, 1);
  if (type === 'number') return schema.minimum ?? 9.99;
  if (type === 'boolean') return true;
  if (type === 'null') return null;
  if (type === 'string') {
    const formats = { 'date-time': new Date(0).toISOString(), date: '2026-01-01', email: 'ada@example.com', uuid: '00000000-0000-4000-8000-000000000000', uri: 'https://example.com' };
    return formats[schema.format] ?? 'x'.repeat(Math.max(schema.minLength ?? 4, 1));
  }
  return null;
}

function updateTopicChoices(topics) {
  const names = topics.map((t) => t.name);
  if (names.join('\n') === topicNames.join('\n')) return;
  topicNames = names;
  $('#topic-names').replaceChildren(...names.map((n) => h('option', { value: n })));
  const select = $('#tail-form [name=topic]');
  const chosen = select.value;
  select.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
  if (names.includes(chosen)) select.value = chosen;
  const produceTopic = $('#produce-form [name=topic]');
  if (!produceTopic.value && names.length) produceTopic.value = names[0];
}

// -- consumer groups ----------------------------------------------------------------------

const previousLag = new Map(); // "group/topic/partition" and "group" -> lag, to flash changes

async function loadGroups() {
  const groups = await client.listGroups();
  groups.sort((a, b) => a.group.localeCompare(b.group));
  return Promise.all(groups.map((g) => client.describeGroup(g.group)));
}

function lagBadge(lag) {
  if (lag == null) return h('span', { class: 'badge' }, 'no commits');
  return lag === 0
    ? h('span', { class: 'badge badge-ok' }, 'caught up')
    : h('span', { class: 'badge badge-warn' }, `lag ${number.format(lag)}`);
}

const expandedGroups = new Set();

function lagCell(group, p, owner) {
  const key = `${group}/${p.topic}/${p.partition}`;
  const changed = previousLag.has(key) && previousLag.get(key) !== p.lag;
  previousLag.set(key, p.lag);
  const level = p.lag == null ? 'none' : p.lag === 0 ? 'zero' : p.lag < 10 ? 'low' : p.lag < 100 ? 'mid' : 'high';
  const title = [
    `${p.topic} partition ${p.partition}`,
    `committed ${p.committedOffset ?? '—'} · end ${p.endOffset}`,
    owner ? `owner ${owner}` : 'no owner',
  ].join('\n');
  return h(
    'div',
    { class: `lag-cell lag-${level}${changed ? ' changed' : ''}`, title },
    h('span', { class: 'lag-partition' }, p.partition),
    h('span', { class: 'lag-value' }, p.lag == null ? '—' : number.format(p.lag)),
  );
}

function lagDetails(g, owner) {
  return h(
    'div',
    { class: 'table-wrap details' },
    h(
      'table',
      { class: 'table compact' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Partition'), h('th', {}, 'Owner'), h('th', { class: 'num' }, 'Committed'), h('th', { class: 'num' }, 'End'), h('th', { class: 'num' }, 'Lag'))),
      h(
        'tbody',
        {},
        g.partitions.map((p) => {
          const member = owner.get(`${p.topic}/${p.partition}`);
          return h(
            'tr',
            {},
            h('td', {}, h('span', { class: 'muted' }, `${p.topic} `), h('span', { class: 'chip' }, p.partition)),
            h('td', { class: 'member-id', title: member ?? '' }, member ? shortId(member) : '—'),
            h('td', { class: 'num' }, p.committedOffset == null ? '—' : number.format(p.committedOffset)),
            h('td', { class: 'num' }, number.format(p.endOffset)),
            h('td', { class: 'num' }, p.lag == null ? '—' : number.format(p.lag)),
          );
        }),
      ),
    ),
  );
}

function renderGroups(groups) {
  const box = $('#groups');
  $('#groups-updated').textContent = `live · ${new Date().toLocaleTimeString([], { hour12: false })}`;
  if (!groups.length) {
    box.replaceChildren(h('p', { class: 'empty' }, 'No consumer groups yet. Stream with ?group=<name> to start one.'));
    return;
  }
  box.replaceChildren(
    ...groups.map((g) => {
      const known = g.partitions.filter((p) => p.lag != null);
      const total = known.length ? known.reduce((n, p) => n + p.lag, 0) : null;
      const totalChanged = previousLag.has(g.group) && previousLag.get(g.group) !== total;
      previousLag.set(g.group, total);
      const owner = new Map();
      for (const m of g.members) for (const p of m.partitions) owner.set(`${m.topic}/${p}`, m.memberId);
      const open = expandedGroups.has(g.group);
      const topics = [...new Set(g.partitions.map((p) => p.topic))];
      return h(
        'div',
        { class: 'group', 'data-group': g.group },
        h(
          'div',
          { class: 'group-head' },
          h('span', { class: 'group-name' }, g.group),
          h('span', { class: g.state === 'Stable' ? 'badge badge-ok' : 'badge' }, g.state),
          h('span', { class: 'badge badge-accent' }, `generation ${g.generation}`),
          h('span', { class: 'badge' }, `${g.members.length} member${g.members.length === 1 ? '' : 's'}`),
          h('span', { 'data-testid': `group-lag-${g.group}`, 'data-lag': total ?? '', class: totalChanged ? 'changed' : '' }, lagBadge(total)),
          g.partitions.length
            ? h(
                'button',
                {
                  type: 'button',
                  class: 'link',
                  'aria-expanded': open,
                  onclick: () => {
                    if (open) expandedGroups.delete(g.group);
                    else expandedGroups.add(g.group);
                    renderGroups(groups);
                  },
                },
                open ? 'hide offsets' : 'offsets',
              )
            : null,
        ),
        g.members.length
          ? h(
              'ul',
              { class: 'members' },
              g.members.map((m) =>
                h(
                  'li',
                  {},
                  h('span', { class: 'member-id', title: m.memberId }, shortId(m.memberId)),
                  h('span', { class: 'muted' }, `${m.topic} →`),
                  m.partitions.length ? m.partitions.map((p) => h('span', { class: 'chip' }, p)) : h('span', { class: 'muted' }, 'no partitions'),
                ),
              ),
            )
          : h('p', { class: 'members muted' }, 'No live members: committed offsets wait for the next one.'),
        topics.map((topic) =>
          h(
            'div',
            { class: 'lag-strip', 'aria-label': `lag per partition of ${topic}` },
            h('span', { class: 'muted lag-topic' }, topics.length > 1 ? `${topic} lag` : 'lag'),
            g.partitions.filter((p) => p.topic === topic).map((p) => lagCell(g.group, p, owner.get(`${topic}/${p.partition}`))),
          ),
        ),
        open ? lagDetails(g, owner) : null,
      );
    }),
  );
}

// -- refresh loop -------------------------------------------------------------------------

let refreshTimer = null;
async function refresh() {
  clearTimeout(refreshTimer);
  try {
    const [topics, groups] = await Promise.all([loadTopics(), loadGroups()]);
    renderTopics(topics);
    updateTopicChoices(topics);
    renderGroups(groups);
    setStatus('ok', `connected · ${new URL(API_BASE).host}${new URL(API_BASE).pathname.replace(/\/$/, '')}`);
  } catch (err) {
    if (needsToken(err)) {
      setStatus('bad', 'sign-in required');
      const message = h('p', { class: 'empty' }, 'This gateway needs an API key or token: enter it in the top bar.');
      $('#topics').replaceChildren(message);
      $('#groups').replaceChildren(message.cloneNode(true));
      $('#token').focus();
    } else if (err instanceof Forbidden) {
      setStatus('bad', `forbidden: ${describeError(err)}`);
    } else {
      setStatus('bad', `unreachable: ${describeError(err)}`);
    }
  }
  refreshTimer = setTimeout(refresh, REFRESH_MS);
}

// -- live tail ----------------------------------------------------------------------------

const tail = { consumer: null, received: 0, records: [] };

function tailFilter() {
  const form = $('#tail-form');
  const key = form.key.value.trim().toLowerCase();
  const header = form.header.value.trim();
  const [headerName, ...rest] = header.split('=');
  const headerValue = rest.length ? rest.join('=').trim() : null;
  const name = headerName.trim().toLowerCase();
  return (record) => {
    if (key && !(record.key ?? '').toLowerCase().includes(key)) return false;
    if (name) {
      const found = Object.entries(record.headers).find(([n]) => n.toLowerCase() === name);
      if (!found) return false;
      if (headerValue != null && found[1] !== headerValue) return false;
    }
    return true;
  };
}

function valueText(record) {
  if (record.valueBytes) return `‹${record.valueBytes.length} bytes›`;
  return JSON.stringify(record.value);
}

/** A click handler that opens (or closes) a row under the record's row with all of it. */
function toggleRecord(record) {
  return (event) => {
    const row = event.currentTarget;
    if (row.nextElementSibling?.classList.contains('record-detail')) {
      row.nextElementSibling.remove();
      return;
    }
    const doc = {
      topic: record.topic,
      partition: record.partition,
      offset: record.offset,
      timestamp: new Date(record.timestamp).toISOString(),
      key: record.key,
      headers: record.headers,
      value: record.valueBytes ? `‹${record.valueBytes.length} bytes›` : record.value,
    };
    row.after(h('tr', { class: 'record-detail' }, h('td', { colspan: 6 }, h('pre', {}, JSON.stringify(doc, null, 2)))));
  };
}

function tailRow(record, fresh) {
  const time = new Date(record.timestamp);
  const value = valueText(record);
  return h(
    'tr',
    { class: fresh ? 'fresh' : '', 'data-key': record.key ?? '', title: 'Click to show the whole record', onclick: toggleRecord(record) },
    h('td', { class: 'time', title: time.toISOString() }, time.toLocaleTimeString([], { hour12: false })),
    h('td', {}, h('span', { class: 'chip' }, record.partition)),
    h('td', { class: 'num' }, number.format(record.offset)),
    h('td', { class: 'key', title: record.key ?? '' }, record.key ?? h('span', { class: 'muted' }, 'null')),
    h('td', { class: 'headers' }, Object.entries(record.headers).map(([n, v]) => h('span', { class: 'header-chip' }, `${n}: ${v}`))),
    h('td', { class: 'value', title: value }, value),
  );
}

function renderTail() {
  const matches = tailFilter();
  const shown = tail.records.filter(matches);
  const rows = $('#tail-rows');
  if (!shown.length) {
    const text = tail.consumer ? 'Waiting for records…' : 'Pick a topic and press Start to follow new records.';
    rows.replaceChildren(h('tr', { class: 'placeholder' }, h('td', { colspan: 6 }, text)));
  } else {
    rows.replaceChildren(...shown.slice().reverse().map((r) => tailRow(r, false)));
  }
  updateTailStatus(shown.length);
}

function updateTailStatus(shown) {
  const status = $('#tail-status');
  if (!tail.consumer) {
    status.textContent = tail.records.length ? `stopped · ${tail.records.length} records kept` : 'stopped';
    return;
  }
  status.textContent = `● live on ${tail.consumer.topic} · ${shown} shown of ${tail.received} received`;
}

async function runTail(consumer) {
  try {
    for await (const record of consumer) {
      tail.received++;
      tail.records.push(record);
      if (tail.records.length > TAIL_KEEP) tail.records.shift();
      if (tailFilter()(record)) {
        const rows = $('#tail-rows');
        rows.querySelector('tr.placeholder')?.remove();
        rows.prepend(tailRow(record, true));
        while (rows.children.length > TAIL_KEEP) rows.lastChild.remove();
      }
      updateTailStatus($('#tail-rows').querySelectorAll('tr:not(.placeholder):not(.record-detail)').length);
    }
  } catch (err) {
    if (tail.consumer === consumer) {
      tail.consumer = null;
      $('#tail-toggle').textContent = 'Start';
      $('#tail-status').textContent = `stopped: ${describeError(err)}`;
      if (needsToken(err)) setStatus('bad', 'sign-in required');
    }
  }
}

async function stopTail() {
  const consumer = tail.consumer;
  tail.consumer = null;
  $('#tail-toggle').textContent = 'Start';
  if (consumer) await consumer.close();
  renderTail();
}

async function startTail() {
  await stopTail();
  const form = $('#tail-form');
  const topic = form.topic.value;
  if (!topic) return;
  tail.records = [];
  tail.received = 0;
  const consumer = client.consumer(topic, { from: form.from.value });
  tail.consumer = consumer;
  $('#tail-toggle').textContent = 'Stop';
  renderTail();
  runTail(consumer);
}

$('#tail-form').addEventListener('submit', (event) => {
  event.preventDefault();
  if (tail.consumer) stopTail();
  else startTail();
});
$('#tail-clear').addEventListener('click', () => {
  tail.records = [];
  tail.received = 0;
  renderTail();
});
for (const name of ['key', 'header']) $(`#tail-form [name=${name}]`).addEventListener('input', renderTail);

// -- produce ------------------------------------------------------------------------------

function parseHeaders(text) {
  const headers = {};
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const match = line.match(/^\s*([^:=]+?)\s*[:=]\s*(.*)$/);
    if (!match) throw new Error(`header line "${line.trim()}" is not "name: value"`);
    headers[match[1]] = match[2].trim();
  }
  return headers;
}

function parseValue(text) {
  if (!text.trim()) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text; // plain text is sent as a JSON string
  }
}

$('#produce-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.target;
  const result = $('#produce-result');
  result.className = 'result';
  result.textContent = 'Sending…';
  try {
    const record = {
      key: form.key.value === '' ? null : form.key.value,
      value: parseValue(form.value.value),
      headers: parseHeaders(form.headers.value),
    };
    if (form.partition.value !== '') record.partition = Number(form.partition.value);
    const [written] = await client.produce(form.topic.value.trim(), [record]);
    result.className = 'result ok';
    result.textContent = `✓ Written to ${written.topic}, partition ${written.partition} at offset ${written.offset}`;
    refresh();
  } catch (err) {
    result.className = 'result bad';
    result.textContent = describeError(err);
  }
});

refresh();
