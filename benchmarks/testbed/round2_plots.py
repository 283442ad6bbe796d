"""The round-2 report's PNGs (matplotlib, Agg), each drawn from one results document.

Every function takes the parsed JSON of a results file and a path, draws, and returns the file name, or
None when the document has nothing to draw. Plot choices (what is bold, what is shaded) are here; the
numbers are the documents'.
"""
from __future__ import annotations

import pathlib
from typing import Any, Optional

OFFLOADED = ("split", "cloud")
PATH_COLORS = {"split": "tab:blue", "cloud": "tab:blue", "fallback": "tab:red", "local": "tab:gray",
               "gated": "tab:olive", "exited": "tab:purple"}
RECOVERY_LABELS = {"triton_restart": "Triton 2.51 restarted (SIGTERM), agent pinned",
                   "ours_restart_direct": "splitinfer serve restarted (SIGKILL), agent pinned",
                   "ours_restart_proxy": "splitinfer serve behind the link proxy, agent pinned",
                   "ours_restart_proxy_adaptive": "splitinfer serve behind the link proxy, adaptive agent"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_restart_timeline(triton: dict, path: pathlib.Path) -> Optional[str]:
    """``benchmarks/results/triton.json``'s recovery runs, one panel each: per-frame latency coloured by path,
    the server down (stop signal -> ServerReady) shaded, and per restart the ready -> first offload time."""
    runs = [(k, v) for k, v in (triton.get("recovery") or {}).items() if v.get("events") and v.get("frames")]
    if not runs:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.3 * len(runs) + 0.6), squeeze=False)
    for ax, (key, run) in zip(axes[:, 0], runs):
        cols = run.get("frames_columns") or ["t_s", "path", "total_ms"]
        it, ip, il = cols.index("t_s"), cols.index("path"), cols.index("total_ms")
        for name in sorted({f[ip] for f in run["frames"]}):
            pts = [f for f in run["frames"] if f[ip] == name]
            ax.scatter([f[it] for f in pts], [max(f[il], 0.1) for f in pts], s=6, color=PATH_COLORS.get(name, "k"),
                       label=name)
        for i, ev in enumerate(run["events"]):
            ready = ev.get("ready_s")
            ax.axvspan(ev["stop_s"], ready if ready is not None else ev["stop_s"], color="tab:red", alpha=0.08,
                       label="server down / not ready" if i == 0 else None)
            ax.axvline(ev["stop_s"], color="tab:red", linewidth=1, label="stop signal" if i == 0 else None)
            if ev.get("restart_s") is not None:
                ax.axvline(ev["restart_s"], color="tab:orange", linewidth=1, linestyle="--",
                           label="server process started" if i == 0 else None)
            if ready is not None:
                ax.axvline(ready, color="tab:green", linewidth=1.2, label="ServerReady" if i == 0 else None)
            if ev.get("first_offload_s") is not None:
                ax.axvline(ev["first_offload_s"], color="tab:blue", linewidth=1.2, linestyle=":",
                           label="first offloaded result" if i == 0 else None)
            text = "never" if ev.get("recovery_s") is None else f"{ev['recovery_s']:.2f} s"
            ax.annotate(f"ready→offload\n{text}", xy=(ready if ready is not None else ev["stop_s"], 1.0),
                        xycoords=("data", "axes fraction"), xytext=(3, -3), textcoords="offset points",
                        fontsize=7, va="top")
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms)")
        worst = run.get("recovery_s_max")
        ax.set_title(f"{RECOVERY_LABELS.get(key, key)}: cut {run.get('cut')}, edge slowdown "
                     f"{run.get('edge_slowdown')}x; worst ready→offload "
                     f"{'-' if worst is None else f'{worst:.2f} s'} ({run.get('recovered')} recovered)", fontsize=9)
        ax.grid(True, alpha=0.3)
    seen: dict[str, Any] = {}
    for ax in axes[:, 0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), fontsize=7, loc="lower center", ncol=8, markerscale=2)
    axes[-1, 0].set_xlabel("seconds since the agent started")
    fig.tight_layout(rect=(0, 0.035, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_sweep(run: dict, title: str, path: pathlib.Path) -> Optional[str]:
    """A three-region sweep: mean latency vs uplink, one line per strategy (adaptive ones black), log-log;
    the adaptive line is its whole-run mean, the dotted one its settled mean."""
    points = run.get("sweep") or []
    names: list[str] = []
    for point in points:
        for r in point.get("runs", []):
            if r["strategy"] not in names:
                names.append(r["strategy"])
    measured = [n for n in names if any(r["strategy"] == n and "error" not in r and (r.get("mean_ms") or 0) > 0
                                        for point in points for r in point.get("runs", []))]
    if not measured:
        return None
    names = measured
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5))
    styles = ["-", "--", "-.", ":"]
    for name in names:
        xs, ys, settled = [], [], []
        for point in points:
            r = next((x for x in point.get("runs", []) if x["strategy"] == name and "error" not in x), None)
            if r is not None and (r.get("mean_ms") or 0) > 0:
                xs.append(point["uplink_mbit"])
                ys.append(r["mean_ms"])
                settled.append(r.get("settled_mean_ms"))
        bold = name.startswith("adaptive")
        style = styles[[n for n in names if n.startswith("adaptive")].index(name) % len(styles)] if bold else "-"
        ax.plot(xs, ys, marker="o", linewidth=2.6 if bold else 1.2, color="black" if bold else None,
                linestyle=style, label=name, zorder=3 if bold else 2)
        if bold and any(s is not None for s in settled):
            ax.plot([x for x, s in zip(xs, settled) if s is not None], [s for s in settled if s is not None],
                    marker=".", linewidth=1, color="black", linestyle=":", label=f"{name} (settled)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("uplink (Mbit/s)")
    ax.set_ylabel("mean latency per frame (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_server(server: Optional[dict], streams: Optional[dict], path: pathlib.Path) -> Optional[str]:
    """server.json: requests/s vs concurrent clients (in-process ONNX Runtime, our server, Triton);
    streams.json: live-call latency and server memory vs open idle streams."""
    panels = [p for p in ((server or {}).get("throughput"), (streams or {}).get("streams_vs_live")) if p]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    i = 0
    throughput = (server or {}).get("throughput")
    if throughput:
        ax = axes[0, i]
        i += 1
        for side, label in (("in_process", "ONNX Runtime in-process (no server)"), ("server", "splitinfer serve"),
                            ("pytriton", "Triton 2.51 (pytriton)")):
            rows = [v for k, v in (throughput.get(side) or {}).items()
                    if isinstance(v, dict) and v.get("clients") and k.startswith(("batch1_", "clients"))]
            rows.sort(key=lambda v: v["clients"])
            if rows:
                ax.plot([v["clients"] for v in rows], [v["throughput_rps_median"] for v in rows], marker="o",
                        label=label, color="black" if side == "server" else None)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients (batch-1 requests)")
        ax.set_ylabel("requests/s (median of rounds)")
        ax.set_title(f"throughput, cut {throughput.get('cut')} ({throughput.get('request_bytes')} B requests, "
                     f"{(server or {}).get('bundle_kind', '?')} bundle)",
                     fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    live = (streams or {}).get("streams_vs_live")
    if live:
        ax = axes[0, i]
        xs = [r["open_streams"] for r in live]
        ax.plot(xs, [r["live_p50_ms"] for r in live], marker="o", color="black", label="live call p50")
        ax.plot(xs, [r["live_p99_ms"] for r in live], marker="o", color="tab:red", label="live call p99")
        ax.set_xlabel("open idle streams")
        ax.set_ylabel("live ModelInfer latency (ms)")
        ax2 = ax.twinx()
        ax2.plot(xs, [r["server_rss_mb"] for r in live], marker="s", color="tab:gray", linestyle="--",
                 label="server RSS (MB)")
        ax2.set_ylabel("server RSS (MB)", color="tab:gray")
        ax.set_title("streams: one live call among many open streams", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
