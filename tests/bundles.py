"""The one bundle factory every test uses.

Tests describe a bundle in a few values (the full model, the input and output tensors,
the cuts with their head/tail graphs) and :func:`write_test_bundle` writes it with the
real :class:`protos.bundle.BundleWriter`, so every side reads it exactly as it reads a
partitioner bundle. The manifest is built here and nowhere else in the tests.

Models are serialized ONNX bytes built by each test module (usually with
``onnx.helper``); :data:`FULL` stands for "the full model file" where a cut reuses it
(the ``input`` cut's tail, an ``output`` cut's head).
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union

from protos import bundle_pb2
from protos.bundle import Bundle, BundleWriter
from protos.names import INPUT_CUT, OUTPUT_CUT

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Full:
    """Marker: use the bundle's full model file here."""

    def __repr__(self) -> str:
        return "FULL"


FULL = _Full()
Model = Union[bytes, _Full, None]


@dataclass(frozen=True)
class Tensor:
    """A tensor of the manifest: name, Open Inference Protocol datatype, shape (-1 = variable)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    codec: Optional[str] = "fp32"  # None = no encoding entry
    scale: float = 0.0
    zero_point: int = 0

    def spec(self) -> bundle_pb2.TensorSpec:
        spec = bundle_pb2.TensorSpec(name=self.name, datatype=self.datatype, shape=list(self.shape))
        if self.codec is not None:
            spec.encoding.codec = self.codec
            if self.scale:
                spec.encoding.scale = self.scale
            if self.zero_point:
                spec.encoding.zero_point = self.zero_point
        return spec


@dataclass(frozen=True)
class Profile:
    head_ms: float = 0.0
    tail_ms: float = 0.0
    device: str = "test"
    threads: int = 1
    runs: int = 5

    def proto(self) -> bundle_pb2.LatencyProfile:
        return bundle_pb2.LatencyProfile(device=self.device, threads=self.threads, runs=self.runs,
                                         head_ms=self.head_ms, tail_ms=self.tail_ms)


@dataclass(frozen=True)
class CutSpec:
    """One cut. Mid-graph cuts need a head and a tail and are marked verified."""

    id: str
    tensors: tuple[Tensor, ...]
    head: Model = None
    tail: Model = None
    wire_bytes: int = 0
    display_name: str = ""
    edge_profile: Optional[Profile] = None
    cloud_profile: Optional[Profile] = None
    wire_bytes_by_codec: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class InputSpec:
    tensor: Tensor
    width_px: int
    height_px: int
    layout: str = "NCHW"
    color_order: str = "RGB"
    resize_shorter_px: int = 0
    pixel_scale: float = 1 / 255
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    jpeg_quality: int = 90


@dataclass(frozen=True)
class BundleSpec:
    model_name: str
    full_model: bytes
    input: InputSpec
    outputs: tuple[Tensor, ...]
    cuts: tuple[CutSpec, ...]
    labels: Sequence[str] = ()
    top_k: int = 3
    softmax: bool = True
    model_version: str = "1.0"
    created_by: str = "tests"
    opset: int = 0
    full_model_path: str = "edge/full_model.onnx"
    verification: bundle_pb2.Verification = field(default_factory=lambda: bundle_pb2.Verification(
        frames=4, max_abs_error=0.0, top1_agreement=1.0, cosine=1.0, passed=True, reference="full fp32 model"))


def build_manifest(spec: BundleSpec, writer: BundleWriter) -> bundle_pb2.Manifest:
    """Write the spec's files into ``writer``'s staging area and return the manifest for them."""
    m = bundle_pb2.Manifest(model_name=spec.model_name, model_version=spec.model_version,
                            created_by=spec.created_by, opset=spec.opset)
    inp = spec.input
    m.input.tensor.CopyFrom(inp.tensor.spec())
    m.input.width_px, m.input.height_px = inp.width_px, inp.height_px
    m.input.layout, m.input.color_order = inp.layout, inp.color_order
    m.input.resize_shorter_px = inp.resize_shorter_px
    m.input.pixel_scale = inp.pixel_scale
    m.input.mean.extend(inp.mean)
    m.input.std.extend(inp.std)
    m.input.jpeg_quality = inp.jpeg_quality
    for out in spec.outputs:
        m.output.tensors.append(out.spec())
    m.output.classification.top_k = spec.top_k
    m.output.classification.softmax = spec.softmax
    m.output.classification.output_tensor = spec.outputs[0].name
    if spec.labels:
        m.output.classification.labels.CopyFrom(
            writer.add_bytes("edge/labels.json", json.dumps(list(spec.labels)).encode()))
    full_ref = writer.add_bytes(spec.full_model_path, spec.full_model)
    m.full_model.CopyFrom(full_ref)
    for order, cut in enumerate(spec.cuts):
        entry = m.cuts.add(id=cut.id, display_name=cut.display_name or cut.id, order=order,
                           wire_bytes=cut.wire_bytes)
        entry.tensors.extend(t.spec() for t in cut.tensors)
        for codec, size in cut.wire_bytes_by_codec.items():
            entry.wire_bytes_by_codec[codec] = size
        for side, model in (("head", cut.head), ("tail", cut.tail)):
            if model is None:
                continue
            if isinstance(model, _Full):
                ref = full_ref if side == "head" else writer.add_bytes(f"cloud/tails/{cut.id}.onnx", spec.full_model)
            else:
                folder = "edge/heads" if side == "head" else "cloud/tails"
                ref = writer.add_bytes(f"{folder}/{cut.id}.onnx", model)
            getattr(entry, side).CopyFrom(ref)
        if cut.id not in (INPUT_CUT, OUTPUT_CUT):
            entry.verification.CopyFrom(spec.verification)
        if cut.edge_profile is not None:
            entry.edge_profiles.append(cut.edge_profile.proto())
        if cut.cloud_profile is not None:
            entry.cloud_profiles.append(cut.cloud_profile.proto())
    return m


def write_test_bundle(out: pathlib.Path, spec: BundleSpec) -> Bundle:
    """Write ``spec`` as a bundle at ``out`` (replacing it) and return it as read back."""
    with BundleWriter(out, overwrite=True) as writer:
        return writer.commit(build_manifest(spec, writer))
