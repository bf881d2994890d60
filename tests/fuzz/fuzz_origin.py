"""Fuzz target: Origin normalisation and the allow-list decision (``OriginMiddleware``).

The decision is checked against a strict reference parser written from RFC 6454: an origin is
``scheme "://" host [ ":" port ]`` with a web scheme, a DNS name or bracketed IPv6 host and a
decimal port, compared case-insensitively with default ports dropped. The documented
outcomes: allowed, or refused with HTTP 403 ``origin_not_allowed``. The middleware must never
let in an origin the reference does not read as an allowed one (no lookalike gets in), must let
in every well-formed spelling of an allowed origin, and must never raise.
"""

from __future__ import annotations

import re

from tests.fuzz._input import Input
from wsgate.middleware.origin import OriginMiddleware, normalise_origin

ALLOWED = ("https://app.example.com", "http://localhost:8080", "https://[::1]:8443", "null")
PATTERN = r"https://[a-z0-9-]+\.preview\.example\.com"
MIDDLEWARE = OriginMiddleware(
    None,  # type: ignore[arg-type]  # only is_allowed() is called
    allow_origins=ALLOWED,
    allow_origin_regex=PATTERN,
)
_PATTERN = re.compile(PATTERN)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_REFERENCE = re.compile(
    rf"(?i:(https?|wss?))://((?i:{_LABEL}(?:\.{_LABEL})*)|\[[0-9A-Fa-f:.]+\])(?::([0-9]+))?"
)
# Pieces the fuzzer splices into origins, to reach the lookalikes quickly.
PIECES = [
    b"https://",
    b"HTTP://",
    b"wss://",
    b"app.example.com",
    b"APP.Example.COM",
    b"localhost",
    b"[::1]",
    b"x.preview.example.com",
    b":443",
    b":8080",
    b":08443",
    b"@",
    b".evil.io",
    b"/",
    b"?",
    b"#",
    b"%2e",
    b"\\",
    b" ",
    b"\t",
    b"null",
    b"\xc3\xa9",
]


def reference(raw: bytes) -> str | None:
    """The canonical origin by the strict reference parser, or None."""
    if raw == b"null":
        return "null"
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    match = _REFERENCE.fullmatch(text)
    if match is None:
        return None
    scheme, host, port = match.group(1).lower(), match.group(2).lower(), match.group(3)
    number = None if port is None else int(port)
    if number is not None and number > 65535:
        return None
    if number is None or number == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{number}"


def _origin(given: Input) -> bytes:
    if given.flag():
        return given.raw(80)
    return b"".join(
        given.choice(PIECES) if given.flag() else given.raw(6) for _ in range(given.number(7))
    )


def check(data: bytes) -> None:
    given = Input(data)
    origins = [_origin(given) for _ in range(given.choice([1, 1, 1, 0, 2]))]

    for raw in origins:
        normalised = normalise_origin(raw)
        if normalised is not None:
            assert isinstance(normalised, str)
            # Canonical: normalising the normalised form changes nothing.
            assert normalise_origin(normalised.encode()) == normalised, raw

    headers = [(b"origin", raw) for raw in origins]
    headers.insert(given.number(len(headers) + 1), (b"host", b"app.example.com"))
    allowed = MIDDLEWARE.is_allowed(headers)

    if len(origins) != 1:
        assert not allowed, origins  # no Origin, or two of them: refused
        return
    canonical = reference(origins[0])
    listed = canonical is not None and (canonical in ALLOWED or _PATTERN.fullmatch(canonical))
    if allowed:
        assert listed, f"let in {origins[0]!r}, which is not an allowed origin"
    else:
        assert not listed, f"refused {origins[0]!r}, a spelling of {canonical!r}"


if __name__ == "__main__":
    from tests.fuzz._atheris import fuzz

    fuzz(check)
