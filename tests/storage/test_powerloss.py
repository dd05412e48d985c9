"""Power loss, simulated (issue 14): recovery serves every acknowledged record, and never a
corrupt or invented one, on every disk a power cut could leave.

kill -9 (test_crash.py) keeps the page cache; a power cut does not. Here the log engine
runs under `fsync=always` on a recording file system (tests/storage/powerloss.py), with
tiny segments so that groups, rolls, zero-filling and prepared next-segment files all
happen; hypothesis picks the workload, the crash point and what of the unsynced state
survived (torn at 512-byte sectors, directory entries without a directory fsync lost).
The engine is then opened on that disk and every partition read from start to end:

- every acknowledged record (its append's future resolved before the crash point) is
  there, at its offset, with its bytes;
- every record served is one that was appended at that offset (nothing invented, nothing
  corrupt), offsets are dense, and the partition takes and serves a new append.

A second stage crashes again while the recovered engine runs (its recovery writes
included) and checks the same, with everything the first recovery served counted as
acknowledged: once served, a record must not change or vanish.

The long run (100,000 crash points, about 6 minutes on one core) is `test_power_loss_long_run`,
marked `long`: the suite leaves it out, `pytest -m long` runs it; its result is in
bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.files import Files
from storage.log import LogEngine
from storage.partition import _open_segments, _read_segments
from storage.types import AppendResult, Durability, DurabilityPolicy, NewRecord, TopicConfig
from tests.storage.powerloss import Image, RecordingFiles, crash_image

TOPIC = "t"
PARTITIONS = 2
Key = tuple[int, int]  # (partition, offset)
Workload = list[list[tuple[int, int]]]  # waves of appends: (partition, value size)
Crash = tuple[float, int, float, int]  # two crash points (shares of a trace) and seeds

# A wave is appends started together (one group commit per partition, or several when
# large); each append is one record: (partition, value size).
waves = st.lists(
    st.lists(st.tuples(st.integers(0, PARTITIONS - 1), st.integers(0, 1400)), max_size=6),
    min_size=1,
    max_size=6,
)
segment_sizes = st.sampled_from([1024, 2048, 4096])
crash_points = st.floats(0.0, 1.0)  # as a share of the trace, so a replay lands nearby
seeds = st.integers(0, 2**32 - 1)


@dataclass
class History:
    """What was appended (every value, by partition and offset) and what must be there."""

    appended: dict[Key, bytes] = field(default_factory=dict)
    acked_at: dict[Key, int] = field(default_factory=dict)  # trace length at the ack


@pytest.fixture
def scratch() -> Iterator[Path]:
    """Directories for the disks, in memory when /dev/shm exists (many fsyncs)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    directory = Path(tempfile.mkdtemp(prefix="logway-powerloss-", dir=base))
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def _value(partition: int, serial: int, size: int) -> bytes:
    """A value that names its append, so a record in the wrong place is told apart."""
    head = f"p{partition}#{serial}:".encode()
    return (head + bytes(range(256)) * (size // 256 + 1))[: max(size, len(head))]


async def _session(
    root: Path,
    files: Files,
    segment_bytes: int,
    required: dict[Key, bytes],
    history: History,
    workload: Workload,
) -> dict[Key, bytes]:
    """Open the engine on `root`, check what it serves, run `workload`, close. Returns
    what it served on opening."""
    config = TopicConfig(retention_ms=None, segment_bytes=segment_bytes)
    engine = await LogEngine.open(root, DurabilityPolicy(Durability.ALWAYS), 3600, files=files)
    try:
        await engine.open_topic(TOPIC, PARTITIONS, config)
        served = await _check(engine, required, history)
        trace = getattr(files, "trace", [])
        acked_at: dict[asyncio.Future[AppendResult], int] = {}

        def acked(future: asyncio.Future[AppendResult]) -> None:
            acked_at[future] = len(trace)

        for wave in workload:
            futures: list[tuple[int, bytes, asyncio.Future[AppendResult]]] = []
            for partition, size in wave:
                value = _value(partition, len(history.appended) + len(futures), size)
                future = engine.start_append(TOPIC, partition, [NewRecord(value)])
                future.add_done_callback(acked)
                futures.append((partition, value, future))
            for partition, value, future in futures:
                key = (partition, (await future).base_offset)
                history.appended[key] = value
                history.acked_at[key] = acked_at.get(future, len(trace))
        return served
    finally:
        await engine.close()


async def _check(
    engine: LogEngine, required: dict[Key, bytes], history: History
) -> dict[Key, bytes]:
    """Read every partition whole: `required` is there, nothing else is invented."""
    served: dict[Key, bytes] = {}
    for partition in range(PARTITIONS):
        info = engine.partition_info(TOPIC, partition)
        records = await engine.read(TOPIC, partition, info.log_start_offset, 10**6, 2**30)
        offsets = [r.offset for r in records]
        assert offsets == list(range(info.log_start_offset, info.end_offset)), offsets
        for record in records:
            key = (partition, record.offset)
            assert history.appended.get(key) == record.value, f"invented or corrupt: {key}"
            served[key] = record.value
    missing = sorted(set(required) - set(served))
    assert not missing, f"acknowledged records lost: {missing}"
    return served


def _acked_by(history: History, k: int) -> dict[Key, bytes]:
    """The records whose append was acknowledged within the first `k` operations."""
    return {key: history.appended[key] for key, at in history.acked_at.items() if at <= k}


def _fresh(scratch: Path, name: str) -> Path:
    path = scratch / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


async def _crash_and_recover(
    scratch: Path,
    segment_bytes: int,
    first: Workload,
    second: Workload,
    crashes: list[Crash],
) -> int:
    """Run `first`, then for each crash: cut power, recover and run `second` on that disk,
    cut power again, recover and check. Returns the number of crash points checked."""
    history = History()
    root = _fresh(scratch, "run")
    files = RecordingFiles(root)
    await _session(root, files, segment_bytes, {}, history, first)
    checked = 0
    for share1, seed1, share2, seed2 in crashes:
        rng = random.Random(seed1)
        k1 = round(share1 * len(files.trace))
        image1 = crash_image(files.initial, files.trace, k1, rng)
        root2 = _fresh(scratch, "recovered")
        image1.write(root2)
        files2 = RecordingFiles(root2, image1)
        second_history = History(dict(history.appended))
        served = await _session(
            root2, files2, segment_bytes, _acked_by(history, k1), second_history, second
        )
        k2 = round(share2 * len(files2.trace))
        image2 = crash_image(image1, files2.trace, k2, random.Random(seed2))
        root3 = _fresh(scratch, "final")
        image2.write(root3)
        required = served | _acked_by(second_history, k2)
        await _session(root3, Files(), segment_bytes, required, second_history, [])
        checked += 2
    return checked


@pytest.mark.slow  # ~400 crash points: ~5-9 s
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    segment_bytes=segment_sizes,
    first=waves,
    second=waves,
    crashes=st.lists(st.tuples(crash_points, seeds, crash_points, seeds), min_size=1, max_size=3),
)
def test_power_loss_keeps_every_acknowledged_record(
    scratch: Path,
    segment_bytes: int,
    first: Workload,
    second: Workload,
    crashes: list[Crash],
) -> None:
    asyncio.run(_crash_and_recover(scratch, segment_bytes, first, second, crashes))


def test_a_crash_image_keeps_what_was_synced_and_may_lose_the_rest(tmp_path: Path) -> None:
    """The model itself: synced writes and entries stay, unsynced ones can go either way."""
    files = RecordingFiles(tmp_path)
    fd = files.open(tmp_path / "a", create=True)
    files.write_all(fd, b"x" * 1024, 0)
    files.fdatasync(fd)
    files.fsync_dir(tmp_path)
    files.write_all(fd, b"y" * 1024, 512)
    files.close(fd)
    files.rename(tmp_path / "a", tmp_path / "b")
    seen = set()
    for seed in range(64):
        image = crash_image(files.initial, files.trace, len(files.trace), random.Random(seed))
        (name,) = image.names
        content = image.contents[image.names[name]]
        assert content[:512] == b"x" * 512
        seen.add((name, content[512:1024], content[1024:]))
    assert {name for name, _, _ in seen} == {"a", "b"}
    assert {middle for _, middle, _ in seen} == {b"x" * 512, b"y" * 512}
    assert {tail for _, _, tail in seen} >= {b"", b"y" * 512, bytes(512)}
    assert isinstance(Image.read(tmp_path), Image)


LONG_RUN_WORKLOADS = 1_000
LONG_RUN_DIRECT = 96  # crash points per workload recovered without an event loop
LONG_RUN_FULL = 2  # and crash pairs through the whole engine, as above


def _recover_directly(root: Path, required: dict[Key, bytes], history: History) -> None:
    """What `_session` checks on opening, through the same recovery and read functions
    the engine runs in its pool (storage.partition), minus the event loop and threads."""
    served: set[Key] = set()
    for partition in range(PARTITIONS):
        directory = root / TOPIC / str(partition)
        if not directory.is_dir():
            continue
        segments = _open_segments(Files(), directory)
        try:
            start, end = segments[0].base_offset, segments[-1].next_offset
            limits = [s.readable_size for s in segments]
            records = _read_segments(segments, limits, start, 10**6, 2**30) if end > start else []
        finally:
            for segment in segments:
                segment.close()
        assert [r.offset for r in records] == list(range(start, end))
        for record in records:
            key = (partition, record.offset)
            assert history.appended.get(key) == record.value, f"invented or corrupt: {key}"
            served.add(key)
    missing = sorted(set(required) - served)
    assert not missing, f"acknowledged records lost: {missing}"


async def _long_run_workload(
    scratch: Path,
    segment_bytes: int,
    first: Workload,
    seed: int,
) -> int:
    history = History()
    root = _fresh(scratch, "run")
    files = RecordingFiles(root)
    await _session(root, files, segment_bytes, {}, history, first)
    rng = random.Random(seed)
    for _ in range(LONG_RUN_DIRECT):
        k = rng.randrange(len(files.trace) + 1)
        image = crash_image(files.initial, files.trace, k, rng)
        recovered = _fresh(scratch, "recovered")
        image.write(recovered)
        _recover_directly(recovered, _acked_by(history, k), history)
    crashes = [(rng.random(), rng.getrandbits(32), rng.random(), rng.getrandbits(32))]
    checked = LONG_RUN_DIRECT
    for _ in range(LONG_RUN_FULL):
        checked += await _crash_and_recover(scratch, segment_bytes, first, first, crashes)
    return checked


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(4 * 3600)
def test_power_loss_long_run(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """100,000 crash points (bench/RESULTS.md): many per workload, most recovered directly."""
    checked = [0, 0]

    @settings(
        max_examples=LONG_RUN_WORKLOADS,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(segment_bytes=segment_sizes, first=waves, seed=seeds)
    def run(segment_bytes: int, first: Workload, seed: int) -> None:
        checked[0] += 1
        checked[1] += asyncio.run(_long_run_workload(scratch, segment_bytes, first, seed))

    started = time.monotonic()
    run()
    with capsys.disabled():
        print(
            f"\npower loss: {checked[0]} workloads, {checked[1]} crash points recovered"
            f" and checked in {time.monotonic() - started:.0f} s"
        )
    assert checked[1] >= 100_000
