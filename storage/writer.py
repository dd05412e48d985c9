"""The engine's writer thread: every write-side file operation of every partition.

One dedicated thread rather than a slot in the shared I/O pool: a group commit starts as
soon as the thread takes it from a SimpleQueue (no pool bookkeeping, no futures chained
across threads, no worker woken by chance), and a slow read can never delay an append.
Each finished job wakes the event loop once, with `call_soon_threadsafe`, to run its
`done` callback there (`call`), or to settle the asyncio future its caller awaits
(`submit`).

Partitions serialise their own jobs, so no two jobs of one partition ever run at once; jobs
of different partitions are independent. When the thread finds several jobs queued it runs
the first itself and hands the others to its own helper threads, so that the fdatasyncs of
many partitions overlap (one after another they cost a device flush each: 8 partitions
with 4 producers each ran at 0.3-0.8 x the shared pool's rate without helpers).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")

Done = Callable[[T | None, BaseException | None], None]
"""Told (result, None) or (None, error) on the loop once a job has run."""
_Job = tuple[
    asyncio.AbstractEventLoop, Callable[[], Any], Callable[[Any, BaseException | None], None]
]
# Jobs of other partitions that may run beside the writer thread's own.
HELPER_THREADS = 7


class WriterThread:
    """A thread that runs submitted callables (see the module docstring)."""

    def __init__(self, name: str = "logway-writer") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._helpers = ThreadPoolExecutor(HELPER_THREADS, thread_name_prefix=f"{name}-helper")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call(self, work: Callable[[], T], done: Done[T]) -> None:
        """Run `work` off the loop, then `done` with its outcome on the running loop."""
        self._jobs.put((asyncio.get_running_loop(), work, done))

    def submit(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """Run `work` off the loop; the future (of the running loop) gets its outcome."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.call(work, partial(_settle, future))
        return future

    def stop(self) -> None:
        """Finish the jobs already submitted, then end the threads (blocking)."""
        self._jobs.put(None)
        self._thread.join()
        self._helpers.shutdown(wait=True)

    def _run(self) -> None:
        stopping = False
        while not stopping and (job := self._jobs.get()) is not None:
            while True:  # the others queued now run beside this one
                try:
                    other = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if other is None:
                    stopping = True
                    break
                self._helpers.submit(_run_job, other)
            _run_job(job)


def _run_job(job: _Job) -> None:
    loop, work, done = job
    try:
        result = work()
    except BaseException as exc:
        outcome: tuple[Any, BaseException | None] = (None, exc)
    else:
        outcome = (result, None)
    # RuntimeError: the loop closed meanwhile, and nobody is waiting any more
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(done, *outcome)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: hand a finished job's outcome to its waiter (if it still waits)."""
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
