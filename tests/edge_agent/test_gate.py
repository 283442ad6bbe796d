"""The motion gate as a table of synthetic frame sequences, its config, and the gated results."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge_agent.config import GateConfig, load_config
from edge_agent.errors import ConfigError
from edge_agent.gate import MotionGate, Verdict
from edge_agent.results import MemorySink
from edge_agent.sources import Frame
from edge_agent.stages import AdmitAll, FrameJob
from edge_agent.stages.hooks import configured_gate
from edge_agent.stages.result import GatedFrame, ResultStage
from edge_agent.types import Decision, Mode, Objective, Path
from tests.edge_agent.test_results import check_result_line

H, W = 480, 640
F, S, M, C, R = Verdict.FIRST, Verdict.STILL, Verdict.MOTION, Verdict.SCENE_CHANGE, Verdict.REFRESH


def _scene(seed: int) -> np.ndarray:
    """A textured 640x480 scene: smooth random blobs, like a real background at this scale."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 220, (24, 32, 3), dtype=np.uint8)
    return cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC)


def _noisy(img: np.ndarray, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    """Sensor noise: every pixel of every frame differs a little."""
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def _with_box(img: np.ndarray, x: int, y: int, size: int, value: int = 250) -> np.ndarray:
    out = img.copy()
    out[y:y + size, x:x + size] = value
    return out


def _sequence(kind: str) -> list[np.ndarray]:
    a, b = _scene(1), _scene(2)
    if kind == "still":
        return [a] * 8
    if kind == "small_motion":  # a 4x4 px object crossing: far below 0.2 % of the frame
        return [a] + [_with_box(a, 300 + 6 * i, 200, 4) for i in range(7)]
    if kind == "large_motion":  # an 80x80 px object (2 % of the frame) moving 40 px a frame
        return [a] + [_with_box(a, 100 + 40 * i, 200, 80) for i in range(7)]
    if kind == "masked_motion":  # the same object, but inside the masked top-left quadrant
        return [a] + [_with_box(a, 20 + 20 * i, 40, 80) for i in range(7)]
    if kind == "scene_cut":
        return [a, a, a, b, b, b]
    if kind == "lights_on":  # the whole frame 60 grey levels brighter from frame 3 on
        bright = np.clip(a.astype(np.int16) + 60, 0, 255).astype(np.uint8)
        return [a, a, a, bright, bright, bright]
    if kind == "arrives_and_stays":  # an object walks in, then stands still: computed once it stops
        return [a, a, _with_box(a, 300, 200, 80), _with_box(a, 340, 200, 80), _with_box(a, 340, 200, 80),
                _with_box(a, 340, 200, 80)]
    raise AssertionError(kind)


TOP_LEFT = (((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5)),)

CASES = [  # (sequence, mask, expected verdict per frame)
    ("still", (), [F, S, S, S, S, S, S, S]),
    ("small_motion", (), [F, S, S, S, S, S, S, S]),
    ("large_motion", (), [F, M, M, M, M, M, M, M]),
    ("masked_motion", TOP_LEFT, [F, S, S, S, S, S, S, S]),
    ("masked_motion", (), [F, M, M, M, M, M, M, M]),  # the same frames without the mask
    ("scene_cut", (), [F, S, S, C, S, S]),
    ("lights_on", (), [F, S, S, C, S, S]),
    ("arrives_and_stays", (), [F, S, M, M, S, S]),
]


@pytest.mark.parametrize(("kind", "mask", "expected"), CASES, ids=[f"{c[0]}{'-masked' if c[1] else ''}" for c in CASES])
def test_gate_table(kind: str, mask: tuple, expected: list[Verdict]) -> None:
    rng = np.random.default_rng(7)
    gate = MotionGate(mask=mask, max_gated_s=0)
    verdicts = [gate.decide(_noisy(img, rng), now_s=0.1 * i).verdict for i, img in enumerate(_sequence(kind))]
    assert verdicts == expected
    assert gate.gated == expected.count(S) and gate.admitted == len(expected) - expected.count(S)


def test_still_frames_are_refreshed_after_max_gated_s() -> None:
    rng = np.random.default_rng(3)
    gate = MotionGate(max_gated_s=10.0)
    a = _scene(1)
    times = [0.0, 4.0, 9.9, 10.0, 15.0, 20.5]
    assert [gate.decide(_noisy(a, rng), t).verdict for t in times] == [F, S, S, R, S, R]


def test_sensor_noise_alone_changes_nothing_and_frame_fraction_is_reported() -> None:
    rng = np.random.default_rng(5)
    gate = MotionGate(max_gated_s=0)
    a = _scene(4)
    gate.decide(_noisy(a, rng, sigma=8.0), 0.0)
    still = gate.decide(_noisy(a, rng, sigma=8.0), 0.1)  # strong noise: averaged away by the downscale
    assert still.verdict is S and still.changed_fraction < 0.002
    moved = gate.decide(_with_box(a, 0, 0, 320), 0.2)  # a quarter of the frame (plus its edges)
    assert moved.verdict is M and 0.2 < moved.changed_fraction < 0.5


def test_the_same_scene_at_another_size_compares_and_a_new_aspect_restarts() -> None:
    gate = MotionGate(max_gated_s=0)
    assert gate.decide(_scene(1), 0.0).verdict is F
    assert gate.decide(cv2.resize(_scene(1), (320, 240)), 0.1).verdict is S  # both become 160x120 grey
    assert gate.decide(cv2.resize(_scene(1), (640, 360)), 0.2).verdict is F  # 160x90: nothing to compare


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pixel_delta": 0}, "gate.pixel_delta = 0: expected grey levels in 1..254"),
    ({"width": 8}, "gate.width = 8"),
    ({"min_area_fraction": 0.6}, "gate.min_area_fraction = 0.6, gate.scene_change_fraction = 0.5"),
    ({"max_gated_s": -1.0}, "gate.max_gated_s = -1.0"),
    ({"mask": (((0.0, 0.0), (1.0, 0.0)),)}, "expected at least 3 (x, y) vertices"),
    ({"mask": (((0.0, 0.0), (1.5, 0.0), (1.0, 1.0)),)}, "gate.mask vertex (1.5, 0.0)"),
])
def test_bad_settings_name_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MotionGate(**kwargs)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GateConfig(**kwargs)


def test_bad_frame_is_rejected_with_its_shape() -> None:
    with pytest.raises(ValueError, match=r"shape \(4, 4\) .* expected an HxWx3 uint8 BGR image"):
        MotionGate().decide(np.zeros((4, 4), np.uint8), 0.0)


def test_config_from_environment_and_flags(tmp_path) -> None:
    env = {"SPLITINFER_BUNDLE": str(tmp_path), "SPLITINFER_GATE_MODE": "on",
           "SPLITINFER_GATE_MASK": "0,0 0.5,0 0.5,0.5; 0.6,0.6 1,0.6 1,1"}
    cfg = load_config(env=env, flags={"gate.pixel_delta": "30"}).gate
    assert cfg.mode == "on" and cfg.pixel_delta == 30
    assert cfg.mask == (((0.0, 0.0), (0.5, 0.0), (0.5, 0.5)), ((0.6, 0.6), (1.0, 0.6), (1.0, 1.0)))
    toml = tmp_path / "edge.toml"
    toml.write_text(f'bundle = "{tmp_path}"\n[gate]\nmode = "off"\nmask = [[[0, 0], [1, 0], [1, 0.1]]]\n')
    assert load_config(toml, env={}).gate.mask == (((0.0, 0.0), (1.0, 0.0), (1.0, 0.1)),)
    with pytest.raises(ConfigError, match=r"gate.mask = 'a,b c': expected polygons"):
        load_config(env={**env, "SPLITINFER_GATE_MASK": "a,b c"})
    with pytest.raises(ConfigError, match=r"gate.mode = 'sometimes': expected one of \['auto', 'on', 'off'\]"):
        load_config(env={**env, "SPLITINFER_GATE_MODE": "sometimes"})


@pytest.mark.parametrize(("mode", "live", "gated"), [
    ("auto", True, True), ("auto", False, False), ("on", False, True), ("off", True, False)])
def test_default_per_source_kind(mode: str, live: bool, gated: bool) -> None:
    gate = configured_gate(GateConfig(mode=mode), live_source=live)
    assert gate.enabled is gated
    gate.set_enabled(not gated)  # splitctl gate on|off
    assert gate.enabled is not gated


def test_switchable_gate_runs_the_motion_gate_only_while_on_and_times_it() -> None:
    gate = configured_gate(GateConfig(mode="on"), live_source=False)
    still = np.full((120, 160, 3), 90, np.uint8)
    frames = [Frame(i, still, 1_000 + i, 10.0 + 0.1 * i, "test") for i in range(4)]
    assert gate.admit(frames[0]) and not gate.admit(frames[1])  # first frame, then a still one
    assert gate.mean_ms > 0
    gate.set_enabled(False)
    assert gate.admit(frames[2])  # off: every frame is computed
    gate.set_enabled(True)
    assert gate.admit(frames[3])  # on again: a fresh motion gate (its first frame)
    assert configured_gate(GateConfig(mode="off"), live_source=True, injected=AdmitAll()).enabled


def _job(frame_id: int) -> FrameJob:
    frame = Frame(frame_id, np.zeros((2, 2, 3), np.uint8), 1_000 + frame_id, 10.0 + frame_id, "test")
    return FrameJob(frame=frame, decision=Decision("output", Mode.AUTO, "r", Objective.LATENCY, 0),
                    head_start_s=10.0 + frame_id, local_outputs={"logits": np.full((1, 3), frame_id, np.float32)})


def test_gated_frame_waits_for_its_source_and_repeats_its_payload() -> None:
    sink = MemorySink()
    stage = ResultStage(lambda outputs: {"top_k": [{"index": int(outputs["logits"][0, 0]), "label": "x",
                                                   "score": 1.0}]}, [sink], clock=lambda: 20.0)
    assert [r.frame_id for r in stage.emit_all(_job(0))] == [0]
    early = GatedFrame(_job(2).frame, source_frame_id=1)  # frame 1's offload is still in flight
    assert stage.emit_all(early) == []
    assert [r.frame_id for r in stage.emit_all(_job(1))] == [1, 2]
    assert [r.frame_id for r in stage.emit_all(GatedFrame(_job(3).frame, 1))] == [3]
    by_id = {r.frame_id: r for r in sink.results}
    for gated in (by_id[2], by_id[3]):
        assert gated.path is Path.GATED and gated.source_frame_id == 1
        assert gated.payload == by_id[1].payload and gated.cut == by_id[1].cut
        line = json.loads(gated.to_line())
        check_result_line(line)
        assert line["path"] == "gated" and line["source_frame_id"] == 1
        assert line["stages"] == {"preprocess": "skipped", "head": "skipped", "tail": "skipped"}
    assert "source_frame_id" not in json.loads(by_id[1].to_line())


def test_a_gated_frame_whose_source_never_finished_still_gets_a_result_on_close() -> None:
    sink = MemorySink()
    stage = ResultStage(lambda outputs: {}, [sink], clock=lambda: 20.0)
    assert stage.emit_all(GatedFrame(_job(5).frame, source_frame_id=4)) == []
    stage.close()
    (orphan,) = sink.results
    assert orphan.frame_id == 5 and orphan.path is Path.GATED and "frame 4" in orphan.payload["error"]
