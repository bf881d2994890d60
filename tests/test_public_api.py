"""Keep the public surface honest: ``__all__`` lists exactly what the package exports."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

import wsgate
import wsgate.testing

OPTIONAL_CLIENTS = ("redis", "httpx", "prometheus_client", "sqlalchemy")
"""Packages behind extras (or used only by the example app): importing wsgate must not need
them, so that ``pip install wsgate`` alone works."""


def all_order(name: str) -> tuple[int, str]:
    """ruff's order for ``__all__`` (RUF022): CONSTANTS, then Classes, then the rest."""
    if name.isupper():
        return (0, name)
    if name[:1].isupper():
        return (1, name)
    return (2, name)


@pytest.mark.parametrize("module", [wsgate, wsgate.testing])
def test_every_name_in_all_resolves_once(module: types.ModuleType) -> None:
    for name in module.__all__:
        assert hasattr(module, name), name
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("module", [wsgate, wsgate.testing])
def test_all_is_sorted(module: types.ModuleType) -> None:
    assert list(module.__all__) == sorted(module.__all__, key=all_order)


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


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from wsgate import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(wsgate.__all__)


def test_importing_wsgate_needs_no_optional_client() -> None:
    # A fresh interpreter: this one has long imported them for other tests.
    check = (
        "import sys, wsgate; "
        f"print(','.join(name for name in {OPTIONAL_CLIENTS!r} if name in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "", f"importing wsgate imported {result.stdout.strip()}"


def test_redis_registry_stays_out_of_the_top_level() -> None:
    # It needs the redis extra; it is imported from wsgate.backends.redis.
    assert "RedisRegistry" not in wsgate.__all__
    assert not hasattr(wsgate, "RedisRegistry")


def test_exception_tree() -> None:
    assert issubclass(wsgate.ConfigurationError, wsgate.WSGateError)
    assert issubclass(wsgate.ConfigurationError, ValueError)
    for exc in (wsgate.InvalidToken, wsgate.TokenExpired, wsgate.AuthUnavailable):
        assert issubclass(exc, wsgate.AuthenticationError)
        assert issubclass(exc, wsgate.WSGateError)
    assert wsgate.TokenExpired.refusal.reason == "token_expired"
    assert wsgate.AuthUnavailable.refusal.close_code == 1013
    assert issubclass(wsgate.BackendUnavailable, wsgate.WSGateError)
    assert wsgate.BackendUnavailable.refusal.reason == "backend_unavailable"
    assert wsgate.BackendUnavailable.refusal.close_code == 1013
    assert issubclass(wsgate.InvalidParams, wsgate.ErrorReply)
    assert issubclass(wsgate.ErrorReply, wsgate.WSGateError)


def test_exception_tree_is_drawn_with_every_exception() -> None:
    doc = wsgate.exceptions.__doc__ or ""
    exceptions = [
        name
        for name in wsgate.__all__
        if isinstance(getattr(wsgate, name), type)
        and issubclass(getattr(wsgate, name), wsgate.WSGateError)
        and name != "WSGateError"
    ]
    assert exceptions
    assert doc.count("    WSGateError\n") == 1
    for name in exceptions:
        assert f"── {name} " in doc, f"{name} is missing from the tree in wsgate/exceptions.py"


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("wsgate.refusals", "wsgate.close_codes", "TOKEN_EXPIRED"),
        ("wsgate.errors", "wsgate.error_frames", "RATE_LIMITED"),
    ],
)
def test_renamed_modules_keep_their_old_path_for_one_release(old: str, new: str, name: str) -> None:
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"import {name} from {new} instead"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)


def test_every_exception_is_defined_in_the_module_that_draws_the_tree() -> None:
    from wsgate import exceptions

    tree = exceptions.__doc__ or ""
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert cls.__module__ == "wsgate.exceptions"
        assert name in tree, f"{name} is missing from the tree in wsgate/exceptions.py"
    for name in wsgate.__all__:
        value = getattr(wsgate, name)
        if isinstance(value, type) and issubclass(value, wsgate.WSGateError):
            assert value.__module__ == "wsgate.exceptions", name
