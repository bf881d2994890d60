"""RevocationMiddleware: refuse revoked users and tokens, and close their open connections.

A handshake check after authentication: a user, or a token's ``jti``, that is revoked is
refused with 4003 ``revoked``. Every connection it lets in is held under its user and its
token in the :class:`~wsgate.revocation.Revocations` store until it ends, so that a revocation
made later, in this process or another, closes it with 4003 ``revoked``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from wsgate import close_codes
from wsgate.backends import BackendUnavailable
from wsgate.close_codes import Refusal
from wsgate.connection import Connection
from wsgate.engine import CheckMiddleware
from wsgate.exceptions import ConfigurationError
from wsgate.revocation import MemoryRevocations, Revocations, keys_of

__all__ = ["RevocationMiddleware"]


class RevocationMiddleware(CheckMiddleware):
    """Refuse the handshakes of revoked users and tokens, and close their connections.

    Put it behind the authentication (it reads ``scope["user"]``); a
    :class:`~wsgate.Gate` runs it right after authentication, on its backend's store.
    Connections without an authenticated user pass.

    Args:
        app: The ASGI app to protect.
        revocations: The store: ``backend.revocations``, or a new
            :class:`~wsgate.revocation.MemoryRevocations` by default. Revoke with
            :func:`wsgate.revoke` on the same storage.
        reject_before_accept: Refuse with HTTP 403 during the handshake instead of accept
            and close 4003 (which a browser can read), as the authentication does.
    """

    stage = "after_auth"
    close_codes = (close_codes.REVOKED, close_codes.BACKEND_UNAVAILABLE)

    def __init__(
        self,
        app: ASGIApp,
        *,
        revocations: Revocations | None = None,
        reject_before_accept: bool = False,
    ) -> None:
        if revocations is None:
            revocations = MemoryRevocations()
        elif not isinstance(revocations, Revocations):
            raise ConfigurationError(
                f"revocations must be a wsgate.revocation.Revocations, such as a backend's "
                f"backend.revocations, not {revocations!r}."
            )
        self.revocations = revocations
        self.reject_before_accept = reject_before_accept
        self._alone(app)

    # The hooks, in the order a connection meets them.

    async def _screen(
        self, scope: Scope, receive: Receive, send: Send, query: bytes
    ) -> Send | None:
        keys = keys_of(scope.get("user"))
        if not keys:
            return send
        try:
            revoked = await self.revocations.revoked(keys)
        except BackendUnavailable as exc:
            await self._refuse(scope, receive, send, exc.refusal, str(exc))
            return None
        if not revoked:
            return send
        await self._refuse(scope, receive, send, close_codes.REVOKED, f"{keys[-1]} is revoked")
        return None

    def open(self, connection: Connection) -> Connection:
        """Hold the connection, so that a revocation of its user or token finds it."""
        self.revocations.track(connection)
        return connection

    def accepted(self, state: Connection) -> None:
        """A revocation told between the handshake and the accept found nothing to close."""
        if self.revocations.revoked_user(state.user):
            state.close_soon(close_codes.REVOKED)

    def end(self, state: Connection) -> None:
        """Let the ended connection go."""
        self.revocations.forget(state)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, refusal: Refusal, detail: str
    ) -> None:
        await close_codes.refuse(
            scope,
            receive,
            send,
            refusal,
            before_accept=self.reject_before_accept,
            detail=detail,
        )
