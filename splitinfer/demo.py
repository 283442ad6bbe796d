"""``splitinfer demo`` — partition, serve and stream a video through an emulated link, in one command.

What it does, in order:

1. **Bundle**: uses ``--bundle DIR`` or the cached default MobileNetV2 bundle
   (``--bundle-cache``, default ``$SPLITINFER_BUNDLE_CACHE`` or
   ``~/.cache/splitinfer/bundles``), building it with
   :func:`partitioner.pipeline.build_default_bundle` and the feature codecs of
   ``DEMO_FEATURE_CODECS`` the first time (progress shown).
2. **Server**: starts the cloud server in this process on ``127.0.0.1:<free port>``.
3. **Agent**: starts the edge agent on the shipped street video (``bikes.mp4``, or
   ``--video`` / ``--camera``), paced at ``--fps``, with a control socket that
   ``splitctl watch --socket PATH`` can attach to from another terminal. The policy
   minimises device energy by default (``--objective``; see ``DEFAULT_OBJECTIVE``).
4. **Link**: the agent's transport goes through an *emulated* link
   (:mod:`edge_agent.link`, user space, no root): fast, then slow, then medium (where a
   mid-graph codec cut is the cost model's choice; see ``STORY``), then an outage, then fast
   again, stretched over the expected run time — or ``--trace CSV``.
5. **Live table**: frame, top-1 label, cut (with its codec), where it ran, latency breakdown, the agent's
   bandwidth estimate, the emulated link right now, and the decision reason
   (redrawn in place; ``--headless`` prints plain lines instead).
6. **Summary**: frames vs results, top-1 agreement with the full FP32 model (run
   locally on the same frames in a background thread), cuts chosen over time, mean
   latency per path, a per-link-phase breakdown and the phases where a mid-graph split
   ran most frames; ``--summary-json`` writes it too.

The numbers are real (real ONNX Runtime sessions, real gRPC on loopback); only the
link is emulated, and the summary says so.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import queue
import sys
import tempfile
import threading
import time
from typing import Optional, Sequence, TextIO

import numpy as np

from edge_agent.errors import EdgeAgentError
from edge_agent.link import EmulatedTransport, LinkEmulator, LinkState, LinkTrace, load_trace_csv
from edge_agent.sources import Frame, TeeSource
from splitinfer.demo_view import EVENTS, DemoView, cut_labels, head_shares, render_summary, summarize

log = logging.getLogger(__name__)

DEFAULT_MODEL = "mobilenet_v2"
DETECTOR = "ssd_mobilenet_v2_coco"
BUILT_IN = (DEFAULT_MODEL, DETECTOR)
CACHE_ENV = "SPLITINFER_BUNDLE_CACHE"
# On one machine the "server" is no faster than the "device", so minimising latency keeps
# every frame local; the demo minimises device energy (Pi 4 power model), as a battery
# camera would, which offloads on a fast link and stays local on a slow one.
DEFAULT_OBJECTIVE = "energy"

# The default link story, as fractions of the expected run time: fast, slow, medium, an outage, fast again.
# "medium" is where the agent's own cost model (edge_agent.estimates, energy objective, Pi 4 power model),
# fed the default bundle's measured profile, ranks a mid-graph codec cut first: at 8 Mbit/s and +1 ms
# features_4_conv_2 [q4p+zstd] (11.2 kB, head 0.51x the INT8 model) is 0.85-0.94x min(JPEG, device) for an
# effective device slowdown of 6-16 (the padded 4x times this shared host's load); at 2 Mbit/s +10 ms the
# device wins by 20-40 % and no cut is ever cheaper than min(JPEG, device) by more than ~15 % (the policy's
# hysteresis), at any rate or delay. "medium" follows "slow" because from the device (the slow phase's
# winner) the split is 20-30 % cheaper, a clear switch; from the JPEG (the fast phase's) it is 6-15 %, inside
# the hysteresis. The reasoning with its figures: splitinfer.demo_plan (`python -m splitinfer.demo_plan`).
FAST = dict(uplink_kbps=100_000.0, delay_ms=2.0)
MEDIUM = dict(uplink_kbps=8_000.0, delay_ms=1.0)
SLOW = dict(uplink_kbps=400.0, delay_ms=40.0)
STORY = ((0.0, "fast", FAST, True), (0.2, "slow", SLOW, True), (0.4, "medium", MEDIUM, True),
         (0.62, "outage", FAST, False), (0.78, "fast again", FAST, True))
# The default MobileNetV2 bundle adds feature-codec variants of its cuts (issue 13): the passing codec with
# the fewest bytes per cut (partitioner.codec_stage), so the agent can choose a codec with the cut.
DEMO_FEATURE_CODECS = ("q3+zstd", "q4p+zstd")


def default_cache_dir() -> pathlib.Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return pathlib.Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "splitinfer" / "bundles"


def story_trace(duration_s: float) -> tuple[LinkTrace, list[str]]:
    """The fast / slow / medium / outage / fast-again trace stretched over ``duration_s``, and its phase names."""
    states = [LinkState(round(frac * duration_s, 3), up=up, **values) for frac, _, values, up in STORY]
    return LinkTrace(states), [name for _, name, _, _ in STORY]


# --------------------------------------------------------------------------- bundle


def ensure_bundle(bundle: Optional[str], cache_dir: pathlib.Path, out: TextIO, model: str = DEFAULT_MODEL) -> pathlib.Path:
    """The bundle to use: ``bundle`` as given, else the cached bundle of the built-in ``model`` (built if missing)."""
    from protos.bundle import Side, read_bundle

    if bundle:
        path = pathlib.Path(bundle).expanduser()
        read_bundle(path, Side.ALL, check_hashes=False)
        return path
    path = cache_dir / (f"{model}-codecs" if model == DEFAULT_MODEL else model)
    if (path / "manifest.json").is_file():
        try:
            read_bundle(path, Side.ALL)
            out.write(f"using the cached bundle {path}\n")
            return path
        except Exception as exc:  # noqa: BLE001 - a broken cache is rebuilt
            out.write(f"cached bundle {path} is unusable ({exc}); rebuilding it\n")
    from partitioner.pipeline import build_default_bundle

    out.write(f"building the {model} bundle into {path} (first run only; takes a few minutes)\n")
    out.flush()
    started = time.monotonic()

    last = {"stage": "", "at": 0.0}

    def progress(stage: str, done: int, total: int) -> None:
        """partitioner progress(stage, done, total): one line per stage change, finish, or second."""
        now = time.monotonic()
        if stage == last["stage"] and done < total and now - last["at"] < 1.0:
            return
        last.update(stage=stage, at=now)
        out.write(f"  [{now - started:6.1f} s] {stage:<14} {done}/{total}\n")
        out.flush()

    cache_dir.mkdir(parents=True, exist_ok=True)
    if model == DEFAULT_MODEL:
        build_default_bundle(path, progress, feature_codecs=DEMO_FEATURE_CODECS)
        profile_on_demo_frames(path, out)
    else:  # the detector: partitioner.models.ssd_mobilenet_v2 sets its own preprocessing, labels and task
        from partitioner.pipeline import PartitionConfig, partition

        partition(PartitionConfig(model=model, out_dir=path, overwrite=True), progress)
    out.write(f"bundle ready in {time.monotonic() - started:.0f} s\n")
    return path


def profile_on_demo_frames(path: pathlib.Path, out: TextIO) -> None:
    """Re-time the bundle's edge side on a frame of the demo's own video (``splitinfer profile``), as a
    device profiles itself on its camera's frames: the "input" cut's cost is JPEG-encoding the camera
    frame, and partition profiles it on a held-out frame of another size (a 1280x720 frame took 6.7 ms
    where a 640x272 bikes.mp4 frame takes 0.3 ms), which made the agent think sending the frame costs
    more than running a head. Heads are timed on the same 224x224 input either way."""
    from partitioner import profile as profiling
    from partitioner.calibration import read_frames
    from partitioner.samples import video_path

    frame = read_frames(video_path("bikes.mp4"), max_frames=1).frames[0]
    timed = profiling.profile_bundle(path, frame, profiling.TimingConfig(threads=1, warmup=5, runs=30))
    out.write("edge profile on bikes.mp4 frames (ms, one thread): "
              + ", ".join(f"{cut} {ms:.2f}" for cut, ms in timed) + "\n")


# --------------------------------------------------------------------------- reference (full FP32 model)


class ReferenceWorker:
    """Runs the bundle's full FP32 model on each captured frame in a background thread
    and keeps its top-1 index (classifiers) or detections (detectors, through the edge's own
    postprocessing, boxes in frame pixels) by frame id: the agreement baseline."""

    def __init__(self, bundle_root: pathlib.Path, threads: int = 1) -> None:
        import onnxruntime as ort

        from protos.bundle import Side, read_bundle

        bundle = read_bundle(bundle_root, Side.EDGE, check_hashes=False)
        self.spec = bundle.manifest.input
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(bundle.path(bundle.manifest.full_model)), opts,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        cls = bundle.manifest.output.classification
        names = [o.name for o in self.session.get_outputs()]
        self.output_name = cls.output_tensor if cls.output_tensor in names else names[0]
        self.top1: dict[int, int] = {}
        self.detections: Optional[dict[int, list[dict]]] = None
        self._postprocess = None
        if bundle.manifest.output.WhichOneof("postprocess") == "detection":
            from edge_agent.postprocess import Postprocessor, load_labels

            det = bundle.manifest.output.detection
            labels = load_labels(bundle.path(det.labels)) if det.HasField("labels") else []
            self._postprocess = Postprocessor(bundle.manifest.output, labels, input_spec=self.spec)
            self.detections = {}
        self._queue: queue.Queue[Optional[Frame]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="demo-reference", daemon=True)
        self._thread.start()

    def submit(self, frame: Frame) -> None:
        self._queue.put(frame)

    def _run(self) -> None:
        from protos.preprocess import preprocess_bgr

        while True:
            frame = self._queue.get()
            if frame is None:
                return
            x = preprocess_bgr(frame.image_bgr, self.spec)
            if self._postprocess is not None and self.detections is not None:
                names = [o.name for o in self.session.get_outputs()]
                outputs = dict(zip(names, self.session.run(None, {self.input_name: x})))
                payload = self._postprocess(outputs, frame_hw=frame.image_bgr.shape[:2])
                self.detections[frame.frame_id] = payload["detections"]
                continue
            (y,) = self.session.run([self.output_name], {self.input_name: x})
            self.top1[frame.frame_id] = int(np.argmax(y.reshape(y.shape[0], -1)[0]))

    def finish(self, timeout_s: float = 120.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)


# --------------------------------------------------------------------------- live table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splitinfer demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=BUILT_IN, default=DEFAULT_MODEL,
                   help=f"built-in model whose bundle is built and cached (default {DEFAULT_MODEL}; "
                        f"{DETECTOR}: SSD-MobileNetV2 COCO over vtest.avi, scored by detection F1)")
    p.add_argument("--frames", type=int, default=250, help="frames to process (default 250: the whole street video)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--video", default=None, help="video file (default: the shipped bikes.mp4; for the detector "
                                                    "vtest.avi from opencv-doc)")
    src.add_argument("--camera", type=int, default=None, metavar="IDX", help="camera index instead of a video")
    p.add_argument("--fps", type=float, default=3.0, help="frames per second read from the source (default 3)")
    p.add_argument("--bundle", default=None, help="use this bundle instead of the cached default MobileNetV2")
    p.add_argument("--bundle-cache", default=None, help=f"where the default bundle is cached (${CACHE_ENV})")
    p.add_argument("--trace", default=None, help="link trace CSV: time_s,uplink_kbps,delay_ms,up")
    p.add_argument("--headless", action="store_true", help="plain lines instead of the live table (tests, logs)")
    p.add_argument("--socket", default=None, help="control socket path for splitctl (default: a temp path)")
    p.add_argument("--deadline-ms", type=float, default=500.0, help="per-offload deadline (default 500)")
    p.add_argument("--objective", choices=("latency", "energy", "slo"), default=DEFAULT_OBJECTIVE,
                   help=f"what the split policy minimises (default {DEFAULT_OBJECTIVE}; "
                        "change it live with `splitctl policy`)")
    p.add_argument("--slo-ms", type=float, default=None, help="latency SLO for --objective slo")
    p.add_argument("--device-threads", type=int, default=1,
                   help="ONNX Runtime threads of the edge agent (default 1: a small device)")
    p.add_argument("--device-slowdown", type=float, default=4.0,
                   help="emulate a slower device: pad every on-device model run to this many times its "
                        "duration (default 4, roughly a Raspberry Pi 4 core against this machine's core; 1 = off)")
    p.add_argument("--server-threads", type=int, default=2,
                   help="ONNX Runtime intra-op threads of the cloud server (default 2)")
    p.add_argument("--summary-json", default=None, help="also write the summary as JSON here")
    p.add_argument("--verbose", action="store_true", help="log agent decisions (INFO) to stderr")
    return p


def main(argv: Optional[Sequence[str]] = None, *, out: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.frames < 1 or args.fps <= 0:
        print(f"splitinfer demo: --frames {args.frames} and --fps {args.fps:g} must be positive", file=sys.stderr)
        return 2
    if args.objective == "slo" and not (args.slo_ms and args.slo_ms > 0):
        print("splitinfer demo: --objective slo needs --slo-ms N (> 0)", file=sys.stderr)
        return 2
    if args.headless:
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:  # log lines would tear the live table: the view shows the latest ones in its header
        logging.getLogger().addHandler(EVENTS)
        logging.getLogger().setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        return _run(args, out)
    except (EdgeAgentError, OSError, ValueError, ImportError) as exc:  # ImportError: the detector without TensorFlow
        print(f"splitinfer demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nsplitinfer demo: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from cloud_server.server import create_server
    from cloud_server.settings import ServerSettings
    from edge_agent.agent import EdgeAgent
    from edge_agent.config import build_config
    from edge_agent.control import start_control_server
    from edge_agent.sources import open_source
    from edge_agent.transport_grpc import GrpcTransport, options_from_config
    from partitioner.samples import video_path, vtest_path

    wall_start = time.monotonic()
    cache = pathlib.Path(args.bundle_cache).expanduser() if args.bundle_cache else default_cache_dir()
    bundle_root = ensure_bundle(args.bundle, cache, out, args.model)

    if args.camera is not None:
        uri, kind, loop = str(args.camera), "camera", False
    else:
        video = pathlib.Path(args.video) if args.video else (vtest_path() if args.model == DETECTOR
                                                              else video_path("bikes.mp4"))
        uri, kind, loop = str(video), "video", True  # loop: --frames may exceed the clip

    expected_s = args.frames / args.fps
    if args.trace:
        trace, phases = load_trace_csv(args.trace), []
        phases = [f"row {i + 1}" for i in range(len(trace.states))]
    else:
        trace, phases = story_trace(expected_s)

    server = create_server(ServerSettings(host="127.0.0.1", port=0, bundles=(bundle_root,), metrics_port=None,
                                          discovery=False, max_batch_size=1,
                                          intra_op_threads=args.server_threads))
    socket_path = args.socket or os.path.join(tempfile.gettempdir(), f"splitinfer-{os.getuid()}",
                                              f"demo-{os.getpid()}.sock")
    agent = control = link = None
    finished = False
    reference: Optional[ReferenceWorker] = None
    try:
        config = build_config({
            "bundle": str(bundle_root),
            "server.address": server.address,
            "server.discovery": False,
            "server.compression": "auto",  # codec cuts pack and entropy-code as the bundle says (our server)
            "source.kind": kind,
            "source.uri": uri,
            "source.fps_cap": args.fps,
            "source.loop": loop,
            "runtime.max_frames": args.frames,
            "runtime.deadline_ms": args.deadline_ms,
            "runtime.threads": args.device_threads,
            "runtime.emulated_slowdown": args.device_slowdown,
            "policy.objective": args.objective,
            "policy.slo_ms": args.slo_ms,
            "results.sink": "none",
            "agent.agent_id": "demo",
        })
        reference = ReferenceWorker(bundle_root)
        source = TeeSource(open_source(config.source), tap=reference.submit)
        inner = GrpcTransport(server.address, options_from_config(config.server))
        link = EmulatedTransport(inner, LinkEmulator(trace))
        start_unix_ms = time.time() * 1000.0
        hint = f"watch it live from another terminal:  splitctl watch --socket {socket_path}"
        out.write(f"server {server.address} serving {', '.join(sorted(m.name for m in server.models()))}\n")
        out.write(f"link: emulated ({len(trace.states)} phases over ~{expected_s:.0f} s: "
                  + "; ".join(f"{n} from {s.time_s:g} s: {s.describe()}" for n, s in zip(phases, trace.states)) + ")\n")
        out.write(hint + "\n")
        out.flush()
        from protos.bundle import Side, read_bundle

        manifest = read_bundle(bundle_root, Side.EDGE, check_hashes=False).manifest
        labels = cut_labels(manifest)
        view = DemoView(out, headless=args.headless, link=link, phases=phases, control_hint=hint,
                        start_unix_ms=start_unix_ms, labels=labels)
        agent = EdgeAgent(config, transport=link, sink=view, source=source)
        view.agent = agent
        agent.start()
        control = start_control_server(agent, socket_path=socket_path, profiles=agent.profiles)
        # the video is paced at --fps; allow generously for slow machines before giving up
        finished = agent.run_until_done(timeout_s=expected_s * 3 + 120)
        if not finished:
            out.write("\nsplitinfer demo: the agent did not finish in time; stopping it\n")
            agent.stop()
        snapshot = agent.snapshot()
        reference.finish()
        summary = summarize(view.rows, frames_captured=snapshot.frames_captured,
                            frames_dropped=snapshot.frames_dropped, reference=dict(reference.top1),
                            phases=phases, link=link, wall_s=time.monotonic() - wall_start,
                            reference_detections=reference.detections, head_share=head_shares(manifest))
        summary["bundle"] = f"{snapshot.bundle_name}@{snapshot.bundle_version}"
        summary["setup"] = (f"device {args.device_threads} ONNX Runtime thread(s)"
                            + (f", emulated {args.device_slowdown:g}x slower than this CPU (sleep-padded runs)"
                               if args.device_slowdown > 1 else "")
                            + f", server {args.server_threads} "
                            f"intra-op thread(s), same machine over loopback; objective {args.objective}"
                            + (f" (SLO {args.slo_ms:g} ms)" if args.slo_ms else ""))
        summary["agent_errors"] = list(agent.errors)
        out.write(render_summary(summary) + "\n")
        out.write(f"(run `splitctl watch --socket PATH` during a demo to follow decisions live; "
                  f"the socket was {socket_path})\n")
        if args.summary_json:
            pathlib.Path(args.summary_json).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return 0 if summary["frames_equal_results"] and not agent.errors else 1
    finally:
        if control is not None:
            control.stop()
        if agent is not None and not finished:
            agent.stop(timeout_s=5.0)
        if link is not None:
            link.close()
        if reference is not None:
            reference.finish(timeout_s=5.0)
        server.stop(0.5)
