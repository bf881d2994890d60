"""JWTVerifier: local JWT verification with python-jose behind a hardened wrapper.

The wrapper applies the RFC 8725 (JWT Best Current Practices) rules that a JOSE library leaves
to its caller: an explicit algorithm list that cannot mix HMAC with public-key algorithms, a
length and shape check before anything is decoded, keys chosen from a static set (a ``kid`` is
only ever a dictionary key; ``jku``, ``x5u`` and ``jwk`` headers are never followed), strict
types for the time claims, and no exception escaping other than the documented ones.
"""

from __future__ import annotations

import binascii
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose.backends.cryptography_backend import (
    CryptographyECKey,
    CryptographyHMACKey,
    CryptographyRSAKey,
)

from wsgate import _options
from wsgate.auth.base import Identity, scopes_from_claims, timestamp
from wsgate.auth.jwks import RemoteJWKS
from wsgate.auth.secrets_file import SecretsFile
from wsgate.exceptions import ConfigurationError, InvalidToken, TokenExpired

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})
_KEY_TYPES = {"RS": "RSA", "ES": "EC"}
# python-jose's own choice (jwk.construct) falls back to its ecdsa backend, whose timing side
# channel (CVE-2024-23342) will not be fixed, when cryptography's cannot be imported: naming
# cryptography's key classes means every signature is checked by cryptography, or none is.
_KEY_CLASSES = {"HS": CryptographyHMACKey, "RS": CryptographyRSAKey, "ES": CryptographyECKey}
# ES algorithm -> (cryptography's curve name, the JWK "crv")
_CURVES = {
    "ES256": ("secp256r1", "P-256"),
    "ES384": ("secp384r1", "P-384"),
    "ES512": ("secp521r1", "P-521"),
}
_MIN_SECRET_BYTES = 32
_COMPACT_JWS = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


class JWTVerifier:
    """Verify JWTs locally against shared secrets, a file of them, a PEM public key or a JWKS.

    Args:
        algorithms: The accepted ``alg`` values, e.g. ``["HS256"]`` or ``["RS256", "ES256"]``.
            Required. HMAC and public-key algorithms cannot be mixed: a verifier that accepts
            both can be tricked into checking an HMAC made with the public key.
        secret: The shared secret for HS* algorithms, at least 32 bytes; or a list of them,
            the newest first, while a secret is rotated: a token signed with any of them
            verifies.
        secrets_file: For HS* algorithms, the path of a file that holds the secrets, one per
            line, the newest first (blank lines and lines starting with ``#`` do not count),
            each at least 32 bytes. It is read at construction, and again when it changes
            (os.stat, at most once per second, on the way of a token): a secret rotates with
            no restart. A changed file that cannot be used changes nothing, and is logged.
        public_key: A PEM-encoded public key for RS*/ES* algorithms.
        jwks: For RS*/ES* algorithms, a JWKS document (``{"keys": [...]}``), or a
            :class:`~wsgate.RemoteJWKS` that fetches it from the identity provider's URL and
            follows its key rotation. The token's ``kid`` selects the key; with a single key,
            ``kid`` may be absent.
        audience: When set, ``aud`` is required and must contain it. When not set, tokens that
            carry an ``aud`` are refused (RFC 7519: the recipient must identify itself).
        issuer: When set, ``iss`` is required and must equal it.
        leeway: Allowed clock skew for ``exp``, ``nbf`` and ``iat``, in seconds.
        require_exp: Refuse tokens without ``exp``. On by default; turn off only for tokens
            whose lifetime something else bounds.
        max_token_bytes: Longer tokens are refused before any decoding, in bytes.
        clock: The monotonic clock, in seconds, that spaces the looks at ``secrets_file``;
            a test gives its own to pass the second without waiting.
    """

    def __init__(
        self,
        *,
        algorithms: Sequence[str],
        secret: str | bytes | Sequence[str | bytes] | None = None,
        secrets_file: str | os.PathLike[str] | None = None,
        public_key: str | bytes | None = None,
        jwks: Mapping[str, Any] | RemoteJWKS | None = None,
        # Claims
        audience: str | None = None,
        issuer: str | None = None,
        require_exp: bool = True,
        # Limits
        leeway: float = 10.0,
        max_token_bytes: int = 8192,
        # Testing
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.algorithms = _check_algorithms(algorithms)
        self.audience = audience
        self.issuer = issuer
        self.require_exp = require_exp
        self.leeway = _options.seconds("leeway", leeway)
        self.max_token_bytes = _options.count("max_token_bytes", max_token_bytes, unit="bytes")
        # Keys are built once: (kid, alg) -> key. kid None is the key for tokens without one.
        self._keys = _build_keys(self.algorithms, secret, secrets_file, public_key, jwks)
        self._remote = jwks if isinstance(jwks, RemoteJWKS) else None
        self._file: SecretsFile | None = None
        if secrets_file is not None:
            accepted = self.algorithms
            self._file = SecretsFile(
                secrets_file, build=lambda secrets: _hmac_keys(accepted, secrets), clock=clock
            )

    async def verify(self, token: str) -> Identity:
        """Verify ``token``. Raises InvalidToken or TokenExpired, never anything else; with a
        RemoteJWKS, also AuthUnavailable when its keys cannot be had in time."""
        if self._remote is None:
            return self.verify_sync(token)
        signing_input, header, payload, signature = self._split(token)
        kid, alg = self._kid_and_alg(header)
        return self._verified(await self._remote.key(kid, alg), signing_input, payload, signature)

    def verify_sync(self, token: str) -> Identity:
        """The same as :meth:`verify`, for callers that are not async (it never blocks).

        With a RemoteJWKS it uses only the keys already fetched, and fetches nothing.
        """
        signing_input, header, payload, signature = self._split(token)
        return self._verified(self._select_key(header), signing_input, payload, signature)

    async def aclose(self) -> None:
        """Stop the RemoteJWKS's fetch in progress, if any; call it at shutdown."""
        if self._remote is not None:
            await self._remote.aclose()

    def _split(self, token: str) -> tuple[bytes, dict[str, Any], bytes, bytes]:
        """The signing input, the parsed header, the payload segment and the signature."""
        try:
            raw = token.encode("ascii")
        except (UnicodeEncodeError, AttributeError):
            raise InvalidToken("the token is not an ASCII string") from None
        if len(raw) > self.max_token_bytes:
            raise InvalidToken(f"the token is longer than {self.max_token_bytes} bytes")
        if not _COMPACT_JWS.fullmatch(raw):
            raise InvalidToken("the token is not three base64url segments (a compact JWS)")
        signing_input, _, signature = raw.rpartition(b".")
        header_segment, _, payload_segment = signing_input.partition(b".")
        header = _parse_json_object(_unpadded(header_segment, "header"), "header")
        return signing_input, header, payload_segment, signature

    def _verified(
        self, key: Any, signing_input: bytes, payload_segment: bytes, signature: bytes
    ) -> Identity:
        # The key is python-jose's (its cryptography backend), checking the signature as
        # jws.verify would once it had parsed the token again: this wrapper has parsed and
        # checked it.
        try:
            verified = key.verify(signing_input, _unpadded(signature, "signature"))
        except Exception:  # any failure inside the JOSE library is a bad token, nothing more
            verified = False
        if not verified:
            raise InvalidToken("the signature does not verify")
        claims = _parse_json_object(_unpadded(payload_segment, "payload"), "payload")
        return self._check_claims(claims)

    def _kid_and_alg(self, header: dict[str, Any]) -> tuple[str | None, str]:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidToken(f"alg {alg!r} is not one of the accepted algorithms")
        if "crit" in header:
            raise InvalidToken("the token marks header parameters critical; none are supported")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("kid is not a string")
        return kid, alg

    def _select_key(self, header: dict[str, Any]) -> Any:
        kid, alg = self._kid_and_alg(header)
        if self._remote is not None:
            return self._remote.cached_key(kid, alg)
        keys = self._keys if self._file is None else self._file.keys()
        key = keys.get((kid, alg)) or keys.get((None, alg))
        if key is None:
            raise InvalidToken(f"no key with kid {kid!r} for alg {alg}")
        return key

    def _check_claims(self, claims: dict[str, Any]) -> Identity:
        now = time.time()
        exp = _time_claim(claims, "exp")
        if exp is None and self.require_exp:
            raise InvalidToken("the token has no exp claim")
        if exp is not None and now - self.leeway >= exp:
            raise TokenExpired("the token's exp has passed")
        nbf = _time_claim(claims, "nbf")
        if nbf is not None and now + self.leeway < nbf:
            raise InvalidToken("the token is not valid yet (nbf is in the future)")
        iat = _time_claim(claims, "iat")
        if iat is not None and iat > now + self.leeway:
            raise InvalidToken("the token was issued in the future (iat)")
        self._check_audience(claims)
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise InvalidToken("iss is not the configured issuer")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("the token has no sub claim to identify the user")
        return Identity(subject, claims, scopes_from_claims(claims), exp)

    def _check_audience(self, claims: dict[str, Any]) -> None:
        if "aud" not in claims:
            if self.audience is not None:
                raise InvalidToken("the token has no aud claim")
            return
        aud = claims["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise InvalidToken("aud is neither a string nor a list of strings")
        if self.audience is None:
            raise InvalidToken(
                "the token names an audience but JWTVerifier has none configured; set audience="
            )
        if self.audience not in audiences:
            raise InvalidToken("aud does not include the configured audience")


def _check_algorithms(algorithms: Sequence[str]) -> frozenset[str]:
    if isinstance(algorithms, str) or not algorithms:
        raise ConfigurationError(
            f"algorithms must be a non-empty list such as ['HS256'], not {algorithms!r}."
        )
    chosen = frozenset(algorithms)
    unknown = chosen - HMAC_ALGORITHMS - PUBLIC_KEY_ALGORITHMS
    if unknown:
        raise ConfigurationError(
            f"algorithms {sorted(unknown)} are not supported for verification; choose from "
            f"{sorted(HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS)} ('none' is never accepted)."
        )
    if chosen & HMAC_ALGORITHMS and chosen & PUBLIC_KEY_ALGORITHMS:
        raise ConfigurationError(
            f"algorithms {sorted(chosen)} mix HMAC with public-key algorithms, which lets a "
            "public key be used as an HMAC secret. Use one family per verifier."
        )
    return chosen


def _build_keys(
    algorithms: frozenset[str],
    secret: str | bytes | Sequence[str | bytes] | None,
    secrets_file: str | os.PathLike[str] | None,
    public_key: str | bytes | None,
    jwks: Mapping[str, Any] | RemoteJWKS | None,
) -> dict[tuple[str | None, str], Any]:
    sources = [
        ("secret", secret),
        ("secrets_file", secrets_file),
        ("public_key", public_key),
        ("jwks", jwks),
    ]
    given = [name for name, value in sources if value is not None]
    if len(given) != 1:
        raise ConfigurationError(
            "give exactly one of secret=, secrets_file=, public_key= or jwks=, not "
            f"{given or 'none'}."
        )
    if algorithms <= HMAC_ALGORITHMS:
        if secret is None and secrets_file is None:
            raise ConfigurationError(
                f"algorithms {sorted(algorithms)} are HMAC and need secret=, not {given[0]}=."
            )
        if secret is None:
            return {}  # read from the file, and again when it changes: see SecretsFile
        return _hmac_keys(algorithms, secret)
    if secret is not None or secrets_file is not None:
        raise ConfigurationError(
            f"algorithms {sorted(algorithms)} are public-key algorithms and need public_key= "
            f"or jwks=, not {given[0]}=."
        )
    if public_key is not None:
        return _pem_keys(algorithms, public_key)
    if isinstance(jwks, RemoteJWKS):
        return {}  # fetched from its URL when tokens need them
    assert jwks is not None
    return _jwks_keys(algorithms, jwks)


def _hmac_keys(
    algorithms: frozenset[str], secret: str | bytes | Sequence[str | bytes]
) -> dict[tuple[str | None, str], Any]:
    return {(None, alg): _hmac_key(secret, alg) for alg in algorithms}


def _hmac_key(secret: str | bytes | Sequence[str | bytes], alg: str) -> Any:
    """The key for ``alg`` from one secret, or a key that tries several in turn."""
    several = not isinstance(secret, (str, bytes))
    secrets = list(secret) if several else [secret]
    if not secrets:
        raise ConfigurationError("secret= is an empty list; give at least one secret.")
    keys = []
    for number, one in enumerate(secrets, 1):
        raw = one.encode() if isinstance(one, str) else one
        if not isinstance(raw, bytes):
            raise ConfigurationError(f"secret= holds {type(one).__name__}, not str or bytes.")
        if len(raw) < _MIN_SECRET_BYTES:
            which = f"secret #{number} (of {len(secrets)})" if several else "secret"
            raise ConfigurationError(
                f"the HMAC {which} is {len(raw)} bytes; use at least {_MIN_SECRET_BYTES} "
                "random bytes (python -c 'import secrets; print(secrets.token_urlsafe(48))')."
            )
        keys.append(_construct(raw, alg, "secret"))
    return keys[0] if len(keys) == 1 else _AnyKey(tuple(keys))


class _AnyKey:
    """Several HMAC keys of one algorithm, tried in order: secrets during a rotation."""

    __slots__ = ("keys",)

    def __init__(self, keys: tuple[Any, ...]) -> None:
        self.keys = keys

    def verify(self, msg: bytes, sig: bytes) -> bool:
        return any(key.verify(msg, sig) for key in self.keys)


def _jwks_keys(
    algorithms: frozenset[str], jwks: Mapping[str, Any]
) -> dict[tuple[str | None, str], Any]:
    entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError("jwks must be a JWKS document: {'keys': [<at least one JWK>]}.")
    keys: dict[tuple[str | None, str], Any] = {}
    signing = [e for e in entries if isinstance(e, Mapping) and e.get("use", "sig") == "sig"]
    for entry in signing:
        kid = entry.get("kid")
        if len(signing) > 1 and not isinstance(kid, str):
            raise ConfigurationError("every key of a JWKS with several keys needs a string kid.")
        for alg in algorithms:
            if entry.get("kty") != _KEY_TYPES[alg[:2]] or entry.get("alg", alg) != alg:
                continue
            if alg in _CURVES and entry.get("crv") != _CURVES[alg][1]:
                continue
            key = _construct(dict(entry), alg, f"jwks key {kid!r}")
            keys[(kid, alg)] = key
            if len(signing) == 1:
                keys[(None, alg)] = key
    if not keys:
        raise ConfigurationError(
            f"jwks has no signing key usable with algorithms {sorted(algorithms)}."
        )
    return keys


def _pem_keys(algorithms: frozenset[str], pem: str | bytes) -> dict[tuple[str | None, str], Any]:
    loaded = _load_public_key(pem)
    usable = sorted(alg for alg in algorithms if _fits(loaded, alg))
    if not usable:
        raise ConfigurationError(
            f"public_key is {type(loaded).__name__.removeprefix('_')}, which cannot verify "
            f"any of {sorted(algorithms)}: RS* need an RSA key, and ES256, ES384 and ES512 "
            "an EC key on P-256, P-384 and P-521."
        )
    return {(None, alg): _construct(pem, alg, "public_key") for alg in usable}


def _load_public_key(pem: str | bytes) -> Any:
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass
    try:
        return x509.load_pem_x509_certificate(data).public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigurationError(
            "public_key is not a PEM public key or certificate: give the text that starts "
            "with '-----BEGIN PUBLIC KEY-----' (or '-----BEGIN CERTIFICATE-----')."
        ) from None


def _fits(key: Any, alg: str) -> bool:
    if alg in _CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _CURVES[alg][0]
    return isinstance(key, rsa.RSAPublicKey)


def _construct(key: Any, alg: str, what: str) -> Any:
    try:
        return _KEY_CLASSES[alg[:2]](key, alg)
    except Exception as exc:
        raise ConfigurationError(f"{what} cannot be used with {alg}: {exc}") from None


def _unpadded(segment: bytes, what: str) -> bytes:
    """A base64url segment of a compact JWS, which leaves out the padding, decoded.

    The token matched ``_COMPACT_JWS``, so the segment holds only base64url characters:
    binascii decodes it directly, without base64.urlsafe_b64decode's checks and copies.
    """
    try:
        return binascii.a2b_base64(segment.translate(_FROM_URLSAFE) + b"=" * (-len(segment) % 4))
    except binascii.Error:
        raise InvalidToken(f"the {what} is not base64url") from None


def _parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidToken(f"the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidToken(f"the {what} is not a JSON object")
    return value


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    return timestamp(claims[name], name) if name in claims else None
