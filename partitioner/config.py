"""What ``partition`` is asked to do: one frozen value, checked when it is made.

:class:`PartitionConfig`'s field defaults are the only definition of each default; the
CLI (:mod:`partitioner.cli`) reads them for its help text and builds the value from
flags, environment and TOML through :mod:`protos.settings`.
"""
from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass

from partitioner.bottleneck_config import BottleneckConfig
from partitioner.codecs import WIRE_CODECS
from partitioner.evaluation import DEFAULT_THRESHOLD
from partitioner.fidelity import GATE_MODES, TASKS, Gate

#: The model ``partition`` builds when given this word instead of a path.
DEFAULT_MODEL = "mobilenet_v2"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class PartitionConfig:
    """Everything ``partition`` needs; invalid values raise ``ValueError`` on construction,
    quoting the field and the value."""

    model: str
    out_dir: pathlib.Path
    model_name: str = ""
    # Source tensor names to start/stop at (TensorFlow names like "Preprocessor/sub:0" for
    # .pb/.tflite/SavedModel sources): cut the model's own pre/post-processing away. () = its own.
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    cuts: tuple[str, ...] = ()
    max_cuts: int = 6
    max_tensors: int = 3
    calibration: pathlib.Path | None = None
    calibration_frames: int = 32
    fidelity_source: pathlib.Path | None = None  # None = the sample videos calibration did not use
    fidelity_frames: int = 200
    verify_frames: int = 8
    task: str = ""  # "" = from the outputs: one [N, C] output is a classifier, anything else "other"
    gate: str = "baseline"  # or "absolute" (fidelity >= threshold)
    margin: float = 0.02  # the baseline gate's allowance below the cloud-only JPEG pipeline
    # FP32 confidence above which a variant must always agree. 0.8: on the held-out sample footage the
    # cloud-only JPEG q90 pipeline itself flips 4 of 101 MobileNetV2 frames with FP32 confidence >= 0.5
    # and 1 of 75 at >= 0.6, none at >= 0.7; "confident" must be a level where the baseline never flips.
    confident_at: float = 0.8
    threshold: float = DEFAULT_THRESHOLD
    # partitioner.ptq method; "" = ptq.DEFAULT_METHOD, the one benchmarks/ptq_bench.py measured best
    # (nncf-fast: MobileNetV2 on held-out footage, KL to FP32 closest to the q90 JPEG baseline's, 0.28x size).
    quantization: str = ""
    # How fidelity runs INT8 variants: "exact" (the quantized graph op by op: what a Pi's ONNX Runtime
    # computes), "fused" (this host's default kernels) or "auto" (exact on x86 without VNNI, whose fused
    # u8s8 kernels saturate 16-bit pair sums; benchmarks/ptq_bench.py measures both).
    int8_arithmetic: str = "auto"
    wire_codec: str = "int8"
    # Feature-codec variants of each mid-graph cut (issue 13, partitioner.codec_stage): () none, ("auto",) or
    # names like "q4+zstd", "pca16+q4p"; the passing one with the fewest bytes ships as a cut of its own.
    feature_codecs: tuple[str, ...] = ()
    # A learned bottleneck at one cut (issue 13 part 2, partitioner.bottleneck_stage): cut "" = none.
    bottleneck: BottleneckConfig = BottleneckConfig()
    quantize_heads: bool = True
    tail_fp16: bool = False
    threads: int = 1
    profile_runs: int = 20
    profile_warmup: int = 5
    overwrite: bool = False
    jpeg_quality: int = 90
    top_k: int = 5
    labels: tuple[str, ...] = ()
    input_size: tuple[int, int] = (0, 0)  # (height, width); 0 = from the model's input shape
    resize_shorter_px: int = 256
    color_order: str = "RGB"
    layout: str = ""  # "" = from the model's input shape; else "NCHW" or "NHWC"
    pixel_scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        def bad(field_: str, value: object, expected: str) -> ValueError:
            return ValueError(f"{field_}={value!r} is invalid; expected {expected}")

        if not isinstance(self.model, str) or not self.model:
            raise bad("model", self.model, f"a path to an .onnx, .pb or .tflite file, a SavedModel folder, "
                                           f"or {DEFAULT_MODEL!r}")
        for name in ("inputs", "outputs"):
            names = getattr(self, name)
            if isinstance(names, tuple) and not all(isinstance(n, str) and n.strip() for n in names):
                raise bad(name, names, "non-empty tensor names")
        if not isinstance(self.out_dir, pathlib.Path):
            raise bad("out_dir", self.out_dir, "a pathlib.Path")
        for name in ("cuts", "labels", "input_size", "mean", "std", "inputs", "outputs"):
            if not isinstance(getattr(self, name), tuple):
                raise bad(name, getattr(self, name), "a tuple")
        if self.wire_codec not in WIRE_CODECS:
            raise bad("wire_codec", self.wire_codec, f"one of {', '.join(WIRE_CODECS)}")
        if not isinstance(self.feature_codecs, tuple):
            raise bad("feature_codecs", self.feature_codecs, "a tuple of codec names, or ('auto',)")
        if self.feature_codecs != ("auto",):
            from partitioner.codec_fit import parse_codec

            for name in self.feature_codecs:
                parse_codec(name)  # a ValueError names the codec and the expected form
        if not isinstance(self.bottleneck, BottleneckConfig):
            raise bad("bottleneck", self.bottleneck, "a BottleneckConfig")
        if not 0.0 < self.threshold <= 1.0:
            raise bad("threshold", self.threshold, "a fraction in (0, 1]")
        for name in ("calibration_frames", "fidelity_frames", "verify_frames", "profile_runs", "max_tensors", "top_k"):
            if getattr(self, name) < 1:
                raise bad(name, getattr(self, name), ">= 1")
        if self.max_cuts < 2:
            raise bad("max_cuts", self.max_cuts, ">= 2 (the input and output ends)")
        if self.threads < 0:
            raise bad("threads", self.threads, ">= 0 (0 = ONNX Runtime's default)")
        if self.profile_warmup < 0:
            raise bad("profile_warmup", self.profile_warmup, ">= 0")
        if not 1 <= self.jpeg_quality <= 100:
            raise bad("jpeg_quality", self.jpeg_quality, "1..100")
        if len(self.input_size) != 2 or any(d < 0 for d in self.input_size) or (0 in self.input_size and any(self.input_size)):
            raise bad("input_size", self.input_size, "(height, width), both > 0, or (0, 0) for the model's own size")
        if self.resize_shorter_px < 0:
            raise bad("resize_shorter_px", self.resize_shorter_px, ">= 0 (0 = resize straight to the input size)")
        if self.color_order not in ("RGB", "BGR"):
            raise bad("color_order", self.color_order, "'RGB' or 'BGR'")
        if self.layout not in ("", "NCHW", "NHWC"):
            raise bad("layout", self.layout, "'NCHW' or 'NHWC' (or empty for the model's own)")
        if not self.pixel_scale > 0:
            raise bad("pixel_scale", self.pixel_scale, "> 0, e.g. 0.00392156862745098 (1/255) or 1")
        if self.task not in ("", *TASKS):
            raise bad("task", self.task, f"one of {', '.join(TASKS)} (or empty to infer it)")
        if self.int8_arithmetic not in ("auto", "exact", "fused"):
            raise bad("int8_arithmetic", self.int8_arithmetic, "one of auto, exact, fused")
        if self.gate not in GATE_MODES:
            raise bad("gate", self.gate, f"one of {', '.join(GATE_MODES)}")
        from partitioner.ptq import METHODS

        if self.quantization and self.quantization not in METHODS:
            raise bad("quantization", self.quantization, f"one of {', '.join(METHODS)}")
        for name in ("margin", "confident_at"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, getattr(self, name), "a fraction in [0, 1]")
        if len(self.mean) not in (1, 3) or len(self.std) != len(self.mean) or any(s <= 0 for s in self.std):
            raise bad("mean/std", (self.mean, self.std), "1 or 3 values each, std > 0")
        if self.model_name and not _MODEL_NAME.match(self.model_name):
            raise bad("model_name", self.model_name, "letters, digits, '_', '.', '-'")

    @property
    def fidelity_gate(self) -> Gate:
        """The gate every optimized variant must pass."""
        return Gate(mode=self.gate, margin=self.margin, threshold=self.threshold, confident_at=self.confident_at)

    @property
    def bundle_model_name(self) -> str:
        """``model_name``, else the model file's stem made safe (``mobilenet_v2`` for the default)."""
        if self.model_name:
            return self.model_name
        if self.model == DEFAULT_MODEL:
            return DEFAULT_MODEL
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", pathlib.Path(self.model).stem).strip("_.-")
        return stem or "model"
