"""Post-training quantization benchmark: every partitioner.ptq method on MobileNetV2.

    python -m benchmarks.ptq_bench [--quick] [--methods ort,nncf] [--eval-frames 120] [--out benchmarks/results/ptq.json]

The full MobileNetV2 (ImageNet weights, prepared as ``partition`` prepares it) is
quantized by each method, calibrated on ``--calibration-frames`` frames of bikes.mp4
spread over the video, preprocessed exactly as the default bundle's edge does
(resize 256, centre crop 224, RGB, ImageNet mean/std). Fidelity against the FP32 model
is measured on frames the calibration never saw, in two sets:

* ``bikes_held_out``: the other bikes.mp4 frames (same scene, other moments);
* ``other_videos``: frames of carphone_pristine.mp4 and bigbuckbunny.mp4 (other scenes).

Per set: top-1 agreement, top-1 agreement on the frames where FP32's softmax top-1 is
>= 0.5, FP32's top-1 inside the candidate's top-5, and mean KL(FP32 || candidate) of the
softmax outputs. The same for the cloud-only baseline: the frame as a q90 JPEG,
decoded, preprocessed and run through the FP32 model. Also per method: quantization
wall time, model size and single-thread median latency (batch 1) as ratios to FP32
(FP32 and INT8 runs take turns, so the ratio holds on a machine others share).

INT8 figures come twice: ``fused`` is what ONNX Runtime computes here with its default
optimizations (QLinearConv kernels), ``exact`` runs the QDQ graph op by op. They differ
on x86 CPUs without VNNI, whose UINT8 x INT8 kernels add pairs of products in 16 bits
and saturate; the Pi's ARM kernels do not, so ``exact`` is the closer estimate there.
The machine's CPU flags are recorded.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "ptq.json"
JPEG_QUALITY = 90
CONFIDENT = 0.5


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fidelity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Classifier fidelity of candidate logits [N, C] against the FP32 reference logits."""
    p, q = _softmax(reference), _softmax(candidate)
    want = reference.argmax(axis=1)
    agree = candidate.argmax(axis=1) == want
    confident = p.max(axis=1) >= CONFIDENT
    top5 = np.argsort(-candidate, axis=1)[:, :5]
    kl = np.sum(p * (np.log(np.clip(p, 1e-12, None)) - np.log(np.clip(q, 1e-12, None))), axis=1)
    return {
        "frames": int(len(want)),
        "top1_agreement": float(agree.mean()),
        "confident_frames": int(confident.sum()),
        "top1_agreement_confident": float(agree[confident].mean()) if confident.any() else None,
        "top5_containment": float(np.mean([w in row for w, row in zip(want, top5)])),
        "mean_kl": float(kl.mean()),
    }


def logits_of(model, feeds: list[np.ndarray], name: str) -> np.ndarray:
    from partitioner.evaluation import Pipeline, run_frames

    return np.concatenate([outs[0] for outs in run_frames(Pipeline(model, None), [{name: x} for x in feeds])])


def exact_logits_of(model, feeds: list[np.ndarray], name: str) -> np.ndarray:
    """Logits with graph optimizations off: each QuantizeLinear/DequantizeLinear and each
    Conv computed as written, i.e. the QDQ model's exact arithmetic, which integer kernels
    without saturation (ARM NEON, x86 VNNI) reproduce up to rounding."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {name: np.concatenate(feeds[i:i + 16])})[0]
                           for i in range(0, len(feeds), 16)])


def cpu_flags() -> list[str]:
    """The CPU features that decide how ORT's INT8 kernels add products (Linux only)."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimddp", "i8mm")
    return sorted({flag for flag in text.split() if flag in wanted})


def paired_latency_ms(models: list, feed: dict, runs: int) -> list[float]:
    """Median single-thread latency of one batch-1 run of each model (after 3 warm-up
    runs), the models taking turns run by run so that load from other processes on a
    shared machine falls on all of them alike."""
    from partitioner.evaluation import make_session

    sessions = [make_session(model, threads=1) for model in models]
    for session in sessions:
        for _ in range(3):
            session.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for session, record in zip(sessions, times):
            start = time.perf_counter()
            session.run(None, feed)
            record.append((time.perf_counter() - start) * 1000.0)
    return [float(np.median(t)) for t in times]


def _spread(frames: list, count: int) -> list:
    if len(frames) <= count:
        return list(frames)
    return [frames[i] for i in np.linspace(0, len(frames) - 1, count).round().astype(int)]


SETS = ("bikes_held_out", "other_videos")


def summarize(results: dict) -> None:
    """Best methods and goals from the measured rows (the current ``DEFAULT_METHOD``'s).

    Best = lowest mean KL against FP32 summed over both held-out sets, in exact QDQ
    arithmetic (what the Pi's kernels compute) and, separately, fused on this machine.
    """
    from partitioner import ptq

    ok = [r for r in results["methods"] if "error" not in r]
    if not ok:
        return

    def score(r: dict, mode: str) -> float:
        return sum(r[k][mode]["mean_kl"] for k in SETS)

    best = min(ok, key=lambda r: score(r, "exact"))
    results["best_method"] = best["method"]
    results["best_method_fused_here"] = min(ok, key=lambda r: score(r, "fused"))["method"]
    results["default_method"] = ptq.DEFAULT_METHOD
    chosen = next((r for r in ok if r["method"] == ptq.DEFAULT_METHOD), best)
    jpeg = results["jpeg_q90_baseline"]
    goals: dict = {"method": chosen["method"]}
    for mode in ("exact", "fused"):
        goals[mode] = {}
        for key in SETS:
            fid = chosen[key][mode]
            confident, baseline = fid["top1_agreement_confident"], jpeg[key]["top1_agreement_confident"]
            goals[mode][key] = {
                "kl_le_jpeg": {"value": fid["kl_vs_jpeg"], "met": fid["kl_vs_jpeg"] <= 1.0},
                "top1_ge_jpeg": {"value": fid["top1_minus_jpeg"], "met": fid["top1_minus_jpeg"] >= 0},
                "confident_agreement_ge_jpeg": {"value": [confident, baseline],
                                                "met": confident is None or confident >= (baseline or 0.0)},
            }
    goals["latency_le_0.6x_fp32"] = {"value": chosen["latency_vs_fp32"], "met": chosen["latency_vs_fp32"] <= 0.6}
    goals["size_le_0.3x_fp32"] = {"value": chosen["size_vs_fp32"], "met": chosen["size_vs_fp32"] <= 0.3}
    results["goals"] = goals
    print(f"best method (exact arithmetic): {best['method']}; fused on this machine: "
          f"{results['best_method_fused_here']}; DEFAULT_METHOD is {ptq.DEFAULT_METHOD}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ort and the default method, 8 + 32 frames (a smoke run)")
    parser.add_argument("--methods", default="", help="comma-separated methods (default: all of partitioner.ptq.METHODS)")
    parser.add_argument("--calibration-frames", type=int, default=32, help="bikes.mp4 frames to calibrate on (default 32)")
    parser.add_argument("--eval-frames", type=int, default=120, help="frames per evaluation set (default 120)")
    parser.add_argument("--runs", type=int, default=60, help="timed runs per latency figure (default 60)")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--rescore", action="store_true",
                        help="measure nothing: recompute best methods and goals of --out for the current DEFAULT_METHOD")
    args = parser.parse_args(argv)
    if args.rescore:
        results = json.loads(args.out.read_text())
        results["rescored"] = "best methods and goals recomputed by --rescore from the measured rows (no new measurement)"
        summarize(results)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"rescored {args.out}")
        return 0

    import onnx
    import onnxruntime as ort

    from partitioner import ptq, samples
    from partitioner.assemble import input_spec
    from partitioner.calibration import jpeg_roundtrip, preprocess_frames, read_frames
    from partitioner.config import PartitionConfig
    from partitioner.pipeline import load_source_model, prepare_source_model

    methods = [m for m in args.methods.split(",") if m] or list(ptq.METHODS)
    if args.quick:
        methods = list(dict.fromkeys(["ort", ptq.DEFAULT_METHOD]))
        args.calibration_frames, args.eval_frames, args.runs = 8, 32, 10
    unknown = [m for m in methods if m not in ptq.METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; expected some of {', '.join(ptq.METHODS)}")

    config = PartitionConfig(model="mobilenet_v2", out_dir=pathlib.Path("unused"))
    source, description = load_source_model(config.model)
    model = prepare_source_model(source, config)
    spec = input_spec(model, config)
    name = spec.tensor.name

    bikes = read_frames(samples.video_path("bikes.mp4"))
    calibration_bgr, held_out = bikes.split(args.calibration_frames)
    others: list[np.ndarray] = []
    for video in ("carphone_pristine.mp4", "bigbuckbunny.mp4"):
        others.extend(read_frames(samples.video_path(video)).frames)
    sets = {"bikes_held_out": _spread(list(held_out.frames), args.eval_frames),
            "other_videos": _spread(others, args.eval_frames)}
    calibration = [{name: x} for x in preprocess_frames(calibration_bgr.frames, spec)]
    inputs = {key: preprocess_frames(frames, spec) for key, frames in sets.items()}
    reference = {key: logits_of(model, feeds, name) for key, feeds in inputs.items()}

    results: dict = {
        "benchmark": "ptq_bench",
        "command": " ".join(["python -m benchmarks.ptq_bench", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "onnxruntime": ort.__version__, "onnx": onnx.__version__, "cpu_flags": cpu_flags()},
        "model": description,
        "calibration": f"{len(calibration)} frames of bikes.mp4 spread over its {len(bikes)} frames",
        "evaluation_sets": {"bikes_held_out": f"{len(sets['bikes_held_out'])} other bikes.mp4 frames",
                            "other_videos": f"{len(sets['other_videos'])} frames of carphone_pristine.mp4 + bigbuckbunny.mp4"},
        "preprocessing": {"resize_shorter_px": spec.resize_shorter_px, "size": [spec.height_px, spec.width_px],
                          "color_order": spec.color_order, "mean": list(spec.mean), "std": list(spec.std)},
    }
    jpeg = {}
    for key, frames in sets.items():
        decoded, _ = jpeg_roundtrip(frames, JPEG_QUALITY)
        jpeg[key] = fidelity(reference[key], logits_of(model, preprocess_frames(decoded, spec), name))
    results["jpeg_q90_baseline"] = jpeg
    probe = calibration[0]
    fp32_size = len(model.SerializeToString())
    (fp32_latency,) = paired_latency_ms([model], probe, args.runs)
    results["fp32"] = {"size_bytes": fp32_size, "latency_ms_1thread": fp32_latency}
    print(f"FP32: {fp32_size / 1e6:.2f} MB, {fp32_latency:.2f} ms (1 thread)", flush=True)
    for key, fid in jpeg.items():
        print(f"  jpeg q{JPEG_QUALITY} {key}: top-1 {fid['top1_agreement']:.3f} "
              f"(confident {fid['top1_agreement_confident']}) top-5 {fid['top5_containment']:.3f} KL {fid['mean_kl']:.4f}")

    rows = []
    for method in methods:
        started = time.monotonic()
        try:
            quantized = ptq.quantize_static(model, calibration, method=method)
        except Exception as exc:  # noqa: BLE001 - a method that fails is recorded, not fatal
            rows.append({"method": method, "error": f"{type(exc).__name__}: {exc}"})
            print(f"{method}: FAILED {exc}", flush=True)
            continue
        wall = time.monotonic() - started
        fp32_ms, int8_ms = paired_latency_ms([model, quantized], probe, args.runs)
        row = {"method": method, "quantize_wall_s": round(wall, 1),
               "size_bytes": len(quantized.SerializeToString()),
               "latency_ms_1thread": int8_ms, "fp32_latency_ms_same_turns": fp32_ms}
        row["size_vs_fp32"] = row["size_bytes"] / fp32_size
        row["latency_vs_fp32"] = int8_ms / fp32_ms
        for key, feeds in inputs.items():
            for mode, run in (("fused", logits_of), ("exact", exact_logits_of)):
                fid = fidelity(reference[key], run(quantized, feeds, name))
                fid["kl_vs_jpeg"] = fid["mean_kl"] / jpeg[key]["mean_kl"] if jpeg[key]["mean_kl"] > 0 else None
                fid["top1_minus_jpeg"] = fid["top1_agreement"] - jpeg[key]["top1_agreement"]
                row.setdefault(key, {})[mode] = fid
        rows.append(row)
        print(f"{method}: {wall:.1f} s, size {row['size_vs_fp32']:.2f}x, latency {row['latency_vs_fp32']:.2f}x "
              f"({row['latency_ms_1thread']:.2f} ms)", flush=True)
        for key in inputs:
            for mode, fid in row[key].items():
                print(f"  {key} {mode}: top-1 {fid['top1_agreement']:.3f} (confident {fid['top1_agreement_confident']}) "
                      f"top-5 {fid['top5_containment']:.3f} KL {fid['mean_kl']:.4f} ({fid['kl_vs_jpeg']:.2f}x JPEG)",
                      flush=True)
    results["methods"] = rows
    summarize(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
