"""Every option that takes one of a few words: each list of choices, declared once.

The type (for type checkers and the docs) and the tuple (for the check at construction,
:func:`wsgate._options.choice`) come from one ``Literal``.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Protocol = Literal["json", "jsonrpc"]
"""The message format an endpoint speaks: plain JSON (legacy accepted) or JSON-RPC 2.0."""
PROTOCOLS: Final[tuple[Protocol, ...]] = get_args(Protocol)

SizePolicy = Literal["refuse", "close"]
"""What an oversized message costs: an error frame, or the connection (1009)."""
SIZE_POLICIES: Final[tuple[SizePolicy, ...]] = get_args(SizePolicy)

RateStrategy = Literal["moving-window", "fixed-window", "sliding-window-counter"]
"""The ``limits`` strategy a rate limit counts with."""
RATE_STRATEGIES: Final[tuple[RateStrategy, ...]] = get_args(RateStrategy)

ConnectionPolicy = Literal["evict_oldest", "reject_new"]
"""Which connection goes when a user has too many: the oldest, or the new one."""
CONNECTION_POLICIES: Final[tuple[ConnectionPolicy, ...]] = get_args(ConnectionPolicy)

BackendPolicy = Literal["fail_open", "fail_closed"]
"""What a new connection gets while the shared backend is down: in uncounted, or refused."""
BACKEND_POLICIES: Final[tuple[BackendPolicy, ...]] = get_args(BackendPolicy)
