"""The gate engine: one ASGI app that runs an ordered tuple of checks in front of an app.

Every wsgate middleware is a :class:`Check`, and so is any check of the user's. The
:class:`Engine` owns what each of them would otherwise write again: it runs the handshake
hooks and refuses through :func:`~wsgate.close_codes.refuse`, keeps one
:class:`~wsgate.connection.Connection` per socket, tracks the app's accept, drops what the
client queued after a close, ends every check once however the connection ends, counts
messages and closes, and sends the app's frames without a coroutine in between.

A :class:`~wsgate.Gate` is an engine with the configured checks; ``XxxMiddleware(app, ...)``
used alone is an engine with that one check. A connection through an engine costs one
coroutine frame, one flow object, and what each check keeps for it::

    handshake    origin ─ [before_auth checks] ─ auth ─ [after_auth checks]
                 (each may refuse: HTTP status, or accept then close)
    open         every check's open(connection) -> its state for this connection
    each message size ─ heartbeat ─ rate ─ format ─ [user checks] ─ app
                 (each may pass it on, answer and drop it, or close)
    each send    app ─ every check's sent() ─ client
    end          every check's end(state), once, at the disconnect or when the app returns
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from types import EllipsisType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wsgate._query import redact_query
from wsgate.close_codes import DENIAL_EXTENSION, Refusal, refuse
from wsgate.connection import SCOPE_KEY, SEND_TIMEOUT_KEY, Connection
from wsgate.error_frames import MessageError
from wsgate.exceptions import ConfigurationError

if TYPE_CHECKING:
    from wsgate.metrics import ConnectionRecord, MetricsMiddleware

__all__ = ["DROP", "Check", "Engine", "Stage", "Verdict"]

Stage = Literal["before_auth", "after_auth"]
"""Where a check's :meth:`Check.handshake` runs: before authentication (it cannot see the user,
and costs no token verification) or after it (``scope["user"]`` is set)."""
STAGES: Final[tuple[Stage, ...]] = ("before_auth", "after_auth")
_RANKS: Final = {"before_auth": 0, "auth": 1, "after_auth": 2}
GATE_KEY: Final = "wsgate.gate"
"""The scope key holding the endpoint of the gate a connection went through."""
_PLAIN_HOOKS: Final = ("abandon", "open", "accepted", "sent", "describe")
"""The hooks that must not be ``async def``: they run where the engine cannot wait."""


class _Drop:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DROP"


DROP: Final = _Drop()
"""What :meth:`Check.message` returns for a message that goes no further: it answered the
client (``connection.send_error(...)``) or closed the connection, or drops it silently."""

Verdict = _Drop | Refusal | None
"""What :meth:`Check.message` decides: None passes the message on, :data:`DROP` drops it, and
a close-code row closes the connection with that row."""


class Check:
    """A check the engine runs: subclass it and override the hooks you need, all optional.

    The hooks, in the order a connection meets them:

    * :meth:`handshake`: pass, or refuse with a close-code row.
    * :meth:`abandon`: a later check refused the handshake this check passed (or failed).
    * :meth:`open`: the connection passed the handshake; return what the check keeps for it.
    * :meth:`accepted`: the app's accept went out.
    * :meth:`serve`: the app goes on to serve the accepted connection.
    * :meth:`message`: each message from the client; pass it, drop it, or close.
    * :meth:`sent`: each message the app sent.
    * :meth:`end`: the connection ended, however it ended; called once.

    :meth:`handshake`, :meth:`serve`, :meth:`message` and :meth:`end` may be ``async def``;
    the others are plain ``def`` (an engine refuses an async one). A check holds its options
    only; what it
    keeps per connection is the state :meth:`open` returns, which the engine hands back to
    every later hook (by default the :class:`~wsgate.connection.Connection` itself).

    Class attributes:
        stage: ``"before_auth"`` (the default) or ``"after_auth"``: where :meth:`handshake`
            runs in a :class:`~wsgate.Gate`. Message hooks of a gate's own checks run after
            the format check, so they see messages parsed and well formed.
        close_codes: The close-code rows (:class:`~wsgate.close_codes.Refusal`) the check
            refuses or closes with. A gate counts them in its metrics and lists them in
            ``/ws/config`` with its own.
        error_frames: The error-frame rows (:class:`~wsgate.error_frames.MessageError`) the
            check answers with, counted and listed alike.
    """

    stage: ClassVar[str] = "before_auth"
    close_codes: ClassVar[Sequence[Refusal]] = ()
    error_frames: ClassVar[Sequence[MessageError]] = ()
    # The query parameter that may carry a secret (the auth check's): the engine redacts it
    # before any check can answer, and hands the raw query to _screen().
    secret_query_param: str | None = None

    @property
    def name(self) -> str:
        """The check's name in ``/ws/config`` and in refusal log lines: its class name."""
        return type(self).__name__

    def handshake(self, scope: Scope) -> Refusal | Awaitable[Refusal | None] | None:
        """Decide on a handshake before the app runs: None lets it go on, a close-code row
        refuses it. With the server's denial extension (uvicorn, hypercorn) the client gets
        the row's HTTP status; without it, an accept and a close with the row's code."""
        return None

    def abandon(self, scope: Scope) -> None:
        """The handshake this check let through goes no further: a later handshake check
        refused it, or raised. Neither :meth:`open` nor :meth:`end` will run for it, so a
        check that reserved something in :meth:`handshake` frees it here."""

    def open(self, connection: Connection) -> Any:
        """Start a connection that passed the handshake: what this check keeps for it."""
        return connection

    def accepted(self, state: Any) -> None:
        """The app's accept went out."""

    def serve(self, state: Any) -> Awaitable[None] | None:
        """The app goes on to serve the accepted connection: its first receive, or its first
        send after the accept that is not a close (an accept closed at once is the app's
        refusal and is never served). An app that waits for a message before it accepts
        (Quart's reader does) serves the connection from its accept."""
        return None

    def message(self, state: Any, message: Message) -> Verdict | Awaitable[Verdict]:
        """Decide on one ``websocket.receive`` message: None passes it on, :data:`DROP` drops
        it (after answering it with ``connection.send_error``, say), a close-code row closes
        the connection with it. Call :func:`wsgate.decoded` for its parsed JSON."""
        return None

    def sent(self, state: Any, message: Message) -> None:
        """The app sent ``message`` (an accept, a frame or a close)."""

    def end(self, state: Any) -> Awaitable[None] | None:
        """The connection ended: the client left or the app returned, whichever came first.
        Called once, whatever way the connection ended."""
        return None

    def describe(self) -> Mapping[str, Any] | None:
        """What ``/ws/config`` and ``/ws/secure/config`` publish about this check, or None."""
        return None

    async def _screen(
        self, scope: Scope, receive: Receive, send: Send, query: bytes
    ) -> Send | None:
        """Run the handshake hook for the engine: the ``send`` to go on with, or None when the
        handshake was refused (and answered)."""
        verdict = self.handshake(scope)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict is None:
            return send
        if not isinstance(verdict, Refusal):
            raise TypeError(
                f"{self.name}.handshake returned {verdict!r}; return None to let the handshake "
                "go on, or a close-code row (wsgate.Refusal) to refuse it."
            )
        await refuse(
            scope,
            receive,
            send,
            verdict,
            before_accept=DENIAL_EXTENSION in scope.get("extensions", {}),
            detail=f"refused by {self.name}",
        )
        return None


def validate(check: object) -> None:
    """Refuse what an engine cannot run, with a sentence that says what to write instead."""
    if not isinstance(check, Check):
        raise ConfigurationError(
            f"checks must be wsgate.Check instances, not {check!r}: subclass wsgate.Check "
            "and override the hooks you need."
        )
    for hook in _PLAIN_HOOKS:
        if inspect.iscoroutinefunction(getattr(type(check), hook)):
            raise ConfigurationError(
                f"{check.name}.{hook} is an async def; it must be a plain def, since it runs "
                "where nothing can wait. handshake, serve, message and end may be async."
            )
    if check.stage not in _RANKS:
        raise ConfigurationError(
            f"{check.name}.stage is {check.stage!r}; use 'before_auth' or 'after_auth'."
        )


def overrides(check: Check, hook: str) -> bool:
    """Whether ``check`` defines ``hook`` itself, instead of the no-op of :class:`Check`."""
    return getattr(type(check), hook) is not getattr(Check, hook)


class Engine:
    """The checks ``checks`` in front of ``app``, as one ASGI app.

    Handshake hooks run by stage (``before_auth``, authentication, ``after_auth``), and in
    the tuple's order within one stage; every other hook runs in the tuple's order.
    Non-websocket scopes go straight to ``app``.

    Args:
        app: The endpoint or app behind the checks.
        checks: The checks, in order.
        metrics: Count connections and messages, and log each connection's end, with this
            :class:`~wsgate.metrics.MetricsMiddleware`; None counts nothing.
        send_timeout: Seconds a send may wait for a client that is not reading, or None to
            wait as long as it takes; put in ``scope["wsgate.send_timeout"]``. By default
            (``...``) the scope keeps what a layer in front put there, else 10 s.
        gate: The endpoint a :class:`~wsgate.Gate` runs this engine for. A connection that
            meets a second gate (a gate in front of the whole app, and another on a route)
            would be authenticated and counted twice: it is refused, and the error names both.
    """

    def __init__(
        self,
        app: ASGIApp,
        checks: Iterable[Check] = (),
        *,
        metrics: MetricsMiddleware | None = None,
        send_timeout: float | EllipsisType | None = ...,
        gate: str | None = None,
    ) -> None:
        self.app = app
        self.checks: tuple[Check, ...] = tuple(checks)
        for check in self.checks:
            validate(check)
        self.metrics = metrics
        self.send_timeout = send_timeout
        self.gate = gate
        self._handshakes = tuple(
            sorted(
                (
                    check
                    for check in self.checks
                    if overrides(check, "handshake") or overrides(check, "_screen")
                ),
                key=lambda check: _RANKS[check.stage],
            )
        )
        self._secret_params = tuple({check.secret_query_param for check in self.checks} - {None})
        self._abandons = tuple(
            (index, check.abandon)
            for index, check in enumerate(self._handshakes)
            if overrides(check, "abandon")
        )
        self._opening = tuple(
            (index, check) for index, check in enumerate(self.checks) if overrides(check, "open")
        )
        self._accepted = self._hooks("accepted")
        self._serving = self._hooks("serve")
        self._messages = self._hooks("message")
        self._sent = self._hooks("sent")
        self._ends = self._hooks("end")
        # Whether a handshake has anything to do here (else it costs no coroutine).
        self._screens = bool(self._handshakes or self._secret_params) or send_timeout is not ...
        self._watches = metrics is not None or any(
            (self._opening, self._accepted, self._serving, self._messages, self._sent, self._ends)
        )

    def _hooks(self, hook: str) -> tuple[tuple[int, Any], ...]:
        """``(index, bound hook)`` of the checks that define ``hook``, in order."""
        return tuple(
            (index, getattr(check, hook))
            for index, check in enumerate(self.checks)
            if overrides(check, hook)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        if not self._watches:
            # Checks of the handshake only (the origin check, authentication): nothing of
            # theirs stays on the connection, so neither does the engine.
            onward = await self._handshake(scope, receive, send)
            if onward is not None:
                await self.app(scope, receive, onward)
            return
        if self.gate is not None:
            outer = scope.get(GATE_KEY)
            if outer is not None:
                raise ConfigurationError(
                    f"this connection to {scope.get('path')!r} goes through two gates, the "
                    f"gate of {outer!r} and the gate of {self.gate!r}: it would be "
                    "authenticated, limited and counted twice. Gate each endpoint once: "
                    "either gate.wrap() the whole app, or gate.route() its endpoints."
                )
            scope[GATE_KEY] = self.gate
        metrics = self.metrics
        record = None if metrics is None else metrics.open(scope)
        failed = False
        try:
            # A refusal neither opens nor closes the metrics' connection, so the handshake
            # hooks get the server's own receive and send.
            onward = await self._handshake(scope, receive, send) if self._screens else send
            if onward is not None:
                flow = _Flow(self, scope, receive, onward, record)
                try:
                    await self.app(scope, flow.receive, flow.send)
                finally:
                    if not flow.ended:  # else it ended at the client's disconnect
                        flow.ended = True
                        flow.waiting = flow.unserved = False
                        if self._ends:
                            await flow.end()
                    flow.release()
        except Exception:
            failed = True
            raise
        finally:
            if metrics is not None and record is not None:
                metrics.finish(scope, record, failed)

    async def _handshake(self, scope: Scope, receive: Receive, send: Send) -> Send | None:
        """Run the handshake hooks: the ``send`` to go on with, or None when one refused."""
        if self.send_timeout is not ...:
            scope[SEND_TIMEOUT_KEY] = self.send_timeout
        # The token leaves the scope before any check can answer: the server's access line
        # is written from the scope when the handshake is answered, whoever answers it.
        query = scope.get("query_string", b"")
        for name in self._secret_params:
            redact_query(scope, name)
        for position, check in enumerate(self._handshakes):
            try:
                onward = await check._screen(scope, receive, send, query)
            except BaseException:
                self._abandon(scope, position)
                raise
            if onward is None:
                self._abandon(scope, position)
                return None
            send = onward
        return send

    def _abandon(self, scope: Scope, refused_at: int) -> None:
        """Tell the checks that passed the handshake before ``refused_at`` that it ended."""
        for index, hook in self._abandons:
            if index < refused_at:
                hook(scope)


class _Flow:
    """One connection through an engine: the checks' states, and the ``receive`` and
    ``send`` the app gets."""

    __slots__ = (
        "_receive",
        "_send",
        "connection",
        "ended",
        "engine",
        "onward",
        "reading",
        "record",
        "scope",
        "states",
        "unserved",
        "waiting",
    )

    def __init__(
        self,
        engine: Engine,
        scope: Scope,
        receive: Receive,
        send: Send,
        record: ConnectionRecord | None,
    ) -> None:
        self.engine = engine
        self.scope = scope
        self.record = record
        self._receive = receive
        self._send = send
        self.ended = False
        # The connection sends through transmit(), and the app through the connection. When
        # a layer in front of the engine made the connection, the app sends through onward.
        transmit = self.transmit if record is not None else send
        self.connection, onward = Connection.of(scope, transmit)
        self.onward: Send | None = transmit if onward is transmit else None
        connection = self.connection
        states: list[Any] = [connection] * len(engine.checks)
        for index, check in engine._opening:
            states[index] = check.open(connection)
        self.states = tuple(states)  # a tuple holds them in one object, a list in two
        self.waiting = bool(engine._accepted)  # for the app's accept
        self.unserved = bool(engine._serving)  # until the app serves the accepted connection
        self.reading = False  # whether the app is waiting for a message, before its accept

    async def receive(self) -> Message:
        """The app's ``receive``: the next message that passes every check."""
        # Few locals on purpose: this frame stays suspended on every idle connection.
        while True:
            if not self.unserved:
                message = await self._receive()
            elif self.connection.accepted:
                await self._serve()
                message = await self._receive()
            else:
                # Waiting for a message before the accept: the handshake's connect, or an app
                # that reads in a task of its own (Quart). Waiting when the accept goes out,
                # the app serves the connection from its accept.
                self.reading = True
                try:
                    message = await self._receive()
                finally:
                    self.reading = False
            record = self.record
            if message["type"] != "websocket.receive":
                if record is not None:
                    record.receiving(message)
                if message["type"] == "websocket.disconnect" and not self.ended:
                    # Even if the app lingers after the client left.
                    self.ended = True
                    self.waiting = self.unserved = False
                    if self.engine._ends:
                        await self.end()
                return message
            if record is not None:  # what record.receiving() does for a message, in line
                record.received += 1
                record.series.received.value += 1
            if self.connection.closed:
                # Queued before a check closed the connection (an eviction, a refusal, a
                # timeout), or the app closed it: for nobody now.
                continue
            states = self.states
            for index, hook in self.engine._messages:
                verdict = hook(states[index], message)
                if verdict is None:
                    continue
                if inspect.isawaitable(verdict):
                    verdict = await verdict
                    if verdict is None:
                        continue
                if isinstance(verdict, Refusal):
                    await self.connection.close(verdict)
                elif verdict is not DROP:
                    raise TypeError(
                        f"{hook.__qualname__} returned {verdict!r}; return None to pass the "
                        "message on, wsgate.DROP to drop it, or a close-code row to close."
                    )
                break
            else:
                return message

    async def send(self, message: Message) -> None:
        """The app's ``send``."""
        if message["type"] == "websocket.send" and not self.unserved and self.onward is None:
            # An open connection's data frame, the hot path: to the server, counted.
            connection = self.connection
            if connection.closed:
                return  # a check closed the connection under the app
            rest = connection.start_sending(self._send(message), message)
            if rest is not None:
                await rest
            record = self.record
            if record is not None:  # what record.count_sent() does, in line
                record.sent += 1
                record.series.sent.value += 1
            if self.engine._sent:
                self._after(message)
            return
        if self.unserved and self.connection.accepted:
            if message["type"] == "websocket.close":
                self.unserved = False  # accepted and closed at once: the app's refusal
            else:
                await self._serve()
        if self.onward is None:
            await self.connection.send(message)
        else:
            await self.onward(message)
        if self.waiting and self.connection.accepted:
            self.waiting = False
            states = self.states
            for index, hook in self.engine._accepted:
                hook(states[index])
        if self.unserved and self.reading and message["type"] == "websocket.accept":
            await self._serve()
        if self.engine._sent:
            self._after(message)

    def _after(self, message: Message) -> None:
        states = self.states
        for index, hook in self.engine._sent:
            hook(states[index], message)

    async def _serve(self) -> None:
        self.unserved = False
        states = self.states
        for index, hook in self.engine._serving:
            result = hook(states[index])
            if result is not None:
                await result

    async def transmit(self, message: Message) -> None:
        """Where the connection's sends go, the checks' own included: counted, then out."""
        record = self.record
        if record is None:  # never: transmit() is used with metrics only
            await self._send(message)
            return
        counted = record.sending(message)
        await self._send(message)
        if counted:
            record.count_sent()

    def release(self) -> None:
        """Let go of the connection this flow made, once the app returned: the scope and
        the connection hold each other, and so do the connection and :meth:`transmit`. Left
        to the garbage collector, such cycles cost more than the rest of the engine does
        per connection."""
        if self.onward is None:
            connection = self.connection
            if self.scope.get(SCOPE_KEY) is connection:
                del self.scope[SCOPE_KEY]
            connection.release()

    async def end(self) -> None:
        """End every check; the caller sets ``ended`` first, so that it runs once."""
        states = self.states
        for index, hook in self.engine._ends:
            result = hook(states[index])
            if result is not None:
                await result


class CheckMiddleware(Check, Engine):
    """A check that is also a pure ASGI middleware: used alone, ``XxxMiddleware(app, ...)``
    is an :class:`Engine` with that one check in front of ``app``.

    A subclass sets its options in ``__init__``, then calls :meth:`_alone` with the app. The
    middleware is its own engine, so that a connection through it holds the engine's frame
    only.
    """

    def _alone(self, app: ASGIApp) -> None:
        """Become the engine of this one check, in front of ``app``."""
        Engine.__init__(self, app, (self,))
