"""Checks for numeric options, shared so every option fails with the same kind of sentence."""

from __future__ import annotations

import math
from urllib.parse import urlsplit

import limits
from limits import RateLimitItem

from wsgate.exceptions import ConfigurationError


def seconds(name: str, value: object, *, positive: bool = False) -> float:
    """``value`` as a finite number of seconds (> 0 when ``positive``, else >= 0)."""
    number = _finite(value)
    if number is None or number < 0 or (positive and number == 0):
        wanted = "a positive number of seconds" if positive else "a number of seconds >= 0"
        raise ConfigurationError(f"{name} must be {wanted}, not {value!r}.")
    return number


def count(name: str, value: object, *, unit: str = "") -> int:
    """``value`` as a positive integer; ``unit`` ("bytes") makes the message clearer."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    wanted = f"a positive number of {unit}" if unit else "a positive integer"
    raise ConfigurationError(f"{name} must be {wanted}, not {value!r}.")


DEEPEST = 128
"""The largest ``max_depth``: orjson writes at most 254 levels, and what the gate lets in, the
gate and the app must be able to write back, with room for the app's own envelopes."""


def depth(name: str, value: object) -> int:
    """``value`` as a nesting depth from 1 to :data:`DEEPEST`."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= DEEPEST:
        return value
    raise ConfigurationError(
        f"{name} must be a nesting depth from 1 to {DEEPEST} levels of arrays and objects, "
        f"not {value!r}; wsgate's JSON writer handles no more, with room for your replies."
    )


def choice(name: str, value: object, valid: tuple[str, ...]) -> str:
    """``value`` when it is one of ``valid``."""
    if isinstance(value, str) and value in valid:
        return value
    raise ConfigurationError(
        f"{name} must be one of {', '.join(repr(item) for item in valid)}, not {value!r}."
    )


def rate(name: str, value: object) -> RateLimitItem:
    """``value`` parsed as a ``limits`` rate string such as ``"30/minute"``, of at least one."""
    if isinstance(value, str):
        try:
            item = limits.parse(value)
        except ValueError:
            pass
        else:
            if item.amount >= 1:
                return item
            raise ConfigurationError(
                f"{name} {value!r} lets no message through, so every message would be refused. "
                "Give a rate of at least one, such as '30/minute', or None to turn the "
                "limit off (the value off in its variable, as in WSGATE_RATE_LIMIT=off)."
            )
    raise ConfigurationError(
        f"{name} must be a rate such as '30/minute', '5/second' or '1000 per hour', not {value!r}."
    )


def redacted_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _finite(value: object) -> float | None:
    # bool is an int to Python, but True seconds is a mistake, not 1.
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
