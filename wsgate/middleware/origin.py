"""OriginMiddleware: an Origin allow-list for WebSocket handshakes.

Starlette's CORSMiddleware passes websocket scopes straight through, and browsers do not apply
the same-origin policy to WebSockets, so any page can open a socket to your server carrying the
user's cookies (cross-site WebSocket hijacking). This middleware refuses handshakes whose
``Origin`` is not on the allow-list, before the app runs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from wsgate import close_codes
from wsgate._settings import Environment, parse_environment
from wsgate.engine import CheckMiddleware
from wsgate.exceptions import ConfigurationError

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SCHEMES = frozenset(_DEFAULT_PORTS)
# What a browser serialises as a host: dot-separated DNS labels (or an IPv4 address).
_HOSTNAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")


class OriginMiddleware(CheckMiddleware):
    """Refuse WebSocket handshakes whose ``Origin`` is not allowed (HTTP 403).

    Origins are compared after normalisation: scheme and host are case-insensitive, and a
    default port (80 for http, 443 for https) may be written or left out. Anything else must
    match exactly, so ``https://example.com.evil.io``, ``http://example.com`` (for an https
    entry) and ``https://example.com:8443`` are all refused.

    Args:
        app: The ASGI app to protect.
        allow_origins: Exact origins, e.g. ``["https://app.example.com"]``. The literal
            ``"null"`` allows the opaque origin sent by sandboxed frames and ``file:`` pages.
            ``"*"`` allows every origin, outside production only (see ``allow_any_origin``).
        allow_origin_regex: One or more regular expressions matched against the whole
            normalised origin (``re.fullmatch``), e.g. ``r"https://[a-z0-9-]+\\.example\\.com"``.
        allow_missing_origin: Let in handshakes without an ``Origin`` header. Browsers always
            send one; command-line and server-side clients usually do not.
        allow_any_origin: Allow ``"*"`` in production too. Only for public endpoints that
            rely on tokens in headers, never on cookies.
        environment: ``"production"`` (the default) or ``"development"``.
    """

    close_codes = (close_codes.ORIGIN_NOT_ALLOWED,)

    def __init__(
        self,
        app: ASGIApp,
        *,
        allow_origins: Sequence[str] = (),
        allow_origin_regex: str | Sequence[str] | None = None,
        allow_missing_origin: bool = False,
        allow_any_origin: bool = False,
        environment: Environment | str = Environment.PRODUCTION,
    ) -> None:
        environment = parse_environment(environment)
        if isinstance(allow_origins, str):
            raise ConfigurationError(
                f"allow_origins must be a list of origins, not the string {allow_origins!r}; "
                f"write [{allow_origins!r}]."
            )
        self.allow_all = "*" in allow_origins
        if self.allow_all and environment is Environment.PRODUCTION and not allow_any_origin:
            raise ConfigurationError(
                "allow_origins=['*'] lets any web page open a socket with your users' "
                "cookies, so it is refused in production. List the origins, or pass "
                "allow_any_origin=True if the endpoint authenticates by header token only."
            )
        self.allowed = frozenset(
            _normalise_configured(origin) for origin in allow_origins if origin != "*"
        )
        if isinstance(allow_origin_regex, str):
            allow_origin_regex = [allow_origin_regex]
        self.patterns = tuple(_compile(pattern) for pattern in allow_origin_regex or ())
        self.allow_missing_origin = allow_missing_origin
        self._alone(app)

    async def _screen(
        self, scope: Scope, receive: Receive, send: Send, query: bytes
    ) -> Send | None:
        headers = scope["headers"]
        if self.is_allowed(headers):
            return send
        await close_codes.refuse(
            scope, receive, send, close_codes.ORIGIN_NOT_ALLOWED, detail=_refused_origin(headers)
        )
        return None

    async def check(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Whether a websocket handshake may go on; when it may not, it has been refused
        with 403 ``origin_not_allowed``."""
        return await self._screen(scope, receive, send, b"") is not None

    def is_allowed(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """Whether a handshake with these raw headers may proceed."""
        if self.allow_all:
            return True
        values = [value for name, value in headers if name == b"origin"]
        if not values:
            return self.allow_missing_origin
        if len(values) > 1:
            return False  # two Origin headers: no browser sends that
        origin = normalise_origin(values[0])
        if origin is None:
            return False
        if origin in self.allowed:
            return True
        return any(pattern.fullmatch(origin) for pattern in self.patterns)


def _refused_origin(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """Which Origin was refused, for the log line (escaped there: the client wrote it)."""
    values = [value for name, value in headers if name == b"origin"]
    if not values:
        return "no Origin header"
    if len(values) > 1:
        return f"{len(values)} Origin headers"
    return f"Origin {values[0].decode('latin-1')}"


def normalise_origin(raw: bytes) -> str | None:
    """The canonical form of an Origin header value, or None if it is not a valid origin.

    ``"null"`` stays ``"null"``. A valid origin is ``scheme://host[:port]`` and nothing more:
    no path, query, fragment or user info. Hosts are lowercased and default ports dropped.
    """
    if len(raw) > _REMEMBERED_BYTES:
        return _normalised(raw)
    return _remembered(raw)


_REMEMBERED_BYTES: Final = 256
"""The longest Origin value whose answer is remembered: real ones are far shorter, and a
client sending long ones must not fill the memory."""


def _normalised(raw: bytes) -> str | None:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None  # browsers send Unicode hosts punycode-encoded
    if text == "null":
        return text
    if not text.isprintable() or text != text.strip():
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if (
        scheme not in _SCHEMES
        or not host
        or parts.username is not None
        or parts.password is not None
        or parts.path
        or parts.query
        or parts.fragment
        or text.endswith((":", "?", "#"))
    ):
        return None
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    elif not _HOSTNAME.fullmatch(host):
        return None  # a space, a percent sign, a backslash: not a host a browser sends
    # urlsplit skips whatever follows an IPv6 literal's "]" up to the port: refuse it.
    rest = parts.netloc.lower().removeprefix(host)
    if rest and not (rest[0] == ":" and rest[1:].isdigit()):
        return None
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


# A server sees few distinct origins, and each handshake would parse its origin again: the
# answers are kept, at most 1,024 of them, the least recently used going first.
_remembered = functools.lru_cache(maxsize=1024)(_normalised)


def _normalise_configured(origin: str) -> str:
    if "*" in origin:
        raise ConfigurationError(
            f"allow_origins contains {origin!r}, but entries are exact origins, not patterns. "
            r"Use allow_origin_regex, e.g. r'https://[a-z0-9-]+\.example\.com'."
        )
    try:
        raw = _idna_host(origin).encode("ascii")
    except UnicodeError:
        raw = b""
    normalised = normalise_origin(raw)
    if normalised is None:
        raise ConfigurationError(
            f"allow_origins contains {origin!r}, which is not an origin. Write "
            "scheme://host[:port] with no path or trailing slash, e.g. 'https://example.com'."
        )
    return normalised


def _idna_host(origin: str) -> str:
    """Punycode-encode a Unicode host in a configured origin, as browsers send it."""
    if origin.isascii():
        return origin
    scheme, sep, rest = origin.partition("://")
    host, colon, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    return f"{scheme}{sep}{host.encode('idna').decode('ascii')}{colon}{port}"


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigurationError(
            f"allow_origin_regex {pattern!r} is not a valid regular expression: {exc}."
        ) from None
