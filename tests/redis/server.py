"""Real processes for the Redis tests: a throwaway redis-server, and the example app under
uvicorn, each started and stopped by the test that needs it."""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from tests.processes import stop_process
from wsgate.testing import TokenFactory

if TYPE_CHECKING:
    from tests.redis.tls import TlsFiles

ROOT = Path(__file__).resolve().parents[2]
SECRET = "redis-scale-out-tests-secret-0123456789abcdef"
TOKENS = TokenFactory(SECRET, ttl=3600)
HOST = "127.0.0.1"


def require_redis() -> str:
    """The redis-server binary; the test is skipped without it, and fails in CI."""
    binary = shutil.which("redis-server")
    missing = []
    if binary is None:
        missing.append("redis-server (apt-get install redis-server)")
    if importlib.util.find_spec("redis") is None:
        missing.append("the redis client (pip install 'wsgate[redis]')")
    if missing:
        reason = "the Redis tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    assert binary is not None
    return binary


def free_port() -> int:
    """A port nobody listens on, below Linux's ephemeral range (32768 and up), so that no
    outgoing connection takes it before the server that is given it binds it."""
    for _ in range(100):
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


def wait_until(condition: object, *, timeout: float, what: str) -> None:
    """Poll ``condition()`` every 50 ms until it is true, for at most ``timeout`` seconds."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


async def eventually(
    probe: Callable[[], Awaitable[object]], expected: object = True, *, within: float = 10.0
) -> float:
    """Poll ``probe`` every 50 ms until it returns ``expected``, for ``within`` seconds at
    most; returns how long it took."""
    started = time.monotonic()
    while (value := await probe()) != expected:
        if time.monotonic() - started > within:
            raise AssertionError(f"still {value!r} after {within} s, expected {expected!r}")
        await anyio.sleep(0.05)
    return time.monotonic() - started


class RedisServer:
    """A redis-server of the test's own on a free 127.0.0.1 port, with no persistence.

    :meth:`stop` and :meth:`start` again bring it back on the same port, empty, as a Redis
    without persistence comes back from a restart.

    With ``password``, it asks every client for it (``--requirepass``), and gives it to the
    primary it replicates (``--masterauth``). With ``tls``, it serves TLS only, on
    :attr:`port`, to clients with a certificate of the test's CA (``--tls-port``,
    ``--port 0``), and speaks TLS to the other servers (cluster bus, replication).

    Args:
        directory: Where its log (and any file it writes) goes.
        options: More ``--name value`` options (a cluster node's, a replica's).
        config: A configuration file to start from (a Sentinel's, which it rewrites).
        sentinel: Run it as a Sentinel.
        port: The port to start on; by default a free one.
        password: The password clients must give; none by default.
        tls: The certificates to serve TLS with (``tests/redis/tls.py``); plain TCP by
            default.
    """

    def __init__(
        self,
        directory: Path,
        *,
        options: Mapping[str, str] | None = None,
        config: Path | None = None,
        sentinel: bool = False,
        port: int = 0,
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.binary = require_redis()
        self.directory = directory
        self.options = dict(options or {})
        self.config = config
        self.sentinel = sentinel
        self.port = port
        self.password = password
        self.tls = tls
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``; with a password and TLS,
        ``rediss://:<password>@127.0.0.1:<port>/0?ssl_ca_certs=...``."""
        return f"{scheme_of(self.tls)}://{auth_of(self.password)}{HOST}:{self.port}/0" + (
            self.tls.query if self.tls is not None else ""
        )

    def client_options(self) -> dict[str, Any]:
        """redis-py's keyword arguments for a client of this server."""
        options: dict[str, Any] = {"password": self.password}
        if self.tls is not None:
            options.update(
                ssl=True,
                ssl_ca_certs=str(self.tls.ca),
                ssl_certfile=str(self.tls.client_cert),
                ssl_keyfile=str(self.tls.client_key),
            )
        return options

    def server_options(self, port: int) -> dict[str, str]:
        """The options that make it listen on ``port``, with its password and TLS."""
        options = {"port": str(port)}
        if self.tls is not None:
            options = {"port": "0", "tls-port": str(port), **self.tls.server_options()}
            options.update({"tls-replication": "yes", "tls-cluster": "yes"})
        if self.password is not None:
            options.update(requirepass=self.password, masterauth=self.password)
        return options

    def start(self, timeout: float = 15.0) -> None:
        for _ in range(3):  # a free port can be taken between the check and the bind
            port = self.port or free_port()
            log = (self.directory / f"redis-{port}.log").open("ab")
            options = {
                **self.server_options(port),
                "bind": HOST,
                "save": "",  # no snapshots, no append-only file: nothing survives a stop
                "appendonly": "no",
                "dir": str(self.directory),
                "daemonize": "no",
                **self.options,
            }
            argv = [self.binary]
            if self.config is not None:
                argv.append(str(self.config))
            if self.sentinel:
                argv.append("--sentinel")
            for name, value in options.items():
                argv += [f"--{name}", value]
            self._process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            if self._wait_answering(port, timeout):
                self.port = port
                return
            self.stop()
        raise RuntimeError(f"redis-server did not start; see the logs in {self.directory}")

    def _wait_answering(self, port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with self._socket(port) as sock:
                    sock.sendall(b"PING\r\n")
                    # NOAUTH: it answers, and wants the password first.
                    if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _socket(self, port: int) -> socket.socket:
        sock = socket.create_connection((HOST, port), timeout=1)
        if self.tls is None:
            return sock
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return context.wrap_socket(sock, server_hostname=HOST)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        stop_process(process)

    def kill(self) -> None:
        """``kill -9``: no shutdown; it comes back empty from :meth:`start`."""
        process, self._process = self._process, None
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def command(self, *args: str) -> object:
        """Run one command with a synchronous client, for a test's setup or wait."""
        import redis

        with redis.Redis(
            host=HOST, port=self.port, socket_timeout=5, **self.client_options()
        ) as client:
            return client.execute_command(*args)


def scheme_of(tls: TlsFiles | None, topology: str = "") -> str:
    """``redis``, or ``rediss`` with ``tls``; then ``+cluster`` or ``+sentinel``."""
    return ("rediss" if tls is not None else "redis") + (f"+{topology}" if topology else "")


def auth_of(password: str | None) -> str:
    """The ``:password@`` of a URL, quoted; empty without a password."""
    return "" if password is None else f":{urllib.parse.quote(password, safe='')}@"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis shared by the tests that leave it running; each test uses keys of its own or
    flushes it."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis for one test, which it may stop and start again."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def gate_env(storage: str, **settings: str) -> dict[str, str]:
    """The environment of an example app in production mode on ``storage``.

    The defaults: a 2 s registry TTL, 3 connections per user (evict_oldest), 10 messages a
    minute, no heartbeat. ``settings`` are ``WSGATE_*`` names without the prefix.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("WSGATE_")}
    env.update(
        PYTHONUNBUFFERED="1",
        WSGATE_ENV="production",
        WSGATE_JWT_SECRET=SECRET,
        WSGATE_ALLOW_MISSING_ORIGIN="true",
        WSGATE_STORAGE=storage,
        WSGATE_REGISTRY_TTL="2",
        WSGATE_MAX_CONNECTIONS_PER_USER="3",
        WSGATE_RATE_LIMIT="10/minute",
        WSGATE_HEARTBEAT_INTERVAL="off",
    )
    env.update({f"WSGATE_{name.upper()}": value for name, value in settings.items()})
    return env


class GateProcess:
    """The example app served by uvicorn in a process of its own.

    Args:
        directory: Where its log and its SQLite chat database go.
        name: A name for the log file.
        env: The whole environment (see :func:`gate_env`).
        command: The command after ``python -m``; by default uvicorn on a socket bound here,
            handed over with ``--fd`` so that no other process can take the port.
        ready: How many "Application startup complete" lines mean it serves (one per worker).
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        env: Mapping[str, str],
        *,
        command: Sequence[str] | None = None,
        ready: int = 1,
    ) -> None:
        self.name = name
        self.log_path = directory / f"{name}.log"
        self.env = dict(env)
        self.env.setdefault(
            "WSGATE_DATABASE_URL", f"sqlite+aiosqlite:///{directory / name}.sqlite3"
        )
        self.command = command
        self.ready = ready
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> GateProcess:
        """Start the process without waiting for it; see :meth:`wait_ready`."""
        log = self.log_path.open("ab")
        if self.command is None:
            sock = socket.socket()
            sock.bind((HOST, 0))
            sock.listen(128)
            self.port = sock.getsockname()[1]
            argv = ["uvicorn", "examples.app:app", "--fd", str(sock.fileno())]
            argv += ["--log-level", "info", "--ws-max-size", "32768"]
            fds: tuple[int, ...] = (sock.fileno(),)
        else:
            sock = None
            argv, fds = list(self.command), ()
            self.port = int(argv[argv.index("--port") + 1])
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", *argv],
                cwd=ROOT,
                env=self.env,
                pass_fds=fds,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
            if sock is not None:
                sock.close()
        return self

    def wait_ready(self, timeout: float = 60.0) -> GateProcess:
        def started() -> bool:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited during startup:\n{self.log}")
            return self.log.count("Application startup complete") >= self.ready

        wait_until(started, timeout=timeout, what=f"{self.name} startup")
        return self

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def ws(self, path: str = "/ws/secure") -> str:
        return f"ws://{HOST}:{self.port}{path}"

    def kill(self) -> None:
        """``kill -9``: no shutdown, no goodbye to Redis."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=10)

    def pause(self) -> None:
        """``kill -STOP``: the process runs nothing, and its sockets stay open, until
        :meth:`resume`."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """``kill -CONT``: the process goes on from where :meth:`pause` stopped it."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        process.send_signal(signal.SIGCONT)  # a paused process handles its SIGTERM too
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def start_all(*processes: GateProcess) -> None:
    """Start processes side by side, and wait until every one serves."""
    for process in processes:
        process.start()
    for process in processes:
        process.wait_ready()
