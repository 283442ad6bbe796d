"""The early-exit stage of ``splitinfer partition`` and its stand-alone command.

``splitinfer partition MODEL --out B --exits features_14`` partitions, then trains and
calibrates an exit at each named cut (:func:`add_exits`) and records it
in the bundle. For a bundle that already exists::

    python -m partitioner.exit_stage BUNDLE --exits features_14[,features_7]
        [--exit-train-source VIDEO|FOLDER[,...]] [--exit-augment N] [--exit-heldout VIDEO|FOLDER[,...]]
        [--exit-frames N] [--exit-target T] [--exit-seed S] [--exit-epochs E]

Training frames default to the sample bikes.mp4 and held-out frames to the other sample
videos (no frame is shared); the target defaults to the bundle's JPEG-baseline agreement.

A classifier bundle gets "classifier" exits (pool + linear, distilled from the FP32 class
scores). A detector bundle (decoded ``boxes_scores_labels`` outputs) gets "objectness"
exits: a tiny conv distilled from the FP32 model's top detection score (after the bundle's
class filter) that says "nothing here"; a frame that exits reports no detections. It agrees
with FP32 when FP32 reports nothing at the bundle's score threshold either, and its default
target is the bundle's JPEG-baseline ``detection_f1``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import onnx

from onnx import helper, numpy_helper

from partitioner.exits import (Dequantize, calibrate_threshold, classifier_confidence, fit_classifier_exit,
                               fit_objectness_exit, profile_exit_ms, run_onnx)
from protos import bundle_pb2
from protos.bundle import Bundle, Side, compute_content_hash, read_bundle, sha256_file, update_manifest
from protos.exits import EXITS_DIR
from protos.names import INPUT_CUT, OUTPUT_CUT

logger = logging.getLogger(__name__)

__all__ = ["ExitOptions", "add_exit_arguments", "add_exits", "augmented_crops", "exit_options", "main",
           "run_exit_stage", "write_exits"]


@dataclass(frozen=True)
class ExitOptions:
    """Where the frames come from and how to train. ``target`` None = the bundle's JPEG baseline."""

    train_sources: tuple[str, ...] = ()  # videos or image folders; () = the sample bikes.mp4
    heldout_sources: tuple[str, ...] = ()  # "" = the other sample videos
    train_frames: int = 200  # frames read, spread evenly over all training sources
    augment: int = 0  # extra random crops (scale 0.5-1, mirrored half the time) per training frame
    heldout_frames: int = 200
    target: float | None = None
    seed: int = 0
    max_epochs: int = 60
    max_seconds: float = 300.0
    learning_rate: float = 3e-3
    threads: int = 1
    progress: bool = False
    min_exits: int = 5
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train_frames", "heldout_frames", "min_exits", "augment"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "augment" else 1):
                raise ValueError(f"exits.{name} = {value!r}; expected an integer >= {0 if name == 'augment' else 1}")
        if self.target is not None and not 0.0 <= self.target <= 1.0:
            raise ValueError(f"exits.target = {self.target!r}; expected a number in [0, 1] or None")


def _class_output(manifest: bundle_pb2.Manifest) -> tuple[str, bool]:
    """(class-score output name, True when it holds probabilities rather than logits)."""
    spec = manifest.output.classification
    name = spec.output_tensor or manifest.output.tensors[0].name
    return name, not spec.softmax


def _frames(source: str | os.PathLike[str], count: int) -> tuple[list[np.ndarray], str]:
    from partitioner.calibration import read_frames

    got = read_frames(source)
    frames = list(got.frames)
    if len(frames) > count:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, count).round().astype(int)]
    return frames, str(source)


def augmented_crops(frames: Sequence[np.ndarray], copies: int, *, seed: int) -> list[np.ndarray]:
    """``copies`` random crops of each frame (side 50-100 %, anywhere, mirrored half the time),
    deterministic for a seed: more views of few unlabelled frames for the exit to learn from."""
    rng = np.random.default_rng(seed)
    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        for _ in range(copies):
            scale = rng.uniform(0.5, 1.0)
            ch, cw = max(8, int(h * scale)), max(8, int(w * scale))
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            crop = frame[y:y + ch, x:x + cw]
            out.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return out


def _exit_input(cut: bundle_pb2.Cut) -> tuple[str, Dequantize | None]:
    """The cut tensor an exit reads (the highest-rank FP32 or per-tensor 8-bit one)."""
    usable: list[tuple[int, str, Dequantize | None]] = []
    for t in cut.tensors:
        enc = t.encoding
        if len(t.shape) not in (2, 4):
            continue
        if t.datatype == "FP32" and enc.codec in ("", "fp32", "fp16"):
            usable.append((len(t.shape), t.name, None))
        elif t.datatype in ("UINT8", "INT8") and enc.codec == "int8" and enc.scale > 0:
            usable.append((len(t.shape), t.name, Dequantize(enc.scale, int(enc.zero_point), t.datatype)))
    if not usable:
        raise ValueError(f"cut {cut.id!r} has no 2-D or 4-D FP32 or per-tensor int8 tensor to attach an exit to "
                         f"(tensors {[(t.name, t.datatype, list(t.shape), t.encoding.codec) for t in cut.tensors]})")
    _, name, dq = max(usable, key=lambda u: u[0])
    return name, dq


def add_exits(bundle_dir: str | os.PathLike[str], cut_ids: Sequence[str], options: ExitOptions = ExitOptions()
              ) -> Bundle:
    """Train, calibrate and add an exit at each of ``cut_ids`` to a written bundle: a
    classifier exit for a classifier, an objectness ("nothing here") exit for a detector.

    The bundle is rewritten in place (new files under ``edge/exits/``, the manifest's cuts and
    content hash). Cuts whose exit cannot reach the target with ``min_exits`` exiting
    held-out frames get none (logged).
    """
    from partitioner import calibration, samples
    from partitioner.training import TrainConfig
    from protos.preprocess import preprocess_bgr

    root = pathlib.Path(bundle_dir)
    bundle = read_bundle(root, Side.ALL)
    m = bundle.manifest
    kind = m.output.WhichOneof("postprocess")
    detector = kind == "detection" and m.output.detection.decoding == "boxes_scores_labels"
    if kind != "classification" and not detector:
        raise ValueError(f"bundle {str(root)!r} has output postprocess {kind!r}; add_exits builds exits for "
                         "classifiers and for detectors with decoded boxes_scores_labels outputs")
    bad = [c for c in cut_ids if c in (INPUT_CUT, OUTPUT_CUT) or c not in bundle.cut_ids]
    if bad:
        valid = [c for c in bundle.cut_ids if c not in (INPUT_CUT, OUTPUT_CUT)]
        raise ValueError(f"cannot add exits at {bad}; expected mid-graph cuts of the bundle: {valid}")
    target = options.target
    if target is None:
        metric = "detection_f1" if detector else "top1_agreement"
        if not m.HasField("evaluation") or m.evaluation.metric != metric:
            raise ValueError(f"the bundle records no {metric} JPEG baseline (manifest.evaluation); "
                             "pass ExitOptions.target")
        target = m.evaluation.baseline
    train_srcs = options.train_sources or (str(calibration.default_calibration_path()),)
    held_srcs = options.heldout_sources or tuple(
        str(p) for p in calibration.default_evaluation_paths() if pathlib.Path(p).name != samples.VIDEOS[0])
    train_bgr: list[np.ndarray] = []
    for src in train_srcs:
        train_bgr += _frames(src, max(1, options.train_frames // len(train_srcs)))[0]
    train_bgr += augmented_crops(train_bgr, options.augment, seed=options.seed)
    held_bgr: list[np.ndarray] = []
    per_source = max(1, options.heldout_frames // len(held_srcs))
    for src in held_srcs:
        held_bgr += _frames(src, per_source)[0]
    input_name = m.input.tensor.name
    train_feeds = [{input_name: preprocess_bgr(f, m.input)} for f in train_bgr]
    held_feeds = [{input_name: preprocess_bgr(f, m.input)} for f in held_bgr]
    sources = (tuple(train_srcs), tuple(held_srcs))
    if detector:
        return write_exits(root, _objectness_exits(bundle, cut_ids, train_feeds, held_feeds, target, options, sources))
    out_name, probabilities = _class_output(m)
    full = str(bundle.path(m.full_model))

    def teacher(feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
        names = [o.name for o in onnx.load(full, load_external_data=False).graph.output]
        outs = run_onnx(full, feeds)
        scores = np.concatenate([o[names.index(out_name)].reshape(1, -1) for o in outs])
        return np.log(np.clip(scores, 1e-12, None)) if probabilities else scores

    t_train, t_held = teacher(train_feeds), teacher(held_feeds)
    added: dict[str, tuple[bytes, bundle_pb2.EarlyExit]] = {}
    for cut_id in cut_ids:
        cut = bundle.cut(cut_id)
        act_name, dequantize = _exit_input(cut)
        head = str(bundle.path(cut.head))
        head_outputs = [o.name for o in onnx.load(head, load_external_data=False).graph.output]
        idx = head_outputs.index(act_name)
        a_train = np.concatenate([o[idx] for o in run_onnx(head, train_feeds)])
        a_held = np.concatenate([o[idx] for o in run_onnx(head, held_feeds)])
        config = TrainConfig(seed=options.seed, max_epochs=options.max_epochs, max_seconds=options.max_seconds,
                             learning_rate=options.learning_rate, threads=options.threads, progress=options.progress)
        fit = fit_classifier_exit(a_train, t_train, a_held, t_held, config, input_name=act_name,
                                  output_name=out_name, probabilities=probabilities, dequantize=dequantize)
        scores = np.concatenate([o[0].reshape(1, -1) for o in run_onnx(fit.model, [{act_name: a_held[i:i + 1]}
                                                                                     for i in range(len(a_held))])])
        agrees = scores.argmax(axis=1) == t_held.argmax(axis=1)
        cal = calibrate_threshold(classifier_confidence(scores, probabilities=probabilities), agrees,
                                  target=target, min_exits=options.min_exits)
        if cal.exit_rate * cal.frames < options.min_exits:
            logger.warning("exit at %s: no threshold reaches agreement %.3f with >= %d exiting held-out frames; "
                           "no exit added", cut_id, target, options.min_exits)
            continue
        report = fit.report
        spec = bundle_pb2.EarlyExit(
            kind="classifier", threshold=cal.threshold, outputs=[out_name], heldout_frames=cal.frames,
            exit_rate=cal.exit_rate, exit_agreement=cal.agreement, target=target, train_frames=len(a_train),
            epochs=report.epochs, seed=options.seed, heldout_loss=report.heldout_loss,
            train_sources=list(train_srcs), heldout_sources=list(held_srcs),
            exit_ms=profile_exit_ms(fit.model, {act_name: a_held[:1]}))
        logger.info("exit at %s: threshold %.3f, %.0f%% of %d held-out frames exit, agreement %.3f (target %.3f)",
                    cut_id, cal.threshold, 100 * cal.exit_rate, cal.frames, cal.agreement, target)
        added[cut_id] = (fit.model.SerializeToString(), spec)
    return write_exits(root, added)


def _read_labels(path: pathlib.Path) -> list[str]:
    """A bundle's labels file: a JSON list or one label per line."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return [str(x) for x in json.loads(text)]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _top_detection_scores(bundle: Bundle, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The FP32 full model's best detection score per frame (0 with none), among the classes the
    bundle reports (its class filter): what the objectness exit learns to predict."""
    m = bundle.manifest
    det = m.output.detection
    names = list(det.output_tensors) or [t.name for t in m.output.tensors[:3]]
    full = str(bundle.path(m.full_model))
    graph_outputs = [o.name for o in onnx.load(full, load_external_data=False).graph.output]
    missing = [n for n in names[:3] if n not in graph_outputs]
    if len(names) < 3 or missing:
        raise ValueError(f"detector outputs {names} (missing {missing}): expected boxes, scores and labels among "
                         f"the full model's outputs {graph_outputs}")
    labels = _read_labels(bundle.path(det.labels)) if det.HasField("labels") else []
    wanted = set(det.class_filter)
    tops = []
    for outs in run_onnx(full, feeds):
        scores = np.asarray(outs[graph_outputs.index(names[1])], dtype=np.float64).reshape(-1)
        classes = np.asarray(outs[graph_outputs.index(names[2])]).reshape(-1).astype(np.int64)
        if wanted:
            keep = np.array([(labels[c] if 0 <= c < len(labels) else str(c)) in wanted for c in classes], bool)
            scores = scores[keep] if keep.size else scores
        tops.append(float(scores.max()) if scores.size else 0.0)
    return np.array(tops)


def _with_dequantize(model: onnx.ModelProto, input_name: str, dq: Dequantize) -> onnx.ModelProto:
    """The exit reading the cut's 8-bit codes: a DequantizeLinear in front of its float input."""
    g = model.graph
    real = f"{input_name}_dequantized"
    for node in g.node:
        node.input[:] = [real if i == input_name else i for i in node.input]
    zp_dtype = np.uint8 if dq.datatype == "UINT8" else np.int8
    g.initializer.extend([numpy_helper.from_array(np.array(dq.scale, np.float32), "exit_dq_scale"),
                          numpy_helper.from_array(np.array(dq.zero_point, zp_dtype), "exit_dq_zero_point")])
    g.node.insert(0, helper.make_node("DequantizeLinear", [input_name, "exit_dq_scale", "exit_dq_zero_point"], [real]))
    g.input[0].type.tensor_type.elem_type = onnx.TensorProto.UINT8 if dq.datatype == "UINT8" else onnx.TensorProto.INT8
    onnx.checker.check_model(model)
    return model


def _objectness_exits(bundle: Bundle, cut_ids: Sequence[str], train_feeds: list[dict[str, np.ndarray]],
                      held_feeds: list[dict[str, np.ndarray]], target: float, options: ExitOptions,
                      sources: tuple[tuple[str, ...], tuple[str, ...]]) -> dict[str, tuple[bytes, bundle_pb2.EarlyExit]]:
    """Fit and calibrate an objectness exit at each cut of a detector bundle (see the module docstring)."""
    from partitioner.training import TrainConfig

    t_train, t_held = _top_detection_scores(bundle, train_feeds), _top_detection_scores(bundle, held_feeds)
    empty_held = t_held < bundle.manifest.output.detection.score_threshold  # FP32 reports nothing here
    added: dict[str, tuple[bytes, bundle_pb2.EarlyExit]] = {}
    for cut_id in cut_ids:
        cut = bundle.cut(cut_id)
        act_name, dequantize = _exit_input(cut)
        head = str(bundle.path(cut.head))
        idx = [o.name for o in onnx.load(head, load_external_data=False).graph.output].index(act_name)
        a_train = np.concatenate([o[idx] for o in run_onnx(head, train_feeds)])
        a_held = np.concatenate([o[idx] for o in run_onnx(head, held_feeds)])
        real = dequantize.apply if dequantize is not None else (lambda a: a)
        config = TrainConfig(seed=options.seed, max_epochs=options.max_epochs, max_seconds=options.max_seconds,
                             learning_rate=options.learning_rate, threads=options.threads, progress=options.progress)
        fit = fit_objectness_exit(real(a_train), t_train, real(a_held), t_held, config, input_name=act_name)
        model = _with_dequantize(fit.model, act_name, dequantize) if dequantize is not None else fit.model
        out_name = model.graph.output[0].name
        p_any = np.concatenate([o[0].reshape(-1) for o in run_onnx(model, [{act_name: a_held[i:i + 1]}
                                                                            for i in range(len(a_held))])])
        cal = calibrate_threshold(1.0 - p_any, empty_held, target=target, min_exits=options.min_exits)
        if cal.exit_rate * cal.frames < options.min_exits:
            logger.warning("objectness exit at %s: no threshold reaches agreement %.3f with >= %d exiting held-out "
                           "frames (%d of %d held-out frames are empty for FP32); no exit added", cut_id, target,
                           options.min_exits, int(empty_held.sum()), len(empty_held))
            continue
        spec = bundle_pb2.EarlyExit(
            kind="objectness", threshold=cal.threshold, outputs=[out_name], heldout_frames=cal.frames,
            exit_rate=cal.exit_rate, exit_agreement=cal.agreement, target=target, train_frames=len(a_train),
            epochs=fit.report.epochs, seed=options.seed, heldout_loss=fit.report.heldout_loss,
            train_sources=list(sources[0]), heldout_sources=list(sources[1]),
            exit_ms=profile_exit_ms(model, {act_name: a_held[:1]}))
        logger.info("objectness exit at %s: threshold %.3f, %.0f%% of %d held-out frames exit, agreement %.3f "
                    "(target %.3f)", cut_id, cal.threshold, 100 * cal.exit_rate, cal.frames, cal.agreement, target)
        added[cut_id] = (model.SerializeToString(), spec)
    return added


def write_exits(root: pathlib.Path, exits: dict[str, tuple[bytes, bundle_pb2.EarlyExit]]) -> Bundle:
    """Write each exit's ONNX file under ``edge/exits/`` and record it in its cut (content hash updated)."""
    refs = {}
    for cut_id, (data, _) in exits.items():
        rel = f"{EXITS_DIR}/{cut_id}.onnx"
        path = root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".onnx.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        refs[cut_id] = bundle_pb2.FileRef(path=rel, sha256=sha256_file(path), size_bytes=len(data))

    def mutate(manifest: bundle_pb2.Manifest) -> None:
        for cut in manifest.cuts:
            if cut.id in exits:
                cut.exit_head.CopyFrom(refs[cut.id])
                cut.early_exit.CopyFrom(exits[cut.id][1])
        manifest.content_hash = compute_content_hash(manifest)

    return update_manifest(root, mutate)


def describe(spec: bundle_pb2.EarlyExit) -> str:
    """One line for reports."""
    return (f"{spec.kind} exit: threshold {spec.threshold:.3f}, held-out exit rate {100 * spec.exit_rate:.0f}% "
            f"agreeing {spec.exit_agreement:.3f} (target {spec.target:.3f}), {spec.exit_ms:.2f} ms")


# --------------------------------------------------------------------------- command line


def add_exit_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("early exits (issue 16)")
    group.add_argument("--exits", help="cut ids to give an early exit, ',' separated (trained without labels)")
    group.add_argument("--exit-train-source", help="videos or image folders to distil the exits on, ',' separated "
                       "(default: bikes.mp4)")
    group.add_argument("--exit-augment", type=int, default=0, help="random crops per training frame (default 0)")
    group.add_argument("--exit-heldout", help="held-out videos/folders for the threshold, ',' separated "
                       "(default: the other sample videos)")
    group.add_argument("--exit-frames", type=int, default=200, help="training and held-out frames each (default 200)")
    group.add_argument("--exit-target", type=float, default=None,
                       help="agreement with FP32 the exiting frames must reach (default: the JPEG baseline's)")
    group.add_argument("--exit-seed", type=int, default=0, help="training seed (default 0)")
    group.add_argument("--exit-epochs", type=int, default=60, help="training epochs (default 60)")


def exit_options(args: argparse.Namespace) -> ExitOptions:
    held = tuple(s for s in (args.exit_heldout or "").split(",") if s)
    train = tuple(s for s in (args.exit_train_source or "").split(",") if s)
    return ExitOptions(train_sources=train, heldout_sources=held, augment=args.exit_augment,
                       train_frames=args.exit_frames, heldout_frames=args.exit_frames, target=args.exit_target,
                       seed=args.exit_seed, max_epochs=args.exit_epochs, progress=True)


def run_exit_stage(bundle_root: pathlib.Path, args: argparse.Namespace) -> Optional[Bundle]:
    """Add the exits ``args.exits`` names (None when it names none)."""
    cuts = [c.strip() for c in (args.exits or "").split(",") if c.strip()]
    if not cuts:
        return None
    bundle = add_exits(bundle_root, cuts, exit_options(args))
    for cut_id in cuts:
        cut = bundle.cut(cut_id)
        line = describe(cut.early_exit) if cut.HasField("early_exit") else "no exit (target not reachable)"
        print(f"exit at {cut_id}: {line}")
    return bundle


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partitioner.exit_stage",
                                     description="Train and calibrate early exits in an existing bundle.")
    parser.add_argument("bundle", type=pathlib.Path)
    add_exit_arguments(parser)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.exits:
        parser.error("--exits is required: the cut ids to give an exit")
    try:
        run_exit_stage(args.bundle, args)
    except (ValueError, OSError) as exc:
        print(f"partitioner.exit_stage: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
