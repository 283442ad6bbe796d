"""ONNX Runtime's static quantizer as a ModelProto -> ModelProto pass (QDQ format,
INT8 weights per channel or per tensor, UINT8 activations, MinMax ranges).

ORT's quantizer reads and writes files; this module gives it a private temporary
directory that is removed when the call returns. Calibration feeds are in-memory dicts
handed out through :class:`partitioner.calibration.FeedReader` (ORT's pull interface).
"""
from __future__ import annotations

import contextlib
import io
import logging
import pathlib
import tempfile
from typing import Iterator, Sequence

import numpy as np
import onnx

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_ort_quantization() -> Iterator[None]:
    """ORT's quantizer logs advice at WARNING on the root logger and calibrators print
    progress: silence both for the duration of the call only."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(max(old, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(old)


def model_feeds(model: onnx.ModelProto, calibration: Sequence[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Each calibration feed restricted to ``model``'s graph inputs (initializers excluded);
    raises ``ValueError`` naming the inputs a feed lacks."""
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    feeds = []
    for k, feed in enumerate(calibration):
        missing = [n for n in names if n not in feed]
        if missing:
            raise ValueError(f"calibration feed {k} lacks inputs {missing}; it has {sorted(feed)}")
        feeds.append({n: np.asarray(feed[n]) for n in names})
    return feeds


def quantize_ort(
    model: onnx.ModelProto,
    calibration: Sequence[dict[str, np.ndarray]],
    *,
    per_channel: bool = True,
    nodes_to_exclude: Sequence[str] = (),
) -> onnx.ModelProto:
    """``model`` as a QDQ model quantized by ``onnxruntime.quantization.quantize_static``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from partitioner.calibration import FeedReader

    reader = FeedReader(model_feeds(model, calibration))
    with tempfile.TemporaryDirectory(prefix="splitinfer-ptq-") as tmp:
        src, dst = pathlib.Path(tmp) / "fp32.onnx", pathlib.Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        with quiet_ort_quantization():
            quantize_static(
                str(src), str(dst), reader,
                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=list(nodes_to_exclude), calibrate_method=CalibrationMethod.MinMax,
            )
        return onnx.load(str(dst))
