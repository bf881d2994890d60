"""`make demo`: serve the example app in development mode, and say how to connect.

Settings already in the environment win; otherwise this picks development defaults: a fresh
random JWT secret, origins of localhost on the chosen port, and clients without an Origin let
in. It needs uvicorn (the `server` extra); the chat history is kept in a SQLite file with
the `examples` extra, which `make demo` installs, and in memory without it.

`--workers N` serves with N uvicorn worker processes (`make demo-redis`). They must share their
limits, so it needs `WSGATE_STORAGE=redis://...` and the `redis` extra.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys

import uvicorn

from examples.app import OWN_VARIABLES
from wsgate import GateConfig, encode_subprotocol
from wsgate._options import redacted_url
from wsgate.testing import TokenFactory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes; more than one needs WSGATE_STORAGE=redis://host:port/db",
    )
    args = parser.parse_args()

    base = f"{args.host}:{args.port}"
    os.environ.setdefault("WSGATE_ENV", "development")
    os.environ.setdefault("WSGATE_JWT_SECRET", secrets.token_urlsafe(48))
    os.environ.setdefault("WSGATE_ALLOWED_ORIGINS", f"http://{base},http://localhost:{args.port}")
    os.environ.setdefault("WSGATE_ALLOW_MISSING_ORIGIN", "true")
    # A misspelt or unparsable setting fails here, by name.
    config = GateConfig.from_env(extra_variables=OWN_VARIABLES)
    storage = redacted_url(config.storage)
    if args.workers < 1:
        parser.error(f"--workers must be 1 or more, not {args.workers}.")
    if args.workers > 1 and config.storage.startswith("memory://"):
        parser.error(
            f"--workers {args.workers} needs a shared storage: with WSGATE_STORAGE={storage} "
            f"each worker keeps its own limits, so a user would get {args.workers} times the "
            "rate and the connections. Set WSGATE_STORAGE=redis://127.0.0.1:6379/0 (and "
            "pip install 'wsgate[redis]'), or run one worker."
        )
    if not config.storage.startswith("memory://"):
        _check_redis(config.storage, storage, config.backend_policy)
    workers = f", {args.workers} workers sharing {storage}" if args.workers > 1 else ""

    token = TokenFactory(
        config.jwt_secret, audience=config.jwt_audience, issuer=config.jwt_issuer, ttl=8 * 3600
    ).valid("alice")
    print(
        f"""
wsgate example app ({config.environment.value}{workers}) on http://{base}

  Open http://{base}/ in a browser: the demo page chats, calls MCP and shows close codes.

  /ws                 JSON chat; without a token you are the dev user (development only)
  /ws/secure          JSON chat; a JWT is always required
  /ws/{{user_id}}       /ws for that user only, e.g. /ws/alice with alice's token
  /ws/mcp             JSON-RPC 2.0 (MCP), subprotocol "mcp"

A token for "alice", valid for 8 hours:

  {token}

Try it from another terminal:

  .venv/bin/python -m examples.client ws://{base}/ws '{{"type": "whoami"}}'
  .venv/bin/python -m examples.client ws://{base}/ws/secure --token {token} \\
      '{{"type": "echo", "payload": "hi"}}'
  .venv/bin/python -m examples.client ws://{base}/ws/secure   # refused: 1008 auth_required

Browsers send the token as a subprotocol next to "chat":
  new WebSocket("ws://{base}/ws/secure", ["chat", "{encode_subprotocol(token)}"])
""",
        flush=True,
    )
    # Show wsgate's refusals ("refused /ws/secure from ...: auth_required") next to uvicorn's.
    logging.basicConfig(level=logging.INFO, format="%(levelname)-9s %(name)s: %(message)s")
    # The server buffers a whole message before the gate sees it: cap it in the protocol layer.
    uvicorn.run(
        "examples.app:app",
        host=args.host,
        port=args.port,
        log_level="info",
        ws_max_size=config.server_max_size,
        workers=args.workers,
    )


def _check_redis(url: str, shown: str, policy: str) -> None:
    """Say so up front when Redis does not answer; the gate's policy then applies."""
    try:
        import redis
    except ImportError:
        sys.exit(f"WSGATE_STORAGE={shown} needs the Redis client: pip install 'wsgate[redis]'.")
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            client.ping()
    except (redis.RedisError, OSError) as exc:
        print(
            f"warning: Redis at {shown} does not answer ({exc}); the gate applies its backend "
            f"policy, {policy}, until it does. Start one with: redis-server --save '' "
            "--appendonly no",
            file=sys.stderr,
            flush=True,
        )


if __name__ == "__main__":
    main()
