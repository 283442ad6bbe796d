"""Triton's `config.pbtxt` (text-format `ModelConfig`) -> :class:`~cloud_server.domain.RepositoryConfig`.

Parsing is strict against our subset of `ModelConfig` (protos/inference.proto), so typos are caught. A
config using Triton fields outside the subset (e.g. `version_policy`) is accepted when Triton's full
schema, shipped with `tritonclient`, parses it strictly; those fields are then ignored. Without
`tritonclient` such a config is refused. Pure: takes text, never opens the file (the registry does).
"""

from __future__ import annotations

from google.protobuf import text_format

from cloud_server.convert import repository_config_from_proto
from cloud_server.domain import RepositoryConfig
from cloud_server.errors import RegistryError
from protos import inference_pb2 as pb

__all__ = ["parse_model_config", "repository_config_from_text"]


def parse_model_config(text: str, *, source: str = "config.pbtxt") -> pb.ModelConfig:
    """Text-format ModelConfig -> our ModelConfig message; RegistryError naming `source` on a bad config."""
    config = pb.ModelConfig()
    try:
        text_format.Parse(text, config)
        return config
    except text_format.ParseError as exc:
        first_error = exc
    try:
        from tritonclient.grpc import model_config_pb2  # optional: Triton's full schema
    except ImportError:
        raise RegistryError(f"{source}: not a valid ModelConfig: {first_error}") from first_error
    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise RegistryError(f"{source}: not a valid ModelConfig: {exc}") from exc
    config = pb.ModelConfig()
    text_format.Parse(text, config, allow_unknown_field=True)
    return config


def repository_config_from_text(text: str, *, source: str = "config.pbtxt") -> RepositoryConfig:
    """A Triton `config.pbtxt` -> RepositoryConfig; RegistryError on typos or unknown data types."""
    return repository_config_from_proto(parse_model_config(text, source=source), source=source)
