"""One timer handle on an event loop for the deadlines of many connections.

Each connection has at most one deadline. A handle of its own on the loop would cost each
open connection about half a kilobyte, so the deadlines of all the connections of an event
loop wait in one heap, behind the one handle set for the earliest of them.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import weakref
from typing import Final, Protocol

from wsgate.connection import Connection

__all__ = ["EARLY", "Due", "Entry", "Timers"]

# Failures are logged where operators look for the connection's lifecycle.
logger = logging.getLogger("wsgate.heartbeat")

EARLY: Final = 0.001
"""asyncio runs a timer up to its clock resolution early; a deadline that close counts as due."""

_REBUILD_AFTER: Final = 64
"""Cancelled deadlines a heap keeps before it may be rebuilt without them."""


class Due(Protocol):
    """What a deadline is set for: a connection's lifecycle, which :meth:`fire` acts on."""

    @property
    def connection(self) -> Connection: ...

    def fire(self) -> None:
        """The deadline came."""


class Entry:
    """A connection's deadline in a :class:`Timers` heap; cancelled, it holds no lifecycle."""

    __slots__ = ("lifecycle", "when")

    def __init__(self, when: float, lifecycle: Due) -> None:
        self.when = when
        self.lifecycle: Due | None = lifecycle

    def __lt__(self, other: Entry) -> bool:
        return self.when < other.when


class Timers:
    """The deadlines of a layer's connections on one event loop, behind one timer handle.

    A cancelled deadline stays in the heap, emptied, until it comes up or the heap is
    rebuilt: that happens once the cancelled outnumber the live, so the heap never holds
    more than about twice as many entries as there are deadlines.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the loop holds this object (through its timer handle), and a closed loop
        # must not be kept alive by the deadlines it left behind.
        self.loop = weakref.ref(loop)
        self.heap: list[Entry] = []
        self.cancelled = 0
        # The timer handle, weakly too (a handle holds its loop), and its moment: uvloop
        # answers call_at() for a past moment with a plain Handle, which has no when().
        self.handle: weakref.ref[asyncio.Handle] | None = None
        self.at = 0.0

    def add(self, when: float, lifecycle: Due) -> Entry:
        entry = Entry(when, lifecycle)
        heapq.heappush(self.heap, entry)
        if self._handle() is None or when < self.at:
            self._schedule(when)
        return entry

    def cancel(self, entry: Entry) -> None:
        entry.lifecycle = None  # the connection can be freed now, not at the deadline
        self.cancelled += 1
        if self.cancelled > _REBUILD_AFTER and 2 * self.cancelled > len(self.heap):
            self.heap = [entry for entry in self.heap if entry.lifecycle is not None]
            heapq.heapify(self.heap)
            self.cancelled = 0
            if not self.heap:
                self._cancel_handle()

    def _handle(self) -> asyncio.Handle | None:
        """The pending timer handle, if any (the loop holds it until it runs)."""
        return self.handle() if self.handle is not None else None

    def _cancel_handle(self) -> None:
        handle = self._handle()
        if handle is not None:
            handle.cancel()
        self.handle = None

    def _schedule(self, when: float) -> None:
        self._cancel_handle()
        loop = self.loop()
        if loop is not None and not loop.is_closed():
            self.handle = weakref.ref(loop.call_at(when, self._fire))
            self.at = when

    def _fire(self) -> None:
        self.handle = None
        # The loop may run a timer up to its clock's resolution early: what falls due that
        # soon is due now, or the timer would fire again and again until it is.
        loop = self.loop()
        if loop is None:
            return
        due = loop.time() + EARLY
        heap, now_due = self.heap, []
        while heap and heap[0].when <= due:
            lifecycle = heapq.heappop(heap).lifecycle
            if lifecycle is None:
                self.cancelled -= 1
            else:
                now_due.append(lifecycle)
        for lifecycle in now_due:
            try:
                lifecycle.fire()
            except Exception:  # one connection's failure must not stop the others' timers
                logger.exception("the heartbeat of connection %s failed", lifecycle.connection.id)
        if heap and self._handle() is None:
            self._schedule(heap[0].when)
