"""The objectness ("nothing here") exit for detector bundles (issue 16 part 2): add_exits
distils it from a real tiny detector bundle on unlabelled frames, calibrates it on held-out
frames of another folder, and the edge agent uses it: empty frames finish right after the
head with no detections, frames with an object are offloaded and boxed."""
from __future__ import annotations

import pathlib
import shutil
import time

import cv2
import numpy as np
import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.results import MemorySink
from edge_agent.sources import Frame
from edge_agent.transport_fake import FakeTransport
from edge_agent.types import Path
from partitioner.exit_stage import ExitOptions, add_exits
from protos.bundle import Side, read_bundle
from protos.exits import exit_of
from tests.edge_agent.conftest import TailServer, agent_config
from tests.edge_agent.detector_bundle import write_detector_bundle

W, H = 160, 120


def _scene(rng: np.random.Generator, with_object: bool) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """A dark noisy frame, with a bright square of 10-24 px somewhere when ``with_object``."""
    img = np.clip(40 + rng.normal(0, 3, (H, W, 3)), 0, 255).astype(np.uint8)
    if not with_object:
        return img, None
    side = int(rng.integers(10, 25))
    x, y = int(rng.integers(0, W - side)), int(rng.integers(0, H - side))
    img[y:y + side, x:x + side] = 230
    return img, (x, y, x + side, y + side)


def _folder(path: pathlib.Path, seed: int, n: int) -> list[tuple[np.ndarray, tuple | None]]:
    """``n`` frames, every other one empty, written as PNGs (what add_exits reads)."""
    rng = np.random.default_rng(seed)
    path.mkdir()
    frames = [_scene(rng, with_object=i % 2 == 1) for i in range(n)]
    for i, (img, _) in enumerate(frames):
        cv2.imwrite(str(path / f"{i:03d}.png"), img)
    return frames


class FramesSource:
    name, live = "frames", False

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images, self.next_id = images, 0

    def read(self):
        if self.next_id >= len(self.images):
            return None
        i, self.next_id = self.next_id, self.next_id + 1
        return Frame(i, self.images[i], int(time.time() * 1000), time.monotonic(), self.name)

    def close(self) -> None:
        self.next_id = len(self.images)


@pytest.mark.parametrize("edge_cut", ["mask", "mask_q"])
def test_objectness_exit_for_a_detector_bundle_meets_its_target_and_the_edge_uses_it(tmp_path, edge_cut) -> None:
    bundle = write_detector_bundle(tmp_path / "detector")
    copy = tmp_path / "copy"
    shutil.copytree(bundle.root, copy)
    _folder(tmp_path / "train", seed=1, n=60)
    held = _folder(tmp_path / "held", seed=2, n=40)
    options = ExitOptions(train_sources=(str(tmp_path / "train"),), heldout_sources=(str(tmp_path / "held"),),
                          train_frames=60, heldout_frames=40, target=0.95, max_epochs=40, seed=0)
    # "mask" travels as FP32, "mask_q" as uint8 codes (its exit dequantizes them first)
    updated = read_bundle(add_exits(bundle.root, ["mask", "mask_q"], options).root, Side.ALL)  # hashes hold
    for cut_id in ("mask", "mask_q"):
        spec = exit_of(updated, cut_id)
        assert spec is not None and spec.kind == "objectness" and spec.outputs == ("exit_objectness",)
        rec = updated.cut(cut_id).early_exit
        assert rec.heldout_frames == 40 and rec.train_frames == 60 and rec.target == 0.95 and rec.exit_ms > 0
        assert rec.exit_agreement >= 0.95  # frames that exit are empty for FP32 too
        assert rec.exit_rate * 40 >= options.min_exits and rec.exit_rate <= 0.5  # at most the 20 empty frames exit
    # deterministic for a seed: a fresh copy gets the same exit file
    assert add_exits(copy, ["mask"], options).cut("mask").exit_head.sha256 == updated.cut("mask").exit_head.sha256

    # the edge: pinned to the "mask" cut, empty frames exit with no detections, the rest are offloaded
    sink = MemorySink()
    server = TailServer(updated)
    agent = EdgeAgent(agent_config(updated, policy__pinned_cut=edge_cut, gate__mode="off"),
                      transport=FakeTransport(server), sink=sink, source=FramesSource([img for img, _ in held])).start()
    assert agent.run_until_done(60)
    by_id = {r.frame_id: r for r in sink.results}
    assert len(sink.results) == len(by_id) == len(held)
    exited = [i for i, r in by_id.items() if r.path is Path.EXITED]
    assert exited and all(held[i][1] is None and by_id[i].payload["detections"] == [] for i in exited)
    assert len(exited) >= 0.8 * sum(box is None for _, box in held)  # most empty frames never leave the device
    for i, (_, box) in enumerate(held):
        if box is not None:  # no frame with an object exits: it is offloaded and boxed
            r = by_id[i]
            assert r.path is Path.SPLIT and r.stages["tail"] == "cloud"
            (det,) = r.payload["detections"]
            assert np.abs(np.array(det["box_xyxy"]) - np.array(box)).max() <= 5.0


def test_objectness_exit_needs_a_detection_baseline_or_a_target(tmp_path) -> None:
    bundle = write_detector_bundle(tmp_path / "detector")
    with pytest.raises(ValueError, match="no detection_f1 JPEG baseline .*ExitOptions.target"):
        add_exits(bundle.root, ["mask"], ExitOptions())


def test_objectness_target_respects_the_class_filter(tmp_path) -> None:
    """With the bundle reporting only "background", FP32 reports nothing on any frame: every
    held-out frame is empty, so the exit may take them all."""
    from protos.bundle import update_manifest

    bundle = write_detector_bundle(tmp_path / "detector")
    update_manifest(bundle.root, lambda m: m.output.detection.class_filter.append("background"))
    _folder(tmp_path / "train", seed=1, n=30)
    _folder(tmp_path / "held", seed=2, n=20)
    options = ExitOptions(train_sources=(str(tmp_path / "train"),), heldout_sources=(str(tmp_path / "held"),),
                          train_frames=30, heldout_frames=20, target=0.95, max_epochs=20, seed=0)
    rec = add_exits(bundle.root, ["mask"], options).cut("mask").early_exit
    assert rec.exit_rate == 1.0 and rec.exit_agreement == 1.0
