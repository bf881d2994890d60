from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import ForwardRef

import pytest

from wsgate import DEFAULT_SUBPROTOCOL_PREFIX as PREFIX
from wsgate import ConfigurationError, Environment, Gate, GateConfig, JWTVerifier
from wsgate.config import GateSettings

SECRET = "a-secret-of-at-least-thirty-two-bytes-000000"
OPEN = {"WSGATE_ALLOW_MISSING_ORIGIN": "true"}
"""The least a from_env() environment needs for some client to be able to connect."""
ROOT = Path(__file__).resolve().parents[1]


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
    config = GateConfig.from_env({**OPEN, "WSGATE_JWT_AUDIENCE": "env"}, jwt_audience="code")
    assert config.jwt_audience == "code"


def test_empty_variables_mean_unset() -> None:
    config = GateConfig.from_env({**OPEN, "WSGATE_ENV": "", "WSGATE_JWT_SECRET": "  "})
    assert config == GateConfig(allow_missing_origin=True)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WSGATE_ALLOW_MISSING_ORIGIN", "maybe", "WSGATE_ALLOW_MISSING_ORIGIN='maybe'"),
        ("WSGATE_JWT_LEEWAY", "soon", "WSGATE_JWT_LEEWAY='soon'"),
        ("WSGATE_JWT_PUBLIC_KEY", "/no/such/key.pem", "WSGATE_JWT_PUBLIC_KEY"),
        ("WSGATE_JWT_JWKS_FILE", "/no/such/jwks.json", "WSGATE_JWT_JWKS_FILE"),
        ("WSGATE_ENV", "staging", "'development' or 'production'"),
        ("WSGATE_JWT_LEEWAY", "-1", "jwt_leeway must be a number of seconds >= 0"),
        ("WSGATE_RATE_LIMIT", "0/minute", "rate_limit '0/minute' lets no message through"),
        ("WSGATE_RATE_LIMIT", "0 per hour", "WSGATE_RATE_LIMIT=off"),
        ("WSGATE_MAX_MESSAGE_BYTES", "0", "max_message_bytes must be a positive number"),
        ("WSGATE_MAX_CONNECTIONS_PER_USER", "0", "max_connections_per_user must be a positive"),
        ("WSGATE_MAX_BATCH", "0", "max_batch must be a positive integer"),
        ("WSGATE_HEARTBEAT_TIMEOUT", "0", "heartbeat_timeout must be a positive number"),
        ("WSGATE_SEND_TIMEOUT", "0", "send_timeout must be a positive number"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        GateConfig.from_env({**OPEN, variable: value})


def test_dev_bypass_is_refused_in_production() -> None:
    with pytest.raises(ConfigurationError, match="WSGATE_ENV=development"):
        GateConfig(dev_bypass=True)
    assert GateConfig(environment=Environment.DEVELOPMENT, dev_bypass=True).dev_bypass


def test_a_string_where_a_list_belongs_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"write \('https://a.example',\)"):
        GateConfig(allowed_origins="https://a.example")


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


# Unknown variables


@pytest.mark.parametrize(
    ("variable", "nearest"),
    [
        ("WSGATE_ALLOWED_ORIGIN", "WSGATE_ALLOWED_ORIGINS"),
        ("WSGATE_JWT_SECERT", "WSGATE_JWT_SECRET"),
        ("WSGATE_RATELIMIT", "WSGATE_RATE_LIMIT"),
        ("WSGATE_ENVIRONMENT", "WSGATE_ENV"),
        ("WSGATE_JWT_JWKS", "WSGATE_JWT_JWKS_FILE"),
        ("WSGATE_JWKS_URL", "WSGATE_JWT_JWKS_URL"),
        ("wsgate_jwt_secret", "WSGATE_JWT_SECRET"),
    ],
)
def test_a_misspelt_variable_is_refused_with_the_nearest_name(variable: str, nearest: str) -> None:
    env = {"WSGATE_ALLOWED_ORIGINS": "https://a.example", variable: "https://a.example"}
    with pytest.raises(ConfigurationError) as refused:
        GateConfig.from_env(env)
    assert str(refused.value).startswith(
        f"{variable} is not a wsgate setting; did you mean {nearest}? Fix the name, or, if "
        "your own code reads it, allow it with GateConfig.from_env(extra_variables=[...])."
    )


def test_every_unknown_variable_is_named_at_once() -> None:
    env = {**OPEN, "WSGATE_ZZZ": "1", "WSGATE_MAX_MESAGE_BYTES": "10"}
    with pytest.raises(ConfigurationError) as refused:
        GateConfig.from_env(env)
    message = str(refused.value)
    assert "WSGATE_MAX_MESAGE_BYTES is not a wsgate setting; did you mean " in message
    assert "WSGATE_ZZZ is not a wsgate setting. " in message


def test_an_unknown_variable_is_refused_even_when_empty() -> None:
    with pytest.raises(ConfigurationError, match="WSGATE_ALLOWED_ORIGIN is not"):
        GateConfig.from_env({**OPEN, "WSGATE_ALLOWED_ORIGIN": ""})


def test_the_apps_own_variables_are_allowed_by_name_or_prefix() -> None:
    env = {**OPEN, "WSGATE_DATABASE_URL": "sqlite://", "WSGATE_MYAPP_A": "1", "WSGATE_MYAPP_": ""}
    config = GateConfig.from_env(env, extra_variables=["WSGATE_DATABASE_URL", "WSGATE_MYAPP_*"])
    assert config.allow_missing_origin
    with pytest.raises(ConfigurationError, match="WSGATE_MYAPP_A is not a wsgate setting"):
        GateConfig.from_env(env, extra_variables=["WSGATE_DATABASE_URL"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("WSGATE_DATABASE_URL", r"must be a list of names, not the string"),
        (["DATABASE_URL"], r"lists 'DATABASE_URL'; only names that start with WSGATE_"),
        (["WSGATE_RATE_LIMIT"], r"WSGATE_RATE_LIMIT, which is a wsgate setting \(rate_limit\)"),
    ],
)
def test_extra_variables_are_checked(extra: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        GateConfig.from_env(OPEN, extra_variables=extra)  # type: ignore[arg-type]


def test_kubernetes_service_links_are_not_mistakes() -> None:
    # What Kubernetes puts in every pod of a namespace with a Service named wsgate.
    links = {
        "WSGATE_SERVICE_HOST": "10.0.0.11",
        "WSGATE_SERVICE_PORT": "8000",
        "WSGATE_SERVICE_PORT_HTTP": "8000",
        "WSGATE_PORT": "tcp://10.0.0.11:8000",
        "WSGATE_PORT_8000_TCP": "tcp://10.0.0.11:8000",
        "WSGATE_PORT_8000_TCP_PROTO": "tcp",
        "WSGATE_PORT_8000_TCP_PORT": "8000",
        "WSGATE_PORT_8000_TCP_ADDR": "10.0.0.11",
        "WSGATE_REDIS_SERVICE_HOST": "10.0.0.12",
        "WSGATE_REDIS_PORT_6379_TCP": "tcp://10.0.0.12:6379",
    }
    assert GateConfig.from_env({**OPEN, **links}).allow_missing_origin


def test_the_known_variables_are_the_fields() -> None:
    variables = GateConfig.variables()
    assert sorted(variables.values()) == sorted(item.name for item in fields(GateConfig))
    assert variables["WSGATE_ENV"] == "environment"
    assert variables["WSGATE_JWT_JWKS_FILE"] == "jwt_jwks"
    assert variables["WSGATE_JWT_JWKS_URL"] == "jwt_jwks_url"
    assert variables["WSGATE_RATE_LIMIT"] == "rate_limit"


def test_every_variable_is_documented() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `(\w+)` \| `(WSGATE_\w+)` \|", page, re.MULTILINE))
    assert rows == {(field, variable) for variable, field in GateConfig.variables().items()}


# Settings that would refuse everything


def test_a_config_from_the_environment_must_let_some_client_connect() -> None:
    with pytest.raises(ConfigurationError) as refused:
        GateConfig.from_env({"WSGATE_JWT_SECRET": SECRET})
    assert str(refused.value).startswith(
        "no client may connect: with WSGATE_ALLOWED_ORIGINS and WSGATE_ALLOWED_ORIGIN_REGEX "
        "unset, every browser is refused"
    )
    assert "WSGATE_ALLOW_MISSING_ORIGIN=true" in str(refused.value)
    for enough in (
        {"WSGATE_ALLOWED_ORIGINS": "https://a.example"},
        {"WSGATE_ALLOWED_ORIGIN_REGEX": r"https://.*\.example"},
        {"WSGATE_ALLOW_MISSING_ORIGIN": "true"},
    ):
        GateConfig.from_env(enough)
    GateConfig.from_env({}, allowed_origins=["https://a.example"])
    GateConfig()  # in code, a config is a value; the gate's own checks come with wrap()


@pytest.mark.parametrize("rate", ["0/minute", "0 per second", "0/2 hours"])
def test_a_rate_that_lets_nothing_through_is_refused(rate: str) -> None:
    with pytest.raises(ConfigurationError, match=f"rate_limit '{rate}' lets no message through"):
        GateConfig(rate_limit=rate)
    GateConfig(rate_limit="1/day")
    GateConfig(rate_limit=None)


@pytest.mark.parametrize("name", ["jwt_audience", "jwt_issuer"])
def test_an_empty_audience_or_issuer_is_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{name} is the empty string, which no token"):
        GateConfig(**{name: ""})  # type: ignore[arg-type]


# Several secrets and the JWKS URL


def test_several_secrets_from_the_environment() -> None:
    older = "an-older-secret-of-at-least-thirty-two-bytes"
    config = GateConfig.from_env({**OPEN, "WSGATE_JWT_SECRETS": f"{SECRET}, {older}"})
    assert config.jwt_secrets == (SECRET, older)
    assert config.jwt_secret is None
    assert SECRET not in repr(config)
    with pytest.raises(ConfigurationError, match=r"both jwt_secret .* and jwt_secrets .* are set"):
        GateConfig(jwt_secret=SECRET, jwt_secrets=[older])
    with pytest.raises(ConfigurationError, match=r"the HMAC secret #2 \(of 2\) is 5 bytes"):
        Gate(GateConfig(jwt_secrets=[SECRET, "short"]))


def test_the_jwks_url_from_the_environment() -> None:
    url = "https://idp.example/.well-known/jwks.json"
    env = {**OPEN, "WSGATE_JWT_JWKS_URL": url, "WSGATE_JWT_ALGORITHMS": "RS256"}
    config = GateConfig.from_env(env)
    assert config.jwt_jwks_url == url
    assert url not in repr(config)
    assert isinstance(Gate(config).verifier, JWTVerifier)


@pytest.mark.parametrize(
    ("url", "environment", "message"),
    [
        ("http://idp.example/jwks", "production", "is http:// in production"),
        ("http://10.0.0.1/jwks", "production", "is http:// in production"),
        ("ftp://idp.example/jwks", "development", "must be an https:// URL with a host"),
        ("https:///jwks", "production", "must be an https:// URL with a host"),
        ("idp.example/jwks", "production", "must be an https:// URL with a host"),
    ],
)
def test_a_jwks_url_must_be_https_in_production(url: str, environment: str, message: str) -> None:
    config = GateConfig(
        environment=Environment(environment), jwt_jwks_url=url, jwt_algorithms=["RS256"]
    )
    with pytest.raises(ConfigurationError, match=message):
        Gate(config)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/jwks",
        "http://127.9.9.9/jwks",
        "http://[::1]:8080/jwks",
        "http://localhost:8080/jwks",
        "http://LOCALHOST/jwks",
    ],
)
def test_http_is_allowed_on_loopback_in_production(url: str) -> None:
    Gate(GateConfig(jwt_jwks_url=url, jwt_algorithms=["RS256"]))


def test_http_is_allowed_anywhere_in_development() -> None:
    config = GateConfig(
        environment=Environment.DEVELOPMENT,
        jwt_jwks_url="http://keycloak:8080/realms/demo/protocol/openid-connect/certs",
        jwt_algorithms=["RS256"],
    )
    Gate(config)


def test_the_jwks_file_and_url_cannot_both_be_set() -> None:
    config = GateConfig(
        jwt_jwks={"keys": []}, jwt_jwks_url="https://idp.example/jwks", jwt_algorithms=["RS256"]
    )
    with pytest.raises(ConfigurationError, match="choose the file or the URL"):
        Gate(config)


def test_a_jwks_url_with_hmac_algorithms_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="are HMAC and need secret=, not jwks="):
        Gate(GateConfig(jwt_jwks_url="https://idp.example/jwks"))


# A secrets file


def test_the_secrets_file_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"{SECRET}\n")
    config = GateConfig.from_env({**OPEN, "WSGATE_JWT_SECRETS_FILE": f" {path} "})
    assert config.jwt_secrets_file == path
    assert GateConfig.variables()["WSGATE_JWT_SECRETS_FILE"] == "jwt_secrets_file"
    assert SECRET not in repr(config)
    assert isinstance(Gate(config).verifier, JWTVerifier)
    off = GateConfig.from_env({**OPEN, "WSGATE_JWT_SECRETS_FILE": "off"})
    assert off.jwt_secrets_file is None
    in_code = GateConfig(jwt_secrets_file=str(path))  # type: ignore[arg-type]
    assert in_code.jwt_secrets_file == path


def test_a_misspelt_secrets_file_variable_names_the_right_one() -> None:
    with pytest.raises(ConfigurationError, match=r"did you mean WSGATE_JWT_SECRETS_FILE\?"):
        GateConfig.from_env({**OPEN, "WSGATE_JWT_SECRET_FILE": "/etc/wsgate/secrets"})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"jwt_public_key": "PEM"}, "not ['secrets_file', 'public_key']"),
        ({"jwt_jwks": {"keys": []}}, "not ['secrets_file', 'jwks']"),
        ({"jwt_jwks_url": "https://idp.example/jwks"}, "not ['secrets_file', 'jwks']"),
        ({"auth_url": "http://127.0.0.1:9/introspect"}, "choose remote or local"),
    ],
)
def test_the_secrets_file_is_one_key_source_among_the_others(
    tmp_path: Path, settings: dict[str, object], message: str
) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"{SECRET}\n")
    config = GateConfig(jwt_secrets_file=path, **settings)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        Gate(config)


def test_the_secrets_file_needs_hmac_algorithms(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text(f"{SECRET}\n")
    config = GateConfig(jwt_secrets_file=path, jwt_algorithms=["RS256"])
    with pytest.raises(ConfigurationError, match="need public_key= or jwks=, not secrets_file="):
        Gate(config)


def test_a_production_gate_without_a_key_names_the_secrets_file() -> None:
    with pytest.raises(ConfigurationError, match="WSGATE_JWT_SECRETS_FILE"):
        Gate(GateConfig())


# Typing


def test_list_settings_take_any_sequence_and_keep_tuples() -> None:
    config = GateConfig(
        allowed_origins=["https://a.example"],
        jwt_algorithms=["RS256"],
        subprotocol_prefixes=[PREFIX],
        jwt_secrets=[],
    )
    assert config.allowed_origins == ("https://a.example",)
    assert config.jwt_algorithms == ("RS256",)
    assert config.subprotocol_prefixes == (PREFIX,)
    assert config.jwt_secrets == ()
    assert hash(config) == hash(GateConfig(**vars(config)))


def test_the_typed_overrides_are_the_fields() -> None:
    wanted = {item.name: str(item.type) for item in fields(GateConfig)}
    typed = {
        name: hint.__forward_arg__ if isinstance(hint, ForwardRef) else str(hint)
        for name, hint in GateSettings.__annotations__.items()
    }
    assert typed == wanted, (
        "GateSettings (wsgate/config.py) must list every GateConfig field with its type, so "
        "that from_env(**overrides) is type-checked"
    )
