"""The close-code table: consistent with itself, with the exceptions, and with its docs page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.types import Message

from wsgate import close_codes
from wsgate.close_codes import CLOSE_CODES, Refusal
from wsgate.exceptions import AuthenticationError, AuthUnavailable, InvalidToken, TokenExpired

pytestmark = pytest.mark.anyio

DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "close-codes.md"
SNAKE_CASE = re.compile(r"[a-z]+(_[a-z]+)*")


def test_reasons_are_unique_snake_case_words() -> None:
    reasons = [refusal.reason for refusal in CLOSE_CODES]
    assert len(set(reasons)) == len(reasons)
    for reason in reasons:
        assert SNAKE_CASE.fullmatch(reason), reason
        # RFC 6455: a close frame's payload is at most 125 bytes, 2 of them the code.
        assert len(reason.encode()) <= 123


@pytest.mark.parametrize("refusal", CLOSE_CODES, ids=lambda refusal: refusal.reason)
def test_codes_are_in_valid_ranges(refusal: Refusal) -> None:
    assert (
        refusal.close_code in {1002, 1008, 1009, 1011, 1013} or 4000 <= refusal.close_code <= 4999
    )
    assert refusal.http_status is None or 400 <= refusal.http_status <= 599
    # A row that can only happen before accept needs a status to answer with.
    assert refusal.http_status is not None or not refusal.handshake_only
    assert refusal.description.strip()


def test_the_table_holds_every_public_refusal() -> None:
    public = {
        name: value for name, value in vars(close_codes).items() if isinstance(value, Refusal)
    }
    assert set(public.values()) == set(CLOSE_CODES)
    for name, refusal in public.items():
        assert name == refusal.reason.upper()


@pytest.mark.parametrize(
    ("exception", "reason", "code"),
    [
        (InvalidToken, "invalid_token", 1008),
        (TokenExpired, "token_expired", 1008),
        (AuthUnavailable, "auth_unavailable", 1013),
    ],
)
def test_exceptions_carry_their_row(
    exception: type[AuthenticationError], reason: str, code: int
) -> None:
    refusal = exception.refusal
    assert refusal in CLOSE_CODES
    assert (refusal.reason, refusal.close_code) == (reason, code)


def test_close_message() -> None:
    assert close_codes.close_message(close_codes.TOKEN_EXPIRED) == {
        "type": "websocket.close",
        "code": 1008,
        "reason": "token_expired",
    }


class _Handshake:
    """One ASGI handshake: what the server would receive from refuse()."""

    def __init__(self, first: Message, *, extension: bool) -> None:
        self.scope = {
            "type": "websocket",
            "extensions": {"websocket.http.response": {}} if extension else {},
        }
        self.first = first
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return self.first

    async def send(self, message: Message) -> None:
        self.sent.append(message)


CONNECT: Message = {"type": "websocket.connect"}


async def test_refuse_after_accept_echoes_the_subprotocol_then_closes() -> None:
    handshake = _Handshake(CONNECT, extension=True)
    await close_codes.refuse(
        handshake.scope, handshake.receive, handshake.send, close_codes.AUTH_REQUIRED,
        subprotocol="chat",
    )  # fmt: skip
    assert handshake.sent == [
        {"type": "websocket.accept", "subprotocol": "chat"},
        {"type": "websocket.close", "code": 1008, "reason": "auth_required"},
    ]


async def test_refuse_before_accept_answers_json_with_www_authenticate() -> None:
    handshake = _Handshake(CONNECT, extension=True)
    await close_codes.refuse(
        handshake.scope, handshake.receive, handshake.send, close_codes.INVALID_TOKEN,
        before_accept=True,
    )  # fmt: skip
    start, body = handshake.sent
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 401
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"www-authenticate"] == b'Bearer error="invalid_token"'
    assert body == {"type": "websocket.http.response.body", "body": b'{"error":"invalid_token"}'}


async def test_handshake_only_refusals_never_accept() -> None:
    handshake = _Handshake(CONNECT, extension=True)
    await close_codes.refuse(
        handshake.scope, handshake.receive, handshake.send, close_codes.ORIGIN_NOT_ALLOWED
    )
    assert [message["type"] for message in handshake.sent] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    assert handshake.sent[0]["status"] == 403
    assert b"www-authenticate" not in dict(handshake.sent[0]["headers"])


async def test_without_the_denial_extension_the_handshake_is_closed_unaccepted() -> None:
    handshake = _Handshake(CONNECT, extension=False)
    await close_codes.refuse(
        handshake.scope, handshake.receive, handshake.send, close_codes.AUTH_REQUIRED,
        before_accept=True,
    )  # fmt: skip
    # A close before accept is the ASGI way to make the server answer 403.
    assert handshake.sent == [{"type": "websocket.close", "code": 1008, "reason": "auth_required"}]


async def test_a_client_that_left_gets_nothing() -> None:
    handshake = _Handshake({"type": "websocket.disconnect", "code": 1006}, extension=True)
    await close_codes.refuse(
        handshake.scope, handshake.receive, handshake.send, close_codes.AUTH_REQUIRED
    )
    assert handshake.sent == []


@pytest.mark.parametrize("refusal", CLOSE_CODES, ids=lambda refusal: refusal.reason)
def test_docs_page_lists_every_reason_with_its_code(refusal: Refusal) -> None:
    assert DOCS_PAGE.is_file(), f"{DOCS_PAGE} is missing"
    lines = DOCS_PAGE.read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines if refusal.reason in line]
    assert rows, f"{refusal.reason} is not in {DOCS_PAGE.name}"
    assert any(str(refusal.close_code) in row for row in rows), (
        f"no line of {DOCS_PAGE.name} names {refusal.reason} with close code {refusal.close_code}"
    )
