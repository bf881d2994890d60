"""wsgate: a production-grade gate in front of WebSocket endpoints in any ASGI app."""

from wsgate.__about__ import __version__
from wsgate._settings import Environment
from wsgate.auth.base import GateUser, Identity, Verifier, gate_user
from wsgate.auth.jwks import RemoteJWKS
from wsgate.auth.jwt import JWTVerifier
from wsgate.auth.remote import RemoteVerifier
from wsgate.auth.tokens import DEFAULT_SUBPROTOCOL_PREFIX, encode_subprotocol
from wsgate.backends import BackendUnavailable
from wsgate.browser import js_route
from wsgate.close_codes import CLOSE_CODES, Refusal
from wsgate.config import GateConfig
from wsgate.connection import Connection, decoded, gate_connection
from wsgate.discovery import discovery_routes
from wsgate.endpoint import GatedEndpoint, rpc_method
from wsgate.engine import DROP, Check, Engine, Stage, Verdict
from wsgate.error_frames import MESSAGE_ERRORS, MessageError
from wsgate.exceptions import (
    AuthenticationError,
    AuthUnavailable,
    ConfigurationError,
    ErrorReply,
    InvalidParams,
    InvalidToken,
    NoGateUser,
    TokenExpired,
    WSGateError,
)
from wsgate.gate import Endpoint, Gate
from wsgate.metrics import Metrics, MetricsMiddleware, PrometheusMetrics
from wsgate.middleware.auth import AuthMiddleware
from wsgate.middleware.connections import ConnectionLimitMiddleware
from wsgate.middleware.format import FormatMiddleware
from wsgate.middleware.heartbeat import HeartbeatMiddleware
from wsgate.middleware.origin import OriginMiddleware
from wsgate.middleware.ratelimit import RateLimitMiddleware
from wsgate.middleware.revocation import RevocationMiddleware
from wsgate.middleware.shedding import LoadSheddingMiddleware
from wsgate.middleware.size import MessageSizeMiddleware
from wsgate.registry import MemoryRegistry, Registry
from wsgate.revocation import Revoked, revoke

__all__ = [
    "CLOSE_CODES",
    "DEFAULT_SUBPROTOCOL_PREFIX",
    "DROP",
    "MESSAGE_ERRORS",
    "AuthMiddleware",
    "AuthUnavailable",
    "AuthenticationError",
    "BackendUnavailable",
    "Check",
    "ConfigurationError",
    "Connection",
    "ConnectionLimitMiddleware",
    "Endpoint",
    "Engine",
    "Environment",
    "ErrorReply",
    "FormatMiddleware",
    "Gate",
    "GateConfig",
    "GateUser",
    "GatedEndpoint",
    "HeartbeatMiddleware",
    "Identity",
    "InvalidParams",
    "InvalidToken",
    "JWTVerifier",
    "LoadSheddingMiddleware",
    "MemoryRegistry",
    "MessageError",
    "MessageSizeMiddleware",
    "Metrics",
    "MetricsMiddleware",
    "NoGateUser",
    "OriginMiddleware",
    "PrometheusMetrics",
    "RateLimitMiddleware",
    "Refusal",
    "Registry",
    "RemoteJWKS",
    "RemoteVerifier",
    "RevocationMiddleware",
    "Revoked",
    "Stage",
    "TokenExpired",
    "Verdict",
    "Verifier",
    "WSGateError",
    "__version__",
    "decoded",
    "discovery_routes",
    "encode_subprotocol",
    "gate_connection",
    "gate_user",
    "js_route",
    "revoke",
    "rpc_method",
]
