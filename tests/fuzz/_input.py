"""Structured values from fuzz bytes, the same way under atheris, the fallback and pytest.

A fuzzer mutates raw bytes; a target reads what it needs from them in order. Reading past the
end gives zeros and empty strings, so every input, even an empty one, is a valid test case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class Input:
    """Consumes a fuzz input from the front."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def byte(self) -> int:
        if self.offset >= len(self.data):
            return 0
        self.offset += 1
        return self.data[self.offset - 1]

    def number(self, below: int) -> int:
        """An integer in ``range(below)``."""
        value = self.byte() << 8 | self.byte()
        return value % below

    def flag(self) -> bool:
        return self.byte() & 1 == 1

    def choice(self, options: Sequence[T]) -> T:
        return options[self.number(len(options))]

    def raw(self, most: int) -> bytes:
        """Up to ``most`` bytes, as many as the next byte says."""
        size = self.number(most + 1)
        chunk = self.data[self.offset : self.offset + size]
        self.offset += len(chunk)
        return chunk

    def text(self, most: int) -> str:
        """Up to ``most`` bytes decoded as UTF-8, invalid sequences replaced."""
        return self.raw(most).decode("utf-8", "replace")

    def rest(self) -> bytes:
        chunk = self.data[self.offset :]
        self.offset = len(self.data)
        return chunk
