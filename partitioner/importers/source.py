"""What a converted model came from: :class:`SourceInfo`, recorded in the bundle manifest.

Kept free of TensorFlow so that the pipeline and the manifest writer can name a source
without importing a converter.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
from dataclasses import dataclass

import onnx
from google.protobuf import json_format

from protos import bundle_pb2
from protos.source_format import FORMATS, validate_source_format

#: The ONNX ``metadata_props`` key under which a converted model carries its SourceInfo
#: (protobuf JSON of ``SourceFormat``), so a saved conversion keeps its provenance.
METADATA_KEY = "splitinfer.source_format"


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

    def to_proto(self) -> bundle_pb2.SourceFormat:
        """The manifest's ``SourceFormat`` record (checked)."""
        record = bundle_pb2.SourceFormat(
            format=self.format, file_name=self.file_name, sha256=self.sha256, converter=self.converter,
            converter_version=self.converter_version, framework_version=self.framework_version,
            inputs=list(self.inputs), outputs=list(self.outputs), pre_quantized=self.pre_quantized,
        )
        validate_source_format(record, source="the converted model")
        return record

    @classmethod
    def from_proto(cls, record: bundle_pb2.SourceFormat) -> SourceInfo:
        return cls(format=record.format, file_name=record.file_name, sha256=record.sha256,
                   converter=record.converter, converter_version=record.converter_version,
                   framework_version=record.framework_version, inputs=tuple(record.inputs),
                   outputs=tuple(record.outputs), pre_quantized=record.pre_quantized)


def attach_source_info(model: onnx.ModelProto, info: SourceInfo) -> onnx.ModelProto:
    """``model`` with ``info`` in its metadata (replacing an earlier record); in place, returned."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=METADATA_KEY, value=json_format.MessageToJson(info.to_proto(), indent=None))
    return model


def source_info_of(model: onnx.ModelProto) -> SourceInfo | None:
    """The SourceInfo a converted model carries in its metadata, or None."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            record = bundle_pb2.SourceFormat()
            json_format.Parse(prop.value, record)
            validate_source_format(record, source=f"model metadata {METADATA_KEY!r}")
            return SourceInfo.from_proto(record)
    return None


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
