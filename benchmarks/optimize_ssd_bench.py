"""Issue 17 on the SSD detector: low-rank factorization in its ONNX graph (and INT8), judged on held-out footage.

    python -m benchmarks.optimize_ssd_bench [--energies 0.9,0.95,0.97,0.98,0.99] [--int8-methods ort,nncf-fast]
        [--heldout-frames 150] [--calibration-frames 32] [--runs 40] [--pi-runs 10] [--pi-slowdown 4]
        [--no-partition-calibration] [--source-onnx PATH] [--out benchmarks/results/optimize_ssd_lowrank.json]

The detector ``ssd_mobilenet_v2_coco`` exists only as an ONNX graph converted from the TF
frozen graph (``load_source_model`` as ``partition`` does, then ``prepare_source_model`` with the
model's partition defaults): there is no PyTorch source, so Torch-Pruning cannot run and
nothing can be distilled (``OnnxModule`` cannot run the graph: ``unsupported_ops`` is recorded).
What applies is :mod:`partitioner.optimize.lowrank_onnx`: every 1x1 Conv / Gemm / MatMul whose
weight keeps ``energy`` of its squared singular values at a rank that makes it cheaper becomes two
thin 1x1 convolutions. Variants: the FP32 original, one low-rank model per ``--energies`` value,
and the INT8 detector and each low-rank model in INT8 by each of ``--int8-methods``: the network
up to the raw box encodings and class logits quantized by :func:`partitioner.ptq.quantize_static`
(outputs left in float), the detection postprocessing (decoding, NMS) appended in FP32 again.
``original+<method>@bikes.mp4``: the INT8 original calibrated instead on ``partition``'s default
calibration footage (another scene), as the edge's INT8 fallback model is; ``.../whole``: the same
with the whole graph quantized, postprocessing included, as ``partition``'s ``Quantizer`` does.

Footage: OpenCV's vtest.avi (one fixed camera) split in time by
:func:`partitioner.optimize.sources.same_camera_footage`: frames of the first 60 % calibrate (INT8:
``--calibration-frames`` spread over them), the next 10 % are skipped, ``--heldout-frames`` spread over
the last 30 % are held out. Fidelity: detection F1 against the FP32 original's detections on the
held-out frames (``partitioner.fidelity``, IoU >= 0.5 per class), next to the cloud-only JPEG q90
baseline on the same frames (``partitioner.optimize.measure.held_out``), and ``partition``'s gate
(F1 >= JPEG - 0.02, every FP32 detection scoring >= 0.8 found).

Latency: batch 1, ONNX Runtime with one intra-op thread, every variant timed round-robin in the
same rounds (:func:`partitioner.optimize.measure.time_models`; speedups are ratios of medians from
one run), and under the emulated Pi of ``benchmarks.optimize_bench`` (a worker pinned to one core
under a cgroup-v1 CPU quota of 1/``--pi-slowdown``; null with the reason when unavailable).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import platform
import sys
import time
from typing import Mapping

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "optimize_ssd_lowrank.json"
DEFAULT_ENERGIES = (0.9, 0.95, 0.97, 0.98, 0.99)
#: ``ort``: ONNX Runtime's quantizer (QDQ on every activation, so every Conv fuses, the box predictors
#: included); ``nncf-fast``: the repo's default for heads (NNCF leaves the box predictors' outputs in
#: float, so those convolutions run in FP32 on weights dequantized at every run).
DEFAULT_INT8 = ("ort", "nncf-fast")
ORIGINAL = "original"
CONTROL = "original (timed twice)"


def fastest_variant(rows: Mapping[str, Mapping[str, object]], min_f1: float, *, gate: bool = False) -> str | None:
    """The optimized variant (not :data:`ORIGINAL`) with the highest ``speedup_1thread`` whose
    ``detection_f1`` is at least ``min_f1`` (and, with ``gate``, whose ``passes_gate`` is true);
    None when no variant qualifies. Ties go to the first in ``rows``' order."""
    best: str | None = None
    for key, row in rows.items():
        if key == ORIGINAL or float(row["detection_f1"]) < min_f1 or (gate and not row["passes_gate"]):  # type: ignore[arg-type]
            continue
        if best is None or float(rows[best]["speedup_1thread"]) < float(row["speedup_1thread"]):  # type: ignore[arg-type]
            best = key
    return best


def parse_energies(text: str) -> tuple[float, ...]:
    """``"0.9,0.95"`` -> (0.9, 0.95); raises ValueError naming a value outside (0, 1]."""
    values = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"energy {part!r} is not a number; expected fractions in (0, 1] joined by commas") from None
        if not 0.0 < value <= 1.0:
            raise ValueError(f"energy {value!r} is invalid; expected a fraction in (0, 1]")
        values.append(value)
    if not values:
        raise ValueError(f"energies {text!r} name no value; expected fractions in (0, 1] joined by commas")
    return tuple(values)


def _energy_key(energy: float) -> str:
    return f"lr{round(energy * 100):02d}"


# --------------------------------------------------------------------------- model and variants


def load_detector(source_onnx: pathlib.Path | None):  # noqa: ANN201 - (config, model, spec, description, sha256)
    """The prepared detector as ``partition`` builds it (converted afresh, or read from ``source_onnx``:
    an earlier ``load_source_model('ssd_mobilenet_v2_coco')`` saved to disk)."""
    import onnx

    from partitioner import assemble
    from partitioner.models import DETECTOR
    from partitioner.models.ssd_mobilenet_v2 import with_partition_defaults
    from partitioner.pipeline import PartitionConfig, load_source_model, prepare_source_model
    from partitioner.source_defaults import apply_source_defaults

    config = with_partition_defaults(PartitionConfig(model=DETECTOR, out_dir=pathlib.Path("unused")))
    if source_onnx is not None:
        source, description = onnx.load(str(source_onnx)), f"{source_onnx} (saved load_source_model output)"
    else:
        source, description = load_source_model(DETECTOR)
    sha256 = hashlib.sha256(source.SerializeToString()).hexdigest()
    config, _, _ = apply_source_defaults(config, source)
    model = prepare_source_model(source, config)
    return config, model, assemble.input_spec(model, config), description, sha256


def quantize_detector(model, calibration: list, method: str, *, quantize_outputs: bool = False):  # noqa: ANN001, ANN201
    """INT8 network (input -> raw box encodings, class logits; those left in float unless
    ``quantize_outputs``) with the FP32 detection postprocessing appended again: NMS and box
    decoding are not quantized."""
    from onnx import utils

    from partitioner import ptq
    from partitioner.models import ssd_mobilenet_v2 as ssd

    raw = utils.Extractor(model).extract_model([ssd.INPUT_TENSOR], [ssd.BOX_ENCODINGS, ssd.CLASS_LOGITS])
    # prepare_model merges equal constants, so the network may read the postprocessing's (post/zero for
    # its Clips): rename them, or appending the postprocessing again would duplicate the names.
    renamed = {t.name: f"raw/{t.name}" for t in raw.graph.initializer if t.name.startswith("post/")}
    for t in raw.graph.initializer:
        t.name = renamed.get(t.name, t.name)
    for node in raw.graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
    quantized = ptq.quantize_static(raw, calibration, method=method, quantize_outputs=quantize_outputs)
    return ssd.append_postprocess(quantized)


def build_variants(model, energies: tuple[float, ...], int8_methods: tuple[str, ...],  # noqa: ANN001
                   calibration: list) -> tuple[dict, dict]:
    """(models by key, description by key): the original, low-rank at each energy, and each of those
    quantized by each of ``int8_methods`` (key ``<fp32 key>+<method>``)."""
    from partitioner.optimize.lowrank_onnx import factorize_onnx
    from partitioner.optimize.steps import LowRank

    models = {ORIGINAL: model}
    info: dict = {ORIGINAL: {"label": "FP32 original", "lowrank_energy": None, "int8": None}}
    for energy in energies:
        key = _energy_key(energy)
        started = time.monotonic()
        factorized, ranks = factorize_onnx(model, LowRank(energy))
        models[key] = factorized
        info[key] = {"label": f"low-rank {energy:g} energy", "lowrank_energy": energy, "int8": None,
                     "build_seconds": round(time.monotonic() - started, 1), "factorized_nodes": len(ranks),
                     "ranks": [{"node": r.layer, "rank": r.rank, "full_rank": r.full_rank} for r in ranks]}
        print(f"{key}: {len(ranks)} 1x1 convs factorized", flush=True)
    for method in int8_methods:
        for base in [k for k, v in info.items() if v["int8"] is None]:
            key, started = f"{base}+{method}", time.monotonic()
            label = f"{info[base]['label']} + INT8 ({method})"
            try:
                models[key] = quantize_detector(models[base], calibration, method)
            except Exception as exc:  # noqa: BLE001 - recorded: a quantizer failing on one variant
                info[key] = {"label": label, "int8": method, "error": str(exc).splitlines()[0][:300]}
                print(f"{key} failed: {info[key]['error']}", flush=True)
                continue
            info[key] = {**{k: v for k, v in info[base].items() if k not in ("build_seconds", "label")},
                         "label": label, "int8": method, "from": base,
                         "build_seconds": round(time.monotonic() - started, 1)}
            print(f"{key}: quantized in {info[key]['build_seconds']:.0f} s", flush=True)
    return models, info


# --------------------------------------------------------------------------- the run


def partition_calibration(config, spec, count: int) -> tuple[pathlib.Path, list]:  # noqa: ANN001
    """``partition``'s calibration footage for this model (``config.calibration``, default bikes.mp4):
    ``count`` frames spread evenly, preprocessed as feeds."""
    import numpy as np

    from partitioner import calibration

    path = pathlib.Path(config.calibration) if config.calibration else calibration.default_calibration_path()
    frames = calibration.read_frames(path).frames
    picks = sorted(set(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int).tolist()))
    name = spec.tensor.name
    return path, [{name: x} for x in calibration.preprocess_frames([frames[i] for i in picks], spec)]


def _emulated_pi(models: dict, feed: dict, args: argparse.Namespace) -> dict:
    from benchmarks.optimize_bench import time_models_emulated_pi

    if args.pi_runs <= 0:
        return {"error": "skipped (--pi-runs 0)"}
    try:
        return time_models_emulated_pi(models, feed, slowdown=args.pi_slowdown, runs=args.pi_runs)
    except Exception as exc:  # noqa: BLE001 - recorded: the emulation is optional
        return {"error": f"emulated Pi failed: {str(exc).splitlines()[0][:300]}"}


def run(args: argparse.Namespace) -> dict:
    import numpy as np

    from partitioner import evaluation, ptq, samples
    from partitioner.onnx_torch import unsupported_ops
    from partitioner.optimize import measure
    from partitioner.optimize.sources import same_camera_footage

    t_start = time.monotonic()
    load_start = list(os.getloadavg())
    config, model, spec, description, sha256 = load_detector(args.source_onnx)
    name = spec.tensor.name
    footage = same_camera_footage(spec, samples.vtest_path(), heldout_frames=args.heldout_frames)
    train = footage.train.numpy()  # type: ignore[attr-defined]
    picks = np.linspace(0, len(train) - 1, min(args.calibration_frames, len(train))).round().astype(int)
    calibration = [{name: train[i : i + 1].copy()} for i in sorted(set(picks.tolist()))]
    del train
    heldout = measure.held_out(model, spec, footage.heldout, config.fidelity_gate, task="detection")
    jpeg = heldout.baseline
    print(f"held-out: {len(heldout.feeds)} frames ({'; '.join(heldout.sources)}); JPEG q{config.jpeg_quality} "
          f"detection F1 {jpeg.value:.4f} (confident recall {jpeg.confident_agreement:.3f})", flush=True)

    models, info = build_variants(model, args.energies, args.int8_methods, calibration)
    for entry in info.values():
        if entry["int8"]:
            entry["calibrated_on"] = f"{footage.train_sources[0]} ({len(calibration)} frames spread)"
    if args.partition_calibration:  # what partition's edge INT8 model calibrates on: another scene
        other, feeds = partition_calibration(config, spec, args.calibration_frames)
        for method in args.int8_methods:
            key = f"{ORIGINAL}+{method}@{other.name}"
            started = time.monotonic()
            models[key] = quantize_detector(model, feeds, method)
            info[key] = {"label": f"FP32 original + INT8 ({method}) calibrated on {other.name}", "lowrank_energy": None,
                         "int8": method, "from": ORIGINAL, "calibrated_on": f"{other} ({len(feeds)} frames spread)",
                         "build_seconds": round(time.monotonic() - started, 1)}
            print(f"{key}: quantized in {info[key]['build_seconds']:.0f} s", flush=True)
            key, started = f"{key}/whole", time.monotonic()  # as partition's Quantizer: postprocessing too
            models[key] = ptq.quantize_static(model, feeds, method=method, quantize_outputs=False)
            info[key] = {**info[key.removesuffix("/whole")], "build_seconds": round(time.monotonic() - started, 1),
                         "label": f"FP32 original + INT8 ({method}) calibrated on {other.name}, the whole graph "
                                  "(postprocessing too) quantized as partition's Quantizer does"}
            print(f"{key}: quantized in {info[key]['build_seconds']:.0f} s", flush=True)
    rows: dict = {}
    for key, m in models.items():
        score, passed, reason = heldout.score(m)
        params = measure.count_parameters(models[info[key].get("from", key)])  # INT8: the weights it quantized
        rows[key] = {**info[key], "params": params, "float_params": measure.count_parameters(m),
                     "macs": measure.count_macs(m),
                     "detection_f1": round(score.value, 4), "f1_minus_jpeg": round(score.value - jpeg.value, 4),
                     "confident_detections": score.confident_frames,
                     "confident_recall": round(score.confident_agreement, 4), "passes_gate": passed,
                     "gate_reason": reason}
        print(f"{key}: F1 {score.value:.4f} ({reason})", flush=True)
    rows.update({k: v for k, v in info.items() if k not in rows})  # failed builds, with their error

    print(f"timing {len(models)} models round-robin, one thread, {args.runs} rounds ...", flush=True)
    feed = dict(heldout.feeds[0])
    load_timing = list(os.getloadavg())
    # The original twice: the ratio of its two medians is this run's timing noise (the control).
    ms = measure.time_models({**models, CONTROL: model}, feed, threads=1, warmup=3, runs=args.runs)
    control = round(ms[ORIGINAL] / ms.pop(CONTROL), 3)
    pi = _emulated_pi(models, feed, args)
    for key in models:
        rows[key]["latency_ms_1thread"] = round(ms[key], 2)
        rows[key]["speedup_1thread"] = round(ms[ORIGINAL] / ms[key], 3)
        rows[key]["gflops"] = round(2 * rows[key]["macs"] / 1e9, 3)
        if "latency_ms" in pi:
            rows[key]["latency_ms_emulated_pi"] = round(pi["latency_ms"][key], 1)
            rows[key]["speedup_emulated_pi"] = round(pi["latency_ms"][ORIGINAL] / pi["latency_ms"][key], 3)
    timed = {k: r for k, r in rows.items() if "latency_ms_1thread" in r}
    at_jpeg = fastest_variant(timed, jpeg.value)
    gated = fastest_variant(timed, heldout.judge.gate.required(jpeg.value), gate=True)
    lowrank_only = fastest_variant({k: r for k, r in timed.items() if r["int8"] is None}, jpeg.value)

    def pick(key: str | None) -> dict | None:
        return None if key is None else {"variant": key, "speedup_1thread": timed[key]["speedup_1thread"],
                                         "detection_f1": timed[key]["detection_f1"],
                                         "meets_issue_goal_1.3x": timed[key]["speedup_1thread"] >= 1.3}

    return {
        "benchmark": "optimize_ssd_bench",
        "command": " ".join(["python -m benchmarks.optimize_ssd_bench", *args.argv]),
        "model": {"name": config.model, "source": description, "source_sha256": sha256,
                  "input": f"{name} {list(spec.tensor.shape) if spec.tensor.shape else ''}".strip()},
        "host": {"machine": platform.machine(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                 "python": platform.python_version(), "onnxruntime": _version("onnxruntime"),
                 "onnx": _version("onnx"), "note": "2 cores shared with another job (a training run on the other core)"},
        "load_average": {"start": load_start, "before_timing": load_timing, "end": list(os.getloadavg())},
        "frames": {"video": str(samples.vtest_path()), "calibration_sources": list(footage.train_sources),
                   "int8_calibration_frames": len(calibration), "heldout_sources": list(heldout.sources),
                   "heldout_frames": len(heldout.feeds)},
        "jpeg_baseline": {"quality": config.jpeg_quality, "detection_f1": round(jpeg.value, 4),
                          "confident_recall": round(jpeg.confident_agreement, 4),
                          "confident_detections": jpeg.confident_frames,
                          "gate_threshold": round(heldout.judge.gate.required(jpeg.value), 4),
                          "what": "held-out frames JPEG q90 at the model's input, decoded, FP32 original"},
        "fidelity": {"metric": "detection F1 vs the FP32 original's detections (IoU >= 0.5 per class, scores >= 0.05)",
                     "gate": f"F1 >= JPEG - {heldout.judge.gate.margin:g} and every FP32 detection scoring >= "
                             f"{heldout.judge.gate.confident_at:g} found"},
        "int8_arithmetic": {"fidelity": "fused (ONNX Runtime's default kernels, as timed)",
                            "partition_auto_on_this_host": evaluation.resolve_int8_arithmetic("auto")},
        "latency": {"threads": 1, "warmup": 3, "rounds": args.runs, "batch": 1,
                    "control_speedup": control,
                    "control": "the original timed a second time in the same rounds: its 'speedup' is noise",
                    "how": "median ms, every variant once per round, round-robin (measure.time_models)"},
        "emulated_pi": {k: v for k, v in pi.items() if k != "latency_ms"},
        "not_feasible": {
            "pruning": "no PyTorch source for the TF-converted detector: Torch-Pruning needs the torch module",
            "distillation": "no differentiable torch source; partitioner.onnx_torch.OnnxModule cannot run the graph "
                            f"(unsupported ops: {', '.join(unsupported_ops(model))})",
        },
        "columns": {"params": "weight elements (INT8 variants: those of the FP32 model they quantize)",
                    "float_params": "elements of float initializers (measure.count_parameters)",
                    "macs": "multiply-accumulates per frame in Conv/Gemm/MatMul (measure.count_macs); gflops = 2 x macs",
                    "speedup_1thread": "original's median / this median, same round-robin rounds"},
        "variants": rows,
        "fastest_f1_at_least_jpeg": pick(at_jpeg),
        "fastest_passing_gate": pick(gated),
        "fastest_fp32_lowrank_f1_at_least_jpeg": pick(lowrank_only),
        "seconds": round(time.monotonic() - t_start, 1),
    }


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "not installed"


def render_table(result: dict) -> str:
    """The results as a terminal table, the JPEG baseline on top."""
    jpeg = result["jpeg_baseline"]
    lines = [f"JPEG q{jpeg['quality']} baseline: detection F1 {jpeg['detection_f1']:.4f} on "
             f"{result['frames']['heldout_frames']} held-out frames (gate {jpeg['gate_threshold']:.4f})",
             f"{'variant':<35}{'params':>11}{'GFLOPs':>8}{'1thr ms':>9}{'speedup':>8}{'Pi ms':>8}{'F1':>8}"
             f"{'conf.rec':>9}  gate"]
    for key, r in result["variants"].items():
        if "error" in r:
            lines.append(f"{key:<35}  failed: {r['error']}")
            continue
        lines.append(f"{key:<35}{r['params']:>11,}{r['gflops']:>8.3f}{r['latency_ms_1thread']:>9.2f}"
                     f"{r['speedup_1thread']:>7.3f}x{r.get('latency_ms_emulated_pi', float('nan')):>8.1f}"
                     f"{r['detection_f1']:>8.4f}{r['confident_recall']:>9.3f}  {'pass' if r['passes_gate'] else 'fail'}")
    lines.append(f"timing control (the original timed twice): {result['latency']['control_speedup']:.3f}x")
    for label, key in (("fastest with F1 >= JPEG", "fastest_f1_at_least_jpeg"),
                       ("fastest passing the gate", "fastest_passing_gate"),
                       ("fastest FP32 low-rank with F1 >= JPEG", "fastest_fp32_lowrank_f1_at_least_jpeg")):
        pick = result[key]
        lines.append(f"{label}: " + ("none" if pick is None else
                                     f"{pick['variant']} ({pick['speedup_1thread']:.3f}x, F1 {pick['detection_f1']:.4f})"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--energies", type=parse_energies, default=DEFAULT_ENERGIES,
                   help="low-rank energies, comma-separated fractions in (0, 1]")
    p.add_argument("--int8-methods", type=lambda t: tuple(m for m in t.split(",") if m), default=DEFAULT_INT8,
                   help="partitioner.ptq methods for the INT8 variants, comma-separated; empty for none")
    p.add_argument("--heldout-frames", type=int, default=150)
    p.add_argument("--calibration-frames", type=int, default=32, help="INT8 calibration frames from the training stretch")
    p.add_argument("--partition-calibration", action=argparse.BooleanOptionalAction, default=True,
                   help="also the INT8 original calibrated on partition's default footage (bikes.mp4: another scene)")
    p.add_argument("--runs", type=int, default=40, help="round-robin rounds of one-thread timing")
    p.add_argument("--pi-runs", type=int, default=10, help="runs per model on the emulated Pi (0: skip)")
    p.add_argument("--pi-slowdown", type=float, default=4.0)
    p.add_argument("--source-onnx", type=pathlib.Path, default=None,
                   help="the converted detector saved earlier (skips the TensorFlow conversion)")
    p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    args.argv = argv
    from partitioner import ptq

    unknown = [m for m in args.int8_methods if m not in ptq.METHODS]
    if unknown:
        p.error(f"--int8-methods {unknown} are not among {', '.join(ptq.METHODS)}")
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(render_table(result))
    print(f"wrote {args.out} in {result['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
