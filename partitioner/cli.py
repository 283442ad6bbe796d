"""Command-line entry points: ``splitinfer partition``, ``splitinfer profile``, ``splitinfer export-triton``.

Settings for ``partition`` come from, highest first: flags, ``SPLITINFER_PARTITION_<OPTION>``
environment variables (e.g. ``SPLITINFER_PARTITION_THREADS=2``), the ``[partition]``
table of the TOML file given with ``--config``, then the defaults. They are validated
once here and passed down as a frozen :class:`~partitioner.pipeline.PartitionConfig`.
Errors a user can fix print one line and exit with status 2; nothing is left half-written.
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib
import sys
import time
from typing import Any, Sequence

from partitioner.errors import PartitionerError
from protos.errors import ContractError

logger = logging.getLogger(__name__)

ENV_PREFIX = "SPLITINFER_PARTITION_"


# --------------------------------------------------------------------------- progress


class ProgressPrinter:
    """Shows stage progress on stderr: one rewritten line on a terminal, one line per step otherwise."""

    def __init__(self, stream=None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._last_stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        text = f"[{elapsed:6.1f}s] {stage:<13} {done}/{total}"
        if self.tty:
            end = "\n" if done >= total else ""
            self.stream.write("\r" + text.ljust(50) + end)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


# --------------------------------------------------------------------------- partition


def _partition_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="splitinfer partition",
        description="Split a model into verified, quantized head/tail pairs and write a bundle.",
        epilog="Settings: flags > SPLITINFER_PARTITION_<OPTION> env > --config TOML [partition] > defaults.",
    )
    p.add_argument("model", help="an .onnx file (external data next to it) or the word 'mobilenet_v2'")
    p.add_argument("--out", required=True, type=pathlib.Path, help="bundle directory to write (atomically)")
    p.add_argument("--config", type=pathlib.Path, help="TOML file with a [partition] table")
    p.add_argument("--name", dest="model_name", help="model name in the bundle (default: the file stem)")
    p.add_argument("--cuts", help="cuts to ship: tensor names or cut ids separated by ',', '+' joins the tensors of one multi-tensor cut")
    p.add_argument("--max-cuts", type=int, help="keep at most N cuts including input/output (default 6)")
    p.add_argument("--max-tensors", type=int, help="largest multi-tensor cut to consider (default 3)")
    p.add_argument("--calibration", type=pathlib.Path, help="folder of images or a video (default: the sample video)")
    p.add_argument("--calibration-frames", type=int, help="frames for the first INT8 calibration (default 32)")
    p.add_argument("--frames", dest="fidelity_frames", type=int, help="real frames for the fidelity measurement (default 200)")
    p.add_argument("--threshold", type=float, help="minimum top-1 agreement of the quantized pipeline (default 0.99)")
    p.add_argument("--wire-codec", choices=("int8", "fp16", "fp32"), help="how activations travel (default int8)")
    p.add_argument("--no-quantize", dest="quantize_heads", action="store_const", const=False, help="ship FP32 heads")
    p.add_argument("--tail-fp16", action="store_const", const=True, help="convert tails to FP16")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads for profiling (default 1; 0 = all)")
    p.add_argument("--runs", dest="profile_runs", type=int, help="timed runs per profile (default 20)")
    p.add_argument("--input-size", help="HxW when the model's image size is symbolic, e.g. 224x224")
    p.add_argument("--labels", type=pathlib.Path, help="JSON list or text file (one per line) of class names")
    p.add_argument("--overwrite", action="store_const", const=True, help="replace an existing bundle")
    p.add_argument("--report-png", type=pathlib.Path, help="also write the split-computing figure here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("-v", "--verbose", action="store_true", help="log every stage")
    return p


_CONFIG_KEYS = {
    "model_name": str, "cuts": str, "max_cuts": int, "max_tensors": int, "calibration": pathlib.Path,
    "calibration_frames": int, "fidelity_frames": int, "threshold": float, "wire_codec": str,
    "quantize_heads": bool, "tail_fp16": bool, "threads": int, "profile_runs": int, "input_size": str,
    "labels": pathlib.Path, "overwrite": bool, "report_png": pathlib.Path,
}


def _coerce(key: str, value: Any, source: str) -> Any:
    kind = _CONFIG_KEYS[key]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: {key}={value!r} is not a valid {kind.__name__}") from None


def _layered_settings(args: argparse.Namespace, environ: dict[str, str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if args.config is not None:
        import tomllib

        try:
            data = tomllib.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"--config {str(args.config)!r}: {exc}") from None
        table = data.get("partition", {})
        unknown = sorted(set(table) - set(_CONFIG_KEYS))
        if unknown:
            raise ValueError(f"{args.config} [partition]: unknown keys {unknown}; expected some of {sorted(_CONFIG_KEYS)}")
        settings.update({k: _coerce(k, v, str(args.config)) for k, v in table.items()})
    for key in _CONFIG_KEYS:
        env = environ.get(ENV_PREFIX + key.upper())
        if env is not None:
            settings[key] = _coerce(key, env, ENV_PREFIX + key.upper())
    for key in _CONFIG_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    return settings


def _read_labels(path: pathlib.Path) -> tuple[str, ...]:
    import json

    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        labels = json.loads(text)
        if not isinstance(labels, list):
            raise ValueError(f"{path}: expected a JSON list of class names")
        return tuple(str(x) for x in labels)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def build_partition_config(argv: Sequence[str], environ: dict[str, str] | None = None):
    """Parse flags, environment and TOML into a validated PartitionConfig (plus the report path)."""
    from partitioner.pipeline import PartitionConfig

    args = _partition_parser().parse_args(list(argv))
    s = _layered_settings(args, dict(os.environ if environ is None else environ))
    kwargs: dict[str, Any] = {"model": args.model, "out_dir": args.out}
    for key in ("model_name", "max_cuts", "max_tensors", "calibration", "calibration_frames", "fidelity_frames",
                "threshold", "wire_codec", "quantize_heads", "tail_fp16", "threads", "profile_runs", "overwrite"):
        if key in s:
            kwargs[key] = s[key]
    if "cuts" in s and s["cuts"]:
        # ',' separates cuts, '+' joins the tensors of one multi-tensor cut (select_cuts wants ',' there)
        kwargs["cuts"] = tuple(part.strip().replace("+", ",") for part in s["cuts"].split(",") if part.strip())
    if "input_size" in s:
        try:
            h, w = (int(v) for v in s["input_size"].lower().split("x"))
        except ValueError:
            raise ValueError(f"--input-size {s['input_size']!r} is not HxW, e.g. 224x224") from None
        kwargs["input_size"] = (h, w)
    if "labels" in s:
        kwargs["labels"] = _read_labels(s["labels"])
    if args.model != "mobilenet_v2" and not pathlib.Path(args.model).is_file():
        raise ValueError(f"model {args.model!r} is not a file; expected an .onnx path or 'mobilenet_v2'")
    config = PartitionConfig(**kwargs)
    config.validate()
    return config, s.get("report_png"), args


def partition_main(argv: Sequence[str]) -> int:
    try:
        config, report_png, args = build_partition_config(argv)
    except ValueError as exc:
        print(f"splitinfer partition: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from partitioner import report
    from partitioner.pipeline import run_partition

    try:
        result = run_partition(config, ProgressPrinter(enabled=not args.quiet))
    except (PartitionerError, ContractError, ValueError, FileNotFoundError) as exc:
        print(f"splitinfer partition: {exc}", file=sys.stderr)
        return 2
    manifest = result.bundle.manifest
    print(report.format_table(manifest, rejected=[(r.id, r.reason) for r in result.rejected]))
    print(f"\nwrote {result.bundle.root} in {sum(result.stage_seconds.values()):.1f} s")
    if report_png:
        report.plot_report(manifest, report_png)
        print(f"wrote {report_png}")
    return 0


# --------------------------------------------------------------------------- profile


def _profile_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splitinfer profile",
                                description="Re-measure a bundle's edge side (heads) on this device and store the profile in the bundle.")
    p.add_argument("bundle", type=pathlib.Path, help="bundle directory")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1; 0 = all)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per head after warm-up (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs (default 5)")
    p.add_argument("--device", help="device description to record (default: detected)")
    p.add_argument("--frame", type=pathlib.Path, help="image or video to time on (default: the sample video)")
    return p


def _profile_frame(path: pathlib.Path | None):
    from partitioner import calibration

    source = path or calibration.default_calibration_path()
    return calibration.read_frames(source, max_frames=1).frames[0]


def profile_bundle(root: pathlib.Path, *, threads: int = 1, runs: int = 20, warmup: int = 5,
                   device: str | None = None, frame=None) -> list[tuple[str, float]]:
    """Time every head (and JPEG encoding for the input cut) here; write the edge profiles. (cut, head_ms) pairs."""
    from protos import bundle as bundle_io
    from partitioner import profile as profiling
    from protos.preprocess import preprocess_bgr

    bundle = bundle_io.read_bundle(root, bundle_io.Side.EDGE)
    timing = profiling.TimingConfig(threads=threads, warmup=warmup, runs=runs)
    frame = frame if frame is not None else _profile_frame(None)
    x = preprocess_bgr(frame, bundle.manifest.input)
    feed = {bundle.manifest.input.tensor.name: x}
    device = device or profiling.describe_device()
    measured: dict[str, object] = {}
    for cut in bundle.manifest.cuts:
        if cut.HasField("head"):
            head_ms = profiling.time_model(bundle.path(cut.head).read_bytes(), feed, timing)
        else:
            head_ms = profiling.time_jpeg_encode(frame, bundle.manifest.input.jpeg_quality, timing)
        measured[cut.id] = profiling.make_profile(head_ms, 0.0, timing, device)

    def mutate(manifest) -> None:
        for cut in manifest.cuts:
            if cut.id in measured:
                profiling.upsert_profile(cut.edge_profiles, measured[cut.id])

    bundle_io.update_manifest(root, mutate, bundle_io.Side.EDGE)  # a Pi holds only edge/
    return [(cut_id, p.head_ms) for cut_id, p in measured.items()]


def profile_main(argv: Sequence[str]) -> int:
    args = _profile_parser().parse_args(list(argv))
    try:
        frame = _profile_frame(args.frame)
        results = profile_bundle(args.bundle, threads=args.threads, runs=args.runs, warmup=args.warmup,
                                 device=args.device, frame=frame)
    except (PartitionerError, ContractError, ValueError, FileNotFoundError) as exc:
        print(f"splitinfer profile: {exc}", file=sys.stderr)
        return 2
    from partitioner.profile import describe_device

    print(f"edge profile on {args.device or describe_device()}, {args.threads} thread(s), median of {args.runs} runs:")
    for cut_id, ms in results:
        print(f"  {cut_id:<40} {ms:8.2f} ms")
    return 0


# --------------------------------------------------------------------------- export-triton


def export_triton_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="splitinfer export-triton",
                                description="Write a bundle's tails as a Triton model repository (platform onnxruntime_onnx).")
    p.add_argument("bundle", type=pathlib.Path, help="bundle directory")
    p.add_argument("--out", required=True, type=pathlib.Path, help="model repository directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing repository")
    p.add_argument("--max-batch-size", type=int, default=8, help="Triton max_batch_size (default 8)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000, help="dynamic batching delay (default 2000)")
    args = p.parse_args(list(argv))
    if args.max_batch_size < 1 or args.max_queue_delay_us < 0:
        print("splitinfer export-triton: --max-batch-size must be >= 1 and --max-queue-delay-us >= 0", file=sys.stderr)
        return 2
    from partitioner.triton_export import export_triton

    try:
        written = export_triton(args.bundle, args.out, overwrite=args.overwrite, max_batch_size=args.max_batch_size,
                                max_queue_delay_us=args.max_queue_delay_us)
    except (PartitionerError, ContractError, ValueError, FileExistsError) as exc:
        print(f"splitinfer export-triton: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} models to {args.out}:")
    for path in written:
        print(f"  {path.name}")
    return 0
