"""The example app's settings contract, exercised as operators use it: `uvicorn
examples.app:app` in its own process, configured only through WSGATE_* variables."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.auth.idp import JWKS_PATH, IdP
from tests.processes import stop_process
from wsgate.testing import HandshakeRejected, LiveServer, TokenFactory, WSClient

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
ORIGIN = "https://chat.example.com"


@contextmanager
def example_app(env: dict[str, str]) -> Iterator[str]:
    """Serve the example app with uvicorn in a subprocess; yield its ws:// base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue here until uvicorn is ready: no polling needed
    port = sock.getsockname()[1]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")} | env
    database = tempfile.mkdtemp(prefix="wsgate-example-")
    environ.setdefault("WSGATE_DATABASE_URL", f"sqlite+aiosqlite:///{database}/chat.sqlite3")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.app:app", "--fd", str(sock.fileno())],
        cwd=ROOT,
        env=environ,
        pass_fds=[sock.fileno()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    sock.close()
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        stop_process(process)
        assert process.stderr is not None
        process.stderr.close()
        shutil.rmtree(database, ignore_errors=True)


@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = tmp_path_factory.mktemp("keys") / "public.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


async def test_production_with_an_rsa_public_key_file(rsa_keys: tuple[str, Path]) -> None:
    private, public = rsa_keys
    env = {
        "WSGATE_ENV": "production",
        "WSGATE_JWT_PUBLIC_KEY": str(public),
        "WSGATE_JWT_ALGORITHMS": "RS256",
        "WSGATE_JWT_AUDIENCE": "chat",
        "WSGATE_JWT_ISSUER": "https://auth.example.com",
        "WSGATE_ALLOWED_ORIGINS": ORIGIN,
    }
    tokens = TokenFactory(
        algorithm="RS256", private_key=private, audience="chat", issuer="https://auth.example.com"
    )
    with example_app(env) as base:
        async with WSClient(
            f"{base}/ws/secure", origin=ORIGIN, token=tokens.valid("erin"), open_timeout=30
        ) as ws:
            await ws.send_json({"type": "whoami"})
            assert (await ws.receive_json())["payload"] == {"user": "erin", "dev": False}
        async with WSClient(f"{base}/ws", origin=ORIGIN, token=tokens.wrong_issuer("erin")) as ws:
            assert await ws.wait_closed() == (1008, "invalid_token")
        # WSGATE_ALLOW_MISSING_ORIGIN is off unless set: a client without Origin is refused.
        client = WSClient(f"{base}/ws", token=tokens.valid("erin"))
        with pytest.raises(HandshakeRejected) as refused:
            await client.connect()
        assert refused.value.status == 403


async def test_the_auth_service_decides_when_wsgate_auth_url_is_set() -> None:
    seen: list[str] = []

    async def introspect(request: Request) -> JSONResponse:
        form = parse_qs((await request.body()).decode())
        assert form["token_type_hint"] == ["access_token"]
        token = form["token"][0]
        seen.append(token)
        if token == "good-token":
            return JSONResponse({"active": True, "sub": "frank", "scope": "chat:read"})
        return JSONResponse({"active": False})

    service = Starlette(routes=[Route("/introspect", introspect, methods=["POST"])])
    with LiveServer(service) as auth:
        env = {
            "WSGATE_ENV": "production",
            "WSGATE_AUTH_URL": f"{auth.url}/introspect",
            "WSGATE_ALLOW_MISSING_ORIGIN": "true",
        }
        with example_app(env) as base:
            async with WSClient(f"{base}/ws", token="good-token", open_timeout=30) as ws:
                await ws.send_json({"type": "whoami"})
                assert (await ws.receive_json())["payload"] == {"user": "frank", "dev": False}
            async with WSClient(f"{base}/ws", token="revoked-token") as ws:
                assert await ws.wait_closed() == (1008, "invalid_token")
    assert seen == ["good-token", "revoked-token"]


async def test_production_with_the_identity_providers_jwks_url() -> None:
    idp = IdP({"k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)})
    idp.publish("k1")
    with LiveServer(idp.app) as provider:
        env = {
            "WSGATE_ENV": "production",
            "WSGATE_JWT_JWKS_URL": f"{provider.url}{JWKS_PATH}",  # http:// on loopback
            "WSGATE_JWT_ALGORITHMS": "RS256",
            "WSGATE_ALLOW_MISSING_ORIGIN": "true",
        }
        with example_app(env) as base:
            async with WSClient(f"{base}/ws", token=idp.token("k1", "gina"), open_timeout=30) as ws:
                await ws.send_json({"type": "whoami"})
                assert (await ws.receive_json())["payload"] == {"user": "gina", "dev": False}
            async with WSClient(f"{base}/ws", token=idp.token("k2", signed_by="k1")) as ws:
                assert await ws.wait_closed() == (1008, "invalid_token")
    assert idp.requests == 1


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "WSGATE_ALLOWED_ORIGIN",
            ORIGIN,
            "WSGATE_ALLOWED_ORIGIN is not a wsgate setting; did you mean WSGATE_ALLOWED_ORIGINS?",
        ),
        ("WSGATE_RATE_LIMIT", "0/minute", "rate_limit '0/minute' lets no message through"),
        ("WSGATE_JWT_JWKS_URL", "http://auth.example.com/jwks", "is http:// in production"),
    ],
)
def test_a_configuration_mistake_stops_the_app_at_start_up(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
    environ |= {
        "WSGATE_ENV": "production",
        "WSGATE_JWT_SECRET": "a-secret-of-at-least-thirty-two-bytes-000000",
        "WSGATE_ALLOW_MISSING_ORIGIN": "true",
        "WSGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/chat.sqlite3",
        variable: value,
    }
    if variable == "WSGATE_JWT_JWKS_URL":
        del environ["WSGATE_JWT_SECRET"]
        environ["WSGATE_JWT_ALGORITHMS"] = "RS256"
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "examples.app:app", "--port", "0"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "ConfigurationError" in result.stderr
    assert message in result.stderr
