"""Importers: models from other frameworks to ONNX (TensorFlow, TFLite).

Converters are imported inside the functions of each submodule, so importing this
package never imports TensorFlow.
"""
from __future__ import annotations

from partitioner.importers.source import FORMATS, SourceInfo, attach_source_info, source_info_of

__all__ = ["FORMATS", "SourceInfo", "attach_source_info", "source_info_of"]
