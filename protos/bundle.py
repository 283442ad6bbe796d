"""Bundle format v1: reading, validating and atomically writing a bundle directory.

Layout::

    BUNDLE/
      manifest.json          protobuf JSON of splitinfer.bundle.v1.Manifest
      edge/                  everything a device needs: heads, full model, labels
      cloud/                 everything a server needs: tails

Each side copies only its own folder plus ``manifest.json``; :func:`read_bundle`
with ``side=Side.EDGE`` (or ``CLOUD``) checks only that side's files. The content
hash is the sha256 of the sorted ``"<path> <sha256>\\n"`` lines of every file the
manifest lists, so it is the same on both sides and identifies the bundle version.

This module is the only code that touches bundle paths; every side imports it, and it
imports neither onnx nor torch.
"""
from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import pathlib
import posixpath
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterator

from google.protobuf import json_format

from protos.errors import (
    BundleExists,
    BundleFileMissing,
    BundleHashMismatch,
    ManifestError,
    UnknownCut,
    UnsupportedSchemaVersion,
)
from protos import bundle_pb2, codec
from protos.names import INPUT_CUT, OUTPUT_CUT
from protos.serving import BUNDLE_HASH_PARAMETER, TAIL_MODEL_VERSION, bundle_hash, tail_model_name, tail_model_version  # noqa: F401 - re-exported

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
EDGE_DIR = "edge"
CLOUD_DIR = "cloud"

DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
     "FP16", "FP32", "FP64", "BYTES", "BF16"}
)
CODECS = frozenset({"fp32", "fp16", "int8", "jpeg", "raw", "lowbit"})  # lowbit: protos.codec
COMPRESSIONS = frozenset({"", "none", "zlib", "zstd"})
TASKS = frozenset({"classification", "detection", "other"})
GATES = frozenset({"baseline", "absolute"})
_CUT_ID = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Cut = bundle_pb2.Cut
Manifest = bundle_pb2.Manifest
FileRef = bundle_pb2.FileRef


class Side(enum.Enum):
    """Which side's files a reader checks."""

    EDGE = "edge"
    CLOUD = "cloud"
    ALL = "all"


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk."""

    root: pathlib.Path
    manifest: bundle_pb2.Manifest
    side: Side

    @property
    def name(self) -> str:
        return self.manifest.model_name

    @property
    def content_hash(self) -> str:
        return self.manifest.content_hash

    @property
    def cut_ids(self) -> list[str]:
        return [cut.id for cut in self.manifest.cuts]

    def cut(self, cut_id: str) -> bundle_pb2.Cut:
        """The cut with this id; :class:`UnknownCut` lists the valid ids otherwise."""
        for cut in self.manifest.cuts:
            if cut.id == cut_id:
                return cut
        raise UnknownCut(cut_id, self.cut_ids)

    def path(self, ref: bundle_pb2.FileRef) -> pathlib.Path:
        """Absolute path of a file the manifest lists."""
        return self.root.joinpath(*ref.path.split("/"))


# --------------------------------------------------------------------------- hashing


def sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def iter_file_refs(manifest: bundle_pb2.Manifest) -> Iterator[tuple[str, bundle_pb2.FileRef]]:
    """Every file the manifest lists, with the field that lists it."""
    if manifest.HasField("full_model"):
        yield "full_model", manifest.full_model
    if manifest.HasField("full_model_int8"):
        yield "full_model_int8", manifest.full_model_int8
    post = manifest.output.WhichOneof("postprocess")
    if post is not None:
        spec = getattr(manifest.output, post)
        if spec.HasField("labels"):
            yield f"output.{post}.labels", spec.labels
    for i, cut in enumerate(manifest.cuts):
        for side in ("head", "tail", "exit_head"):  # exit_head: an early exit (protos.exits)
            if cut.HasField(side):
                yield f"cuts[{i}].{side}", getattr(cut, side)


def compute_content_hash(manifest: bundle_pb2.Manifest) -> str:
    """sha256 over the sorted "path sha256" lines of every listed file."""
    lines = sorted({f"{ref.path} {ref.sha256}\n" for _, ref in iter_file_refs(manifest)})
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# --------------------------------------------------------------------------- parsing


def parse_manifest(text: str, *, source: str = MANIFEST_NAME) -> bundle_pb2.Manifest:
    """Parse and validate manifest JSON (no file checks)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError("(document)", f"not valid JSON: {exc}", source=source) from exc
    if not isinstance(raw, dict):
        raise ManifestError("(document)", f"expected a JSON object, got {type(raw).__name__}", source=source)
    version = raw.get("schema_version")
    if version is None:
        raise ManifestError("schema_version", "missing; expected 1", source=source)
    if not isinstance(version, int) or isinstance(version, bool) or version != SCHEMA_VERSION:
        raise UnsupportedSchemaVersion(
            "schema_version",
            f"version {version!r} is not supported; this reader supports {SCHEMA_VERSION}",
            source=source,
        )
    manifest = bundle_pb2.Manifest()
    try:
        json_format.ParseDict(raw, manifest, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise ManifestError(_field_from_parse_error(str(exc)), str(exc), source=source) from exc
    validate_manifest(manifest, source=source)
    return manifest


def _field_from_parse_error(message: str) -> str:
    named = re.search(r'no field named "([^"]+)" at "([^"]*)"', message)
    if named:
        return f"{named.group(2)}.{named.group(1)}"
    at = re.search(r'at "([^"]+)"', message)
    if at:
        return at.group(1)
    failed = re.search(r"Failed to parse (\w+) field", message)
    return failed.group(1) if failed else "(document)"


def manifest_to_json(manifest: bundle_pb2.Manifest) -> str:
    return json_format.MessageToJson(manifest, preserving_proto_field_name=True, indent=2, sort_keys=False) + "\n"


# --------------------------------------------------------------------------- validation


def validate_manifest(manifest: bundle_pb2.Manifest, *, source: str = MANIFEST_NAME) -> None:
    """Check every field that a reader relies on; raise :class:`ManifestError` naming it."""

    def fail(field: str, message: str) -> None:
        raise ManifestError(field, message, source=source)

    if manifest.schema_version != SCHEMA_VERSION:
        raise UnsupportedSchemaVersion(
            "schema_version",
            f"version {manifest.schema_version} is not supported; this reader supports {SCHEMA_VERSION}",
            source=source,
        )
    if not _MODEL_NAME.match(manifest.model_name):
        fail("model_name", f"{manifest.model_name!r} is not a model name (letters, digits, '_', '.', '-')")
    if not manifest.model_version:
        fail("model_version", "missing; expected a non-empty version string")
    if not _SHA256.match(manifest.content_hash):
        fail("content_hash", f"{manifest.content_hash!r} is not a lowercase hex sha256")
    _validate_input(manifest.input, fail)
    _validate_output(manifest.output, fail)
    if not manifest.HasField("full_model"):
        fail("full_model", "missing; the edge needs the full model for offline fallback")
    _validate_cuts(manifest, fail)
    if manifest.HasField("evaluation"):
        _validate_evaluation(manifest.evaluation, fail)
    for field, ref in iter_file_refs(manifest):
        _validate_file_ref(field, ref, fail)
    actual = compute_content_hash(manifest)
    if actual != manifest.content_hash:
        raise BundleHashMismatch(f"{source} content_hash", manifest.content_hash, actual)


def _validate_tensor(field: str, tensor: bundle_pb2.TensorSpec, fail: Callable[[str, str], None]) -> None:
    if not tensor.name:
        fail(f"{field}.name", "missing; expected the tensor name")
    if tensor.datatype not in DATATYPES:
        fail(f"{field}.datatype", f"{tensor.datatype!r} is not one of {sorted(DATATYPES)}")
    if not tensor.shape:
        fail(f"{field}.shape", "missing; expected the tensor shape (-1 for a variable dimension)")
    bad = [d for d in tensor.shape if d < -1 or d == 0]
    if bad:
        fail(f"{field}.shape", f"{list(tensor.shape)} has invalid dimensions {bad}; expected > 0 or -1")
    if tensor.HasField("encoding"):
        enc = tensor.encoding
        if enc.codec not in CODECS:
            fail(f"{field}.encoding.codec", f"{enc.codec!r} is not one of {sorted(CODECS)}")
        if enc.compression not in COMPRESSIONS:
            fail(f"{field}.encoding.compression", f"{enc.compression!r} is not one of ['none', 'zlib', 'zstd']")
        for where, problem in codec.codec_problems(enc, tensor):  # int8 scale, lowbit parameters
            fail(f"{field}.{where}", problem)


def _validate_input(spec: bundle_pb2.InputSpec, fail: Callable[[str, str], None]) -> None:
    _validate_tensor("input.tensor", spec.tensor, fail)
    if spec.width_px <= 0 or spec.height_px <= 0:
        fail("input.width_px", f"{spec.width_px}x{spec.height_px} is not a valid size; expected positive pixels")
    if spec.layout not in ("NCHW", "NHWC"):
        fail("input.layout", f"{spec.layout!r} is not 'NCHW' or 'NHWC'")
    if spec.color_order not in ("RGB", "BGR"):
        fail("input.color_order", f"{spec.color_order!r} is not 'RGB' or 'BGR'")
    if not spec.pixel_scale > 0:
        fail("input.pixel_scale", f"{spec.pixel_scale} must be > 0 (e.g. 1/255)")
    if len(spec.mean) not in (1, 3):
        fail("input.mean", f"{list(spec.mean)} has {len(spec.mean)} values; expected 1 or 3")
    if len(spec.std) != len(spec.mean):
        fail("input.std", f"{list(spec.std)} has {len(spec.std)} values; expected {len(spec.mean)} like mean")
    if any(s <= 0 for s in spec.std):
        fail("input.std", f"{list(spec.std)} must all be > 0")
    if not 1 <= spec.jpeg_quality <= 100:
        fail("input.jpeg_quality", f"{spec.jpeg_quality} is not in 1..100")


def _validate_output(spec: bundle_pb2.OutputSpec, fail: Callable[[str, str], None]) -> None:
    if not spec.tensors:
        fail("output.tensors", "missing; expected at least one output tensor")
    for i, tensor in enumerate(spec.tensors):
        _validate_tensor(f"output.tensors[{i}]", tensor, fail)
    names = {t.name for t in spec.tensors}
    post = spec.WhichOneof("postprocess")
    if post is None:
        fail("output", "missing postprocess; expected 'classification' or 'detection'")
    if post == "classification":
        cls = spec.classification
        if cls.top_k < 1:
            fail("output.classification.top_k", f"{cls.top_k} must be >= 1")
        if cls.output_tensor not in names:
            fail("output.classification.output_tensor", f"{cls.output_tensor!r} is not one of {sorted(names)}")
    if post == "detection":
        det = spec.detection
        if det.decoding not in ("boxes_scores_labels", "raw"):
            fail("output.detection.decoding", f"{det.decoding!r} is not 'boxes_scores_labels' or 'raw'")
        missing = [n for n in det.output_tensors if n not in names]
        if missing:
            fail("output.detection.output_tensors", f"{missing} are not among the outputs {sorted(names)}")


def _validate_cuts(manifest: bundle_pb2.Manifest, fail: Callable[[str, str], None]) -> None:
    if not manifest.cuts:
        fail("cuts", "missing; expected at least the 'input' and 'output' cuts")
    seen: set[str] = set()
    for i, cut in enumerate(manifest.cuts):
        field = f"cuts[{i}]"
        if not _CUT_ID.match(cut.id):
            fail(f"{field}.id", f"{cut.id!r} is not a cut id (lowercase letters, digits, '_')")
        if cut.id in seen:
            fail(f"{field}.id", f"{cut.id!r} appears twice")
        seen.add(cut.id)
        if not cut.tensors:
            fail(f"{field}.tensors", f"cut {cut.id!r} lists no tensors crossing it")
        for j, tensor in enumerate(cut.tensors):
            _validate_tensor(f"{field}.tensors[{j}]", tensor, fail)
        if cut.id == INPUT_CUT:
            if cut.HasField("head"):
                fail(f"{field}.head", "the 'input' cut runs nothing on the edge; expected no head")
            if not cut.HasField("tail"):
                fail(f"{field}.tail", "the 'input' cut needs a tail (the whole model on the server)")
        elif cut.id == OUTPUT_CUT:
            if cut.HasField("tail"):
                fail(f"{field}.tail", "the 'output' cut runs everything on the edge; expected no tail")
        else:
            for side in ("head", "tail"):
                if not cut.HasField(side):
                    fail(f"{field}.{side}", f"cut {cut.id!r} has no {side}")
            if not cut.HasField("verification"):
                fail(f"{field}.verification", f"cut {cut.id!r} was never verified")
        if cut.HasField("verification") and not cut.verification.passed:
            fail(f"{field}.verification.passed", f"cut {cut.id!r} failed verification and must not ship")
        if cut.id != OUTPUT_CUT and cut.wire_bytes == 0:
            fail(f"{field}.wire_bytes", f"cut {cut.id!r} sends 0 bytes; expected the measured size")
    for end in (INPUT_CUT, OUTPUT_CUT):
        if end not in seen:
            fail("cuts", f"no {end!r} cut; every bundle holds both ends (have {sorted(seen)})")


def _validate_evaluation(ev: bundle_pb2.Evaluation, fail: Callable[[str, str], None]) -> None:
    for name, value, allowed in (("task", ev.task, TASKS), ("gate", ev.gate, GATES)):
        if value not in allowed:
            fail(f"evaluation.{name}", f"{value!r} is not one of {sorted(allowed)}")
    for name, number in (("margin", ev.margin), ("confident_at", ev.confident_at)):
        if not 0.0 <= number <= 1.0:
            fail(f"evaluation.{name}", f"{number} is not in [0, 1]")


def _validate_file_ref(field: str, ref: bundle_pb2.FileRef, fail: Callable[[str, str], None]) -> None:
    path = ref.path
    if not path or path.startswith("/") or "\\" in path or posixpath.normpath(path) != path or ".." in path.split("/"):
        fail(f"{field}.path", f"{path!r} is not a normalized relative POSIX path inside the bundle")
    expected_dir = CLOUD_DIR if field.endswith(".tail") else EDGE_DIR
    if path.split("/")[0] != expected_dir:
        fail(f"{field}.path", f"{path!r} must live under {expected_dir}/")
    if not _SHA256.match(ref.sha256):
        fail(f"{field}.sha256", f"{ref.sha256!r} is not a lowercase hex sha256")


# --------------------------------------------------------------------------- reading


def _side_of(path: str) -> Side:
    return Side.CLOUD if path.split("/")[0] == CLOUD_DIR else Side.EDGE


def read_bundle(root: str | os.PathLike[str], side: Side = Side.ALL, *, check_hashes: bool = True) -> Bundle:
    """Read and validate a bundle; check the files of ``side`` exist and match their sha256."""
    root = pathlib.Path(root)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleFileMissing(str(manifest_path), "(bundle root)")
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError("(document)", f"not UTF-8 text ({exc.reason} at byte {exc.start}); expected a JSON "
                            "manifest in UTF-8", source=str(manifest_path)) from None
    manifest = parse_manifest(text, source=str(manifest_path))
    bundle = Bundle(root=root, manifest=manifest, side=side)
    real_root = root.resolve()
    for field, ref in iter_file_refs(manifest):
        if side is not Side.ALL and _side_of(ref.path) is not side:
            continue
        path = bundle.path(ref)
        if not path.is_file():
            raise BundleFileMissing(str(path), field)
        if not path.resolve().is_relative_to(real_root):  # a symlink (or a linked folder) leading out
            raise ManifestError(field, f"{ref.path!r} resolves to {str(path.resolve())!r}, outside the bundle "
                                f"{str(real_root)!r}; expected the file inside the bundle", source=str(manifest_path))
        if check_hashes:
            actual = sha256_file(path)
            if actual != ref.sha256:
                raise BundleHashMismatch(str(path), ref.sha256, actual)
    return bundle


def update_manifest(
    root: str | os.PathLike[str], mutate: Callable[[bundle_pb2.Manifest], None], side: Side = Side.ALL
) -> Bundle:
    """Apply ``mutate`` to the manifest (e.g. add a device profile) and rewrite it atomically.

    Only the files of ``side`` must be present (a Pi holds only ``edge/``). Files may not
    change here: the content hash must stay valid.
    """
    root = pathlib.Path(root)
    bundle = read_bundle(root, side, check_hashes=False)
    manifest = bundle_pb2.Manifest()
    manifest.CopyFrom(bundle.manifest)
    mutate(manifest)
    validate_manifest(manifest)
    _write_text_atomic(root / MANIFEST_NAME, manifest_to_json(manifest))
    return Bundle(root=root, manifest=manifest, side=side)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_text_atomic(path: pathlib.Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        # mkstemp creates 0600; a bundle is read by other users (a server's service account)
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- writing


class BundleWriter:
    """Builds a bundle in a hidden staging directory beside ``out_dir`` and renames it
    into place on :meth:`commit`; an exception inside ``with`` removes the staging
    directory, so a half-written bundle never appears at ``out_dir``.
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.out_dir = pathlib.Path(out_dir).resolve()
        if self.out_dir.exists() and not overwrite:
            raise BundleExists(f"output directory {str(self.out_dir)!r} already exists; pass overwrite to replace it")
        self.overwrite = overwrite
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=self.out_dir.parent))
        os.chmod(self.staging, 0o777 & ~_current_umask())  # mkdtemp makes 0700; the bundle is shared
        (self.staging / EDGE_DIR).mkdir()
        (self.staging / CLOUD_DIR).mkdir()
        self._committed = False

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._committed:
            self.abort()

    def staging_path(self, rel_path: str) -> pathlib.Path:
        """Where to write a file that will live at ``rel_path`` in the bundle."""
        path = self.staging.joinpath(*rel_path.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add_bytes(self, rel_path: str, data: bytes) -> bundle_pb2.FileRef:
        self.staging_path(rel_path).write_bytes(data)
        return self.file_ref(rel_path)

    def add_file(self, rel_path: str, source: str | os.PathLike[str]) -> bundle_pb2.FileRef:
        shutil.copyfile(source, self.staging_path(rel_path))
        return self.file_ref(rel_path)

    def file_ref(self, rel_path: str) -> bundle_pb2.FileRef:
        """A FileRef for a file already written under :meth:`staging_path`."""
        path = self.staging.joinpath(*rel_path.split("/"))
        return bundle_pb2.FileRef(path=rel_path, sha256=sha256_file(path), size_bytes=path.stat().st_size)

    def commit(self, manifest: bundle_pb2.Manifest) -> Bundle:
        """Stamp schema version and content hash, validate, write the manifest, rename into place."""
        manifest.schema_version = SCHEMA_VERSION
        manifest.content_hash = compute_content_hash(manifest)
        validate_manifest(manifest)
        listed = {ref.path for _, ref in iter_file_refs(manifest)}
        for path in listed:
            if not self.staging.joinpath(*path.split("/")).is_file():
                raise BundleFileMissing(path, "(staging)")
        _write_text_atomic(self.staging / MANIFEST_NAME, manifest_to_json(manifest))
        if self.out_dir.exists():
            old = self.out_dir.with_name(f".{self.out_dir.name}.old-{os.getpid()}")
            os.replace(self.out_dir, old)
            os.replace(self.staging, self.out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.staging, self.out_dir)
        self._committed = True
        return read_bundle(self.out_dir)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
