"""The load generator: one measurement against one server, printed as JSON on stdout.

It runs as a process of its own (pinned to another core than the server by ``bench.run``),
so the client's CPU never competes with the server's. Every loop is bounded by a count or a
deadline, and every address is 127.0.0.1.

    python -m bench.load echo --url ws://127.0.0.1:8001/ws --connections 50 --seconds 5
    python -m bench.load handshakes --url ... --count 500 --concurrency 16
    python -m bench.load idle --url ... --connections 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.apps import ORIGIN, SECRET
from wsgate.testing import TokenFactory

MESSAGE = json.dumps({"type": "echo", "payload": "x" * 160, "id": 1})  # about 200 bytes
TOKENS = TokenFactory(SECRET, ttl=3600)


async def _open(url: str, user: int) -> ClientConnection:
    return await connect(
        url,
        origin=ORIGIN,  # type: ignore[arg-type]
        additional_headers={"Authorization": f"Bearer {TOKENS.valid(f'user-{user}')}"},
        compression=None,
        ping_interval=None,
        proxy=None,
        open_timeout=30,
    )


async def echo(url: str, connections: int, seconds: float) -> dict[str, Any]:
    sockets = [await _open(url, user) for user in range(connections)]
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds

    async def talk(ws: ClientConnection) -> int:
        count = 0
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            await ws.send(MESSAGE)
            await ws.recv()
            latencies.append(time.perf_counter() - sent)
            count += 1
        return count

    counts = await asyncio.gather(*(talk(ws) for ws in sockets))
    elapsed = time.perf_counter() - start
    for ws in sockets:
        await ws.close()
    latencies.sort()
    return {
        "messages": sum(counts),
        "per_second": sum(counts) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


async def handshakes(url: str, count: int, concurrency: int) -> dict[str, Any]:
    per_worker = max(count // concurrency, 1)

    async def worker(first: int) -> None:
        for n in range(first, first + per_worker):
            ws = await _open(url, n % 1000)
            await ws.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(i * per_worker) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    total = per_worker * concurrency
    return {"handshakes": total, "per_second": total / elapsed}


async def idle(url: str, connections: int) -> None:
    sockets = [await _open(url, user) for user in range(connections)]
    print(json.dumps({"ready": len(sockets)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for ws in sockets:
        await ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["echo", "handshakes", "idle"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.kind == "echo":
        result = asyncio.run(echo(args.url, args.connections, args.seconds))
    elif args.kind == "handshakes":
        result = asyncio.run(handshakes(args.url, args.count, args.concurrency))
    else:
        asyncio.run(idle(args.url, args.connections))
        return
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
