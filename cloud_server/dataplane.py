"""The transport-agnostic core of the server: validate, decode, batch, run, account.

`DataPlane.infer(request, timeout_s=...)` takes a domain `InferRequest` (built by `convert.py` from the
wire), checks it against the model's signature (names, datatypes, shapes, raw byte lengths, BYTES
framing, optional zlib compression of raw inputs), decodes and preprocesses JPEG frames for the 'input'
cut, submits it to the model's `BatchScheduler` and waits for the result within the deadline. Every
client mistake raises a `ServerError` whose message quotes the bad value and the expected one.

Responses carry advisory parameters `server_queue_us` (time waiting for a batch) and
`server_compute_us` (JPEG decoding + merge + model run + split of the batch the request ran in).
Per-model statistics use Triton's fields (see `ModelStats`). Deadlines are `time.monotonic()` instants;
`last_inference` is wall-clock milliseconds since the epoch, as Triton reports it.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
import zlib
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from cloud_server.errors import DeadlineExceeded, InvalidInput, ServerError
from cloud_server.observe import NullObserver, Observer, SafeObserver
from cloud_server.registry import ModelRegistry, TailModel, TensorSignature
from cloud_server.scheduler import BatchResult, BatchScheduler
from cloud_server.sessions import SessionPool
from cloud_server.settings import ServerSettings
from protos.preprocess import decode_jpeg, preprocess_bgr
from protos.datatypes import deserialize_bytes_tensor, from_numpy_dtype, serialize_bytes_tensor, to_numpy_dtype

__all__ = [
    "InferInput",
    "InferRequest",
    "InferOutput",
    "InferResponse",
    "StatDuration",
    "ModelStats",
    "DataPlane",
    "CONTENTS_FIELD",
]

logger = logging.getLogger(__name__)

#: Which InferTensorContents field carries each datatype (FP16/BF16 travel only as raw bytes).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


# ---------------------------------------------------------------------- domain types


@dataclass(frozen=True)
class InferInput:
    """One input tensor as the client sent it. `contents` maps each non-empty typed-contents field to its
    values; `raw` is filled by the request's `raw_input_contents` (validated by the data plane)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    contents: Mapping[str, Sequence[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class InferRequest:
    model_name: str
    model_version: str = ""
    id: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[InferInput, ...] = ()
    requested_outputs: tuple[str, ...] = ()
    raw_input_contents: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class InferOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes


@dataclass(frozen=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: tuple[InferOutput, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- statistics


@dataclass
class StatDuration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += max(0, int(ns))


@dataclass
class BatchStat:
    compute_input: StatDuration = field(default_factory=StatDuration)
    compute_infer: StatDuration = field(default_factory=StatDuration)
    compute_output: StatDuration = field(default_factory=StatDuration)


@dataclass
class ModelStats:
    """Triton's per-model statistics. inference_count counts rows (batch items) that succeeded,
    execution_count counts model executions; success/fail are whole-request durations; queue and
    compute_* are per successful request; batch_stats are per execution, by batch size."""

    name: str
    version: str
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: StatDuration = field(default_factory=StatDuration)
    fail: StatDuration = field(default_factory=StatDuration)
    queue: StatDuration = field(default_factory=StatDuration)
    compute_input: StatDuration = field(default_factory=StatDuration)
    compute_infer: StatDuration = field(default_factory=StatDuration)
    compute_output: StatDuration = field(default_factory=StatDuration)
    batch_stats: dict[int, BatchStat] = field(default_factory=dict)

    def snapshot(self) -> ModelStats:
        return copy.deepcopy(self)


# ---------------------------------------------------------------------- validation helpers


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def _check_shape(model: TailModel, inp: InferInput, sig: TensorSignature) -> None:
    shape = inp.shape
    ok = len(shape) == len(sig.shape) and all(
        d >= 0 and (e == -1 or d == e) for d, e in zip(shape, sig.shape)
    )
    if not ok:
        raise InvalidInput(
            f"model {model.name!r} input {inp.name!r} has shape {_shape_str(shape)}; "
            f"expected {_shape_str(sig.shape)} (-1 = any size)"
        )
    if model.batched and shape and shape[0] < 1:
        raise InvalidInput(
            f"model {model.name!r} input {inp.name!r} has batch size {shape[0]}; expected at least 1"
        )


def _decompress(model: TailModel, inp: InferInput, raw: bytes, limit_bytes: int) -> bytes:
    method = inp.parameters.get("compression", "")
    if method in ("", "none"):
        return raw
    if method != "zlib":
        raise InvalidInput(
            f"model {model.name!r} input {inp.name!r} has compression {method!r}; expected 'zlib' or 'none'"
        )
    decompressor = zlib.decompressobj()
    try:
        data = decompressor.decompress(raw, limit_bytes + 1)
    except zlib.error as exc:
        raise InvalidInput(
            f"model {model.name!r} input {inp.name!r}: {len(raw)} bytes are not valid zlib data ({exc}); "
            "expected zlib-compressed raw tensor bytes"
        ) from None
    if len(data) > limit_bytes or decompressor.unconsumed_tail:
        raise InvalidInput(
            f"model {model.name!r} input {inp.name!r}: zlib data inflates beyond {limit_bytes} bytes; "
            "expected at most the tensor's size"
        )
    if not decompressor.eof:
        raise InvalidInput(f"model {model.name!r} input {inp.name!r}: zlib stream is truncated; expected a complete stream")
    return data


def _array_from_raw(model: TailModel, inp: InferInput, raw: bytes, limit_bytes: int) -> np.ndarray | list[bytes]:
    count = math.prod(inp.shape)
    if inp.datatype == "BYTES":
        data = _decompress(model, inp, raw, limit_bytes)
        try:
            items = deserialize_bytes_tensor(data)
        except ValueError as exc:
            raise InvalidInput(
                f"model {model.name!r} input {inp.name!r}: bad BYTES framing: {exc}; "
                "expected each element prefixed by a 4-byte little-endian length"
            ) from None
        if len(items) != count:
            raise InvalidInput(
                f"model {model.name!r} input {inp.name!r} holds {len(items)} BYTES elements; "
                f"expected {count} for shape {_shape_str(inp.shape)}"
            )
        return items
    dtype = to_numpy_dtype(inp.datatype)
    expected = count * dtype.itemsize
    data = _decompress(model, inp, raw, expected)
    if len(data) != expected:
        raise InvalidInput(
            f"model {model.name!r} input {inp.name!r} has {len(data)} raw bytes; expected {expected} "
            f"({_shape_str(inp.shape)} x {dtype.itemsize} bytes of {inp.datatype})"
        )
    return np.frombuffer(data, dtype=dtype).reshape(inp.shape)


def _array_from_contents(model: TailModel, inp: InferInput) -> np.ndarray | list[bytes]:
    if inp.datatype not in CONTENTS_FIELD:
        raise InvalidInput(
            f"model {model.name!r} input {inp.name!r} of datatype {inp.datatype} came in 'contents'; "
            "expected raw_input_contents (FP16/BF16 travel only as raw bytes)"
        )
    expected_field = CONTENTS_FIELD[inp.datatype]
    fields = sorted(inp.contents)
    if fields != [expected_field]:
        raise InvalidInput(
            f"model {model.name!r} input {inp.name!r} of datatype {inp.datatype} fills contents {fields}; "
            f"expected only {expected_field!r}"
        )
    values = inp.contents[expected_field]
    count = math.prod(inp.shape)
    if len(values) != count:
        raise InvalidInput(
            f"model {model.name!r} input {inp.name!r} has {len(values)} values in {expected_field}; "
            f"expected {count} for shape {_shape_str(inp.shape)}"
        )
    if inp.datatype == "BYTES":
        return [bytes(v) for v in values]
    dtype = to_numpy_dtype(inp.datatype)
    try:
        return np.asarray(values, dtype=dtype).reshape(inp.shape)
    except OverflowError as exc:
        raise InvalidInput(
            f"model {model.name!r} input {inp.name!r}: a value in {expected_field} does not fit {inp.datatype} ({exc})"
        ) from None


#: Largest frame the 'input' cut decodes (a JPEG header can claim 65535 x 65535 in a few bytes).
MAX_FRAME_PIXELS = 8192 * 8192

_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_size_px(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header, or None when no header is found.
    Reads markers only; decodes nothing."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS and pos + 9 <= len(data):
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _decode_frames(model: TailModel, name: str, items: list[bytes]) -> np.ndarray:
    assert model.input_spec is not None
    frames = []
    for i, item in enumerate(items):
        size = jpeg_size_px(item)
        if size is not None and size[0] * size[1] > MAX_FRAME_PIXELS:
            raise InvalidInput(
                f"model {model.name!r} input {name!r} element {i} is a {size[0]}x{size[1]} px JPEG; "
                f"expected at most {MAX_FRAME_PIXELS} pixels"
            )
        try:
            frames.append(preprocess_bgr(decode_jpeg(item), model.input_spec))
        except ValueError as exc:
            head = item[:4].hex()
            raise InvalidInput(
                f"model {model.name!r} input {name!r} element {i}: {exc} (starts with 0x{head}); "
                "expected a JPEG frame (starts with 0xffd8)"
            ) from None
    return np.concatenate(frames, axis=0)


_ORT_NUMPY = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
}


def _output_raw(arr: np.ndarray) -> tuple[str, bytes]:
    if arr.dtype.kind in ("O", "S", "U"):
        items = [x if isinstance(x, bytes) else str(x).encode() for x in arr.reshape(-1)]
        return "BYTES", serialize_bytes_tensor(items)
    datatype = from_numpy_dtype(arr.dtype)
    return datatype, np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


# ---------------------------------------------------------------------- the data plane


class DataPlane:
    """Owns the registry, the session pool, one scheduler per model and the statistics.

    `eager_batching` (default True): a batch window closes as soon as no other request for the model
    is being received; False waits the whole `max_queue_delay_us` (see `scheduler`)."""

    def __init__(
        self,
        settings: ServerSettings,
        registry: ModelRegistry,
        sessions: SessionPool,
        *,
        observer: Observer | None = None,
        eager_batching: bool = True,
    ) -> None:
        self.settings = settings
        self.eager_batching = eager_batching
        self.registry = registry
        self.sessions = sessions
        self.observer: Observer = SafeObserver(observer) if observer is not None else NullObserver()
        self._lock = threading.Lock()
        self._schedulers: dict[tuple[str, str], BatchScheduler] = {}
        self._stats: dict[tuple[str, str], ModelStats] = {}
        self._draining = False

    # ------------------------------------------------------------------ lifecycle

    def set_draining(self) -> None:
        """Report not ready (ServerReady/ModelReady false). Requests that still arrive are served, so
        nothing in flight is failed; the transport stops accepting calls when the server stops."""
        self._draining = True

    @property
    def draining(self) -> bool:
        return self._draining

    def close(self) -> None:
        with self._lock:
            schedulers = list(self._schedulers.values())
            self._schedulers.clear()
        for scheduler in schedulers:
            scheduler.close()

    def unload(self, name: str) -> None:
        """Stop serving `name`, close its schedulers and drop its sessions."""
        for model in self.registry.unload(name):
            with self._lock:
                scheduler = self._schedulers.pop(model.key, None)
            if scheduler is not None:
                scheduler.close()
            self.sessions.evict(model.key)

    def load(self, name: str) -> None:
        """Serve `name` again and load its default version's session now (errors surface here)."""
        models = self.registry.load(name)
        self.sessions.get(models[-1])

    def warm_up(self) -> list[TailModel]:
        """Load the default version of every ready model while the estimated memory fits the budget,
        and run each once on zeros when its feed shapes are fixed (apart from the batch), so the first
        client does not pay for session creation. Returns the models warmed; ModelLoadFailed surfaces."""
        warmed: list[TailModel] = []
        budget = self.sessions.memory_budget_bytes
        for name in self.registry.names():
            if not self.registry.is_ready(name):
                continue
            model = self.registry.find(name)
            if self.sessions.estimated_bytes + self.sessions.estimate_bytes(model) > budget:
                logger.info("warm-up stops at %s: the memory budget is reached; the rest load on demand", name)
                break
            session = self.sessions.get(model)
            feeds = {}
            for arg in session.get_inputs():
                dims = list(arg.shape)
                dims = [1 if i == 0 and not isinstance(d, int) else d for i, d in enumerate(dims)]
                dtype = _ORT_NUMPY.get(arg.type)
                if dtype is None or not all(isinstance(d, int) and d > 0 for d in dims):
                    feeds = {}
                    break
                feeds[arg.name] = np.zeros(dims, dtype=dtype)
            if feeds:
                session.run(None, feeds)
            warmed.append(model)
        return warmed

    # ------------------------------------------------------------------ statistics

    def stats(self, model: TailModel) -> ModelStats:
        with self._lock:
            stats = self._stats.get(model.key)
            if stats is None:
                stats = self._stats[model.key] = ModelStats(name=model.name, version=model.version)
            return stats

    def statistics(self, name: str = "", version: str = "") -> list[ModelStats]:
        """Snapshots for one model (name, optional version) or all (name='')."""
        if name:
            if version:
                models = [self.registry.find(name, version)]
            else:
                models = [self.registry.find(name, v) for v in self.registry.versions(name)]
        else:
            models = self.registry.models()
        out = []
        for model in models:
            stats = self.stats(model)
            with self._lock:
                out.append(stats.snapshot())
        return out

    def _record_batch(self, model: TailModel, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        stats = self.stats(model)
        with self._lock:
            stats.execution_count += 1
            batch = stats.batch_stats.setdefault(rows, BatchStat())
            batch.compute_input.add(input_ns)
            batch.compute_infer.add(infer_ns)
            batch.compute_output.add(output_ns)

    # ------------------------------------------------------------------ scheduling

    def scheduler(self, model: TailModel) -> BatchScheduler:
        with self._lock:
            scheduler = self._schedulers.get(model.key)
            if scheduler is not None:
                return scheduler
            sessions = self.sessions
            output_names = [o.name for o in model.outputs]

            def run_batch(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                session = sessions.get(model)
                results = session.run(output_names, feeds)
                return dict(zip(output_names, results))

            scheduler = BatchScheduler(
                model.name,
                run_batch,
                max_batch_size=self.settings.max_batch_size if model.batched else 1,
                max_queue_delay_us=self.settings.max_queue_delay_us,
                max_queue_size=self.settings.max_queue_size,
                observer=self.observer,
                batched=model.batched,
                eager=self.eager_batching,
                on_batch_done=lambda rows, a, b, c: self._record_batch(model, rows, a, b, c),
            )
            self._schedulers[model.key] = scheduler
            return scheduler

    # ------------------------------------------------------------------ inference

    def model_for(self, request: InferRequest) -> TailModel:
        return self.registry.get(request.model_name, request.model_version)

    def infer(self, request: InferRequest, *, timeout_s: float | None = None) -> InferResponse:
        """Validate and run one request; `timeout_s` is the client's remaining deadline (None = none)."""
        received_s = time.monotonic()
        model = self.model_for(request)  # unknown models are not accounted per model
        try:
            response, result, decode_ns = self._infer(model, request, received_s, timeout_s)
        except ServerError:
            elapsed_ns = time.monotonic_ns() - int(received_s * 1e9)
            stats = self.stats(model)
            with self._lock:
                stats.fail.add(elapsed_ns)
            self.observer.on_request(model.name, False, elapsed_ns / 1e9)
            raise
        elapsed_ns = time.monotonic_ns() - int(received_s * 1e9)
        stats = self.stats(model)
        rows = request.inputs[0].shape[0] if model.batched and request.inputs and request.inputs[0].shape else 1
        with self._lock:
            stats.success.add(elapsed_ns)
            stats.queue.add(result.queue_ns)
            stats.compute_input.add(result.compute_input_ns + decode_ns)
            stats.compute_infer.add(result.compute_infer_ns)
            stats.compute_output.add(result.compute_output_ns)
            stats.inference_count += rows
            stats.last_inference_ms = int(time.time() * 1000)
        self.observer.on_request(model.name, True, elapsed_ns / 1e9)
        return response

    def _deadline(self, request: InferRequest, received_s: float, timeout_s: float | None) -> float | None:
        deadlines = []
        if timeout_s is not None:
            deadlines.append(received_s + timeout_s)
        timeout_us = request.parameters.get("timeout")  # Triton's request parameter, microseconds
        if isinstance(timeout_us, int) and not isinstance(timeout_us, bool) and timeout_us > 0:
            deadlines.append(received_s + timeout_us / 1e6)
        return min(deadlines) if deadlines else None

    def _infer(
        self, model: TailModel, request: InferRequest, received_s: float, timeout_s: float | None
    ) -> tuple[InferResponse, BatchResult, int]:
        deadline_s = self._deadline(request, received_s, timeout_s)
        scheduler = self.scheduler(model)
        scheduler.expect()
        try:
            t0 = time.monotonic_ns()
            feeds = self.validate(model, request)
            decode_ns = time.monotonic_ns() - t0
            requested = self._requested_outputs(model, request)
            if deadline_s is not None and time.monotonic() >= deadline_s:
                raise DeadlineExceeded(
                    f"model {model.name!r}: the deadline passed while validating the request; "
                    "expected a longer deadline"
                )
        except BaseException:
            scheduler.forget()
            raise
        future = scheduler.submit(feeds, deadline_s=deadline_s, expected=True)
        wait_s = None if deadline_s is None else max(0.0, deadline_s - time.monotonic())
        try:
            result: BatchResult = future.result(timeout=wait_s)
        except FutureTimeout:
            future.cancel()
            waited_ms = (time.monotonic() - received_s) * 1e3
            raise DeadlineExceeded(
                f"model {model.name!r}: no result after {waited_ms:.1f} ms, when the client's deadline passed; "
                "expected a longer deadline or a less loaded server"
            ) from None
        except CancelledError:
            raise DeadlineExceeded(f"model {model.name!r}: the request was cancelled") from None
        outputs = []
        for sig in model.outputs:
            if requested and sig.name not in requested:
                continue
            datatype, raw = _output_raw(result.outputs[sig.name])
            outputs.append(InferOutput(sig.name, datatype, tuple(int(d) for d in result.outputs[sig.name].shape), raw))
        compute_ns = decode_ns + result.compute_input_ns + result.compute_infer_ns + result.compute_output_ns
        response = InferResponse(
            model_name=model.name,
            model_version=model.version,
            id=request.id,
            outputs=tuple(outputs),
            parameters={"server_queue_us": result.queue_ns // 1000, "server_compute_us": compute_ns // 1000},
        )
        return response, result, decode_ns

    def _requested_outputs(self, model: TailModel, request: InferRequest) -> set[str]:
        names = {o.name for o in model.outputs}
        requested = set(request.requested_outputs)
        unknown = sorted(requested - names)
        if unknown:
            raise InvalidInput(
                f"model {model.name!r} has no output {unknown[0]!r}; expected one of {sorted(names)}"
            )
        return requested

    def validate(self, model: TailModel, request: InferRequest) -> dict[str, np.ndarray]:
        """Check `request` against the model signature; return the arrays to feed, keyed by graph input."""
        by_name = {sig.name: sig for sig in model.inputs}
        seen: set[str] = set()
        for inp in request.inputs:
            if inp.name not in by_name:
                raise InvalidInput(
                    f"model {model.name!r} has no input {inp.name!r}; expected inputs {sorted(by_name)}"
                )
            if inp.name in seen:
                raise InvalidInput(f"model {model.name!r} input {inp.name!r} appears twice; expected once")
            seen.add(inp.name)
        missing = sorted(set(by_name) - seen)
        if missing:
            raise InvalidInput(
                f"model {model.name!r} request lacks input {missing[0]!r}; expected inputs {sorted(by_name)}, "
                f"got {sorted(seen)}"
            )
        raws = request.raw_input_contents
        if raws and len(raws) != len(request.inputs):
            raise InvalidInput(
                f"request has {len(raws)} raw_input_contents for {len(request.inputs)} inputs; "
                "expected one raw entry per input, in input order"
            )
        arrays: dict[str, np.ndarray | list[bytes]] = {}
        batch_sizes = set()
        for i, inp in enumerate(request.inputs):
            sig = by_name[inp.name]
            if inp.datatype != sig.datatype:
                raise InvalidInput(
                    f"model {model.name!r} input {inp.name!r} has datatype {inp.datatype!r}; expected {sig.datatype!r}"
                )
            _check_shape(model, inp, sig)
            if model.batched:
                batch_sizes.add(inp.shape[0])
            if raws:
                if inp.contents:
                    raise InvalidInput(
                        f"model {model.name!r} input {inp.name!r} carries both contents {sorted(inp.contents)} and "
                        "raw_input_contents; expected exactly one of them"
                    )
                arrays[inp.name] = _array_from_raw(model, inp, raws[i], self.settings.max_message_bytes)
            elif inp.contents:
                arrays[inp.name] = _array_from_contents(model, inp)
            else:
                raise InvalidInput(
                    f"model {model.name!r} input {inp.name!r} carries no data; expected raw_input_contents or contents"
                )
        if len(batch_sizes) > 1:
            raise InvalidInput(
                f"model {model.name!r} inputs disagree on the batch size: {sorted(batch_sizes)}; expected one size"
            )
        feeds: dict[str, np.ndarray] = {}
        for sig, feed in zip(model.inputs, model.feed_names):
            value = arrays[sig.name]
            if model.input_spec is not None:
                feeds[feed] = _decode_frames(model, sig.name, list(value))  # type: ignore[arg-type]
            elif isinstance(value, list):
                feeds[feed] = np.array(value, dtype=object).reshape(
                    next(i.shape for i in request.inputs if i.name == sig.name)
                )
            else:
                feeds[feed] = value
        return feeds
