"""The error-frame table: its shapes, and its docs page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from wsgate import error_frames
from wsgate.error_frames import MESSAGE_ERRORS, MessageError, error_frame

DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "close-codes.md"
SNAKE_CASE = re.compile(r"[a-z]+(_[a-z]+)*")


def test_codes_are_unique_snake_case_and_jsonrpc_codes_are_in_range() -> None:
    codes = [error.code for error in MESSAGE_ERRORS]
    assert len(set(codes)) == len(codes)
    for error in MESSAGE_ERRORS:
        assert SNAKE_CASE.fullmatch(error.code), error.code
        spec = error.jsonrpc_code in {-32700, -32600, -32601, -32602, -32603}
        assert spec or -32099 <= error.jsonrpc_code <= -32000, error


def test_the_table_holds_every_public_row() -> None:
    public = {
        name: value for name, value in vars(error_frames).items() if isinstance(value, MessageError)
    }
    assert set(public.values()) == set(MESSAGE_ERRORS)
    for name, error in public.items():
        assert name == error.code.upper()


def test_json_shape_echoes_the_id_and_extra_fields() -> None:
    frame = error_frame(
        error_frames.RATE_LIMITED, "Slow down.", message_id=7, extra={"retry_after": 1.5}
    )
    assert json.loads(frame) == {
        "type": "error",
        "error": {"code": "rate_limited", "message": "Slow down.", "retry_after": 1.5},
        "id": 7,
    }
    assert "id" not in json.loads(error_frame(error_frames.INVALID_JSON, "Not JSON."))


def test_legacy_shape() -> None:
    frame = error_frame(error_frames.INVALID_MESSAGE, "No type.", legacy=True, message_id="a")
    assert json.loads(frame) == {
        "event": "error",
        "data": {"code": "invalid_message", "message": "No type."},
        "id": "a",
    }


def test_jsonrpc_shape_always_has_an_id_and_carries_the_reason_in_data() -> None:
    frame = error_frame(
        error_frames.MESSAGE_TOO_LARGE, "Too big.", protocol="jsonrpc", extra={"limit": 8}
    )
    assert json.loads(frame) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": -32001,
            "message": "Too big.",
            "data": {"reason": "message_too_large", "limit": 8},
        },
    }


@pytest.mark.parametrize("error", MESSAGE_ERRORS, ids=lambda error: error.code)
def test_docs_page_lists_every_code_with_its_jsonrpc_code(error: MessageError) -> None:
    rows = [
        line
        for line in DOCS_PAGE.read_text(encoding="utf-8").splitlines()
        if line.startswith(f"| `{error.code}`")
    ]
    assert rows, f"{error.code} is not in the error-frame table of {DOCS_PAGE.name}"
    assert str(error.jsonrpc_code) in rows[0]
