"""What the gate lets through, the gate and the app can write back: for any JSON message and
any nesting, the format check either passes a value that wsgate's own JSON writer writes
back (wrapped in a reply, as an app would), or answers one ``invalid_message`` that names the
nesting limit."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.fuzz_format import _drive
from wsgate.connection import PARSED_KEY
from wsgate.middleware.format import FormatMiddleware

_LEAVES = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(
    value=_VALUES,
    extra=st.integers(min_value=0, max_value=1100),
    max_depth=st.sampled_from([1, 2, 8, 64, 128]),
    legacy=st.booleans(),
)
def test_what_passes_can_be_written_back(
    value: Any, extra: int, max_depth: int, legacy: bool
) -> None:
    # The extra levels by hand: orjson writes at most 254, and the client need not.
    inner = b"[" * extra + orjson.dumps(value) + b"]" * extra
    key = b'{"event": "e", "data": ' if legacy else b'{"type": "e", "payload": '
    text = (key + inner + b"}").decode()
    middleware = FormatMiddleware(None, protocol="json", max_depth=max_depth)  # type: ignore[arg-type]
    message: dict[str, Any] = {"type": "websocket.receive", "text": text}

    admitted, sent = _drive(middleware, message)

    parsed = message.get(PARSED_KEY)
    if admitted:
        reply = {"type": "reply", "payload": [parsed]}  # an app's envelope, two levels more
        assert orjson.loads(orjson.dumps(reply)) == reply
        return
    (frame,) = sent
    error = orjson.loads(frame["text"])
    body = error["error"] if "error" in error else error["data"]
    if isinstance(parsed, dict) and _depth(parsed) > max_depth:
        assert body["code"] == "invalid_message"
        assert body["max_depth"] == max_depth
        assert f"{max_depth} levels" in body["message"]


def _depth(value: Any) -> int:
    """Levels of arrays and objects, without recursion (values nest up to 1024 deep)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest
