"""The test harness shipped with wsgate: a live server, a WebSocket client and JWT factories.

It is what wsgate's own test suite uses, and it is public so that applications can test
their gated endpoints the same way: over real sockets, against a real uvicorn server.

* :class:`LiveServer` serves an ASGI app with uvicorn on an unused 127.0.0.1 port.
* :class:`WSClient` talks to it (``async with WSClient(server.ws("/chat")) as ws:``),
  recording every :class:`Frame`; a refused handshake raises :class:`HandshakeRejected`.
* :class:`TokenFactory` makes valid JWTs and each kind of bad one.

Installing wsgate registers a pytest plugin with two fixtures, ``wsgate_server`` and
``wsgate_tokens`` (see :mod:`wsgate.testing.plugin`). The server needs uvicorn and the client
the ``websockets`` package: ``pip install 'wsgate[testing]'``.
"""

from __future__ import annotations

from wsgate.testing.tokens import TokenFactory

_MISSING_SERVER = "wsgate.testing needs uvicorn for LiveServer: pip install 'wsgate[testing]'"
_MISSING_CLIENT = "wsgate.testing needs the websockets client: pip install 'wsgate[testing]'"

# Without the extra, raise only when a name that needs it is used: the pytest plugin imports
# this package in every test run, including those of projects that installed wsgate alone.
try:
    from wsgate.testing.server import LiveServer
except ImportError as exc:
    if not (exc.name or "").startswith("uvicorn"):
        raise
    _server_import_error: ImportError | None = exc
else:
    _server_import_error = None

try:
    from wsgate.testing.client import Frame, HandshakeRejected, WSClient
except ImportError as exc:
    if not (exc.name or "").startswith("websockets"):
        raise
    _client_import_error: ImportError | None = exc
else:
    _client_import_error = None

__all__ = ["Frame", "HandshakeRejected", "LiveServer", "TokenFactory", "WSClient"]


def __getattr__(name: str) -> object:
    if _server_import_error is not None and name == "LiveServer":
        raise ImportError(_MISSING_SERVER) from _server_import_error
    if _client_import_error is not None and name in ("Frame", "HandshakeRejected", "WSClient"):
        raise ImportError(_MISSING_CLIENT) from _client_import_error
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
