"""The registry's Lua scripts, read once from the ``.lua`` files beside this module, and the
keys they work on.

Each script is one atomic change in Redis, and every key it touches hashes to one slot, so
that it runs on a Redis Cluster too. Two preludes are shared: ``now.lua`` (``now``, Redis's
clock in milliseconds) and ``owner_of.lua`` (the worker id of an entry, and the score of a
new one); a script that uses them is sent with them in front.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

__all__ = [
    "ADD",
    "COUNT",
    "EVICTIONS",
    "SYNC",
    "TOTAL",
    "WORKER",
    "WORKERS",
    "entries_key",
    "leases_key",
]

WORKERS: Final = "wsgate:registry:workers"
"""Worker id -> ``"<end of its lease> <connections it holds>"``, for ``total()`` alone."""
EVICTIONS: Final = "wsgate:registry:evict:"
"""The prefix of a worker's eviction list; its id follows."""


def entries_key(key: str) -> str:
    """The sorted set of ``key``'s entries: ``{wsgate:conn:user:alice}``. The braces make
    ``key`` the hash tag, so that its entries and its leases share a slot."""
    return "{" + key + "}"


def leases_key(key: str) -> str:
    """The hash of ``key``'s workers' leases: ``{wsgate:conn:user:alice}:leases``."""
    return "{" + key + "}:leases"


def _read(*names: str) -> str:
    here = files(__package__)
    return "".join(here.joinpath(name).read_text(encoding="utf-8") for name in names)


ADD: Final = _read("now.lua", "owner_of.lua", "add.lua")
COUNT: Final = _read("now.lua", "owner_of.lua", "count.lua")
SYNC: Final = _read("now.lua", "owner_of.lua", "sync.lua")
WORKER: Final = _read("now.lua", "worker.lua")
TOTAL: Final = _read("now.lua", "total.lua")
