"""Leases on a shared rate budget: one round trip to the storage counts several messages.

On Redis, counting each message is a round trip, and redis-py spends more CPU on it than the
rest of the gate spends on the message. A lease is a slice of a user's budget that one worker
counts in the shared storage at once, in one hit of cost ``n`` (``limits``' ``cost``), and
then spends locally, one unit a message, with no round trip. The storage has counted every
unit before a message spends it, so the limit still holds across workers.

A lease's size adapts to the sender, so that a slow sender never takes units it does not use:

* a user's first message in a worker, and any message after a lease lapsed, takes a lease of
  one unit (exactly what a message cost without leases);
* a message that finds the last lease spent before it lapsed takes one twice as large, up to
  the cap: a fast sender soon needs one round trip per ``cap`` messages;
* when a lease of ``n`` does not fit in what is left of the budget, the message asks for one
  unit, as it would without leases, and so do the messages after it until a lease lapses:
  the end of the budget is counted exactly, one round trip a message.

How exact it is (see ``docs/rate-limit.md``):

* **Under-admission**: units a worker counted but did not spend before its lease lapsed are
  lost for the rest of the window: at most ``cap - 1`` per user and worker each time a burst
  ends, and the cap is at most a tenth of the rate.
* **Over-admission**: a unit is counted when its lease is taken and spent up to ``ttl``
  seconds later, so a moving window forgets it up to ``ttl`` seconds early: during that span
  a user may get at most ``cap - 1`` messages more per worker. ``ttl`` is at most a second,
  and a sixtieth of the window.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LEASE_SHARE", "Lease", "lease_terms"]

LEASE_SHARE: Final = 10
"""A lease is never more than this fraction (one tenth) of the rate."""
_TTL_MAX: Final = 1.0
"""Seconds a lease lasts at most."""
_TTL_SHARE: Final = 60
"""A lease lasts at most this fraction of the window."""


def lease_terms(limit: int, window: float, most: int) -> tuple[int, float]:
    """The cap and the lifetime (seconds) of a lease on a budget of ``limit`` messages a
    ``window``, for a lease of at most ``most`` units: ``(1, ...)`` turns leases off."""
    return max(1, min(most, limit // LEASE_SHARE)), min(_TTL_MAX, window / _TTL_SHARE)


class Lease:
    """One worker's unspent units of one user's budget, which all of the user's connections
    in the worker share.

    Attributes:
        left: Units counted in the storage and not yet spent.
        size: The size of the last lease.
        until: When the units left lapse (the clock of :func:`time.monotonic`).
        margin: Whether the budget is at its end, where each message asks for one unit
            until a lease lapses.
    """

    __slots__ = ("__weakref__", "left", "margin", "size", "until")

    def __init__(self) -> None:
        self.left = 0
        self.size = 1
        self.until = 0.0
        self.margin = False

    def next_size(self, now: float, cap: int) -> int:
        """How many units to ask for: twice the last lease when it was spent before it
        lapsed, else one."""
        if now >= self.until:
            self.margin = False  # lapsed: start again from one unit
            return 1
        if self.margin or self.left:
            return 1
        return min(self.size * 2, cap)

    def refused(self, now: float, ttl: float) -> None:
        """The budget had no room for what was asked."""
        self.margin = True
        self.size = 1
        self.until = max(self.until, now + ttl)

    def grant(self, size: int, now: float, ttl: float) -> None:
        """Keep a lease of ``size`` units, the first of which the asking message spends."""
        left = self.left if now < self.until else 0  # a lease taken meanwhile, concurrently
        self.size = size
        self.left = left + size - 1
        self.until = now + ttl
