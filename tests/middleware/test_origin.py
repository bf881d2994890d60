"""OriginMiddleware: the allow-list, its normalisation, its configuration, over real sockets."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from wsgate import ConfigurationError, OriginMiddleware
from wsgate.middleware.origin import _remembered, normalise_origin
from wsgate.testing import HandshakeRejected, LiveServer, WSClient

pytestmark = pytest.mark.anyio

ALLOWED = "https://example.com"


async def _nothing(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("unit tests never call the app")


def gate(*allow_origins: str, **options: Any) -> OriginMiddleware:
    return OriginMiddleware(_nothing, allow_origins=allow_origins, **options)


def origin(*values: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"example.com")] + [(b"origin", value) for value in values]


# normalise_origin


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"https://example.com", "https://example.com"),
        (b"HTTPS://EXAMPLE.COM", "https://example.com"),
        (b"https://Example.Com:443", "https://example.com"),
        (b"http://example.com:80", "http://example.com"),
        (b"https://example.com:80", "https://example.com:80"),
        (b"http://example.com:443", "http://example.com:443"),
        (b"https://example.com:8443", "https://example.com:8443"),
        (b"wss://example.com:443", "wss://example.com"),
        (b"http://[::1]:8000", "http://[::1]:8000"),
        (b"http://[::1]:80", "http://[::1]"),
        (b"http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        (b"https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
        (b"null", "null"),
    ],
)
def test_normalise_origin(raw: bytes, expected: str) -> None:
    assert normalise_origin(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"example.com",
        b"//example.com",
        b"https://",
        b"https://example.com/",
        b"https://example.com/path",
        b"https://example.com?q",
        b"https://example.com#f",
        b"https://example.com:",
        b"https://example.com:99999",
        b"https://example.com:port",
        b"https://user@example.com",
        b"https://example.com@evil.io",
        b"https://user:pass@example.com",
        b" https://example.com",
        b"https://example.com ",
        b"https://exa\tmple.com",
        b"https://example.com\r\n",
        b"ftp://example.com",
        b"file://",
        b"javascript:alert(1)",
        b"https://b\xc3\xbccher.example",
        b"https://example.com\xff",
        b"NULL",
        b"null ",
    ],
)
def test_normalise_origin_refuses_what_is_not_an_origin(raw: bytes) -> None:
    assert normalise_origin(raw) is None


# is_allowed


@pytest.mark.parametrize(
    "value",
    [
        b"https://example.com",
        b"HTTPS://EXAMPLE.COM",
        b"https://eXample.com:443",
    ],
)
def test_allowed_origin(value: bytes) -> None:
    assert gate(ALLOWED).is_allowed(origin(value)) is True


@pytest.mark.parametrize(
    "value",
    [
        b"https://example.com.evil.io",
        b"https://evil-example.com",
        b"https://evilexample.com",
        b"https://sub.example.com",
        b"http://example.com",
        b"wss://example.com",
        b"https://example.com:8443",
        b"https://example.com:80",
        b"https://example.com/",
        b"https://example.com/app",
        b"https://example.com@evil.io",
        b"https://example.com.",
        b"https://b\xc3\xbccher.example",
        b"https://exa\xe2\x80\x8bmple.com",
        b"null",
        b"",
    ],
)
def test_lookalike_origins_are_refused(value: bytes) -> None:
    assert gate(ALLOWED).is_allowed(origin(value)) is False


def test_configured_default_port_matches_both_spellings() -> None:
    middleware = gate("https://example.com:443", "http://localhost:80")
    assert middleware.is_allowed(origin(b"https://example.com"))
    assert middleware.is_allowed(origin(b"http://localhost"))
    assert middleware.is_allowed(origin(b"http://localhost:80"))
    assert not middleware.is_allowed(origin(b"http://localhost:8000"))


def test_configured_origin_is_case_insensitive() -> None:
    assert gate("HTTPS://Example.COM").is_allowed(origin(b"https://example.com"))


def test_two_origin_headers_are_refused_even_when_both_are_allowed() -> None:
    middleware = gate(ALLOWED)
    assert not middleware.is_allowed(origin(b"https://example.com", b"https://example.com"))
    assert not middleware.is_allowed(origin(b"https://example.com", b"https://evil.io"))


def test_null_is_refused_unless_listed() -> None:
    assert not gate(ALLOWED).is_allowed(origin(b"null"))
    assert gate(ALLOWED, "null").is_allowed(origin(b"null"))


@pytest.mark.parametrize(("allow_missing", "expected"), [(False, False), (True, True)])
def test_missing_origin(allow_missing: bool, expected: bool) -> None:
    middleware = gate(ALLOWED, allow_missing_origin=allow_missing)
    assert middleware.is_allowed(origin()) is expected
    # An Origin that is present but empty is not a missing one.
    assert middleware.is_allowed(origin(b"")) is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"https://a.example.com", True),
        (b"https://A-1.EXAMPLE.com:443", True),
        (b"https://a.example.com.evil.io", False),
        (b"https://a.example.com:8443", False),
        (b"http://a.example.com", False),
        (b"https://example.com", False),
        (b"https://a.example.com/", False),
        (b"https://evil.io/https://a.example.com", False),
        (b"https://a.example.com@evil.io", False),
    ],
)
def test_regex_must_match_the_whole_normalised_origin(value: bytes, expected: bool) -> None:
    middleware = OriginMiddleware(_nothing, allow_origin_regex=r"https://.*\.example\.com")
    assert middleware.is_allowed(origin(value)) is expected


def test_several_regexes_and_exact_origins_combine() -> None:
    middleware = OriginMiddleware(
        _nothing,
        allow_origins=["http://localhost:3000"],
        allow_origin_regex=[r"https://[a-z]+\.example\.com", r"https://example\.org"],
    )
    assert middleware.is_allowed(origin(b"http://localhost:3000"))
    assert middleware.is_allowed(origin(b"https://app.example.com"))
    assert middleware.is_allowed(origin(b"https://example.org"))
    assert not middleware.is_allowed(origin(b"https://example.org.evil.io"))
    assert not middleware.is_allowed(origin(b"http://localhost:3001"))


def test_idna_configured_origin_matches_the_punycode_header() -> None:
    middleware = gate("https://bücher.example", "https://bücher.example:8443")
    assert middleware.is_allowed(origin(b"https://xn--bcher-kva.example"))
    assert middleware.is_allowed(origin(b"https://xn--bcher-kva.example:8443"))
    assert not middleware.is_allowed(origin(b"https://xn--bcher-kva.example:8444"))
    assert not middleware.is_allowed(origin("https://bücher.example".encode()))


def test_ipv6_origin() -> None:
    middleware = gate("http://[::1]:8000")
    assert middleware.is_allowed(origin(b"http://[::1]:8000"))
    assert not middleware.is_allowed(origin(b"http://[::1]:8001"))
    assert not middleware.is_allowed(origin(b"http://[::1]"))
    assert not middleware.is_allowed(origin(b"http://[::2]:8000"))


def test_is_allowed_agrees_with_the_wildcard() -> None:
    middleware = gate("*", environment="development")
    assert middleware.is_allowed(origin(b"https://anything.example"))


# configuration


def test_wildcard_is_refused_in_production() -> None:
    with pytest.raises(ConfigurationError, match="allow_any_origin"):
        gate("*")
    with pytest.raises(ConfigurationError, match="allow_any_origin"):
        gate(ALLOWED, "*", environment="production")


def test_wildcard_with_allow_any_origin_or_in_development() -> None:
    assert gate("*", allow_any_origin=True).allow_all
    assert gate("*", environment="development").allow_all
    assert gate("*", environment="DEVELOPMENT").allow_all


@pytest.mark.parametrize(
    "entry",
    [
        "example.com",
        "https://example.com/",
        "https://example.com/app",
        "https://user@example.com",
        "https://example.com:99999",
        "ftp://example.com",
        "https://",
        "",
        " https://example.com",
        "https://" + "a" * 64 + "ü.example",  # an IDNA label longer than 63 characters
    ],
)
def test_bad_origin_entries_are_refused(entry: str) -> None:
    with pytest.raises(ConfigurationError, match="allow_origins contains") as caught:
        gate(entry)
    assert repr(entry) in str(caught.value)
    assert "scheme://host[:port]" in str(caught.value)


@pytest.mark.parametrize("entry", ["https://*.example.com", "*.example.com", "https://app.*"])
def test_wildcard_entries_point_to_the_regex_option(entry: str) -> None:
    with pytest.raises(ConfigurationError, match=r"not patterns\. Use allow_origin_regex"):
        gate(entry)


def test_a_string_instead_of_a_list_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"write \['https://example.com'\]"):
        OriginMiddleware(_nothing, allow_origins="https://example.com")


def test_a_bad_regex_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"allow_origin_regex '\(unclosed'"):
        OriginMiddleware(_nothing, allow_origin_regex="(unclosed")
    with pytest.raises(ConfigurationError, match="not a valid regular expression"):
        OriginMiddleware(_nothing, allow_origin_regex=[r"https://ok\.example", "[z-a]"])


def test_a_bad_environment_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'staging'"):
        gate(ALLOWED, environment="staging")


# over real sockets


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    message = await websocket.receive_json()
    await websocket.send_json({"echo": message})
    await websocket.close()


async def page(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.headers.get('origin')}")


def build_app(allow_origins: Sequence[str]) -> OriginMiddleware:
    app = Starlette(routes=[WebSocketRoute("/echo", echo), Route("/page", page)])
    return OriginMiddleware(app, allow_origins=allow_origins)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(build_app([ALLOWED])) as live:
        yield live


async def test_allowed_origin_connects_and_echoes(server: LiveServer) -> None:
    async with WSClient(server.ws("/echo"), origin="https://EXAMPLE.com:443") as ws:
        await ws.send_json({"n": 1})
        assert await ws.receive_json() == {"echo": {"n": 1}}


@pytest.mark.parametrize(
    "refused", ["https://example.com.evil.io", "http://example.com", "null", None]
)
async def test_refused_origin_gets_403_json(server: LiveServer, refused: str | None) -> None:
    with pytest.raises(HandshakeRejected) as caught:
        async with WSClient(server.ws("/echo"), origin=refused):
            pass
    assert caught.value.status == 403
    assert caught.value.json() == {"error": "origin_not_allowed"}
    assert caught.value.headers["content-type"] == "application/json"


async def test_http_requests_pass_through_untouched(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=5, trust_env=False) as client:
        response = await client.get("/page", headers={"Origin": "https://evil.io"})
        missing = await client.get("/page")
    assert response.status_code == 200
    assert response.text == "hello https://evil.io"
    assert missing.status_code == 200
    assert missing.text == "hello None"


def test_answers_are_remembered_for_short_origins_only() -> None:
    short = b"https://remembered.example"
    long = b"https://" + b"a" * 300 + b".example"
    _remembered.cache_clear()
    assert normalise_origin(short) == "https://remembered.example"
    assert normalise_origin(short) == "https://remembered.example"
    assert _remembered.cache_info().hits == 1
    # A long value is answered alike, but never kept: clients cannot fill the memory with them.
    assert normalise_origin(long) == long.decode()
    assert normalise_origin(long + b"/path") is None
    assert _remembered.cache_info().currsize == 1
