"""`splitinfer demo` runs headless on a small bundle with a short frame limit, and its summary adds up."""
from __future__ import annotations

import io
import json

import pytest

from splitinfer import demo
from edge_agent.link import LinkState
from tests.edge_agent.demo_bundle import build_demo_bundle

pytestmark = pytest.mark.slow

FRAMES = 24
PHASES = ["fast", "slow", "medium", "outage", "fast again"]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return build_demo_bundle(tmp_path_factory.mktemp("demo") / "bundle").root


def test_story_trace_is_fast_slow_medium_outage_fast():
    trace, phases = demo.story_trace(100.0)
    assert phases == PHASES
    assert [s.time_s for s in trace.states] == [0.0, 20.0, 40.0, 62.0, 78.0]
    assert [s.up for s in trace.states] == [True, True, True, False, True]
    fast, slow, medium = (trace.states[i].uplink_kbps for i in range(3))
    assert slow < medium < fast / 10 and trace.states[4].uplink_kbps == fast


def test_demo_headless_summary_adds_up(bundle_dir, tmp_path):
    summary_path = tmp_path / "summary.json"
    socket_path = tmp_path / "demo.sock"
    out = io.StringIO()
    code = demo.main(
        ["--bundle", str(bundle_dir), "--frames", str(FRAMES), "--fps", "12", "--headless",
         "--socket", str(socket_path), "--summary-json", str(summary_path)],
        out=out,
    )
    text = out.getvalue()
    assert code == 0, text
    assert "\x1b[" not in text  # headless: no redraw
    assert f"splitctl watch --socket {socket_path}" in text
    assert "=== summary ===" in text and "top-1 agreement with the full FP32 model" in text
    assert not socket_path.exists()  # the control socket is cleaned up

    s = json.loads(summary_path.read_text())
    assert s["frames"] == s["results"] == FRAMES and s["frames_equal_results"]
    assert sum(s["paths"].values()) == FRAMES
    assert set(s["paths"]) <= {"split", "cloud", "local", "fallback"}
    assert sum(run["frames"] for run in s["cuts_over_time"]) == FRAMES
    assert sum(p["frames"] for p in s["phases"]) == FRAMES
    assert [p["phase"] for p in s["phases"]] == PHASES
    # a phase counts as a mid-graph split when a cut other than input/output ran most of its frames
    for m in s["mid_graph_phases"]:
        phase = next(p for p in s["phases"] if p["phase"] == m["phase"])
        assert m["cut"] not in ("input", "output") and 2 * m["frames"] > phase["frames"] == m["of"]
        assert m["frames"] == sum(phase["split_cuts"].values()) <= phase["paths"]["split"]
    assert "mid-graph split chosen in: " in text
    assert set(s["mean_latency_ms_by_path"]) == set(s["paths"])
    assert all(set(p["mean_latency_ms_by_path"]) == set(p["paths"]) for p in s["phases"])
    assert s["agreement"]["frames"] == FRAMES and 0.0 <= s["agreement"]["top1_agreement"] <= 1.0
    assert s["agent_errors"] == []
    # one table row per frame, in the headless output
    rows = [line for line in text.splitlines() if line[:5].strip().isdigit()]
    assert len(rows) == FRAMES


def test_demo_follows_a_trace_file_with_an_outage(bundle_dir, tmp_path):
    trace = tmp_path / "down.csv"
    trace.write_text("time_s,uplink_kbps,delay_ms,up\n0,,0,0\n")  # the link is down the whole run
    summary_path = tmp_path / "summary.json"
    out = io.StringIO()
    code = demo.main(
        ["--bundle", str(bundle_dir), "--frames", "8", "--fps", "20", "--headless", "--trace", str(trace),
         "--socket", str(tmp_path / "d.sock"), "--summary-json", str(summary_path)],
        out=out,
    )
    assert code == 0, out.getvalue()
    s = json.loads(summary_path.read_text())
    assert s["results"] == 8
    assert set(s["paths"]) <= {"local", "fallback"}  # nothing can have run in the cloud
    assert s["agreement"]["agree"] == 8  # on-device results are the full fp32 model itself


def test_bad_arguments_exit_2(bundle_dir):
    assert demo.main(["--bundle", str(bundle_dir), "--frames", "0"], out=io.StringIO()) == 2
    assert LinkState(up=False).describe() == "down"
