"""Backends that share the gate's state between worker processes and hosts.

:mod:`wsgate.backends.redis` holds :class:`~wsgate.backends.redis.RedisRegistry`, the
connection registry in Redis. A backend that cannot answer and is told to fail closed raises
:class:`BackendUnavailable`, which the connection-limit layer turns into close 1013
``backend_unavailable`` for the new connection.
"""

from __future__ import annotations

from wsgate.exceptions import BackendUnavailable

__all__ = ["BackendUnavailable"]
