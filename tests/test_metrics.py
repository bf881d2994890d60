"""The gate's metrics over real sockets: what gets counted, and what a scrape shows."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.websockets import WebSocket

from wsgate import Gate, GateConfig, GatedEndpoint, RemoteVerifier
from wsgate.discovery import discovery_routes
from wsgate.metrics import FAMILIES, Metrics, MetricsMiddleware, PrometheusMetrics, default_metrics
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

SECRET = "metrics-test-secret-that-is-long-enough-0123456789"
ORIGIN = "https://app.example.com"
ROOT = Path(__file__).resolve().parents[1]


class Echo(GatedEndpoint):
    protocol = "json"

    async def on_message(self, websocket: WebSocket, message: dict[str, Any]) -> Any:
        if message["type"] == "fail":
            raise RuntimeError("a handler bug")
        return {"type": "echo", "payload": message.get("payload")}


def config(**overrides: Any) -> GateConfig:
    settings: dict[str, Any] = {
        "jwt_secret": SECRET,
        "allowed_origins": (ORIGIN,),
        "allow_missing_origin": True,
        "rate_limit": None,
        "heartbeat_interval": None,
    }
    settings.update(overrides)
    return GateConfig(**settings)


def app_of(gate: Gate) -> Starlette:
    return Starlette(routes=[gate.route("/ws", Echo), *discovery_routes(gate)])


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory(SECRET)


async def eventually(check: Callable[[], bool]) -> None:
    """Wait until ``check()`` is true (the server counts in its own thread); at most 10 s."""
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "the condition did not hold within 10 s"
        await anyio.sleep(0.02)


def closed(gate: Gate, count: int) -> Callable[[], bool]:
    return lambda: sum(gate.stats()["connections_closed"].values()) == count


async def test_connections_and_messages_are_counted(tokens: TokenFactory) -> None:
    gate = Gate(config(), metrics=Metrics())
    with LiveServer(app_of(gate)) as server:
        async with WSClient(server.ws("/ws"), token=tokens.valid("alice")) as ws:
            for n in range(3):
                await ws.send_json({"type": "echo", "payload": n})
                assert (await ws.receive_json())["payload"] == n
            # An open connection's messages are in the figures already, not at its end.
            await eventually(lambda: gate.stats()["messages_sent"] == 3)
            stats = gate.stats()
            assert stats["connections_opened"] == 1
            assert stats["connections_active"] == 1
            assert stats["messages_received"] == 3
            assert stats["endpoints"]["/ws"]["messages_received"] == 3
        await eventually(closed(gate, 1))
    stats = gate.stats()
    endpoint = stats["endpoints"]["/ws"]
    for figures in (stats, endpoint):
        assert figures["connections_opened"] == 1
        assert figures["connections_active"] == 0
        assert figures["connections_closed"] == {"client": 1}
        assert figures["messages_received"] == 3
        assert figures["messages_sent"] == 3
        assert figures["connections_refused"] == {}
        assert figures["message_errors"] == {}
    assert stats["auth_duration_seconds"]["count"] == 1
    assert stats["uptime"] > 0


async def test_refusals_are_counted_by_reason(tokens: TokenFactory) -> None:
    gate = Gate(config(), metrics=Metrics())
    with LiveServer(app_of(gate)) as server:
        with pytest.raises(HandshakeRejected):
            await WSClient(server.ws("/ws"), origin="https://evil.example").connect()
        for token, reason in [
            (None, "auth_required"),
            (tokens.wrong_signature("alice"), "invalid_token"),
            (tokens.expired("alice"), "token_expired"),
            (tokens.expired("bob"), "token_expired"),
        ]:
            async with WSClient(server.ws("/ws"), token=token) as ws:
                assert await ws.wait_closed() == (1008, reason)
        await eventually(lambda: sum(gate.stats()["connections_refused"].values()) == 5)
    stats = gate.stats()
    assert stats["connections_refused"] == {
        "origin_not_allowed": 1,
        "auth_required": 1,
        "invalid_token": 1,
        "token_expired": 2,
    }
    # Refused after accept or not, a refusal is never an opened connection.
    assert stats["connections_opened"] == 0
    assert stats["connections_closed"] == {}
    assert stats["auth_failures"] == 0


async def test_message_errors_are_counted_by_reason(tokens: TokenFactory) -> None:
    gate = Gate(config(rate_limit="4/minute", max_message_bytes=64), metrics=Metrics())
    with LiveServer(app_of(gate)) as server:
        async with WSClient(server.ws("/ws"), token=tokens.valid("alice")) as ws:
            await ws.send_text("x" * 65)  # size: never reaches the rate limit
            assert (await ws.expect("error"))["error"]["code"] == "message_too_large"
            await ws.send_text("{not json")
            assert (await ws.expect("error"))["error"]["code"] == "invalid_json"
            await ws.send_json({"payload": 1})
            assert (await ws.expect("error"))["error"]["code"] == "invalid_message"
            await ws.send_json({"type": "fail"})
            assert (await ws.expect("error"))["error"]["code"] == "internal_error"
            await ws.send_json({"type": "echo"})
            await ws.expect("echo")  # the handler error was recovered from
            for _ in range(3):  # over the budget of 4
                await ws.send_json({"type": "echo"})
            for _ in range(3):
                assert (await ws.expect("error"))["error"]["code"] == "rate_limited"
        await eventually(closed(gate, 1))
    assert gate.stats()["message_errors"] == {
        "message_too_large": 1,
        "invalid_json": 1,
        "invalid_message": 1,
        "internal_error": 1,
        "rate_limited": 3,
    }


async def test_evictions_are_counted(tokens: TokenFactory) -> None:
    gate = Gate(config(max_connections_per_user=1), metrics=Metrics())
    token = tokens.valid("alice")
    with LiveServer(app_of(gate)) as server:
        async with WSClient(server.ws("/ws"), token=token) as first:
            await first.send_json({"type": "echo"})
            await first.expect("echo")
            async with WSClient(server.ws("/ws"), token=token) as second:
                assert await first.wait_closed() == (4008, "connection_limit")
                await second.send_json({"type": "echo"})
                await second.expect("echo")
        await eventually(closed(gate, 2))
    stats = gate.stats()
    assert stats["evictions"] == 1
    assert stats["connections_closed"] == {"connection_limit": 1, "client": 1}
    assert stats["connections_opened"] == 2
    assert stats["connections_active"] == 0


async def test_heartbeat_timeouts_are_counted(tokens: TokenFactory) -> None:
    gate = Gate(config(heartbeat_interval=0.2, heartbeat_timeout=0.3), metrics=Metrics())
    with LiveServer(app_of(gate)) as server:
        async with WSClient(server.ws("/ws"), token=tokens.valid("alice")) as ws:
            # The client never answers the gate's ping.
            assert await ws.wait_closed(timeout=10) == (4000, "heartbeat_timeout")
        await eventually(closed(gate, 1))
    stats = gate.stats()
    assert stats["connections_closed"] == {"heartbeat_timeout": 1}
    assert stats["messages_sent"] == 1  # the ping


async def test_auth_service_latency_and_failures_are_counted() -> None:
    with socket.socket() as unused:  # a port nothing listens on: the service is down
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    verifier = RemoteVerifier(f"http://127.0.0.1:{port}/introspect", failure_threshold=100)
    gate = Gate(config(jwt_secret=None), verifier=verifier, metrics=Metrics())
    with LiveServer(app_of(gate)) as server:
        for _ in range(2):
            async with WSClient(server.ws("/ws"), token="token-of-alice") as ws:
                assert await ws.wait_closed() == (1013, "auth_unavailable")
        await eventually(lambda: gate.stats()["auth_failures"] == 2)
    await verifier.aclose()
    stats = gate.stats()
    assert stats["connections_refused"] == {"auth_unavailable": 2}
    assert stats["auth_duration_seconds"]["count"] == 2
    assert stats["auth_duration_seconds"]["sum"] > 0


async def test_the_hot_path_binds_nothing_and_never_calls_prometheus(
    tokens: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every series a message can touch is bound when the endpoint is wrapped, and counted
    in memory: prometheus-client is only called when a scrape collects the values."""
    prometheus_client = pytest.importorskip("prometheus_client")
    metrics = PrometheusMetrics()
    gate = Gate(config(rate_limit="3/minute", max_message_bytes=64), metrics=metrics)
    app = app_of(gate)
    bound: list[tuple[str, ...]] = []
    original = metrics.bind

    def bind(*labels: str) -> Any:
        bound.append(labels)
        return original(*labels)

    monkeypatch.setattr(metrics, "bind", bind)
    counted: list[float] = []
    increment = prometheus_client.Counter.inc

    def inc(counter: Any, amount: float = 1) -> None:
        counted.append(amount)
        increment(counter, amount)

    monkeypatch.setattr(prometheus_client.Counter, "inc", inc)
    with LiveServer(app) as server:
        async with WSClient(server.ws("/ws"), token=tokens.valid("alice")) as ws:
            for _ in range(2):
                await ws.send_json({"type": "echo"})
                await ws.expect("echo")
            await ws.send_text("x" * 65)  # size: not counted by the rate limit
            await ws.send_text("{not json")  # the third message within the rate
            await ws.send_json({"type": "echo"})  # the fourth: over it
            for _ in range(3):
                await ws.expect("error")
        async with WSClient(server.ws("/ws")) as ws:
            await ws.wait_closed()
        await eventually(closed(gate, 1))
        assert counted == []
        async with httpx.AsyncClient(base_url=server.url) as http:
            scraped = (await http.get("/metrics")).text
    assert 'wsgate_messages_received_total{endpoint="/ws"} 5.0' in scraped
    assert counted  # the scrape published what was counted
    assert bound == []
    assert gate.stats()["message_errors"] == {
        "message_too_large": 1,
        "invalid_json": 1,
        "rate_limited": 1,
    }


def test_stats_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    assert type(default_metrics(config())) is Metrics
    gate = Gate(config())
    assert type(gate.metrics) is Metrics
    gate.wrap(Echo, path="/chat")
    stats = gate.stats()
    assert set(stats) == {"uptime", "endpoints"} | {family.key for family in FAMILIES}
    assert stats["endpoints"]["/chat"]["connections_opened"] == 0
    # No metrics route without prometheus-client.
    assert "/metrics" not in [route.path for route in discovery_routes(gate)]  # type: ignore[attr-defined]


def test_prometheus_is_the_default_with_the_extra_and_a_path() -> None:
    pytest.importorskip("prometheus_client")
    assert type(default_metrics(config())) is PrometheusMetrics
    assert type(default_metrics(config(metrics_path=None))) is Metrics


def test_a_standalone_metrics_middleware_checks_its_options() -> None:
    with pytest.raises(ValueError, match="endpoint must be the route path"):
        MetricsMiddleware(Echo, endpoint="")
    with pytest.raises(ValueError, match="metrics must be a Metrics"):
        MetricsMiddleware(Echo, metrics={})  # type: ignore[arg-type]


async def test_prometheus_exposition(tokens: TokenFactory) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    gate = Gate(config(), metrics=PrometheusMetrics())
    with LiveServer(app_of(gate)) as server:
        async with WSClient(server.ws("/ws"), token=tokens.valid("alice")) as ws:
            await ws.send_json({"type": "echo"})
            await ws.expect("echo")
        async with WSClient(server.ws("/ws")) as ws:
            await ws.wait_closed()
        await eventually(closed(gate, 1))
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = {
        (sample.name, sample.labels.get("reason")): sample.value
        for family in parser.text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.labels.get("endpoint") == "/ws"
    }
    assert values[("wsgate_connections_opened_total", None)] == 1
    assert values[("wsgate_connections_active", None)] == 0
    assert values[("wsgate_connections_closed_total", "client")] == 1
    assert values[("wsgate_connections_refused_total", "auth_required")] == 1
    assert values[("wsgate_connections_refused_total", "invalid_token")] == 0  # ready for rate()
    assert values[("wsgate_messages_received_total", None)] == 1
    assert values[("wsgate_auth_duration_seconds_count", None)] == 1
    # Every family documented in FAMILIES is exposed under its documented name.
    exposed = {family.name for family in parser.text_string_to_metric_families(response.text)}
    assert {family.name.removesuffix("_total") for family in FAMILIES} <= exposed
    # gate.stats() reads the same values back.
    assert gate.stats()["connections_refused"] == {"auth_required": 1}


@pytest.fixture
def free_socket() -> Iterator[socket.socket]:
    """A bound, listening socket for a server subprocess to inherit (no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    yield sock
    sock.close()


def workers_app() -> Starlette:
    """The app the multiprocess test serves with ``uvicorn --workers 2 --factory``."""
    return app_of(Gate(config()))


async def test_metrics_add_up_across_uvicorn_workers(
    tmp_path: Path, free_socket: socket.socket, tokens: TokenFactory
) -> None:
    pytest.importorskip("prometheus_client")
    parser = pytest.importorskip("prometheus_client.parser")
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    command = [sys.executable, "-m", "uvicorn", "tests.test_metrics:workers_app", "--factory"]
    command += ["--workers", "2", "--fd", str(free_socket.fileno()), "--log-level", "warning"]
    port = free_socket.getsockname()[1]
    server = await anyio.open_process(
        command, cwd=ROOT, env=env, pass_fds=[free_socket.fileno()], stdout=None, stderr=None
    )
    try:
        url = f"http://127.0.0.1:{port}"
        # Both workers bind their series at startup: one file per worker process.
        deadline = time.monotonic() + 60
        while len({path.stem.rpartition("_")[2] for path in directory.glob("counter_*.db")}) < 2:
            assert server.returncode is None, "uvicorn exited"
            assert time.monotonic() < deadline, "the workers did not start within 60 s"
            await anyio.sleep(0.1)
        connections = 20
        for n in range(connections):
            async with WSClient(f"ws://127.0.0.1:{port}/ws", token=tokens.valid(f"u{n}")) as ws:
                await ws.send_json({"type": "echo"})
                await ws.expect("echo")

        async def opened() -> float:
            async with httpx.AsyncClient(base_url=url) as http:
                text = (await http.get("/metrics")).text
            return float(
                sum(
                    sample.value
                    for family in parser.text_string_to_metric_families(text)
                    for sample in family.samples
                    if sample.name == "wsgate_connections_opened_total"
                )
            )

        # Whichever worker answers the scrape, it adds up every worker's values, which each
        # worker publishes every second.
        deadline = time.monotonic() + 10
        while (total := await opened()) != connections:
            assert total < connections
            assert time.monotonic() < deadline, f"{total} connections after 10 s"
            await anyio.sleep(0.2)
        for _ in range(3):
            assert await opened() == connections
    finally:
        server.send_signal(signal.SIGINT)
        with anyio.move_on_after(30) as waiting:
            await server.wait()
        if waiting.cancelled_caught:
            server.kill()
            await server.wait()
