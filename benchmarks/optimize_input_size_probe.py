"""Probe (issue 17): is a smaller input, distilled, a cheaper way to a faster MobileNetV2 than pruning?

    python -m benchmarks.optimize_input_size_probe [--sizes 192,176] [--distill-seconds 240]
                                                   [--out benchmarks/results/optimize_input_size_probe.json]

The original MobileNetV2 (all its weights) is fed the frame resized to SIZE x SIZE instead of 224 and
distilled (SGD, KD at T=1, BatchNorm statistics frozen, :func:`partitioner.optimize.distill.distill`) to
answer as the 224 px original does on the same frame. Footage: vtest.avi, the same-camera split of
``optimize_bench`` (frames 0-476 train, all 239 of 556-794 held out). Fidelity: top-1 agreement with the
224 px original, before and after distillation, on the validation stretch (477-555) and the held-out
frames, next to the JPEG q90 baseline (the frame downscaled to 224, JPEG q90, the original) there. Latency:
single-thread ONNX Runtime of the 224 and SIZE exports, timed round-robin in the same rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "optimize_input_size_probe.json"


def _latencies_ms(models: dict, runs: int) -> dict[str, float]:  # noqa: ANN001 - onnx models by size
    import numpy as np

    from partitioner import evaluation

    sessions = {size: evaluation.make_session(model, threads=1) for size, model in models.items()}
    feeds = {size: {s.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, size, size), np.float32)}
             for size, s in sessions.items()}
    samples: dict[int, list[float]] = {size: [] for size in models}
    for rnd in range(3 + runs):
        for size, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds[size])
            if rnd >= 3:
                samples[size].append((time.perf_counter() - start) * 1000.0)
    return {str(size): statistics.median(v) for size, v in samples.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="192,176")
    p.add_argument("--distill-seconds", type=float, default=240.0)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",") if s]
    if not sizes or any(not 32 <= s < 224 for s in sizes):
        p.error(f"--sizes {a.sizes!r}: expected sizes in [32, 224)")

    import torch

    from partitioner import samples
    from partitioner.optimize.distill import distill, teacher_targets
    from partitioner.optimize.run import export
    from partitioner.optimize.sources import input_spec, load_source, same_camera_footage
    from partitioner.optimize.steps import Distill

    torch.set_num_threads(1)
    t0 = time.monotonic()
    video = samples.vtest_path()
    source = load_source("mobilenet_v2")
    spec = input_spec(source)
    full = same_camera_footage(spec, video, heldout_frames=239)
    assert full.validation is not None and source.build is not None
    from partitioner.fidelity import Gate
    from partitioner.optimize import measure

    jpeg_top1 = measure.held_out(source.model, spec, full.heldout, Gate(margin=0.02, confident_at=0.8)).baseline.value
    print(f"JPEG q90 baseline on the held-out frames: top-1 agreement {jpeg_top1:.4f}", flush=True)
    teacher = source.build()
    settings = Distill(seconds=a.distill_seconds, epochs=1000, learning_rate=a.learning_rate, batch_size=16,
                       optimizer="sgd", temperature=1.0)
    targets = teacher_targets(teacher, full.train, full.heldout_tensor(), settings)
    with torch.no_grad():
        want_validation = teacher(full.validation).argmax(-1)
        want_heldout = teacher(full.heldout_tensor()).argmax(-1)
    rows: dict[str, dict] = {}
    models = {224: export(source.build(), (1, 3, 224, 224))}
    for size in sizes:
        small_spec = type(spec)()
        small_spec.CopyFrom(spec)
        small_spec.height_px = small_spec.width_px = size
        small = same_camera_footage(small_spec, video, heldout_frames=239)
        assert small.validation is not None
        student = source.build()

        def agreement(validation=small.validation, heldout=small.heldout_tensor(), model=student) -> dict:  # noqa: ANN001
            model.eval()
            with torch.no_grad():
                return {"validation_top1": round(float((model(validation).argmax(-1) == want_validation).float().mean()), 4),
                        "heldout_top1": round(float((model(heldout).argmax(-1) == want_heldout).float().mean()), 4)}

        before = agreement()
        report = distill(student, teacher, small.train, small.heldout_tensor(), settings, progress=False,
                         description=f"{size} px", targets=targets)
        rows[str(size)] = {"before_distillation": before, "after_distillation": agreement(),
                           "epochs": report.epochs, "distill_wall_seconds": round(report.seconds, 1),
                           "loss_history": [round(v, 4) for v in report.loss_history]}
        models[size] = export(student, (1, 3, size, size))
        print(f"{size} px: {rows[str(size)]}", flush=True)
    latency = _latencies_ms(models, a.runs)
    for size in sizes:
        rows[str(size)]["latency_ms_1thread"] = round(latency[str(size)], 2)
        rows[str(size)]["speedup_1thread"] = round(latency["224"] / latency[str(size)], 3)
    result = {"benchmark": "optimize_input_size_probe",
              "command": "python -m benchmarks.optimize_input_size_probe " + " ".join(argv or sys.argv[1:]),
              "host": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
              "footage": {"train": full.train_sources, "validation": full.validation_sources,
                          "heldout": list(full.heldout.evaluation_sources)},
              "original_latency_ms_1thread": round(latency["224"], 2),
              "jpeg_q90_baseline_heldout_top1": round(jpeg_top1, 4),
              "sizes": rows, "wall_seconds": round(time.monotonic() - t0, 1)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
