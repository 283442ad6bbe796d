"""How servers name a bundle's tails, and how a bundle is told apart on the wire.

Every tail is served as ``<model_name>.<cut_id>`` version :data:`TAIL_MODEL_VERSION` (an integer,
as Triton requires; ``export-triton`` writes that version directory and our server registers it).
The bundle itself is identified by :func:`bundle_hash`, which our server reports and ``export-triton``
writes as the ModelConfig parameter :data:`BUNDLE_HASH_PARAMETER`; the edge agent compares it with
its own bundle, so a server holding another bundle of the same model is a configuration error.
Requests also carry the hash as the request parameter :data:`BUNDLE_HASH_PARAMETER`, for the record
(logs, traces): no server checks it, by design. Stock Triton cannot (a model never sees request
parameters), so the one check is the agent's, through ModelConfig, the same against every server;
zeroconf advertisements name a bundle as ``<model_name>@<bundle_hash>`` for the same reason.
Re-exported by :mod:`protos.bundle`.
"""
from __future__ import annotations

from protos import bundle_pb2

__all__ = ["BUNDLE_HASH_PARAMETER", "TAIL_MODEL_VERSION", "bundle_hash", "tail_model_name", "tail_model_version"]


def tail_model_name(manifest: bundle_pb2.Manifest, cut_id: str) -> str:
    """Name a server gives the tail of ``cut_id``: ``<model_name>.<cut_id>`` (e.g. ``mobilenet_v2.features_6``)."""
    return f"{manifest.model_name}.{cut_id}"


#: Version every server (ours, Triton) gives a bundle's tails, and the version the edge asks for.
#: Triton's versions are integers (the `<model>/<version>/` directory); `export-triton` writes this one.
TAIL_MODEL_VERSION = "1"

#: ModelConfig parameter carrying the bundle's content hash (`bundle_hash`), written by
#: `export-triton` into config.pbtxt and reported by our server for bundle tails; the edge compares
#: it with its own bundle before offloading, so a bundle mismatch is a configuration problem.
BUNDLE_HASH_PARAMETER = "splitinfer_bundle_hash"


def tail_model_version(manifest: bundle_pb2.Manifest) -> str:
    """Version a server gives every tail of a bundle: :data:`TAIL_MODEL_VERSION` (an integer, as
    Triton requires). Which bundle a tail comes from is :func:`bundle_hash`, carried in the
    ModelConfig parameter :data:`BUNDLE_HASH_PARAMETER`, not in the version."""
    del manifest  # one version for every bundle; kept as an argument so callers name the bundle
    return TAIL_MODEL_VERSION


def bundle_hash(manifest: bundle_pb2.Manifest) -> str:
    """The bundle's identity on the wire: the first 12 hex digits of its content hash."""
    return manifest.content_hash[:12]
