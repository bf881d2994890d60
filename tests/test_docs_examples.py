"""Every code example in docs/ is a promise: it must run as it stands.

Each ```python block of README.md and docs/*.md is found here, by page and index. A block that
defines ``app`` is a module: it is written to a file and served with ``uvicorn module:app`` in
a process of its own, configured only through the environment, and must answer. Every other
block must at least compile. The blocks that cannot, and the modules that lean on a block
before them, are listed below with the reason, and fail the run the day they are fixed.

The first module of docs/extending.md is then held to what its page says a client sees.
"""

from __future__ import annotations

import ast
import doctest
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from wsgate.testing import HandshakeRejected, TokenFactory, WSClient

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)

SECRET = "docs-examples-secret-that-is-more-than-48-bytes-long-0123456789"
ORIGIN = "https://chat.example.com"
STARTUP_SECONDS = 60.0  # every module starts at once, on however few cores there are
tokens = TokenFactory(SECRET)

NOT_CODE: dict[tuple[str, int], str] = {}
"""Blocks marked ```python that are not Python, and why."""

NOT_ALONE: dict[tuple[str, int], str] = {}
"""Blocks that define ``app`` but need names from elsewhere to run, and where from."""


@dataclass(frozen=True)
class Block:
    """One ```python block of a page."""

    page: str
    index: int
    source: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.page, self.index)

    @property
    def name(self) -> str:
        return f"{self.page}[{self.index}]"

    @property
    def module(self) -> str:
        return "doc_" + re.sub(r"\W", "_", self.page.removesuffix(".md")) + f"_{self.index}"

    @property
    def is_session(self) -> bool:
        """An interpreter session (``>>> ...`` and what it printed)."""
        return self.source.lstrip().startswith(">>>")

    def defines_app(self) -> bool:
        try:
            tree = ast.parse(self.source)
        except SyntaxError:
            return False
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets = [node.target]
            if any(isinstance(target, ast.Name) and target.id == "app" for target in targets):
                return True
        return False


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for index, match in enumerate(FENCE.finditer(text)):
            source = textwrap.dedent(match["body"])
            found.append(Block(page.relative_to(ROOT).as_posix(), index, source))
    return found


BLOCKS = blocks()
MODULES = [block for block in BLOCKS if block.defines_app()]
EXTENDING = next(block for block in MODULES if block.page == "docs/extending.md")


def _param(block: Block, known: dict[tuple[str, int], str]) -> Any:
    reason = known.get(block.key)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(block, id=block.name, marks=marks)


def test_the_examples_are_found() -> None:
    names = {block.name for block in BLOCKS}
    assert {"README.md[0]", EXTENDING.name} <= names
    assert {f"{page}[{index}]" for page, index in {**NOT_CODE, **NOT_ALONE}} <= names


@pytest.mark.parametrize("block", [_param(block, NOT_CODE) for block in BLOCKS])
def test_every_block_compiles(block: Block) -> None:
    if block.is_session:
        examples = doctest.DocTestParser().get_examples(block.source)
        assert examples, f"{block.name} looks like a session but holds no >>> line"
        for example in examples:
            compile(example.source, block.name, "single")
    else:
        compile(block.source, block.name, "exec")


# The modules, served


@dataclass
class Served:
    """One module of the docs, served by uvicorn in a process of its own."""

    block: Block
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-3000:]


def environment(directory: Path) -> dict[str, str]:
    """The variables of docs/configuration.md, and JWT_SECRET, which the pages that use a
    middleware alone read with os.environ; nothing else of this process's WSGATE_*."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith("WSGATE_") and name != "PROMETHEUS_MULTIPROC_DIR"
    }
    return environ | {
        "WSGATE_JWT_SECRET": SECRET,
        "WSGATE_ALLOWED_ORIGINS": ORIGIN,
        "JWT_SECRET": SECRET,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(directory), environ.get("PYTHONPATH")])),
    }


def serve(block: Block, directory: Path, environ: dict[str, str], logs: list[IO[bytes]]) -> Served:
    (directory / f"{block.module}.py").write_text(block.source, encoding="utf-8")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # requests queue here until uvicorn is ready: no polling needed
    log = directory / f"{block.module}.log"
    output = log.open("wb")
    logs.append(output)
    command = [sys.executable, "-m", "uvicorn", f"{block.module}:app"]
    process = subprocess.Popen(
        [*command, "--fd", str(sock.fileno()), "--log-level", "warning"],
        cwd=directory,
        env=environ,
        pass_fds=[sock.fileno()],
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    port = sock.getsockname()[1]
    sock.close()  # the server holds it now; if it dies, queued requests are reset
    return Served(block, process, port, log)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Ask every process to stop at once, then wait for each, killing the ones that hang."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, int], Served]]:
    """Every module of the docs, all started at once and stopped at the end."""
    directory = tmp_path_factory.mktemp("docs-examples")
    environ = environment(directory)
    running: dict[tuple[str, int], Served] = {}
    logs: list[IO[bytes]] = []
    try:
        for block in MODULES:
            running[block.key] = serve(block, directory, environ, logs)
        yield running
    finally:
        stop([server.process for server in running.values()])
        for output in logs:
            output.close()


@pytest.mark.parametrize("block", [_param(block, NOT_ALONE) for block in MODULES])
def test_every_module_serves_as_it_stands(
    block: Block, served: dict[tuple[str, int], Served]
) -> None:
    server = served[block.key]
    try:
        with httpx.Client(timeout=STARTUP_SECONDS, trust_env=False) as http:
            response = http.get(f"{server.url}/")
    except httpx.TransportError as exc:
        server.process.poll()
        raise AssertionError(
            f"{block.name} did not answer ({exc!r}); uvicorn exited with "
            f"{server.process.returncode} and said:\n{server.output()}"
        ) from None
    assert response.status_code < 500, f"{block.name}: GET / -> {response.status_code}"
    assert server.process.poll() is None, server.output()


# What docs/extending.md says a client sees


@pytest.fixture(scope="module")
def chat(served: dict[tuple[str, int], Served]) -> Served:
    server = served[EXTENDING.key]
    with httpx.Client(timeout=STARTUP_SECONDS, trust_env=False) as http:
        http.get(f"{server.url}/ws/config").raise_for_status()
    return server


def connect(chat: Served, sub: str, **options: Any) -> WSClient:
    return WSClient(chat.ws("/ws/chat"), origin=ORIGIN, token=tokens.valid(sub), **options)


async def health(chat: Served) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=chat.url, trust_env=False) as http:
        response = await http.get("/ws/secure/health")
    metrics: dict[str, Any] = response.json()["metrics"]
    return metrics


@pytest.mark.anyio
async def test_extending_a_bad_bot_is_refused_with_the_apps_own_row_and_counted(
    chat: Served,
) -> None:
    before = await health(chat)
    with pytest.raises(HandshakeRejected) as refused:
        await connect(chat, "bot-runner", headers={"User-Agent": "badbot/1.0"}).connect()
    assert (refused.value.status, refused.value.json()) == (403, {"error": "blocked"})
    after = await health(chat)
    refusals = after["connections_refused"].get("blocked", 0)
    assert refusals - before["connections_refused"].get("blocked", 0) == 1
    assert after["connections_opened"] == before["connections_opened"]


@pytest.mark.anyio
async def test_extending_echo_and_whoami(chat: Served) -> None:
    async with connect(chat, "ann", headers={"User-Agent": "goodbot/1.0"}) as ws:
        await ws.send_json({"type": "echo", "payload": "hi"})
        assert await ws.receive_json() == {"type": "echo", "payload": "hi"}
        await ws.send_json({"type": "whoami"})
        assert await ws.receive_json() == {"type": "whoami", "payload": {"user": "ann"}}


@pytest.mark.anyio
async def test_extending_spam_gets_the_apps_own_error_frame_and_the_connection_stays(
    chat: Served,
) -> None:
    before = await health(chat)
    async with connect(chat, "bea") as ws:
        await ws.send_json({"type": "echo", "payload": "buy spam"})
        await ws.send_json({"type": "echo", "payload": "still here"})
        assert await ws.receive_json() == {
            "type": "error",
            "error": {"code": "spam", "message": "Messages about spam are not accepted."},
        }
        assert await ws.receive_json() == {"type": "echo", "payload": "still here"}
        assert ws.state == "open"
    after = await health(chat)
    errors = after["message_errors"].get("spam", 0) - before["message_errors"].get("spam", 0)
    assert errors == 1


@pytest.mark.anyio
async def test_extending_the_rows_and_the_checks_are_in_ws_config(chat: Served) -> None:
    async with httpx.AsyncClient(base_url=chat.url, trust_env=False) as http:
        document = (await http.get("/ws/config")).json()
    blocked = [row for row in document["close_codes"] if row["reason"] == "blocked"]
    assert [(row["code"], row["http_status"]) for row in blocked] == [(4403, 403)]
    assert [error["code"] for error in document["errors"] if error["code"] == "spam"] == ["spam"]
    assert [(check["name"], check["stage"]) for check in document["checks"]] == [
        ("BlockBadBots", "before_auth"),
        ("NoSpam", "before_auth"),
    ]
    assert document["checks"][0]["blocks"] == "User-Agent containing 'badbot'"
    assert [endpoint["path"] for endpoint in document["endpoints"]] == ["/ws/chat"]
