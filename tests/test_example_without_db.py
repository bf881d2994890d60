"""The example app without its database: the chat stores' contract, the fallback to memory, and
`uvicorn examples.app:app` served from a fresh virtualenv with only `wsgate[server]`."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from examples.store import ChatStore, open_store
from examples.store.memory import MemoryChatStore
from examples.store.sql import SQLChatStore
from tests.processes import stop_process
from wsgate.testing import WSClient

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
MEMORY_NOTICE = "Chat history is kept in memory"


@pytest.fixture(params=["memory", "sql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ChatStore]:
    chat: ChatStore
    if request.param == "memory":
        chat = MemoryChatStore()
    else:
        chat = SQLChatStore(f"sqlite+aiosqlite:///{tmp_path / 'chat.sqlite3'}")
    await chat.start()
    yield chat
    await chat.aclose()


async def test_a_store_keeps_what_a_session_that_succeeded_added(store: ChatStore) -> None:
    for text in ("one", "two", "three"):
        async with store.session() as session:
            await session.add("ops", "alice", text)
    async with store.session() as session:
        await session.add("dev", "bob", "elsewhere")
    async with store.session() as session:
        assert await session.history("ops", limit=2) == [
            {"room": "ops", "from": "alice", "text": "two"},
            {"room": "ops", "from": "alice", "text": "three"},
        ]
        assert await session.history("nobody") == []


async def test_a_store_forgets_what_a_failed_session_added(store: ChatStore) -> None:
    async def failing_handler() -> None:
        async with store.session() as session:
            await session.add("ops", "alice", "lost")
            raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError):
        await failing_handler()
    async with store.session() as session:
        assert await session.history("ops") == []


def without_sqlalchemy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)  # `import sqlalchemy` fails
    monkeypatch.delitem(sys.modules, "examples.store.sql")


def test_without_sqlalchemy_the_history_is_kept_in_memory_and_the_log_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    without_sqlalchemy(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="examples.store"):
        assert isinstance(open_store(), MemoryChatStore)
    [record] = caplog.records
    assert MEMORY_NOTICE in record.getMessage()
    assert "pip install 'wsgate[examples]'" in record.getMessage()


def test_without_sqlalchemy_a_database_url_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    without_sqlalchemy(monkeypatch)
    with pytest.raises(ImportError, match=r"unset WSGATE_DATABASE_URL"):
        open_store("postgresql+asyncpg://chat@db/chat")


def test_with_sqlalchemy_the_history_is_in_the_database(tmp_path: Path) -> None:
    assert isinstance(open_store(f"sqlite+aiosqlite:///{tmp_path}/chat.db"), SQLChatStore)


@pytest.fixture(scope="module")
def server_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with this checkout installed as `pip install '.[server]'`.

    This venv's pip installs into it (`pip --python`): the same install, without the seconds
    a pip of its own takes to set up.
    """
    venv = tmp_path_factory.mktemp("server-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    subprocess.run(
        [*pip, "--quiet", "--disable-pip-version-check", f"{ROOT}[server]"],
        check=True,
        timeout=400,
        env=clean_environ(),
    )
    return venv


def clean_environ() -> dict[str, str]:
    """This process's environment without wsgate's settings or another Python's paths."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("WSGATE_") and name not in dropped
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def served_from_venv(server_venv: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`uvicorn examples.app:app` from the fresh venv, in development as `make demo` runs it.

    Yields its ws:// base URL and the file its stderr goes to.
    """
    port = free_port()
    environ = clean_environ() | {
        "WSGATE_ENV": "development",
        "WSGATE_JWT_SECRET": "a-demo-secret-of-at-least-thirty-two-bytes-0000",
        "WSGATE_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
        "WSGATE_ALLOW_MISSING_ORIGIN": "true",
    }
    stderr = tmp_path / "uvicorn.stderr"
    command = [str(server_venv / "bin" / "uvicorn"), "examples.app:app", "--port", str(port)]
    with stderr.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=log
        )
    try:
        deadline = time.monotonic() + 30
        while not answers(f"http://127.0.0.1:{port}/ws/config"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not serve the example:\n{stderr.read_text()}")
            time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}", stderr
    finally:
        stop_process(process)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.slow  # a fresh virtualenv and a pip install: about 20 s with a warm pip cache
@pytest.mark.timeout(600)
def test_the_server_extra_brings_no_database(server_venv: Path) -> None:
    python = server_venv / "bin" / "python"
    bare = subprocess.run(
        [python, "-c", "import sqlalchemy"], capture_output=True, text=True, check=False
    )
    assert "No module named 'sqlalchemy'" in bare.stderr
    # `make demo`'s script loads as well (its --help exits once the imports are done).
    subprocess.run([python, "-m", "examples.run", "--help"], cwd=ROOT, check=True, timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_the_example_serves_with_only_the_server_extra(
    served_from_venv: tuple[str, Path],
) -> None:
    base, stderr = served_from_venv
    async with WSClient(f"{base}/ws") as ws:  # the development bypass: no token
        await ws.send_json({"type": "join", "room": "ops"})
        await ws.expect("joined")
        await ws.send_json({"type": "say", "room": "ops", "text": "hello"})
        assert (await ws.expect("said"))["from"] == "dev-user"
        await ws.send_json({"type": "history", "room": "ops"})
        history = await ws.expect("history")
    assert history["payload"] == [{"room": "ops", "from": "dev-user", "text": "hello"}]
    assert stderr.read_text().count(MEMORY_NOTICE) == 1
