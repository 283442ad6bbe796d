from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FileRef(_message.Message):
    __slots__ = ("path", "sha256", "size_bytes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    path: str
    sha256: str
    size_bytes: int
    def __init__(self, path: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class WireEncoding(_message.Message):
    __slots__ = ("codec", "scale", "zero_point", "compression", "bits", "scales", "zero_points", "axis", "packed_bits", "compression_level")
    CODEC_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINT_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINTS_FIELD_NUMBER: _ClassVar[int]
    AXIS_FIELD_NUMBER: _ClassVar[int]
    PACKED_BITS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_LEVEL_FIELD_NUMBER: _ClassVar[int]
    codec: str
    scale: float
    zero_point: int
    compression: str
    bits: int
    scales: _containers.RepeatedScalarFieldContainer[float]
    zero_points: _containers.RepeatedScalarFieldContainer[int]
    axis: int
    packed_bits: int
    compression_level: int
    def __init__(self, codec: _Optional[str] = ..., scale: _Optional[float] = ..., zero_point: _Optional[int] = ..., compression: _Optional[str] = ..., bits: _Optional[int] = ..., scales: _Optional[_Iterable[float]] = ..., zero_points: _Optional[_Iterable[int]] = ..., axis: _Optional[int] = ..., packed_bits: _Optional[int] = ..., compression_level: _Optional[int] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "datatype", "shape", "encoding")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    encoding: WireEncoding
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., encoding: _Optional[_Union[WireEncoding, _Mapping]] = ...) -> None: ...

class InputSpec(_message.Message):
    __slots__ = ("tensor", "width_px", "height_px", "layout", "color_order", "resize_shorter_px", "pixel_scale", "mean", "std", "jpeg_quality")
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    WIDTH_PX_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_PX_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    COLOR_ORDER_FIELD_NUMBER: _ClassVar[int]
    RESIZE_SHORTER_PX_FIELD_NUMBER: _ClassVar[int]
    PIXEL_SCALE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    tensor: TensorSpec
    width_px: int
    height_px: int
    layout: str
    color_order: str
    resize_shorter_px: int
    pixel_scale: float
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    jpeg_quality: int
    def __init__(self, tensor: _Optional[_Union[TensorSpec, _Mapping]] = ..., width_px: _Optional[int] = ..., height_px: _Optional[int] = ..., layout: _Optional[str] = ..., color_order: _Optional[str] = ..., resize_shorter_px: _Optional[int] = ..., pixel_scale: _Optional[float] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., jpeg_quality: _Optional[int] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("labels", "top_k", "softmax", "output_tensor")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SOFTMAX_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TENSOR_FIELD_NUMBER: _ClassVar[int]
    labels: FileRef
    top_k: int
    softmax: bool
    output_tensor: str
    def __init__(self, labels: _Optional[_Union[FileRef, _Mapping]] = ..., top_k: _Optional[int] = ..., softmax: _Optional[bool] = ..., output_tensor: _Optional[str] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("labels", "decoding", "score_threshold", "iou_threshold", "output_tensors", "graph_postprocess", "candidate_score_threshold", "max_detections", "class_filter", "box_units")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DECODING_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    IOU_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TENSORS_FIELD_NUMBER: _ClassVar[int]
    GRAPH_POSTPROCESS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    CLASS_FILTER_FIELD_NUMBER: _ClassVar[int]
    BOX_UNITS_FIELD_NUMBER: _ClassVar[int]
    labels: FileRef
    decoding: str
    score_threshold: float
    iou_threshold: float
    output_tensors: _containers.RepeatedScalarFieldContainer[str]
    graph_postprocess: str
    candidate_score_threshold: float
    max_detections: int
    class_filter: _containers.RepeatedScalarFieldContainer[str]
    box_units: str
    def __init__(self, labels: _Optional[_Union[FileRef, _Mapping]] = ..., decoding: _Optional[str] = ..., score_threshold: _Optional[float] = ..., iou_threshold: _Optional[float] = ..., output_tensors: _Optional[_Iterable[str]] = ..., graph_postprocess: _Optional[str] = ..., candidate_score_threshold: _Optional[float] = ..., max_detections: _Optional[int] = ..., class_filter: _Optional[_Iterable[str]] = ..., box_units: _Optional[str] = ...) -> None: ...

class OutputSpec(_message.Message):
    __slots__ = ("tensors", "classification", "detection")
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    DETECTION_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    classification: Classification
    detection: Detection
    def __init__(self, tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., classification: _Optional[_Union[Classification, _Mapping]] = ..., detection: _Optional[_Union[Detection, _Mapping]] = ...) -> None: ...

class Verification(_message.Message):
    __slots__ = ("frames", "max_abs_error", "top1_agreement", "cosine", "passed", "reference")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_ERROR_FIELD_NUMBER: _ClassVar[int]
    TOP1_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    COSINE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    frames: int
    max_abs_error: float
    top1_agreement: float
    cosine: float
    passed: bool
    reference: str
    def __init__(self, frames: _Optional[int] = ..., max_abs_error: _Optional[float] = ..., top1_agreement: _Optional[float] = ..., cosine: _Optional[float] = ..., passed: _Optional[bool] = ..., reference: _Optional[str] = ...) -> None: ...

class Fidelity(_message.Message):
    __slots__ = ("frames", "top1_agreement", "cosine", "remedy", "threshold", "value", "passed", "confident_frames", "confident_agreement", "top5_containment", "mean_kl")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    TOP1_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    COSINE_FIELD_NUMBER: _ClassVar[int]
    REMEDY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    CONFIDENT_FRAMES_FIELD_NUMBER: _ClassVar[int]
    CONFIDENT_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    TOP5_CONTAINMENT_FIELD_NUMBER: _ClassVar[int]
    MEAN_KL_FIELD_NUMBER: _ClassVar[int]
    frames: int
    top1_agreement: float
    cosine: float
    remedy: str
    threshold: float
    value: float
    passed: bool
    confident_frames: int
    confident_agreement: float
    top5_containment: float
    mean_kl: float
    def __init__(self, frames: _Optional[int] = ..., top1_agreement: _Optional[float] = ..., cosine: _Optional[float] = ..., remedy: _Optional[str] = ..., threshold: _Optional[float] = ..., value: _Optional[float] = ..., passed: _Optional[bool] = ..., confident_frames: _Optional[int] = ..., confident_agreement: _Optional[float] = ..., top5_containment: _Optional[float] = ..., mean_kl: _Optional[float] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("task", "metric", "gate", "margin", "confident_at", "baseline", "baseline_fidelity", "calibration_sources", "calibration_frames", "evaluation_sources", "evaluation_frames", "quantization", "int8_arithmetic")
    TASK_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    CONFIDENT_AT_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIDELITY_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SOURCES_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FRAMES_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_SOURCES_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FRAMES_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    INT8_ARITHMETIC_FIELD_NUMBER: _ClassVar[int]
    task: str
    metric: str
    gate: str
    margin: float
    confident_at: float
    baseline: float
    baseline_fidelity: Fidelity
    calibration_sources: _containers.RepeatedScalarFieldContainer[str]
    calibration_frames: int
    evaluation_sources: _containers.RepeatedScalarFieldContainer[str]
    evaluation_frames: int
    quantization: str
    int8_arithmetic: str
    def __init__(self, task: _Optional[str] = ..., metric: _Optional[str] = ..., gate: _Optional[str] = ..., margin: _Optional[float] = ..., confident_at: _Optional[float] = ..., baseline: _Optional[float] = ..., baseline_fidelity: _Optional[_Union[Fidelity, _Mapping]] = ..., calibration_sources: _Optional[_Iterable[str]] = ..., calibration_frames: _Optional[int] = ..., evaluation_sources: _Optional[_Iterable[str]] = ..., evaluation_frames: _Optional[int] = ..., quantization: _Optional[str] = ..., int8_arithmetic: _Optional[str] = ...) -> None: ...

class LatencyProfile(_message.Message):
    __slots__ = ("device", "threads", "runs", "head_ms", "tail_ms", "onnxruntime_version", "measured_at")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    HEAD_MS_FIELD_NUMBER: _ClassVar[int]
    TAIL_MS_FIELD_NUMBER: _ClassVar[int]
    ONNXRUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_FIELD_NUMBER: _ClassVar[int]
    device: str
    threads: int
    runs: int
    head_ms: float
    tail_ms: float
    onnxruntime_version: str
    measured_at: str
    def __init__(self, device: _Optional[str] = ..., threads: _Optional[int] = ..., runs: _Optional[int] = ..., head_ms: _Optional[float] = ..., tail_ms: _Optional[float] = ..., onnxruntime_version: _Optional[str] = ..., measured_at: _Optional[str] = ...) -> None: ...

class Cut(_message.Message):
    __slots__ = ("id", "display_name", "tensors", "wire_bytes", "wire_bytes_by_codec", "head", "tail", "head_precision", "tail_precision", "head_flops", "head_params", "tail_flops", "tail_params", "verification", "fidelity", "edge_profiles", "cloud_profiles", "order", "codec", "codec_of", "exit_head", "early_exit")
    class WireBytesByCodecEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_BY_CODEC_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    HEAD_PRECISION_FIELD_NUMBER: _ClassVar[int]
    TAIL_PRECISION_FIELD_NUMBER: _ClassVar[int]
    HEAD_FLOPS_FIELD_NUMBER: _ClassVar[int]
    HEAD_PARAMS_FIELD_NUMBER: _ClassVar[int]
    TAIL_FLOPS_FIELD_NUMBER: _ClassVar[int]
    TAIL_PARAMS_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_FIELD_NUMBER: _ClassVar[int]
    EDGE_PROFILES_FIELD_NUMBER: _ClassVar[int]
    CLOUD_PROFILES_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    CODEC_OF_FIELD_NUMBER: _ClassVar[int]
    EXIT_HEAD_FIELD_NUMBER: _ClassVar[int]
    EARLY_EXIT_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    wire_bytes: int
    wire_bytes_by_codec: _containers.ScalarMap[str, int]
    head: FileRef
    tail: FileRef
    head_precision: str
    tail_precision: str
    head_flops: int
    head_params: int
    tail_flops: int
    tail_params: int
    verification: Verification
    fidelity: Fidelity
    edge_profiles: _containers.RepeatedCompositeFieldContainer[LatencyProfile]
    cloud_profiles: _containers.RepeatedCompositeFieldContainer[LatencyProfile]
    order: int
    codec: CutCodec
    codec_of: str
    exit_head: FileRef
    early_exit: EarlyExit
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., wire_bytes: _Optional[int] = ..., wire_bytes_by_codec: _Optional[_Mapping[str, int]] = ..., head: _Optional[_Union[FileRef, _Mapping]] = ..., tail: _Optional[_Union[FileRef, _Mapping]] = ..., head_precision: _Optional[str] = ..., tail_precision: _Optional[str] = ..., head_flops: _Optional[int] = ..., head_params: _Optional[int] = ..., tail_flops: _Optional[int] = ..., tail_params: _Optional[int] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ..., fidelity: _Optional[_Union[Fidelity, _Mapping]] = ..., edge_profiles: _Optional[_Iterable[_Union[LatencyProfile, _Mapping]]] = ..., cloud_profiles: _Optional[_Iterable[_Union[LatencyProfile, _Mapping]]] = ..., order: _Optional[int] = ..., codec: _Optional[_Union[CutCodec, _Mapping]] = ..., codec_of: _Optional[str] = ..., exit_head: _Optional[_Union[FileRef, _Mapping]] = ..., early_exit: _Optional[_Union[EarlyExit, _Mapping]] = ...) -> None: ...

class EarlyExit(_message.Message):
    __slots__ = ("kind", "threshold", "outputs", "heldout_frames", "exit_rate", "exit_agreement", "target", "train_frames", "epochs", "seed", "heldout_loss", "train_sources", "heldout_sources", "exit_ms")
    KIND_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_FRAMES_FIELD_NUMBER: _ClassVar[int]
    EXIT_RATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FRAMES_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SOURCES_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_SOURCES_FIELD_NUMBER: _ClassVar[int]
    EXIT_MS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    threshold: float
    outputs: _containers.RepeatedScalarFieldContainer[str]
    heldout_frames: int
    exit_rate: float
    exit_agreement: float
    target: float
    train_frames: int
    epochs: int
    seed: int
    heldout_loss: float
    train_sources: _containers.RepeatedScalarFieldContainer[str]
    heldout_sources: _containers.RepeatedScalarFieldContainer[str]
    exit_ms: float
    def __init__(self, kind: _Optional[str] = ..., threshold: _Optional[float] = ..., outputs: _Optional[_Iterable[str]] = ..., heldout_frames: _Optional[int] = ..., exit_rate: _Optional[float] = ..., exit_agreement: _Optional[float] = ..., target: _Optional[float] = ..., train_frames: _Optional[int] = ..., epochs: _Optional[int] = ..., seed: _Optional[int] = ..., heldout_loss: _Optional[float] = ..., train_sources: _Optional[_Iterable[str]] = ..., heldout_sources: _Optional[_Iterable[str]] = ..., exit_ms: _Optional[float] = ...) -> None: ...

class CutCodec(_message.Message):
    __slots__ = ("name", "source_channels", "wire_channels", "bits", "compression", "packed_bits", "needs_splitinfer_server", "encode_ms", "decode_ms", "wire_bytes", "projection")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    WIRE_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    PACKED_BITS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_SPLITINFER_SERVER_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    WIRE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    source_channels: int
    wire_channels: int
    bits: int
    compression: str
    packed_bits: int
    needs_splitinfer_server: bool
    encode_ms: float
    decode_ms: float
    wire_bytes: int
    projection: str
    def __init__(self, name: _Optional[str] = ..., source_channels: _Optional[int] = ..., wire_channels: _Optional[int] = ..., bits: _Optional[int] = ..., compression: _Optional[str] = ..., packed_bits: _Optional[int] = ..., needs_splitinfer_server: _Optional[bool] = ..., encode_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., wire_bytes: _Optional[int] = ..., projection: _Optional[str] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("schema_version", "model_name", "model_version", "content_hash", "created_by", "created_at", "input", "output", "cuts", "full_model", "source", "opset", "evaluation", "full_model_int8", "source_format", "lineage")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CUTS_FIELD_NUMBER: _ClassVar[int]
    FULL_MODEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OPSET_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    FULL_MODEL_INT8_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    model_name: str
    model_version: str
    content_hash: str
    created_by: str
    created_at: str
    input: InputSpec
    output: OutputSpec
    cuts: _containers.RepeatedCompositeFieldContainer[Cut]
    full_model: FileRef
    source: str
    opset: int
    evaluation: Evaluation
    full_model_int8: FileRef
    source_format: SourceFormat
    lineage: Lineage
    def __init__(self, schema_version: _Optional[int] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., content_hash: _Optional[str] = ..., created_by: _Optional[str] = ..., created_at: _Optional[str] = ..., input: _Optional[_Union[InputSpec, _Mapping]] = ..., output: _Optional[_Union[OutputSpec, _Mapping]] = ..., cuts: _Optional[_Iterable[_Union[Cut, _Mapping]]] = ..., full_model: _Optional[_Union[FileRef, _Mapping]] = ..., source: _Optional[str] = ..., opset: _Optional[int] = ..., evaluation: _Optional[_Union[Evaluation, _Mapping]] = ..., full_model_int8: _Optional[_Union[FileRef, _Mapping]] = ..., source_format: _Optional[_Union[SourceFormat, _Mapping]] = ..., lineage: _Optional[_Union[Lineage, _Mapping]] = ...) -> None: ...

class SourceFormat(_message.Message):
    __slots__ = ("format", "file_name", "sha256", "converter", "converter_version", "framework_version", "inputs", "outputs", "pre_quantized")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CONVERTER_FIELD_NUMBER: _ClassVar[int]
    CONVERTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    FRAMEWORK_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PRE_QUANTIZED_FIELD_NUMBER: _ClassVar[int]
    format: str
    file_name: str
    sha256: str
    converter: str
    converter_version: str
    framework_version: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    pre_quantized: bool
    def __init__(self, format: _Optional[str] = ..., file_name: _Optional[str] = ..., sha256: _Optional[str] = ..., converter: _Optional[str] = ..., converter_version: _Optional[str] = ..., framework_version: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[str]] = ..., pre_quantized: _Optional[bool] = ...) -> None: ...

class Lineage(_message.Message):
    __slots__ = ("source_model", "source_sha256", "steps", "train_sources", "heldout_sources", "baseline_fidelity", "metric")
    SOURCE_MODEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SHA256_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SOURCES_FIELD_NUMBER: _ClassVar[int]
    HELDOUT_SOURCES_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIDELITY_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    source_model: str
    source_sha256: str
    steps: _containers.RepeatedCompositeFieldContainer[OptimizationStep]
    train_sources: _containers.RepeatedScalarFieldContainer[str]
    heldout_sources: _containers.RepeatedScalarFieldContainer[str]
    baseline_fidelity: float
    metric: str
    def __init__(self, source_model: _Optional[str] = ..., source_sha256: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[OptimizationStep, _Mapping]]] = ..., train_sources: _Optional[_Iterable[str]] = ..., heldout_sources: _Optional[_Iterable[str]] = ..., baseline_fidelity: _Optional[float] = ..., metric: _Optional[str] = ...) -> None: ...

class LayerRank(_message.Message):
    __slots__ = ("layer", "rank", "full_rank")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    FULL_RANK_FIELD_NUMBER: _ClassVar[int]
    layer: str
    rank: int
    full_rank: int
    def __init__(self, layer: _Optional[str] = ..., rank: _Optional[int] = ..., full_rank: _Optional[int] = ...) -> None: ...

class OptimizationStep(_message.Message):
    __slots__ = ("kind", "kept", "reason", "ratio", "scope", "importance", "energy", "ranks", "distill_seconds", "distill_epochs", "temperature", "feature_weight", "seed", "params", "macs", "latency_ms", "fidelity")
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    DISTILL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DISTILL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MACS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    FIDELITY_FIELD_NUMBER: _ClassVar[int]
    kind: str
    kept: bool
    reason: str
    ratio: float
    scope: str
    importance: str
    energy: float
    ranks: _containers.RepeatedCompositeFieldContainer[LayerRank]
    distill_seconds: float
    distill_epochs: int
    temperature: float
    feature_weight: float
    seed: int
    params: int
    macs: int
    latency_ms: float
    fidelity: float
    def __init__(self, kind: _Optional[str] = ..., kept: _Optional[bool] = ..., reason: _Optional[str] = ..., ratio: _Optional[float] = ..., scope: _Optional[str] = ..., importance: _Optional[str] = ..., energy: _Optional[float] = ..., ranks: _Optional[_Iterable[_Union[LayerRank, _Mapping]]] = ..., distill_seconds: _Optional[float] = ..., distill_epochs: _Optional[int] = ..., temperature: _Optional[float] = ..., feature_weight: _Optional[float] = ..., seed: _Optional[int] = ..., params: _Optional[int] = ..., macs: _Optional[int] = ..., latency_ms: _Optional[float] = ..., fidelity: _Optional[float] = ...) -> None: ...
