"""How many worker processes serve the app, when the server says so reliably, for the warning
that a ``memory://`` storage counts every limit per process.

A worker process knows little of its siblings; these signals are reliable:

* **uvicorn** ``--workers N``: the supervisor spawns each worker with :mod:`multiprocessing`,
  which gives the child the supervisor's ``sys.argv``. ``N`` is ``--workers`` there, else
  ``UVICORN_WORKERS`` (click's variable for the option), else ``WEB_CONCURRENCY``, as uvicorn
  reads them; ``--reload`` runs one process whatever they say.
* **gunicorn**: its arbiter puts ``SERVER_SOFTWARE=gunicorn/<version>`` in the environment, and
  its workers are forks of it, with its ``sys.argv``. ``N`` is ``-w``/``--workers`` there or in
  ``GUNICORN_CMD_ARGS``, else ``WEB_CONCURRENCY`` when no configuration file could set another.

Anything else is not seen, and nothing is warned: a count in a gunicorn configuration file,
``uvicorn.run(workers=N)`` called from code, hypercorn's or granian's workers.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger("wsgate")


def warn_if_limits_multiply(shared: bool) -> None:
    """Log a warning, once per process, when the storage is this process's own (``shared``
    is False) and the server runs several worker processes."""
    if shared:
        return
    found = worker_processes(sys.argv, os.environ)
    if found is not None and found[0] > 1:
        _warn(*found)


@functools.cache
def _warn(workers: int, server: str) -> None:
    logger.warning(
        "%d worker processes serve this app (%s), and WSGATE_STORAGE is memory://, which "
        "keeps the limits in each process: connection and rate limits are %d times what the "
        "configuration says. Set WSGATE_STORAGE to a redis:// URL (such as "
        "redis://localhost:6379/0) so that the workers share them.",
        workers,
        server,
        workers,
    )


def worker_processes(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[int, str] | None:
    """The number of worker processes and the server that runs them, from this process's
    command line and environment; None when no reliable signal says."""
    program = _program(argv)
    if program == "uvicorn":
        return _uvicorn(argv[1:], environ)
    if environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
        return _gunicorn(argv[1:], environ)
    return None


def _program(argv: Sequence[str]) -> str | None:
    """``uvicorn`` for ``uvicorn ...`` and ``python -m uvicorn ...``, and so on."""
    if not argv:
        return None
    path = Path(argv[0])
    return path.parent.name if path.name == "__main__.py" else path.stem


def _uvicorn(args: Sequence[str], environ: Mapping[str, str]) -> tuple[int, str] | None:
    if "--reload" in args or _truthy(environ.get("UVICORN_RELOAD")):
        return None
    value = _option(args, "--workers", None)
    if value is None:
        value = environ.get("UVICORN_WORKERS") or environ.get("WEB_CONCURRENCY")
    count = _count(value)
    return None if count is None else (count, "uvicorn --workers")


def _gunicorn(args: Sequence[str], environ: Mapping[str, str]) -> tuple[int, str] | None:
    value = _option(args, "--workers", "-w")
    if value is None:
        value = _option(shlex.split(environ.get("GUNICORN_CMD_ARGS", "")), "--workers", "-w")
    if value is None and not _gunicorn_config_file(args, environ):
        value = environ.get("WEB_CONCURRENCY")
    count = _count(value)
    return None if count is None else (count, "gunicorn")


def _gunicorn_config_file(args: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Whether gunicorn reads a configuration file, which may set ``workers`` over
    ``WEB_CONCURRENCY``: ``-c``/``--config``, or ``gunicorn.conf.py`` where it runs."""
    extra = shlex.split(environ.get("GUNICORN_CMD_ARGS", ""))
    for options in (args, extra):
        if _option(options, "--config", "-c") is not None:
            return True
    return Path("gunicorn.conf.py").is_file()


def _option(args: Sequence[str], long: str, short: str | None) -> str | None:
    """The last value of an option, as ``--long N``, ``--long=N``, ``-s N`` or ``-sN``."""
    value = None
    for index, arg in enumerate(args):
        if arg in (long, short) and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(long + "="):
            value = arg[len(long) + 1 :]
        elif short is not None and arg.startswith(short) and not arg.startswith("--"):
            value = arg[len(short) :] or value
    return value


def _count(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes", "on")
