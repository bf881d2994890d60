from __future__ import annotations

import math

import pytest

from wsgate import ConfigurationError, JWTVerifier, RemoteVerifier
from wsgate._options import count, seconds

SECRET = "options-test-secret-0123456789abcdefghij"


@pytest.mark.parametrize("bad", [True, -1, math.inf, math.nan, 10**400, "5", None])
def test_seconds_refuses_what_is_not_a_finite_duration(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"^leeway must be a number of seconds >= 0, not "):
        seconds("leeway", bad)


def test_seconds_accepts_zero_unless_positive() -> None:
    assert seconds("leeway", 0) == 0.0
    assert seconds("timeout", 2.5, positive=True) == 2.5
    with pytest.raises(ConfigurationError, match="timeout must be a positive number of seconds"):
        seconds("timeout", 0, positive=True)


@pytest.mark.parametrize("bad", [True, 0, -3, 1.5, "10"])
def test_count_refuses_what_is_not_a_positive_integer(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"cache_size must be a positive integer, not "):
        count("cache_size", bad)
    with pytest.raises(ConfigurationError, match="a positive number of bytes"):
        count("max_token_bytes", bad, unit="bytes")


def test_the_verifiers_use_them() -> None:
    with pytest.raises(ConfigurationError, match="leeway must be a number of seconds >= 0"):
        JWTVerifier(algorithms=["HS256"], secret=SECRET, leeway=True)
    with pytest.raises(ConfigurationError, match="failure_threshold must be a positive integer"):
        RemoteVerifier("http://127.0.0.1:9/introspect", failure_threshold=True)
