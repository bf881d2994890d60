"""Keys that rotate, as clients see them: a real gate, a real JWKS endpoint, real sockets.

A gate follows its identity provider's JWKS URL with no restart: open connections stay open
and refresh in band with tokens under the new key, new connections get in with them, and the
answers while the endpoint is down, slow or hostile are close codes a client can act on.
HMAC secrets rotate by listing several, the newest first, and with no restart from a file
of secrets that the gate reads again when it changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute, websocket_session
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosed

from tests.auth.idp import JWKS_PATH, IdP
from wsgate import ConfigurationError, Gate, GateConfig, JWTVerifier, RemoteJWKS, gate_user
from wsgate.testing import LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

NEW_SECRET = "the-new-secret-of-at-least-thirty-two-bytes"
OLD_SECRET = "the-old-secret-of-at-least-thirty-two-bytes"


@websocket_session
async def whoami(websocket: WebSocket) -> None:
    """Say who the gate let in, then echo each message."""
    await websocket.accept()
    await websocket.send_json({"type": "hello", "user": gate_user(websocket).identity})
    try:
        while True:
            message = await websocket.receive_json()
            await websocket.send_json({"type": "echo", "payload": message})
    except WebSocketDisconnect:
        pass


def serve(gate: Gate) -> LiveServer:
    return LiveServer(Starlette(routes=[WebSocketRoute("/ws", gate.wrap(whoami))]))


def jwks_gate(url: str, **options: Any) -> Gate:
    """A production gate on the JWKS at ``url``, with RemoteJWKS ``options``."""
    verifier = JWTVerifier(algorithms=["RS256"], jwks=RemoteJWKS(url, **options))
    config = GateConfig(jwt_algorithms=["RS256"], allow_missing_origin=True, rate_limit=None)
    return Gate(config, verifier=verifier)


@pytest.fixture(scope="module")
def idp_keys() -> dict[str, rsa.RSAPrivateKey]:
    return {kid: rsa.generate_private_key(65537, 2048) for kid in ("k1", "k2", "evil")}


@pytest.fixture
def idp(idp_keys: dict[str, rsa.RSAPrivateKey]) -> Iterator[IdP]:
    idp = IdP(idp_keys)
    idp.publish("k1")
    yield idp
    idp.release.set()


@pytest.fixture
def idp_url(idp: IdP) -> Iterator[str]:
    with LiveServer(idp.app) as server:
        yield server.url + JWKS_PATH


async def clock_passes(moment: float) -> None:
    """Wait, at most 5 s, for time.monotonic() to reach ``moment``: an interval to pass."""
    with anyio.fail_after(5):
        while time.monotonic() < moment:  # noqa: ASYNC110 - only the clock ends the interval
            await anyio.sleep(0.01)


async def refresh(ws: WSClient, token: str) -> Any:
    await ws.send_json({"type": "auth", "token": token, "id": 1})
    return await ws.receive_json()


# JWKS URL


async def test_rotation_while_connections_stay_open(idp: IdP, idp_url: str) -> None:
    gate = jwks_gate(idp_url, refetch_interval=0.5)
    with serve(gate) as server:
        async with WSClient(server.ws("/ws"), token=idp.token("k1", "alice")) as alice:
            assert await alice.receive_json() == {"type": "hello", "user": "alice"}
            fetched = time.monotonic()
            assert idp.requests == 1

            idp.publish("k1", "k2")  # the provider rotates: k2 signs from now on
            # Within refetch_interval of the last fetch the gate does not look again.
            async with WSClient(server.ws("/ws"), token=idp.token("k2", "bob")) as early:
                assert await early.wait_closed() == (1008, "invalid_token")
            await clock_passes(fetched + 0.5)
            async with WSClient(server.ws("/ws"), token=idp.token("k2", "bob")) as bob:
                assert await bob.receive_json() == {"type": "hello", "user": "bob"}
            assert idp.requests == 2

            # The connection opened under k1 refreshes in band with a token under k2.
            answer = await refresh(alice, idp.token("k2", "alice"))
            assert answer["type"] == "auth"
            assert answer["id"] == 1
            await alice.send_json({"type": "still-there"})
            assert (await alice.expect("echo"))["payload"] == {"type": "still-there"}
            assert alice.state == "open"
        assert idp.requests == 2
        await gate.aclose()


async def test_made_up_kids_are_refused_after_one_fetch(idp: IdP, idp_url: str) -> None:
    gate = jwks_gate(idp_url)  # refetch_interval 10 s
    with serve(gate) as server:

        async def attempt(n: int) -> tuple[int | None, str]:
            token = idp.token(f"made-up-{n}", signed_by="evil")
            async with WSClient(server.ws("/ws"), token=token) as ws:
                return await ws.wait_closed()

        closes = await asyncio.gather(*(attempt(n) for n in range(20)))
        assert set(closes) == {(1008, "invalid_token")}
        closes = await asyncio.gather(*(attempt(n) for n in range(20, 40)))
        assert set(closes) == {(1008, "invalid_token")}
        assert idp.requests == 1
        async with WSClient(server.ws("/ws"), token=idp.token("k1")) as ws:
            assert (await ws.receive_json())["user"] == "user-1"
        assert idp.requests == 1
        await gate.aclose()


async def test_the_gate_starts_while_the_endpoint_is_down_and_recovers(idp: IdP) -> None:
    with LiveServer(idp.app) as stopped:
        port = stopped.port
    gate = jwks_gate(f"http://127.0.0.1:{port}{JWKS_PATH}", refetch_interval=0.5)
    with serve(gate) as server:
        async with WSClient(server.ws("/ws"), token=idp.token("k1")) as ws:
            assert await ws.wait_closed() == (1013, "auth_unavailable")
        failed = time.monotonic()
        with LiveServer(idp.app, port=port):
            await clock_passes(failed + 0.5)
            async with WSClient(server.ws("/ws"), token=idp.token("k1")) as ws:
                assert (await ws.receive_json())["user"] == "user-1"
        await gate.aclose()


async def test_a_slow_endpoint_is_answered_1013_within_wait_timeout(idp: IdP, idp_url: str) -> None:
    gate = jwks_gate(idp_url, wait_timeout=0.5, refetch_interval=0)
    with serve(gate) as server:
        async with WSClient(server.ws("/ws"), token=idp.token("k1", "alice")) as alice:
            assert (await alice.receive_json())["user"] == "alice"

            idp.publish("k1", "k2")
            idp.mode = "slow"
            started = time.monotonic()
            async with WSClient(server.ws("/ws"), token=idp.token("k2")) as ws:
                assert await ws.wait_closed() == (1013, "auth_unavailable")
            assert time.monotonic() - started < 0.5 + 1.5

            # A refresh that cannot be checked in time leaves the connection as it was.
            answer = await refresh(alice, idp.token("k2", "alice"))
            assert answer["type"] == "error"
            assert answer["error"]["code"] == "auth_unavailable"
            assert alice.state == "open"
            idp.release.set()
        await gate.aclose()


async def test_a_hostile_endpoint_is_answered_1013_and_the_gate_serves_on(
    idp: IdP, idp_url: str
) -> None:
    idp.mode = "huge_streamed"
    gate = jwks_gate(idp_url, refetch_interval=0)
    with serve(gate) as server:
        async with WSClient(server.ws("/ws"), token=idp.token("k1")) as ws:
            assert await ws.wait_closed() == (1013, "auth_unavailable")
        idp.mode = "good"
        async with WSClient(server.ws("/ws"), token=idp.token("k1")) as ws:
            assert (await ws.receive_json())["user"] == "user-1"
        await gate.aclose()


async def test_a_gate_from_the_environment_follows_the_jwks_url(idp: IdP, idp_url: str) -> None:
    env = {
        "WSGATE_JWT_JWKS_URL": idp_url,
        "WSGATE_JWT_ALGORITHMS": "RS256",
        "WSGATE_ALLOW_MISSING_ORIGIN": "true",
    }
    gate = Gate(GateConfig.from_env(env))
    assert idp.requests == 0  # nothing is fetched at start-up
    with serve(gate) as server:
        async with WSClient(server.ws("/ws"), token=idp.token("k1")) as ws:
            assert (await ws.receive_json())["user"] == "user-1"
        await gate.aclose()


# HMAC secrets


async def test_several_secrets_rotate_with_no_lost_tokens() -> None:
    old, new = TokenFactory(OLD_SECRET), TokenFactory(NEW_SECRET)
    env = {"WSGATE_JWT_SECRETS": f"{NEW_SECRET},{OLD_SECRET}", "WSGATE_ALLOW_MISSING_ORIGIN": "1"}
    gate = Gate(GateConfig.from_env(env))
    with serve(gate) as server:
        async with WSClient(server.ws("/ws"), token=old.valid("alice")) as alice:
            assert (await alice.receive_json())["user"] == "alice"
            answer = await refresh(alice, new.valid("alice"))
            assert answer["type"] == "auth"
        async with WSClient(server.ws("/ws"), token=new.valid("bob")) as bob:
            assert (await bob.receive_json())["user"] == "bob"
        other = TokenFactory("a-third-secret-nobody-listed-000000000")
        async with WSClient(server.ws("/ws"), token=other.valid("eve")) as eve:
            assert await eve.wait_closed() == (1008, "invalid_token")


# An HMAC secrets file, read again when it changes


class Clock:
    """The monotonic clock of a verifier, moved by the test: no waiting for the second to
    pass between two looks at the secrets file."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        """Let the second pass: the next token makes the verifier look at the file again."""
        self.now += 1.0


def file_gate(path: Path, clock: Clock) -> Gate:
    """A production gate on the secrets file at ``path``, whose verifier reads ``clock``."""
    config = GateConfig(jwt_secrets_file=path, allow_missing_origin=True, rate_limit=None)
    verifier = JWTVerifier(algorithms=["HS256"], secrets_file=path, clock=clock)
    return Gate(config, verifier=verifier)


async def admitted(server: LiveServer, secret: str, user: str = "alice") -> bool:
    """Whether a handshake with a token signed with ``secret`` gets in; a refusal must be
    invalid_token."""
    async with WSClient(server.ws("/ws"), token=TokenFactory(secret).valid(user)) as ws:
        try:
            hello = await ws.receive_json()
        except ConnectionClosed:
            assert (ws.close_code, ws.close_reason) == (1008, "invalid_token")
            return False
        assert hello == {"type": "hello", "user": user}
        return True


async def test_a_secrets_file_rotates_with_no_restart(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"# HMAC secrets for wsgate, the newest first\n{OLD_SECRET}\n")
    clock = Clock()
    old, new = TokenFactory(OLD_SECRET), TokenFactory(NEW_SECRET)
    with serve(file_gate(path, clock)) as server:
        async with WSClient(server.ws("/ws"), token=old.valid("alice")) as alice:
            assert await alice.receive_json() == {"type": "hello", "user": "alice"}

            # 1. The new secret goes on top. Within a second of its last look the gate does
            # not look again; then it does, and both secrets verify.
            path.write_text(f"{NEW_SECRET}\n\n{OLD_SECRET}\n")
            assert not await admitted(server, NEW_SECRET, "bob")
            clock.tick()
            assert await admitted(server, NEW_SECRET, "bob")
            assert await admitted(server, OLD_SECRET, "carol")

            async with WSClient(server.ws("/ws"), token=old.valid("dave")) as dave:
                assert (await dave.receive_json())["user"] == "dave"

                # 3. Once the old secret's tokens have expired, its line goes.
                path.write_text(f"{NEW_SECRET}\n")
                clock.tick()
                assert not await admitted(server, OLD_SECRET, "carol")
                assert await admitted(server, NEW_SECRET, "bob")

                # Open connections were verified at their handshake: nothing happens to them.
                for ws in (alice, dave):
                    await ws.send_json({"type": "still-there"})
                    assert (await ws.expect("echo"))["payload"] == {"type": "still-there"}
                # An in-band refresh is verified against the file as it is now.
                answer = await refresh(alice, new.valid("alice"))
                assert (answer["type"], answer["id"]) == ("auth", 1)
                await refresh_refused(dave, old.valid("dave"))
            assert alice.state == "open"


async def refresh_refused(ws: WSClient, token: str) -> None:
    await ws.send_json({"type": "auth", "token": token, "id": 1})
    assert await ws.wait_closed() == (1008, "invalid_token")


def unreadable(path: Path) -> None:
    # A directory in its place: os.stat answers, reading fails (chmod would not stop root).
    path.unlink()
    path.mkdir()


SPOILERS: dict[str, Callable[[Path], object]] = {
    "empty": lambda path: path.write_text(""),
    "only comments": lambda path: path.write_text("# the secrets moved to the vault\n\n"),
    "short secret": lambda path: path.write_text(f"{NEW_SECRET}\nshort-secret\n"),
    "unreadable": unreadable,
    "missing": lambda path: path.unlink(),
}


@pytest.mark.parametrize("spoil", SPOILERS.values(), ids=SPOILERS.keys())
async def test_a_bad_rewrite_keeps_the_last_good_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, spoil: Callable[[Path], object]
) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"{NEW_SECRET}\n{OLD_SECRET}\n")
    clock = Clock()
    with serve(file_gate(path, clock)) as server, caplog.at_level(logging.INFO, "wsgate.auth"):
        spoil(path)
        for _ in range(3):  # three looks at the spoilt file, one warning
            clock.tick()
            assert await admitted(server, NEW_SECRET)
            assert await admitted(server, OLD_SECRET)
        assert not await admitted(server, "short-secret")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, caplog.text
        assert str(path) in warnings[0].getMessage()
        assert "The 2 secret(s) read before serve on" in warnings[0].getMessage()

        # Fixed, the file is taken again (and a good change is logged at INFO).
        if path.is_dir():
            path.rmdir()
        path.write_text(f"{NEW_SECRET}\n")
        clock.tick()
        assert not await admitted(server, OLD_SECRET)
        assert await admitted(server, NEW_SECRET)
        assert "the secrets file" in caplog.records[-1].getMessage()
    for secret in (NEW_SECRET, OLD_SECRET, "short-secret"):
        assert secret not in caplog.text


async def test_a_gate_from_the_environment_reads_the_secrets_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"  {NEW_SECRET}  \r\n# {OLD_SECRET} was retired\r\n")
    env = {"WSGATE_JWT_SECRETS_FILE": str(path), "WSGATE_ALLOW_MISSING_ORIGIN": "1"}
    with serve(Gate(GateConfig.from_env(env))) as server:
        assert await admitted(server, NEW_SECRET)
        assert not await admitted(server, OLD_SECRET)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"secrets file .+ cannot be read \(No such file or directory\)\. Create it"),
        ("", r"secrets file .+ holds no secret \(blank lines and lines that start with #"),
        ("# none yet\n\n", r"holds no secret .+ Write the HMAC secret on a line of its own"),
        (
            f"{NEW_SECRET}\nshort-secret\n",
            r"in the secrets file .+, the HMAC secret #2 \(of 2\) is 12 bytes; use at least 32",
        ),
    ],
)
def test_the_secrets_file_must_be_usable_at_start_up(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "secrets"
    if content is not None:
        path.write_text(content)
    env = {"WSGATE_JWT_SECRETS_FILE": str(path), "WSGATE_ALLOW_MISSING_ORIGIN": "1"}
    with pytest.raises(ConfigurationError, match=message) as refused:
        Gate(GateConfig.from_env(env))
    assert "short-secret" not in str(refused.value)


def test_the_secrets_file_cannot_be_combined_with_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"{NEW_SECRET}\n")
    for variable in ("WSGATE_JWT_SECRET", "WSGATE_JWT_SECRETS"):
        env = {"WSGATE_JWT_SECRETS_FILE": str(path), variable: OLD_SECRET}
        with pytest.raises(ConfigurationError) as refused:
            GateConfig.from_env(env)
        name = variable.removeprefix("WSGATE_").lower()
        assert str(refused.value) == (
            f"both {name} ({variable}) and jwt_secrets_file (WSGATE_JWT_SECRETS_FILE) are set; "
            f"put every secret in the file, one per line, the newest first, and unset {name}."
        )


def test_the_file_is_looked_at_at_most_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"{OLD_SECRET}\n")
    clock = Clock()
    verifier = JWTVerifier(algorithms=["HS256"], secrets_file=path, clock=clock)
    looks: list[str] = []
    stat = os.stat

    def counted(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(target) == str(path):
            looks.append(str(target))
        return stat(target, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counted)
    token = TokenFactory(OLD_SECRET).valid("alice")
    for _ in range(100):
        assert verifier.verify_sync(token).subject == "alice"
    assert looks == []
    clock.now += 0.999
    verifier.verify_sync(token)
    assert looks == []
    clock.now += 0.001
    for _ in range(100):
        verifier.verify_sync(token)
    assert len(looks) == 1


def test_a_rewrite_of_the_same_size_is_seen(tmp_path: Path) -> None:
    # Written within one tick of the file system's timestamps, the two files have the same
    # size and times: a file modified in the last two seconds is read again regardless.
    path = tmp_path / "secrets"
    path.write_text(f"{OLD_SECRET}\n")
    clock = Clock()
    verifier = JWTVerifier(algorithms=["HS256"], secrets_file=path, clock=clock)
    assert len(NEW_SECRET) == len(OLD_SECRET)
    path.write_text(f"{NEW_SECRET}\n")
    clock.tick()
    assert verifier.verify_sync(TokenFactory(NEW_SECRET).valid("bob")).subject == "bob"
