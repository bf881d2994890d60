"""An async WebSocket test client over real sockets, built on the websockets library."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin, Subprotocol

from wsgate.exceptions import ConfigurationError
from wsgate.testing.tokens import DEFAULT_SUBPROTOCOL_PREFIX, TokenFactory

__all__ = ["Frame", "HandshakeRejected", "WSClient"]

# How many frames a timeout message shows, and how much of each.
_SHOWN_FRAMES = 5
_SHOWN_CHARS = 200


@dataclass(frozen=True)
class Frame:
    """One message sent or received by a :class:`WSClient`.

    Attributes:
        direction: ``"sent"`` or ``"received"``.
        data: The message: ``str`` for a text frame, ``bytes`` for a binary one.
        at: When it was sent or received, from :func:`time.monotonic`, in seconds.
    """

    direction: Literal["sent", "received"]
    data: str | bytes
    at: float

    def json(self) -> Any:
        """The message decoded from JSON."""
        return json.loads(self.data)


class HandshakeRejected(Exception):
    """The server answered the opening handshake with an HTTP status instead of 101.

    Attributes:
        status: The HTTP status code, e.g. 403.
        headers: The response headers.
        body: The response body, empty when the server sent none.
    """

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        super().__init__(f"the server refused the WebSocket handshake with HTTP {status}: {body!r}")
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        """The response body decoded from JSON."""
        return json.loads(self.body)


class WSClient:
    """A WebSocket client for tests, modelled on Django Channels' communicator.

    Frames are read only inside the ``receive*``/``expect``/``wait_closed`` calls: there is
    no background task. Every frame sent or received is appended to :attr:`history`.
    Compression and client keepalive pings are off, so the server sees only the frames the
    test sends, and the test sees only the frames the app sends.

    ::

        async with WSClient(server.ws("/chat"), token=tokens.valid()) as ws:
            await ws.send_json({"type": "hello"})
            assert (await ws.expect("welcome"))["user"] == "user-1"

    Args:
        url: The ``ws://`` URL to connect to.
        headers: Extra handshake headers.
        origin: The ``Origin`` header, or None to send none.
        subprotocols: The subprotocols the app understands, offered in this order.
        token: A bearer token to offer, or None.
        token_via: ``"header"`` sends ``Authorization: Bearer <token>``;
            ``"subprotocol"`` offers ``subprotocol_prefix + base64url(token)`` after
            ``subprotocols``, as a browser would.
        subprotocol_prefix: The prefix of the token subprotocol.
        open_timeout: How long :meth:`connect` may take, in seconds.
        max_size: The largest message accepted from the server, in bytes, or None for no
            limit.

    Attributes:
        history: Every frame sent and received, oldest first.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        origin: str | None = None,
        subprotocols: Sequence[str] | None = None,
        # Authentication
        token: str | None = None,
        token_via: Literal["header", "subprotocol"] = "header",  # noqa: S107 - not a password
        subprotocol_prefix: str = DEFAULT_SUBPROTOCOL_PREFIX,
        # Timeouts and limits
        open_timeout: float = 5.0,
        max_size: int | None = 2**24,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ConfigurationError(f"url={url!r} must start with ws:// or wss://.")
        if token_via not in ("header", "subprotocol"):
            raise ConfigurationError(
                f"token_via={token_via!r} is not valid: use 'header' or 'subprotocol'."
            )
        if not open_timeout > 0:
            raise ConfigurationError(
                f"open_timeout={open_timeout!r} must be a positive number of seconds."
            )
        self.url = url
        self.origin = origin
        self.open_timeout = open_timeout
        self.max_size = max_size
        self._headers = list(headers.items() if isinstance(headers, Mapping) else headers or ())
        self._subprotocols = list(subprotocols or ())
        if token is not None and token_via == "header":
            if any(name.lower() == "authorization" for name, _ in self._headers):
                raise ConfigurationError(
                    "token= with token_via='header' sets the Authorization header, which "
                    "headers= already has: give one or the other."
                )
            self._headers.append(("Authorization", f"Bearer {token}"))
        elif token is not None:
            self._subprotocols.append(TokenFactory.subprotocol(token, subprotocol_prefix))

        self.history: list[Frame] = []
        self._connection: ClientConnection | None = None
        self._state: Literal["new", "open", "closed", "rejected"] = "new"
        self._close_code: int | None = None
        self._close_reason: str | None = None
        # Frames received by receive_nothing(), handed out first by the next receive.
        self._pending: deque[str | bytes] = deque()

    @property
    def state(self) -> Literal["new", "open", "closed", "rejected"]:
        """``"new"``, ``"open"``, ``"closed"``, or ``"rejected"`` when the handshake was
        refused with an HTTP status."""
        return self._state

    @property
    def close_code(self) -> int | None:
        """The close code the server sent (1006 if the connection dropped without one), or
        None until the client has seen the connection close."""
        return self._close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason the server sent, or None until the client has seen the
        connection close."""
        return self._close_reason

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server accepted, or None."""
        return None if self._connection is None else self._connection.subprotocol

    @property
    def response_headers(self) -> Headers | None:
        """The headers of the server's handshake response, or None before :meth:`connect`."""
        if self._connection is None or self._connection.response is None:
            return None
        return self._connection.response.headers

    async def connect(self) -> None:
        """Open the connection.

        Raises:
            HandshakeRejected: If the server answered the handshake with an HTTP status.
            TimeoutError: If the handshake took longer than ``open_timeout``.
        """
        if self.state != "new":
            raise RuntimeError(f"connect() was already called (state is {self.state!r}).")
        try:
            self._connection = await connect(
                self.url,
                origin=Origin(self.origin) if self.origin is not None else None,
                subprotocols=[Subprotocol(name) for name in self._subprotocols] or None,
                additional_headers=self._headers or None,
                compression=None,
                # Never through a proxy from the environment: tests talk to 127.0.0.1.
                proxy=None,
                open_timeout=self.open_timeout,
                ping_interval=None,
                max_size=self.max_size,
            )
        except InvalidStatus as exc:
            self._state = "rejected"
            refusal = exc.response
            raise HandshakeRejected(
                refusal.status_code, refusal.headers, bytes(refusal.body)
            ) from None
        self._state = "open"

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with ``code`` and ``reason``; nothing happens if it is not open."""
        if self._connection is None or self.state != "open":
            return
        try:
            await self._connection.close(code, reason)
        finally:
            self._closed()

    def abort(self) -> None:
        """Cut the TCP connection without a close frame, as a client that vanishes does.

        The server sees the connection drop (its app gets close code 1006); the client is
        ``"closed"`` with close code 1006.
        """
        connection = self._require_connection()
        if self.state != "open":
            return
        connection.transport.abort()
        self._state = "closed"
        self._close_code = 1006
        self._close_reason = ""

    async def send_text(self, data: str) -> None:
        """Send a text frame."""
        await self._send(data)

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame."""
        await self._send(data)

    async def send_json(self, obj: Any) -> None:
        """Send ``obj`` encoded as JSON in a text frame."""
        await self._send(json.dumps(obj))

    async def receive(self, timeout: float = 5.0) -> str | bytes:
        """The next message: ``str`` for a text frame, ``bytes`` for a binary one.

        Args:
            timeout: How long to wait, in seconds.

        Raises:
            TimeoutError: If no message arrived in time.
            websockets.exceptions.ConnectionClosed: If the connection closed; the close code
                and reason are recorded first.
        """
        if self._pending:
            return self._pending.popleft()
        return await self._read(timeout)

    async def receive_json(self, timeout: float = 5.0) -> Any:
        """The next message decoded from JSON.

        Args:
            timeout: How long to wait, in seconds.

        Raises:
            AssertionError: If the message is not a JSON text frame.
        """
        data = await self.receive(timeout)
        if not isinstance(data, str):
            raise AssertionError(f"expected a JSON text frame, got a binary frame: {data!r}")
        try:
            return json.loads(data)
        except ValueError:
            raise AssertionError(f"expected a JSON text frame, got {data!r}") from None

    async def expect(self, type: str, *, timeout: float = 5.0) -> dict[str, Any]:
        """Receive until a JSON object whose ``"type"`` is ``type`` arrives, and return it.

        Messages received before it are skipped; they stay in :attr:`history`.

        Args:
            type: The ``"type"`` to wait for.
            timeout: How long to wait in all, in seconds.

        Raises:
            AssertionError: If no such message arrived in time; it lists what did.
        """
        deadline = time.monotonic() + timeout
        skipped: list[str | bytes] = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                data = await self.receive(max(remaining, 0.0))
            except TimeoutError:
                raise AssertionError(
                    f"no message of type {type!r} arrived within {timeout} s; "
                    f"received instead: {_describe(skipped) if skipped else 'nothing'}."
                ) from None
            message = _json_or_none(data)
            if isinstance(message, dict) and message.get("type") == type:
                return message
            skipped.append(data)

    async def receive_nothing(self, timeout: float = 0.1) -> bool:
        """True if no message arrives within ``timeout`` seconds.

        A message that does arrive is not lost: the next ``receive*`` call returns it.
        """
        if self._pending:
            return False
        try:
            data = await self._read(timeout)
        except TimeoutError:
            return True
        self._pending.append(data)
        return False

    async def wait_closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Wait until the server closes the connection, and return its code and reason.

        Messages that arrive meanwhile are read and recorded in :attr:`history`.

        Args:
            timeout: How long to wait, in seconds.

        Raises:
            TimeoutError: If the connection is still open after ``timeout`` seconds.
        """
        if self.state in ("new", "rejected"):
            raise RuntimeError(
                f"wait_closed() needs an opened connection (state is {self.state!r})."
            )
        deadline = time.monotonic() + timeout
        self._pending.clear()  # already in history
        while self.state == "open":
            remaining = deadline - time.monotonic()
            try:
                await self._read(max(remaining, 0.0))
            except ConnectionClosed:
                break
            except TimeoutError:
                raise TimeoutError(
                    f"the server did not close the connection within {timeout} s; "
                    f"last messages: {self._last_received()}."
                ) from None
        return self.close_code, self.close_reason or ""

    async def __aenter__(self) -> WSClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A failing close must not hide the outcome of the test body.
        with contextlib.suppress(Exception):
            await self.close()

    def _require_connection(self) -> ClientConnection:
        if self._connection is None:
            raise RuntimeError(f"the client is not connected (state is {self.state!r}).")
        return self._connection

    async def _send(self, data: str | bytes) -> None:
        connection = self._require_connection()
        try:
            await connection.send(data)
        except ConnectionClosed:
            self._closed()
            raise
        self.history.append(Frame("sent", data, time.monotonic()))

    async def _read(self, timeout: float) -> str | bytes:
        connection = self._require_connection()
        try:
            # Cancelling recv() loses nothing: websockets keeps the message for the next call.
            data = await asyncio.wait_for(connection.recv(), timeout)
        except ConnectionClosed:
            self._closed()
            raise
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"no message arrived within {timeout:g} s; last messages: {self._last_received()}."
            ) from None
        self.history.append(Frame("received", data, time.monotonic()))
        return data

    def _closed(self) -> None:
        connection = self._require_connection()
        self._state = "closed"
        self._close_code = connection.close_code
        self._close_reason = connection.close_reason

    def _last_received(self) -> str:
        received = [frame.data for frame in self.history if frame.direction == "received"]
        return _describe(received[-_SHOWN_FRAMES:]) if received else "none"


def _json_or_none(data: str | bytes) -> Any:
    if not isinstance(data, str):
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _describe(frames: Sequence[str | bytes]) -> str:
    shown = []
    for data in frames:
        text = repr(data)
        shown.append(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")
    return ", ".join(shown)
