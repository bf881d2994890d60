from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsgate import DEFAULT_SUBPROTOCOL_PREFIX as PREFIX
from wsgate import ConfigurationError, Environment, GateConfig

SECRET = "a-secret-of-at-least-thirty-two-bytes-000000"


def test_defaults_are_production_and_closed() -> None:
    config = GateConfig()
    assert config.environment is Environment.PRODUCTION
    assert config.allowed_origins == ()
    assert not config.allow_missing_origin
    assert not config.dev_bypass
    assert config.query_param is None


def test_from_env_reads_every_documented_variable(tmp_path: Path) -> None:
    pem = tmp_path / "key.pem"
    pem.write_text("-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "RSA", "kid": "k1"}]}))
    config = GateConfig.from_env(
        {
            "WSGATE_ENV": "Development",
            "WSGATE_JWT_SECRET": SECRET,
            "WSGATE_JWT_PUBLIC_KEY": str(pem),
            "WSGATE_JWT_JWKS_FILE": str(jwks),
            "WSGATE_JWT_ALGORITHMS": "RS256, ES256",
            "WSGATE_JWT_AUDIENCE": "api",
            "WSGATE_JWT_ISSUER": "https://issuer.example",
            "WSGATE_JWT_LEEWAY": "2.5",
            "WSGATE_AUTH_URL": "http://127.0.0.1:9/introspect",
            "WSGATE_ALLOWED_ORIGINS": "https://a.example, https://b.example,,",
            "WSGATE_ALLOWED_ORIGIN_REGEX": r"https://.*\.example",
            "WSGATE_ALLOW_MISSING_ORIGIN": "yes",
            "WSGATE_ALLOW_ANY_ORIGIN": "0",
            "WSGATE_DEV_BYPASS": "on",
            "WSGATE_DEV_USER": "dana",
            "WSGATE_SUBPROTOCOL_PREFIXES": f"{PREFIX},{PREFIX}authorization.k8s.io.",
            "WSGATE_QUERY_PARAM": "access_token",
            "WSGATE_REJECT_BEFORE_ACCEPT": "true",
        }
    )
    assert config.environment is Environment.DEVELOPMENT
    assert config.jwt_public_key == pem.read_text()
    assert config.jwt_jwks == {"keys": [{"kty": "RSA", "kid": "k1"}]}
    assert config.jwt_algorithms == ("RS256", "ES256")
    assert (config.jwt_audience, config.jwt_issuer, config.jwt_leeway) == (
        "api",
        "https://issuer.example",
        2.5,
    )
    assert config.auth_url == "http://127.0.0.1:9/introspect"
    assert config.allowed_origins == ("https://a.example", "https://b.example")
    assert config.allowed_origin_regex == r"https://.*\.example"
    assert (config.allow_missing_origin, config.allow_any_origin) == (True, False)
    assert (config.dev_bypass, config.dev_user) == (True, "dana")
    assert config.subprotocol_prefixes[1] == "base64url.bearer.authorization.k8s.io."
    assert (config.query_param, config.reject_before_accept) == ("access_token", True)


def test_overrides_win_over_the_environment() -> None:
    config = GateConfig.from_env({"WSGATE_JWT_AUDIENCE": "env"}, jwt_audience="code")
    assert config.jwt_audience == "code"


def test_empty_variables_mean_unset() -> None:
    assert GateConfig.from_env({"WSGATE_ENV": "", "WSGATE_JWT_SECRET": "  "}) == GateConfig()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WSGATE_ALLOW_MISSING_ORIGIN", "maybe", "WSGATE_ALLOW_MISSING_ORIGIN='maybe'"),
        ("WSGATE_JWT_LEEWAY", "soon", "WSGATE_JWT_LEEWAY='soon'"),
        ("WSGATE_JWT_PUBLIC_KEY", "/no/such/key.pem", "WSGATE_JWT_PUBLIC_KEY"),
        ("WSGATE_JWT_JWKS_FILE", "/no/such/jwks.json", "WSGATE_JWT_JWKS_FILE"),
        ("WSGATE_ENV", "staging", "'development' or 'production'"),
        ("WSGATE_JWT_LEEWAY", "-1", "jwt_leeway must be a number of seconds >= 0"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        GateConfig.from_env({variable: value})


def test_dev_bypass_is_refused_in_production() -> None:
    with pytest.raises(ConfigurationError, match="WSGATE_ENV=development"):
        GateConfig(dev_bypass=True)
    assert GateConfig(environment=Environment.DEVELOPMENT, dev_bypass=True).dev_bypass


def test_a_string_where_a_list_belongs_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"write \('https://a.example',\)"):
        GateConfig(allowed_origins="https://a.example")  # type: ignore[arg-type]


def test_secrets_stay_out_of_repr() -> None:
    config = GateConfig(
        jwt_secret=SECRET,
        jwt_public_key="PEM",
        jwt_jwks={"keys": []},
        auth_url="https://gate:hunter2@auth.example/introspect",
    )
    assert SECRET not in repr(config)
    assert "PEM" not in repr(config)
    assert "hunter2" not in repr(config)
