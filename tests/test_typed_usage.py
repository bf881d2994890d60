"""A user's code that uses the public API passes ``mypy --strict``, and its mistakes do not.

mypy runs as in a user's project: in a directory of its own, with no configuration but
``--strict``, for the oldest Python the package supports, against the installed package (its
``py.typed`` marker makes the types count).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

USER_APP = Path(__file__).parent / "typed_usage" / "user_app.py"

MISTAKES = """\
from starlette.websockets import WebSocket

from wsgate import GateConfig, JWTVerifier, gate_user

GateConfig(rate_limit=30)
GateConfig.from_env(jwt_audiense="chat")
GateConfig.from_env(max_message_bytes="8192")
JWTVerifier(algorithms=["RS256"], jwks="https://idp.example.com/jwks")


def whoami(websocket: WebSocket) -> int:
    return gate_user(websocket).identity
"""
EXPECTED = {
    "mistakes.py:5": 'Argument "rate_limit" to "GateConfig" has incompatible type "int"',
    "mistakes.py:6": 'Unexpected keyword argument "jwt_audiense" for "from_env"',
    "mistakes.py:7": 'Argument "max_message_bytes" to "from_env" of "GateConfig" has '
    'incompatible type "str"; expected "int"',
    "mistakes.py:8": 'Argument "jwks" to "JWTVerifier" has incompatible type "str"',
    "mistakes.py:12": 'Incompatible return value type (got "str", expected "int")',
}


def test_user_code_passes_mypy_strict_and_its_mistakes_are_caught(
    tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    shutil.copy(USER_APP, tmp_path / "user_app.py")
    (tmp_path / "mistakes.py").write_text(MISTAKES)
    (tmp_path / "mypy.ini").write_text("[mypy]\n")  # none of the project's own settings
    # No cache under `-p no:cacheprovider` (make test in CI): mypy then caches in tmp_path.
    cache_plugin = getattr(pytestconfig, "cache", None)
    cache = cache_plugin.mkdir("typed-usage-mypy") if cache_plugin else tmp_path
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--python-version=3.10",
        "--config-file=mypy.ini",
        f"--cache-dir={cache}",
        "user_app.py",
        "mistakes.py",
    ]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=150, check=False
    )
    errors = re.findall(r"^(\S+?:\d+): error: (.*)$", result.stdout, re.MULTILINE)
    assert all(where.startswith("mistakes.py:") for where, _ in errors), result.stdout
    found = dict(errors)
    assert found.keys() == EXPECTED.keys(), result.stdout
    for where, message in EXPECTED.items():
        assert message in found[where], result.stdout
