"""Measure the gate at scale on Redis and on a Redis Cluster: ``make bench-scale``.

For each storage, one redis-server and then a local three-primary Cluster (both started and
stopped here, with the helpers of ``tests/redis``), ``--workers`` example-app processes
(``examples.app:app`` under uvicorn, one worker each on its own 127.0.0.1 port, production
mode, the library's default limits) share it, and ``--clients`` processes of
:mod:`bench.crowd` hold ``--per-worker`` idle connections on each, one user a connection. The
phases, each read from Redis (``INFO`` on every node, summed) and from ``/proc``:

1. **storm**: every connection opens, ``--concurrency`` handshakes in flight per client
   process: the connect rate and the handshake latency;
2. **idle** for ``--idle`` seconds (several registry renewals, ``registry_ttl / 3`` apart):
   Redis commands, bytes and CPU per idle connection per minute; the workers' RSS and Redis's
   ``used_memory`` per connection, against their values before the storm;
3. **talk**: ``--talkers`` connections send ``--messages`` echo messages each.

The workers renew their registry leases in the background, during the storm and the talk too.
The bench reads every worker's record in ``wsgate:registry:workers`` twice a second, so it
knows each renewal and how many connections it carried; what the renewals of a phase cost is
taken off that phase, at the idle phase's cost per renewed connection. The bench's own
``INFO`` and ``HGETALL`` do not count.

Results go to ``bench/results/``: ``scale.md`` (the table that ``docs/scale-out.md`` links)
and ``scale.json`` (every reading). Everything started is stopped by its PID, on errors and
Ctrl+C too, and every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.run import RESULTS, ROOT, _rss_kib
from tests.redis.cluster import LocalCluster
from tests.redis.server import HOST, SECRET, TOKENS, GateProcess, RedisServer, free_port, gate_env

CLIENT_TIMEOUT = 300.0
"""The longest a crowd may take to answer one command, in seconds."""
POLL = 0.5
"""Seconds between two readings of the workers' records."""
WORKERS_KEY = "wsgate:registry:workers"
BENCH_COMMANDS = ("info", "client|setinfo", "config|resetstat")
"""What the bench itself sends, left out of the counts (its HGETALLs are taken off)."""
SCRIPTS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall")


@dataclass(frozen=True)
class Sizes:
    workers: int = 4
    per_worker: int = 5000
    clients: int = 4
    concurrency: int = 32
    """Handshakes in flight per client process."""
    talkers: int = 1000
    messages: int = 10
    idle: float = 60.0
    """Seconds of the idle window: six renewals of the default registry_ttl (30 s)."""
    registry_ttl: float = 30.0


SMOKE = Sizes(workers=2, per_worker=100, clients=2, concurrency=8, talkers=20, messages=3,
              idle=3.0, registry_ttl=3.0)  # fmt: skip


class Worker(GateProcess):
    """An example-app process, as the scale-out tests start it, whose RSS the bench reads."""

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def wait_serving(self, timeout: float = 60.0) -> None:
        """Wait until ``GET /ws/config`` answers (the bench logs warnings only, so the
        start-up line that :meth:`wait_ready` looks for is not there)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/ws/config", timeout=5):
                    return
            except OSError:
                if not self.alive or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not start:\n{self.log}") from None
                time.sleep(0.1)


# Reading Redis


@dataclass
class Reading:
    """Redis's counters, summed over its nodes, and the workers' RSS, at one moment."""

    at: float
    calls: Counter[str]
    net_in: int
    net_out: int
    cpu: float
    used_memory: int
    rss_kib: list[int]

    def minus(self, before: Reading) -> dict[str, Any]:
        calls = Counter(self.calls)
        calls.subtract(before.calls)
        return {
            "seconds": self.at - before.at,
            "calls": {name: count for name, count in calls.items() if count},
            "net_in": self.net_in - before.net_in,
            "net_out": self.net_out - before.net_out,
            "cpu": self.cpu - before.cpu,
        }


class Redis:
    """The nodes of one storage, read with INFO, and the workers' records, read with HGETALL.

    Every renewal of every worker is remembered, with the connections it carried: a renewal
    writes ``"<end of the lease> <connections>"`` under the worker's id, and the end of the
    lease differs from one renewal to the next.
    """

    def __init__(self, nodes: list[RedisServer], records: RedisServer, ttl: float) -> None:
        import redis

        self.clients = [redis.Redis(host=HOST, port=node.port, socket_timeout=10) for node in nodes]
        self.records = redis.Redis(
            host=HOST, port=records.port, socket_timeout=10, decode_responses=True
        )
        self.ttl_ms = round(ttl * 1000)
        # A renewal is one pipeline: its record, then a script a slot, up to thousands on a
        # Cluster. A reading waits until the last record is this much older, so that no
        # renewal is half done when it is taken.
        self.settle = min(1.0, ttl / 12)
        self.renewals: list[tuple[float, str, int]] = []  # (done at, worker, connections)
        self.polls = self.clocks = 0
        self._last: dict[str, str] = {}

    def poll(self) -> None:
        """Note the renewals done since the last poll, each at the moment Redis ran it (the
        end of the lease it wrote, less the TTL)."""
        records = self.records.hgetall(WORKERS_KEY)
        self.polls += 1
        for worker, record in records.items():
            worker, record = str(worker), str(record)
            if self._last.get(worker) != record:
                self._last[worker] = record
                lease_end, connections = (int(part) for part in record.split())
                self.renewals.append(((lease_end - self.ttl_ms) / 1000, worker, connections))

    def read(self, workers: list[Worker]) -> Reading:
        """Read every node, at a moment of the records node's clock (that of the renewals)."""
        deadline = time.monotonic() + 4 * self.settle
        while True:
            self.poll()
            seconds, microseconds = self.records.time()
            self.clocks += 1
            now = seconds + microseconds / 1e6
            latest = max((done for done, _worker, _count in self.renewals), default=0.0)
            if now - latest >= self.settle or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        calls: Counter[str] = Counter()
        net_in = net_out = used_memory = 0
        cpu = 0.0
        for client in self.clients:
            info: dict[str, Any] = client.info("stats", "commandstats", "memory", "cpu")
            for name, value in info.items():
                if name.startswith("cmdstat_"):
                    calls[name.removeprefix("cmdstat_")] += int(value["calls"])
            net_in += int(info["total_net_input_bytes"])
            net_out += int(info["total_net_output_bytes"])
            used_memory += int(info["used_memory"])
            cpu += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        self.poll()
        calls["hgetall"] -= self.polls  # ours
        calls["time"] -= self.clocks
        for name in BENCH_COMMANDS:
            calls.pop(name, None)
        rss = [_rss_kib(worker.pid) for worker in workers]
        return Reading(now, calls, net_in, net_out, cpu, used_memory, rss)

    def renewed(self, began: float, ended: float) -> int:
        """The connections renewed between two readings, summed over the renewals."""
        return sum(count for at, _worker, count in self.renewals if began < at <= ended)

    def close(self) -> None:
        for client in [*self.clients, self.records]:
            client.close()


# One storage, start to end


class Crowds:
    """The client processes of :mod:`bench.crowd`, steered together."""

    def __init__(self, sizes: Sizes, urls: list[str]) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        share = sizes.workers * sizes.per_worker // sizes.clients
        env = {**os.environ, "BENCH_SCALE_SECRET": SECRET}
        for n in range(sizes.clients):
            command = [
                *(sys.executable, "-m", "bench.crowd", f"--urls={','.join(urls)}"),
                *(f"--first-user={n * share}", f"--users={share}"),
                *(f"--concurrency={sizes.concurrency}", f"--source=127.0.0.{n + 2}"),
            ]
            self.processes.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=env,
                    text=True,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            )

    def ask(self, command: str | None, meanwhile: Callable[[], None]) -> list[dict[str, Any]]:
        """Send ``command`` to every crowd (None: send nothing) and wait for each answer,
        calling ``meanwhile()`` every :data:`POLL` seconds."""
        for process in self.processes:
            if command is not None:
                assert process.stdin is not None
                process.stdin.write(command + "\n")
                process.stdin.flush()
        answers: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + CLIENT_TIMEOUT
        with selectors.DefaultSelector() as selector:
            for n, process in enumerate(self.processes):
                assert process.stdout is not None
                selector.register(process.stdout, selectors.EVENT_READ, n)
            while len(answers) < len(self.processes):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the crowds did not answer {command!r} in time")
                for key, _ in selector.select(timeout=POLL):
                    line = key.fileobj.readline()  # type: ignore[union-attr]
                    if not line:
                        raise RuntimeError(f"a crowd exited before answering {command!r}")
                    answers[key.data] = json.loads(line)
                    selector.unregister(key.fileobj)
                meanwhile()
        return [answers[n] for n in range(len(self.processes))]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None and process.stdin is not None:
                try:
                    process.stdin.write("close\n")
                    process.stdin.close()
                except OSError:
                    pass
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


@contextmanager
def storage(kind: str, directory: Path) -> Iterator[tuple[str, list[RedisServer], RedisServer]]:
    """A redis-server or a three-primary Cluster: (URL, nodes, the node of WORKERS_KEY)."""
    if kind == "redis":
        server = RedisServer(directory)
        try:
            server.start()
            yield server.url, [server], server
        finally:
            server.stop()
        return
    cluster = LocalCluster(directory)
    try:
        cluster.start()
        yield cluster.url, cluster.nodes, cluster.node_of(WORKERS_KEY)
    finally:
        cluster.stop()


def _started(sizes: Sizes, url: str, directory: Path, stack: ExitStack) -> list[Worker]:
    env = gate_env(
        url,
        registry_ttl=f"{sizes.registry_ttl:g}",
        max_connections_per_user="3",
        rate_limit="30/minute",
        heartbeat_interval="45",
    )
    workers = []
    for n in range(sizes.workers):
        command = [
            *("uvicorn", "examples.app:app", "--host", HOST, "--port", str(free_port())),
            *("--ws", "websockets-sansio", "--loop", "uvloop", "--http", "httptools"),
            *("--ws-max-size", "32768", "--log-level", "warning", "--no-access-log"),
        ]
        worker = Worker(directory, f"worker{n}", env, command=command)
        stack.callback(worker.stop)
        worker.start()
        workers.append(worker)
    for worker in workers:
        worker.wait_serving()
    return workers


def _warm(workers: list[Worker]) -> None:
    """One connection and one message on each worker: its imports, its Redis clients, its
    registry's first lease and its background tasks are there before the first reading."""
    from websockets.sync.client import connect

    for n, worker in enumerate(workers):
        headers = {"Authorization": f"Bearer {TOKENS.valid(f'warm-{n}')}"}
        with connect(worker.ws(), additional_headers=headers, open_timeout=30) as ws:
            ws.send('{"type": "echo", "payload": 1}')
            ws.recv(timeout=30)


def run_storage(kind: str, sizes: Sizes, say: Callable[[str], None]) -> dict[str, Any]:
    """Every phase on one storage; the raw readings and the figures."""
    with tempfile.TemporaryDirectory(prefix=f"wsgate-scale-{kind}-") as name, ExitStack() as stack:
        directory = Path(name)
        url, nodes, records = stack.enter_context(storage(kind, directory))
        say(f"{kind}: {len(nodes)} node(s) up; starting {sizes.workers} workers")
        workers = _started(sizes, url, directory, stack)
        redis = Redis(nodes, records, sizes.registry_ttl)
        stack.callback(redis.close)
        _warm(workers)
        crowds = Crowds(sizes, [worker.ws() for worker in workers])
        stack.callback(crowds.stop)
        crowds.ask(None, redis.poll)  # their tokens are signed

        total = sizes.workers * sizes.per_worker
        say(f"{kind}: storm of {total:,} connections")
        before = redis.read(workers)
        storm = crowds.ask("storm", redis.poll)
        after_storm = redis.read(workers)
        opened = sum(answer["opened"] for answer in storm)
        say(f"{kind}: {opened:,} open; idle for {sizes.idle:g} s")
        _idle(sizes.idle, redis.poll)
        idle_end = redis.read(workers)
        talkers = min(sizes.talkers, opened)
        say(f"{kind}: {talkers:,} connections send {sizes.messages} messages each")
        talk = crowds.ask(f"talk {talkers // sizes.clients} {sizes.messages}", redis.poll)
        after_talk = redis.read(workers)
        measured = _logged(workers)
        _say_logged(workers, measured, f"{kind}: while measuring", say)
        say(f"{kind}: closing")
        crowds.ask("close", redis.poll)
        closing = [
            lines[len(before_close) :]
            for lines, before_close in zip(_logged(workers), measured, strict=True)
        ]
        _say_logged(workers, closing, f"{kind}: at close", say)
        failures = [error for answer in storm + talk for error in answer["errors"]]
        # Each phase: what Redis did, and the connections its renewals carried.
        phases = {
            name: {"raw": end.minus(start), "renewed": redis.renewed(start.at, end.at)}
            for name, start, end in [
                ("storm", before, after_storm),
                ("idle", after_storm, idle_end),
                ("talk", idle_end, after_talk),
            ]
        }
        return {
            "nodes": len(nodes),
            "opened": opened,
            "failed": sum(answer["failed"] for answer in storm),
            "failures": failures[:10],
            "worker_logs": {"measuring": measured, "closing": closing},
            "storm": _storm(storm),
            "talk": _talk(talk),
            "memory": {
                "rss_kib_before": before.rss_kib,
                "rss_kib_idle": idle_end.rss_kib,
                "used_memory_before": before.used_memory,
                "used_memory_idle": idle_end.used_memory,
            },
            "phases": phases,
            "renewals": redis.renewals,
        }


def _idle(seconds: float, poll: Callable[[], None]) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(POLL, left))
        poll()


def _logged(workers: list[Worker]) -> list[list[str]]:
    """Each worker's log lines (they log warnings and errors only)."""
    return [worker.log.strip().splitlines() for worker in workers]


def _say_logged(
    workers: list[Worker], lines: list[list[str]], when: str, say: Callable[[str], None]
) -> None:
    for worker, logged in zip(workers, lines, strict=True):
        if logged:
            shown = " | ".join(line[:200] for line in logged[:3])
            say(f"{when}, {worker.name} logged {len(logged)} line(s): {shown}")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)] if ordered else 0.0


def _storm(answers: list[dict[str, Any]]) -> dict[str, float]:
    latencies = [value for answer in answers for value in answer["latencies_ms"]]
    seconds = max(a["ended"] for a in answers) - min(a["began"] for a in answers)
    return {
        "seconds": seconds,
        "rate": len(latencies) / seconds if seconds else 0.0,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
    }


def _talk(answers: list[dict[str, Any]]) -> dict[str, float]:
    latencies = [value for answer in answers for value in answer["latencies_ms"]]
    return {
        "messages": len(latencies),
        "failed": sum(answer["failed"] for answer in answers),
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
    }


# Figures


def net(
    phase: dict[str, Any], idle: dict[str, Any], renewed: int, idle_renewed: int
) -> dict[str, Any]:
    """``phase`` less what its renewals cost, at the idle phase's cost per renewed connection."""
    share = renewed / idle_renewed if idle_renewed else 0.0
    calls = Counter(phase["calls"])
    calls.subtract({name: round(share * count) for name, count in idle["calls"].items()})
    return {
        "calls": {name: count for name, count in calls.items() if count > 0},
        "net_in": phase["net_in"] - share * idle["net_in"],
        "net_out": phase["net_out"] - share * idle["net_out"],
        "cpu": phase["cpu"] - share * idle["cpu"],
    }


def per(diff: dict[str, Any], count: float) -> dict[str, Any]:
    calls = diff["calls"]
    scale = 1 / count if count else 0.0
    return {
        "commands": scale * sum(calls.values()),
        "scripts": scale * sum(calls.get(name, 0) for name in SCRIPTS),
        "bytes_in": scale * diff["net_in"],
        "bytes_out": scale * diff["net_out"],
        "cpu_us": 1e6 * scale * diff["cpu"],
        "by_command": {name: scale * n for name, n in Counter(calls).most_common()},
    }


def figures(result: dict[str, Any]) -> dict[str, Any]:
    phases = result["phases"]
    idle = phases["idle"]
    opened = result["opened"]
    connect = net(phases["storm"]["raw"], idle["raw"], phases["storm"]["renewed"], idle["renewed"])
    talk = net(phases["talk"]["raw"], idle["raw"], phases["talk"]["renewed"], idle["renewed"])
    memory = result["memory"]
    minutes = idle["raw"]["seconds"] / 60
    return {
        "connect": per(connect, opened),
        "message": per(talk, result["talk"]["messages"]),
        "idle_minute": per(idle["raw"], opened * minutes),
        "worker_kib": (sum(memory["rss_kib_idle"]) - sum(memory["rss_kib_before"])) / opened,
        "redis_bytes": (memory["used_memory_idle"] - memory["used_memory_before"]) / opened,
    }


def redis_benchmark(port: int, requests: int) -> dict[str, float]:
    """SET and GET per second from ``redis-benchmark``: 50 clients, one command at a time and
    16 at a time (``-P 16``); empty when it is not installed."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {}
    found: dict[str, float] = {}
    for pipeline in (1, 16):
        done = subprocess.run(
            [binary, "-h", HOST, "-p", str(port), "-n", str(requests), "-c", "50",
             "-P", str(pipeline), "-t", "set,get", "--csv"],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        for line in done.stdout.splitlines()[1:]:
            test, rps, *_ = (cell.strip('"') for cell in line.split(","))
            found[f"{test}_P{pipeline}"] = float(rps)
    return found


def _benchmark(sizes: Sizes) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="wsgate-scale-benchmark-") as name:
        server = RedisServer(Path(name))
        server.start()
        try:
            return redis_benchmark(server.port, 2000 if sizes == SMOKE else 200_000)
        finally:
            server.stop()


# The table


def _cell(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _costs(label: str, results: dict[str, Any], key: str) -> list[str]:
    rows = []
    for name, what, digits in [
        ("commands", "Redis commands (scripts among them)", 1),
        ("bytes_in", "bytes to Redis / from Redis", 0),
        ("cpu_us", "Redis CPU, µs", 1),
    ]:
        cells = []
        for result in results.values():
            cost = result["figures"][key]
            if name == "commands":
                cells.append(f"{cost['commands']:,.{digits}f} ({cost['scripts']:,.{digits}f})")
            elif name == "bytes_in":
                cells.append(f"{_cell(cost['bytes_in'])} / {_cell(cost['bytes_out'])}")
            else:
                cells.append(_cell(cost[name], digits))
        rows.append(f"| {label}: {what} | " + " | ".join(cells) + " |")
    return rows


def table(results: dict[str, Any], sizes: Sizes, benchmark: dict[str, float]) -> str:
    names = {"redis": "one redis-server", "cluster": "Cluster, 3 primaries"}
    total = sizes.workers * sizes.per_worker
    lines = [
        f"{sizes.workers} example-app workers (uvicorn, one process each, production mode, the "
        f"default limits: 3 connections per user, 30 messages a minute, registry_ttl "
        f"{sizes.registry_ttl:g} s, heartbeat 45 s), {total:,} users with one connection each "
        f"from {sizes.clients} client processes ({sizes.concurrency} handshakes in flight "
        f"each); then {sizes.talkers:,} of them send {sizes.messages} echo messages each. "
        f"Redis 7 on the same machine; Python {sys.version.split()[0]}, {os.cpu_count()} "
        "cores shared by everything. Redis figures are summed over the nodes; commands include "
        "those run inside scripts, as Redis counts them; the registry's renewals during the "
        "storm and the messages are taken off (see bench/scale.py).",
        "",
        "| figure | " + " | ".join(names[kind] for kind in results) + " |",
        "| --- |" + " --- |" * len(results),
    ]

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        lines.append(
            f"| {label} | " + " | ".join(cell(result) for result in results.values()) + " |"
        )

    row("connections open (failed)", lambda r: f"{r['opened']:,} ({r['failed']})")
    row("connect rate, connections/s", lambda r: _cell(r["storm"]["rate"]))
    row("handshake latency p50 / p99, ms",
        lambda r: f"{r['storm']['p50_ms']:.1f} / {r['storm']['p99_ms']:.1f}")  # fmt: skip
    lines.extend(_costs("per connect", results, "connect"))
    row("message round trip p50 / p99, ms",
        lambda r: f"{r['talk']['p50_ms']:.1f} / {r['talk']['p99_ms']:.1f}")  # fmt: skip
    lines.extend(_costs("per message", results, "message"))
    lines.extend(_costs("per idle connection per minute", results, "idle_minute"))
    row("worker memory per idle connection, KiB", lambda r: _cell(r["figures"]["worker_kib"], 1))
    row("Redis memory per idle connection, bytes", lambda r: _cell(r["figures"]["redis_bytes"]))
    lines += ["", "The commands behind those figures (per connect, per message, per idle "
              "connection per minute):", ""]  # fmt: skip
    for kind, result in results.items():
        for key in ("connect", "message", "idle_minute"):
            top = result["figures"][key]["by_command"]
            shown = ", ".join(f"{name} {count:.2f}" for name, count in list(top.items())[:8])
            lines.append(f"- {names[kind]}, {key.replace('_', ' per ')}: {shown}")
    if benchmark:
        shown = ", ".join(f"{name} {rps:,.0f}" for name, rps in benchmark.items())
        lines += ["", f"redis-benchmark on the same machine (50 clients, requests/s): {shown}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storages", default="redis,cluster")
    parser.add_argument("--workers", type=int, default=Sizes.workers)
    parser.add_argument("--per-worker", type=int, default=Sizes.per_worker)
    parser.add_argument("--clients", type=int, default=Sizes.clients)
    parser.add_argument("--concurrency", type=int, default=Sizes.concurrency)
    parser.add_argument("--idle", type=float, default=Sizes.idle, help="seconds")
    parser.add_argument("--smoke", action="store_true", help="tiny counts: check it works")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else Sizes(
        workers=args.workers, per_worker=args.per_worker, clients=args.clients,
        concurrency=args.concurrency, idle=args.idle,
    )  # fmt: skip
    if (sizes.workers * sizes.per_worker) % (sizes.clients * sizes.workers):
        sys.exit("--workers x --per-worker must split evenly over --clients and --workers")
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        sys.exit("make bench-scale needs redis-server and redis-cli (apt-get install redis-server)")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the workers inherit it
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s] {text}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {}
    for kind in args.storages.split(","):
        results[kind] = run_storage(kind, sizes, say)
        results[kind]["figures"] = figures(results[kind])
    say("redis-benchmark")
    benchmark = _benchmark(sizes)
    text = table(results, sizes, benchmark)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "scale.md").write_text(text, encoding="utf-8")
    raw = {"sizes": asdict(sizes), "python": sys.version.split()[0], "storages": results,
           "redis_benchmark": benchmark}  # fmt: skip
    (args.output / "scale.json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    print(text)
    say("done")


if __name__ == "__main__":
    main()
