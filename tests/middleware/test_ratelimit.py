"""RateLimitMiddleware over real sockets: budgets per user, strategies, escalation, failures."""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import limits.storage
import pytest
from limits.aio.storage import MemoryStorage
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute, websocket_session
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from tests.middleware.mounting import Mounting, alone_only, gate
from wsgate import AuthMiddleware, ConfigurationError, Gate, GateUser, Identity, JWTVerifier
from wsgate._choices import RateStrategy
from wsgate._window import LocalStorage
from wsgate.connection import Connection, decoded
from wsgate.middleware.ratelimit import RateLimitMiddleware, rate_storage
from wsgate.testing import LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "rate-limit-middleware-tests-secret-0123456789"
TOKENS = TokenFactory(SECRET)
VERIFIER = JWTVerifier(algorithms=["HS256"], secret=SECRET)
STRATEGIES: list[RateStrategy] = ["moving-window", "fixed-window", "sliding-window-counter"]

_users = itertools.count(1)


def new_user() -> str:
    """A user with an untouched budget: the server's storage lives as long as the module."""
    return f"user-{next(_users)}"


@websocket_session
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        value = decoded(message)
        await websocket.send_json({"type": "echo", "payload": value["payload"], "id": value["id"]})


class CountingStorage(MemoryStorage):
    """The memory storage, counting what the moving-window limiter asks of it."""

    def __init__(self) -> None:
        super().__init__()
        self.hits = 0
        self.window_reads = 0

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        self.hits += 1
        return await super().acquire_entry(key, limit, expiry, amount)

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        self.window_reads += 1
        return await super().get_moving_window(key, limit, expiry)


class BrokenStorage(MemoryStorage):
    """A storage whose backend is down, as Redis is when it restarts."""

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")


class StatlessStorage(MemoryStorage):
    """A storage that counts, but fails when asked for the window's statistics."""

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        raise TimeoutError("Timeout reading from redis:6379")


class JsonRpc:
    """Marks connections as JSON-RPC, as the format layer does on a JSON-RPC endpoint."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            connection, send = Connection.of(scope, send)
            connection.protocol = "jsonrpc"
        await self.app(scope, receive, send)


counting = CountingStorage()
shared = MemoryStorage()
keys_computed: list[str] = []


def by_path(scope: Scope) -> str:
    path: str = scope["path"]
    keys_computed.append(path)
    return path


def limited(**options: Any) -> ASGIApp:
    """Authenticated users, rate-limited."""
    return AuthMiddleware(RateLimitMiddleware(echo, **options), verifier=VERIFIER)


def rate_gate(
    rate: str = "30/minute",
    strategy: RateStrategy = "moving-window",
    close_after: int | None = None,
) -> Gate:
    """A gate whose only limit is this rate limit; its endpoints share one storage."""
    return gate(
        SECRET, rate_limit=rate, rate_limit_strategy=strategy, rate_limit_close_after=close_after
    )


def mounted(
    mounting: Mounting,
    app: ASGIApp = echo,
    *,
    rate: str = "30/minute",
    strategy: RateStrategy = "moving-window",
    close_after: int | None = None,
    authenticated: bool = True,
) -> ASGIApp:
    """``app`` behind the rate limit, with its own budgets: the middleware alone (behind
    AuthMiddleware when ``authenticated``), or inside a gate of its own."""
    if mounting == "gate":
        gated = rate_gate(rate, strategy, close_after)
        return gated.wrap(app, protocol=None, dev_bypass=not authenticated)
    middleware = RateLimitMiddleware(app, rate=rate, strategy=strategy, close_after=close_after)
    return AuthMiddleware(middleware, verifier=VERIFIER) if authenticated else middleware


def sharing(mounting: Mounting) -> tuple[ASGIApp, ASGIApp]:
    """Two endpoints limited to 3/minute that share their budgets: two middlewares on one
    storage, or two endpoints of one gate."""
    if mounting == "alone":
        return limited(rate="3/minute", storage=shared), limited(rate="3/minute", storage=shared)
    both = rate_gate("3/minute")
    return both.wrap(echo, protocol=None), both.wrap(echo, protocol=None)


@pytest.fixture(scope="module")
def server(mounting: Mounting) -> Iterator[LiveServer]:
    shared_a, shared_b = sharing(mounting)
    routes = [
        WebSocketRoute("/ws", mounted(mounting)),  # the default: 30/minute, moving window
        *[
            # A day-long window: a burst never straddles a boundary of the clock-aligned
            # sliding-window-counter, which would let its weighted count lag by one.
            WebSocketRoute(f"/strategy/{name}", mounted(mounting, rate="30/day", strategy=name))
            for name in STRATEGIES
        ],
        WebSocketRoute("/fast", mounted(mounting, rate="5/second")),
        WebSocketRoute("/abuse", mounted(mounting, rate="2/minute", close_after=3)),
        WebSocketRoute(
            "/abuse-reset",
            mounted(mounting, rate="2 per 2 seconds", strategy="fixed-window", close_after=2),
        ),
        WebSocketRoute("/shared-a", shared_a),
        WebSocketRoute("/shared-b", shared_b),
        WebSocketRoute("/anonymous", mounted(mounting, rate="2/minute", authenticated=False)),
        WebSocketRoute("/jsonrpc", JsonRpc(mounted(mounting, rate="1/minute"))),
        Route("/health", mounted(mounting, PlainTextResponse("ok"), rate="1/minute")),
    ]
    if mounting == "alone":  # what a gate does not expose: storage objects and keys
        routes += [
            WebSocketRoute("/counting", limited(rate="30/minute", storage=counting)),
            WebSocketRoute("/broken", limited(rate="1/minute", storage=BrokenStorage())),
            WebSocketRoute("/statless", limited(rate="1/minute", storage=StatlessStorage())),
            WebSocketRoute("/custom", RateLimitMiddleware(echo, rate="30/minute", key=by_path)),
        ]
    with LiveServer(Starlette(routes=routes)) as live:
        yield live


def client(server: LiveServer, path: str, user: str) -> WSClient:
    return WSClient(server.ws(path), token=TOKENS.valid(user))


async def send_all(ws: WSClient, ids: range) -> list[dict[str, Any]]:
    """Send one message per id, then read one answer per message."""
    for n in ids:
        await ws.send_json({"type": "echo", "payload": n, "id": n})
    return [await ws.receive_json() for _ in ids]


def kinds(answers: list[dict[str, Any]]) -> list[str]:
    return [answer["type"] for answer in answers]


# The budget


async def test_one_user_on_three_connections_gets_exactly_the_rate(server: LiveServer) -> None:
    user = new_user()
    clients = [client(server, "/ws", user) for _ in range(3)]
    for ws in clients:
        await ws.connect()
    try:
        batches = [range(34), range(34, 67), range(67, 100)]

        async def burst(ws: WSClient, ids: range) -> None:
            for n in ids:
                await ws.send_json({"type": "echo", "payload": n, "id": n})

        # 100 messages at once, spread over the user's three connections.
        async with anyio.create_task_group() as group:
            for ws, ids in zip(clients, batches, strict=True):
                group.start_soon(burst, ws, ids)
        answers = []
        for ws, ids in zip(clients, batches, strict=True):
            answers += [await ws.receive_json() for _ in ids]

        echoed = [answer for answer in answers if answer["type"] == "echo"]
        limited = [answer for answer in answers if answer["type"] == "error"]
        assert (len(echoed), len(limited)) == (30, 70)
        assert sorted(answer["id"] for answer in answers) == list(range(100))
        for answer in limited:
            error = answer["error"]
            assert error["code"] == "rate_limited"
            assert error["message"] == "Over the rate limit of 30/minute; the message was dropped."
            assert error["limit"] == "30/minute"
            # The window is a minute and the burst took far less.
            assert 30 < error["retry_after"] <= 60
        # Refusing never disconnects.
        for ws in clients:
            assert ws.state == "open"
            assert await ws.receive_nothing(timeout=0.1)
    finally:
        for ws in clients:
            await ws.close()


async def test_users_have_budgets_of_their_own(server: LiveServer) -> None:
    first, second = new_user(), new_user()
    async with client(server, "/ws", first) as ws:
        answers = await send_all(ws, range(31))
    assert kinds(answers) == ["echo"] * 30 + ["error"]
    async with client(server, "/ws", second) as ws:
        assert kinds(await send_all(ws, range(30))) == ["echo"] * 30
    # Reconnecting does not refill a budget.
    async with client(server, "/ws", first) as ws:
        assert kinds(await send_all(ws, range(1))) == ["error"]


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_no_strategy_admits_more_than_the_limit(server: LiveServer, strategy: str) -> None:
    async with client(server, f"/strategy/{strategy}", new_user()) as ws:
        answers = await send_all(ws, range(45))
    assert kinds(answers) == ["echo"] * 30 + ["error"] * 15
    assert all(answer["error"]["limit"] == "30/day" for answer in answers[30:])


async def test_retry_after_says_when_a_message_passes_again(server: LiveServer) -> None:
    async with client(server, "/fast", new_user()) as ws:
        answers = await send_all(ws, range(6))
        assert kinds(answers) == ["echo"] * 5 + ["error"]
        retry_after = answers[5]["error"]["retry_after"]
        assert 0 < retry_after <= 1.0
        assert round(retry_after, 1) == retry_after
        # Still over the limit before retry_after...
        assert kinds(await send_all(ws, range(6, 7))) == ["error"]
        # ...and through once it has passed.
        await anyio.sleep(retry_after)
        assert kinds(await send_all(ws, range(7, 8))) == ["echo"]


# Escalation


async def test_close_after_consecutive_refusals(server: LiveServer) -> None:
    async with client(server, "/abuse", new_user()) as ws:
        for n in range(6):
            await ws.send_json({"type": "echo", "payload": n, "id": n})
        assert await ws.wait_closed() == (1008, "rate_limit_abuse")
        received = [frame.json() for frame in ws.history if frame.direction == "received"]
    # Two pass, and the third refusal in a row is answered before the connection closes.
    assert kinds(received) == ["echo", "echo", "error", "error", "error"]
    assert [answer["id"] for answer in received] == [0, 1, 2, 3, 4]


async def test_an_accepted_message_resets_the_escalation(server: LiveServer) -> None:
    async with client(server, "/abuse-reset", new_user()) as ws:
        first = await send_all(ws, range(3))
        assert kinds(first) == ["echo", "echo", "error"]  # one refusal in a row
        await anyio.sleep(first[2]["error"]["retry_after"])  # a fresh fixed window
        assert kinds(await send_all(ws, range(3, 6))) == ["echo", "echo", "error"]
        assert ws.state == "open"  # the echoes reset the count to zero, then one refusal
        await ws.send_json({"type": "echo", "payload": 6, "id": 6})
        assert await ws.wait_closed() == (1008, "rate_limit_abuse")


# Keys and storage


async def test_middlewares_sharing_a_storage_share_the_budget(server: LiveServer) -> None:
    user = new_user()
    async with client(server, "/shared-a", user) as a, client(server, "/shared-b", user) as b:
        assert kinds(await send_all(a, range(2))) == ["echo", "echo"]
        assert kinds(await send_all(b, range(2, 4))) == ["echo", "error"]


@alone_only
async def test_one_hit_per_lease_and_no_window_reads_when_under_the_limit(
    server: LiveServer,
) -> None:
    before = (counting.hits, counting.window_reads)
    async with client(server, "/counting", new_user()) as ws:
        assert kinds(await send_all(ws, range(10))) == ["echo"] * 10
    # Leases of 1, 2, 3, 3 and 3 units (a tenth of 30/minute at most) for 10 messages.
    assert (counting.hits - before[0], counting.window_reads - before[1]) == (5, 0)


@alone_only
async def test_the_key_is_computed_once_per_connection(server: LiveServer) -> None:
    keys_computed.clear()
    async with WSClient(server.ws("/custom")) as ws:
        assert kinds(await send_all(ws, range(5))) == ["echo"] * 5
    assert keys_computed == ["/custom"]


async def test_without_a_user_the_budget_is_per_address(server: LiveServer) -> None:
    async with WSClient(server.ws("/anonymous")) as first:
        assert kinds(await send_all(first, range(1))) == ["echo"]
    async with WSClient(server.ws("/anonymous")) as second:  # same address, same budget
        assert kinds(await send_all(second, range(1, 3))) == ["echo", "error"]


def test_keys_are_namespaced_by_kind() -> None:
    middleware = RateLimitMiddleware(echo)
    address = {"client": ("203.0.113.9", 50000)}
    user = {"user": GateUser(Identity("203.0.113.9")), **address}
    dev = {"user": GateUser(Identity("dev-user"), is_dev=True), **address}
    assert middleware.key_of(user) == "wsgate:rate:user:203.0.113.9"
    assert middleware.key_of(address) == "wsgate:rate:ip:203.0.113.9"
    # The development bypass user is everyone on a dev machine: counted per address.
    assert middleware.key_of(dev) == "wsgate:rate:ip:203.0.113.9"
    assert middleware.key_of({}) == "wsgate:rate:ip:unknown"
    custom = RateLimitMiddleware(echo, key=lambda scope: "tenant-1")
    assert custom.key_of(user) == "wsgate:rate:key:tenant-1"


@alone_only
async def test_a_failing_storage_lets_messages_through_and_warns_once(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="wsgate.ratelimit"):
        async with client(server, "/broken", new_user()) as ws:
            assert kinds(await send_all(ws, range(5))) == ["echo"] * 5  # 1/minute, not applied
            assert ws.state == "open"
    warnings = [record for record in caplog.records if record.name == "wsgate.ratelimit"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "ConnectionError" in warnings[0].getMessage()
    assert "messages pass unlimited" in warnings[0].getMessage()


@alone_only
async def test_without_window_statistics_retry_after_is_a_whole_window(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="wsgate.ratelimit"):
        async with client(server, "/statless", new_user()) as ws:
            answers = await send_all(ws, range(2))
    assert kinds(answers) == ["echo", "error"]
    assert answers[1]["error"]["retry_after"] == 60.0
    assert "TimeoutError" in caplog.text


# Shapes and pass-through


async def test_jsonrpc_refusals_echo_the_request_id(server: LiveServer) -> None:
    async with client(server, "/jsonrpc", new_user()) as ws:
        await ws.send_json({"type": "echo", "payload": 0, "id": "a"})
        assert (await ws.receive_json())["type"] == "echo"
        await ws.send_json({"type": "echo", "payload": 1, "id": "b"})
        refused = await ws.receive_json()
    assert refused["jsonrpc"] == "2.0"
    assert refused["id"] == "b"
    assert refused["error"]["code"] == -32002
    assert refused["error"]["data"]["reason"] == "rate_limited"
    assert refused["error"]["data"]["limit"] == "1/minute"
    assert 0 < refused["error"]["data"]["retry_after"] <= 60


async def test_http_requests_pass_through(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, trust_env=False) as http:
        responses = [await http.get("/health") for _ in range(3)]  # more than 1/minute
    assert [response.status_code for response in responses] == [200, 200, 200]


# Configuration


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate": "30/fortnight"}, "rate must be a rate such as '30/minute'"),
        ({"rate": "thirty"}, "rate must be a rate such as '30/minute'"),
        ({"rate": 30}, "rate must be a rate such as '30/minute'"),
        (
            {"strategy": "token-bucket"},
            "strategy must be one of 'moving-window', 'fixed-window', "
            "'sliding-window-counter', not 'token-bucket'.",
        ),
        ({"strategy": "moving_window"}, "strategy must be one of"),
        ({"storage": "postgres://db"}, "storage must be 'memory://' or a Redis URL"),
        ({"storage": 42}, "storage must be a URI such as 'memory://'"),
        ({"storage": limits.storage.MemoryStorage()}, r"limits.aio.storage.Storage \(an async"),
        ({"key": "user"}, "key must be a function of the scope"),
        ({"close_after": 0}, "close_after must be a positive integer, not 0."),
        ({"close_after": True}, "close_after must be a positive integer, not True."),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RateLimitMiddleware(echo, **options)


@pytest.mark.parametrize("uri", ["memory://", "async+memory://", "MEMORY://"])
def test_memory_storage_uris(uri: str) -> None:
    assert isinstance(rate_storage(uri), LocalStorage)


def test_a_limits_memory_storage_object_goes_through_limits() -> None:
    middleware = RateLimitMiddleware(echo, storage=MemoryStorage())
    assert middleware.local is None


def test_storage_errors_never_show_a_password() -> None:
    with pytest.raises(ConfigurationError) as refused:
        rate_storage("postgres://admin:hunter2@db:5432/app")
    assert "hunter2" not in str(refused.value)
    assert "postgres://admin:***@db:5432/app" in str(refused.value)


def test_redis_without_its_client_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # dev installs redis; a None entry in sys.modules is how Python spells "not importable".
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigurationError) as refused:
        rate_storage("redis://:hunter2@localhost:6379/0")
    assert str(refused.value) == (
        "storage 'redis://:***@localhost:6379/0' needs the Redis client: "
        "pip install 'wsgate[redis]'."
    )
