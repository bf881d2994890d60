"""The state of a registry's link to Redis, and what it logs about it."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from wsgate.backends.base import BackendPolicy

__all__ = ["Link"]

logger = logging.getLogger("wsgate.redis")

_WARNING_PERIOD: Final = 60.0
"""Seconds between two log lines about the same outage."""


class Link:
    """Whether Redis answers, when to try it again, and the log lines of an outage: one error
    a minute at most while it lasts, and one warning when Redis answers again.

    Args:
        shown_url: The URL to name in log lines, its password redacted.
        policy: The backend policy, which the error line explains.
        retry: Seconds between two attempts to reach Redis while it cannot be reached.
    """

    def __init__(self, shown_url: str, policy: BackendPolicy, retry: float) -> None:
        self.shown_url = shown_url
        self.policy = policy
        self.retry = retry
        self.up = False
        """True once a sync went through, until a command fails."""
        self.retry_at = 0.0
        """When to try Redis again (``time.monotonic()``), while it is down."""
        self.down_since: float | None = None
        """When the outage began (``time.monotonic()``); None while Redis answers."""
        self._failures = 0
        self._warned_at = -math.inf

    def reachable(self) -> bool:
        """Whether a command is worth sending now."""
        return self.up or time.monotonic() >= self.retry_at

    def failed(self, exc: BaseException) -> None:
        """A command failed with ``exc``: Redis is down until :meth:`recovered`."""
        now = time.monotonic()
        self.retry_at = now + self.retry
        self._failures += 1
        self.up = False
        if self.down_since is None:
            self.down_since = now
        if now - self._warned_at < _WARNING_PERIOD:
            return
        if self.policy == "fail_open":
            consequence = (
                "fail_open: each worker counts connection limits on its own until it answers again"
            )
        else:
            consequence = (
                "fail_closed: new connections are refused with 1013 backend_unavailable until "
                "it answers again; open connections keep working"
            )
        logger.error(
            "Redis at %s %s (%d failure(s), last: %s: %s); %s",
            self.shown_url,
            _problem(exc),
            self._failures,
            type(exc).__name__,
            exc,
            consequence,
        )
        self._failures = 0
        self._warned_at = now

    def recovered(self) -> None:
        """A sync went through."""
        self.up = True
        if self.down_since is None:
            return
        logger.warning(
            "Redis at %s answers again after %.1f s; connection limits are shared again",
            self.shown_url,
            time.monotonic() - self.down_since,
        )
        self.down_since = None
        self._failures = 0
        self._warned_at = -math.inf

    def __repr__(self) -> str:
        return "up" if self.up else "down" if self.down_since is not None else "not started"


# What Redis answers to a wrong password or user, by server version and client.
_CREDENTIALS_REFUSED: Final = (
    "WRONGPASS",
    "invalid username-password",
    "NOAUTH",
    "invalid password",
    "auth:AuthenticationError",  # Sentinel's MasterNotFoundError, naming what each sentinel said
)


def _problem(exc: BaseException) -> str:
    """What went wrong, for the log line: the credentials, or the link."""
    text = str(exc)
    if type(exc).__name__.startswith("Authentication") or any(
        marker in text for marker in _CREDENTIALS_REFUSED
    ):
        return "refuses the storage URL's credentials (check its password and user)"
    return "cannot be reached"
