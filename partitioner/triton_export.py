"""Write a bundle's tails as a Triton model repository (``splitinfer export-triton``).

Layout, one model per cut that has a tail::

    REPO/
      README.md
      <model_name>.<cut_id>/config.pbtxt     text-format inference.ModelConfig
      <model_name>.<cut_id>/1/model.onnx     the tail, byte for byte

Two backends (``--backend``): ``onnxruntime`` (the default; ``platform: "onnxruntime_onnx"``, what
a full Triton image and our own server load) and ``python`` (Triton's Python backend: each version
directory also holds ``model.py`` (:mod:`partitioner.triton_python_model`, which runs the tail with
ONNX Runtime) and ``splitinfer.json`` (tensors, decode steps); the only backend the Triton core
bundled in ``nvidia-pytriton`` has). With ``python`` the ``input`` cut takes the JPEG the edge sends
and decodes and preprocesses it in the model (a decode step, ``kind: jpeg``); further decode
steps (wire codecs) fit the same list.

Model names follow :func:`protos.bundle.tail_model_name`. Triton versions are
integers, so every tail is version ``1`` (:data:`protos.bundle.TAIL_MODEL_VERSION`, the
version the edge agent asks for and our server gives bundle tails); the bundle's identity
(first 12 hex digits of its content hash) is the config parameter ``splitinfer_bundle_hash``,
which the edge agent reads through ModelConfig and compares with its own bundle before
offloading (a mismatch is a configuration error, MODEL_NOT_SERVED).

With ``onnxruntime`` the ``input`` cut's model takes the float input tensor
(``manifest.input.tensor``): stock Triton's ONNX Runtime backend cannot decode a JPEG, so the
client must preprocess. Its config says so in a parameter and the README explains it.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil

from protos import bundle as bundle_io
from protos import bundle_pb2
from protos.names import INPUT_CUT, OUTPUT_CUT

TRITON_DATATYPES = {
    "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64", "FP16": "TYPE_FP16", "FP32": "TYPE_FP32", "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING", "BF16": "TYPE_BF16",
}
TRITON_VERSION = bundle_io.TAIL_MODEL_VERSION
BACKENDS = ("onnxruntime", "python")
PYTHON_MODEL_SOURCE = pathlib.Path(__file__).with_name("triton_python_model.py")
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_MAX_QUEUE_DELAY_US = 2000
INPUT_CUT_NOTE = (
    "stock Triton cannot decode the JPEG the 'input' cut sends; this model takes the preprocessed "
    "float tensor instead (resize, crop, normalize as manifest.input says, on the client)"
)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensor_block(kind: str, tensor: bundle_pb2.TensorSpec, *, batched: bool = True) -> str:
    if tensor.datatype not in TRITON_DATATYPES:
        raise ValueError(f"tensor {tensor.name!r} has datatype {tensor.datatype!r}; Triton knows {sorted(TRITON_DATATYPES)}")
    dims = (list(tensor.shape[1:]) if batched else list(tensor.shape)) or [1]
    return (
        f"{kind} [\n  {{\n    name: {_quote(tensor.name)}\n    data_type: {TRITON_DATATYPES[tensor.datatype]}\n"
        f"    dims: [ {', '.join(str(int(d)) for d in dims)} ]\n  }}\n]\n"
    )


def render_config(
    manifest: bundle_pb2.Manifest,
    cut: bundle_pb2.Cut,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    instances: int = 1,
    backend: str = "onnxruntime",
) -> str:
    """The ``config.pbtxt`` text of one tail model (``backend``: one of :data:`BACKENDS`)."""
    if cut.id == OUTPUT_CUT or not cut.HasField("tail"):
        raise ValueError(f"cut {cut.id!r} has no tail to serve")
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}; expected one of {list(BACKENDS)}")
    jpeg_in = backend == "python" and cut.id == INPUT_CUT
    inputs = list(cut.tensors) if cut.id != INPUT_CUT or jpeg_in else [manifest.input.tensor]
    # the JPEG model takes the edge's BYTES tensor as sent (shape [n]): no batch dimension of Triton's,
    # so no dynamic batcher; its model.py decodes the n images and runs them as one batch
    batch_size = 0 if jpeg_in else int(max_batch_size)
    lines = [
        f"name: {_quote(bundle_io.tail_model_name(manifest, cut.id))}",
        'backend: "python"' if backend == "python" else 'platform: "onnxruntime_onnx"',
        f"max_batch_size: {batch_size}",
    ]
    text = "\n".join(lines) + "\n"
    for tensor in inputs:
        text += _tensor_block("input", tensor, batched=not jpeg_in)
    for tensor in manifest.output.tensors:
        text += _tensor_block("output", tensor, batched=not jpeg_in)
    if batch_size:
        preferred = sorted({b for b in (2, 4, max_batch_size) if 1 < b <= max_batch_size})
        text += "dynamic_batching {\n"
        if preferred:
            text += f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
        text += f"  max_queue_delay_microseconds: {int(max_queue_delay_us)}\n}}\n"
    text += f"instance_group [\n  {{\n    count: {int(instances)}\n    kind: KIND_CPU\n  }}\n]\n"
    params = {
        bundle_io.BUNDLE_HASH_PARAMETER: bundle_io.bundle_hash(manifest),
        "splitinfer_cut": cut.id,
        "splitinfer_model_version": manifest.model_version,
    }
    if cut.id == INPUT_CUT and not jpeg_in:
        params["splitinfer_note"] = INPUT_CUT_NOTE
    for key, value in params.items():
        text += f"parameters {{\n  key: {_quote(key)}\n  value: {{ string_value: {_quote(value)} }}\n}}\n"
    return text


def _tensor_json(tensor: bundle_pb2.TensorSpec) -> dict[str, object]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": [int(d) for d in tensor.shape]}


def python_model_spec(manifest: bundle_pb2.Manifest, cut: bundle_pb2.Cut, *, threads: int = 1) -> dict[str, object]:
    """What ``model.py`` reads from ``splitinfer.json``: the wire inputs, the outputs and the decode
    steps between them (the ``input`` cut: JPEG -> the bundle's preprocessing -> the model input)."""
    if cut.id == OUTPUT_CUT or not cut.HasField("tail"):
        raise ValueError(f"cut {cut.id!r} has no tail to serve")
    decode: list[dict[str, object]] = []
    if cut.id == INPUT_CUT:
        if len(cut.tensors) != 1 or cut.tensors[0].datatype != "BYTES":
            raise ValueError(f"cut 'input' sends {[(t.name, t.datatype) for t in cut.tensors]}; expected one BYTES (JPEG) tensor")
        spec = manifest.input
        decode.append({
            "kind": "jpeg", "input": cut.tensors[0].name, "feed": spec.tensor.name,
            "preprocess": {
                "width_px": int(spec.width_px), "height_px": int(spec.height_px), "layout": spec.layout,
                "color_order": spec.color_order, "resize_shorter_px": int(spec.resize_shorter_px),
                "pixel_scale": float(spec.pixel_scale), "mean": [float(m) for m in spec.mean],
                "std": [float(v) for v in spec.std],
            },
        })
    return {
        "bundle_hash": bundle_io.bundle_hash(manifest), "cut": cut.id, "threads": int(threads),
        "inputs": [_tensor_json(t) for t in cut.tensors], "outputs": [_tensor_json(t) for t in manifest.output.tensors],
        "decode": decode,
    }


def _readme(manifest: bundle_pb2.Manifest, models: list[tuple[str, bundle_pb2.Cut]], backend: str) -> str:
    kind = ("Triton's Python backend (`model.py` runs `model.onnx` with ONNX Runtime; it needs numpy, "
            "onnxruntime and opencv-python-headless in Triton's Python environment)"
            if backend == "python" else "platform `onnxruntime_onnx`")
    lines = [
        f"# Triton model repository for {manifest.model_name} (bundle {bundle_io.bundle_hash(manifest)})",
        "",
        f"Generated by `splitinfer export-triton --backend {backend}`. One model per cut tail, {kind},",
        "dynamic batching on (batch is the first dimension). Inputs are the cut tensors the edge sends;",
        "int8 cuts take UINT8 and dequantize inside the model (scale/zero point are baked in).",
        "",
        "| model | inputs | precision |",
        "| --- | --- | --- |",
    ]
    for name, cut in models:
        inputs = manifest.input.tensor.name if cut.id == INPUT_CUT and backend != "python" else ", ".join(
            f"{t.name} ({t.datatype})" for t in cut.tensors)
        lines.append(f"| `{name}` | {inputs} | {cut.tail_precision or 'fp32'} |")
    input_note = (
        f"`{bundle_io.tail_model_name(manifest, INPUT_CUT)}` takes the JPEG the edge sends and decodes and "
        "preprocesses it in `model.py` (no batch dimension: one request carries its images)."
        if backend == "python" else
        f"Note on `{bundle_io.tail_model_name(manifest, INPUT_CUT)}`: {INPUT_CUT_NOTE}. splitinfer's own server "
        "accepts the JPEG directly; for the JPEG cut on Triton export with `--backend python`.")
    lines += [
        "",
        input_note,
        "",
        "Stock Triton ignores the `compression: zlib` tensor parameter; configure the edge without compression.",
        "",
    ]
    packed = [(name, cut) for name, cut in models if cut.HasField("codec") and cut.codec.needs_splitinfer_server]
    if packed:
        lines += ["Feature-codec cuts whose codes travel entropy-coded (and, for `q<bits>p` codecs, bit-packed) to",
                  "splitinfer's server; these tails take one UINT8 byte per code (the dequantization, per-channel",
                  "or shared-step, and any projection are inside",
                  "`model.onnx`), so an edge offloading them to Triton sets `server.compression = \"none\"`:", ""]
        lines += [f"- `{name}`: codec `{cut.codec.name}`" for name, cut in packed]
        lines.append("")
    return "\n".join(lines)


def export_triton(
    bundle_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    backend: str = "onnxruntime",
    threads: int = 1,
) -> list[pathlib.Path]:
    """Write the repository; return the model directories written (``backend``: see the module
    docstring; ``threads``: ONNX Runtime intra-op threads of a ``python`` model).

    The repository is built beside ``out_dir`` and renamed into place, so a failure
    leaves no half-written repository.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}; expected one of {list(BACKENDS)}")
    if threads < 1:
        raise ValueError(f"threads {threads}; expected >= 1")
    bundle = bundle_io.read_bundle(bundle_root, bundle_io.Side.CLOUD)
    out = pathlib.Path(out_dir).resolve()
    if out.exists() and not overwrite:
        raise FileExistsError(f"output directory {str(out)!r} already exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        models: list[tuple[str, bundle_pb2.Cut]] = []
        for cut in bundle.manifest.cuts:
            if not cut.HasField("tail"):
                continue
            name = bundle_io.tail_model_name(bundle.manifest, cut.id)
            model_dir = staging / name
            (model_dir / TRITON_VERSION).mkdir(parents=True)
            shutil.copyfile(bundle.path(cut.tail), model_dir / TRITON_VERSION / "model.onnx")
            (model_dir / "config.pbtxt").write_text(
                render_config(bundle.manifest, cut, max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                              backend=backend),
                encoding="utf-8",
            )
            if backend == "python":
                shutil.copyfile(PYTHON_MODEL_SOURCE, model_dir / TRITON_VERSION / "model.py")
                (model_dir / TRITON_VERSION / "splitinfer.json").write_text(
                    json.dumps(python_model_spec(bundle.manifest, cut, threads=threads), indent=1) + "\n", encoding="utf-8")
            models.append((name, cut))
        (staging / "README.md").write_text(_readme(bundle.manifest, models, backend), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / name for name, _ in models]
