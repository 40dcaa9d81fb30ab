"""Fixtures for every test package (this folder is on the import path, so ``zones`` is too)."""

from __future__ import annotations

import copy

import pytest
from zones import TINY


@pytest.fixture
def tiny() -> dict:
    """A fresh copy of the tiny case33bw zone (see ``zones.TINY``)."""
    return copy.deepcopy(TINY)
