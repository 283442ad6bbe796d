"""A tiny real detector bundle for the ROI-mode tests, built inline with onnx.helper.

The model finds the bright object on a dark scene: input [N,3,32,32] (pixels / 255) ->
mean over the colours -> ``> 0.5`` ("mask" [N,1,32,32], the cut "mask") -> the first and
last input row and column that hold a bright pixel -> one box [N,1,4] normalised to the
input, its score (1 when something is bright, else 0) and class 1 ("object"). The manifest
declares detection postprocessing (boxes_scores_labels, box units "normalized"), like the
bundle of a real detector. Cuts: "input" (JPEG to the server), "mask" (head on the edge,
tail on the server), "mask_q" (the mask as uint8 codes: QuantizeLinear in the head,
DequantizeLinear in the tail), "output" (the full model on the device).
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from protos import detection
from protos.bundle import Bundle, BundleWriter
from tests.bundles import FULL, BundleSpec, CutSpec, InputSpec, Profile, Tensor, build_manifest

SIZE = 32
Q_SCALE = 1 / 255
LABELS = ["background", "object"]
OUTPUTS = ("boxes", "scores", "classes")

_F = TensorProto.FLOAT
_HEAD = [
    helper.make_node("ReduceMean", ["input"], ["grey"], axes=[1], keepdims=1),
    helper.make_node("Greater", ["grey", "half"], ["bright"]),
    helper.make_node("Cast", ["bright"], ["mask"], to=_F),
]
_TAIL = [
    helper.make_node("ReduceMax", ["mask"], ["cols"], axes=[2], keepdims=0),  # [N,1,W]: a bright pixel in column x
    helper.make_node("ReduceMax", ["mask"], ["rows"], axes=[3], keepdims=0),  # [N,1,H]
    helper.make_node("ArgMax", ["cols"], ["x0"], axis=2, keepdims=0),
    helper.make_node("ArgMax", ["cols"], ["x1"], axis=2, keepdims=0, select_last_index=1),
    helper.make_node("ArgMax", ["rows"], ["y0"], axis=2, keepdims=0),
    helper.make_node("ArgMax", ["rows"], ["y1"], axis=2, keepdims=0, select_last_index=1),
    helper.make_node("Concat", ["x0", "y0", "x1", "y1"], ["corners"], axis=1),  # [N,4] int64
    helper.make_node("Cast", ["corners"], ["corners_f"], to=_F),
    helper.make_node("Add", ["corners_f", "last_pixel"], ["edges"]),  # x1, y1 exclusive
    helper.make_node("Div", ["edges", "size"], ["box"]),
    helper.make_node("Unsqueeze", ["box", "axis1"], ["boxes"]),  # [N,1,4]
    helper.make_node("ReduceMax", ["mask"], ["score"], axes=[2, 3], keepdims=0),  # [N,1]
    helper.make_node("Mul", ["score", "zero"], ["no_class"]),
    helper.make_node("Add", ["no_class", "one"], ["class_id"]),
    helper.make_node("Identity", ["score"], ["scores"]),
    helper.make_node("Identity", ["class_id"], ["classes"]),
]
_CONSTANTS = {
    "half": np.array(0.5, np.float32),
    "last_pixel": np.array([0, 0, 1, 1], np.float32),
    "size": np.array(SIZE, np.float32),
    "axis1": np.array([1], np.int64),
    "zero": np.array(0.0, np.float32),
    "one": np.array(1.0, np.float32),
    "q_scale": np.array(Q_SCALE, np.float32),
    "q_zp": np.array(0, np.uint8),
}


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           *, metadata: str = "") -> bytes:
    used = {i for n in nodes for i in n.input}
    inits = [numpy_helper.from_array(v, k) for k, v in _CONSTANTS.items() if k in used]
    model = helper.make_model(helper.make_graph(nodes, "tiny_detector", inputs, outputs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, {detection.METADATA_KEY: metadata})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_detector_bundle(out: pathlib.Path) -> Bundle:
    image = helper.make_tensor_value_info("input", _F, ["N", 3, SIZE, SIZE])
    mask = helper.make_tensor_value_info("mask", _F, ["N", 1, SIZE, SIZE])
    outs = [helper.make_tensor_value_info("boxes", _F, ["N", 1, 4]),
            helper.make_tensor_value_info("scores", _F, ["N", 1]),
            helper.make_tensor_value_info("classes", _F, ["N", 1])]
    settings = dict(score_threshold=0.5, iou_threshold=0.5, max_detections=10, box_units="normalized",
                    output_tensors=list(OUTPUTS))
    full = _model(_HEAD + _TAIL, [image], outs, metadata=detection.settings_json(**settings))
    head = _model(_HEAD, [image], [mask])
    tail = _model(_TAIL, [mask], outs)
    codes = helper.make_tensor_value_info("mask_q", TensorProto.UINT8, ["N", 1, SIZE, SIZE])
    head_q = _model(_HEAD + [helper.make_node("QuantizeLinear", ["mask", "q_scale", "q_zp"], ["mask_q"])],
                    [image], [codes])
    tail_q = _model([helper.make_node("DequantizeLinear", ["mask_q", "q_scale", "q_zp"], ["mask"]), *_TAIL],
                    [codes], outs)
    tensors = (Tensor("boxes", "FP32", (-1, 1, 4)), Tensor("scores", "FP32", (-1, 1)), Tensor("classes", "FP32", (-1, 1)))
    spec = BundleSpec(
        model_name="tiny_detector", created_by="tests/edge_agent", full_model=full,
        input=InputSpec(Tensor("input", "FP32", (-1, 3, SIZE, SIZE)), SIZE, SIZE, mean=(0.0, 0.0, 0.0),
                        std=(1.0, 1.0, 1.0), jpeg_quality=95),
        outputs=tensors,
        cuts=(
            CutSpec("input", (Tensor("input_jpeg", "BYTES", (-1,), codec="jpeg"),), tail=FULL, wire_bytes=3000,
                    cloud_profile=Profile(tail_ms=1.0)),
            CutSpec("mask", (Tensor("mask", "FP32", (-1, 1, SIZE, SIZE)),), head=head, tail=tail,
                    wire_bytes=4 * SIZE * SIZE, edge_profile=Profile(head_ms=10.0), cloud_profile=Profile(tail_ms=1.0)),
            CutSpec("mask_q", (Tensor("mask_q", "UINT8", (-1, 1, SIZE, SIZE), codec="int8", scale=Q_SCALE),),
                    head=head_q, tail=tail_q, wire_bytes=SIZE * SIZE, edge_profile=Profile(head_ms=11.0),
                    cloud_profile=Profile(tail_ms=1.0)),
            CutSpec("output", tensors, edge_profile=Profile(head_ms=40.0)),
        ),
    )
    with BundleWriter(out, overwrite=True) as writer:
        m = build_manifest(spec, writer)
        detection.fill_spec(m.output.detection, settings)  # replaces the classification postprocessing
        m.output.detection.labels.CopyFrom(writer.add_bytes("edge/labels.json", json.dumps(LABELS).encode()))
        return writer.commit(m)
