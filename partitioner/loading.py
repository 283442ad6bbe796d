"""Reading models from disk or from PyTorch: the only partitioner module (with the bundle
writer) that touches model paths.

- :func:`load_model` reads an ONNX file, external data included, and maps every failure
  to :class:`~partitioner.errors.ModelLoadError` naming the path and the cause.
- :func:`export_torch_module` turns a ``torch.nn.Module`` into a ``ModelProto`` (torch is
  imported lazily, inside the function).
- :func:`load_any_model` reads what ``splitinfer partition`` accepts by its form: an
  ``.onnx`` file, a TensorFlow frozen graph (``.pb``), a SavedModel folder, or a
  ``.tflite`` file (converted by :mod:`partitioner.importers.tensorflow`; TensorFlow is
  imported only then), optionally between inner ``inputs``/``outputs`` tensors, which cuts
  a graph's own pre/post-processing away. The model carries its
  :class:`~partitioner.importers.SourceInfo` in its metadata.
"""
from __future__ import annotations

import difflib
import logging
import os
import pathlib
import tempfile
from typing import Any, Sequence

import onnx
import onnx.utils
from google.protobuf.message import DecodeError

from partitioner.errors import ModelLoadError
from partitioner.importers.source import SourceInfo, attach_source_info, file_sha256, source_info_of
from partitioner.graph import opset_version

logger = logging.getLogger(__name__)


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load an ONNX model with its external data (resolved next to the file).

    Raises :class:`ModelLoadError` when the file is missing, is not a protobuf
    ``ModelProto``, holds no graph, or references external data that is missing or
    truncated; the message names the path and the cause.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such model file; expected an existing .onnx file")
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, OSError) as exc:
        raise ModelLoadError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from exc
    if not model.HasField("graph") or not model.graph.node or model.ir_version <= 0:
        raise ModelLoadError(
            f"{path}: not an ONNX model (ir_version={model.ir_version}, {len(model.graph.node)} nodes); "
            "expected a ModelProto with a graph"
        )
    _load_external_data(model, path)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise ModelLoadError(f"{path}: invalid ONNX model: {first_line}") from exc
    logger.debug("loaded %s: %d nodes, opset %s", path, len(model.graph.node), opset_version(model))
    return model


def load_any_model(
    path: str | os.PathLike[str],
    *,
    inputs: Sequence[str] = (),
    outputs: Sequence[str] = (),
    input_size: tuple[int, int] = (0, 0),
    opset: int = 17,
) -> tuple[onnx.ModelProto, SourceInfo]:
    """The ONNX model for ``path`` and where it came from (see the module docstring).

    ``inputs``/``outputs`` are tensor names of the source (TensorFlow names such as
    ``Preprocessor/sub:0`` for TensorFlow files); empty keeps the model's own. For a frozen
    graph without them, its placeholders are the inputs and the nodes nothing reads are
    the outputs. ``input_size`` (H, W) fixes a TensorFlow image input's symbolic size.
    A pre-quantized ``.tflite`` keeps its quantization; a TensorFlow source's uint8 image input
    and quantized outputs are wrapped as float (:func:`partitioner.importers.adapt.float_image_io`).
    """
    from partitioner.importers.adapt import float_image_io

    path = pathlib.Path(path)
    inputs, outputs = list(inputs), list(outputs)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        from partitioner.importers.tensorflow import convert_saved_model

        model, info = convert_saved_model(path, inputs=inputs or None, outputs=outputs or None, opset=opset)
        model, _ = float_image_io(model)
    elif path.suffix.lower() == ".tflite":
        from partitioner.importers.tensorflow import convert_tflite

        model, info = convert_tflite(path, inputs=inputs or None, outputs=outputs or None, opset=opset)
        model, _ = float_image_io(model)
    elif path.suffix.lower() == ".pb":
        from partitioner.importers.tensorflow import convert_frozen_graph, frozen_graph_ends

        if not inputs or not outputs:
            found_inputs, found_outputs = frozen_graph_ends(path)
            inputs, outputs = inputs or found_inputs, outputs or found_outputs
            logger.info("%s: converting from %s to %s", path.name, inputs, outputs)
        shapes = _image_shapes(inputs, input_size)
        model, info = convert_frozen_graph(path, inputs=inputs, outputs=outputs, input_shapes=shapes, opset=opset)
        model, _ = float_image_io(model)
    else:
        model = load_model(path)
        if inputs or outputs:
            model = extract_between(model, inputs, outputs)
        carried = source_info_of(model)
        if carried is not None and not inputs and not outputs:  # a conversion saved earlier keeps its source
            return model, carried
        info = SourceInfo(format="onnx", file_name=path.name, sha256=file_sha256(path), inputs=tuple(inputs),
                          outputs=tuple(outputs),
                          pre_quantized=any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in model.graph.node))
        attach_source_info(model, info)
    return model, info


def extract_between(model: onnx.ModelProto, inputs: Sequence[str], outputs: Sequence[str]) -> onnx.ModelProto:
    """The part of an ONNX model from ``inputs`` to ``outputs`` (each defaults to the model's own)."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    known = {vi.name for vi in graph.input} | {out for node in graph.node for out in node.output}
    missing = [name for name in [*inputs, *outputs] if name not in known]
    if missing:
        hints = {name: difflib.get_close_matches(name, known, n=3) for name in missing}
        raise ValueError("tensors not in the model: " + "; ".join(
            f"{name!r} (nearest: {', '.join(hints[name]) or 'none'})" for name in missing))
    in_names = list(inputs) or [vi.name for vi in graph.input if vi.name not in initializers]
    out_names = list(outputs) or [o.name for o in graph.output]
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        return onnx.utils.Extractor(inferred).extract_model(in_names, out_names)
    except Exception as exc:  # the extractor raises KeyError/ValueError for names that do not separate the graph
        raise ValueError(f"cannot extract the model from {in_names} to {out_names}: {type(exc).__name__}: {exc}") from exc


def _image_shapes(inputs: Sequence[str], input_size: tuple[int, int]) -> dict[str, list[int]] | None:
    """A TensorFlow image input's NHWC shape at ``input_size`` (one input only)."""
    if not input_size[0] or len(inputs) != 1:
        return None
    return {inputs[0]: [1, input_size[0], input_size[1], 3]}


def _load_external_data(model: onnx.ModelProto, path: pathlib.Path) -> None:
    """Resolve external tensors next to ``path``; name the tensor and file that are missing."""
    base = path.parent
    for tensor in _iter_tensors(model.graph):
        if not onnx.external_data_helper.uses_external_data(tensor):
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = (base / location).resolve()
        if not location or base.resolve() not in target.parents and target != base.resolve():
            raise ModelLoadError(
                f"{path}: tensor {tensor.name!r} points to external data {location!r} outside the model's folder"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"{path}: external data file {location!r} for tensor {tensor.name!r} is missing "
                f"(expected {target})"
            )
        offset = int(info.get("offset", 0) or 0)
        length = info.get("length")
        size = target.stat().st_size
        if length is not None and offset + int(length) > size:
            raise ModelLoadError(
                f"{path}: external data file {location!r} is {size} bytes but tensor {tensor.name!r} "
                f"needs bytes {offset}..{offset + int(length)}"
            )
    try:
        onnx.load_external_data_for_model(model, os.fspath(base))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot read external data: {exc}") from exc


def _iter_tensors(graph: onnx.GraphProto):
    """Initializers and tensor attributes (Constant values), subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _iter_tensors(attr.g)
            for sub in attr.graphs:
                yield from _iter_tensors(sub)


def export_torch_module(
    module: Any,
    input_shape: Sequence[int],
    opset: int = 17,
    *,
    input_name: str = "input",
    output_names: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """Export a ``torch.nn.Module`` (eval mode) to ONNX and return it in memory.

    The batch dimension (dim 0 of ``input_shape``) is dynamic. Export failures become
    :class:`ModelLoadError` naming the module class.
    """
    from partitioner.models.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="splitinfer-export-") as tmp:
        path = pathlib.Path(tmp) / "model.onnx"
        try:
            export_onnx(module, path, input_shape, opset=opset, input_name=input_name, output_names=output_names)
        except ValueError:
            raise
        except Exception as exc:  # torch raises many unrelated types while exporting
            raise ModelLoadError(f"cannot export {type(module).__name__} to ONNX: {exc}") from exc
        return load_model(path)
