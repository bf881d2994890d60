"""wsgate.js as users get it: served by ``js_route()``, and under Node's own test runner."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

import wsgate
from wsgate import ConfigurationError, js_route
from wsgate.testing import LiveServer

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
WSGATE_JS = Path(wsgate.__file__).parent / "static" / "wsgate.js"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    app = Starlette(routes=[js_route(), js_route("/assets/ws.js", max_age=3600)])
    with LiveServer(app) as live:
        yield live


async def test_serves_the_packaged_file_as_javascript(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/wsgate.js")
        head = await client.head("/wsgate.js")
    assert response.status_code == 200
    assert response.content == WSGATE_JS.read_bytes()
    assert b"export function openSocket(" in response.content
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["access-control-allow-origin"] == "*"
    # The URL stays the same across wsgate versions: browsers ask again each time.
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"].startswith('"')
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == response.headers["etag"]


async def test_an_unchanged_file_is_not_sent_again(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        etag = (await client.get("/wsgate.js")).headers["etag"]
        answers = {
            value: await client.get("/wsgate.js", headers={"If-None-Match": value})
            for value in (etag, f"W/{etag}", f'"other", {etag}', "*", '"other"')
        }
    for value in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        assert answers[value].status_code == 304, value
        assert answers[value].content == b""
        assert answers[value].headers["etag"] == etag
        assert answers[value].headers["cache-control"] == "no-cache"
        assert "content-type" not in answers[value].headers
    assert answers['"other"'].status_code == 200
    assert answers['"other"'].content == WSGATE_JS.read_bytes()


async def test_path_and_max_age(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/assets/ws.js")
        post = await client.post("/wsgate.js")
    assert response.status_code == 200
    assert response.content == WSGATE_JS.read_bytes()
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert post.status_code == 405


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"path": "wsgate.js"}, "path must be a URL path starting with '/', not 'wsgate.js'."),
        ({"max_age": -1}, "max_age must be a whole number of seconds >= 0, not -1."),
        ({"max_age": 1.5}, "max_age must be a whole number of seconds >= 0, not 1.5."),
        ({"max_age": True}, "max_age must be a whole number of seconds >= 0, not True."),
    ],
)
def test_bad_options_say_what_is_valid(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        js_route(**options)  # type: ignore[arg-type]
    assert str(error.value) == message


def test_wsgate_js_under_node_test_runner() -> None:
    """js/test/wsgate.test.mjs under ``node --test``, on the module js/build.mjs builds.

    Skipped without Node.js, except in CI (CI=1), where a missing node fails.
    """
    node = shutil.which("node")
    if node is None:
        reason = "the wsgate.js tests need Node.js 18 or later (apt-get install nodejs)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    js = ROOT / "js"
    build = subprocess.run(
        [node, "build.mjs"], cwd=js, capture_output=True, text=True, timeout=60, check=False
    )
    assert build.returncode == 0, build.stderr
    tests = subprocess.run(
        [node, "--test", "test/wsgate.test.mjs"],
        cwd=js,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "# fail 0" in tests.stdout
