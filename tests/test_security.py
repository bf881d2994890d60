"""Claims of the security page (docs/security.md) that no other test proves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from wsgate import Environment, Gate, GateConfig, GatedEndpoint
from wsgate.testing import LiveServer, WSClient

pytestmark = pytest.mark.anyio


class Echo(GatedEndpoint):
    async def on_message(self, websocket: WebSocket, message: dict[str, Any]) -> Any:
        return {"type": "echo", "payload": len(message.get("payload") or "")}


async def test_a_compression_bomb_is_cut_off_at_the_server_cap() -> None:
    # 16 MB of one letter is 16 KB compressed. The server's cap counts the message after
    # decompression, and decompresses no further than the cap: the bomb never inflates.
    config = GateConfig(
        environment=Environment.DEVELOPMENT,
        dev_bypass=True,
        allow_missing_origin=True,
        rate_limit=None,
    )
    with LiveServer(Gate(config).wrap(Echo), ws_max_size=config.server_max_size) as server:
        async with connect(server.ws("/"), compression="deflate", max_size=None) as bomber:
            assert bomber.response is not None
            extensions = bomber.response.headers.get("Sec-WebSocket-Extensions") or ""
            assert "permessage-deflate" in extensions
            await bomber.send('{"type": "echo", "payload": "' + "a" * (16 * 2**20) + '"}')
            with pytest.raises(ConnectionClosed) as closed:
                await bomber.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
        # The server is unharmed: the next client is served.
        async with WSClient(server.ws("/")) as ws:
            await ws.send_json({"type": "echo", "payload": "ok"})
            assert (await ws.receive_json())["payload"] == 2


def test_every_test_the_security_page_names_exists() -> None:
    root = Path(__file__).resolve().parent.parent
    page = (root / "docs" / "security.md").read_text(encoding="utf-8")
    named = 0
    path = None
    for reference in re.findall(r"`((?:tests/[\w/]+\.py)?(?:::[\w:]+)?)`", page):
        file, _, name = reference.partition("::")
        path = root / file if file else path
        assert path is not None, reference
        assert path.is_file(), reference
        if name:
            test = name.split("::")[-1]
            assert re.search(rf"def {test}\b", path.read_text(encoding="utf-8")), reference
            named += 1
    assert named >= 40
