"""Discovery and health: what a client needs to connect, what an operator needs to check.

:func:`discovery_routes` returns Starlette routes, generated from the live gate (its config,
the endpoints it wraps and the layers it built), never from a list kept by hand:

* ``GET /ws/config``: the endpoints, how to send a token, the limits, the heartbeat and the
  close-code and error-frame tables. Public; cacheable (ETag); CORS for the gate's origins.
* ``GET /ws/secure/config``: the security settings, for operators. A bearer token by default
  (``secure_config_requires_auth``); never a secret, key, token or password. ETag and CORS.
* ``GET /ws/secure/health``: ``ok``, ``degraded`` or ``down`` (HTTP 200, 200, 503), the
  backend, the open connections, the uptime and a summary of the metrics.
* ``GET /metrics`` (``metrics_path``): Prometheus' text format, with the ``prometheus`` extra.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from wsgate._query import redact_query
from wsgate.auth.jwt import JWTVerifier
from wsgate.auth.remote import RemoteVerifier
from wsgate.auth.tokens import TokenExtractor
from wsgate.close_codes import (
    AUTH_REQUIRED,
    AUTH_UNAVAILABLE,
    INVALID_TOKEN,
    SERVER_DIFFERENCES,
    Refusal,
)
from wsgate.exceptions import AuthenticationError
from wsgate.gate import Gate, origin_check
from wsgate.metrics import PrometheusMetrics
from wsgate.middleware.auth import AuthMiddleware
from wsgate.middleware.connections import ConnectionLimitMiddleware
from wsgate.middleware.format import FormatMiddleware
from wsgate.middleware.heartbeat import PING_ID_PREFIX, HeartbeatMiddleware
from wsgate.middleware.ratelimit import RateLimitMiddleware
from wsgate.middleware.shedding import LoadSheddingMiddleware
from wsgate.middleware.size import MessageSizeMiddleware

__all__ = ["discovery_routes"]

logger = logging.getLogger("wsgate.discovery")

Layer = TypeVar("Layer")

_JSON = "application/json"
_PUBLIC_CACHE = "public, max-age=60"
_PRIVATE_CACHE = "private, no-cache"
_HEALTH_STATUS = {"ok": 200, "degraded": 200, "down": 503}


def discovery_routes(
    gate: Gate,
    *,
    config_path: str = "/ws/config",
    secure_config_path: str = "/ws/secure/config",
    health_path: str = "/ws/secure/health",
) -> list[BaseRoute]:
    """The discovery, health and metrics routes of ``gate``, for any Starlette app.

    Put them in the app's routes next to the gated endpoints; the documents are built from
    the gate when first asked for, so the order does not matter::

        app = Starlette(routes=[gate.route("/ws", Chat), *discovery_routes(gate)])

    The metrics route (``config.metrics_path``) is there when the gate counts in
    :class:`~wsgate.metrics.PrometheusMetrics` (the ``prometheus`` extra is installed).

    Args:
        gate: The gate whose endpoints and settings to publish.
        config_path: Where to serve the client configuration.
        secure_config_path: Where to serve the security configuration.
        health_path: Where to serve the health check.
    """
    discovery = _Discovery(gate)
    # Browsers read both configs cross-origin: the gate's own origins may.
    origins = discovery.origins
    cors = [
        Middleware(
            CORSMiddleware,
            allow_origins=["*"] if origins.allow_all else sorted(origins.allowed),
            allow_origin_regex="|".join(f"(?:{p.pattern})" for p in origins.patterns) or None,
            allow_methods=["GET"],
            allow_headers=["Authorization"],
            expose_headers=["ETag"],
        )
    ]
    # A client that sends the gate's query token to these routes too must not see it logged.
    query_param = gate.config.query_param
    redacted = [] if query_param is None else [Middleware(_RedactedQuery, name=query_param)]
    read = ["GET", "OPTIONS"]  # OPTIONS: the CORS preflight
    routes: list[BaseRoute] = [
        Route(config_path, discovery.config, methods=read, middleware=[*redacted, *cors]),
        Route(
            secure_config_path,
            discovery.secure_config,
            methods=read,
            middleware=[*redacted, *cors],
        ),
        Route(health_path, discovery.health, methods=["GET"], middleware=redacted),
    ]
    metrics_path = gate.config.metrics_path
    if metrics_path is not None and isinstance(gate.metrics, PrometheusMetrics):
        routes.append(Route(metrics_path, discovery.metrics, methods=["GET"], middleware=redacted))
    return routes


class _RedactedQuery:
    """Take the gate's query-string token out of the scope before the route answers."""

    def __init__(self, app: ASGIApp, *, name: str) -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        redact_query(scope, self.name)
        await self.app(scope, receive, send)


class _Discovery:
    """The handlers of one gate's routes, and the documents they serve."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        config = gate.config
        # The origin policy the gate enforces on its endpoints.
        self.origins = origin_check(config, _nothing)
        self.bearer = TokenExtractor(header=True, subprotocol_prefixes=(), query_param=None)
        self.public = _Document(gate, self._public_document, {"Cache-Control": _PUBLIC_CACHE})
        self.secure = _Document(
            gate,
            self._secure_document,
            {"Cache-Control": _PRIVATE_CACHE, "Vary": "Authorization"},
        )

    # Handlers

    async def config(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return _options()
        return self.public.response(request)

    async def secure_config(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return _options()
        refusal = await self._authenticate(request)
        if refusal is not None:
            return _unauthorized(refusal)
        return self.secure.response(request)

    async def health(self, request: Request) -> Response:
        gate = self.gate
        status = "ok"
        try:
            backend = await gate.backend_health()
        except Exception as exc:
            backend = {"kind": _storage_kind(gate), "status": "down", "error": type(exc).__name__}
        if backend.get("status") != "ok":
            status = "down" if gate.config.backend_policy == "fail_closed" else "degraded"
        auth = _auth_health(gate)
        if auth["status"] != "ok" and status == "ok":
            status = "degraded"
        summary = gate.stats()
        del summary["endpoints"]
        connections: int | None = summary["connections_active"]
        if gate.layers(ConnectionLimitMiddleware):
            # The registry counts every worker that shares it, not only this process.
            try:
                connections = await gate.registry.total()
            except Exception as exc:
                logger.warning("health: the connection registry failed (%s)", type(exc).__name__)
                connections = None
                status = "down" if status == "down" else "degraded"
        document = {
            "status": status,
            "uptime": summary.pop("uptime"),
            "connections": connections,
            "backend": backend,
            "auth": auth,
            "metrics": summary,
        }
        return JSONResponse(
            document, status_code=_HEALTH_STATUS[status], headers={"Cache-Control": "no-store"}
        )

    async def metrics(self, request: Request) -> Response:
        metrics = self.gate.metrics
        assert isinstance(metrics, PrometheusMetrics)  # the route exists only then
        # In multiprocess mode every scrape reads the workers' files: off the event loop.
        body, content_type = await run_in_threadpool(metrics.exposition)
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    async def _authenticate(self, request: Request) -> Refusal | None:
        """None when the request may read the security configuration, else why not."""
        if not self.gate.config.secure_config_requires_auth:
            return None
        handshake = self.bearer.extract(request.headers.raw, (), b"")
        verifier = self.gate.verifier
        if handshake.error is not None:
            return INVALID_TOKEN
        if handshake.token is None:
            return AUTH_REQUIRED
        if verifier is None:
            return INVALID_TOKEN  # development with only the bypass: no token can be checked
        try:
            await verifier.verify(handshake.token)
        except AuthenticationError as exc:
            return exc.refusal
        except Exception:
            logger.exception("verifier %r raised an undocumented exception", verifier)
            return AUTH_UNAVAILABLE
        return None

    # Documents

    def _public_document(self) -> dict[str, Any]:
        gate = self.gate
        return {
            "endpoints": [
                {
                    "path": endpoint.path,
                    "format": endpoint.protocol,
                    "accepts": _accepted_formats(endpoint.protocol, self._layer(FormatMiddleware)),
                    "subprotocols": _list(endpoint.subprotocols),
                    "auth_required": not endpoint.dev_bypass,
                }
                for endpoint in gate.endpoints
            ],
            "auth": self._token_sources(),
            "limits": self._limits(),
            "heartbeat": self._heartbeat(),
            "close_codes": [
                {
                    "code": row.close_code,
                    "reason": row.reason,
                    "http_status": row.http_status,
                    "handshake_only": row.handshake_only,
                    "description": row.description,
                }
                for row in gate.close_codes
            ],
            "errors": [
                {
                    "code": error.code,
                    "jsonrpc_code": error.jsonrpc_code,
                    "description": error.description,
                }
                for error in gate.error_frames
            ],
            "checks": self._checks(),
            # Where a server cannot send the close-code table as it stands (daphne).
            "server_differences": {
                server: {
                    **how,
                    "close_codes": {str(c): sent for c, sent in how["close_codes"].items()},
                }
                for server, how in SERVER_DIFFERENCES.items()
            },
        }

    def _secure_document(self) -> dict[str, Any]:
        gate = self.gate
        config = gate.config
        auth = self._layer(AuthMiddleware)
        origins = self.origins
        return {
            "environment": config.environment.value,
            "auth": {
                **_verifier_settings(gate),
                "sources": self._token_sources()["methods"],
                "reject_before_accept": auth.reject_before_accept if auth else None,
            },
            "origins": {
                "count": len(origins.allowed),
                "patterns": [pattern.pattern for pattern in origins.patterns],
                "allow_any": origins.allow_all,
                "allow_missing": origins.allow_missing_origin,
            },
            "limits": self._limits(),
            "heartbeat": self._heartbeat(),
            "dev_bypass": any(endpoint.dev_bypass for endpoint in gate.endpoints),
            "endpoints": [
                {"path": endpoint.path, "dev_bypass": endpoint.dev_bypass}
                for endpoint in gate.endpoints
            ],
            "storage": {
                "kind": _storage_kind(gate),
                "backend_policy": config.backend_policy,
                "registry_ttl": config.registry_ttl,
            },
            "metrics": {
                "kind": "prometheus" if isinstance(gate.metrics, PrometheusMetrics) else "memory",
                "path": config.metrics_path
                if isinstance(gate.metrics, PrometheusMetrics)
                else None,
            },
            "secure_config_requires_auth": config.secure_config_requires_auth,
            "checks": self._checks(),
        }

    def _checks(self) -> list[dict[str, Any]]:
        """The user's checks, in order: name, stage, and what each one describes."""
        return [
            {"name": check.name, "stage": check.stage, **(check.describe() or {})}
            for check in self.gate.checks
        ]

    def _token_sources(self) -> dict[str, Any]:
        auth = self._layer(AuthMiddleware)
        extractor = auth.extractor if auth is not None else None
        if extractor is None:
            return {"methods": [], "header": None, "subprotocol_prefixes": [], "query_param": None}
        methods = []
        if extractor.header:
            methods.append("header")
        if extractor.prefixes:
            methods.append("subprotocol")
        if extractor.query_param is not None:
            methods.append("query")
        heartbeat = self._layer(HeartbeatMiddleware)
        can_refresh = heartbeat is not None and heartbeat.verifier is not None
        return {
            "methods": methods,
            "header": "Authorization: Bearer <token>" if extractor.header else None,
            "subprotocol_prefixes": list(extractor.prefixes),
            "subprotocol_format": "<prefix><base64url(token) without padding>, offered next "
            "to an application subprotocol the endpoint supports",
            "query_param": extractor.query_param,
            "refresh": {
                "json": {"type": "auth", "token": "<token>"},
                "jsonrpc": {
                    "jsonrpc": "2.0",
                    "method": "auth/refresh",
                    "params": {"token": "<token>"},
                },
            }
            if can_refresh
            else None,
        }

    def _limits(self) -> dict[str, Any]:
        size = self._layer(MessageSizeMiddleware)
        rate = self._layer(RateLimitMiddleware)
        connections = self._layer(ConnectionLimitMiddleware)
        messages = self._layer(FormatMiddleware)
        shedding = self._layer(LoadSheddingMiddleware)
        return {
            "max_message_bytes": size.max_bytes if size else None,
            "message_size_policy": size.policy if size else None,
            "rate_limit": rate.rate if rate else None,
            "rate_limit_strategy": rate.strategy if rate else None,
            "rate_limit_close_after": rate.close_after if rate else None,
            # Each request of a JSON-RPC batch, notifications included, costs one message.
            "rate_limit_batch_cost": "one unit per request" if rate else None,
            "max_connections_per_user": connections.max_per_user if connections else None,
            "connection_policy": connections.policy if connections else None,
            # Load shedding, before any token is verified: each None when off.
            "connect_rate_per_ip": shedding.connect_rate_per_ip if shedding else None,
            "connect_rate_per_worker": shedding.connect_rate_per_worker if shedding else None,
            "max_connections_per_worker": (
                shedding.max_connections_per_worker if shedding else None
            ),
            "max_batch": messages.max_batch if messages else None,
            "max_depth": messages.max_depth if messages else None,
        }

    def _heartbeat(self) -> dict[str, Any]:
        heartbeat = self._layer(HeartbeatMiddleware)
        if heartbeat is None:
            return {
                "interval": None,
                "timeout": None,
                "idle_timeout": None,
                "max_lifetime": None,
                "ping_limit": None,
                "refresh_limit": None,
            }
        return {
            "interval": heartbeat.interval,
            "timeout": heartbeat.timeout,
            "idle_timeout": heartbeat.idle_timeout,
            "max_lifetime": heartbeat.max_lifetime,
            # Per connection: the client's own pings, and its in-band refreshes.
            "ping_limit": heartbeat.ping_limit.rate if heartbeat.ping_limit else None,
            "refresh_limit": heartbeat.refresh_limit.rate if heartbeat.refresh_limit else None,
            "ping": {
                "json": {"type": "ping"},
                "jsonrpc": {"jsonrpc": "2.0", "id": f"{PING_ID_PREFIX}<n>", "method": "ping"},
            },
            "answer": "any message",
        }

    def _layer(self, kind: type[Layer]) -> Layer | None:
        """The first layer of type ``kind`` the gate built: all of them share one config."""
        layers = self.gate.layers(kind)
        return layers[0] if layers else None


class _Document:
    """A JSON document and its ETag, built on first use and again when the gate wraps
    another endpoint."""

    def __init__(
        self, gate: Gate, build: Callable[[], dict[str, Any]], headers: dict[str, str]
    ) -> None:
        self.gate = gate
        self.build = build
        self.headers = headers
        self.built_for = -1
        self.body = b""
        self.etag = ""

    def response(self, request: Request) -> Response:
        endpoints = len(self.gate.endpoints)
        if self.built_for != endpoints:
            self.body = orjson.dumps(self.build())
            self.etag = f'"{hashlib.sha256(self.body).hexdigest()[:32]}"'
            self.built_for = endpoints
        headers = {"ETag": self.etag, **self.headers}
        if _etag_matches(request.headers.get("if-none-match"), self.etag):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=_JSON, headers=headers)


def _etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match, compared weakly (RFC 9110, 13.1.2)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _options() -> Response:
    return Response(status_code=204, headers={"Allow": "GET, HEAD, OPTIONS"})


def _unauthorized(refusal: Refusal) -> Response:
    status = refusal.http_status or 401
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="{refusal.reason}"'
    message = (
        "Send Authorization: Bearer <token> to read the security configuration."
        if refusal is AUTH_REQUIRED
        else refusal.description
    )
    return JSONResponse(
        {"error": refusal.reason, "message": message}, status_code=status, headers=headers
    )


def _accepted_formats(protocol: str | None, messages: FormatMiddleware | None) -> list[str] | None:
    if protocol is None:
        return None  # the gate passes messages through unchecked
    if protocol == "json" and messages is not None and messages.legacy:
        return ["json", "legacy"]
    return [protocol]


def _verifier_settings(gate: Gate) -> dict[str, Any]:
    """What checks tokens, and the claims it wants; never a key or a secret."""
    verifier = gate.verifier
    settings: dict[str, Any] = {
        "verifier": None,
        "algorithms": None,
        "required_claims": None,
        "audience": None,
        "issuer": None,
        "leeway": gate.config.jwt_leeway,
        "auth_service": None,
    }
    if isinstance(verifier, JWTVerifier):
        claims = ["sub"]
        if verifier.require_exp:
            claims.append("exp")
        if verifier.audience is not None:
            claims.append("aud")
        if verifier.issuer is not None:
            claims.append("iss")
        settings.update(
            verifier="jwt",
            algorithms=sorted(verifier.algorithms),
            required_claims=claims,
            audience=verifier.audience,
            issuer=verifier.issuer,
            leeway=verifier.leeway,
        )
    elif isinstance(verifier, RemoteVerifier):
        settings.update(
            verifier="remote", required_claims=["active", "sub"], auth_service=_origin(verifier.url)
        )
    elif verifier is not None:
        settings["verifier"] = type(verifier).__name__
    return settings


def _auth_health(gate: Gate) -> dict[str, Any]:
    verifier = gate.verifier
    if isinstance(verifier, RemoteVerifier):
        return {"kind": "remote", "status": "down" if verifier.circuit_open else "ok"}
    kind = "jwt" if isinstance(verifier, JWTVerifier) else "none" if verifier is None else "custom"
    return {"kind": kind, "status": "ok"}


def _storage_kind(gate: Gate) -> str:
    return gate.backend.kind


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no credentials, path or query."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def _list(items: tuple[str, ...] | None) -> list[str] | None:
    return None if items is None else list(items)


async def _nothing(scope: Scope, receive: Receive, send: Send) -> None:
    """The app of the origin policy object, which is only ever asked, never called."""
