"""The terminal table and the latency-vs-fidelity chart of an optimization run."""
from __future__ import annotations

import pathlib
from typing import Sequence

from partitioner.optimize.run import OptimizeResult, StepResult


def _row(step: StepResult) -> list[str]:
    return [step.label, "yes" if step.kept else "no", f"{step.params / 1e6:.2f}M", f"{2 * step.macs / 1e9:.3f}",
            f"{step.latency_ms:.1f}", f"{step.speedup:.2f}x", f"{step.fidelity:.4f}"]


def format_table(result: OptimizeResult) -> str:
    """One line per model: the original, then each step, and the JPEG baseline's fidelity below."""
    header = ["variant", "kept", "params", "GFLOPs", "ms (1 thr)", "speedup", result.baseline.metric]
    rows = [header, _row(result.original), *(_row(s) for s in result.steps)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"cloud-only JPEG q90 baseline: {result.baseline.metric} {result.baseline.value:.4f} "
                 f"over {result.baseline.frames} held-out frames")
    for step in result.steps:
        lines.append(f"  {step.label}: {step.reason}")
    return "\n".join(lines)


def plot_latency_vs_fidelity(points: Sequence[tuple[str, float, float, bool]], baseline: float, metric: str,
                             path: str | pathlib.Path, *, title: str = "latency vs fidelity") -> pathlib.Path:
    """A PNG of (label, latency_ms, fidelity, kept) points with the JPEG baseline as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        for label, latency, value, kept in points:
            ax.scatter([latency], [value], marker="o" if kept else "x", color="tab:green" if kept else "tab:red")
            ax.annotate(label, (latency, value), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axhline(baseline, color="tab:blue", linestyle="--", label=f"JPEG q90 baseline {baseline:.3f}")
        ax.set_xlabel("full-model latency, ms (ONNX Runtime, 1 thread)")
        ax.set_ylabel(f"{metric} vs FP32 on held-out frames")
        ax.set_title(title)
        ax.legend(loc="lower right")
        fig.tight_layout()
        path = pathlib.Path(path)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def plot_result(result: OptimizeResult, path: str | pathlib.Path) -> pathlib.Path:
    points = [(s.label, s.latency_ms, s.fidelity, s.kept) for s in (result.original, *result.steps)]
    return plot_latency_vs_fidelity(points, result.baseline.value, result.baseline.metric, path,
                                    title=f"{result.source.name}: optimization steps")
