"""Query-string redaction: the one place a secret in a handshake's query is taken out.

A token in the query string (``?access_token=...``, see ``query_param``) is written to the
ASGI server's access log with the request line, unless it is gone from the scope by the time
the server answers the handshake.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote_plus

from starlette.types import Scope

__all__ = ["REDACTED", "redact_query"]

REDACTED: Final = b"redacted"
"""What a redacted query-string value is replaced with."""


def redact_query(scope: Scope, name: str | None = None) -> None:
    """Replace query-string values with ``redacted``, in ``scope`` itself.

    In place, on purpose: ASGI servers log the request line from this very scope when they
    answer the handshake, so this must happen before anything can answer it. With ``name``,
    only the values of that parameter (read as the token extractor reads names); without it,
    every value, for a handshake refused before authentication could say which parameter
    holds a secret. Names and the other bytes are kept as they were.
    """
    query: bytes = scope.get("query_string", b"")
    if not query:
        return
    parts = query.split(b"&")
    for index, part in enumerate(parts):
        key, equals, value = part.partition(b"=")
        if not equals or value == REDACTED:
            continue
        if name is None or unquote_plus(key.decode("latin-1")) == name:
            parts[index] = key + b"=" + REDACTED
    scope["query_string"] = b"&".join(parts)
