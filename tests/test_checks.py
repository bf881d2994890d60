"""The contract of a user's own checks (wsgate.Check), over real sockets: each hook point, the
rows a check declares, what a gate publishes and counts about them, and what it refuses at
start-up."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute, websocket_session
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from wsgate import (
    DROP,
    Check,
    ConfigurationError,
    Connection,
    Engine,
    Gate,
    GateConfig,
    GatedEndpoint,
    Identity,
    JWTVerifier,
    MessageError,
    Refusal,
    Verdict,
    Verifier,
    decoded,
    discovery_routes,
    gate_user,
    rpc_method,
)
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "checks-test-secret-that-is-long-enough-0123456789"
ORIGIN = "https://app.example.com"
tokens = TokenFactory(SECRET)
_subjects = itertools.count(1)

BLOCKED = Refusal("blocked", 4403, 403, False, "The client is on the deny-list.")
BANNED = Refusal("banned_user", 4404, 403, False, "The token's subject is banned.")
SWORE = Refusal("swore", 4400, None, False, "A message held a forbidden word.")
SPAM = MessageError("spam", -32010, "The message's payload looks like spam; it was dropped.")
QUOTA = MessageError("quota", -32011, "The connection sent more messages than its quota.")
SPAM_TEXT = "Messages about spam are not accepted."


def subject() -> str:
    """A user of its own for each connection, so no test shares a rate-limit budget."""
    return f"user-{next(_subjects)}"


class Journal:
    """What the hooks saw, written in the server's thread and read in the test's."""

    def __init__(self) -> None:
        self.entries: list[Any] = []
        self._changed = threading.Condition()

    def add(self, entry: Any) -> None:
        with self._changed:
            self.entries.append(entry)
            self._changed.notify_all()

    async def until(self, predicate: Callable[[list[Any]], bool], seconds: float = 5.0) -> None:
        """Wait, at most ``seconds``, until ``predicate(entries)`` holds."""

        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: predicate(self.entries), seconds)

        if not await anyio.to_thread.run_sync(wait):
            raise AssertionError(f"not within {seconds} s; the journal holds {self.entries}")


class CountingVerifier(Verifier):
    """The gate's JWT verification, counting its calls."""

    def __init__(self) -> None:
        self.jwt = JWTVerifier(algorithms=["HS256"], secret=SECRET)
        self.calls = 0

    async def verify(self, token: str) -> Identity:
        self.calls += 1
        return await self.jwt.verify(token)


def header(scope: Scope, name: bytes) -> bytes:
    return next((value for key, value in scope["headers"] if key == name), b"")


class DenyList(Check):
    """A sync before_auth handshake hook: refuses ``X-Client: badbot``."""

    close_codes = (BLOCKED,)

    def handshake(self, scope: Scope) -> Refusal | None:
        return BLOCKED if b"badbot" in header(scope, b"x-client") else None

    def describe(self) -> dict[str, Any]:
        return {"blocks": "X-Client containing 'badbot'"}


class BanList(Check):
    """An async after_auth handshake hook: sees the user, refuses ``mallory``."""

    stage = "after_auth"
    close_codes = (BANNED,)

    def __init__(self) -> None:
        self.seen = Journal()

    async def handshake(self, scope: Scope) -> Refusal | None:
        user = gate_user(scope).identity
        self.seen.add(user)
        return BANNED if user == "mallory" else None


def is_spam(message: Message) -> bool:
    """Whether the payload (or the JSON-RPC params) of a parsed message mentions spam."""
    value = decoded(message)
    return isinstance(value, dict) and any(
        "spam" in str(value.get(key, "")) for key in ("payload", "params")
    )


class AsyncNoSpam(Check):
    """An async message hook: answers spam with its own error frame and drops it."""

    error_frames = (SPAM,)

    async def message(self, state: Connection, message: Message) -> Verdict:
        if is_spam(message):
            await state.send_error(SPAM, SPAM_TEXT, to=message)
            return DROP
        return None


class SyncNoSpam(Check):
    """A sync message hook: drops spam without an answer."""

    def message(self, state: Connection, message: Message) -> Verdict:
        return DROP if is_spam(message) else None


def swearing(message: Message) -> Verdict:
    return SWORE if decoded(message).get("payload") == "darn" else None


class SyncSwearFilter(Check):
    """A sync message hook that closes the connection with its own row."""

    close_codes = (SWORE,)

    def message(self, state: Connection, message: Message) -> Verdict:
        return swearing(message)


class AsyncSwearFilter(Check):
    """The same, async."""

    close_codes = (SWORE,)

    async def message(self, state: Connection, message: Message) -> Verdict:
        return swearing(message)


class Recorder(Check):
    """Records the parsed messages a user's message hook is handed."""

    def __init__(self) -> None:
        self.seen = Journal()

    def message(self, state: Connection, message: Message) -> Verdict:
        self.seen.add(decoded(message))
        return None


@dataclass
class Usage:
    """One connection's state, as Lifecycle.open() makes it."""

    connection: Connection
    events: list[str] = field(default_factory=list)
    messages: int = 0


class Lifecycle(Check):
    """Every hook, sync and async, writing to the state of its connection. Each connection
    may send two messages; the third gets this check's own ``quota`` error frame."""

    error_frames = (QUOTA,)

    def __init__(self) -> None:
        self.opened = Journal()
        self.ended = Journal()

    def open(self, connection: Connection) -> Usage:
        usage = Usage(connection, ["open"])
        self.opened.add(usage)
        return usage

    def accepted(self, state: Usage) -> None:
        state.events.append("accepted")

    async def serve(self, state: Usage) -> None:
        state.events.append("serve")

    async def message(self, state: Usage, message: Message) -> Verdict:
        state.events.append("message")
        state.messages += 1
        if state.messages > 2:
            await state.connection.send_error(QUOTA, "Two messages per connection.", to=message)
            return DROP
        return None

    def sent(self, state: Usage, message: Message) -> None:
        state.events.append(f"sent {message['type']}")

    def end(self, state: Usage) -> None:
        state.events.append("end")
        self.ended.add(state)


class AsyncEnd(Check):
    """An async end hook."""

    def __init__(self) -> None:
        self.ended = Journal()

    async def end(self, state: Connection) -> None:
        self.ended.add(state.id)


class Chat(GatedEndpoint):
    async def on_message(self, websocket: WebSocket, message: dict[str, Any]) -> Any:
        if message["type"] == "echo":
            return message
        if message["type"] == "whoami":
            return {"type": "whoami", "payload": {"user": gate_user(websocket).identity}}
        return await super().on_message(websocket, message)


class Tools(GatedEndpoint):
    protocol = "jsonrpc"

    @rpc_method("add")
    async def add(self, websocket: WebSocket, params: Any) -> int:
        return sum(params)


async def one_answer(websocket: WebSocket) -> None:
    """Answers one message, then closes and returns."""
    await websocket.accept()
    message = await websocket.receive_json()
    await websocket.send_json({"type": "bye", "payload": message.get("payload")})
    await websocket.close()


async def refuse_at_once(websocket: WebSocket) -> None:
    """The app's own refusal: accepts and closes at once."""
    await websocket.accept()
    await websocket.close(4099, "not today")


def gate_of(*checks: Check, **settings: Any) -> Gate:
    config = GateConfig(jwt_secret=SECRET, allowed_origins=(ORIGIN,), **settings)
    return Gate(config, checks=list(checks))


def app_of(gate: Gate) -> Starlette:
    return Starlette(
        routes=[
            gate.route("/ws", Chat),
            gate.route("/bye", one_answer),
            gate.route("/refuse", refuse_at_once),
            gate.route("/rpc", Tools),
            *discovery_routes(gate),
        ]
    )


def client(
    server: LiveServer, path: str = "/ws", *, sub: str | None = None, **options: Any
) -> WSClient:
    options.setdefault("origin", ORIGIN)
    if "token" not in options:
        options["token"] = tokens.valid(sub or subject())
    return WSClient(server.ws(path), **options)


@pytest.fixture
def verifier() -> CountingVerifier:
    return CountingVerifier()


# The handshake


async def test_a_before_auth_check_refuses_with_its_row_before_any_token_is_verified(
    verifier: CountingVerifier,
) -> None:
    gate = Gate(
        GateConfig(jwt_secret=SECRET, allowed_origins=(ORIGIN,)),
        verifier=verifier,
        checks=[DenyList()],
    )
    bad = {"X-Client": "badbot/1.0"}
    with LiveServer(app_of(gate)) as server:
        with pytest.raises(HandshakeRejected) as refused:
            await client(server, headers=bad).connect()
        assert (refused.value.status, refused.value.json()) == (403, {"error": "blocked"})
        # A forged token is not even looked at: the deny-list answers first.
        with pytest.raises(HandshakeRejected) as refused:
            await client(server, headers=bad, token=tokens.wrong_signature()).connect()
        assert refused.value.json() == {"error": "blocked"}
        assert verifier.calls == 0
        # The origin check runs before the user's check.
        with pytest.raises(HandshakeRejected) as refused:
            await client(server, headers=bad, origin="https://evil.example").connect()
        assert refused.value.json() == {"error": "origin_not_allowed"}
        async with client(server, sub="ann") as ws:
            await ws.send_json({"type": "whoami"})
            assert (await ws.expect("whoami"))["payload"] == {"user": "ann"}
        assert verifier.calls == 1
    stats = gate.stats()["endpoints"]["/ws"]
    assert stats["connections_refused"] == {"blocked": 2, "origin_not_allowed": 1}
    assert stats["connections_opened"] == 1


async def test_an_after_auth_check_sees_the_user_and_refuses_with_its_row() -> None:
    ban = BanList()
    gate = gate_of(ban)
    with LiveServer(app_of(gate)) as server:
        async with client(server, sub="ann") as ws:
            await ws.send_json({"type": "whoami"})
            assert (await ws.expect("whoami"))["payload"] == {"user": "ann"}
        with pytest.raises(HandshakeRejected) as refused:
            await client(server, sub="mallory").connect()
        assert (refused.value.status, refused.value.json()) == (403, {"error": "banned_user"})
        # Authentication refuses first: the check never runs without a user.
        async with client(server, token=tokens.expired("mallory")) as ws:
            assert await ws.wait_closed() == (1008, "token_expired")
    assert ban.seen.entries == ["ann", "mallory"]
    assert gate.stats()["connections_refused"] == {"banned_user": 1, "token_expired": 1}


async def test_a_handshake_row_without_an_http_status_accepts_and_closes_with_its_code() -> None:
    class Sunset(Check):
        close_codes = (SWORE,)

        def handshake(self, scope: Scope) -> Refusal | None:
            return SWORE

    lifecycle = Lifecycle()
    gate = gate_of(Sunset(), lifecycle)
    with LiveServer(app_of(gate)) as server:
        async with client(server) as ws:
            assert await ws.wait_closed() == (4400, "swore")
    assert ws.history == []
    assert gate.stats()["connections_refused"] == {"swore": 1}
    assert gate.stats()["connections_opened"] == 0
    assert lifecycle.opened.entries == []  # a refused handshake opens no check's state


async def test_without_the_denial_extension_a_refusal_is_an_accept_then_its_close() -> None:
    gate = gate_of(DenyList())
    app = gate.wrap(Chat, path="/ws")
    scope: dict[str, Any] = {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "headers": [
            (b"origin", ORIGIN.encode()),
            (b"x-client", b"badbot/1.0"),
            (b"authorization", f"Bearer {tokens.valid()}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "scheme": "ws",
        "subprotocols": [],
    }  # and no "extensions": a server without websocket.http.response
    incoming: list[Message] = [{"type": "websocket.connect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(5):
        await app(scope, receive, send)
    assert sent == [
        {"type": "websocket.accept", "subprotocol": None},
        {"type": "websocket.close", "code": 4403, "reason": "blocked"},
    ]
    assert gate.stats()["connections_refused"] == {"blocked": 1}
    assert gate.stats()["connections_opened"] == 0


# A connection's state, from open to end


async def test_open_and_end_run_once_per_connection_with_a_state_of_its_own() -> None:
    lifecycle = Lifecycle()
    gate = gate_of(lifecycle)
    with LiveServer(app_of(gate)) as server:
        async with client(server) as first, client(server) as second:
            for n in range(3):
                await first.send_json({"type": "echo", "payload": f"first {n}"})
            await second.send_json({"type": "echo", "payload": "second 0"})
            assert (await first.expect("echo"))["payload"] == "first 0"
            assert (await first.expect("echo"))["payload"] == "first 1"
            quota = await first.expect("error")
            # The second connection has its own count: its first message passes.
            assert (await second.expect("echo"))["payload"] == "second 0"
            await first.send_json({"type": "echo", "payload": "first 3"})
            assert (await first.expect("error"))["error"]["code"] == "quota"
        await lifecycle.ended.until(lambda ended: len(ended) == 2)
    assert quota["error"] == {"code": "quota", "message": "Two messages per connection."}
    opened, ended = lifecycle.opened.entries, lifecycle.ended.entries
    assert len(opened) == 2
    assert opened[0] is not opened[1]
    assert {id(state) for state in ended} == {id(state) for state in opened}
    first_state = next(state for state in opened if state.messages == 4)
    assert first_state.events == [
        "open",
        "accepted",
        "sent websocket.accept",
        "serve",
        "message",
        "sent websocket.send",
        "message",
        "sent websocket.send",
        "message",
        "message",
        "end",
    ]
    assert gate.stats()["message_errors"] == {"quota": 2}


async def test_end_runs_once_when_the_app_returns() -> None:
    lifecycle, async_end = Lifecycle(), AsyncEnd()
    gate = gate_of(lifecycle, async_end)
    with LiveServer(app_of(gate)) as server:
        async with client(server, "/bye") as ws:
            await ws.send_json({"type": "note", "payload": 1})
            assert (await ws.expect("bye"))["payload"] == 1
            assert await ws.wait_closed() == (1000, "")
        await lifecycle.ended.until(lambda ended: len(ended) == 1)
        await async_end.ended.until(lambda ended: len(ended) == 1)
    [state] = lifecycle.ended.entries
    assert state.events[-3:] == ["sent websocket.send", "sent websocket.close", "end"]
    assert state.events.count("end") == 1
    assert async_end.ended.entries == [state.connection.id]


async def test_an_app_that_accepts_and_closes_at_once_is_never_served_but_is_ended() -> None:
    lifecycle = Lifecycle()
    gate = gate_of(lifecycle)
    with LiveServer(app_of(gate)) as server:
        async with client(server, "/refuse") as ws:
            assert await ws.wait_closed() == (4099, "not today")
        await lifecycle.ended.until(lambda ended: len(ended) == 1)
    [state] = lifecycle.ended.entries
    assert state.events == [
        "open",
        "accepted",
        "sent websocket.accept",
        "sent websocket.close",
        "end",
    ]


@pytest.mark.parametrize("swear_filter", [SyncSwearFilter, AsyncSwearFilter])
async def test_a_message_hook_that_returns_a_row_closes_with_it_and_it_is_counted(
    swear_filter: type[Check],
) -> None:
    lifecycle = Lifecycle()
    gate = gate_of(swear_filter(), lifecycle)
    with LiveServer(app_of(gate)) as server:
        async with client(server) as ws:
            await ws.send_json({"type": "echo", "payload": "hello"})
            assert (await ws.expect("echo"))["payload"] == "hello"
            await ws.send_json({"type": "echo", "payload": "darn"})
            assert await ws.wait_closed() == (4400, "swore")
        await lifecycle.ended.until(lambda ended: len(ended) == 1)
    [state] = lifecycle.ended.entries
    assert state.messages == 1  # the refused message went no further down the chain
    assert state.events.count("end") == 1
    assert [frame.json()["payload"] for frame in ws.history if frame.direction == "received"] == [
        "hello"
    ]
    stats = gate.stats()["endpoints"]["/ws"]
    assert stats["connections_closed"] == {"swore": 1}
    assert stats["connections_refused"] == {}


# Messages


async def test_a_message_hook_answers_with_its_own_error_frame_and_the_connection_stays() -> None:
    gate = gate_of(AsyncNoSpam())
    with LiveServer(app_of(gate)) as server:
        async with client(server) as ws:
            await ws.send_json({"type": "echo", "payload": "buy spam", "id": 7})
            await ws.send_json({"type": "echo", "payload": "hello", "id": 8})
            assert await ws.receive_json() == {
                "type": "error",
                "error": {"code": "spam", "message": SPAM_TEXT},
                "id": 7,
            }
            # The next message reaches the endpoint, and the dropped one never did.
            assert await ws.receive_json() == {"type": "echo", "payload": "hello", "id": 8}
            assert ws.state == "open"
    stats = gate.stats()["endpoints"]["/ws"]
    assert stats["message_errors"] == {"spam": 1}
    assert stats["connections_closed"] == {"client": 1}


async def test_a_checks_error_frame_takes_the_shape_of_the_clients_format() -> None:
    gate = gate_of(AsyncNoSpam())
    with LiveServer(app_of(gate)) as server:
        async with client(server) as ws:
            await ws.send_json({"event": "echo", "data": "buy spam", "id": 1})
            assert await ws.receive_json() == {
                "event": "error",
                "data": {"code": "spam", "message": SPAM_TEXT},
                "id": 1,
            }
        async with client(server, "/rpc") as ws:
            await ws.send_json({"jsonrpc": "2.0", "id": 2, "method": "add", "params": ["spam"]})
            assert await ws.receive_json() == {
                "jsonrpc": "2.0",
                "id": 2,
                "error": {"code": -32010, "message": SPAM_TEXT, "data": {"reason": "spam"}},
            }
    assert gate.stats()["message_errors"] == {"spam": 2}


async def test_a_sync_message_hook_drops_silently() -> None:
    gate = gate_of(SyncNoSpam())
    with LiveServer(app_of(gate)) as server:
        async with client(server) as ws:
            await ws.send_json({"type": "echo", "payload": "buy spam"})
            await ws.send_json({"type": "echo", "payload": "hello"})
            assert await ws.receive_json() == {"type": "echo", "payload": "hello"}
    assert gate.stats()["message_errors"] == {}
    assert gate.stats()["messages_received"] == 2


async def test_user_message_hooks_see_only_parsed_valid_messages() -> None:
    recorder = Recorder()
    gate = gate_of(recorder, max_message_bytes=256)
    with LiveServer(app_of(gate)) as server:
        async with client(server) as ws:
            await ws.send_text("{not json")
            assert (await ws.expect("error"))["error"]["code"] == "invalid_json"
            await ws.send_json({"payload": "no type"})
            assert (await ws.expect("error"))["error"]["code"] == "invalid_message"
            await ws.send_bytes(b"\x00\x01")
            assert (await ws.expect("error"))["error"]["code"] == "unsupported_data"
            await ws.send_json({"type": "echo", "payload": "x" * 300})
            assert (await ws.expect("error"))["error"]["code"] == "message_too_large"
            await ws.send_json({"type": "ping"})
            assert await ws.receive_json() == {"type": "pong"}
            await ws.send_json({"type": "echo", "payload": "ok"})
            assert (await ws.expect("echo"))["payload"] == "ok"
    assert recorder.seen.entries == [{"type": "echo", "payload": "ok"}]


# What the gate publishes and counts


async def test_the_rows_and_the_checks_are_published_and_counted_from_zero() -> None:
    gate = gate_of(DenyList(), AsyncNoSpam(), BanList())
    assert gate.close_codes[-2:] == (BLOCKED, BANNED)
    assert gate.error_frames[-1] == SPAM
    app = app_of(gate)  # the metrics' series are bound when the endpoints are wrapped
    zero = {(key, reason) for key, endpoint, reason, value in gate.metrics.samples() if not value}
    assert {("connections_refused", "blocked"), ("connections_closed", "blocked")} <= zero
    assert {("connections_refused", "banned_user"), ("message_errors", "spam")} <= zero
    checks = [
        {"name": "DenyList", "stage": "before_auth", "blocks": "X-Client containing 'badbot'"},
        {"name": "AsyncNoSpam", "stage": "before_auth"},
        {"name": "BanList", "stage": "after_auth"},
    ]
    with LiveServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            public = (await http.get("/ws/config")).json()
            bearer = {"Authorization": f"Bearer {tokens.valid()}"}
            secure = await http.get("/ws/secure/config", headers=bearer)
    assert public["close_codes"][-2:] == [
        {
            "code": 4403,
            "reason": "blocked",
            "http_status": 403,
            "handshake_only": False,
            "description": "The client is on the deny-list.",
        },
        {
            "code": 4404,
            "reason": "banned_user",
            "http_status": 403,
            "handshake_only": False,
            "description": "The token's subject is banned.",
        },
    ]
    assert public["errors"][-1] == {
        "code": "spam",
        "jsonrpc_code": -32010,
        "description": "The message's payload looks like spam; it was dropped.",
    }
    assert public["checks"] == checks
    assert secure.status_code == 200
    assert secure.json()["checks"] == checks


def test_two_checks_may_declare_the_same_row() -> None:
    class AlsoDenies(DenyList):
        pass

    gate = gate_of(DenyList(), AlsoDenies())
    assert gate.close_codes.count(BLOCKED) == 1


# Configuration errors


class TakesAuthRequired(Check):
    close_codes = (Refusal("auth_required", 4401, 401, False, "Mine."),)


class OtherBlocked(Check):
    close_codes = (Refusal("blocked", 4409, 403, False, "Another row named blocked."),)


class TakesRateLimited(Check):
    error_frames = (MessageError("rate_limited", -32012, "Mine."),)


class ProtocolCode(Check):
    close_codes = (Refusal("policy", 1008, 403, False, "Not an application code."),)


class TooHighCode(Check):
    close_codes = (Refusal("too_high", 5000, 403, False, "Outside 4000-4999."),)


class OkStatus(Check):
    close_codes = (Refusal("ok_status", 4410, 200, False, "Not a refusal status."),)


class Sideways(Check):
    stage = "after_format"


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        ([TakesAuthRequired()], r"two close_codes rows are named 'auth_required'"),
        ([DenyList(), OtherBlocked()], r"two close_codes rows are named 'blocked'"),
        ([TakesRateLimited()], r"two error_frames rows are named 'rate_limited'"),
        ([ProtocolCode()], r"has code 1008; an application's own close codes are 4000-4999"),
        ([TooHighCode()], r"has code 5000; an application's own close codes are 4000-4999"),
        ([OkStatus()], r"has http_status 200; .* 4xx or 5xx"),
        ([object()], r"checks must be wsgate\.Check instances"),
        (DenyList(), r"checks must be a list of checks, not one"),
        ([Sideways()], r"Sideways\.stage is 'after_format'"),
    ],
    ids=[
        "reason-of-wsgate",
        "reason-of-another-check",
        "error-code-of-wsgate",
        "close-code-1008",
        "close-code-5000",
        "http-status-200",
        "not-a-check",
        "one-check-not-in-a-list",
        "bad-stage",
    ],
)
def test_a_gate_refuses_bad_checks_at_start_up(checks: Any, message: str) -> None:
    config = GateConfig(jwt_secret=SECRET, allowed_origins=(ORIGIN,))
    with pytest.raises(ConfigurationError, match=message):
        Gate(config, checks=checks)


def test_an_engine_refuses_what_is_not_a_check() -> None:
    with pytest.raises(ConfigurationError, match=r"wsgate\.Check instances"):
        Engine(websocket_session(one_answer), [object()])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match=r"Sideways\.stage is 'after_format'"):
        Engine(websocket_session(one_answer), [Sideways()])


class AsyncOpen(Check):
    async def open(self, connection: Connection) -> Any:
        return connection


class AsyncSent(Check):
    async def sent(self, state: Any, message: Message) -> None:  # type: ignore[override]
        pass


@pytest.mark.parametrize(("check", "hook"), [(AsyncOpen(), "open"), (AsyncSent(), "sent")])
def test_hooks_that_cannot_wait_are_refused_as_async_at_start_up(check: Check, hook: str) -> None:
    message = rf"{type(check).__name__}\.{hook} is an async def; it must be a plain def"
    with pytest.raises(ConfigurationError, match=message):
        Gate(GateConfig(jwt_secret=SECRET, allowed_origins=(ORIGIN,)), checks=[check])
    with pytest.raises(ConfigurationError, match=message):
        Engine(websocket_session(one_answer), [check])


class Wrong(Check):
    def message(self, state: Any, message: Message) -> Any:
        return False  # neither None, DROP nor a row


async def test_a_message_hook_that_returns_something_else_fails_loudly() -> None:
    failures: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await receive()
        except TypeError as exc:
            failures.append(exc)
        await send({"type": "websocket.close", "code": 1011})

    with LiveServer(Engine(app, [Wrong()])) as server:
        async with WSClient(server.ws("/ws")) as ws:
            await ws.send_json({"type": "hello"})
            assert await ws.wait_closed() == (1011, "")
    assert len(failures) == 1
    assert "return None to pass the message on, wsgate.DROP to drop it" in str(failures[0])


# Wrapped endpoints, and an engine without a gate


class PassThrough:
    """A plain ASGI middleware of the user's, keeping the app it wraps in ``.app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def test_a_wrapped_jsonrpc_endpoint_keeps_its_protocol_behind_the_gate() -> None:
    gate = gate_of()
    app = Starlette(
        routes=[gate.route("/rpc", PassThrough(PassThrough(Tools))), *discovery_routes(gate)]
    )
    with LiveServer(app) as server:
        async with client(server, "/rpc") as ws:
            await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "add", "params": [1, 2]})
            assert await ws.receive_json() == {"jsonrpc": "2.0", "id": 1, "result": 3}
            await ws.send_json({"type": "echo"})
            wrong = await ws.receive_json()
            assert wrong["error"]["data"]["reason"] == "wrong_protocol"
        async with httpx.AsyncClient(base_url=server.url) as http:
            endpoints = (await http.get("/ws/config")).json()["endpoints"]
    assert [(e["path"], e["format"]) for e in endpoints] == [("/rpc", "jsonrpc")]


MAINTENANCE = Refusal("maintenance", 4503, 503, False, "Closed for maintenance.")


class Maintenance(Check):
    close_codes = (MAINTENANCE, SWORE)
    error_frames = (SPAM,)

    def __init__(self) -> None:
        self.closed = False

    def handshake(self, scope: Scope) -> Refusal | None:
        return MAINTENANCE if self.closed else None

    async def message(self, state: Connection, message: Message) -> Verdict:
        if message.get("text") == "spam":
            await state.send_error(SPAM, SPAM_TEXT)
            return DROP
        return SWORE if message.get("text") == "darn" else None


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


async def test_an_engine_runs_a_check_in_front_of_any_app() -> None:
    maintenance = Maintenance()
    engine = Engine(websocket_session(echo), [maintenance])
    with LiveServer(Starlette(routes=[WebSocketRoute("/ws", engine)])) as server:
        async with WSClient(server.ws("/ws")) as ws:
            await ws.send_text("spam")
            await ws.send_text("hello")
            assert await ws.receive_json() == {
                "type": "error",
                "error": {"code": "spam", "message": SPAM_TEXT},
            }
            assert await ws.receive() == "hello"
            await ws.send_text("darn")
            assert await ws.wait_closed() == (4400, "swore")
        maintenance.closed = True
        with pytest.raises(HandshakeRejected) as refused:
            await WSClient(server.ws("/ws")).connect()
        assert (refused.value.status, refused.value.json()) == (503, {"error": "maintenance"})


async def test_a_connection_through_two_gates_is_refused_with_both_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A gate on the whole app and another on a route would authenticate, limit and count
    the connection twice: the handshake fails, and the log says which gates to fix."""
    gate = Gate(GateConfig(jwt_secret=SECRET, allowed_origins=(ORIGIN,)))
    inner = Starlette(routes=[gate.route("/ws", websocket_session(one_answer))])
    with LiveServer(gate.wrap(inner)) as server, pytest.raises(HandshakeRejected) as refused:
        await WSClient(server.ws("/ws"), origin=ORIGIN, token=tokens.valid("ann")).connect()
    assert refused.value.status == 500
    assert "goes through two gates, the gate of '*' and the gate of '/ws'" in caplog.text
