"""The test harness itself, over real sockets against a real uvicorn server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwt
from jose.exceptions import ExpiredSignatureError, JWTClaimsError, JWTError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed

import wsgate.testing
from wsgate.exceptions import ConfigurationError
from wsgate.testing import Frame, HandshakeRejected, LiveServer, TokenFactory, WSClient
from wsgate.testing.plugin import ServerFactory
from wsgate.testing.tokens import DEFAULT_SUBPROTOCOL_PREFIX

pytest_plugins = ("pytester",)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# A tiny app with one endpoint per behaviour the harness must handle.


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message["bytes"])


async def handshake(websocket: WebSocket) -> None:
    """Reports the handshake it saw, then waits for the client to leave."""
    await websocket.accept()
    await websocket.send_json(
        {"headers": dict(websocket.headers), "subprotocols": websocket.scope["subprotocols"]}
    )
    await websocket.receive()


async def bye(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close(4321, "bye")


async def refuse(websocket: WebSocket) -> None:
    await websocket.close()  # before accept: uvicorn answers 403


async def deny(websocket: WebSocket) -> None:
    await websocket.send_denial_response(JSONResponse({"error": "x"}, status_code=401))


async def chat(websocket: WebSocket) -> None:
    subprotocol = "chat" if "chat" in websocket.scope["subprotocols"] else None
    await websocket.accept(subprotocol=subprotocol)
    await websocket.send_json({"subprotocols": websocket.scope["subprotocols"]})
    await websocket.receive()


APP = Starlette(
    routes=[
        WebSocketRoute("/echo", echo),
        WebSocketRoute("/handshake", handshake),
        WebSocketRoute("/bye", bye),
        WebSocketRoute("/refuse", refuse),
        WebSocketRoute("/deny", deny),
        WebSocketRoute("/chat", chat),
    ]
)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(APP) as live:
        yield live


@pytest.fixture
async def echo_client(server: LiveServer) -> AsyncIterator[WSClient]:
    async with WSClient(server.ws("/echo")) as client:
        yield client


def port_is_free(port: int) -> bool:
    """True when nothing listens on ``port`` and it can be bound again."""
    with socket.socket() as probe:
        # SO_REUSEADDR lets the bind ignore connections left in TIME_WAIT, not listeners.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def unpadded_base64url_decode(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


# Package surface


def test_all_lists_every_public_name() -> None:
    assert wsgate.testing.__all__ == sorted(wsgate.testing.__all__)
    for name in wsgate.testing.__all__:
        assert getattr(wsgate.testing, name).__module__.startswith("wsgate.testing.")


def test_missing_websockets_fails_only_when_the_client_is_used() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["websockets"] = None  # as if wsgate was installed without [testing]
        import wsgate.testing.plugin
        from wsgate.testing import LiveServer, TokenFactory
        try:
            from wsgate.testing import WSClient
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == (
        "wsgate.testing needs the websockets client: pip install 'wsgate[testing]'"
    )


def test_missing_uvicorn_fails_only_when_the_server_is_used() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["uvicorn"] = None  # as if wsgate was installed without [testing]
        import wsgate
        from wsgate.testing import TokenFactory, WSClient
        print(TokenFactory().valid("alice").count("."))
        try:
            from wsgate.testing import LiveServer
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines() == [
        "2",
        "wsgate.testing needs uvicorn for LiveServer: pip install 'wsgate[testing]'",
    ]


def test_plugin_without_uvicorn_says_what_to_install(pytester: pytest.Pytester) -> None:
    # A project that installed wsgate alone still runs its tests: the plugin loads, the token
    # fixture works, and only the server fixture fails, saying what to install.
    pytester.makepyfile(
        """
        def test_tokens(wsgate_tokens):
            assert wsgate_tokens.valid("alice").count(".") == 2

        def test_server(wsgate_server):
            wsgate_server(lambda scope, receive, send: None)
        """
    )
    run = (
        "import sys; sys.modules['uvicorn'] = None; import pytest; "
        "sys.exit(pytest.main(['-p', 'no:cacheprovider', '-q']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", run],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert (
        "ImportError: wsgate.testing needs uvicorn for LiveServer: pip install 'wsgate[testing]'"
        in result.stdout
    )


# LiveServer


def test_live_server_start_and_stop() -> None:
    live = LiveServer(APP)
    with pytest.raises(RuntimeError, match="call start"):
        _ = live.port
    live.start()
    try:
        assert live.host == "127.0.0.1"
        assert live.url == f"http://127.0.0.1:{live.port}"
        assert live.ws_url == f"ws://127.0.0.1:{live.port}"
        assert live.ws("/echo") == f"ws://127.0.0.1:{live.port}/echo"
        assert not port_is_free(live.port)
        with socket.create_connection((live.host, live.port), timeout=5):
            pass
        with pytest.raises(RuntimeError, match="already started"):
            live.start()
    finally:
        live.stop()
    assert port_is_free(live.port)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((live.host, live.port), timeout=5)
    live.stop()  # idempotent


def test_live_server_context_manager() -> None:
    with LiveServer(APP) as live:
        port = live.port
        assert not port_is_free(port)
    assert port_is_free(port)


def test_live_server_reports_a_failed_lifespan_startup() -> None:
    @contextlib.asynccontextmanager
    async def failing_lifespan(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("database unreachable")
        yield

    live = LiveServer(Starlette(lifespan=failing_lifespan), log_level="critical")
    with pytest.raises(RuntimeError, match="exited during startup"):
        live.start()
    assert port_is_free(live.port)
    live.stop()


def test_live_server_startup_timeout_is_bounded() -> None:
    release = threading.Event()

    @contextlib.asynccontextmanager
    async def slow_lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(release.wait, 30)
        yield

    live = LiveServer(Starlette(lifespan=slow_lifespan), startup_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"did not listen within startup_timeout=0\.2 s"):
        live.start()
    assert time.monotonic() - started < 5
    release.set()
    live.stop()
    assert port_is_free(live.port)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ws": "nope"}, "ws='nope'"),
        ({"ws_max_size": 0}, "ws_max_size=0"),
        ({"ws_ping_interval": 0}, "ws_ping_interval=0"),
        ({"log_level": "loud"}, "log_level='loud'"),
        ({"lifespan": "maybe"}, "lifespan='maybe'"),
        ({"startup_timeout": -1}, "startup_timeout=-1"),
    ],
)
def test_live_server_rejects_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LiveServer(APP, **options)


@pytest.mark.anyio
async def test_live_server_stop_closes_open_connections_with_1012() -> None:
    live = LiveServer(APP)
    live.start()
    try:
        async with WSClient(live.ws("/echo")) as ws:
            live.stop()
            assert await ws.wait_closed() == (1012, "")
            assert ws.state == "closed"
    finally:
        live.stop()


# WSClient


@pytest.mark.anyio
async def test_send_and_receive_text_bytes_and_json(echo_client: WSClient) -> None:
    await echo_client.send_text("hello")
    assert await echo_client.receive() == "hello"
    await echo_client.send_bytes(b"\x00\x01")
    assert await echo_client.receive() == b"\x00\x01"
    await echo_client.send_json({"type": "ping", "n": [1, 2]})
    assert await echo_client.receive_json() == {"type": "ping", "n": [1, 2]}


@pytest.mark.anyio
async def test_receive_json_refuses_what_is_not_json_text(echo_client: WSClient) -> None:
    await echo_client.send_text("{not json")
    with pytest.raises(AssertionError, match="expected a JSON text frame"):
        await echo_client.receive_json()
    await echo_client.send_bytes(b"{}")
    with pytest.raises(AssertionError, match="binary frame"):
        await echo_client.receive_json()


@pytest.mark.anyio
async def test_receive_timeout_says_how_long_and_what_came_last(echo_client: WSClient) -> None:
    await echo_client.send_text("the last one")
    await echo_client.receive()
    with pytest.raises(TimeoutError, match=r"within 0\.05 s; last messages: 'the last one'"):
        await echo_client.receive(timeout=0.05)


@pytest.mark.anyio
async def test_history_records_both_directions_in_order(echo_client: WSClient) -> None:
    await echo_client.send_text("a")
    await echo_client.receive()
    await echo_client.send_bytes(b"b")
    await echo_client.receive()
    assert [(frame.direction, frame.data) for frame in echo_client.history] == [
        ("sent", "a"),
        ("received", "a"),
        ("sent", b"b"),
        ("received", b"b"),
    ]
    times = [frame.at for frame in echo_client.history]
    assert times == sorted(times)
    assert times[-1] <= time.monotonic()


def test_frame_is_frozen_and_decodes_json() -> None:
    frame = Frame("received", '{"type": "x"}', 1.0)
    assert frame.json() == {"type": "x"}
    with pytest.raises(AttributeError):
        frame.data = "changed"  # type: ignore[misc]


@pytest.mark.anyio
async def test_expect_skips_other_messages_within_one_deadline(echo_client: WSClient) -> None:
    await echo_client.send_json({"type": "noise"})
    await echo_client.send_text("plain text")
    await echo_client.send_bytes(b"raw")
    await echo_client.send_json({"type": "wanted", "n": 1})
    assert await echo_client.expect("wanted") == {"type": "wanted", "n": 1}
    received = [frame.data for frame in echo_client.history if frame.direction == "received"]
    assert received == ['{"type": "noise"}', "plain text", b"raw", '{"type": "wanted", "n": 1}']
    assert await echo_client.receive_nothing()


@pytest.mark.anyio
async def test_expect_timeout_lists_what_arrived_instead(echo_client: WSClient) -> None:
    await echo_client.send_json({"type": "other"})
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"""no message of type 'wanted'.*"type": "other\""""):
        await echo_client.expect("wanted", timeout=0.2)
    assert time.monotonic() - started < 2


@pytest.mark.anyio
async def test_receive_nothing_keeps_a_message_that_arrives(echo_client: WSClient) -> None:
    assert await echo_client.receive_nothing(timeout=0.05)
    await echo_client.send_text("arrives while we wait")
    assert not await echo_client.receive_nothing(timeout=5)
    assert not await echo_client.receive_nothing(timeout=5)  # still pending, not lost
    assert await echo_client.receive() == "arrives while we wait"
    assert await echo_client.receive_nothing(timeout=0.05)
    assert [frame.direction for frame in echo_client.history] == ["sent", "received"]


@pytest.mark.anyio
async def test_server_close_is_recorded(server: LiveServer) -> None:
    async with WSClient(server.ws("/bye")) as ws:
        with pytest.raises(ConnectionClosed):
            await ws.receive()
        assert ws.state == "closed"
        assert ws.close_code == 4321
        assert ws.close_reason == "bye"


@pytest.mark.anyio
async def test_wait_closed_returns_code_and_reason(server: LiveServer) -> None:
    async with WSClient(server.ws("/bye")) as ws:
        assert await ws.wait_closed() == (4321, "bye")
        assert await ws.wait_closed() == (4321, "bye")


@pytest.mark.anyio
async def test_wait_closed_times_out_on_an_open_connection(echo_client: WSClient) -> None:
    await echo_client.send_text("meanwhile")
    with pytest.raises(TimeoutError, match=r"did not close the connection within 0\.2 s"):
        await echo_client.wait_closed(timeout=0.2)
    assert echo_client.history[-1] == Frame("received", "meanwhile", echo_client.history[-1].at)


@pytest.mark.anyio
async def test_client_close_sends_code_and_reason(server: LiveServer) -> None:
    ws = WSClient(server.ws("/echo"))
    await ws.connect()
    assert ws.close_code is None
    await ws.send_text("x")
    await ws.close(4000, "done")
    assert ws.state == "closed"
    assert ws.close_code == 4000  # the server echoes the client's close frame
    await ws.close()  # closing twice does nothing


@pytest.mark.anyio
async def test_negotiated_subprotocol(server: LiveServer) -> None:
    async with WSClient(server.ws("/chat"), subprotocols=["other", "chat"]) as ws:
        assert ws.state == "open"
        assert ws.subprotocol == "chat"
        assert ws.response_headers is not None
        assert ws.response_headers["Sec-WebSocket-Protocol"] == "chat"
    async with WSClient(server.ws("/chat")) as ws:
        assert ws.subprotocol is None


@pytest.mark.anyio
async def test_header_token_origin_and_headers_arrive(server: LiveServer) -> None:
    client = WSClient(
        server.ws("/handshake"),
        token="abc.def.ghi",
        origin="https://app.example.com",
        headers={"X-Trace": "42"},
    )
    async with client as ws:
        seen = await ws.receive_json()
    assert seen["headers"]["authorization"] == "Bearer abc.def.ghi"
    assert seen["headers"]["origin"] == "https://app.example.com"
    assert seen["headers"]["x-trace"] == "42"
    assert "sec-websocket-extensions" not in seen["headers"]  # compression is off
    assert seen["subprotocols"] == []


@pytest.mark.anyio
async def test_subprotocol_token_round_trips(server: LiveServer) -> None:
    token = "needs>>>padding?"  # standard base64 would use '+', '/' and '='
    client = WSClient(
        server.ws("/chat"), subprotocols=["chat"], token=token, token_via="subprotocol"
    )
    async with client as ws:
        offered = (await ws.receive_json())["subprotocols"]
        assert ws.subprotocol == "chat"
    assert offered[0] == "chat"
    entry = offered[1]
    assert entry == TokenFactory.subprotocol(token)
    assert entry.startswith(DEFAULT_SUBPROTOCOL_PREFIX)
    encoded = entry.removeprefix(DEFAULT_SUBPROTOCOL_PREFIX)
    assert not set("+/=") & set(encoded)
    assert unpadded_base64url_decode(encoded) == token


@pytest.mark.anyio
async def test_subprotocol_token_with_a_custom_prefix(server: LiveServer) -> None:
    client = WSClient(
        server.ws("/handshake"),
        token="t",
        token_via="subprotocol",
        subprotocol_prefix="base64url.bearer.authorization.k8s.io.",
    )
    async with client as ws:
        seen = await ws.receive_json()
    assert seen["subprotocols"] == ["base64url.bearer.authorization.k8s.io.dA"]
    assert "authorization" not in seen["headers"]


@pytest.mark.anyio
async def test_refused_handshake_raises_with_status(server: LiveServer) -> None:
    client = WSClient(server.ws("/refuse"))
    with pytest.raises(HandshakeRejected) as refused:
        await client.connect()
    assert refused.value.status == 403
    assert client.state == "rejected"


@pytest.mark.anyio
async def test_denial_response_status_body_and_headers(server: LiveServer) -> None:
    with pytest.raises(HandshakeRejected, match="HTTP 401") as refused:
        async with WSClient(server.ws("/deny")):
            pytest.fail("the handshake should have been refused")
    assert refused.value.status == 401
    assert refused.value.body == b'{"error":"x"}'
    assert refused.value.json() == {"error": "x"}
    assert refused.value.headers["content-type"] == "application/json"


@pytest.mark.anyio
async def test_using_a_client_before_connect_is_an_error(server: LiveServer) -> None:
    client = WSClient(server.ws("/echo"))
    assert client.state == "new"
    with pytest.raises(RuntimeError, match="not connected"):
        await client.send_text("x")
    with pytest.raises(RuntimeError, match="opened connection"):
        await client.wait_closed()


def test_client_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        WSClient("http://127.0.0.1:1/")
    with pytest.raises(ValueError, match="open_timeout"):
        WSClient("ws://127.0.0.1:1/", open_timeout=0)
    with pytest.raises(ValueError, match="one or the other"):
        WSClient("ws://127.0.0.1:1/", token="t", headers=[("authorization", "Basic x")])


# TokenFactory


def decode(token: str, key: str | bytes, algorithm: str = "HS256", **options: Any) -> Any:
    return jwt.decode(token, key, algorithms=[algorithm], **options)


def test_valid_token_claims_and_headers() -> None:
    factory = TokenFactory("s" * 32, audience="api", issuer="https://issuer", kid="key-1", ttl=60)
    token = factory.valid("alice", scopes=["read", "write"], role="admin")
    claims = decode(token, "s" * 32, audience="api", issuer="https://issuer")
    assert claims["sub"] == "alice"
    assert claims["scope"] == "read write"
    assert claims["role"] == "admin"
    assert all(isinstance(claims[name], int) for name in ("iat", "exp"))
    assert claims["exp"] - claims["iat"] == 60
    assert abs(claims["iat"] - time.time()) < 5
    assert jwt.get_unverified_header(token)["kid"] == "key-1"


def test_extra_claims_override_and_none_removes() -> None:
    factory = TokenFactory()
    claims = jwt.get_unverified_claims(factory.valid(sub="bob", exp=None, iat=123, ttl=10))
    assert claims == {"sub": "bob", "iat": 123}


def test_encode_signs_exactly_the_given_claims() -> None:
    factory = TokenFactory(kid="k")
    token = factory.encode({"anything": True}, headers={"typ": "at+jwt"})
    assert decode(token, factory.verification_key) == {"anything": True}
    header = jwt.get_unverified_header(token)
    assert (header["kid"], header["typ"]) == ("k", "at+jwt")


def test_default_secret_is_random() -> None:
    first, second = TokenFactory(), TokenFactory()
    assert isinstance(first.secret, str)
    assert len(first.secret) >= 64
    assert first.secret != second.secret
    assert decode(first.valid(), first.secret)["sub"] == "user-1"
    with pytest.raises(JWTError):
        decode(first.valid(), str(second.secret))


def test_bad_tokens_fail_for_the_reason_they_name() -> None:
    factory = TokenFactory(audience="api", issuer="https://issuer")
    key = factory.verification_key
    checks = {"audience": "api", "issuer": "https://issuer"}
    with pytest.raises(ExpiredSignatureError):
        decode(factory.expired(), key, **checks)
    with pytest.raises(JWTClaimsError, match="not yet valid"):
        decode(factory.not_yet_valid(), key, **checks)
    with pytest.raises(JWTError, match="Signature verification failed"):
        decode(factory.wrong_signature(), key, **checks)
    with pytest.raises(JWTClaimsError, match="audience"):
        decode(factory.wrong_audience(), key, **checks)
    with pytest.raises(JWTClaimsError, match="issuer"):
        decode(factory.wrong_issuer(), key, **checks)
    with pytest.raises(JWTError):
        decode(factory.alg_none(), key, **checks)


def test_expired_and_future_timestamps() -> None:
    factory = TokenFactory()
    now = time.time()
    expired = jwt.get_unverified_claims(factory.expired(ago=120))
    assert abs(expired["exp"] - (now - 120)) < 5
    future = jwt.get_unverified_claims(factory.not_yet_valid(in_=600))
    assert abs(future["nbf"] - (now + 600)) < 5
    assert future["exp"] > future["nbf"]
    # python-jose does not check iat, so a token issued in the future decodes.
    issued = decode(factory.issued_in_future(in_=600), factory.verification_key)
    assert abs(issued["iat"] - (now + 600)) < 5


def test_alg_none_is_unsigned() -> None:
    token = TokenFactory().alg_none("mallory", admin=True)
    assert token.endswith(".")
    assert token.count(".") == 2
    assert jwt.get_unverified_header(token) == {"alg": "none", "typ": "JWT"}
    assert jwt.get_unverified_claims(token)["admin"] is True


def test_wrong_audience_and_issuer_without_configured_ones() -> None:
    factory = TokenFactory()
    with pytest.raises(JWTClaimsError):
        decode(factory.wrong_audience(), factory.verification_key)
    assert jwt.get_unverified_claims(factory.wrong_issuer())["iss"]


def rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return pem(key)


def ec_pem(curve: ec.EllipticCurve) -> str:
    return pem(ec.generate_private_key(curve))


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    ("algorithm", "make_key"),
    [("RS256", rsa_pem), ("ES256", lambda: ec_pem(ec.SECP256R1()))],
)
def test_asymmetric_tokens(algorithm: str, make_key: Any) -> None:
    factory = TokenFactory(algorithm=algorithm, private_key=make_key(), kid="rsa-or-ec")
    assert factory.secret is None
    public_key = factory.public_key
    assert public_key is not None
    assert public_key.startswith("-----BEGIN PUBLIC KEY-----")
    assert factory.verification_key == public_key
    assert decode(factory.valid("carol"), public_key, algorithm)["sub"] == "carol"
    assert jwt.get_unverified_header(factory.valid())["alg"] == algorithm
    wrong = factory.wrong_signature()
    assert jwt.get_unverified_header(wrong)["alg"] == algorithm
    with pytest.raises(JWTError):
        decode(wrong, public_key, algorithm)


def test_subprotocol_helper() -> None:
    assert TokenFactory.subprotocol(">>>?") == "base64url.bearer.Pj4-Pw"
    assert TokenFactory.subprotocol("a", prefix="p.") == "p.YQ"


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        ((), {"algorithm": "none"}, "algorithm='none' is not supported"),
        ((), {"ttl": 0}, "ttl=0"),
        (("",), {}, "secret must not be empty"),
        ((), {"private_key": "pem"}, "private_key is for RS"),
        (("s",), {"algorithm": "RS256"}, "secret is for HS"),
        ((), {"algorithm": "RS256"}, "needs private_key"),
        ((), {"algorithm": "RS256", "private_key": "not a pem"}, "could not be loaded"),
    ],
)
def test_token_factory_rejects_bad_options(
    args: tuple[Any, ...], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TokenFactory(*args, **options)


def test_token_factory_checks_the_key_type() -> None:
    with pytest.raises(ConfigurationError, match="needs an RSA private_key"):
        TokenFactory(algorithm="RS256", private_key=ec_pem(ec.SECP256R1()))
    with pytest.raises(ConfigurationError, match="secp256r1"):
        TokenFactory(algorithm="ES256", private_key=ec_pem(ec.SECP384R1()))


# pytest plugin


def test_plugin_is_registered_through_the_entry_point(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("wsgate")


@pytest.mark.anyio
async def test_plugin_fixtures(wsgate_server: ServerFactory, wsgate_tokens: TokenFactory) -> None:
    live = wsgate_server(APP, ws_max_size=1024)
    assert isinstance(live, LiveServer)
    token = wsgate_tokens.valid("dave")
    assert decode(token, wsgate_tokens.verification_key)["sub"] == "dave"
    async with WSClient(live.ws("/handshake"), token=token) as ws:
        assert (await ws.receive_json())["headers"]["authorization"] == f"Bearer {token}"


def test_plugin_stops_its_servers_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket

        import pytest
        from starlette.applications import Starlette

        PORTS = []

        def test_start(wsgate_server):
            PORTS.append(wsgate_server(Starlette()).port)
            PORTS.append(wsgate_server(Starlette()).port)
            for port in PORTS:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()

        def test_stopped_after_teardown():
            for port in PORTS:
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", port), timeout=5)
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


@pytest.mark.anyio
async def test_a_stopped_server_comes_back_on_the_same_port() -> None:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("up")

    app = Starlette(routes=[Route("/", ok)])
    with LiveServer(app) as first:
        port = first.port
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")
        with LiveServer(app, port=port) as again:
            assert again.port == port
            assert (await client.get(f"{again.url}/")).text == "up"


def test_port_must_be_a_tcp_port() -> None:
    with pytest.raises(ConfigurationError, match="port"):
        LiveServer(Starlette(), port=70000)
