"""The live view in a real headless browser (Debian's chromium driven by Playwright) over a
real running agent: the tiny real bundle, ONNX Runtime heads and tails, a still frame of
the shipped street video as the camera.

``playwright install`` is never run: the browser is /usr/bin/chromium (``make system-deps``).
"""
from __future__ import annotations

import json
import pathlib
import shutil
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.errors import ConfigError
from edge_agent.liveview import LiveView
from edge_agent.liveview.overlay import draw_overlay, overlay_lines
from edge_agent.liveview.timeline import Timeline
from edge_agent.results import MemorySink
from edge_agent.transport_fake import FakeTransport
from edge_agent.types import Mode, Objective
from partitioner import samples
from tests.edge_agent.conftest import agent_config
from tests.waiting import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
W, H = 320, 240


def _still_camera(folder: pathlib.Path) -> pathlib.Path:
    """A folder holding one real video frame; looped, it is a camera whose picture never changes."""
    cap = cv2.VideoCapture(str(samples.video_path("bikes.mp4")))
    for _ in range(30):
        ok, img = cap.read()
        assert ok
    cap.release()
    folder.mkdir()
    cv2.imwrite(str(folder / "frame.png"), cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA))
    return folder


def _start(tiny_bundle, tail_server, tmp_path, **values) -> tuple[EdgeAgent, LiveView]:
    cfg = agent_config(tiny_bundle, source__uri=str(_still_camera(tmp_path / "cam")), source__loop=True,
                       source__fps_cap=10.0, source__width_px=W, source__height_px=H, liveview__enabled=True,
                       liveview__port=0, liveview__fps=10.0, **values)
    agent = EdgeAgent(cfg, transport=FakeTransport(tail_server), sink=MemorySink()).start()
    view = next(s for s in agent.sinks if isinstance(s, LiveView))
    return agent, view



def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --------------------------------------------------------------------------- pure parts


def test_overlay_lines_and_boxes_are_drawn_on_a_copy() -> None:
    img = np.full((120, 160, 3), 127, np.uint8)
    payload = {"top_k": [{"index": 2, "label": "bike", "score": 0.8}, {"index": 0, "label": "cat", "score": 0.1}]}
    assert overlay_lines(payload, "conv1", "split", 12.4) == ["cut conv1 | split | 12 ms", "bike  0.80", "cat  0.10"]
    drawn = draw_overlay(img, payload, cut="conv1", path="split")
    assert (img == 127).all(), "the agent's frame must not be drawn on"
    assert (drawn[:20, :40] != 127).any() and (drawn[100:, 120:] == 127).all()
    boxes = draw_overlay(img, {"detections": [{"box_xyxy": [0.5, 0.5, 0.9, 0.9], "score": 0.9, "index": 0,
                                                "label": "person"}]}, cut="output", path="local")
    assert (boxes[60, 80:144] != 127).any() and (boxes[100, 20] == 127).all()  # the box edge, not elsewhere


def test_timeline_rates_per_interval() -> None:
    tl = Timeline(3)
    assert tl.tick(0.0, cut="input", cut_order=0, gated=0, captured=0) is None
    tl.add_result(latency_ms=10.0, wire_bytes=1000, path="split", cut="conv1")
    tl.add_result(latency_ms=30.0, wire_bytes=0, path="local", cut="conv1")  # an early exit
    p = tl.tick(2.0, cut="conv1", cut_order=1, gated=1, captured=4)
    assert p is not None and p.results_per_s == 1.0 and p.latency_ms == 20.0
    assert p.uplink_kbps == 4.0 and p.gate_pct == 25.0 and p.exit_pct == 50.0
    empty = tl.tick(3.0, cut="conv1", cut_order=1, gated=1, captured=4)
    assert empty is not None and empty.latency_ms is None and empty.results_per_s == 0.0
    with pytest.raises(ValueError, match="max_points 0"):
        Timeline(0)


def test_bound_beyond_localhost_needs_the_token(tiny_bundle, tail_server, tmp_path) -> None:
    with pytest.raises(ConfigError, match="control.token"):
        agent_config(tiny_bundle, liveview__enabled=True, liveview__host="0.0.0.0")
    agent, view = _start(tiny_bundle, tail_server, tmp_path, liveview__host="0.0.0.0", control__token="t0ken-123")
    try:
        assert wait_for(lambda: agent.results > 0, timeout_s=15.0)
        base = f"http://127.0.0.1:{view.port}/"
        assert _get(base + "api/status")[0] == 401
        assert _get(base + "api/status", {"Authorization": "Bearer wrong"})[0] == 401
        status, body = _get(base + "api/status", {"Authorization": "Bearer t0ken-123"})
        assert status == 200 and json.loads(body)["decision"]["cut"] in json.loads(body)["cuts"]
        assert _get(base + "frame.jpg?token=t0ken-123")[0] == 200
        # POSTs: JSON only (a foreign page cannot send it without a preflight), bad values named
        post = urllib.request.Request(base + "api/pin", data=b'{"cut": "conv9"}', method="POST",
                                      headers={"Authorization": "Bearer t0ken-123", "Content-Type": "text/plain"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(post, timeout=10)
        assert info.value.code == 415
        post.add_header("Content-Type", "application/json")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(post, timeout=10)
        assert info.value.code == 404 and "conv9" in json.loads(info.value.read())["error"]
    finally:
        agent.stop()


def test_a_port_in_use_is_a_clear_error(tiny_bundle, tail_server, tmp_path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = agent_config(tiny_bundle, liveview__enabled=True, liveview__port=port)
        agent = EdgeAgent(cfg, transport=FakeTransport(tail_server), sink=MemorySink())
        try:
            with pytest.raises(ConfigError, match=f"liveview.port = {port}: cannot listen on 127.0.0.1:{port}"):
                agent.start()
        finally:
            agent.stop(timeout_s=0.5)  # its stage threads never started


# --------------------------------------------------------------------------- in the browser


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install 'splitinfer[dev]' (playwright)")
    if not pathlib.Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("chromium is not installed: run `make system-deps` (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _decode_png(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img.astype(np.int16)


@pytest.mark.slow
def test_browser_shows_the_overlay_and_the_buttons_drive_the_agent(tiny_bundle, tail_server, tmp_path,
                                                                   browser) -> None:
    agent, view = _start(tiny_bundle, tail_server, tmp_path)
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    try:
        page.goto(view.url)
        page.wait_for_function("document.getElementById('cut').textContent !== '?'", timeout=15000)
        page.wait_for_function("document.getElementById('feed').naturalWidth > 0", timeout=15000)
        assert page.eval_on_selector("#feed", "e => [e.naturalWidth, e.naturalHeight]") == [W, H]

        # the overlay: pixels differ from the raw frame where the band is drawn, and only there
        status, raw_jpeg = _get(view.url + "frame.jpg?overlay=0")
        assert status == 200
        raw = _decode_png(raw_jpeg)
        shown = _decode_png(page.locator("#feed").screenshot())
        assert shown.shape == raw.shape
        band = np.abs(shown[:40, :100] - raw[:40, :100]).mean()
        rest = np.abs(shown[H // 2:, W // 2:] - raw[H // 2:, W // 2:]).mean()
        assert band > 25.0 and rest < 6.0, (band, rest)

        # a click pins a cut: the agent's decision changes (to a cut the policy is not on by itself)
        target = "conv1" if agent.decision.cut_id == "conv2" else "conv2"
        page.click(f"#cuts button[data-cut='{target}']")
        assert wait_for(lambda: agent.decision.cut_id == target and agent.decision.mode is Mode.PINNED, timeout_s=15.0)
        page.wait_for_function("document.getElementById('mode').textContent === 'pinned'", timeout=10000)
        assert page.inner_text("#cuts button.current") == target
        assert wait_for(lambda: bool(agent.sink.results) and agent.sink.results[-1].cut == target, timeout_s=15.0)

        page.click("#auto")
        assert wait_for(lambda: agent.decision.mode is Mode.AUTO, timeout_s=15.0)
        page.select_option("#objective-select", "energy")
        page.click("#apply-policy")
        assert wait_for(lambda: agent.policy.objective is Objective.ENERGY, timeout_s=15.0)
        page.select_option("#objective-select", "slo")
        page.click("#apply-policy")  # no SLO given: the page shows the agent's error
        page.wait_for_function("document.getElementById('error').textContent.includes('slo')", timeout=10000)
        assert agent.policy.objective is Objective.ENERGY

        # the timeline chart has points and is drawn
        assert wait_for(lambda: len(json.loads(_get(view.url + "api/status")[1])["timeline"]) >= 2, timeout_s=15.0)
        page.wait_for_timeout(1200)
        inked = page.evaluate("""() => { const c = document.getElementById('timeline');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")
        assert inked > 2000
        assert view.renders >= 1 and view.render_ms is not None
    finally:
        page.close()
        agent.stop()


def test_cli_flag_serves_the_live_view_and_sigterm_stops_it(tiny_bundle, tmp_path) -> None:
    import re
    import signal
    import subprocess
    import sys
    import threading

    cmd = [sys.executable, "-m", "splitinfer.cli", "edge", "--bundle", str(tiny_bundle.root), "--source",
           str(_still_camera(tmp_path / "cam")), "--liveview", "--liveview-port", "0", "--results", "none",
           "--threads", "1", "--set", "source.loop=true", "--set", "source.fps_cap=5", "--set",
           "server.discovery=false", "--set", "control.enabled=false", "--set", "battery.source=none"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: any("live view on http" in x for x in lines), 30.0), "".join(lines)
        url = re.search(r"live view on (http://\S+)", "".join(lines)).group(1)
        assert wait_for(lambda: json.loads(_get(url + "api/status")[1])["results"] > 0, timeout_s=15.0)
        status, page = _get(url)
        assert status == 200 and b"splitinfer live view" in page
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
