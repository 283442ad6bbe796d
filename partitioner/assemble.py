"""Bundle assembly: what the manifest says about the model's input, its outputs and each
cut, built from the pipeline's values and written atomically (:mod:`protos.bundle`).

* :func:`input_spec` — how the edge turns a camera frame into the model's input
  (size, layout, colour order, normalisation, JPEG quality for the ``input`` cut).
* :func:`fixed_input_shapes` — the image shape to fix before shape inference when the
  model's own image size is symbolic.
* :func:`write_bundle` — the manifest and every file of the bundle.

A model with one ``[N, C]`` output (C > 1) is a classifier: the manifest says so, with
``top_k`` and the labels (class indices when none are given). Anything else is recorded
as raw outputs for the application to decode.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from typing import Sequence

import onnx

from partitioner.config import PartitionConfig
from partitioner.errors import UnsupportedModel
from partitioner.graph import graph_inputs, oip_datatype, opset_version, tensor_shape, value_infos
from partitioner.stages import ProfiledCut
from protos import bundle as bundle_io
from protos import bundle_pb2
from protos import detection
from protos import lineage as lineage_io
from protos.names import OUTPUT_CUT

CREATED_BY = "splitinfer partition"
#: Where the INT8 full model (the edge's fast local fallback) lives in the bundle.
INT8_FULL_MODEL = "edge/full_model_int8.onnx"


def _image_layout(shape: Sequence[int | str]) -> str:
    return "NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW"


def input_spec(model: onnx.ModelProto, config: PartitionConfig) -> bundle_pb2.InputSpec:
    """The manifest's input spec for a model with exactly one image input ``[N, C, H, W]``
    or ``[N, H, W, C]``; ``config.input_size`` overrides (or supplies) the image size."""
    inputs = graph_inputs(model.graph)
    if len(inputs) != 1:
        raise UnsupportedModel(
            f"the model has {len(inputs)} graph inputs {[i.name for i in inputs]}; "
            "the partitioner feeds camera frames and expects exactly one image input"
        )
    vi = inputs[0]
    shape = tensor_shape(vi)
    if len(shape) != 4:
        raise UnsupportedModel(f"input {vi.name!r} has shape {shape}; expected an image batch [N, C, H, W] or [N, H, W, C]")
    layout = config.layout or _image_layout(shape)
    h, w = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
    if config.input_size[0]:
        h, w = config.input_size
    if not (isinstance(h, int) and isinstance(w, int)):
        raise UnsupportedModel(f"input {vi.name!r} has symbolic image size {shape}; pass the input size (--input-size HxW)")
    spec = bundle_pb2.InputSpec(
        width_px=w, height_px=h, layout=layout, color_order=config.color_order,
        resize_shorter_px=config.resize_shorter_px, pixel_scale=config.pixel_scale,
        mean=list(config.mean), std=list(config.std), jpeg_quality=config.jpeg_quality,
    )
    dims = [-1, 3, h, w] if layout == "NCHW" else [-1, h, w, 3]
    spec.tensor.CopyFrom(bundle_pb2.TensorSpec(name=vi.name, datatype="FP32", shape=dims,
                                               encoding=bundle_pb2.WireEncoding(codec="fp32", compression="none")))
    return spec


def fixed_input_shapes(model: onnx.ModelProto, config: PartitionConfig) -> dict[str, list[int]] | None:
    """With ``config.input_size`` set, the image input's shape [1, C, H, W] (or NHWC) for shape inference."""
    if not config.input_size[0]:
        return None
    inputs = graph_inputs(model.graph)
    if len(inputs) != 1:
        return None
    shape = tensor_shape(inputs[0])
    h, w = config.input_size
    if len(shape) == 4 and (config.layout or _image_layout(shape)) == "NHWC":
        return {inputs[0].name: [1, h, w, int(shape[3])]}
    channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else 3
    return {inputs[0].name: [1, channels, h, w]}


def write_bundle(
    config: PartitionConfig,
    model: onnx.ModelProto,
    *,
    source: str,
    spec: bundle_pb2.InputSpec,
    labels: Sequence[str],
    cuts: Sequence[ProfiledCut],
    evaluation: bundle_pb2.Evaluation | None = None,
    source_format: bundle_pb2.SourceFormat | None = None,
) -> bundle_io.Bundle:
    """Write the bundle at ``config.out_dir`` (replacing it only with ``config.overwrite``):
    the FP32 full model for offline fallback, the INT8 full model when the ``output`` cut
    ships it (it passed the gate), labels, each cut's head, tail and figures, and how
    fidelity was judged."""
    with bundle_io.BundleWriter(config.out_dir, overwrite=config.overwrite) as writer:
        manifest = bundle_pb2.Manifest(
            model_name=config.bundle_model_name,
            model_version=hashlib.sha256(model.SerializeToString()).hexdigest()[:12],
            created_by=CREATED_BY,
            created_at=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            source=source,
            opset=opset_version(model),
        )
        manifest.input.CopyFrom(spec)
        lineage = {p.key: p.value for p in model.metadata_props}.get(lineage_io.METADATA_KEY)
        if lineage:  # issue 17: the model came out of `splitinfer optimize` (protos.lineage)
            manifest.lineage.CopyFrom(lineage_io.lineage_from_json(lineage))
        _describe_outputs(manifest, model, config.top_k, labels, writer)
        manifest.full_model.CopyFrom(writer.add_bytes("edge/full_model.onnx", model.SerializeToString()))
        int8_full = next((p.cut.head for p in cuts if p.cut.candidate.id == OUTPUT_CUT
                          and p.cut.head is not None and p.cut.head_precision == "int8"), None)
        if int8_full is not None:
            manifest.full_model_int8.CopyFrom(writer.add_bytes(INT8_FULL_MODEL, int8_full.SerializeToString()))
        if evaluation is not None:
            manifest.evaluation.CopyFrom(evaluation)
        if source_format is not None:  # issue 12: the format the model came in (protos.source_format)
            manifest.source_format.CopyFrom(source_format)
        for profiled in cuts:
            _add_cut(manifest, profiled, writer)
        return writer.commit(manifest)


def _describe_outputs(manifest: bundle_pb2.Manifest, model: onnx.ModelProto, top_k: int, labels: Sequence[str],
                      writer: bundle_io.BundleWriter) -> None:
    infos = value_infos(model)
    output_names = [o.name for o in model.graph.output]
    for name in output_names:
        shape = [d if isinstance(d, int) and d > 0 else -1 for d in tensor_shape(infos[name])]
        if shape:
            shape[0] = -1
        manifest.output.tensors.append(bundle_pb2.TensorSpec(
            name=name, datatype=oip_datatype(infos[name].type.tensor_type.elem_type), shape=shape or [-1],
            encoding=bundle_pb2.WireEncoding(codec="fp32", compression="none")))
    first = manifest.output.tensors[0]
    if len(output_names) == 1 and len(first.shape) == 2 and first.shape[1] > 1:
        classes = int(first.shape[1])
        cls = manifest.output.classification
        cls.top_k = min(top_k, classes)
        cls.softmax = True
        cls.output_tensor = first.name
        names = list(labels) or [str(i) for i in range(classes)]
        if len(names) != classes:
            raise ValueError(f"{len(names)} labels for an output of {classes} classes")
        cls.labels.CopyFrom(writer.add_bytes("edge/labels.json", json.dumps(names, ensure_ascii=False).encode()))
    else:
        det = manifest.output.detection
        det.decoding = "raw"
        det.output_tensors.extend(output_names)
        declared = {p.key: p.value for p in model.metadata_props}.get(detection.METADATA_KEY)
        if declared:  # a detector that decodes in its graph (issue 12): protos.detection
            detection.fill_spec(det, json.loads(declared))
        if labels:
            det.labels.CopyFrom(writer.add_bytes("edge/labels.json", json.dumps(list(labels), ensure_ascii=False).encode()))


def _add_cut(manifest: bundle_pb2.Manifest, profiled: ProfiledCut, writer: bundle_io.BundleWriter) -> None:
    item = profiled.cut
    cand = item.candidate
    cut = manifest.cuts.add(id=cand.id, display_name=cand.display_name, order=cand.order,
                            wire_bytes=int(item.wire.shipped_bytes))
    cut.tensors.extend(item.tensors)
    for codec, size in item.wire.by_codec.items():
        cut.wire_bytes_by_codec[codec] = int(size)
    if item.head is not None:
        cut.head.CopyFrom(writer.add_bytes(f"edge/heads/{cand.id}.onnx", item.head.SerializeToString()))
        cut.head_precision = item.head_precision
    if item.tail is not None:
        cut.tail.CopyFrom(writer.add_bytes(f"cloud/tails/{cand.id}.onnx", item.tail.SerializeToString()))
        cut.tail_precision = item.tail_precision
    cut.head_flops, cut.head_params = cand.head_flops, cand.head_params
    cut.tail_flops, cut.tail_params = cand.tail_flops, cand.tail_params
    cut.verification.CopyFrom(item.verification)
    cut.fidelity.CopyFrom(item.fidelity)
    cut.edge_profiles.append(profiled.edge_profile)
    cut.cloud_profiles.append(profiled.cloud_profile)
