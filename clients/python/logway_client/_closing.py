"""`with` / `async with` for every client object that has a close(): leaving the block closes it."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class ClosesOnExit(abc.ABC):
    @abc.abstractmethod
    def close(self) -> None: ...

    def close_on_exit(self, clean: bool) -> None:
        """What leaving the block does (`clean`: without an exception): close()."""
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_on_exit(exc_type is None)


class AsyncClosesOnExit(abc.ABC):
    @abc.abstractmethod
    async def close(self) -> None: ...

    async def close_on_exit(self, clean: bool) -> None:
        """What leaving the block does (`clean`: without an exception): close()."""
        await self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close_on_exit(exc_type is None)
