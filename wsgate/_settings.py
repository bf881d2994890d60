from __future__ import annotations

from enum import Enum

from wsgate.exceptions import ConfigurationError


class Environment(str, Enum):
    """Where the gate runs. Production is the default and refuses development shortcuts."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


def parse_environment(value: Environment | str) -> Environment:
    try:
        return Environment(value.lower() if isinstance(value, str) else value)
    except ValueError:
        raise ConfigurationError(
            f"environment must be 'development' or 'production', not {value!r}."
        ) from None
