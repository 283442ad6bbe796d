"""Early exits on the edge (issue 16 parts 3-4): the bundle's exit head runs after the head,
confident frames complete on the device (path "exited"), every frame still gets exactly one
result with the gate and exits on (also while the server is killed), the policy's cost
model uses the measured rates, and splitctl turns the gate and the threshold at run time."""
from __future__ import annotations

import io
import json
import shutil
import time
import urllib.request

import numpy as np
import onnxruntime as ort
import pytest

from edge_agent import ctl
from edge_agent.agent import EdgeAgent
from edge_agent.control import start_control_server
from edge_agent.errors import ConfigError
from edge_agent.exits import EarlyExits
from edge_agent.policy import PolicyConfig, SplitPolicy
from edge_agent.power import PI4_DEFAULT
from edge_agent.rates import FrameRates, apply_rates, observed_rates
from edge_agent.results import MemorySink
from edge_agent.transport_fake import FakeTransport
from edge_agent.types import CutEstimate, CutProfile, Objective, Path, Telemetry
from partitioner import samples
from partitioner.exit_stage import ExitOptions, add_exits
from protos.bundle import Bundle
from protos.exits import exits_of
from protos.preprocess import preprocess_bgr
from tests.edge_agent.conftest import agent_config
from tests.edge_agent.test_agent_gate import IdleThenMovingSource, _check_exactly_one_result


@pytest.fixture(scope="module")
def exit_bundle(tiny_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The tiny bundle with a classifier exit at conv1, distilled on bikes.mp4, calibrated on carphone."""
    root = tmp_path_factory.mktemp("exits") / "tiny"
    shutil.copytree(tiny_bundle.root, root)
    options = ExitOptions(train_sources=(str(samples.video_path("bikes.mp4")),),
                          heldout_sources=(str(samples.video_path("carphone_pristine.mp4")),),
                          train_frames=100, heldout_frames=80, target=0.95, max_epochs=30, seed=0)
    return add_exits(root, ["conv1"], options)


def _exit_confidences(bundle: Bundle, images: list[np.ndarray]) -> list[float]:
    """Each frame's exit confidence at conv1, computed outside the agent."""
    head = ort.InferenceSession(str(bundle.path(bundle.cut("conv1").head)), providers=["CPUExecutionProvider"])
    spec = exits_of(bundle)["conv1"]
    exit_head = ort.InferenceSession(spec.model_path, providers=["CPUExecutionProvider"])
    found = []
    for img in images:
        act = head.run(None, {"input": preprocess_bgr(img, bundle.manifest.input)})[0]
        logits = exit_head.run(None, {"conv1_out": act})[0].astype(np.float64).ravel()
        p = np.exp(logits - logits.max())
        found.append(float((p / p.sum()).max()))
    return found


def test_exit_check_finishes_confident_frames_with_the_exit_outputs(exit_bundle: Bundle) -> None:
    exits = EarlyExits.from_bundle(exit_bundle)
    assert exits.cuts == ["conv1"]
    spec = exits_of(exit_bundle)["conv1"]
    assert exits.counts()[0].threshold == spec.threshold
    with pytest.raises(ConfigError, match=r"exit threshold 1.5; expected a number in \(0, 1\]"):
        exits.set_threshold(1.5)
    with pytest.raises(ConfigError, match=r"cut 'conv2' has no early exit; cuts with exits: \['conv1'\]"):
        exits.set_threshold(0.5, "conv2")
    assert exits.set_threshold(0.5, "conv1") == {"conv1": 0.5}


def test_gate_and_exits_on_one_result_per_frame_even_with_the_server_killed(exit_bundle, tail_server) -> None:
    transport = FakeTransport(tail_server)

    def kill_server(i: int) -> None:
        if i == 24:
            transport.down = True

    source = IdleThenMovingSource(idle=8, moving=20, on_frame=kill_server)
    confidence = _exit_confidences(exit_bundle, source.images)
    threshold = float(np.median(confidence[8:28]))  # about half the moving frames exit
    predicted = {i for i, c in enumerate(confidence) if c >= threshold}
    sink = MemorySink()
    cfg = agent_config(exit_bundle, policy__pinned_cut="conv1", gate__mode="on", runtime__deadline_ms=500,
                       exits__threshold=threshold, metrics__port=0)
    agent = EdgeAgent(cfg, transport=transport, sink=sink, source=source).start()
    end = time.monotonic() + 60
    while agent.results < len(source.images) and time.monotonic() < end:
        time.sleep(0.01)
    body = urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=5).read().decode()
    agent.tick()  # one more control step: rates and gauges from the final counts
    body = urllib.request.urlopen(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=5).read().decode()
    assert agent.run_until_done(60)
    by_id = _check_exactly_one_result(agent, sink, len(source.images))
    exited = {r.frame_id for r in sink.results if r.path is Path.EXITED}
    assert exited and exited <= predicted  # only confident frames exit ...
    computed_at_conv1 = {r.frame_id for r in sink.results if r.path in (Path.SPLIT, Path.EXITED)}
    assert predicted & computed_at_conv1 == exited  # ... and every confident frame that reached the exit did
    for i in exited:
        r = by_id[i]
        assert r.stages == {"preprocess": "edge", "head": "edge", "tail": "skipped"} and r.wire_bytes == 0
        assert r.cut == "conv1" and r.payload["top_k"]
    assert Path.FALLBACK in {r.path for r in sink.results}  # the server went down midway
    assert all(by_id[i].path is not Path.GATED for i in source.moving_ids)
    status = agent.gate_exit_status()
    (count,) = status.exits
    fallback = sum(r.path is Path.FALLBACK for r in sink.results)  # some were checked, then failed to offload
    assert count.exited == len(exited) and count.threshold == threshold
    assert len(computed_at_conv1) <= count.checked <= len(computed_at_conv1) + fallback
    assert f'splitinfer_edge_results_total{{path="exited"}} {float(len(exited))}' in body
    assert f'splitinfer_edge_exit_threshold{{cut="conv1"}} {threshold}' in body
    assert agent.policy.rates.exit_rates["conv1"] == pytest.approx(count.exited / count.checked)  # >= 20 checked


def test_splitctl_turns_the_gate_and_the_exit_threshold_at_run_time(exit_bundle, tail_server, tmp_path) -> None:
    source = IdleThenMovingSource(idle=200, moving=0)
    cfg = agent_config(exit_bundle, policy__pinned_cut="conv1", gate__mode="on")
    agent = EdgeAgent(cfg, transport=FakeTransport(tail_server, delay_s=lambda r: 0.01), sink=MemorySink(),
                      source=source).start()
    sock = str(tmp_path / "ctl.sock")
    server = start_control_server(agent, socket_path=sock, tcp_address=None, token=None, profiles=agent.profiles)

    def splitctl(*argv: str) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        code = ctl.main([*argv, "--socket", sock], out=out, err=err)
        return code, out.getvalue() + err.getvalue()

    try:
        code, text = splitctl("gate", "off")
        assert code == 0 and text.strip() == "motion gate off" and not agent.gate.enabled
        code, text = splitctl("exit-threshold", "0.99", "--cut", "conv1")
        assert code == 0 and text.strip() == "conv1: threshold 0.990"
        assert agent.gate_exit_status().exits[0].threshold == 0.99
        code, text = splitctl("exit-threshold", "1.5")
        assert code == ctl.EXIT_USAGE and "exit threshold 1.5; expected a number in (0, 1]" in text
        code, text = splitctl("exit-threshold", "0.9", "--cut", "conv2")
        assert code == ctl.EXIT_USAGE and "cut 'conv2' has no early exit" in text
        code, text = splitctl("status")
        assert code == 0 and "gate off" in text
        exits_line = next(line for line in text.splitlines() if line.startswith("exits "))
        assert "conv1: " in exits_line and "threshold 0.990" in exits_line
        code, text = splitctl("gate", "on", "--json")
        assert code == 0 and json.loads(text) == {"enabled": True} and agent.gate.enabled
    finally:
        server.stop()
        agent.stop()


# --------------------------------------------------------------------------- the cost model


def _est(cut: str, head: float, wire: float, server: float, rtt: float) -> CutEstimate:
    return CutEstimate(cut, head, wire, server, head + wire + rtt + server,
                       PI4_DEFAULT.energy_mj(head, 1000, 1000.0, rtt + server))


@pytest.mark.parametrize("rate, exit_ms, want_latency", [
    (0.0, 1.0, 10 + 1 + (8 + 20 + 5)),        # nobody exits: the exit only adds its time
    (0.5, 1.0, 10 + 1 + 0.5 * (8 + 20 + 5)),  # half the frames skip the network
    (1.0, 2.0, 10 + 2),                       # every frame exits
])
def test_exit_rate_in_expected_latency_and_energy(rate: float, exit_ms: float, want_latency: float) -> None:
    est = _est("mid", 10.0, 8.0, 5.0, 20.0)
    (got,) = apply_rates([est], FrameRates({"mid": rate}, {"mid": exit_ms}), PI4_DEFAULT, wire_bytes={"mid": 1000},
                         uplink_kbps=1000.0)
    assert got.latency_ms == pytest.approx(want_latency)
    local = PI4_DEFAULT.energy_mj(10 + exit_ms, 0, 1000.0, 0.0)
    offload = PI4_DEFAULT.energy_mj(10 + exit_ms, 1000, 1000.0, 25.0)
    assert got.energy_mj == pytest.approx(rate * local + (1 - rate) * offload)


def test_gate_rate_scales_energy_per_frame_not_latency() -> None:
    est = _est("mid", 10.0, 8.0, 5.0, 20.0)
    (got,) = apply_rates([est], FrameRates(gate_rate=0.75, gate_ms=0.4), PI4_DEFAULT, wire_bytes={}, uplink_kbps=1e3)
    gate_mj = PI4_DEFAULT.energy_mj(0.4, 0, 1000.0, 0.0)
    assert got.latency_ms == est.latency_ms
    assert got.energy_mj == pytest.approx(0.75 * gate_mj + 0.25 * (est.energy_mj + gate_mj))
    with pytest.raises(ValueError, match="gate_rate = 1.5"):
        FrameRates(gate_rate=1.5)
    with pytest.raises(ValueError, match="exit rate of 'mid' = 2"):
        FrameRates({"mid": 2})


def test_measured_rates_replace_the_held_out_prior_after_enough_frames() -> None:
    class Count:
        def __init__(self, checked: int, exited: int) -> None:
            self.cut_id, self.checked, self.exited, self.exit_ms = "mid", checked, exited, 0.3

    assert observed_rates([Count(5, 5)], prior_rates={"mid": 0.2}, gated=0, captured=0, gate_ms=0).exit_rates == \
        {"mid": 0.2}
    rates = observed_rates([Count(40, 30)], prior_rates={"mid": 0.2}, gated=30, captured=40, gate_ms=0.35)
    assert rates.exit_rates == {"mid": 0.75} and rates.gate_rate == 0.75 and rates.exit_ms == {"mid": 0.3}


def test_a_high_exit_rate_makes_the_policy_choose_the_cut_with_the_exit() -> None:
    cuts = [CutProfile("input", 0, 30_000, 0.0, 20.0), CutProfile("mid", 1, 20_000, 40.0, 10.0),
            CutProfile("output", 2, 0, 200.0, 0.0)]
    policy = SplitPolicy(cuts, PolicyConfig(objective=Objective.ENERGY))
    policy.observe(Telemetry(at_ms=0, uplink_kbps=2000.0, rtt_ms=20.0), 0)
    before = policy.decide(0)
    assert before.cut_id == "input"  # sending the JPEG is cheapest without an exit
    policy.rates = FrameRates({"mid": 0.9}, {"mid": 0.5})
    after = policy.decide(10_000)
    assert after.cut_id == "mid", after.reason  # 90 % of frames end on the device after a 40 ms head
