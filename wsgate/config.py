"""GateConfig: every setting of a Gate in one typed, validated object."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from wsgate import _options
from wsgate._choices import (
    BACKEND_POLICIES,
    CONNECTION_POLICIES,
    RATE_STRATEGIES,
    SIZE_POLICIES,
    BackendPolicy,
    ConnectionPolicy,
    RateStrategy,
    SizePolicy,
)
from wsgate._settings import Environment, parse_environment
from wsgate.auth.tokens import DEFAULT_SUBPROTOCOL_PREFIX
from wsgate.backends import backend_kind
from wsgate.exceptions import ConfigurationError

if TYPE_CHECKING:
    from typing_extensions import Unpack

ENV_PREFIX = "WSGATE_"


@dataclass(frozen=True, kw_only=True)
class GateConfig:
    """The settings of a :class:`~wsgate.Gate`, checked once when created.

    Build it in code, or from ``WSGATE_*`` environment variables with :meth:`from_env`.
    Secrets, keys and the auth URL are kept out of ``repr``. List settings take any sequence
    of strings and are kept as tuples.
    """

    environment: Environment = Environment.PRODUCTION
    """``production`` (the default) or ``development``. Env: ``WSGATE_ENV``."""

    # Origin
    allowed_origins: Sequence[str] = ()
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
    jwt_secrets: Sequence[str] = field(default=(), repr=False)
    """Several HMAC secrets, the newest first, each at least 32 bytes: a token signed with any
    of them verifies. Instead of ``jwt_secret``, to rotate a secret. Env:
    ``WSGATE_JWT_SECRETS`` (comma-separated)."""
    jwt_secrets_file: Path | None = None
    """A file of HMAC secrets, one per line, the newest first (blank lines and ``#`` lines
    do not count), each at least 32 bytes. Read at start-up, and again when it changes, so that
    a secret rotates with no restart. Instead of ``jwt_secret`` and ``jwt_secrets``. Env:
    ``WSGATE_JWT_SECRETS_FILE`` (the path)."""
    jwt_public_key: str | None = field(default=None, repr=False)
    """PEM public key text. Env: ``WSGATE_JWT_PUBLIC_KEY`` (a path to the PEM file)."""
    jwt_jwks: Mapping[str, Any] | None = field(default=None, repr=False)
    """A JWKS document. Env: ``WSGATE_JWT_JWKS_FILE`` (a path to the JSON file)."""
    jwt_jwks_url: str | None = field(default=None, repr=False)
    """The identity provider's JWKS URL; keys are fetched, cached and refetched as they
    rotate (``remote`` extra). ``https://`` in production, except on a loopback address.
    Env: ``WSGATE_JWT_JWKS_URL``."""
    jwt_algorithms: Sequence[str] = ("HS256",)
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
    subprotocol_prefixes: Sequence[str] = (DEFAULT_SUBPROTOCOL_PREFIX,)
    """Token prefixes in Sec-WebSocket-Protocol. Env: ``WSGATE_SUBPROTOCOL_PREFIXES``."""
    query_param: str | None = None
    """Query parameter to read a token from; off by default. Env: ``WSGATE_QUERY_PARAM``."""
    reject_before_accept: bool = False
    """Refuse auth failures with HTTP statuses. Env: ``WSGATE_REJECT_BEFORE_ACCEPT``."""

    # Messages
    max_message_bytes: int = 8192
    """Largest message, in bytes (UTF-8 for text). Env: ``WSGATE_MAX_MESSAGE_BYTES``."""
    message_size_policy: SizePolicy = "refuse"
    """``refuse`` (error frame, stay open) or ``close`` (1009). Env:
    ``WSGATE_MESSAGE_SIZE_POLICY``."""
    rate_limit: str | None = "30/minute"
    """A ``limits`` rate string per user, or None (``off``). Env: ``WSGATE_RATE_LIMIT``."""
    rate_limit_strategy: RateStrategy = "moving-window"
    """``moving-window``, ``fixed-window`` or ``sliding-window-counter``. Env:
    ``WSGATE_RATE_LIMIT_STRATEGY``."""
    rate_limit_close_after: int | None = None
    """Close 1008 after this many consecutive refusals; off by default. Env:
    ``WSGATE_RATE_LIMIT_CLOSE_AFTER``."""
    rate_limit_lease: int = 16
    """On a shared storage, the most messages a worker counts in one round trip for a user
    who sends fast (never more than a tenth of the rate); 1 counts each message on its own.
    Env: ``WSGATE_RATE_LIMIT_LEASE``."""
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
    connection_policy: ConnectionPolicy = "evict_oldest"
    """``evict_oldest`` or ``reject_new``. Env: ``WSGATE_CONNECTION_POLICY``."""

    # Shedding connect storms, before any token is verified
    connect_rate_per_ip: str | None = None
    """Handshakes per client address, as a ``limits`` rate (``"20/second"``), counted in
    ``storage``, or None (the default: off). Env: ``WSGATE_CONNECT_RATE_PER_IP``."""
    connect_rate_per_worker: str | None = None
    """Handshakes per worker process, as a ``limits`` rate (``"500/second"``), or None (the
    default: off). Env: ``WSGATE_CONNECT_RATE_PER_WORKER``."""
    max_connections_per_worker: int | None = None
    """Open connections per worker process, or None (the default: off). Env:
    ``WSGATE_MAX_CONNECTIONS_PER_WORKER``."""
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
    backend_policy: BackendPolicy = "fail_open"
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
        for name in ("allowed_origins", "jwt_secrets", "jwt_algorithms", "subprotocol_prefixes"):
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
        for name in (
            "ping_limit",
            "refresh_limit",
            "connect_rate_per_ip",
            "connect_rate_per_worker",
        ):
            if getattr(self, name) is not None:
                _options.rate(name, getattr(self, name))
        _options.seconds("heartbeat_timeout", self.heartbeat_timeout, positive=True)
        _options.count("rate_limit_lease", self.rate_limit_lease)
        for name in (
            "rate_limit_close_after",
            "max_connections_per_user",
            "max_connections_per_worker",
        ):
            if getattr(self, name) is not None:
                _options.count(name, getattr(self, name))
        for name in ("heartbeat_interval", "idle_timeout", "max_lifetime", "send_timeout"):
            if getattr(self, name) is not None:
                _options.seconds(name, getattr(self, name), positive=True)
        _options.choice("message_size_policy", self.message_size_policy, SIZE_POLICIES)
        _options.choice("rate_limit_strategy", self.rate_limit_strategy, RATE_STRATEGIES)
        _options.choice("connection_policy", self.connection_policy, CONNECTION_POLICIES)
        _options.choice("backend_policy", self.backend_policy, BACKEND_POLICIES)
        _options.seconds("registry_ttl", self.registry_ttl, positive=True)
        if self.rate_limit is not None:
            _options.rate("rate_limit", self.rate_limit)
        backend_kind(self.storage)  # a URI the backend factory takes, or a clear error
        if self.jwt_secret is not None and self.jwt_secrets:
            raise ConfigurationError(
                "both jwt_secret (WSGATE_JWT_SECRET) and jwt_secrets (WSGATE_JWT_SECRETS) are "
                "set; put every secret in jwt_secrets, the newest first, and unset jwt_secret."
            )
        if isinstance(self.jwt_secrets_file, str):
            set_(self, "jwt_secrets_file", Path(self.jwt_secrets_file))
        if self.jwt_secrets_file is not None:
            for name, given in [
                ("jwt_secret", self.jwt_secret is not None),
                ("jwt_secrets", bool(self.jwt_secrets)),
            ]:
                if given:
                    raise ConfigurationError(
                        f"both {name} ({_variable(name)}) and jwt_secrets_file "
                        "(WSGATE_JWT_SECRETS_FILE) are set; put every secret in the file, one "
                        f"per line, the newest first, and unset {name}."
                    )
        for name in ("jwt_audience", "jwt_issuer"):
            if getattr(self, name) == "":
                raise ConfigurationError(
                    f"{name} is the empty string, which no token carries, so every token would "
                    f"be refused; give the value tokens carry, or None to skip the check."
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
    def variables(cls) -> dict[str, str]:
        """Every ``WSGATE_*`` variable :meth:`from_env` reads, with the field it sets."""
        return {_variable(item.name): item.name for item in fields(cls)}

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        extra_variables: Iterable[str] = (),
        **overrides: Unpack[GateSettings],
    ) -> GateConfig:
        """Read ``WSGATE_*`` variables; ``overrides`` win over the environment.

        Args:
            environ: The variables to read; ``os.environ`` by default.
            extra_variables: ``WSGATE_*`` names your own code reads, which are not wsgate
                settings, e.g. ``["WSGATE_DATABASE_URL"]``. A name ending in ``*`` allows
                every variable it starts, e.g. ``"WSGATE_MYAPP_*"``.
            overrides: Fields of the config, which replace what the environment says.

        Raises ConfigurationError at the first mistake: a ``WSGATE_*`` variable that is not a
        setting (naming the nearest one), a value that cannot be parsed (naming the
        variable), or settings that would refuse every handshake.
        """
        env = os.environ if environ is None else environ
        _check_names(env, cls.variables(), extra_variables)
        values: dict[str, Any] = {}
        for item in fields(cls):
            name = item.name
            variable = _variable(name)
            raw = env.get(variable)
            if raw is None or raw.strip() == "":
                continue
            if raw.strip().lower() in _OFF and "None" in str(item.type):
                values[name] = None
                continue
            parser = _ENV_PARSERS.get(name) or _parser_for(item.type)
            try:
                values[name] = parser(raw.strip())
            except (ValueError, OSError) as exc:
                raise ConfigurationError(f"{variable}={raw!r} cannot be used: {exc}") from None
        values.update(overrides)
        config = cls(**values)
        _check_someone_may_connect(config)
        return config


class GateSettings(TypedDict, total=False):
    """The fields of :class:`GateConfig`, as keyword arguments of :meth:`GateConfig.from_env`
    (and :meth:`Gate.from_env <wsgate.Gate.from_env>`), so that type checkers check them."""

    environment: Environment
    allowed_origins: Sequence[str]
    allowed_origin_regex: str | None
    allow_missing_origin: bool
    allow_any_origin: bool
    jwt_secret: str | None
    jwt_secrets: Sequence[str]
    jwt_secrets_file: Path | None
    jwt_public_key: str | None
    jwt_jwks: Mapping[str, Any] | None
    jwt_jwks_url: str | None
    jwt_algorithms: Sequence[str]
    jwt_audience: str | None
    jwt_issuer: str | None
    jwt_leeway: float
    auth_url: str | None
    dev_bypass: bool
    dev_user: str
    subprotocol_prefixes: Sequence[str]
    query_param: str | None
    reject_before_accept: bool
    max_message_bytes: int
    message_size_policy: SizePolicy
    rate_limit: str | None
    rate_limit_strategy: RateStrategy
    rate_limit_close_after: int | None
    rate_limit_lease: int
    legacy_messages: bool
    max_batch: int
    max_depth: int
    ping_limit: str | None
    refresh_limit: str | None
    max_connections_per_user: int | None
    connection_policy: ConnectionPolicy
    connect_rate_per_ip: str | None
    connect_rate_per_worker: str | None
    max_connections_per_worker: int | None
    heartbeat_interval: float | None
    heartbeat_timeout: float
    idle_timeout: float | None
    max_lifetime: float | None
    send_timeout: float | None
    storage: str
    backend_policy: BackendPolicy
    registry_ttl: float
    secure_config_requires_auth: bool
    metrics_path: str | None


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
    if text.startswith(("tuple", "Sequence")):
        return _list
    return str


_ENV_NAMES = {
    "environment": "WSGATE_ENV",
    "jwt_jwks": "WSGATE_JWT_JWKS_FILE",
}
"""The variables whose name is not ``WSGATE_`` and the field's name in capitals."""

_ENV_PARSERS: dict[str, Callable[[str], Any]] = {
    "environment": str,
    "jwt_public_key": _read_text,
    "jwt_jwks": _read_json,
    "jwt_secrets_file": Path,
}
"""The variables that hold something else than the field's value: a path to read."""


def _variable(name: str) -> str:
    return _ENV_NAMES.get(name, ENV_PREFIX + name.upper())


# What Kubernetes puts in the environment of every pod for a Service named "wsgate" (or
# "wsgate-..."): WSGATE_SERVICE_HOST, WSGATE_SERVICE_PORT[_NAME], WSGATE_PORT and
# WSGATE_PORT_8000_TCP[_PROTO|_PORT|_ADDR]. They are not settings, and not mistakes either.
_SERVICE_LINK = re.compile(
    r"WSGATE_(?:[A-Z0-9_]+_)?(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT(?:_[0-9]+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)?)"
)


def _check_names(
    env: Mapping[str, str], known: Mapping[str, str], extra_variables: Iterable[str]
) -> None:
    """Refuse ``WSGATE_*`` variables that are not settings: a typo must not go unnoticed."""
    if isinstance(extra_variables, str):
        raise ConfigurationError(
            f"extra_variables must be a list of names, not the string {extra_variables!r}; "
            f"write [{extra_variables!r}]."
        )
    extra = tuple(extra_variables)
    for allowed in extra:
        if not isinstance(allowed, str) or not allowed.startswith(ENV_PREFIX):
            raise ConfigurationError(
                f"extra_variables lists {allowed!r}; only names that start with {ENV_PREFIX} "
                f"are checked, so list those, such as 'WSGATE_DATABASE_URL' or 'WSGATE_MYAPP_*'."
            )
        if allowed in known:
            raise ConfigurationError(
                f"extra_variables lists {allowed}, which is a wsgate setting "
                f"({known[allowed]}); remove it from extra_variables."
            )
    exact = {name for name in extra if not name.endswith("*")}
    prefixes = tuple(name[:-1] for name in extra if name.endswith("*"))
    unknown = sorted(
        name
        for name in env
        if name.upper().startswith(ENV_PREFIX)
        and name not in known
        and name not in exact
        and not name.startswith(prefixes)
        and not _SERVICE_LINK.fullmatch(name)
    )
    if unknown:
        # Compared without the prefix, which every name shares and would make all look alike,
        # and with the field names too: WSGATE_ENVIRONMENT means WSGATE_ENV.
        candidates = {name.upper(): variable for variable, name in known.items()}
        candidates.update({variable[len(ENV_PREFIX) :]: variable for variable in known})
        problems = " ".join(_unknown(name, candidates) for name in unknown)
        raise ConfigurationError(
            f"{problems} Fix the name, or, if your own code reads it, allow it with "
            "GateConfig.from_env(extra_variables=[...]). The settings are listed in "
            "docs/configuration.md."
        )


def _unknown(name: str, candidates: Mapping[str, str]) -> str:
    suffix = name[len(ENV_PREFIX) :].upper()
    nearest = difflib.get_close_matches(suffix, candidates, n=1, cutoff=0.7)
    if nearest:
        return f"{name} is not a wsgate setting; did you mean {candidates[nearest[0]]}?"
    return f"{name} is not a wsgate setting."


def _check_someone_may_connect(config: GateConfig) -> None:
    """Refuse origin settings that let no client at all through the handshake."""
    if config.allowed_origins or config.allowed_origin_regex or config.allow_missing_origin:
        return
    raise ConfigurationError(
        "no client may connect: with WSGATE_ALLOWED_ORIGINS and WSGATE_ALLOWED_ORIGIN_REGEX "
        "unset, every browser is refused, and with WSGATE_ALLOW_MISSING_ORIGIN off, so is "
        "every client that sends no Origin. Set WSGATE_ALLOWED_ORIGINS to the origins of your "
        "pages (such as https://app.example.com), or WSGATE_ALLOW_MISSING_ORIGIN=true for "
        "clients that are not browsers."
    )
