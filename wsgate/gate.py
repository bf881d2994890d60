"""Gate: the whole middleware chain, composed in one documented order from one config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp

from wsgate.auth.base import Verifier
from wsgate.auth.jwt import JWTVerifier
from wsgate.config import GateConfig
from wsgate.exceptions import ConfigurationError
from wsgate.middleware.auth import AuthMiddleware
from wsgate.middleware.origin import OriginMiddleware


class Gate:
    """Every wsgate check in front of an endpoint or a whole app, from one :class:`GateConfig`.

    The chain, outermost first: origin, then authentication, then the app. A refusal by an
    outer layer means the inner ones never run.

    Args:
        config: The settings; ``GateConfig.from_env()`` reads them from ``WSGATE_*``
            variables. Defaults to a production config, which needs a key or an auth URL.
        verifier: Use this verifier instead of the one the config describes.

    Example::

        gate = Gate(GateConfig.from_env())
        app = Starlette(routes=[WebSocketRoute("/ws", gate.wrap(ChatEndpoint))])
    """

    def __init__(self, config: GateConfig | None = None, *, verifier: Verifier | None = None):
        self.config = config or GateConfig()
        self.verifier = verifier if verifier is not None else _verifier_from(self.config)

    @classmethod
    def from_env(cls, **overrides: Any) -> Gate:
        """A gate configured from ``WSGATE_*`` environment variables."""
        return cls(GateConfig.from_env(**overrides))

    def wrap(
        self,
        app: ASGIApp,
        *,
        dev_bypass: bool | None = None,
        subprotocols: Sequence[str] | None = None,
    ) -> ASGIApp:
        """Put the gate in front of ``app``: an endpoint class, a route's app, or a whole app.

        Non-websocket requests pass through untouched, so wrapping a whole Starlette app is
        fine. The ``{user_id}`` path check needs path parameters, which exist only once the
        router has matched: wrap endpoints to get it.

        Args:
            dev_bypass: Override the config's ``dev_bypass`` for this endpoint. True is
                refused in production.
            subprotocols: The application subprotocols this endpoint supports, e.g.
                ``["mcp"]``; None accepts whatever the client offers first.
        """
        config = self.config
        app = AuthMiddleware(
            app,
            verifier=self.verifier,
            environment=config.environment,
            dev_bypass=config.dev_bypass if dev_bypass is None else dev_bypass,
            dev_user=config.dev_user,
            subprotocols=subprotocols,
            subprotocol_prefixes=config.subprotocol_prefixes,
            query_param=config.query_param,
            reject_before_accept=config.reject_before_accept,
        )
        return OriginMiddleware(
            app,
            allow_origins=config.allowed_origins,
            allow_origin_regex=config.allowed_origin_regex,
            allow_missing_origin=config.allow_missing_origin,
            allow_any_origin=config.allow_any_origin,
            environment=config.environment,
        )

    async def aclose(self) -> None:
        """Release what the gate holds (the auth service client). Call it at shutdown."""
        aclose = getattr(self.verifier, "aclose", None)
        if aclose is not None:
            await aclose()


def _verifier_from(config: GateConfig) -> Verifier | None:
    keys = [config.jwt_secret, config.jwt_public_key, config.jwt_jwks]
    if config.auth_url is not None:
        if any(key is not None for key in keys):
            raise ConfigurationError(
                "both auth_url (WSGATE_AUTH_URL) and a JWT key are set; choose remote or local "
                "verification."
            )
        from wsgate.auth.remote import RemoteVerifier

        return RemoteVerifier(config.auth_url)
    if all(key is None for key in keys):
        if config.is_development:
            return None  # development with only the bypass: offered tokens are refused
        raise ConfigurationError(
            "a production gate needs a way to verify tokens: set WSGATE_JWT_SECRET (at least "
            "32 bytes), WSGATE_JWT_PUBLIC_KEY, WSGATE_JWT_JWKS_FILE or WSGATE_AUTH_URL."
        )
    return JWTVerifier(
        algorithms=config.jwt_algorithms,
        secret=config.jwt_secret,
        public_key=config.jwt_public_key,
        jwks=config.jwt_jwks,
        audience=config.jwt_audience,
        issuer=config.jwt_issuer,
        leeway=config.jwt_leeway,
    )
