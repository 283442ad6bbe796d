"""The installed splitinfer version, for every side (ServerMetadata, ``--version``)."""
from __future__ import annotations

from importlib import metadata


def package_version() -> str:
    """The distribution's version, or "0+unknown" when running from a tree that was never installed."""
    try:
        return metadata.version("splitinfer")
    except metadata.PackageNotFoundError:
        return "0+unknown"
