from __future__ import annotations

from collections.abc import Iterator

import pytest

from examples.app import create_app
from wsgate import Environment, GateConfig
from wsgate.testing import LiveServer, TokenFactory

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
ALLOWED_ORIGIN = "https://app.example.com"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tokens() -> TokenFactory:
    return TokenFactory(SECRET)


def example_config(environment: Environment, **overrides: object) -> GateConfig:
    settings: dict[str, object] = {
        "environment": environment,
        "jwt_secret": SECRET,
        "allowed_origins": (ALLOWED_ORIGIN,),
        "allow_missing_origin": True,
    }
    settings.update(overrides)
    return GateConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def dev_server() -> Iterator[LiveServer]:
    """The example app in development mode, with JWTs signed by SECRET."""
    with LiveServer(create_app(example_config(Environment.DEVELOPMENT))) as server:
        yield server


@pytest.fixture(scope="session")
def prod_server() -> Iterator[LiveServer]:
    """The example app in production mode, with JWTs signed by SECRET."""
    with LiveServer(create_app(example_config(Environment.PRODUCTION))) as server:
        yield server
