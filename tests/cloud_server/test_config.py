"""cloud_server.config: one precedence (flags > env > TOML > defaults) and errors that name key, value, expectation."""
from __future__ import annotations

import dataclasses
import pathlib

import pytest

from cloud_server.config import KEYS, ConfigError, load_settings, resolve_settings
from cloud_server.settings import ServerSettings


def write_toml(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "serve.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_keys_cover_exactly_the_settings_fields() -> None:
    fields = {f.name for f in dataclasses.fields(ServerSettings)}
    assert set(KEYS) - {"auth_token_file"} == fields


def test_defaults_when_no_source_sets_anything() -> None:
    settings, sources = resolve_settings({}, {}, None)
    assert settings == ServerSettings()
    assert sources == {}


# One row per precedence case: which sources set `port`, and who must win.
PRECEDENCE = [
    # (toml, env, flag, expected, winning source prefix)
    (None, None, None, 8001, None),
    (9101, None, None, 9101, "serve.toml"),
    (9101, "9102", None, 9102, "environment"),
    (9101, "9102", "9103", 9103, "flag"),
    (None, "9102", "9103", 9103, "flag"),
    (9101, None, "9103", 9103, "flag"),
    (None, "9102", None, 9102, "environment"),
]


@pytest.mark.parametrize("toml_port, env_port, flag_port, expected, winner", PRECEDENCE)
def test_precedence_flags_over_env_over_toml_over_defaults(
    tmp_path: pathlib.Path, toml_port: int | None, env_port: str | None, flag_port: str | None,
    expected: int, winner: str | None,
) -> None:
    config = write_toml(tmp_path, f"port = {toml_port}\n" if toml_port is not None else "")
    env = {"SPLITINFER_SERVE_PORT": env_port} if env_port is not None else {}
    flags = {"port": flag_port}
    settings, sources = resolve_settings(flags, env, config)
    assert settings.port == expected
    if winner is None:
        assert "port" not in sources
    else:
        assert winner in sources["port"]


def test_every_kind_parses_from_each_source(tmp_path: pathlib.Path) -> None:
    (tmp_path / "b1").mkdir()
    config = write_toml(
        tmp_path,
        'bundles = ["b1"]\nhost = "0.0.0.0"\ndiscovery = false\nmetrics_port = "off"\n'
        'execution_providers = ["CPU"]\ndrain_timeout_s = 3\nlog_format = "json"\n',
    )
    env = {
        "SPLITINFER_SERVE_MAX_BATCH_SIZE": "16",
        "SPLITINFER_SERVE_LOG_LEVEL": "debug",
        "SPLITINFER_SERVE_TRITON_REPOSITORY": "",  # empty = unset
        "SPLITINFER_SERVE_EXECUTION_PROVIDERS": "cuda, cpu",
        "UNRELATED": "x",
        "SPLITINFER_SERVER_ADDRESS": "edge agent's variable, not ours",
    }
    flags = {"discovery": True, "drain_timeout_s": "0.5", "metrics_port": "0", "bundles": None}
    settings = load_settings(flags, env, config)
    # relative TOML paths are relative to the file's directory
    assert settings.bundles == (tmp_path.resolve() / "b1",)
    assert settings.host == "0.0.0.0"
    assert settings.discovery is True  # flag beats TOML false
    assert settings.metrics_port == 0  # flag beats TOML "off"
    assert settings.execution_providers == ("cuda", "cpu")  # env beats TOML
    assert settings.drain_timeout_s == 0.5
    assert settings.log_format == "json"
    assert settings.log_level == "DEBUG"
    assert settings.max_batch_size == 16
    assert settings.triton_repository is None


def test_repeated_bundle_flags_replace_lower_sources(tmp_path: pathlib.Path) -> None:
    config = write_toml(tmp_path, 'bundles = ["from_toml"]\n')
    settings = load_settings({"bundles": ["x", "y"]}, {"SPLITINFER_SERVE_BUNDLES": "e1:e2"}, config)
    assert settings.bundles == (pathlib.Path("x"), pathlib.Path("y"))
    settings = load_settings({}, {"SPLITINFER_SERVE_BUNDLES": "e1:e2"}, config)
    assert settings.bundles == (pathlib.Path("e1"), pathlib.Path("e2"))


def test_config_file_from_environment(tmp_path: pathlib.Path) -> None:
    config = write_toml(tmp_path, "port = 7007\n")
    assert load_settings({}, {"SPLITINFER_SERVE_CONFIG": str(config)}).port == 7007


def test_auth_token_file_and_token_precedence(tmp_path: pathlib.Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-from-file\n")
    config = write_toml(tmp_path, f'auth_token_file = "{token_file.name}"\n')
    assert load_settings({}, {}, config).auth_token == "s3cret-from-file"
    # the environment's token beats the TOML's token file
    assert load_settings({}, {"SPLITINFER_SERVE_AUTH_TOKEN": "env-token"}, config).auth_token == "env-token"
    # a flag's token file beats the environment's token
    settings = load_settings({"auth_token_file": str(token_file)}, {"SPLITINFER_SERVE_AUTH_TOKEN": "env"}, config)
    assert settings.auth_token == "s3cret-from-file"
    assert "s3cret" not in repr(settings)


def test_token_and_token_file_in_one_source_is_an_error(tmp_path: pathlib.Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abc\n")
    with pytest.raises(ConfigError, match="both set the bearer token"):
        load_settings({}, {"SPLITINFER_SERVE_AUTH_TOKEN": "x", "SPLITINFER_SERVE_AUTH_TOKEN_FILE": str(token_file)})


BAD_TEXT = [
    # (flags, env, substrings the message must contain)
    ({"port": "eighty"}, {}, ["flag --port", "port", "'eighty'", "expected an integer"]),
    ({"port": "70000"}, {}, ["flag --port", "70000", "<= 65535"]),
    ({}, {"SPLITINFER_SERVE_PORT": "-1"}, ["SPLITINFER_SERVE_PORT", "-1", ">= 0"]),
    ({}, {"SPLITINFER_SERVE_DISCOVERY": "maybe"}, ["SPLITINFER_SERVE_DISCOVERY", "'maybe'", "true or false"]),
    ({"drain_timeout_s": "soon"}, {}, ["--drain-timeout-s", "'soon'", "finite number"]),
    ({"drain_timeout_s": "-2"}, {}, ["drain_timeout_s", "-2", ">= 0"]),
    ({"drain_timeout_s": "nan"}, {}, ["drain_timeout_s", "'nan'", "finite number"]),
    ({"log_format": "xml"}, {}, ["--log-format", "'xml'", "text, json"]),
    ({"log_level": "loud"}, {}, ["--log-level", "'loud'", "DEBUG"]),
    ({"execution_providers": "gpu"}, {}, ["execution_providers", "'gpu'", "auto, cpu, cuda, tensorrt"]),
    ({"metrics_port": "sometimes"}, {}, ["--metrics-port", "'sometimes'", "'off'"]),
    ({"max_batch_size": "0"}, {}, ["max_batch_size", ">= 1", "got 0"]),
    ({"max_message_mb": "4096"}, {}, ["max_message_mb", "4096", "<= 2047"]),
    ({}, {"SPLITINFER_SERVE_PROT": "1"}, ["SPLITINFER_SERVE_PROT", "'prot'", "did you mean 'port'"]),
    ({"tls_cert_file": "server.pem"}, {}, ["tls_cert_file", "server.pem", "tls_key_file is missing"]),
    ({}, {"SPLITINFER_SERVE_TLS_KEY_FILE": "k.pem"}, ["SPLITINFER_SERVE_TLS_KEY_FILE", "k.pem", "tls_cert_file is missing"]),
    ({"tls_client_ca_file": "ca.pem"}, {}, ["tls_client_ca_file", "ca.pem", "needs tls_cert_file"]),
]


@pytest.mark.parametrize("flags, env, expected", BAD_TEXT)
def test_bad_text_values_name_source_key_value_and_expectation(
    flags: dict[str, str], env: dict[str, str], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(flags, env)
    for fragment in expected:
        assert fragment in str(info.value)


BAD_TOML = [
    ('port = "8001"\n', ["serve.toml", "port", "'8001'", "integer"]),
    ("discovery = 1\n", ["discovery", "1", "true or false"]),
    ("bundles = 3\n", ["bundles", "3", "list of path strings"]),
    ("prot = 1\n", ["unknown key 'prot'", "did you mean 'port'"]),
    # a table is not a key: the serve config's keys are flat and the message lists them
    ("[serve]\nport = 1\n", ["unknown key 'serve'", "Expected one of: host, port"]),
    ("port = \n", ["not valid TOML", "line 1"]),
    ("metrics_port = true\n", ["metrics_port", "True", "'off'"]),
    ('drain_timeout_s = "3"\n', ["drain_timeout_s", "'3'", "finite number"]),
    ("host = 5\n", ["host", "5", "non-empty string"]),
]


@pytest.mark.parametrize("text, expected", BAD_TOML)
def test_bad_toml_names_file_key_value_and_expectation(
    tmp_path: pathlib.Path, text: str, expected: list[str]
) -> None:
    config = write_toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings({}, {}, config)
    message = str(info.value)
    assert str(config) in message
    for fragment in expected:
        assert fragment in message


def test_missing_config_file_is_named(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml.*does not exist"):
        load_settings({}, {}, tmp_path / "nope.toml")


def test_example_config_in_deploy_is_valid() -> None:
    example = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "cloud" / "serve.example.toml"
    settings = load_settings({}, {}, example)
    assert settings.host == "0.0.0.0"
    assert settings.bundles  # the example serves at least one bundle


def test_text_values_are_stripped_and_a_token_named_none_is_a_token() -> None:
    settings = load_settings({"host": " 0.0.0.0 "}, {"SPLITINFER_SERVE_AUTH_TOKEN": "none"})
    assert settings.host == "0.0.0.0"
    assert settings.auth_token == "none"


def test_help_defaults_are_read_from_the_settings_dataclass() -> None:
    from cloud_server.config import default_of

    assert default_of("port") == str(ServerSettings().port)
    assert default_of("discovery") == "on" and default_of("execution_providers") == "auto"
