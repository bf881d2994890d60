"""JWTs for tests: valid ones, and each kind of bad one a gate must refuse."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwt

from wsgate.auth.tokens import DEFAULT_SUBPROTOCOL_PREFIX, encode_subprotocol
from wsgate.exceptions import ConfigurationError

__all__ = ["DEFAULT_SUBPROTOCOL_PREFIX", "TokenFactory"]

_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_RSA_ALGORITHMS = ("RS256", "RS384", "RS512")
_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
_SUPPORTED = (*_HMAC_ALGORITHMS, *_RSA_ALGORITHMS, *_EC_CURVES)

_PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _pem(key: _PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


class TokenFactory:
    """Makes signed JWTs for tests, with python-jose.

    Every ``sub``-taking method builds the claims of :meth:`valid` and then spoils exactly one
    thing, so a test that expects a refusal fails for the reason it names. Keyword claims
    passed to those methods override the generated ones; a claim passed as ``None`` is left
    out of the token (e.g. ``valid(exp=None)`` for a token that never expires).

    Args:
        secret: The HMAC secret for ``HS*`` algorithms. When neither ``secret`` nor
            ``private_key`` is given, a random 48-byte secret is generated; read it back from
            :attr:`secret` to configure the verifier.
        algorithm: ``HS256``/``HS384``/``HS512``, ``RS256``/``RS384``/``RS512`` or
            ``ES256``/``ES384``/``ES512``.
        private_key: A PEM private key (RSA for ``RS*``, EC on the matching curve for
            ``ES*``). Required for those algorithms, refused for ``HS*``.
        audience: The ``aud`` claim of valid tokens, or None to leave it out.
        issuer: The ``iss`` claim of valid tokens, or None to leave it out.
        kid: The ``kid`` header of every token, or None to leave it out.
        ttl: Lifetime of valid tokens, in seconds: ``exp`` is ``iat + ttl``.
    """

    def __init__(
        self,
        secret: str | bytes | None = None,
        *,
        algorithm: str = "HS256",
        private_key: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        kid: str | None = None,
        ttl: float = 300,
    ) -> None:
        if algorithm not in _SUPPORTED:
            raise ConfigurationError(
                f"algorithm={algorithm!r} is not supported: use one of {', '.join(_SUPPORTED)}."
            )
        if ttl <= 0:
            raise ConfigurationError(f"ttl={ttl!r} must be a positive number of seconds.")
        self._private_key: _PrivateKey | None = None
        if algorithm in _HMAC_ALGORITHMS:
            if private_key is not None:
                raise ConfigurationError(
                    f"private_key is for RS*/ES* algorithms; {algorithm} signs with secret=."
                )
            if secret is not None and len(secret) == 0:
                raise ConfigurationError("secret must not be empty; pass None for a random one.")
            self.secret: str | bytes | None = (
                secret if secret is not None else secrets.token_urlsafe(48)
            )
        else:
            if secret is not None:
                raise ConfigurationError(
                    f"secret is for HS* algorithms; {algorithm} signs with private_key= (PEM)."
                )
            if private_key is None:
                raise ConfigurationError(f"{algorithm} needs private_key= (a PEM private key).")
            self._private_key = self._load_private_key(private_key, algorithm)
            self.secret = None
        self.algorithm = algorithm
        self.private_key = private_key
        self.audience = audience
        self.issuer = issuer
        self.kid = kid
        self.ttl = ttl
        self._wrong_key: str | bytes | None = None

    @staticmethod
    def _load_private_key(pem: str, algorithm: str) -> _PrivateKey:
        try:
            key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"private_key could not be loaded as an unencrypted PEM private key: {exc}"
            ) from exc
        if algorithm in _RSA_ALGORITHMS:
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ConfigurationError(f"{algorithm} needs an RSA private_key.")
            return key
        curve = _EC_CURVES[algorithm]
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, curve):
            raise ConfigurationError(f"{algorithm} needs an EC private_key on {curve.name}.")
        return key

    @property
    def public_key(self) -> str | None:
        """The PEM public key matching ``private_key``; None for ``HS*`` algorithms."""
        if self._private_key is None:
            return None
        return (
            self._private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )

    @property
    def verification_key(self) -> str | bytes:
        """The key a verifier needs: the secret for ``HS*``, the PEM public key otherwise."""
        if self.secret is not None:
            return self.secret
        public_key = self.public_key
        assert public_key is not None  # set whenever secret is not
        return public_key

    @staticmethod
    def subprotocol(token: str, prefix: str = DEFAULT_SUBPROTOCOL_PREFIX) -> str:
        """The ``Sec-WebSocket-Protocol`` entry carrying ``token``: prefix + unpadded base64url."""
        return encode_subprotocol(token, prefix)

    def encode(self, claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None) -> str:
        """Sign exactly ``claims`` with the configured key.

        Args:
            claims: The payload, unchanged: nothing is added.
            headers: Extra JOSE header fields; ``kid`` is added when configured.
        """
        return self._sign(claims, headers, self._key())

    def valid(
        self,
        sub: str = "user-1",
        *,
        ttl: float | None = None,
        scopes: Sequence[str] = (),
        **claims: Any,
    ) -> str:
        """A token every correctly configured verifier accepts.

        Args:
            sub: The ``sub`` claim.
            ttl: Lifetime in seconds; defaults to the factory's ``ttl``.
            scopes: Joined with spaces into the ``scope`` claim; left out when empty.
            claims: Extra claims; they override the generated ones.
        """
        return self.encode(self._claims(sub, ttl=ttl, scopes=scopes, extra=claims))

    def expired(self, sub: str = "user-1", *, ago: float = 60, **claims: Any) -> str:
        """A token whose ``exp`` passed ``ago`` seconds ago."""
        exp = int(time.time() - ago)
        iat = int(exp - self.ttl)
        return self.encode(self._claims(sub, now=iat, extra=claims))

    def not_yet_valid(self, sub: str = "user-1", *, in_: float = 300, **claims: Any) -> str:
        """A token whose ``nbf`` is ``in_`` seconds in the future."""
        nbf = int(time.time() + in_)
        extra = {"nbf": nbf, "exp": int(nbf + self.ttl), **claims}
        return self.encode(self._claims(sub, extra=extra))

    def issued_in_future(self, sub: str = "user-1", *, in_: float = 300, **claims: Any) -> str:
        """A token whose ``iat`` is ``in_`` seconds in the future (python-jose accepts it)."""
        iat = int(time.time() + in_)
        return self.encode(self._claims(sub, now=iat, extra=claims))

    def wrong_signature(self, sub: str = "user-1", **claims: Any) -> str:
        """Valid claims signed with another key of the same algorithm."""
        return self._sign(self._claims(sub, extra=claims), None, self._other_key())

    def wrong_audience(self, sub: str = "user-1", **claims: Any) -> str:
        """A token for another audience than the configured one (or for one when none is)."""
        audience = f"not-{self.audience}" if self.audience else "https://other-audience.invalid"
        return self.encode(self._claims(sub, extra={"aud": audience, **claims}))

    def wrong_issuer(self, sub: str = "user-1", **claims: Any) -> str:
        """A token from another issuer than the configured one (or from one when none is)."""
        issuer = f"not-{self.issuer}" if self.issuer else "https://other-issuer.invalid"
        return self.encode(self._claims(sub, extra={"iss": issuer, **claims}))

    def alg_none(self, sub: str = "user-1", **claims: Any) -> str:
        """An unsigned token: header ``{"alg": "none"}`` and an empty signature.

        python-jose refuses to produce one, so it is assembled by hand; it ends with ``.``.
        """
        header = {"alg": "none", "typ": "JWT"}
        payload = self._claims(sub, extra=claims)
        parts = (json.dumps(part, separators=(",", ":")).encode() for part in (header, payload))
        return ".".join(_base64url(part) for part in parts) + "."

    def _claims(
        self,
        sub: str,
        *,
        now: int | None = None,
        ttl: float | None = None,
        scopes: Sequence[str] = (),
        extra: Mapping[str, Any],
    ) -> dict[str, Any]:
        iat = int(time.time()) if now is None else now
        claims: dict[str, Any] = {
            "sub": sub,
            "iat": iat,
            "exp": int(iat + (self.ttl if ttl is None else ttl)),
        }
        if self.audience is not None:
            claims["aud"] = self.audience
        if self.issuer is not None:
            claims["iss"] = self.issuer
        if scopes:
            claims["scope"] = " ".join(scopes)
        claims.update(extra)
        return {name: value for name, value in claims.items() if value is not None}

    def _key(self) -> str | bytes:
        if self.secret is not None:
            return self.secret
        assert self._private_key is not None  # set whenever secret is not
        return _pem(self._private_key)

    def _other_key(self) -> str | bytes:
        # Generated once per factory: RSA key generation takes tens of milliseconds.
        if self._wrong_key is None:
            if self.algorithm in _HMAC_ALGORITHMS:
                self._wrong_key = secrets.token_urlsafe(48)
            elif self.algorithm in _RSA_ALGORITHMS:
                self._wrong_key = _pem(rsa.generate_private_key(65537, 2048))
            else:
                self._wrong_key = _pem(ec.generate_private_key(_EC_CURVES[self.algorithm]()))
        return self._wrong_key

    def _sign(
        self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None, key: str | bytes
    ) -> str:
        all_headers = dict(headers or {})
        if self.kid is not None:
            all_headers.setdefault("kid", self.kid)
        return jwt.encode(dict(claims), key, algorithm=self.algorithm, headers=all_headers or None)
