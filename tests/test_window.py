"""The in-process rate-limit windows: exact counts, retry_after, and bounded memory."""

from __future__ import annotations

import pytest

from wsgate._window import (
    FixedWindow,
    LocalStorage,
    LocalWindow,
    MovingWindow,
    SlidingWindowCounter,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    kind: type[LocalWindow], limit: int = 3, window: float = 10.0
) -> tuple[LocalWindow, Clock]:
    clock = Clock()
    return kind(limit, window, clock), clock


@pytest.mark.parametrize("kind", [MovingWindow, FixedWindow, SlidingWindowCounter])
def test_exactly_the_limit_is_admitted_at_once(kind: type[LocalWindow]) -> None:
    limiter, _ = make(kind, limit=30, window=60)
    assert [limiter.hit("u") for _ in range(100)].count(True) == 30
    # Keys are independent.
    assert limiter.hit("other")


def test_moving_window_admits_again_exactly_when_the_oldest_hit_leaves() -> None:
    limiter, clock = make(MovingWindow)
    for _ in range(3):
        assert limiter.hit("u")
        clock.now += 1
    assert not limiter.hit("u")
    assert limiter.retry_after("u") == pytest.approx(7.0)  # first hit at 1000, now 1003
    clock.now = 1009.999
    assert not limiter.hit("u")
    clock.now = 1010.0
    assert limiter.hit("u")
    assert not limiter.hit("u")


def test_moving_window_never_admits_more_than_the_limit_in_any_window() -> None:
    limiter, clock = make(MovingWindow, limit=5, window=2.0)
    admitted: list[float] = []
    for step in range(2000):
        clock.now = 1000 + step * 0.013
        if limiter.hit("u"):
            admitted.append(clock.now)
    for index, start in enumerate(admitted):
        inside = [t for t in admitted[index:] if t < start + 2.0]
        assert len(inside) <= 5


def test_fixed_window_resets_a_window_after_its_first_hit() -> None:
    limiter, clock = make(FixedWindow)
    assert [limiter.hit("u") for _ in range(4)] == [True, True, True, False]
    clock.now += 4
    assert limiter.retry_after("u") == pytest.approx(6.0)
    clock.now += 6
    assert limiter.retry_after("u") == 0.0
    assert limiter.hit("u")


def test_sliding_window_counter_weighs_the_previous_window() -> None:
    limiter, clock = make(SlidingWindowCounter, limit=10, window=10.0)
    clock.now = 1000.0  # the start of window 100
    assert [limiter.hit("u") for _ in range(10)].count(True) == 10
    clock.now = 1015.0  # half-way through the next window: 10 * 0.5 = 5 still count
    assert [limiter.hit("u") for _ in range(10)].count(True) == 5
    assert limiter.retry_after("u") > 0
    clock.now += limiter.retry_after("u")
    assert limiter.hit("u")


@pytest.mark.parametrize("kind", [MovingWindow, FixedWindow, SlidingWindowCounter])
def test_keys_of_users_gone_quiet_are_forgotten(kind: type[LocalWindow]) -> None:
    limiter, clock = make(kind, limit=2, window=1.0)
    for user in range(5000):
        limiter.hit(f"user-{user}")
    assert len(limiter) == 5000
    clock.now += 10  # every window has passed: the next hit sweeps them all
    limiter.hit("busy")
    assert len(limiter) <= 2


def test_a_storage_shares_one_window_per_strategy_and_rate() -> None:
    storage = LocalStorage()
    for name, kind in [
        ("moving-window", MovingWindow),
        ("fixed-window", FixedWindow),
        ("sliding-window-counter", SlidingWindowCounter),
    ]:
        window = storage.window(name, 30, 60.0)
        assert isinstance(window, kind)
        assert storage.window(name, 30, 60.0) is window
        assert storage.window(name, 31, 60.0) is not window
