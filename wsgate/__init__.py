"""wsgate: a production-grade gate in front of WebSocket endpoints in any ASGI app."""

from wsgate.__about__ import __version__
from wsgate._settings import Environment
from wsgate.auth.base import GateUser, Identity, Verifier
from wsgate.auth.jwt import JWTVerifier
from wsgate.auth.remote import RemoteVerifier
from wsgate.auth.tokens import DEFAULT_SUBPROTOCOL_PREFIX, encode_subprotocol
from wsgate.config import GateConfig
from wsgate.exceptions import (
    AuthenticationError,
    AuthUnavailable,
    ConfigurationError,
    InvalidToken,
    TokenExpired,
    WSGateError,
)
from wsgate.gate import Gate
from wsgate.middleware.auth import AuthMiddleware
from wsgate.middleware.origin import OriginMiddleware
from wsgate.refusals import CLOSE_CODES, Refusal

__all__ = [
    "CLOSE_CODES",
    "DEFAULT_SUBPROTOCOL_PREFIX",
    "AuthMiddleware",
    "AuthUnavailable",
    "AuthenticationError",
    "ConfigurationError",
    "Environment",
    "Gate",
    "GateConfig",
    "GateUser",
    "Identity",
    "InvalidToken",
    "JWTVerifier",
    "OriginMiddleware",
    "Refusal",
    "RemoteVerifier",
    "TokenExpired",
    "Verifier",
    "WSGateError",
    "__version__",
    "encode_subprotocol",
]
