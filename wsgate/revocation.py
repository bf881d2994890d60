"""Revoking a user, or one token, everywhere: what is revoked, and who is told.

A revocation names a user (``scope["user"].identity``, the token's ``sub``) or a token (its
``jti`` claim) and lasts until a moment. While it lasts, new handshakes of that user or with
that token are refused with 4003 ``revoked``; when it is made, every open connection of that
user or token is closed with 4003 ``revoked``, in every worker process that shares the
storage.

A :class:`Revocations` store belongs to a backend (``backend.revocations``): in this
process's memory for ``memory://``, in Redis for a Redis URL, with a copy in each worker that
its handshakes read without a round trip (see :mod:`wsgate.backends.redis._revocations`).
:func:`revoke` revokes from any process, a gate worker or an admin script, given the storage
URI alone::

    await wsgate.revoke("redis://localhost:6379/0", "alice", for_seconds=3600)
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Final

from wsgate import _options
from wsgate.close_codes import REVOKED

if TYPE_CHECKING:
    from wsgate.backends.base import Backend
    from wsgate.connection import Connection

__all__ = ["DEFAULT_SECONDS", "MemoryRevocations", "Revocations", "Revoked", "revoke"]

DEFAULT_SECONDS: Final = 3600.0
"""How long a revocation lasts when neither ``until`` nor ``for_seconds`` is given: one hour,
longer than the usual access token lives (5 to 60 minutes)."""


def user_key(user: str) -> str:
    """The revocation key of a user."""
    return f"u:{user}"


def token_key(jti: str) -> str:
    """The revocation key of one token."""
    return f"j:{jti}"


def keys_of(user: Any) -> tuple[str, ...]:
    """The revocation keys of an authenticated ``scope["user"]``: its user, and its token's
    ``jti`` when the token has one. Nothing for a connection without a user."""
    if not getattr(user, "is_authenticated", False):
        return ()
    jti = getattr(user, "claims", {}).get("jti")
    if isinstance(jti, str) and jti:
        return (user_key(user.identity), token_key(jti))
    return (user_key(user.identity),)


class Revocations(ABC):
    """Where revocations are kept, and how the connections of this process hear of them.

    The revocation check tracks each open connection (:meth:`track`, :meth:`forget`); a
    revocation, made here or told by another process, closes the tracked connections of its
    key (:meth:`close_local`). A connection costs one entry here, and nothing per message: a
    revocation is rare, and finding its connections is one pass over this process's.
    """

    def __init__(self) -> None:
        self._connections: dict[str, Connection] = {}  # connection id -> open connection
        self._until: dict[str, float] = {}  # the revocations this process knows of, and ends

    @abstractmethod
    async def revoke(self, key: str, until: float) -> int:
        """Revoke ``key`` until ``until`` (a Unix time, in seconds), and close its open
        connections. Returns how many were told: the connections closed here (memory), or
        the worker processes listening (Redis)."""

    @abstractmethod
    async def revoked(self, keys: tuple[str, ...]) -> bool:
        """Whether any of ``keys`` is revoked now, for a handshake: from what this process
        holds, without a round trip. A shared store may wait once for its first load, a
        bounded time. Raises :class:`~wsgate.BackendUnavailable` when the store cannot answer
        and must not be guessed (``fail_closed`` before the first load)."""

    def revoked_here(self, keys: tuple[str, ...]) -> bool:
        """Whether this process knows, without asking anyone, that one of ``keys`` is
        revoked now."""
        if not self._until:
            return False
        now = time.time()
        for key in keys:
            until = self._until.get(key)
            if until is None:
                continue
            if until > now:
                return True
            del self._until[key]  # over: forgotten
        return False

    def revoked_user(self, user: Any) -> bool:
        """Whether this process knows that ``scope["user"]``, or its token, is revoked now."""
        return bool(self._until) and self.revoked_here(keys_of(user))

    def track(self, connection: Connection) -> None:
        """Hold ``connection`` until :meth:`forget`."""
        self._connections[connection.id] = connection

    def forget(self, connection: Connection) -> None:
        """Stop holding ``connection``, which ended."""
        self._connections.pop(connection.id, None)

    def close_local(self, *keys: str) -> int:
        """Close this process's open connections under any of ``keys`` with 4003
        ``revoked``: how many there were."""
        revoked = set(keys)
        closed = 0
        for connection in list(self._connections.values()):
            if (
                connection.accepted
                and not connection.closed
                and not revoked.isdisjoint(keys_of(connection.user))
            ):
                connection.close_soon(REVOKED)
                closed += 1
        return closed

    @property
    def tracked(self) -> int:
        """How many open connections are held here (for tests: it must come back to 0)."""
        return len(self._connections)

    async def aclose(self) -> None:  # noqa: B027 - optional: memory holds nothing
        """Release what the store holds (a listener task, a client)."""


class MemoryRevocations(Revocations):
    """Revocations in this process's memory: the ``memory://`` backend's."""

    async def revoke(self, key: str, until: float) -> int:
        self._until[key] = until
        return self.close_local(key)

    async def revoked(self, keys: tuple[str, ...]) -> bool:
        return self.revoked_here(keys)


@dataclass(frozen=True)
class Revoked:
    """What :func:`revoke` did.

    Attributes:
        user: The user revoked (or whose token was).
        jti: The token revoked, or None when the whole user was.
        until: When the revocation ends, in UTC.
        storage: The storage, its password hidden.
        told: The connections closed (memory), or the worker processes that received the
            revocation (Redis), each of which closes its own.
        shared: Whether the storage is shared by several processes (Redis), which says
            what ``told`` counts.
    """

    user: str
    jti: str | None
    until: datetime
    storage: str
    told: int
    shared: bool

    def __str__(self) -> str:
        what = self.user if self.jti is None else f"token {self.jti} of {self.user}"
        until = self.until.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.shared:
            outcome = f"told {self.told} worker process(es), which close its connections"
        else:
            outcome = f"closed {self.told} connection(s)"
        return f"revoked {what} until {until} on {self.storage}; {outcome}"


def deadline(until: datetime | None, for_seconds: float | None) -> float:
    """The end of a revocation as a Unix time: ``until``, or ``for_seconds`` from now, or
    :data:`DEFAULT_SECONDS` from now."""
    if until is not None and for_seconds is not None:
        raise ValueError("give until or for_seconds, not both.")
    if until is not None:
        if not isinstance(until, datetime) or until.tzinfo is None:
            raise ValueError(
                f"until must be a timezone-aware datetime, such as "
                f"datetime.now(timezone.utc) + timedelta(hours=1), not {until!r}."
            )
        end = until.timestamp()
    else:
        seconds = DEFAULT_SECONDS if for_seconds is None else for_seconds
        end = time.time() + _options.seconds("for_seconds", seconds, positive=True)
    if end <= time.time():
        raise ValueError(f"until {until} has passed: a revocation must end in the future.")
    return end


async def revoke(
    storage: str | Backend,
    user: str,
    *,
    jti: str | None = None,
    until: datetime | None = None,
    for_seconds: float | None = None,
) -> Revoked:
    """Revoke ``user`` (or only its token ``jti``) in every process that shares ``storage``.

    Every open connection of the user (or authenticated with that token) is closed with
    4003 ``revoked``, and new handshakes are refused with it until the revocation ends.

    Args:
        storage: A storage URI (``"memory://"`` is this process only;
            ``"redis://host:6379/0"`` reaches every worker on that Redis), or a backend,
            such as a gate's (``gate.backend``; :meth:`Gate.revoke <wsgate.Gate.revoke>`
            passes it).
        user: The user's identity: the token's ``sub``.
        jti: Revoke only the token with this ``jti`` claim, until its ``exp``: give that as
            ``until``.
        until: When the revocation ends, a timezone-aware datetime.
        for_seconds: How long it lasts, in seconds, instead of ``until``. One hour
            (:data:`DEFAULT_SECONDS`) when neither is given.

    Raises:
        ValueError: for an empty user or jti, or an end that is not in the future.
        wsgate.BackendUnavailable: when Redis cannot be reached (the revocation was not
            made).
    """
    if not isinstance(user, str) or not user:
        raise ValueError(f"user must be a user's identity (the token's sub), not {user!r}.")
    if jti is not None and (not isinstance(jti, str) or not jti):
        raise ValueError(f"jti must be a token's jti claim, not {jti!r}.")
    end = deadline(until, for_seconds)
    from wsgate.backends import backend_from_uri

    backend = backend_from_uri(storage) if isinstance(storage, str) else storage
    try:
        key = user_key(user) if jti is None else token_key(jti)
        told = await backend.revocations.revoke(key, end)
    finally:
        if isinstance(storage, str):
            await backend.aclose()
    shown = _options.redacted_url(storage) if isinstance(storage, str) else backend.kind
    return Revoked(
        user=user,
        jti=jti,
        until=datetime.fromtimestamp(math.ceil(end), timezone.utc),
        storage=shown,
        told=told,
        shared=backend.shared,
    )
