"""Importers: models from other frameworks to ONNX (TensorFlow, TFLite).

Converters are imported inside the functions of each submodule, so importing this
package never imports TensorFlow.
"""
from __future__ import annotations

from partitioner.importers.source import FORMATS, SourceInfo

__all__ = ["FORMATS", "SourceInfo"]
