"""The default zone gives the same KPIs and grid series with the compiled and the reference
power flow (``grid.solver: compiled`` and ``grid.solver: pandapower``)."""

from numbers import Integral, Real

import numpy as np
import pytest
import yaml

import twin
from twin.run import run as run_scenario  # the function (``twin.run`` may name the module)

SOLVERS = ("compiled", "pandapower")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One simulated day of the default zone per solver."""
    out = {}
    for solver in SOLVERS:
        # The world checks the bus references itself when it loads the grid.
        scenario = twin.load_scenario(None, {"days": 1, "grid.solver": solver}, check_grid=False)
        out[solver] = run_scenario(scenario, out=tmp_path_factory.mktemp(solver), progress=False)
    return out


def _flatten(value, path: str = "") -> dict:
    """Nested KPI dicts and lists as one level: ``{"a.b[0]": value}``."""
    if isinstance(value, dict):
        items = [(f"{path}.{k}" if path else str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    else:
        return {path: value}
    flat = {}
    for key, item in items:
        flat.update(_flatten(item, key))
    return flat


def test_each_run_used_its_solver(runs):
    for solver, result in runs.items():
        resolved = yaml.safe_load((result.out_dir / "scenario.yaml").read_text())
        assert resolved["grid"]["solver"] == solver


def test_same_kpis_with_both_solvers(runs):
    got = _flatten(runs["compiled"].kpis)
    ref = _flatten(runs["pandapower"].kpis)
    assert got.keys() == ref.keys()
    assert {"grid_import_mwh", "losses_mwh", "v_min_pu", "max_line_loading_pct",
            "pf_nonconverged_steps", "energy_balance_error"} <= got.keys()
    for key, expected in ref.items():
        value = got[key]
        if isinstance(expected, bool) or not isinstance(expected, Real):
            assert value == expected, key
        elif isinstance(expected, Integral):
            assert isinstance(value, Integral) and value == expected, key
        else:
            assert value == pytest.approx(expected, rel=1e-6, abs=1e-9, nan_ok=True), key
    assert got["pf_nonconverged_steps"] == 0


def test_same_grid_series_with_both_solvers(runs):
    got = runs["compiled"].frames["grid"]
    ref = runs["pandapower"].frames["grid"]
    assert list(got.columns) == list(ref.columns) and len(got) == 96
    tolerance = {"vm_pu": 1e-6, "line_loading_pct": 1e-4, "trafo_loading_pct": 1e-4}
    for column in ref.columns:
        atol = tolerance.get(str(column).split("[")[0], 1e-3)  # powers [kW], [kvar]
        np.testing.assert_allclose(got[column].to_numpy(float), ref[column].to_numpy(float),
                                   rtol=0, atol=atol, err_msg=str(column))
