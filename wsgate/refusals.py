"""Deprecated: the old name of :mod:`wsgate.close_codes`, the close-code table. Removed in 0.3.

Every name is still here, with a :class:`DeprecationWarning` that says where it moved.
"""

from __future__ import annotations

import warnings
from typing import Any

from wsgate import close_codes as _moved


def __getattr__(name: str) -> Any:
    value = getattr(_moved, name)  # AttributeError for a name that never existed
    warnings.warn(
        f"wsgate.refusals is deprecated and will be removed in 0.3: import {name} from "
        "wsgate.close_codes instead.",
        DeprecationWarning,
        stacklevel=2,
    )
    return value
