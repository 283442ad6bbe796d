"""ROI mode (issue 16 part 1): the motion gate's region, the crop it becomes, and detector
boxes on the crop mapped back to source-frame coordinates."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_agent.gate import MotionGate, Verdict
from edge_agent.roi import Roi, boxes_to_source, crop, roi_for
from partitioner import samples


@pytest.mark.parametrize("region, frame, inp, want", [
    (None, (640, 480), (300, 300), Roi(0, 0, 640, 480)),  # no motion box: the whole frame
    # a 64x48 region at the centre, 10 % margin -> 76.8x57.6, min 25 % -> 160x120, square input -> 160x160
    ((0.45, 0.45, 0.55, 0.55), (640, 480), (300, 300), Roi(240, 160, 400, 320)),
    # the same at the top-left corner: shifted inside the frame, not shrunk
    ((0.0, 0.0, 0.05, 0.05), (640, 480), (300, 300), Roi(0, 0, 160, 160)),
    # a wide region on a square input: height grows to match
    ((0.1, 0.5, 0.9, 0.6), (640, 480), (300, 300), Roi(80, 0, 560, 480)),  # clamped to the frame height, centred
    # a 4:3 input keeps 4:3
    ((0.25, 0.25, 0.75, 0.75), (640, 480), (320, 240), Roi(128, 96, 512, 384)),
])
def test_roi_table(region, frame, inp, want) -> None:
    roi = roi_for(region, *frame, input_w=inp[0], input_h=inp[1])
    assert roi == want
    if region is not None:
        assert abs(roi.width / roi.height - inp[0] / inp[1]) < 0.02
    assert 0 <= roi.x0 < roi.x1 <= frame[0] and 0 <= roi.y0 < roi.y1 <= frame[1]


def test_roi_rejects_bad_regions_and_sizes() -> None:
    with pytest.raises(ValueError, match=r"motion region \(0.5, 0.1, 0.2, 0.3\)"):
        roi_for((0.5, 0.1, 0.2, 0.3), 640, 480, input_w=300, input_h=300)
    with pytest.raises(ValueError, match="expected positive sizes"):
        roi_for(None, 0, 480, input_w=300, input_h=300)
    with pytest.raises(ValueError, match="does not fit a 10x10 frame"):
        crop(np.zeros((10, 10, 3), np.uint8), Roi(5, 5, 20, 20))


@pytest.mark.parametrize("boxes, units, roi, inp, want", [
    # input-pixel boxes on a 160x160 crop at (240, 160) of a 300x300 input
    ([[0, 0, 300, 300]], "pixels", Roi(240, 160, 400, 320), (300, 300), [[240, 160, 400, 320]]),
    ([[150, 75, 225, 150]], "pixels", Roi(240, 160, 400, 320), (300, 300), [[320, 200, 360, 240]]),
    # normalized boxes
    ([[0.5, 0.25, 0.75, 0.5]], "normalized", Roi(240, 160, 400, 320), (300, 300), [[320, 200, 360, 240]]),
    # the whole frame: plain input -> frame scaling
    ([[30, 30, 60, 90]], "pixels", Roi(0, 0, 640, 480), (300, 300), [[64, 48, 128, 144]]),
    # no detection
    (np.zeros((0, 4)), "pixels", Roi(0, 0, 640, 480), (300, 300), np.zeros((0, 4))),
])
def test_boxes_map_back_to_source_coordinates(boxes, units, roi, inp, want) -> None:
    got = boxes_to_source(np.array(boxes, dtype=np.float32), roi, units=units, input_w=inp[0], input_h=inp[1])
    np.testing.assert_allclose(got, np.array(want, dtype=np.float64).reshape(-1, 4), atol=1e-4)
    with pytest.raises(ValueError, match="box units 'cm'"):
        boxes_to_source(got, roi, units="cm", input_w=1, input_h=1)


def test_a_real_object_pasted_into_a_still_scene_is_found_by_the_gate_and_maps_round_trip() -> None:
    def first_frame(name: str) -> np.ndarray:
        cap = cv2.VideoCapture(str(samples.video_path(name)))
        ok, img = cap.read()
        cap.release()
        assert ok
        return img

    frame = cv2.resize(first_frame("bikes.mp4"), (640, 480), interpolation=cv2.INTER_AREA)
    patch = cv2.resize(first_frame("carphone_pristine.mp4"), (100, 80), interpolation=cv2.INTER_AREA)  # a person
    moved = frame.copy()
    moved[340:420, 480:580] = patch
    gate = MotionGate()
    assert gate.decide(frame, 0.0).verdict is Verdict.FIRST
    m = gate.decide(moved, 0.1)
    assert m.verdict is Verdict.MOTION and m.region is not None
    x0, y0, x1, y1 = m.region
    assert x0 >= 0.70 and y0 >= 0.66 and x1 <= 0.92 and y1 <= 0.89  # around (480..580, 340..420) of 640x480
    roi = roi_for(m.region, 640, 480, input_w=300, input_h=300)
    assert roi.x0 <= 480 and roi.y0 <= 340 and roi.x1 >= 580 and roi.y1 >= 420  # the crop holds the object
    # a detector box around the object on the resized crop maps back onto it in the source frame
    sx, sy = 300 / roi.width, 300 / roi.height
    box_on_crop = np.array([[(480 - roi.x0) * sx, (340 - roi.y0) * sy, (580 - roi.x0) * sx, (420 - roi.y0) * sy]])
    np.testing.assert_allclose(boxes_to_source(box_on_crop, roi, units="pixels", input_w=300, input_h=300),
                               [[480, 340, 580, 420]], atol=1e-6)
    assert crop(moved, roi).shape[:2] == (roi.height, roi.width)
