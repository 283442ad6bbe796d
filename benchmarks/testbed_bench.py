"""The comparison benchmark on the emulated edge testbed.

For each scenario (fixed uplinks, a varying trace with an outage, server load,
a battery drain, a server kill) and each strategy (edge-only, cloud-only, every
static cut pinned, adaptive), it runs the real cloud server (``splitinfer serve``)
in the ``si-cloud`` namespace and the real edge agent in ``si-edge`` under the CPU
quota, with the uplink shaped by tc tbf and delay/outages added by the link proxy,
then reads the agent's JSON-lines results and aggregates them.

    python -m benchmarks.testbed_bench [--quick] [--bundle bundles/mobilenet_v2]
        [--scenario fixed --scenario varying ...] [--out benchmarks/results/testbed.json]

Without root (or without ``ip netns``) it falls back to loopback with user-space
shaping and no CPU throttle, and says so in the results. All traffic stays on this
machine: inside the two namespaces or on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pathlib
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from benchmarks.testbed import netns
from benchmarks.testbed.launch import LaunchError, Proc, run_checked
from benchmarks.testbed.metrics import FrameRecord, RunSummary, parse_result_lines, summarize_run
from benchmarks.testbed.scenarios import Scenario, Strategy, build_scenarios
from benchmarks.testbed.schedule import LinkSchedule, summarize

logger = logging.getLogger("benchmarks.testbed_bench")

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO / "bundles" / "mobilenet_v2"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "testbed.json"
SERVER_PORT = 8001
PROXY_PORT = 8101
LOOPBACK_SERVER_PORT = 18001
LOOPBACK_PROXY_PORT = 18101


@dataclass(frozen=True)
class BenchSettings:
    bundle: pathlib.Path
    quick: bool = False
    frames: Optional[int] = None
    fps_cap: float = 5.0
    deadline_ms: float = 500.0
    edge_threads: int = 1
    startup_s: float = 4.0  # time allowed for the agent to load before schedule time 0
    load_clients: int = 4
    battery_low_pct: float = 20.0
    scenarios: tuple[str, ...] = ()
    strategies: tuple[str, ...] = ()  # keep only these strategy names (prefix match); () = all
    testbed: str = "auto"  # auto | namespaces | loopback
    edge_slowdown: float = 4.0
    log_dir: pathlib.Path = REPO / "benchmarks" / "results" / "testbed_logs"
    video: Optional[pathlib.Path] = None
    # "runner": EdgeAgent in-process (loads first, starts at schedule time 0);
    # "cli": `splitinfer edge --config edge.toml` (starts when loaded; the offset is recorded)
    edge_launcher: str = "runner"
    warmup_frames: int = 3  # left out of latency/energy statistics (cold sessions and connections)
    # server.compression of the agent: "auto" follows the bundle (feature codecs pack and entropy-code their
    # codes; splitinfer's server undoes it), "none" sends raw tensors as a stock Triton server needs
    compression: str = "auto"
    agent_log_level: str = "WARNING"  # INFO logs every decision with its reason (edge.err in the run folder)
    # runtime.emulated_slowdown of the agent: sleep-padded model runs (exact per run, however short), as
    # an alternative to the CPU quota (edge_slowdown), which leaves runs shorter than its grant unslowed
    agent_emulated_slowdown: float = 1.0
    # the agent loads its bundle at host speed outside the CPU quota and joins the throttled cgroup
    # once loaded, before its first frame (the load time is no metric; with a 67 MB FP32 detector it took
    # tens of seconds per run under the quota). Frames, probes and profiles all run throttled.
    load_unthrottled: bool = False
    # every other camera of a load scenario sends at most this many frames per second (0 = back to back)
    load_client_fps: float = 0.0
    # device energy of one motion-gate decision (mJ), added to every frame of a run with the gate on
    # (the agent's results carry no gate time: a gated frame's stages are all "skipped")
    gate_mj_per_frame: float = 0.0


# --------------------------------------------------------------------------- energy


def energy_fn_for(schedule: LinkSchedule, origin_unix_s: float, extra_mj: float = 0.0):
    """mJ per frame from the documented Pi power model and the uplink in force at capture; ``extra_mj``
    is added to every frame (the motion gate's decision when the gate is on)."""
    from edge_agent.power import PI4_DEFAULT, transmit_ms

    def energy(record: FrameRecord) -> float:
        state = schedule.state_at(record.capture_unix_ms / 1000.0 - origin_unix_s)
        kbps = state.uplink_kbps if state.uplink_kbps is not None else 10_000_000.0
        tx_ms = transmit_ms(record.wire_bytes, kbps)
        wait_ms = max(0.0, record.wire_ms + record.server_ms - tx_ms)
        return PI4_DEFAULT.energy_mj(record.compute_ms, record.wire_bytes, kbps, wait_ms) + extra_mj

    return energy


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, settings: BenchSettings, testbed: object) -> None:
        from protos.bundle import Side, read_bundle, tail_model_name, tail_model_version

        self.settings = settings
        self.testbed = testbed
        self.bundle = read_bundle(settings.bundle, Side.ALL)
        m = self.bundle.manifest
        self.model_version = tail_model_version(m)
        self.input_model = tail_model_name(m, "input") if "input" in self.bundle.cut_ids else ""
        self.input_tensor = self.bundle.cut("input").tensors[0].name if self.input_model else ""
        self.namespaced = testbed.kind == "namespaces"
        self.server_port = SERVER_PORT if self.namespaced else LOOPBACK_SERVER_PORT
        self.proxy_port = PROXY_PORT if self.namespaced else LOOPBACK_PROXY_PORT
        self.server: Optional[Proc] = None
        self.server_starts = 0
        # grows when an agent takes longer than this to load (so frames start at schedule time 0)
        self.startup_s = settings.startup_s
        self.py = sys.executable
        self.env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        if settings.video is None:
            from partitioner.samples import video_path

            self.video = video_path("bikes.mp4")
        else:
            self.video = settings.video

    # ------------------------------------------------------------------ server

    def start_server(self, warm: bool = True) -> float:
        """Start ``splitinfer serve`` on the cloud side; the wall time it became ready.

        ``warm`` then sends one request to every tail (not after a kill: a restarted
        server is cold, as it would be in production)."""
        self.server_starts += 1
        argv = [self.py, "-m", "splitinfer.cli", "serve", "--bundle", str(self.bundle.root),
                "--host", self.testbed.bind_host, "--port", str(self.server_port),  # type: ignore[attr-defined]
                "--intra-op-threads", "1", "--metrics-port", "off", "--no-discovery", "--log-level", "WARNING"]
        self.server = Proc(f"server-{self.server_starts}", self.testbed.cloud_command(argv),  # type: ignore[attr-defined]
                           self.settings.log_dir, env=self.env, cwd=REPO)
        probe = self.testbed.cloud_command([  # type: ignore[attr-defined]
            self.py, "-m", "benchmarks.testbed.probe", "--target", f"127.0.0.1:{self.server_port}",
            "--timeout", "60", *(["--model", self.input_model] if self.input_model else []),
            *(["--warm-bundle", str(self.bundle.root)] if warm else [])])
        try:
            out = run_checked(probe, timeout_s=180)
        except LaunchError as exc:
            raise LaunchError(f"server did not become ready: {exc}; server stderr: {self.server.stderr_tail()}") from exc
        warm_lines = [line for line in out.splitlines() if line.startswith("warm ") and not line.endswith(" ok")]
        if warm_lines:
            logger.warning("warming the tails: %s", "; ".join(warm_lines))
        return float(out.split()[1])

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    # ------------------------------------------------------------------ one run

    def edge_config(self, run_dir: pathlib.Path, scenario: Scenario, strategy: Strategy,
                    battery_csv: Optional[pathlib.Path]) -> pathlib.Path:
        lines = [
            f'bundle = "{self.bundle.root}"',
            "[server]",
            f'address = "127.0.0.1:{self.proxy_port}"',
            "discovery = false",
            f'compression = "{self.settings.compression}"',
            "[source]",
            'kind = "video"',
            f'uri = "{self.video}"',
            f"fps_cap = {scenario.fps_cap}",
            "loop = true",
            "[runtime]",
            f"threads = {self.settings.edge_threads}",
            f"deadline_ms = {self.settings.deadline_ms}",
            f"emulated_slowdown = {self.settings.agent_emulated_slowdown}",
            f"max_frames = {scenario.frames}",
            "[policy]",
            f'objective = "{strategy.objective}"',
            f"battery_low_pct = {self.settings.battery_low_pct}",
        ]
        if strategy.pinned_cut is not None:
            lines.append(f'pinned_cut = "{strategy.pinned_cut}"')
        lines += ["[gate]", f'mode = "{"on" if strategy.gate else "off"}"',
                  "[exits]", f"enabled = {'true' if strategy.exits else 'false'}"]
        lines += ["[battery]"]
        if battery_csv is not None:
            lines += ['source = "trace"', f'trace_file = "{battery_csv}"']
        else:
            lines += ['source = "none"']
        # a control socket of our own: the default path may belong to another agent on this machine
        lines += ["[control]", f'socket_path = "{run_dir / "control.sock"}"']
        lines += ["[results]", 'sink = "file"', f'path = "{run_dir / "results.jsonl"}"',
                  "[agent]", f'agent_id = "bench-{strategy.name}"', f'log_level = "{self.settings.agent_log_level}"']
        path = run_dir / "edge.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def run_one(self, scenario: Scenario, strategy: Strategy) -> dict:
        s = self.settings
        run_dir = s.log_dir / scenario.name / strategy.name.replace(":", "_")
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("results.jsonl", "proxy_stats.json"):
            (run_dir / stale).unlink(missing_ok=True)
        schedule_path = run_dir / "link.json"
        schedule_path.write_text(scenario.schedule.to_json(), encoding="utf-8")
        battery_csv = None
        if scenario.battery_trace:
            battery_csv = run_dir / "battery.csv"
            # the agent's trace clock starts at its first reading, when it starts (schedule time 0)
            rows = ["time_s,battery_pct,charging"]
            rows += [f"{t:g},{pct:g},{int(charging)}" for t, pct, charging in scenario.battery_trace]
            battery_csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
        config = self.edge_config(run_dir, scenario, strategy, battery_csv)
        first = scenario.schedule.state_at(0).uplink_kbps
        self.testbed.set_uplink(first)  # type: ignore[attr-defined]
        if self.server is None or not self.server.alive():
            self.start_server()

        launched = time.time()
        origin = launched + self.startup_s
        proxy_argv = [self.py, "-m", "benchmarks.testbed.proxy", "--listen", f"127.0.0.1:{self.proxy_port}",
                      "--upstream", f"{self.testbed.cloud_host}:{self.server_port}",  # type: ignore[attr-defined]
                      "--schedule", str(schedule_path), "--origin-unix", f"{origin:.3f}",
                      "--stats", str(run_dir / "proxy_stats.json")]
        if self.testbed.tc_dev:  # type: ignore[attr-defined]
            proxy_argv += ["--tc-dev", self.testbed.tc_dev]  # type: ignore[attr-defined]
        else:
            proxy_argv += ["--shape-uplink"]
        proxy = Proc("proxy", self.testbed.edge_helper_command(proxy_argv), run_dir, env=self.env, cwd=REPO)  # type: ignore[attr-defined]
        load: Optional[Proc] = None
        returns_unix_ms: list[float] = [(origin + end) * 1000 for _, end in scenario.schedule.outages()
                                        if math.isfinite(end)]
        notes: list[str] = []
        try:
            proxy.wait_for_line("ready", 20)
            if scenario.load_clients and self.input_model:
                jpeg = run_dir / "load.jpg"
                _write_sample_jpeg(jpeg, self.video, self.bundle.manifest.input)
                interval = [] if not s.load_client_fps else ["--interval-ms", f"{1000 / s.load_client_fps:.1f}"]
                load = Proc("loadgen", self.testbed.cloud_command([  # type: ignore[attr-defined]
                    self.py, "-m", "benchmarks.testbed.loadgen", "--target", f"127.0.0.1:{self.server_port}",
                    "--model", self.input_model, "--version", self.model_version, "--tensor", self.input_tensor,
                    "--jpeg", str(jpeg), "--clients", str(scenario.load_clients), *interval]),
                    run_dir, env=self.env, cwd=REPO)
                load.wait_for_line("ready", 20)
            link_before = self.testbed.link_bytes()  # type: ignore[attr-defined]
            started = time.monotonic()
            if s.edge_launcher == "cli":
                edge_argv = [self.py, "-m", "splitinfer.cli", "edge", "--config", str(config)]
            else:
                edge_argv = [self.py, "-m", "benchmarks.testbed.edge_runner", "--config", str(config),
                             "--start-at-unix", f"{origin:.3f}"]
            if s.load_unthrottled and s.edge_launcher == "runner":
                agent = Proc("edge", self.testbed.edge_command_unthrottled(edge_argv),  # type: ignore[attr-defined]
                             run_dir, env=self.env, cwd=REPO)
                agent.wait_for_line("loaded", 120)
                self.testbed.throttle(agent.pid)  # type: ignore[attr-defined]
                if self.namespaced and agent.pid not in self.testbed.throttled_pids():  # type: ignore[attr-defined]
                    raise LaunchError(f"agent pid {agent.pid} did not join the edge CPU quota")
                notes.append("agent loaded at host speed, then joined the CPU quota before its first frame")
            else:
                agent = Proc("edge", self.testbed.edge_command(edge_argv), run_dir, env=self.env, cwd=REPO)  # type: ignore[attr-defined]
            killer = None
            if scenario.kill_at_s is not None:
                killer = threading.Thread(target=self._kill_and_restart, daemon=True,
                                          args=(origin, scenario.kill_at_s, scenario.restart_at_s, returns_unix_ms, notes))
                killer.start()
            budget_s = self.startup_s + scenario.frames / scenario.fps_cap * 2 + 60
            code = agent.wait(budget_s)
            if code is None:
                notes.append(f"agent still running after {budget_s:.0f}s; stopped")
                code = agent.stop()
            else:
                if code != 0:
                    notes.append(f"agent exited with {code}: {agent.stderr_tail(5)}")
                agent.stop()  # closes its log files
            if killer is not None:
                killer.join(timeout=60)
            wall_s = time.monotonic() - started
            self._learn_startup(agent, launched, notes)
            link_after = self.testbed.link_bytes()  # type: ignore[attr-defined]
        finally:
            if load is not None:
                load.stop()
            proxy.stop()
        results_path = run_dir / "results.jsonl"
        text = results_path.read_text(encoding="utf-8") if results_path.exists() else ""
        records, skipped = parse_result_lines(text.splitlines())
        if skipped:
            notes.append(f"{skipped} non-result lines in results.jsonl")
        summary: RunSummary = summarize_run(
            records, scenario=scenario.name, strategy=strategy.name, frames_expected=scenario.frames, wall_s=wall_s,
            energy_fn=energy_fn_for(scenario.schedule, origin, s.gate_mj_per_frame if strategy.gate else 0.0),
            link_bytes=(link_after - link_before) if link_before is not None else None,
            returns_unix_ms=returns_unix_ms, warmup_frames=s.warmup_frames)
        summary.notes += notes
        out = summary.to_dict()
        out["objective"] = strategy.objective
        out["pinned_cut"] = strategy.pinned_cut
        out["gate"] = strategy.gate
        out["exits"] = strategy.exits
        if strategy.gate:
            out["gate_mj_per_frame"] = s.gate_mj_per_frame
        out["fps_cap"] = scenario.fps_cap
        out["agent_sources"] = _source_digests()
        if records:
            out["trace_offset_s"] = round(min(r.capture_unix_ms for r in records) / 1000 - origin, 3)
        try:
            out["proxy"] = json.loads((run_dir / "proxy_stats.json").read_text())
        except (OSError, ValueError):
            out["proxy"] = None
        if load is not None:
            out["load"] = _last_json_line(load.stdout_path)
        if scenario.kind != "fixed":
            out["timeline"] = [[round(r.capture_unix_ms / 1000 - origin, 3), round(r.total_ms, 2), r.cut, r.path]
                               for r in sorted(records, key=lambda r: r.capture_unix_ms)]
        logger.info("%-16s %-22s mean %7.1f ms  p95 %7.1f ms  %5.2f fps  no-result %d  paths %s",
                    scenario.name, strategy.name, summary.mean_ms, summary.p95_ms, summary.frames_per_s,
                    summary.frames_without_result, summary.paths)
        return out

    def _learn_startup(self, agent: Proc, launched: float, notes: list[str]) -> None:
        try:
            loaded = next(float(line.split()[1]) for line in agent.stdout_path.read_text().splitlines()
                          if line.startswith("loaded "))
        except (OSError, StopIteration, ValueError, IndexError):
            return
        load_s = loaded - launched
        if load_s + 1.0 > self.startup_s:
            notes.append(f"agent took {load_s:.1f}s to load (allowance {self.startup_s:.1f}s); allowance raised")
            self.startup_s = min(load_s + 1.5, 60.0)

    def _kill_and_restart(self, origin: float, kill_at_s: float, restart_at_s: Optional[float],
                          returns_unix_ms: list[float], notes: list[str]) -> None:
        time.sleep(max(0.0, origin + kill_at_s - time.time()))
        if self.server is not None:
            self.server.kill()
            notes.append(f"server killed at {time.time() - origin:.2f}s")
        if restart_at_s is None:
            return
        time.sleep(max(0.0, origin + restart_at_s - time.time()))
        try:
            ready = self.start_server(warm=False)
        except LaunchError as exc:
            notes.append(f"server restart failed: {exc}")
            return
        returns_unix_ms.append(ready * 1000)
        notes.append(f"server ready again at {ready - origin:.2f}s")

    # ------------------------------------------------------------------ all

    def run(self, scenarios: Sequence[Scenario]) -> list[dict]:
        out = []
        for scenario in scenarios:
            runs = []
            for strategy in scenario.strategies:
                if self.settings.strategies and not any(strategy.name.startswith(p) for p in self.settings.strategies):
                    continue
                try:
                    runs.append(self.run_one(scenario, strategy))
                except Exception as exc:  # one broken run must not lose the others
                    logger.exception("run %s/%s failed", scenario.name, strategy.name)
                    runs.append({"scenario": scenario.name, "strategy": strategy.name, "error": str(exc)})
            out.append({
                "name": scenario.name, "kind": scenario.kind, "description": scenario.description,
                "uplink_mbit": scenario.uplink_mbit, "frames": scenario.frames, "fps_cap": scenario.fps_cap,
                "schedule": scenario.schedule.to_dict(), "schedule_text": summarize(scenario.schedule),
                "outages": [[a, b if math.isfinite(b) else None] for a, b in scenario.schedule.outages()],
                "load_clients": scenario.load_clients, "battery_trace": [list(x) for x in scenario.battery_trace],
                "kill_at_s": scenario.kill_at_s, "restart_at_s": scenario.restart_at_s, "runs": runs,
            })
        return out


def _write_sample_jpeg(path: pathlib.Path, video: Optional[pathlib.Path] = None, spec: object = None) -> None:
    """The other cameras' frame: the first frame of ``video`` (the scenario's own camera) at q90, at the
    model's input resolution when the bundle's input ``spec`` is given (as the agent sends it), else the
    chelsea sample at 224x224."""
    import cv2

    from partitioner.samples import image_path

    image = None
    if video is not None:
        cap = cv2.VideoCapture(str(video))
        ok, image = cap.read()
        cap.release()
        if not ok:
            image = None
        elif spec is not None:
            from protos.preprocess import model_sized

            image = model_sized(image, spec)  # type: ignore[arg-type]
    if image is None:
        image = cv2.resize(cv2.imread(str(image_path("chelsea"))), (224, 224))
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise LaunchError("could not encode the load JPEG")
    path.write_bytes(buf.tobytes())


def _source_digests() -> dict[str, str]:
    """Short sha256 of the agent modules that decide where frames go (the working tree may change
    between runs while other work lands: the digests say which code each run measured)."""
    import hashlib

    out = {}
    for rel in ("edge_agent/probes.py", "edge_agent/policy.py", "edge_agent/telemetry/bandwidth.py"):
        try:
            out[rel] = hashlib.sha256((REPO / rel).read_bytes()).hexdigest()[:12]
        except OSError:
            out[rel] = "missing"
    return out


def _last_json_line(path: pathlib.Path) -> Optional[dict]:
    try:
        for line in reversed(path.read_text().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
    except (OSError, ValueError):
        pass
    return None


# --------------------------------------------------------------------------- environment


def describe_environment(testbed: object, settings: BenchSettings, bundle: object) -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("splitinfer", "onnxruntime", "numpy", "grpcio", "protobuf", "opencv-python-headless", "matplotlib"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    cpu = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    manifest = bundle.manifest  # type: ignore[attr-defined]
    return {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
                    "cpus": os.cpu_count(), "kernel": platform.release()},
        "versions": versions,
        "testbed": testbed.describe(),  # type: ignore[attr-defined]
        "bundle": {"path": str(settings.bundle), "model_name": manifest.model_name,
                   "content_hash": manifest.content_hash[:12],
                   "cuts": [{"id": c.id, "wire_bytes": c.wire_bytes, "head_precision": c.head_precision}
                            for c in manifest.cuts]},
        "settings": {"quick": settings.quick, "frames": settings.frames, "fps_cap": settings.fps_cap,
                     "deadline_ms": settings.deadline_ms, "edge_threads": settings.edge_threads,
                     "startup_s": settings.startup_s, "load_clients": settings.load_clients,
                     "battery_low_pct": settings.battery_low_pct, "edge_slowdown": settings.edge_slowdown,
                     "edge_launcher": settings.edge_launcher, "warmup_frames": settings.warmup_frames,
                     "power_model": "edge_agent.power.PI4_DEFAULT"},
    }


def choose_testbed(kind: str, settings: BenchSettings) -> object:
    tb_settings = netns.TestbedSettings(edge_slowdown=settings.edge_slowdown)
    if kind in ("auto", "namespaces"):
        ok, why = netns.namespaces_available()
        if ok:
            return netns.NamespaceTestbed(tb_settings)
        if kind == "namespaces":
            raise SystemExit(f"namespace testbed unavailable: {why}")
        logger.warning("namespace testbed unavailable (%s): falling back to loopback", why)
    return netns.LoopbackTestbed(tb_settings)


def run_bench(settings: BenchSettings) -> dict:
    """Set up the testbed, run every scenario, tear down; the results document."""
    testbed = choose_testbed(settings.testbed, settings)
    bench = Bench(settings, testbed)
    scenarios = build_scenarios(bench.bundle.cut_ids, quick=settings.quick, frames=settings.frames,
                                fps_cap=settings.fps_cap, load_clients=settings.load_clients,
                                battery_low_pct=settings.battery_low_pct, only=settings.scenarios)
    doc = describe_environment(testbed, settings, bench.bundle)
    started = time.time()
    testbed.teardown()  # type: ignore[attr-defined]
    testbed.setup()  # type: ignore[attr-defined]
    try:
        doc["scenarios"] = bench.run(scenarios)
    finally:
        bench.stop_server()
        testbed.teardown()  # type: ignore[attr-defined]
    doc["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc["duration_s"] = round(time.time() - started, 1)
    return doc


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[BenchSettings, pathlib.Path]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.testbed_bench", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=pathlib.Path, default=DEFAULT_BUNDLE)
    p.add_argument("--quick", action="store_true", help="30 frames per run and a shorter varying trace")
    p.add_argument("--frames", type=int, help="frames per run (default 80, 30 with --quick)")
    p.add_argument("--fps", type=float, default=5.0, help="camera frame rate cap")
    p.add_argument("--deadline-ms", type=float, default=500.0)
    p.add_argument("--scenario", action="append", default=[], help="run scenarios whose name starts with this")
    p.add_argument("--strategy", action="append", default=[], help="run strategies whose name starts with this")
    p.add_argument("--testbed", choices=("auto", "namespaces", "loopback"), default="auto")
    p.add_argument("--slowdown", type=float, default=4.0, help="edge CPU = one core / this")
    p.add_argument("--load-clients", type=int, default=4)
    p.add_argument("--edge-launcher", choices=("runner", "cli"), default="runner",
                   help="runner: EdgeAgent in-process, aligned to the link schedule; cli: `splitinfer edge`")
    p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    settings = BenchSettings(bundle=a.bundle.resolve(), quick=a.quick, frames=a.frames, fps_cap=a.fps,
                             deadline_ms=a.deadline_ms, scenarios=tuple(a.scenario), strategies=tuple(a.strategy),
                             testbed=a.testbed, edge_slowdown=a.slowdown, load_clients=a.load_clients,
                             edge_launcher=a.edge_launcher)
    return settings, a.out


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    settings, out = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so children are stopped and the testbed torn down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not (settings.bundle / "manifest.json").is_file():
        print(f"testbed_bench: no bundle at {settings.bundle}; build it with `splitinfer partition` "
              "or pass --bundle", file=sys.stderr)
        return 2
    doc = run_bench(settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
