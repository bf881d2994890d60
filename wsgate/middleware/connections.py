"""ConnectionLimitMiddleware: at most ``max_per_user`` open connections per user.

Each open connection is an entry in a :class:`~wsgate.registry.Registry`, under its user's
key. The entry is added once the app has accepted the connection and is really serving it,
and removed when the connection ends, however it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from starlette.types import ASGIApp, Scope

from wsgate import _options, close_codes
from wsgate._printable import printable
from wsgate.backends import BackendUnavailable
from wsgate.connection import Connection, identity_key
from wsgate.engine import CheckMiddleware
from wsgate.exceptions import ConfigurationError
from wsgate.registry import POLICIES, MemoryRegistry, Policy, Registry

__all__ = ["ConnectionLimitMiddleware", "Slot"]

logger = logging.getLogger("wsgate.connections")

_KEY_PREFIX: Final = "wsgate:conn:"


class ConnectionLimitMiddleware(CheckMiddleware):
    """Let each user hold at most ``max_per_user`` open connections.

    With ``"evict_oldest"`` (the default) a new connection always gets in, and the user's
    oldest connection is closed with 4008 ``connection_limit``: the newest tab wins. With
    ``"reject_new"`` the new connection is accepted and closed at once with 4008, so that a
    browser can read the code; the connections already open stay.

    A connection counts from the moment the app has accepted it and goes on to serve it (its
    next send or receive; from the accept itself when the app was already waiting for a
    message, as Quart's reader is). A connection the app or an inner layer refuses, before accept or
    by closing right after it, never takes a slot and never evicts anyone. The slot is freed
    when the connection ends, however it ends.

    The limit belongs to the authenticated user (``scope["user"].identity``), across every
    endpoint that shares the registry. Connections without a user, and the development
    bypass user, are counted per client IP address. ``key`` replaces that choice.

    Args:
        app: The ASGI app to protect.
        max_per_user: How many connections one user may hold open at once.
        policy: ``"evict_oldest"`` (the default) closes the user's oldest connection;
            ``"reject_new"`` closes the new one.
        registry: Where the open connections are counted. Defaults to a new
            :class:`~wsgate.registry.MemoryRegistry`; pass one registry to every middleware
            (endpoint) that should share the limit.
        key: A function of the connection's scope that returns whose connection it is,
            computed once per connection. None counts per user, else per client IP.
    """

    close_codes = (close_codes.CONNECTION_LIMIT, close_codes.BACKEND_UNAVAILABLE)

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_per_user: int = 3,
        policy: Policy = "evict_oldest",
        registry: Registry | None = None,
        key: Callable[[Scope], str] | None = None,
    ) -> None:
        self.max_per_user = _options.count("max_per_user", max_per_user)
        _options.choice("policy", policy, POLICIES)
        self.policy: Policy = policy
        if registry is None:
            registry = MemoryRegistry()
        elif not isinstance(registry, Registry):
            raise ConfigurationError(
                f"registry must be a wsgate.registry.Registry, such as MemoryRegistry(), "
                f"not {registry!r}."
            )
        self.registry = registry
        # A registry shared by several processes hands this one the evictions that another
        # process decided, for the connections held here.
        registry.on_eviction(self.evict)
        if key is not None and not callable(key):
            raise ConfigurationError(
                f"key must be a function of the scope that returns a string, not {key!r}."
            )
        self.key = key
        self._alone(app)

    # The hooks, in the order a connection meets them.

    def open(self, connection: Connection) -> Slot:
        """The slot of a new connection: its key, and not counted yet."""
        return Slot(connection, self.key_of(connection.scope))

    async def admit(self, state: Slot) -> None:
        """Count the connection, closing whichever connections the limit pushes out."""
        state.counted = True
        connection, key = state.connection, state.limit_key
        self.registry.local_connections[connection.id] = connection
        try:
            admission = await self.registry.add(
                key, connection.id, limit=self.max_per_user, policy=self.policy
            )
        except BackendUnavailable as exc:
            # fail_closed: the new connection cannot be counted, so it does not stay.
            await connection.close(exc.refusal)
            logger.info("closed new connection %s of %s: %s", connection.id, printable(key), exc)
            return
        except Exception as exc:
            logger.warning(
                "the connection registry failed (%s: %s); %s is let in uncounted",
                type(exc).__name__,
                exc,
                connection.id,
            )
            return
        for connection_id in admission.close:
            if connection_id == connection.id:
                await connection.close(close_codes.CONNECTION_LIMIT)
                action = "closed new connection"
            elif self.evict(connection_id):
                action = "evicted connection"
            else:
                continue
            logger.info(
                "%s %s of %s with 4008 connection_limit: over max_per_user=%d (%s)",
                action,
                connection_id,
                printable(key),
                self.max_per_user,
                self.policy,
            )

    async def release(self, state: Slot) -> None:
        """Free the connection's state, however the connection ended."""
        connection = state.connection
        local = self.registry.local_connections
        if local.get(connection.id) is connection:
            del local[connection.id]
        if not state.counted:
            return
        try:
            await self.registry.remove(state.limit_key, connection.id)
        except Exception as exc:
            logger.warning(
                "the connection registry failed to forget %s (%s: %s)",
                connection.id,
                type(exc).__name__,
                exc,
            )

    # The engine's hooks are these very methods: a connection pays for no call in between.
    serve = admit  # the app serves the accepted connection: count it
    end = release  # the connection ended: free its slot

    def key_of(self, scope: Scope) -> str:
        """The registry key a connection is counted under, namespaced by kind."""
        return identity_key(scope, _KEY_PREFIX, self.key)

    def evict(self, connection_id: str) -> bool:
        """Close a connection of this process with 4008 ``connection_limit``.

        The close runs in a task of the evicted connection, so a client that stopped reading
        never holds up the connection that replaced it. This is the hook a shared registry
        calls when another process evicts a connection held here.

        Returns:
            True when this process held the connection and it was still open.
        """
        connection = self.registry.local_connections.get(connection_id)
        if connection is None or connection.closed or not connection.accepted:
            return False
        connection.close_soon(close_codes.CONNECTION_LIMIT)
        if connection.record is not None:
            connection.record.evicted()
        return True


class Slot:
    """A connection's slot under the limit: what the middleware keeps per connection.

    Attributes:
        connection: The connection.
        limit_key: The registry key the connection counts under.
        counted: True once the registry was asked to count it (it must be removed at the
            end).
    """

    __slots__ = ("connection", "counted", "limit_key")

    def __init__(self, connection: Connection, limit_key: str) -> None:
        self.connection = connection
        self.limit_key = limit_key
        self.counted = False
