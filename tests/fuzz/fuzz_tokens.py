"""Fuzz target: reading the token of a handshake (``wsgate.auth.tokens``).

Headers, ``Sec-WebSocket-Protocol`` entries and the query string are all the client's bytes.
The documented outcomes: no token; a non-empty token for the verifier; or an error that the
auth layer turns into 1008 ``invalid_token``. Token entries never reach the app's
subprotocols. Anything else, an exception included, is a crash.
"""

from __future__ import annotations

from tests.fuzz._input import Input
from wsgate.auth.tokens import DEFAULT_SUBPROTOCOL_PREFIX, TokenExtractor, encode_subprotocol

K8S_PREFIX = "base64url.bearer.authorization.k8s.io."
EXTRACTORS = [
    TokenExtractor(),
    TokenExtractor(subprotocol_prefixes=(DEFAULT_SUBPROTOCOL_PREFIX, K8S_PREFIX)),
    TokenExtractor(subprotocol_prefixes=(), query_param="token"),
    TokenExtractor(header=False, query_param="access_token"),
]
HEADER_NAMES = [b"authorization", b"origin", b"sec-websocket-protocol", b"cookie", b"x"]
SCHEMES = [b"Bearer ", b"bearer ", b"BEARER  ", b"Basic ", b"Bearer", b""]
PREFIXES = ["", DEFAULT_SUBPROTOCOL_PREFIX, K8S_PREFIX, "base64url.bearer", "chat"]
QUERY_NAMES = ["token", "access_token", "token ", "x"]


def check(data: bytes) -> None:
    given = Input(data)
    extractor = given.choice(EXTRACTORS)
    headers = []
    for _ in range(given.number(4)):
        name = given.choice(HEADER_NAMES)
        headers.append((name, given.choice(SCHEMES) + given.raw(80)))
    subprotocols = []
    for _ in range(given.number(4)):
        if given.flag():  # a well-formed entry around a fuzzed token
            token = given.raw(60).decode("latin-1")
            try:
                subprotocols.append(encode_subprotocol(token, given.choice(PREFIXES)))
                continue
            except UnicodeEncodeError:
                pass
        subprotocols.append(given.choice(PREFIXES) + given.text(60))
    query = b"&".join(
        given.choice(QUERY_NAMES).encode() + b"=" + given.raw(40) for _ in range(given.number(3))
    )

    handshake = extractor.extract(headers, subprotocols, query)

    def is_token_entry(entry: str) -> bool:
        return any(entry.startswith(prefix) for prefix in extractor.prefixes)

    assert handshake.subprotocols == [entry for entry in subprotocols if not is_token_entry(entry)]
    assert handshake.via_subprotocol == any(is_token_entry(entry) for entry in subprotocols)
    if handshake.error is not None:
        assert handshake.token is None
        assert isinstance(handshake.error, str)
        assert handshake.error
    else:
        assert handshake.token is None or (isinstance(handshake.token, str) and handshake.token)


if __name__ == "__main__":
    from tests.fuzz._atheris import fuzz

    fuzz(check)
