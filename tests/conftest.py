"""Fixtures for every test: no SPLITINFER_* variable of the calling shell leaks into a test."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_splitinfer_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no ``SPLITINFER_*`` variable set (a developer's own settings,
    or one a previous test set, must not change what a test sees); monkeypatch restores them."""
    for name in [n for n in os.environ if n.startswith("SPLITINFER_")]:
        monkeypatch.delenv(name)
