"""The partition report: a terminal table and the classic split-computing figure.

Predicted end-to-end latency of a cut at uplink bandwidth B (kbit/s) is the simple,
documented model ``head_ms + wire_bytes * 8 / B + tail_ms + rtt_ms``: no queueing,
no protocol overhead, the downlink (a few bytes of logits) ignored. The ``output``
cut sends nothing, so its line is flat at ``head_ms``.
"""
from __future__ import annotations

import os
from typing import Sequence

from protos import bundle_pb2
from protos.names import END_CUTS

DEFAULT_BANDWIDTHS_KBPS = tuple(round(10 ** (2 + k / 8), 1) for k in range(0, 25))  # 100 kbit/s .. 100 Mbit/s


def _latest(profiles: Sequence[bundle_pb2.LatencyProfile]) -> bundle_pb2.LatencyProfile | None:
    return max(profiles, key=lambda p: p.measured_at) if profiles else None


def cut_latencies_ms(cut: bundle_pb2.Cut) -> tuple[float, float]:
    """(head_ms, tail_ms) from the newest edge and cloud profiles (0 when absent)."""
    edge, cloud = _latest(cut.edge_profiles), _latest(cut.cloud_profiles)
    return (edge.head_ms if edge else 0.0), (cloud.tail_ms if cloud else 0.0)


def predicted_latency_ms(cut: bundle_pb2.Cut, uplink_kbps: float, *, rtt_ms: float = 0.0) -> float:
    head_ms, tail_ms = cut_latencies_ms(cut)
    if not cut.HasField("tail"):
        return head_ms
    return head_ms + cut.wire_bytes * 8.0 / uplink_kbps + tail_ms + rtt_ms


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _fidelity_cells(manifest: bundle_pb2.Manifest, cut: bundle_pb2.Cut) -> tuple[str, str, str]:
    """(value, gate verdict, remedy) of a cut; older bundles without the gate record show top-1."""
    if not cut.HasField("fidelity"):
        return "-", "-", "-"
    fid = cut.fidelity
    if not manifest.HasField("evaluation"):
        return f"{fid.top1_agreement:.3f}", "-", fid.remedy
    return f"{fid.value:.3f}", "pass" if fid.passed else "FAIL", fid.remedy


def format_table(manifest: bundle_pb2.Manifest, *, rejected: Sequence[tuple[str, str]] = ()) -> str:
    """A fixed-width table of every cut: precision, wire bytes, latencies, FLOPs, and fidelity
    next to the cloud-only JPEG baseline's (the gate's verdict and the remedy kept)."""
    ev = manifest.evaluation if manifest.HasField("evaluation") else None
    metric = ev.metric if ev is not None else "top-1"
    header = ("cut", "head", "tail", "wire", "codec", "int8 vs fp32", "head ms", "tail ms", "head MFLOPs", metric,
              "gate", "remedy")
    rows = [header]
    for cut in sorted(manifest.cuts, key=lambda c: c.order):
        head_ms, tail_ms = cut_latencies_ms(cut)
        codec = cut.tensors[0].encoding.codec if cut.tensors and cut.tensors[0].HasField("encoding") else ""
        by = cut.wire_bytes_by_codec
        ratio = f"{by['fp32'] / by['int8']:.1f}x smaller" if by.get("int8") and by.get("fp32") else "-"
        rows.append((
            cut.id,
            cut.head_precision or "-",
            cut.tail_precision or "-",
            _human_bytes(cut.wire_bytes) if cut.HasField("tail") else "-",
            codec if cut.HasField("tail") else "-",
            ratio,
            f"{head_ms:.2f}",
            f"{tail_ms:.2f}" if cut.HasField("tail") else "-",
            f"{cut.head_flops / 1e6:.0f}",
            *_fidelity_cells(manifest, cut),
        ))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = f"{manifest.model_name} {manifest.model_version}: {len(manifest.cuts)} cuts (bundle {manifest.content_hash[:12]})"
    out = [title, *lines]
    if ev is not None:
        rule = (f"baseline {ev.baseline:.3f} - margin {ev.margin:g}" if ev.gate == "baseline"
                else "the absolute threshold")
        out += ["", f"{ev.task}: {ev.metric} vs the FP32 model on {ev.evaluation_frames} held-out frames "
                    f"({', '.join(ev.evaluation_sources)}); cloud-only JPEG q{manifest.input.jpeg_quality} baseline "
                    f"{ev.baseline:.3f}; a variant ships when >= {rule} and it agrees wherever FP32 >= "
                    f"{ev.confident_at:g}; calibrated on {ev.calibration_frames} frames of "
                    f"{', '.join(ev.calibration_sources)} ({ev.quantization or 'no'} PTQ)"]
        out.append("INT8 full model for local fallback: " + (manifest.full_model_int8.path
                                                               if manifest.HasField("full_model_int8") else "none"))
    if rejected:
        out.append("")
        out.append("rejected cuts (never shipped):")
        out += [f"  {cut_id}: {reason}" for cut_id, reason in rejected]
    return "\n".join(out)


def plot_report(
    manifest: bundle_pb2.Manifest,
    path: str | os.PathLike[str],
    *,
    bandwidths_kbps: Sequence[float] = DEFAULT_BANDWIDTHS_KBPS,
    rtt_ms: float = 0.0,
) -> None:
    """PNG with four panels: head latency per cut, wire bytes per cut, fidelity per cut next to
    the cloud-only JPEG baseline, predicted latency vs uplink."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cuts = sorted(manifest.cuts, key=lambda c: c.order)
    labels = [c.id for c in cuts]
    heads = [cut_latencies_ms(c)[0] for c in cuts]
    wires = [c.wire_bytes / 1024.0 if c.HasField("tail") else 0.0 for c in cuts]
    fig, grid = plt.subplots(2, 2, figsize=(15, 10))
    axes = [grid[0][0], grid[0][1], grid[1][1]]
    _plot_fidelity(manifest, cuts, grid[1][0])
    xs = range(len(cuts))
    axes[0].bar(xs, heads, color="#4c72b0")
    axes[0].set_title("edge (head) latency")
    axes[0].set_ylabel("ms")
    axes[1].bar(xs, wires, color="#dd8452")
    axes[1].set_title("bytes on the wire per frame")
    axes[1].set_ylabel("KiB")
    axes[1].set_yscale("symlog", linthresh=1.0)
    for ax in axes[:2]:
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    for cut in cuts:
        ys = [predicted_latency_ms(cut, b, rtt_ms=rtt_ms) for b in bandwidths_kbps]
        style = "--" if cut.id in END_CUTS else "-"
        axes[2].plot([b / 1000.0 for b in bandwidths_kbps], ys, style, label=cut.id, linewidth=1.4)
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("uplink bandwidth (Mbit/s)")
    axes[2].set_ylabel("predicted end-to-end latency (ms)")
    axes[2].set_title("head + transfer + tail" + (f" + {rtt_ms:g} ms RTT" if rtt_ms else ""))
    axes[2].grid(True, which="both", alpha=0.3)
    axes[2].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{manifest.model_name}: split points ({manifest.content_hash[:12]})")
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=110)
    plt.close(fig)


def _plot_fidelity(manifest: bundle_pb2.Manifest, cuts: Sequence[bundle_pb2.Cut], ax) -> None:  # noqa: ANN001
    """Each cut's fidelity (bar, coloured by head precision) with the baseline and the gate's line."""
    ev = manifest.evaluation if manifest.HasField("evaluation") else None
    values = [(c.fidelity.value if ev is not None else c.fidelity.top1_agreement) if c.HasField("fidelity") else 0.0
              for c in cuts]
    colours = ["#55a868" if c.head_precision == "int8" else "#c44e52" if c.head_precision == "fp32" else "#8c8c8c"
               for c in cuts]
    xs = range(len(cuts))
    ax.bar(xs, values, color=colours)
    if ev is not None:
        ax.axhline(ev.baseline, color="black", linewidth=1.2, label=f"cloud-only JPEG baseline {ev.baseline:.3f}")
        if ev.gate == "baseline":
            ax.axhline(ev.baseline - ev.margin, color="black", linestyle="--", linewidth=1.0,
                       label=f"gate: baseline - {ev.margin:g}")
        ax.legend(fontsize=7, loc="lower right")
    low = min([*values, ev.baseline - ev.margin if ev is not None else 1.0])
    ax.set_ylim(max(0.0, low - 0.05), 1.005)
    ax.set_title(f"fidelity vs FP32 ({ev.metric if ev is not None else 'top-1'}; green INT8 head, red FP32)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([c.id for c in cuts], rotation=60, ha="right", fontsize=7)
    ax.grid(axis="y", alpha=0.3)
