"""The demo's detector view (issue 12 part 7): the table's detections column and detection F1 per link phase."""
from __future__ import annotations

from edge_agent.link import EmulatedTransport, LinkEmulator, LinkState, LinkTrace
from edge_agent.results import FrameResult
from edge_agent.transport_fake import FakeTransport
from edge_agent.types import Path
from splitinfer.demo_view import Row, detection_counts, format_row, render_summary, summarize

PERSON = {"box_xyxy": [250.0, 220.0, 283.0, 304.0], "score": 0.94, "index": 1, "label": "person"}
CAR = {"box_xyxy": [643.0, 41.0, 723.0, 102.0], "score": 0.52, "index": 3, "label": "car"}


def _row(frame_id: int, detections: list[dict], phase: int) -> Row:
    result = FrameResult(frame_id=frame_id, capture_unix_ms=0, source="vtest.avi", cut="conv_664", path=Path.SPLIT,
                         stages={"preprocess": "edge", "head": "edge", "tail": "cloud"},
                         latency_ms={"total": 50.0}, payload={"detections": detections, "box_units": "source_px"})
    return Row(result=result, uplink_kbps=None, link="fast", reason="", phase=phase, t_s=float(frame_id))


def test_detections_column_and_f1_per_phase() -> None:
    assert detection_counts([PERSON, CAR, dict(PERSON, box_xyxy=[0, 0, 5, 5])]) == "2 person 1 car"
    assert detection_counts([]) == "nothing"
    rows = [_row(0, [PERSON, CAR], 0), _row(1, [PERSON], 0), _row(2, [PERSON, CAR], 1), _row(3, [], 1)]
    assert "1 person 1 car" in format_row(rows[0], 0) and " 0.94 " in format_row(rows[0], 0)
    reference = {0: [PERSON, CAR], 1: [PERSON, CAR], 2: [PERSON, CAR], 3: [PERSON]}
    trace = LinkTrace([LinkState(0.0, up=True, uplink_kbps=1000.0), LinkState(2.0, up=False)])
    link = EmulatedTransport(FakeTransport(lambda request: {}), LinkEmulator(trace))  # only its trace is read
    try:
        s = summarize(rows, frames_captured=4, frames_dropped=0, reference={}, phases=["fast", "outage"], link=link,
                      wall_s=1.0, reference_detections=reference)
    finally:
        link.close()
    # 5 found of 7 reference detections, none extra: precision 1, recall 5/7.
    assert s["detection"] == {"frames": 4, "f1": round(2 * (5 / 7) / (1 + 5 / 7), 4), "precision": 1.0,
                              "recall": round(5 / 7, 4), "mean_iou": 1.0}
    assert s["phases"][0]["detection"]["recall"] == 0.75 and s["phases"][1]["detection"]["recall"] == round(2 / 3, 4)
    text = render_summary(s)
    assert "detection F1 against the full FP32 model: 0.833 over 4 frames" in text
    assert "detection F1 0.857" in text and "detection F1 0.800" in text
