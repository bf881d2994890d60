"""The table of metric families: what the gate counts, and the reasons of its own it counts by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

CLIENT: Final = "client"
"""The ``connections_closed`` reason of a connection the client closed (or lost)."""
SERVER: Final = "server"
"""The ``connections_closed`` reason of a connection the app closed, with a reason of its own."""
APP: Final = "app"
"""The ``connections_refused`` reason of a handshake the app itself refused."""


@dataclass(frozen=True)
class Family:
    """One metric: its key in ``gate.stats()``, its kind and what it counts.

    Attributes:
        key: The key in ``gate.stats()``; the Prometheus name is :attr:`name`.
        kind: ``"counter"``, ``"gauge"`` or ``"histogram"``.
        by_reason: Labelled by ``reason`` as well as ``endpoint``.
        help: What it counts, in one sentence.
    """

    key: str
    kind: Literal["counter", "gauge", "histogram"]
    by_reason: bool
    help: str

    @property
    def name(self) -> str:
        """The name Prometheus exposes, e.g. ``wsgate_connections_opened_total``."""
        return f"wsgate_{self.key}_total" if self.kind == "counter" else f"wsgate_{self.key}"

    @property
    def labels(self) -> tuple[str, ...]:
        return ("endpoint", "reason") if self.by_reason else ("endpoint",)


FAMILIES: tuple[Family, ...] = (
    Family("connections_opened", "counter", False, "Connections the app accepted."),
    Family("connections_active", "gauge", False, "Connections open now."),
    Family(
        "connections_refused",
        "counter",
        True,
        "Handshakes refused, by close-code table reason (app: refused by the app itself).",
    ),
    Family(
        "connections_closed",
        "counter",
        True,
        "Accepted connections that ended, by reason: the close-code table reason when the gate "
        "closed them, client when the client did, server when the app did.",
    ),
    Family(
        "evictions",
        "counter",
        False,
        "Open connections closed with 4008 to make room for a newer one of the same user.",
    ),
    Family("messages_received", "counter", False, "Messages from clients, before any check."),
    Family(
        "messages_sent",
        "counter",
        False,
        "Messages to clients: the app's, and the gate's pings, pongs and error frames.",
    ),
    Family(
        "message_errors",
        "counter",
        True,
        "Messages refused or failed, by error-frame table reason; internal_error counts the "
        "handler failures the connection survived.",
    ),
    Family(
        "auth_duration_seconds",
        "histogram",
        False,
        "Time to verify a handshake's token, in seconds (RemoteVerifier: the auth service's "
        "answer, or its cache).",
    ),
    Family(
        "auth_failures",
        "counter",
        False,
        "Tokens that could not be checked: the auth service was unreachable, slow, failing, or "
        "its circuit open.",
    ),
)
_FAMILY: Final = {family.key: family for family in FAMILIES}
