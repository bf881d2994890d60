"""The example app's chat history: the interface, and the choice of the store behind it.

Two stores keep the same contract:

* :class:`~examples.store.sql.SQLChatStore` keeps it in a database with SQLAlchemy's async
  engine: SQLite (through aiosqlite) by default, or any SQLAlchemy async URL
  (``WSGATE_DATABASE_URL=postgresql+asyncpg://...``). It needs the ``examples`` extra.
* :class:`~examples.store.memory.MemoryChatStore` keeps it in the process's memory, so that
  ``pip install 'wsgate[server]'`` is enough to serve the example.

Each chat message that needs the history gets a session of its own, opened by the endpoint's
per-message scope: committed when the handler succeeds, rolled back when it fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from examples.store.memory import MemoryChatStore

__all__ = ["DEFAULT_DATABASE_URL", "ChatSession", "ChatStore", "StartOnce", "open_store"]

logger = logging.getLogger("examples.store")

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///wsgate-example.sqlite3"


class ChatSession(Protocol):
    """One message's unit of work on the chat history."""

    async def add(self, room: str, sender: str, text: str) -> None:
        """Store a message; raises, before anyone hears it, when the store cannot take it."""
        ...

    async def history(self, room: str, limit: int = 20) -> list[dict[str, Any]]:
        """The last ``limit`` messages of ``room``, oldest first."""
        ...


class ChatStore(Protocol):
    """Chat history. ``await start()`` before the first session; ``aclose()`` ends."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def session(self) -> AbstractAsyncContextManager[ChatSession]:
        """One unit of work: committed if the block succeeds, rolled back if it raises."""
        ...


class StartOnce:
    """``store``, started once: by the app's lifespan, or else by the first session.

    A server that runs no lifespan (daphne) never calls :meth:`start`; the first message that
    needs the store starts it then. Connections whose first such messages arrive together
    wait for that one start, and the next ones find the store started.
    """

    def __init__(self, store: ChatStore) -> None:
        self.store = store
        self.started = False
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Start the store, as the lifespan does; again when called again (an operator
        recreating a lost table), since a store's start is idempotent."""
        async with self._starting:
            await self.store.start()
            self.started = True

    async def aclose(self) -> None:
        await self.store.aclose()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[ChatSession]:
        if not self.started:
            async with self._starting:
                if not self.started:  # another connection's session started it meanwhile
                    await self.store.start()
                    self.started = True
        async with self.store.session() as session:
            yield session


def open_store(url: str | None = None) -> ChatStore:
    """The database at ``url`` (by default a SQLite file in the working directory).

    Without SQLAlchemy or aiosqlite, and no ``url`` asked for, the history is kept in memory
    and a warning says how to get the database. A ``url`` that cannot be opened is an error.
    """
    try:
        # SQLAlchemy comes with the examples extra: import it only when it is there.
        from examples.store.sql import SQLChatStore

        return SQLChatStore(url or DEFAULT_DATABASE_URL)
    except ImportError as exc:
        if url is not None:
            raise ImportError(
                f"The chat history's database URL needs SQLAlchemy and the URL's driver ({exc}). "
                "Install them (pip install 'wsgate[examples]' brings SQLAlchemy and aiosqlite), "
                "or unset WSGATE_DATABASE_URL to keep the history in memory."
            ) from exc
        logger.warning(
            "Chat history is kept in memory, lost at restart (%s). For the SQLite database, "
            "pip install 'wsgate[examples]', or run `make demo`, which installs it.",
            exc,
        )
        return MemoryChatStore()
