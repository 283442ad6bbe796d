"""The one settings loader of ``splitinfer partition``, ``serve`` and ``edge``.

Every command declares its settings as frozen dataclasses whose defaults are the only
definition of each default, and that validate themselves on construction. This module
reads the sources and turns text into typed values; it knows nothing of any command.

Precedence, highest first, the same for every command and every key::

    command-line flags  >  environment  >  TOML file  >  defaults

* **Keys** are the dataclass field names; a field whose type is itself a dataclass is a
  section, and its fields get dotted keys (``server.address``).
* **TOML**: sections are tables (``[server] address = ...``); a command may nest all of
  its keys in one table (``[partition]``). Relative paths are relative to the file.
  Unknown keys are errors that suggest the closest known key.
* **Environment**: ``prefix`` + the key upper-cased with dots as underscores
  (``SPLITINFER_SERVER_ADDRESS``, ``SPLITINFER_SERVE_PORT``). An empty variable counts
  as unset. With ``strict_env`` an unknown variable under the prefix is an error.
* **Flags** arrive as ``{key: value}``; None means "not given". Strings are parsed like
  environment text.

Text is parsed by the field's type: ``bool`` (1/0, true/false, yes/no, on/off), ``int``,
``float`` (finite), ``str``, ``pathlib.Path``, enums (by value), ``Optional[...]``
("" or "none" is None) and ``tuple[X, ...]`` (comma-separated; ``os.pathsep`` for paths).
A command may give its own parser for a key. Every error is a :class:`SettingsError`
naming the source, the key, the value and what was expected; secrets are shown as
``<hidden>``. Nothing here runs at import time.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import os
import pathlib
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from protos.errors import ContractError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: tomli is a dependency of every extra there
    import tomli as tomllib

__all__ = ["SettingsError", "Schema", "Resolved", "schema_of", "resolve", "build", "parse_text", "read_toml"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NONE = frozenset({"", "none", "null"})

#: A key's own parser: (value as given, where it came from, base dir for paths) -> typed value.
Parser = Callable[[Any, str, pathlib.Path], Any]


class SettingsError(ContractError, ValueError):
    """A setting from a flag, the environment or a TOML file is invalid."""


@dataclass(frozen=True)
class Schema:
    """The keys of one command: dotted key -> type hint, plus how its sources are named."""

    keys: Mapping[str, Any]
    env_prefix: str
    toml_table: str | None = None
    strict_env: bool = False
    parsers: Mapping[str, Parser] = field(default_factory=dict)
    secrets: frozenset[str] = frozenset()

    def env_name(self, key: str) -> str:
        return self.env_prefix + key.upper().replace(".", "_")


@dataclass(frozen=True)
class Resolved:
    """Typed values of every key some source set, and where each came from."""

    values: dict[str, Any]
    origins: dict[str, str]


def _is_dataclass_type(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def schema_of(
    cls: type,
    *,
    env_prefix: str,
    toml_table: str | None = None,
    strict_env: bool = False,
    parsers: Mapping[str, Parser] | None = None,
    extra: Mapping[str, Any] | None = None,
    exclude: tuple[str, ...] = (),
    secrets: tuple[str, ...] = (),
) -> Schema:
    """The schema of a (possibly sectioned) settings dataclass; ``extra`` adds keys that are
    not fields (e.g. a token file the command folds into a field)."""
    keys: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        hint = hints[f.name]
        if _is_dataclass_type(hint):
            inner = typing.get_type_hints(hint)
            for g in dataclasses.fields(hint):
                if g.init:
                    keys[f"{f.name}.{g.name}"] = inner[g.name]
        else:
            keys[f.name] = hint
    keys.update(extra or {})
    return Schema(keys=keys, env_prefix=env_prefix, toml_table=toml_table, strict_env=strict_env,
                  parsers=dict(parsers or {}), secrets=frozenset(secrets))


# --------------------------------------------------------------------------- one value


def shown(schema: Schema, key: str, value: Any) -> str:
    """A value as an error message may show it (secrets hidden)."""
    if key in schema.secrets:
        return "<hidden>"
    if isinstance(value, pathlib.Path):
        return repr(str(value))
    return repr(value)


def _bad(schema: Schema, key: str, value: Any, source: str, expected: str) -> SettingsError:
    return SettingsError(f"{source}: {key} = {shown(schema, key, value)}: expected {expected}")


def _expected(hint: Any) -> str:
    if hint is bool:
        return "true or false (also 1/0, yes/no, on/off)"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a finite number"
    if hint is str:
        return "a string"
    if hint is pathlib.Path:
        return "a path"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return f"one of {[m.value for m in hint]}"
    return str(hint)


def parse_value(schema: Schema, key: str, value: Any, source: str, base_dir: pathlib.Path) -> Any:
    """``value`` (TOML-typed, or text from env/flags) as the key's type."""
    parser = schema.parsers.get(key)
    if parser is not None:
        return parser(value, source, base_dir)
    return _coerce(schema, key, schema.keys[key], value, source, base_dir)


def _coerce(schema: Schema, key: str, hint: Any, value: Any, source: str, base_dir: pathlib.Path) -> Any:
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        item = args[0] if args else str
        if isinstance(value, str):
            sep = os.pathsep if item is pathlib.Path else ","
            items: Any = [part.strip() for part in value.split(sep) if part.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise _bad(schema, key, value, source, f"a list of {_expected(item)}")
        return tuple(_coerce(schema, key, item, v, source, base_dir) for v in items)
    text = value.strip() if isinstance(value, str) else None
    if hint is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text is not None:
            try:
                return int(text, 10)
            except ValueError:
                pass
    elif hint is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif text is not None:
            try:
                number = float(text)
            except ValueError:
                number = None
        if number is not None and math.isfinite(number):
            return number
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    elif hint is pathlib.Path:
        if isinstance(value, (str, os.PathLike)) and str(value).strip():
            path = pathlib.Path(os.path.expanduser(str(value).strip()))
            return path if path.is_absolute() else base_dir / path
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value
        if text is not None:
            for member in hint:
                if str(member.value).lower() == text.lower():
                    return member
    else:  # pragma: no cover - a settings field of a type this loader does not know
        raise TypeError(f"setting {key!r} has type {hint!r}, which the settings loader cannot parse")
    raise _bad(schema, key, value, source, _expected(hint))


def parse_text(schema: Schema, key: str, text: str, source: str) -> Any:
    """Text from an environment variable or a flag; relative paths stay relative to the working dir."""
    return parse_value(schema, key, text, source, pathlib.Path("."))


# --------------------------------------------------------------------------- the sources


def _unknown(schema: Schema, key: str, where: str) -> SettingsError:
    close = difflib.get_close_matches(key, list(schema.keys), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return SettingsError(f"{where}: unknown key {key!r}{hint} Expected one of: {', '.join(schema.keys)}")


def _flatten(schema: Schema, doc: Mapping[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    sections = {k.split(".", 1)[0] for k in schema.keys if "." in k}
    for name, value in doc.items():
        key = prefix + name
        if key in schema.keys:
            flat[key] = value
        elif not prefix and name in sections:
            if not isinstance(value, dict):
                raise SettingsError(f"{where}: [{name}] must be a table, got {value!r}")
            for inner, inner_value in value.items():
                if f"{name}.{inner}" not in schema.keys:
                    raise _unknown(schema, f"{name}.{inner}", where)
                flat[f"{name}.{inner}"] = inner_value
        else:
            raise _unknown(schema, key, where)
    return flat


def read_toml(schema: Schema, path: pathlib.Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Typed values and origins from a TOML file (``schema.toml_table`` if the command nests its keys)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"config file {str(path)!r} does not exist; expected a TOML file") from None
    except OSError as exc:
        raise SettingsError(f"config file {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    if schema.toml_table is not None:
        extra = sorted(set(doc) - {schema.toml_table})
        if extra:
            raise SettingsError(f"{path}: unexpected top-level key(s) {extra}; expected only [{schema.toml_table}]")
        doc = doc.get(schema.toml_table, {})
        if not isinstance(doc, dict):
            raise SettingsError(f"{path}: [{schema.toml_table}] must be a table, got {doc!r}")
    base_dir = path.resolve().parent
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for key, raw in _flatten(schema, doc, str(path)).items():
        origin = f"{path} key {key!r}"
        values[key] = parse_value(schema, key, raw, origin, base_dir)
        origins[key] = origin
    return values, origins


def read_env(schema: Schema, env: Mapping[str, str], *, skip: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    by_name = {schema.env_name(key): key for key in schema.keys}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for var in sorted(env):
        if not var.startswith(schema.env_prefix) or var in skip:
            continue
        key = by_name.get(var)
        if key is None:
            if schema.strict_env:
                raise _unknown(schema, var[len(schema.env_prefix):].lower(), f"environment variable {var}")
            continue
        if env[var].strip() == "":
            continue  # an empty variable counts as unset
        origin = f"environment {var}"
        values[key] = parse_text(schema, key, env[var], origin)
        origins[key] = origin
    return values, origins


def read_flags(schema: Schema, flags: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for key, raw in flags.items():
        if raw is None:
            continue  # not given
        if key not in schema.keys:
            raise _unknown(schema, key, "flags")
        origin = "flag --" + key.replace("_", "-")
        values[key] = parse_value(schema, key, raw, origin, pathlib.Path("."))
        origins[key] = origin
    return values, origins


def resolve(
    schema: Schema,
    *,
    toml_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    env_skip: tuple[str, ...] = (),
    fold: Callable[[dict[str, Any], dict[str, str]], None] | None = None,
) -> Resolved:
    """Merge the sources (lowest precedence first); ``fold`` may rewrite each source's layer
    in place before it is merged (e.g. read a token file into the token key)."""
    layers: list[tuple[dict[str, Any], dict[str, str]]] = []
    if toml_path is not None:
        layers.append(read_toml(schema, pathlib.Path(toml_path).expanduser()))
    layers.append(read_env(schema, env or {}, skip=env_skip))
    layers.append(read_flags(schema, flags or {}))
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for layer_values, layer_origins in layers:
        if fold is not None:
            fold(layer_values, layer_origins)
        values.update(layer_values)
        origins.update(layer_origins)
    return Resolved(values=values, origins=origins)


def build(cls: type, values: Mapping[str, Any], **fixed: Any) -> Any:
    """An instance of a sectioned settings dataclass from dotted keys (missing keys keep
    their defaults); ``fixed`` passes top-level fields directly. Validation is the
    dataclasses' own (``__post_init__``)."""
    kwargs: dict[str, Any] = dict(fixed)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name in kwargs:
            continue
        hint = hints[f.name]
        if _is_dataclass_type(hint):
            inner = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(f.name + ".")}
            if inner:
                kwargs[f.name] = hint(**inner)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)
