"""backend_from_uri: the one place that reads a storage URI and chooses a backend."""

from __future__ import annotations

from typing import Final, Literal

from wsgate import _options
from wsgate.backends.base import BACKEND_POLICIES, Backend, BackendPolicy
from wsgate.backends.memory import MemoryBackend
from wsgate.exceptions import ConfigurationError

__all__ = ["SCHEMES", "backend_from_uri", "backend_kind", "invalid_storage", "split_scheme"]

SCHEMES: Final[tuple[str, ...]] = (
    "memory://",
    "redis://",
    "rediss://",
    "unix://",
    "redis+cluster://",
    "rediss+cluster://",
    "redis+sentinel://",
    "rediss+sentinel://",
)
"""The storage URIs a backend is built from: memory, Redis, Redis over TLS, Redis on a Unix
socket, a Redis Cluster, and the primary that Redis Sentinel names (the last two also over
TLS). Each may also be spelled the ``limits`` way, with ``async+`` in front."""

_KINDS: Final[dict[str, Literal["memory", "redis"]]] = {
    scheme.removesuffix("://"): "memory" if scheme == "memory://" else "redis" for scheme in SCHEMES
}


def split_scheme(uri: str) -> tuple[str, str]:
    """``uri``'s scheme, in lower case and without ``async+``, and the rest from its colon
    on: ``("redis", "://host:6379/0")`` for ``async+REDIS://host:6379/0``."""
    scheme, colon, rest = uri.partition(":")
    return scheme.lower().removeprefix("async+"), colon + rest


def invalid_storage(uri: object) -> ConfigurationError:
    """The error for a storage URI that names no backend; a password in it is redacted."""
    shown = _options.redacted_url(uri) if isinstance(uri, str) else uri
    return ConfigurationError(
        "storage must be 'memory://' or a Redis URL such as 'redis://localhost:6379/0', "
        "'rediss://...', 'unix:///path/redis.sock', 'redis+cluster://host:port,host:port' or "
        f"'redis+sentinel://host:port,host:port/service', not {shown!r}."
    )


def backend_kind(uri: object) -> Literal["memory", "redis"]:
    """``"memory"`` or ``"redis"``: the kind of backend the storage ``uri`` names.

    Raises:
        ConfigurationError: for anything but one of :data:`SCHEMES`.
    """
    if isinstance(uri, str):
        scheme, rest = split_scheme(uri)
        kind = _KINDS.get(scheme)
        if kind is not None and rest.startswith("://"):
            return kind
    raise invalid_storage(uri)


def backend_from_uri(
    uri: str,
    *,
    registry_ttl: float = 30.0,
    backend_policy: BackendPolicy = "fail_open",
) -> Backend:
    """The backend that the storage ``uri`` names, as ``GateConfig.storage`` gives it.

    Args:
        uri: ``memory://``, ``redis://host:6379/0``, ``rediss://...`` (TLS),
            ``unix:///path/redis.sock``, ``redis+cluster://host:port[,host:port...]`` (a
            Redis Cluster) or ``redis+sentinel://host:port[,host:port...]/service`` (the
            primary that Sentinel names; both also as ``rediss+...``), each also with
            ``async+`` in front. A password goes before the hosts
            (``redis+cluster://:secret@host:port,...``). Redis needs the ``redis`` extra
            (``pip install 'wsgate[redis]'``); no connection is made until the backend is
            first used.
        registry_ttl: How long a dead worker's registry entries keep counting, at most, in
            seconds (Redis only).
        backend_policy: ``"fail_open"`` or ``"fail_closed"``: what the gate does while Redis
            cannot be reached (Redis only).

    Raises:
        ConfigurationError: for an unknown scheme, a bad option, or a missing Redis client.
    """
    kind = backend_kind(uri)
    registry_ttl = _options.seconds("registry_ttl", registry_ttl, positive=True)
    _options.choice("backend_policy", backend_policy, BACKEND_POLICIES)
    if kind == "memory":
        return MemoryBackend()
    # Imported here: wsgate.backends must import without the redis extra.
    from wsgate.backends.redis import RedisBackend

    scheme, rest = split_scheme(uri)
    return RedisBackend(scheme + rest, registry_ttl=registry_ttl, backend_policy=backend_policy)
