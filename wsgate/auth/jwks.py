"""RemoteJWKS: the signing keys an identity provider publishes at a JWKS URL, kept current.

Needs the ``remote`` extra: ``pip install 'wsgate[remote]'``.

Every identity provider (Auth0, Okta, Keycloak, Cognito, Entra ID) publishes its public keys
as a JWKS document at a URL, and rotates them there. A :class:`~wsgate.JWTVerifier` given a
``RemoteJWKS`` follows the rotation with no restart. How, with the defaults:

* Nothing is fetched at start-up: the first token fetches the keys, so an app starts while the
  endpoint is down or slow.
* A document stays fresh for the ``max-age`` of its ``Cache-Control`` header, held between
  ``min_ttl`` (1 minute) and ``max_ttl`` (1 hour); 5 minutes when the header gives none. A
  token verified after that starts a refetch in the background and is checked with the keys
  already held.
* A token whose ``kid`` is not among the keys starts a refetch at once, and waits for it.
  When the document still has no such key, the token gets :class:`~wsgate.InvalidToken`
  (close 1008 ``invalid_token``).
* No fetch starts within ``refetch_interval`` (10 seconds) of the previous one, whatever asks
  for it, so tokens with made-up ``kid`` values cannot turn into a flood of requests: in that
  interval an unknown ``kid`` gets ``InvalidToken`` at once (``AuthUnavailable`` when the
  last fetch failed, for the key may well exist). A key published under a new ``kid`` is
  accepted at most ``refetch_interval`` (plus the fetch) after publication.
* A token waits for a fetch at most ``wait_timeout`` (2 seconds), then gets
  :class:`~wsgate.AuthUnavailable` (close 1013 ``auth_unavailable``), as it does when the
  fetch fails and no key could serve it. The fetch itself goes on, up to ``fetch_timeout``
  (10 seconds), for the tokens that come after.
* While fetches fail, the last good keys keep serving until ``max_stale`` (24 hours) after
  they were fetched. Past that, every token gets ``AuthUnavailable`` until a fetch succeeds.
* A failed fetch is logged on ``wsgate.auth`` and changes nothing. Failed means: no answer, an
  HTTP status other than 200 (redirects are not followed), a content type other than JSON, a
  compressed body, more than ``max_bytes`` (1 MiB), not JSON, not a JWKS, more than
  ``max_keys`` (100) keys, a key that does not parse, or no signing key RS* or ES* can use.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import re
import time
from typing import Any
from urllib.parse import urlsplit

import anyio
import orjson

from wsgate import _options
from wsgate._settings import Environment, parse_environment
from wsgate.exceptions import AuthUnavailable, ConfigurationError, InvalidToken

__all__ = ["RemoteJWKS"]

logger = logging.getLogger("wsgate.auth")

Keys = dict[tuple[str | None, str], Any]
"""(kid, alg) -> python-jose key; kid None is the key for tokens without one."""

_JSON_TYPES = ("application/json", "application/jwk-set+json")
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|$)", re.IGNORECASE)


class _FetchFailed(Exception):
    """One fetch went wrong; the message says how, for the log."""


class RemoteJWKS:
    """Keys from a JWKS URL, for ``JWTVerifier(algorithms=[...], jwks=RemoteJWKS(url))``.

    See the module's docstring for how keys are fetched, cached and refetched.

    Args:
        url: The JWKS URL, e.g. ``https://idp.example.com/.well-known/jwks.json``. In
            production it must be ``https://``, except on a loopback address (``127.0.0.0/8``,
            ``::1``, ``localhost``), where ``http://`` serves a sidecar or a test.
        environment: ``"production"`` (the default) or ``"development"``, which allows
            ``http://`` anywhere.
        wait_timeout: Longest a token waits for a fetch, in seconds; then AuthUnavailable.
        fetch_timeout: Longest one fetch may take in all, in seconds.
        min_ttl: Shortest time a document stays fresh, whatever its headers say, in seconds.
        max_ttl: Longest time a document stays fresh, whatever its headers say, in seconds.
        default_ttl: How long a document without ``Cache-Control: max-age`` stays fresh, in
            seconds (held between ``min_ttl`` and ``max_ttl``).
        refetch_interval: Least time between the starts of two fetches, in seconds.
        max_stale: How long keys serve after the fetch that brought them while later fetches
            fail, in seconds. At least ``max_ttl``.
        max_bytes: Largest document, in bytes.
        max_keys: Most keys in a document.
    """

    def __init__(
        self,
        url: str,
        *,
        environment: Environment | str = Environment.PRODUCTION,
        # Timeouts
        wait_timeout: float = 2.0,
        fetch_timeout: float = 10.0,
        # Cache
        min_ttl: float = 60.0,
        max_ttl: float = 3600.0,
        default_ttl: float = 300.0,
        refetch_interval: float = 10.0,
        max_stale: float = 86400.0,
        # Limits
        max_bytes: int = 1024 * 1024,
        max_keys: int = 100,
    ) -> None:
        try:
            import httpx
        except ImportError:
            raise ConfigurationError(
                "RemoteJWKS (WSGATE_JWT_JWKS_URL) needs httpx: pip install 'wsgate[remote]'."
            ) from None
        self.url = _checked_url(url, parse_environment(environment))
        self.wait_timeout = _options.seconds("wait_timeout", wait_timeout, positive=True)
        self.fetch_timeout = _options.seconds("fetch_timeout", fetch_timeout, positive=True)
        self.min_ttl = _options.seconds("min_ttl", min_ttl)
        self.max_ttl = _options.seconds("max_ttl", max_ttl)
        self.default_ttl = _options.seconds("default_ttl", default_ttl)
        self.refetch_interval = _options.seconds("refetch_interval", refetch_interval)
        self.max_stale = _options.seconds("max_stale", max_stale)
        self.max_bytes = _options.count("max_bytes", max_bytes, unit="bytes")
        self.max_keys = _options.count("max_keys", max_keys)
        if self.min_ttl > self.max_ttl:
            raise ConfigurationError(
                f"min_ttl ({self.min_ttl:g} s) is longer than max_ttl ({self.max_ttl:g} s); "
                "give a min_ttl no longer than max_ttl."
            )
        if self.max_stale < self.max_ttl:
            raise ConfigurationError(
                f"max_stale ({self.max_stale:g} s) is shorter than max_ttl "
                f"({self.max_ttl:g} s): keys would stop serving while still fresh. Give a "
                "max_stale of at least max_ttl."
            )
        self._httpx = httpx
        self._keys: Keys | None = None
        self._kidless = False  # the document's one key has no kid: it serves every token
        self._fetched_at = -math.inf  # time.monotonic() of the last good fetch
        self._fresh_until = -math.inf
        self._started_at = -math.inf  # time.monotonic() of the last fetch's start
        self._task: asyncio.Task[bool] | None = None
        self.fetches = 0
        """Fetches started so far, for tests and monitoring."""
        self.last_error: str | None = None
        """Why the last fetch failed, or None when it succeeded (or none has ended)."""

    @property
    def kids(self) -> frozenset[str | None]:
        """The ``kid`` of every key held, None for a key without one; empty before the first
        good fetch, and once the keys are past ``max_stale``."""
        kids = frozenset(kid for kid, _ in self._usable(time.monotonic()) or ())
        return kids - {None} if len(kids) > 1 else kids  # a lone key also serves kid None

    async def key(self, kid: str | None, alg: str) -> Any:
        """The key for a token's ``kid`` and ``alg``, fetching the document when needed.

        Raises InvalidToken when the keys hold none for them, and AuthUnavailable when the
        keys could not be had within ``wait_timeout``.
        """
        now = time.monotonic()
        keys = self._usable(now)
        key = None if keys is None else self._lookup(keys, kid, alg)
        if key is not None:
            if now >= self._fresh_until:
                self._start_fetch(now)  # in the background: this token is checked already
            return key
        task = self._start_fetch(now)
        if task is None:  # a fetch started less than refetch_interval ago
            if keys is None:
                raise AuthUnavailable(f"no keys from the JWKS URL yet: {self._why()}")
            if self.last_error is not None:  # the key may well exist: the endpoint is failing
                raise AuthUnavailable(
                    f"no key with kid {kid!r} for alg {alg}, and the JWKS URL could not be "
                    f"fetched: {self.last_error}"
                )
            wait = self.refetch_interval - (now - self._started_at)
            raise InvalidToken(
                f"no key with kid {kid!r} for alg {alg} (the next refetch may start in "
                f"{max(wait, 0):.1f} s)"
            )
        try:
            # shield: a token that stops waiting must not cancel the fetch the others share.
            fetched = await asyncio.wait_for(asyncio.shield(task), self.wait_timeout)
        except asyncio.TimeoutError:
            raise AuthUnavailable(
                f"the JWKS URL did not answer within wait_timeout ({self.wait_timeout:g} s)"
            ) from None
        keys = self._usable(time.monotonic())
        if not fetched or keys is None:
            raise AuthUnavailable(f"the JWKS URL could not be fetched: {self._why()}")
        key = self._lookup(keys, kid, alg)
        if key is None:
            raise InvalidToken(f"no key with kid {kid!r} for alg {alg}, even after a refetch")
        return key

    def cached_key(self, kid: str | None, alg: str) -> Any:
        """The key for ``kid`` and ``alg`` among the keys already fetched; never fetches.

        Raises InvalidToken when they hold none, and AuthUnavailable when there are none.
        """
        keys = self._usable(time.monotonic())
        if keys is None:
            raise AuthUnavailable(f"no keys from the JWKS URL yet: {self._why()}")
        key = self._lookup(keys, kid, alg)
        if key is None:
            raise InvalidToken(f"no key with kid {kid!r} for alg {alg}")
        return key

    async def aclose(self) -> None:
        """Cancel a fetch in progress; call it at shutdown (``Gate.aclose`` does)."""
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        if task.get_loop() is asyncio.get_running_loop():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # Cache

    def _usable(self, now: float) -> Keys | None:
        if self._keys is not None and now - self._fetched_at > self.max_stale:
            logger.error(
                "the keys from %s are %.0f s old, past max_stale (%.0f s); every token gets "
                "auth_unavailable until a fetch succeeds (last error: %s)",
                _options.redacted_url(self.url),
                now - self._fetched_at,
                self.max_stale,
                self.last_error,
            )
            self._keys = None
        return self._keys

    def _lookup(self, keys: Keys, kid: str | None, alg: str) -> Any:
        key = keys.get((kid, alg))
        if key is None and (kid is None or self._kidless):
            key = keys.get((None, alg))
        return key

    def _why(self) -> str:
        return self.last_error or "a fetch is in progress"

    def _start_fetch(self, now: float) -> asyncio.Task[bool] | None:
        """The fetch to wait for: the one in progress, or a new one; None when too soon."""
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and not task.done():
            return task if task.get_loop() is loop else None
        if now - self._started_at < self.refetch_interval:
            return None
        self._started_at = now
        self.fetches += 1
        self._task = loop.create_task(self._refresh(), name="wsgate-jwks-fetch")
        return self._task

    async def _refresh(self) -> bool:
        """Fetch the document and take its keys; False (logged) when anything goes wrong."""
        url = _options.redacted_url(self.url)
        try:
            keys, ttl = await self._fetch()
        except _FetchFailed as exc:
            self.last_error = str(exc)
        except Exception as exc:  # a fetch must never take the gate down; it only fails
            self.last_error = f"{type(exc).__name__}: {exc}"
        else:
            now = time.monotonic()
            if self._keys is None or set(keys) != set(self._keys):
                kids = sorted({str(kid) for kid, _ in keys})
                logger.info("keys from %s: kid %s, fresh for %.0f s", url, kids, ttl)
            self._keys = keys
            self._kidless = all(kid is None for kid, _ in keys)
            self._fetched_at = now
            self._fresh_until = now + ttl
            self.last_error = None
            return True
        if self._keys is None:
            outcome = "no keys yet, so tokens get auth_unavailable"
        else:
            age = time.monotonic() - self._fetched_at
            outcome = f"the keys fetched {age:.0f} s ago serve on (max_stale {self.max_stale:g} s)"
        logger.warning(
            "fetching the JWKS from %s failed: %s; %s; next try in %g s at the earliest",
            url,
            self.last_error,
            outcome,
            self.refetch_interval,
        )
        return False

    # Fetch

    async def _fetch(self) -> tuple[Keys, float]:
        httpx = self._httpx
        try:
            with anyio.fail_after(self.fetch_timeout):
                async with httpx.AsyncClient(timeout=self.fetch_timeout) as client:
                    request = client.build_request(
                        "GET",
                        self.url,
                        headers={"Accept": "application/json", "Accept-Encoding": "identity"},
                    )
                    response = await client.send(request, stream=True)
                    try:
                        body = await self._read(response)
                    finally:
                        await response.aclose()
        except TimeoutError:
            raise _FetchFailed(
                f"no full answer within fetch_timeout ({self.fetch_timeout:g} s)"
            ) from None
        except httpx.HTTPError as exc:
            raise _FetchFailed(f"the request failed: {type(exc).__name__}") from None
        keys = self._parse(body)
        return keys, self._ttl(response.headers.get("cache-control", ""))

    async def _read(self, response: Any) -> bytes:
        if response.status_code != 200:
            raise _FetchFailed(f"the server answered HTTP {response.status_code}, not 200")
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in _JSON_TYPES:
            raise _FetchFailed(f"the content type is {media_type or 'missing'!r}, not JSON")
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise _FetchFailed("the body is compressed although identity was asked for")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _FetchFailed(f"the document is {declared} bytes, over max_bytes")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > self.max_bytes:
                raise _FetchFailed(f"the document is over max_bytes ({self.max_bytes})")
        return bytes(body)

    def _parse(self, body: bytes) -> Keys:
        from wsgate.auth.jwt import PUBLIC_KEY_ALGORITHMS, _jwks_keys  # jwt.py imports this

        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _FetchFailed("the body is not JSON") from None
        entries = document.get("keys") if isinstance(document, dict) else None
        if isinstance(entries, list) and len(entries) > self.max_keys:
            raise _FetchFailed(f"the document has {len(entries)} keys, over max_keys")
        try:
            return _jwks_keys(PUBLIC_KEY_ALGORITHMS, document)
        except ConfigurationError as exc:
            raise _FetchFailed(str(exc)) from None

    def _ttl(self, cache_control: str) -> float:
        if _NO_CACHE.search(cache_control):
            return self.min_ttl
        match = _MAX_AGE.search(cache_control)
        ttl = float(match.group(1)) if match else self.default_ttl
        return min(max(ttl, self.min_ttl), self.max_ttl)


def _checked_url(url: str, environment: Environment) -> str:
    try:
        scheme, host = urlsplit(url).scheme, urlsplit(url).hostname
    except (ValueError, TypeError, AttributeError):
        scheme, host = "", None
    if host is None or scheme not in ("http", "https"):
        raise ConfigurationError(
            f"the JWKS URL must be an https:// URL with a host, such as "
            f"'https://idp.example.com/.well-known/jwks.json', not {url!r}."
        )
    if scheme == "http" and environment is Environment.PRODUCTION and not _loopback(host):
        raise ConfigurationError(
            f"the JWKS URL {_options.redacted_url(url)!r} is http:// in production, so anyone "
            "on the way could hand the gate keys of their own. Use https://; http:// is "
            "allowed only on a loopback address (127.0.0.1, ::1, localhost), or with "
            "WSGATE_ENV=development."
        )
    return url


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
