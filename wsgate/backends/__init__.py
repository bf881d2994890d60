"""Backends that share the gate's state between worker processes and hosts.

:mod:`wsgate.backends.redis` holds :class:`~wsgate.backends.redis.RedisRegistry`, the
connection registry in Redis. A backend that cannot answer and is told to fail closed raises
:class:`BackendUnavailable`, which the connection-limit layer turns into close 1013
``backend_unavailable`` for the new connection.
"""

from __future__ import annotations

from typing import ClassVar

from wsgate import refusals
from wsgate.exceptions import WSGateError
from wsgate.refusals import Refusal

__all__ = ["BackendUnavailable"]


class BackendUnavailable(WSGateError):
    """The shared backend cannot be reached and its policy is ``fail_closed``.

    Raised by a registry's ``add``; the new connection is closed with 1013
    ``backend_unavailable``. Connections already open are not affected.
    """

    refusal: ClassVar[Refusal] = refusals.BACKEND_UNAVAILABLE
