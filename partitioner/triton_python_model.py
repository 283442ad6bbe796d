"""The ``model.py`` that ``export-triton --backend python`` writes beside every tail.

This file is copied verbatim into ``<model>/1/model.py`` and run by Triton's Python backend,
inside Triton's own Python environment: it imports nothing of splitinfer, only numpy,
onnxruntime and (for a JPEG input) OpenCV. Everything model-specific is in ``splitinfer.json``
beside it, written by :mod:`partitioner.triton_export`:

* ``inputs`` / ``outputs``: the tail's tensors (name, Open Inference Protocol datatype);
* ``decode``: the steps that turn what the edge sends into what the tail takes, one per input
  that needs one (today ``{"kind": "jpeg", "input": ..., "feed": ..., "preprocess": {...}}``: decode
  the JPEG bytes and preprocess them as the bundle's ``InputSpec`` says, exactly what our server
  does for the ``input`` cut); other kinds (wire codecs) slot into :data:`DECODERS`;
* ``threads``: ONNX Runtime intra-op threads.

Requests batched by Triton's dynamic batcher arrive together: their inputs are concatenated along
the batch axis, run once, and the outputs split back. A request that cannot be decoded gets its own
error; the others in the batch are still answered.
"""
import json
import pathlib

import numpy as np

try:  # only inside Triton; the module is also imported by splitinfer's tests to check the decoding
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - outside Triton
    pb_utils = None

NUMPY_DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


def preprocess(frame_bgr, spec):
    """An HxWx3 uint8 BGR frame -> a (1, ...) float32 batch, as the bundle's InputSpec says
    (the same steps as protos.preprocess.preprocess_bgr, which the edge and our server run)."""
    import cv2

    width, height = int(spec["width_px"]), int(spec["height_px"])
    img = frame_bgr
    if spec["resize_shorter_px"]:
        h, w = img.shape[:2]
        scale = spec["resize_shorter_px"] / min(h, w)
        new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        img = img[top:top + height, left:left + width]
    else:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    if spec["color_order"] == "RGB":
        img = img[:, :, ::-1]
    x = img.astype(np.float32) * np.float32(spec["pixel_scale"])
    x = (x - np.asarray(spec["mean"], dtype=np.float32)) / np.asarray(spec["std"], dtype=np.float32)
    if spec["layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None, ...], dtype=np.float32)


def decode_jpeg(values, step):
    """A BYTES tensor of JPEG images -> the preprocessed float batch the tail takes."""
    import cv2

    frames = []
    for i, data in enumerate(np.asarray(values, dtype=object).reshape(-1)):
        buf = np.frombuffer(bytes(data), dtype=np.uint8)
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        if img is None:
            raise ValueError(f"input {step['input']!r} element {i}: {buf.size} bytes are not a decodable JPEG image")
        frames.append(preprocess(img, step["preprocess"]))
    if not frames:
        raise ValueError(f"input {step['input']!r} holds no image; expected one JPEG per batch row")
    return np.concatenate(frames, axis=0)


#: decode step kind -> function(values of the wire input, the step) -> array fed to the tail
DECODERS = {"jpeg": decode_jpeg}


def feeds_of(arrays, spec):
    """The tail's feeds from one request's wire inputs (``arrays``: input name -> numpy array)."""
    feeds = dict(arrays)
    for step in spec["decode"]:
        kind = step["kind"]
        if kind not in DECODERS:
            raise ValueError(f"decode step {kind!r} is unknown; this model.py knows {sorted(DECODERS)}")
        feeds[step["feed"]] = DECODERS[kind](feeds.pop(step["input"]), step)
    return feeds


class TritonPythonModel:
    """Triton's Python-backend entry points: initialize, execute, finalize."""

    def initialize(self, args):
        import onnxruntime as ort

        here = pathlib.Path(args["model_repository"]) / str(args["model_version"])
        self.spec = json.loads((here / "splitinfer.json").read_text(encoding="utf-8"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.spec.get("threads", 1))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(here / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.output_names = [o["name"] for o in self.spec["outputs"]]

    def _feeds(self, request):
        arrays = {}
        for tensor in self.spec["inputs"]:
            found = pb_utils.get_input_tensor_by_name(request, tensor["name"])
            if found is None:
                raise ValueError(f"input {tensor['name']!r} is missing")
            arrays[tensor["name"]] = found.as_numpy()
        return feeds_of(arrays, self.spec)

    def execute(self, requests):
        responses = [None] * len(requests)
        batch = []  # (index, feeds, rows)
        for i, request in enumerate(requests):
            try:
                feeds = self._feeds(request)
            except (ValueError, TypeError) as exc:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                continue
            batch.append((i, feeds, int(next(iter(feeds.values())).shape[0])))
        if batch:
            names = list(batch[0][1])
            merged = {n: np.concatenate([feeds[n] for _, feeds, _ in batch], axis=0) for n in names}
            try:
                results = self.session.run(self.output_names, merged)
            except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors have no common base
                for i, _, _ in batch:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"tail failed: {exc}"))
                return responses
            start = 0
            for i, _, rows in batch:
                outputs = [pb_utils.Tensor(name, np.ascontiguousarray(value[start:start + rows]))
                           for name, value in zip(self.output_names, results)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=outputs)
                start += rows
        return responses

    def finalize(self):
        self.session = None
