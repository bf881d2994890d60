"""Chat history in the process's memory: lost at restart, and not shared between workers."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


class MemoryChatStore:
    """Chat history in memory, with the contract of :class:`examples.store.ChatStore`.

    Args:
        keep: How many messages of each room are kept; older ones are forgotten.
    """

    def __init__(self, *, keep: int = 1000) -> None:
        self.keep = keep
        self.rooms: dict[str, deque[dict[str, Any]]] = {}

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        self.rooms.clear()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[MemoryChatSession]:
        """One unit of work: its messages are kept only if the block succeeds."""
        session = MemoryChatSession(self)
        yield session
        for message in session.added:
            room = self.rooms.setdefault(message["room"], deque(maxlen=self.keep))
            room.append(message)


class MemoryChatSession:
    def __init__(self, store: MemoryChatStore) -> None:
        self.store = store
        self.added: list[dict[str, Any]] = []

    async def add(self, room: str, sender: str, text: str) -> None:
        self.added.append({"room": room, "from": sender, "text": text})

    async def history(self, room: str, limit: int = 20) -> list[dict[str, Any]]:
        messages = self.store.rooms.get(room, ())
        return list(messages)[-limit:] if limit > 0 else []
