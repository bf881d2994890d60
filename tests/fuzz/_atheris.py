"""Run a fuzz target's ``check`` under atheris, instrumenting only the code under test.

``atheris.instrument_all()`` instruments every function loaded (some 8000, minutes of start-up
on a small machine); coverage of wsgate's own code, and of the target, is what guides the
fuzzer, so only those functions are instrumented.
"""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Callable

import atheris

_PACKAGES = ("wsgate.", "tests.fuzz.")


def _ours(function: types.FunctionType) -> bool:
    module = function.__module__ or ""
    return module == "__main__" or module.startswith(_PACKAGES)


def fuzz(check: Callable[[bytes], None]) -> None:
    """Instrument wsgate and the target, then fuzz ``check`` with libFuzzer's argv."""
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and _ours(obj):
            atheris.instrument_func(obj)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()
