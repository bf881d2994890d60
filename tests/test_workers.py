"""The start-up warning that memory:// limits multiply by the number of worker processes
(wsgate/_workers.py): the example app under a real ``uvicorn --workers 2``, and the signals
each server gives."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import stop_process
from wsgate._workers import worker_processes

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0
WARNING = "WSGATE_STORAGE is memory://"
STARTED = "Application startup complete"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_until(process: subprocess.Popen[bytes], done: str, count: int) -> str:
    """The process's output until ``done`` appeared ``count`` times, within START_TIMEOUT."""
    assert process.stdout is not None
    output = b""
    deadline = time.monotonic() + START_TIMEOUT
    while output.decode(errors="replace").count(done) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            pytest.fail(f"no {done!r} x{count} in the server's output:\n{output.decode()}")
        readable, _, _ = select.select([process.stdout], [], [], remaining)
        if readable:
            output += os.read(process.stdout.fileno(), 65536)
    return output.decode(errors="replace")


@pytest.fixture
def uvicorn() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Starts ``uvicorn examples.app:app`` with the arguments given; stops what it started."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop_process(process)
        if process.stdout is not None:
            process.stdout.close()


def start(started: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    workdir = tempfile.mkdtemp(prefix="wsgate-workers-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WSGATE_", "WEB_", "UVI"))}
    env |= {
        "WSGATE_ENV": "development",
        "WSGATE_ALLOW_MISSING_ORIGIN": "true",
        "WSGATE_STORAGE": "memory://",
        "WSGATE_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/chat.db",
    }
    command = [sys.executable, "-m", "uvicorn", "examples.app:app", "--host", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--port", str(_free_port()), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    started.append(process)
    return process


def test_uvicorn_workers_with_memory_storage_warn_at_start_up_with_the_fix(
    uvicorn: list[subprocess.Popen[bytes]],
) -> None:
    output = read_until(start(uvicorn, "--workers", "2"), STARTED, 2)
    warnings = [line for line in output.splitlines() if WARNING in line]
    assert len(warnings) == 2, output  # once in each worker process
    assert "2 worker processes serve this app (uvicorn --workers)" in warnings[0]
    assert "Set WSGATE_STORAGE to a redis:// URL" in warnings[0]


def test_one_uvicorn_worker_does_not_warn(uvicorn: list[subprocess.Popen[bytes]]) -> None:
    output = read_until(start(uvicorn), STARTED, 1)
    assert WARNING not in output


UVICORN = "/venv/bin/uvicorn"


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        ([UVICORN, "app:app", "--workers", "4"], {}, (4, "uvicorn --workers")),
        ([UVICORN, "app:app", "--workers=3"], {}, (3, "uvicorn --workers")),
        (["/lib/uvicorn/__main__.py", "app:app", "--workers", "2"], {}, (2, "uvicorn --workers")),
        ([UVICORN, "app:app"], {"WEB_CONCURRENCY": "5"}, (5, "uvicorn --workers")),
        ([UVICORN, "app:app"], {"UVICORN_WORKERS": "2"}, (2, "uvicorn --workers")),
        (
            [UVICORN, "app:app", "--workers", "1"],
            {"WEB_CONCURRENCY": "5"},
            (1, "uvicorn --workers"),
        ),
        ([UVICORN, "app:app", "--workers", "4", "--reload"], {}, None),
        ([UVICORN, "app:app"], {}, None),
        (
            ["gunicorn", "app:app", "-w", "4"],
            {"SERVER_SOFTWARE": "gunicorn/23.0.0"},
            (4, "gunicorn"),
        ),
        (["gunicorn", "app:app", "-w3"], {"SERVER_SOFTWARE": "gunicorn/23.0.0"}, (3, "gunicorn")),
        (
            ["gunicorn", "app:app"],
            {"SERVER_SOFTWARE": "gunicorn/23.0.0", "GUNICORN_CMD_ARGS": "--workers=6"},
            (6, "gunicorn"),
        ),
        (
            ["gunicorn", "app:app"],
            {"SERVER_SOFTWARE": "gunicorn/23.0.0", "WEB_CONCURRENCY": "2"},
            (2, "gunicorn"),
        ),
        (  # a configuration file may set another count: not a reliable signal
            ["gunicorn", "-c", "conf.py", "app:app"],
            {"SERVER_SOFTWARE": "gunicorn/23.0.0", "WEB_CONCURRENCY": "2"},
            None,
        ),
        (["gunicorn", "app:app", "-w", "4"], {}, None),  # SERVER_SOFTWARE is what says gunicorn
        (["hypercorn", "app:app", "--workers", "4"], {"WEB_CONCURRENCY": "4"}, None),
    ],
)
def test_the_signals_each_server_gives(
    argv: list[str], environ: dict[str, str], expected: tuple[int, str] | None
) -> None:
    assert worker_processes(argv, environ) == expected
