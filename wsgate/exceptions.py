"""Exceptions raised by wsgate.

Every exception wsgate raises on purpose derives from :class:`WSGateError`::

    WSGateError
     ├── ConfigurationError        a bad option, raised once at construction
     ├── AuthenticationError       a token was not accepted (carries its Refusal)
     │    ├── InvalidToken         close 1008 "invalid_token"
     │    ├── TokenExpired         close 1008 "token_expired"
     │    └── AuthUnavailable      close 1013 "auth_unavailable"
     ├── BackendUnavailable        close 1013 "backend_unavailable"
     ├── NoGateUser                gate_user() or gate_connection() with no gate in front
     └── ErrorReply                an error frame in answer to one message
          └── InvalidParams        error frame "invalid_params"

Verifiers raise the ``AuthenticationError`` subclasses; the auth middleware turns them into
the close code and reason from :mod:`wsgate.close_codes`. Their messages are for server logs and
never reach a client. A shared registry raises ``BackendUnavailable`` when it cannot be
reached and its policy is ``fail_closed``; the connection-limit layer closes the new
connection with its refusal. Handlers of a :class:`~wsgate.GatedEndpoint` raise
``ErrorReply`` (or ``InvalidParams``) to answer a message with an error frame; its message
does reach the client, and the connection stays open.
"""

from __future__ import annotations

from typing import Any, ClassVar

from wsgate import close_codes
from wsgate.close_codes import Refusal
from wsgate.error_frames import INVALID_PARAMS, MessageError

__all__ = [
    "AuthUnavailable",
    "AuthenticationError",
    "BackendUnavailable",
    "ConfigurationError",
    "ErrorReply",
    "InvalidParams",
    "InvalidToken",
    "NoGateUser",
    "TokenExpired",
    "WSGateError",
]


class WSGateError(Exception):
    """Base class of every exception wsgate raises on purpose."""


class ConfigurationError(WSGateError, ValueError):
    """An option was given a value wsgate cannot work with.

    Raised at construction, never while serving: a gate that starts is configured correctly.
    The message names the option, the bad value and what would be valid.
    """


class NoGateUser(WSGateError, LookupError):
    """:func:`~wsgate.gate_user` or :func:`~wsgate.gate_connection` was given a connection
    that no gate authenticated.

    A programming error, never a client's: the endpoint is not behind a
    :class:`~wsgate.Gate` (or an :class:`~wsgate.AuthMiddleware`).
    """


class AuthenticationError(WSGateError):
    """A token was offered but not accepted."""

    refusal: ClassVar[Refusal] = close_codes.INVALID_TOKEN


class InvalidToken(AuthenticationError):
    """The token is malformed, forged, or fails a claim check other than expiry."""

    refusal = close_codes.INVALID_TOKEN


class TokenExpired(AuthenticationError):
    """The token's signature is valid but its ``exp`` has passed."""

    refusal = close_codes.TOKEN_EXPIRED


class AuthUnavailable(AuthenticationError):
    """The token could not be checked: the auth service is down, slow or failing."""

    refusal = close_codes.AUTH_UNAVAILABLE


class BackendUnavailable(WSGateError):
    """The shared backend cannot be reached and its policy is ``fail_closed``.

    Raised by a registry's ``add``; the new connection is closed with 1013
    ``backend_unavailable``. Connections already open are not affected.
    """

    refusal: ClassVar[Refusal] = close_codes.BACKEND_UNAVAILABLE


class ErrorReply(WSGateError):
    """Raise in a handler to answer its message with an error frame instead of a reply.

    The connection stays open and the failure count is not raised: this is an answer, not a
    fault. :meth:`GatedEndpoint.message_scope <wsgate.GatedEndpoint.message_scope>` sees the
    exception (a session rolls back).

    Args:
        error: The row of the error-frame table, e.g.
            ``wsgate.error_frames.METHOD_NOT_FOUND``.
        message: A sentence for the client saying what is wrong and what to do.
        extra: Numbers and names added to the error (``data`` on JSON-RPC).
    """

    def __init__(self, error: MessageError, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.extra = extra


class InvalidParams(ErrorReply):
    """Raise in a handler whose parameters are wrong: ``invalid_params``, -32602 on JSON-RPC."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(INVALID_PARAMS, message, **extra)
