"""Gate: the whole middleware chain, composed in one documented order from one config."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal, TypeGuard, TypeVar, cast

from starlette.routing import WebSocketRoute, websocket_session
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from wsgate._window import LocalStorage
from wsgate._workers import warn_if_limits_multiply
from wsgate.auth.base import Verifier
from wsgate.auth.jwks import RemoteJWKS
from wsgate.auth.jwt import JWTVerifier
from wsgate.backends import Backend, backend_from_uri
from wsgate.close_codes import CLOSE_CODES, Refusal
from wsgate.config import GateConfig, GateSettings
from wsgate.endpoint import GatedEndpoint
from wsgate.engine import STAGES, Check, Engine, validate
from wsgate.error_frames import MESSAGE_ERRORS, MessageError, Protocol
from wsgate.exceptions import ConfigurationError
from wsgate.metrics import Metrics, MetricsMiddleware, default_metrics
from wsgate.middleware.auth import AuthMiddleware
from wsgate.middleware.connections import ConnectionLimitMiddleware
from wsgate.middleware.format import FormatMiddleware
from wsgate.middleware.heartbeat import HeartbeatMiddleware
from wsgate.middleware.origin import OriginMiddleware
from wsgate.middleware.ratelimit import RateLimitMiddleware
from wsgate.middleware.revocation import RevocationMiddleware
from wsgate.middleware.shedding import LoadSheddingMiddleware, WorkerLoad
from wsgate.middleware.size import MessageSizeMiddleware
from wsgate.registry import Registry
from wsgate.revocation import Revoked, revoke

if TYPE_CHECKING:
    from typing_extensions import Unpack

Layer = TypeVar("Layer")


def origin_check(config: GateConfig, app: ASGIApp) -> OriginMiddleware:
    """The origin check ``config`` describes, in front of ``app``: the one a gate puts in front
    of every endpoint, and the one its discovery routes answer browsers with."""
    return OriginMiddleware(
        app,
        allow_origins=config.allowed_origins,
        allow_origin_regex=config.allowed_origin_regex,
        allow_missing_origin=config.allow_missing_origin,
        allow_any_origin=config.allow_any_origin,
        environment=config.environment,
    )


@dataclass(frozen=True)
class Endpoint:
    """An endpoint the gate guards, as published by the discovery routes.

    Attributes:
        path: The route path, e.g. ``"/ws/mcp"``; None when the gate wraps a whole app.
        protocol: ``"json"``, ``"jsonrpc"``, or None when the gate does not check formats.
        subprotocols: The application subprotocols the endpoint supports, or None for any.
        dev_bypass: Whether a client without a token gets in as the dev user.
    """

    path: str | None
    protocol: Protocol | None
    subprotocols: tuple[str, ...] | None
    dev_bypass: bool


class Gate:
    """Every wsgate check in front of an endpoint or a whole app, from one :class:`GateConfig`.

    The chain, outermost first: origin, load shedding, your ``before_auth`` checks,
    authentication, revocation, your ``after_auth`` checks, per-user connection limit, message size,
    heartbeat and timeouts, rate limit, message format, your message checks, then the app.
    A refusal by an outer check means the inner ones never run, and a message refused by one
    check never reaches the next. State shared between connections (the backend: the
    rate-limit storage and the connection registry; the per-worker counts of load shedding)
    belongs to the gate, so every endpoint it wraps shares it.

    The gate builds each middleware from the config, as you would to use it alone
    (:meth:`layers` returns them), and :meth:`wrap` runs them all as checks of one
    :class:`~wsgate.Engine`: the handshake checks run and return before the app starts, and
    each message goes through the other checks in one ``receive``, so an open connection
    holds one frame and one ``receive`` of the gate's, instead of a frame and a wrapper per
    layer. What clients and the app see is the same as with the middlewares nested.

    Args:
        config: The settings; ``GateConfig.from_env()`` reads them from ``WSGATE_*``
            variables. Defaults to a production config, which needs a key or an auth URL.
        verifier: Use this verifier instead of the one the config describes.
        registry: Use this connection registry instead of the one ``config.storage`` names.
        metrics: Count in these metrics instead of the default, which is
            :class:`~wsgate.metrics.PrometheusMetrics` with the ``prometheus`` extra and
            ``metrics_path`` set, else :class:`~wsgate.metrics.Metrics` in memory.
        checks: Your own :class:`~wsgate.Check` instances, in order. Each one's
            ``handshake`` runs at its ``stage`` (before or after authentication), and its
            message hooks after the format check, so they see parsed, well-formed messages.
            The close codes and error frames they declare join the gate's tables: counted,
            and listed in ``/ws/config``.

    Attributes:
        checks: The user's checks.
        close_codes: wsgate's close-code rows, then those the user's checks declare.
        error_frames: wsgate's error-frame rows, then those the user's checks declare.

    Example::

        gate = Gate(GateConfig.from_env())
        app = Starlette(routes=[gate.route("/ws", ChatEndpoint)])
    """

    def __init__(
        self,
        config: GateConfig | None = None,
        *,
        verifier: Verifier | None = None,
        registry: Registry | None = None,
        metrics: Metrics | None = None,
        checks: Iterable[Check] = (),
    ):
        self.config = config or GateConfig()
        self.checks: tuple[Check, ...] = _user_checks(checks)
        self.close_codes: tuple[Refusal, ...] = _table(
            "close_codes", CLOSE_CODES, [row for check in self.checks for row in check.close_codes]
        )
        self.error_frames: tuple[MessageError, ...] = _table(
            "error_frames",
            MESSAGE_ERRORS,
            [row for check in self.checks for row in check.error_frames],
        )
        self.verifier = verifier if verifier is not None else _verifier_from(self.config)
        # The shared state the storage URI names: memory, or Redis for several processes.
        self.backend: Backend = backend_from_uri(
            self.config.storage,
            registry_ttl=self.config.registry_ttl,
            backend_policy=self.config.backend_policy,
        )
        self.registry: Registry = registry if registry is not None else self.backend.registry
        self.rate_storage = self.backend.rate_storage
        # Where rate limits are counted while a shared storage fails: in this process.
        self.rate_fallback = LocalStorage() if self.backend.shared else None
        # In memory, every limit is per process: several workers multiply them.
        warn_if_limits_multiply(self.backend.shared)
        # What this worker process counts to shed connect storms, for all its endpoints.
        self.worker_load = WorkerLoad()
        self.endpoints: list[Endpoint] = []
        self.metrics = metrics if metrics is not None else default_metrics(self.config)
        self._layers: list[object] = []

    def __copy__(self) -> Gate:
        # One gate holds the state its endpoints share (the backend, the metrics, the list
        # of endpoints); a framework that copies its routes (Litestar deep-copies a router's
        # middleware) must keep that one gate, not make a second.
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Gate:
        return self

    @classmethod
    def from_env(
        cls, *, extra_variables: Iterable[str] = (), **overrides: Unpack[GateSettings]
    ) -> Gate:
        """A gate configured from ``WSGATE_*`` environment variables: see
        :meth:`GateConfig.from_env <wsgate.GateConfig.from_env>`."""
        return cls(GateConfig.from_env(extra_variables=extra_variables, **overrides))

    def wrap(
        self,
        app: ASGIApp,
        *,
        path: str | None = None,
        protocol: Protocol | Literal["auto"] | None = "auto",
        dev_bypass: bool | None = None,
        subprotocols: Sequence[str] | None = None,
        json_endpoint: str | None = None,
        jsonrpc_endpoint: str | None = None,
    ) -> ASGIApp:
        """Put the gate in front of ``app``: an endpoint class, a route's app, or a whole app.

        Returns an :class:`~wsgate.Engine`. Non-websocket requests pass through
        untouched, so wrapping a whole Starlette app is fine. The ``{user_id}`` path check
        needs path parameters, which exist only once the router has matched: wrap endpoints
        to get it.

        Args:
            path: The endpoint's path, published by the discovery routes (:meth:`route`
                fills it in).
            protocol: ``"json"`` (legacy clients accepted), ``"jsonrpc"``, or None to pass
                messages through without format checks. The default, ``"auto"``, is the
                ``protocol`` of a :class:`~wsgate.GatedEndpoint` and ``"json"`` otherwise.
            dev_bypass: Override the config's ``dev_bypass`` for this endpoint. True is
                refused in production.
            subprotocols: The application subprotocols this endpoint supports, e.g.
                ``["mcp"]``; None accepts whatever the client offers first.
            json_endpoint: Named in the error a JSON-RPC endpoint sends for plain JSON.
            jsonrpc_endpoint: Named in the error a JSON endpoint sends for JSON-RPC.
        """
        if _is_websocket_function(app):
            name = getattr(app, "__qualname__", repr(app))
            raise ConfigurationError(
                f"{name} takes one argument, a WebSocket: it is a websocket endpoint function, "
                "not an ASGI app, and wrapping it would fail at its first connection. Pass it "
                "to gate.route(path, endpoint), or wrap starlette.routing.websocket_session("
                f"{name})."
            )
        config = self.config
        bypass = config.dev_bypass if dev_bypass is None else dev_bypass
        if protocol == "auto":
            protocol = _protocol_of(app)
        # Each check gets the app, as it would on its own; the engine runs their hooks.
        format_layer = None
        if protocol is not None:
            format_layer = FormatMiddleware(
                app,
                protocol=protocol,
                legacy=config.legacy_messages,
                max_batch=config.max_batch,
                max_depth=config.max_depth,
                json_endpoint=json_endpoint,
                jsonrpc_endpoint=jsonrpc_endpoint,
            )
        rate = None
        if config.rate_limit is not None:
            rate = RateLimitMiddleware(
                app,
                rate=config.rate_limit,
                strategy=config.rate_limit_strategy,
                storage=self.rate_storage,
                close_after=config.rate_limit_close_after,
                fallback=self.rate_fallback,
                max_batch=config.max_batch,
                lease=config.rate_limit_lease,
            )
        heartbeat = HeartbeatMiddleware(
            app,
            interval=config.heartbeat_interval,
            timeout=config.heartbeat_timeout,
            idle_timeout=config.idle_timeout,
            max_lifetime=config.max_lifetime,
            verifier=self.verifier,
            leeway=config.jwt_leeway,
            ping_limit=config.ping_limit,
            refresh_limit=config.refresh_limit,
        )
        size = MessageSizeMiddleware(
            app, max_bytes=config.max_message_bytes, policy=config.message_size_policy
        )
        limit = None
        if config.max_connections_per_user is not None:
            limit = ConnectionLimitMiddleware(
                app,
                max_per_user=config.max_connections_per_user,
                policy=config.connection_policy,
                registry=self.registry,
            )
        auth = AuthMiddleware(
            app,
            verifier=self.verifier,
            environment=config.environment,
            dev_bypass=bypass,
            dev_user=config.dev_user,
            subprotocols=subprotocols,
            subprotocol_prefixes=config.subprotocol_prefixes,
            query_param=config.query_param,
            reject_before_accept=config.reject_before_accept,
        )
        revocation = RevocationMiddleware(
            app,
            revocations=self.backend.revocations,
            reject_before_accept=config.reject_before_accept,
        )
        origin = origin_check(config, app)
        shedding = None
        if (
            config.connect_rate_per_ip is not None
            or config.connect_rate_per_worker is not None
            or config.max_connections_per_worker is not None
        ):
            shedding = LoadSheddingMiddleware(
                app,
                connect_rate_per_ip=config.connect_rate_per_ip,
                connect_rate_per_worker=config.connect_rate_per_worker,
                max_connections_per_worker=config.max_connections_per_worker,
                storage=self.rate_storage,
                load=self.worker_load,
            )
        chain = (
            origin,
            shedding,
            auth,
            revocation,
            limit,
            size,
            heartbeat,
            rate,
            format_layer,
            *self.checks,
        )
        metrics = MetricsMiddleware(
            app,
            metrics=self.metrics,
            endpoint=path or "*",
            close_codes=self.close_codes,
            error_frames=self.error_frames,
        )
        engine = Engine(
            app,
            [check for check in chain if check is not None],
            metrics=metrics,
            send_timeout=config.send_timeout,
            gate=path or "*",
        )
        self._layers.extend([metrics, *engine.checks])
        supported = None if subprotocols is None else tuple(subprotocols)
        self.endpoints.append(Endpoint(path, protocol, supported, bypass and config.is_development))
        return engine

    def layers(self, kind: type[Layer]) -> list[Layer]:
        """Every middleware of type ``kind`` the gate has put in front of an app."""
        return [layer for layer in self._layers if isinstance(layer, kind)]

    def route(
        self,
        path: str,
        endpoint: ASGIApp | Callable[[WebSocket], Awaitable[None]],
        **options: Any,
    ) -> WebSocketRoute:
        """A Starlette ``WebSocketRoute`` for ``path`` with the gate in front of ``endpoint``.

        ``endpoint`` is what a ``WebSocketRoute`` takes: an endpoint class (such as a
        :class:`~wsgate.GatedEndpoint`), an ASGI app, or an ``async def`` function of one
        ``WebSocket``. ``options`` are :meth:`wrap`'s keyword arguments.
        """
        if _is_websocket_function(endpoint):
            app = websocket_session(endpoint)
        else:
            app = cast(ASGIApp, endpoint)
        return WebSocketRoute(path, self.wrap(app, path=path, **options))

    async def revoke(
        self,
        user: str,
        *,
        jti: str | None = None,
        until: datetime | None = None,
        for_seconds: float | None = None,
    ) -> Revoked:
        """Revoke ``user``, or only its token ``jti``, in every worker that shares the gate's
        storage: its open connections close with 4003 ``revoked``, and its handshakes are
        refused until the revocation ends. See :func:`wsgate.revoke` for the arguments."""
        return await revoke(self.backend, user, jti=jti, until=until, for_seconds=for_seconds)

    async def backend_health(self) -> dict[str, Any]:
        """The state of the shared-state backend, for the health endpoint.

        ``{"kind": "memory", "status": "ok", "latency_ms": 0.0}`` for the in-process default;
        for Redis, ``{"kind": "redis", "status": "ok" | "down", "latency_ms": ...}`` from one
        PING (``latency_ms`` is None when it did not answer).
        """
        return await self.backend.health()

    def stats(self) -> dict[str, Any]:
        """The gate's counters and gauges in this process, as a dict: totals, and per
        endpoint. See :meth:`wsgate.metrics.Metrics.stats`."""
        return self.metrics.stats()

    async def aclose(self) -> None:
        """Release what the gate holds (the auth service client, backends). Call it at
        shutdown."""
        aclose = getattr(self.verifier, "aclose", None)
        if aclose is not None:
            await aclose()
        await self.backend.aclose()
        if self.registry is not self.backend.registry:
            await self.registry.aclose()
        self.metrics.close()


def _user_checks(checks: Iterable[Check]) -> tuple[Check, ...]:
    if isinstance(checks, Check):
        raise ConfigurationError(f"checks must be a list of checks, not one: write [{checks!r}].")
    result = tuple(checks)
    for check in result:
        validate(check)
        if check.stage not in STAGES:
            raise ConfigurationError(
                f"{check.name}.stage is {check.stage!r}; a check of yours runs "
                "'before_auth' or 'after_auth'."
            )
    return result


Row = TypeVar("Row", Refusal, MessageError)


def _table(name: str, builtin: tuple[Row, ...], declared: list[Row]) -> tuple[Row, ...]:
    """wsgate's rows, then the new rows the checks declare; a reason or code already taken
    by another row is refused."""
    rows = list(builtin)
    for row in declared:
        if row in rows:
            continue
        key = row.reason if isinstance(row, Refusal) else row.code
        for other in rows:
            if key == (other.reason if isinstance(other, Refusal) else other.code):
                raise ConfigurationError(
                    f"two {name} rows are named {key!r}: {other!r} and {row!r}. Give your "
                    "check's row a reason of its own."
                )
        if isinstance(row, Refusal):
            _check_close_row(row)
        rows.append(row)
    return tuple(rows)


def _check_close_row(row: Refusal) -> None:
    if not 4000 <= row.close_code <= 4999:
        raise ConfigurationError(
            f"the close-code row {row.reason!r} has code {row.close_code}; an application's "
            "own close codes are 4000-4999 (RFC 6455, section 7.4.2)."
        )
    if row.http_status is not None and not 400 <= row.http_status <= 599:
        raise ConfigurationError(
            f"the close-code row {row.reason!r} has http_status {row.http_status}; a refused "
            "handshake answers with a 4xx or 5xx status, or None to always accept and close."
        )


def _is_websocket_function(
    endpoint: object,
) -> TypeGuard[Callable[[WebSocket], Awaitable[None]]]:
    """Whether ``endpoint`` is an ``async def handler(websocket)``, as ``WebSocketRoute`` takes,
    rather than an ASGI app of three arguments."""
    if not (inspect.isfunction(endpoint) or inspect.ismethod(endpoint)):
        return False
    try:
        parameters = inspect.signature(endpoint).parameters
    except (TypeError, ValueError):
        return False
    return len(parameters) == 1


def _is_gated_endpoint(app: object) -> TypeGuard[type[GatedEndpoint]]:
    return isinstance(app, type) and issubclass(app, GatedEndpoint)


_WRAPPERS_SEEN: Final = 32
"""How many middlewares deep :func:`_protocol_of` looks for a GatedEndpoint."""


def _protocol_of(app: object) -> Protocol:
    """The protocol of the :class:`~wsgate.GatedEndpoint` behind ``app``, through middlewares
    that keep the app they wrap in ``.app`` (as Starlette's do); ``"json"`` without one."""
    for _ in range(_WRAPPERS_SEEN):
        if _is_gated_endpoint(app):
            return app.protocol
        app = getattr(app, "app", None)
        if app is None:
            break
    return "json"


def _verifier_from(config: GateConfig) -> Verifier | None:
    secret = tuple(config.jwt_secrets) or config.jwt_secret
    keys = [
        secret,
        config.jwt_secrets_file,
        config.jwt_public_key,
        config.jwt_jwks,
        config.jwt_jwks_url,
    ]
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
            "32 bytes), WSGATE_JWT_SECRETS, WSGATE_JWT_SECRETS_FILE, WSGATE_JWT_PUBLIC_KEY, "
            "WSGATE_JWT_JWKS_FILE, WSGATE_JWT_JWKS_URL or WSGATE_AUTH_URL."
        )
    jwks: Mapping[str, Any] | RemoteJWKS | None = config.jwt_jwks
    if config.jwt_jwks_url is not None:
        if jwks is not None:
            raise ConfigurationError(
                "both jwt_jwks (WSGATE_JWT_JWKS_FILE) and jwt_jwks_url (WSGATE_JWT_JWKS_URL) "
                "are set; choose the file or the URL."
            )
        jwks = RemoteJWKS(config.jwt_jwks_url, environment=config.environment)
    return JWTVerifier(
        algorithms=config.jwt_algorithms,
        secret=secret or None,
        secrets_file=config.jwt_secrets_file,
        public_key=config.jwt_public_key,
        jwks=jwks,
        audience=config.jwt_audience,
        issuer=config.jwt_issuer,
        leeway=config.jwt_leeway,
    )
