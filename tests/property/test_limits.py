"""Properties of the rate limiter and the size limit, driven directly with generated inputs.

The rate limiter runs on a clock the test controls, so a schedule of hundreds of arrivals
spread over minutes takes microseconds: the in-process windows behind ``memory://`` take the
clock as an argument, and ``limits``' strategies (behind Redis) read it from their modules.
"""

from __future__ import annotations

import asyncio
import types
from bisect import bisect_left
from collections.abc import Callable

import limits
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

from wsgate._window import FixedWindow, MovingWindow, SlidingWindowCounter
from wsgate.middleware.size import MessageSizeMiddleware

STRATEGIES = ("moving-window", "fixed-window", "sliding-window-counter")
LOCAL = {
    "moving-window": MovingWindow,
    "fixed-window": FixedWindow,
    "sliding-window-counter": SlidingWindowCounter,
}
LIMITS: dict[str, Callable[[MemoryStorage], RateLimiter]] = {
    "moving-window": MovingWindowRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}
FAST = settings(max_examples=150, deadline=None, database=None)

# Gaps between arrivals, in windows: bursts (0), steady traffic and long pauses.
gaps = st.lists(
    st.one_of(st.just(0.0), st.floats(0, 0.2), st.floats(0, 2.5)), min_size=1, max_size=150
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def most_in_any_span(admitted: list[float], window: float) -> int:
    """The most admitted arrivals in any half-open span ``[t, t + window)``."""
    return max(
        (bisect_left(admitted, start + window) - index for index, start in enumerate(admitted)),
        default=0,
    )


def fixed_windows(arrivals: list[float], admitted: list[float], window: float) -> list[int]:
    """Admitted arrivals per fixed window, each started by the first arrival after the last.

    ``admitted`` is a subsequence of ``arrivals`` (both in order, times may repeat).
    """
    counts: list[int] = []
    started = None
    pending = iter(admitted)
    next_admitted = next(pending, None)
    for at in arrivals:
        if started is None or at >= started + window:
            started = at
            counts.append(0)
        if next_admitted == at:
            counts[-1] += 1
            next_admitted = next(pending, None)
    return counts


def aligned_windows(admitted: list[float], window: float) -> dict[int, int]:
    counts: dict[int, int] = {}
    for at in admitted:
        index = int(at // window)
        counts[index] = counts.get(index, 0) + 1
    return counts


def assert_documented_bounds(
    strategy: str, limit: int, window: float, arrivals: list[float], admitted: list[float]
) -> None:
    if strategy == "moving-window":
        # Exact: never more than `limit` in any window-long span.
        assert most_in_any_span(admitted, window) <= limit
    elif strategy == "fixed-window":
        assert max(fixed_windows(arrivals, admitted, window)) <= limit
        assert most_in_any_span(admitted, window) <= 2 * limit  # across a boundary
    else:
        assert max(aligned_windows(admitted, window).values(), default=0) <= limit
        assert most_in_any_span(admitted, window) <= 2 * limit
    # Nothing is refused while the budget is untouched: the first `limit` arrivals pass.
    assert admitted[: min(limit, len(arrivals))] == arrivals[: min(limit, len(arrivals))]


@FAST
@given(
    strategy=st.sampled_from(STRATEGIES),
    limit=st.integers(1, 10),
    window=st.sampled_from([1.0, 7.0, 60.0]),
    schedule=gaps,
)
def test_in_process_windows_admit_at_most_the_limit(
    strategy: str, limit: int, window: float, schedule: list[float]
) -> None:
    clock = Clock(1_000_000.0)
    limiter = LOCAL[strategy](limit, window, clock)
    arrivals, admitted = [], []
    for gap in schedule:
        clock.now += gap * window
        arrivals.append(clock.now)
        if limiter.hit("user"):
            admitted.append(clock.now)
    assert_documented_bounds(strategy, limit, window, arrivals, admitted)


@FAST
@given(
    strategy=st.sampled_from(["moving-window", "fixed-window"]),
    limit=st.integers(1, 10),
    window=st.sampled_from([1.0, 7.0, 60.0]),
    schedule=gaps,
)
def test_waiting_retry_after_is_enough(
    strategy: str, limit: int, window: float, schedule: list[float]
) -> None:
    # Documented for the moving and fixed windows: a refused client that waits retry_after
    # seconds is not refused again.
    clock = Clock(1_000_000.0)
    limiter = LOCAL[strategy](limit, window, clock)
    for gap in schedule:
        clock.now += gap * window
        if not limiter.hit("user"):
            wait = limiter.retry_after("user")
            assert 0 < wait <= window
            clock.now += wait
            assert limiter.hit("user")


def _patched_clock(monkeypatch: pytest.MonkeyPatch, clock: Callable[[], float]) -> None:
    fake = types.SimpleNamespace(time=clock, monotonic=clock)
    monkeypatch.setattr(limits.aio.storage.memory, "time", fake)
    monkeypatch.setattr(limits.aio.strategies, "time", fake)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    strategy=st.sampled_from(STRATEGIES),
    limit=st.integers(1, 10),
    window=st.sampled_from([1, 7, 60]),
    schedule=gaps,
)
def test_limits_strategies_admit_at_most_the_limit(
    monkeypatch: pytest.MonkeyPatch, strategy: str, limit: int, window: int, schedule: list[float]
) -> None:
    clock = Clock(1_000_000.0)
    _patched_clock(monkeypatch, clock)
    item = limits.parse(f"{limit}/{window} second")

    async def run() -> tuple[list[float], list[float]]:
        limiter = LIMITS[strategy](MemoryStorage())
        arrivals, admitted = [], []
        for gap in schedule:
            clock.now += gap * window
            arrivals.append(clock.now)
            if await limiter.hit(item, "user"):
                admitted.append(clock.now)
        return arrivals, admitted

    arrivals, admitted = asyncio.run(run())
    assert_documented_bounds(strategy, limit, window, arrivals, admitted)


# Text from the whole of Unicode: 1- to 4-byte UTF-8 sequences, mixed.
texts = st.text(st.characters(codec="utf-8"), max_size=300)


@FAST
@given(text=texts, limit=st.integers(1, 600))
def test_text_is_refused_exactly_when_its_utf8_length_exceeds_the_limit(
    text: str, limit: int
) -> None:
    size = MessageSizeMiddleware(None, max_bytes=limit)  # type: ignore[arg-type]
    message = {"type": "websocket.receive", "text": text}
    assert size.too_large(message) == (len(text.encode("utf-8")) > limit)


@FAST
@given(text=st.text(max_size=300), limit=st.integers(1, 600))
def test_lone_surrogates_are_measured_and_never_raise(text: str, limit: int) -> None:
    # No valid frame carries one, but an app may hand the gate any str.
    text = text + "\ud800"
    size = MessageSizeMiddleware(None, max_bytes=limit)  # type: ignore[arg-type]
    message = {"type": "websocket.receive", "text": text}
    assert size.too_large(message) == (len(text.encode("utf-8", "surrogatepass")) > limit)


@FAST
@given(data=st.binary(max_size=600), limit=st.integers(1, 600))
def test_bytes_are_refused_exactly_when_longer_than_the_limit(data: bytes, limit: int) -> None:
    size = MessageSizeMiddleware(None, max_bytes=limit)  # type: ignore[arg-type]
    assert size.too_large({"type": "websocket.receive", "bytes": data}) == (len(data) > limit)
