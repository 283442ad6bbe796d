"""Why does pruning MobileNetV2 lose its answers? A probe of pruning alone, before any distillation.

    python -m benchmarks.prune_probe [--heldout-frames 75] [--out benchmarks/results/prune_probe.json]

On the same-camera split of :mod:`benchmarks.optimize_bench` (bikes.mp4 frames 0-149 calibrate,
frames 175-249 are held out), with the JPEG q90 baseline on the same held-out frames:

1. ``single_group_magnitude``: 5 % of the channels of ONE prunable group removed by
   Torch-Pruning's L2 magnitude importance (all other groups whole), for every group:
   top-1 agreement and mean KL vs the original on 16 held-out frames.
2. ``variants``: least-squares reconstruction (:mod:`partitioner.optimize.reconstruct`) of
   every eligible group (``all``) or only of the high-resolution blocks features.1-7
   (``early``), at 30 % and 50 %, with the single-thread ONNX Runtime speedup (round-robin).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "prune_probe.json"
EARLY = ["features.1.conv.1"] + [f"features.{i}.conv.2" for i in range(2, 8)]


def _agreement(original, model, x) -> tuple[float, float]:  # noqa: ANN001 - torch modules / tensor
    import torch

    with torch.no_grad():
        p, q = original(x).log_softmax(1), model(x).log_softmax(1)
    agree = float((p.argmax(1) == q.argmax(1)).float().mean())
    return agree, float((p.exp() * (p - q)).sum(1).mean())


def single_group_magnitude(build, x, fraction: float = 0.05) -> list[dict]:  # noqa: ANN001
    import torch
    import torch_pruning as tp

    original = build()
    imp = tp.importance.GroupMagnitudeImportance(p=2)
    probe = build()
    graph = tp.DependencyGraph().build_dependency(probe, example_inputs=x[:1])
    names = {m: n for n, m in probe.named_modules()}
    roots = [names[g[0].dep.target.module] for g in graph.get_all_groups(
        ignored_layers=[probe.classifier[1]], root_module_types=(torch.nn.Conv2d, torch.nn.Linear))]
    rows = []
    for name in roots:
        model = build()
        layers = dict(model.named_modules())
        g = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
        root = layers[name]
        full = g.get_pruning_group(root, tp.prune_conv_out_channels, idxs=list(range(root.out_channels)))
        channels = int(root.out_channels)
        k = max(1, int(channels * fraction))
        idxs = imp(full).argsort()[:k].tolist()
        g.get_pruning_group(root, tp.prune_conv_out_channels, idxs=idxs).prune()
        agree, kl = _agreement(original, model.eval(), x)
        rows.append({"group_root": name, "channels": channels, "removed": k, "top1_agreement": round(agree, 4),
                     "mean_kl": round(kl, 4)})
        print(f"  {name:26s} {k:3d}/{channels:<5d} top-1 {agree:.3f} KL {kl:.3f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heldout-frames", type=int, default=75)
    p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    import torch

    from partitioner.calibration import default_calibration_path
    from partitioner.fidelity import Gate
    from partitioner.optimize import measure
    from partitioner.optimize.reconstruct import prune_reconstructed
    from partitioner.optimize.run import export
    from partitioner.optimize.sources import BUILTIN_MODELS, input_spec, load_source, same_camera_footage

    t0 = time.monotonic()
    torch.set_num_threads(2)
    build, shape = BUILTIN_MODELS["mobilenet_v2"]
    source = load_source("mobilenet_v2")
    footage = same_camera_footage(input_spec(source), default_calibration_path(), heldout_frames=a.heldout_frames)
    heldout = measure.held_out(source.model, footage.spec, footage.heldout, Gate(margin=0.02, confident_at=0.8))
    print(f"JPEG q90 baseline: top-1 {heldout.baseline.value:.4f}, mean KL {heldout.baseline.mean_kl:.4f}", flush=True)
    held = footage.heldout_tensor()
    print("1. 5 % of one group removed by magnitude:", flush=True)
    singles = single_group_magnitude(build, held[:: max(1, held.shape[0] // 16)][:16])
    frames = footage.train[::2][:75]
    models = {"original": source.model}
    variants: dict[str, dict] = {}
    for scope, ratio in (("all", 0.3), ("all", 0.5), ("early", 0.3), ("early", 0.5)):
        key = f"{scope}{int(ratio * 100)}"
        module = build()
        started = time.monotonic()
        layer_ratios = {n: ratio for n in EARLY} if scope == "early" else None
        prune_reconstructed(module, frames, 1e-6 if scope == "early" else ratio, layer_ratios=layer_ratios)
        model = export(module, shape)
        score, passed, reason = heldout.score(model)
        variants[key] = {"layers": "features.1-7 consumers" if scope == "early" else "every eligible group",
                         "ratio": ratio, "top1_agreement": round(score.value, 4), "mean_kl": round(score.mean_kl, 4),
                         "gate_passed": passed, "gate_reason": reason, "macs": measure.count_macs(model),
                         "params": measure.count_parameters(model),
                         "reconstruction_wall_seconds": round(time.monotonic() - started, 1)}
        models[key] = model
        print(f"2. {key}: top-1 {score.value:.4f} KL {score.mean_kl:.4f} MACs {variants[key]['macs']}", flush=True)
    latency = measure.time_models(models, dict(footage.heldout.evaluation[0]), threads=1, runs=30)
    for key, row in variants.items():
        row["speedup_1thread"] = round(latency["original"] / latency[key], 3)
        print(f"   {key}: {row['speedup_1thread']:.3f}x", flush=True)
    result = {"benchmark": "prune_probe", "command": "python -m benchmarks.prune_probe " + " ".join(argv or sys.argv[1:]),
              "host": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
              "heldout_sources": list(heldout.sources), "calibration_frames": int(frames.shape[0]),
              "jpeg_q90_baseline": {"top1_agreement": round(heldout.baseline.value, 4),
                                    "mean_kl": round(heldout.baseline.mean_kl, 4)},
              "single_group_magnitude_5pct": singles, "reconstructed": variants,
              "wall_seconds": round(time.monotonic() - t0, 1)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
