"""The learned-bottleneck half of ``benchmarks/codec_bench.py`` (imports torch; see that module).

Trains a bottleneck at one MobileNetV2 cut exactly as ``partition --bottleneck CUT`` does
(:func:`partitioner.bottleneck_stage.train_and_judge`: augmented views of bikes.mp4, vtest.avi
and the sample photos; the frozen ONNX tail in torch for the later-feature and distillation
losses; encoder/decoder attached to the cut's ONNX head/tail), then judges the exported pair on
the held-out frames (bigbuckbunny + carphone, never trained on) with the codec bench's judge:
the JPEG at the model's input size as the baseline. The bundle's own gate (the full-frame JPEG's
agreement - margin) is reported next to it.
"""
from __future__ import annotations

import time

import numpy as np


def run_bottleneck(model, candidates, frames, judge, jpeg_bytes: float, baseline: float, args,  # noqa: ANN001
                   *, strict_top1: float, spec) -> dict:  # noqa: ANN001
    import onnx
    import onnxruntime as ort

    from partitioner import evaluation, stages
    from partitioner.bottleneck import WIRE_TENSOR
    from partitioner.bottleneck_config import BottleneckConfig
    from partitioner.bottleneck_stage import train_and_judge
    from partitioner.codec_fit import CodecSpec
    from partitioner.codec_select import time_codec
    from partitioner.cut_selection import select_cuts
    from partitioner.cuts import enumerate_cuts
    from partitioner.split import split_model

    (cand,) = select_cuts(model, [args.bottleneck_cut], max_tensors=1)
    head, tail = split_model(model, cand)
    cut = stages.VerifiedCut(cand, head, tail, verification=None)  # type: ignore[arg-type]
    context = stages.CutContext(model=model, spec=spec, frames=frames, judge=judge)
    options = BottleneckConfig(cut=cand.id, channels=args.bottleneck_channels, bits=args.bottleneck_bits,
                               seconds=args.bottleneck_seconds, epochs=args.bottleneck_epochs,
                               views=args.bottleneck_views, kd=args.bottleneck_kd,
                               temperature=args.bottleneck_temperature, threads=args.bottleneck_threads)
    t0 = time.monotonic()
    result = train_and_judge(options, cut, context)
    total_seconds = time.monotonic() - t0
    fid = result.fidelity
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(result.head.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = frames.evaluation[0]
    sess.run(None, feed)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    head_ms = float(np.median(times))
    total = max(c.head_flops for c in candidates)
    head_flops = max(c.head_flops for c in enumerate_cuts(onnx.shape_inference.infer_shapes(result.head),
                                                          max_tensors=1))
    top1 = float(fid.value)
    train = result.train
    wire = {}  # the shipped wire (packed + zstd) and its alternatives, on the same real codes
    codes = evaluation.collect_activations(result.head, frames.evaluation[:16], [WIRE_TENSOR])[WIRE_TENSOR]
    for alt in (CodecSpec(bits=options.bits, compression="zstd", packed=True),
                CodecSpec(bits=options.bits, compression="none", packed=True),
                CodecSpec(bits=options.bits, compression="zstd", packed=False),
                CodecSpec(bits=options.bits, compression="zstd", packed=False, level=3)):
        enc_ms, sizes, dec_ms = time_codec(codes, alt)
        wire[f"{alt.name}-{alt.level}" if alt.compression == "zstd" else alt.name] = {
            "bytes": float(np.mean(sizes)), "x_jpeg": float(np.mean(sizes)) / jpeg_bytes, "encode_ms_host": enc_ms,
            "decode_ms_host": dec_ms, "codec_vs_head": (enc_ms + dec_ms) / head_ms}
    return {
        "cut": cand.id, "channels": options.channels, "bits": options.bits, "wire_shape": train["wire_shape"],
        "codec": result.codec_proto().name,
        "loss": "feature loss at the cut" + (" and at a later tensor" if train["later"] else "")
                + (f" + KD (T={options.temperature:g}) on the outputs" if train["kd"] else ""),
        "training": {"views": train["views"], "sources": train["sources"], "crop": train["crop"],
                     "augment": "random crops 0.3-1 of the frame, mirror, colour jitter 0.25",
                     "pca_init": True, "batch_size": 16, "learning_rate": 2e-3, "final_lr_fraction": 0.25,
                     "threads": options.threads, "seed": options.seed},
        "head_flops_fraction": head_flops / total,
        "epochs": train["epochs"], "steps": train["steps"], "stopped_by": train["stopped_by"],
        "train_seconds": train["seconds"], "stage_seconds": total_seconds,
        "train_loss": train["train_loss"], "heldout_loss": train["heldout_loss"],
        "top1": top1, "confident_agreement": fid.confident_agreement, "confident_frames": fid.confident_frames,
        "passes_gate": fid.passed, "at_least_baseline": top1 >= baseline and fid.confident_agreement >= 1.0,
        "bundle_gate_top1_needed": judge.gate.required(strict_top1),
        "passes_bundle_gate": top1 >= judge.gate.required(strict_top1) and fid.confident_agreement >= 1.0,
        "bytes": result.wire_bytes, "x_jpeg": result.wire_bytes / jpeg_bytes,
        "encode_ms_host": result.encode_ms, "decode_ms_host": result.decode_ms,
        "head_ms_host": head_ms, "codec_vs_head": (result.encode_ms + result.decode_ms) / head_ms,
        "wire_alternatives": wire,
    }
