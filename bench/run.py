"""Run the benchmark suite and write the table: ``make bench`` (``make bench-smoke`` in CI).

For each app of :mod:`bench.apps` (the peers of :mod:`bench.peers` among them, when their
packages are installed), a uvicorn server (one worker, ``websockets-sansio``,
uvloop, httptools) is started on a free 127.0.0.1 port, pinned to core 0, and the load
generator (:mod:`bench.load`) runs in another process pinned to core 1. Every figure is the
median of ``--runs`` runs and is reported as a ratio against the bare endpoint measured in the
same run, because the machines this runs on are shared and noisy. Each server is stopped by
its own PID.

Results go to ``bench/results/``: ``latest.md`` (the table the docs show), ``latest.json``
and, when matplotlib is installed (``pip install -e '.[bench]'``), ``ratios.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.peers import PEERS, missing

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SUITE = (
    "bare,gate,gate-redis,origin,auth,connections,size,heartbeat,ratelimit,format,channels,socketio"
)
"""Every app of bench.apps and bench.peers, the bare endpoint first."""
CLIENT_TIMEOUT = 300.0
"""The longest one load-generator process may run, in seconds."""

# What each figure is, and its target as a ratio of the bare endpoint (None: no target).
TARGETS: dict[str, tuple[str, float | None, str]] = {
    "echo_50": ("echo msg/s, 50 connections", 0.90, ">="),
    "echo_1": ("echo msg/s, 1 connection", 0.90, ">="),
    "handshakes_seq": ("handshakes/s, sequential", 0.85, ">="),
    "handshakes_16": ("handshakes/s, 16 concurrent", None, ">="),
    "idle_kib": ("memory per idle connection", 1.08, "<="),  # issue 17; 1.10 before
}


@dataclass
class Sizes:
    # 2.5 s per echo figure and 1,000 idle connections keep the default run of every app,
    # peers included, near 8 minutes.
    seconds: float = 2.5
    runs: int = 3
    handshakes: int = 400
    idle: int = 1000


@dataclass
class Figures:
    """One app's raw figures over all runs; medians are taken at the end."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float | None:
        found = self.values.get(name)
        return statistics.median(found) if found else None

    def ratio(self, name: str, floor: Figures) -> float | None:
        """The median over the runs of this app's figure over ``floor``'s in the same run.

        Paired by run, the ratio cancels what drifts between runs (the machine's load, its
        clock), which a ratio of the two medians would not.
        """
        pairs = zip(self.values.get(name, []), floor.values.get(name, []), strict=False)
        ratios = [value / base for value, base in pairs if base]
        return statistics.median(ratios) if ratios else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pinned(core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core)]
    return []


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextmanager
def serve(
    app: str, env: dict[str, str], *, under: Sequence[str] = (), patience: float = 30
) -> Iterator[tuple[int, int]]:
    """Serve ``app``; yield (port, pid). The server is stopped by its PID on exit.

    ``under`` is a command the server runs under (``bench.instructions`` passes valgrind's),
    and ``patience`` how long it may take to start, and then to stop, in seconds.
    """
    port = _free_port()
    command = [
        *_pinned(0),
        *under,
        sys.executable,
        "-m",
        "uvicorn",
        "bench.apps:create",
        "--factory",
        "--host=127.0.0.1",
        f"--port={port}",
        "--ws=websockets-sansio",
        "--loop=uvloop",
        "--http=httptools",
        "--ws-max-size=32768",
        "--log-level=warning",
        "--no-access-log",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **env, "WSGATE_BENCH_APP": app}
    )
    try:
        deadline = time.monotonic() + patience
        while True:
            try:
                _tasks(port)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {app} server did not start") from None
                time.sleep(0.05)  # polling a process we do not control: bounded above
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=patience)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _tasks(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_bench/tasks", timeout=5) as answer:
        count: int = json.load(answer)["tasks"]
        return count


def _address(app: str, port: int) -> tuple[str, str]:
    """The URL the load generator opens for ``app``, and the protocol it speaks there."""
    if app in PEERS:
        return f"ws://127.0.0.1:{port}{PEERS[app].path}", PEERS[app].protocol
    return f"ws://127.0.0.1:{port}/ws", "plain"


def _load(*args: str) -> dict[str, Any]:
    command = [*_pinned(1), sys.executable, "-m", "bench.load", *args]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(app: str, env: dict[str, str], sizes: Sizes, figures: Figures) -> None:
    """One run of every figure against ``app``."""
    with serve(app, env) as (port, pid):
        url, protocol = _address(app, port)
        target = [f"--url={url}", f"--protocol={protocol}"]
        for connections, name in [(50, "echo_50"), (1, "echo_1")]:
            cpu = _cpu_seconds(pid)
            result = _load(
                "echo", *target, f"--connections={connections}", f"--seconds={sizes.seconds}"
            )
            figures.add(name, result["per_second"])
            figures.add(f"{name}_p50_ms", result["p50_ms"])
            figures.add(f"{name}_p99_ms", result["p99_ms"])
            figures.add(f"{name}_cpu_us", 1e6 * (_cpu_seconds(pid) - cpu) / result["messages"])
        for concurrency, name in [(1, "handshakes_seq"), (16, "handshakes_16")]:
            cpu = _cpu_seconds(pid)
            result = _load(
                "handshakes", *target, f"--count={sizes.handshakes}",
                f"--concurrency={concurrency}",
            )  # fmt: skip
            figures.add(name, result["per_second"])
            figures.add(f"{name}_cpu_us", 1e6 * (_cpu_seconds(pid) - cpu) / result["handshakes"])
        _idle(target, port, pid, sizes.idle, figures)


def _idle(target: list[str], port: int, pid: int, count: int, figures: Figures) -> None:
    rss, tasks = _rss_kib(pid), _tasks(port)
    client = subprocess.Popen(
        [*_pinned(1), sys.executable, "-m", "bench.load", "idle", *target,
         f"--connections={count}"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdin is not None
    assert client.stdout is not None
    try:
        ready = json.loads(client.stdout.readline())["ready"]
        figures.add("idle_kib", (_rss_kib(pid) - rss) / ready)
        figures.add("idle_tasks", (_tasks(port) - tasks) / ready)
        client.stdin.write("done\n")
        client.stdin.flush()
        client.wait(timeout=CLIENT_TIMEOUT)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=15)


@contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway redis-server on a free port, or None when none is installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [*_pinned(1), binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)  # bounded above
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=15)


# The second table's columns: figure, and the digits shown.
_LATENCY_COLUMNS = [
    ("echo_50_cpu_us", 1),
    ("echo_1_cpu_us", 1),
    ("handshakes_seq_cpu_us", 0),
    ("echo_50_p50_ms", 2),
    ("echo_50_p99_ms", 2),
    ("echo_1_p50_ms", 2),
    ("echo_1_p99_ms", 2),
]


def table(results: dict[str, Figures], sizes: Sizes) -> str:
    bare = results["bare"]
    lines = [
        f"Medians of {sizes.runs} runs, {sizes.seconds:g} s per echo figure, "
        f"{sizes.handshakes} handshakes, {sizes.idle} idle connections; "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores. Ratios are against the bare "
        "Starlette endpoint measured in the same run (the median of the runs' ratios).",
        "",
        "| app | echo 50 conn | echo 1 conn | handshakes seq | handshakes 16 | idle KiB/conn | "
        "tasks/idle conn |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for app, figures in results.items():
        cells = [app]
        for name in ["echo_50", "echo_1", "handshakes_seq", "handshakes_16", "idle_kib"]:
            value, ratio = figures.median(name), figures.ratio(name, bare)
            if value is None or ratio is None:
                cells.append("n/a")
                continue
            cells.append(f"{value:,.0f} ({ratio:.2f})" if app != "bare" else f"{value:,.0f}")
        extra_tasks = (figures.median("idle_tasks") or 0.0) - (bare.median("idle_tasks") or 0.0)
        cells.append(f"{extra_tasks:+.2f}" if app != "bare" else f"{bare.median('idle_tasks'):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Server CPU (µs, from the server process's CPU time) and echo latency (ms):", ""]
    lines += [
        "| app | CPU/msg (50) | CPU/msg (1) | CPU/handshake (seq) | p50 (50) | p99 (50) | p50 (1) "
        "| p99 (1) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for app, figures in results.items():
        cells = [app]
        for name, digits in _LATENCY_COLUMNS:
            value = figures.median(name)
            cells.append("n/a" if value is None else f"{value:,.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Targets for the full gate (ratios against bare):", ""]
    lines += ["| figure | target | measured | met |", "| --- | --- | --- | --- |"]
    for app in [name for name in ("gate", "gate-redis") if name in results]:
        for name, (label, target, sense) in TARGETS.items():
            wanted = 0.50 if (app == "gate-redis" and name == "echo_50") else target
            if wanted is None or (app == "gate-redis" and name != "echo_50"):
                continue
            ratio = results[app].ratio(name, bare)
            if ratio is None:
                continue
            met = ratio >= wanted if sense == ">=" else ratio <= wanted
            lines.append(f"| {app}: {label} | {sense} {wanted:.2f} | {ratio:.2f} | "
                         f"{'yes' if met else 'NO'} |")  # fmt: skip
        extra = (results[app].median("idle_tasks") or 0) - (bare.median("idle_tasks") or 0)
        lines.append(f"| {app}: tasks per idle connection added | 0 | {extra:+.2f} | "
                     f"{'yes' if extra < 0.01 else 'NO'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Figures], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    bare = results["bare"]
    apps = [app for app in results if app != "bare"]
    names = ["echo_50", "echo_1", "handshakes_seq"]
    figure, axis = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        ratios = [results[app].ratio(name, bare) or 0.0 for app in apps]
        axis.bar([i + index * width for i in range(len(apps))], ratios, width, label=name)
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.axhline(0.9, color="grey", linewidth=0.8, linestyle="--")
    axis.set_xticks([i + width for i in range(len(apps))], apps, rotation=30, ha="right")
    axis.set_ylabel("ratio of the bare endpoint")
    axis.set_title("wsgate: throughput and handshakes against a bare Starlette endpoint")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return True


def chosen(names: str) -> list[str]:
    """The apps of a comma-separated list, the bare endpoint first, less absent peers."""
    apps = [app.strip() for app in names.split(",") if app.strip()]
    if "bare" not in apps:
        apps.insert(0, "bare")
    for peer in [app for app in apps if app in PEERS]:
        absent = missing(peer)
        if absent:
            print(f"{', '.join(absent)} not installed: skipping {peer} "
                  "(pip install -e '.[bench]')", file=sys.stderr)  # fmt: skip
            apps.remove(peer)
    return apps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default=SUITE)
    parser.add_argument("--runs", type=int, default=Sizes.runs)
    parser.add_argument("--seconds", type=float, default=Sizes.seconds, help="per echo figure")
    parser.add_argument("--smoke", action="store_true", help="tiny counts: check it works")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = Sizes(seconds=args.seconds, runs=args.runs)
    if args.smoke:
        sizes = Sizes(seconds=0.3, runs=1, handshakes=16, idle=20)
    apps = chosen(args.apps)
    results: dict[str, Figures] = {app: Figures() for app in apps}
    with redis_server() as redis_url:
        env = {"WSGATE_BENCH_REDIS_URL": redis_url} if redis_url else {}
        if redis_url is None and "gate-redis" in apps:
            print("redis-server not found: skipping gate-redis", file=sys.stderr)
            del results["gate-redis"]
        for run in range(sizes.runs):
            for app in results:  # interleaved, so drift in the machine hits every app alike
                print(f"run {run + 1}/{sizes.runs}: {app}", file=sys.stderr, flush=True)
                measure(app, env, sizes, results[app])
    args.output.mkdir(parents=True, exist_ok=True)
    text = table(results, sizes)
    (args.output / "latest.md").write_text(text, encoding="utf-8")
    raw = {app: figures.values for app, figures in results.items()}
    (args.output / "latest.json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    plotted = plot(results, args.output / "ratios.png")
    if plotted and args.output == RESULTS:  # the docs' performance page shows the latest
        shutil.copyfile(args.output / "ratios.png", ROOT / "docs" / "ratios.png")
    print(text)
    if not plotted:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')", file=sys.stderr)


if __name__ == "__main__":
    main()
