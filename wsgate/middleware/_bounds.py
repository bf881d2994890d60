"""Per-connection bounds on the frames the lifecycle layer answers: pings and refreshes.

Each connection counts its own, in fixed windows from its first use, so no storage is
involved: the count lives and dies with the connection.
"""

from __future__ import annotations

import math

from wsgate import _options

__all__ = ["Bound", "Window"]


class Bound:
    """A per-connection bound on one kind of frame: ``amount`` in ``period`` seconds."""

    __slots__ = ("amount", "period", "rate")

    def __init__(self, rate: str, amount: int, period: float) -> None:
        self.rate = rate
        self.amount = amount
        self.period = period

    @classmethod
    def of(cls, name: str, rate: str | None) -> Bound | None:
        if rate is None:
            return None
        item = _options.rate(name, rate)
        return cls(rate, item.amount, float(item.get_expiry()))


class Window:
    """What one connection spent of a :class:`Bound`, in fixed windows from its first use."""

    __slots__ = ("count", "until")

    def __init__(self) -> None:
        self.count = 0
        self.until = -math.inf

    def spend(self, bound: Bound, now: float) -> float | None:
        """Spend one: None when within ``bound``, else the seconds until the window ends."""
        if now >= self.until:
            self.until = now + bound.period
            self.count = 0
        if self.count >= bound.amount:
            return self.until - now
        self.count += 1
        return None
