"""Exceptions raised by wsgate.

Every exception wsgate raises on purpose derives from :class:`WSGateError`::

    WSGateError
     ├── ConfigurationError        a bad option, raised once at construction
     ├── AuthenticationError       a token was not accepted (carries its Refusal)
     │    ├── InvalidToken         close 1008 "invalid_token"
     │    ├── TokenExpired         close 1008 "token_expired"
     │    └── AuthUnavailable      close 1013 "auth_unavailable"
     ├── BackendUnavailable        close 1013 "backend_unavailable" (wsgate.backends)
     ├── NoGateUser                gate_user() on a connection no gate authenticated
     └── ErrorReply                an error frame in answer to one message (wsgate.endpoint)
          └── InvalidParams        error frame "invalid_params"

Verifiers raise the ``AuthenticationError`` subclasses; the auth middleware turns them into
the close code and reason from :mod:`wsgate.refusals`. Their messages are for server logs and
never reach a client. A shared registry raises ``BackendUnavailable`` when it cannot be
reached and its policy is ``fail_closed``; the connection-limit layer closes the new
connection with its refusal. Handlers of a :class:`~wsgate.GatedEndpoint` raise
``ErrorReply`` (or ``InvalidParams``) to answer a message with an error frame; its message
does reach the client, and the connection stays open.
"""

from __future__ import annotations

from typing import ClassVar

from wsgate import refusals
from wsgate.refusals import Refusal


class WSGateError(Exception):
    """Base class of every exception wsgate raises on purpose."""


class ConfigurationError(WSGateError, ValueError):
    """An option was given a value wsgate cannot work with.

    Raised at construction, never while serving: a gate that starts is configured correctly.
    The message names the option, the bad value and what would be valid.
    """


class NoGateUser(WSGateError, LookupError):
    """:func:`~wsgate.gate_user` was given a connection that no gate authenticated.

    A programming error, never a client's: the endpoint is not behind a
    :class:`~wsgate.Gate` (or an :class:`~wsgate.AuthMiddleware`).
    """


class AuthenticationError(WSGateError):
    """A token was offered but not accepted."""

    refusal: ClassVar[Refusal] = refusals.INVALID_TOKEN


class InvalidToken(AuthenticationError):
    """The token is malformed, forged, or fails a claim check other than expiry."""

    refusal = refusals.INVALID_TOKEN


class TokenExpired(AuthenticationError):
    """The token's signature is valid but its ``exp`` has passed."""

    refusal = refusals.TOKEN_EXPIRED


class AuthUnavailable(AuthenticationError):
    """The token could not be checked: the auth service is down, slow or failing."""

    refusal = refusals.AUTH_UNAVAILABLE
