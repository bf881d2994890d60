"""What the fuzzers found, as readable regression tests (the inputs are in the corpus too)."""

from __future__ import annotations

import pytest

from wsgate.middleware.origin import OriginMiddleware, normalise_origin


@pytest.mark.parametrize(
    "raw",
    [
        # urlsplit skips whatever sits between an IPv6 literal's "]" and the port, so these
        # were read as https://[::1]:8443 and let in (fuzz_origin).
        b"https://[::1]null:8443",
        b"https://[::1]APP.Example.COM:08443",
        b"https://[::1].evil.io:8443",
        # A host urlsplit accepts but no browser sends; its normal form did not normalise to
        # itself (fuzz_origin: not canonical).
        b"https:// :443",
        b"https://app example.com",
        b"https://app%2eexample.com",
        b"https://app.example.com\\",
    ],
)
def test_origins_urlsplit_misreads_are_refused(raw: bytes) -> None:
    assert normalise_origin(raw) is None
    middleware = OriginMiddleware(
        None,  # type: ignore[arg-type]  # only is_allowed() is called
        allow_origins=["https://[::1]:8443", "https://app.example.com"],
    )
    assert not middleware.is_allowed([(b"origin", raw)])


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (b"https://[::1]:8443", "https://[::1]:8443"),
        (b"HTTPS://[::1]:08443", "https://[::1]:8443"),
        (b"https://App.Example.com:443", "https://app.example.com"),
        (b"http://internal_host:8080", "http://internal_host:8080"),
    ],
)
def test_well_formed_origins_still_normalise(raw: bytes, normal: str) -> None:
    assert normalise_origin(raw) == normal
    assert normalise_origin(normal.encode()) == normal
