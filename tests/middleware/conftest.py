from __future__ import annotations

import pytest

from tests.middleware.mounting import MOUNTINGS, Mounting


@pytest.fixture(scope="module", params=MOUNTINGS)
def mounting(request: pytest.FixtureRequest) -> Mounting:
    """How the middleware under test is mounted: alone, or inside a Gate (see mounting.py)."""
    mounted: Mounting = request.param
    return mounted
