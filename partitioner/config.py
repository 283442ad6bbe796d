"""What ``partition`` is asked to do: one frozen value, checked when it is made.

:class:`PartitionConfig`'s field defaults are the only definition of each default; the
CLI (:mod:`partitioner.cli`) reads them for its help text and builds the value from
flags, environment and TOML through :mod:`protos.settings`.
"""
from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass

from partitioner.codecs import WIRE_CODECS
from partitioner.evaluation import DEFAULT_THRESHOLD

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
    cuts: tuple[str, ...] = ()
    max_cuts: int = 6
    max_tensors: int = 3
    calibration: pathlib.Path | None = None
    calibration_frames: int = 32
    fidelity_frames: int = 200
    verify_frames: int = 8
    threshold: float = DEFAULT_THRESHOLD
    wire_codec: str = "int8"
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
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        def bad(field_: str, value: object, expected: str) -> ValueError:
            return ValueError(f"{field_}={value!r} is invalid; expected {expected}")

        if not isinstance(self.model, str) or not self.model:
            raise bad("model", self.model, f"a path to an .onnx file or {DEFAULT_MODEL!r}")
        if not isinstance(self.out_dir, pathlib.Path):
            raise bad("out_dir", self.out_dir, "a pathlib.Path")
        for name in ("cuts", "labels", "input_size", "mean", "std"):
            if not isinstance(getattr(self, name), tuple):
                raise bad(name, getattr(self, name), "a tuple")
        if self.wire_codec not in WIRE_CODECS:
            raise bad("wire_codec", self.wire_codec, f"one of {', '.join(WIRE_CODECS)}")
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
        if len(self.mean) not in (1, 3) or len(self.std) != len(self.mean) or any(s <= 0 for s in self.std):
            raise bad("mean/std", (self.mean, self.std), "1 or 3 values each, std > 0")
        if self.model_name and not _MODEL_NAME.match(self.model_name):
            raise bad("model_name", self.model_name, "letters, digits, '_', '.', '-'")

    @property
    def bundle_model_name(self) -> str:
        """``model_name``, else the model file's stem made safe (``mobilenet_v2`` for the default)."""
        if self.model_name:
            return self.model_name
        if self.model == DEFAULT_MODEL:
            return DEFAULT_MODEL
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", pathlib.Path(self.model).stem).strip("_.-")
        return stem or "model"
