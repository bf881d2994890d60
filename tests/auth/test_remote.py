"""RemoteVerifier against a real introspection service on 127.0.0.1 that the tests can break."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from wsgate import (
    AuthUnavailable,
    ConfigurationError,
    Identity,
    InvalidToken,
    RemoteVerifier,
    TokenExpired,
)
from wsgate.testing import LiveServer

pytestmark = pytest.mark.anyio

READ_TIMEOUT = 0.2
SLOW = 1.0
"""How long the service takes in "slow" mode, in seconds: five read timeouts."""


@dataclass
class Introspection:
    """How the introspection service answers (switched by the tests) and what it was sent."""

    mode: str = "good"
    exp_in: float = 300.0
    requests: list[dict[str, Any]] = field(default_factory=list)


async def introspect(request: Request) -> Response:
    service: Introspection = request.app.state.service
    form = parse_qsl((await request.body()).decode("ascii"), strict_parsing=True)
    service.requests.append(
        {
            "method": request.method,
            "content_type": request.headers.get("content-type"),
            "authorization": request.headers.get("authorization"),
            "form": dict(form),
        }
    )
    mode = service.mode
    if mode == "slow":
        await anyio.sleep(SLOW)  # the fault under test: a service slower than read_timeout
    if mode in ("good", "slow"):
        exp = time.time() + service.exp_in
        return JSONResponse({"active": True, "sub": "user-1", "exp": exp, "scope": "read write"})
    answers: dict[str, Response] = {
        "inactive": JSONResponse({"active": False}),
        "expired": JSONResponse({"active": True, "sub": "user-1", "exp": time.time() - 10}),
        "no_sub": JSONResponse({"active": True, "exp": time.time() + 300}),
        "active_string": JSONResponse({"active": "true", "sub": "user-1"}),
        "exp_string": JSONResponse({"active": True, "sub": "user-1", "exp": "tomorrow"}),
        "error": PlainTextResponse("boom", status_code=500),
        "unauthorized": JSONResponse({"error": "invalid_client"}, status_code=401),
        "redirect": Response(status_code=307, headers={"location": "/elsewhere"}),
        "not_json": PlainTextResponse("<html>maintenance</html>"),
        "json_list": JSONResponse([{"active": True, "sub": "user-1"}]),
        "huge_exp": Response(
            b'{"active": true, "sub": "user-1", "exp": ' + b"9" * 400 + b"}",
            media_type="application/json",
        ),
        "deeply_nested": Response(
            b'{"active": true, "sub": "user-1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            media_type="application/json",
        ),
    }
    return answers[mode]


@pytest.fixture(scope="module")
def app() -> Starlette:
    app = Starlette(routes=[Route("/introspect", introspect, methods=["POST"])])
    app.state.service = Introspection()
    return app


@pytest.fixture(scope="module")
def server(app: Starlette) -> Iterator[LiveServer]:
    with LiveServer(app) as live:
        yield live


@pytest.fixture
def service(app: Starlette, server: LiveServer) -> Introspection:
    """The service, reset to good answers and no requests seen."""
    fresh = Introspection()
    app.state.service = fresh
    return fresh


@pytest.fixture(scope="module")
def down_url() -> str:
    """The URL of an introspection service that has stopped: its port is closed."""
    with LiveServer(Starlette()) as stopped:
        pass
    return f"{stopped.url}/introspect"


Factory = Callable[..., RemoteVerifier]


@pytest.fixture
async def make_verifier(server: LiveServer) -> AsyncIterator[Factory]:
    made: list[RemoteVerifier] = []

    def make(url: str | None = None, **options: Any) -> RemoteVerifier:
        settings: dict[str, Any] = {"connect_timeout": 1.0, "read_timeout": READ_TIMEOUT}
        settings.update(options)
        verifier = RemoteVerifier(url or f"{server.url}/introspect", **settings)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        await verifier.aclose()


# Answers


async def test_good_token(service: Introspection, make_verifier: Factory) -> None:
    before = time.time()
    identity = await make_verifier().verify("token-good")
    assert isinstance(identity, Identity)
    assert identity.subject == "user-1"
    assert identity.scopes == ("read", "write")
    assert identity.claims["active"] is True
    assert identity.expires_at is not None
    assert before + 299 < identity.expires_at < time.time() + 301


async def test_request_shape(service: Introspection, make_verifier: Factory) -> None:
    verifier = make_verifier(headers={"Authorization": "Basic Z2F0ZTpzZWNyZXQ="})
    await verifier.verify("the.token.value")
    assert service.requests == [
        {
            "method": "POST",
            "content_type": "application/x-www-form-urlencoded",
            "authorization": "Basic Z2F0ZTpzZWNyZXQ=",
            "form": {"token": "the.token.value", "token_type_hint": "access_token"},
        }
    ]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("inactive", "not active"),
        ("active_string", "not active"),
        ("no_sub", "has no sub"),
        ("exp_string", "exp is not a number of seconds between 1970 and 9999"),
    ],
)
async def test_refusals(
    service: Introspection, make_verifier: Factory, mode: str, message: str
) -> None:
    service.mode = mode
    with pytest.raises(InvalidToken, match=message):
        await make_verifier().verify("token")


async def test_expired(service: Introspection, make_verifier: Factory) -> None:
    service.mode = "expired"
    with pytest.raises(TokenExpired, match="exp has passed"):
        await make_verifier().verify("token")


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("error", "answered HTTP 500"),
        ("unauthorized", "answered HTTP 401"),
        ("redirect", "answered HTTP 307"),
        ("not_json", "not JSON"),
        ("json_list", "JSON that is not an object"),
    ],
)
async def test_service_failures_are_auth_unavailable(
    service: Introspection, make_verifier: Factory, mode: str, message: str
) -> None:
    service.mode = mode
    with pytest.raises(AuthUnavailable, match=message):
        await make_verifier().verify("token")
    assert len(service.requests) == 1


async def test_client_errors_are_logged_as_configuration_problems(
    service: Introspection, make_verifier: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    service.mode = "unauthorized"
    with caplog.at_level(logging.ERROR, logger="wsgate.auth"), pytest.raises(AuthUnavailable):
        await make_verifier().verify("token")
    assert "answered HTTP 401" in caplog.text
    assert "check url= and the gate's credentials" in caplog.text


async def test_slow_service_times_out(service: Introspection, make_verifier: Factory) -> None:
    service.mode = "slow"
    started = time.monotonic()
    with anyio.fail_after(SLOW), pytest.raises(AuthUnavailable, match="ReadTimeout"):
        await make_verifier().verify("token")
    assert time.monotonic() - started < READ_TIMEOUT + 0.5
    assert len(service.requests) == 1


async def test_service_down(make_verifier: Factory, down_url: str) -> None:
    with anyio.fail_after(5), pytest.raises(AuthUnavailable, match="ConnectError"):
        await make_verifier(down_url).verify("token")


async def test_long_token_is_refused_without_asking(
    service: Introspection, make_verifier: Factory
) -> None:
    verifier = make_verifier(max_token_bytes=100)
    await verifier.verify("t" * 100)
    with pytest.raises(InvalidToken, match="longer than 100 bytes"):
        await verifier.verify("t" * 101)
    assert len(service.requests) == 1


async def test_max_token_bytes_counts_bytes(service: Introspection, make_verifier: Factory) -> None:
    verifier = make_verifier(max_token_bytes=10)
    with pytest.raises(InvalidToken, match="longer than 10 bytes"):
        await verifier.verify("é" * 6)  # 6 characters, 12 bytes
    assert service.requests == []


async def test_huge_exp_in_the_answer(service: Introspection, make_verifier: Factory) -> None:
    service.mode = "huge_exp"
    with pytest.raises((InvalidToken, AuthUnavailable)):
        await make_verifier().verify("token")


async def test_deeply_nested_answer(service: Introspection, make_verifier: Factory) -> None:
    service.mode = "deeply_nested"
    with pytest.raises(AuthUnavailable):
        await make_verifier().verify("token")


# Cache


async def test_positive_answers_are_cached(service: Introspection, make_verifier: Factory) -> None:
    verifier = make_verifier()
    first = await verifier.verify("token-a")
    assert await verifier.verify("token-a") == first
    assert len(service.requests) == 1
    await verifier.verify("token-b")
    assert len(service.requests) == 2


async def test_positive_answers_are_cached_until_exp(
    service: Introspection, make_verifier: Factory
) -> None:
    service.exp_in = 0.3
    verifier = make_verifier()
    identity = await verifier.verify("token")
    await verifier.verify("token")
    assert len(service.requests) == 1
    assert identity.expires_at is not None
    with anyio.fail_after(2):
        # Waiting for the clock itself, which no event can signal.
        while time.time() < identity.expires_at:  # noqa: ASYNC110
            await anyio.sleep(0.02)
    await verifier.verify("token")
    assert len(service.requests) == 2


async def test_max_cache_ttl_zero_turns_the_cache_off(
    service: Introspection, make_verifier: Factory
) -> None:
    verifier = make_verifier(max_cache_ttl=0)
    await verifier.verify("token")
    await verifier.verify("token")
    assert len(service.requests) == 2


async def test_negative_answers_are_cached(service: Introspection, make_verifier: Factory) -> None:
    verifier = make_verifier()
    service.mode = "inactive"
    with pytest.raises(InvalidToken):
        await verifier.verify("token")
    service.mode = "good"
    with pytest.raises(InvalidToken, match="not active"):
        await verifier.verify("token")
    assert len(service.requests) == 1
    service.mode = "expired"
    for _ in range(2):
        with pytest.raises(TokenExpired):
            await verifier.verify("expired-token")
    assert len(service.requests) == 2


async def test_negative_cache_ttl_zero(service: Introspection, make_verifier: Factory) -> None:
    verifier = make_verifier(negative_cache_ttl=0)
    service.mode = "inactive"
    for _ in range(2):
        with pytest.raises(InvalidToken):
            await verifier.verify("token")
    assert len(service.requests) == 2


async def test_failures_are_not_cached(service: Introspection, make_verifier: Factory) -> None:
    verifier = make_verifier()
    service.mode = "error"
    with pytest.raises(AuthUnavailable):
        await verifier.verify("token")
    service.mode = "good"
    assert (await verifier.verify("token")).subject == "user-1"
    assert len(service.requests) == 2


async def test_least_recently_used_answer_goes_first(
    service: Introspection, make_verifier: Factory
) -> None:
    verifier = make_verifier(cache_size=2)
    for token in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
        await verifier.verify(token)
    assert len(service.requests) == 3
    await verifier.verify("a")
    await verifier.verify("c")
    assert len(service.requests) == 3
    await verifier.verify("b")
    assert len(service.requests) == 4


# Circuit breaker


async def wait_until_closed(verifier: RemoteVerifier) -> None:
    """Wait out the cooldown, at most 2 s: only the clock closes the circuit, no event does."""
    with anyio.fail_after(2):
        while verifier.circuit_open:  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def test_circuit_opens_fails_fast_and_recovers(
    service: Introspection, make_verifier: Factory
) -> None:
    verifier = make_verifier(failure_threshold=3, cooldown=0.2)
    await verifier.verify("cached")
    service.mode = "error"
    for n in range(3):
        assert not verifier.circuit_open
        with pytest.raises(AuthUnavailable, match="HTTP 500"):
            await verifier.verify(f"token-{n}")
    assert verifier.circuit_open
    assert len(service.requests) == 4

    service.mode = "good"
    with pytest.raises(AuthUnavailable, match="failing fast"):
        await verifier.verify("token-new")
    assert (await verifier.verify("cached")).subject == "user-1"  # answers cached before stay
    assert len(service.requests) == 4  # nothing reached the service while the circuit was open

    await wait_until_closed(verifier)
    assert (await verifier.verify("token-new")).subject == "user-1"
    assert len(service.requests) == 5
    assert not verifier.circuit_open


async def test_one_more_failure_after_cooldown_reopens_the_circuit(
    service: Introspection, make_verifier: Factory
) -> None:
    verifier = make_verifier(failure_threshold=2, cooldown=0.2)
    service.mode = "error"
    for n in range(2):
        with pytest.raises(AuthUnavailable):
            await verifier.verify(f"token-{n}")
    await wait_until_closed(verifier)
    with pytest.raises(AuthUnavailable, match="HTTP 500"):
        await verifier.verify("probe")
    assert verifier.circuit_open
    with pytest.raises(AuthUnavailable, match="failing fast"):
        await verifier.verify("probe")
    assert len(service.requests) == 3


async def test_timeouts_and_a_dead_service_open_the_circuit(
    service: Introspection, make_verifier: Factory, down_url: str
) -> None:
    slow = make_verifier(failure_threshold=1, cooldown=5)
    service.mode = "slow"
    with pytest.raises(AuthUnavailable):
        await slow.verify("token")
    assert slow.circuit_open
    down = make_verifier(down_url, failure_threshold=1, cooldown=5)
    with pytest.raises(AuthUnavailable):
        await down.verify("token")
    assert down.circuit_open


async def test_answers_reset_the_failure_count(
    service: Introspection, make_verifier: Factory
) -> None:
    verifier = make_verifier(failure_threshold=2, cooldown=5)
    steps: list[tuple[str, type[Exception] | None]] = [
        ("error", AuthUnavailable),
        ("inactive", InvalidToken),  # an answer, even a refusal, shows the service works
        ("error", AuthUnavailable),
        ("good", None),
        ("error", AuthUnavailable),
    ]
    for n, (mode, expected) in enumerate(steps):
        service.mode = mode
        with pytest.raises(expected) if expected else contextlib.nullcontext():
            await verifier.verify(f"token-{n}")
        assert not verifier.circuit_open, f"the circuit opened after answer {n} ({mode})"
    assert len(service.requests) == 5


# Configuration


@pytest.mark.parametrize("url", ["", "127.0.0.1:8000/introspect", "ftp://auth.example/introspect"])
def test_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigurationError, match="url must be an http:// or https:// URL"):
        RemoteVerifier(url)


@pytest.mark.parametrize("url", ["http://", "https://", "http://[::1/introspect"])
def test_url_must_name_a_host(url: str) -> None:
    with pytest.raises(ConfigurationError, match="url"):
        RemoteVerifier(url)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"connect_timeout": 0}, "connect_timeout must be a positive number of seconds"),
        ({"read_timeout": -1}, "read_timeout must be a positive number of seconds"),
        ({"read_timeout": math.nan}, "read_timeout"),
        ({"read_timeout": "3"}, "read_timeout"),
        ({"cooldown": math.inf}, "cooldown must be a positive number of seconds"),
        ({"max_cache_ttl": -1}, "max_cache_ttl must be a number of seconds >= 0"),
        ({"negative_cache_ttl": math.inf}, "negative_cache_ttl must be a number of seconds"),
        ({"cache_size": 0}, "cache_size must be a positive integer"),
        ({"failure_threshold": 0}, "failure_threshold must be a positive integer"),
        ({"failure_threshold": 2.5}, "failure_threshold"),
        ({"max_token_bytes": -1}, "max_token_bytes must be a positive number of bytes"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RemoteVerifier("http://127.0.0.1:1/introspect", **options)
