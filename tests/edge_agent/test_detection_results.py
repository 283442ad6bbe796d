"""Detection results (issue 12): boxes in source-frame pixels, labels and scores in the JSON lines."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_agent.postprocess import Postprocessor
from edge_agent.results import FrameResult
from edge_agent.types import Path
from protos import bundle_pb2, detection
from tests.edge_agent.test_results import check_result_line

LABELS = ["background", "person", "bicycle", "car"]


def _specs(resize_shorter: int = 0, **settings) -> tuple[bundle_pb2.OutputSpec, bundle_pb2.InputSpec]:
    out = bundle_pb2.OutputSpec()
    for name, shape in (("detection_boxes", [-1, 100, 4]), ("detection_scores", [-1, 100]),
                        ("detection_classes", [-1, 100])):
        out.tensors.add(name=name, datatype="FP32", shape=shape)
    base = dict(score_threshold=0.5, iou_threshold=0.6, max_detections=100, box_units="normalized",
                output_tensors=["detection_boxes", "detection_scores", "detection_classes"])
    base.update(settings)
    detection.fill_spec(out.detection, base)
    inp = bundle_pb2.InputSpec(width_px=300, height_px=300, layout="NHWC", color_order="RGB",
                               resize_shorter_px=resize_shorter)
    return out, inp


def _outputs(rows: list[tuple[list[float], float, int]]) -> dict[str, np.ndarray]:
    boxes = np.zeros((1, 100, 4), np.float32)
    scores = np.zeros((1, 100), np.float32)
    classes = np.zeros((1, 100), np.int64)
    for i, (box, score, cls) in enumerate(rows):
        boxes[0, i], scores[0, i], classes[0, i] = box, score, cls
    return {"detection_boxes": boxes, "detection_scores": scores, "detection_classes": classes}


def test_boxes_come_back_in_source_frame_pixels() -> None:
    out, inp = _specs()
    post = Postprocessor(out, LABELS, input_spec=inp)
    payload = post(_outputs([([0.25, 0.5, 0.5, 1.0], 0.9, 1), ([0.0, 0.0, 0.1, 0.1], 0.4, 3)]), frame_hw=(576, 768))
    assert payload["box_units"] == "source_px"
    (person,) = payload["detections"]  # 0.4 is under the declared 0.5
    assert person["label"] == "person" and person["index"] == 1 and person["score"] == pytest.approx(0.9)
    assert person["box_xyxy"] == [192.0, 288.0, 384.0, 576.0]  # a straight stretch of the 768x576 frame


def test_centre_crop_is_undone() -> None:
    out, inp = _specs(resize_shorter=300)
    post = Postprocessor(out, LABELS, input_spec=inp)
    # 600x400 frame -> 450x300 -> centre crop 300x300 from x = 75: the whole input is x 50..250 of the frame.
    payload = post(_outputs([([0.0, 0.0, 1.0, 1.0], 0.8, 3)]), frame_hw=(400, 600))
    np.testing.assert_allclose(payload["detections"][0]["box_xyxy"], [100.0, 0.0, 500.0, 400.0], atol=0.01)


def test_class_filter_and_max_detections_apply() -> None:
    rows = [([0.1 * i, 0.1, 0.1 * i + 0.05, 0.2], 0.9 - 0.01 * i, 1 + i % 3) for i in range(6)]
    out, inp = _specs(class_filter=["person", "car"], max_detections=3)
    payload = Postprocessor(out, LABELS, input_spec=inp)(_outputs(rows), frame_hw=(576, 768))
    assert [d["label"] for d in payload["detections"]] == ["person", "car", "person"]
    assert [d["score"] for d in payload["detections"]] == sorted((d["score"] for d in payload["detections"]),
                                                                 reverse=True)


def test_without_the_frame_size_boxes_stay_normalised() -> None:
    out, _ = _specs()
    payload = Postprocessor(out, LABELS)(_outputs([([0.25, 0.5, 0.5, 1.0], 0.9, 1)]))
    assert payload["box_units"] == "normalized" and payload["detections"][0]["box_xyxy"] == [0.25, 0.5, 0.5, 1.0]


def test_result_line_carries_boxes_labels_and_scores() -> None:
    out, inp = _specs()
    payload = Postprocessor(out, LABELS, input_spec=inp)(
        _outputs([([0.25, 0.5, 0.5, 1.0], 0.9, 1), ([0.5, 0.1, 0.6, 0.2], 0.7, 3)]), frame_hw=(576, 768))
    result = FrameResult(frame_id=7, capture_unix_ms=1_700_000_000_000, source="vtest.avi", cut="conv_664",
                         path=Path.SPLIT, stages={"preprocess": "edge", "head": "edge", "tail": "cloud"},
                         latency_ms={"head": 30.0, "total": 60.0}, payload=payload, wire_bytes=184832)
    line = json.loads(result.to_line())
    check_result_line(line)
    assert line["box_units"] == "source_px"
    for det in line["detections"]:
        assert set(det) == {"box_xyxy", "score", "index", "label"}
        x1, y1, x2, y2 = det["box_xyxy"]
        assert 0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 576 and 0 < det["score"] <= 1
    assert [d["label"] for d in line["detections"]] == ["person", "car"]


def test_bad_specs_name_the_value() -> None:
    out, _ = _specs()
    out.detection.class_filter.append("unicorn")
    with pytest.raises(ValueError, match=r"class_filter \['unicorn'\]"):
        Postprocessor(out, LABELS)
    with pytest.raises(ValueError, match="box_units='inches'"):
        _specs(box_units="inches")
    with pytest.raises(ValueError, match=r"settings \['nms'\] are unknown"):
        _specs(nms=0.5)
    with pytest.raises(ValueError, match=r"frame size \(0, 768\)"):
        detection.to_source_pixels(np.zeros((1, 4)), _specs()[1], (0, 768))


def test_live_view_draws_source_pixel_boxes_where_they_are() -> None:
    from edge_agent.liveview.overlay import BOX_BGR, draw_overlay

    img = np.zeros((576, 768, 3), np.uint8)
    person = {"box_xyxy": [400.0, 300.0, 500.0, 500.0], "score": 0.9, "index": 1, "label": "person"}
    drawn = draw_overlay(img, {"detections": [person], "box_units": "source_px"}, cut="conv_664", path="split",
                         model_size=(300, 300))
    assert tuple(drawn[400, 400]) == tuple(BOX_BGR) and tuple(drawn[400, 500]) == tuple(BOX_BGR)
    assert not drawn[560:, 600:].any(), "scaled by 768/300 the box would have landed here"
