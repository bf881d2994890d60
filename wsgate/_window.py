"""Rate-limit windows kept in this process, for the ``memory://`` storage.

``limits``' in-memory storages cost 8 to 12 µs a hit, on a path every message takes, which is
more than the rest of the gate together. In one process the same answers cost well under a
microsecond: the windows below keep what ``limits``' strategies keep (a timestamp per hit for
the moving window, a counter per window for the other two) in plain Python, and answer
synchronously, so a hit is atomic in the event loop with no lock. Shared storages (Redis)
keep going through ``limits``, where one round trip a message is the cost of sharing.

The semantics are ``limits``' own: a moving window admits a hit when fewer than ``limit`` hits
happened in the last ``window`` seconds; a fixed window counts hits from the first one for
``window`` seconds; the sliding window counter weighs the previous fixed window's count by the
part of it that still overlaps the last ``window`` seconds.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Final

__all__ = ["LocalStorage", "LocalWindow"]


class LocalWindow:
    """The common interface: ``hit(key)`` and ``retry_after(key)``, both synchronous."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        # Keys whose windows have all expired are swept once a window: a user who went
        # quiet costs memory for one window at most, and a hit costs one comparison.
        self._next_sweep = clock() + window

    def hit(self, key: str) -> bool:
        """Count a hit for ``key`` if the limit allows it; False when over the limit."""
        raise NotImplementedError

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may hit again (0 when it may now)."""
        raise NotImplementedError

    def __len__(self) -> int:
        """How many keys are kept (for tests: it must not grow with every user ever seen)."""
        raise NotImplementedError

    def _sweep_due(self, now: float) -> None:
        self._next_sweep = now + self.window
        self.sweep(now)

    def sweep(self, now: float) -> None:
        """Forget the keys whose windows have all expired."""
        raise NotImplementedError


class MovingWindow(LocalWindow):
    """Exact: one timestamp per admitted hit, at most ``limit`` of them per key."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        super().__init__(limit, window, clock)
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> bool:
        now = self.clock()
        if now >= self._next_sweep:
            self._sweep_due(now)
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
        horizon = now - self.window
        while hits and hits[0] <= horizon:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    def retry_after(self, key: str) -> float:
        hits = self._hits.get(key)
        if not hits or len(hits) < self.limit:
            return 0.0
        return max(hits[0] + self.window - self.clock(), 0.0)

    def sweep(self, now: float) -> None:
        horizon = now - self.window
        for key in [key for key, hits in self._hits.items() if not hits or hits[-1] <= horizon]:
            del self._hits[key]

    def __len__(self) -> int:
        return len(self._hits)


class FixedWindow(LocalWindow):
    """A counter per key, reset ``window`` seconds after the window's first hit."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        super().__init__(limit, window, clock)
        self._windows: dict[str, list[float]] = {}  # key -> [started, count]

    def hit(self, key: str) -> bool:
        now = self.clock()
        if now >= self._next_sweep:
            self._sweep_due(now)
        current = self._windows.get(key)
        if current is None or now >= current[0] + self.window:
            current = self._windows[key] = [now, 0]
        if current[1] >= self.limit:
            return False
        current[1] += 1
        return True

    def retry_after(self, key: str) -> float:
        current = self._windows.get(key)
        if current is None or current[1] < self.limit:
            return 0.0
        return max(current[0] + self.window - self.clock(), 0.0)

    def sweep(self, now: float) -> None:
        for key in [
            key for key, (started, _) in self._windows.items() if now >= started + self.window
        ]:
            del self._windows[key]

    def __len__(self) -> int:
        return len(self._windows)


class SlidingWindowCounter(LocalWindow):
    """Two counters per key: the current aligned window and the previous one, weighted."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        super().__init__(limit, window, clock)
        self._counts: dict[str, list[float]] = {}  # key -> [window index, previous, current]

    def _current(self, key: str, now: float) -> list[float]:
        index = math.floor(now / self.window)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [index, 0, 0]
        elif counts[0] != index:
            previous = counts[2] if counts[0] == index - 1 else 0
            counts[0], counts[1], counts[2] = index, previous, 0
        return counts

    def _weighted(self, counts: list[float], now: float) -> float:
        elapsed = now / self.window - counts[0]  # the part of the current window gone by
        # Rounded down at the ninth decimal, so that the moment retry_after names admits.
        return math.floor((counts[1] * (1 - elapsed) + counts[2]) * 1e9) / 1e9

    def hit(self, key: str) -> bool:
        now = self.clock()
        if now >= self._next_sweep:
            self._sweep_due(now)
        counts = self._current(key, now)
        if self._weighted(counts, now) + 1 > self.limit:
            return False
        counts[2] += 1
        return True

    def retry_after(self, key: str) -> float:
        now = self.clock()
        counts = self._current(key, now)
        if self._weighted(counts, now) + 1 <= self.limit:
            return 0.0
        if counts[1] == 0 or counts[2] + 1 > self.limit:
            return (counts[0] + 1) * self.window - now  # the current window must end
        # The previous window's weight falls linearly; solve for when one more hit fits.
        needed = self.limit - 1 - counts[2]
        elapsed_then = 1 - needed / counts[1]
        return max((counts[0] + elapsed_then) * self.window - now, 0.0)

    def sweep(self, now: float) -> None:
        index = math.floor(now / self.window)
        for key in [key for key, counts in self._counts.items() if counts[0] < index - 1]:
            del self._counts[key]

    def __len__(self) -> int:
        return len(self._counts)


_KINDS: Final[dict[str, type[LocalWindow]]] = {
    "moving-window": MovingWindow,
    "fixed-window": FixedWindow,
    "sliding-window-counter": SlidingWindowCounter,
}


class LocalStorage:
    """What ``memory://`` means for the rate limiter: windows kept in this process.

    Middlewares that share one ``LocalStorage`` (every endpoint of a ``Gate``) share a
    window per (strategy, limit, period), so a user has one budget across them, as with a
    shared ``limits`` storage.
    """

    def __init__(self) -> None:
        self._windows: dict[tuple[str, int, float], LocalWindow] = {}

    def window(self, strategy: str, limit: int, period: float) -> LocalWindow:
        """The window for ``limit`` hits per ``period`` seconds with ``strategy``."""
        found = self._windows.get((strategy, limit, period))
        if found is None:
            found = self._windows[strategy, limit, period] = _KINDS[strategy](limit, period)
        return found

    def __repr__(self) -> str:
        return "LocalStorage(memory://)"
