"""RemoteVerifier: ask an auth service whether a token is good (RFC 7662 introspection).

Needs the ``remote`` extra: ``pip install 'wsgate[remote]'``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wsgate import _options
from wsgate.auth.base import Identity, scopes_from_claims, timestamp
from wsgate.exceptions import (
    AuthenticationError,
    AuthUnavailable,
    ConfigurationError,
    InvalidToken,
    TokenExpired,
)

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("wsgate.auth")


class RemoteVerifier:
    """Verify tokens by posting them to an auth service's introspection endpoint.

    The request is ``POST url`` with the form body ``token=<jwt>&token_type_hint=access_token``.
    The service answers JSON in the RFC 7662 shape: ``{"active": true, "sub": "...",
    "exp": 1700000000, "scope": "read write"}``; ``{"active": false}`` refuses the token.

    Answers are cached: a positive one until the token's ``exp`` (at most ``max_cache_ttl``),
    a negative one for ``negative_cache_ttl``. When the service is unreachable, times out or
    answers an error, the connection is closed with 1013 ``auth_unavailable`` (never
    ``invalid_token``: the token may well be good). After ``failure_threshold`` failures in a
    row the verifier stops calling the service for ``cooldown`` seconds and fails at once,
    instead of queueing every new connection behind a dead service.

    Args:
        url: The introspection endpoint.
        headers: Extra request headers, e.g. the gate's own credentials for the service.
        connect_timeout: Time allowed to connect to the service, in seconds.
        read_timeout: Time allowed for the service to answer, in seconds.
        max_cache_ttl: Longest time a positive answer is reused, in seconds.
        negative_cache_ttl: How long a refusal is reused, in seconds.
        cache_size: Most answers kept; the least recently used go first.
        failure_threshold: Failures in a row that open the circuit.
        cooldown: How long the circuit stays open, in seconds.
        max_token_bytes: Longer tokens are refused without calling the service, in bytes.
        client: An ``httpx.AsyncClient`` to use instead of the verifier's own (then the
            caller closes it; its timeouts apply).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        # Timeouts
        connect_timeout: float = 2.0,
        read_timeout: float = 3.0,
        # Cache
        max_cache_ttl: float = 300.0,
        negative_cache_ttl: float = 10.0,
        cache_size: int = 10_000,
        # Circuit breaker
        failure_threshold: int = 5,
        cooldown: float = 10.0,
        # Limits
        max_token_bytes: int = 8192,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError:
            raise ConfigurationError(
                "RemoteVerifier needs httpx: pip install 'wsgate[remote]'."
            ) from None
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigurationError(
                f"url must be an http:// or https:// URL with a host, not {url!r}."
            )
        read_timeout = _options.seconds("read_timeout", read_timeout, positive=True)
        connect_timeout = _options.seconds("connect_timeout", connect_timeout, positive=True)
        self.url = url
        self.max_cache_ttl = _options.seconds("max_cache_ttl", max_cache_ttl)
        self.negative_cache_ttl = _options.seconds("negative_cache_ttl", negative_cache_ttl)
        self.cache_size = _options.count("cache_size", cache_size)
        self.failure_threshold = _options.count("failure_threshold", failure_threshold)
        self.cooldown = _options.seconds("cooldown", cooldown, positive=True)
        self.max_token_bytes = _options.count("max_token_bytes", max_token_bytes, unit="bytes")
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            headers=dict(headers or {}),
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            follow_redirects=False,
        )
        self._httpx_error = httpx.HTTPError
        # sha256(token) -> (deadline as a Unix time, the identity or the refusal to repeat)
        self._cache: OrderedDict[bytes, tuple[float, Identity | AuthenticationError]] = (
            OrderedDict()
        )
        self._failures = 0
        self._open_until = 0.0

    @property
    def circuit_open(self) -> bool:
        """True while the verifier fails fast instead of calling the service."""
        return time.monotonic() < self._open_until

    async def verify(self, token: str) -> Identity:
        """Verify ``token``: InvalidToken, TokenExpired or AuthUnavailable when it fails."""
        raw = token.encode("utf-8", "surrogatepass")
        if len(raw) > self.max_token_bytes:
            raise InvalidToken(f"the token is longer than {self.max_token_bytes} bytes")
        key = hashlib.sha256(raw).digest()
        now = time.time()
        cached = self._cache.get(key)
        if cached is not None:
            deadline, outcome = cached
            if now < deadline:
                self._cache.move_to_end(key)
                if isinstance(outcome, AuthenticationError):
                    raise type(outcome)(str(outcome))
                return outcome
            del self._cache[key]
        if self.circuit_open:
            raise AuthUnavailable(
                "the auth service failed repeatedly; failing fast during cooldown"
            )
        try:
            identity = await self._introspect(token)
        except (InvalidToken, TokenExpired) as refusal:
            self._succeeded()
            self._remember(key, time.time() + self.negative_cache_ttl, refusal)
            raise
        except AuthUnavailable:
            self._failed()
            raise
        self._succeeded()
        expires = identity.expires_at if identity.expires_at is not None else math.inf
        self._remember(key, min(expires, time.time() + self.max_cache_ttl), identity)
        return identity

    async def aclose(self) -> None:
        """Close the HTTP client, when the verifier created it."""
        if self._owns_client:
            await self._client.aclose()

    async def _introspect(self, token: str) -> Identity:
        try:
            response = await self._client.post(
                self.url, data={"token": token, "token_type_hint": "access_token"}
            )
        except self._httpx_error as exc:
            raise AuthUnavailable(f"auth service request failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            if response.status_code < 500:
                logger.error(
                    "auth service answered HTTP %d to introspection; check url= and the "
                    "gate's credentials (headers=)",
                    response.status_code,
                )
            raise AuthUnavailable(f"auth service answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except (ValueError, RecursionError):
            raise AuthUnavailable("auth service answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise AuthUnavailable("auth service answered JSON that is not an object")
        return _identity(answer)

    def _remember(
        self, key: bytes, deadline: float, outcome: Identity | AuthenticationError
    ) -> None:
        if deadline <= time.time():
            return
        self._cache[key] = (deadline, outcome)
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _succeeded(self) -> None:
        self._failures = 0

    def _failed(self) -> None:
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open_until = time.monotonic() + self.cooldown
            logger.warning(
                "auth service failed %d times in a row; failing fast for %.1f s",
                self._failures,
                self.cooldown,
            )


def _identity(answer: dict[str, Any]) -> Identity:
    if answer.get("active") is not True:
        raise InvalidToken("the auth service says the token is not active")
    subject = answer.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("the auth service's answer has no sub to identify the user")
    exp = answer.get("exp")
    expires_at = None if exp is None else timestamp(exp, "the auth service's exp")
    if expires_at is not None and time.time() >= expires_at:
        raise TokenExpired("the auth service's exp has passed")
    return Identity(subject, answer, scopes_from_claims(answer), expires_at)
