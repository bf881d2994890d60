"""The example app's browser side over HTTP, and wsgate.js against the close-code table.

These run without a browser (and with WSGATE_SKIP_BROWSER=1); test_page.py drives the page.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

import wsgate
from examples.web import DEMO_TOKEN_TTL, web_routes
from tests.conftest import SECRET, example_config
from wsgate import CLOSE_CODES, Environment, InvalidToken, JWTVerifier, TokenExpired
from wsgate.testing import LiveServer

pytestmark = pytest.mark.anyio

WSGATE_JS = Path(wsgate.__file__).parent / "static" / "wsgate.js"
_ROW = re.compile(r'^  (\w+): \{ code: (\d+), retry: "(\w+)", hint: "[^"]+" \},$', re.MULTILINE)


def js_close_codes(path: Path = WSGATE_JS) -> dict[str, tuple[int, str]]:
    """The rows of ``CLOSE_CODES`` in wsgate.js: reason -> (code, retry)."""
    text = path.read_text(encoding="utf-8")
    start = text.index("export const CLOSE_CODES = Object.freeze({")
    table = text[start : text.index("});", start)]
    return {reason: (int(code), retry) for reason, code, retry in _ROW.findall(table)}


def test_wsgate_js_lists_every_close_code_with_the_same_code() -> None:
    rows = js_close_codes()
    expected = {row.reason: row.close_code for row in CLOSE_CODES}
    missing = [reason for reason in expected if reason not in rows]
    wrong = {
        reason: (rows[reason][0], code)
        for reason, code in expected.items()
        if reason in rows and rows[reason][0] != code
    }
    stale = [reason for reason in rows if reason not in expected]
    drift = {"add": missing, "fix (js, python)": wrong, "remove": stale}
    assert drift == {"add": [], "fix (js, python)": {}, "remove": []}, (
        "wsgate/static/wsgate.js has drifted from wsgate.CLOSE_CODES. Each row of its "
        'CLOSE_CODES reads `  reason: { code: N, retry: "backoff" | "never", hint: "..." },`.'
    )


def test_wsgate_js_reconnect_policy() -> None:
    rows = js_close_codes()
    assert all(retry in ("backoff", "never") for _, retry in rows.values())
    # Auth refusals and the connection limit need the person (or the app) to act first.
    for reason, (code, retry) in rows.items():
        if code in (1008, 4008, 1002):
            assert retry == "never", reason
        if code in (1013, 4000, 1011):
            assert retry == "backoff", reason


async def test_page_and_scripts_are_served(dev_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=dev_server.url) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src" not in csp  # default-src 'self': no inline or foreign scripts
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert '<script type="module" src="/static/demo.js">' in page.text
        for url in ("/wsgate.js", "/static/demo.js"):
            script = await client.get(url)
            assert script.status_code == 200
            assert "javascript" in script.headers["content-type"]
        assert (await client.get("/wsgate.js")).content == WSGATE_JS.read_bytes()
        assert (await client.get("/static/style.css")).status_code == 200
        assert (await client.get("/static/missing.js")).status_code == 404


async def test_demo_token_endpoint_mints_tokens_for_the_gate(dev_server: LiveServer) -> None:
    verifier = JWTVerifier(algorithms=["HS256"], secret=SECRET)
    async with httpx.AsyncClient(base_url=dev_server.url) as client:
        valid = await client.post("/demo/token", json={"user": "alice", "kind": "valid"})
        expired = await client.post("/demo/token", json={"user": "alice", "kind": "expired"})
        invalid = await client.post("/demo/token", json={"user": "alice", "kind": "invalid"})
    assert valid.status_code == 200
    assert valid.headers["cache-control"] == "no-store"
    body = valid.json()
    assert body["user"] == "alice"
    assert body["expires_in"] == DEMO_TOKEN_TTL
    identity = await verifier.verify(body["token"])
    assert identity.subject == "alice"
    with pytest.raises(TokenExpired):
        await verifier.verify(expired.json()["token"])
    with pytest.raises(InvalidToken):
        await verifier.verify(invalid.json()["token"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"user": "a b"}, '"user" must be 1 to 64 letters'),
        ({"user": "x" * 65}, '"user" must be 1 to 64 letters'),
        ({"kind": "admin"}, '"kind" must be one of valid, expired, invalid'),
        (["alice"], "Send a JSON object"),
    ],
)
async def test_demo_token_endpoint_says_what_is_wrong(
    dev_server: LiveServer, body: object, message: str
) -> None:
    async with httpx.AsyncClient(base_url=dev_server.url) as client:
        response = await client.post("/demo/token", json=body)
        not_json = await client.post(
            "/demo/token", content=b"{", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not_json.status_code == 400


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""]
)
async def test_demo_token_endpoint_takes_only_json(
    dev_server: LiveServer, content_type: str
) -> None:
    # What a cross-site page can POST without a CORS preflight: a "simple" request.
    body = b'{"user": "alice", "kind": "valid"}'
    async with httpx.AsyncClient(base_url=dev_server.url) as client:
        response = await client.post(
            "/demo/token",
            content=body,
            headers={"content-type": content_type, "origin": "https://evil.example"},
        )
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]
    assert "token" not in response.json()


async def test_production_has_no_token_endpoint(prod_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=prod_server.url) as client:
        assert (await client.post("/demo/token", json={"user": "alice"})).status_code == 404
        assert (await client.get("/demo/token")).status_code == 404
        assert (await client.get("/")).status_code == 200  # the page is harmless without it


async def test_demo_token_endpoint_without_a_secret_says_what_to_set() -> None:
    config = example_config(Environment.DEVELOPMENT, jwt_secret=None, dev_bypass=True)
    with LiveServer(Starlette(routes=web_routes(config))) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.post("/demo/token", json={"user": "alice"})
    assert response.status_code == 503
    assert "WSGATE_JWT_SECRET" in response.json()["error"]
