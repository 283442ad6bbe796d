"""Export a PyTorch module to ONNX (torch imported lazily, inside the function)."""
from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Sequence

logger = logging.getLogger(__name__)

MIN_OPSET = 17


def export_onnx(
    module: Any,
    path: str | os.PathLike[str],
    input_shape: Sequence[int],
    *,
    opset: int = MIN_OPSET,
    input_name: str = "input",
    output_names: Sequence[str] | None = None,
) -> None:
    """Write ``module`` (eval mode) as an ONNX file with a dynamic batch dimension.

    Uses the TorchScript-based exporter (``dynamo=False``), whose tensor names follow the
    module tree (``/features/features.6/Add_output_0``), so users recognise their cuts.
    ``input_shape`` includes the batch dimension (e.g. ``(1, 3, 224, 224)``); dim 0 of the
    input and of every output is exported as the symbolic ``batch``. Outputs are named
    ``output`` (one output) or ``output_0``, ``output_1``... unless ``output_names`` says
    otherwise. Raises ``ValueError`` for ``opset < 17``.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old; expected >= {MIN_OPSET}")
    if len(input_shape) < 1 or any(int(d) <= 0 for d in input_shape):
        raise ValueError(f"input_shape {list(input_shape)} must list positive dims, batch first")
    import torch

    module = module.eval()
    dummy = torch.zeros(*[int(d) for d in input_shape], dtype=torch.float32)
    with torch.no_grad():
        probe = module(dummy)
    count = len(probe) if isinstance(probe, (tuple, list)) else 1
    if output_names is None:
        output_names = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    if len(output_names) != count:
        raise ValueError(f"output_names {list(output_names)} name {len(output_names)} outputs; the module returns {count}")
    dynamic_axes = {name: {0: "batch"} for name in [input_name, *output_names]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (dummy,),
            os.fspath(path),
            dynamo=False,
            opset_version=opset,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    logger.info("exported %s to %s (opset %d)", type(module).__name__, path, opset)
