"""A command-line client for the example app: send JSON messages, print what comes back.

python -m examples.client ws://127.0.0.1:8000/ws/secure --token TOKEN '{"type": "whoami"}'
"""

from __future__ import annotations

import argparse
import asyncio

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


async def run(url: str, token: str | None, messages: list[str], wait: float) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        async with connect(url, additional_headers=headers) as ws:
            for message in messages:
                await ws.send(message)
                print(">", message)
            while True:
                print("<", await asyncio.wait_for(ws.recv(), wait))
    except TimeoutError:
        return 0  # nothing more to read
    except ConnectionClosed as closed:
        frame = closed.rcvd
        print(
            "closed by the server:", f"{frame.code} {frame.reason}" if frame else "no close frame"
        )
    except InvalidStatus as refused:
        print(f"handshake refused: HTTP {refused.response.status_code} {refused.response.body!r}")
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description="Talk to the wsgate example app.")
    parser.add_argument("url")
    parser.add_argument("messages", nargs="*", default=['{"type": "whoami"}'])
    parser.add_argument("--token", help="a JWT, sent as Authorization: Bearer")
    parser.add_argument("--wait", type=float, default=1.0, help="seconds to wait for replies")
    args = parser.parse_intermixed_args()
    raise SystemExit(asyncio.run(run(args.url, args.token, args.messages, args.wait)))


if __name__ == "__main__":
    main()
