"""The servers the benchmark compares, one ASGI app per name.

uvicorn serves ``bench.apps:create`` with ``--factory``; ``WSGATE_BENCH_APP`` names the app:

* ``bare``: a Starlette ``WebSocketEndpoint`` that echoes text, the floor every ratio is
  measured against;
* ``gate``: the same endpoint behind the full default gate (origin, JWT HS256 in the header,
  connection limit, size, heartbeat, rate limit, format);
* ``gate-redis``: the full gate with ``WSGATE_STORAGE`` pointing at Redis;
* one name per middleware alone (``origin``, ``auth``, ``connections``, ``size``,
  ``heartbeat``, ``ratelimit``, ``format``), for the breakdown;
* the peers of :mod:`bench.peers` (``channels``, ``socketio``), each at its own path.

Every app sits behind the same Starlette router, which also answers ``GET /_bench/tasks`` with
the number of asyncio tasks in the server (``bench.run`` reads it to count tasks per idle
connection) and ``GET /_bench/snapshot``, which ``bench.instructions`` calls to read the
instructions counted so far by the valgrind the server runs under (see :func:`snapshot`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

# The origin and secret every client presents are defined by the load generator, which starts
# several times per app and must stay cheap to import; the servers take them from there.
from bench.load import ORIGIN as ORIGIN
from bench.load import SECRET as SECRET
from bench.peers import PEERS
from wsgate import (
    AuthMiddleware,
    ConnectionLimitMiddleware,
    FormatMiddleware,
    Gate,
    GateConfig,
    HeartbeatMiddleware,
    JWTVerifier,
    MessageSizeMiddleware,
    OriginMiddleware,
    RateLimitMiddleware,
)

# A rate the load never reaches: the limiter's cost is measured, not its refusals.
UNREACHED_RATE = "100000000/minute"


class Echo(WebSocketEndpoint):
    encoding = "text"

    async def on_receive(self, websocket: WebSocket, data: str) -> None:
        await websocket.send_text(data)


async def tasks(request: Request) -> JSONResponse:
    return JSONResponse({"tasks": len(asyncio.all_tasks())})


async def snapshot(request: Request) -> JSONResponse:
    """Fork a child that exits at once, and answer its PID when it is gone.

    Under valgrind the child starts with a copy of the parent's counters and writes them to
    its own output file when it exits: a reading of the server's instructions so far, taken
    without stopping the server.
    """
    child = os.fork()
    if child == 0:
        os._exit(0)
    # Blocking the loop for a moment is the point: the file is complete when we answer.
    os.waitpid(child, 0)  # noqa: ASYNC222
    return JSONResponse({"pid": child})


def _gate(**settings: object) -> ASGIApp:
    config = GateConfig(
        jwt_secret=SECRET,
        allowed_origins=(ORIGIN,),
        rate_limit=UNREACHED_RATE,
        **settings,  # type: ignore[arg-type]
    )
    return Gate(config).wrap(Echo)


def _alone(layer: Callable[[ASGIApp], ASGIApp]) -> Callable[[], ASGIApp]:
    return lambda: layer(Echo)


APPS: dict[str, Callable[[], ASGIApp]] = {
    "bare": lambda: Echo,
    "gate": _gate,
    "gate-redis": lambda: _gate(storage=os.environ["WSGATE_BENCH_REDIS_URL"]),
    "origin": _alone(lambda app: OriginMiddleware(app, allow_origins=[ORIGIN])),
    "auth": _alone(
        lambda app: AuthMiddleware(app, verifier=JWTVerifier(algorithms=["HS256"], secret=SECRET))
    ),
    "connections": _alone(lambda app: ConnectionLimitMiddleware(app, max_per_user=100_000)),
    "size": _alone(MessageSizeMiddleware),
    "heartbeat": _alone(HeartbeatMiddleware),
    "ratelimit": _alone(lambda app: RateLimitMiddleware(app, rate=UNREACHED_RATE)),
    "format": _alone(FormatMiddleware),
}


def create() -> Starlette:
    """The app ``WSGATE_BENCH_APP`` names: at ``/ws``, or at a peer's own path."""
    name = os.environ.get("WSGATE_BENCH_APP", "bare")
    route: BaseRoute = PEERS[name].route() if name in PEERS else WebSocketRoute("/ws", APPS[name]())
    return Starlette(
        routes=[route, Route("/_bench/tasks", tasks), Route("/_bench/snapshot", snapshot)]
    )
