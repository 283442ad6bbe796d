"""Errors raised by the partitioner and the bundle reader.

The tree::

    PartitionerError
    ├── BundleError                  a bundle on disk is unusable
    │   ├── ManifestError            a manifest field is missing or invalid (names the field)
    │   │   └── UnsupportedSchemaVersion
    │   ├── BundleFileMissing        a file the manifest lists is not there
    │   ├── BundleHashMismatch       a file's sha256 or the content hash differs
    │   ├── UnknownCut               a cut id the bundle does not hold (lists the valid ones)
    │   └── BundleExists             the output directory exists and overwrite was not asked
    ├── ModelLoadError               the model file cannot be read or is not a valid model
    ├── UnsupportedModel             control flow, unsupported ops, no valid cut
    ├── CutNotFound                  a requested tensor is not in the graph (nearest candidates)
    ├── VerificationFailed           a head/tail pair does not reproduce the full model
    └── CalibrationError             no usable calibration frames

Every message quotes the offending value and what was expected.
"""
from __future__ import annotations


class PartitionerError(Exception):
    """Base of every error this package raises."""


class BundleError(PartitionerError):
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


class ModelLoadError(PartitionerError):
    """The model file cannot be read or is not a valid model."""


class UnsupportedModel(PartitionerError):
    """The model uses something the partitioner cannot split."""


class CutNotFound(PartitionerError):
    """A requested cut tensor is not in the graph."""


class VerificationFailed(PartitionerError):
    """A head/tail pair does not reproduce the full model."""


class CalibrationError(PartitionerError):
    """No usable calibration frames."""
