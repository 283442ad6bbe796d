"""Feature codecs on INT8 heads vs FP32 heads (issue 13): can a codec cut's head cost less than the model?

    python -m benchmarks.codec_int8_heads [--model mobilenet_v2] [--cuts features_4_conv_2,features_14_conv_2]
        [--codecs q2+zstd,q3+zstd,q4p+zstd] [--frames 200] [--rounds 15]
        [--out benchmarks/results/codec_int8_heads.json]
    python -m benchmarks.codec_int8_heads --model ssd_mobilenet_v2_coco --cuts conv_664,conv_708 \
        --codecs q3+zstd,q4+zstd,q5+zstd --frames 100 --out benchmarks/results/codec_int8_heads_ssd.json
    python -m benchmarks.codec_int8_heads --model ssd_mobilenet_v2_coco --cuts conv_708 \
        --codecs q3+zstd,step70+zstd,step85+zstd,step100+zstd,step115+zstd --frames 100 \
        --out benchmarks/results/codec_int8_heads_ssd_step.json

MobileNetV2 (ImageNet) or the SSD detector, the partition pipeline's own steps on its own frames
(the model's partition defaults: calibration on bikes.mp4, fidelity on held-out footage),
judged by ``partition``'s gate against the cloud-only JPEG (the frame downscaled to the model's
input, q90, FP32 full model). Per cut:
the INT8 head ``partition`` ships for the plain cut (``stages.optimize_cut``), its wire step
dequantized (``partitioner.codec_int8``); per codec, the codec fitted on and appended to the FP32
head (what shipped before) and to that INT8 head, each judged with the cut's FP32 tail.

Latency: ONNX Runtime, one intra-op thread, default graph optimizations (as the edge runs),
one held-out frame; every model of the run is timed round-robin (``--rounds`` rounds of 5 runs
each, median over all runs) so that the load of the shared machine falls on all of them alike.
Ratios are to the edge-only model (the INT8 full model when it passes the gate, else the FP32
one: what the bundle's ``output`` cut runs) timed in the same rounds. The ``ratio_floor`` is
head/edge-only + bytes/JPEG (docs/benchmarks/three_region_notes.md), with the codec's encode
time added to the head; it must be well under 0.7 for a split to pay. ``codec_vs_head`` is
(encode + decode ms) / codec head ms, both on this host, one thread (issue 13's goal: <= 0.10).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "codec_int8_heads.json"
DEFAULT_CUTS = ("features_4_conv_2", "features_14_conv_2")
DEFAULT_CODECS = ("q2+zstd", "q3+zstd", "q4p+zstd")
RUNS_PER_ROUND = 5


def _one_thread_session(model):  # noqa: ANN001, ANN202 - ModelProto -> InferenceSession
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def time_round_robin(models: dict, feed: dict, rounds: int) -> dict[str, float]:
    """Median ms per model over ``rounds`` rounds of :data:`RUNS_PER_ROUND` runs, every model once a round."""
    sessions = {k: _one_thread_session(m) for k, m in models.items()}
    feeds = {k: {i.name: feed[i.name] for i in s.get_inputs()} for k, s in sessions.items()}
    for k, s in sessions.items():
        s.run(None, feeds[k])  # warm-up
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(RUNS_PER_ROUND):
                t0 = time.perf_counter()
                s.run(None, feeds[k])
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def _codec_row(r, jpeg_bytes: float, baseline: float) -> dict:  # noqa: ANN001 - a CodecResult
    f = r.fidelity
    return {"bytes": r.wire_bytes, "x_jpeg": r.wire_bytes / jpeg_bytes, "fidelity": f.value, "threshold": f.threshold,
            "passes_gate": f.passed, "vs_jpeg_baseline": f.value - baseline,
            "confident_agreement": f.confident_agreement, "encode_ms": r.encode_ms, "decode_ms": r.decode_ms}


def run(args: argparse.Namespace) -> dict:
    from partitioner import assemble, calibration, evaluation, quantize, stages
    from partitioner.codec_fit import parse_codec
    from partitioner.codec_int8 import codec_input_head
    from partitioner.codec_select import fit_codec, measure_codec
    from partitioner.codec_stage import _unfused_projection
    from partitioner.pipeline import (PartitionConfig, choose_candidates, load_source_model, measure_baseline,
                                      prepare_source_model)
    from partitioner.models import DETECTOR
    from partitioner.models.ssd_mobilenet_v2 import with_partition_defaults
    from partitioner.source_defaults import apply_source_defaults
    from protos.names import OUTPUT_CUT

    t_start = time.monotonic()
    config = PartitionConfig(model=args.model, out_dir=pathlib.Path("/nonexistent"), cuts=tuple(args.cuts),
                             fidelity_frames=args.frames, calibration_frames=args.calibration_frames)
    if config.model == DETECTOR:
        config = with_partition_defaults(config)
    source, _ = load_source_model(config.model)
    config, _, _ = apply_source_defaults(config, source)
    model = prepare_source_model(source, config)
    spec = assemble.input_spec(model, config)
    candidates = choose_candidates(model, config)
    total_flops = max(c.head_flops for c in candidates)
    frames = calibration.gather_frames(config.calibration, spec, calibration_frames=config.calibration_frames,
                                       evaluation_frames=config.fidelity_frames,
                                       evaluation_source=config.fidelity_source)
    print(frames.description, flush=True)
    threads = max(1, os.cpu_count() or 1)
    verify_feeds = frames.evaluation[: config.verify_frames]
    verify_reference = evaluation.run_model(model, verify_feeds, threads=threads)
    reference = evaluation.run_frames(evaluation.Pipeline(model, None), frames.evaluation)
    judge, baseline = measure_baseline(config, model, spec, frames, tuple(reference))
    _, jpeg_sizes = calibration.jpeg_roundtrip(frames.evaluation_bgr, config.jpeg_quality, spec)
    jpeg_bytes = float(np.mean(jpeg_sizes))
    exact = evaluation.resolve_int8_arithmetic(config.int8_arithmetic) == "exact"
    context = stages.CutContext(model=model, spec=spec, frames=frames, judge=judge, exact_int8=exact)
    print(f"JPEG q{config.jpeg_quality} at the model's input: {jpeg_bytes:.0f} B, {judge.task} {baseline.value:.3f} "
          f"(gate {baseline.threshold:.3f}); INT8 arithmetic {'exact' if exact else 'fused'}", flush=True)

    result: dict = {
        "model": config.model, "task": judge.task, "command": "python -m benchmarks.codec_int8_heads " + " ".join(args.argv),
        "host": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "load_average_start": list(os.getloadavg()),
        "frames": {"calibration": len(frames.calibration), "evaluation": len(frames.evaluation),
                   "calibration_sources": [pathlib.Path(s).name for s in frames.calibration_sources],
                   "evaluation_sources": [pathlib.Path(s).name for s in frames.evaluation_sources]},
        "jpeg": {"quality": config.jpeg_quality, "bytes": jpeg_bytes, "fidelity": baseline.value,
                 "gate_threshold": baseline.threshold},
        "int8_arithmetic": "exact" if exact else "fused",
        "latency": {"threads": 1, "rounds": args.rounds, "runs_per_round": RUNS_PER_ROUND,
                    "note": "median ms, ONNX Runtime CPU, all models of the run timed round-robin"},
        "cuts": {},
    }
    models: dict = {}
    rows: dict = {}
    with quantize.Quantizer(model, frames.calibration, method=config.quantization,
                            calibration_frames=config.calibration_frames) as quantizer:
        for cand in candidates:
            if cand.id != OUTPUT_CUT and cand.is_end:
                continue
            verified = stages.split_and_verify(model, cand, verify_feeds, verify_reference, threads=threads)
            if isinstance(verified, stages.RejectedCut):
                raise SystemExit(f"cut {cand.id} was rejected: {verified.reason}")
            shipped = stages.optimize_cut(config, context, verified, quantizer)
            if cand.id == OUTPUT_CUT:
                if shipped.head_precision != "int8":
                    print(f"note: the INT8 full model fails the gate; edge-only runs the {shipped.head_precision} one",
                          flush=True)
                assert shipped.head is not None
                models["edge_only_model"] = shipped.head
                models["fp32_full_model"] = model
                result["edge_only_model"] = {"precision": shipped.head_precision, "fidelity": shipped.fidelity.value,
                                             "attempts": [list(a) for a in shipped.attempts]}
                continue
            assert verified.head is not None and verified.tail is not None and shipped.head is not None
            name = cand.tensors[0]
            row: dict = {"head_flops_fraction": cand.head_flops / total_flops, "shape": list(cand.shapes[0]),
                         "plain_head_precision": shipped.head_precision, "plain_wire_bytes": shipped.wire.shipped_bytes,
                         "plain_fidelity": shipped.fidelity.value, "codecs": {}}
            if shipped.head_precision != "int8":
                print(f"warning: {cand.id} ships an FP32 head; no INT8 codec head to measure", flush=True)
                rows[cand.id] = row
                continue
            int8_head = codec_input_head(shipped.head, [name])
            models[f"{cand.id}/fp32_head"] = verified.head
            models[f"{cand.id}/int8_head"] = int8_head
            heads = {"fp32": (verified.head, True), "int8": (int8_head, exact)}
            acts = {k: evaluation.collect_activations(h, frames.calibration, [name])[name] for k, (h, _) in heads.items()}
            for codec_name in args.codecs:
                entry: dict = {}
                for precision, (head, exact_int8) in heads.items():
                    fitted = fit_codec(parse_codec(codec_name), name, acts[precision])
                    try:
                        r = measure_codec(fitted, head, verified.tail, judge, exact_int8=exact_int8,
                                          wire_frames=frames.evaluation[:16],
                                          finish_head=_unfused_projection if precision == "int8" else None)
                    except Exception as exc:  # noqa: BLE001 - recorded: a codec head ORT cannot run
                        entry[precision] = {"error": str(exc).strip().splitlines()[0][:300]}
                        print(f"{cand.id} {codec_name} on the {precision} head does not run: "
                              f"{entry[precision]['error']}", flush=True)
                        continue
                    entry[precision] = _codec_row(r, jpeg_bytes, baseline.value)
                    models[f"{cand.id}/{codec_name}/{precision}"] = r.head
                    print(f"{cand.id} {codec_name} on the {precision} head: {r.wire_bytes:.0f} B "
                          f"({r.wire_bytes / jpeg_bytes:.2f}x JPEG), {judge.task} {r.fidelity.value:.3f} "
                          f"({'passes' if r.fidelity.passed else 'fails'})", flush=True)
                row["codecs"][codec_name] = entry
            rows[cand.id] = row

    print(f"timing {len(models)} models round-robin, {args.rounds} rounds ...", flush=True)
    ms = time_round_robin(models, frames.evaluation[0], args.rounds)
    full = ms["edge_only_model"]
    result["latency"]["edge_only_model_ms"] = full
    result["latency"]["fp32_full_model_ms"] = ms["fp32_full_model"]
    for cut_id, row in rows.items():
        if f"{cut_id}/int8_head" not in ms:
            continue
        row["int8_head_ms"], row["fp32_head_ms"] = ms[f"{cut_id}/int8_head"], ms[f"{cut_id}/fp32_head"]
        for codec_name, entry in row["codecs"].items():
            if any("error" in e for e in entry.values()):
                continue
            for precision, e in entry.items():
                head_ms = ms[f"{cut_id}/{codec_name}/{precision}"]
                e["head_ms"] = head_ms
                e["head_vs_edge_only"] = head_ms / full
                e["ratio_floor"] = (head_ms + e["encode_ms"]) / full + e["x_jpeg"]
                e["codec_vs_head"] = (e["encode_ms"] + e["decode_ms"]) / head_ms  # goal: <= 0.10
            entry["int8_vs_fp32_head"] = entry["int8"]["head_ms"] / entry["fp32"]["head_ms"]
            print(f"{cut_id} {codec_name}: codec head INT8 {entry['int8']['head_ms']:.2f} ms, FP32 "
                  f"{entry['fp32']['head_ms']:.2f} ms, edge-only model {full:.2f} ms -> "
                  f"{entry['int8']['head_vs_edge_only']:.2f}x / {entry['fp32']['head_vs_edge_only']:.2f}x "
                  f"the model; ratio floor {entry['int8']['ratio_floor']:.2f} / {entry['fp32']['ratio_floor']:.2f}",
                  flush=True)
    result["cuts"] = rows
    result["load_average_end"] = list(os.getloadavg())
    result["seconds"] = time.monotonic() - t_start
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2", help="mobilenet_v2 or ssd_mobilenet_v2_coco")
    parser.add_argument("--cuts", type=lambda s: tuple(s.split(",")), default=DEFAULT_CUTS)
    parser.add_argument("--codecs", type=lambda s: tuple(s.split(",")), default=DEFAULT_CODECS)
    parser.add_argument("--frames", type=int, default=200, help="held-out frames for fidelity (partition's default; "
                        "the detector's partition uses 100)")
    parser.add_argument("--calibration-frames", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.argv = argv
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {result['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
