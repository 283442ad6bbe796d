"""``splitinfer edge --config edge.toml [flags]``: run the smart-camera daemon.

Precedence: flags > ``SPLITINFER_*`` environment > edge.toml > defaults
(see :mod:`edge_agent.config`). Any setting can be given as ``--set section.key=value``;
the common ones have their own flags. SIGTERM/SIGINT stop capturing and let in-flight
frames finish (up to ``--drain-timeout-s``). Exit codes: 0 done, 1 a stage failed,
2 bad configuration or bundle.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any, Optional

from edge_agent.errors import EdgeAgentError

# flag -> dotted config key
FLAG_KEYS = {
    "bundle": "bundle",
    "server": "server.address",
    "token": "server.token",
    "source": "source.uri",
    "fps_cap": "source.fps_cap",
    "threads": "runtime.threads",
    "deadline_ms": "runtime.deadline_ms",
    "max_frames": "runtime.max_frames",
    "objective": "policy.objective",
    "slo_ms": "policy.slo_ms",
    "pin": "policy.pinned_cut",
    "results": "results.sink",
    "results_path": "results.path",
    "metrics_port": "metrics.port",
    "control_socket": "control.socket_path",
    "log_level": "agent.log_level",
    "liveview": "liveview.enabled",
    "liveview_host": "liveview.host",
    "liveview_port": "liveview.port",
    "mqtt": "mqtt.enabled",
    "mqtt_host": "mqtt.host",
    "mqtt_port": "mqtt.port",
    "gate": "gate.mode",
    "gate_pixel_delta": "gate.pixel_delta",
    "gate_min_area": "gate.min_area_fraction",
    "gate_mask": "gate.mask",
    "gate_roi": "gate.roi",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splitinfer edge", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="edge.toml (optional when everything comes from flags/environment)")
    p.add_argument("--bundle", help="bundle directory (bundle)")
    p.add_argument("--server", help="host:port of the tail server; omit to discover one (server.address)")
    p.add_argument("--token", help="bearer token for the server (server.token)")
    p.add_argument("--source", help="camera index, rtsp/http URL, video file, image folder, or '-' for MJPEG on "
                   "stdin (rpicam-vid --codec mjpeg -o -) (source.uri)")
    p.add_argument("--fps-cap", type=float, help="frame-rate cap (source.fps_cap)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (runtime.threads)")
    p.add_argument("--deadline-ms", type=float, help="per-offload deadline (runtime.deadline_ms)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames (runtime.max_frames)")
    p.add_argument("--objective", choices=["latency", "energy", "slo"], help="policy.objective")
    p.add_argument("--slo-ms", type=float, help="latency SLO for --objective slo (policy.slo_ms)")
    p.add_argument("--pin", help="pin the split to this cut id (policy.pinned_cut)")
    p.add_argument("--results", choices=["stdout", "file", "none"], help="results.sink")
    p.add_argument("--results-path", help="results file for --results file (results.path)")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (metrics.port)")
    p.add_argument("--control-socket", help="control endpoint unix socket (control.socket_path)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (agent.log_level)")
    p.add_argument("--liveview", action="store_const", const=True, help="serve the live view (liveview.enabled)")
    p.add_argument("--liveview-host", help="live view bind address; beyond localhost needs control.token "
                   "(liveview.host)")
    p.add_argument("--liveview-port", type=int, help="live view port (liveview.port)")
    p.add_argument("--mqtt", action="store_const", const=True, help="publish results over MQTT (mqtt.enabled)")
    p.add_argument("--mqtt-host", help="MQTT broker host (mqtt.host)")
    p.add_argument("--mqtt-port", type=int, help="MQTT broker port (mqtt.port)")
    p.add_argument("--gate", choices=["auto", "on", "off"],
                   help="motion gate; auto = on for live cameras/streams, off for files/folders (gate.mode)")
    p.add_argument("--gate-pixel-delta", type=int, help="grey levels a pixel must change by (gate.pixel_delta)")
    p.add_argument("--gate-min-area", type=float,
                   help="changed fraction of the unmasked frame that counts as motion (gate.min_area_fraction)")
    p.add_argument("--gate-mask", help="ignored areas: 'x,y x,y x,y; ...' in frame fractions (gate.mask)")
    p.add_argument("--gate-roi", action="store_const", const=True,
                   help="detectors: run the model on the motion region, boxes mapped back (gate.roi)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any setting by its dotted key, e.g. --set link.enabled=true (repeatable)")
    p.add_argument("--drain-timeout-s", type=float, default=10.0, help="how long SIGTERM waits for in-flight frames")
    p.add_argument("--check", action="store_true", help="validate the configuration and bundle, then exit")
    return p


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for attr, key in FLAG_KEYS.items():
        value = getattr(args, attr)
        if value is not None:
            flags[key] = value
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise EdgeAgentError(f"--set {item!r}: expected KEY=VALUE, e.g. --set runtime.threads=4")
        flags[key.strip()] = value
    return flags


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from edge_agent.config import load_config, validate_paths

    try:
        config = load_config(args.config, flags=_flags(args))
        validate_paths(config)
    except EdgeAgentError as exc:
        print(f"splitinfer edge: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.agent.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from edge_agent.agent import EdgeAgent
    from protos.errors import BundleError

    try:
        check_config_for_agent(config)
        if args.check:
            print(f"splitinfer edge: configuration and bundle {config.bundle} are valid")
            return 0
        agent = EdgeAgent(config, serve_control=True)
        agent.start()
    except (EdgeAgentError, BundleError) as exc:
        print(f"splitinfer edge: {exc}", file=sys.stderr)
        return 2
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger(__name__).info("signal %d: finishing in-flight frames", signum)
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not agent.run_until_done(timeout_s=0.5):
        if stop_requested.is_set():
            if not agent.stop(timeout_s=args.drain_timeout_s):
                logging.getLogger(__name__).warning("drain timed out after %.1f s", args.drain_timeout_s)
            break
    snap = agent.snapshot()
    logging.getLogger(__name__).info(
        "done: %d frames captured, %d dropped, %d results %s", snap.frames_captured, snap.frames_dropped,
        snap.results, dict(snap.results_by_path))
    return 1 if agent.errors else 0


if __name__ == "__main__":
    sys.exit(main())


def check_config_for_agent(config: Any) -> None:
    """Checks that need the bundle: a pinned cut must exist; ROI mode needs a detector."""
    from edge_agent.errors import ConfigError
    from edge_agent.roi import roi_unsupported
    from protos.bundle import Side, read_bundle

    bundle = read_bundle(config.bundle, Side.EDGE, check_hashes=False)
    if config.policy.pinned_cut and config.policy.pinned_cut not in bundle.cut_ids:
        raise ConfigError(f"policy.pinned_cut = {config.policy.pinned_cut!r}: expected one of {', '.join(bundle.cut_ids)}")
    why = roi_unsupported(bundle.manifest.output) if config.gate.roi else None
    if why is not None:
        raise ConfigError(f"gate.roi = true needs a detector bundle: {why}; set gate.roi = false")
