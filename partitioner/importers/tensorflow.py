"""TensorFlow frozen graphs, SavedModels and ``.tflite`` files to ONNX, through tf2onnx.

Workstation only: TensorFlow and tf2onnx come with the ``tensorflow`` extra and are
imported inside the functions, never by the edge agent or the cloud server. Every
function returns the ONNX ``ModelProto`` in memory with a :class:`SourceInfo` naming the
format and converter versions, and raises :class:`~partitioner.errors.ModelLoadError`
for a file that cannot be read and :class:`~partitioner.errors.UnsupportedModel` when
the converter left operators that are not ONNX (tf2onnx keeps going past an op it
cannot convert; the result would not run).

Tensor names are TensorFlow's: ``"image_tensor:0"``; a name without an output index
means output 0.
"""
from __future__ import annotations

import difflib
import logging
import os
import pathlib
from typing import Any, Sequence

import onnx

from partitioner.errors import ModelLoadError, UnsupportedModel
from partitioner.importers.source import SourceInfo, attach_source_info, file_sha256

logger = logging.getLogger(__name__)

#: Operator domains the converted model may use (ONNX and ONNX-ML).
_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})


def convert_frozen_graph(
    path: str | os.PathLike[str],
    *,
    inputs: list[str],
    outputs: list[str],
    input_shapes: dict[str, list[int]] | None = None,
    opset: int = 17,
) -> tuple[onnx.ModelProto, SourceInfo]:
    """Convert a TensorFlow frozen ``GraphDef`` (``.pb``) between ``inputs`` and ``outputs``.

    Starting at an inner tensor (``Preprocessor/sub:0``) or stopping before the outputs cuts
    the graph's own pre/post-processing away. ``input_shapes`` overrides the shapes
    TensorFlow declares (e.g. ``{"image_tensor:0": [1, 300, 300, 3]}``).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such TensorFlow frozen graph; expected an existing .pb file")
    inputs, outputs = _tensor_names(inputs, "inputs"), _tensor_names(outputs, "outputs")
    shapes = _shape_override(input_shapes, inputs)
    tf, tf2onnx = _import_tensorflow()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError, or a RuntimeWarning from the C++ parser
        raise ModelLoadError(f"{path}: not a TensorFlow GraphDef ({type(exc).__name__}: {exc})") from exc
    if not graph_def.node:
        raise ModelLoadError(f"{path}: not a TensorFlow GraphDef (no nodes); expected a frozen graph .pb")
    _check_names_in_graph(path, graph_def, inputs + outputs)
    try:
        model, _ = tf2onnx.convert.from_graph_def(
            graph_def, name=path.stem, input_names=inputs, output_names=outputs, opset=opset,
            shape_override=shapes,
        )
    except Exception as exc:  # tf2onnx and TensorFlow raise many unrelated types
        raise ModelLoadError(f"{path}: tf2onnx could not convert the graph: {type(exc).__name__}: {exc}") from exc
    info = SourceInfo(
        format="tensorflow-frozen-graph", file_name=path.name, sha256=file_sha256(path), converter="tf2onnx",
        converter_version=tf2onnx.__version__, framework_version=tf.__version__,
        inputs=tuple(inputs), outputs=tuple(outputs),
    )
    return attach_source_info(_checked(model, path), info), info


def convert_saved_model(
    path: str | os.PathLike[str],
    *,
    signature: str = "serving_default",
    tag: str = "serve",
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    input_shapes: dict[str, list[int]] | None = None,
    opset: int = 17,
) -> tuple[onnx.ModelProto, SourceInfo]:
    """Convert a TensorFlow SavedModel folder (its ``signature``, or inner ``inputs``/``outputs``)."""
    path = pathlib.Path(path)
    if not (path / "saved_model.pb").is_file():
        raise ModelLoadError(f"{path}: not a TensorFlow SavedModel; expected a folder holding saved_model.pb")
    in_names = _tensor_names(inputs, "inputs") if inputs else None
    out_names = _tensor_names(outputs, "outputs") if outputs else None
    tf, tf2onnx = _import_tensorflow()
    from tf2onnx import tf_loader

    try:
        graph_def, in_names, out_names = tf_loader.from_saved_model(
            os.fspath(path), in_names, out_names, tag=[tag], signatures=[signature],
        )
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: cannot load the SavedModel (tag {tag!r}, signature {signature!r}): {type(exc).__name__}: {exc}"
        ) from exc
    shapes = _shape_override(input_shapes, list(in_names))
    try:
        model, _ = tf2onnx.convert.from_graph_def(
            graph_def, name=path.name, input_names=in_names, output_names=out_names, opset=opset,
            shape_override=shapes,
        )
    except Exception as exc:
        raise ModelLoadError(f"{path}: tf2onnx could not convert the SavedModel: {type(exc).__name__}: {exc}") from exc
    info = SourceInfo(
        format="tensorflow-saved-model", file_name=path.name, sha256=file_sha256(path), converter="tf2onnx",
        converter_version=tf2onnx.__version__, framework_version=tf.__version__,
        inputs=tuple(in_names), outputs=tuple(out_names),
    )
    return attach_source_info(_checked(model, path), info), info


#: Node types that are never a model output (bookkeeping, not values).
_NOT_OUTPUTS = frozenset({"NoOp", "Const", "Assert", "Placeholder", "SaveV2", "RestoreV2", "VarHandleOp",
                          "VariableV2", "Identity_n"})


def frozen_graph_ends(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """A frozen graph's own ends: its placeholders, and the nodes nothing reads (output 0 of each)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such TensorFlow frozen graph; expected an existing .pb file")
    tf, _ = _import_tensorflow()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a TensorFlow GraphDef ({type(exc).__name__}: {exc})") from exc
    read = {name.lstrip("^").split(":")[0] for node in graph_def.node for name in node.input}
    inputs = [f"{node.name}:0" for node in graph_def.node if node.op == "Placeholder"]
    outputs = [f"{node.name}:0" for node in graph_def.node if node.name not in read and node.op not in _NOT_OUTPUTS]
    if not inputs or not outputs:
        raise ModelLoadError(f"{path}: cannot tell the graph's inputs ({inputs}) and outputs ({outputs}); "
                             "name them with --inputs and --outputs")
    return inputs, outputs


#: Operators that carry a model's own quantization (a pre-quantized ``.tflite`` becomes these).
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
})


def convert_tflite(
    path: str | os.PathLike[str],
    *,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    opset: int = 17,
) -> tuple[onnx.ModelProto, SourceInfo]:
    """Convert a TensorFlow Lite flatbuffer with tf2onnx's TFLite path.

    tflite2onnx 0.4.1 (the converter that needs no TensorFlow) was tried on the real files
    and refused both: efficientnet_lite3 ("Per-tensor support only currently": its weights
    are quantized per channel) and movenet_lightning ("Unsupported TFLite OP: 53 CAST").
    A quantized model keeps its own quantization as QuantizeLinear/DequantizeLinear pairs;
    :attr:`SourceInfo.pre_quantized` says so, and the partitioner applies no second pass.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such TensorFlow Lite model; expected an existing .tflite file")
    with open(path, "rb") as handle:
        header = handle.read(8)
    if header[4:8] != b"TFL3":
        raise ModelLoadError(f"{path}: not a TensorFlow Lite flatbuffer (file identifier {header[4:8]!r}, expected b'TFL3')")
    tf, tf2onnx = _import_tensorflow()
    try:
        model, _ = tf2onnx.convert.from_tflite(
            os.fspath(path), input_names=list(inputs) if inputs else None,
            output_names=list(outputs) if outputs else None, opset=opset,
        )
    except Exception as exc:
        raise ModelLoadError(f"{path}: tf2onnx could not convert the TFLite model: {type(exc).__name__}: {exc}") from exc
    model = _checked(model, path)
    info = SourceInfo(
        format="tflite", file_name=path.name, sha256=file_sha256(path), converter="tf2onnx",
        converter_version=tf2onnx.__version__, framework_version=tf.__version__,
        inputs=tuple(i.name for i in model.graph.input), outputs=tuple(o.name for o in model.graph.output),
        pre_quantized=any(node.op_type in QUANTIZED_OPS for node in _all_nodes(model.graph)),
    )
    return attach_source_info(model, info), info


def _import_tensorflow() -> tuple[Any, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as exc:
        raise ModelLoadError(
            f"converting a TensorFlow model needs TensorFlow and tf2onnx ({exc}); "
            "install them with: pip install 'splitinfer[tensorflow]'"
        ) from exc
    return tf, tf2onnx


def _tensor_names(names: Sequence[str] | None, what: str) -> list[str]:
    if not names:
        raise ValueError(f"{what}: expected at least one TensorFlow tensor name such as 'image_tensor:0'")
    result = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{what}: tensor name {name!r} is not a non-empty string")
        name = name.strip()
        result.append(name if ":" in name else f"{name}:0")
    return result


def _shape_override(shapes: dict[str, list[int]] | None, inputs: list[str]) -> dict[str, list[int]] | None:
    if not shapes:
        return None
    result = {}
    for name, shape in shapes.items():
        full = name if ":" in name else f"{name}:0"
        if full not in inputs:
            raise ValueError(f"input_shapes: {name!r} is not one of the inputs {inputs}")
        if not shape or any(not isinstance(d, int) or d <= 0 and d != -1 for d in shape):
            raise ValueError(f"input_shapes[{name!r}] = {shape!r}: expected positive sizes (-1 for a dynamic one)")
        result[full] = [int(d) for d in shape]
    return result


def _check_names_in_graph(path: pathlib.Path, graph_def: Any, names: list[str]) -> None:
    nodes = {node.name for node in graph_def.node}
    missing = [name for name in names if name.rsplit(":", 1)[0] not in nodes]
    if missing:
        hints = {name: difflib.get_close_matches(name.rsplit(":", 1)[0], nodes, n=3) for name in missing}
        detail = "; ".join(f"{name!r} (nearest: {', '.join(hints[name]) or 'none'})" for name in missing)
        raise ValueError(f"{path}: tensors not in the graph: {detail}")


def _checked(model: onnx.ModelProto, path: pathlib.Path) -> onnx.ModelProto:
    """Refuse a conversion that left TensorFlow operators behind; run the ONNX checker."""
    leftovers = sorted({f"{node.domain}:{node.op_type}" for node in _all_nodes(model.graph)
                        if node.domain not in _ONNX_DOMAINS})
    if leftovers:
        raise UnsupportedModel(
            f"{path}: the converter left operators ONNX Runtime cannot run: {', '.join(leftovers)}; "
            "choose --inputs/--outputs that leave them out"
        )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise ModelLoadError(f"{path}: the converted model is not valid ONNX: {first_line}") from exc
    logger.info("converted %s: %d nodes, opset %d", path, len(model.graph.node),
                max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0))
    return model


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)
