"""TokenExtractor: where a token travels in a handshake, and every way it can be garbled."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import pytest
from jose import jwt

from wsgate import DEFAULT_SUBPROTOCOL_PREFIX, ConfigurationError, encode_subprotocol
from wsgate.auth.tokens import Handshake, TokenExtractor

K8S_PREFIX = "base64url.bearer.authorization.k8s.io."
SECRET = "a-secret-for-the-token-extraction-tests-0123456789"
TOKEN = jwt.encode({"sub": "user-1"}, SECRET, algorithm="HS256")
OTHER = jwt.encode({"sub": "user-2"}, SECRET, algorithm="HS256")

Headers = list[tuple[bytes, bytes]]


def bearer(value: str | bytes) -> Headers:
    raw = value.encode() if isinstance(value, str) else value
    return [(b"host", b"example.com"), (b"authorization", raw)]


def extract(
    headers: Sequence[tuple[bytes, bytes]] = (),
    subprotocols: Sequence[str] = (),
    query: bytes = b"",
    **options: Any,
) -> Handshake:
    return TokenExtractor(**options).extract(headers, subprotocols, query)


# Authorization header


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_header(scheme: str) -> None:
    assert extract(bearer(f"{scheme} {TOKEN}")) == Handshake(TOKEN, False, [])


def test_surrounding_whitespace_of_the_credentials_is_dropped() -> None:
    assert extract(bearer(f"Bearer   {TOKEN}  ")).token == TOKEN


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Token abc", f"Bearer{TOKEN}", TOKEN])
def test_other_schemes_are_not_ours(value: str) -> None:
    assert extract(bearer(value)) == Handshake(None, False, [])


def test_header_source_can_be_turned_off() -> None:
    assert extract(bearer(f"Bearer {TOKEN}"), header=False).token is None


def test_two_authorization_headers_are_an_error() -> None:
    headers = [*bearer(f"Bearer {TOKEN}"), (b"authorization", f"Bearer {TOKEN}".encode())]
    handshake = extract(headers)
    assert handshake.token is None
    assert handshake.error == "the handshake has more than one Authorization header"


@pytest.mark.parametrize("value", [b"Bearer ", b"Bearer    "])
def test_empty_bearer_token_is_an_error(value: bytes) -> None:
    handshake = extract(bearer(value))
    assert handshake.token is None
    assert handshake.error == "the offered token is empty"


def test_non_ascii_bearer_token_is_an_error() -> None:
    handshake = extract(bearer("Bearer tökén".encode()))
    assert handshake.token is None
    assert handshake.error == "the bearer token is not ASCII"


# Sec-WebSocket-Protocol


def test_subprotocol_token_is_decoded_and_removed() -> None:
    entry = encode_subprotocol(TOKEN)
    handshake = extract(subprotocols=["chat", entry, "mcp"])
    assert handshake == Handshake(TOKEN, True, ["chat", "mcp"])


def test_subprotocol_token_alone() -> None:
    assert extract(subprotocols=[encode_subprotocol(TOKEN)]) == Handshake(TOKEN, True, [])


def test_no_token_anywhere() -> None:
    assert extract(subprotocols=["chat"]) == Handshake(None, False, ["chat"])


@pytest.mark.parametrize(
    "prefixes",
    [(DEFAULT_SUBPROTOCOL_PREFIX, K8S_PREFIX), (K8S_PREFIX, DEFAULT_SUBPROTOCOL_PREFIX)],
)
def test_longest_prefix_wins(prefixes: tuple[str, str]) -> None:
    k8s = encode_subprotocol(TOKEN, K8S_PREFIX)
    default = encode_subprotocol(TOKEN)
    assert extract(subprotocols=["chat", k8s], subprotocol_prefixes=prefixes) == Handshake(
        TOKEN, True, ["chat"]
    )
    assert extract(subprotocols=[default], subprotocol_prefixes=prefixes).token == TOKEN
    # The same token under both prefixes is one token, not two.
    assert extract(subprotocols=[default, k8s], subprotocol_prefixes=prefixes).token == TOKEN


def test_k8s_entry_without_the_k8s_prefix_configured_is_garbled() -> None:
    handshake = extract(subprotocols=[encode_subprotocol(TOKEN, K8S_PREFIX)])
    assert handshake.token is None
    assert handshake.via_subprotocol is True
    assert handshake.error == "a subprotocol token entry is not unpadded base64url"


def test_subprotocol_source_can_be_turned_off() -> None:
    entry = encode_subprotocol(TOKEN)
    assert extract(subprotocols=[entry], subprotocol_prefixes=[]) == Handshake(None, False, [entry])


@pytest.mark.parametrize(
    "encoded",
    [
        base64.urlsafe_b64encode(b"abcd").decode(),  # 'YWJjZA==': padded
        "YWJjZA=",
        base64.b64encode(b"\xfb\xff\xfe").decode(),  # '+//+': standard, not url-safe, alphabet
        "ab cd",
        "ab.cd",
        "",
        "abcde",  # five characters cannot be base64
        base64.urlsafe_b64encode("tökén".encode()).decode().rstrip("="),  # not ASCII once decoded
    ],
)
def test_garbled_subprotocol_entry_is_an_error(encoded: str) -> None:
    handshake = extract(subprotocols=["chat", DEFAULT_SUBPROTOCOL_PREFIX + encoded])
    assert handshake.token is None
    assert handshake.via_subprotocol is True
    assert handshake.subprotocols == ["chat"]
    assert handshake.error is not None
    assert "subprotocol token entry" in handshake.error


def test_two_different_subprotocol_tokens_are_an_error() -> None:
    handshake = extract(subprotocols=[encode_subprotocol(TOKEN), encode_subprotocol(OTHER)])
    assert handshake.token is None
    assert handshake.error == "the handshake carries more than one distinct token"


# Several sources


def test_header_and_subprotocol_with_the_same_token() -> None:
    handshake = extract(bearer(f"Bearer {TOKEN}"), ["chat", encode_subprotocol(TOKEN)])
    assert handshake == Handshake(TOKEN, True, ["chat"])


def test_header_and_subprotocol_with_different_tokens_are_an_error() -> None:
    handshake = extract(bearer(f"Bearer {TOKEN}"), ["chat", encode_subprotocol(OTHER)])
    assert handshake == Handshake(
        None, True, ["chat"], "the handshake carries more than one distinct token"
    )


def test_query_parameter_is_ignored_by_default() -> None:
    assert extract(query=f"access_token={TOKEN}".encode()) == Handshake(None, False, [])


def test_query_parameter_when_configured() -> None:
    query = f"room=1&access_token={TOKEN}".encode()
    assert extract(query=query, query_param="access_token").token == TOKEN
    assert extract(query=b"room=1", query_param="access_token").token is None
    other = f"access_token={OTHER}".encode()
    handshake = extract(bearer(f"Bearer {TOKEN}"), query=other, query_param="access_token")
    assert handshake.token is None
    assert handshake.error == "the handshake carries more than one distinct token"
    same = f"access_token={TOKEN}".encode()
    assert extract(bearer(f"Bearer {TOKEN}"), query=same, query_param="access_token").token == (
        TOKEN
    )


def test_empty_query_parameter_is_an_error() -> None:
    handshake = extract(query=b"access_token=", query_param="access_token")
    assert handshake.token is None
    assert handshake.error == "the offered token is empty"


@pytest.mark.parametrize("query", [b"%E2%82%AC=1", b"%FF=1&access_token=x"])
def test_hostile_query_names_do_not_crash_extraction(query: bytes) -> None:
    handshake = extract(query=query, query_param="access_token")
    assert handshake.error is None


# Configuration


@pytest.mark.parametrize(
    "prefix", ["", "bearer token.", "bearer,token.", "bearer/token.", 'bearer"', "bearér."]
)
def test_prefix_that_cannot_be_a_subprotocol_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot appear in Sec-WebSocket-Protocol"):
        TokenExtractor(subprotocol_prefixes=[DEFAULT_SUBPROTOCOL_PREFIX, prefix])


def test_a_single_prefix_string_is_one_prefix() -> None:
    extractor = TokenExtractor(subprotocol_prefixes=K8S_PREFIX)
    assert extractor.prefixes == (K8S_PREFIX,)


def test_empty_query_param_name_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="query_param"):
        TokenExtractor(query_param="")


# encode_subprotocol


@pytest.mark.parametrize("prefix", [DEFAULT_SUBPROTOCOL_PREFIX, K8S_PREFIX])
def test_encode_subprotocol_round_trip(prefix: str) -> None:
    extractor = TokenExtractor(subprotocol_prefixes=[DEFAULT_SUBPROTOCOL_PREFIX, K8S_PREFIX])
    # Lengths 1 to 40 give every base64 padding case; the JWTs are realistic ones.
    tokens = [TOKEN, OTHER, "x" * 8000] + ["a.b-c_d~e+/="[: n % 12 + 1] * n for n in range(1, 41)]
    for token in tokens:
        entry = encode_subprotocol(token, prefix)
        assert entry.startswith(prefix)
        assert "=" not in entry
        handshake = extractor.extract([], ["chat", entry], b"")
        assert handshake == Handshake(token, True, ["chat"]), token
