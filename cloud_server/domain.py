"""The server's domain values: models, requests, responses and statistics.

Plain dataclasses that every other module of the server shares. This module imports nothing of the
server itself (only `protos` for the bundle's `InputSpec` type), so it sits at the bottom of the import
graph: `convert` builds these from protobuf, `validation` and `dataplane` consume them, `registry`
produces the models.

Shapes use -1 for a variable dimension in signatures; request shapes are what the client sent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from protos import bundle_pb2

__all__ = [
    "PLATFORM",
    "ModelState",
    "TensorSignature",
    "RepositoryConfig",
    "TailModel",
    "InferInput",
    "InferRequest",
    "InferOutput",
    "InferResponse",
    "StatDuration",
    "BatchStat",
    "ModelStats",
]

#: Triton's platform string for ONNX models.
PLATFORM = "onnxruntime_onnx"


class ModelState:
    """Repository index states, as Triton names them."""

    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


# ---------------------------------------------------------------------- models


@dataclass(frozen=True)
class TensorSignature:
    """One tensor of a model's wire signature; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RepositoryConfig:
    """What the registry needs from a Triton `config.pbtxt`; shapes include the batch dim when batched.

    version_policy: ('latest', (n,)), ('all', ()) or ('specific', (versions...)), as Triton serves them."""

    name: str
    platform: str
    backend: str
    batched: bool
    inputs: tuple[TensorSignature, ...]
    outputs: tuple[TensorSignature, ...]
    default_model_filename: str = ""
    max_batch_size: int = 0
    max_queue_delay_us: int | None = None
    preferred_batch_sizes: tuple[int, ...] = ()
    input_reshapes: tuple[tuple[int, ...] | None, ...] = ()
    output_reshapes: tuple[tuple[int, ...] | None, ...] = ()
    version_policy: tuple[str, tuple[int, ...]] = ("latest", (1,))
    config: bytes = b""
    output_label_files: tuple[str, ...] = ()
    # The config's `splitinfer_bundle_hash` parameter (export-triton writes it); "" when absent.
    bundle_hash: str = ""


@dataclass(frozen=True)
class TailModel:
    """A servable model.

    inputs: what a request must carry (the cut's tensors, with the batch dimension first when
        `batched`); outputs: what the response carries.
    feed_names: the ONNX graph input each wire input feeds (same order as inputs); for the 'input'
        cut the wire input is BYTES JPEGs and the feed is `input_spec.tensor.name`.
    input_spec: set only for the 'input' cut: how to decode and preprocess the frames.
    batched: the first dimension is a batch the scheduler may merge along.
    max_batch_size: rows per request and batch from the model's config (0 = the server's setting);
    max_queue_delay_us: the config's dynamic-batching window (None = the server's setting);
    preferred_batch_sizes: the window closes early when the queued rows reach one of them.
    input_reshapes / output_reshapes: per tensor, the shape (without the batch dimension) the graph
        takes or makes when the config's `reshape` differs from the wire `dims`; None where equal, empty
        when no tensor is reshaped.
    config: the serialized `ModelConfig` read from config.pbtxt (repository models), reported as is.
    output_labels: per output, the lines of its config `label_filename` (empty when none).
    bundle_hash: the content-hash prefix of the bundle a tail comes from (`protos.bundle.bundle_hash`),
        reported as the ModelConfig parameter `splitinfer_bundle_hash`; for repository models, that parameter
        of their config.pbtxt (empty when it has none).
    """

    name: str
    version: str
    model_path: Path
    inputs: tuple[TensorSignature, ...]
    outputs: tuple[TensorSignature, ...]
    feed_names: tuple[str, ...]
    batched: bool = True
    input_spec: bundle_pb2.InputSpec | None = None
    source: str = ""
    cut_id: str = ""
    platform: str = PLATFORM
    max_batch_size: int = 0
    max_queue_delay_us: int | None = None
    preferred_batch_sizes: tuple[int, ...] = ()
    input_reshapes: tuple[tuple[int, ...] | None, ...] = ()
    output_reshapes: tuple[tuple[int, ...] | None, ...] = ()
    config: bytes = b""
    output_labels: tuple[tuple[str, ...], ...] = ()
    bundle_hash: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)

    @property
    def size_bytes(self) -> int:
        try:
            return self.model_path.stat().st_size
        except OSError:
            return 0


# ---------------------------------------------------------------------- requests and responses


@dataclass(frozen=True)
class InferInput:
    """One input tensor as the client sent it. `contents` maps each non-empty typed-contents field to its
    values; the raw bytes, if any, are the request's `raw_input_contents` entry at the same index."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    contents: Mapping[str, Sequence[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class InferRequest:
    model_name: str
    model_version: str = ""
    id: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[InferInput, ...] = ()
    requested_outputs: tuple[str, ...] = ()
    raw_input_contents: tuple[bytes, ...] = ()
    #: Triton's classification extension: output name -> how many top classes to answer (as BYTES).
    output_classes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InferOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes


@dataclass(frozen=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: tuple[InferOutput, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- statistics


@dataclass
class StatDuration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += max(0, int(ns))


@dataclass
class BatchStat:
    compute_input: StatDuration = field(default_factory=StatDuration)
    compute_infer: StatDuration = field(default_factory=StatDuration)
    compute_output: StatDuration = field(default_factory=StatDuration)


@dataclass
class ModelStats:
    """Triton's per-model statistics. inference_count counts rows (batch items) that succeeded,
    execution_count counts model executions; success/fail are whole-request durations; queue and
    compute_* are per successful request; batch_stats are per execution, by batch size.
    `last_inference_ms` is wall-clock milliseconds since the epoch, as Triton reports it."""

    name: str
    version: str
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: StatDuration = field(default_factory=StatDuration)
    fail: StatDuration = field(default_factory=StatDuration)
    queue: StatDuration = field(default_factory=StatDuration)
    compute_input: StatDuration = field(default_factory=StatDuration)
    compute_infer: StatDuration = field(default_factory=StatDuration)
    compute_output: StatDuration = field(default_factory=StatDuration)
    batch_stats: dict[int, BatchStat] = field(default_factory=dict)

    def snapshot(self) -> ModelStats:
        return copy.deepcopy(self)
