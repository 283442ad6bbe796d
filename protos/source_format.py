"""A bundle's source format (issue 12): reading and checking ``Manifest.source_format``.

``splitinfer partition`` accepts ONNX files, PyTorch modules, TensorFlow frozen graphs and
SavedModels, and ``.tflite`` files; the manifest records which one the bundle was cut
from, the converter and its version (tf2onnx), the TensorFlow version it ran with, and
whether the source was already quantized (then no second quantization pass ran). The
field is absent in bundles from before issue 12. This module imports no converter; every
error is a :class:`ManifestError` naming the field and the value.
"""
from __future__ import annotations

import re

from protos import bundle_pb2
from protos.errors import ManifestError

__all__ = ["FORMATS", "CONVERTED_FORMATS", "source_format_of", "validate_source_format"]

FORMATS = ("onnx", "pytorch", "tensorflow-frozen-graph", "tensorflow-saved-model", "tflite")
#: Formats that reach ONNX through a converter, which must then be named with its version.
CONVERTED_FORMATS = ("tensorflow-frozen-graph", "tensorflow-saved-model", "tflite")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def validate_source_format(record: bundle_pb2.SourceFormat, *, source: str = "manifest.json") -> None:
    """Raise :class:`ManifestError` naming the first field that is missing or out of range."""

    def bad(field: str, message: str) -> ManifestError:
        return ManifestError(f"source_format.{field}", message, source=source)

    if record.format not in FORMATS:
        raise bad("format", f"{record.format!r} is not one of {', '.join(FORMATS)}")
    if record.sha256 and not _SHA256.match(record.sha256):
        raise bad("sha256", f"{record.sha256!r} is not a lowercase hex sha256 (64 characters)")
    if record.format in CONVERTED_FORMATS:
        if not record.converter:
            raise bad("converter", f"is empty; a {record.format} model reaches ONNX through a converter (e.g. tf2onnx)")
        if not record.converter_version:
            raise bad("converter_version", f"is empty; expected the version of {record.converter!r}")
    if record.pre_quantized and record.format != "tflite" and record.format != "onnx":
        raise bad("pre_quantized", f"is set for a {record.format} model; only .tflite and ONNX sources carry "
                                   "their own quantization")


def source_format_of(manifest: bundle_pb2.Manifest) -> bundle_pb2.SourceFormat | None:
    """The checked source format of ``manifest``, or None for a bundle that does not record one."""
    if not manifest.HasField("source_format"):
        return None
    validate_source_format(manifest.source_format)
    return manifest.source_format
