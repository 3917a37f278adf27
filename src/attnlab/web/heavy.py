"""The queue of heavy requests (forward passes): a few run at once, a bounded number wait, and the work
of a client that went away is dropped.

- At most ``slots`` run at a time, each in a worker thread, so the event loop keeps answering; of
  them at most ``slots - 1`` are *long* (``long=True``: the Why view, generation, translation, which
  take seconds on a large model), so one slot is always left for the short views.
- At most ``max_waiting`` wait for a slot; one more is refused at once with ``QueueFullError`` (the app
  answers 503 with a ``Retry-After`` header) instead of waiting behind work nobody may still want.
- While a request waits, the queue checks every ``poll_s`` seconds whether its client disconnected
  (``Request.is_disconnected``); if so it leaves the queue without running (``Abandoned``). Once it
  runs, the thread's work can look at ``abandoned()`` / call ``raise_if_abandoned()`` between steps
  (``attnlab.web.models.model_lock`` does, so work queued on a busy model is dropped too).

Counters (``started``, ``dropped``, ``refused``, ``waiting``, ``running``) are for tests and the load
benchmark (``benchmarks/bench_load.py``).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from starlette.requests import Request

T = TypeVar("T")

_CANCEL: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("attnlab_heavy_cancel", default=None)


class QueueFullError(Exception):
    """Too many heavy requests are waiting; ``retry_after`` is a suggested wait in seconds."""

    def __init__(self, waiting: int, retry_after: int) -> None:
        super().__init__(f"the server is busy: {waiting} requests are waiting for a worker; try again in "
                         f"{retry_after} s")
        self.retry_after = retry_after


class Abandoned(Exception):
    """The client of this request disconnected before its work was done."""


def abandoned() -> bool:
    """Whether the heavy request this thread works for has lost its client (False outside the queue)."""
    event = _CANCEL.get()
    return event is not None and event.is_set()


def raise_if_abandoned() -> None:
    """Raise ``Abandoned`` if the client of the heavy request this thread works for has gone."""
    if abandoned():
        raise Abandoned("the client disconnected")


class HeavyQueue:
    """Runs ``fn(arg)`` in a worker thread, ``slots`` at a time, ``max_waiting`` waiting (see the module doc)."""

    def __init__(self, slots: int, max_waiting: int, *, poll_s: float = 0.1, retry_after: int = 2) -> None:
        self.slots, self.max_waiting, self.poll_s, self.retry_after = slots, max_waiting, poll_s, retry_after
        self._limiters: tuple[anyio.CapacityLimiter, anyio.CapacityLimiter] | None = None  # made in the event loop
        self.waiting = self.running = self.started = self.dropped = self.refused = 0

    async def run(self, request: Request, fn: Callable[[Any], T], arg: Any, *, long: bool = False) -> T:
        """``fn(arg)`` in a worker thread once a slot is free (``long``: and a long slot); raises
        ``QueueFullError`` when ``max_waiting`` requests already wait, ``Abandoned`` when the client leaves
        while this one waits."""
        if self.waiting >= self.max_waiting:
            self.refused += 1
            raise QueueFullError(self.waiting, self.retry_after)
        if self._limiters is None:
            self._limiters = (anyio.CapacityLimiter(self.slots), anyio.CapacityLimiter(max(1, self.slots - 1)))
        limiter, long_limiter = self._limiters
        self.waiting += 1
        held: list[anyio.CapacityLimiter] = []
        try:
            for needed in ((long_limiter, limiter) if long else (limiter,)):
                if await request.is_disconnected() or not await self._acquire(request, needed):
                    break
                held.append(needed)
            gone = len(held) < (2 if long else 1) or await request.is_disconnected()  # a free slot is no reason to run
        except BaseException:  # cancelled (the server stops): give back what was taken
            for taken in held:
                taken.release()
            raise
        finally:
            self.waiting -= 1
        if gone:
            for taken in held:
                taken.release()
            self.dropped += 1
            raise Abandoned("the client disconnected while its request waited")
        cancel = threading.Event()
        self.running += 1
        self.started += 1
        context = contextvars.copy_context()
        context.run(_CANCEL.set, cancel)
        result: list[T] = []
        error: list[Exception] = []
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch, request, cancel)
                try:  # caught here, so the task group does not wrap it in an ExceptionGroup
                    result.append(await anyio.to_thread.run_sync(context.run, fn, arg))
                except Exception as exc:
                    error.append(exc)
                group.cancel_scope.cancel()
        finally:
            self.running -= 1
            for taken in held:
                taken.release()
        if error:
            raise error[0]
        return result[0]

    async def _acquire(self, request: Request, limiter: anyio.CapacityLimiter) -> bool:
        """Wait for a slot unless the client disconnects first; whether a slot was taken."""
        got = False
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                while not await request.is_disconnected():
                    await anyio.sleep(self.poll_s)
                group.cancel_scope.cancel()

            group.start_soon(watch)
            await limiter.acquire()
            got = True
            group.cancel_scope.cancel()
        return got

    async def _watch(self, request: Request, cancel: threading.Event) -> None:
        while not await request.is_disconnected():
            await anyio.sleep(self.poll_s)
        cancel.set()
