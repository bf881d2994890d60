"""Count the server's instructions per message and per connection: ``make bench-instructions``.

Throughput on a shared 2-core machine moves by a third from run to run; the number of
instructions the server executes does not. Each app of :mod:`bench.apps` (the peers of
:mod:`bench.peers` among them) is served as ``make bench`` serves it (uvicorn, one worker,
``websockets-sansio``, uvloop, httptools), but under ``valgrind --tool=cachegrind
--cache-sim=no``, and driven over real sockets on 127.0.0.1 by :mod:`bench.load`:

1. 10 connections send a few messages each, so that every path has run once;
2. 10 connections send N messages each (about 200 bytes, each waiting for its echo), then 10
   connections send 2N each: instructions per message = (second - first) / (10 N);
3. 10 connections open and close one after the other, then 210:
   instructions per connection = (second - first) / 200.

After each phase the server is read by ``GET /_bench/snapshot``, which forks a child that
exits at once: under valgrind the child writes the counters it inherited. One server per app
thus gives every reading, and start-up, imports and the readings themselves cancel out in
the differences. What the server runs while idle (uvicorn's main loop wakes up ten times a
second) is measured over two seconds and taken off each phase in proportion to how long the
phase lasted: under valgrind a phase lasts about 20 times longer than it would natively, and
longer still when the machine is busy, so its ticks would otherwise count 20 times over and
vary with the machine's load. The server's hash seed is fixed, so that its dicts and sets lay
out the same in every run.

Results go to ``bench/results/``: ``instructions.md`` (the table the docs show) and
``instructions.json`` (the readings as well).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from bench.run import RESULTS, SUITE, _address, _load, chosen, redis_server, serve

PATIENCE = 180.0
"""How long a server under valgrind may take to start, and then to stop, in seconds."""
IDLE = 2.0
"""How long the server is left idle to measure what it runs when idle, in seconds."""


@dataclass(frozen=True)
class Workload:
    # N = 200 keeps a full run, peers included, under 6 minutes on a shared 2-core machine,
    # and two runs agree within 0.5% on wsgate's apps, 0.75% on the peers'.
    clients: int = 10
    """The connections each phase opens."""
    messages: int = 200
    """N: the first message phase sends N per connection, the second 2N."""
    handshakes: int = 200
    """The connections the second handshake phase opens more than the first."""
    warm: int = 20
    """Messages per connection before the first reading."""


@dataclass
class Counts:
    """One app's instruction counts over all runs."""

    per_message: list[float] = field(default_factory=list)
    per_connection: list[float] = field(default_factory=list)
    readings: list[list[int]] = field(default_factory=list)
    """The server's instructions at each reading, one list per run."""
    totals: list[int] = field(default_factory=list)
    """What valgrind wrote when the server stopped, one per run."""
    seconds: list[list[float]] = field(default_factory=list)
    """When each reading was taken, in seconds after the first, one list per run."""
    idle: list[float] = field(default_factory=list)
    """What the idle server runs a second (uvicorn's tick, the apps' timers), one per run."""


def _valgrind(directory: Path) -> list[str]:
    return [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        f"--cachegrind-out-file={directory}/cachegrind.out.%p",
        f"--log-file={directory}/valgrind.%p.log",
    ]


def _instructions(directory: Path, pid: int) -> int:
    """The ``I refs`` total in the cachegrind output of process ``pid``."""
    path = directory / f"cachegrind.out.{pid}"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"{path} has no summary line: valgrind did not finish writing it")


def _snapshot(port: int, directory: Path) -> int:
    url = f"http://127.0.0.1:{port}/_bench/snapshot"
    with urllib.request.urlopen(url, timeout=PATIENCE) as answer:
        child: int = json.load(answer)["pid"]
    return _instructions(directory, child)


def measure(app: str, env: dict[str, str], workload: Workload, counts: Counts) -> None:
    """One run of every phase against ``app``, its server under cachegrind."""
    readings: list[int] = []
    moments: list[float] = []
    with tempfile.TemporaryDirectory(prefix="wsgate-cachegrind-") as name:
        directory = Path(name)
        server_env = {**env, "PYTHONHASHSEED": "0"}
        with serve(app, server_env, under=_valgrind(directory), patience=PATIENCE) as (port, pid):
            url, protocol = _address(app, port)
            target = [f"--url={url}", f"--protocol={protocol}", f"--connections={workload.clients}"]

            def read() -> None:
                readings.append(_snapshot(port, directory))
                moments.append(time.monotonic())

            def phase(kind: str, *sizes: str) -> None:
                _load(kind, *target, *sizes)
                read()

            phase("echo", f"--messages={workload.warm}")
            read()
            time.sleep(IDLE)
            read()
            phase("echo", f"--messages={workload.messages}")
            phase("echo", f"--messages={2 * workload.messages}")
            phase("handshakes", f"--count={workload.clients}", "--concurrency=1")
            phase(
                "handshakes", f"--count={workload.clients + workload.handshakes}", "--concurrency=1"
            )
        # The server stopped on SIGTERM: valgrind has written its total.
        counts.totals.append(_instructions(directory, pid))
    used = [after - before for before, after in itertools.pairwise(readings)]
    took = [after - before for before, after in itertools.pairwise(moments)]
    # The first interval holds a reading, the second a reading and IDLE seconds more.
    idle = (used[1] - used[0]) / (took[1] - took[0])
    _reading, _idle, first, second, few, many = (
        spent - idle * seconds for spent, seconds in zip(used, took, strict=True)
    )
    counts.per_message.append((second - first) / (workload.clients * workload.messages))
    counts.per_connection.append((many - few) / workload.handshakes)
    counts.idle.append(idle)
    counts.readings.append(readings)
    counts.seconds.append([moment - moments[0] for moment in moments])


def _spread(values: list[float]) -> float:
    """How far apart the runs are, as a fraction of their median."""
    return (max(values) - min(values)) / statistics.median(values)


ALONE: Final = ("origin", "auth", "connections", "size", "heartbeat", "ratelimit", "format")
"""The middlewares measured alone."""

# The targets of issue 17, as ratios to the bare endpoint: (app, figure, lowest ratio).
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("gate", "per message", 0.90),
    ("gate", "per connection", 0.88),
    ("gate-redis", "per message", 0.60),
    *((app, "per message", 0.95) for app in ALONE),
)


def _targets(ratios: dict[tuple[str, str], float]) -> list[str]:
    """The targets' table, for the apps of the run."""
    lines = [
        "",
        "| target | ratio at least | measured | met |",
        "| --- | --- | --- | --- |",
    ]
    for app, figure, lowest in TARGETS:
        if (app, figure) not in ratios:
            continue
        ratio = ratios[app, figure]
        label = f"{app} alone" if app in ALONE else app
        met = "yes" if ratio >= lowest else "no"
        lines.append(f"| {label}, {figure} | {lowest:.2f} | {ratio:.2f} | {met} |")
    return lines if len(lines) > 3 else []


def table(results: dict[str, Counts], workload: Workload, runs: int) -> str:
    bare = results["bare"]
    per_message = statistics.median(bare.per_message)
    per_connection = statistics.median(bare.per_connection)
    clients, messages = workload.clients, workload.messages
    lines = [
        f"Instructions the server runs (cachegrind's `I refs`): per message, from {clients} "
        f"connections sending {messages} and then {2 * messages} messages each; per connection, "
        f"from {clients} and then {clients + workload.handshakes} connections opened and closed. "
        f"Python {sys.version.split()[0]}"
        + (f", medians of {runs} runs" if runs > 1 else "")
        + ". A ratio is the bare Starlette endpoint's count over the app's, from the same run: "
        "1.00 costs what the bare endpoint costs, 0.50 twice as much.",
        "",
        "| app | per message | ratio to bare | per connection | ratio to bare |",
        "| --- | --- | --- | --- | --- |",
    ]
    ratios: dict[tuple[str, str], float] = {}
    for app, counts in results.items():
        message, connection = (
            statistics.median(counts.per_message),
            statistics.median(counts.per_connection),
        )
        ratios[app, "per message"] = per_message / message
        ratios[app, "per connection"] = per_connection / connection
        lines.append(
            f"| {app} | {message / 1000:,.1f}k | {per_message / message:.2f} | "
            f"{connection / 1e6:,.3f}M | {per_connection / connection:.2f} |"
        )
    lines += _targets(ratios)
    if runs > 1:
        worst = max(
            max(_spread(counts.per_message), _spread(counts.per_connection))
            for counts in results.values()
        )
        lines += ["", f"The runs' figures lie within {100 * worst:.2f}% of each other."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--apps", help="comma-separated (default: every app; bare,gate with --smoke)"
    )
    parser.add_argument("--runs", type=int, default=1, help="runs of every app, for the spread")
    parser.add_argument("--clients", type=int, default=Workload.clients)
    parser.add_argument("--messages", type=int, default=Workload.messages, help="N")
    parser.add_argument("--smoke", action="store_true", help="tiny counts: check it works")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    workload = Workload(clients=args.clients, messages=args.messages)
    if args.smoke:
        workload = Workload(messages=5, handshakes=5, warm=2)
    apps = chosen(args.apps or ("bare,gate" if args.smoke else SUITE))
    results = {app: Counts() for app in apps}
    started = time.monotonic()
    with redis_server() as redis_url:
        env = {"WSGATE_BENCH_REDIS_URL": redis_url} if redis_url else {}
        if redis_url is None and "gate-redis" in results:
            print("redis-server not found: skipping gate-redis", file=sys.stderr)
            del results["gate-redis"]
        for run in range(args.runs):
            for app in results:
                print(f"run {run + 1}/{args.runs}: {app} ({time.monotonic() - started:.0f} s)",
                      file=sys.stderr, flush=True)  # fmt: skip
                measure(app, env, workload, results[app])
    args.output.mkdir(parents=True, exist_ok=True)
    text = table(results, workload, args.runs)
    (args.output / "instructions.md").write_text(text, encoding="utf-8")
    raw = {
        "workload": asdict(workload),
        "python": sys.version.split()[0],
        "apps": {app: asdict(counts) for app, counts in results.items()},
    }
    (args.output / "instructions.json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    print(text)
    print(f"{time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
