"""Observability: Prometheus metrics (`/metrics`) and optional JSON access logs.

Per request the cost is one `perf_counter` pair and one histogram observation, taken when
the response starts (for a stream: when it opens, not when it ends), so the latency
histogram says how long clients waited for an answer. Counters of records and bytes are
bumped once per batch by the routes (`Metrics.produced` / `Metrics.consumed`). What is
cheap to read when Prometheus asks — open streams, log size and end offset per partition,
committed offsets and lag per consumer group — is read at scrape time from the backend,
never tracked per request.

Each app has its own `CollectorRegistry`, so several apps in one process (tests) never
share or clash over series.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from operator import attrgetter
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage import errors
from storage.backend import Backend
from storage.types import NewRecord, Record

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
FSYNC_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
UNMATCHED_ROUTE = "<unmatched>"  # 404s must not create a series per requested path
# Labelled children kept for reuse (topics, route x method x status); cleared when full.
MAX_CACHED_SERIES = 10_000

access_logger = logging.getLogger("logway.access")


_value_of = attrgetter("value")
_key_of = attrgetter("key")


def record_bytes(records: Sequence[Record | NewRecord]) -> int:
    """Key + value bytes of some records (headers are small and not counted).

    Summed with C-level map/filter: it runs once per produced request and per read batch.
    """
    return sum(map(len, map(_value_of, records))) + sum(
        map(len, filter(None, map(_key_of, records)))
    )


class Metrics:
    """The app's metrics; the routes call `produced`/`consumed`, the middleware the rest."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "logway_http_request_duration_seconds",
            "Time until the response started (for streams: until the stream opened)",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        # Records and bytes per topic: plain ints, turned into counters at scrape time, so
        # the produce path adds to a list instead of taking two locks (all on the loop).
        self._produced: dict[str, list[int]] = {}
        self._consumed: dict[str, list[int]] = {}
        self.registry.register(
            _TopicCounters(
                self._produced,
                ("logway_records_produced", "Records appended"),
                ("logway_bytes_produced", "Key and value bytes of records appended"),
            )
        )
        self.registry.register(
            _TopicCounters(
                self._consumed,
                (
                    "logway_records_consumed",
                    "Records read from the log for consumers (streams and pulls)",
                ),
                ("logway_bytes_consumed", "Key and value bytes of records read for consumers"),
            )
        )
        self.fsync_seconds = Histogram(
            "logway_fsync_duration_seconds",
            "Duration of each fsync of a log segment (embedded backend)",
            buckets=FSYNC_BUCKETS_S,
            registry=self.registry,
        )
        # labels() costs a lock and a tuple build per call; the hot path reuses children
        self._request_children: dict[tuple[str, str, int], Histogram] = {}

    def produced(self, topic: str, records: Sequence[NewRecord]) -> None:
        """Count the records of one produce request."""
        _add(self._produced, topic, len(records), record_bytes(records))

    def consumed(self, topic: str, records: list[Record]) -> None:
        _add(self._consumed, topic, len(records), record_bytes(records))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One request's latency; the labelled child is looked up once per series, not per call."""
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            if len(self._request_children) >= MAX_CACHED_SERIES:
                self._request_children.clear()
            child = self.request_seconds.labels(route, method, str(status))
            self._request_children[key] = child
        child.observe(seconds)

    def observe_fsync(self, seconds: float) -> None:
        """Storage's fsync hook (called from its I/O threads; prometheus-client is thread-safe)."""
        self.fsync_seconds.observe(seconds)

    async def exposition(self, backend: Backend, open_streams: int) -> bytes:
        """The whole scrape: the live metrics plus what is read from the backend right now."""
        families = await _scrape_time_families(backend, open_streams)
        snapshot = CollectorRegistry(auto_describe=False)
        snapshot.register(_Families(families))
        return generate_latest(self.registry) + generate_latest(snapshot)


def _add(counts: dict[str, list[int]], topic: str, records: int, size_bytes: int) -> None:
    totals = counts.get(topic)
    if totals is None:
        if len(counts) >= MAX_CACHED_SERIES:  # topics come and go: forget the old ones
            counts.clear()
        totals = counts[topic] = [0, 0]
    totals[0] += records
    totals[1] += size_bytes


class _TopicCounters(Collector):
    """A records counter and a bytes counter per topic, from `counts` (topic -> [records,
    bytes]) as it is when Prometheus scrapes."""

    def __init__(
        self, counts: dict[str, list[int]], records: tuple[str, str], size: tuple[str, str]
    ) -> None:
        self.counts = counts
        self.records = records
        self.size = size

    def collect(self) -> Iterator[Metric]:
        records = CounterMetricFamily(*self.records, labels=["topic"])
        size = CounterMetricFamily(*self.size, labels=["topic"])
        for topic, (count, size_bytes) in self.counts.items():
            records.add_metric([topic], count)
            size.add_metric([topic], size_bytes)
        yield records
        yield size


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


async def _scrape_time_families(backend: Backend, open_streams: int) -> list[Metric]:
    streams = GaugeMetricFamily(
        "logway_open_streams", "Open SSE/NDJSON streams and long polls", value=open_streams
    )
    size = GaugeMetricFamily(
        "logway_log_size_bytes", "Bytes of the log per partition", labels=["topic", "partition"]
    )
    end = GaugeMetricFamily(
        "logway_log_end_offset", "Next offset to be written", labels=["topic", "partition"]
    )
    start = GaugeMetricFamily(
        "logway_log_start_offset", "First offset still stored", labels=["topic", "partition"]
    )
    lag = GaugeMetricFamily(
        "logway_consumer_group_lag",
        "End offset minus the group's committed offset",
        labels=["group", "topic", "partition"],
    )
    committed = GaugeMetricFamily(
        "logway_consumer_group_committed_offset",
        "The group's committed offset (the next one to read)",
        labels=["group", "topic", "partition"],
    )
    end_offsets: dict[tuple[str, int], int] = {}
    try:
        for topic in await backend.list_topics():
            for p in range(topic.partitions):
                info = await backend.partition_info(topic.name, p)
                labels = [topic.name, str(p)]
                size.add_metric(labels, info.size_bytes)
                end.add_metric(labels, info.end_offset)
                start.add_metric(labels, info.log_start_offset)
                end_offsets[(topic.name, p)] = info.end_offset
        for group in await backend.list_groups():
            for tp, offset in (await backend.committed_offsets(group)).items():
                labels = [group, tp.topic, str(tp.partition)]
                committed.add_metric(labels, offset)
                end_offset = end_offsets.get((tp.topic, tp.partition))
                if end_offset is not None:
                    lag.add_metric(labels, max(0, end_offset - offset))
    except errors.StorageError:  # a topic deleted mid-scrape, storage down: report the rest
        pass
    return [streams, size, end, start, committed, lag]


class ObservingMiddleware:
    """Request latency by route template, method and status; a JSON access line if enabled."""

    def __init__(self, app: ASGIApp, access_log_json: bool) -> None:
        self.app = app
        self.access_log_json = access_log_json
        if access_log_json and not access_logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            access_logger.addHandler(handler)
            access_logger.setLevel(logging.INFO)
            access_logger.propagate = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = 0
        ctx = getattr(scope["app"].state, "logway", None)  # the app's Context, once started
        metrics: Metrics | None = ctx.metrics if ctx is not None else None

        async def observed_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                if metrics is not None:
                    route = scope.get("route")
                    template = route.path if isinstance(route, Route) else UNMATCHED_ROUTE
                    metrics.observe_request(
                        template, scope["method"], status, time.perf_counter() - started
                    )
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if self.access_log_json:
                self._log(scope, status, sent, started)

    @staticmethod
    def _log(scope: Scope, status: int, sent: int, started: float) -> None:
        client = scope.get("client")
        route = scope.get("route")
        line: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "client": client[0] if client else None,
            "scheme": scope.get("scheme"),
            "method": scope["method"],
            "path": scope["path"],
            "route": route.path if isinstance(route, Route) else None,
            "status": status,
            "bytes": sent,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "http_version": scope.get("http_version"),
        }
        access_logger.info(orjson.dumps(line).decode())
