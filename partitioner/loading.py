"""Reading models from disk or from PyTorch: the only partitioner module (with the bundle
writer) that touches model paths.

- :func:`load_model` reads an ONNX file, external data included, and maps every failure
  to :class:`~partitioner.errors.ModelLoadError` naming the path and the cause.
- :func:`export_torch_module` turns a ``torch.nn.Module`` into a ``ModelProto`` (torch is
  imported lazily, inside the function).
"""
from __future__ import annotations

import logging
import os
import pathlib
import tempfile
from typing import Any, Sequence

import onnx
from google.protobuf.message import DecodeError

from partitioner.errors import ModelLoadError
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
