"""Fidelity per strategy next to the JPEG baseline, read from the offline results files.

    python -m benchmarks.fidelity_table [--results benchmarks/results] [--out docs/benchmarks]

Two models: SSD-MobileNetV2 on vtest.avi (detection F1 vs the FP32 model) and MobileNetV2 on footage
calibration never saw (top-1 agreement vs the FP32 model; calibration read bikes.mp4, so the gate group on
bikes.mp4 frames is not held out). Strategies: edge-only (the full model as the bundle ships it, its
precision read from the file), cloud-only, every static cut with its best codec, and the motion gate on.

Two JPEG baselines, both q90 and both on the same frames as the row: the JPEG of the whole camera frame
(``server.jpeg_size = "frame"``; every results file has it) and the JPEG at the model's input size (the
agent's default since ``server.jpeg_size = "model"``; only the codec files measured one: for the detector
exactly what the agent sends, the frame resized to the model's input; for MobileNetV2 the centre crop at
the model's input, while the agent keeps the uncropped frame with its shorter side at the model's resize,
so that column is close to, not exactly, the agent's cloud-only for the classifier).

The results files measured different frame sets, so rows come in groups, one per (file, frames), and each
row is compared only with the JPEGs of *its* frames. Every figure is read from a file by a key path, and
the table cites both (nothing typed in).

"Best codec" of a cut: the fewest bytes among the splitinfer codecs whose fidelity is >= the JPEG's on the
same frames, once against each JPEG (two rows when the choices differ); if none reaches it, the codec with
the highest fidelity, marked. Image-codec mosaics of the activations (``image_codecs``) are references,
not wires the agent ships, and are left out.

Pure up to :func:`write_outputs` (documents in, rows and Markdown out); the plot and the CLI are at the end.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOCS = REPO / "docs" / "benchmarks"
DETECTOR, CLASSIFIER = "SSD-MobileNetV2", "MobileNetV2"
# more codecs at some cuts, measured as codecs_ssd.json was (same frames and JPEGs): a group each, where present
MORE_DETECTOR_CODECS = ("codecs_ssd_conv708_pca.json",)
FILES = ("codecs_ssd.json", "detector.json", "gate_exit_ssd.json", "fidelity.json", "codecs.json", "ptq.json",
         "gate_exit.json") + MORE_DETECTOR_CODECS

# A key path segment: a dict key, a list index, or (field, value) = the list element whose field equals value.
Segment = Union[str, int, tuple[str, str]]


class FidelityTableError(ValueError):
    """A results file lacks a key the table reads (the message names the file, the key and what is there)."""


@dataclass(frozen=True)
class Cited:
    """A figure and where it was read: ``file`` and ``key`` (a path such as ``cuts[id=output].top1_agreement``)."""

    value: Any
    file: str
    key: str

    @property
    def source(self) -> str:
        return f"{self.file}: {self.key}"


@dataclass(frozen=True)
class Row:
    """One strategy on one frame set: its fidelity, the cloud-only JPEG's on the same frames, bytes sent."""

    model: str
    group: str
    strategy: str
    wire: str
    fidelity: Cited
    jpeg: Cited  # the whole camera frame's JPEG q90 on the same frames
    bytes_per_frame: Optional[Cited] = None
    note: str = ""
    jpeg_model: Optional[Cited] = None  # the JPEG q90 at the model's input size, where the file measured it

    @property
    def tag(self) -> str:
        """A short name of the group for plot labels: the file's stem, and the clip for gate runs."""
        stem = self.group.split(" ")[0].removesuffix(".json")
        clip = re.search(r"\(clip ([^:]+):", self.group)
        return f"{stem}/{clip.group(1)}" if clip else stem

    @property
    def at_least_jpeg(self) -> bool:
        return float(self.fidelity.value) >= float(self.jpeg.value)

    @property
    def at_least_model_jpeg(self) -> Optional[bool]:
        return None if self.jpeg_model is None else float(self.fidelity.value) >= float(self.jpeg_model.value)


def format_key(path: Sequence[Segment]) -> str:
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif isinstance(seg, tuple):
            out += f"[{seg[0]}={seg[1]}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", seg):
            out += ("." if out else "") + seg
        else:
            out += f'["{seg}"]'
    return out


def lookup(doc: Any, path: Sequence[Segment], file: str = "?") -> Any:
    """The value at ``path`` in ``doc``; :class:`FidelityTableError` naming the first missing segment."""
    node = doc
    for i, seg in enumerate(path):
        here = format_key(path[:i]) or "the top level"
        if isinstance(seg, tuple):
            field, want = seg
            found = [x for x in node if isinstance(x, dict) and x.get(field) == want] if isinstance(node, list) else []
            if not found:
                have = [x.get(field) for x in node if isinstance(x, dict)] if isinstance(node, list) else type(node).__name__
                raise FidelityTableError(f"{file}: no element with {field} = {want!r} at {here}; there: {have}")
            node = found[0]
        elif isinstance(seg, int):
            if not isinstance(node, list) or not -len(node) <= seg < len(node):
                raise FidelityTableError(f"{file}: no index {seg} at {here} ({type(node).__name__} "
                                         f"of {len(node) if isinstance(node, list) else '?'})")
            node = node[seg]
        else:
            if not isinstance(node, dict) or seg not in node:
                have = sorted(node)[:12] if isinstance(node, dict) else type(node).__name__
                raise FidelityTableError(f"{file}: no key {seg!r} at {here}; there: {have}")
            node = node[seg]
    return node


def citer(docs: dict[str, Any], file: str) -> Callable[..., Cited]:
    """``cite(*path)`` -> the :class:`Cited` value of ``docs[file]`` at that path."""
    if file not in docs:
        raise FidelityTableError(f"results file {file!r} is not loaded; loaded: {sorted(docs)}")

    def cite(*path: Segment) -> Cited:
        return Cited(lookup(docs[file], path, file), file, format_key(path))
    return cite


def best_codec(codecs: dict[str, dict], metric: str, floor: float) -> tuple[str, bool]:
    """The fewest-bytes codec with ``metric`` >= ``floor`` (True), else the highest ``metric`` (False)."""
    scored = {n: c for n, c in codecs.items() if c.get(metric) is not None and c.get("bytes") is not None}
    if not scored:
        raise FidelityTableError(f"no codec carries both {metric!r} and 'bytes'; codecs: {sorted(codecs)}")
    reaching = [n for n, c in scored.items() if c[metric] >= floor]
    if reaching:
        return min(reaching, key=lambda n: (scored[n]["bytes"], n)), True
    return max(scored, key=lambda n: (scored[n][metric], -scored[n]["bytes"])), False


def _codec_rows(model: str, group: str, file: str, docs: dict[str, Any], metric: str, jpeg: Cited,
                jpeg_model: Cited) -> list[Row]:
    """Per cut, its best codec against the frame's JPEG and against the model-input JPEG (one row if the same)."""
    cite = citer(docs, file)
    rows = []
    for cut, entry in lookup(docs[file], ["cuts"], file).items():
        flops = entry.get("head_flops_fraction")
        picks: dict[str, list[str]] = {}
        for label, floor in (("the model-input JPEG", jpeg_model), ("the frame's JPEG", jpeg)):
            name, reached = best_codec(entry["codecs"], metric, float(floor.value))
            picks.setdefault(name, []).append(f"smallest >= {label}" if reached
                                              else f"none reaches {label}: the highest fidelity")
        for name, why in picks.items():
            note = "; ".join(why) + (f"; head {100 * flops:.0f}% of the FLOPs" if flops is not None else "")
            rows.append(Row(model, group, f"cut {cut}", name, cite("cuts", cut, "codecs", name, metric), jpeg,
                            cite("cuts", cut, "codecs", name, "bytes"), note, jpeg_model))
    return rows


def _frames(docs: dict[str, Any], file: str) -> str:
    frames = lookup(docs[file], ["frames"], file)
    return f"{', '.join(frames['evaluation_sources'])}, {frames['evaluation']} frames"


def detector_rows(docs: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    file = "codecs_ssd.json"
    cite, group = citer(docs, file), f"{file} ({_frames(docs, file)})"
    jpeg, small = cite("jpeg", "full_frame_f1"), cite("jpeg", "input_size_f1")
    rows.append(Row(DETECTOR, group, "cloud-only", "JPEG q90 at the model's input size (agent default)", small, jpeg,
                    cite("jpeg", "input_size_bytes"), "the frame resized to the model's input, as the agent sends it",
                    small))
    rows.append(Row(DETECTOR, group, "cloud-only", "JPEG q90 of the camera frame (jpeg_size = frame)", jpeg, jpeg,
                    cite("jpeg", "full_frame_bytes"), "", small))
    rows += _codec_rows(DETECTOR, group, file, docs, "detection_f1", jpeg, small)
    for file in (f for f in MORE_DETECTOR_CODECS if f in docs):
        cite, group = citer(docs, file), f"{file} ({_frames(docs, file)})"
        rows += _codec_rows(DETECTOR, group, file, docs, "detection_f1", cite("jpeg", "full_frame_f1"),
                            cite("jpeg", "input_size_f1"))

    file = "detector.json"
    cite = citer(docs, file)
    ev = lookup(docs[file], ["evaluation"], file)
    group, jpeg = f"{file} ({', '.join(ev['sources'])}, {ev['frames']} frames)", cite("evaluation", "jpeg_baseline_detection_f1")
    for cut in lookup(docs[file], ["cuts"], file):
        sel: Segment = ("cut", cut["cut"])
        if cut["cut"] == "output":
            rows.append(Row(DETECTOR, group, "edge-only", f"{cut['head_precision']} full model (as the bundle ships it)",
                            cite("cuts", sel, "detection_f1_vs_fp32"), jpeg))
        elif cut["cut"] == "input":
            rows.append(Row(DETECTOR, group, "cloud-only", "JPEG q90 of the camera frame (jpeg_size = frame)",
                            cite("cuts", sel, "detection_f1_vs_fp32"), jpeg, cite("cuts", sel, "wire_bytes")))
        else:
            rows.append(Row(DETECTOR, group, f"cut {cut['cut']}", f"{cut['head_precision']} head, the bundle's wire",
                            cite("cuts", sel, "detection_f1_vs_fp32"), jpeg, cite("cuts", sel, "wire_bytes")))
    rows += _gate_rows(DETECTOR, "gate_exit_ssd.json", docs, "detection_f1_all_frames",
                       "jpeg_baseline_detection_f1_all_frames", "runs")
    return rows


def classifier_rows(docs: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    file = "fidelity.json"
    cite = citer(docs, file)
    model = lookup(docs[file], ["models", ("model", "mobilenet_v2")], file)
    ev = model["evaluation"]
    group = f"{file} ({', '.join(ev['evaluation_sources'])}, {ev['evaluation_frames']} frames)"
    base: list[Segment] = ["models", ("model", "mobilenet_v2")]
    jpeg = cite(*base, "evaluation", "baseline")
    for cut in model["cuts"]:
        sel: Segment = ("id", cut["id"])
        fid = cite(*base, "cuts", sel, "top1_agreement")
        if cut["id"] == "output":
            shipped = "int8" if model.get("int8_full_model_shipped") else cut["head_precision"]
            rows.append(Row(CLASSIFIER, group, "edge-only", f"{shipped} full model (as the bundle ships it)", fid, jpeg))
        elif cut["id"] == "input":
            rows.append(Row(CLASSIFIER, group, "cloud-only", "JPEG q90 of the camera frame (jpeg_size = frame)", fid, jpeg))
        else:
            rows.append(Row(CLASSIFIER, group, f"cut {cut['id']}", f"{cut['head_precision']} head, the bundle's wire",
                            fid, jpeg, note=f"remedy {cut['remedy']}"))

    file = "codecs.json"
    cite, group = citer(docs, file), f"{file} ({_frames(docs, file)})"
    jpeg, small = cite("jpeg", "full_frame_top1"), cite("jpeg", "input_size_top1")
    rows.append(Row(CLASSIFIER, group, "cloud-only", "JPEG q90 at the model's input size (crop)", small, jpeg,
                    cite("jpeg", "input_size_bytes"), "the model's centre crop; the agent's default keeps the "
                    "uncropped frame at the model's resize (not measured in this file)", small))
    rows.append(Row(CLASSIFIER, group, "cloud-only", "JPEG q90 of the camera frame (jpeg_size = frame)", jpeg, jpeg,
                    cite("jpeg", "full_frame_bytes"), "", small))
    rows += _codec_rows(CLASSIFIER, group, file, docs, "top1", jpeg, small)
    if "bottleneck" in docs[file]:
        b = docs[file]["bottleneck"]
        rows.append(Row(CLASSIFIER, group, f"cut {b['cut']}", b["codec"], cite("bottleneck", "top1"), jpeg,
                        cite("bottleneck", "bytes"), "learned bottleneck; "
                        + ("passes" if b.get("passes_bundle_gate") else "fails") + " the bundle's gate, not shipped",
                        small))

    file = "ptq.json"
    if file in docs:
        cite = citer(docs, file)
        method = lookup(docs[file], ["default_method"], file)
        group = f"{file} ({lookup(docs[file], ['evaluation_sets', 'other_videos'], file)})"
        jpeg = cite("jpeg_q90_baseline", "other_videos", "top1_agreement")
        rows.append(Row(CLASSIFIER, group, "cloud-only", "JPEG q90 of the camera frame (jpeg_size = frame)", jpeg, jpeg))
        for arithmetic in ("exact", "fused"):
            rows.append(Row(CLASSIFIER, group, "edge-only", f"int8 full model ({method}, {arithmetic} arithmetic)",
                            cite("methods", ("method", method), "other_videos", arithmetic, "top1_agreement"), jpeg))
    rows += _gate_rows(CLASSIFIER, "gate_exit.json", docs, "fidelity_top1_all_frames",
                       "jpeg_baseline_top1_all_frames", "policy_run")
    return rows


def _gate_rows(model: str, file: str, docs: dict[str, Any], metric: str, jpeg_key: str, runs_key: str) -> list[Row]:
    if file not in docs:
        return []
    cite = citer(docs, file)
    rows = []
    for clip in lookup(docs[file], ["clips"], file):
        runs = clip[runs_key] if isinstance(clip[runs_key], list) else [clip[runs_key]]
        for i, run in enumerate(runs):
            path: list[Segment] = ["clips", ("clip", clip["clip"]), runs_key]
            if isinstance(clip[runs_key], list):
                path.append(i)
            frames = run.get("frames")
            group = f"{file} (clip {clip['clip']}: {clip['source'].split(';')[0]}{f', {frames} frames' if frames else ''})"
            cut = run["cut"]
            name = {"output": "edge-only", "input": "cloud-only"}.get(cut, f"cut {cut}") + " + gate"
            if run.get("roi_mode"):
                name += " + ROI"
            gated = (run.get("share") or {}).get("gated")
            note = f"gated {100 * gated:.0f}% of frames" if gated is not None else ""
            sent = cite(*path, "mean_bytes_sent_per_offloaded_frame") if "mean_bytes_sent_per_offloaded_frame" in run else None
            rows.append(Row(model, group, name, "gate on", cite(*path, metric), cite(*path, jpeg_key), sent, note))
    return rows


def all_rows(docs: dict[str, Any]) -> list[Row]:
    return detector_rows(docs) + classifier_rows(docs)


def _num(value: Any, digits: int = 4) -> str:
    return f"{float(value):.{digits}f}"


def render_markdown(rows: Sequence[Row]) -> list[str]:
    """One table per model; a group heading row per (file, frames)."""
    out: list[str] = []
    for model, metric in ((DETECTOR, "detection F1 vs FP32"), (CLASSIFIER, "top-1 agreement vs FP32")):
        mine = [r for r in rows if r.model == model]
        if not mine:
            continue
        out += [f"### {model}: {metric}", "",
                "| strategy | wire | fidelity | frame JPEG, same frames | >= it | model-input JPEG, same frames | >= it "
                "| bytes/frame | note | sources |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        group = None
        for r in mine:
            if r.group != group:
                group = r.group
                out.append(f"| _{group}_ | | | | | | | | | |")
            sent = "-" if r.bytes_per_frame is None else f"{float(r.bytes_per_frame.value):,.0f}"
            cites = "; ".join(c.key for c in (r.fidelity, r.jpeg, r.jpeg_model, r.bytes_per_frame) if c is not None)
            model_jpeg = "-" if r.jpeg_model is None else _num(r.jpeg_model.value)
            model_ok = {None: "-", True: "yes", False: "**no**"}[r.at_least_model_jpeg]
            out.append(f"| {r.strategy} | {r.wire} | {_num(r.fidelity.value)} | {_num(r.jpeg.value)} | "
                       f"{'yes' if r.at_least_jpeg else '**no**'} | {model_jpeg} | {model_ok} | {sent} | {r.note} | "
                       f"`{cites}` |")
        out.append("")
    return out


def render_document(rows: Sequence[Row]) -> str:
    head = (__doc__ or "").split("\n\n")[2:5]
    return "\n".join(["# Fidelity per strategy next to the JPEG baseline", "",
                      "Generated by `python -m benchmarks.fidelity_table` from `benchmarks/results/` "
                      "(each row cites its file and keys; groups name the file and its frames).", ""]
                     + [p.replace("\n", " ") + "\n" for p in head] + ["![fidelity.png](fidelity.png)", ""]
                     + render_markdown(rows))


# --------------------------------------------------------------------------- I/O


def load_docs(results: pathlib.Path, files: Sequence[str] = FILES) -> dict[str, Any]:
    """The results files that exist (a missing one drops its rows; the builders say which they need)."""
    return {f: json.loads((results / f).read_text(encoding="utf-8")) for f in files if (results / f).is_file()}


def _color(row: Row) -> str:
    if row.at_least_jpeg and row.at_least_model_jpeg is not False:
        return "tab:green"
    return "gold" if row.at_least_model_jpeg else "tab:orange"


def _short(text: str, chars: int = 40) -> str:
    return text if len(text) <= chars else text[:chars - 3] + "..."


def write_plot(rows: Sequence[Row], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in (DETECTOR, CLASSIFIER) if any(r.model == m for r in rows)]
    sizes = [sum(r.model == m for r in rows) for m in models]
    fig, axes = plt.subplots(len(models), 1, figsize=(11, 0.27 * sum(sizes) + 2.0 * len(models)),
                             gridspec_kw={"height_ratios": sizes}, squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        mine = [r for r in rows if r.model == model][::-1]
        ys = range(len(mine))
        ax.barh(list(ys), [float(r.fidelity.value) for r in mine], color=[_color(r) for r in mine], height=0.7)
        ax.scatter([float(r.jpeg.value) for r in mine], list(ys), marker="|", s=160, color="black", zorder=3,
                   label="JPEG q90 of the camera frame, same frames")
        small = [(float(r.jpeg_model.value), y) for r, y in zip(mine, ys) if r.jpeg_model is not None]
        if small:
            ax.scatter([v for v, _ in small], [y for _, y in small], marker="|", s=160, color="tab:blue", zorder=3,
                       label="JPEG q90 at the model's input, same frames")
        ax.set_yticks(list(ys))
        ax.set_yticklabels([f"{_short(r.strategy)} · {_short(r.wire)} [{r.tag}]" for r in mine], fontsize=6.5)
        lo = min(min(float(r.fidelity.value), float(r.jpeg.value),
                     float(r.jpeg_model.value) if r.jpeg_model is not None else 1.0) for r in mine)
        ax.set_xlim(max(0.0, lo - 0.05), 1.005)
        ax.set_xlabel("detection F1 vs FP32" if model == DETECTOR else "top-1 agreement vs FP32")
        ax.set_title(f"{model}: green >= both JPEGs, yellow >= the model-input JPEG only, orange below",
                     fontsize=9, loc="right")
        ax.grid(True, axis="x", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: pathlib.Path, out: pathlib.Path) -> list[Row]:
    rows = all_rows(load_docs(results))
    out.mkdir(parents=True, exist_ok=True)
    write_plot(rows, out / "fidelity.png")
    (out / "fidelity.md").write_text(render_document(rows), encoding="utf-8")
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fidelity_table", description=__doc__.split("\n")[0])
    p.add_argument("--results", type=pathlib.Path, default=RESULTS)
    p.add_argument("--out", type=pathlib.Path, default=DOCS)
    args = p.parse_args(argv)
    rows = write_outputs(args.results, args.out)
    print(f"wrote {args.out / 'fidelity.md'} and {args.out / 'fidelity.png'} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
