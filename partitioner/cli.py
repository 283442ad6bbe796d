"""Command-line entry points: ``splitinfer partition``, ``splitinfer profile``, ``splitinfer export-triton``.

Settings for ``partition`` are read by the shared loader (:mod:`protos.settings`), highest
first: flags, ``SPLITINFER_PARTITION_<KEY>`` environment variables (e.g.
``SPLITINFER_PARTITION_THREADS=2``; an unknown one is an error), the ``[partition]`` table
of the TOML file given with ``--config``, then :class:`~partitioner.config.PartitionConfig`'s
defaults. Keys are PartitionConfig's field names plus ``report_png``; the result is one
frozen PartitionConfig, validated on construction.
Errors a user can fix print one line and exit with status 2; nothing is left half-written.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import sys
import time
from typing import Any, Mapping, Optional, Sequence

from partitioner.errors import PartitionerError
from protos import settings
from protos.errors import ContractError
from protos.settings import SettingsError

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

#: Keys that are not PartitionConfig fields.
_EXTRA_KEYS = {"report_png": Optional[pathlib.Path]}


def _default(name: str) -> object:
    """PartitionConfig's default for ``name`` (the one definition of every default)."""
    from partitioner.config import PartitionConfig

    return next(f.default for f in dataclasses.fields(PartitionConfig) if f.name == name)


def _partition_parser() -> argparse.ArgumentParser:
    from partitioner.codecs import WIRE_CODECS
    from partitioner.config import DEFAULT_MODEL

    d = _default
    p = argparse.ArgumentParser(
        prog="splitinfer partition",
        description="Split a model into verified, quantized head/tail pairs and write a bundle.",
        epilog=(f"Settings: flags > {ENV_PREFIX}<KEY> environment variables > the [partition] table of --config "
                "> defaults. Every PartitionConfig field is a key (e.g. verify_frames, jpeg_quality, top_k, "
                "color_order, mean, std), and so is report_png."),
    )
    p.add_argument("model", help=f"an .onnx file (external data next to it), a TensorFlow frozen graph (.pb), "
                                 f"a SavedModel folder, a .tflite file, or the word {DEFAULT_MODEL!r}")
    p.add_argument("--inputs", help="source tensor names to start at, ',' separated (e.g. Preprocessor/sub:0): "
                                    "cuts the model's own preprocessing away (default: its inputs)")
    p.add_argument("--outputs", help="source tensor names to stop at, ',' separated: cuts the model's own "
                                     "postprocessing away (default: its outputs)")
    p.add_argument("--out", required=True, type=pathlib.Path, help="bundle directory to write (atomically)")
    p.add_argument("--config", type=pathlib.Path, help="TOML file with a [partition] table")
    p.add_argument("--name", "--model-name", dest="model_name", help="model name in the bundle (default: the file stem)")
    p.add_argument("--cuts", help="cuts to ship: tensor names or cut ids separated by ',', '+' joins the tensors of one multi-tensor cut")
    p.add_argument("--max-cuts", help=f"keep at most N cuts including input/output (default {d('max_cuts')})")
    p.add_argument("--max-tensors", help=f"largest multi-tensor cut to consider (default {d('max_tensors')})")
    p.add_argument("--calibration", help="folder of images or a video (default: the sample video)")
    p.add_argument("--calibration-frames", help=f"calibration frames for INT8 quantization and the int8 wire (default {d('calibration_frames')})")
    p.add_argument("--frames", "--fidelity-frames", dest="fidelity_frames",
                   help=f"real frames for the fidelity measurement (default {d('fidelity_frames')})")
    p.add_argument("--fidelity-source", help="video or folder of held-out frames for fidelity "
                   "(default: the sample videos calibration did not use)")
    p.add_argument("--task", choices=("classification", "detection", "other"),
                   help="what the outputs are, for the fidelity measure (default: classification for one [N, C] "
                        "output, else other)")
    p.add_argument("--gate", choices=("baseline", "absolute"),
                   help=f"ship an INT8 variant when its fidelity >= the cloud-only JPEG baseline's - margin, "
                        f"or >= --threshold (default {d('gate')})")
    p.add_argument("--margin", help=f"allowance below the JPEG baseline (default {d('margin')})")
    p.add_argument("--confident-at", help=f"FP32 confidence above which a variant must always agree "
                                          f"(default {d('confident_at')})")
    p.add_argument("--threshold", help=f"minimum fidelity of the quantized pipeline with --gate absolute "
                                       f"(default {d('threshold')})")
    p.add_argument("--quantization", help="post-training quantization method of partitioner.ptq "
                                          "(default: its measured best)")
    p.add_argument("--int8-arithmetic", choices=("auto", "exact", "fused"),
                   help="how fidelity runs INT8 variants: exact = op by op, as a Pi computes; fused = this host's "
                        f"kernels; auto = exact on x86 without VNNI (default {d('int8_arithmetic')})")
    p.add_argument("--wire-codec", choices=WIRE_CODECS, help=f"how activations travel (default {d('wire_codec')})")
    p.add_argument("--feature-codecs", help="feature-codec variant cuts (issue 13): 'auto', or codecs like "
                                            "q4+zstd,pca16+q4p; each cut ships the passing one with the fewest bytes")
    _add_bottleneck_arguments(p)
    p.add_argument("--no-quantize", dest="quantize_heads", action="store_const", const=False, help="ship FP32 heads")
    p.add_argument("--tail-fp16", action="store_const", const=True, help="convert tails to FP16")
    p.add_argument("--threads", help=f"ONNX Runtime intra-op threads for profiling (default {d('threads')}; 0 = all)")
    p.add_argument("--runs", "--profile-runs", dest="profile_runs", help=f"timed runs per profile (default {d('profile_runs')})")
    p.add_argument("--input-size", help="HxW the network sees, e.g. 224x224 (default: the model's input shape)")
    p.add_argument("--resize-shorter", dest="resize_shorter_px",
                   help=f"resize the shorter side to N px, then centre-crop; 0 resizes straight to the input size "
                        f"(default {d('resize_shorter_px')})")
    p.add_argument("--mean", help=f"per-channel mean, comma-separated, after pixel scaling (default {d('mean')})")
    p.add_argument("--std", help=f"per-channel std, comma-separated (default {d('std')})")
    p.add_argument("--pixel-scale", help="multiplies each 0..255 pixel before mean/std: 1/255 (default) or 1")
    p.add_argument("--color-order", choices=("RGB", "BGR"), help=f"channel order (default {d('color_order')})")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), help="the input tensor's layout (default: from its shape)")
    p.add_argument("--jpeg-quality", help=f"JPEG quality of the input cut and the baseline (default {d('jpeg_quality')})")
    p.add_argument("--labels", help="JSON list or text file (one per line) of class names")
    p.add_argument("--overwrite", action="store_const", const=True, help="replace an existing bundle")
    p.add_argument("--report-png", help="also write the split-computing figure here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("-v", "--verbose", action="store_true", help="log every stage")
    from partitioner.exit_stage import add_exit_arguments  # --exits CUT,... (issue 16)

    add_exit_arguments(p)
    return p


def _add_bottleneck_arguments(p: argparse.ArgumentParser) -> None:
    """--bottleneck CUT and its options (PartitionConfig.bottleneck, keys bottleneck.<field>)."""
    from partitioner.bottleneck_config import BottleneckConfig

    b = BottleneckConfig()
    p.add_argument("--bottleneck", dest="bottleneck.cut",
                   help="train a learned bottleneck at this cut (id or tensor name) and ship it as the cut "
                        "<cut>_bottleneck when it passes the fidelity gate (issue 13)")
    p.add_argument("--bottleneck-channels", dest="bottleneck.channels",
                   help=f"code maps at half the cut's resolution (default {b.channels})")
    p.add_argument("--bottleneck-bits", dest="bottleneck.bits", help=f"bits per code (default {b.bits})")
    p.add_argument("--bottleneck-seconds", dest="bottleneck.seconds",
                   help=f"training time cap in seconds (default {b.seconds:g})")
    p.add_argument("--bottleneck-epochs", dest="bottleneck.epochs", help=f"training epoch cap (default {b.epochs})")
    p.add_argument("--bottleneck-views", dest="bottleneck.views",
                   help=f"augmented training views (default {b.views})")
    p.add_argument("--bottleneck-train-source", dest="bottleneck.train_source",
                   help="video, image or folder to train on (default: bikes.mp4, vtest.avi and the sample photos; "
                        "never the held-out footage)")
    p.add_argument("--bottleneck-no-kd", dest="bottleneck.kd", action="store_const", const=False,
                   help="no distillation on the outputs (feature losses only)")


def read_labels(path: pathlib.Path) -> tuple[str, ...]:
    """Class names from a JSON list or a text file with one name per line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        labels = json.loads(text)
        if not isinstance(labels, list):
            raise ValueError(f"{path}: expected a JSON list of class names")
        return tuple(str(x) for x in labels)
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _parse_cuts(value: Any, source: str, base_dir: pathlib.Path) -> tuple[str, ...]:
    """',' separates cuts; '+' joins the tensors of one multi-tensor cut (select_cuts wants ',' there)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise SettingsError(f"{source}: cuts = {value!r}: expected cut ids or tensor names separated by ','")
    return tuple(item.strip().replace("+", ",") for item in items if item.strip())


def _parse_names(value: Any, source: str, base_dir: pathlib.Path) -> tuple[str, ...]:
    """Tensor names separated by ',' (or a TOML list)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise SettingsError(f"{source}: {value!r}: expected tensor names separated by ','")
    return tuple(item.strip() for item in items if item.strip())


def _parse_input_size(value: Any, source: str, base_dir: pathlib.Path) -> tuple[int, int]:
    parts = value.lower().split("x") if isinstance(value, str) else value
    try:
        h, w = (int(part) for part in parts)
    except (TypeError, ValueError):
        raise SettingsError(f"{source}: input_size = {value!r}: expected HxW, e.g. 224x224") from None
    return h, w


def _parse_pixel_scale(value: Any, source: str, base_dir: pathlib.Path) -> float:
    """A number or a fraction such as ``1/255``."""
    text = str(value).strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise SettingsError(f"{source}: pixel_scale = {value!r}: expected a number or a fraction like 1/255") from None


def _parse_labels(value: Any, source: str, base_dir: pathlib.Path) -> tuple[str, ...]:
    """A list of names (TOML), or a labels file; relative paths are relative to the TOML file."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise SettingsError(f"{source}: labels = {value!r}: expected a labels file or a list of class names")
    path = pathlib.Path(os.path.expanduser(str(value).strip()))
    path = path if path.is_absolute() else base_dir / path
    try:
        return read_labels(path)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{source}: labels = {str(value)!r}: {exc}") from exc


def partition_schema() -> settings.Schema:
    """The keys of ``splitinfer partition``: PartitionConfig's fields but the model and output, plus report_png."""
    from partitioner.config import PartitionConfig

    return settings.schema_of(
        PartitionConfig, env_prefix=ENV_PREFIX, toml_table="partition", strict_env=True,
        parsers={"cuts": _parse_cuts, "input_size": _parse_input_size, "labels": _parse_labels,
                 "pixel_scale": _parse_pixel_scale, "inputs": _parse_names, "outputs": _parse_names},
        extra=_EXTRA_KEYS, exclude=("model", "out_dir"),
    )


def build_partition_config(argv: Sequence[str], environ: Mapping[str, str] | None = None):
    """Parse flags, environment and TOML into a validated PartitionConfig; (config, report png path, parsed args)."""
    from partitioner.config import PartitionConfig
    from partitioner.models import BUILTIN_MODELS

    args = _partition_parser().parse_args(list(argv))
    schema = partition_schema()
    flags = {key: getattr(args, key, None) for key in schema.keys}
    resolved = settings.resolve(schema, toml_path=args.config, env=os.environ if environ is None else environ,
                                flags=flags)
    values = dict(resolved.values)
    report_png = values.pop("report_png", None)
    from partitioner.optimize.variants import VARIANTS

    if args.model not in (*BUILTIN_MODELS, *VARIANTS) and not pathlib.Path(args.model).exists():
        raise ValueError(f"model {args.model!r} is not a file; expected an .onnx, .pb or .tflite path, "
                         f"a SavedModel folder, or one of {', '.join((*BUILTIN_MODELS, *VARIANTS))}")
    config = settings.build(PartitionConfig, values, model=args.model, out_dir=args.out)
    return config, report_png, args


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
    from partitioner.exit_stage import run_exit_stage

    try:
        with_exits = run_exit_stage(result.bundle.root, args)
    except (ContractError, ValueError, OSError) as exc:
        print(f"splitinfer partition: exits: {exc}", file=sys.stderr)
        return 2
    manifest = (with_exits or result.bundle).manifest
    print(report.format_table(manifest, rejected=[(r.id, r.reason) for r in result.rejected]))
    print(f"\nwrote {result.bundle.root} in {sum(result.stage_seconds.values()):.1f} s")
    if report_png:
        report.plot_report(manifest, report_png)
        print(f"wrote {report_png}")
    return 0


# --------------------------------------------------------------------------- profile


def _profile_parser() -> argparse.ArgumentParser:
    from partitioner.profile import TimingConfig

    timing = TimingConfig()
    p = argparse.ArgumentParser(prog="splitinfer profile",
                                description="Re-measure a bundle's edge side (heads) on this device and store the profile in the bundle.")
    p.add_argument("bundle", type=pathlib.Path, help="bundle directory")
    p.add_argument("--threads", type=int, default=timing.threads, help="ONNX Runtime intra-op threads (default %(default)s; 0 = all)")
    p.add_argument("--runs", type=int, default=timing.runs, help="timed runs per head after warm-up (default %(default)s)")
    p.add_argument("--warmup", type=int, default=timing.warmup, help="untimed warm-up runs (default %(default)s)")
    p.add_argument("--device", help="device description to record (default: detected)")
    p.add_argument("--frame", type=pathlib.Path, help="image or video to time on (default: the sample video)")
    return p


def _profile_frame(path: pathlib.Path | None):
    from partitioner import calibration

    source = path or calibration.default_calibration_path()
    return calibration.read_frames(source, max_frames=1).frames[0]


def profile_main(argv: Sequence[str]) -> int:
    from partitioner import profile as profiling

    args = _profile_parser().parse_args(list(argv))
    try:
        timing = profiling.TimingConfig(threads=args.threads, warmup=args.warmup, runs=args.runs)
        results = profiling.profile_bundle(args.bundle, _profile_frame(args.frame), timing, device=args.device)
    except (PartitionerError, ContractError, ValueError, FileNotFoundError) as exc:
        print(f"splitinfer profile: {exc}", file=sys.stderr)
        return 2
    print(f"edge profile on {args.device or profiling.describe_device()}, {args.threads} thread(s), median of {args.runs} runs:")
    for cut_id, ms in results:
        print(f"  {cut_id:<40} {ms:8.2f} ms")
    return 0


# --------------------------------------------------------------------------- export-triton


def export_triton_main(argv: Sequence[str]) -> int:
    from partitioner import triton_export

    p = argparse.ArgumentParser(prog="splitinfer export-triton",
                                description="Write a bundle's tails as a Triton model repository (platform onnxruntime_onnx).")
    p.add_argument("bundle", type=pathlib.Path, help="bundle directory")
    p.add_argument("--out", required=True, type=pathlib.Path, help="model repository directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing repository")
    p.add_argument("--max-batch-size", type=int, default=triton_export.DEFAULT_MAX_BATCH_SIZE,
                   help="Triton max_batch_size (default %(default)s)")
    p.add_argument("--max-queue-delay-us", type=int, default=triton_export.DEFAULT_MAX_QUEUE_DELAY_US,
                   help="dynamic batching delay (default %(default)s)")
    p.add_argument("--backend", choices=triton_export.BACKENDS, default="onnxruntime",
                   help="onnxruntime_onnx models (default), or Triton's Python backend running the tails with "
                        "ONNX Runtime, whose 'input' model decodes the edge's JPEG")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per python-backend model (default 1)")
    args = p.parse_args(list(argv))
    if args.max_batch_size < 1 or args.max_queue_delay_us < 0:
        print("splitinfer export-triton: --max-batch-size must be >= 1 and --max-queue-delay-us >= 0", file=sys.stderr)
        return 2
    try:
        written = triton_export.export_triton(args.bundle, args.out, overwrite=args.overwrite, max_batch_size=args.max_batch_size,
                                max_queue_delay_us=args.max_queue_delay_us, backend=args.backend,
                                threads=args.threads)
    except (PartitionerError, ContractError, ValueError, FileExistsError) as exc:
        print(f"splitinfer export-triton: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} models to {args.out}:")
    for path in written:
        print(f"  {path.name}")
    return 0
