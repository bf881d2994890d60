"""A stateful test of connection lifecycles against a real gate and its registry.

Hypothesis interleaves connects (some refused: no token, a forged one, an expired one),
messages, evictions by a user's third connection, token expiries, client closes, server
closes and clients that vanish, over real sockets against a live server. After every step,
once the server has caught up:

* the registry counts exactly the connections that are really open, on both ends;
* no user holds more than ``max_connections_per_user``;
* every connection that ended, ended exactly once, with the one close code its end called for.

It is kept small (few examples, short runs): each step is a real round trip.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from starlette.websockets import WebSocket

from tests.conftest import SECRET
from wsgate import Environment, Gate, GateConfig, GatedEndpoint
from wsgate.testing import LiveServer, TokenFactory, WSClient

LIMIT = 2
T = TypeVar("T")


@dataclass
class Ledger:
    """What the server-side endpoint saw, written from the server's thread."""

    opened: dict[str, str] = field(default_factory=dict)  # connection id -> user
    ended: list[str] = field(default_factory=list)
    codes: dict[str, int | None] = field(default_factory=dict)  # the gate's or app's close


def tracked_app(ledger: Ledger) -> tuple[Gate, Any]:
    class Tracked(GatedEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            await websocket.accept()
            ledger.opened[self.connection.id] = self.scope["user"].identity
            await websocket.send_json({"type": "hello", "payload": self.connection.id})

        async def on_message(self, websocket: WebSocket, message: dict[str, Any]) -> Any:
            if message["type"] == "bye":
                await websocket.close(code=4100, reason="bye")
                return None
            return {"type": "echo", "payload": message.get("payload")}

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            ledger.codes[self.connection.id] = self.connection.close_code
            ledger.ended.append(self.connection.id)

    config = GateConfig(
        environment=Environment.PRODUCTION,
        jwt_secret=SECRET,
        jwt_leeway=0,
        allow_missing_origin=True,
        rate_limit=None,
        heartbeat_interval=None,
        max_connections_per_user=LIMIT,
    )
    gate = Gate(config)
    return gate, gate.wrap(Tracked)


@dataclass
class Client:
    ws: WSClient
    user: str
    server_id: str


class Lifecycles(RuleBasedStateMachine):
    server: LiveServer
    gate: Gate
    ledger: Ledger
    tokens = TokenFactory(SECRET)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.prefix = uuid.uuid4().hex[:8]
        self.open: list[Client] = []
        self.expected_codes: dict[str, int | None] = {}  # server id -> the code it must end with
        self.expired = False

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(awaitable, 30))

    def user(self, index: int) -> str:
        return f"{self.prefix}-{index}"

    def of(self, user: str) -> list[Client]:
        return [client for client in self.open if client.user == user]

    async def _connect(self, token: str, user: str) -> Client:
        ws = WSClient(self.server.ws("/"), token=token)
        await ws.connect()
        hello = await ws.receive_json(timeout=10)
        return Client(ws, user, hello["payload"])

    # Connects

    @rule(index=st.integers(0, 2))
    def connect(self, index: int) -> None:
        user = self.user(index)
        client = self.run(self._connect(self.tokens.valid(user), user))
        mine = self.of(user)
        self.open.append(client)
        if len(mine) == LIMIT:  # the oldest is evicted
            oldest = mine[0]
            assert self.run(oldest.ws.wait_closed(timeout=10)) == (4008, "connection_limit")
            self.open.remove(oldest)
            self.expected_codes[oldest.server_id] = 4008

    @rule(kind=st.sampled_from(["none", "forged", "expired"]), index=st.integers(0, 2))
    def connect_refused(self, kind: str, index: int) -> None:
        user = self.user(index)
        token = {"none": None, "forged": TokenFactory().valid(user)}.get(
            kind, self.tokens.expired(user)
        )
        reason = {"none": "auth_required", "forged": "invalid_token"}.get(kind, "token_expired")

        async def refused() -> tuple[int | None, str | None]:
            async with WSClient(self.server.ws("/"), token=token) as ws:
                return await ws.wait_closed(timeout=10)

        assert self.run(refused()) == (1008, reason)

    @precondition(lambda self: not self.expired)  # a second of waiting: once a run
    @rule(index=st.integers(0, 2))
    def token_expires(self, index: int) -> None:
        # The connection lives until its token's exp, a second from now, then closes 1008.
        self.expired = True
        user = self.user(index)
        if len(self.of(user)) == LIMIT:
            return  # its connect would evict, which the connect rule covers
        token = self.tokens.valid(user, exp=time.time() + 1)
        client = self.run(self._connect(token, user))
        assert self.run(client.ws.wait_closed(timeout=10)) == (1008, "token_expired")
        self.expected_codes[client.server_id] = 1008

    # Open connections

    @precondition(lambda self: self.open)
    @rule(pick=st.integers(0, 10), payload=st.integers())
    def message(self, pick: int, payload: int) -> None:
        client = self.open[pick % len(self.open)]

        async def echo() -> Any:
            await client.ws.send_json({"type": "echo", "payload": payload})
            return await client.ws.receive_json(timeout=10)

        assert self.run(echo()) == {"type": "echo", "payload": payload}

    @precondition(lambda self: self.open)
    @rule(pick=st.integers(0, 10))
    def client_closes(self, pick: int) -> None:
        client = self.open.pop(pick % len(self.open))
        self.run(client.ws.close())
        assert client.ws.close_code == 1000
        self.expected_codes[client.server_id] = None  # the gate and the app sent no close

    @precondition(lambda self: self.open)
    @rule(pick=st.integers(0, 10))
    def server_closes(self, pick: int) -> None:
        client = self.open.pop(pick % len(self.open))

        async def bye() -> tuple[int | None, str | None]:
            await client.ws.send_json({"type": "bye"})
            return await client.ws.wait_closed(timeout=10)

        assert self.run(bye()) == (4100, "bye")
        self.expected_codes[client.server_id] = 4100

    @precondition(lambda self: self.open)
    @rule(pick=st.integers(0, 10))
    def client_vanishes(self, pick: int) -> None:
        client = self.open.pop(pick % len(self.open))
        client.ws.abort()
        self.expected_codes[client.server_id] = None

    # Invariants, checked once the server has caught up with the last step

    @invariant()
    def registry_matches_the_open_connections(self) -> None:
        open_ids = {client.server_id for client in self.open}
        registry, ledger = self.gate.registry, self.ledger

        async def settled() -> bool:
            return (
                await registry.total() == len(self.open)
                and set(ledger.opened) - set(ledger.ended) == open_ids
            )

        self.run(_until(settled))
        for index in range(3):
            count = self.run(registry.count(f"wsgate:conn:user:{self.user(index)}"))
            assert count == len(self.of(self.user(index))) <= LIMIT

    @invariant()
    def every_connection_ended_once_with_its_code(self) -> None:
        ledger = self.ledger
        assert len(ledger.ended) == len(set(ledger.ended))
        for server_id, code in self.expected_codes.items():
            if server_id in ledger.codes:  # else it is still ending; the next check sees it
                assert ledger.codes[server_id] == code, server_id

    def teardown(self) -> None:
        for client in self.open:
            self.run(client.ws.close())
        self.loop.close()


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until the server has caught up: ``condition()`` holds, for at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "the server did not settle"
        await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def lifecycle_server() -> Iterator[tuple[LiveServer, Gate, Ledger]]:
    ledger = Ledger()
    gate, app = tracked_app(ledger)
    with LiveServer(app) as server:
        yield server, gate, ledger


def test_connection_lifecycles(lifecycle_server: tuple[LiveServer, Gate, Ledger]) -> None:
    server, gate, ledger = lifecycle_server
    Lifecycles.server, Lifecycles.gate, Lifecycles.ledger = server, gate, ledger
    run_state_machine_as_test(
        Lifecycles,
        settings=settings(max_examples=6, stateful_step_count=10, deadline=None, database=None),
    )

    # Everything the runs opened has ended, exactly once.
    async def all_ended() -> bool:
        return set(ledger.opened) == set(ledger.ended)

    asyncio.run(_until(all_ended))
    assert len(ledger.ended) == len(set(ledger.ended))
