"""The transport-agnostic core of the server: validate, decode, batch, run, account.

`DataPlane.infer(request, timeout_s=...)` takes a domain `InferRequest` (built by `convert.py` from the
wire), has `validation.decode_request` check it against the model's signature and decode it (JPEG frames
of the 'input' cut included), submits the arrays to the model's `BatchScheduler` and waits for the
result within the deadline. Every client mistake raises a `ServerError` whose message quotes the bad
value and the expected one.

Responses carry advisory parameters `server_queue_us` (time waiting for a batch) and
`server_compute_us` (JPEG decoding + merge + model run + split of the batch the request ran in).
Per-model statistics use Triton's fields (`domain.ModelStats`, kept by `stats.StatsBook`). Deadlines
are `time.monotonic()` instants; `last_inference` is wall-clock milliseconds since the epoch, as Triton
reports it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from cloud_server.domain import InferOutput, InferRequest, InferResponse, ModelStats, RepositoryConfig, TailModel
from cloud_server.errors import DeadlineExceeded, ServerError
from cloud_server.observe import NullObserver, Observer, SafeObserver
from cloud_server.registry import ModelRegistry
from cloud_server.scheduler import BatchResult, BatchScheduler
from cloud_server.sessions import SessionPool
from cloud_server.settings import ServerSettings
from cloud_server.stats import StatsBook
from cloud_server.validation import decode_request, requested_outputs
from cloud_server.wire_codec import unpack_request
from protos.datatypes import numpy_dtype_for_ort_type
from protos.wire import array_to_raw

__all__ = ["DataPlane", "PendingRequest"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- the data plane


def classify(array: np.ndarray, count: int, labels: tuple[str, ...], *, batched: bool) -> np.ndarray:
    """Triton's classification extension: the top `count` values of each batch row (of the whole tensor
    when unbatched) as BYTES "value:index" or "value:index:label", highest first."""
    rows = array.reshape(array.shape[0], -1) if batched else array.reshape(1, -1)
    count = min(count, rows.shape[1])
    out = []
    for row in rows:
        top = np.argsort(-row, kind="stable")[:count]
        out.append([(f"{float(row[i]):f}:{int(i)}" + (f":{labels[i]}" if i < len(labels) else "")).encode()
                    for i in top])
    result = np.array(out, dtype=object)
    return result if batched else result.reshape(count)


@dataclass(frozen=True)
class PendingRequest:
    """A validated request queued on its model's scheduler; `future` resolves to a BatchResult."""

    model: TailModel
    request: InferRequest
    received_s: float
    deadline_s: float | None
    decode_ns: int
    requested: frozenset[str]
    future: Future


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
        self._stats = StatsBook()
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

    def load(self, name: str, config: RepositoryConfig | None = None) -> None:
        """Serve `name` again and load its default version's session now (errors surface here).
        `config` replaces a repository model's config.pbtxt; its old sessions and schedulers go first."""
        if config is not None:
            self.registry.find(name)
            self._drop(name)
        models = self.registry.load(name, config)
        self.sessions.get(models[-1])

    def _drop(self, name: str) -> None:
        for model in [m for m in self.registry.models() if m.name == name]:
            with self._lock:
                scheduler = self._schedulers.pop(model.key, None)
            if scheduler is not None:
                scheduler.close()
            self.sessions.evict(model.key)

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
                dtype = numpy_dtype_for_ort_type(arg.type)
                if dtype is None or not all(isinstance(d, int) and d > 0 for d in dims):
                    feeds = {}
                    break
                feeds[arg.name] = np.zeros(dims, dtype=dtype)
            if feeds:
                session.run(None, feeds)
            warmed.append(model)
        return warmed

    # ------------------------------------------------------------------ statistics

    def statistics(self, name: str = "", version: str = "") -> list[ModelStats]:
        """Snapshots for one model (name, optional version) or all (name='')."""
        if name:
            if version:
                models = [self.registry.find(name, version)]
            else:
                models = [self.registry.find(name, v) for v in self.registry.versions(name)]
        else:
            models = self.registry.models()
        return [self._stats.snapshot(model) for model in models]

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
                max_batch_size=self.max_batch_size(model),
                max_queue_delay_us=(self.settings.max_queue_delay_us if model.max_queue_delay_us is None
                                    else model.max_queue_delay_us),
                max_queue_size=self.settings.max_queue_size,
                observer=self.observer,
                batched=model.batched,
                eager=self.eager_batching,
                on_batch_done=lambda rows, a, b, c: self._stats.record_batch(model, rows, a, b, c),
                preferred_batch_sizes=model.preferred_batch_sizes,
                max_queue_wait_ms=self.settings.max_queue_wait_ms or None,
            )
            self._schedulers[model.key] = scheduler
            return scheduler

    # ------------------------------------------------------------------ inference

    def model_for(self, request: InferRequest) -> TailModel:
        return self.registry.get(request.model_name, request.model_version)

    def infer(self, request: InferRequest, *, timeout_s: float | None = None) -> InferResponse:
        """Validate and run one request, blocking until it is answered; `timeout_s` is the client's
        remaining deadline (None = none). The asynchronous transport uses `begin` and `complete`."""
        pending = self.begin(request, timeout_s=timeout_s)
        wait_s = None if pending.deadline_s is None else max(0.0, pending.deadline_s - time.monotonic())
        try:
            result: BatchResult = pending.future.result(timeout=wait_s)
        except FutureTimeout:
            pending.future.cancel()
            error: ServerError = self.deadline_error(pending)
        except CancelledError:
            error = DeadlineExceeded(f"model {pending.model.name!r}: the request was cancelled")
        except ServerError as exc:
            error = exc
        else:
            return self.complete(pending, result)
        self.fail(pending, error)
        raise error

    def begin(self, request: InferRequest, *, timeout_s: float | None = None) -> PendingRequest:
        """Validate and decode `request` and queue it on its model's scheduler; the returned
        `PendingRequest.future` resolves to a `BatchResult` (or a ServerError). Raises (and accounts)
        ServerError for a request that cannot be queued. Pass the result to `complete` or the error to
        `fail` exactly once."""
        received_s = time.monotonic()
        model = self.model_for(request)  # unknown models are not accounted per model
        try:
            deadline_s = self._deadline(request, received_s, timeout_s)
            scheduler = self.scheduler(model)
            scheduler.check_admission(deadline_s=deadline_s)  # before decoding: a refusal costs no work
            scheduler.expect()
            try:
                t0 = time.monotonic_ns()
                feeds = decode_request(
                    model, unpack_request(request), limit_bytes=self.settings.max_message_bytes,
                    max_batch_size=self.max_batch_size(model),
                )
                decode_ns = time.monotonic_ns() - t0
                requested = requested_outputs(model, request)
                if deadline_s is not None and time.monotonic() >= deadline_s:
                    raise DeadlineExceeded(
                        f"model {model.name!r}: the deadline passed while validating the request; "
                        "expected a longer deadline"
                    )
            except BaseException:
                scheduler.forget()
                raise
            future = scheduler.submit(feeds, deadline_s=deadline_s, expected=True)
        except ServerError:
            self._account_failure(model, received_s)
            raise
        return PendingRequest(model, request, received_s, deadline_s, decode_ns, frozenset(requested), future)

    def deadline_error(self, pending: PendingRequest) -> DeadlineExceeded:
        """The error for a request whose client deadline passed while it waited for its batch."""
        waited_ms = (time.monotonic() - pending.received_s) * 1e3
        return DeadlineExceeded(
            f"model {pending.model.name!r}: no result after {waited_ms:.1f} ms, when the client's deadline passed; "
            "expected a longer deadline or a less loaded server"
        )

    def fail(self, pending: PendingRequest, error: BaseException) -> None:
        """Account a queued request that ended in `error` (deadline, cancellation, model failure)."""
        self._account_failure(pending.model, pending.received_s)

    def _account_failure(self, model: TailModel, received_s: float) -> None:
        elapsed_ns = time.monotonic_ns() - int(received_s * 1e9)
        self._stats.record_failure(model, elapsed_ns=elapsed_ns)
        self.observer.on_request(model.name, False, elapsed_ns / 1e9)

    def complete(self, pending: PendingRequest, result: BatchResult) -> InferResponse:
        """The response of a request whose batch ran; accounts its success."""
        model, request = pending.model, pending.request
        outputs = []
        labels_of = dict(zip((o.name for o in model.outputs), model.output_labels))
        for sig, reshape in zip(model.outputs, model.output_reshapes or (None,) * len(model.outputs)):
            if pending.requested and sig.name not in pending.requested:
                continue
            array = result.outputs[sig.name]
            if reshape is not None:  # config.pbtxt `reshape`: the model makes `reshape`, the wire shows `dims`
                lead = array.shape[:1] if model.batched else ()
                array = array.reshape(lead + (sig.shape[1:] if model.batched else sig.shape))
            if sig.name in request.output_classes:
                array = classify(array, int(request.output_classes[sig.name]), labels_of.get(sig.name, ()),
                                 batched=model.batched)
            datatype, raw = array_to_raw(array)
            outputs.append(InferOutput(sig.name, datatype, tuple(int(d) for d in array.shape), raw))
        decode_ns = pending.decode_ns
        compute_ns = decode_ns + result.compute_input_ns + result.compute_infer_ns + result.compute_output_ns
        response = InferResponse(
            model_name=model.name,
            model_version=model.version,
            id=request.id,
            outputs=tuple(outputs),
            parameters={"server_queue_us": result.queue_ns // 1000, "server_compute_us": compute_ns // 1000},
        )
        elapsed_ns = time.monotonic_ns() - int(pending.received_s * 1e9)
        rows = request.inputs[0].shape[0] if model.batched and request.inputs and request.inputs[0].shape else 1
        self._stats.record_success(
            model,
            elapsed_ns=elapsed_ns,
            rows=rows,
            queue_ns=result.queue_ns,
            compute_input_ns=result.compute_input_ns + decode_ns,
            compute_infer_ns=result.compute_infer_ns,
            compute_output_ns=result.compute_output_ns,
            now_ms=int(time.time() * 1000),
        )
        self.observer.on_request(model.name, True, elapsed_ns / 1e9)
        return response

    def max_batch_size(self, model: TailModel) -> int:
        """Most rows one request (and one batch) of `model` may carry: its config's or the server's."""
        if not model.batched:
            return 1
        return model.max_batch_size or self.settings.max_batch_size

    def _deadline(self, request: InferRequest, received_s: float, timeout_s: float | None) -> float | None:
        deadlines = []
        if timeout_s is not None:
            deadlines.append(received_s + timeout_s)
        timeout_us = request.parameters.get("timeout")  # Triton's request parameter, microseconds
        if isinstance(timeout_us, int) and not isinstance(timeout_us, bool) and timeout_us > 0:
            deadlines.append(received_s + timeout_us / 1e6)
        return min(deadlines) if deadlines else None
