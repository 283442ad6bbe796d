"""protos.settings: one precedence order, typed parsing, errors naming source/key/value/expectation."""
from __future__ import annotations

import enum
import pathlib
from dataclasses import dataclass
from typing import Optional

import pytest

from protos import settings as S


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclass(frozen=True, kw_only=True)
class Net:
    address: Optional[str] = None
    retries: int = 3
    token: Optional[str] = None


@dataclass(frozen=True, kw_only=True)
class Root:
    bundle: Optional[pathlib.Path] = None
    threads: int = 2
    ratio: float = 0.5
    verbose: bool = False
    mode: Mode = Mode.FAST
    paths: tuple[pathlib.Path, ...] = ()
    names: tuple[str, ...] = ()
    net: Net = Net()

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise S.SettingsError(f"threads = {self.threads}: expected >= 1")


SCHEMA = S.schema_of(Root, env_prefix="APP_", secrets=("net.token",))


def test_schema_flattens_sections_into_dotted_keys() -> None:
    assert list(SCHEMA.keys) == ["bundle", "threads", "ratio", "verbose", "mode", "paths", "names",
                                 "net.address", "net.retries", "net.token"]
    assert SCHEMA.env_name("net.address") == "APP_NET_ADDRESS"


def test_precedence_is_flags_over_env_over_toml_over_defaults(tmp_path: pathlib.Path) -> None:
    toml = tmp_path / "app.toml"
    toml.write_text('threads = 4\nratio = 0.25\nbundle = "b"\n[net]\nretries = 9\naddress = "toml:1"\n')
    resolved = S.resolve(SCHEMA, toml_path=toml, env={"APP_THREADS": "5", "APP_NET_ADDRESS": "env:2"},
                         flags={"threads": "6", "verbose": None})
    root = S.build(Root, resolved.values)
    assert (root.threads, root.ratio, root.net.address, root.net.retries) == (6, 0.25, "env:2", 9)
    assert root.verbose is False and root.mode is Mode.FAST  # defaults
    assert root.bundle == tmp_path / "b"  # relative to the TOML file
    assert resolved.origins["threads"] == "flag --threads"
    assert resolved.origins["net.address"] == "environment APP_NET_ADDRESS"
    assert resolved.origins["net.retries"] == f"{toml} key 'net.retries'"


@pytest.mark.parametrize("key, text, expected", [
    ("verbose", "yes", True), ("verbose", "0", False), ("threads", " 7 ", 7), ("ratio", "1e-3", 1e-3),
    ("mode", "SLOW", Mode.SLOW), ("bundle", "none", None), ("names", "a, b,,c", ("a", "b", "c")),
    ("paths", "x:y", (pathlib.Path("x"), pathlib.Path("y"))), ("net.address", "h:1", "h:1"),
])
def test_text_parses_by_the_field_type(key: str, text: str, expected: object) -> None:
    assert S.parse_text(SCHEMA, key, text, "test") == expected


@pytest.mark.parametrize("key, value, fragment", [
    ("threads", "two", "src: threads = 'two': expected an integer"),
    ("threads", True, "expected an integer"),
    ("ratio", "nan", "expected a finite number"),
    ("verbose", "maybe", "expected true or false"),
    ("mode", "medium", "expected one of ['fast', 'slow']"),
    ("net.token", 12.5, "net.token = <hidden>"),
])
def test_bad_values_name_source_key_value_and_expectation(key: str, value: object, fragment: str) -> None:
    with pytest.raises(S.SettingsError) as info:
        S.parse_value(SCHEMA, key, value, "src", pathlib.Path("."))
    assert fragment in str(info.value)


def test_unknown_keys_suggest_the_closest(tmp_path: pathlib.Path) -> None:
    with pytest.raises(S.SettingsError, match="unknown key 'net.adress'; did you mean 'net.address'"):
        S.resolve(SCHEMA, flags={"net.adress": "x"})
    toml = tmp_path / "bad.toml"
    toml.write_text("[net]\nretry = 1\n")
    with pytest.raises(S.SettingsError, match="did you mean 'net.retries'"):
        S.resolve(SCHEMA, toml_path=toml)


def test_environment_is_lenient_unless_strict() -> None:
    assert S.resolve(SCHEMA, env={"APP_NOPE": "1", "APP_THREADS": ""}).values == {}
    strict = S.schema_of(Root, env_prefix="APP_", strict_env=True)
    with pytest.raises(S.SettingsError, match="environment variable APP_NOPE: unknown key 'nope'"):
        S.resolve(strict, env={"APP_NOPE": "1"})


def test_toml_table_and_file_errors(tmp_path: pathlib.Path) -> None:
    tabled = S.schema_of(Root, env_prefix="APP_", toml_table="app")
    toml = tmp_path / "t.toml"
    toml.write_text("[app]\nthreads = 3\n")
    assert S.resolve(tabled, toml_path=toml).values == {"threads": 3}
    toml.write_text("[other]\nthreads = 3\n")
    with pytest.raises(S.SettingsError, match=r"expected only \[app\]"):
        S.resolve(tabled, toml_path=toml)
    toml.write_text("threads = = 3")
    with pytest.raises(S.SettingsError, match="is not valid TOML"):
        S.resolve(SCHEMA, toml_path=toml)
    with pytest.raises(S.SettingsError, match="does not exist"):
        S.resolve(SCHEMA, toml_path=tmp_path / "missing.toml")


def test_build_validates_on_construction() -> None:
    with pytest.raises(S.SettingsError, match="threads = 0: expected >= 1"):
        S.build(Root, {"threads": 0})


def test_fold_rewrites_each_layer_before_merging() -> None:
    def fold(values: dict, origins: dict) -> None:
        if "names" in values:
            values["names"] = tuple(n.upper() for n in values["names"])

    resolved = S.resolve(SCHEMA, env={"APP_NAMES": "a,b"}, fold=fold)
    assert resolved.values["names"] == ("A", "B")
