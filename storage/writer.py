"""The engine's writer thread: every write-side file operation of every partition, in order.

One dedicated thread rather than a slot in the shared I/O pool: a group commit starts as
soon as the thread takes it from a SimpleQueue (no pool bookkeeping, no futures chained
across threads, no worker woken by chance), and a slow read can never delay an append.
Each finished job wakes the event loop once, with `call_soon_threadsafe`, to run its
`done` callback there (`call`), or to settle the asyncio future its caller awaits
(`submit`). Partitions serialise their own jobs, so the thread never sees two jobs of one
partition at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")

Done = Callable[[T | None, BaseException | None], None]
"""Told (result, None) or (None, error) on the loop once a job has run."""
_Job = tuple[
    asyncio.AbstractEventLoop, Callable[[], Any], Callable[[Any, BaseException | None], None]
]


class WriterThread:
    """A thread that runs submitted callables one at a time (see the module docstring)."""

    def __init__(self, name: str = "logway-writer") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call(self, work: Callable[[], T], done: Done[T]) -> None:
        """Run `work` on the thread, then `done` with its outcome on the running loop."""
        self._jobs.put((asyncio.get_running_loop(), work, done))

    def submit(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """Run `work` on the thread; the future (of the running loop) gets its outcome."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.call(work, partial(_settle, future))
        return future

    def stop(self) -> None:
        """Finish the jobs already submitted, then end the thread (blocking)."""
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
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
