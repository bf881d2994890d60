"""Chat history in a database, with SQLAlchemy's async engine (the ``examples`` extra)."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import DateTime, Integer, String, Text, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ChatMessage(Base):
    __tablename__ = "chat_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room: Mapped[str] = mapped_column(String(100), index=True)
    sender: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    sent_at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.datetime.now(datetime.timezone.utc)
    )

    def as_dict(self) -> dict[str, Any]:
        return {"room": self.room, "from": self.sender, "text": self.text}


class SQLChatStore:
    """Chat history in the database at ``url``. ``await start()`` creates the table."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def start(self) -> None:
        # Workers that start at once on one database race to create the table: one may lose
        # between its check and its CREATE ("already exists"). A second try finds the table.
        try:
            await self._create_tables()
        except OperationalError:
            await self._create_tables()

    async def _create_tables(self) -> None:
        async with self.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)

    async def aclose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[SQLChatSession]:
        """One unit of work: committed if the block succeeds, rolled back if it raises."""
        async with self.sessions() as session:
            try:
                yield SQLChatSession(session)
            except BaseException:
                await session.rollback()
                raise
            await session.commit()


class SQLChatSession:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, room: str, sender: str, text: str) -> None:
        self.session.add(ChatMessage(room=room, sender=sender, text=text))
        await self.session.flush()  # fail here, before anyone hears it

    async def history(self, room: str, limit: int = 20) -> list[dict[str, Any]]:
        query = (
            select(ChatMessage)
            .where(ChatMessage.room == room)
            .order_by(ChatMessage.id.desc())
            .limit(limit)
        )
        rows = (await self.session.scalars(query)).all()
        return [row.as_dict() for row in reversed(rows)]
