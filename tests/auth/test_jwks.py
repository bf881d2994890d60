"""RemoteJWKS against a real JWKS endpoint on 127.0.0.1: caching, rotation, faults, hostility.

The verifier is called directly here; tests/auth/test_rotation.py shows the same through a
gate, as clients see it. Waits are bounded; where a test waits for the clock itself (a TTL or
an interval to pass), no event could signal it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.auth.idp import JWKS_PATH, IdP
from wsgate import AuthUnavailable, ConfigurationError, InvalidToken, JWTVerifier, RemoteJWKS
from wsgate.testing import LiveServer

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def idp_keys() -> dict[str, rsa.RSAPrivateKey]:
    return {kid: rsa.generate_private_key(65537, 2048) for kid in ("k1", "k2", "evil")}


@pytest.fixture(scope="module")
def idp_server(idp_keys: dict[str, rsa.RSAPrivateKey]) -> Iterator[tuple[IdP, LiveServer]]:
    idp = IdP(idp_keys)
    with LiveServer(idp.app) as server:
        yield idp, server
    idp.release.set()


@pytest.fixture
def idp(idp_server: tuple[IdP, LiveServer]) -> Iterator[IdP]:
    """The identity provider, publishing k1, answering well, no requests seen."""
    idp, _ = idp_server
    idp.reset()
    idp.publish("k1")
    yield idp
    idp.release.set()  # no answer stays held back after the test


@pytest.fixture
def url(idp_server: tuple[IdP, LiveServer]) -> str:
    return idp_server[1].url + JWKS_PATH


Factory = Callable[..., tuple[JWTVerifier, RemoteJWKS]]


@pytest.fixture
async def make(url: str) -> AsyncIterator[Factory]:
    """Build a JWTVerifier on a RemoteJWKS for ``url`` (or the IdP's), closed afterwards."""
    made: list[JWTVerifier] = []

    def build(jwks_url: str | None = None, **options: Any) -> tuple[JWTVerifier, RemoteJWKS]:
        remote = RemoteJWKS(jwks_url or url, **options)
        verifier = JWTVerifier(algorithms=["RS256"], jwks=remote)
        made.append(verifier)
        return verifier, remote

    yield build
    for verifier in made:
        await verifier.aclose()


async def wait_for(condition: Callable[[], bool], within: float = 5.0) -> None:
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - the condition is another thread's doing
            await anyio.sleep(0.01)


async def clock_passes(moment: float) -> None:
    """Wait, at most 5 s, until time.monotonic() reaches ``moment``: a TTL or interval."""
    await wait_for(lambda: time.monotonic() >= moment)


# Fetching and caching


async def test_nothing_is_fetched_until_a_token_needs_keys(idp: IdP, make: Factory) -> None:
    verifier, remote = make()
    assert idp.requests == 0
    assert remote.kids == frozenset()
    assert (await verifier.verify(idp.token("k1"))).subject == "user-1"
    assert idp.requests == 1
    assert remote.kids == {"k1"}
    for _ in range(5):
        await verifier.verify(idp.token("k1", "user-2"))
    assert idp.requests == 1


async def test_keys_are_chosen_by_kid(idp: IdP, make: Factory) -> None:
    idp.publish("k1", "k2")
    verifier, _ = make()
    assert (await verifier.verify(idp.token("k1", "one"))).subject == "one"
    assert (await verifier.verify(idp.token("k2", "two"))).subject == "two"
    with pytest.raises(InvalidToken, match="the signature does not verify"):
        await verifier.verify(idp.token("k1", signed_by="k2"))
    with pytest.raises(InvalidToken, match="no key with kid None"):
        await verifier.verify(idp.token(None, signed_by="k1"))
    assert idp.requests == 1


async def test_a_key_published_under_a_new_kid_is_fetched_and_accepted(
    idp: IdP, make: Factory
) -> None:
    verifier, remote = make(refetch_interval=0)
    await verifier.verify(idp.token("k1"))
    idp.publish("k1", "k2")
    assert (await verifier.verify(idp.token("k2", "new"))).subject == "new"
    assert idp.requests == 2
    assert remote.kids == {"k1", "k2"}


async def test_unknown_kids_cost_one_fetch_per_refetch_interval(idp: IdP, make: Factory) -> None:
    verifier, _ = make(refetch_interval=60)
    made_up = [idp.token(f"made-up-{n}", signed_by="evil") for n in range(50)]
    results = await asyncio.gather(*(verifier.verify(t) for t in made_up), return_exceptions=True)
    assert all(isinstance(result, InvalidToken) for result in results)
    assert idp.requests == 1  # the first token's fetch, which the others waited for
    results = await asyncio.gather(*(verifier.verify(t) for t in made_up), return_exceptions=True)
    assert all(isinstance(result, InvalidToken) for result in results)
    assert "the next refetch may start in" in str(results[0])
    assert idp.requests == 1
    assert (await verifier.verify(idp.token("k1"))).subject == "user-1"
    assert idp.requests == 1


async def test_after_the_interval_unknown_kids_cause_one_more_fetch(
    idp: IdP, make: Factory
) -> None:
    verifier, remote = make(refetch_interval=0.3)
    await verifier.verify(idp.token("k1"))
    started = time.monotonic()
    made_up = [idp.token(f"made-up-{n}", signed_by="evil") for n in range(50)]
    await clock_passes(started + 0.3)
    results = await asyncio.gather(*(verifier.verify(t) for t in made_up), return_exceptions=True)
    assert all(isinstance(result, InvalidToken) for result in results)
    assert "even after a refetch" in str(results[0])
    assert idp.requests == 2
    assert remote.fetches == 2


async def test_a_fresh_document_is_not_refetched_and_a_stale_one_is_in_the_background(
    idp: IdP, make: Factory
) -> None:
    idp.cache_control = "public, max-age=0"
    verifier, _ = make(min_ttl=0.3, refetch_interval=0)
    await verifier.verify(idp.token("k1"))
    fetched = time.monotonic()
    await verifier.verify(idp.token("k1"))
    assert idp.requests == 1  # max-age=0 is held up to min_ttl
    await clock_passes(fetched + 0.3)
    idp.publish("k2")  # k1 is withdrawn; the token is checked with the keys held
    assert (await verifier.verify(idp.token("k1"))).subject == "user-1"
    await wait_for(lambda: idp.requests == 2)  # the refresh it started


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [
        (None, 300.0),
        ("max-age=600", 600.0),
        ("public, max-age=600, must-revalidate", 600.0),
        ('max-age="600"', 600.0),
        ("max-age=5", 60.0),
        ("max-age=999999", 3600.0),
        ("s-maxage=600", 300.0),
        ("no-cache", 60.0),
        ("no-store, max-age=600", 60.0),
        ("max-age=banana", 300.0),
    ],
)
async def test_cache_control_is_followed_within_the_bounds(
    idp: IdP, make: Factory, cache_control: str | None, ttl: float
) -> None:
    idp.cache_control = cache_control
    verifier, remote = make()
    before = time.monotonic()
    await verifier.verify(idp.token("k1"))
    after = time.monotonic()
    assert before + ttl <= remote._fresh_until <= after + ttl


async def test_verify_sync_uses_only_the_keys_held(idp: IdP, make: Factory) -> None:
    verifier, _ = make()
    with pytest.raises(AuthUnavailable, match="no keys from the JWKS URL yet"):
        verifier.verify_sync(idp.token("k1"))
    assert idp.requests == 0
    await verifier.verify(idp.token("k1"))
    assert verifier.verify_sync(idp.token("k1")).subject == "user-1"
    with pytest.raises(InvalidToken, match="no key with kid 'k2'"):
        verifier.verify_sync(idp.token("k2"))
    assert idp.requests == 1


async def test_a_withdrawn_key_stops_verifying_once_refetched(idp: IdP, make: Factory) -> None:
    verifier, remote = make(min_ttl=0, default_ttl=0.2, refetch_interval=0)
    await verifier.verify(idp.token("k1"))
    idp.publish("k2")
    await wait_for(lambda: time.monotonic() >= remote._fresh_until)
    await verifier.verify(idp.token("k2"))  # unknown: refetched at once
    assert remote.kids == {"k2"}
    with pytest.raises(InvalidToken, match="no key with kid 'k1'"):
        await verifier.verify(idp.token("k1"))


# Faults


async def test_down_at_start_then_up(idp: IdP, make: Factory) -> None:
    with LiveServer(idp.app) as stopped:
        port = stopped.port
    verifier, remote = make(f"http://127.0.0.1:{port}{JWKS_PATH}", refetch_interval=0.3)
    with anyio.fail_after(5), pytest.raises(AuthUnavailable, match="ConnectError"):
        await verifier.verify(idp.token("k1"))
    failed = time.monotonic()
    with pytest.raises(AuthUnavailable, match="ConnectError"):
        await verifier.verify(idp.token("k1"))  # within the interval: no new attempt
    assert remote.fetches == 1
    with LiveServer(idp.app, port=port):
        await clock_passes(failed + 0.3)
        assert (await verifier.verify(idp.token("k1"))).subject == "user-1"
    assert remote.fetches == 2
    assert remote.last_error is None


async def test_a_slow_endpoint_makes_tokens_wait_no_longer_than_wait_timeout(
    idp: IdP, make: Factory
) -> None:
    idp.mode = "slow"
    verifier, remote = make(wait_timeout=0.3)
    tokens = [idp.token("k1", f"user-{n}") for n in range(5)]
    started = time.monotonic()
    results = await asyncio.gather(*(verifier.verify(t) for t in tokens), return_exceptions=True)
    assert time.monotonic() - started < 0.3 + 1.0
    assert all(isinstance(result, AuthUnavailable) for result in results)
    assert "did not answer within wait_timeout (0.3 s)" in str(results[0])
    assert idp.requests == 1  # the five shared one fetch
    idp.release.set()
    await wait_for(lambda: remote.kids == {"k1"})  # the fetch went on without them
    assert (await verifier.verify(idp.token("k1"))).subject == "user-1"
    assert idp.requests == 1


async def test_a_fetch_that_takes_longer_than_fetch_timeout_fails(idp: IdP, make: Factory) -> None:
    idp.mode = "slow"
    verifier, remote = make(fetch_timeout=0.3, wait_timeout=5)
    with anyio.fail_after(3), pytest.raises(AuthUnavailable, match="fetch_timeout"):
        await verifier.verify(idp.token("k1"))
    assert remote.last_error == "no full answer within fetch_timeout (0.3 s)"


async def test_the_last_good_keys_serve_until_max_stale(
    idp: IdP, make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    verifier, remote = make(
        min_ttl=0, max_ttl=0.2, default_ttl=0.2, max_stale=1.0, refetch_interval=0.1
    )
    await verifier.verify(idp.token("k1"))
    fetched = time.monotonic()
    idp.mode = "error"
    await clock_passes(fetched + 0.2)
    with caplog.at_level(logging.WARNING, logger="wsgate.auth"):
        assert (await verifier.verify(idp.token("k1"))).subject == "user-1"  # stale, served
        await wait_for(lambda: remote.last_error is not None)
    assert "answered HTTP 500" in caplog.text
    assert "s ago serve on (max_stale 1 s)" in caplog.text
    with pytest.raises(AuthUnavailable, match="HTTP 500"):
        await verifier.verify(idp.token("k2"))  # unknown kid, and the refetch fails
    await clock_passes(fetched + 1.0)
    with caplog.at_level(logging.ERROR, logger="wsgate.auth"), pytest.raises(AuthUnavailable):
        await verifier.verify(idp.token("k1"))
    assert "past max_stale" in caplog.text
    assert remote.kids == frozenset()
    idp.mode = "good"
    await clock_passes(time.monotonic() + 0.1)
    assert (await verifier.verify(idp.token("k1"))).subject == "user-1"


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("error", "the server answered HTTP 500, not 200"),
        ("redirect", "the server answered HTTP 302, not 200"),
        ("html", "the content type is 'text/html', not JSON"),
        ("gzip", "the body is compressed although identity was asked for"),
        ("huge", "bytes, over max_bytes"),
        ("huge_streamed", "the document is over max_bytes (1048576)"),
        ("not_json", "the body is not JSON"),
        ("deep", "the body is not JSON"),
        ("json_list", "jwks must be a JWKS document"),
        ("not_jwks", "jwks must be a JWKS document"),
        ("bad_key", "cannot be used with RS"),
        ("many_keys", "the document has 101 keys, over max_keys"),
    ],
)
async def test_a_hostile_answer_is_a_failed_fetch(
    idp: IdP, make: Factory, caplog: pytest.LogCaptureFixture, mode: str, error: str
) -> None:
    idp.mode = mode
    verifier, remote = make(refetch_interval=0)
    logs = caplog.at_level(logging.WARNING, logger="wsgate.auth")
    with logs, anyio.fail_after(5), pytest.raises(AuthUnavailable, match="could not be fetched"):
        await verifier.verify(idp.token("k1"))
    assert remote.last_error is not None
    assert error in remote.last_error
    assert f"fetching the JWKS from {remote.url} failed: {remote.last_error}" in caplog.text
    assert "no keys yet, so tokens get auth_unavailable" in caplog.text
    idp.mode = "good"
    assert (await verifier.verify(idp.token("k1"))).subject == "user-1"


async def test_a_hostile_answer_leaves_the_keys_held(idp: IdP, make: Factory) -> None:
    verifier, remote = make(min_ttl=0, default_ttl=0.2, refetch_interval=0)
    await verifier.verify(idp.token("k1"))
    idp.mode = "bad_key"
    with pytest.raises(AuthUnavailable, match="cannot be used with RS"):
        await verifier.verify(idp.token("k2"))
    assert remote.kids == {"k1"}
    assert (await verifier.verify(idp.token("k1"))).subject == "user-1"


# Options


def test_http_is_refused_in_production_except_on_loopback(url: str) -> None:
    with pytest.raises(ConfigurationError, match="is http:// in production"):
        RemoteJWKS("http://idp.example/jwks.json")
    RemoteJWKS("http://idp.example/jwks.json", environment="development")
    RemoteJWKS(url)  # 127.0.0.1
    RemoteJWKS("https://idp.example/jwks.json")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"wait_timeout": 0}, "wait_timeout must be a positive number of seconds"),
        ({"fetch_timeout": -1}, "fetch_timeout must be a positive number of seconds"),
        ({"max_bytes": 0}, "max_bytes must be a positive number of bytes"),
        ({"max_keys": 0}, "max_keys must be a positive integer"),
        ({"min_ttl": 10, "max_ttl": 5}, r"min_ttl \(10 s\) is longer than max_ttl \(5 s\)"),
        ({"max_stale": 60}, r"max_stale \(60 s\) is shorter than max_ttl \(3600 s\)"),
        ({"environment": "staging"}, "environment must be 'development' or 'production'"),
    ],
)
def test_bad_options_are_refused(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RemoteJWKS(url, **options)


def test_a_remote_jwks_needs_public_key_algorithms(url: str) -> None:
    with pytest.raises(ConfigurationError, match="are HMAC and need secret=, not jwks="):
        JWTVerifier(algorithms=["HS256"], jwks=RemoteJWKS(url))
