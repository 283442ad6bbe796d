"""Triton's `config.pbtxt` (text-format `ModelConfig`) -> :class:`~cloud_server.domain.RepositoryConfig`.

Every field a config sets is either honoured or refused at load with the field named
(`ModelConfigRefused`): a server that silently drops `max_batch_size` or `reshape` answers differently
from Triton. Honoured:

* `name`, `platform` / `backend` (ONNX only), `default_model_filename`, `input` / `output` (`name`,
  `data_type`, `dims`, `format` -- reported back -- , `reshape`, and `label_filename` on outputs, whose
  labels answer Triton's classification requests), `max_batch_size` (requests with more rows are refused),
* `dynamic_batching.max_queue_delay_microseconds` (the model's batch window) and
  `preferred_batch_size` (the window closes early when the queued rows reach one of them),
* `version_policy` (`latest { num_versions }`, `all {}`, `specific { versions }`),
* `instance_group` with `count` <= 1 and kind CPU or AUTO (one ONNX Runtime session serves a model),
* `parameters` whose keys start with `splitinfer_` (ours, informational).

Anything else that is set (e.g. `sequence_batching`, `ensemble_scheduling`, `optimization`,
`model_warmup`, `dynamic_batching.priority_levels`, `input.optional`, a decoupled
`model_transaction_policy`) is refused. Parsing uses Triton's full schema from `tritonclient` when it is
installed (so Triton-only fields are recognised and named), else our subset in protos/inference.proto;
either way typos are caught. Pure: takes text (or a JSON override), never opens the file.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from cloud_server.convert import repository_config_from_proto
from cloud_server.domain import RepositoryConfig
from cloud_server.errors import ModelConfigRefused, RegistryError
from protos import inference_pb2 as pb
from protos.serving import BUNDLE_HASH_PARAMETER

__all__ = ["repository_config_from_text", "repository_config_from_json", "HONOURED_FIELDS"]

#: Per message type, the fields this server honours; any other field that is set refuses the model.
HONOURED_FIELDS: dict[str, frozenset[str]] = {
    "ModelConfig": frozenset({
        "name", "platform", "backend", "max_batch_size", "input", "output", "default_model_filename",
        "dynamic_batching", "instance_group", "version_policy", "parameters",
    }),
    "ModelInput": frozenset({"name", "data_type", "format", "dims", "reshape"}),
    "ModelOutput": frozenset({"name", "data_type", "dims", "reshape", "label_filename"}),
    "ModelTensorReshape": frozenset({"shape"}),
    "ModelDynamicBatching": frozenset({"max_queue_delay_microseconds", "preferred_batch_size"}),
    "ModelInstanceGroup": frozenset({"name", "count", "kind"}),
    "ModelVersionPolicy": frozenset({"latest", "all", "specific"}),
    "Latest": frozenset({"num_versions"}),
    "All": frozenset(),
    "Specific": frozenset({"versions"}),
}


def _empty_model_config() -> Message:
    """An empty ModelConfig of Triton's full schema when tritonclient is installed (so every
    Triton field parses and unhonoured ones can be refused by name), else of our subset."""
    try:
        from tritonclient.grpc import model_config_pb2  # optional: Triton's full schema
    except ImportError:
        return pb.ModelConfig()
    return model_config_pb2.ModelConfig()


def _checked_subset(full: Message, source: str) -> pb.ModelConfig:
    _refuse_unhonoured(full, "", source)
    config = pb.ModelConfig()
    config.ParseFromString(full.SerializeToString())  # field numbers match; version_policy is read below
    return config


def _refuse_unhonoured(msg: Message, path: str, source: str) -> None:
    kind = msg.DESCRIPTOR.name
    allowed = HONOURED_FIELDS.get(kind)
    for field, value in msg.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        if allowed is None or field.name not in allowed:
            raise ModelConfigRefused(
                f"{source}: field {name!r} is set, but this server does not honour it; "
                f"expected only {sorted(allowed or ())} in {kind} (remove the field or serve the model with Triton)"
            )
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            continue  # only `parameters`, checked below
        items = list(value) if field.is_repeated else [value]
        for i, item in enumerate(items):
            label = f"{name}[{i}]" if field.is_repeated else name
            _refuse_unhonoured(item, label, source)
    if kind == "ModelInstanceGroup":
        _check_instance_group(msg, path, source)
    if kind == "ModelConfig":
        unknown = sorted(k for k in getattr(msg, "parameters", {}) if not k.startswith("splitinfer_"))
        if unknown:
            raise ModelConfigRefused(
                f"{source}: field 'parameters' sets {unknown[0]!r}, which this server does not honour; "
                "expected only keys starting with 'splitinfer_'"
            )


def _check_instance_group(group: Any, path: str, source: str) -> None:
    if group.count > 1:
        raise ModelConfigRefused(
            f"{source}: field '{path}.count' is {group.count}; this server runs one ONNX Runtime session per "
            "model, expected count <= 1"
        )
    kind_name = type(group).Kind.Name(group.kind)
    if kind_name not in ("KIND_AUTO", "KIND_CPU"):
        raise ModelConfigRefused(
            f"{source}: field '{path}.kind' is {kind_name}; expected KIND_CPU or KIND_AUTO "
            "(the session's execution providers are a server setting)"
        )


def _version_policy(full: Message) -> tuple[str, tuple[int, ...]]:
    if not hasattr(full, "version_policy") or not full.HasField("version_policy"):
        return ("latest", (1,))
    policy = full.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return ("all", ())
    if choice == "specific":
        return ("specific", tuple(int(v) for v in policy.specific.versions))
    return ("latest", (max(1, int(policy.latest.num_versions)),))


def _check_reshapes(config: pb.ModelConfig, source: str) -> None:
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for i, t in enumerate(tensors):
            if not t.HasField("reshape"):
                continue
            dims, shape = list(t.dims), list(t.reshape.shape)
            if -1 in dims or -1 in shape:
                if dims.count(-1) != shape.count(-1):
                    raise ModelConfigRefused(
                        f"{source}: field '{kind}[{i}].reshape' maps dims {dims} to {shape}; expected the same "
                        "number of variable (-1) dimensions on both sides"
                    )
                continue
            if math.prod(dims) != math.prod(shape):
                raise ModelConfigRefused(
                    f"{source}: field '{kind}[{i}].reshape' maps dims {dims} ({math.prod(dims)} elements) to "
                    f"{shape} ({math.prod(shape)} elements); expected the same element count"
                )


def _to_repository_config(full: Message, source: str) -> RepositoryConfig:
    config = _checked_subset(full, source)
    _check_reshapes(config, source)
    base = repository_config_from_proto(config, source=source)

    def reshapes(tensors: Any) -> tuple[tuple[int, ...] | None, ...]:
        shapes = tuple(tuple(int(d) for d in t.reshape.shape) if t.HasField("reshape") else None for t in tensors)
        return shapes if any(s is not None for s in shapes) else ()

    delay = None
    preferred: tuple[int, ...] = ()
    if config.HasField("dynamic_batching"):
        if config.dynamic_batching.max_queue_delay_microseconds:
            delay = int(config.dynamic_batching.max_queue_delay_microseconds)
        preferred = tuple(sorted(int(b) for b in config.dynamic_batching.preferred_batch_size))
        too_big = [b for b in preferred if b < 1 or b > max(1, config.max_batch_size)]
        if too_big:
            raise ModelConfigRefused(
                f"{source}: field 'dynamic_batching.preferred_batch_size' holds {too_big[0]}; expected sizes "
                f"from 1 to max_batch_size={config.max_batch_size}"
            )
    return replace(
        base,
        max_batch_size=int(config.max_batch_size),
        max_queue_delay_us=delay,
        preferred_batch_sizes=preferred,
        input_reshapes=reshapes(config.input),
        output_reshapes=reshapes(config.output),
        output_label_files=tuple(t.label_filename for t in config.output),
        version_policy=_version_policy(full),
        config=config.SerializeToString(),
        bundle_hash=config.parameters[BUNDLE_HASH_PARAMETER].string_value if BUNDLE_HASH_PARAMETER in config.parameters else "",
    )


def repository_config_from_text(text: str, *, source: str = "config.pbtxt") -> RepositoryConfig:
    """A Triton `config.pbtxt` -> RepositoryConfig; RegistryError on typos or unknown data types,
    ModelConfigRefused naming a field we do not honour."""
    full = _empty_model_config()
    try:
        text_format.Parse(text, full)
    except text_format.ParseError as exc:
        raise RegistryError(f"{source}: not a valid ModelConfig: {exc}") from exc
    return _to_repository_config(full, source)


def repository_config_from_json(text: str, *, source: str) -> RepositoryConfig:
    """A JSON ModelConfig (RepositoryModelLoad's `config` parameter, as Triton takes it) ->
    RepositoryConfig; RegistryError naming `source` when it is not a ModelConfig."""
    full = _empty_model_config()
    try:
        json_format.Parse(text, full)
    except json_format.ParseError as exc:
        raise RegistryError(f"{source}: not a valid JSON ModelConfig: {exc}") from exc
    return _to_repository_config(full, source)
