"""The models the server knows: bundle tails and a Triton-layout repository, looked up by name.

One `TailModel` per (bundle, cut with a tail), named `protos.bundle.tail_model_name` (e.g.
`mobilenet_v2.features_6`) with the integer version `tail_model_version` ("1", as `export-triton` writes);
the bundle's content hash is carried as `TailModel.bundle_hash` (ModelConfig parameter
`splitinfer_bundle_hash`), so two bundles of one model cannot be served side by side.
A Triton-layout repository (`<repo>/<name>/config.pbtxt`, `<repo>/<name>/<version>/model.onnx`) adds one
model per directory and numeric version, its signature read from `config.pbtxt` (text-format
`ModelConfig`, parsed strictly so typos are caught; inputs and outputs must be listed).

Model names that clients send are never used as file paths: every path is found while scanning at load
time and kept in a dict keyed by (name, version). Unknown names or versions raise `ModelNotFound`
listing what is available. When a name has several versions and the request names none, the default
is the highest numeric version (repository) or the bundle listed last (bundles).

Load/unload (RepositoryModelLoad/Unload) toggle whether a name is served; load of a repository model
rescans the repository directory so models copied in after start-up can be loaded.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Iterable, Mapping

from cloud_server.domain import PLATFORM, ModelState, RepositoryConfig, TailModel, TensorSignature
from cloud_server.errors import ModelNotFound, ModelUnavailable, RegistryError, shorten
from cloud_server.model_config import repository_config_from_text
from protos import bundle_pb2
from protos.bundle import Side, bundle_hash, read_bundle, tail_model_name, tail_model_version
from protos.errors import BundleError
from protos.names import INPUT_CUT

__all__ = ["ModelRegistry", "load_registry", "models_from_bundle", "models_from_repository", "RegistryError"]

logger = logging.getLogger(__name__)


def _signature(spec: bundle_pb2.TensorSpec) -> TensorSignature:
    return TensorSignature(name=spec.name, datatype=spec.datatype, shape=tuple(int(d) for d in spec.shape))


def models_from_bundle(root: Path) -> list[TailModel]:
    """One TailModel per cut that has a tail, reading only the cloud side of the bundle."""
    try:
        bundle = read_bundle(root, Side.CLOUD)
    except BundleError as exc:
        raise RegistryError(f"bundle {str(root)!r} cannot be served: {exc}") from exc
    manifest = bundle.manifest
    outputs = tuple(_signature(t) for t in manifest.output.tensors)
    version = tail_model_version(manifest)
    models = []
    for cut in manifest.cuts:
        if not cut.HasField("tail"):
            continue
        inputs = tuple(_signature(t) for t in cut.tensors)
        if cut.id == INPUT_CUT:
            if len(inputs) != 1 or inputs[0].datatype != "BYTES":
                raise RegistryError(
                    f"bundle {str(root)!r}: the 'input' cut carries {inputs}; expected one BYTES tensor of JPEGs"
                )
            feeds = (manifest.input.tensor.name,)
            input_spec = manifest.input
        else:
            feeds = tuple(t.name for t in inputs)
            input_spec = None
        models.append(
            TailModel(
                name=tail_model_name(manifest, cut.id),
                version=version,
                model_path=bundle.path(cut.tail),
                inputs=inputs,
                outputs=outputs,
                feed_names=feeds,
                batched=all(s.shape and s.shape[0] == -1 for s in inputs),
                input_spec=input_spec,
                source=f"bundle:{root}",
                cut_id=cut.id,
                bundle_hash=bundle_hash(manifest),
            )
        )
    return models


def models_from_repository(repo: Path, overrides: Mapping[str, RepositoryConfig] | None = None) -> list[TailModel]:
    """Every `<name>/<numeric version>/model.onnx` with a valid `<name>/config.pbtxt`, the versions chosen
    by the config's `version_policy`. `overrides` replaces the config of some names (RepositoryModelLoad's
    `config` parameter); such a model needs no config.pbtxt."""
    if not repo.is_dir():
        raise RegistryError(f"triton repository {str(repo)!r} is not a directory")
    overrides = overrides or {}
    models = []
    for entry in sorted(os.scandir(repo), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        model_dir = Path(entry.path)
        config_path = model_dir / "config.pbtxt"
        if entry.name in overrides:
            config = overrides[entry.name]
        elif not config_path.is_file():
            logger.warning("repository entry %s has no config.pbtxt; skipped", model_dir)
            continue
        else:
            config = repository_config_from_text(_read_text(config_path), source=str(config_path))
        models.extend(_repository_versions(repo, model_dir, config, config_path))
    return models


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); expected a text config") from None


def _labels(model_dir: Path, filename: str, config_path: Path) -> tuple[str, ...]:
    if "/" in filename or "\\" in filename or filename in (".", ".."):
        raise RegistryError(f"{config_path}: label_filename {filename!r}; expected a plain file name in {model_dir}")
    path = model_dir / filename
    if not path.is_file():
        raise RegistryError(f"{config_path}: label_filename {filename!r} does not exist in {model_dir}")
    return tuple(line.strip() for line in _read_text(path).splitlines())


def _repository_versions(repo: Path, model_dir: Path, config: RepositoryConfig, config_path: Path) -> list[TailModel]:
    name = model_dir.name
    if config.name and config.name != name:
        raise RegistryError(f"{config_path}: name {config.name!r}; expected the directory name {name!r}")
    if config.platform not in ("", PLATFORM) or config.backend not in ("", "onnxruntime"):
        raise RegistryError(
            f"{config_path}: platform {config.platform!r} / backend {config.backend!r}; "
            f"expected {PLATFORM!r} (ONNX models only)"
        )
    if not config.inputs or not config.outputs:
        raise RegistryError(f"{config_path}: lists {len(config.inputs)} inputs and {len(config.outputs)} outputs; "
                            "expected both to be listed")
    filename = config.default_model_filename or "model.onnx"
    if "/" in filename or "\\" in filename or filename in (".", ".."):
        raise RegistryError(f"{config_path}: default_model_filename {filename!r}; expected a plain file name")
    found = []
    for version_entry in sorted(os.scandir(model_dir), key=lambda e: e.name):
        if not (version_entry.is_dir() and version_entry.name.isdigit()):
            continue
        model_path = Path(version_entry.path) / filename
        if not model_path.is_file():
            logger.warning("%s is missing; version skipped", model_path)
            continue
        found.append((int(version_entry.name), version_entry.name, model_path))
    policy, numbers = config.version_policy
    found.sort()
    if policy == "latest":
        found = found[-numbers[0]:]
    elif policy == "specific":
        found = [f for f in found if f[0] in numbers]
    labels = tuple(_labels(model_dir, f, config_path) if f else () for f in config.output_label_files)
    return [
        TailModel(
            name=name,
            version=version,
            model_path=model_path,
            inputs=config.inputs,
            outputs=config.outputs,
            feed_names=tuple(t.name for t in config.inputs),
            batched=config.batched,
            source=f"repository:{repo}",
            max_batch_size=config.max_batch_size,
            max_queue_delay_us=config.max_queue_delay_us,
            preferred_batch_sizes=config.preferred_batch_sizes,
            input_reshapes=config.input_reshapes,
            output_reshapes=config.output_reshapes,
            config=config.config,
            output_labels=labels if any(labels) else (),
            bundle_hash=config.bundle_hash,
        )
        for _, version, model_path in found
    ]


class ModelRegistry:
    """Thread-safe index of servable models, keyed by (name, version)."""

    def __init__(self, models: Iterable[TailModel] = (), *, repository: Path | None = None,
                 bundles: tuple[Path, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], TailModel] = {}
        self._order: dict[str, list[str]] = {}  # name -> versions, default (preferred) last
        self._unloaded: set[str] = set()
        self.repository = repository
        self.bundles = bundles
        for model in models:
            self._add(model)

    def _add(self, model: TailModel) -> None:
        if model.key in self._models:
            raise RegistryError(f"model {model.name!r} version {model.version!r} is served twice "
                                f"({self._models[model.key].source} and {model.source})")
        self._models[model.key] = model
        versions = self._order.setdefault(model.name, [])
        versions.append(model.version)
        if all(v.isdigit() for v in versions):
            versions.sort(key=int)

    # ------------------------------------------------------------------ lookup

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._order)

    def models(self) -> list[TailModel]:
        with self._lock:
            return [self._models[(n, v)] for n in sorted(self._order) for v in self._order[n]]

    def versions(self, name: str) -> list[str]:
        """Versions of `name`, the default last; ModelNotFound if unknown."""
        with self._lock:
            if name not in self._order:
                raise self._not_found(name)
            return list(self._order[name])

    def _not_found(self, name: str) -> ModelNotFound:
        shown = sorted(self._order)
        listed = ", ".join(shown[:50]) + (f", ... ({len(shown)} in all)" if len(shown) > 50 else "")
        return ModelNotFound(f"model {shorten(name)} is not served; available models: {listed or '(none)'}")

    def find(self, name: str, version: str = "") -> TailModel:
        """The model, ready or not; ModelNotFound naming the available models or versions."""
        with self._lock:
            versions = self._order.get(name)
            if versions is None:
                raise self._not_found(name)
            if not version:
                return self._models[(name, versions[-1])]
            model = self._models.get((name, version))
            if model is None:
                raise ModelNotFound(
                    f"model {name!r} has no version {shorten(version)}; available versions: {', '.join(versions)}"
                )
            return model

    def get(self, name: str, version: str = "") -> TailModel:
        """A model that is ready to serve; ModelNotFound or ModelUnavailable (unloaded) otherwise."""
        model = self.find(name, version)
        if not self.is_ready(name):
            raise ModelUnavailable(f"model {name!r} is unloaded; expected RepositoryModelLoad before inference")
        return model

    def is_ready(self, name: str) -> bool:
        with self._lock:
            return name in self._order and name not in self._unloaded

    def index(self, *, ready_only: bool = False) -> list[tuple[str, str, str, str]]:
        """(name, version, state, reason) for every model version, sorted by name."""
        rows = []
        with self._lock:
            for name in sorted(self._order):
                state = ModelState.UNAVAILABLE if name in self._unloaded else ModelState.READY
                if ready_only and state != ModelState.READY:
                    continue
                reason = "unloaded" if state == ModelState.UNAVAILABLE else ""
                rows.extend((name, v, state, reason) for v in self._order[name])
        return rows

    # ------------------------------------------------------------------ load / unload

    def load(self, name: str, config: RepositoryConfig | None = None) -> list[TailModel]:
        """Mark `name` ready; rescans the repository first so new models can appear. `config` replaces
        the repository model's config.pbtxt (RepositoryModelLoad's `config` parameter); RegistryError
        when there is no repository or `name` is a bundle model."""
        if config is not None:
            if self.repository is None or not (self.repository / name).is_dir():
                raise RegistryError(
                    f"a config override for {shorten(name)} needs a repository directory of that name; "
                    "expected a model of --triton-repository"
                )
            self._rescan_repository({name: config})
        elif self.repository is not None:
            self._rescan_repository()
        with self._lock:
            if name not in self._order:
                raise self._not_found(name)
            self._unloaded.discard(name)
            return [self._models[(name, v)] for v in self._order[name]]

    def unload(self, name: str) -> list[TailModel]:
        """Stop serving `name` (all versions); returns them so the caller can free sessions."""
        with self._lock:
            if name not in self._order:
                raise self._not_found(name)
            self._unloaded.add(name)
            return [self._models[(name, v)] for v in self._order[name]]

    def _rescan_repository(self, overrides: Mapping[str, RepositoryConfig] | None = None) -> None:
        assert self.repository is not None
        found = models_from_repository(self.repository, overrides)
        with self._lock:
            for name in overrides or {}:
                for version in self._order.pop(name, []):
                    self._models.pop((name, version), None)
            for model in found:
                if model.key not in self._models:
                    self._add(model)
                    logger.info("repository: found new model %s version %s", model.name, model.version)


def load_registry(bundles: tuple[Path, ...] = (), triton_repository: Path | None = None) -> ModelRegistry:
    """Scan the bundles' cloud sides and the repository; RegistryError if nothing can be served."""
    models: list[TailModel] = []
    for root in bundles:
        models.extend(models_from_bundle(root))
    if triton_repository is not None:
        models.extend(models_from_repository(triton_repository))
    registry = ModelRegistry(models, repository=triton_repository, bundles=bundles)
    if not models:
        logger.warning("no models to serve (bundles=%s, repository=%s)", list(map(str, bundles)), triton_repository)
    for model in registry.models():
        logger.info("serving %s version %s (%s)", model.name, model.version, model.source)
    return registry
