"""One client process of ``make bench-scale``: a crowd of connections that mostly stay idle.

:mod:`bench.scale` starts several of these, each with its share of the users, and steers them
with one command a line on stdin; each answers with one JSON line on stdout:

* (at start, once its tokens are signed) ``{"ready": n}``;
* ``storm``: open every connection, ``--concurrency`` handshakes in flight at once, spread
  round-robin over ``--urls``; answers how many opened and failed, each handshake's latency,
  and when the storm began and ended (``time.time()``);
* ``talk N K``: the first N connections each send K echo messages, one at a time, each waiting
  for its answer; answers how many were answered, and their latencies;
* ``close`` (or the end of stdin): close every connection, answer, and exit.

Every connection answers the gate's ``{"type": "ping"}`` with ``{"type": "pong"}``, as a
browser client does, so that idle connections stay open past ``heartbeat_interval``. Each
user has one connection, with an HS256 token of :class:`wsgate.testing.TokenFactory` signed
before the storm, from the secret in ``BENCH_SCALE_SECRET``. Every wait is bounded, and every
address is on the loopback: each process connects from a source address of its own
(``--source``, such as 127.0.0.2), so that a larger crowd never runs out of local ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from wsgate.testing import TokenFactory

TIMEOUT = 30.0
"""The longest one handshake, one answer or one close may take, in seconds."""
PAYLOAD = "x" * 160  # an echo message of about 200 bytes, as bench.load sends


class Member:
    """One idle connection: a task reads it, answers the gate's pings and queues the rest."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                message = orjson.loads(raw)
                if message.get("type") == "ping":
                    await self.ws.send('{"type": "pong"}')
                else:
                    self.answers.put_nowait(message)

    async def echo(self, n: int) -> float:
        """Send echo ``n`` and wait for its answer; how long that took, in seconds."""
        sent = time.perf_counter()
        await self.ws.send(orjson.dumps({"type": "echo", "payload": PAYLOAD, "id": n}).decode())
        answer = await asyncio.wait_for(self.answers.get(), TIMEOUT)
        if answer.get("type") != "echo":
            raise RuntimeError(f"expected an echo, got {str(answer)[:200]}")
        return time.perf_counter() - sent

    async def close(self) -> None:
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self.ws.close(), TIMEOUT)
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


class Crowd:
    def __init__(self, urls: list[str], tokens: list[str], source: str, concurrency: int) -> None:
        self.urls = urls
        self.tokens = tokens
        self.source = source
        self.concurrency = concurrency
        self.members: list[Member] = []

    async def storm(self) -> dict[str, Any]:
        latencies: list[float] = []
        errors: list[str] = []
        queue = iter(enumerate(self.tokens))

        async def handshakes() -> None:
            for n, token in queue:  # the iterator is shared: each token is taken once
                started = time.perf_counter()
                try:
                    ws = await connect(
                        self.urls[n % len(self.urls)],
                        additional_headers={"Authorization": f"Bearer {token}"},
                        compression=None,
                        ping_interval=None,
                        proxy=None,
                        open_timeout=TIMEOUT,
                        local_addr=(self.source, 0),
                    )
                except Exception as exc:  # refused (InvalidStatus), timed out, reset...
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - started)
                self.members.append(Member(ws))

        began = time.time()
        await asyncio.gather(*(handshakes() for _ in range(self.concurrency)))
        return _answer("opened", latencies, errors, began)

    async def talk(self, connections: int, messages: int) -> dict[str, Any]:
        async def one(member: Member) -> list[float]:
            return [await member.echo(n) for n in range(messages)]

        began = time.time()
        results = await asyncio.gather(
            *(one(member) for member in self.members[:connections]), return_exceptions=True
        )
        latencies = [value for result in results if isinstance(result, list) for value in result]
        errors = [f"{type(result).__name__}: {result}" for result in results
                  if isinstance(result, BaseException)]  # fmt: skip
        return _answer("messages", latencies, errors, began)

    async def close(self) -> dict[str, Any]:
        members, self.members = self.members, []
        await asyncio.gather(*(member.close() for member in members))
        return {"closed": len(members)}


def _answer(done: str, latencies: list[float], errors: list[str], began: float) -> dict[str, Any]:
    """What a storm or a talk answers: how many were ``done`` and failed, the first errors,
    each latency in ms, and when it began and ended (``time.time()``)."""
    return {
        done: len(latencies),
        "failed": len(errors),
        "errors": errors[:5],
        "latencies_ms": [round(1000 * latency, 3) for latency in latencies],
        "began": began,
        "ended": time.time(),
    }


async def serve(crowd: Crowd) -> None:
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": len(crowd.tokens)}), flush=True)
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            command = line.split()
            if not command or command[0] == "close":
                break
            if command[0] == "storm":
                answer = await crowd.storm()
            elif command[0] == "talk":
                answer = await crowd.talk(int(command[1]), int(command[2]))
            else:
                answer = {"error": f"unknown command {line.strip()!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        print(json.dumps(await crowd.close()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", required=True, help="comma-separated ws:// URLs")
    parser.add_argument("--first-user", type=int, required=True)
    parser.add_argument("--users", type=int, required=True, help="one connection each")
    parser.add_argument("--concurrency", type=int, default=32, help="handshakes in flight")
    parser.add_argument("--source", default="127.0.0.1", help="the local address to connect from")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    factory = TokenFactory(os.environ["BENCH_SCALE_SECRET"], ttl=3600)
    users = range(args.first_user, args.first_user + args.users)
    tokens = [factory.valid(f"user-{user}") for user in users]
    crowd = Crowd(args.urls.split(","), tokens, args.source, args.concurrency)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(crowd))
    else:
        uvloop.run(serve(crowd))


if __name__ == "__main__":
    main()
