"""Motion gate + objectness exit + ROI on the detector (issue 16): what they save, at what fidelity.

    python -m benchmarks.gate_exit_detector_bench [--bundle DIR] [--quick]
        [--out benchmarks/results/gate_exit_ssd.json]

Model: the SSD-MobileNetV2 COCO bundle (``splitinfer partition ssd_mobilenet_v2_coco``; default
the one ``make demo-detector`` caches, ~/.cache/splitinfer/bundles/ssd_mobilenet_v2_coco).

Every frame goes through the real components in the agent's order: ``MotionGate`` (default
settings, the clip's own clock) -> if admitted, the crop (ROI mode: ``edge_agent.roi.roi_for``
on the gate's motion region, exactly as ``edge_agent.stages.hooks.MotionRoi``; else the whole
frame) -> the head of the cut the energy policy picks -> ``EarlyExits.check`` (the objectness
exit, when one shipped) -> else the tail (the server's model, run here); for the ``input`` cut
the frame's JPEG (q of the bundle) goes to the server's full model. Boxes are mapped back to
source pixels with ``protos.detection.to_source_pixels`` on the crop's size plus the crop's
offset (``edge_agent.roi.shift_to_source``), as the agent's postprocessor does. A gated frame
carries the last computed frame's detections.

Fidelity: the detector metric of ``partitioner.fidelity`` (detection F1 against the FP32 full
model run on that very whole frame, IoU >= 0.5, same class; the graph's candidates, score >=
0.3) over *all* frames, next to the JPEG baseline's (FP32 on the frame after a JPEG round trip:
what cloud-only gets); also at the edge's report threshold (score >= 0.5).

The objectness exit is trained without labels on the same camera's other footage (vtest.avi
frames 400-599) and calibrated on a disjoint stretch (600-699) with
``partitioner.exit_stage.add_exits``; measured frames are never used to train or calibrate.
It only ships when enough calibration frames are empty for FP32 (``min_exits``); the results
file says how many were.

Clips (same constructions as ``benchmarks.gate_exit_bench``):
* ``vtest``: vtest.avi frames 0-199 as they are (768x576, 10 fps, fixed camera, people walking).
* ``idle``: vtest.avi frame 0 held for 150 frames with Gaussian sensor noise (sigma 3 grey levels
  per pixel and channel, a new draw every frame, numpy seed 0), real frames 1-100, frame 100
  held 150 frames, real 101-200, frame 200 held 150 frames: 650 frames, 450 idle (69 %). Every
  real frame shows walking people, so a gated real frame counts as a "frame with motion gated".

Energy per frame: ``edge_agent.power.PI4_DEFAULT`` with the bundle's profiled head/tail times
(this x86 host), ``--uplink-kbps`` (8000) and ``--rtt-ms`` (20), charged per path exactly as
``benchmarks.gate_exit_bench`` does; ROI mode's offloaded JPEGs are the crop's real bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from benchmarks.gate_exit_bench import GATE_POWER, idle_clip, load_sessions, isolated_gate_ms, policy_choice, profiles, read_video
from edge_agent.exits import EarlyExits
from edge_agent.gate import MotionGate, Verdict
from edge_agent.head import HeadOutput
from edge_agent.power import PI4_DEFAULT
from edge_agent.rates import FrameRates
from edge_agent.roi import Roi, crop, roi_for, shift_to_source
from partitioner import samples
from partitioner.exit_stage import ExitOptions, add_exits
from partitioner.fidelity import Detections, detection_fidelity, detections_from_outputs
from protos.bundle import Bundle, Side, read_bundle
from protos.detection import to_source_pixels
from protos.exits import exits_of
from protos.preprocess import decode_jpeg, encode_jpeg, preprocess_bgr

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gate_exit_ssd.json"
DEFAULT_BUNDLE = pathlib.Path.home() / ".cache" / "splitinfer" / "bundles" / "ssd_mobilenet_v2_coco"
PATHS = ("gated", "exited", "offloaded", "local")


@dataclass
class Detector:
    """The bundle's ONNX models on one thread, and the source-pixel detections of a frame."""

    bundle: Bundle
    full: Any
    heads: dict[str, Any]
    tails: dict[str, Any]

    @classmethod
    def load(cls, bundle: Bundle) -> "Detector":
        return cls(bundle, *load_sessions(bundle))  # the input cut has no head, the output cut no tail

    def feed(self, img: np.ndarray) -> dict[str, np.ndarray]:
        m = self.bundle.manifest
        return {m.input.tensor.name: preprocess_bgr(img, m.input)}

    def to_source(self, outputs: Sequence[np.ndarray], crop_hw: tuple[int, int], roi: Roi) -> Detections:
        """The graph's detections (score >= 0.05 of what it emits) in source-frame pixels."""
        d = detections_from_outputs(outputs)
        m = self.bundle.manifest
        units = m.output.detection.box_units or "normalized"
        boxes = to_source_pixels(d.boxes, m.input, crop_hw, units=units) if len(d.scores) else d.boxes.reshape(0, 4)
        return Detections(shift_to_source(boxes, roi), d.scores, d.labels)

    def full_model(self, img: np.ndarray, roi: Optional[Roi] = None) -> Detections:
        roi = roi or Roi.full(img.shape[1], img.shape[0])
        part = crop(img, roi)
        return self.to_source(self.full.run(None, self.feed(part)), part.shape[:2], roi)

    def head(self, cut: str, img: np.ndarray) -> dict[str, np.ndarray]:
        sess = self.heads[cut]
        return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, self.feed(img))))

    def tail(self, cut: str, acts: dict[str, np.ndarray], crop_hw: tuple[int, int], roi: Roi) -> Detections:
        sess = self.tails[cut]
        return self.to_source(sess.run(None, {i.name: acts[i.name] for i in sess.get_inputs()}), crop_hw, roi)


def above(d: Detections, score: float) -> Detections:
    keep = d.scores >= score
    return Detections(d.boxes[keep], d.scores[keep], d.labels[keep])


def f1(ref: Sequence[Detections], got: Sequence[Detections], score: float = 0.0) -> float:
    return round(detection_fidelity([above(r, score) for r in ref], [above(g, score) for g in got]).f1, 4)


def add_objectness_exit(root: pathlib.Path, cut: str, train: list[np.ndarray], calib: list[np.ndarray],
                        epochs: int) -> dict:
    """Distil + calibrate the objectness exit at ``cut`` from frames written as PNG folders."""
    folders = {}
    for name, frames in (("train", train), ("calib", calib)):
        folder = root.parent / f"exit_{name}"
        folder.mkdir(exist_ok=True)
        for i, f in enumerate(frames):
            cv2.imwrite(str(folder / f"{name}_{i:04d}.png"), f)
        folders[name] = str(folder)
    t0 = time.perf_counter()
    bundle = add_exits(root, [cut], ExitOptions(train_sources=(folders["train"],), heldout_sources=(folders["calib"],),
                                                train_frames=len(train), heldout_frames=len(calib), max_epochs=epochs,
                                                min_exits=3))
    row: dict[str, Any] = {"cut": cut, "train_frames": len(train), "calibration_frames": len(calib),
                           "train_plus_calibrate_s": round(time.perf_counter() - t0, 1),
                           "target_jpeg_baseline_f1": round(bundle.manifest.evaluation.baseline, 4)}
    c = bundle.cut(cut)
    row["shipped"] = c.HasField("early_exit")
    if row["shipped"]:
        e = c.early_exit
        row.update(threshold=round(e.threshold, 4), calibration_exit_rate=round(e.exit_rate, 4),
                   calibration_exit_agreement=round(e.exit_agreement, 4), exit_ms=round(e.exit_ms, 4))
    return row


def run_clip(det: Detector, frames: list[np.ndarray], motion: Optional[list[bool]], fps: float, *, cut: str, roi_mode: bool,
             reference: list[Detections], jpeg: list[Detections], jpeg_bytes: list[int], uplink_kbps: float,
             rtt_ms: float) -> dict:
    """Every frame through gate -> (ROI crop) -> head -> exit -> tail / cloud; paths, fidelity, energy."""
    m = det.bundle.manifest
    by_id = {p.cut_id: p for p in profiles(det.bundle)}
    q = m.input.jpeg_quality
    specs = exits_of(det.bundle)
    exits = EarlyExits(specs, m.output) if cut in specs else None
    in_w, in_h = int(m.input.width_px), int(m.input.height_px)
    gate = MotionGate()
    paths: list[str] = []
    got: list[Detections] = []
    sent_bytes: list[int] = []
    roi_area: list[float] = []
    last: Optional[Detections] = None
    for i, img in enumerate(frames):
        h, w = img.shape[:2]
        meas = gate.decide(img, i / fps)
        if meas.verdict is Verdict.STILL and last is not None:
            paths.append("gated")
            got.append(last)
            continue
        roi = roi_for(meas.region, w, h, input_w=in_w, input_h=in_h) if roi_mode else Roi.full(w, h)
        roi_area.append(roi.width * roi.height / (w * h))
        part = crop(img, roi)
        if cut == "input":  # cloud-only for this frame: the crop's JPEG to the server's full model
            data = encode_jpeg(np.ascontiguousarray(part), q)
            sent_bytes.append(len(data))
            result, path = det.full_model(decode_jpeg(data)), "offloaded"
            result = Detections(shift_to_source(result.boxes, roi), result.scores, result.labels)
        elif cut == "output":
            result, path = det.full_model(img, roi), "local"
        else:
            acts = det.head(cut, part)
            early = exits.check(HeadOutput(cut, (), acts, None, None, 0.0, 0.0)) if exits is not None else None
            if early is not None:
                result, path = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)), "exited"
            else:
                result, path = det.tail(cut, acts, part.shape[:2], roi), "offloaded"
                sent_bytes.append(by_id[cut].wire_bytes)
        paths.append(path)
        got.append(result)
        last = result
    n = len(frames)
    g_ms = isolated_gate_ms(frames, fps)
    p = by_id[cut]
    exit_ms = exits.counts()[0].exit_ms if exits is not None else 0.0
    gate_mj = GATE_POWER.energy_mj(g_ms, 0, uplink_kbps, 0.0)
    wire = float(np.mean(sent_bytes)) if sent_bytes else float(p.wire_bytes)
    energy = {
        "gated": gate_mj,
        "exited": gate_mj + PI4_DEFAULT.energy_mj(p.head_ms + exit_ms, 0, uplink_kbps, 0.0),
        "offloaded": gate_mj + PI4_DEFAULT.energy_mj(p.head_ms + exit_ms, wire, uplink_kbps, rtt_ms + p.tail_ms),
        "local": gate_mj + PI4_DEFAULT.energy_mj(by_id["output"].head_ms, 0, uplink_kbps, 0.0),
    }
    ours = float(np.mean([energy[x] for x in paths]))
    cloud = float(np.mean([PI4_DEFAULT.energy_mj(0.0, b, uplink_kbps, rtt_ms + by_id["input"].tail_ms)
                           for b in jpeg_bytes]))
    edge = PI4_DEFAULT.energy_mj(by_id["output"].head_ms, 0, uplink_kbps, 0.0)
    share = {k: round(paths.count(k) / n, 4) for k in PATHS}
    report = float(m.output.detection.score_threshold or 0.5)

    def subset(kind: str) -> Optional[float]:
        idx = [k for k, x in enumerate(paths) if x == kind]
        return f1([reference[k] for k in idx], [got[k] for k in idx]) if idx else None

    row: dict[str, Any] = {
        "frames": n, "cut": cut, "roi_mode": roi_mode, "share": share,
        "neither_offloaded_nor_full_model": round(share["gated"] + share["exited"], 4),
        "detection_f1_all_frames": f1(reference, got),
        "jpeg_baseline_detection_f1_all_frames": f1(reference, jpeg),
        f"detection_f1_all_frames_at_report_score_{report}": f1(reference, got, report),
        f"jpeg_baseline_detection_f1_at_report_score_{report}": f1(reference, jpeg, report),
        "detection_f1_by_path": {k: subset(k) for k in PATHS},
        "mean_roi_area_fraction_of_computed_frames": round(float(np.mean(roi_area)), 4) if roi_area else None,
        "mean_bytes_sent_per_offloaded_frame": round(wire),
        "gate_ms_isolated": round(g_ms, 4), "full_model_ms_profiled": round(by_id["output"].head_ms, 3),
        "energy_mj_per_frame": {"ours": round(ours, 2), "cloud_only": round(cloud, 2), "edge_only": round(edge, 2),
                                "by_path": {k: round(v, 2) for k, v in energy.items()}},
        "energy_vs_cloud_only": round(ours / cloud, 4), "energy_vs_edge_only": round(ours / edge, 4),
        "mean_camera_jpeg_bytes": round(float(np.mean(jpeg_bytes))),
    }
    if exits is not None:
        c = exits.counts()[0]
        row["exit"] = {"checked": c.checked, "exited": c.exited, "threshold": round(c.threshold, 4)}
    if motion is not None:
        row["motion_frames"] = int(sum(motion))
        row["motion_frames_gated"] = int(sum(1 for x, mv in zip(paths, motion) if mv and x == "gated"))
    return row


def references(det: Detector, frames: list[np.ndarray], q: int) -> tuple[list[Detections], list[Detections], list[int]]:
    """FP32 on every whole frame, FP32 after the camera frame's JPEG round trip, and the JPEG bytes."""
    ref, jpeg, sizes = [], [], []
    for k, img in enumerate(frames):
        ref.append(det.full_model(img))
        data = encode_jpeg(img, q)
        sizes.append(len(data))
        jpeg.append(det.full_model(decode_jpeg(data)))
        if k % 50 == 49:
            print(f"  references {k + 1}/{len(frames)}", flush=True)
    return ref, jpeg, sizes


def bench_clip(name: str, source: str, det: Detector, frames: list[np.ndarray], motion: Optional[list[bool]],
               fps: float, exit_row: dict, args: argparse.Namespace) -> dict:
    prior = FrameRates({exit_row["cut"]: exit_row["calibration_exit_rate"]},
                       {exit_row["cut"]: exit_row["exit_ms"]}) if exit_row.get("shipped") else FrameRates()
    cut, ests, reason = policy_choice(det.bundle, prior, args.uplink_kbps, args.rtt_ms)
    print(f"[{name}] policy (energy, calibration exit rate): {cut}: {reason}", flush=True)
    t0 = time.perf_counter()
    ref, jpeg, sizes = references(det, frames, det.bundle.manifest.input.jpeg_quality)
    row: dict[str, Any] = {"clip": name, "source": source, "policy_cut": cut, "policy_reason": reason,
                           "policy_expected_energy_mj": ests, "runs": []}
    cuts = [cut] + ([exit_row["cut"]] if exit_row.get("shipped") and cut != exit_row["cut"] else [])
    plan = [(c, roi) for c in cuts for roi in (False, True)] + [(c, False) for c in args.extra_cuts if c not in cuts]
    for c, roi_mode in plan:
        r = run_clip(det, frames, motion, fps, cut=c, roi_mode=roi_mode, reference=ref, jpeg=jpeg,
                     jpeg_bytes=sizes, uplink_kbps=args.uplink_kbps, rtt_ms=args.rtt_ms)
        print(f"[{name}] {json.dumps(r)}", flush=True)
        row["runs"].append(r)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=pathlib.Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--exit-cut", default="", help="cut for the objectness exit (default: the deepest mid-graph cut)")
    ap.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    ap.add_argument("--uplink-kbps", type=float, default=8000.0)
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--extra-cuts", type=lambda v: tuple(x for x in v.split(",") if x), default=("output", "input"),
                    help="also run every computed frame at these cuts, whole frame (default output,input: the "
                         "FP32 model on the device, the frame's JPEG to the cloud)")
    ap.add_argument("--quick", action="store_true", help="few frames (a smoke run, not for the results file)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)  # the gate on one core, as on the device's capture path
    base = read_bundle(args.bundle, Side.ALL)
    if base.manifest.output.WhichOneof("postprocess") != "detection":
        raise SystemExit(f"{args.bundle} is not a detector bundle (output {base.manifest.output.WhichOneof('postprocess')})")
    mids = [c.id for c in base.manifest.cuts if c.id not in ("input", "output") and not c.codec_of]
    exit_cut = args.exit_cut or mids[-1]
    q = args.quick
    vtest = samples.vtest_path()
    vt = read_video(vtest, 0, 700)
    load_before = [round(x, 2) for x in os.getloadavg()]
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="gate_exit_ssd."))
    t0 = time.time()
    try:
        root = workdir / "bundle"
        shutil.copytree(base.root, root)
        exit_row = add_objectness_exit(root, exit_cut, vt[400:600:4 if q else 1], vt[600:700:2 if q else 1],
                                       5 if q else args.epochs)
        print(f"objectness exit: {exit_row}", flush=True)
        det = Detector.load(read_bundle(root, Side.ALL))
        n_vt = 30 if q else 200
        idle_frames, idle_motion = idle_clip(vt[:201], 20 if q else 150)
        results: dict[str, Any] = {
            "benchmark": "gate_exit_detector", "when_unix": int(time.time()), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "load_average_1_5_15_at_start": load_before,
            "bundle": f"{base.name}@{base.manifest.model_version} (detector, cuts {base.cut_ids})",
            "link": {"uplink_kbps": args.uplink_kbps, "rtt_ms": args.rtt_ms},
            "power_model": "edge_agent.power.PI4_DEFAULT with the bundle's profiled head/tail times (this host)",
            "fidelity_metric": "partitioner.fidelity detection F1 vs the FP32 full model on every whole frame "
                               "(IoU >= 0.5, same class), boxes in source pixels",
            "objectness_exit": exit_row, "quick": q, "clips": [],
        }
        results["clips"].append(bench_clip("vtest", f"vtest.avi frames 0-{n_vt - 1} as they are", det, vt[:n_vt], None,
                                           10.0, exit_row, args))
        results["clips"].append(bench_clip(
            "idle", "vtest.avi frame 0 held 150 frames (sensor noise sigma 3 per pixel and channel, a new draw each "
            "frame, seed 0), real 1-100, frame 100 held 150, real 101-200, frame 200 held 150 (650 frames, 450 idle)",
            det, idle_frames, idle_motion, 10.0, exit_row, args))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    idle = results["clips"][1]["runs"]
    results["goals_idle_clip"] = [{
        "policy": "energy policy's cut" if r["cut"] == results["clips"][1]["policy_cut"] else "forced cut",
        "cut": r["cut"], "roi_mode": r["roi_mode"],
        "neither_offloaded_nor_full_model >= 0.6": r["neither_offloaded_nor_full_model"] >= 0.6,
        "fidelity >= jpeg baseline": r["detection_f1_all_frames"] >= r["jpeg_baseline_detection_f1_all_frames"],
        "no motion frame gated": r["motion_frames_gated"] == 0,
        "energy <= 0.5x cloud-only": r["energy_vs_cloud_only"] <= 0.5,
        "energy <= 0.5x edge-only": r["energy_vs_edge_only"] <= 0.5} for r in idle]
    results["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(results["goals_idle_clip"], indent=1))
    if not q:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
