"""LoadSheddingMiddleware: refuse a connect storm before it costs a token verification.

Its handshake hook runs before authentication, right after the origin check, and refuses with
an HTTP status and ``Retry-After`` (or, on a server without the denial extension, accept and
close 1013). Three limits, each off until set:

* ``connect_rate_per_ip``: handshakes per client address, counted in the gate's rate-limit
  storage, so that it holds across workers on Redis;
* ``connect_rate_per_worker``: handshakes this worker process takes, in its memory;
* ``max_connections_per_worker``: connections this worker process holds open, in its memory,
  from the handshake's admission until the connection ends, however it ends.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Final

from limits import RateLimitItem
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from wsgate import _options, close_codes
from wsgate._window import LocalStorage, LocalWindow
from wsgate.backends._rates import rate_storage
from wsgate.close_codes import DENIAL_EXTENSION, Refusal
from wsgate.engine import CheckMiddleware
from wsgate.exceptions import ConfigurationError

__all__ = ["LoadSheddingMiddleware", "WorkerLoad"]

logger = logging.getLogger("wsgate.shedding")

_IP_PREFIX: Final = "wsgate:connect:ip:"
_WORKER_KEY: Final = "wsgate:connect:worker"
_STRATEGY: Final = "moving-window"
_BUSY_RETRY_AFTER: Final = 1
"""The ``Retry-After`` of ``worker_busy``, in seconds: when a slot frees is unknown."""
_STORAGE_RETRY: Final = 1.0
"""Seconds between two attempts to use a shared storage that failed."""
_WARNING_PERIOD: Final = 60.0


class WorkerLoad:
    """What one worker process counts to shed load: its open connections, and its recent
    handshakes. A :class:`~wsgate.Gate` holds one for all of its endpoints.

    Attributes:
        open: Connections admitted by the shedding check and not ended yet.
        windows: The rate windows kept in this process's memory.
    """

    __slots__ = ("open", "windows")

    def __init__(self) -> None:
        self.open = 0
        self.windows = LocalStorage()


class LoadSheddingMiddleware(CheckMiddleware):
    """Refuse handshakes beyond a connect rate or a connection cap, before authentication.

    A refused handshake is answered with the row's HTTP status and ``Retry-After`` (whole
    seconds) when the server offers the denial extension (uvicorn, hypercorn), else it is
    accepted and closed with 1013 and the row's reason:

    * 429 / 1013 ``connect_rate_limited``: over ``connect_rate_per_ip``;
    * 503 / 1013 ``worker_connect_rate_limited``: over ``connect_rate_per_worker``;
    * 503 / 1013 ``worker_busy``: ``max_connections_per_worker`` connections are open.

    Every handshake counts against the rates, refused or not by later checks (a bad token
    too): they measure attempts, which is what a storm is made of.

    The client address is ``scope["client"]``: behind a load balancer or reverse proxy, run
    uvicorn with ``--proxy-headers`` and ``--forwarded-allow-ips``, or every client shares the
    proxy's address.

    Args:
        app: The ASGI app to protect.
        connect_rate_per_ip: Handshakes one client address may make, as a ``limits`` rate
            (``"20/second"``), or None (the default) for no limit.
        connect_rate_per_worker: Handshakes this worker process takes, as a ``limits`` rate
            (``"500/second"``), or None (the default) for no limit.
        max_connections_per_worker: Connections this worker process holds open at once, or
            None (the default) for no cap.
        storage: Where ``connect_rate_per_ip`` is counted: a storage URI (``"memory://"``,
            ``"redis://host:6379/0"``) or a storage from
            :func:`~wsgate.backends.rate_storage`. While a shared storage fails, addresses
            are counted in this process, and a warning is logged at most once a minute.
        load: The per-process counts to share with other endpoints; a new one by default.
    """

    close_codes = (
        close_codes.CONNECT_RATE_LIMITED,
        close_codes.WORKER_CONNECT_RATE_LIMITED,
        close_codes.WORKER_BUSY,
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        connect_rate_per_ip: str | None = None,
        connect_rate_per_worker: str | None = None,
        max_connections_per_worker: int | None = None,
        storage: str | Storage | LocalStorage = "memory://",
        load: WorkerLoad | None = None,
    ) -> None:
        options = (connect_rate_per_ip, connect_rate_per_worker, max_connections_per_worker)
        if all(option is None for option in options):
            raise ConfigurationError(
                "LoadSheddingMiddleware has nothing to do: set connect_rate_per_ip, "
                "connect_rate_per_worker or max_connections_per_worker."
            )
        if load is None:
            load = WorkerLoad()
        elif not isinstance(load, WorkerLoad):
            raise ConfigurationError(f"load must be a WorkerLoad, not {load!r}.")
        self.load = load
        self.connect_rate_per_ip = connect_rate_per_ip
        self.connect_rate_per_worker = connect_rate_per_worker
        self.max_connections_per_worker = (
            None
            if max_connections_per_worker is None
            else _options.count("max_connections_per_worker", max_connections_per_worker)
        )
        self.worker_window = (
            None
            if connect_rate_per_worker is None
            else _window(
                load.windows, _options.rate("connect_rate_per_worker", connect_rate_per_worker)
            )
        )
        self.ip_item: RateLimitItem | None = None
        self.ip_window: LocalWindow | None = None  # the in-process count (and fallback)
        self.ip_limiter: MovingWindowRateLimiter | None = None  # the shared one, if any
        if connect_rate_per_ip is not None:
            self.ip_item = _options.rate("connect_rate_per_ip", connect_rate_per_ip)
            if isinstance(storage, str):
                storage = rate_storage(storage)
            if isinstance(storage, LocalStorage):
                self.ip_window = _window(storage, self.ip_item)
            elif isinstance(storage, Storage):
                self.ip_window = _window(load.windows, self.ip_item)
                self.ip_limiter = MovingWindowRateLimiter(storage)
            else:
                raise ConfigurationError(
                    f"storage must be a URI such as 'memory://' or 'redis://localhost:6379/0', "
                    f"or a storage from wsgate.backends.rate_storage(), not {storage!r}."
                )
        self._retry_at = 0.0  # while the shared storage fails: when to try it again
        self._failures = 0
        self._warned_at = -math.inf
        self._alone(app)

    # The hooks, in the order a connection meets them.

    async def _screen(
        self, scope: Scope, receive: Receive, send: Send, query: bytes
    ) -> Send | None:
        verdict = await self.admit(scope)
        if verdict is None:
            return send
        refusal, retry_after, detail = verdict
        await close_codes.refuse(
            scope,
            receive,
            send,
            refusal,
            before_accept=DENIAL_EXTENSION in scope.get("extensions", {}),
            detail=detail,
            retry_after=retry_after,
        )
        return None

    async def admit(self, scope: Scope) -> tuple[Refusal, int, str] | None:
        """Admit a handshake (it then holds a slot until :meth:`end` or :meth:`abandon`), or
        say why not: the row, ``Retry-After`` in seconds, and a detail for the log line."""
        cap, load = self.max_connections_per_worker, self.load
        if cap is not None:
            # Taken before any wait, so that handshakes waiting together cannot overshoot.
            if load.open >= cap:
                detail = f"{load.open} connections open here, max_connections_per_worker={cap}"
                return close_codes.WORKER_BUSY, _BUSY_RETRY_AFTER, detail
            load.open += 1
        try:
            verdict = await self._rates(scope)
        except BaseException:
            self.abandon(scope)
            raise
        if verdict is not None:
            self.abandon(scope)
        return verdict

    async def _rates(self, scope: Scope) -> tuple[Refusal, int, str] | None:
        item, local = self.ip_item, self.ip_window
        if item is not None and local is not None:
            client = scope.get("client")
            address = client[0] if client else "unknown"
            wait = await self._hit_ip(_IP_PREFIX + address, item, local)
            if wait is not None:
                detail = f"{address} is over connect_rate_per_ip={self.connect_rate_per_ip}"
                return close_codes.CONNECT_RATE_LIMITED, wait, detail
        window = self.worker_window
        if window is not None and not window.hit(_WORKER_KEY):
            detail = f"this worker is over connect_rate_per_worker={self.connect_rate_per_worker}"
            wait = _whole_seconds(window.retry_after(_WORKER_KEY))
            return close_codes.WORKER_CONNECT_RATE_LIMITED, wait, detail
        return None

    def abandon(self, scope: Scope) -> None:
        """A later check refused the admitted handshake: its slot is free again."""
        if self.max_connections_per_worker is not None:
            self.load.open -= 1

    def end(self, state: Any) -> None:
        """The admitted connection ended: its slot is free again."""
        if self.max_connections_per_worker is not None:
            self.load.open -= 1

    def describe(self) -> dict[str, Any]:
        return {
            "connect_rate_per_ip": self.connect_rate_per_ip,
            "connect_rate_per_worker": self.connect_rate_per_worker,
            "max_connections_per_worker": self.max_connections_per_worker,
        }

    # The per-address count

    async def _hit_ip(self, key: str, item: RateLimitItem, local: LocalWindow) -> int | None:
        """Count a handshake from an address: None when it may go on, else the seconds to
        wait. A shared storage's refusal names the whole window: asking it when the window
        has room again would cost a second round trip for every refused handshake."""
        limiter = self.ip_limiter
        if limiter is not None and time.monotonic() >= self._retry_at:
            try:
                if await limiter.hit(item, key):
                    self._retry_at = 0.0
                    return None
                return _whole_seconds(item.get_expiry())
            except Exception as exc:
                self._storage_failed(exc)
        if local.hit(key):
            return None
        return _whole_seconds(local.retry_after(key))

    def _storage_failed(self, exc: Exception) -> None:
        self._retry_at = time.monotonic() + _STORAGE_RETRY
        self._failures += 1
        now = time.monotonic()
        if now - self._warned_at < _WARNING_PERIOD:
            return
        logger.warning(
            "the connect-rate storage failed %d time(s) (last: %s: %s); connect_rate_per_ip "
            "is counted in each process until it answers again",
            self._failures,
            type(exc).__name__,
            exc,
        )
        self._failures = 0
        self._warned_at = now


def _window(storage: LocalStorage, item: RateLimitItem) -> LocalWindow:
    return storage.window(_STRATEGY, item.amount, item.get_expiry())


def _whole_seconds(seconds: float) -> int:
    """``Retry-After`` is whole seconds: rounded up, and never less than one."""
    return max(math.ceil(seconds), 1)
