"""A WebSocket client on a bare socket, for the clients no library imitates.

It can stop reading while the server writes to it (with a small receive buffer, so the
server's buffers fill fast), and vanish halfway through a frame. Everything else is the
minimum of RFC 6455: the opening handshake, masked frames from the client, and reading frames
until the close frame.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from dataclasses import dataclass

import anyio

__all__ = ["RawClient", "RawFrame"]

_TEXT = 0x1
_CLOSE = 0x8


@dataclass(frozen=True)
class RawFrame:
    """One frame from the server: its opcode and payload."""

    opcode: int
    payload: bytes

    @property
    def close(self) -> tuple[int, str] | None:
        """The close code and reason of a close frame, else None."""
        if self.opcode != _CLOSE:
            return None
        if len(self.payload) < 2:
            return 1005, ""
        return struct.unpack("!H", self.payload[:2])[0], self.payload[2:].decode()


class RawClient:
    """A WebSocket connection over a plain socket; create it with :meth:`connect`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        receive_buffer: int | None = None,
        within: float = 10.0,
    ) -> RawClient:
        """Open a socket and complete the opening handshake, or raise ConnectionError.

        Args:
            receive_buffer: ``SO_RCVBUF`` in bytes; small makes a stalled reader stall fast.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            with anyio.fail_after(within):
                await loop.sock_connect(sock, (host, port))
                reader, writer = await asyncio.open_connection(sock=sock)
                key = base64.b64encode(os.urandom(16)).decode()
                lines = [
                    f"GET {path} HTTP/1.1",
                    f"Host: {host}:{port}",
                    "Upgrade: websocket",
                    "Connection: Upgrade",
                    f"Sec-WebSocket-Key: {key}",
                    "Sec-WebSocket-Version: 13",
                    *(f"{name}: {value}" for name, value in (headers or {}).items()),
                ]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
                response = await reader.readuntil(b"\r\n\r\n")
        except BaseException:
            sock.close()
            raise
        status = response.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            writer.transport.abort()
            raise ConnectionError(f"the handshake was refused: {status.decode()}")
        return cls(reader, writer)

    @staticmethod
    def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
        """A masked client frame."""
        first = (0x80 if fin else 0) | opcode
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", first, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", first, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, length)
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        return header + mask + masked

    async def send_text(self, text: str) -> None:
        self.writer.write(self.frame(_TEXT, text.encode()))
        await self.writer.drain()

    async def send_partial(self, text: str, keep: int) -> None:
        """Send the header of a text frame and only the first ``keep`` bytes of it."""
        payload = text.encode()
        frame = self.frame(_TEXT, payload)
        self.writer.write(frame[: len(frame) - len(payload) + keep])
        await self.writer.drain()

    async def read_frame(self, within: float = 10.0) -> RawFrame:
        """The next frame from the server; raises IncompleteReadError at end of stream."""
        with anyio.fail_after(within):
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return RawFrame(first & 0x0F, await self.reader.readexactly(length))

    async def read_until_close(self, within: float = 30.0) -> tuple[list[RawFrame], RawFrame]:
        """Read every frame up to the close frame: (the frames before it, the close frame)."""
        frames: list[RawFrame] = []
        with anyio.fail_after(within):
            while True:
                frame = await self.read_frame(within)
                if frame.opcode == _CLOSE:
                    return frames, frame
                frames.append(frame)

    def abort(self) -> None:
        """Drop the TCP connection at once, without a close frame (RST)."""
        self.writer.transport.abort()
