"""The load generator: one measurement against one server, printed as JSON on stdout.

It runs as a process of its own (pinned to another core than the server by ``bench.run``),
so the client's CPU never competes with the server's. Every loop is bounded by a count or a
deadline, and every address is 127.0.0.1.

    python -m bench.load echo --url ws://127.0.0.1:8001/ws --connections 50 --seconds 5
    python -m bench.load echo --url ... --connections 10 --messages 1000
    python -m bench.load handshakes --url ... --count 500 --concurrency 16
    python -m bench.load idle --url ... --connections 2000
    python -m bench.load echo --protocol socketio --url ws://.../socket.io/?EIO=4&transport=websocket

``--protocol`` is what the server speaks: ``plain`` (a text message, echoed) or ``socketio``
(Socket.IO over a raw WebSocket, no polling). Both carry the same ~200-byte JSON message.

This module imports no more than the client, python-jose and uvloop: it is started several
times per app, and its start-up time is most of what a smoke run costs. The client runs on
uvloop, as the servers do: on asyncio's own loop it saturated its core before a bare server
did, which flattered every ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from jose import jwt
from websockets.asyncio.client import ClientConnection, connect

# What every client presents; the servers of bench.apps and bench.peers are set up to accept it.
SECRET = "benchmark-secret-that-is-long-enough-for-hs256"
ORIGIN = "http://bench.example"

MESSAGE = json.dumps({"type": "echo", "payload": "x" * 160, "id": 1})  # about 200 bytes
TOKEN_TTL = 3600
T = TypeVar("T")
"""The lifetime of the clients' tokens, in seconds."""


def token(user: int) -> str:
    """A valid HS256 token for ``user-<user>``."""
    now = int(time.time())
    claims = {"sub": f"user-{user}", "iat": now, "exp": now + TOKEN_TTL}
    return jwt.encode(claims, SECRET, algorithm="HS256")


class Plain:
    """One connection to an app that echoes each text message."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def start(self) -> None:
        """Nothing to do once the WebSocket is open."""

    async def echo(self) -> None:
        await self.ws.send(MESSAGE)
        await self.ws.recv()

    async def stay(self) -> None:
        """Keep an idle connection alive: the client library answers WebSocket pings."""


class SocketIO(Plain):
    """One Socket.IO connection (Engine.IO 4 over a WebSocket, the default namespace).

    The server opens with an Engine.IO ``0{...}`` packet; ``40`` joins the namespace and is
    answered by ``40{...}`` (``44{...}`` when the connect handler refuses). An echo is the
    event ``42["echo",<message>]``, answered by the same event. The server's Engine.IO pings
    (``2``) must be answered (``3``), or it drops the connection.
    """

    REQUEST = f'42["echo",{MESSAGE}]'

    async def start(self) -> None:
        opening = await self.ws.recv()
        if not isinstance(opening, str) or not opening.startswith("0{"):
            raise RuntimeError(f"expected an Engine.IO open packet, got {opening!r}")
        await self.ws.send("40")
        joined = await self._packet()
        if not joined.startswith("40"):
            raise RuntimeError(f"the server refused the namespace connect: {joined!r}")

    async def echo(self) -> None:
        await self.ws.send(self.REQUEST)
        answer = await self._packet()
        if not answer.startswith('42["echo"'):
            raise RuntimeError(f"expected an echo event, got {answer[:80]!r}")

    async def stay(self) -> None:
        while True:
            await self._packet()

    async def _packet(self) -> str:
        """The next Socket.IO packet, answering the Engine.IO pings that come first."""
        while True:
            packet = await self.ws.recv()
            if packet == "2":
                await self.ws.send("3")
            elif isinstance(packet, str):
                return packet
            else:
                raise RuntimeError("the server sent a binary frame")


PROTOCOLS: dict[str, type[Plain]] = {"plain": Plain, "socketio": SocketIO}


async def _open(url: str, user: int, protocol: type[Plain]) -> Plain:
    ws = await connect(
        url,
        origin=ORIGIN,  # type: ignore[arg-type]
        additional_headers={"Authorization": f"Bearer {token(user)}"},
        compression=None,
        ping_interval=None,
        proxy=None,
        open_timeout=30,
    )
    session = protocol(ws)
    await asyncio.wait_for(session.start(), timeout=30)
    return session


async def echo(
    url: str, protocol: type[Plain], connections: int, seconds: float, messages: int | None = None
) -> dict[str, Any]:
    """Echo on every connection for ``seconds``, or ``messages`` times each when given."""
    sessions = [await _open(url, user, protocol) for user in range(connections)]
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds

    def more(count: int) -> bool:
        if messages is None:
            return time.perf_counter() < deadline
        return count < messages

    async def talk(session: Plain) -> int:
        count = 0
        while more(count):
            sent = time.perf_counter()
            await session.echo()
            latencies.append(time.perf_counter() - sent)
            count += 1
        return count

    counts = await asyncio.gather(*(talk(session) for session in sessions))
    elapsed = time.perf_counter() - start
    for session in sessions:
        await session.ws.close()
    latencies.sort()
    return {
        "messages": sum(counts),
        "per_second": sum(counts) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


async def handshakes(
    url: str, protocol: type[Plain], count: int, concurrency: int
) -> dict[str, Any]:
    per_worker = max(count // concurrency, 1)

    async def worker(first: int) -> None:
        for n in range(first, first + per_worker):
            session = await _open(url, n % 1000, protocol)
            await session.ws.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(i * per_worker) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    total = per_worker * concurrency
    return {"handshakes": total, "per_second": total / elapsed}


async def idle(url: str, protocol: type[Plain], connections: int) -> None:
    sessions = [await _open(url, user, protocol) for user in range(connections)]
    keepers = [asyncio.create_task(session.stay()) for session in sessions]
    print(json.dumps({"ready": len(sessions)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for keeper in keepers:
        keeper.cancel()
    await asyncio.gather(*keepers, return_exceptions=True)
    for session in sessions:
        await session.ws.close()


def _runner() -> Callable[[Coroutine[Any, Any, T]], T]:
    """``uvloop.run`` where uvloop is installed (uvicorn[standard] brings it), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["echo", "handshakes", "idle"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="plain")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--messages", type=int, help="echo: this many messages per connection, not --seconds"
    )
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    protocol = PROTOCOLS[args.protocol]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    run = _runner()
    if args.kind == "echo":
        result = run(echo(args.url, protocol, args.connections, args.seconds, args.messages))
    elif args.kind == "handshakes":
        result = run(handshakes(args.url, protocol, args.count, args.concurrency))
    else:
        run(idle(args.url, protocol, args.connections))
        return
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
