"""Fuzz target: the hardened JWT verifier (``wsgate.auth.jwt.JWTVerifier``).

Two kinds of input: arbitrary strings, and structurally valid JWTs whose header and claims are
hostile (every ``alg``, ``kid`` of every type, ``crit``, ``jku``, time claims that are strings,
booleans, huge or not finite, audiences of the wrong shape), signed with the right key, a
wrong one, or a public key used as an HMAC secret (algorithm confusion).

The documented outcomes: an ``Identity`` (only for a token signed with the right key, an
accepted ``alg``, unexpired, with a subject), ``InvalidToken`` or ``TokenExpired`` (only for a
genuine token whose ``exp`` has passed). Anything else, another exception included, is a crash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fuzz._input import Input
from wsgate.auth.base import Identity
from wsgate.auth.jwt import JWTVerifier
from wsgate.exceptions import InvalidToken, TokenExpired

SECRET = b"fuzzing-secret-that-is-long-enough-0123456789"
WRONG_SECRET = b"another-secret-that-is-long-enough-012345678"
AUDIENCE = "wsgate-fuzz"
LEEWAY = 10.0
_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = (
    _RSA_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)

HMAC_VERIFIER = JWTVerifier(algorithms=["HS256", "HS512"], secret=SECRET, leeway=LEEWAY)
AUDIENCE_VERIFIER = JWTVerifier(
    algorithms=["HS256"], secret=SECRET, audience=AUDIENCE, issuer="wsgate", leeway=LEEWAY
)
RSA_VERIFIER = JWTVerifier(algorithms=["RS256"], public_key=PUBLIC_PEM, leeway=LEEWAY)
VERIFIERS = [HMAC_VERIFIER, AUDIENCE_VERIFIER, RSA_VERIFIER]

ABSENT = object()
ALGS: list[Any] = [
    "HS256",
    "HS512",
    "HS384",
    "RS256",
    "ES256",
    "none",
    "None",
    "hs256",
    "",
    5,
    None,
]
KIDS: list[Any] = [ABSENT, "k1", "", 5, None, ["k1"], {"k": 1}, "../../etc/passwd", "x" * 300]
SUBJECTS: list[Any] = ["alice", ABSENT, "", 5, None, ["alice"], {"id": 1}, "\u0000", "é"]
AUDIENCES: list[Any] = [ABSENT, AUDIENCE, [AUDIENCE], [AUDIENCE, 5], [], "other", 5, None]
ISSUERS: list[Any] = [ABSENT, "wsgate", "other", 5, None]
SIGNERS = ["right", "wrong", "empty", "public-key-as-hmac", "rsa", "garbage"]


def _time_values(now: int) -> list[Any]:
    return [
        ABSENT,
        now + 600,
        now - 600,
        now + 86400 * 365 * 100,
        0,
        -1,
        10**30,
        -(10**30),
        1e308,
        "NaN-as-text",
        float("inf"),
        float("nan"),
        str(now + 600),
        True,
        None,
        [now + 600],
        now + 600.5,
    ]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(value: dict[str, Any]) -> bytes:
    # json, not orjson: it writes NaN and Infinity, which the verifier must refuse.
    return json.dumps({k: v for k, v in value.items() if v is not ABSENT}).encode()


def _signature(signer: str, alg: Any, signing_input: bytes, given: Input) -> bytes:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(
        alg if isinstance(alg, str) else "", hashlib.sha256
    )
    if signer == "right":
        return hmac.new(SECRET, signing_input, digest).digest()
    if signer == "wrong":
        return hmac.new(WRONG_SECRET, signing_input, digest).digest()
    if signer == "public-key-as-hmac":
        return hmac.new(PUBLIC_PEM.encode(), signing_input, digest).digest()
    if signer == "rsa":
        return _RSA_KEY.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    if signer == "garbage":
        return given.raw(64)
    return b""


def _token(given: Input) -> tuple[str, dict[str, Any], dict[str, Any], str]:
    now = int(time.time())
    times = _time_values(now)
    header: dict[str, Any] = {"alg": given.choice(ALGS), "kid": given.choice(KIDS)}
    if given.flag():
        header["typ"] = given.choice(["JWT", "at+jwt", 5])
    if given.flag():
        header["crit"] = given.choice([["exp"], [], "b64"])
    if given.flag():
        header[given.choice(["jku", "x5u", "jwk", "x5c", "b64"])] = given.choice(
            ["https://evil.example/keys", {"kty": "oct", "k": _b64(WRONG_SECRET)}, False]
        )
    if given.flag():
        del header["alg"]
    claims: dict[str, Any] = {
        "sub": given.choice(SUBJECTS),
        "exp": given.choice(times),
        "nbf": given.choice(times) if given.flag() else ABSENT,
        "iat": given.choice(times) if given.flag() else ABSENT,
        "aud": given.choice(AUDIENCES),
        "iss": given.choice(ISSUERS),
    }
    if given.flag():
        claims["scope"] = given.choice(["read write", ["read"], 5])
    signer = given.choice(SIGNERS)
    signing_input = f"{_b64(_json(header))}.{_b64(_json(claims))}".encode()
    signature = _signature(signer, header.get("alg"), signing_input, given)
    return f"{signing_input.decode()}.{_b64(signature)}", header, claims, signer


def check(data: bytes) -> None:
    given = Input(data)
    verifier = given.choice(VERIFIERS)
    if given.flag():
        token = given.rest().decode("latin-1")
        header = claims = None
        signer = "garbage"
    else:
        token, header, claims, signer = _token(given)
    refused: InvalidToken | None = None
    try:
        identity = verifier.verify_sync(token)
    except TokenExpired:
        # Only a genuine token says it has expired: the signature was checked first.
        assert claims is not None, token
        assert signer in ("right", "rsa"), token
        assert isinstance(claims["exp"], (int, float))
        assert not isinstance(claims["exp"], bool)
        return
    except InvalidToken as exc:
        refused = exc  # a sentence for the server log, never empty
    if refused is not None:
        assert str(refused), token
        return
    # Accepted: only what a verifier may accept.
    assert isinstance(identity, Identity), token
    assert header is not None, f"garbage accepted: {token!r}"
    assert claims is not None, f"garbage accepted: {token!r}"
    assert header["alg"] in verifier.algorithms, token
    assert "crit" not in header, token
    if verifier is RSA_VERIFIER:
        assert signer == "rsa", token
        assert header["alg"] == "RS256", token
    else:
        assert signer == "right", token
    exp = claims["exp"]
    assert isinstance(exp, (int, float)), token
    assert not isinstance(exp, bool), token
    assert exp > time.time() - LEEWAY - 5, token
    assert isinstance(claims["sub"], str), token
    assert claims["sub"], token
    assert identity.subject == claims["sub"]
    if verifier is AUDIENCE_VERIFIER:
        assert claims["iss"] == "wsgate", token
        aud = claims["aud"]
        assert aud == AUDIENCE or (isinstance(aud, list) and AUDIENCE in aud), token
    else:
        assert claims["aud"] is ABSENT, token


if __name__ == "__main__":
    from tests.fuzz._atheris import fuzz

    fuzz(check)
