"""Write the seed corpus of every fuzz target: ``python -m tests.fuzz.seeds``.

Each seed is spelled in the targets' own input language (:class:`tests.fuzz._input.Input`),
so it starts the fuzzer on a meaningful case: a valid token, an allowed origin, a JSON-RPC
batch. The files are committed; rerun this only to change the seeds. Crash inputs saved by
the runner go into the same directories by hand, and are never overwritten here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


class Seed:
    """Builds bytes that :class:`~tests.fuzz._input.Input` reads back as the given values."""

    def __init__(self) -> None:
        self.data = bytearray()

    def pick(self, index: int) -> Seed:
        self.data += index.to_bytes(2, "big")
        return self

    def flag(self, value: bool) -> Seed:
        self.data.append(1 if value else 0)
        return self

    def byte(self, value: int) -> Seed:
        self.data.append(value)
        return self

    def raw(self, chunk: bytes) -> Seed:
        self.data += len(chunk).to_bytes(2, "big") + chunk
        return self

    def rest(self, chunk: bytes) -> Seed:
        self.data += chunk
        return self


def origin_seeds() -> list[bytes]:
    origins = [
        b"https://app.example.com",
        b"HTTPS://APP.EXAMPLE.COM:443",
        b"https://app.example.com.evil.io",
        b"https://app.example.com@evil.io",
        b"http://app.example.com",
        b"https://app.example.com:8443",
        b"http://localhost:8080",
        b"https://[::1]:8443",
        b"https://x.preview.example.com",
        b"https://x.preview.example.com.evil.io",
        b"null",
        b"https://app.example.com/",
        b"https://app.example.com:00443",
    ]
    seeds = [bytes(Seed().pick(0).flag(True).raw(origin).pick(0).data) for origin in origins]
    seeds.append(bytes(Seed().pick(3).pick(0).data))  # no Origin header
    two = Seed().pick(4).flag(True).raw(origins[0]).flag(True).raw(origins[0]).pick(1)
    seeds.append(bytes(two.data))
    return seeds


def token_seeds() -> list[bytes]:
    jwt = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    seeds = [
        # Authorization: Bearer <jwt>
        Seed().pick(0).pick(1).pick(0).pick(0).raw(jwt).pick(0).pick(0),
        # the same token twice: in the header and in a subprotocol entry
        Seed()
        .pick(0)
        .pick(1)
        .pick(0)
        .pick(0)
        .raw(jwt)
        .pick(2)
        .flag(True)
        .raw(jwt)
        .pick(1)
        # an application subprotocol next to it
        .flag(False)
        .pick(4)
        .raw(b"")
        .pick(0),
        # two different tokens in two subprotocol entries
        Seed()
        .pick(1)
        .pick(0)
        .pick(2)
        .flag(True)
        .raw(b"a.b.c")
        .pick(1)
        .flag(True)
        .raw(b"d.e.f")
        .pick(2)
        .pick(0),
        # a garbled subprotocol entry
        Seed().pick(0).pick(0).pick(1).flag(False).pick(1).raw(b"!!not base64!!").pick(0),
        # the query string
        Seed().pick(2).pick(0).pick(0).pick(2).pick(0).raw(jwt).pick(0).raw(jwt),
        # Bearer with nothing after it, and a non-ASCII token
        Seed().pick(0).pick(1).pick(0).pick(4).raw(b"").pick(0).pick(0),
        Seed().pick(0).pick(1).pick(0).pick(0).raw("é.jwt".encode()).pick(0).pick(0),
        # two Authorization headers
        Seed().pick(0).pick(2).pick(0).pick(0).raw(jwt).pick(0).pick(1).raw(jwt).pick(0).pick(0),
    ]
    return [bytes(seed.data) for seed in seeds]


def jwt_seeds() -> list[bytes]:
    seeds: list[bytes] = []

    # Structured tokens: verifier, not-a-string flag, alg, kid, typ?, crit?, jku?, drop alg?,
    # sub, exp, nbf?, iat?, aud, iss, scope?, signer.
    def token(
        verifier: int,
        alg: int,
        signer: int,
        *,
        exp: int = 1,
        aud: int = 0,
        iss: int = 0,
        kid: int = 0,
        crit: bool = False,
        drop_alg: bool = False,
        sub: int = 0,
    ) -> bytes:
        seed = Seed().pick(verifier).flag(False).pick(alg).pick(kid).flag(False).flag(crit)
        if crit:
            seed.pick(0)
        seed.flag(False).flag(drop_alg)
        seed.pick(sub).pick(exp).flag(False).flag(False).pick(aud).pick(iss).flag(False)
        return bytes(seed.pick(signer).data)

    seeds += [
        token(0, 0, 0),  # valid HS256: accepted
        token(0, 1, 0),  # valid HS512
        token(0, 0, 0, exp=2),  # expired
        token(0, 0, 1),  # wrong key
        token(0, 5, 2),  # alg none, empty signature
        token(0, 0, 0, crit=True),  # crit header
        token(0, 0, 0, drop_alg=True),
        token(0, 0, 0, kid=3),  # kid of the wrong type
        token(0, 0, 0, exp=6),  # exp huge
        token(0, 0, 0, exp=11),  # exp infinite
        token(0, 0, 0, exp=13),  # exp boolean
        token(0, 0, 0, sub=1),  # no sub
        token(0, 0, 0, aud=1),  # aud without a configured audience
        token(1, 0, 0, aud=1, iss=1),  # audience verifier, valid
        token(1, 0, 0, aud=3, iss=1),  # audience list with a number
        token(2, 3, 4),  # RS256 signed by the key: accepted
        token(2, 0, 3),  # HS256 signed with the public key: algorithm confusion
    ]
    for text in [b"", b"not.a.jwt", b"a.b.c", b"eyJhbGciOiJub25lIn0.e30.", b"..", b"\xff" * 40]:
        seeds.append(bytes(Seed().pick(0).flag(True).rest(text).data))
    return seeds


def format_seeds() -> list[bytes]:
    messages = [
        (0, {"type": "echo", "payload": {"n": [1, 2]}, "id": 7}),
        (0, {"event": "chat", "data": "S3CR3T", "id": "a"}),
        (1, {"event": "chat", "data": "S3CR3T"}),
        (0, {"type": 5, "payload": "S3CR3T"}),
        (0, {"jsonrpc": "2.0", "method": "S3CR3T", "id": 1}),
        (2, {"jsonrpc": "2.0", "method": "tools/list", "id": 1, "params": {}}),
        (2, {"jsonrpc": "2.0", "method": "notify"}),
        (2, {"jsonrpc": "2.0", "id": 1, "result": {"S3CR3T": 1}}),
        (2, [{"jsonrpc": "2.0", "method": "a", "id": 1}, {"S3CR3T": 1}, 5]),
        (2, [{"jsonrpc": "2.0", "method": "a", "id": n} for n in range(6)]),
        (2, []),
        (2, {"type": "echo"}),
        (2, {"jsonrpc": "1.0", "method": "a", "id": 1.5}),
    ]
    seeds = [
        bytes(Seed().pick(which).byte(1).flag(True).raw(json.dumps(value).encode()).data)
        for which, value in messages
    ]
    for which, raw in [(0, b'{"type": NaN}'), (2, b'"\\ud800"'), (0, b"[" * 2000), (1, b"S3CR3T")]:
        seeds.append(bytes(Seed().pick(which).byte(1).flag(True).raw(raw).data))
    # Nesting that orjson reads but cannot write back (255 to 1024 levels), and just within
    # a small max_depth; legacy, so that the rewrite would have to write it.
    for which, depth in [(0, 300), (4, 300), (3, 3), (3, 4)]:
        deep = b'{"event": "e", "data": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
        seeds.append(bytes(Seed().pick(which).byte(1).flag(True).raw(deep).data))
    seeds.append(bytes(Seed().pick(0).byte(0).raw(b"\x00binary").data))  # a binary frame
    return seeds


def main() -> None:
    for target, make in [
        ("origin", origin_seeds),
        ("tokens", token_seeds),
        ("jwt", jwt_seeds),
        ("format", format_seeds),
    ]:
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for seed in make():
            name = "seed-" + hashlib.sha1(seed, usedforsecurity=False).hexdigest()[:16]
            (directory / name).write_bytes(seed)


if __name__ == "__main__":
    main()
