"""ConnectionLimitMiddleware over real sockets: who is closed, and that every slot comes back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute, websocket_session
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed

from tests.middleware.mounting import Mounting, gate
from wsgate import AuthMiddleware, ConfigurationError, JWTVerifier, close_codes
from wsgate._choices import ConnectionPolicy
from wsgate.middleware.connections import ConnectionLimitMiddleware
from wsgate.registry import Admission, MemoryRegistry, Policy, Registry
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "connection-limit-tests-secret-0123456789abcdef"
TOKENS = TokenFactory(SECRET)
VERIFIER = JWTVerifier(algorithms=["HS256"], secret=SECRET)
LIMITED = (4008, "connection_limit")


def user_key(user: str) -> str:
    return f"wsgate:conn:user:{user}"


# The apps behind the middleware


class Holds:
    """Handlers parked on purpose in the server's loop, released by the test's thread."""

    def __init__(self) -> None:
        self._held: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def hold(self) -> None:
        event = asyncio.Event()
        self._held.append((asyncio.get_running_loop(), event))
        await event.wait()

    async def count(self) -> int:
        return len(self._held)

    def release(self) -> None:
        for loop, event in self._held:
            loop.call_soon_threadsafe(event.set)
        self._held.clear()


HELD = Holds()
SEEN: list[str] = []
"""Every text message the handlers got."""


@websocket_session
async def serve(websocket: WebSocket) -> None:
    """Accept, say which connection this is, then echo.

    "boom" and "cancel" end the handler badly; "linger" closes the connection but keeps the
    handler running until released; "pause" stops reading until released.
    """
    await websocket.accept()
    await websocket.send_json({"id": websocket.scope["wsgate.connection"].id})
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text") or ""
        SEEN.append(text)
        if text == "boom":
            raise RuntimeError("the handler failed")
        if text == "cancel":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(5)  # cancelled here, at once
        if text == "linger":
            await websocket.close(1000)
            await HELD.hold()
            return
        if text == "pause":
            await HELD.hold()
            continue
        await websocket.send_text(text)


@websocket_session
async def deny(websocket: WebSocket) -> None:
    """Refuse before accept: the client gets HTTP 403."""
    await websocket.close()


@websocket_session
async def stubborn(websocket: WebSocket) -> None:
    """Serve a first frame, then never look at the connection again."""
    await websocket.accept()
    await websocket.send_json({"id": websocket.scope["wsgate.connection"].id})
    await anyio.Event().wait()  # only cancellation ends this


class RefuseInside:
    """An inner layer that refuses after accept, as every wsgate refusal does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await close_codes.refuse(scope, receive, send, close_codes.INVALID_TOKEN)


class RecordingRegistry(MemoryRegistry):
    """A memory registry that remembers the order connections were counted in."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list[str] = []

    async def add(self, key: str, connection_id: str, *, limit: int, policy: Policy) -> Admission:
        admission = await super().add(key, connection_id, limit=limit, policy=policy)
        if admission.admitted:
            self.added.append(connection_id)
        return admission


class Spy:
    """Wraps routes in an outermost layer that notes any message sent after a close."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def __call__(self, app: ASGIApp) -> ASGIApp:
        return Spied(app, self.problems)


class Spied:
    def __init__(self, app: ASGIApp, problems: list[str]) -> None:
        self.app = app
        self.problems = problems

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        closed = False

        async def send_message(message: Message) -> None:
            nonlocal closed
            if closed:
                self.problems.append(f"{message['type']} sent after a close")
            closed = closed or message["type"] == "websocket.close"
            await send(message)

        await self.app(scope, receive, send_message)


async def reads_first(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads in a task of its own from before its accept, as Quart does, then stays idle."""
    messages: asyncio.Queue[Message] = asyncio.Queue()

    async def reader() -> None:
        while True:
            message = await receive()
            messages.put_nowait(message)  # and at once the next receive, before the accept
            if message["type"] == "websocket.disconnect":
                return

    task = asyncio.create_task(reader())
    try:
        assert (await messages.get())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (await messages.get())["type"] != "websocket.disconnect":
            pass
    finally:
        task.cancel()


@dataclass
class Harness:
    server: LiveServer
    registry: RecordingRegistry
    spy: Spy
    middlewares: list[ConnectionLimitMiddleware] = field(default_factory=list)

    def client(self, path: str = "/ws", user: str | None = "alice") -> WSClient:
        token = None if user is None else TOKENS.valid(user)
        return WSClient(self.server.ws(path), token=token)

    async def open(self, path: str = "/ws", user: str | None = "alice") -> tuple[WSClient, str]:
        """A connection the middleware has counted, and its id."""
        client = self.client(path, user)
        await client.connect()
        return client, (await client.receive_json(timeout=5))["id"]

    def local(self) -> dict[str, Any]:
        return dict(self.registry.local_connections)


def limited(
    mounting: Mounting,
    app: ASGIApp,
    registry: Registry,
    *,
    max_per_user: int = 3,
    policy: ConnectionPolicy = "evict_oldest",
    authenticated: bool = True,
) -> tuple[ASGIApp, list[ConnectionLimitMiddleware]]:
    """``app`` behind the connection limit, counted in ``registry``, and the limit's check:
    the middleware alone (behind AuthMiddleware when ``authenticated``), or inside a gate."""
    if mounting == "gate":
        gated = gate(
            SECRET,
            registry=registry,
            max_connections_per_user=max_per_user,
            connection_policy=policy,
        )
        mounted = gated.wrap(app, protocol=None, dev_bypass=not authenticated)
        return mounted, gated.layers(ConnectionLimitMiddleware)
    middleware = ConnectionLimitMiddleware(
        app, max_per_user=max_per_user, policy=policy, registry=registry
    )
    if authenticated:
        return AuthMiddleware(middleware, verifier=VERIFIER), [middleware]
    return middleware, [middleware]


def build(
    mounting: Mounting,
    registry: RecordingRegistry,
    spy: Spy,
    middlewares: list[ConnectionLimitMiddleware],
) -> Starlette:
    def guarded(app: ASGIApp, **options: Any) -> ASGIApp:
        mounted, built = limited(mounting, app, registry, **options)
        middlewares.extend(built)
        return spy(mounted)

    return Starlette(
        routes=[
            Route("/", guarded(PlainTextResponse("home"), authenticated=False)),
            WebSocketRoute("/ws", guarded(serve)),
            WebSocketRoute("/other", guarded(serve)),
            WebSocketRoute("/reject", guarded(serve, policy="reject_new")),
            WebSocketRoute("/one", guarded(serve, max_per_user=1)),
            WebSocketRoute("/anon", guarded(serve, authenticated=False)),
            WebSocketRoute("/deny", guarded(deny)),
            WebSocketRoute("/refused-inside", guarded(RefuseInside(serve))),
            WebSocketRoute("/stubborn", guarded(stubborn)),
            WebSocketRoute("/reads-first", guarded(reads_first)),
        ]
    )


@pytest.fixture
async def harness(mounting: Mounting) -> AsyncIterator[Harness]:
    registry, spy = RecordingRegistry(), Spy()
    middlewares: list[ConnectionLimitMiddleware] = []
    server = LiveServer(build(mounting, registry, spy, middlewares))
    SEEN.clear()
    server.start()
    try:
        yield Harness(server, registry, spy, middlewares)
    finally:
        HELD.release()
        # In a thread, so that the clients a test left open can see the server go.
        await anyio.to_thread.run_sync(server.stop)
    # Whatever the test did, once the server has stopped nothing is counted or held.
    assert await registry.total() == 0
    assert registry.local_connections == {}
    assert spy.problems == []


async def eventually(
    probe: Callable[[], Awaitable[object]], expected: object, within: float = 5.0
) -> None:
    """Poll ``probe`` until it returns ``expected``, for ``within`` seconds at most."""
    deadline = time.monotonic() + within
    while (value := await probe()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {within} s, expected {expected!r}")
        await anyio.sleep(0.02)


async def local_count(harness: Harness) -> int:
    return len(harness.registry.local_connections)


async def echoes(client: WSClient, text: str = "still here") -> bool:
    await client.send_text(text)
    return await client.receive(timeout=5) == text


# Who is closed


async def test_evict_oldest_closes_the_users_oldest_connection(harness: Harness) -> None:
    clients = [(await harness.open())[0] for _ in range(3)]
    assert await harness.registry.count(user_key("alice")) == 3

    newest, _ = await harness.open()
    assert await clients[0].wait_closed(timeout=5) == LIMITED
    for client in (*clients[1:], newest):
        assert await echoes(client)
    assert await harness.registry.count(user_key("alice")) == 3
    assert len(harness.local()) == 3

    for client in (*clients[1:], newest):
        await client.close()
    await eventually(harness.registry.total, 0)
    await eventually(lambda: local_count(harness), 0)


async def test_an_app_that_reads_before_its_accept_is_counted_from_the_accept(
    harness: Harness,
) -> None:
    """Quart's reader waits for a message before the handler accepts: an idle connection of
    such an app is counted all the same, and the fourth evicts the first."""
    clients = []
    for held in range(1, 4):
        client = harness.client("/reads-first")
        await client.connect()
        clients.append(client)
        await eventually(lambda: harness.registry.count(user_key("alice")), held)
    newest = harness.client("/reads-first")
    await newest.connect()
    assert await clients[0].wait_closed(timeout=5) == LIMITED
    assert await harness.registry.count(user_key("alice")) == 3
    for client in (*clients[1:], newest):
        await client.close()
    await eventually(harness.registry.total, 0)


async def test_reject_new_closes_the_new_connection(harness: Harness) -> None:
    clients = [(await harness.open("/reject"))[0] for _ in range(3)]

    async with harness.client("/reject") as refused:
        assert await refused.wait_closed(timeout=5) == LIMITED
        # The app's first frame was dropped: the connection was closed before it went out.
        assert [frame for frame in refused.history if frame.direction == "received"] == []
    for client in clients:
        assert await echoes(client)
    assert await harness.registry.count(user_key("alice")) == 3

    # A slot that frees up lets the next connection in.
    await clients[0].close()
    await eventually(lambda: harness.registry.count(user_key("alice")), 2)
    again, _ = await harness.open("/reject")
    assert await echoes(again)
    assert await harness.registry.count(user_key("alice")) == 3


async def test_the_limit_is_per_user(harness: Harness) -> None:
    alice = [(await harness.open(user="alice"))[0] for _ in range(3)]
    bob, _ = await harness.open(user="bob")
    for client in (*alice, bob):
        assert await echoes(client)
    assert await harness.registry.count(user_key("alice")) == 3
    assert await harness.registry.count(user_key("bob")) == 1
    assert await harness.registry.total() == 4


async def test_endpoints_sharing_a_registry_share_the_limit(harness: Harness) -> None:
    on_ws = [(await harness.open("/ws"))[0] for _ in range(3)]
    on_other, _ = await harness.open("/other")
    # The oldest connection is on another endpoint, behind another middleware: it is found.
    assert await on_ws[0].wait_closed(timeout=5) == LIMITED
    for client in (*on_ws[1:], on_other):
        assert await echoes(client)
    assert await harness.registry.count(user_key("alice")) == 3


async def test_max_per_user(harness: Harness) -> None:
    first, _ = await harness.open("/one")
    second, _ = await harness.open("/one")
    assert await first.wait_closed(timeout=5) == LIMITED
    assert await echoes(second)


async def test_without_a_user_the_client_address_is_counted(harness: Harness) -> None:
    clients = [(await harness.open("/anon", user=None))[0] for _ in range(4)]
    assert await clients[0].wait_closed(timeout=5) == LIMITED
    assert await harness.registry.count("wsgate:conn:ip:127.0.0.1") == 3
    # A user whose id looks like an address has a key of its own.
    user, _ = await harness.open(user="127.0.0.1")
    assert await echoes(user)
    assert await harness.registry.count(user_key("127.0.0.1")) == 1


@pytest.mark.parametrize("policy", ["evict_oldest", "reject_new"])
async def test_ten_simultaneous_connects(harness: Harness, policy: str) -> None:
    path = "/ws" if policy == "evict_oldest" else "/reject"
    clients = [harness.client(path) for _ in range(10)]
    await asyncio.gather(*(client.connect() for client in clients))

    async def first_frame(client: WSClient) -> str | None:
        try:
            return str((await client.receive_json(timeout=5))["id"])
        except ConnectionClosed:
            return None  # refused by reject_new before the app's first frame went out

    ids = await asyncio.gather(*(first_frame(client) for client in clients))
    await eventually(harness.registry.total, 3)
    survivors = set(harness.registry.added[-3:])
    assert len(harness.registry.added) == (10 if policy == "evict_oldest" else 3)

    closed = [client for client, id_ in zip(clients, ids, strict=True) if id_ not in survivors]
    kept = [client for client, id_ in zip(clients, ids, strict=True) if id_ in survivors]
    assert (len(kept), len(closed)) == (3, 7)
    for client in closed:
        assert await client.wait_closed(timeout=5) == LIMITED
    for client in kept:
        assert await echoes(client)
    assert await harness.registry.count(user_key("alice")) == 3
    assert len(harness.local()) == 3

    for client in kept:
        await client.close()
    await eventually(harness.registry.total, 0)
    await eventually(lambda: local_count(harness), 0)


async def test_messages_queued_before_an_eviction_never_reach_the_app(
    harness: Harness,
) -> None:
    oldest, _ = await harness.open()
    for _ in range(2):
        await harness.open()
    await oldest.send_text("pause")
    await eventually(HELD.count, 1)
    # The handler is not reading: these wait in the server's queue.
    await oldest.send_text("late-1")
    await oldest.send_text("late-2")
    await harness.open()
    assert await oldest.wait_closed(timeout=5) == LIMITED
    HELD.release()
    await eventually(lambda: local_count(harness), 3)  # the evicted handler has ended
    assert "late-1" not in SEEN
    assert "late-2" not in SEEN


async def test_evicting_a_connection_the_app_closed_sends_nothing(harness: Harness) -> None:
    oldest, oldest_id = await harness.open()
    others = [(await harness.open())[0] for _ in range(2)]
    await oldest.send_text("linger")
    assert await oldest.wait_closed(timeout=5) == (1000, "")
    await eventually(HELD.count, 1)
    # Its handler still runs, so it still counts, and it is the one evicted next.
    assert await harness.registry.count(user_key("alice")) == 3
    newest, _ = await harness.open()
    for client in (*others, newest):
        assert await echoes(client)
    assert oldest_id in harness.local()
    # Every middleware sharing the registry can evict it; it is closed already.
    assert harness.middlewares[0].evict(oldest_id) is False
    assert harness.spy.problems == []
    HELD.release()
    await eventually(lambda: local_count(harness), 3)
    assert await harness.registry.count(user_key("alice")) == 3


# Refusals never take a slot


async def test_a_refusal_before_accept_takes_no_slot(harness: Harness) -> None:
    clients = [(await harness.open())[0] for _ in range(3)]
    with pytest.raises(HandshakeRejected) as rejected:
        async with harness.client("/deny"):
            pass
    assert rejected.value.status == 403
    for client in clients:
        assert await echoes(client)
    assert await harness.registry.total() == 3


async def test_a_refusal_right_after_accept_takes_no_slot(harness: Harness) -> None:
    clients = [(await harness.open())[0] for _ in range(3)]
    for _ in range(3):
        async with harness.client("/refused-inside") as refused:
            assert await refused.wait_closed(timeout=5) == (1008, "invalid_token")
    # Nobody was evicted for a connection that never got in.
    for client in clients:
        assert await echoes(client)
    assert await harness.registry.total() == 3
    assert len(harness.registry.added) == 3


async def test_a_connection_counts_once_the_app_serves_it(harness: Harness) -> None:
    # The first frame is what makes the handler count: after it, the slot is taken.
    client, connection_id = await harness.open()
    assert harness.registry.added == [connection_id]
    assert list(harness.local()) == [connection_id]
    await client.close()
    await eventually(harness.registry.total, 0)


# Every slot comes back


async def close_normally(client: WSClient) -> None:
    await client.close()


async def vanish(client: WSClient) -> None:
    client.abort()


async def fail_in_the_handler(client: WSClient) -> None:
    await client.send_text("boom")
    await client.wait_closed(timeout=5)


async def cancel_the_handler(client: WSClient) -> None:
    await client.send_text("cancel")
    await client.wait_closed(timeout=5)


@pytest.mark.parametrize("end", [close_normally, vanish, fail_in_the_handler, cancel_the_handler])
async def test_the_slot_is_freed(
    harness: Harness, end: Callable[[WSClient], Awaitable[None]]
) -> None:
    client, _ = await harness.open()
    assert await harness.registry.total() == 1
    await end(client)
    await eventually(harness.registry.total, 0)
    await eventually(lambda: local_count(harness), 0)
    # The freed slot is really free: three more connections evict nobody.
    clients = [(await harness.open())[0] for _ in range(3)]
    for other in clients:
        assert await echoes(other)


async def test_evicted_and_refused_connections_free_their_slots(harness: Harness) -> None:
    alice = [(await harness.open())[0] for _ in range(5)]
    for evicted in alice[:2]:
        assert await evicted.wait_closed(timeout=5) == LIMITED
    bob = [(await harness.open("/reject", user="bob"))[0] for _ in range(3)]
    for _ in range(2):
        async with harness.client("/reject", user="bob") as refused:
            assert await refused.wait_closed(timeout=5) == LIMITED
    # Only the open connections are counted and held.
    await eventually(harness.registry.total, 6)
    await eventually(lambda: local_count(harness), 6)
    for client in (*alice[2:], *bob):
        await client.close()
    await eventually(harness.registry.total, 0)
    await eventually(lambda: local_count(harness), 0)


async def test_server_shutdown_frees_every_slot(harness: Harness) -> None:
    clients = [(await harness.open(user=user))[0] for user in ("alice", "bob", "carol")]
    assert await harness.registry.total() == 3
    await anyio.to_thread.run_sync(harness.server.stop)
    for client in clients:
        assert (await client.wait_closed(timeout=5))[0] == 1012
    assert await harness.registry.total() == 0
    assert harness.local() == {}


async def test_a_handler_cancelled_at_shutdown_frees_its_slot(harness: Harness) -> None:
    client, _ = await harness.open("/stubborn")
    assert await harness.registry.total() == 1
    # The handler ignores the shutdown; the server gives up waiting and cancels it.
    await anyio.to_thread.run_sync(lambda: harness.server.stop(timeout=1.0))
    assert (await client.wait_closed(timeout=5))[0] == 1012
    assert await harness.registry.total() == 0
    assert harness.local() == {}


# Races


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


async def test_eviction_racing_the_clients_own_close(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for _ in range(10):
        clients = [(await harness.open())[0] for _ in range(3)]
        newest = harness.client()
        async with anyio.create_task_group() as group:
            group.start_soon(clients[0].close)  # the oldest leaves as it is evicted
            group.start_soon(newest.connect)
        assert await newest.receive_json(timeout=5)
        for client in (*clients[1:], newest):
            assert await echoes(client)
        for client in (*clients, newest):
            await client.close()
        await eventually(harness.registry.total, 0)
        await eventually(lambda: local_count(harness), 0)
    assert harness.spy.problems == []  # nothing was closed twice
    assert errors(caplog) == []


async def test_evictions_racing_server_shutdown(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        await harness.open()
    clients = [harness.client() for _ in range(6)]

    async def connect(client: WSClient) -> None:
        try:
            await client.connect()
            await client.receive_json(timeout=5)
        except Exception:
            pass  # a connect may fail while the server stops; the server side is under test

    async def stop() -> None:
        await anyio.to_thread.run_sync(harness.server.stop)

    async with anyio.create_task_group() as group:
        for client in clients:
            group.start_soon(connect, client)
        group.start_soon(stop)
    assert await harness.registry.total() == 0
    assert harness.local() == {}
    assert harness.spy.problems == []
    assert errors(caplog) == []


# Identity


def scope_of(user: Any = None, client: tuple[str, int] | None = ("10.0.0.7", 5000)) -> Scope:
    scope: Scope = {"type": "websocket", "client": client}
    if user is not None:
        scope["user"] = user
    return scope


@dataclass
class User:
    identity: str
    is_authenticated: bool = True
    is_dev: bool = False


def test_keys_are_namespaced_by_kind() -> None:
    middleware = ConnectionLimitMiddleware(serve)
    assert middleware.key_of(scope_of(User("alice"))) == "wsgate:conn:user:alice"
    assert middleware.key_of(scope_of(User("dev", is_dev=True))) == "wsgate:conn:ip:10.0.0.7"
    assert middleware.key_of(scope_of(User("x", is_authenticated=False))) == (
        "wsgate:conn:ip:10.0.0.7"
    )
    assert middleware.key_of(scope_of()) == "wsgate:conn:ip:10.0.0.7"
    assert middleware.key_of(scope_of(client=None)) == "wsgate:conn:ip:unknown"
    by_tenant = ConnectionLimitMiddleware(serve, key=lambda scope: "tenant-1")
    assert by_tenant.key_of(scope_of(User("alice"))) == "wsgate:conn:key:tenant-1"


def test_evict_an_unknown_connection() -> None:
    assert ConnectionLimitMiddleware(serve).evict("nobody") is False


async def test_http_passes_through(harness: Harness) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(harness.server.url + "/")
    assert response.text == "home"
    assert await harness.registry.total() == 0


# A failing registry never breaks a connection


class BrokenRegistry(MemoryRegistry):
    async def add(self, key: str, connection_id: str, *, limit: int, policy: Policy) -> Admission:
        raise ConnectionError("registry down")

    async def remove(self, key: str, connection_id: str) -> None:
        raise ConnectionError("registry down")


async def test_a_failing_registry_lets_connections_in(
    mounting: Mounting, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wsgate")
    registry = BrokenRegistry()
    app, _ = limited(mounting, serve, registry, max_per_user=1, authenticated=False)
    with LiveServer(app) as server:
        for _ in range(2):
            async with WSClient(server.ws("/")) as client:
                assert (await client.receive_json(timeout=5))["id"]
                assert await echoes(client)
    assert registry.local_connections == {}
    warnings = [r.getMessage() for r in caplog.records if r.name == "wsgate.connections"]
    assert any("let in uncounted" in message for message in warnings)
    assert any("failed to forget" in message for message in warnings)


# Configuration


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_per_user": 0}, "max_per_user must be a positive integer, not 0."),
        ({"max_per_user": True}, "max_per_user must be a positive integer, not True."),
        ({"max_per_user": "3"}, "max_per_user must be a positive integer, not '3'."),
        ({"policy": "drop"}, "policy must be one of 'evict_oldest', 'reject_new', not 'drop'."),
        ({"registry": "memory://"}, "registry must be a wsgate.registry.Registry"),
        ({"key": "user"}, "key must be a function of the scope"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        ConnectionLimitMiddleware(serve, **options)
    assert str(raised.value).startswith(message)


def test_defaults() -> None:
    middleware = ConnectionLimitMiddleware(serve)
    assert middleware.max_per_user == 3
    assert middleware.policy == "evict_oldest"
    assert isinstance(middleware.registry, MemoryRegistry)
