"""JWTVerifier checks every signature with python-jose's cryptography backend, never ecdsa.

python-jose depends on ``ecdsa``, whose timing side channel (CVE-2024-23342) its maintainers
will not fix, and falls back to it for EC keys when it cannot use cryptography's backend. These
tests point python-jose's own key registry at that fallback, as a broken cryptography install
would, and check that the verifier still verifies with cryptography and never with ecdsa.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose.backends.cryptography_backend import CryptographyECKey
from jose.backends.ecdsa_backend import ECDSAECKey
from jose.constants import ALGORITHMS

from wsgate import InvalidToken, JWTVerifier
from wsgate.testing import TokenFactory

CURVES: dict[str, tuple[ec.EllipticCurve, str]] = {
    "ES256": (ec.SECP256R1(), "P-256"),
    "ES384": (ec.SECP384R1(), "P-384"),
    "ES512": (ec.SECP521R1(), "P-521"),
}


class Calls:
    """Counts the calls of one method, letting each through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> None:
        self.count = 0
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


def prefer_ecdsa(monkeypatch: pytest.MonkeyPatch) -> tuple[Calls, Calls, Calls]:
    """Point python-jose's registry at its ecdsa backend for ES*, and count what each does.

    Returns the counters of ecdsa's key constructions, of ecdsa's verifications and of
    cryptography's verifications.
    """
    keys: Any = ALGORITHMS.KEYS
    for alg in CURVES:
        monkeypatch.setitem(keys, alg, ECDSAECKey)
    return (
        Calls(monkeypatch, ECDSAECKey, "__init__"),
        Calls(monkeypatch, ECDSAECKey, "verify"),
        Calls(monkeypatch, CryptographyECKey, "verify"),
    )


def jwks_of(key: ec.EllipticCurvePublicKey, crv: str) -> dict[str, Any]:
    numbers = key.public_numbers()
    size = (key.curve.key_size + 7) // 8

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()

    return {"keys": [{"kty": "EC", "crv": crv, "x": b64(numbers.x), "y": b64(numbers.y)}]}


@pytest.mark.parametrize("alg", CURVES)
@pytest.mark.parametrize("source", ["public_key", "jwks"])
def test_ec_signatures_are_verified_by_cryptography_never_ecdsa(
    monkeypatch: pytest.MonkeyPatch, alg: str, source: str
) -> None:
    curve, crv = CURVES[alg]
    private_key = ec.generate_private_key(curve)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    factory = TokenFactory(algorithm=alg, private_key=pem)
    valid, forged = factory.valid("alice"), factory.wrong_signature("alice")
    ecdsa_keys, ecdsa_verify, cryptography_verify = prefer_ecdsa(monkeypatch)

    if source == "public_key":
        assert factory.public_key is not None
        verifier = JWTVerifier(algorithms=[alg], public_key=factory.public_key)
    else:
        verifier = JWTVerifier(algorithms=[alg], jwks=jwks_of(private_key.public_key(), crv))

    assert verifier.verify_sync(valid).subject == "alice"
    with pytest.raises(InvalidToken, match="the signature does not verify"):
        verifier.verify_sync(forged)

    assert cryptography_verify.count == 2
    assert (ecdsa_keys.count, ecdsa_verify.count) == (0, 0)


def test_verifying_an_ec_token_never_imports_ecdsa() -> None:
    # A fresh interpreter: nothing else has imported ecdsa, or python-jose's backend for it.
    script = textwrap.dedent(
        """
        import sys
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from wsgate import JWTVerifier
        from wsgate.testing import TokenFactory

        key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        factory = TokenFactory(algorithm="ES256", private_key=key.decode())
        verifier = JWTVerifier(algorithms=["ES256"], public_key=factory.public_key)
        print(verifier.verify_sync(factory.valid("alice")).subject)
        print(sorted(name for name in sys.modules if "ecdsa" in name))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines() == ["alice", "[]"]
