"""Open Inference Protocol messages <-> the agent's values (used by :mod:`edge_agent.transport_grpc`).

Requests use ``raw_input_contents``; responses may carry ``raw_output_contents`` or typed
``contents`` (stock Triton's Python backend answers raw). Pure conversion: no network.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from edge_agent.types import OffloadRequest
from protos import inference_pb2, wire
from protos.errors import WireError

__all__ = ["advisory_ms", "request_to_proto", "response_to_outputs"]


def request_to_proto(request: OffloadRequest) -> inference_pb2.ModelInferRequest:
    msg = inference_pb2.ModelInferRequest(model_name=request.model_name, model_version=request.model_version,
                                          id=request.request_id)
    wire.set_parameters(msg.parameters, request.parameters)
    for tensor in request.inputs:
        inp = msg.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
        wire.set_parameters(inp.parameters, tensor.parameters)
        msg.raw_input_contents.append(tensor.raw)
    for name in request.output_names:
        msg.outputs.add(name=name)
    return msg


def response_to_outputs(msg: inference_pb2.ModelInferResponse) -> dict[str, np.ndarray]:
    """Output tensors as numpy arrays (BYTES as object arrays); WireError when malformed."""
    outputs: dict[str, np.ndarray] = {}
    raw = list(msg.raw_output_contents)
    if raw and len(raw) != len(msg.outputs):
        raise WireError(f"response has {len(msg.outputs)} outputs but {len(raw)} raw_output_contents")
    for i, out in enumerate(msg.outputs):
        shape = tuple(int(d) for d in out.shape)
        compression = str(wire.parameters_from_proto(out.parameters).get("compression", ""))
        try:
            if raw:
                value = wire.array_from_raw(out.datatype, shape, raw[i], compression=compression)
            else:
                value = wire.array_from_contents(out.datatype, shape, wire.contents_from_proto(out.contents))
        except WireError as exc:
            raise WireError(f"output {out.name!r} {exc}") from None
        outputs[out.name] = np.array(value, dtype=object).reshape(shape) if isinstance(value, list) else value
    return outputs


def advisory_ms(msg: inference_pb2.ModelInferResponse, key: str) -> Optional[float]:
    if key not in msg.parameters:
        return None
    value = wire.parameter_value(msg.parameters[key])
    return float(value) / 1000.0 if isinstance(value, (int, float)) and not isinstance(value, bool) else None
