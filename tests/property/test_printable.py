"""Log escaping holds for arbitrary text: whatever a client writes, a log line shows it on one
line, bounded, and unambiguously."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from wsgate._printable import MAX_LOGGED, printable

_ESCAPE = re.compile(r"\\(?:\\|r|n|t|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")
_NAMED = {"\\\\": "\\", "\\r": "\r", "\\n": "\n", "\\t": "\t"}


def unescaped(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        escape = match.group()
        return _NAMED.get(escape) or chr(int(escape[2:], 16))

    return _ESCAPE.sub(one, text)


@given(st.text(), st.integers(min_value=1, max_value=300))
def test_escaped_text_is_one_bounded_printable_line(text: str, limit: int) -> None:
    shown = printable(text, limit)
    assert shown.isprintable()  # no CR, LF, ESC, NEL, U+2028, bidi override...
    # Each character shown takes at most ten (\U0001f600), plus the count of what was cut.
    assert len(shown) <= 10 * limit + len("...(+ characters)") + len(str(len(text)))
    kept = text[:limit]
    if len(text) > limit:
        assert shown.endswith(f"...(+{len(text) - limit} characters)")
        shown = shown.removesuffix(f"...(+{len(text) - limit} characters)")
    assert unescaped(shown) == kept  # nothing lost, nothing made up


@given(st.binary(max_size=400))
def test_header_bytes_are_escaped_as_latin_1(raw: bytes) -> None:
    shown = printable(raw)
    assert shown.isprintable()
    cut = len(raw) - MAX_LOGGED
    if cut > 0:
        shown = shown.removesuffix(f"...(+{cut} characters)")
    assert unescaped(shown) == raw.decode("latin-1")[:MAX_LOGGED]


def test_the_forged_line_of_the_report_stays_on_its_line() -> None:
    path = "/ws/x\r\nCRITICAL wsgate.auth: admin login"
    assert printable(path) == "/ws/x\\r\\nCRITICAL wsgate.auth: admin login"
    assert printable("a\\nb") == "a\\\\nb"  # a client's own backslash-n is not a line break
    assert printable("\x1b[2J\u2028\u202e") == "\\x1b[2J\\u2028\\u202e"
