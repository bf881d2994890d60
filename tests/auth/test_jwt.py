"""JWTVerifier: every configuration rule and every verification rule, one by one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt

import wsgate.auth.jwt
from wsgate import ConfigurationError, Identity, InvalidToken, JWTVerifier, TokenExpired

pytestmark = pytest.mark.anyio

SECRET = "jwt-verifier-tests-secret-0123456789abcdef"
NOW = 1_700_000_000
"""The frozen clock of every test in this module, as a Unix time in seconds."""

REFUSED = (InvalidToken, TokenExpired)


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop the verifier's clock at NOW, so that time-claim boundaries are exact."""
    monkeypatch.setattr(wsgate.auth.jwt, "time", SimpleNamespace(time=lambda: float(NOW)))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims; an override of None leaves the claim out."""
    base: dict[str, Any] = {"sub": "user-1", "iat": NOW, "exp": NOW + 300}
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def hs256(payload: Mapping[str, Any], *, key: str = SECRET, **headers: Any) -> str:
    return jwt.encode(dict(payload), key, algorithm="HS256", headers=headers or None)


def forge(header: bytes | Mapping[str, Any], payload: bytes, key: bytes = SECRET.encode()) -> str:
    """A token with exactly these header and payload bytes, HMAC-SHA256-signed with ``key``."""
    raw_header = header if isinstance(header, bytes) else json.dumps(header).encode()
    signing_input = f"{b64(raw_header)}.{b64(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def hmac_verifier(**options: Any) -> JWTVerifier:
    settings: dict[str, Any] = {"algorithms": ["HS256"], "secret": SECRET, "leeway": 0}
    settings.update(options)
    return JWTVerifier(**settings)


def private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, alg: str, **extra: Any) -> Any:
    return {**jwk.construct(public_pem(key), alg).to_dict(), **extra}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# Configuration: algorithms


@pytest.mark.parametrize("algorithms", [[], (), "HS256"])
def test_algorithms_must_be_a_non_empty_list(algorithms: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"algorithms must be a non-empty list"):
        JWTVerifier(algorithms=algorithms, secret=SECRET)


def test_algorithms_are_required() -> None:
    with pytest.raises(TypeError, match="algorithms"):
        JWTVerifier(secret=SECRET)  # type: ignore[call-arg]


@pytest.mark.parametrize("algorithms", [["none"], ["HS256", "none"], ["None"], ["PS256"]])
def test_none_and_unknown_algorithms_are_refused(algorithms: list[str]) -> None:
    with pytest.raises(ConfigurationError, match=r"'none' is never accepted"):
        JWTVerifier(algorithms=algorithms, secret=SECRET)


@pytest.mark.parametrize("algorithms", [["HS256", "RS256"], ["ES256", "HS512"]])
def test_hmac_and_public_key_algorithms_cannot_mix(algorithms: list[str]) -> None:
    with pytest.raises(ConfigurationError, match="public key be used as an HMAC secret"):
        JWTVerifier(algorithms=algorithms, secret=SECRET)


# Configuration: keys


def test_hmac_secret_needs_32_bytes() -> None:
    with pytest.raises(ConfigurationError, match="the HMAC secret is 31 bytes; use at least 32"):
        JWTVerifier(algorithms=["HS256"], secret="s" * 31)
    with pytest.raises(ConfigurationError, match="is 0 bytes"):
        JWTVerifier(algorithms=["HS256"], secret=b"")
    JWTVerifier(algorithms=["HS256"], secret="s" * 32)
    JWTVerifier(algorithms=["HS256"], secret="é" * 16)  # 32 bytes in UTF-8


def test_exactly_one_key_source(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ConfigurationError, match=r"give exactly one of .* not none"):
        JWTVerifier(algorithms=["RS256"])
    with pytest.raises(ConfigurationError, match=r"\['public_key', 'jwks'\]"):
        JWTVerifier(
            algorithms=["RS256"],
            public_key=public_pem(rsa_key),
            jwks={"keys": [public_jwk(rsa_key, "RS256")]},
        )
    with pytest.raises(ConfigurationError, match=r"\['secret', 'public_key'\]"):
        JWTVerifier(algorithms=["HS256"], secret=SECRET, public_key=public_pem(rsa_key))


def test_key_source_must_fit_the_algorithm_family(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ConfigurationError, match="are HMAC and need secret=, not public_key="):
        JWTVerifier(algorithms=["HS256"], public_key=public_pem(rsa_key))
    with pytest.raises(ConfigurationError, match="need public_key= or jwks=, not secret="):
        JWTVerifier(algorithms=["RS256"], secret=SECRET)


def test_a_public_key_pem_is_refused_as_hmac_secret(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ConfigurationError, match="secret cannot be used with HS256"):
        JWTVerifier(algorithms=["HS256"], secret=public_pem(rsa_key))


@pytest.mark.parametrize("which", ["garbage", "ec-key-for-rs256"])
def test_unusable_public_key_is_refused(which: str, ec_key: ec.EllipticCurvePrivateKey) -> None:
    key = "not a PEM key" if which == "garbage" else public_pem(ec_key)
    with pytest.raises(ConfigurationError, match="public_key"):
        JWTVerifier(algorithms=["RS256"], public_key=key)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"leeway": -1}, "leeway must be a number of seconds >= 0"),
        ({"leeway": float("inf")}, "leeway"),
        ({"leeway": float("nan")}, "leeway"),
        ({"leeway": "10"}, "leeway"),
        ({"max_token_bytes": 0}, "max_token_bytes must be a positive number of bytes"),
        ({"max_token_bytes": 1.5}, "max_token_bytes"),
    ],
)
def test_bad_limits_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        hmac_verifier(**options)


@pytest.mark.parametrize("jwks", [{}, {"keys": []}, {"keys": "k"}, {"keys": {"kty": "RSA"}}])
def test_jwks_must_be_a_jwks_document(jwks: Any) -> None:
    with pytest.raises(ConfigurationError, match="jwks must be a JWKS document"):
        JWTVerifier(algorithms=["RS256"], jwks=jwks)


def test_several_jwks_keys_need_a_kid(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks = {"keys": [public_jwk(rsa_key, "RS256", kid="a"), public_jwk(other_rsa_key, "RS256")]}
    with pytest.raises(ConfigurationError, match="several keys needs a string kid"):
        JWTVerifier(algorithms=["RS256"], jwks=jwks)


def test_jwks_without_a_usable_signing_key_is_refused(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(ConfigurationError, match="no signing key usable with algorithms"):
        JWTVerifier(algorithms=["RS256"], jwks={"keys": [public_jwk(ec_key, "ES256")]})
    encryption = public_jwk(rsa_key, "RS256", use="enc")
    with pytest.raises(ConfigurationError, match="no signing key usable"):
        JWTVerifier(algorithms=["RS256"], jwks={"keys": [encryption]})


# Public-key algorithms


def test_rs256_with_a_pem_public_key(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = JWTVerifier(algorithms=["RS256"], public_key=public_pem(rsa_key))
    good = jwt.encode(claims(), private_pem(rsa_key), algorithm="RS256")
    assert verifier.verify_sync(good).subject == "user-1"
    forged = jwt.encode(claims(), private_pem(other_rsa_key), algorithm="RS256")
    with pytest.raises(InvalidToken, match="the signature does not verify"):
        verifier.verify_sync(forged)


def test_es256_with_a_pem_public_key(ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = JWTVerifier(algorithms=["ES256"], public_key=public_pem(ec_key).encode())
    good = jwt.encode(claims(), private_pem(ec_key), algorithm="ES256")
    assert verifier.verify_sync(good).subject == "user-1"
    forged = jwt.encode(
        claims(), private_pem(ec.generate_private_key(ec.SECP256R1())), algorithm="ES256"
    )
    with pytest.raises(InvalidToken, match="the signature does not verify"):
        verifier.verify_sync(forged)


def test_a_pem_key_verifies_only_tokens_of_its_own_family(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    verifier = JWTVerifier(algorithms=["RS256", "ES256"], public_key=public_pem(rsa_key))
    assert verifier.verify_sync(jwt.encode(claims(), private_pem(rsa_key), algorithm="RS256"))
    with pytest.raises(InvalidToken):
        verifier.verify_sync(jwt.encode(claims(), private_pem(ec_key), algorithm="ES256"))


def test_jwks_key_is_selected_by_kid(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    jwks = {
        "keys": [
            public_jwk(rsa_key, "RS256", kid="one"),
            public_jwk(other_rsa_key, "RS256", kid="two"),
        ]
    }
    verifier = JWTVerifier(algorithms=["RS256"], jwks=jwks)
    one, two = private_pem(rsa_key), private_pem(other_rsa_key)
    assert verifier.verify_sync(jwt.encode(claims(), one, "RS256", headers={"kid": "one"}))
    assert verifier.verify_sync(jwt.encode(claims(), two, "RS256", headers={"kid": "two"}))
    with pytest.raises(InvalidToken, match="the signature does not verify"):
        verifier.verify_sync(jwt.encode(claims(), two, "RS256", headers={"kid": "one"}))
    with pytest.raises(InvalidToken, match="no key with kid 'three' for alg RS256"):
        verifier.verify_sync(jwt.encode(claims(), one, "RS256", headers={"kid": "three"}))
    with pytest.raises(InvalidToken, match="no key with kid None"):
        verifier.verify_sync(jwt.encode(claims(), one, "RS256"))
    with pytest.raises(InvalidToken, match="kid is not a string"):
        verifier.verify_sync(jwt.encode(claims(), one, "RS256", headers={"kid": 1}))


def test_single_key_jwks_needs_no_kid(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JWTVerifier(algorithms=["RS256"], jwks={"keys": [public_jwk(rsa_key, "RS256")]})
    assert verifier.verify_sync(jwt.encode(claims(), private_pem(rsa_key), "RS256")).subject == (
        "user-1"
    )


def test_jwks_with_one_key_per_family(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks = {"keys": [public_jwk(rsa_key, "RS256", kid="r"), public_jwk(ec_key, "ES256", kid="e")]}
    verifier = JWTVerifier(algorithms=["RS256", "ES256"], jwks=jwks)
    rs = jwt.encode(claims(), private_pem(rsa_key), "RS256", headers={"kid": "r"})
    es = jwt.encode(claims(), private_pem(ec_key), "ES256", headers={"kid": "e"})
    assert verifier.verify_sync(rs).subject == "user-1"
    assert verifier.verify_sync(es).subject == "user-1"
    with pytest.raises(InvalidToken, match="no key with kid 'e' for alg RS256"):
        verifier.verify_sync(
            jwt.encode(claims(), private_pem(rsa_key), "RS256", headers={"kid": "e"})
        )


class _KeyServer:
    """An HTTP server on 127.0.0.1 that hands out an attacker's JWKS and counts requests."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        body = json.dumps(jwks).encode()
        self.requests: list[str] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def attacker(other_rsa_key: rsa.RSAPrivateKey) -> Iterator[_KeyServer]:
    server = _KeyServer({"keys": [public_jwk(other_rsa_key, "RS256", kid="evil")]})
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    server.thread.join(5)


def test_key_url_and_embedded_key_headers_are_never_followed(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey, attacker: _KeyServer
) -> None:
    verifier = JWTVerifier(algorithms=["RS256"], public_key=public_pem(rsa_key))
    headers = {
        "jku": f"{attacker.url}/jwks.json",
        "x5u": f"{attacker.url}/cert.pem",
        "jwk": public_jwk(other_rsa_key, "RS256"),
        "kid": "evil",
    }
    honest = jwt.encode(claims(), private_pem(rsa_key), "RS256", headers=headers)
    assert verifier.verify_sync(honest).subject == "user-1"
    forged = jwt.encode(claims(), private_pem(other_rsa_key), "RS256", headers=headers)
    with pytest.raises(InvalidToken, match="the signature does not verify"):
        verifier.verify_sync(forged)
    closed_port = hs256(claims(), jku="http://127.0.0.1:9/jwks.json", x5u="http://127.0.0.1:9/")
    assert hmac_verifier().verify_sync(closed_port).subject == "user-1"
    assert attacker.requests == []


def test_algorithm_confusion_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    confused = forge({"alg": "HS256", "typ": "JWT"}, json.dumps(claims()).encode(), pem.encode())
    by_pem = JWTVerifier(algorithms=["RS256"], public_key=pem)
    by_jwks = JWTVerifier(algorithms=["RS256"], jwks={"keys": [public_jwk(rsa_key, "RS256")]})
    for verifier in (by_pem, by_jwks):
        with pytest.raises(InvalidToken, match="alg 'HS256' is not one of the accepted"):
            verifier.verify_sync(confused)


# Token shape and header


def test_crit_header_is_refused() -> None:
    with pytest.raises(InvalidToken, match="critical"):
        hmac_verifier().verify_sync(hs256(claims(), crit=["exp"]))


def test_max_token_bytes_is_checked_first() -> None:
    token = hs256(claims())
    assert hmac_verifier(max_token_bytes=len(token)).verify_sync(token)
    with pytest.raises(InvalidToken, match=f"longer than {len(token) - 1} bytes"):
        hmac_verifier(max_token_bytes=len(token) - 1).verify_sync(token)
    with pytest.raises(InvalidToken, match="longer than 8192 bytes"):
        hmac_verifier().verify_sync("a" * 8193)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e",  # a compact JWE
        "a..c",
        ".b.c",
        "a.b.",
        "a.b.c ",
        " a.b.c",
        "a.b.c\n",
        "a.b.c=",
        "YQ==.YQ==.YQ==",
        "a+b.c/d.e",
    ],
)
def test_not_three_base64url_segments(token: str) -> None:
    with pytest.raises(InvalidToken, match="not three base64url segments"):
        hmac_verifier().verify_sync(token)


def test_jwe_shaped_real_token_is_refused() -> None:
    header, payload, signature = hs256(claims()).split(".")
    with pytest.raises(InvalidToken, match="not three base64url segments"):
        hmac_verifier().verify_sync(f"{header}.{payload}.{signature}.{payload}.{signature}")
    with pytest.raises(InvalidToken, match="not three base64url segments"):
        hmac_verifier().verify_sync(f"{header}.{payload}")


@pytest.mark.parametrize("token", ["héader.payload.sig", "a.b.c\u200b", "\uff41.b.c"])
def test_non_ascii_is_refused(token: str) -> None:
    with pytest.raises(InvalidToken, match="not an ASCII string"):
        hmac_verifier().verify_sync(token)


@pytest.mark.parametrize("token", [None, b"a.b.c", 123])
def test_non_string_is_refused(token: Any) -> None:
    with pytest.raises(InvalidToken, match="not an ASCII string"):
        hmac_verifier().verify_sync(token)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"not json", "the header is not JSON"),
        (b"[1, 2]", "the header is not a JSON object"),
        (b'"HS256"', "the header is not a JSON object"),
        (b"\xff\xfe{}", "the header is not JSON"),
        (b"{}", "alg None is not one of the accepted algorithms"),
        (b'{"alg": ["HS256"]}', "is not one of the accepted algorithms"),
        (b'{"alg": "hs256"}', "alg 'hs256' is not one of"),
    ],
)
def test_bad_headers(header: bytes, message: str) -> None:
    with pytest.raises(InvalidToken, match=message):
        hmac_verifier().verify_sync(forge(header, json.dumps(claims()).encode()))


def test_header_that_is_not_base64() -> None:
    _, payload, signature = hs256(claims()).split(".")
    with pytest.raises(InvalidToken, match="the header is not base64url"):
        hmac_verifier().verify_sync(f"abcde.{payload}.{signature}")


def test_algorithm_outside_the_list_is_refused() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS384")
    with pytest.raises(InvalidToken, match="alg 'HS384' is not one of the accepted algorithms"):
        hmac_verifier().verify_sync(token)
    assert hmac_verifier(algorithms=["HS256", "HS384"]).verify_sync(token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", "c2ln"])
def test_alg_none_is_refused(alg: str, signature: str) -> None:
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    token = f"{header}.{b64(json.dumps(claims()).encode())}.{signature}"
    with pytest.raises(InvalidToken):
        hmac_verifier().verify_sync(token)


def test_duplicate_alg_keys_cannot_smuggle_none() -> None:
    payload = json.dumps(claims()).encode()
    # The last duplicate wins, in wsgate's parser and in python-jose's alike.
    with pytest.raises(InvalidToken, match="alg 'none'"):
        hmac_verifier().verify_sync(forge(b'{"alg":"HS256","alg":"none"}', payload))
    token = forge(b'{"alg":"none","alg":"HS256"}', payload)
    assert hmac_verifier().verify_sync(token).subject == "user-1"


# exp


def test_exp_is_required_by_default() -> None:
    token = hs256(claims(exp=None))
    with pytest.raises(InvalidToken, match="no exp claim"):
        hmac_verifier().verify_sync(token)
    identity = hmac_verifier(require_exp=False).verify_sync(token)
    assert identity.subject == "user-1"
    assert identity.expires_at is None


@pytest.mark.parametrize(
    "exp",
    [
        str(NOW + 300),
        True,
        False,
        None,
        [NOW + 300],
        {"t": NOW},
        10**400,
        float("nan"),
        # Beyond 9999 or before 1970: nothing could write them back as JSON integers.
        1e20,
        2**64,
        253_402_300_800,
        -1,
    ],
)
def test_exp_must_be_a_finite_number(exp: Any) -> None:
    payload = json.dumps({**claims(), "exp": exp}).encode()
    with pytest.raises(InvalidToken):
        hmac_verifier().verify_sync(forge({"alg": "HS256"}, payload))
    with pytest.raises(InvalidToken):
        hmac_verifier(require_exp=False).verify_sync(forge({"alg": "HS256"}, payload))


def test_huge_exp_is_refused_by_the_json_parser() -> None:
    payload = b'{"sub":"user-1","exp":' + b"9" * 400 + b"}"
    with pytest.raises(InvalidToken, match="the payload is not JSON"):
        hmac_verifier().verify_sync(forge({"alg": "HS256"}, payload))


def test_exp_equal_to_now_has_expired() -> None:
    with pytest.raises(TokenExpired, match="exp has passed"):
        hmac_verifier().verify_sync(hs256(claims(exp=NOW)))
    assert hmac_verifier().verify_sync(hs256(claims(exp=NOW + 1)))
    assert hmac_verifier().verify_sync(hs256(claims(exp=NOW + 0.5)))
    with pytest.raises(TokenExpired):
        hmac_verifier().verify_sync(hs256(claims(exp=NOW - 0.5)))


def test_exp_in_the_past() -> None:
    with pytest.raises(TokenExpired):
        hmac_verifier().verify_sync(hs256(claims(iat=NOW - 600, exp=NOW - 300)))


def test_forged_expired_token_never_reveals_its_expiry() -> None:
    forged = hs256(claims(iat=NOW - 600, exp=NOW - 300), key="another-secret-" + "x" * 32)
    with pytest.raises(InvalidToken, match="the signature does not verify"):
        hmac_verifier().verify_sync(forged)
    wrong_alg = jwt.encode(claims(exp=NOW - 300), SECRET, algorithm="HS512")
    with pytest.raises(InvalidToken):
        hmac_verifier().verify_sync(wrong_alg)


def test_leeway_on_exp() -> None:
    verifier = hmac_verifier(leeway=10)
    assert verifier.verify_sync(hs256(claims(exp=NOW - 9)))
    with pytest.raises(TokenExpired):
        verifier.verify_sync(hs256(claims(exp=NOW - 10)))


# nbf and iat


def test_nbf() -> None:
    assert hmac_verifier().verify_sync(hs256(claims(nbf=NOW)))
    with pytest.raises(InvalidToken, match="not valid yet"):
        hmac_verifier().verify_sync(hs256(claims(nbf=NOW + 1)))
    assert hmac_verifier(leeway=10).verify_sync(hs256(claims(nbf=NOW + 10)))
    with pytest.raises(InvalidToken, match="not valid yet"):
        hmac_verifier(leeway=10).verify_sync(hs256(claims(nbf=NOW + 11)))


def test_iat_in_the_future() -> None:
    assert hmac_verifier().verify_sync(hs256(claims(iat=NOW)))
    with pytest.raises(InvalidToken, match="issued in the future"):
        hmac_verifier().verify_sync(hs256(claims(iat=NOW + 1)))
    assert hmac_verifier(leeway=10).verify_sync(hs256(claims(iat=NOW + 10)))
    with pytest.raises(InvalidToken, match="issued in the future"):
        hmac_verifier(leeway=10).verify_sync(hs256(claims(iat=NOW + 11)))


@pytest.mark.parametrize("name", ["nbf", "iat"])
@pytest.mark.parametrize("value", [str(NOW), True, None, [NOW], 1e20, -5])
def test_nbf_and_iat_must_be_numbers(name: str, value: Any) -> None:
    payload = json.dumps({**claims(), name: value}).encode()
    with pytest.raises(
        InvalidToken, match=f"{name} is not a number of seconds between 1970 and 9999"
    ):
        hmac_verifier().verify_sync(forge({"alg": "HS256"}, payload))


# aud and iss


def test_audience_is_required_when_configured() -> None:
    verifier = hmac_verifier(audience="api")
    assert verifier.verify_sync(hs256(claims(aud="api")))
    assert verifier.verify_sync(hs256(claims(aud=["other", "api"])))
    with pytest.raises(InvalidToken, match="no aud claim"):
        verifier.verify_sync(hs256(claims()))
    with pytest.raises(InvalidToken, match="does not include the configured audience"):
        verifier.verify_sync(hs256(claims(aud="other")))
    with pytest.raises(InvalidToken, match="does not include the configured audience"):
        verifier.verify_sync(hs256(claims(aud=[])))
    with pytest.raises(InvalidToken, match="does not include"):
        verifier.verify_sync(hs256(claims(aud="API")))


@pytest.mark.parametrize("aud", [1, ["api", 1], {"api": True}, [["api"]], True])
def test_audience_of_the_wrong_type_is_refused(aud: Any) -> None:
    with pytest.raises(InvalidToken, match="neither a string nor a list of strings"):
        hmac_verifier(audience="api").verify_sync(hs256(claims(aud=aud)))


def test_audience_without_a_configured_one_is_refused() -> None:
    with pytest.raises(InvalidToken, match="set audience="):
        hmac_verifier().verify_sync(hs256(claims(aud="api")))


def test_issuer() -> None:
    verifier = hmac_verifier(issuer="https://issuer.example")
    assert verifier.verify_sync(hs256(claims(iss="https://issuer.example")))
    for iss in (
        None,
        "https://issuer.example/",
        "https://evil.example",
        ["https://issuer.example"],
    ):
        with pytest.raises(InvalidToken, match="iss is not the configured issuer"):
            verifier.verify_sync(hs256(claims(iss=iss)))
    # Without a configured issuer, iss is not looked at.
    assert hmac_verifier().verify_sync(hs256(claims(iss="https://anyone.example")))


# sub and the Identity


@pytest.mark.parametrize("sub", [None, "", 42, ["user-1"], {"id": "user-1"}, True])
def test_sub_must_be_a_non_empty_string(sub: Any) -> None:
    payload = json.dumps({**claims(), "sub": sub} if sub is not None else claims(sub=None))
    with pytest.raises(InvalidToken, match="no sub claim"):
        hmac_verifier().verify_sync(forge({"alg": "HS256"}, payload.encode()))


def test_identity_from_scope() -> None:
    token_claims = claims(scope="read write", name="Ada")
    identity = hmac_verifier().verify_sync(hs256(token_claims))
    assert identity == Identity("user-1", token_claims, ("read", "write"), float(NOW + 300))
    assert isinstance(identity.expires_at, float)


def test_identity_from_scp() -> None:
    identity = hmac_verifier().verify_sync(hs256(claims(scp=["chat:read", "chat:write"])))
    assert identity.scopes == ("chat:read", "chat:write")
    assert hmac_verifier().verify_sync(hs256(claims(scp="a b"))).scopes == ("a", "b")
    assert hmac_verifier().verify_sync(hs256(claims(scope="a", scp=["b"]))).scopes == ("a",)
    assert hmac_verifier().verify_sync(hs256(claims(scp=["a", 1]))).scopes == ()
    assert hmac_verifier().verify_sync(hs256(claims())).scopes == ()


async def test_verify_is_the_async_verify_sync() -> None:
    identity = await hmac_verifier().verify(hs256(claims(scope="read")))
    assert (identity.subject, identity.scopes) == ("user-1", ("read",))
    with pytest.raises(TokenExpired):
        await hmac_verifier().verify(hs256(claims(exp=NOW - 1)))


# Hostile input: only the documented exceptions may escape


def outcome(verifier: JWTVerifier, token: str) -> Identity | InvalidToken | TokenExpired:
    """What verifying ``token`` gives; any exception other than the documented two escapes."""
    try:
        return verifier.verify_sync(token)
    except REFUSED as refusal:
        return refusal


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


NOT_A_TIME: list[Any] = ["", "0", "NaN", True, False, None, [], {}, [NOW], {"$date": NOW}]
HOSTILE_CLAIMS: dict[str, list[Any]] = {
    "exp": NOT_A_TIME,
    "nbf": NOT_A_TIME,
    "iat": NOT_A_TIME,
    "aud": ["", "API", "api ", True, 1, None, [], {}, ["x"], [1], {"api": 1}, "\ud800"],
    "iss": ["", True, 1, None, [], ["https://issuer.example"], {}, "https://issuer.example\x00"],
    "sub": ["", True, 0, 1, None, [], ["user-1"], {}, {"sub": "user-1"}, "\ud800"],
}
"""Values each checked claim must be refused with (``"\\ud800"`` is not valid JSON text)."""


def test_every_claim_of_the_wrong_type_is_refused() -> None:
    verifier = hmac_verifier(audience="api", issuer="https://issuer.example")
    valid = claims(aud="api", iss="https://issuer.example")
    assert verifier.verify_sync(hs256(valid))
    for name, values in HOSTILE_CLAIMS.items():
        for value in values:
            token = forge({"alg": "HS256"}, json.dumps({**valid, name: value}).encode())
            with pytest.raises(REFUSED):
                verifier.verify_sync(token)
        missing = {claim: v for claim, v in valid.items() if claim != name}
        if name in ("aud", "iss", "sub", "exp"):
            with pytest.raises(REFUSED):
                verifier.verify_sync(forge({"alg": "HS256"}, json.dumps(missing).encode()))


@pytest.mark.parametrize("depth", [500, 1000, 1023, 1025, 5000])
def test_deeply_nested_json(depth: int) -> None:
    verifier = hmac_verifier(max_token_bytes=10**6)
    payload = json.dumps(claims()).encode()
    nested_header = f'{{"alg": "HS256", "x": {_nested(depth)}}}'.encode()
    nested_sub = f'{{"sub": {_nested(depth)}, "exp": {NOW + 300}}}'.encode()
    # Deep enough, the JSON parsers give up; shallower, the claims checks refuse it.
    with pytest.raises(REFUSED):
        verifier.verify_sync(forge(nested_header, nested_sub))
    with pytest.raises(REFUSED):
        verifier.verify_sync(forge({"alg": "HS256"}, _nested(depth).encode()))
    # A header parameter wsgate does not know is ignored, however deep, or refused: no crash.
    assert isinstance(outcome(verifier, forge(nested_header, payload)), (Identity, *REFUSED))


@pytest.mark.parametrize(
    "header",
    [
        b'{"alg": "HS256", "kid": 1e400}',
        b'{"alg": "HS256", "kid": ' + b"9" * 5000 + b"}",
        b'{"alg": "HS256", "crit": 1}',
        b'{"alg": "HS256", "typ": {"a": [1, 2]}, "b64": false, "zip": "DEF", "crit": []}',
        b'{"alg": null}',
        b'{"alg": 256}',
        b"null",
        b"true",
        b"1e400",
        b"",
        b"\x00" * 16,
    ],
)
def test_hostile_headers(header: bytes) -> None:
    with pytest.raises(REFUSED):
        hmac_verifier(max_token_bytes=10**5).verify_sync(
            forge(header, json.dumps(claims()).encode())
        )


@pytest.mark.parametrize(
    "payload",
    [b"", b"null", b"[]", b'"user-1"', b"1e400", b"{", b"\xff", b'{"sub": "a"} trailing', b"{}"],
)
def test_hostile_payloads(payload: bytes) -> None:
    with pytest.raises(REFUSED):
        hmac_verifier().verify_sync(forge({"alg": "HS256"}, payload))


def test_mutated_tokens_only_raise_documented_exceptions() -> None:
    verifier = hmac_verifier(audience="api")
    token = hs256(claims(aud="api", scope="read"))
    alphabet = "abcXYZ019-_.=+/ é\x00\u202e"
    rng = random.Random(20240601)
    for _ in range(2000):
        chars = list(token)
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(chars))
            action = rng.choice(("replace", "delete", "insert"))
            if action == "replace":
                chars[position] = rng.choice(alphabet)
            elif action == "delete":
                del chars[position]
            else:
                chars.insert(position, rng.choice(alphabet))
        mutated = "".join(chars)
        result = outcome(verifier, mutated)
        if isinstance(result, Identity):
            # Only a mutation that base64 decoding ignores (spare low bits) can survive.
            assert result.claims == claims(aud="api", scope="read"), mutated


# Several HMAC secrets


def test_several_secrets_each_verify_the_newest_first() -> None:
    new, old = "a-new-secret-of-at-least-thirty-two-bytes!", SECRET
    verifier = JWTVerifier(algorithms=["HS256", "HS512"], secret=[new, old.encode()], leeway=0)
    assert verifier.verify_sync(hs256(claims(sub="by-new"), key=new)).subject == "by-new"
    assert verifier.verify_sync(hs256(claims(sub="by-old"), key=old)).subject == "by-old"
    hs512 = jwt.encode(claims(), new, algorithm="HS512")
    assert verifier.verify_sync(hs512).subject == "user-1"
    with pytest.raises(InvalidToken, match="the signature does not verify"):
        verifier.verify_sync(hs256(claims(), key="a-third-secret-that-nobody-listed-000"))


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ([], "secret= is an empty list; give at least one secret."),
        ([SECRET, "short"], r"the HMAC secret #2 \(of 2\) is 5 bytes; use at least 32"),
        (["s" * 31], r"the HMAC secret #1 \(of 1\) is 31 bytes"),
        ([SECRET, 42], "secret= holds int, not str or bytes."),
    ],
)
def test_every_secret_is_checked(secret: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        JWTVerifier(algorithms=["HS256"], secret=secret)
