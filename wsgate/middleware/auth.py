"""AuthMiddleware: authenticate a WebSocket handshake with a token before the app runs."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wsgate import close_codes
from wsgate._query import redact_query
from wsgate._settings import Environment, parse_environment
from wsgate.auth.base import GateUser, Identity, Verifier
from wsgate.auth.tokens import DEFAULT_SUBPROTOCOL_PREFIX, TokenExtractor
from wsgate.close_codes import Refusal
from wsgate.engine import CheckMiddleware
from wsgate.exceptions import AuthenticationError, ConfigurationError
from wsgate.metrics import METRICS_KEY

logger = logging.getLogger("wsgate.auth")


class AuthMiddleware(CheckMiddleware):
    """Let a WebSocket connection in only with a verified token.

    On success the app sees ``scope["user"]`` (a :class:`~wsgate.GateUser` whose identity is
    the token's ``sub``) and ``scope["auth"]`` (Starlette ``AuthCredentials`` with the token's
    scopes), so ``websocket.user`` and ``starlette.authentication.requires`` work unchanged.
    Token entries are removed from ``scope["subprotocols"]``: the app never sees the token and
    cannot echo it.

    A refused connection is accepted and closed at once with 1008 (or 1013 when the auth
    service is down) and a reason from the close-code table, because that is the only way a
    browser can learn why. The app never runs for it.

    Args:
        app: The ASGI app to protect.
        verifier: What checks tokens: a :class:`~wsgate.JWTVerifier`, a
            :class:`~wsgate.RemoteVerifier`, or anything with ``async verify(token)``.
            Required in production.
        environment: ``"production"`` (the default) or ``"development"``.
        dev_bypass: In development only, let a connection without any token in as
            ``dev_user``, marked ``is_dev``. Refused at construction in production.
        dev_user: The subject of the development bypass user.
        subprotocols: The application subprotocols the endpoint supports, in order of
            preference, e.g. ``["mcp"]``. None accepts whatever the client offers first.
        header: Read the token from ``Authorization: Bearer``.
        subprotocol_prefixes: Prefixes that mark a ``Sec-WebSocket-Protocol`` entry as a
            base64url token; empty turns that source off.
        query_param: Read the token from this query-string parameter. Off by default, because
            query strings land in access logs and a token there can leak. When it is on, the
            parameter's value is replaced by ``redacted`` in the scope itself, so that neither
            the server's access log nor the app sees it.
        user_param: The path parameter that must equal the token's subject when present
            (``/ws/{user_id}``). None turns the check off.
        reject_before_accept: Refuse with an HTTP status (401, 403, 503) during the handshake
            instead of accept-then-close. Browsers then only see close code 1006.
    """

    stage = "auth"
    close_codes = (
        close_codes.SUBPROTOCOL_REQUIRED,
        close_codes.AUTH_REQUIRED,
        close_codes.INVALID_TOKEN,
        close_codes.TOKEN_EXPIRED,
        close_codes.USER_MISMATCH,
        close_codes.AUTH_UNAVAILABLE,
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: Verifier | None = None,
        environment: Environment | str = Environment.PRODUCTION,
        dev_bypass: bool = False,
        dev_user: str = "dev-user",
        subprotocols: Sequence[str] | None = None,
        # Token sources
        header: bool = True,
        subprotocol_prefixes: Sequence[str] = (DEFAULT_SUBPROTOCOL_PREFIX,),
        query_param: str | None = None,
        # Checks
        user_param: str | None = "user_id",
        reject_before_accept: bool = False,
    ) -> None:
        self.environment = parse_environment(environment)
        production = self.environment is Environment.PRODUCTION
        if production and dev_bypass:
            raise ConfigurationError(
                "dev_bypass=True lets anyone in without a token, so it is refused in "
                "production. Set environment='development' on a development machine, or "
                "turn the bypass off."
            )
        if production and verifier is None:
            raise ConfigurationError(
                "a production AuthMiddleware needs verifier= (a JWTVerifier or RemoteVerifier)."
            )
        if verifier is not None and not isinstance(verifier, Verifier):
            raise ConfigurationError(
                f"verifier must have an async verify(token) method; got {verifier!r}."
            )
        if isinstance(subprotocols, str):
            raise ConfigurationError(
                f"subprotocols must be a list, not the string {subprotocols!r}; "
                f"write [{subprotocols!r}]."
            )
        if not dev_user:
            raise ConfigurationError("dev_user must be a non-empty subject.")
        self.verifier = verifier
        self.dev_bypass = dev_bypass and not production
        self.dev_identity = Identity(dev_user, {"sub": dev_user, "dev": True})
        self.supported = None if subprotocols is None else tuple(subprotocols)
        self.extractor = TokenExtractor(
            header=header, subprotocol_prefixes=subprotocol_prefixes, query_param=query_param
        )
        self.secret_query_param = query_param
        self.user_param = user_param
        self.reject_before_accept = reject_before_accept
        self._alone(app)

    async def authenticate(
        self, scope: Scope, receive: Receive, send: Send, *, query: bytes | None = None
    ) -> Send | None:
        """Authenticate a websocket handshake, before the app runs.

        On success the user is in ``scope["user"]`` and ``scope["auth"]``, and the result is
        the ``send`` to hand the app: ``send`` itself, or, when the token came in
        ``Sec-WebSocket-Protocol``, a wrapper that makes the accept echo an application
        subprotocol. On failure the handshake has been refused and the result is None.

        ``query`` is the query string as the client sent it, when a layer in front has
        already redacted the one in the scope.
        """
        if query is None:
            query = scope.get("query_string", b"")
        return await self._screen(scope, receive, send, query)

    async def _screen(
        self, scope: Scope, receive: Receive, send: Send, query: bytes
    ) -> Send | None:
        handshake = self.extractor.extract(scope["headers"], scope.get("subprotocols", ()), query)
        if self.extractor.query_param is not None:
            redact_query(scope, self.extractor.query_param)
        selected = self._select(handshake.subprotocols)
        if handshake.via_subprotocol and selected is None:
            await self._refuse(scope, receive, send, close_codes.SUBPROTOCOL_REQUIRED, None)
            return None
        if handshake.error is not None:
            await self._refuse(
                scope, receive, send, close_codes.INVALID_TOKEN, selected, handshake.error
            )
            return None

        is_dev = False
        if handshake.token is not None and self.verifier is not None:
            try:
                identity = await _verify(self.verifier, handshake.token, scope)
            except AuthenticationError as exc:
                await self._refuse(scope, receive, send, exc.refusal, selected, str(exc))
                return None
            except Exception:
                logger.exception("verifier %r raised an undocumented exception", self.verifier)
                await self._refuse(scope, receive, send, close_codes.AUTH_UNAVAILABLE, selected)
                return None
        elif handshake.token is not None:
            await self._refuse(
                scope,
                receive,
                send,
                close_codes.INVALID_TOKEN,
                selected,
                "a token was offered but no verifier is configured",
            )
            return None
        elif self.dev_bypass:
            identity, is_dev = self.dev_identity, True
        else:
            await self._refuse(scope, receive, send, close_codes.AUTH_REQUIRED, selected)
            return None

        if self.user_param is not None:
            claimed = scope.get("path_params", {}).get(self.user_param)
            if claimed is not None and str(claimed) != identity.subject:
                await self._refuse(scope, receive, send, close_codes.USER_MISMATCH, selected)
                return None

        # In place, as Starlette's AuthenticationMiddleware does: a copy of the whole scope
        # would cost every open connection a kilobyte.
        scope["user"] = GateUser(identity, is_dev=is_dev)
        scope["auth"] = AuthCredentials(list(identity.scopes))
        scope["subprotocols"] = handshake.subprotocols
        if handshake.via_subprotocol:
            return _echoing(send, handshake.subprotocols, selected)
        return send

    def _select(self, offered: list[str]) -> str | None:
        if self.supported is None:
            return offered[0] if offered else None
        return next((protocol for protocol in offered if protocol in self.supported), None)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        refusal: Refusal,
        subprotocol: str | None,
        detail: str = "",
    ) -> None:
        # refuse() logs the one line; detail comes from the verifier, never holds the token.
        await close_codes.refuse(
            scope,
            receive,
            send,
            refusal,
            before_accept=self.reject_before_accept,
            subprotocol=subprotocol,
            detail=detail,
        )


async def _verify(verifier: Verifier, token: str, scope: Scope) -> Identity:
    """``verifier.verify(token)``, timed for the gate's metrics."""
    started = time.perf_counter()
    try:
        return await verifier.verify(token)
    finally:
        record = scope.get(METRICS_KEY)
        if record is not None:
            record.verified(time.perf_counter() - started)


def _echoing(send: Send, offered: list[str], selected: str | None) -> Send:
    """Make the accept echo an offered application subprotocol, never a token entry.

    A browser that offered subprotocols fails a handshake whose accept echoes none, so an app
    that accepts without choosing gets ``selected`` filled in.
    """

    async def send_accept(message: Message) -> None:
        if message["type"] == "websocket.accept" and message.get("subprotocol") not in offered:
            message = {**message, "subprotocol": selected}
        await send(message)

    return send_accept
