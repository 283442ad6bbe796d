"""Protobuf <-> domain values for the inference service (the server side's only converter).

Conversion is faithful and does not validate: a request with mismatched raw entries or contents is
turned into domain values as sent, and the data plane judges it (so validation is transport-agnostic).
Wire-level helpers (typed contents, InferParameter values) are `protos.wire`'s; this module only maps
messages to the dataclasses of `cloud_server.domain` and back. It imports no other server module but
`domain` and `errors`.
"""

from __future__ import annotations

from cloud_server.domain import (
    InferInput,
    InferRequest,
    InferResponse,
    ModelStats,
    RepositoryConfig,
    StatDuration,
    TailModel,
    TensorSignature,
)
from cloud_server.errors import RegistryError
from protos import inference_pb2 as pb
from protos.bundle import BUNDLE_HASH_PARAMETER
from protos.wire import contents_from_proto, parameters_from_proto, set_parameters

__all__ = [
    "request_from_proto",
    "response_to_proto",
    "model_metadata_to_proto",
    "model_config_to_proto",
    "repository_config_from_proto",
    "statistics_to_proto",
    "index_to_proto",
]

_DATATYPE_TO_TYPE = {
    "BOOL": pb.TYPE_BOOL, "UINT8": pb.TYPE_UINT8, "UINT16": pb.TYPE_UINT16, "UINT32": pb.TYPE_UINT32,
    "UINT64": pb.TYPE_UINT64, "INT8": pb.TYPE_INT8, "INT16": pb.TYPE_INT16, "INT32": pb.TYPE_INT32,
    "INT64": pb.TYPE_INT64, "FP16": pb.TYPE_FP16, "FP32": pb.TYPE_FP32, "FP64": pb.TYPE_FP64,
    "BYTES": pb.TYPE_STRING, "BF16": pb.TYPE_BF16,
}
_TYPE_TO_DATATYPE = {value: key for key, value in _DATATYPE_TO_TYPE.items()}


# ---------------------------------------------------------------------- inference


def request_from_proto(request: pb.ModelInferRequest) -> InferRequest:
    return InferRequest(
        model_name=request.model_name,
        model_version=request.model_version,
        id=request.id,
        parameters=parameters_from_proto(request.parameters),
        inputs=tuple(
            InferInput(
                name=inp.name,
                datatype=inp.datatype,
                shape=tuple(int(d) for d in inp.shape),
                parameters=parameters_from_proto(inp.parameters),
                contents=contents_from_proto(inp.contents) if inp.HasField("contents") else {},
            )
            for inp in request.inputs
        ),
        requested_outputs=tuple(out.name for out in request.outputs),
        raw_input_contents=tuple(request.raw_input_contents),
        output_classes={out.name: parameters_from_proto(out.parameters)["classification"]
                        for out in request.outputs if "classification" in out.parameters},
    )


def response_to_proto(response: InferResponse) -> pb.ModelInferResponse:
    msg = pb.ModelInferResponse(model_name=response.model_name, model_version=response.model_version, id=response.id)
    set_parameters(msg.parameters, response.parameters)
    for out in response.outputs:
        msg.outputs.add(name=out.name, datatype=out.datatype, shape=list(out.shape))
        msg.raw_output_contents.append(out.raw)
    return msg


# ---------------------------------------------------------------------- models


def _tensor_metadata(sig: TensorSignature) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=sig.name, datatype=sig.datatype, shape=list(sig.shape))


def model_metadata_to_proto(model: TailModel, versions: list[str]) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=model.name,
        versions=versions,
        platform=model.platform,
        inputs=[_tensor_metadata(s) for s in model.inputs],
        outputs=[_tensor_metadata(s) for s in model.outputs],
    )


def model_config_to_proto(model: TailModel, *, max_batch_size: int, max_queue_delay_us: int) -> pb.ModelConfig:
    """Triton's ModelConfig: dims exclude the batch dimension when the model is batched. A repository
    model reports the config it was loaded with (format, reshape, label_filename included)."""
    if model.config:
        loaded = pb.ModelConfig.FromString(model.config)
        loaded.name = model.name
        loaded.platform = loaded.platform or model.platform
        return loaded
    skip = 1 if model.batched else 0
    config = pb.ModelConfig(
        name=model.name,
        platform=model.platform,
        backend="onnxruntime",
        max_batch_size=max_batch_size if model.batched else 0,
        default_model_filename="model.onnx",
    )
    for sig in model.inputs:
        config.input.add(name=sig.name, data_type=_DATATYPE_TO_TYPE[sig.datatype], dims=list(sig.shape[skip:]))
    for sig in model.outputs:
        config.output.add(name=sig.name, data_type=_DATATYPE_TO_TYPE[sig.datatype], dims=list(sig.shape[skip:]))
    config.instance_group.add(count=1, kind=pb.ModelInstanceGroup.KIND_CPU)
    if model.batched and max_batch_size > 1:
        config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    if model.cut_id:
        config.parameters["splitinfer_cut"].string_value = model.cut_id
    if model.bundle_hash:
        config.parameters[BUNDLE_HASH_PARAMETER].string_value = model.bundle_hash
    return config


# ---------------------------------------------------------------------- statistics and repository


def _duration(d: StatDuration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def statistics_to_proto(stats: list[ModelStats]) -> pb.ModelStatisticsResponse:
    msg = pb.ModelStatisticsResponse()
    for s in stats:
        entry = msg.model_stats.add(
            name=s.name,
            version=s.version,
            last_inference=s.last_inference_ms,
            inference_count=s.inference_count,
            execution_count=s.execution_count,
        )
        inf = entry.inference_stats
        for field in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
            getattr(inf, field).CopyFrom(_duration(getattr(s, field)))
        for size in sorted(s.batch_stats):
            b = s.batch_stats[size]
            entry.batch_stats.add(
                batch_size=size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
    return msg


def index_to_proto(rows: list[tuple[str, str, str, str]]) -> pb.RepositoryIndexResponse:
    msg = pb.RepositoryIndexResponse()
    for name, version, state, reason in rows:
        msg.models.add(name=name, version=version, state=state, reason=reason)
    return msg



def repository_config_from_proto(config: pb.ModelConfig, *, source: str = "config.pbtxt") -> RepositoryConfig:
    """A parsed Triton ModelConfig -> RepositoryConfig (batch dim prepended when batched); RegistryError
    naming `source` for a data_type with no Open Inference Protocol datatype."""
    batched = config.max_batch_size > 0

    def signature(t: pb.ModelInput | pb.ModelOutput) -> TensorSignature:
        datatype = _TYPE_TO_DATATYPE.get(t.data_type)
        if datatype is None:
            raise RegistryError(f"{source}: tensor {t.name!r} has data_type {pb.DataType.Name(t.data_type)}; "
                                "expected a TYPE_* value such as TYPE_FP32")
        dims = tuple(int(d) for d in t.dims)
        return TensorSignature(name=t.name, datatype=datatype, shape=((-1,) + dims) if batched else dims)

    return RepositoryConfig(
        name=config.name,
        platform=config.platform,
        backend=config.backend,
        batched=batched,
        inputs=tuple(signature(t) for t in config.input),
        outputs=tuple(signature(t) for t in config.output),
        default_model_filename=config.default_model_filename,
    )
