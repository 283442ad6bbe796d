"""Detector benchmark (issue 12): SSD-MobileNetV2 COCO from the TensorFlow frozen graph, end to end.

    python -m benchmarks.detector_bench [--frames 60] [--runs 20] [--bundle DIR] [--out benchmarks/results/detector.json]

What it measures on this machine (2 shared cores; other processes may run):

1. **Conversion + partition time**: ``run_partition`` of ``ssd_mobilenet_v2_coco`` with every
   stage; the ``load`` stage is the tf2onnx conversion plus splitinfer's postprocessing graph.
   ``--bundle DIR`` measures an existing bundle instead (times then come from nothing: null).
2. **Cuts kept**: single- and multi-tensor cuts in the bundle, with their head precision.
3. **Head latency per cut**: median of ``--runs`` single-thread ONNX Runtime runs of the
   shipped head on held-out vtest.avi frames, and that figure under the demo's emulated Pi
   (``edge_agent.head`` pads every on-device run to 4x its duration: 4 x the median, computed,
   not measured on a Pi).
4. **Wire bytes**: each cut's INT8 wire bytes (from the manifest) against the JPEG (q90) of the
   frame at the model's input size (300x300) and at camera size (768x576), mean over frames.
5. **Detection F1** of each shipped split against the FP32 full model on the held-out vtest.avi
   frames (the partitioner's own measurement, recorded in the manifest), and the JPEG
   cloud-only baseline's.
6. **Local full model**: single-thread median latency of the FP32 (and INT8, when it shipped)
   full model, and under the 4x emulated Pi.
7. ``--postprocess-only``: the in-graph decoding + NMS alone against the raw model (single
   thread), and the tail's output bytes with and without it (added to the same results file).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "detector.json"
PI_SLOWDOWN = 4.0  # splitinfer demo's --device-slowdown default (edge_agent.head pads runs to 4x)


def _median_ms(session, feed: dict, runs: int) -> float:
    session.run(None, feed)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def _session(path: pathlib.Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60, help="held-out vtest.avi frames for fidelity (default 60)")
    parser.add_argument("--calibration-frames", type=int, default=32)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per latency figure (default 20)")
    parser.add_argument("--bundle", type=pathlib.Path, default=None, help="measure this bundle instead of partitioning")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--postprocess-only", action="store_true",
                        help="only measure splitinfer's in-graph decoding + NMS against the raw model (converts the "
                             "graph, no partition) and add it to --out as postprocess_in_graph")
    args = parser.parse_args(argv)
    if args.postprocess_only:
        return _postprocess_only(args)

    import cv2
    import onnx
    import onnxruntime as ort

    from partitioner import samples
    from partitioner.models import DETECTOR
    from protos.bundle import Side, read_bundle
    from protos.preprocess import encode_jpeg, preprocess_bgr

    partition_s = stage_s = rejected = None
    tmp = None
    if args.bundle is None:
        from partitioner.pipeline import PartitionConfig, run_partition

        tmp = tempfile.TemporaryDirectory(prefix="detector_bench_")
        out_dir = pathlib.Path(tmp.name) / DETECTOR
        start = time.monotonic()
        report = run_partition(PartitionConfig(model=DETECTOR, out_dir=out_dir, fidelity_frames=args.frames,
                                               calibration_frames=args.calibration_frames))
        partition_s = round(time.monotonic() - start, 1)
        stage_s = {k: round(v, 1) for k, v in report.stage_seconds.items()}
        rejected = [{"cut": r.id, "reason": r.reason} for r in report.rejected]
        bundle_dir = out_dir
    else:
        bundle_dir = args.bundle
    bundle = read_bundle(bundle_dir, Side.ALL)
    m = bundle.manifest
    spec = m.input

    frames_dir = samples.vtest_frames(args.frames)
    frames = [cv2.imread(str(p)) for p in sorted(frames_dir.glob("*.png"))]
    feed_name = spec.tensor.name
    x = preprocess_bgr(frames[0], spec)

    jpeg_input = [len(encode_jpeg(cv2.resize(f, (int(spec.width_px), int(spec.height_px)),
                                             interpolation=cv2.INTER_AREA), spec.jpeg_quality or 90)) for f in frames]
    jpeg_camera = [len(encode_jpeg(f, spec.jpeg_quality or 90)) for f in frames]

    cuts = []
    for cut in m.cuts:
        kind = "end" if cut.id in ("input", "output") else ("multi" if len(cut.tensors) > 1 else "single")
        row: dict = {"cut": cut.id, "tensors": len(cut.tensors), "kind": kind,
                     "head_precision": cut.head_precision, "tail_precision": cut.tail_precision,
                     "wire_bytes": int(cut.wire_bytes),
                     "wire_bytes_by_codec": {k: int(v) for k, v in cut.wire_bytes_by_codec.items()},
                     "detection_f1_vs_fp32": round(cut.fidelity.value, 4) if cut.HasField("fidelity") else None,
                     "fidelity_passed": cut.fidelity.passed if cut.HasField("fidelity") else None}
        if cut.HasField("head"):
            head = _session(bundle.path(cut.head))
            row["head_ms_1thread"] = round(_median_ms(head, {feed_name: x}, args.runs), 2)
            row["head_ms_emulated_pi"] = round(row["head_ms_1thread"] * PI_SLOWDOWN, 2)
        int8 = row["wire_bytes_by_codec"].get("int8")
        if int8:
            row["int8_over_jpeg_input_size"] = round(int8 / float(np.mean(jpeg_input)), 3)
            row["int8_over_jpeg_camera_size"] = round(int8 / float(np.mean(jpeg_camera)), 3)
        cuts.append(row)
        print(json.dumps(row), flush=True)

    full = {"fp32_ms_1thread": round(_median_ms(_session(bundle.path(m.full_model)), {feed_name: x}, args.runs), 2)}
    full["fp32_ms_emulated_pi"] = round(full["fp32_ms_1thread"] * PI_SLOWDOWN, 2)
    if m.HasField("full_model_int8"):
        full["int8_ms_1thread"] = round(_median_ms(_session(bundle.path(m.full_model_int8)), {feed_name: x},
                                                   args.runs), 2)
        full["int8_ms_emulated_pi"] = round(full["int8_ms_1thread"] * PI_SLOWDOWN, 2)
    evaluation = m.evaluation
    inner = [c for c in cuts if c["cut"] not in ("input", "output")]
    results = {
        "benchmark": "detector_bench",
        "model": f"{DETECTOR} ({m.source})" if hasattr(m, "source") else DETECTOR,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "onnxruntime": ort.__version__, "onnx": onnx.__version__, "note": "2 shared cores, other jobs running"},
        "command": "python -m benchmarks.detector_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "conversion_plus_partition_s": partition_s,
        "stage_s": stage_s,
        "rejected_cuts": rejected,
        "cuts_kept": {"total": len(cuts), "single": sum(c["kind"] == "single" for c in cuts),
                      "multi": sum(c["kind"] == "multi" for c in cuts), "ends": sum(c["kind"] == "end" for c in cuts),
                      "inner": len(inner)},
        "evaluation": {"task": evaluation.task, "metric": evaluation.metric, "frames": evaluation.evaluation_frames,
                       "sources": list(evaluation.evaluation_sources),
                       "jpeg_baseline_detection_f1": round(evaluation.baseline, 4), "gate": evaluation.gate,
                       "margin": evaluation.margin},
        "jpeg_bytes": {"input_size_mean": round(float(np.mean(jpeg_input))),
                       "camera_size_mean": round(float(np.mean(jpeg_camera))),
                       "input_size_px": [int(spec.width_px), int(spec.height_px)],
                       "camera_size_px": [int(frames[0].shape[1]), int(frames[0].shape[0])],
                       "quality": int(spec.jpeg_quality or 90)},
        "cuts": cuts,
        "full_model": full,
        "emulated_pi": f"{PI_SLOWDOWN:g}x this machine's single-thread median (edge_agent.head's sleep padding; "
                       "computed, not measured on a Pi)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


def _postprocess_only(args: argparse.Namespace) -> int:
    """Item 7: what decoding + NMS in the graph costs next to the raw model, and the bytes it saves."""
    import cv2
    import onnx
    from onnx import utils

    from partitioner import samples
    from partitioner.models import ssd_mobilenet_v2 as ssd

    model, _ = ssd.build_detector()
    with tempfile.TemporaryDirectory(prefix="detector_post_") as tmp:
        full, raw, post = (pathlib.Path(tmp) / n for n in ("full.onnx", "raw.onnx", "post.onnx"))
        onnx.save(model, full)
        utils.extract_model(str(full), str(raw), [ssd.INPUT_TENSOR], [ssd.BOX_ENCODINGS, ssd.CLASS_LOGITS])
        utils.extract_model(str(full), str(post), [ssd.BOX_ENCODINGS, ssd.CLASS_LOGITS], list(ssd.OUTPUTS))
        raw_s, post_s = _session(raw), _session(post)
        frame = cv2.imread(str(sorted(samples.vtest_frames(args.frames).glob("*.png"))[0]))
        x = (cv2.resize(frame, (300, 300), interpolation=cv2.INTER_AREA)[:, :, ::-1].astype(np.float32)
             * np.float32(2 / 255) - 1)[None]
        enc, logits = raw_s.run(None, {ssd.INPUT_TENSOR: x})
        raw_ms = _median_ms(raw_s, {ssd.INPUT_TENSOR: x}, args.runs)
        post_ms = _median_ms(post_s, {ssd.BOX_ENCODINGS: enc, ssd.CLASS_LOGITS: logits}, args.runs * 3)
        decoded = sum(o.nbytes for o in post_s.run(None, {ssd.BOX_ENCODINGS: enc, ssd.CLASS_LOGITS: logits}))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["postprocess_in_graph"] = {
        "command": "python -m benchmarks.detector_bench --postprocess-only",
        "raw_model_ms_1thread": round(raw_ms, 2), "postprocess_ms_1thread": round(post_ms, 2),
        "postprocess_over_raw_model": round(post_ms / raw_ms, 4),
        "raw_output_bytes": int(enc.nbytes + logits.nbytes), "decoded_output_bytes": int(decoded),
    }
    print(json.dumps(results["postprocess_in_graph"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
