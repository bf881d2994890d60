"""The same wire cases against every ASGI server wsgate supports, each serving
``examples.app:app`` in its own process, configured through ``WSGATE_*`` variables.

A server that is not installed fails here: the ``servers`` extra pins them all.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wsgate.close_codes import CONNECTION_LIMIT, INVALID_TOKEN, Refusal
from wsgate.testing import HandshakeRejected, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SECRET = "server-matrix-secret-that-is-long-enough-0123456789"
ORIGIN = "https://app.example.com"
SERVER_CAP = 32768  # the example app's server_max_size: 4 x the gate's 8 KiB
START_TIMEOUT = 20.0
TOKENS = TokenFactory(SECRET)


@dataclass(frozen=True)
class Server:
    """One ASGI server as the matrix runs it, and how it differs on the wire.

    Attributes:
        argv: The command line, given the port.
        denial_body: True when it offers the websocket.http.response extension, so that a
            refused handshake carries the row's status and a JSON body.
        drops_reasons: True when it drops close reasons and refuses codes outside 1000 and
            3000-4999: wsgate then sends an error frame first and a code from 4100-4199.
        size_cap: The close code a client sees when it sends a message over SERVER_CAP
            (1009; daphne drops the connection, 1006), or None when the server has no such
            cap and the gate's own limit answers with an error frame.
    """

    name: str
    argv: Callable[[int], list[str]]
    denial_body: bool = True
    drops_reasons: bool = False
    size_cap: int | None = 1009


def _uvicorn(ws: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *(sys.executable, "-m", "uvicorn", "examples.app:app", "--host", "127.0.0.1"),
        *("--port", str(port), "--ws", ws, "--ws-max-size", str(SERVER_CAP)),
    ]


SERVERS = [
    Server("uvicorn-websockets", _uvicorn("websockets")),
    Server("uvicorn-websockets-sansio", _uvicorn("websockets-sansio")),
    Server("uvicorn-wsproto", _uvicorn("wsproto")),
    Server(
        "granian",
        lambda port: [
            *(sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"),
            *("--port", str(port), "--workers", "1", "examples.app:app"),
        ],
        size_cap=None,
    ),
    Server(
        "hypercorn",
        lambda port: [
            *(sys.executable, "-m", "hypercorn", "examples.app:app"),
            *("--bind", f"127.0.0.1:{port}", "--config", str(HERE / "hypercorn.toml")),
        ],
    ),
    Server(
        "daphne",
        lambda port: [
            *(sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)),
            *("--websocket-max-message-size", str(SERVER_CAP), "examples.app:app"),
        ],
        denial_body=False,
        drops_reasons=True,
        size_cap=1006,
    ),
]


@dataclass(frozen=True)
class Running:
    server: Server
    url: str
    """The ws:// base of the app with the default settings."""
    reject_url: str
    """The ws:// base of the app with WSGATE_REJECT_BEFORE_ACCEPT=true."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serving(port: int) -> bool:
    """Whether the app answers HTTP on ``port``: a server may listen before its app has
    started (a lifespan still running), and a WebSocket opened then may time out."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from env
    try:
        with direct.open(f"http://127.0.0.1:{port}/ws/config", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:  # not listening yet, or refused, or not answering yet
        return False


@pytest.fixture(scope="module", params=SERVERS, ids=[server.name for server in SERVERS])
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    """The server, twice: default settings and reject_before_accept, each on a free port."""
    server: Server = request.param
    workdir = Path(tempfile.mkdtemp(prefix=f"wsgate-{server.name}-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")} | {
        "WSGATE_ENV": "production",
        "WSGATE_JWT_SECRET": SECRET,
        "WSGATE_ALLOWED_ORIGINS": ORIGIN,
        "WSGATE_ALLOW_MISSING_ORIGIN": "true",
    }
    processes: list[tuple[subprocess.Popen[bytes], int, Path]] = []
    try:
        for name, extra in [("default", {}), ("reject", {"WSGATE_REJECT_BEFORE_ACCEPT": "true"})]:
            port, log = _free_port(), workdir / f"{name}.log"
            env = base | extra | {"WSGATE_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/{name}.db"}
            with log.open("wb") as output:
                process = subprocess.Popen(
                    server.argv(port), cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
                )
            processes.append((process, port, log))
        deadline = time.monotonic() + START_TIMEOUT
        for process, port, log in processes:
            while not _serving(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{server.name} did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.05)
        (_, port, _), (_, reject_port, _) = processes
        yield Running(server, f"ws://127.0.0.1:{port}", f"ws://127.0.0.1:{reject_port}")
    finally:
        for process, _, _ in processes:
            process.terminate()
        for process, _, _ in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def expect_refusal(ws: WSClient, running: Running, refusal: Refusal) -> None:
    """The connection ends with ``refusal`` as this server can send it."""
    if not running.server.drops_reasons:
        assert await ws.wait_closed() == (refusal.close_code, refusal.reason)
        return
    code = refusal.close_code
    sent = code if code == 1000 or 3000 <= code <= 4999 else code + 3100
    frame = await ws.receive_json()
    assert frame["type"] == "error"
    assert frame["error"]["code"] == refusal.reason
    assert frame["error"]["close_code"] == sent
    assert await ws.wait_closed() == (sent, "")


async def test_echo_with_a_header_token(running: Running) -> None:
    async with WSClient(f"{running.url}/ws/secure", token=TOKENS.valid("alice")) as ws:
        await ws.send_json({"type": "echo", "payload": "hi", "id": 1})
        assert await ws.receive_json() == {"type": "echo", "payload": "hi", "id": 1}


async def test_echo_with_a_subprotocol_token(running: Running) -> None:
    async with WSClient(
        f"{running.url}/ws/secure",
        origin=ORIGIN,
        subprotocols=["chat"],
        token=TOKENS.valid("bob"),
        token_via="subprotocol",
    ) as ws:
        assert ws.subprotocol == "chat"
        await ws.send_json({"type": "whoami"})
        assert (await ws.receive_json())["payload"]["user"] == "bob"


async def test_an_origin_refusal(running: Running) -> None:
    with pytest.raises(HandshakeRejected) as refused:
        async with WSClient(
            f"{running.url}/ws/secure", origin="https://evil.example", token=TOKENS.valid()
        ):
            pass
    assert refused.value.status == 403
    if running.server.denial_body:
        assert refused.value.json() == {"error": "origin_not_allowed"}


async def test_an_auth_refusal(running: Running) -> None:
    async with WSClient(f"{running.url}/ws/secure", token="not-a-jwt") as ws:
        await expect_refusal(ws, running, INVALID_TOKEN)


async def test_eviction_of_the_oldest_connection(running: Running) -> None:
    token = TOKENS.valid(f"evicted-on-{running.server.name}")
    clients = [WSClient(f"{running.url}/ws/secure", token=token) for _ in range(4)]
    try:
        for client in clients:
            await client.connect()
        await expect_refusal(clients[0], running, CONNECTION_LIMIT)
        await clients[3].send_json({"type": "echo", "payload": 4})
        assert (await clients[3].receive_json())["payload"] == 4
    finally:
        for client in clients:
            await client.close()


@pytest.mark.parametrize(
    ("token", "status", "reason"),
    [(None, 401, "auth_required"), ("not-a-jwt", 401, "invalid_token")],
)
async def test_reject_before_accept_statuses(
    running: Running, token: str | None, status: int, reason: str
) -> None:
    with pytest.raises(HandshakeRejected) as refused:
        async with WSClient(f"{running.reject_url}/ws/secure", token=token):
            pass
    if running.server.denial_body:
        assert (refused.value.status, refused.value.json()) == (status, {"error": reason})
    else:
        assert refused.value.status == 403  # the status a server without the extension sends


async def test_the_servers_cap_on_message_size(running: Running) -> None:
    async with WSClient(f"{running.url}/ws/secure", token=TOKENS.valid("carol")) as ws:
        await ws.send_json({"type": "echo", "payload": "x" * (SERVER_CAP + 1000)})
        if running.server.size_cap is not None:
            code, _ = await ws.wait_closed()
            assert code == running.server.size_cap
        else:
            # No cap in the server: the gate's own 8 KiB limit answers, and the connection stays.
            frame = await ws.receive_json()
            assert frame["error"]["code"] == "message_too_large"
            await ws.send_json({"type": "echo", "payload": 1})
            assert (await ws.receive_json())["payload"] == 1


async def test_messages_that_need_the_chat_store(running: Running) -> None:
    """``say`` and ``history`` use the example's store, which the lifespan starts, or the
    first of them where the server runs no lifespan (daphne). Two connections whose first
    such messages arrive together start it once."""
    room = f"store-{running.server.name}"
    speakers = [
        WSClient(f"{running.url}/ws/secure", token=TOKENS.valid(name)) for name in ("ann", "bob")
    ]
    try:
        for speaker in speakers:
            await speaker.connect()
            await speaker.send_json({"type": "join", "room": room})
            assert (await speaker.expect("joined"))["room"] == room
        for speaker, text in zip(speakers, ("one", "two"), strict=True):
            await speaker.send_json({"type": "say", "room": room, "text": text})
        for speaker in speakers:
            said = [(await speaker.expect("said"))["text"] for _ in range(2)]
            assert sorted(said) == ["one", "two"]
        await speakers[0].send_json({"type": "history", "room": room})
        history = (await speakers[0].expect("history"))["payload"]
        assert sorted(entry["text"] for entry in history) == ["one", "two"]
    finally:
        for speaker in speakers:
            await speaker.close()
