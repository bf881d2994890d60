"""Stopping the server processes that tests start."""

from __future__ import annotations

import subprocess


def stop_process(
    process: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 10
) -> None:
    """Ask ``process`` to stop, and kill it when it has not within ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
