"""Where a token can travel in a WebSocket handshake, and how to read it from there.

Sources, in order: ``Authorization: Bearer <jwt>``; ``Sec-WebSocket-Protocol`` entries of the
form ``<prefix><base64url(jwt) without padding>`` (browsers cannot set headers on a
WebSocket); and, only when enabled, a query-string parameter.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from wsgate.exceptions import ConfigurationError, InvalidToken

DEFAULT_SUBPROTOCOL_PREFIX = "base64url.bearer."
"""The subprotocol prefix wsgate reads tokens from unless told otherwise."""

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
# RFC 6455 subprotocols are HTTP tokens: no separators, no spaces.
_SUBPROTOCOL_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True)
class Handshake:
    """What token extraction found in one handshake.

    Attributes:
        token: The token, or None when none was offered.
        via_subprotocol: True when a token entry was offered in ``Sec-WebSocket-Protocol``.
        subprotocols: The offered subprotocols with every token entry removed.
        error: Why the offered token cannot be used (garbled, or sources disagree), for the
            server log; None when the token, if any, can go on to verification.
    """

    token: str | None
    via_subprotocol: bool
    subprotocols: list[str]
    error: str | None = None


class TokenExtractor:
    """Reads the token of a handshake from its headers, subprotocols and query string.

    Args:
        header: Read ``Authorization: Bearer``.
        subprotocol_prefixes: Prefixes that mark a ``Sec-WebSocket-Protocol`` entry as a
            token, e.g. ``"base64url.bearer.authorization.k8s.io."`` for Kubernetes-style
            clients. An empty list turns the subprotocol source off.
        query_param: The query-string parameter to read, or None (the default) to ignore the
            query string. Query strings end up in access logs and browser history, so a token
            sent there can leak; enable it only for clients that have no other way.
    """

    def __init__(
        self,
        *,
        header: bool = True,
        subprotocol_prefixes: Sequence[str] = (DEFAULT_SUBPROTOCOL_PREFIX,),
        query_param: str | None = None,
    ) -> None:
        if isinstance(subprotocol_prefixes, str):
            subprotocol_prefixes = [subprotocol_prefixes]
        for prefix in subprotocol_prefixes:
            if not _SUBPROTOCOL_TOKEN.fullmatch(prefix):
                raise ConfigurationError(
                    f"subprotocol prefix {prefix!r} cannot appear in Sec-WebSocket-Protocol: "
                    "use letters, digits and '.', '-', '_' only."
                )
        if query_param is not None and not query_param:
            raise ConfigurationError("query_param must be a parameter name or None, not ''.")
        self.header = header
        # Longest first, so a specific prefix wins over a shorter one it starts with.
        self.prefixes = tuple(sorted(subprotocol_prefixes, key=len, reverse=True))
        self.query_param = query_param

    def extract(
        self, headers: Sequence[tuple[bytes, bytes]], subprotocols: Sequence[str], query: bytes
    ) -> Handshake:
        """Find the token of a handshake, and the subprotocols left once it is taken out."""
        offered: list[str] = []
        token_entries: list[str] = []
        for entry in subprotocols:
            prefix = next((p for p in self.prefixes if entry.startswith(p)), None)
            if prefix is None:
                offered.append(entry)
            else:
                token_entries.append(entry[len(prefix) :])
        try:
            token = self._token(headers, token_entries, query)
        except InvalidToken as exc:
            return Handshake(None, bool(token_entries), offered, str(exc))
        return Handshake(token, bool(token_entries), offered)

    def _token(
        self, headers: Sequence[tuple[bytes, bytes]], token_entries: list[str], query: bytes
    ) -> str | None:
        found = {_decode_base64url(entry) for entry in token_entries}
        if self.header:
            bearer = _bearer(headers)
            if bearer is not None:
                found.add(bearer)
        if self.query_param is not None:
            for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
                if name == self.query_param:
                    found.add(value)
        if len(found) > 1:
            raise InvalidToken("the handshake carries more than one distinct token")
        token = found.pop() if found else None
        if token == "":
            raise InvalidToken("the offered token is empty")
        return token


def _bearer(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    values = [value for name, value in headers if name == b"authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise InvalidToken("the handshake has more than one Authorization header")
    scheme, _, credentials = values[0].partition(b" ")
    if scheme.lower() != b"bearer":
        return None  # another scheme (Basic for a proxy, say) is not ours to judge
    try:
        return credentials.strip().decode("ascii")
    except UnicodeDecodeError:
        raise InvalidToken("the bearer token is not ASCII") from None


def _decode_base64url(data: str) -> str:
    if not _BASE64URL.fullmatch(data):
        raise InvalidToken("a subprotocol token entry is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidToken("a subprotocol token entry does not decode to an ASCII token") from None


def encode_subprotocol(token: str, prefix: str = DEFAULT_SUBPROTOCOL_PREFIX) -> str:
    """The ``Sec-WebSocket-Protocol`` entry that carries ``token``, as clients must send it."""
    return prefix + base64.urlsafe_b64encode(token.encode("ascii")).decode("ascii").rstrip("=")
