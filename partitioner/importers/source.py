"""What a converted model came from: :class:`SourceInfo`, recorded in the bundle manifest.

Kept free of TensorFlow so that the pipeline and the manifest writer can name a source
without importing a converter.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
from dataclasses import dataclass

#: Source formats ``splitinfer partition`` reads, as recorded in ``Manifest.source_format``.
FORMATS = ("onnx", "pytorch", "tensorflow-frozen-graph", "tensorflow-saved-model", "tflite")


@dataclass(frozen=True)
class SourceInfo:
    """A model's source format and the converter that turned it into ONNX.

    ``converter`` is empty for ONNX files; ``framework_version`` is the TensorFlow version
    the converter ran with (empty when none was needed). ``inputs``/``outputs`` are the
    source tensor names the conversion started and stopped at. ``pre_quantized`` says the
    source already carried its own quantization (a uint8/int8 ``.tflite``), so no second
    quantization pass is applied.
    """

    format: str
    file_name: str = ""
    sha256: str = ""
    converter: str = ""
    converter_version: str = ""
    framework_version: str = ""
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    pre_quantized: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"source format {self.format!r} is not one of {', '.join(FORMATS)}")

    def describe(self) -> str:
        """One line for the CLI: ``tflite movenet.tflite via tf2onnx 1.17.0 (TensorFlow 2.21.0)``."""
        text = f"{self.format} {self.file_name}".strip()
        if self.converter:
            text += f" via {self.converter} {self.converter_version}"
            if self.framework_version:
                text += f" (TensorFlow {self.framework_version})"
        if self.pre_quantized:
            text += ", pre-quantized"
        return text


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, or of every file under a folder (a SavedModel), in path order."""
    path = pathlib.Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
