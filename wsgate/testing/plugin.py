"""pytest fixtures for testing gated endpoints, registered when wsgate is installed.

The fixtures are synchronous, so they work with any async test plugin (anyio,
pytest-asyncio, trio): the server runs in its own thread and event loop.

::

    async def test_chat(wsgate_server, wsgate_tokens):
        server = wsgate_server(build_app(secret=wsgate_tokens.secret))
        async with WSClient(server.ws("/chat"), token=wsgate_tokens.valid()) as ws:
            ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import pytest
from starlette.types import ASGIApp

from wsgate.testing.tokens import TokenFactory

if TYPE_CHECKING:
    # Imported when the fixture is used: it needs uvicorn, and the plugin loads in every
    # pytest run of a project that installed wsgate, with or without the testing extra.
    from wsgate.testing.server import LiveServer

__all__ = ["ServerFactory", "wsgate_server", "wsgate_tokens"]


class ServerFactory(Protocol):
    """The type of the ``wsgate_server`` fixture, for annotating tests."""

    def __call__(self, app: ASGIApp, **options: Any) -> LiveServer:
        """Start serving ``app``; ``options`` are :class:`LiveServer`'s keyword arguments."""


@pytest.fixture
def wsgate_tokens() -> TokenFactory:
    """A :class:`~wsgate.testing.TokenFactory` for HS256 with a fresh random secret.

    Configure the verifier under test with ``wsgate_tokens.secret``.
    """
    return TokenFactory()


@pytest.fixture
def wsgate_server() -> Iterator[ServerFactory]:
    """A function that serves an app on a live uvicorn server and returns the server.

    Call it as ``wsgate_server(app, **options)`` with any keyword argument of
    :class:`~wsgate.testing.LiveServer`; it returns once the server listens, as a started
    :class:`~wsgate.testing.LiveServer`. Every server it started is stopped at teardown,
    the last one first.
    """
    with contextlib.ExitStack() as stack:

        def start(app: ASGIApp, **options: Any) -> LiveServer:
            from wsgate.testing import LiveServer  # says what to install without uvicorn

            server = LiveServer(app, **options)
            server.start()
            stack.callback(server.stop)
            return server

        yield start
