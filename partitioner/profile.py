"""Latency profiles: the only partitioner module that times ONNX Runtime.

A measurement runs a model on a fixed real input, discards ``warmup`` runs, then
reports the median of ``runs`` timed runs (``time.perf_counter`` around
``session.run``), with ``threads`` intra-op threads (0 lets ONNX Runtime choose).
For the ``input`` cut the edge-side cost is JPEG encoding of the frame, so
:func:`time_jpeg_encode` measures that instead of a head.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import onnx

from protos import bundle_pb2


@dataclass(frozen=True)
class TimingConfig:
    """How to time: intra-op threads (0 = ONNX Runtime's default), warm-up and timed runs."""

    threads: int = 1
    warmup: int = 5
    runs: int = 20

    def __post_init__(self) -> None:
        if self.threads < 0 or self.warmup < 0 or self.runs < 1:
            raise ValueError(f"{self} is invalid; expected threads >= 0, warmup >= 0, runs >= 1")


def describe_device() -> str:
    """A short description of this machine, e.g. ``"x86_64 AMD EPYC (2 cores)"``.

    On a Raspberry Pi the device-tree model string is used (``"Raspberry Pi 4 Model B Rev 1.4"``).
    """
    model = ""
    try:
        with open("/proc/device-tree/model", "rb") as fh:
            model = fh.read().rstrip(b"\0").decode(errors="replace").strip()
    except OSError:
        pass
    if not model:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.lower().startswith(("model name", "hardware")):
                        model = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
    model = model or platform.processor() or "unknown cpu"
    return f"{platform.machine()} {model} ({os.cpu_count() or 1} cores)"


def _session(model: onnx.ModelProto | bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _median_ms(call: Callable[[], object], timing: TimingConfig) -> float:
    for _ in range(timing.warmup):
        call()
    samples = []
    for _ in range(timing.runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(samples))


def time_model(model: onnx.ModelProto | bytes, feed: Mapping[str, np.ndarray], timing: TimingConfig = TimingConfig()) -> float:
    """Median latency in ms of one ``session.run`` of ``model`` on ``feed``."""
    session = _session(model, timing.threads)
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in feed]
    if missing:
        raise ValueError(f"feed lacks model inputs {missing}; has {sorted(feed)}")
    inputs = {n: feed[n] for n in names}
    outputs = [o.name for o in session.get_outputs()]
    return _median_ms(lambda: session.run(outputs, inputs), timing)


def head_outputs(head: onnx.ModelProto, feed: Mapping[str, np.ndarray], threads: int = 1) -> dict[str, np.ndarray]:
    """The head's outputs for ``feed`` (the tail's input feed when timing a tail)."""
    session = _session(head, threads)
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {i.name: feed[i.name] for i in session.get_inputs()})
    return dict(zip(names, values))


def time_jpeg_encode(frame_bgr: np.ndarray, quality: int, timing: TimingConfig = TimingConfig(),
                     spec: bundle_pb2.InputSpec | None = None) -> float:
    """Median ms to JPEG-encode ``frame_bgr`` (the edge's work for the ``input`` cut); with ``spec``,
    downscaled to the model's input first, as the agent sends it by default."""
    from protos.preprocess import encode_jpeg, model_sized

    return _median_ms(lambda: encode_jpeg(frame_bgr if spec is None else model_sized(frame_bgr, spec), quality), timing)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def make_profile(head_ms: float, tail_ms: float, timing: TimingConfig, device: str | None = None) -> bundle_pb2.LatencyProfile:
    import onnxruntime as ort

    return bundle_pb2.LatencyProfile(
        device=device or describe_device(),
        threads=timing.threads,
        runs=timing.runs,
        head_ms=head_ms,
        tail_ms=tail_ms,
        onnxruntime_version=ort.__version__,
        measured_at=_now(),
    )


def profile_cut(
    head: onnx.ModelProto | bytes | None,
    tail: onnx.ModelProto | bytes | None,
    head_feed: Mapping[str, np.ndarray],
    tail_feed: Mapping[str, np.ndarray] | None,
    timing: TimingConfig = TimingConfig(),
    *,
    edge_ms_without_head: float = 0.0,
    device: str | None = None,
) -> tuple[bundle_pb2.LatencyProfile, bundle_pb2.LatencyProfile]:
    """(edge profile, cloud profile) of one cut measured on this machine.

    The edge profile's ``head_ms`` is the head's median latency (``edge_ms_without_head``
    when there is no head, e.g. JPEG encoding for the ``input`` cut); the cloud profile's
    ``tail_ms`` is the tail's (0 without a tail).
    """
    head_ms = time_model(head, head_feed, timing) if head is not None else edge_ms_without_head
    tail_ms = 0.0
    if tail is not None:
        if tail_feed is None:
            raise ValueError("a tail needs a feed to be timed")
        tail_ms = time_model(tail, tail_feed, timing)
    return make_profile(head_ms, 0.0, timing, device), make_profile(0.0, tail_ms, timing, device)


def upsert_profile(profiles, new: bundle_pb2.LatencyProfile) -> None:
    """Replace the profile of the same device and thread count in a repeated field, or append."""
    for i, old in enumerate(profiles):
        if old.device == new.device and old.threads == new.threads:
            profiles[i].CopyFrom(new)
            return
    profiles.append(new)


def profile_bundle(
    root: str | os.PathLike[str],
    frame_bgr: np.ndarray,
    timing: TimingConfig = TimingConfig(),
    *,
    device: str | None = None,
) -> list[tuple[str, float]]:
    """Time every head of the bundle at ``root`` on ``frame_bgr`` here (JPEG encoding for
    the ``input`` cut) and store the edge profiles in its manifest; (cut id, head ms) pairs.

    Only ``manifest.json`` and ``edge/`` are needed, as on a Pi.
    """
    from protos import bundle as bundle_io
    from protos.preprocess import preprocess_bgr

    bundle = bundle_io.read_bundle(root, bundle_io.Side.EDGE)
    feed = {bundle.manifest.input.tensor.name: preprocess_bgr(frame_bgr, bundle.manifest.input)}
    device = device or describe_device()
    measured: dict[str, bundle_pb2.LatencyProfile] = {}
    for cut in bundle.manifest.cuts:
        if cut.HasField("head"):
            head_ms = time_model(bundle.path(cut.head).read_bytes(), feed, timing)
        else:
            head_ms = time_jpeg_encode(frame_bgr, bundle.manifest.input.jpeg_quality, timing, bundle.manifest.input)
        measured[cut.id] = make_profile(head_ms, 0.0, timing, device)

    def mutate(manifest: bundle_pb2.Manifest) -> None:
        for cut in manifest.cuts:
            if cut.id in measured:
                upsert_profile(cut.edge_profiles, measured[cut.id])

    bundle_io.update_manifest(root, mutate, bundle_io.Side.EDGE)
    return [(cut_id, p.head_ms) for cut_id, p in measured.items()]
