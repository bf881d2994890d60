"""The one log line per refused connection, and the fields every access-log line shares."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from starlette.authentication import BaseUser
from starlette.types import Scope

from wsgate._printable import printable
from wsgate.metrics.record import METRICS_KEY

if TYPE_CHECKING:
    from wsgate.metrics.record import ConnectionRecord

access_logger = logging.getLogger("wsgate.access")
"""One INFO line per refused connection and per closed connection, with ``extra=`` fields."""

MAX_DETAIL: Final = 300
"""The most characters of a refusal's ``detail`` a log line shows."""


def report_refusal(
    scope: Scope,
    reason: str,
    *,
    close_code: int | None,
    http_status: int | None,
    detail: str = "",
) -> None:
    """Count a refused handshake and log its one line to ``wsgate.access``.

    :func:`~wsgate.close_codes.refuse` calls it; a middleware never needs to. The line's
    ``extra=`` fields are ``event`` (``"refused"``), ``endpoint``, ``path``, ``client``,
    ``reason``, ``close_code`` (refused after accept) or ``http_status`` (before accept),
    ``detail`` (why, for the operator; never a token), ``user_agent`` and ``duration``
    (seconds). Every value the client wrote (path, detail, user agent, address) is escaped
    and cut to length with :func:`wsgate._printable.printable`.
    """
    record: ConnectionRecord | None = scope.get(METRICS_KEY)
    if record is not None:
        record.refused(reason)
    if not access_logger.isEnabledFor(logging.INFO):
        return
    answer = f"HTTP {http_status}" if http_status is not None else str(close_code)
    path, client = printable(scope.get("path", "")), _client(scope)
    detail = printable(detail, MAX_DETAIL)
    access_logger.info(
        "refused %s from %s: %s %s%s",
        path,
        client or "unknown client",
        answer,
        reason,
        f" ({detail})" if detail else "",
        extra={
            "event": "refused",
            "endpoint": record.series.endpoint if record is not None else None,
            "path": path,
            "client": client,
            "reason": reason,
            "close_code": close_code,
            "http_status": http_status,
            "detail": detail,
            "user_agent": _user_agent(scope),
            "duration": round(record.duration, 3) if record is not None else None,
        },
    )


def _user_id(user: Any) -> str | None:
    """The user's id for a log line: the token's ``sub``, which the client chose."""
    if isinstance(user, BaseUser) and user.is_authenticated:
        return printable(user.identity)
    return None


def _user_agent(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            return printable(value)
    return None


def _client(scope: Scope) -> str | None:
    """The client's address for a log line; behind ``--proxy-headers`` the client wrote it."""
    client = scope.get("client")
    return printable(f"{client[0]}:{client[1]}") if client else None
