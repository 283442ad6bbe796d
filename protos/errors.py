"""Errors raised by the contracts package: the bundle reader/writer and the wire codecs.

The tree::

    ContractError
    ├── BundleError                  a bundle on disk is unusable
    │   ├── ManifestError            a manifest field is missing or invalid (names the field)
    │   │   └── UnsupportedSchemaVersion
    │   ├── BundleFileMissing        a file the manifest lists is not there
    │   ├── BundleHashMismatch       a file's sha256 or the content hash differs
    │   ├── UnknownCut               a cut id the bundle does not hold (lists the valid ones)
    │   └── BundleExists             the output directory exists and overwrite was not asked
    └── WireError (also ValueError)  a wire tensor cannot be encoded or decoded
        └── DatatypeError            a datatype string or numpy dtype with no counterpart

Every side (partitioner, edge agent, cloud server) sees the same classes, so a bundle
error on a Pi is a bundle error, not a partitioner error. Every message quotes the
offending value and what was expected.
"""
from __future__ import annotations


class ContractError(Exception):
    """Base of every error the contracts package raises."""


class BundleError(ContractError):
    """A bundle on disk is unusable."""


class ManifestError(BundleError):
    """A manifest field is missing or invalid."""

    def __init__(self, field: str, message: str, *, source: str = "manifest.json") -> None:
        self.field = field
        self.source = source
        super().__init__(f"{source}: {field}: {message}")


class UnsupportedSchemaVersion(ManifestError):
    """The manifest declares a schema version this reader does not know."""


class BundleFileMissing(BundleError):
    """A file listed in the manifest does not exist."""

    def __init__(self, path: str, field: str) -> None:
        self.path = path
        self.field = field
        super().__init__(f"bundle file {path!r} (listed at {field}) is missing")


class BundleHashMismatch(BundleError):
    """A file's content, or the bundle's content hash, differs from the manifest."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(f"{path}: sha256 mismatch: manifest expects {expected}, file has {actual}")


class UnknownCut(BundleError):
    """A cut id that the bundle does not hold."""

    def __init__(self, cut_id: str, valid: list[str]) -> None:
        self.cut_id = cut_id
        self.valid = valid
        super().__init__(f"cut {cut_id!r} is not in the bundle; valid cuts: {', '.join(valid)}")


class BundleExists(BundleError):
    """The output directory already exists."""


class WireError(ContractError, ValueError):
    """A wire tensor cannot be encoded or decoded (bad framing, compression, size or contents)."""


class DatatypeError(WireError):
    """A datatype string or numpy dtype with no counterpart."""
