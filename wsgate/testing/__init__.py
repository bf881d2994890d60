"""The test harness shipped with wsgate: a live server, a WebSocket client and JWT factories.

It is what wsgate's own test suite uses, and it is public so that applications can test
their gated endpoints the same way: over real sockets, against a real uvicorn server.

* :class:`LiveServer` serves an ASGI app with uvicorn on an unused 127.0.0.1 port.
* :class:`WSClient` talks to it (``async with WSClient(server.ws("/chat")) as ws:``),
  recording every :class:`Frame`; a refused handshake raises :class:`HandshakeRejected`.
* :class:`TokenFactory` makes valid JWTs and each kind of bad one.

Installing wsgate registers a pytest plugin with two fixtures, ``wsgate_server`` and
``wsgate_tokens`` (see :mod:`wsgate.testing.plugin`). The client needs the ``websockets``
package: ``pip install 'wsgate[testing]'``.
"""

from __future__ import annotations

from wsgate.testing.server import LiveServer
from wsgate.testing.tokens import TokenFactory

_MISSING_CLIENT = "wsgate.testing needs the websockets client: pip install 'wsgate[testing]'"

try:
    from wsgate.testing.client import Frame, HandshakeRejected, WSClient
except ImportError as exc:
    if not (exc.name or "").startswith("websockets"):
        raise
    # Raise only when a client name is used: the pytest plugin imports this package in
    # every test run, including those of projects that installed wsgate without the extra.
    _client_import_error: ImportError | None = exc
else:
    _client_import_error = None

__all__ = ["Frame", "HandshakeRejected", "LiveServer", "TokenFactory", "WSClient"]


def __getattr__(name: str) -> object:
    if _client_import_error is not None and name in ("Frame", "HandshakeRejected", "WSClient"):
        raise ImportError(_MISSING_CLIENT) from _client_import_error
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
