"""MessageSizeMiddleware: refuse client messages larger than a byte limit.

The server hands a message to the ASGI app only once it has buffered all of it, so this layer
decides what happens to messages up to the server's own cap (uvicorn ``--ws-max-size``): an
oversized one is dropped with an error frame, or ends the connection. Anything beyond the
server's cap never gets here; the protocol layer closes the connection with 1009 first.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message

from wsgate import _options, close_codes
from wsgate._choices import SIZE_POLICIES, SizePolicy
from wsgate.connection import Connection
from wsgate.engine import DROP, CheckMiddleware, Verdict
from wsgate.error_frames import MESSAGE_TOO_LARGE

__all__ = ["MessageSizeMiddleware"]


class MessageSizeMiddleware(CheckMiddleware):
    """Drop, or close on, client messages larger than ``max_bytes``.

    A text frame is measured in UTF-8 bytes, not characters, so 8192 four-byte emoji are
    32 KiB. A binary frame is measured in bytes. A message of exactly ``max_bytes`` passes.

    With the ``"refuse"`` policy an oversized message never reaches the app: the client gets
    a ``message_too_large`` error frame with ``limit`` (in bytes) and the connection stays
    open. The message is not parsed, so the frame carries no ``id``. With ``"close"`` the
    connection is closed with 1009 ``message_too_large``.

    Give the server a cap of its own, a small multiple of ``max_bytes`` (uvicorn
    ``--ws-max-size``), so that a huge message is cut off by the protocol layer instead of
    being buffered whole before this middleware can see it.

    Args:
        app: The ASGI app to protect.
        max_bytes: The largest message the app gets, in bytes.
        policy: ``"refuse"`` (the default) drops the message with an error frame;
            ``"close"`` closes the connection with 1009.
    """

    close_codes = (close_codes.MESSAGE_TOO_LARGE,)
    error_frames = (MESSAGE_TOO_LARGE,)

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int = 8192,
        policy: SizePolicy = "refuse",
    ) -> None:
        self.max_bytes = _options.count("max_bytes", max_bytes, unit="bytes")
        # A text of at most this many characters is within the limit, whatever it holds.
        self._fits = self.max_bytes // 4
        self.policy = _options.choice("policy", policy, SIZE_POLICIES)
        self.explanation = (
            f"Messages may be at most {max_bytes} bytes (UTF-8 for text); this one was larger "
            "and was dropped."
        )
        self._alone(app)

    def message(self, state: Connection, message: Message) -> Awaitable[Verdict] | None:
        """Pass a message within the limit; answer an oversized one as the policy says."""
        text = message.get("text")
        if text is not None and len(text) <= self._fits:
            return None  # the common case, without a call
        if not self.too_large(message):
            return None
        return self._refused(state)

    async def _refused(self, connection: Connection) -> Verdict:
        await self.refuse(connection)
        return DROP

    async def refuse(self, connection: Connection) -> bool:
        """Answer an oversized message as the policy says: with an error frame (False), or
        by closing the connection with 1009 (True)."""
        if self.policy == "close":
            await connection.close(close_codes.MESSAGE_TOO_LARGE)
            return True
        await connection.send_error(MESSAGE_TOO_LARGE, self.explanation, limit=self.max_bytes)
        return False

    def too_large(self, message: Message) -> bool:
        """Whether a ``websocket.receive`` message is larger than ``max_bytes``."""
        limit = self.max_bytes
        text = message.get("text")
        if text is not None:
            # A character is 1 to 4 bytes in UTF-8: encode only when the length cannot tell.
            length = len(text)
            if length > limit:
                return True
            if 4 * length <= limit:
                return False
            # surrogatepass: never raise, even on a lone surrogate no valid frame carries.
            return len(text.encode("utf-8", "surrogatepass")) > limit
        data = message.get("bytes")
        return data is not None and len(data) > limit
