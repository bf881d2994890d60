"""The peers: other libraries doing the gate's job, served like the apps of :mod:`bench.apps`.

* ``channels``: Django Channels as its documentation sets up a WebSocket, an
  ``AsyncWebsocketConsumer`` behind ``AllowedHostsOriginValidator(AuthMiddlewareStack(
  URLRouter(...)))``, with Django configured in code and no database; the consumer's
  ``connect()`` verifies the same HS256 token as the gate and refuses the handshake without
  one, and ``receive()`` echoes text.
* ``socketio``: a python-socketio ``AsyncServer`` (ASGI mode, ``cors_allowed_origins`` set to
  the bench origin) whose ``connect`` handler verifies the token and whose ``echo`` event
  handler emits the data back to the sender. The load generator speaks Socket.IO to it over a
  raw WebSocket (``bench.load --protocol socketio``).

Their packages are optional (the ``bench`` extra) and imported only when an app is built, so
a missing one only drops that peer: :func:`missing` names what is absent, and ``bench.run``
leaves the peer out with a note.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jose import JWTError, jwt
from starlette.routing import BaseRoute, Mount, WebSocketRoute

from bench.load import ORIGIN, SECRET


@dataclass(frozen=True)
class Peer:
    route: Callable[[], BaseRoute]
    """Builds the app (importing its packages) and the route that serves it."""
    path: str
    """The path and query string the load generator opens."""
    protocol: str
    """What the load generator speaks to it: ``plain`` or ``socketio`` (see bench.load)."""
    packages: tuple[str, ...]
    """The modules it needs."""


def identity(authorization: str | None) -> str | None:
    """The ``sub`` of the ``Bearer`` token in an ``Authorization`` value, or None.

    The check the gate's ``JWTVerifier(algorithms=["HS256"], secret=SECRET)`` makes: a valid
    signature, an ``exp`` that has not passed, a ``sub``.
    """
    if authorization is None or not authorization.startswith("Bearer "):
        return None
    try:
        claims = jwt.decode(
            authorization[len("Bearer ") :],
            SECRET,
            algorithms=["HS256"],
            options={"require_exp": True, "require_sub": True},
        )
    except JWTError:
        return None
    sub: str = claims["sub"]
    return sub


def _channels() -> BaseRoute:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            SECRET_KEY=SECRET,
            ALLOWED_HOSTS=[urlsplit(ORIGIN).hostname],
            INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
            # Sessions live in the cookie: the auth stack looks one up without a database.
            SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
            DATABASES={},
            USE_TZ=True,
        )
        django.setup()

    from channels.auth import AuthMiddlewareStack
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator
    from django.urls import path

    class EchoConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels ships no types
        async def connect(self) -> None:
            headers = dict(self.scope["headers"])
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            self.user_id = identity(authorization)
            if self.user_id is None:
                await self.close()  # before the accept: the server answers HTTP 403
                return
            await self.accept()

        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            if text_data is not None:
                await self.send(text_data=text_data)

    app = AllowedHostsOriginValidator(
        AuthMiddlewareStack(URLRouter([path("ws", EchoConsumer.as_asgi())]))
    )
    return WebSocketRoute("/ws", app)


def _socketio() -> BaseRoute:
    import socketio

    server = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[ORIGIN])

    async def connect(sid: str, environ: Mapping[str, Any], auth: Any) -> None:
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization is None and isinstance(auth, dict) and "token" in auth:
            authorization = f"Bearer {auth['token']}"
        user_id = identity(authorization)
        if user_id is None:
            raise socketio.exceptions.ConnectionRefusedError("a valid token is required")
        await server.save_session(sid, {"user_id": user_id})

    async def echo(sid: str, data: Any) -> None:
        await server.emit("echo", data, to=sid)

    server.on("connect", connect)
    server.on("echo", echo)
    # The router in front sends it everything under /socket.io, WebSocket or polling.
    return Mount("/socket.io", socketio.ASGIApp(server, socketio_path=None))


PEERS: dict[str, Peer] = {
    "channels": Peer(_channels, "/ws", "plain", ("channels", "django")),
    "socketio": Peer(
        _socketio, "/socket.io/?EIO=4&transport=websocket", "socketio", ("socketio", "engineio")
    ),
}


def missing(name: str) -> list[str]:
    """The modules peer ``name`` needs that are not installed."""
    return [module for module in PEERS[name].packages if importlib.util.find_spec(module) is None]
