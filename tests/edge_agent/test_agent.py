"""The daemon end to end with real parts: real bundle sessions, the real sample video,
real ONNX Runtime tails behind the fake transport, and a real in-process cloud server."""
from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.errors import UnknownCutError
from edge_agent.results import FrameResult, MemorySink
from edge_agent.transport_fake import FakeTransport
from edge_agent.transport_grpc import GrpcTransport
from edge_agent.types import Mode, Objective, Path, Telemetry
from tests.edge_agent.conftest import agent_config
from tests.edge_agent.test_results import check_result_line
from tests.waiting import wait_for



def _assert_one_result_per_frame(agent: EdgeAgent, sink: MemorySink) -> None:
    ids = [r.frame_id for r in sink.results]
    assert len(ids) == len(set(ids)), "a frame got two results"
    assert len(ids) == agent.frames_captured - agent.frames_dropped
    assert agent.results == len(ids)
    for r in sink.results:
        check_result_line(json.loads(r.to_line()))


def test_split_offload_matches_local_model(tiny_bundle, tail_server) -> None:
    sink = MemorySink()
    cfg = agent_config(tiny_bundle, runtime__max_frames=12, policy__pinned_cut="conv1")
    agent = EdgeAgent(cfg, transport=FakeTransport(tail_server), sink=sink).start()
    assert agent.run_until_done(30)
    _assert_one_result_per_frame(agent, sink)
    assert agent.frames_captured == 12
    assert {r.path for r in sink.results} == {Path.SPLIT}
    assert {r.cut for r in sink.results} == {"conv1"}
    r = sink.results[0]
    assert r.stages == {"preprocess": "edge", "head": "edge", "tail": "cloud"}
    assert r.wire_bytes == 4 * 16 * 16 * 4
    # the split result equals the full model run locally on the same frame
    from edge_agent.sources import open_source

    frame = open_source(cfg.source).read()
    local, _ = agent.head.run_full(frame.image_bgr)
    first = next(x for x in sink.results if x.frame_id == 0)
    assert first.payload["top_k"][0]["index"] == int(np.argmax(local["logits"][0]))
    assert agent.decision.mode is Mode.PINNED


def test_output_cut_runs_fully_local_and_input_cut_sends_jpeg(tiny_bundle, tail_server) -> None:
    for cut, path, stages in (("output", Path.LOCAL, {"preprocess": "edge", "head": "edge", "tail": "skipped"}),
                              ("input", Path.CLOUD, {"preprocess": "cloud", "head": "cloud", "tail": "cloud"})):
        sink = MemorySink()
        fake = FakeTransport(tail_server)
        agent = EdgeAgent(agent_config(tiny_bundle, runtime__max_frames=5, policy__pinned_cut=cut),
                          transport=fake, sink=sink).start()
        assert agent.run_until_done(30)
        _assert_one_result_per_frame(agent, sink)
        assert {r.path for r in sink.results} == {path}
        assert sink.results[0].stages == stages
        if cut == "output":
            assert fake.bytes_sent == 0
        else:
            assert fake.bytes_sent > 1000


def test_server_killed_mid_stream_every_frame_gets_one_result(tiny_bundle) -> None:
    from cloud_server.server import create_server
    from cloud_server.settings import ServerSettings

    server = create_server(ServerSettings(host="127.0.0.1", port=0, bundles=(tiny_bundle.root,),
                                          metrics_port=None, discovery=False, max_queue_delay_us=0))
    transport = GrpcTransport(server.address)
    killed = threading.Event()

    class KillingSink(MemorySink):
        def write(self, result: FrameResult) -> None:
            super().write(result)
            if len(self.results) == 15 and not killed.is_set():
                killed.set()
                threading.Thread(target=server.stop, args=(0,), daemon=True).start()

    sink = KillingSink()
    cfg = agent_config(tiny_bundle, runtime__max_frames=60, policy__pinned_cut="conv2", source__fps_cap=100,
                       runtime__deadline_ms=300)
    agent = EdgeAgent(cfg, transport=transport, sink=sink).start()
    try:
        assert agent.run_until_done(60)
    finally:
        transport.close()
        server.stop(0)
    assert killed.is_set()
    _assert_one_result_per_frame(agent, sink)
    assert agent.frames_captured == 60 and len(sink.results) == 60
    paths = [r.path for r in sorted(sink.results, key=lambda r: r.frame_id)]
    assert paths[:10] == [Path.SPLIT] * 10  # the real server answered over the stream
    assert Path.FALLBACK in paths[15:]
    assert all(r.payload.get("top_k") for r in sink.results)  # fallbacks still classified
    fallbacks = [r for r in sink.results if r.path is Path.FALLBACK]
    assert all(r.fallback_reason for r in fallbacks)
    assert agent.breaker.opened_count >= 1  # stopped hammering the dead server
    assert sum(agent.offload_failures.values()) < len(fallbacks)


def test_breaker_opens_then_recovers_automatically(tiny_bundle, tail_server) -> None:
    fake = FakeTransport(tail_server)
    sink = MemorySink()
    cfg = agent_config(tiny_bundle, policy__pinned_cut="conv1", source__fps_cap=100, source__loop=True)
    agent = EdgeAgent(cfg, transport=fake, sink=sink).start()
    try:
        assert wait_for(lambda: agent.results_by_path["split"] >= 5)
        fake.down = True
        assert wait_for(lambda: agent.breaker.state.value == "open")
        assert wait_for(lambda: agent.decision.mode is Mode.LOCAL_FALLBACK)
        calls_when_open = fake.calls
        assert wait_for(lambda: agent.results_by_path["fallback"] >= 20)
        assert fake.calls - calls_when_open <= 3  # only health probes / half-open trials, not every frame
        fake.down = False
        assert wait_for(lambda: agent.decision.mode is Mode.PINNED and agent.breaker.state.value == "closed")
        before = agent.results_by_path["split"]
        assert wait_for(lambda: agent.results_by_path["split"] > before + 5)
    finally:
        assert agent.stop(20)
    _assert_one_result_per_frame(agent, sink)


def test_bandwidth_collapse_moves_to_local_or_smaller_cut(tiny_bundle, tail_server) -> None:
    kbps = {"value": None}

    def delay_s(request) -> float:
        return 0.0 if kbps["value"] is None else request.wire_bytes * 8 / kbps["value"] / 1000.0

    fake = FakeTransport(tail_server, delay_s=delay_s)
    sink = MemorySink()
    # the whole frame's JPEG: the tiny model's 16x16 input would make it smaller than every cut
    cfg = agent_config(tiny_bundle, source__fps_cap=100, source__loop=True, runtime__deadline_ms=2000,
                       policy__hysteresis_pct=5, server__jpeg_size="frame")
    agent = EdgeAgent(cfg, transport=fake, sink=sink)
    events = agent.subscribe()
    agent.start()
    wire = {p.cut_id: p.wire_bytes for p in agent.profiles}
    try:
        assert wait_for(lambda: agent.results >= 20)
        fast = agent.decision
        assert fast.cut_id != "output", fast.reason  # a fast link: offloading wins
        kbps["value"] = 150.0  # the uplink collapses
        assert wait_for(lambda: wire[agent.decision.cut_id] < wire[fast.cut_id], timeout_s=20), agent.decision.reason
        slow = agent.decision
        assert "kbps" in slow.reason
        est = agent.snapshot().telemetry
        assert est.uplink_kbps is None or est.uplink_kbps < 2000
    finally:
        assert agent.stop(30)
    events.close()
    _assert_one_result_per_frame(agent, sink)
    assert {r.cut for r in sink.results} >= {fast.cut_id, slow.cut_id}


def test_control_target_is_atomic_and_validated(tiny_bundle, tail_server) -> None:
    fake = FakeTransport(tail_server)
    sink = MemorySink()
    cfg = agent_config(tiny_bundle, source__fps_cap=200, source__loop=True)
    agent = EdgeAgent(cfg, transport=fake, sink=sink)
    events = agent.subscribe()
    agent.start()
    try:
        decision = agent.pin_split("conv2")
        assert decision.cut_id == "conv2" and decision.mode is Mode.PINNED
        assert agent.decision.cut_id == "conv2"
        assert "conv2" in agent.head.loaded_heads()
        n = agent.results
        assert wait_for(lambda: agent.results > n + 10)
        with pytest.raises(UnknownCutError, match="valid cuts: input, conv1, conv2, output"):
            agent.pin_split("conv9")
        assert agent.decision.cut_id == "conv2"
        agent.set_policy(Objective.SLO, 50.0)
        snap = agent.snapshot()
        assert snap.objective is Objective.SLO and snap.slo_ms == 50.0
        assert snap.frames_captured >= snap.results > 0
        ests = agent.cut_estimates()
        assert [e.cut_id for e in ests] == ["input", "conv1", "conv2", "output"]
        auto = agent.set_auto()
        assert auto.mode is Mode.AUTO
        seen = []
        for ev in events:
            seen.append(ev)
            if any(isinstance(e, Telemetry) for e in seen) and len(seen) > 3:
                break
        assert any(getattr(e, "cut_id", None) == "conv2" for e in seen)
    finally:
        events.close()
        assert agent.stop(20)
    # frames keep the cut they started with: every conv2 result carries conv2's activation size
    assert all(r.wire_bytes == 512 for r in sink.results if r.cut == "conv2" and r.path is Path.SPLIT)
    _assert_one_result_per_frame(agent, sink)


def test_metrics_endpoint(tiny_bundle, tail_server) -> None:
    sink = MemorySink()
    cfg = agent_config(tiny_bundle, runtime__max_frames=8, metrics__port=0, policy__pinned_cut="conv1",
                       source__fps_cap=20)
    agent = EdgeAgent(cfg, transport=FakeTransport(tail_server), sink=sink).start()
    assert wait_for(lambda: agent.results >= 4)
    body = urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=5).read().decode()
    assert agent.run_until_done(30)
    assert "splitinfer_edge_frames_captured_total" in body
    assert 'splitinfer_edge_results_total{path="split"}' in body
    assert 'splitinfer_edge_chosen_cut{cut="conv1"} 1.0' in body
    assert "splitinfer_edge_uplink_kbps" in body and "splitinfer_edge_battery_pct" in body


def test_live_source_drops_oldest_when_behind_and_counts(tiny_bundle, tail_server) -> None:
    import cv2

    from edge_agent.sources import CaptureSource
    from partitioner import samples

    cfg = agent_config(tiny_bundle, runtime__max_frames=80, policy__pinned_cut="conv1", runtime__max_in_flight=1,
                       runtime__queue_depth=1, source__uri="rtsp://camera.invalid/live")
    # a "stream" that is really the sample video, read as fast as OpenCV decodes it
    live = CaptureSource(cfg.source, open_capture=lambda _t: cv2.VideoCapture(str(samples.video_path("bikes.mp4"))))
    assert live.live
    slow = FakeTransport(tail_server, delay_s=lambda r: 0.02)  # the network stage is the bottleneck
    sink = MemorySink()
    agent = EdgeAgent(cfg, transport=slow, sink=sink, source=live).start()
    assert agent.run_until_done(60)
    assert agent.frames_captured == 80
    assert agent.frames_dropped > 10
    _assert_one_result_per_frame(agent, sink)  # results + dropped == captured, ids unique
    ids = sorted(r.frame_id for r in sink.results)
    assert ids[-1] == 79  # the newest frame is never the one dropped


def test_cli_runs_local_and_sigterm_drains(tiny_bundle, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from partitioner import samples

    toml = tmp_path / "edge.toml"
    results = tmp_path / "results.jsonl"
    toml.write_text(f"""
bundle = "{tiny_bundle.root}"
[server]
discovery = false
[source]
uri = "{samples.video_path('bikes.mp4')}"
width_px = 160
height_px = 120
fps_cap = 50
loop = true
[results]
sink = "file"
path = "{results}"
[control]
socket_path = "{tmp_path / 'ctl.sock'}"
advertise = false
[battery]
source = "none"
""")
    env = {**os.environ, "SPLITINFER_RUNTIME_THREADS": "1"}
    bad = subprocess.run([sys.executable, "-m", "splitinfer.cli", "edge", "--config", str(toml), "--threads", "0"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "runtime.threads = 0: expected an integer in 1..64" in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "splitinfer.cli", "edge", "--config", str(toml)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert wait_for(lambda: results.exists() and len(results.read_text().splitlines()) >= 10, timeout_s=30)
        assert (tmp_path / "ctl.sock").exists()  # the daemon serves splitctl
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    done = [x for x in err.splitlines() if "done:" in x][-1]
    captured = int(done.split("done: ")[1].split(" frames")[0])
    assert len(lines) == captured and len({x["frame_id"] for x in lines}) == captured
    assert {x["path"] for x in lines} == {"local"}  # no server, no discovery: fully local by choice
    for line in lines:
        check_result_line(line)
    assert not (tmp_path / "ctl.sock").exists()


def test_low_duty_probes_while_fully_local(tiny_bundle, tail_server) -> None:
    delay = {"s": 0.06}
    fake = FakeTransport(tail_server, delay_s=lambda r: delay["s"])
    sink = MemorySink()
    cfg = agent_config(tiny_bundle, policy__pinned_cut="output", policy__probe_interval_ms=100,
                       source__fps_cap=100, source__loop=True)
    agent = EdgeAgent(cfg, transport=fake, sink=sink)
    agent.policy.residuals.enabled = False  # the probes alone: these ~1 ms local frames beat any offload (issue 19)
    agent.start()

    def probes() -> list:
        return [r for r in tail_server.requests[mark:] if r.request_id.startswith("test-agent--1-")]  # frame id -1

    try:
        assert wait_for(lambda: agent.results >= 20)
        assert fake.calls == 0  # pinned local: nothing sent, not even probes
        mark = len(tail_server.requests)
        probing_since = time.monotonic()
        decision = agent.set_auto()  # the measured local head is fast: local wins, now by choice
        assert decision.cut_id == "output" and decision.mode is Mode.AUTO, decision.reason
        assert wait_for(lambda: len(probes()) >= 1)
        assert tail_server.requests[mark:] == probes() and probes()[0].model_name == "tiny_net.input"
        # a 60 ms link keeps the agent local; the probes' link time stays under the hard cap (10 %;
        # 2 % once the estimate settled), counting one probe (two 60 ms transfers) in flight
        frames_before = agent.results
        assert wait_for(lambda: agent.results >= frames_before + 100)
        elapsed_ms = (time.monotonic() - probing_since) * 1000.0
        assert len(probes()) * 60.0 <= agent.probes.young_duty_pct / 100 * elapsed_ms + 2 * 60.0
        assert agent.decision.cut_id == "output"
        assert agent.snapshot().telemetry.rtt_ms is not None  # the probes fed the estimate
        # the link recovers: the next probes see it and the agent offloads again by itself
        delay["s"] = 0.0
        assert wait_for(lambda: agent.decision.cut_id != "output", timeout_s=20), agent.decision.reason
        assert wait_for(lambda: agent.results_by_path["split"] + agent.results_by_path["cloud"] > 0)
    finally:
        assert agent.stop(20)
    _assert_one_result_per_frame(agent, sink)


def test_discovers_the_server_over_zeroconf_when_none_is_configured(tiny_bundle) -> None:
    from cloud_server.discovery import Advertisement, ServiceAdvertiser
    from cloud_server.server import create_server
    from cloud_server.settings import ServerSettings
    from protos.bundle import bundle_hash

    server = create_server(ServerSettings(host="127.0.0.1", port=0, bundles=(tiny_bundle.root,),
                                          metrics_port=None, discovery=False, max_queue_delay_us=0))
    key = f"tiny_net@{bundle_hash(tiny_bundle.manifest)}"  # what servers advertise: the bundle
    advertiser = ServiceAdvertiser(Advertisement(port=server.port, tls=False, bundles=(key,)),
                                   host="127.0.0.1", interfaces=["127.0.0.1"])
    advertiser.start()
    sink = MemorySink()
    try:
        cfg = agent_config(tiny_bundle, runtime__max_frames=10, policy__pinned_cut="conv1",
                           server__discovery_timeout_s=5.0)
        assert cfg.server.address is None and cfg.server.discovery
        agent = EdgeAgent(cfg, sink=sink).start()
        assert agent.run_until_done(30)
    finally:
        advertiser.close()
        server.stop(0)
    assert agent.server_address == f"127.0.0.1:{server.port}"
    assert {r.path for r in sink.results} == {Path.SPLIT}
    _assert_one_result_per_frame(agent, sink)


def test_a_frame_that_breaks_the_head_still_gets_one_result(tiny_bundle, tail_server) -> None:
    from edge_agent.sources import Frame
    from tests.edge_agent.conftest import first_video_frame as frame_bgr

    good = frame_bgr()
    bad = good.astype(np.uint16)  # not what preprocessing accepts: head and full model both fail

    class ListSource:
        live, name = False, "list"

        def __init__(self) -> None:
            self.images = [good, bad, good]

        def read(self):
            if not self.images:
                return None
            i = 3 - len(self.images)
            return Frame(i, self.images.pop(0), int(time.time() * 1000), time.monotonic(), self.name)

        def close(self) -> None:
            self.images = []

    sink = MemorySink()
    agent = EdgeAgent(agent_config(tiny_bundle, policy__pinned_cut="conv1"), transport=FakeTransport(tail_server),
                      sink=sink, source=ListSource()).start()
    assert agent.run_until_done(30)
    _assert_one_result_per_frame(agent, sink)
    by_id = {r.frame_id: r for r in sink.results}
    assert by_id[0].path is Path.SPLIT and by_id[2].path is Path.SPLIT
    assert by_id[1].path is Path.FALLBACK and "error" in by_id[1].payload
    assert "head stage error" in by_id[1].fallback_reason and "local completion failed" in by_id[1].fallback_reason


def test_bandwidth_collapse_through_the_link_emulator(tiny_bundle, tail_server) -> None:
    from edge_agent.link import EmulatedTransport, LinkEmulator, LinkState, LinkTrace

    # fast until t=1000 s on the emulation's clock, then a 150 kbps uplink; we jump the clock to collapse
    trace = LinkTrace([LinkState(0.0, None, 1.0), LinkState(1000.0, 150.0, 1.0)])
    offset = {"s": 0.0}
    link = EmulatedTransport(FakeTransport(tail_server), LinkEmulator(trace, burst_bytes=1024),
                             clock=lambda: time.monotonic() + offset["s"])
    sink = MemorySink()
    cfg = agent_config(tiny_bundle, source__fps_cap=100, source__loop=True, runtime__deadline_ms=3000,
                       policy__hysteresis_pct=5)
    agent = EdgeAgent(cfg, transport=link, sink=sink).start()
    wire = {p.cut_id: p.wire_bytes for p in agent.profiles}
    try:
        assert wait_for(lambda: agent.results >= 20)
        fast = agent.decision
        assert fast.cut_id != "output", fast.reason
        offset["s"] = 1000.0
        assert link.current_state().uplink_kbps == 150.0
        assert wait_for(lambda: wire[agent.decision.cut_id] < wire[fast.cut_id], timeout_s=20), agent.decision.reason
    finally:
        assert agent.stop(30)
    _assert_one_result_per_frame(agent, sink)


def test_offloads_to_the_repository_export_triton_writes(tiny_bundle, tmp_path) -> None:
    """The agent against a real server holding only `export-triton`'s repository (version 1, the bundle
    hash in config.pbtxt): every pinned frame is offloaded and answered by the cloud."""
    from cloud_server.server import create_server
    from cloud_server.settings import ServerSettings
    from partitioner.triton_export import export_triton

    repo = tmp_path / "repo"
    export_triton(tiny_bundle.root, repo)
    assert (repo / "tiny_net.conv1" / "1" / "model.onnx").is_file()
    server = create_server(ServerSettings(host="127.0.0.1", port=0, triton_repository=repo,
                                          metrics_port=None, discovery=False, max_queue_delay_us=0))
    transport = GrpcTransport(server.address)
    sink = MemorySink()
    cfg = agent_config(tiny_bundle, runtime__max_frames=12, policy__pinned_cut="conv1")
    agent = EdgeAgent(cfg, transport=transport, sink=sink).start()
    try:
        assert agent.run_until_done(30)
    finally:
        transport.close()
        server.stop(0)
    _assert_one_result_per_frame(agent, sink)
    assert [r.path for r in sink.results] == [Path.SPLIT] * 12
    assert sum(agent.offload_failures.values()) == 0


def test_server_without_our_bundle_version_is_not_hammered(tiny_bundle, tmp_path) -> None:
    from cloud_server.server import create_server
    from cloud_server.settings import ServerSettings
    from protos.bundle import bundle_hash
    from tests.edge_agent.edge_bundle import LABELS, write_tiny_bundle

    other = write_tiny_bundle(tmp_path / "other", labels=[x.upper() for x in LABELS])  # same model, new version
    server = create_server(ServerSettings(host="127.0.0.1", port=0, bundles=(other.root,),
                                          metrics_port=None, discovery=False, max_queue_delay_us=0))
    transport = GrpcTransport(server.address)
    sink = MemorySink()
    cfg = agent_config(tiny_bundle, policy__pinned_cut="conv1", source__fps_cap=100, source__loop=True)
    agent = EdgeAgent(cfg, transport=transport, sink=sink).start()
    try:
        assert wait_for(lambda: agent.results >= 250, timeout_s=20)  # ~2.5 s: several probe periods
    finally:
        assert agent.stop(20)
        transport.close()
        server.stop(0)
    assert agent.breaker.state.value != "closed"
    # the stream's errors carry no status, so the usual threshold opens the breaker; then the health
    # probe asks ModelReady for our tail (not just ServerReady) and keeps it open: no open/close cycling
    assert sum(agent.offload_failures.values()) <= cfg.runtime.breaker_failures + 1
    assert {r.path for r in sink.results} == {Path.FALLBACK}
    first = min(sink.results, key=lambda r: r.frame_id)
    # same model name and integer version, another bundle: the ModelConfig hash check says so
    assert first.fallback_reason.startswith("MODEL_NOT_SERVED: ")
    assert repr(bundle_hash(other.manifest)) in first.fallback_reason
    assert repr(bundle_hash(tiny_bundle.manifest)) in first.fallback_reason
    assert agent.offload_failures["MODEL_NOT_SERVED"] >= 1
    _assert_one_result_per_frame(agent, sink)


def test_battery_trace_low_and_discharging_switches_to_energy(tiny_bundle, tail_server, tmp_path) -> None:
    trace = tmp_path / "battery.csv"
    trace.write_text("time_s,battery_pct,charging\n0,90,0\n0.5,15,0\n")  # drains below 20 % within 0.5 s
    fake = FakeTransport(tail_server)
    cfg = agent_config(tiny_bundle, battery__source="trace", battery__trace_file=str(trace), metrics__port=0,
                       source__fps_cap=100, source__loop=True)
    agent = EdgeAgent(cfg, transport=fake, sink=MemorySink()).start()
    try:
        assert agent.decision.objective is Objective.LATENCY
        assert wait_for(lambda: agent.decision.objective is Objective.ENERGY, timeout_s=10), agent.decision.reason
        assert "battery" in agent.decision.reason
        snap = agent.snapshot()
        assert snap.telemetry.battery_pct is not None and snap.telemetry.battery_pct < 20
        assert snap.telemetry.charging is False
        body = urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=5).read().decode()
        battery = [line for line in body.splitlines() if line.startswith("splitinfer_edge_battery_pct ")]
        assert battery and float(battery[0].split()[1]) < 20
    finally:
        assert agent.stop(20)
