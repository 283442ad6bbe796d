"""What the source model decides when the user did not say (issue 12), before ``prepare``.

:func:`apply_source_defaults` takes the loaded source model and the config and returns
the config to partition with, the manifest's ``SourceFormat`` record, and one line per
decision for the output:

* **Pre-quantized sources** (a uint8 ``.tflite`` such as efficientnet_lite3, or an ONNX
  model with QuantizeLinear/DequantizeLinear): the model keeps its own quantization, so
  heads are not quantized a second time (``quantize_heads`` off; the heads are the
  source's integer graph and are recorded as ``int8``). Its reference outputs are the
  integer model's own, so with ``int8_arithmetic`` auto the splits are judged with the same
  (this host's fused) kernels: judged op by op, the unchanged efficientnet_lite3 agreed with
  itself on only 0.833 of held-out frames (its uint8 softmax has near ties).
* **uint8 pixel inputs** (a TensorFlow source wrapped by
  :func:`partitioner.importers.adapt.float_image_io`) are fed raw 0..255 values: pixel
  scale 1, mean 0, std 1, unless the user set other values than the ImageNet defaults.
* **Symbolic image size**: with no ``--input-size``, a model whose image height/width are
  symbolic gets :func:`default_input_size`: 640x640 for a detector-like model (more than
  one output, or ``--task detection``), 224x224 otherwise, each rounded up to a multiple
  of the model's stride (the product of the strides of Conv and pooling layers along the
  deepest path, capped at :data:`MAX_STRIDE`: an SSD's extra feature layers reach 512,
  which would turn 640 into 1024), instead of stopping.
"""
from __future__ import annotations

import dataclasses
import logging
import math

import onnx

from partitioner.config import DEFAULT_MODEL, IMAGENET_MEAN, IMAGENET_STD, PartitionConfig
from partitioner.graph import graph_inputs, tensor_shape
from partitioner.importers.source import SourceInfo, source_info_of
from protos import bundle_pb2

logger = logging.getLogger(__name__)

#: The base sizes :func:`default_input_size` rounds up to the model's stride.
DETECTOR_SIZE_PX = 640
CLASSIFIER_SIZE_PX = 224
#: The usual output stride of a backbone; deeper strides (detector heads) do not change the size.
MAX_STRIDE = 32
_STRIDED_OPS = frozenset({"Conv", "MaxPool", "AveragePool", "ConvInteger", "QLinearConv"})


def apply_source_defaults(
    config: PartitionConfig, model: onnx.ModelProto
) -> tuple[PartitionConfig, bundle_pb2.SourceFormat, tuple[str, ...]]:
    """(config to partition with, the manifest's source record, the decisions made, in words)."""
    from partitioner.optimize.variants import is_variant

    builtin = config.model == DEFAULT_MODEL or is_variant(config.model)  # a named variant is built in PyTorch too
    info = source_info_of(model) or SourceInfo(format="pytorch" if builtin else "onnx")
    notes: list[str] = []
    if info.pre_quantized:
        if config.quantize_heads:
            config = dataclasses.replace(config, quantize_heads=False)
            notes.append(f"{info.file_name or 'the model'} is pre-quantized: it keeps its own quantization "
                         "(no second quantization pass)")
        if config.int8_arithmetic == "auto":
            # The reference is itself the INT8 model, run with this host's kernels: the splits are
            # judged with the same kernels, so the unchanged model agrees with itself.
            config = dataclasses.replace(config, int8_arithmetic="fused")
    if _raw_pixel_input(model) and (config.mean, config.std, config.pixel_scale) == (
            IMAGENET_MEAN, IMAGENET_STD, PartitionConfig.pixel_scale):
        config = dataclasses.replace(config, pixel_scale=1.0, mean=(0.0,), std=(1.0,))
        notes.append("the model takes uint8 pixels: frames are fed as 0..255 (pixel scale 1, mean 0, std 1)")
    if not config.input_size[0]:
        size = default_input_size(model, detector=config.task == "detection")
        if size is not None:
            config = dataclasses.replace(config, input_size=size)
            notes.append(f"the model's image size is symbolic; using {size[0]}x{size[1]} (the default for a "
                         f"{'detector' if _detector_like(model, config.task) else 'classifier'}, a multiple of its "
                         f"stride {min(model_stride(model), MAX_STRIDE)}; choose with --input-size HxW)")
    for note in notes:
        logger.warning("%s", note)
    return config, info.to_proto(), tuple(notes)


def default_input_size(model: onnx.ModelProto, *, detector: bool = False) -> tuple[int, int] | None:
    """The documented default (H, W) for a model whose one image input has a symbolic size;
    None when the size is fixed (or there is no single 4-D input)."""
    inputs = graph_inputs(model.graph)
    if len(inputs) != 1:
        return None
    shape = tensor_shape(inputs[0])
    if len(shape) != 4:
        return None
    nhwc = isinstance(shape[3], int) and shape[3] in (1, 3) and shape[1] not in (1, 3)
    h, w = (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return None
    base = DETECTOR_SIZE_PX if detector or _detector_like(model, "") else CLASSIFIER_SIZE_PX
    stride = min(model_stride(model), MAX_STRIDE)
    side = math.ceil(base / stride) * stride
    return side, side


def model_stride(model: onnx.ModelProto) -> int:
    """The largest product of Conv/pooling strides along any path from the input (1 if none)."""
    stride: dict[str, int] = {}
    for node in model.graph.node:  # a loaded ONNX graph lists nodes in topological order
        here = max((stride.get(name, 1) for name in node.input if name), default=1)
        if node.op_type in _STRIDED_OPS:
            strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), [1])
            here *= max(strides or [1])
        for out in node.output:
            stride[out] = here
    return max(stride.values(), default=1)


def _detector_like(model: onnx.ModelProto, task: str) -> bool:
    return task == "detection" or len(model.graph.output) > 1


def _raw_pixel_input(model: onnx.ModelProto) -> bool:
    """The image input is followed by the uint8 cast :func:`float_image_io` adds."""
    return any(node.op_type == "Cast" and node.name.endswith("__cast") for node in model.graph.node[:3])
