"""Networks shared by the grid tests, each built once per session (tests deep-copy them)."""

import pandapower.networks as pn
import pytest

from components.grid.config import GridConfig
from components.grid.model import load_network

COMM = "1-MV-comm--0-sw"


@pytest.fixture(scope="session")
def comm_net():
    """1-MV-comm--0-sw with its SimBench profiles (building it takes seconds)."""
    return load_network(GridConfig(source="simbench", code=COMM))


@pytest.fixture(scope="session")
def case33():
    """pandapower's case33bw (read from a file)."""
    return pn.case33bw()
