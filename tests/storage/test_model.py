"""A hypothesis state machine: random appends, reads, reopens, rolls (tiny segments),
timestamp lookups and retention against a plain in-memory list of records."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from storage import partition
from storage.errors import OffsetOutOfRange
from storage.log import LogEngine
from storage.types import DurabilityPolicy, NewRecord, Record, TopicConfig

RETENTION_MS = 1000
values = st.binary(max_size=300)
keys = st.none() | st.binary(max_size=8)
batches = st.lists(st.tuples(values, keys), min_size=1, max_size=4)


@dataclass
class ModelRecord:
    value: bytes
    key: bytes | None
    timestamp_ms: int


class LogModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # A clock the machine moves, so runs replay exactly (hypothesis needs that).
        self.clock_ms = 1_700_000_000_000
        self.real_now_ms = partition.now_ms
        partition.now_ms = lambda: self.clock_ms
        self.runner = asyncio.Runner()
        self.directory = Path(tempfile.mkdtemp(prefix="logway-model-"))
        self.retention_bytes: int | None = None
        self.records: list[ModelRecord] = []  # index = offset
        self.log_start = 0
        self.engine = self.runner.run(self._open())

    def _config(self) -> TopicConfig:
        return TopicConfig(
            segment_bytes=1024, retention_ms=RETENTION_MS, retention_bytes=self.retention_bytes
        )

    async def _open(self) -> LogEngine:
        engine = await LogEngine.open(self.directory, DurabilityPolicy(), 3600)
        await engine.open_topic("t", 1, self._config())
        return engine

    def teardown(self) -> None:
        self.runner.run(self.engine.close())
        self.runner.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        partition.now_ms = self.real_now_ms

    @rule(ms=st.integers(0, 2 * RETENTION_MS))
    def advance_clock(self, ms: int) -> None:
        self.clock_ms += ms

    def _append(self, batch: list[tuple[bytes, bytes | None]]) -> None:
        result = self.runner.run(
            self.engine.append("t", 0, [NewRecord(v, key=k) for v, k in batch])
        )
        assert result.base_offset == len(self.records)
        assert result.count == len(batch)
        self.records += [ModelRecord(v, k, result.timestamp_ms) for v, k in batch]

    @rule(batch=batches)
    def append(self, batch: list[tuple[bytes, bytes | None]]) -> None:
        self._append(batch)

    @rule(many=st.lists(batches, min_size=2, max_size=6))
    def append_concurrently(self, many: list[list[tuple[bytes, bytes | None]]]) -> None:
        async def go() -> list[tuple[int, int]]:
            results = await asyncio.gather(
                *(self.engine.append("t", 0, [NewRecord(v, key=k) for v, k in b]) for b in many)
            )
            return [(r.base_offset, r.timestamp_ms) for r in results]

        results = self.runner.run(go())
        # Queue order is call order, so offsets follow the order of the calls.
        for (base_offset, timestamp_ms), batch in zip(results, many, strict=True):
            assert base_offset == len(self.records)
            self.records += [ModelRecord(v, k, timestamp_ms) for v, k in batch]

    @rule(data=st.data(), max_records=st.integers(1, 50), max_bytes=st.integers(1, 3000))
    def read(self, data: st.DataObject, max_records: int, max_bytes: int) -> None:
        offset = data.draw(st.integers(self.log_start, len(self.records)))
        got = self.runner.run(self.engine.read("t", 0, offset, max_records, max_bytes))
        expected: list[Record] = []
        used = 0
        for i in range(offset, min(len(self.records), offset + max_records)):
            r = self.records[i]
            size = len(r.value) + len(r.key or b"")
            if expected and used + size > max_bytes:
                break
            used += size
            expected.append(Record(i, r.timestamp_ms, r.value, r.key, (), got[0].value_format))
        assert got == expected

    @rule(below=st.booleans())
    def read_out_of_range(self, below: bool) -> None:
        if below and self.log_start == 0:
            return
        offset = self.log_start - 1 if below else len(self.records) + 1
        with pytest.raises(OffsetOutOfRange):
            self.runner.run(self.engine.read("t", 0, offset, 1, 1))

    @rule(retention_bytes=st.sampled_from([None, None, 1500, 4000]))
    def reopen(self, retention_bytes: int | None) -> None:
        self.runner.run(self.engine.close())
        self.retention_bytes = retention_bytes
        self.engine = self.runner.run(self._open())

    @precondition(lambda self: bool(self.records))
    @rule(data=st.data())
    def offset_for_timestamp(self, data: st.DataObject) -> None:
        stamps = [r.timestamp_ms for r in self.records]
        wanted = data.draw(st.sampled_from([*stamps, stamps[-1] + 1, 0]))
        got = self.runner.run(self.engine.offset_for_timestamp("t", 0, wanted))
        expected = next(
            (i for i in range(self.log_start, len(self.records)) if stamps[i] >= wanted),
            len(self.records),
        )
        assert got == expected

    @precondition(lambda self: bool(self.records))
    @rule(data=st.data())
    def retention(self, data: st.DataObject) -> None:
        stamps = [r.timestamp_ms for r in self.records]
        now = (
            data.draw(st.sampled_from([stamps[0], *stamps]))
            + RETENTION_MS
            + data.draw(st.integers(0, 2))
        )
        self.runner.run(self.engine.run_retention(now))
        info = self.engine.partition_info("t", 0)
        assert self.log_start <= info.log_start_offset <= len(self.records)
        for offset in range(self.log_start, info.log_start_offset):
            # Deleted by time only if old enough, or by size while over the limit.
            assert self.retention_bytes is not None or now - stamps[offset] > RETENTION_MS
        if self.retention_bytes is not None:
            segments = list((self.directory / "t" / "0").glob("*.log"))
            assert info.size_bytes <= self.retention_bytes or len(segments) == 1
        if info.log_start_offset > self.log_start:
            event("retention deleted segments")
        self.log_start = info.log_start_offset

    @invariant()
    def offsets_match(self) -> None:
        info = self.engine.partition_info("t", 0)
        assert info.end_offset == len(self.records)
        assert info.log_start_offset == self.log_start


LogModel.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_log_model = pytest.mark.slow(LogModel.TestCase)
