from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from examples.app import create_app
from wsgate import Environment, GateConfig
from wsgate.testing import LiveServer, TokenFactory

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
ALLOWED_ORIGIN = "https://app.example.com"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tokens() -> TokenFactory:
    return TokenFactory(SECRET)


def example_config(environment: Environment, **overrides: object) -> GateConfig:
    settings: dict[str, object] = {
        "environment": environment,
        "jwt_secret": SECRET,
        "allowed_origins": (ALLOWED_ORIGIN,),
        "allow_missing_origin": True,
    }
    settings.update(overrides)
    return GateConfig(**settings)  # type: ignore[arg-type]


def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh SQLite database file for one example app."""
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'chat.sqlite3'}"


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The example app in development mode, with JWTs signed by SECRET.

    The rate limit is raised so that tests sharing the server do not share a budget; the
    rate-limit test runs the default on a server of its own.
    """
    config = example_config(Environment.DEVELOPMENT, rate_limit="600/minute")
    app = create_app(config, database_url=database_url(tmp_path_factory))
    with LiveServer(app, ws_max_size=config.server_max_size) as server:
        yield server


@pytest.fixture(scope="session")
def prod_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The example app in production mode, with JWTs signed by SECRET."""
    config = example_config(Environment.PRODUCTION, rate_limit="600/minute")
    app = create_app(config, database_url=database_url(tmp_path_factory))
    with LiveServer(app, ws_max_size=config.server_max_size) as server:
        yield server


class IntrospectionService:
    """A real RFC 7662 introspection service for tests, which they can slow down.

    ``token-of-<name>`` (anything after a further ``-`` is ignored) is active with subject
    ``<name>``; every other token is inactive. Serve ``.app`` with a LiveServer.
    """

    def __init__(self) -> None:
        self.slow = threading.Event()
        self.app = Starlette(routes=[Route("/introspect", self.introspect, methods=["POST"])])

    async def introspect(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("ascii")))
        if self.slow.is_set():
            await anyio.sleep(2)  # the fault under test: slower than the verifier waits
        token = form.get("token", "")
        if token.startswith("token-of-"):
            subject = token.removeprefix("token-of-").split("-")[0]
            return JSONResponse({"active": True, "sub": subject, "exp": time.time() + 300})
        return JSONResponse({"active": False})
