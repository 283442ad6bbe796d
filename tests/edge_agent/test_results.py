"""Result lines: JSON schema, sinks, and postprocessing (softmax/top-k, detections)."""
from __future__ import annotations

import io
import json
import pathlib

import numpy as np
import pytest

from edge_agent.postprocess import Postprocessor, decode_detections, load_labels, softmax, top_k
from edge_agent.results import LATENCY_KEYS, SCHEMA, FileSink, FrameResult, MemorySink, StreamSink, make_sink
from edge_agent.types import Path
from protos import bundle_pb2

REQUIRED = {
    "schema": str, "frame_id": int, "capture_unix_ms": int, "source": str, "cut": str, "path": str,
    "stages": dict, "latency_ms": dict, "wire_bytes": int,
}


def check_result_line(line: dict) -> None:
    """The schema every result line follows (also used by test_agent)."""
    for key, kind in REQUIRED.items():
        assert isinstance(line[key], kind), (key, line.get(key))
    assert line["schema"] == SCHEMA
    assert line["path"] in {p.value for p in Path}
    assert set(line["stages"]) == {"preprocess", "head", "tail"}
    assert set(line["stages"].values()) <= {"edge", "cloud", "skipped"}
    assert set(line["latency_ms"]) == set(LATENCY_KEYS)
    assert all(isinstance(v, (int, float)) and v >= 0 for v in line["latency_ms"].values())
    assert ("top_k" in line) or ("detections" in line) or ("error" in line)
    if "top_k" in line:
        assert all(set(c) == {"index", "label", "score"} for c in line["top_k"])
    if line["path"] == "fallback":
        assert line["fallback_reason"]


def _result(**kw) -> FrameResult:
    base = dict(frame_id=3, capture_unix_ms=1_700_000_000_000, source="bikes.mp4", cut="conv1", path=Path.SPLIT,
                stages={"preprocess": "edge", "head": "edge", "tail": "cloud"},
                latency_ms={"head": 1.23456, "wire": 2.0, "total": 5.0},
                payload={"top_k": [{"index": 1, "label": "dog", "score": 0.9}]}, wire_bytes=4096)
    base.update(kw)
    return FrameResult(**base)


def test_result_line_schema() -> None:
    line = json.loads(_result().to_line())
    check_result_line(line)
    assert line["latency_ms"]["head"] == 1.235 and line["latency_ms"]["server"] == 0.0
    assert line["path"] == "split" and line["fallback_reason"] is None


def test_fallback_line_names_reason() -> None:
    line = json.loads(_result(path=Path.FALLBACK, fallback_reason="UNAVAILABLE: gone").to_line())
    check_result_line(line)
    assert line["fallback_reason"].startswith("UNAVAILABLE")


def test_sinks(tmp_path: pathlib.Path) -> None:
    buf = io.StringIO()
    StreamSink(buf).write(_result())
    assert json.loads(buf.getvalue())["frame_id"] == 3
    fsink = make_sink("file", tmp_path / "out" / "results.jsonl")
    assert isinstance(fsink, FileSink)
    fsink.write(_result(frame_id=1))
    fsink.write(_result(frame_id=2))
    fsink.close()
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["frame_id"] for x in lines] == [1, 2]
    mem = MemorySink()
    mem.write(_result())
    assert len(mem.results) == 1
    with pytest.raises(ValueError, match="results.path"):
        make_sink("file", None)
    with pytest.raises(ValueError, match="mqtt"):
        make_sink("mqtt")


def test_softmax_top_k_with_labels(tmp_path: pathlib.Path) -> None:
    logits = np.array([1.0, 3.0, 2.0, -1.0])
    probs = softmax(logits)
    assert probs.sum() == pytest.approx(1.0)
    best = top_k(logits, 2, ["a", "b", "c", "d"], apply_softmax=True)
    assert [c.label for c in best] == ["b", "c"] and best[0].score == pytest.approx(probs[1])
    (tmp_path / "l.json").write_text('["x", "y"]')
    (tmp_path / "l.txt").write_text("x\ny\n\n")
    assert load_labels(tmp_path / "l.json") == load_labels(tmp_path / "l.txt") == ["x", "y"]
    spec = bundle_pb2.OutputSpec()
    spec.tensors.add(name="logits", datatype="FP32", shape=[-1, 4])
    spec.classification.top_k = 3
    spec.classification.softmax = False
    spec.classification.output_tensor = "logits"
    out = Postprocessor(spec, ["a", "b", "c", "d"])({"logits": np.array([[0.1, 0.2, 0.6, 0.1]], dtype=np.float32)})
    assert [c["label"] for c in out["top_k"]] == ["c", "b", "a"]
    with pytest.raises(KeyError, match="logits"):
        Postprocessor(spec, [])({"other": np.zeros((1, 4))})


def test_detection_decoding_threshold_and_nms() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 5, 5]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    classes = np.array([0, 0, 1, 0])
    found = decode_detections(boxes, scores, classes, ["person", "car"], score_threshold=0.5, iou_threshold=0.5)
    assert [(d.label, round(d.score, 2)) for d in found] == [("person", 0.9), ("car", 0.7)]
    spec = bundle_pb2.OutputSpec()
    for name in ("boxes", "scores", "labels"):
        spec.tensors.add(name=name, datatype="FP32", shape=[-1, 4])
    spec.detection.decoding = "boxes_scores_labels"
    spec.detection.score_threshold = 0.5
    spec.detection.output_tensors.extend(["boxes", "scores", "labels"])
    out = Postprocessor(spec, ["person", "car"])({"boxes": boxes[None], "scores": scores[None], "labels": classes[None]})
    assert len(out["detections"]) == 3  # no NMS when iou_threshold is 0
    assert out["detections"][0]["box_xyxy"] == [0, 0, 10, 10]
