"""The two ways to mount a middleware, for the behaviour tests that must pass both ways.

Every built-in middleware is a check. Used alone, ``XxxMiddleware(app, ...)`` is an engine
with that one check; inside a :class:`~wsgate.Gate`, the gate builds the same check from its
config and runs it with the others in one engine. The behaviour tests of size, rate, format,
heartbeat and the connection limit take the ``mounting`` fixture (``conftest.py``) and build
their endpoints either way, so what the client sees must be the same in both.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import pytest

from wsgate import Environment, Gate, GateConfig
from wsgate.registry import Registry

Mounting = Literal["alone", "gate"]
MOUNTINGS: Final[tuple[Mounting, ...]] = ("alone", "gate")

alone_only = pytest.mark.parametrize("mounting", ["alone"], scope="module")
"""For a test of what a gate does not expose (a custom key, a storage object, a verifier
for the heartbeat alone): it runs once, with the middleware alone."""


def gate(
    secret: str | None = None,
    *,
    registry: Registry | None = None,
    **settings: Any,
) -> Gate:
    """A gate in which only the check under test does anything; ``settings`` are its options,
    as :class:`~wsgate.GateConfig` fields.

    The other checks stay out of the way: clients without an Origin get in, and there is no
    rate limit, no connection limit, no ping, and no bound on client pings and refreshes.
    A token signed with ``secret`` gets in as its subject, with no leeway. Endpoints wrapped
    with ``dev_bypass=True`` let clients without a token in, as the development user,
    whom every limit counts per address, as a middleware alone counts a client without a
    user. Metrics stay in memory.
    """
    options: dict[str, Any] = {
        "environment": Environment.DEVELOPMENT,
        "jwt_secret": secret,
        "jwt_leeway": 0,
        "allow_missing_origin": True,
        "rate_limit": None,
        "max_connections_per_user": None,
        "heartbeat_interval": None,
        "ping_limit": None,
        "refresh_limit": None,
        "metrics_path": None,
    }
    options.update(settings)
    return Gate(GateConfig(**options), registry=registry)
