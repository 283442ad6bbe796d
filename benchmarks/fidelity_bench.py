"""Fidelity benchmark (issue 11's figures): what ships per cut under the fidelity gate, and
what the INT8 heads cost and save.

    python -m benchmarks.fidelity_bench [--models mobilenet_v2,light_squeezenet] [--frames 200] [--runs 30]
                                        [--out benchmarks/results/fidelity.json]

For each model, one ``run_partition`` with the partitioner's defaults (for MobileNetV2 that
is exactly ``build_default_bundle``, the bundle ``make demo`` serves): calibration on
bikes.mp4, fidelity on held-out frames of the other sample videos. Then per cut:

* the head precision shipped, the remedy, the gate's verdict, and the fidelity of the
  shipped split next to the cloud-only JPEG baseline's on the same frames (the task's
  metric; for classifiers also agreement where FP32 is confident, top-5, KL);
* the shipped INT8 head against the FP32 head of the same cut with the same wire codec:
  serialized size and median single-thread latency on this machine (2 shared cores).

Goals: every mid-graph MobileNetV2 cut ships an INT8 head that passes the gate; INT8 head
latency <= 0.6x FP32 and size <= 0.3x (the full model, and per cut); the INT8 full model
ships for fallback; the default bundle has INT8 heads.

Models: ``mobilenet_v2`` (ImageNet weights, a classifier) and the onnx package's light
test models by name (``light_squeezenet`` ...): their weights are not trained, so they are
measured as ``--task other`` (output cosine), and their classification figures mean nothing.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "fidelity.json"
SIZE_GOAL, LATENCY_GOAL = 0.3, 0.6


def _light_model_path(name: str) -> pathlib.Path:
    import onnx

    path = pathlib.Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"{name}.onnx"
    if not path.is_file():
        raise SystemExit(f"no onnx light model {name!r} at {path}")
    return path


def _config(spec: str, out_dir: pathlib.Path, frames: int):
    """``name`` or ``name@method`` (a partitioner.ptq method instead of the default)."""
    from partitioner.pipeline import PartitionConfig

    name, _, method = spec.partition("@")
    extra = {"quantization": method} if method else {}
    if name == "mobilenet_v2":
        return PartitionConfig(model=name, out_dir=out_dir, fidelity_frames=frames, overwrite=True, **extra)
    return PartitionConfig(model=str(_light_model_path(name)), out_dir=out_dir, fidelity_frames=frames, overwrite=True,
                           task="other", model_name=name, **extra)


def _fp32_head_with_wire(model, cut) -> object:
    """The FP32 head of ``cut`` with the wire codec the shipped head has (same scales)."""
    from partitioner import codecs
    from partitioner.cut_selection import select_cuts
    from partitioner.split import split_model

    names = [t.name for t in cut.tensors]
    candidate = select_cuts(model, [",".join(names)])[0] if cut.id != "output" else None
    head = model if candidate is None else split_model(model, candidate)[0]
    params = {t.name: codecs.Int8Params(t.encoding.scale, int(t.encoding.zero_point))
              for t in cut.tensors if t.encoding.codec == "int8"}
    if params and cut.id != "output":
        head, _ = codecs.add_int8_wire(head, None, params)
    return head


def measure_model(name: str, frames: int, runs: int) -> dict:
    import onnx

    from partitioner import calibration
    from partitioner import profile as profiling
    from partitioner.pipeline import load_source_model, prepare_source_model, run_partition
    from protos.names import END_CUTS
    from protos.preprocess import preprocess_bgr

    with tempfile.TemporaryDirectory(prefix="fidelity-bench-") as tmp:
        config = _config(name, pathlib.Path(tmp) / "bundle", frames)
        wall0 = time.monotonic()
        report = run_partition(config)
        wall_s = time.monotonic() - wall0
        bundle = report.bundle
        manifest = bundle.manifest
        ev = manifest.evaluation
        model = prepare_source_model(load_source_model(config.model)[0], config)
        frame = calibration.read_frames(calibration.default_evaluation_paths()[-1], max_frames=1).frames[0]
        feed = {manifest.input.tensor.name: preprocess_bgr(frame, manifest.input)}
        timing = profiling.TimingConfig(threads=1, warmup=5, runs=runs)
        cuts = []
        for cut in manifest.cuts:
            fid = cut.fidelity
            row: dict = {
                "id": cut.id, "head_precision": cut.head_precision, "remedy": fid.remedy, "passed": fid.passed,
                "value": round(fid.value, 4), "required": round(fid.threshold, 4), "baseline": round(ev.baseline, 4),
                "confident_frames": fid.confident_frames, "confident_agreement": round(fid.confident_agreement, 4),
                "top1_agreement": round(fid.top1_agreement, 4), "top5_containment": round(fid.top5_containment, 4),
                "mean_kl": round(fid.mean_kl, 5), "cosine": round(fid.cosine, 5),
                "int8_attempts": report.attempts.get(cut.id, ()),
            }
            if cut.HasField("head"):
                shipped = onnx.load(str(bundle.path(cut.head)))
                fp32 = _fp32_head_with_wire(model, cut)
                shipped_ms = profiling.time_model(shipped, feed, timing)
                fp32_ms = profiling.time_model(fp32, feed, timing)
                row.update({
                    "head_bytes": shipped.ByteSize(), "fp32_head_bytes": fp32.ByteSize(),
                    "size_ratio": round(shipped.ByteSize() / fp32.ByteSize(), 3),
                    "head_ms_1thread": round(shipped_ms, 3), "fp32_head_ms_1thread": round(fp32_ms, 3),
                    "latency_ratio": round(shipped_ms / fp32_ms, 3),
                })
            cuts.append(row)
            print(f"{name} {cut.id:<14} {cut.head_precision or '-':>5} {fid.remedy:<15} {ev.metric} {fid.value:.4f} "
                  f"(baseline {ev.baseline:.4f}, needs {fid.threshold:.4f}) {'pass' if fid.passed else 'FAIL'}"
                  + (f"  size {row['size_ratio']}x  latency {row['latency_ratio']}x "
                     f"({row['head_ms_1thread']:.2f} vs {row['fp32_head_ms_1thread']:.2f} ms)" if "size_ratio" in row else ""),
                  flush=True)
        mid = [c for c in cuts if c["id"] not in END_CUTS]
        full = next(c for c in cuts if c["id"] == "output")
        return {
            "model": name, "partition_wall_s": round(wall_s, 1), "source": manifest.source,
            "evaluation": {
                "task": ev.task, "metric": ev.metric, "gate": ev.gate, "margin": ev.margin, "confident_at": ev.confident_at,
                "baseline": ev.baseline, "baseline_confident_frames": ev.baseline_fidelity.confident_frames,
                "baseline_confident_agreement": ev.baseline_fidelity.confident_agreement,
                "baseline_top5": ev.baseline_fidelity.top5_containment, "baseline_mean_kl": ev.baseline_fidelity.mean_kl,
                "calibration_sources": list(ev.calibration_sources), "calibration_frames": ev.calibration_frames,
                "evaluation_sources": list(ev.evaluation_sources), "evaluation_frames": ev.evaluation_frames,
                "quantization": ev.quantization,
            },
            "int8_full_model_shipped": manifest.HasField("full_model_int8"),
            "cuts": cuts,
            "goals": {
                "every_mid_cut_int8_passing": {"value": [(c["id"], c["head_precision"], c["passed"]) for c in mid],
                                               "met": bool(mid) and all(c["head_precision"] == "int8" and c["passed"]
                                                                        for c in mid)},
                "full_model_int8_size_le_0.3x": {"value": full.get("size_ratio"),
                                                 "met": full.get("size_ratio", 9) <= SIZE_GOAL},
                "full_model_int8_latency_le_0.6x": {"value": full.get("latency_ratio"),
                                                    "met": full.get("latency_ratio", 9) <= LATENCY_GOAL},
                "mid_cut_int8_size_le_0.3x": {"value": [(c["id"], c.get("size_ratio")) for c in mid],
                                              "met": all(c.get("size_ratio", 9) <= SIZE_GOAL for c in mid)},
                "mid_cut_int8_latency_le_0.6x": {"value": [(c["id"], c.get("latency_ratio")) for c in mid],
                                                 "met": all(c.get("latency_ratio", 9) <= LATENCY_GOAL for c in mid)},
                "int8_full_model_ships": {"value": manifest.HasField("full_model_int8"),
                                          "met": manifest.HasField("full_model_int8")},
            },
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mobilenet_v2,light_squeezenet",
                        help="comma-separated: mobilenet_v2 and/or onnx light model names, each optionally @ptq-method "
                             "(default %(default)s)")
    parser.add_argument("--frames", type=int, default=200, help="held-out evaluation frames (default %(default)s)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per latency figure (default %(default)s)")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--append", action="store_true", help="keep the models already in --out and add these")
    args = parser.parse_args(argv)

    import onnx
    import onnxruntime as ort

    from partitioner import profile as profiling

    results: dict = {
        "command": "python -m benchmarks.fidelity_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"platform": platform.platform(), "device": profiling.describe_device(),
                    "python": platform.python_version(), "onnxruntime": ort.__version__, "onnx": onnx.__version__},
        "settings": {"frames": args.frames, "runs": args.runs},
        "models": [],
    }
    if args.append and args.out.is_file():
        results["models"] = json.loads(args.out.read_text())["models"]
        results["command"] += " (appended to the earlier run's models)"
    for name in (n.strip() for n in args.models.split(",") if n.strip()):
        try:
            results["models"].append(measure_model(name, args.frames, args.runs))
        except Exception as exc:  # noqa: BLE001 - one model's failure is a result too; the others still run
            print(f"{name}: failed: {exc}", flush=True)
            results["models"].append({"model": name, "error": str(exc), "goals": {}})
    for model in results["models"]:
        for goal, value in model["goals"].items():
            print(f"{model['model']} goal {goal}: {value['value']} -> {'met' if value['met'] else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
