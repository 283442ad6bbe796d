"""Partitioner benchmark: MobileNetV2 partition time, INT8 head size/latency, fidelity, wire bytes.

    python -m benchmarks.partition_bench [--quick] [--frames 200] [--out benchmarks/results/partition.json]

What it measures on this machine (2 shared cores; other processes may run):

1. **Partition time**: `run_partition` of the default MobileNetV2 with every stage
   (export, prepare, cuts, split, verify, INT8 quantization with remedies, codecs,
   profiling, bundle write), wall clock and this process's CPU time. Goal < 90 s.
2. **INT8 vs FP32 heads**: the full model (the ``output`` cut's head) and a mid cut's
   head (``features.7``), quantized as the partitioner does (partitioner.ptq's default method):
   file size ratio and single-thread median latency ratio. Goals <= 0.3x size, <= 0.65x latency.
3. **Top-1 agreement** with the FP32 full model over >= 200 real frames (sample videos,
   disjoint from the calibration frames): for every shipped cut (what the manifest
   records), for the INT8 pipelines of item 2, and for the JPEG ``input`` baseline;
   also on the subset of frames where FP32 is confident (softmax top-1 >= 0.5).
   Goal >= 99%.
4. **Wire bytes per codec** for every inner cut, as ratios to fp32. Goal: int8 >= 4x smaller.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "partition.json"
MID_CUT = "/features/features.7/conv/conv.2/Conv_output_0"


def _softmax_max(x: np.ndarray) -> float:
    e = np.exp(x - x.max())
    return float((e / e.sum()).max())


def _agreement(ref, got, mask=None) -> float:
    agree = np.array([int(np.argmax(r[0])) == int(np.argmax(g[0])) for r, g in zip(ref, got)])
    if mask is not None:
        agree = agree[mask]
    return float(agree.mean()) if agree.size else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 cuts, 64 frames (a smoke run, not the figures)")
    parser.add_argument("--frames", type=int, default=200, help="evaluation frames (default 200)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per latency figure (default 30)")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    import onnx
    import onnxruntime as ort

    from partitioner import assemble, calibration, codecs, evaluation, quantize
    from partitioner import profile as profiling
    from partitioner.cut_selection import select_cuts
    from partitioner.graph import prepare_model
    from partitioner.pipeline import PartitionConfig, load_source_model, run_partition
    from partitioner.split import split_model
    from protos.names import END_CUTS, INPUT_CUT, OUTPUT_CUT

    frames_n = 64 if args.quick else args.frames
    max_cuts = 4 if args.quick else 6
    results: dict = {
        "machine": {"platform": platform.platform(), "device": profiling.describe_device(),
                    "python": platform.python_version(), "onnxruntime": ort.__version__, "onnx": onnx.__version__},
        "settings": {"frames": frames_n, "max_cuts": max_cuts, "runs": args.runs, "quick": args.quick},
    }

    # 1. partition time, all stages
    with tempfile.TemporaryDirectory(prefix="partition-bench-") as tmp:
        config = PartitionConfig(model="mobilenet_v2", out_dir=pathlib.Path(tmp) / "bundle", fidelity_frames=frames_n,
                                 max_cuts=max_cuts, threads=1)
        wall0, cpu0 = time.monotonic(), time.process_time()
        report = run_partition(config)
        wall_s, cpu_s = time.monotonic() - wall0, time.process_time() - cpu0
        manifest = report.bundle.manifest
        print(f"partition: {wall_s:.1f} s wall, {cpu_s:.1f} s CPU of this process; stages "
              + ", ".join(f"{k} {v:.1f}" for k, v in report.stage_seconds.items()), flush=True)
        results["partition"] = {
            "wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2),
            "stage_s": {k: round(v, 2) for k, v in report.stage_seconds.items()},
            "cuts": [c.id for c in manifest.cuts], "rejected": [(r.id, r.reason) for r in report.rejected],
        }
        shipped = []
        for cut in manifest.cuts:
            by = dict(cut.wire_bytes_by_codec)
            shipped.append({
                "id": cut.id, "display_name": cut.display_name, "head_precision": cut.head_precision,
                "tail_precision": cut.tail_precision, "wire_bytes": cut.wire_bytes, "wire_bytes_by_codec": by,
                "fp32_over_int8": round(by["fp32"] / by["int8"], 3) if by.get("int8") else None,
                "fp32_over_int8_zlib": round(by["fp32"] / by["int8+zlib"], 3) if by.get("int8+zlib") else None,
                "fidelity": {"frames": cut.fidelity.frames, "top1_agreement": cut.fidelity.top1_agreement,
                             "cosine": cut.fidelity.cosine, "remedy": cut.fidelity.remedy},
                "int8_attempts": report.attempts.get(cut.id, ()),
                "head_ms": cut.edge_profiles[0].head_ms if cut.edge_profiles else None,
                "tail_ms": cut.cloud_profiles[0].tail_ms if cut.cloud_profiles else None,
                "head_flops": cut.head_flops,
            })
        results["cuts"] = shipped

    # 2./3. INT8 vs FP32 heads, agreement on the same evaluation frames
    source, _ = load_source_model("mobilenet_v2")
    model = prepare_model(source)
    spec = assemble.input_spec(model, config)
    frames = calibration.gather_frames(config.calibration, spec, calibration_frames=config.calibration_frames,
                                       evaluation_frames=config.fidelity_frames)
    feeds = frames.evaluation
    ref = evaluation.run_frames(evaluation.Pipeline(model, None), feeds)
    confident = np.array([_softmax_max(r[0][0]) >= 0.5 for r in ref])
    timing = profiling.TimingConfig(threads=1, warmup=5, runs=args.runs)
    heads = {}
    with quantize.Quantizer(model, frames.calibration, method=config.quantization,
                            calibration_frames=config.calibration_frames) as quantizer:
        for label, cut_name in (("full_model", OUTPUT_CUT), ("features_7", MID_CUT)):
            cand = select_cuts(model, [cut_name])[0]
            head, tail = split_model(model, cand)
            qhead = quantizer.quantize(head)
            fp32_ms = profiling.time_model(head, feeds[0], timing)
            int8_ms = profiling.time_model(qhead, feeds[0], timing)
            if tail is not None:
                name = cand.tensors[0]
                acts = evaluation.run_frames(evaluation.Pipeline(head, None), frames.calibration)
                params = {name: codecs.calibrate_int8([a[0] for a in acts])}
                ph, pt = codecs.add_int8_wire(qhead, tail, params)
                got = evaluation.run_frames(evaluation.Pipeline(ph, pt), feeds)
            else:
                got = evaluation.run_frames(evaluation.Pipeline(qhead, None), feeds)
            heads[label] = {
                "fp32_bytes": head.ByteSize(), "int8_bytes": qhead.ByteSize(),
                "size_ratio": round(qhead.ByteSize() / head.ByteSize(), 3),
                "fp32_ms_1thread": round(fp32_ms, 3), "int8_ms_1thread": round(int8_ms, 3),
                "latency_ratio": round(int8_ms / fp32_ms, 3),
                "top1_agreement": _agreement(ref, got), "top1_agreement_confident": _agreement(ref, got, confident),
            }
            print(f"{label}: int8/fp32 size {heads[label]['size_ratio']}, latency {heads[label]['latency_ratio']} "
                  f"({int8_ms:.2f} vs {fp32_ms:.2f} ms), top-1 agreement {heads[label]['top1_agreement']:.3f} "
                  f"(confident frames {heads[label]['top1_agreement_confident']:.3f})", flush=True)
    results["int8_heads"] = heads
    results["evaluation"] = {"frames": len(feeds), "confident_frames": int(confident.sum()),
                             "description": frames.description}

    # goals
    inner = [c for c in results["cuts"] if c["fp32_over_int8"]]
    split_agree = [c["fidelity"]["top1_agreement"] for c in results["cuts"] if c["id"] not in END_CUTS]
    jpeg_agree = next((c["fidelity"]["top1_agreement"] for c in results["cuts"] if c["id"] == INPUT_CUT), None)
    results["goals"] = {
        "partition_under_90s": {"value": results["partition"]["wall_s"], "met": results["partition"]["wall_s"] < 90},
        "int8_head_size_le_0.3x": {"value": heads["full_model"]["size_ratio"], "met": heads["full_model"]["size_ratio"] <= 0.3},
        "int8_head_latency_le_0.65x": {"value": heads["full_model"]["latency_ratio"],
                                       "met": heads["full_model"]["latency_ratio"] <= 0.65},
        "top1_agreement_ge_0.99_int8": {"value": heads["full_model"]["top1_agreement"],
                                         "met": heads["full_model"]["top1_agreement"] >= 0.99},
        "top1_agreement_ge_0.99_int8_confident_frames": {"value": heads["full_model"]["top1_agreement_confident"],
                                                         "met": heads["full_model"]["top1_agreement_confident"] >= 0.99},
        "top1_agreement_ge_0.99_shipped_splits_min": {"value": min(split_agree) if split_agree else None,
                                                      "met": bool(split_agree) and min(split_agree) >= 0.99},
        "info_jpeg_input_baseline_agreement": {"value": jpeg_agree, "met": True},
        "int8_wire_ge_4x_smaller": {"value": min(c["fp32_over_int8"] for c in inner) if inner else None,
                                    "met": bool(inner) and min(c["fp32_over_int8"] for c in inner) >= 4.0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"{'cut':<22}{'head':>6}{'wire B':>9}{'fp32/int8':>10}{'top-1':>8}  remedy")
    for c in results["cuts"]:
        print(f"{c['id'][:21]:<22}{c['head_precision'] or '-':>6}{c['wire_bytes']:>9}"
              f"{c['fp32_over_int8'] or '-':>10}{c['fidelity']['top1_agreement']:>8.3f}  {c['fidelity']['remedy']}")
    for goal, value in results["goals"].items():
        print(f"goal {goal}: {value['value']} -> {'met' if value['met'] else 'NOT met'}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
