"""A real uvicorn server on 127.0.0.1, run in a background thread for the length of a test."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from wsgate.exceptions import ConfigurationError

__all__ = ["LiveServer"]

_HOST = "127.0.0.1"
_WS_IMPLEMENTATIONS = ("websockets-sansio", "websockets", "wsproto", "auto")
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
_LIFESPANS = ("auto", "on", "off")


class _ThreadedServer(uvicorn.Server):
    """A uvicorn server that tells the thread waiting for it when it is listening."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


class LiveServer:
    """Serves an ASGI app with uvicorn on an unused 127.0.0.1 port, in a background thread.

    The server runs its own event loop, so async tests can talk to it over real sockets
    with any client. uvicorn installs no signal handlers outside the main thread, so Ctrl+C
    still reaches the test runner. The listening socket is bound before uvicorn starts,
    which leaves no window in which another process could take the port.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with LiveServer(app) as server:
            async with WSClient(server.ws("/echo")) as ws:
                ...

    A LiveServer runs once; create a new one to serve again.

    Args:
        app: The ASGI application to serve.
        ws: uvicorn's WebSocket implementation: ``"websockets-sansio"``, ``"websockets"``,
            ``"wsproto"`` or ``"auto"``.
        ws_max_size: The largest WebSocket message the server accepts, in bytes.
        ws_ping_interval: Interval between server keepalive pings, in seconds, or None
            (the default) so that tests only see the frames the app sends.
        log_level: uvicorn's log level: ``"critical"``, ``"error"``, ``"warning"``,
            ``"info"``, ``"debug"`` or ``"trace"``. uvicorn's logs go to the ``uvicorn.*``
            loggers; the harness does not install logging handlers of its own.
        lifespan: ``"auto"``, ``"on"`` or ``"off"``, as in uvicorn.
        startup_timeout: How long :meth:`start` waits for the server to listen, in seconds.
        port: The port to listen on; 0 (the default) picks an unused one. Give the port of
            a server you stopped to bring "the same service" back in a fault test.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        # WebSocket
        ws: Literal["websockets-sansio", "websockets", "wsproto", "auto"] = "websockets-sansio",
        ws_max_size: int = 16 * 1024 * 1024,
        ws_ping_interval: float | None = None,
        # Logging and lifespan
        log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "warning",
        lifespan: Literal["auto", "on", "off"] = "auto",
        # Timeouts
        startup_timeout: float = 10.0,
        # Address
        port: int = 0,
    ) -> None:
        if not callable(app):
            raise ConfigurationError(f"app must be an ASGI application, not {app!r}.")
        if ws not in _WS_IMPLEMENTATIONS:
            raise ConfigurationError(
                f"ws={ws!r} is not a uvicorn WebSocket implementation: "
                f"use one of {', '.join(_WS_IMPLEMENTATIONS)}."
            )
        if isinstance(ws_max_size, bool) or not isinstance(ws_max_size, int) or ws_max_size < 1:
            raise ConfigurationError(
                f"ws_max_size={ws_max_size!r} must be a positive number of bytes."
            )
        if ws_ping_interval is not None and not ws_ping_interval > 0:
            raise ConfigurationError(
                f"ws_ping_interval={ws_ping_interval!r} must be a positive number of seconds, "
                "or None to send no pings."
            )
        if log_level not in _LOG_LEVELS:
            raise ConfigurationError(
                f"log_level={log_level!r} is not a uvicorn log level: "
                f"use one of {', '.join(_LOG_LEVELS)}."
            )
        if lifespan not in _LIFESPANS:
            raise ConfigurationError(
                f"lifespan={lifespan!r} is not valid: use one of {', '.join(_LIFESPANS)}."
            )
        if not startup_timeout > 0:
            raise ConfigurationError(
                f"startup_timeout={startup_timeout!r} must be a positive number of seconds."
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(f"port={port!r} must be 0 (any unused port) or a TCP port.")
        self.app = app
        self.requested_port = port
        self.ws_implementation = ws
        self.ws_max_size = ws_max_size
        self.ws_ping_interval = ws_ping_interval
        self.log_level = log_level
        self.lifespan = lifespan
        self.startup_timeout = startup_timeout
        self._port: int | None = None
        self._server: _ThreadedServer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def host(self) -> str:
        """The address the server listens on: always ``127.0.0.1``."""
        return _HOST

    @property
    def port(self) -> int:
        """The TCP port the server listens on; known once :meth:`start` has been called."""
        if self._port is None:
            raise RuntimeError("the server has no port yet: call start() first.")
        return self._port

    @property
    def url(self) -> str:
        """The server's HTTP base URL, ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The server's WebSocket base URL, ``ws://127.0.0.1:PORT``."""
        return f"ws://{self.host}:{self.port}"

    def ws(self, path: str) -> str:
        """The WebSocket URL of ``path`` on this server, e.g. ``ws("/chat")``."""
        if not path.startswith("/"):
            raise ValueError(f"path {path!r} must start with '/'.")
        return self.ws_url + path

    def start(self) -> None:
        """Start serving, and return once the server listens.

        Raises:
            RuntimeError: If the server was started before, exited during startup (for
                example because the app's lifespan startup failed), or did not listen
                within ``startup_timeout`` seconds.
        """
        if self._thread is not None:
            raise RuntimeError("this LiveServer was already started; create a new one.")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.requested_port:
            # A stopped server's port may linger in TIME_WAIT; rebinding it is what a
            # restarted service does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, self.requested_port))
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host=_HOST,
            port=self._port,
            # None leaves the host's logging configuration alone.
            log_config=None,
            log_level=self.log_level,
            lifespan=self.lifespan,
            ws=self.ws_implementation,
            ws_max_size=self.ws_max_size,
            ws_ping_interval=self.ws_ping_interval,
        )
        ready = threading.Event()
        self._server = _ThreadedServer(config, ready)
        self._thread = threading.Thread(
            target=self._run,
            args=(self._server, sock, ready),
            name=f"wsgate-live-server-{self._port}",
            daemon=True,
        )
        self._thread.start()

        if not ready.wait(self.startup_timeout):
            # The thread may be stuck in the app's lifespan startup, where should_exit is not
            # looked at; it is a daemon thread, so it cannot keep the test process alive.
            self._server.should_exit = True
            raise RuntimeError(
                f"the server did not listen within startup_timeout={self.startup_timeout} s: "
                "is the app's lifespan startup hanging?"
            )
        if not self._server.started:
            self._thread.join(self.startup_timeout)
            error = self._error
            raise RuntimeError(
                "the server exited during startup"
                + (f" ({error!r})" if error is not None else "")
                + ": check the app's lifespan startup and the uvicorn.error log."
            ) from error

    def _run(self, server: _ThreadedServer, sock: socket.socket, ready: threading.Event) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # uvicorn calls sys.exit() when startup fails
            self._error = exc
        finally:
            sock.close()
            ready.set()  # wake start() even when the server never listened

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and wait for its thread to end. Calling it again does nothing.

        Open connections are asked to close (WebSocket clients get close code 1012); if the
        server has not stopped after half of ``timeout``, it stops waiting for them.

        Args:
            timeout: How long to wait in all, in seconds.

        Raises:
            RuntimeError: If the server thread is still running after ``timeout`` seconds.
        """
        server, thread = self._server, self._thread
        if server is None or thread is None or not thread.is_alive():
            return
        deadline = time.monotonic() + timeout
        server.should_exit = True
        thread.join(timeout / 2)
        if thread.is_alive():
            server.force_exit = True
            thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            raise RuntimeError(
                f"the server on port {self._port} did not stop within {timeout} s: "
                "an app task or the lifespan shutdown may be hanging."
            )

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
