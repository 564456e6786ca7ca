"""Work that must finish even when nobody waits for it any more: a POST that may start or change paid work.

A tool call must answer within its bound whatever the crew does, but a ``POST /kickoff``, ``/resume`` or ``/stop``
that may have reached the crew must still be seen through: its answer names a billed run (a kickoff_id to
record) or settles a decision. :class:`Detacher` runs such work shielded in the service's task group and lets
the caller wait for it only as long as the caller may.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

__all__ = ["Detached", "Detacher"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class Detached(Generic[_T]):
    """The handle of detached work: ``done`` once it finished, with its ``value`` or its ``error``."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: _T | None = None
        self.error: Exception | None = None
        self.abandoned = False

    def result(self) -> _T:
        """The value of finished work, or its exception raised again."""
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


class Detacher:
    """Runs detached work in its own task group; enter it (``async with``) for the service's lifetime.

    Leaving cancels nothing that is under way: shielded work runs to its end (each call is bounded by its own
    client timeouts), so a server shutting down still records the kickoff_id of a run it started.
    """

    def __init__(self) -> None:
        self._tg: TaskGroup | None = None

    async def __aenter__(self) -> Detacher:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._tg is not None
        await self._tg.__aexit__(None, None, None)
        self._tg = None

    async def run(self, what: str, work: Callable[[], Awaitable[_T]], *, within: float) -> Detached[_T]:
        """Start ``work`` shielded, and wait for it at most ``within`` seconds (or until the caller is cancelled).

        The returned handle is ``done`` when the work finished in time; otherwise the work goes on, and an error it
        meets later is logged (nobody is left to hand it to).
        """
        if self._tg is None:
            raise RuntimeError("Detacher used outside 'async with'")
        handle: Detached[_T] = Detached()

        async def task() -> None:
            with anyio.CancelScope(shield=True):
                try:
                    handle.value = await work()
                except Exception as exc:
                    handle.error = exc
                    if handle.abandoned:
                        logger.warning("%s failed after its caller stopped waiting: %s", what, exc)
                finally:
                    handle.done.set()

        self._tg.start_soon(task)
        try:
            with anyio.move_on_after(within):
                await handle.done.wait()
        finally:
            handle.abandoned = not handle.done.is_set()
        return handle
