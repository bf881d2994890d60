"""The demo page in a real headless Chromium, against the example app on real sockets.

Everything is asserted from what the page shows: the browser, not Python, speaks WebSocket
here, with its own handshake, its own Origin header and its own view of close codes.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import pytest

from tests.browser.conftest import ARTIFACTS, SKIP_VARIABLE, Tab

if os.environ.get(SKIP_VARIABLE) == "1":
    pytest.skip(f"{SKIP_VARIABLE}=1: the real-browser tests are off", allow_module_level=True)

from playwright.sync_api import expect
from starlette.applications import Starlette

from examples.app import create_app
from examples.web import web_routes
from tests.conftest import database_url, example_config
from wsgate import CLOSE_CODES, Environment, GateConfig, encode_subprotocol
from wsgate.testing import LiveServer, TokenFactory

OpenTab = Callable[[str], Tab]

HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = 4.0
RATE_LIMIT = "20/minute"


def _config(port: int) -> GateConfig:
    return example_config(
        Environment.DEVELOPMENT,
        allowed_origins=(f"http://127.0.0.1:{port}",),  # the page's own origin, nothing else
        allow_missing_origin=False,
        rate_limit=RATE_LIMIT,
        heartbeat_interval=HEARTBEAT_INTERVAL,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
    )


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The example app in development mode; only its own origin may open sockets.

    The allowed origin names the port, so the port is chosen first; should another process
    take it before the server binds it, the next one is tried.
    """
    for _ in range(5):
        port = _unused_port()
        config = _config(port)
        app = create_app(config, database_url=database_url(tmp_path_factory))
        server = LiveServer(app, port=port, ws_max_size=config.server_max_size)
        try:
            server.start()
        except OSError:
            continue
        try:
            yield server
        finally:
            server.stop()
        return
    raise RuntimeError("no port could be bound for the example app")


@pytest.fixture(scope="module")
def other_site(app_server: LiveServer) -> Iterator[LiveServer]:
    """The same page and token endpoint on another port: an origin the app does not allow."""
    with LiveServer(Starlette(routes=web_routes(_config(app_server.port)))) as server:
        yield server


def page_url(site: LiveServer, **params: str) -> str:
    """The demo page on ``site``, its form filled from ``params``."""
    return f"{site.url}/?{urlencode(params)}"


def test_page_connects_with_the_token_and_chats(app_server: LiveServer, open_tab: OpenTab) -> None:
    alice = open_tab(page_url(app_server, user="alice-chat", room="browser"))
    bob = open_tab(page_url(app_server, user="bob-chat", room="browser"))
    for tab, user in ((alice, "alice-chat"), (bob, "bob-chat")):
        expect(tab.page.locator("#state")).to_have_text("open")
        # The server chose the application subprotocol, never the token entry.
        expect(tab.page.locator("#subprotocol")).to_have_text("chat")
        expect(tab.page.locator("#whoami")).to_have_text(user)  # verified, not the bypass
        expect(tab.page.locator("#token-status")).to_have_text(f"valid token for {user}")
        # The token travelled in Sec-WebSocket-Protocol, not in the URL.
        assert tab.sockets == [app_server.ws("/ws")]

    alice.page.fill("#message", "hello bob")
    alice.page.click("#send")
    expect(bob.page.locator("#messages li")).to_have_text(["alice-chat: hello bob"])
    bob.page.fill("#message", "hi alice <b>not bold</b>")
    bob.page.click("#send")
    expect(alice.page.locator("#messages li")).to_have_text(
        ["alice-chat: hello bob", "bob-chat: hi alice <b>not bold</b>"]
    )
    expect(alice.page.locator("#messages b")).to_have_count(2)  # only the names: text is text
    expect(alice.page.locator("#closes li")).to_have_count(0)
    expect(alice.page.locator("#errors li")).to_have_count(0)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    alice.page.screenshot(path=ARTIFACTS / "chat.png", full_page=True)


def test_page_from_another_origin_is_refused(
    app_server: LiveServer, other_site: LiveServer, open_tab: OpenTab
) -> None:
    tab = open_tab(page_url(other_site, user="mallory", server=app_server.url))
    # Refused with HTTP 403 in the handshake: all JavaScript learns is 1006, no reason.
    expect(tab.page.locator("#closes li").first).to_have_attribute("data-code", "1006")
    expect(tab.page.locator("#closes li").first).to_have_attribute("data-reason", "")
    assert tab.sockets[0] == app_server.ws("/ws")
    assert tab.text("subprotocol") == ""
    assert tab.text("whoami") == ""
    # 1006 may be a network failure, so the page retries, with backoff.
    expect(tab.page.locator("#state")).not_to_have_text("open")
    expect(tab.page.locator("#reconnect")).to_contain_text("reconnecting in")


@pytest.mark.parametrize(
    ("kind", "reason"), [("invalid", "invalid_token"), ("expired", "token_expired")]
)
def test_refused_token_closes_1008_with_the_reason(
    app_server: LiveServer, open_tab: OpenTab, kind: str, reason: str
) -> None:
    tab = open_tab(page_url(app_server, user=f"user-{kind}", kind=kind))
    first_close = tab.page.locator("#closes li").first
    expect(first_close).to_have_attribute("data-code", "1008")
    expect(first_close).to_have_attribute("data-reason", reason)
    # The handshake completed with the application subprotocol, so the reason got through;
    # the page does not reconnect after an auth refusal.
    expect(tab.page.locator("#state")).to_have_text("stopped")
    expect(tab.page.locator("#reconnect")).to_contain_text("not reconnecting")
    assert tab.text("attempts") == "1"
    assert tab.text("whoami") == ""


def test_fourth_tab_evicts_the_oldest_which_does_not_reconnect(
    app_server: LiveServer, open_tab: OpenTab
) -> None:
    tabs = []
    for _ in range(4):
        tab = open_tab(page_url(app_server, user="dave", room="tabs"))
        expect(tab.page.locator("#state")).to_have_text("open")
        tabs.append(tab)
    oldest = tabs[0]
    expect(oldest.page.locator("#closes li")).to_have_count(1)
    expect(oldest.page.locator("#closes li")).to_have_attribute("data-code", "4008")
    expect(oldest.page.locator("#closes li")).to_have_attribute("data-reason", "connection_limit")
    expect(oldest.page.locator("#state")).to_have_text("stopped")
    expect(oldest.page.locator("#reconnect")).to_contain_text("not reconnecting")
    # No reconnect loop: a retry would come within a second (the first backoff is <= 0.5 s).
    oldest.page.wait_for_timeout(3000)
    assert oldest.text("attempts") == "1"
    assert oldest.text("state") == "stopped"
    for tab in tabs[1:]:
        assert tab.text("state") == "open"
        expect(tab.page.locator("#closes li")).to_have_count(0)


def test_heartbeats_answered_by_the_page_keep_it_open(
    app_server: LiveServer, open_tab: OpenTab
) -> None:
    answering = open_tab(page_url(app_server, user="hb-answering"))
    silent = open_tab(page_url(app_server, user="hb-silent", pong="0"))
    expect(answering.page.locator("#state")).to_have_text("open")
    # Six answered pings take six intervals: past the interval plus the timeout within which
    # an unanswered ping closes the connection.
    pings = int((HEARTBEAT_INTERVAL + HEARTBEAT_TIMEOUT) / HEARTBEAT_INTERVAL) + 1
    answering.wait_until("(n) => Number(document.getElementById('pings').textContent) >= n", pings)
    assert answering.text("state") == "open"
    expect(answering.page.locator("#closes li")).to_have_count(0)
    assert answering.text("attempts") == "1"

    # The page that does not answer is closed with 4000 and reconnects, with backoff.
    expect(silent.page.locator("#closes li").first).to_have_attribute("data-code", "4000")
    expect(silent.page.locator("#closes li").first).to_have_attribute(
        "data-reason", "heartbeat_timeout"
    )
    silent.wait_until("() => Number(document.getElementById('attempts').textContent) >= 2")


def test_oversize_message_and_flood_get_error_frames_and_the_page_stays_open(
    app_server: LiveServer, open_tab: OpenTab
) -> None:
    tab = open_tab(page_url(app_server, user="frank", room="noisy"))
    expect(tab.page.locator("#state")).to_have_text("open")

    tab.page.fill("#message", "x" * 9000)  # over the 8192-byte limit, under the server's cap
    tab.page.click("#send")
    expect(tab.page.locator("#errors li[data-code=message_too_large]")).to_have_count(1)
    tab.page.fill("#message", "still here")
    tab.page.click("#send")
    expect(tab.page.locator("#messages li")).to_have_text(["frank: still here"])

    tab.page.click("#flood")  # 40 messages at once, over 20 a minute
    rate_limited = tab.page.locator("#errors li[data-code=rate_limited]")
    expect(rate_limited.first).to_be_visible()
    expect(rate_limited.first).to_contain_text("retry after")
    # Still open: no close, and the gate keeps pinging a page that keeps answering.
    answered = int(tab.text("pings"))
    tab.wait_until("(n) => Number(document.getElementById('pings').textContent) > n", answered)
    assert tab.text("state") == "open"
    expect(tab.page.locator("#closes li")).to_have_count(0)


def test_mcp_call_and_its_result(app_server: LiveServer, open_tab: OpenTab) -> None:
    tab = open_tab(page_url(app_server, user="mcp-user", connect="0"))
    tab.page.fill("#mcp-text", "echo from Chromium")
    tab.page.click("#mcp-call")
    expect(tab.page.locator("#mcp-result")).to_have_text("echo from Chromium")
    expect(tab.page.locator("#mcp-protocol")).to_have_text("mcp")
    expect(tab.page.locator("#mcp-state")).to_have_text("closed 1000 done")
    expect(tab.page.locator("#mcp-error")).to_have_text("")
    assert '"jsonrpc": "2.0"' in tab.text("mcp-response")
    assert tab.sockets == [app_server.ws("/ws/mcp")]


def test_wsgate_js_agrees_with_the_server(app_server: LiveServer, open_tab: OpenTab) -> None:
    tab = open_tab(page_url(app_server, connect="0"))
    token = TokenFactory().valid("someone")
    result = tab.page.evaluate(
        """async (token) => {
            const wsgate = await import("/wsgate.js");
            const info = (code, reason) => wsgate.closeInfo({ code, reason }).retry;
            let alone = null;
            try { wsgate.socketProtocols(token, []); } catch (error) { alone = error.message; }
            return {
                entry: wsgate.tokenProtocol(token),
                protocols: wsgate.socketProtocols(token, ["chat"]),
                alone,
                codes: Object.fromEntries(
                    Object.entries(wsgate.CLOSE_CODES).map(([reason, row]) => [reason, row.code])
                ),
                retry: {
                    connection_limit: info(4008, "connection_limit"),
                    token_expired: info(1008, "token_expired"),
                    auth_required: info(1008, "auth_required"),
                    auth_unavailable: info(1013, "auth_unavailable"),
                    heartbeat_timeout: info(4000, "heartbeat_timeout"),
                    restart: info(1012, ""),
                    refused_handshake: info(1006, ""),
                    normal: info(1000, ""),
                    unknown: info(4999, "whatever"),
                },
            };
        }""",
        token,
    )
    assert result["entry"] == encode_subprotocol(token)
    assert result["protocols"] == ["chat", encode_subprotocol(token)]
    assert re.search(r"application subprotocol", result["alone"])
    assert result["codes"] == {row.reason: row.close_code for row in CLOSE_CODES}
    assert result["retry"] == {
        "connection_limit": "never",
        "token_expired": "never",
        "auth_required": "never",
        "auth_unavailable": "backoff",
        "heartbeat_timeout": "backoff",
        "restart": "backoff",
        "refused_handshake": "backoff",
        "normal": "never",
        "unknown": "never",
    }
