"""GateConfig: every setting of a Gate in one typed, validated object."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from wsgate import _options
from wsgate._settings import Environment, parse_environment
from wsgate.auth.tokens import DEFAULT_SUBPROTOCOL_PREFIX
from wsgate.exceptions import ConfigurationError

ENV_PREFIX = "WSGATE_"

_SIZE_POLICIES = ("refuse", "close")
_RATE_STRATEGIES = ("moving-window", "fixed-window", "sliding-window-counter")
_CONNECTION_POLICIES = ("evict_oldest", "reject_new")
_STORAGE_SCHEMES = ("memory://", "redis://", "rediss://", "unix://")


@dataclass(frozen=True, kw_only=True)
class GateConfig:
    """The settings of a :class:`~wsgate.Gate`, checked once when created.

    Build it in code, or from ``WSGATE_*`` environment variables with :meth:`from_env`.
    Secrets, keys and the auth URL are kept out of ``repr``.
    """

    environment: Environment = Environment.PRODUCTION
    """``production`` (the default) or ``development``. Env: ``WSGATE_ENV``."""

    # Origin
    allowed_origins: tuple[str, ...] = ()
    """Exact origins allowed to connect. Env: ``WSGATE_ALLOWED_ORIGINS`` (comma-separated)."""
    allowed_origin_regex: str | None = None
    """A regex matched against the whole origin. Env: ``WSGATE_ALLOWED_ORIGIN_REGEX``."""
    allow_missing_origin: bool = False
    """Let in clients that send no Origin. Env: ``WSGATE_ALLOW_MISSING_ORIGIN``."""
    allow_any_origin: bool = False
    """Allow ``*`` in production. Env: ``WSGATE_ALLOW_ANY_ORIGIN``."""

    # Authentication
    jwt_secret: str | None = field(default=None, repr=False)
    """HMAC secret, at least 32 bytes. Env: ``WSGATE_JWT_SECRET``."""
    jwt_public_key: str | None = field(default=None, repr=False)
    """PEM public key text. Env: ``WSGATE_JWT_PUBLIC_KEY`` (a path to the PEM file)."""
    jwt_jwks: Mapping[str, Any] | None = field(default=None, repr=False)
    """A JWKS document. Env: ``WSGATE_JWT_JWKS_FILE`` (a path to the JSON file)."""
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    """Accepted ``alg`` values. Env: ``WSGATE_JWT_ALGORITHMS`` (comma-separated)."""
    jwt_audience: str | None = None
    """Required ``aud``. Env: ``WSGATE_JWT_AUDIENCE``."""
    jwt_issuer: str | None = None
    """Required ``iss``. Env: ``WSGATE_JWT_ISSUER``."""
    jwt_leeway: float = 10.0
    """Clock skew allowed on time claims, in seconds. Env: ``WSGATE_JWT_LEEWAY``."""
    auth_url: str | None = field(default=None, repr=False)  # may carry credentials
    """Introspection URL; when set, tokens are checked remotely. Env: ``WSGATE_AUTH_URL``."""
    dev_bypass: bool = False
    """Development only: no token logs in as ``dev_user``. Env: ``WSGATE_DEV_BYPASS``."""
    dev_user: str = "dev-user"
    """Subject of the bypass user. Env: ``WSGATE_DEV_USER``."""
    subprotocol_prefixes: tuple[str, ...] = (DEFAULT_SUBPROTOCOL_PREFIX,)
    """Token prefixes in Sec-WebSocket-Protocol. Env: ``WSGATE_SUBPROTOCOL_PREFIXES``."""
    query_param: str | None = None
    """Query parameter to read a token from; off by default. Env: ``WSGATE_QUERY_PARAM``."""
    reject_before_accept: bool = False
    """Refuse auth failures with HTTP statuses. Env: ``WSGATE_REJECT_BEFORE_ACCEPT``."""

    # Messages
    max_message_bytes: int = 8192
    """Largest message, in bytes (UTF-8 for text). Env: ``WSGATE_MAX_MESSAGE_BYTES``."""
    message_size_policy: Literal["refuse", "close"] = "refuse"
    """``refuse`` (error frame, stay open) or ``close`` (1009). Env:
    ``WSGATE_MESSAGE_SIZE_POLICY``."""
    rate_limit: str | None = "30/minute"
    """A ``limits`` rate string per user, or None (``off``). Env: ``WSGATE_RATE_LIMIT``."""
    rate_limit_strategy: Literal["moving-window", "fixed-window", "sliding-window-counter"] = (
        "moving-window"
    )
    """``moving-window``, ``fixed-window`` or ``sliding-window-counter``. Env:
    ``WSGATE_RATE_LIMIT_STRATEGY``."""
    rate_limit_close_after: int | None = None
    """Close 1008 after this many consecutive refusals; off by default. Env:
    ``WSGATE_RATE_LIMIT_CLOSE_AFTER``."""
    legacy_messages: bool = True
    """Accept legacy ``{"event", "data"}`` messages on JSON endpoints. Env:
    ``WSGATE_LEGACY_MESSAGES``."""
    max_batch: int = 50
    """Most requests in one JSON-RPC batch. Env: ``WSGATE_MAX_BATCH``."""
    max_depth: int = 64
    """Deepest nesting of arrays and objects in a message, from 1 to 128. Env:
    ``WSGATE_MAX_DEPTH``."""
    ping_limit: str | None = "30/minute"
    """Client pings a connection may send, as a ``limits`` rate, or None (``off``). Env:
    ``WSGATE_PING_LIMIT``."""
    refresh_limit: str | None = "6/minute"
    """In-band token refreshes a connection may send, as a ``limits`` rate, or None
    (``off``). Env: ``WSGATE_REFRESH_LIMIT``."""

    # Connections
    max_connections_per_user: int | None = 3
    """Open connections per user, or None (``off``). Env: ``WSGATE_MAX_CONNECTIONS_PER_USER``."""
    connection_policy: Literal["evict_oldest", "reject_new"] = "evict_oldest"
    """``evict_oldest`` or ``reject_new``. Env: ``WSGATE_CONNECTION_POLICY``."""
    heartbeat_interval: float | None = 45.0
    """Seconds of silence before the gate pings, or None (``off``). Env:
    ``WSGATE_HEARTBEAT_INTERVAL``."""
    heartbeat_timeout: float = 20.0
    """Seconds to wait for any message after a ping. Env: ``WSGATE_HEARTBEAT_TIMEOUT``."""
    idle_timeout: float | None = None
    """Close 4001 after this many seconds without a message; off by default. Env:
    ``WSGATE_IDLE_TIMEOUT``."""
    max_lifetime: float | None = None
    """Close 4002 after this many seconds; off by default. Env: ``WSGATE_MAX_LIFETIME``."""
    send_timeout: float | None = 10.0
    """Seconds a message may wait for a client that stopped reading before the connection
    is closed with 1013 ``slow_consumer``, or None (``off``) to wait forever. Env:
    ``WSGATE_SEND_TIMEOUT``."""

    # Shared state
    storage: str = field(default="memory://", repr=False)  # a Redis URL may carry a password
    """Where limits and the connection registry live: ``memory://`` (one process) or
    ``redis://host:port/db``. Env: ``WSGATE_STORAGE``."""
    backend_policy: Literal["fail_open", "fail_closed"] = "fail_open"
    """When the shared backend is down: ``fail_open`` falls back to per-process limits and
    logs loudly; ``fail_closed`` refuses new connections with 1013. Env:
    ``WSGATE_BACKEND_POLICY``."""
    registry_ttl: float = 30.0
    """Seconds a worker's registry entries outlive it if it dies; refreshed while it runs.
    Env: ``WSGATE_REGISTRY_TTL``."""

    # Discovery and metrics
    secure_config_requires_auth: bool = True
    """``/ws/secure/config`` wants a bearer token. Env:
    ``WSGATE_SECURE_CONFIG_REQUIRES_AUTH``."""
    metrics_path: str | None = "/metrics"
    """Where Prometheus metrics are served (``prometheus`` extra), or None (``off``). Env:
    ``WSGATE_METRICS_PATH``."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place once, here
        set_(self, "environment", parse_environment(self.environment))
        for name in ("allowed_origins", "jwt_algorithms", "subprotocol_prefixes"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigurationError(
                    f"{name} must be a list or tuple, not the string {value!r}; write ({value!r},)."
                )
            set_(self, name, tuple(value))
        set_(self, "jwt_leeway", _options.seconds("jwt_leeway", self.jwt_leeway))
        _options.count("max_message_bytes", self.max_message_bytes, unit="bytes")
        _options.count("max_batch", self.max_batch)
        _options.depth("max_depth", self.max_depth)
        for name in ("ping_limit", "refresh_limit"):
            if getattr(self, name) is not None:
                _options.rate(name, getattr(self, name))
        _options.seconds("heartbeat_timeout", self.heartbeat_timeout, positive=True)
        for name in ("rate_limit_close_after", "max_connections_per_user"):
            if getattr(self, name) is not None:
                _options.count(name, getattr(self, name))
        for name in ("heartbeat_interval", "idle_timeout", "max_lifetime", "send_timeout"):
            if getattr(self, name) is not None:
                _options.seconds(name, getattr(self, name), positive=True)
        _options.choice("message_size_policy", self.message_size_policy, _SIZE_POLICIES)
        _options.choice("rate_limit_strategy", self.rate_limit_strategy, _RATE_STRATEGIES)
        _options.choice("connection_policy", self.connection_policy, _CONNECTION_POLICIES)
        _options.choice("backend_policy", self.backend_policy, ("fail_open", "fail_closed"))
        _options.seconds("registry_ttl", self.registry_ttl, positive=True)
        if self.rate_limit is not None:
            _options.rate("rate_limit", self.rate_limit)
        if not self.storage.startswith(_STORAGE_SCHEMES):
            raise ConfigurationError(
                f"storage must be 'memory://' or a redis:// / rediss:// URL, not "
                f"{_options.redacted_url(self.storage)!r}."
            )
        if self.dev_bypass and self.environment is Environment.PRODUCTION:
            raise ConfigurationError(
                "dev_bypass is on in a production config (WSGATE_DEV_BYPASS with WSGATE_ENV "
                "unset or 'production'). The bypass lets anyone in without a token: turn it "
                "off, or set WSGATE_ENV=development on a development machine."
            )

    @property
    def is_development(self) -> bool:
        return self.environment is Environment.DEVELOPMENT

    @property
    def server_max_size(self) -> int:
        """The cap to give the server (uvicorn ``--ws-max-size``), in bytes.

        The gate sees a message only after the server has buffered all of it; with this cap
        the protocol layer cuts a huge message off with close 1009 first. Four times
        ``max_message_bytes`` leaves room for frames the gate refuses with an error frame.
        """
        return 4 * self.max_message_bytes

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> GateConfig:
        """Read ``WSGATE_*`` variables; ``overrides`` win over the environment.

        Raises ConfigurationError naming the variable when a value cannot be parsed.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            name = item.name
            variable, parse = _ENV_READERS.get(name, (ENV_PREFIX + name.upper(), None))
            raw = env.get(variable)
            if raw is None or raw.strip() == "":
                continue
            if raw.strip().lower() in _OFF and "None" in str(item.type):
                values[name] = None
                continue
            parser = parse or _parser_for(item.type)
            try:
                values[name] = parser(raw.strip())
            except (ValueError, OSError) as exc:
                raise ConfigurationError(f"{variable}={raw!r} cannot be used: {exc}") from None
        values.update(overrides)
        return cls(**values)


_OFF = frozenset({"off", "none"})
"""What turns an optional setting off in the environment, e.g. ``WSGATE_RATE_LIMIT=off``."""


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected one of true/false, 1/0, yes/no, on/off")


def _list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _read_text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _read_json(path: str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _parser_for(annotation: object) -> Callable[[str], Any]:
    text = str(annotation)
    if text.startswith("bool"):
        return _bool
    if text.startswith("float"):
        return float
    if text.startswith("int"):
        return int
    if text.startswith("tuple"):
        return _list
    return str


_ENV_READERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "environment": ("WSGATE_ENV", str),
    "jwt_public_key": ("WSGATE_JWT_PUBLIC_KEY", _read_text),
    "jwt_jwks": ("WSGATE_JWT_JWKS_FILE", _read_json),
}
