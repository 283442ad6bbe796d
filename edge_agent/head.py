"""Head execution on the device with ONNX Runtime.

:class:`HeadRunner` owns every ONNX Runtime session the agent holds:

* the **full model**, always loaded: the "output" cut and the fallback for any frame
  whose offload fails; the bundle's INT8 full model (``full_model_int8``) when it ships
  one, else the FP32 one (:attr:`HeadRunner.full_precision` says which);
* the **active cut's head**, plus the heads of its neighbours by cut order
  (``prewarm_neighbours`` on each side), loaded and run once on zeros so a switch
  costs no session creation; heads further away are released;
* optionally the **local tails** of loaded cuts when the bundle directory also holds
  them (``runtime.local_tails``): a failed offload then finishes with the tail instead
  of re-running the whole model.

The XNNPACK execution provider is used when the installed build has it (with ORT's
own intra-op pool at 1 thread, as XNNPACK runs its own), else the CPU provider with
``threads`` intra-op threads. Spinning is off: on a 4-core Pi the pipeline's other
stages need those cores.

Per frame, :meth:`HeadRunner.run_head` preprocesses exactly as the manifest says
(:func:`protos.preprocess.preprocess_bgr`) and returns the cut's tensors as raw wire
tensors (uncompressed: compression is the encode stage's job,
:mod:`edge_agent.stages.encode`); the "input" cut only JPEG-encodes the frame
(:func:`encode_jpeg`).
Thread safety: ``run_*`` may be called from several threads (ORT sessions are
thread-safe for ``run``); ``activate`` swaps sessions under a lock.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from edge_agent.errors import UnknownCutError
from edge_agent.types import CutProfile, WireTensor
from protos.bundle import Bundle
from protos.names import INPUT_CUT, OUTPUT_CUT
from protos.preprocess import encode_jpeg, model_sized, preprocess_bgr
from protos import datatypes

log = logging.getLogger(__name__)

XNNPACK = "XnnpackExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class HeadOutput:
    """What the head stage produced for one frame."""

    cut_id: str
    tensors: tuple[WireTensor, ...]  # what goes on the wire (empty for "output")
    arrays: Mapping[str, np.ndarray]  # head outputs by name (for a local tail)
    model_input: Optional[np.ndarray]  # preprocessed frame (None for "input": computed on fallback)
    local_outputs: Optional[Mapping[str, np.ndarray]]  # final outputs when the cut is "output"
    preprocess_ms: float
    head_ms: float

    @property
    def wire_bytes(self) -> int:
        return sum(len(t.raw) for t in self.tensors)


@dataclass
class _Loaded:
    session: Any
    input_name: str
    output_names: list[str]
    measured_ms: list[float] = field(default_factory=list)


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``); a no-op elsewhere.

    Creating an ONNX Runtime session parses the model, optimizes and prepacks the weights,
    then frees the intermediate copies; glibc keeps those pages mapped, so a daemon that
    loads a few sessions would carry tens of MB it no longer uses.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def set_heap_mmap_threshold(threshold_bytes: int) -> bool:
    """Serve every allocation of at least ``threshold_bytes`` from its own mapping, returned
    to the OS when freed (glibc ``mallopt(M_MMAP_THRESHOLD)``); True if it took effect.

    glibc's default raises this threshold to the largest block freed so far, so ONNX
    Runtime's per-run activation buffers (without its arena) end up in heaps that keep
    them between the daemon's periodic trims. A fixed threshold trades page faults on
    every run for memory: see ``runtime.heap_mmap_threshold_kb``.
    """
    if threshold_bytes < 4096:
        raise ValueError(f"threshold_bytes {threshold_bytes}: expected >= 4096")
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, int(threshold_bytes)))
    except (OSError, AttributeError):
        return False


def choose_providers(preference: str, threads: int) -> tuple[list[Any], int]:
    """Providers list and the intra-op thread count for the session options."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if preference in ("auto", "xnnpack") and XNNPACK in available:
        return [(XNNPACK, {"intra_op_num_threads": threads}), CPU], 1
    if preference == "xnnpack":
        log.warning("the XNNPACK execution provider is not in this onnxruntime build (%s); using CPU", available)
    return [CPU], threads


def cut_profiles(bundle: Bundle, measured_head_ms: Optional[Mapping[str, float]] = None) -> list[CutProfile]:
    """The policy's view of each cut: wire bytes and the newest edge/cloud profile.

    A cut without an edge profile uses ``measured_head_ms`` (timed at warm-up) when given.
    """
    measured = measured_head_ms or {}
    full_ms = None
    for cut in bundle.manifest.cuts:
        if cut.id == OUTPUT_CUT and cut.edge_profiles:
            full_ms = cut.edge_profiles[-1].head_ms
    profiles = []
    for cut in bundle.manifest.cuts:
        head_ms = cut.edge_profiles[-1].head_ms if cut.edge_profiles else measured.get(cut.id)
        if head_ms is None:
            head_ms = 0.0 if cut.id == INPUT_CUT else (full_ms or 0.0)
        tail_ms = cut.cloud_profiles[-1].tail_ms if cut.cloud_profiles else 0.0
        if not tail_ms and cut.id != OUTPUT_CUT and cut.edge_profiles and cut.edge_profiles[-1].tail_ms:
            tail_ms = cut.edge_profiles[-1].tail_ms
        profiles.append(CutProfile(
            cut_id=cut.id, order=int(cut.order), wire_bytes=0 if cut.id == OUTPUT_CUT else int(cut.wire_bytes),
            head_ms=float(head_ms), tail_ms=0.0 if cut.id == OUTPUT_CUT else float(tail_ms),
            tensors=tuple(t.name for t in cut.tensors),
        ))
    return profiles


class HeadRunner:
    def __init__(
        self,
        bundle: Bundle,
        *,
        threads: int = 2,
        provider: str = "auto",
        prewarm_neighbours: int = 1,
        local_tails: bool = False,
        cpu_mem_arena: bool = False,
        emulated_slowdown: float = 1.0,
        heap_mmap_threshold_kb: Optional[int] = None,
        jpeg_size: str = "model",
    ) -> None:
        """``emulated_slowdown`` > 1 pads every on-device model run (and JPEG encoding, the
        "input" cut's head) with a sleep so it takes
        that many times as long: an emulation of a slower device (4 is roughly a Pi 4 core
        against a current x86 core) for demos and benchmarks; 1.0 (off) by default.
        ``jpeg_size`` "model" sends the "input" cut's JPEG downscaled to the model's input
        resolution (:func:`model_sized`), "frame" the whole camera frame."""
        import onnxruntime as ort

        if heap_mmap_threshold_kb is not None and not set_heap_mmap_threshold(heap_mmap_threshold_kb * 1024):
            log.warning("runtime.heap_mmap_threshold_kb = %d has no effect here (not glibc)", heap_mmap_threshold_kb)
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.threads = threads
        self.prewarm_neighbours = prewarm_neighbours
        self.local_tails = local_tails
        self.emulated_slowdown = float(emulated_slowdown)
        if jpeg_size not in ("model", "frame"):
            raise ValueError(f"jpeg_size {jpeg_size!r}: expected 'model' or 'frame'")
        self.jpeg_size = jpeg_size
        self.providers, intra = choose_providers(provider, threads)
        self._options = ort.SessionOptions()
        self._options.intra_op_num_threads = intra
        self._options.inter_op_num_threads = 1
        self._options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # ORT's arena keeps every session's peak activation memory for good; without it a
        # daemon holding several heads is ~25 MB smaller for ~2 % slower runs (MobileNetV2, x86)
        self._options.enable_cpu_mem_arena = cpu_mem_arena
        self._ort = ort
        self._lock = threading.Lock()
        self._cuts = {cut.id: cut for cut in self.manifest.cuts}
        self._order = sorted(self._cuts, key=lambda c: (self._cuts[c].order, c))
        self._heads: dict[str, _Loaded] = {}
        self._tails: dict[str, _Loaded] = {}
        self.active_cut: Optional[str] = None
        self.output_names = [t.name for t in self.manifest.output.tensors]
        # the INT8 full model when the bundle ships one (it passed the partitioner's fidelity gate):
        # about a quarter of the FP32 model's weights held for the "output" cut and every fallback
        self.full_precision = "int8" if self.manifest.HasField("full_model_int8") else "fp32"
        full_ref = self.manifest.full_model_int8 if self.full_precision == "int8" else self.manifest.full_model
        self.full = self._load(bundle.path(full_ref))
        self._warm(self.full)
        release_free_memory()
        log.info("full model (%s, %s) loaded with %s (%d threads)", self.full_precision, full_ref.path,
                 [p if isinstance(p, str) else p[0] for p in self.providers], threads)

    # ------------------------------------------------------------------ loading

    @property
    def cut_ids(self) -> list[str]:
        return list(self._order)

    def loaded_heads(self) -> list[str]:
        with self._lock:
            return sorted(self._heads, key=self._order.index)

    def loaded_tails(self) -> list[str]:
        with self._lock:
            return sorted(self._tails, key=self._order.index)

    def _load(self, path: Any) -> _Loaded:
        session = self._ort.InferenceSession(str(path), sess_options=self._options, providers=self.providers)
        return _Loaded(session, session.get_inputs()[0].name, [o.name for o in session.get_outputs()])

    def _warm(self, loaded: _Loaded) -> None:
        feeds = {}
        for inp in loaded.session.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
            dtype = datatypes.numpy_dtype_for_ort_type(inp.type)
            feeds[inp.name] = np.zeros(shape, dtype=dtype if dtype is not None else np.float32)
        start = time.perf_counter()
        loaded.session.run(None, feeds)
        self._pad_for_emulated_device((time.perf_counter() - start) * 1000.0)
        loaded.measured_ms.append((time.perf_counter() - start) * 1000.0)

    def neighbours(self, cut_id: str) -> list[str]:
        """The cut and its ``prewarm_neighbours`` neighbours on each side, by order."""
        if cut_id not in self._cuts:
            raise UnknownCutError(cut_id, self._order)
        i = self._order.index(cut_id)
        n = self.prewarm_neighbours
        return self._order[max(0, i - n): i + n + 1]

    def activate(self, cut_id: str) -> None:
        """Make ``cut_id`` the active cut: load its head and its neighbours', release the rest."""
        # "output" always runs the full model, which is loaded already (a bundle may also list a head for it)
        wanted = [c for c in self.neighbours(cut_id) if c != OUTPUT_CUT and self._cuts[c].HasField("head")]
        new_heads: dict[str, _Loaded] = {}
        new_tails: dict[str, _Loaded] = {}
        with self._lock:
            for c in wanted:
                if c in self._heads:
                    new_heads[c] = self._heads[c]
                if c in self._tails:
                    new_tails[c] = self._tails[c]
        for c in wanted:  # session creation outside the lock: frames keep running meanwhile
            if c not in new_heads:
                loaded = self._load(self.bundle.path(self._cuts[c].head))
                self._warm(loaded)
                new_heads[c] = loaded
                log.debug("head %s loaded (%.1f ms warm-up)", c, loaded.measured_ms[-1])
            if self.local_tails and c not in new_tails and self._cuts[c].HasField("tail"):
                path = self.bundle.path(self._cuts[c].tail)
                if path.is_file():
                    new_tails[c] = self._load(path)
        with self._lock:
            released = len(self._heads) + len(self._tails) - len(new_heads) - len(new_tails)
            loaded = len(new_heads) + len(new_tails) - len(self._heads) - len(self._tails) + released
            self._heads = new_heads
            self._tails = new_tails
            self.active_cut = cut_id
        if loaded or released:
            release_free_memory()

    def measured_head_ms(self) -> dict[str, float]:
        """Median measured head time per loaded cut ("output" = the full model)."""
        with self._lock:
            out = {c: float(np.median(h.measured_ms[-50:])) for c, h in self._heads.items() if h.measured_ms}
        if self.full.measured_ms:
            out[OUTPUT_CUT] = float(np.median(self.full.measured_ms[-50:]))
        return out

    # ------------------------------------------------------------------ per frame

    def preprocess(self, image_bgr: np.ndarray) -> np.ndarray:
        return preprocess_bgr(image_bgr, self.manifest.input)

    def input_jpeg(self, image_bgr: np.ndarray) -> bytes:
        """The JPEG the "input" cut sends for this frame (downscaled unless ``jpeg_size`` is "frame")."""
        image = model_sized(image_bgr, self.manifest.input) if self.jpeg_size == "model" else image_bgr
        return encode_jpeg(image, int(self.manifest.input.jpeg_quality))

    def input_wire_bytes(self, image_bgr: np.ndarray) -> Optional[int]:
        """Bytes the "input" cut would send for this frame (its JPEG, framed as a BYTES tensor), or None
        when the bundle has no input cut: the policy's figure for a cut it is not using (the bundle's is
        the partition machine's held-out frame, not this camera's)."""
        if INPUT_CUT not in self._cuts:
            return None
        return len(datatypes.serialize_bytes_tensor([self.input_jpeg(image_bgr)]))

    def run_head(self, cut_id: str, image_bgr: np.ndarray) -> HeadOutput:
        """Preprocess and run the head of ``cut_id`` (JPEG only for "input", the full model for "output")."""
        cut = self._cuts.get(cut_id)
        if cut is None:
            raise UnknownCutError(cut_id, self._order)
        if cut_id == INPUT_CUT:
            start = time.perf_counter()
            jpeg = self.input_jpeg(image_bgr)
            self._pad_for_emulated_device((time.perf_counter() - start) * 1000.0)
            spec = cut.tensors[0]
            tensor = WireTensor(spec.name, "BYTES", (1,), datatypes.serialize_bytes_tensor([jpeg]))
            return HeadOutput(cut_id, (tensor,), {}, None, None, (time.perf_counter() - start) * 1000.0, 0.0)
        start = time.perf_counter()
        x = self.preprocess(image_bgr)
        pre_ms = (time.perf_counter() - start) * 1000.0
        if cut_id == OUTPUT_CUT:
            outputs, head_ms = self._run(self.full, {self.full.input_name: x})
            return HeadOutput(cut_id, (), {}, x, outputs, pre_ms, head_ms)
        with self._lock:
            loaded = self._heads.get(cut_id)
        if loaded is None:  # a frame that kept a cut the agent just moved away from: load it alone,
            loaded = self._load(self.bundle.path(cut.head))  # without changing the active set
            with self._lock:
                loaded = self._heads.setdefault(cut_id, loaded)
        arrays, head_ms = self._run(loaded, {loaded.input_name: x})
        loaded.measured_ms.append(head_ms)
        if len(loaded.measured_ms) > 200:
            del loaded.measured_ms[:100]
        tensors = tuple(_raw_wire_tensor(spec, arrays, i) for i, spec in enumerate(cut.tensors))
        return HeadOutput(cut_id, tensors, arrays, x, None, pre_ms, head_ms)

    def _pad_for_emulated_device(self, elapsed_ms: float) -> None:
        if self.emulated_slowdown > 1.0:
            time.sleep((self.emulated_slowdown - 1.0) * elapsed_ms / 1000.0)

    def _run(self, loaded: _Loaded, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        start = time.perf_counter()
        values = loaded.session.run(None, dict(feeds))
        self._pad_for_emulated_device((time.perf_counter() - start) * 1000.0)
        elapsed = (time.perf_counter() - start) * 1000.0
        return dict(zip(loaded.output_names, values)), elapsed

    def run_full(self, image_bgr: Optional[np.ndarray], model_input: Optional[np.ndarray] = None) -> tuple[dict[str, np.ndarray], float]:
        """The whole model on the device; returns (outputs, ms including preprocessing when needed)."""
        start = time.perf_counter()
        x = model_input if model_input is not None else self.preprocess(image_bgr)  # type: ignore[arg-type]
        outputs, _ = self._run(self.full, {self.full.input_name: x})
        elapsed = (time.perf_counter() - start) * 1000.0
        self.full.measured_ms.append(elapsed)
        if len(self.full.measured_ms) > 200:
            del self.full.measured_ms[:100]
        return outputs, elapsed

    def run_tail_local(self, head: HeadOutput) -> Optional[tuple[dict[str, np.ndarray], float]]:
        """The cut's tail on the device, when it is loaded; None otherwise."""
        with self._lock:
            loaded = self._tails.get(head.cut_id)
        if loaded is None or not head.arrays:
            return None
        feeds = {}
        for inp in loaded.session.get_inputs():
            if inp.name not in head.arrays:
                return None
            feeds[inp.name] = head.arrays[inp.name]
        return self._run(loaded, feeds)


def _raw_wire_tensor(spec: Any, arrays: Mapping[str, np.ndarray], index: int) -> WireTensor:
    """The cut tensor ``spec`` as the manifest's datatype, raw and uncompressed."""
    arr = arrays.get(spec.name)
    if arr is None:
        arr = list(arrays.values())[index]
    arr = np.ascontiguousarray(arr, dtype=datatypes.to_numpy_dtype(spec.datatype))
    return WireTensor(spec.name, spec.datatype, tuple(int(d) for d in arr.shape), arr.tobytes())


def complete_locally(runner: HeadRunner, head: HeadOutput, image_bgr: np.ndarray) -> tuple[dict[str, np.ndarray], float, str]:
    """Finish a frame on the device: local tail if loaded, else the full model.

    Returns (outputs, ms, what ran: "tail" or "full").
    """
    tail = runner.run_tail_local(head)
    if tail is not None:
        return tail[0], tail[1], "tail"
    outputs, ms = runner.run_full(image_bgr, head.model_input)
    return outputs, ms, "full"

