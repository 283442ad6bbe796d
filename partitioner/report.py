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


def format_table(manifest: bundle_pb2.Manifest, *, rejected: Sequence[tuple[str, str]] = ()) -> str:
    """A fixed-width table of every cut: precision, wire bytes, latencies, FLOPs, fidelity."""
    header = ("cut", "head", "tail", "wire", "codec", "int8 vs fp32", "head ms", "tail ms", "head MFLOPs", "top-1", "remedy")
    rows = [header]
    for cut in sorted(manifest.cuts, key=lambda c: c.order):
        head_ms, tail_ms = cut_latencies_ms(cut)
        codec = cut.tensors[0].encoding.codec if cut.tensors and cut.tensors[0].HasField("encoding") else ""
        by = cut.wire_bytes_by_codec
        ratio = f"{by['fp32'] / by['int8']:.1f}x smaller" if by.get("int8") and by.get("fp32") else "-"
        fid = cut.fidelity
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
            f"{fid.top1_agreement:.3f}" if cut.HasField("fidelity") else "-",
            fid.remedy if cut.HasField("fidelity") else "-",
        ))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = f"{manifest.model_name} {manifest.model_version}: {len(manifest.cuts)} cuts (bundle {manifest.content_hash[:12]})"
    out = [title, *lines]
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
    """PNG with three panels: head latency per cut, wire bytes per cut, predicted latency vs uplink."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cuts = sorted(manifest.cuts, key=lambda c: c.order)
    labels = [c.id for c in cuts]
    heads = [cut_latencies_ms(c)[0] for c in cuts]
    wires = [c.wire_bytes / 1024.0 if c.HasField("tail") else 0.0 for c in cuts]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
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
