"""A real identity provider's JWKS endpoint on 127.0.0.1, which tests rotate, slow and break."""

from __future__ import annotations

import base64
import gzip
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jose import jwk
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

JWKS_PATH = "/.well-known/jwks.json"
MiB = 1024 * 1024


def public_jwk(key: rsa.RSAPrivateKey, kid: str | None) -> dict[str, Any]:
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    entry: dict[str, Any] = {**jwk.construct(public, "RS256").to_dict(), "use": "sig"}
    if kid is not None:
        entry["kid"] = kid
    return entry


class IdP:
    """The JWKS endpoint of an identity provider, as a Starlette app (serve ``.app``).

    It signs tokens with RSA keys named by ``kid``, publishes the public half of the ones
    :meth:`publish` names, and answers the way :attr:`mode` says: ``"good"``, or a fault. It
    counts the requests it receives.

    Args:
        keys: The private keys it can sign with, by kid.
    """

    def __init__(self, keys: dict[str, rsa.RSAPrivateKey]) -> None:
        self.keys = keys
        self.published: list[str] = []
        self.mode = "good"
        self.cache_control: str | None = None
        self.requests = 0
        self.release = threading.Event()
        """Set to let the answers held back by mode "slow" go."""
        self.app = Starlette(routes=[Route(JWKS_PATH, self.jwks)])

    def reset(self) -> None:
        self.published = []
        self.mode = "good"
        self.cache_control = None
        self.requests = 0
        self.release = threading.Event()

    def publish(self, *kids: str) -> None:
        """Publish the public keys of ``kids``, and only those."""
        self.published = list(kids)

    def token(self, kid: str | None, sub: str = "user-1", *, signed_by: str | None = None) -> str:
        """A valid RS256 token with header ``kid``, signed by the key ``signed_by`` (or kid's).

        Signed here with the loaded key: python-jose would parse the PEM for every token.
        """
        header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
        if kid is not None:
            header["kid"] = kid
        now = int(time.time())
        claims = {"sub": sub, "iat": now, "exp": now + 300}
        signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}".encode()
        key = self.keys[signed_by or kid or ""]
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{_b64(signature)}"

    def document(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.keys[kid], kid) for kid in self.published]}

    async def jwks(self, request: Request) -> Response:
        self.requests += 1
        mode = self.mode
        headers = {} if self.cache_control is None else {"Cache-Control": self.cache_control}
        if mode == "slow":
            # The fault under test: an endpoint slower than the verifier waits.
            await anyio.to_thread.run_sync(self.release.wait, 10)
        if mode in ("good", "slow"):
            return Response(orjson.dumps(self.document()), 200, headers, "application/json")
        if mode == "huge":
            body = b" " * (2 * MiB) + orjson.dumps(self.document())
            return Response(body, 200, headers, "application/json")
        if mode == "huge_streamed":  # no Content-Length: the size shows only while reading
            return StreamingResponse(_endless(), 200, headers, "application/json")
        if mode == "gzip":
            body = gzip.compress(orjson.dumps(self.document()) + b" " * (10 * MiB))
            headers["Content-Encoding"] = "gzip"
            return Response(body, 200, headers, "application/json")
        if mode == "redirect":
            return RedirectResponse("/elsewhere", 302)
        if mode == "many_keys":
            entry = public_jwk(self.keys[self.published[0]], None)
            document = {"keys": [{**entry, "kid": f"k{n}"} for n in range(101)]}
            return Response(orjson.dumps(document), 200, headers, "application/json")
        answers = {
            "error": Response(b"boom", 500, media_type="text/plain"),
            "html": Response(orjson.dumps(self.document()), 200, media_type="text/html"),
            "not_json": Response(b"{'keys': [", 200, media_type="application/json"),
            "json_list": Response(b"[]", 200, media_type="application/json"),
            "not_jwks": Response(b'{"keys": "none"}', 200, media_type="application/json"),
            "bad_key": Response(
                orjson.dumps({"keys": [{"kty": "RSA", "kid": "k1", "n": "!!", "e": "AQAB"}]}),
                200,
                media_type="application/json",
            ),
            "deep": Response(
                b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                200,
                media_type="application/json",
            ),
        }
        return answers[mode]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


async def _endless() -> AsyncIterator[bytes]:
    yield b'{"keys": ['
    chunk = b" " * 65536
    for _ in range(64):  # 4 MiB, then it ends: a test must not hang on it
        yield chunk
