"""Keep the public surface honest: ``__all__`` lists exactly what the package exports."""

from __future__ import annotations

import types

import pytest

import wsgate
import wsgate.testing


@pytest.mark.parametrize("module", [wsgate, wsgate.testing])
def test_every_name_in_all_resolves_once(module: types.ModuleType) -> None:
    for name in module.__all__:
        assert hasattr(module, name), name
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("module", [wsgate, wsgate.testing])
def test_every_public_name_is_in_all(module: types.ModuleType) -> None:
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations"}
    }
    assert public <= set(module.__all__) | {"__version__"}


def test_exception_tree() -> None:
    assert issubclass(wsgate.ConfigurationError, wsgate.WSGateError)
    assert issubclass(wsgate.ConfigurationError, ValueError)
    for exc in (wsgate.InvalidToken, wsgate.TokenExpired, wsgate.AuthUnavailable):
        assert issubclass(exc, wsgate.AuthenticationError)
        assert issubclass(exc, wsgate.WSGateError)
    assert wsgate.TokenExpired.refusal.reason == "token_expired"
    assert wsgate.AuthUnavailable.refusal.close_code == 1013
