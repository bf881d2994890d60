"""Deprecated: the old name of :mod:`wsgate.error_frames`, the error-frame table. Removed in 0.3.

Every name is still here, with a :class:`DeprecationWarning` that says where it moved.
"""

from __future__ import annotations

import warnings
from typing import Any

from wsgate import error_frames as _moved


def __getattr__(name: str) -> Any:
    value = getattr(_moved, name)  # AttributeError for a name that never existed
    warnings.warn(
        f"wsgate.errors is deprecated and will be removed in 0.3: import {name} from "
        "wsgate.error_frames instead.",
        DeprecationWarning,
        stacklevel=2,
    )
    return value
