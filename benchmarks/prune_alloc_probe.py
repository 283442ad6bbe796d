"""Per-layer pruning ratios chosen against latency (issue 17, idea 1): do they beat one uniform ratio?

    python -m benchmarks.prune_alloc_probe [--targets 0.22,0.25] [--out benchmarks/results/prune_alloc_probe.json]

On vtest.avi's same-camera split (frames 0-476 calibrate the least-squares reconstruction,
:mod:`partitioner.optimize.reconstruct`; frames 477-555 — the stretch the benchmark skips between
training and held-out footage — judge; the held-out frames 556-794 are never looked at):

1. ``latency_share``: single-thread ONNX Runtime profile of MobileNetV2, kernel time per block;
2. ``sensitivity``: each prunable group (the hidden channels of an inverted-residual block, feeding
   its 1x1 projection) pruned ALONE at 25 % and 50 %: top-1 agreement and mean KL vs the original on
   the validation stretch;
3. ``allocation``: greedy: the (layer, 0 -> 25 -> 50 %) step with the least KL per microsecond saved
   first, until the estimated saving reaches the target share of the time;
4. ``candidates``: those allocations and the uniform ratio built for real: validation top-1/KL, MACs
   and the measured single-thread speedup (round-robin with the original).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "prune_alloc_probe.json"
GROUPS = ["features.1.conv.1"] + [f"features.{i}.conv.2" for i in range(2, 18)] + ["features.18.0"]


def latency_share(model, runs: int = 60) -> dict[str, float]:  # noqa: ANN001 - onnx.ModelProto
    """Median kernel microseconds per MobileNetV2 block (``features.N``; other nodes by name), one thread;
    ``features.17.projection``: block 17's 1x1 projection alone (also counted in its block)."""
    import numpy as np
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.enable_profiling, so.profile_file_prefix = True, os.path.join(tmp, "prof")
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
        for _ in range(runs):
            sess.run(None, {sess.get_inputs()[0].name: x})
        events = json.loads(pathlib.Path(sess.end_profiling()).read_text())
    per: dict[str, list[float]] = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per[e["name"][: -len("_kernel_time")]].append(e["dur"])
    blocks: dict[str, float] = collections.defaultdict(float)
    for name, durations in per.items():
        found = re.search(r"features[._/](\d+)", name)
        blocks[f"features.{found.group(1)}" if found else name] += float(np.median(durations))
        if "features.17/conv/conv.2/" in name:
            blocks["features.17.projection"] += float(np.median(durations))
    return dict(blocks)


def group_latency(blocks: dict[str, float]) -> dict[str, float]:
    """Microseconds a group's channels touch: block 1's group is features.0's output and block 1's depthwise;
    features.18.0's input is block 17's projection output; otherwise the whole block (expand, depthwise,
    projection)."""
    out = {"features.1.conv.1": blocks["features.0"] + blocks["features.1"],
           "features.18.0": blocks["features.17.projection"] + blocks["features.18"]}
    for i in range(2, 18):
        out[f"features.{i}.conv.2"] = blocks[f"features.{i}"]
    return out


def allocate(kl: dict[str, dict[float, float]], latency_us: dict[str, float], total_us: float,
             target: float) -> tuple[dict[str, float], float, float]:
    """Greedy steps 0 -> 25 -> 50 % by KL per microsecond saved until ``target`` of ``total_us`` is saved."""
    steps = []
    for layer, by_ratio in kl.items():
        previous = 0.0
        for ratio in sorted(r for r in by_ratio if r > 0):
            steps.append((layer, previous, ratio,
                          (by_ratio[ratio] - by_ratio[previous]) / ((ratio - previous) * latency_us[layer])))
            previous = ratio
    choice = {layer: 0.0 for layer in kl}
    saved = cost = 0.0
    for layer, before, after, _ in sorted(steps, key=lambda s: s[3]):
        if saved >= target * total_us:
            break
        if choice[layer] != before:
            continue
        choice[layer] = after
        saved += (after - before) * latency_us[layer]
        cost += kl[layer][after] - kl[layer][before]
    return choice, saved / total_us, cost


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", default="0.22,0.25")
    p.add_argument("--uniform", type=float, default=0.25)
    p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)

    import numpy as np
    import torch

    from partitioner import calibration, samples
    from partitioner.optimize import measure
    from partitioner.optimize.reconstruct import prune_reconstructed
    from partitioner.optimize.run import export
    from partitioner.optimize.sources import BUILTIN_MODELS, input_spec, load_source

    torch.set_num_threads(1)
    source = load_source("mobilenet_v2")
    spec = input_spec(source)
    frames = calibration.read_frames(samples.vtest_path()).frames
    train_end, heldout_start = int(len(frames) * 0.6), int(len(frames) * 0.7)
    train = torch.from_numpy(np.concatenate(calibration.preprocess_frames(frames[:train_end], spec)))
    val = torch.from_numpy(np.concatenate(calibration.preprocess_frames(frames[train_end:heldout_start], spec)))
    calib = train[::2][:75]
    build, shape = BUILTIN_MODELS["mobilenet_v2"]
    with torch.no_grad():
        reference = build()(val).log_softmax(1)

    def judge(ratios: dict[str, float]) -> tuple[torch.nn.Module, dict]:
        module = build()
        reports = prune_reconstructed(module, calib, 1e-4, layer_ratios=ratios, round_to=8)
        with torch.no_grad():
            q = module(val).log_softmax(1)
        return module, {"kept": {r.consumer: f"{r.kept}/{r.channels}" for r in reports},
                        "val_top1": round(float((reference.argmax(1) == q.argmax(1)).float().mean()), 4),
                        "val_kl": round(float((reference.exp() * (reference - q)).sum(1).mean()), 4)}

    blocks = latency_share(source.model)
    total = sum(v for k, v in blocks.items() if k != "features.17.projection")
    sensitivity = []
    kl: dict[str, dict[float, float]] = {g: {0.0: 0.0} for g in GROUPS}
    for group in GROUPS:
        for ratio in (0.25, 0.5):
            _, row = judge({g: (ratio if g == group else 0.0) for g in GROUPS})
            kl[group][ratio] = row["val_kl"]
            sensitivity.append({"group": group, "ratio": ratio, **row})
            print(json.dumps(sensitivity[-1]), flush=True)
    allocations, models = {}, {"original": source.model}
    for target in (float(t) for t in a.targets.split(",")):
        choice, share, cost = allocate(kl, group_latency(blocks), total, target)
        key = f"alloc{target:g}"
        module, row = judge(choice)
        allocations[key] = {"ratios": choice, "estimated_saving": round(share, 3), "sum_single_kl": round(cost, 4), **row}
        models[key] = export(module, shape)
    module, row = judge({g: a.uniform for g in GROUPS})
    allocations[f"uniform{a.uniform:g}"] = {"ratios": {g: a.uniform for g in GROUPS}, **row}
    models[f"uniform{a.uniform:g}"] = export(module, shape)
    latency = measure.time_models(models, {source.model.graph.input[0].name: val[:1].numpy()}, threads=1, runs=40)
    for key in allocations:
        allocations[key]["macs"] = measure.count_macs(models[key])
        allocations[key]["speedup_1thread"] = round(latency["original"] / latency[key], 3)
    result = {"benchmark": "prune_alloc_probe", "command": "python -m benchmarks.prune_alloc_probe " + " ".join(argv or sys.argv[1:]),
              "footage": {"calibration": f"vtest.avi frames 0-{train_end - 1} (75, every second)",
                          "validation": f"vtest.avi frames {train_end}-{heldout_start - 1}"},
              "host": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
              "latency_share_us": {k: round(v, 1) for k, v in blocks.items()}, "sensitivity": sensitivity,
              "candidates": allocations}
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(allocations, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
