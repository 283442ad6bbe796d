"""Errors raised by the partitioner (bundle errors live in :mod:`protos.errors`).

The tree::

    PartitionerError
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
