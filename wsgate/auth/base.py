"""What every verifier returns, and the user object the auth middleware puts in the scope."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

from starlette.authentication import BaseUser
from starlette.requests import HTTPConnection

from wsgate.exceptions import InvalidToken, NoGateUser


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified token.

    Attributes:
        subject: The ``sub`` claim: who the connection belongs to.
        claims: Every claim of the token, as verified.
        scopes: The scopes granted, from the ``scope`` (space-separated) or ``scp`` claim.
        expires_at: The ``exp`` claim as a Unix timestamp in seconds, or None.
    """

    subject: str
    claims: Mapping[str, Any] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()
    expires_at: float | None = None


@runtime_checkable
class Verifier(Protocol):
    """Turns a token into an :class:`Identity`.

    ``verify`` raises :class:`~wsgate.InvalidToken`, :class:`~wsgate.TokenExpired` or
    :class:`~wsgate.AuthUnavailable`, and nothing else, whatever the token contains.
    """

    async def verify(self, token: str) -> Identity: ...


class GateUser(BaseUser):
    """The user of an authenticated connection, as ``websocket.user`` / ``scope["user"]``.

    ``identity`` is the token's subject. ``is_dev`` is True only for the development bypass
    user, which never exists in production.
    """

    def __init__(self, identity: Identity, *, is_dev: bool = False) -> None:
        self.verified = identity
        self.is_dev = is_dev

    @property
    def identity(self) -> str:
        return self.verified.subject

    @property
    def display_name(self) -> str:
        name = self.claims.get("name")
        return name if isinstance(name, str) else self.verified.subject

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def claims(self) -> Mapping[str, Any]:
        return self.verified.claims

    def __repr__(self) -> str:
        return f"GateUser({self.identity!r}, is_dev={self.is_dev})"


def gate_user(connection: HTTPConnection | Mapping[str, Any]) -> GateUser:
    """The :class:`GateUser` of a connection the gate let in, typed for type checkers.

    ``connection`` is the endpoint's ``WebSocket`` (any Starlette ``HTTPConnection``), or the
    ASGI ``scope`` of any framework: ``socket.scope`` in Litestar, ``websocket.scope`` in
    Quart, the ``scope`` of a plain ASGI app. ``websocket.user`` holds the same object, typed
    ``Any``::

        user = gate_user(websocket)
        await websocket.send_json({"hello": user.identity, "scopes": user.verified.scopes})

    Raises :class:`~wsgate.NoGateUser` when no gate authenticated the connection.
    """
    user = connection.get("user")
    if not isinstance(user, GateUser):
        raise NoGateUser(
            f"this connection has no GateUser (scope['user'] is {type(user).__name__}): put "
            "the endpoint behind the gate, with gate.route() or gate.wrap()."
        )
    return user


def scopes_from_claims(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The scopes of a token: ``scope`` as a space-separated string, or ``scp`` as a list."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return tuple(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, str):
        return tuple(scp.split())
    if isinstance(scp, list) and all(isinstance(item, str) for item in scp):
        return tuple(scp)
    return ()


MAX_TIMESTAMP: Final = 253_402_300_799
"""The latest time claim accepted: 9999-12-31T23:59:59Z, in seconds since the epoch.

Beyond it a claim means nothing, and a number as large as ``1e20`` cannot be written back as
a JSON integer (orjson stops at 64 bits): refused alike in the handshake and in a refresh.
"""


def timestamp(value: Any, name: str) -> float:
    """A time claim as seconds, or InvalidToken unless it is a JSON number between the epoch
    and :data:`MAX_TIMESTAMP`.

    ``true`` is an int to Python but not a time, and a huge integer is not finite.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if 0 <= seconds <= MAX_TIMESTAMP:
            return seconds
    raise InvalidToken(f"{name} is not a number of seconds between 1970 and 9999")
