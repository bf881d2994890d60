"""Deprecated: a :class:`~wsgate.Gate` now runs its checks on :class:`wsgate.engine.Engine`.

``GatePipeline`` is the old name of the engine, kept for one release with a
:class:`DeprecationWarning`; its constructor is the engine's. Removed in 0.3.
"""

from __future__ import annotations

import warnings
from typing import Any

from wsgate import engine as _moved


def __getattr__(name: str) -> Any:
    if name != "GatePipeline":
        raise AttributeError(f"module 'wsgate.pipeline' has no attribute {name!r}")
    warnings.warn(
        "wsgate.pipeline.GatePipeline is deprecated and will be removed in 0.3: a Gate runs "
        "its checks on wsgate.Engine (from wsgate.engine).",
        DeprecationWarning,
        stacklevel=2,
    )
    return _moved.Engine
