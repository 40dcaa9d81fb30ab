"""The compiled solver against the reference (pandapower.runpp), step by step, and its limits."""

import copy

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pandas as pd
import pytest

from components.grid.config import GridConfig
from components.grid.model import GridModel, load_network

# Same results to solver tolerance (pandapower stops at a 1e-8 MVA mismatch).
VM_ATOL_PU = 1e-6
VA_ATOL_DEG = 1e-4
LOADING_ATOL_PCT = 1e-4
POWER_ATOL_KW = 1e-3  # 1e-6 MW


def _times(start: str, n: int, step_s: int = 900) -> pd.DatetimeIndex:
    return pd.date_range(pd.Timestamp(start), periods=n, freq=pd.Timedelta(seconds=step_s))


def _assert_same(got, ref, where) -> None:
    np.testing.assert_allclose(got.vm_pu, ref.vm_pu, rtol=0, atol=VM_ATOL_PU, err_msg=where)
    np.testing.assert_allclose(got.va_deg, ref.va_deg, rtol=0, atol=VA_ATOL_DEG, err_msg=where)
    np.testing.assert_allclose(got.line_loading_pct, ref.line_loading_pct, rtol=0,
                               atol=LOADING_ATOL_PCT, err_msg=where)
    np.testing.assert_allclose(got.trafo_loading_pct, ref.trafo_loading_pct, rtol=0,
                               atol=LOADING_ATOL_PCT, err_msg=where)
    for name in ("losses_kw", "import_kw", "q_import_kvar"):
        assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=0,
                                                   abs=POWER_ATOL_KW), (where, name)
    for name in ("background_load_kw", "background_gen_kw", "background_storage_kw",
                 "injection_kw"):
        assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=1e-12,
                                                   abs=1e-9), (where, name)
    assert got.converged == ref.converged


def _balance_closes(r) -> None:
    # Bounded by the solvers' power-mismatch tolerance (1e-8 MVA per bus).
    assert abs(r.balance_residual_kw) < POWER_ATOL_KW, r.balance_residual_kw


def test_compiled_equals_pandapower_every_step_of_a_day_with_random_injections(comm_net):
    rng = np.random.default_rng(2026)
    buses = np.sort(rng.choice(np.arange(2, 107), 8, replace=False))
    times = _times("2026-06-01T00:00+08:00", 96)
    models = {solver: GridModel(copy.deepcopy(comm_net), times, injection_buses=buses,
                                solver=solver) for solver in ("compiled", "pandapower")}
    # Loads and V2G around the clock, PV around noon large enough to reverse the flow.
    solar = np.clip(np.sin(2 * np.pi * (np.arange(96) / 96 - 0.25)), 0.0, None)
    p_kw = rng.uniform(-300.0, 1500.0, (96, buses.size)) - np.outer(
        solar, rng.dirichlet(np.ones(buses.size))) * 30_000.0
    q_kvar = rng.uniform(-400.0, 400.0, (96, buses.size))
    imports = []
    for k in range(96):
        got = models["compiled"].solve_step(k, p_kw[k], q_kvar[k])
        ref = models["pandapower"].solve_step(k, p_kw[k], q_kvar[k])
        assert got.converged and ref.converged
        _assert_same(got, ref, f"step {k}")
        _balance_closes(got)
        _balance_closes(ref)
        imports.append(got.import_kw)
    assert max(imports) > 0 > min(imports)  # both directions were compared
    assert models["compiled"].nonconverged_steps == 0


def _rich_network():
    """CIGRE MV with everything the compiled solver models, and its awkward cases."""
    net = pn.create_cigre_network_mv(with_der="all")  # loads, PV, wind, storage, fuel cells
    pp.create_shunt(net, bus=5, q_mvar=-0.2, p_mw=0.015)
    pp.create_shunt(net, bus=9, q_mvar=-0.1, p_mw=0.01, vn_kv=21.0, step=2)  # rated off-bus
    pp.create_shunt(net, bus=7, q_mvar=-0.1, p_mw=0.01, step=2, max_step=3,
                    step_dependency_table=True, id_characteristic_table=0)
    net["shunt_characteristic_table"] = pd.DataFrame({
        "id_characteristic": [0, 0, 0], "step": [1, 2, 3],
        "q_mvar": [-0.1, -0.25, -0.4], "p_mw": [0.004, 0.03, 0.05]})  # not p_mw * step
    pp.create_shunt(net, bus=10, q_mvar=-0.5, p_mw=0.05, in_service=False)
    # A bus behind an impedance switch, with a load.
    behind = pp.create_bus(net, vn_kv=20.0, name="behind impedance switch")
    pp.create_switch(net, bus=4, element=behind, et="b", closed=True, z_ohm=0.5)
    pp.create_load(net, behind, p_mw=0.4, q_mvar=0.1)
    # An island (load, sgen and shunt on it draw nothing) and an out-of-service bus.
    island = pp.create_bus(net, vn_kv=20.0, name="island")
    pp.create_load(net, island, p_mw=0.3, q_mvar=0.1)
    pp.create_sgen(net, island, p_mw=0.1)
    pp.create_shunt(net, bus=island, q_mvar=-0.1, p_mw=0.02)
    dead = pp.create_bus(net, vn_kv=20.0, name="out of service", in_service=False)
    pp.create_load(net, dead, p_mw=0.2)
    # Scaled and out-of-service elements, an out-of-service line and external grid.
    net.load.loc[3, "scaling"] = 0.7
    net.sgen.loc[2, "in_service"] = False
    net.storage["scaling"] = 1.5
    net.line.loc[net.line.index[-1], "in_service"] = False
    pp.create_ext_grid(net, bus=1, in_service=False)
    return net, behind


def test_compiled_equals_pandapower_on_shunts_storage_switches_and_islands():
    net, behind = _rich_network()
    times = _times("2026-06-01T12:00+08:00", 4)
    buses = [behind, 11, 14]
    models = {solver: GridModel(copy.deepcopy(net), times, injection_buses=buses,
                                background_scale=0.9, solver=solver)
              for solver in ("compiled", "pandapower")}
    steps = ([200.0, -300.0, 50.0], [0.0, 0.0, 0.0], [-900.0, 400.0, 1000.0],
             [3000.0, -2500.0, 0.0])
    for k, p in enumerate(steps):
        q = np.array([20.0, -10.0, 0.0])
        got = models["compiled"].solve_step(k, np.array(p), q)
        ref = models["pandapower"].solve_step(k, np.array(p), q)
        assert got.converged and ref.converged
        _assert_same(got, ref, f"step {k}")
        _balance_closes(got)
        # The shunts' active power is part of the losses, as in pandapower's res_shunt.
        ref_net = models["pandapower"].net
        shunt_kw = 1e3 * ref_net.res_shunt.p_mw.sum()
        branch_kw = 1e3 * (ref_net.res_line.pl_mw.sum() + ref_net.res_trafo.pl_mw.sum())
        assert shunt_kw > 30.0 and got.losses_kw > branch_kw + shunt_kw - POWER_ATOL_KW
        assert got.background_storage_kw != 0.0
    model = models["compiled"]
    assert model.bus_ids.size == len(net.bus) - 2  # the island and the dead bus are not reported


def test_compiled_solver_refuses_what_it_does_not_model_and_names_the_way_out():
    net = pn.create_cigre_network_mv()
    pp.create_gen(net, bus=12, p_mw=0.5, vm_pu=1.0)
    pp.create_impedance(net, from_bus=3, to_bus=8, rft_pu=0.02, xft_pu=0.05, sn_mva=10.0)
    pp.create_ward(net, bus=9, ps_mw=0.1, qs_mvar=0.02, pz_mw=0.01, qz_mvar=0.0)
    times = _times("2026-06-01T12:00+08:00", 2)
    with pytest.raises(ValueError, match=r"^solver: 'compiled' cannot solve this network") as err:
        GridModel(copy.deepcopy(net), times, injection_buses=[11])
    msg = str(err.value)
    assert all(f"net.{t}:" in msg for t in ("gen", "impedance", "ward"))
    assert "grid.solver: pandapower" in msg and "\n" not in msg
    # The reference solver models them; taking the elements out of service is the other way.
    assert GridModel(copy.deepcopy(net), times, injection_buses=[11],
                     solver="pandapower").initial_result.converged
    for table in ("gen", "impedance", "ward"):
        net[table]["in_service"] = False
    assert GridModel(net, times, injection_buses=[11]).initial_result.converged


def test_refusal_comes_when_the_network_is_loaded():
    # Loading is part of scenario validation, so a scenario fails there, not mid-build.
    with pytest.raises(ValueError, match=r"^solver: .*net\.gen: 2 element"):
        load_network(GridConfig(source="pandapower", name="case9"))
    net = load_network(GridConfig(source="pandapower", name="case9", solver="pandapower"))
    assert len(net.gen) == 2
