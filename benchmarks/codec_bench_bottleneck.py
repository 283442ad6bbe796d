"""The learned-bottleneck half of ``benchmarks/codec_bench.py`` (imports torch; see that module).

Trains :mod:`partitioner.bottleneck` at one MobileNetV2 cut on bikes.mp4 (every frame; the
codec bench's calibration source), reports the trainer's held-out loss (frozen head/teachers
run once per frame and are cached; mirrored frames; random 32x32 windows of the 56x56 cut; PCA init) on the first 48
held-out frames, and judges the exported ONNX head/tail on all held-out frames
(bigbuckbunny + carphone) with the same judge and JPEG baseline as the training-free codecs.
"""
from __future__ import annotations

import time

import numpy as np

#: torch MobileNetV2 ``features`` index after which each cut id's tensor is computed.
CUT_INDEX = {"features_2_conv_2": 3, "features_3": 4, "features_4_conv_2": 5, "features_6": 7}


def run_bottleneck(model, candidates, frames, judge, jpeg_bytes: float, baseline: float, args) -> dict:  # noqa: ANN001
    import onnxruntime as ort
    import torch
    from torch import nn

    from partitioner import bottleneck, evaluation, samples, training
    from partitioner.calibration import default_calibration_path
    from partitioner.codec_fit import CodecSpec
    from partitioner.codec_select import time_codec
    from partitioner.cuts import enumerate_cuts
    from partitioner.models.mobilenet_v2 import mobilenet_v2
    from protos.preprocess import preprocess_bgr

    cut_id = args.bottleneck_cut
    if cut_id not in CUT_INDEX:
        raise SystemExit(f"--bottleneck-cut {cut_id!r}: expected one of {sorted(CUT_INDEX)}")
    net = mobilenet_v2(samples.mobilenet_v2_weights_path())
    k = CUT_INDEX[cut_id]
    head = nn.Sequential(*net.features[:k]).eval()
    tail = nn.Sequential(*net.features[k:], nn.AdaptiveAvgPool2d(1), nn.Flatten(1), net.classifier).eval()
    spec = _spec(model)
    train_x = training.frames_tensor(default_calibration_path(), count=250, size_hw=(224, 224),
                                     preprocess=lambda f: preprocess_bgr(f, spec))
    held_x = torch.from_numpy(np.concatenate([f[spec.tensor.name] for f in frames.evaluation[:48]]))
    config = training.TrainConfig(seed=0, max_epochs=args.bottleneck_epochs, max_seconds=args.bottleneck_seconds,
                                  batch_size=16, learning_rate=2e-3, threads=2, progress=True)
    t0 = time.monotonic()
    later = nn.Sequential(*net.features[k:k + 2]).eval()  # feature loss after the next two blocks
    crop = args.bottleneck_crop or None
    bn, report = bottleneck.train_bottleneck(head, tail, train_x, held_x, channels=args.bottleneck_channels,
                                             bits=args.bottleneck_bits, config=config, later=later,
                                             kd=args.bottleneck_kd, flip=True, crop=crop)
    train_seconds = time.monotonic() - t0
    out_name = model.graph.output[0].name
    head_m, tail_m = bottleneck.export_bottleneck(head, tail, bn, (1, 3, 224, 224), input_name=spec.tensor.name,
                                                  output_name=out_name)
    fid = judge(evaluation.Pipeline(head_m, tail_m), remedy=f"bottleneck {args.bottleneck_channels}x"
                                                            f"{args.bottleneck_bits}b")
    codes = evaluation.collect_activations(head_m, frames.evaluation[:16], [bottleneck.WIRE_TENSOR])[
        bottleneck.WIRE_TENSOR]
    wire = {}
    for spec_ in (CodecSpec(bits=args.bottleneck_bits, compression="zstd", packed=True),
                  CodecSpec(bits=args.bottleneck_bits, compression="none", packed=True),
                  CodecSpec(bits=args.bottleneck_bits, compression="zstd", packed=False)):
        enc_ms, sizes, dec_ms = time_codec(codes, spec_)
        wire[spec_.name] = {"bytes": float(np.mean(sizes)), "encode_ms_host": enc_ms, "decode_ms_host": dec_ms}
    best = min(wire.values(), key=lambda w: w["bytes"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(head_m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = frames.evaluation[0]
    sess.run(None, feed)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    head_ms = float(np.median(times))
    total = max(c.head_flops for c in candidates)
    import onnx

    head_flops = max(c.head_flops for c in enumerate_cuts(onnx.shape_inference.infer_shapes(head_m), max_tensors=1))
    top1 = float(fid.value)
    return {
        "cut": cut_id, "loss": "feature loss at the cut and after 2 later blocks" + (" + KD" if args.bottleneck_kd else ""),
        "training": {"cached_teacher": True, "flip": True, "crop": crop, "pca_init": True, "batch_size": 16,
                     "learning_rate": 2e-3, "final_lr_fraction": 0.25, "threads": 2},
        "channels": args.bottleneck_channels, "bits": args.bottleneck_bits,
        "wire_shape": list(codes[0].shape), "head_flops_fraction": head_flops / total,
        "train_frames": report.train_frames, "train_source": default_calibration_path().name,
        "heldout_frames_for_loss": report.heldout_frames, "epochs": report.report.epochs,
        "steps": report.report.steps, "stopped_by": report.report.stopped_by, "train_seconds": train_seconds,
        "train_loss": report.report.train_loss, "heldout_loss": report.report.heldout_loss,
        "loss_history": list(report.report.loss_history),
        "top1": top1, "confident_agreement": fid.confident_agreement, "passes_gate": fid.passed,
        "at_least_baseline": top1 >= baseline and fid.confident_agreement >= 1.0,
        "wire": wire, "bytes": best["bytes"], "x_jpeg": best["bytes"] / jpeg_bytes,
        "head_ms_host": head_ms, "codec_vs_head": (best["encode_ms_host"] + best["decode_ms_host"]) / head_ms,
    }


def _spec(model):  # noqa: ANN001, ANN202 - the manifest's InputSpec for MobileNetV2
    import pathlib

    from partitioner import assemble
    from partitioner.pipeline import PartitionConfig

    return assemble.input_spec(model, PartitionConfig(model="mobilenet_v2", out_dir=pathlib.Path("/nonexistent")))
