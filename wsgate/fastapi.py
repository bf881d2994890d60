"""FastAPI support: the gate in front of one FastAPI websocket route, in one line.

::

    from wsgate.fastapi import GateUserDep, gated_websocket

    @gated_websocket(router, "/ws/chat/{user_id}", gate=gate)
    async def chat(websocket: WebSocket, user_id: str, user: GateUserDep) -> None: ...

The handler is a FastAPI websocket function, with its ``WebSocket``, ``Depends`` and path
parameters. Other routes of the router stay ungated.

Why not ``@router.websocket`` and a gate on ``route.app``: FastAPI builds an
``APIWebSocketRoute``'s app from its endpoint function, and builds it again, from that function
alone, whenever the router is included (with a prefix or not), so a gate put on ``route.app``
is dropped and the route is silently unprotected. What ``include_router`` keeps of a Starlette
``WebSocketRoute`` is its endpoint, an ASGI app. So :func:`gated_websocket` adds one of those,
whose endpoint is the gate in front of FastAPI's own app for the handler: the gate runs after
routing (the path parameters are in the scope, so the ``{user_id}`` check works) and before
FastAPI resolves any dependency.

FastAPI's own app for the handler must know what each inclusion adds: its prefix's path
parameters and its ``dependencies``. FastAPI gives those to its own route class only, so the
handler is also declared, right after the gated route and at the same path, as an
``APIWebSocketRoute`` that is never reached on its own (the gated route matches first, and it
refuses a connection that did not come through the gate). Behind the gate, the copy FastAPI
made of it for the app and inclusion that matched runs the handler; at start-up, those copies
tell the gate the paths to publish in ``/ws/config``.

Importing this module imports FastAPI; ``import wsgate`` does not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Final, TypeVar, cast
from weakref import WeakKeyDictionary

import fastapi.routing
from fastapi import APIRouter, Depends, FastAPI, WebSocket
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIWebSocketRoute
from starlette.requests import HTTPConnection
from starlette.routing import Match, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from wsgate.auth.base import GateUser
from wsgate.error_frames import Protocol
from wsgate.exceptions import ConfigurationError, NoGateUser
from wsgate.gate import Endpoint, Gate
from wsgate.middleware.auth import AuthMiddleware

__all__ = ["GateUserDep", "current_gate_user", "gated_websocket"]

_Handler = TypeVar("_Handler", bound=Callable[..., Awaitable[Any]])

_STARTUP_CHECK: Final = "wsgate_startup_check"
"""Marks a router's lifespan that already refuses a gate in front of the whole app."""
_THROUGH_GATE: Final = "wsgate.fastapi.gated"
"""The scope key the gated route sets before it runs FastAPI's route for the handler."""


def gated_websocket(
    router: APIRouter | FastAPI,
    path: str,
    *,
    gate: Gate,
    name: str | None = None,
    dependencies: Sequence[DependsParam] | None = None,
    protocol: Protocol | None = "json",
    **options: Any,
) -> Callable[[_Handler], _Handler]:
    """Declare a websocket route on ``router`` with ``gate`` in front of it, as
    ``@router.websocket(path)`` would without the gate.

    The route stays gated when the router is included in an app or in another router, with a
    prefix or not. The handler gets FastAPI's ``WebSocket``, ``Depends`` (with the app's
    ``dependency_overrides``) and path parameters, and the gate's user from
    :data:`GateUserDep`. A path parameter named ``user_id`` must equal the token's subject,
    or the connection is closed with 1008 ``user_mismatch``.

    Refused with :class:`~wsgate.ConfigurationError`: a second websocket route for the same
    path on the same router (at the decorator), and a gate in front of the whole app
    (``app.add_middleware(gate.wrap)``, at start-up), since either would gate a connection
    twice or leave it ungated.

    Args:
        router: The ``APIRouter`` (or ``FastAPI`` app) the route belongs to.
        path: The route's path, after the router's own ``prefix``, as in
            ``router.websocket``.
        gate: The gate to put in front of the route.
        name: The route's name for ``url_path_for``; the handler's name by default.
        dependencies: Dependencies run for this route before the handler, as in
            ``router.websocket``; those of ``include_router(..., dependencies=[...])`` and the
            router's own run first.
        protocol: The gate's message-format check: ``"json"`` (the default), ``"jsonrpc"``,
            or None to pass every frame through unchecked.
        options: :meth:`Gate.wrap <wsgate.Gate.wrap>`'s other keyword arguments:
            ``dev_bypass``, ``subprotocols``, ``json_endpoint``, ``jsonrpc_endpoint``.
    """
    target = router.router if isinstance(router, FastAPI) else router
    full_path = target.prefix + path

    def decorator(handler: _Handler) -> _Handler:
        _refuse_second_route(target, full_path)
        route_name = name or getattr(handler, "__name__", None) or repr(handler)
        fastapi_app = _FastAPIWebSocket(gate)
        engine = gate.wrap(fastapi_app, path=full_path, protocol=protocol, **options)
        fastapi_app.declared = gate.endpoints[-1]  # the one wrap() just added
        endpoint = _OneGate(engine, full_path, fastapi_app)
        # An ASGI app, which Starlette's WebSocketRoute takes as its endpoint.
        target.add_websocket_route(full_path, cast(Any, endpoint), name=route_name)
        # FastAPI's route for the handler, after the gated one: see the module docstring.
        target.add_api_websocket_route(
            path,
            handler,
            name=route_name,
            dependencies=[Depends(fastapi_app.require_gate), *(dependencies or ())],
        )
        fastapi_app.route = cast(APIWebSocketRoute, target.routes[-1])
        _refuse_whole_app_gate_at_startup(target)
        return handler

    return decorator


def current_gate_user(connection: HTTPConnection) -> GateUser:
    """The FastAPI dependency behind :data:`GateUserDep`: the :class:`~wsgate.GateUser` the
    gate authenticated.

    Raises :class:`~wsgate.NoGateUser` when the route has no gate in front of it, which
    fails the handshake with HTTP 500 and logs the reason.
    """
    user = connection.scope.get("user")
    if not isinstance(user, GateUser):
        raise NoGateUser(
            f"{connection.scope.get('path', 'this route')} has no gate in front of it, so it "
            "has no GateUser: declare it with wsgate.fastapi.gated_websocket(router, path, "
            "gate=gate) instead of @router.websocket(path)."
        )
    return user


GateUserDep = Annotated[GateUser, Depends(current_gate_user)]
"""The gate's user, for a handler's signature: ``user: GateUserDep``."""


class _FastAPIWebSocket:
    """What the gate of one declared route runs: FastAPI's route for the handler, as FastAPI
    copied it for the app that serves the connection, with each inclusion's prefix,
    ``dependencies`` and the app's ``dependency_overrides``.

    The copies are found once per app (an app is served by a process, a test builds a few).
    Outside a FastAPI app, the route as declared runs.
    """

    route: APIWebSocketRoute
    declared: Endpoint

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.published: list[Endpoint] = []
        self._per_app: WeakKeyDictionary[Any, list[Any]] = WeakKeyDictionary()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_THROUGH_GATE] = True
        for route in self.copies_in(scope.get("app")):
            if route.matches(scope)[0] is Match.FULL:
                await route.app(scope, receive, send)
                return
        await self.route.app(scope, receive, send)

    def copies_in(self, app: object) -> list[Any]:
        """The copies of :attr:`route` FastAPI made for ``app``: one per inclusion."""
        if not isinstance(app, FastAPI):
            return []
        copies = self._per_app.get(app)
        if copies is None:
            routes: Any = app.router.routes
            # Recent FastAPI includes routers lazily (iter_route_contexts walks them); older
            # releases copied each included route into the app's list.
            contexts = getattr(fastapi.routing, "iter_route_contexts", None)
            if contexts is not None:
                routes = contexts(routes)
            copies = [route for route in routes if self._is_copy(route)]
            self._per_app[app] = copies
        return copies

    def _is_copy(self, route: Any) -> bool:
        if getattr(route, "endpoint", None) is not self.route.endpoint:
            return False
        dependencies = getattr(route, "dependencies", ())
        return any(depends.dependency == self.require_gate for depends in dependencies)

    def publish(self, app: object) -> None:
        """Publish the paths the route is served at in ``app``, prefixes and all, in place of
        the path it was declared with (``/ws/config`` lists the gate's endpoints)."""
        paths = sorted({route.path for route in self.copies_in(app)})
        if not paths:
            return
        current = self.published or [self.declared]
        endpoints = self.gate.endpoints
        at = next((i for i, endpoint in enumerate(endpoints) if endpoint is current[0]), None)
        if at is None:
            return
        self.published = [dataclasses.replace(self.declared, path=path) for path in paths]
        endpoints[at : at + len(current)] = self.published

    def require_gate(self, websocket: WebSocket) -> None:
        """The first dependency of the handler's own route: it runs only behind the gate."""
        if not websocket.scope.get(_THROUGH_GATE):
            raise ConfigurationError(
                f"{websocket.scope.get('path')} reached the handler of a gated_websocket() "
                "route without its gate: a router dropped the gated route and kept the "
                "handler's. The connection is refused."
            )


class _OneGate:
    """The gated route's endpoint: refuses a connection some other gate already
    authenticated, which would be checked and counted twice.

    Attributes:
        handler: What the gate runs, for the router's start-up to publish its paths.
    """

    def __init__(self, app: ASGIApp, path: str, handler: _FastAPIWebSocket) -> None:
        self.app = app
        self.path = path
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and isinstance(scope.get("user"), GateUser):
            raise ConfigurationError(
                f"{self.path} is gated twice: a gate in front of the whole app or of a mount "
                "(gate.wrap, AuthMiddleware) authenticated the connection already, and "
                "gated_websocket() gates the route again. Remove the outer gate; "
                "gated_websocket() gates each route it declares."
            )
        await self.app(scope, receive, send)


def _refuse_second_route(router: APIRouter, path: str) -> None:
    for route in router.routes:
        if isinstance(route, WebSocketRoute) and route.path == path:
            kind = "a gated" if isinstance(route.endpoint, _OneGate) else "an ungated"
            raise ConfigurationError(
                f"{path} already has {kind} websocket route on this router: a second one "
                "would gate it twice, or leave an ungated route in front of the gated one. "
                "Declare each websocket path once, with gated_websocket() alone."
            )


def _refuse_whole_app_gate_at_startup(router: APIRouter) -> None:
    """Make ``router``'s lifespan refuse, at start-up, an app with a gate in front of it all,
    and publish its gated routes at the paths the app serves them at.

    A router's lifespan runs at the start-up of the app it is included in (FastAPI merges
    it), and is the first point where that app's middleware and routes are known.
    """
    lifespan = router.lifespan_context
    if getattr(lifespan, _STARTUP_CHECK, False):
        return

    @asynccontextmanager
    async def refusing_whole_app_gate(app: Any) -> AsyncIterator[Any]:
        for middleware in getattr(app, "user_middleware", ()):
            if _is_gate(middleware.cls):
                raise ConfigurationError(
                    f"the app has {_describe(middleware.cls)} in front of it as a whole, and "
                    "gated_websocket() gates its routes again: their connections would be "
                    "authenticated and counted twice. Remove the middleware; "
                    "gated_websocket() gates each route it declares, and leaves the others "
                    "ungated."
                )
        for route in router.routes:
            if isinstance(route, WebSocketRoute) and isinstance(route.endpoint, _OneGate):
                route.endpoint.handler.publish(app)
        async with lifespan(app) as state:
            yield state

    setattr(refusing_whole_app_gate, _STARTUP_CHECK, True)
    router.lifespan_context = refusing_whole_app_gate


def _is_gate(factory: object) -> bool:
    """Whether a middleware factory authenticates: ``gate.wrap`` or an AuthMiddleware."""
    if isinstance(getattr(factory, "__self__", None), Gate):
        return True
    return isinstance(factory, type) and issubclass(factory, AuthMiddleware)


def _describe(factory: object) -> str:
    if isinstance(getattr(factory, "__self__", None), Gate):
        return "gate.wrap"
    return getattr(factory, "__name__", repr(factory))
