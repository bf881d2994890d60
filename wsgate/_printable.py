"""Client text made safe for a log line: escaped, and bounded in length.

Whatever a client controls (the path uvicorn percent-decoded, the query string, a token's
``sub``, the Origin, the User-Agent, the subprotocols) may hold CR, LF, ANSI escapes or a
megabyte of padding. Written to a log as it is, a ``%0D%0A`` in the path starts a forged
line of its own. Every log call in wsgate that carries client text passes it through
:func:`printable` first, in the message and in the ``extra=`` fields alike.

The escaping is one-way and unambiguous: a backslash is doubled, so the six characters
``\\r\\n`` a client sent never read as a line break in the log.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_LOGGED", "printable"]

MAX_LOGGED: Final = 200
"""The most characters of one client value a log line shows; the rest is counted, not shown."""

_NAMED: Final = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", "\t": "\\t"}


def printable(value: object, limit: int = MAX_LOGGED) -> str:
    """``value`` as text fit for one log line.

    Characters that are not printable (control characters, line and paragraph separators,
    bidirectional overrides, zero-width characters) are shown as escapes: ``\\r``, ``\\n``,
    ``\\t``, ``\\x1b``, ``\\u2028``. A backslash becomes ``\\\\``. Bytes are read as
    Latin-1, the way ASGI servers hand over headers. Beyond ``limit`` characters of the
    original, the text is cut and ends with how many more there were.
    """
    if isinstance(value, bytes):
        text = value.decode("latin-1")
    elif isinstance(value, str):
        text = value
    else:
        text = str(value)
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    if not text.isprintable() or "\\" in text:
        text = "".join(_escaped(char) for char in text)
    return f"{text}...(+{cut} characters)" if cut > 0 else text


def _escaped(char: str) -> str:
    if char.isprintable() and char != "\\":
        return char
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
