"""The live view's HTTP server (stdlib ``http.server``) and the sink that feeds it.

Routes::

    GET  /                 the page (edge_agent.liveview.page)
    GET  /stream.mjpg      multipart/x-mixed-replace JPEGs with the overlay, at liveview.fps
    GET  /frame.jpg        one JPEG (``?overlay=0``: the frame as captured, scaled)
    GET  /api/status       decision, codec, counters, cut ids, timeline points (JSON)
    POST /api/pin          {"cut": "<id>"}       the same operations as splitctl pin / auto /
    POST /api/auto         {}                    policy, through the agent's ControlTarget
    POST /api/policy       {"objective": "latency"|"energy"|"slo", "slo_ms": <ms>|null}

Access: bound to a loopback address nothing is asked; bound elsewhere every request needs
``control.token`` as ``Authorization: Bearer <token>`` or ``?token=<token>`` (compared in
constant time). POSTs must be ``application/json``, which a foreign web page cannot
send without a CORS preflight this server never grants. Bad input answers 400/404 with
``{"error": "..."}`` naming the value and what was expected.

Cost: a frame is drawn and encoded only when a viewer asks for one (and once per new
frame and result, shared by every viewer); with nobody watching a result costs the
timeline's bookkeeping. :attr:`LiveView.render_ms` is the last render's time.
"""
from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

import numpy as np

from edge_agent.config_owner import LiveViewConfig, is_loopback
from edge_agent.errors import ConfigError, EdgeAgentError, UnknownCutError
from edge_agent.liveview.overlay import draw_overlay, encode_jpeg, scale_to_width
from edge_agent.liveview.page import PAGE
from edge_agent.liveview.timeline import Timeline
from edge_agent.results import FrameResult
from edge_agent.types import ControlTarget, Objective

log = logging.getLogger(__name__)

BOUNDARY = "splitinfer-frame"


class LiveView:
    """A result sink that serves the live view once :meth:`attach`-ed to the running agent."""

    def __init__(self, cfg: LiveViewConfig, *, token: Optional[str], codec: str, cuts: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not is_loopback(cfg.host) and not token:
            raise EdgeAgentError(f"liveview.host = {cfg.host!r} needs control.token (only localhost goes without one)")
        self.cfg = cfg
        self.codec = codec
        self.cuts = tuple(cuts)
        self._token = token if not is_loopback(cfg.host) else None
        self._clock = clock
        self._lock = threading.Lock()
        self._timeline = Timeline(cfg.timeline_s)
        self._last: Optional[FrameResult] = None
        self._seq = 0
        self._cache: tuple[Any, int, bytes] = (None, -1, b"")
        self._render_lock = threading.Lock()
        self.render_ms: Optional[float] = None
        self.render_history_ms: deque[float] = deque(maxlen=1000)  # the benchmark reads it
        self.renders = 0
        self._target: Optional[ControlTarget] = None
        self._latest_image: Callable[[], Optional[np.ndarray]] = lambda: None
        self._server: Optional[ThreadingHTTPServer] = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    def attach(self, target: ControlTarget, latest_image: Callable[[], Optional[np.ndarray]]) -> None:
        """Serve ``target`` (the agent): start the HTTP server and the 1 Hz timeline sampler."""
        self._target, self._latest_image = target, latest_image
        handler = type("Handler", (_Handler,), {"view": self})
        try:
            self._server = ThreadingHTTPServer((self.cfg.host, self.cfg.port), handler)
        except OSError as exc:
            raise ConfigError(f"liveview.port = {self.cfg.port}: cannot listen on {self.cfg.host}:{self.cfg.port} "
                              f"({exc.strerror or exc}); expected a free port (0 = any)") from exc
        self._server.daemon_threads = True
        for name, fn in (("http", self._server.serve_forever), ("timeline", self._sample_loop)):
            t = threading.Thread(target=fn, name=f"liveview-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("live view on %s%s", self.url, "" if self._token is None else " (bearer token required)")

    @property
    def port(self) -> int:
        assert self._server is not None, "live view not attached"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.cfg.host in ("0.0.0.0", "::") else self.cfg.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for t in self._threads:
            t.join(timeout=2.0)

    # ------------------------------------------------------------------ ResultSink

    def write(self, result: FrameResult) -> None:
        with self._lock:
            self._last = result
            self._seq += 1
            self._timeline.add_result(latency_ms=result.latency_ms.get("total", 0.0), wire_bytes=result.wire_bytes,
                                      path=result.path.value, cut=result.cut)

    def _sample_loop(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def sample(self) -> None:
        """Close one timeline interval (the sampler thread calls it every second)."""
        if self._target is None:
            return
        snap = self._target.snapshot()
        cut = snap.decision.cut_id
        order = self.cuts.index(cut) if cut in self.cuts else -1
        with self._lock:
            self._timeline.tick(snap.uptime_s, cut=cut, cut_order=order,
                                gated=snap.frames_gated, captured=snap.frames_captured)

    # ------------------------------------------------------------------ what the routes return

    def status(self) -> dict:
        assert self._target is not None
        snap = self._target.snapshot()
        d = snap.decision
        with self._lock:
            timeline = [p.to_json() for p in self._timeline.points]
            last = self._last.to_json() if self._last is not None else None
        return {
            "agent_id": snap.agent_id, "bundle": f"{snap.bundle_name}@{snap.bundle_version}",
            "decision": {"cut": d.cut_id, "mode": d.mode.value, "reason": d.reason},
            "objective": snap.objective.value, "slo_ms": snap.slo_ms,
            "codec": {"input": "jpeg", "output": "none (fully on device)"}.get(d.cut_id, f"tensors, {self.codec}"),
            "frames_captured": snap.frames_captured, "frames_dropped": snap.frames_dropped,
            "frames_gated": snap.frames_gated, "results": snap.results,
            "results_by_path": dict(snap.results_by_path), "mean_latency_ms": snap.mean_latency_ms,
            "circuit": snap.circuit_state, "uplink_kbps": snap.telemetry.uplink_kbps,
            "cuts": list(self.cuts), "last_result": last, "timeline": timeline, "render_ms": self.render_ms,
        }

    def frame_jpeg(self, overlay: bool = True) -> Optional[bytes]:
        """The latest frame as JPEG, drawn once per new frame or result and shared by viewers."""
        image = self._latest_image()
        if image is None:
            return None
        with self._lock:
            last, seq = self._last, self._seq
        if not overlay:
            return encode_jpeg(scale_to_width(image, self.cfg.max_width_px), self.cfg.jpeg_quality)
        with self._render_lock:
            cached_image, cached_seq, jpeg = self._cache
            if cached_image is image and cached_seq == seq:
                return jpeg
            start = time.perf_counter()
            shown = scale_to_width(image, self.cfg.max_width_px)
            if last is not None:
                shown = draw_overlay(shown, last.payload, cut=last.cut, path=last.path.value,
                                     latency_ms=last.latency_ms.get("total"))
            jpeg = encode_jpeg(shown, self.cfg.jpeg_quality)
            self.render_ms = (time.perf_counter() - start) * 1000.0
            self.render_history_ms.append(self.render_ms)
            self.renders += 1
            self._cache = (image, seq, jpeg)
            return jpeg

    def control(self, action: str, body: dict) -> dict:
        """Pin / auto / policy through the ControlTarget; ValueError or EdgeAgentError on bad input."""
        assert self._target is not None
        if action == "pin":
            cut = body.get("cut")
            if not isinstance(cut, str) or not cut:
                raise ValueError(f"cut = {cut!r}: expected one of {', '.join(self.cuts)}")
            d = self._target.pin_split(cut)
        elif action == "auto":
            d = self._target.set_auto()
        elif action == "policy":
            name, slo = body.get("objective"), body.get("slo_ms")
            try:
                objective = Objective(name)
            except ValueError:
                raise ValueError(f"objective = {name!r}: expected one of "
                                 f"{', '.join(o.value for o in Objective)}") from None
            if slo is not None and (not isinstance(slo, (int, float)) or not slo > 0):
                raise ValueError(f"slo_ms = {slo!r}: expected milliseconds > 0 or null")
            self._target.set_policy(objective, float(slo) if slo is not None else None)
            d = self._target.snapshot().decision
        else:
            raise KeyError(action)
        return {"cut": d.cut_id, "mode": d.mode.value, "reason": d.reason}

    def authorized(self, header: Optional[str], query_token: Optional[str]) -> bool:
        if self._token is None:
            return True
        given = header[7:] if header and header.startswith("Bearer ") else query_token
        return given is not None and hmac.compare_digest(given.encode(), self._token.encode())

    def streaming(self) -> bool:
        return not self._stop.is_set()


class _Handler(BaseHTTPRequestHandler):
    view: LiveView
    server_version = "splitinfer-liveview"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: dict) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _allowed(self) -> bool:
        query = parse_qs(urlsplit(self.path).query)
        if self.view.authorized(self.headers.get("Authorization"), (query.get("token") or [None])[0]):
            return True
        self._json(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong bearer token (control.token)"})
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._allowed():
            return
        url = urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        elif url.path == "/api/status":
            self._json(HTTPStatus.OK, self.view.status())
        elif url.path == "/frame.jpg":
            overlay = parse_qs(url.query).get("overlay", ["1"])[0] != "0"
            jpeg = self.view.frame_jpeg(overlay)
            if jpeg is None:
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no frame captured yet"})
            else:
                self._send(HTTPStatus.OK, jpeg, "image/jpeg")
        elif url.path == "/stream.mjpg":
            self._stream()
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page {url.path!r}"})

    def _stream(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        period_s = 1.0 / self.view.cfg.fps
        try:
            while self.view.streaming():
                jpeg = self.view.frame_jpeg()
                if jpeg is not None:
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                                     f"\r\n\r\n".encode() + jpeg + b"\r\n")
                    self.wfile.flush()
                time.sleep(period_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the viewer went away
        self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802
        if not self._allowed():
            return
        action = urlsplit(self.path).path.removeprefix("/api/")
        if action not in ("pin", "auto", "policy"):
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such operation {self.path!r}; expected "
                                                       "/api/pin, /api/auto or /api/policy"})
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "expected Content-Type: application/json"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}") if 0 <= length <= 65536 else None
            if not isinstance(body, dict):
                raise ValueError(f"body {body!r}: expected a JSON object")
            self._json(HTTPStatus.OK, self.view.control(action, body))
        except UnknownCutError as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(exc)})
        except (ValueError, EdgeAgentError) as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
