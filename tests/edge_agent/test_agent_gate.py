"""The daemon with the motion gate on: real bundle sessions, real video frames, real tails
behind the fake transport; every frame still gets exactly one result, also while the
server is down."""
from __future__ import annotations

import json
from dataclasses import replace
import time
import urllib.request

import cv2
import numpy as np

from edge_agent.agent import EdgeAgent
from edge_agent.control import snapshot_to_pb
from edge_agent.ctl import render_status
from edge_agent.results import MemorySink
from edge_agent.transport_fake import FakeTransport
from edge_agent.types import Path
from partitioner import samples
from tests.edge_agent.conftest import FRAME_H, FRAME_W, ReplaySource, agent_config
from tests.edge_agent.test_results import check_result_line


class IdleThenMovingSource(ReplaySource):
    """A fixed camera: the first bikes.mp4 frame held with sensor noise (``idle`` frames),
    then ``moving`` real consecutive frames of the video, then idle again."""

    name = "idle-bikes"
    def __init__(self, idle: int, moving: int, on_frame=None) -> None:
        super().__init__(on_frame)
        cap = cv2.VideoCapture(str(samples.video_path("bikes.mp4")))
        real = []
        for _ in range(moving + 1):
            ok, img = cap.read()
            assert ok
            real.append(cv2.resize(img, (FRAME_W, FRAME_H), interpolation=cv2.INTER_AREA))
        cap.release()
        rng = np.random.default_rng(11)
        still = [np.clip(real[0] + rng.normal(0, 3, real[0].shape), 0, 255).astype(np.uint8) for _ in range(idle)]
        self.images = still + real[1:] + still
        self.moving_ids = set(range(idle, idle + moving))


def _check_exactly_one_result(agent: EdgeAgent, sink: MemorySink, n_frames: int) -> dict:
    by_id = {r.frame_id: r for r in sink.results}
    assert len(sink.results) == len(by_id) == n_frames == agent.frames_captured == agent.results
    for r in sink.results:
        check_result_line(json.loads(r.to_line()))
    gated = [r for r in sink.results if r.path is Path.GATED]
    assert agent.frames_gated == len(gated) == agent.results_by_path["gated"]
    for r in gated:  # a gated result says so and repeats an earlier computed frame's result
        source = by_id[r.source_frame_id]
        assert source.path is not Path.GATED and source.frame_id < r.frame_id
        assert r.payload == source.payload and r.cut == source.cut
        assert r.stages == {"preprocess": "skipped", "head": "skipped", "tail": "skipped"}
    return by_id


def test_gate_on_every_frame_gets_one_result_and_moving_frames_are_computed(tiny_bundle, tail_server) -> None:
    source = IdleThenMovingSource(idle=15, moving=10)
    sink = MemorySink()
    slow = FakeTransport(tail_server, delay_s=lambda r: 0.03)  # gated frames overtake in-flight offloads
    cfg = agent_config(tiny_bundle, policy__pinned_cut="conv1", gate__mode="on", runtime__max_in_flight=3,
                       metrics__port=0)
    agent = EdgeAgent(cfg, transport=slow, sink=sink, source=source).start()
    assert agent.gate.enabled
    end = time.monotonic() + 60
    while agent.results < len(source.images) and time.monotonic() < end:
        time.sleep(0.01)
    body = urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=5).read().decode()
    assert agent.run_until_done(60)
    by_id = _check_exactly_one_result(agent, sink, len(source.images))
    assert by_id[0].path is Path.SPLIT
    assert all(by_id[i].path is Path.GATED for i in range(1, 15))  # noise only: gated, carrying frame 0
    assert {by_id[i].source_frame_id for i in range(1, 15)} == {0}
    assert all(by_id[i].path is Path.SPLIT for i in source.moving_ids)  # no frame with motion is gated
    snap = agent.snapshot()
    assert snap.frames_gated == agent.frames_gated >= 14
    assert f"splitinfer_edge_frames_gated_total {float(agent.frames_gated)}" in body
    assert f'splitinfer_edge_results_total{{path="gated"}} {float(agent.frames_gated)}' in body
    # splitctl status shows the gate rate from what the control endpoint sends
    status = render_status(snapshot_to_pb(replace(snap, gate_exits=agent.gate_exit_status()), lambda ms: ms))
    pct = 100.0 * agent.frames_gated / agent.results
    gate_line = next(line for line in status.splitlines() if line.startswith("gate "))
    assert gate_line.startswith(f"gate       {agent.frames_gated} gated of {agent.results} results ({pct:.1f}%)")
    assert "gate on, " in gate_line and " ms per frame" in gate_line
    assert "splitinfer_edge_gate_enabled 1.0" in body


def test_gate_with_the_server_killed_midway_still_one_result_per_frame(tiny_bundle, tail_server) -> None:
    transport = FakeTransport(tail_server)

    def kill_server(i: int) -> None:
        if i == 18:
            transport.down = True

    source = IdleThenMovingSource(idle=10, moving=12, on_frame=kill_server)
    sink = MemorySink()
    cfg = agent_config(tiny_bundle, policy__pinned_cut="conv1", gate__mode="on", runtime__deadline_ms=500)
    agent = EdgeAgent(cfg, transport=transport, sink=sink, source=source).start()
    assert agent.run_until_done(60)
    by_id = _check_exactly_one_result(agent, sink, len(source.images))
    paths = {r.path for r in sink.results}
    assert Path.FALLBACK in paths and Path.GATED in paths and Path.SPLIT in paths
    late_gated = [r for r in sink.results if r.path is Path.GATED and r.frame_id > 22]  # idle again, server down
    assert late_gated and all(by_id[r.source_frame_id].path is Path.FALLBACK for r in late_gated)


def test_gate_auto_is_off_for_a_video_file(tiny_bundle, tail_server) -> None:
    sink = MemorySink()
    agent = EdgeAgent(agent_config(tiny_bundle, runtime__max_frames=6, policy__pinned_cut="conv1"),
                      transport=FakeTransport(tail_server), sink=sink).start()
    assert agent.run_until_done(30)
    assert not agent.gate.enabled and agent.frames_gated == 0 and len(sink.results) == 6
