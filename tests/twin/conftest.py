"""Fixtures of the framework tests; the tiny zone itself is in ``tests/zones.py``."""

from __future__ import annotations

import pytest
import yaml
from zones import TINY  # noqa: F401 - imported by this package's tests


@pytest.fixture
def write_yaml(tmp_path):
    def write(data, name="scenario.yaml") -> str:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return str(path)

    return write
