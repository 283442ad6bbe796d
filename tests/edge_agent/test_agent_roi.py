"""ROI mode (issue 16 part 1): with ``[gate] roi = true`` a detector runs on the motion region
and its boxes come back in source-frame pixels -- offloaded, cloud and local frames alike.

A real tiny detector bundle (tests/edge_agent/detector_bundle.py: it boxes the bright pixels)
watches a synthetic fixed camera: a dark noisy scene where a bright 12x12 square moves in
the bottom-right corner, so every frame's true box is known.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.cli import check_config_for_agent
from edge_agent.errors import ConfigError
from edge_agent.postprocess import Postprocessor
from edge_agent.results import MemorySink
from edge_agent.roi import Roi
from edge_agent.transport_fake import FakeTransport
from edge_agent.types import Path
from protos.bundle import Bundle
from tests.edge_agent.conftest import FRAME_H, FRAME_W, ReplaySource, TailServer, agent_config
from tests.edge_agent.detector_bundle import LABELS, write_detector_bundle
from tests.edge_agent.test_results import check_result_line

OBJECT_PX = 12
STILL = 3  # frames of the object standing still before it moves (gated after the first)


class CornerMotionSource(ReplaySource):
    """A dark 160x120 scene with sensor noise; a bright square stands at (130, 92), then moves
    3 px left and 2 px up per frame for ``moving`` frames. ``truth[i]`` is frame i's box."""

    name = "corner-motion"
    def __init__(self, moving: int = 10, on_frame=None) -> None:
        super().__init__(on_frame)
        rng = np.random.default_rng(5)
        self.images: list[np.ndarray] = []
        self.truth: list[tuple[int, int, int, int]] = []
        for i in range(STILL + moving):
            k = max(0, i - STILL + 1)
            x, y = 130 - 3 * k, 92 - 2 * k
            img = np.clip(40 + rng.normal(0, 2, (FRAME_H, FRAME_W, 3)), 0, 255).astype(np.uint8)
            img[y:y + OBJECT_PX, x:x + OBJECT_PX] = 230
            self.images.append(img)
            self.truth.append((x, y, x + OBJECT_PX, y + OBJECT_PX))


@pytest.fixture(scope="module")
def detector_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return write_detector_bundle(tmp_path_factory.mktemp("roi") / "tiny_detector")


@pytest.fixture(scope="module")
def detector_server(detector_bundle: Bundle) -> TailServer:
    return TailServer(detector_bundle)


def _run(bundle: Bundle, server: TailServer, source: CornerMotionSource, transport=None, **values) -> tuple:
    sink = MemorySink()
    transport = transport if transport is not None else FakeTransport(server)
    cfg = agent_config(bundle, gate__mode="on", runtime__deadline_ms=500, **values)
    agent = EdgeAgent(cfg, transport=transport, sink=sink, source=source).start()
    assert agent.run_until_done(60)
    by_id = {r.frame_id: r for r in sink.results}
    assert len(sink.results) == len(by_id) == len(source.images) == agent.results  # exactly one result per frame
    for r in sink.results:
        check_result_line(json.loads(r.to_line()))
    return agent, by_id


def _box_error_px(result, truth) -> float:
    (det,) = result.payload["detections"]
    assert det["label"] == "object" and result.payload["box_units"] == "source_px"
    return float(np.abs(np.array(det["box_xyxy"]) - np.array(truth)).max())


@pytest.mark.parametrize("cut, path", [("mask", Path.SPLIT), ("input", Path.CLOUD), ("output", Path.LOCAL)])
def test_roi_boxes_come_back_in_source_pixels_where_the_object_is(detector_bundle, detector_server, cut,
                                                                  path) -> None:
    source = CornerMotionSource()
    agent, by_id = _run(detector_bundle, detector_server, source, policy__pinned_cut=cut, gate__roi=True)
    assert by_id[0].path is path and by_id[0].payload["roi"] == [0, 0, FRAME_W, FRAME_H]  # nothing to compare: all
    assert all(by_id[i].path is Path.GATED and by_id[i].source_frame_id == 0 for i in range(1, STILL))
    moving = range(STILL, len(source.images))
    for i in moving:  # every frame with motion is computed on a crop of the corner holding the object
        r = by_id[i]
        assert r.path is path, (i, r.path, r.fallback_reason)
        x0, y0, x1, y1 = r.payload["roi"]
        tx0, ty0, tx1, ty1 = source.truth[i]
        assert x0 <= tx0 and y0 <= ty0 and tx1 <= x1 and ty1 <= y1 and x0 >= FRAME_W / 2 and y0 >= FRAME_H / 3
        assert (x1 - x0) < FRAME_W / 2 and x1 - x0 == y1 - y0  # a zoom, at the 32x32 input's aspect ratio
        assert _box_error_px(r, source.truth[i]) <= 1.25, (i, r.payload)  # within one input pixel of the 40x40 crop

    # the same frames on the whole frame: no ROI recorded, coarser boxes (160x120 squeezed to 32x32)
    whole_source = CornerMotionSource()
    _, whole = _run(detector_bundle, detector_server, whole_source, policy__pinned_cut=cut, gate__roi=False)
    assert all("roi" not in r.payload for r in whole.values())
    whole_err = [_box_error_px(whole[i], whole_source.truth[i]) for i in moving]
    roi_err = [_box_error_px(by_id[i], source.truth[i]) for i in moving]
    assert max(whole_err) <= 5.0  # the whole-frame boxes are right too, within one input pixel (5 source px)
    assert np.mean(roi_err) < np.mean(whole_err)


def test_roi_with_the_server_killed_midway_fallback_boxes_are_in_source_pixels(detector_bundle,
                                                                                detector_server) -> None:
    class DiesAfterTwoOffloads(FakeTransport):
        """The server goes away after it answered two offloads (not at a frame index: the capture
        thread reads ahead of the head stage, so a kill by frame index could come before any offload)."""

        answered = 0

        def infer(self, request, timeout_s):  # noqa: ANN001, ANN202 - FakeTransport's signature
            response = super().infer(request, timeout_s)
            self.answered += 1
            if self.answered >= 2:
                self.down = True
            return response

    transport = DiesAfterTwoOffloads(detector_server)
    source = CornerMotionSource(moving=10)
    _, by_id = _run(detector_bundle, detector_server, source, transport=transport, policy__pinned_cut="mask",
                    gate__roi=True)
    computed = [r for r in by_id.values() if r.path is not Path.GATED]
    assert {r.path for r in computed} == {Path.SPLIT, Path.FALLBACK}
    for r in computed:
        zoomed = r.frame_id >= STILL  # frame 0 runs on the whole frame: one input pixel is 5 source pixels
        assert (r.payload["roi"] != [0, 0, FRAME_W, FRAME_H]) == zoomed
        assert _box_error_px(r, source.truth[r.frame_id]) <= (1.25 if zoomed else 5.0), (r.frame_id, r.path, r.payload)


def test_roi_on_a_classifier_bundle_is_a_config_error_naming_the_setting(tiny_bundle, tail_server) -> None:
    cfg = agent_config(tiny_bundle, gate__mode="on", gate__roi=True, runtime__max_frames=2)
    with pytest.raises(ConfigError, match=r"gate\.roi = true needs a detector bundle: .*'classification'"):
        check_config_for_agent(cfg)
    agent = EdgeAgent(cfg, transport=FakeTransport(tail_server), sink=MemorySink())
    with pytest.raises(ConfigError, match=r"gate\.roi = true needs a detector bundle"):
        agent.start()
    agent.stop(timeout_s=0)  # release what start() opened before it refused


def test_postprocessor_maps_crop_boxes_by_the_crop_scale_and_offset(detector_bundle) -> None:
    m = detector_bundle.manifest
    post = Postprocessor(m.output, LABELS, input_spec=m.input)
    outputs = {"boxes": np.array([[[0.25, 0.5, 0.75, 1.0]]], np.float32), "scores": np.array([[0.9]], np.float32),
               "classes": np.array([[1.0]], np.float32)}
    # (ROI, expected box in source pixels): 40x40 crop at (100, 60) -> x 100 + 0.25 * 40 ...
    table = [
        (Roi(100, 60, 140, 100), [110.0, 80.0, 130.0, 100.0]),
        (Roi(0, 0, FRAME_W, FRAME_H), [40.0, 60.0, 120.0, 120.0]),  # the whole frame: the plain stretch
        (Roi(120, 0, 160, 40), [130.0, 20.0, 150.0, 40.0]),
    ]
    for roi, expected in table:
        payload = post(outputs, frame_hw=(FRAME_H, FRAME_W), roi=roi)
        assert payload["roi"] == [roi.x0, roi.y0, roi.x1, roi.y1] and payload["box_units"] == "source_px"
        np.testing.assert_allclose(payload["detections"][0]["box_xyxy"], expected, atol=0.01)


def test_gate_roi_from_toml_environment_and_flag(tmp_path) -> None:
    from edge_agent.cli import FLAG_KEYS, build_parser
    from edge_agent.config import load_config

    toml_file = tmp_path / "edge.toml"
    toml_file.write_text('bundle = "/b"\n[gate]\nroi = true\n')
    assert load_config(None, env={"SPLITINFER_BUNDLE": "/b"}).gate.roi is False  # off by default
    assert load_config(toml_file, env={}).gate.roi is True
    assert load_config(toml_file, env={"SPLITINFER_GATE_ROI": "false"}).gate.roi is False  # environment over TOML
    args = build_parser().parse_args(["--gate-roi"])
    assert args.gate_roi is True and FLAG_KEYS["gate_roi"] == "gate.roi"
    flags = {"gate.roi": args.gate_roi}  # what the command line hands load_config
    assert load_config(None, env={"SPLITINFER_BUNDLE": "/b", "SPLITINFER_GATE_ROI": "false"}, flags=flags).gate.roi
    with pytest.raises(ConfigError, match="gate.roi"):
        load_config(None, env={"SPLITINFER_BUNDLE": "/b", "SPLITINFER_GATE_ROI": "maybe"})
