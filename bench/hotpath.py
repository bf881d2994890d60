"""The gate's own cost per message, in process, with no sockets: ``python -m bench.hotpath``.

Each app of :mod:`bench.apps` is driven by an in-memory ASGI server: a connect, then N text
messages of about 200 bytes, each echoed. The time per message, minus the bare endpoint's,
is what the layers cost. Socket benchmarks (:mod:`bench.run`) show what a user sees; this one
shows where the microseconds go, repeatably, on a noisy machine. ``--profile APP`` prints a
cProfile of one app.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

from starlette.types import Message

from bench.apps import APPS, ORIGIN, SECRET
from bench.load import MESSAGE
from wsgate.testing import TokenFactory

TOKEN = TokenFactory(SECRET, ttl=3600).valid("user-1")


def _scope() -> dict[str, Any]:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"origin", ORIGIN.encode()),
            (b"authorization", f"Bearer {TOKEN}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
        "scheme": "ws",
        "state": {},
        "extensions": {"websocket.http.response": {}},
    }


async def run(app_name: str, count: int) -> float:
    """Seconds per message through ``app_name``."""
    app = APPS[app_name]()
    queue: asyncio.Queue[Message] = asyncio.Queue()
    echoed = 0
    done = asyncio.Event()

    async def receive() -> Message:
        return await queue.get()

    async def send(message: Message) -> None:
        nonlocal echoed
        if message["type"] == "websocket.send":
            echoed += 1
            if echoed == count:
                done.set()
            else:
                queue.put_nowait({"type": "websocket.receive", "text": MESSAGE})
        elif message["type"] == "websocket.accept":
            queue.put_nowait({"type": "websocket.receive", "text": MESSAGE})
        elif message["type"] == "websocket.close":
            raise RuntimeError(f"{app_name} closed the connection: {message}")

    queue.put_nowait({"type": "websocket.connect"})

    async def serve() -> None:
        await app(_scope(), receive, send)  # an endpoint class is awaitable, not a coroutine

    start = time.perf_counter()  # the handshake is counted too: a few µs over N messages
    task = asyncio.create_task(serve())
    await asyncio.wait_for(done.wait(), timeout=120)
    elapsed = time.perf_counter() - start
    queue.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(task, timeout=10)
    return elapsed / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--apps", default=",".join(name for name in APPS if name != "gate-redis"))
    parser.add_argument("--profile", default=None, help="print a cProfile of this app")
    args = parser.parse_args()
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(asyncio.run, run(args.profile, args.count))
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return
    names = ["bare", *[name for name in args.apps.split(",") if name and name != "bare"]]
    best: dict[str, float] = {}
    for _ in range(3):  # the best of three: the least disturbed by the rest of the machine
        for name in names:
            seconds = asyncio.run(run(name, args.count))
            best[name] = min(best.get(name, seconds), seconds)
    floor = best["bare"]
    print(f"{'app':<12} {'us/msg':>8} {'gate us':>8}  (bare endpoint echo: {1e6 * floor:.2f} us)")
    for name in names:
        print(f"{name:<12} {1e6 * best[name]:8.2f} {1e6 * (best[name] - floor):8.2f}")


if __name__ == "__main__":
    main()
