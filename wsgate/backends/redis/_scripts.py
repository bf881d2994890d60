"""The registry's Lua scripts, read once from the ``.lua`` files beside this module, and the
keys they work on.

Each script is one atomic change in Redis. Two preludes are shared: ``now.lua`` (``now``,
Redis's clock in milliseconds) and ``owner_of.lua`` (the worker id of an entry); a script
that uses them is sent with them in front.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

__all__ = [
    "ADD",
    "CHANNEL",
    "COUNT",
    "COUNTS",
    "GOODBYE",
    "OWNERS",
    "REMOVE",
    "SEQ",
    "SYNC",
    "TOTAL",
]

NAMESPACE: Final = "wsgate:registry:"
OWNERS: Final = NAMESPACE + "owners"
"""A sorted set of worker ids scored by the end of their lease (milliseconds, Redis's clock)."""
COUNTS: Final = NAMESPACE + "counts"
"""Worker id -> how many entries it holds."""
SEQ: Final = NAMESPACE + "seq"
"""The counter that orders entries."""
CHANNEL: Final = NAMESPACE + "evict:"
"""The prefix of a worker's eviction channel; its id follows."""


def _read(*names: str) -> str:
    here = files(__package__)
    return "".join(here.joinpath(name).read_text(encoding="utf-8") for name in names)


ADD: Final = _read("now.lua", "owner_of.lua", "add.lua")
REMOVE: Final = _read("remove.lua")
COUNT: Final = _read("now.lua", "owner_of.lua", "count.lua")
TOTAL: Final = _read("now.lua", "total.lua")
SYNC: Final = _read("now.lua", "sync.lua")
GOODBYE: Final = _read("goodbye.lua")
