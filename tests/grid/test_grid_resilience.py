"""Events on the grid: islanding on a grid-forming battery, fault isolation and tie-switch
restoration, switched shunt banks; each checked against pandapower.runpp on the same topology."""

import copy

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pandas as pd
import pytest

from components.grid.config import (
    GridConfig,
    GridFormingConfig,
    ShuntBankConfig,
    TieSwitchConfig,
)
from components.grid.events import parse_events, schedule_problems
from components.grid.model import GridModel
from components.grid.simulator import GridSimulator

STEP_S = 900
H = STEP_S / 3600.0
INJ = np.array([5, 10])


def _times(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2026-06-01T12:00+08:00", periods=n, freq=f"{STEP_S}s")


@pytest.fixture(scope="module")
def cigre():
    """CIGRE MV with sectionalising switches at both ends of line 9 (bus 3 - bus 8).

    Feeder 1 feeds buses 7..11 through line 9; the open switch S1 (line 14, bus 8 - bus 14)
    is the tie to feeder 2.
    """
    net = pn.create_cigre_network_mv(with_der=False)
    pp.create_switch(net, 3, 9, et="l", closed=True, name="Q3-8a")
    pp.create_switch(net, 8, 9, et="l", closed=True, name="Q3-8b")
    return net


def _model(net, n, solver="compiled", **kw):
    kw.setdefault("background_scale", 0.1)
    return GridModel(copy.deepcopy(net), _times(n), injection_buses=INJ, solver=solver,
                     step_s=STEP_S, **kw)


GFM = GridFormingConfig(bus=12, p_max_kw=6000.0, e_kwh=8000.0, soc_init=0.8, soc_min=0.1,
                        efficiency=0.9)
OUTAGE = [{"type": "upstream_outage", "start": 0.5, "end": 1.5}]  # steps 2..5


def test_island_on_grid_forming_battery_matches_runpp_and_integrates_soc(cigre):
    n = 8
    models = {s: _model(cigre, n, s, grid_forming=GFM, events=OUTAGE)
              for s in ("compiled", "pandapower")}
    eta = np.sqrt(GFM.efficiency)
    e_kwh = GFM.soc_init * GFM.e_kwh
    for k in range(n):
        p = np.array([300.0 + 50 * k, -800.0])
        got = models["compiled"].solve_step(k, p, np.array([30.0, 0.0]))
        ref = models["pandapower"].solve_step(k, p, np.array([30.0, 0.0]))
        assert got.converged and ref.converged
        islanded = 2 <= k <= 5
        assert got.islanded == int(islanded) and got.island_held == int(islanded)
        np.testing.assert_allclose(got.vm_pu, ref.vm_pu, atol=1e-6)
        np.testing.assert_allclose(got.line_loading_pct, ref.line_loading_pct, atol=1e-4)
        assert got.gfm_supply_kw == pytest.approx(ref.gfm_supply_kw, abs=1e-3)
        assert got.import_kw == pytest.approx(ref.import_kw, abs=1e-3)
        assert got.energised.all()
        if islanded:
            assert got.import_kw == 0.0 and got.gfm_supply_kw > 1000.0
            # the unit is the slack: its bus sits at its set-point
            bus12 = list(models["compiled"].bus_ids).index(12)
            assert got.vm_pu[bus12] == pytest.approx(GFM.vm_pu, abs=1e-9)
            e_kwh -= got.gfm_supply_kw * H / eta
        else:
            assert got.gfm_supply_kw == 0.0 and got.import_kw > 1000.0
        assert got.gfm_e_kwh == pytest.approx(e_kwh, rel=1e-12)
        assert GFM.soc_min <= got.gfm_soc <= GFM.soc_max
        assert abs(got.balance_residual_kw) < 1e-3
        assert got.gfm_headroom_kw == pytest.approx(
            min(GFM.p_max_kw, (got.gfm_soc - GFM.soc_min) * GFM.e_kwh * eta / H)
            - got.gfm_demand_kw)
    # reconnection: the same state as without any event
    plain = _model(cigre, n)
    expected = plain.solve_step(n - 1, np.array([300.0 + 50 * (n - 1), -800.0]),
                                np.array([30.0, 0.0]))
    np.testing.assert_allclose(got.vm_pu, expected.vm_pu, atol=1e-9)


def test_island_beyond_the_units_power_goes_dark_and_is_reported(cigre):
    small = GFM.model_copy(update={"p_max_kw": 500.0})
    model = _model(cigre, 4, grid_forming=small, events=OUTAGE)
    model.solve_step(0, np.array([300.0, -100.0]), np.zeros(2))
    model.solve_step(1, np.array([300.0, -100.0]), np.zeros(2))
    r = model.solve_step(2, np.array([300.0, -100.0]), np.zeros(2))
    assert r.converged and r.islanded == 1 and r.island_held == 0
    assert not r.energised.any() and (r.vm_pu == 0).all()
    assert r.gfm_supply_kw == 0.0 and r.gfm_demand_kw > small.p_max_kw
    assert r.gfm_headroom_kw < 0  # the coordinator must take this much net load off
    assert r.gfm_soc == small.soc_init
    assert r.background_load_unserved_kw > 0 and r.background_load_kw == 0
    np.testing.assert_array_equal(r.injection_unserved_kw, [300.0, -100.0])
    assert r.customers_off == r.customers_interrupted > 0
    assert abs(r.balance_residual_kw) < 1e-9


def test_outage_without_grid_forming_unit_de_energises_everything(cigre):
    for solver in ("compiled", "pandapower"):
        model = _model(cigre, 4, solver, events=OUTAGE)
        r = [model.solve_step(k, np.array([100.0, 50.0]), np.zeros(2)) for k in range(4)][2]
        assert r.converged and not r.energised.any() and r.import_kw == 0.0
        assert r.injection_kw == 0.0 and r.losses_kw == 0.0


FAULT = [{"type": "fault", "element": "line", "index": 9, "at": 0.6, "repair_h": 1.0}]
TIE = [TieSwitchConfig(switch="S1", switching_time_s=300)]


def test_fault_is_isolated_and_tie_restores_healthy_sections_within_limits(cigre):
    n = 8  # fault in step 2 (0.5-0.75 h); tie ready at 0.6 h + 300 s -> step 3; repair step 7
    models = {s: _model(cigre, n, s, tie_switches=TIE, events=FAULT)
              for s in ("compiled", "pandapower")}
    ids = list(models["compiled"].bus_ids)
    downstream = [ids.index(b) for b in (7, 8, 9, 10, 11)]
    for k in range(n):
        p = np.array([200.0, 400.0])
        got = models["compiled"].solve_step(k, p, np.zeros(2))
        ref = models["pandapower"].solve_step(k, p, np.zeros(2))
        assert got.converged and ref.converged
        np.testing.assert_allclose(got.vm_pu, ref.vm_pu, atol=1e-6)
        np.testing.assert_allclose(got.line_loading_pct, ref.line_loading_pct, atol=1e-4)
        assert abs(got.balance_residual_kw) < 1e-3
        assert (got.line_loading_pct <= 100.0).all()
        if k == 2:
            assert not got.energised[downstream].any() and got.ties_closed == 0
            assert got.customers_interrupted == got.customers_off > 0
            assert got.injection_unserved_kw[1] == 400.0  # bus 10 is dark
            assert got.background_load_unserved_kw > 0
        elif 3 <= k < 7:
            assert got.energised.all() and got.ties_closed == 1
            assert got.line_loading_pct[list(models["compiled"].line_ids).index(9)] == 0.0
            assert got.injection_unserved_kw.sum() == 0.0
        else:
            assert got.energised.all() and got.ties_closed == 0
    # the restored state against runpp on the same switched topology, written by hand
    net = copy.deepcopy(cigre)
    net.load["p_mw"] *= 0.1
    net.load["q_mvar"] *= 0.1
    net.line.loc[9, "in_service"] = False
    net.switch.loc[net.switch.name.isin(["Q3-8a", "Q3-8b"]), "closed"] = False
    net.switch.loc[net.switch.name == "S1", "closed"] = True
    pp.create_loads(net, INJ, p_mw=[0.2, 0.4], q_mvar=0.0)
    pp.runpp(net, calculate_voltage_angles=True, init="auto")
    model = _model(cigre, n, tie_switches=TIE, events=FAULT)
    restored = [model.solve_step(k, np.array([200.0, 400.0]), np.zeros(2)) for k in range(4)][3]
    np.testing.assert_allclose(restored.vm_pu, net.res_bus.vm_pu.to_numpy()[model.bus_ids],
                               atol=1e-6)
    # the tripped line reports 0 where runpp leaves NaN
    np.testing.assert_allclose(restored.line_loading_pct,
                               np.nan_to_num(net.res_line.loading_percent.to_numpy()), atol=1e-4)


def test_voltage_quality_counts_energised_buses_in_band_and_results_stay_read_only(cigre):
    model = _model(cigre, 3, events=FAULT)  # no tie: buses 7..11 stay dark in step 2
    results = [model.solve_step(k, np.array([200.0, 400.0]), np.zeros(2)) for k in range(3)]
    for r in results:
        in_band = (r.vm_pu >= 0.9) & (r.vm_pu <= 1.1)
        np.testing.assert_array_equal(r.v_quality_ok, (r.energised == 1) & in_band)
        assert r.v_quality_ok.dtype == np.int64
    dark = results[2]
    assert dark.v_quality_ok.sum() == dark.energised.sum() < len(model.bus_ids)
    # the arrays handed out are views of the solver's rows, which later steps start from
    for name in ("vm_pu", "va_deg", "line_loading_pct", "trafo_loading_pct"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(results[1], name)[0] = 0.5


def test_tie_that_would_overload_stays_open(cigre):
    model = _model(cigre, 4, tie_switches=TIE, events=FAULT, max_loading_pct=5.0)
    r = [model.solve_step(k, np.array([200.0, 400.0]), np.zeros(2)) for k in range(4)][3]
    assert r.ties_closed == 0 and r.energised.sum() == len(model.bus_ids) - 5


def test_reactor_bank_switches_with_hysteresis_and_lowers_overvoltage(cigre):
    # a PV surplus at the end of feeder 1 raises its voltage above 1.05 pu
    bank = ShuntBankConfig(bus=10, q_kvar=1500.0, steps=2, v_on_pu=1.05, v_off_pu=1.0,
                           delay_steps=2)
    n = 8
    p = np.array([0.0, -5000.0])
    with_bank = _model(cigre, n, shunts=[bank])
    ref = _model(cigre, n, "pandapower", shunts=[bank])
    without = _model(cigre, n)
    pos = list(with_bank.bus_ids).index(10)
    steps, vm = [], []
    for k in range(n):
        r = with_bank.solve_step(k, p, np.zeros(2))
        rr = ref.solve_step(k, p, np.zeros(2))
        np.testing.assert_allclose(r.vm_pu, rr.vm_pu, atol=1e-6)
        base = without.solve_step(k, p, np.zeros(2))
        steps.append(int(r.shunt_steps[0]))
        vm.append(r.vm_pu[pos])
        assert r.vm_pu[pos] <= base.vm_pu[pos] + 1e-12
    assert base.vm_pu[pos] > bank.v_on_pu
    # two steps above v_on before each switching; never more steps than the bank has
    assert steps[:2] == [0, 0] and steps[2] == 1 and max(steps) <= bank.steps
    assert vm[-1] < base.vm_pu[pos] - 0.005
    assert with_bank.shunts.switchings == max(steps)  # no chatter between on and off
    assert r.shunt_q_kvar[0] == pytest.approx(bank.q_kvar * steps[-1] * vm[-1] ** 2)


def test_bad_events_name_their_fields(cigre):
    start = pd.Timestamp("2026-06-01T00:00+08:00")
    events = parse_events([
        {"type": "upstream_outage", "start": 5.0, "end": 2.0},
        {"type": "fault", "element": "line", "index": 1, "at": 30.0, "repair_h": 1.0},
        {"type": "upstream_outage", "start": "2026-05-01T00:00+08:00", "end": 1e-3 - 24.0},
    ])
    problems = schedule_problems(events, start, 96, 900)
    assert problems[0].startswith("events.0.end: must be after start")
    assert problems[1].startswith("events.1.at:") and "outside the run" in problems[1]
    assert problems[2].startswith("events.2.start:")
    with pytest.raises(ValueError, match=r"events.0.index: line 99 not found"):
        _model(cigre, 2, events=[{"type": "fault", "element": "line", "index": 99, "at": 0.1,
                                  "repair_h": 1.0}])
    with pytest.raises(ValueError, match=r"events.0.name: trafo name 'T9' not found"):
        _model(cigre, 2, events=[{"type": "fault", "element": "trafo", "name": "T9", "at": 0.1,
                                  "repair_h": 1.0}])
    with pytest.raises(ValueError, match="events.0.at"):
        _model(cigre, 2, events=[{"type": "fault", "element": "line", "index": 1, "at": 9.0,
                                  "repair_h": 1.0}])
    with pytest.raises(ValueError, match=r"grid.tie_switches.0.switch: switch 0 is closed"):
        _model(cigre, 2, tie_switches=[TieSwitchConfig(switch=0)])
    with pytest.raises(ValueError, match="grid.grid_forming.bus: bus 0 holds the external"):
        _model(cigre, 2, grid_forming=GFM.model_copy(update={"bus": 0}))
    with pytest.raises(Exception, match="exactly one of 'index'"):
        parse_events([{"type": "fault", "element": "line", "at": 1.0, "repair_h": 1.0}])
    with pytest.raises(Exception, match="repair_h"):
        parse_events([{"type": "fault", "element": "line", "index": 1, "at": 1.0,
                       "repair_h": 0}])


@pytest.mark.parametrize(("update", "field"), [
    ({"soc_min": 0.5, "soc_max": 0.4}, "soc_max"),
    ({"soc_init": 0.05}, "soc_max"),
])
def test_bad_grid_forming_config_names_field(update, field):
    with pytest.raises(Exception, match=field):
        GridFormingConfig(**{**GFM.model_dump(), **update})


def test_simulator_reports_island_outputs_finite(cigre):
    sim = GridSimulator()
    sim.init("Grid-0", start="2026-06-01T12:00:00+08:00", step_s=STEP_S, n_steps=4)
    cfg = GridConfig(source="pandapower", name="create_cigre_network_mv", background_scale=0.1,
                     grid_forming=GFM, tie_switches=TIE)
    sim.create(1, "Grid", config=cfg.model_dump(mode="json"),
               injectors={"PV-0.pv": [5, 10, 10]}, net=copy.deepcopy(cigre), events=OUTAGE)
    attrs = ["energised", "islanded", "island_held", "islanded_next", "gfm_supply_kw",
             "gfm_headroom_kw", "injection_unserved_kw", "customers_off", "vm_pu"]
    nexts = [sim.get_data({"grid": attrs})["grid"]["islanded_next"]]
    for k in range(4):
        sim.step(k * STEP_S, {"grid": {"p_kw": {"PV-0.pv": np.array([100.0, -50.0, 20.0])}}}, 0)
        out = sim.get_data({"grid": attrs})["grid"]
        nexts.append(out["islanded_next"])
        assert out["islanded"] == int(k >= 2) and out["energised"].all()
    assert nexts == [0, 0, 1, 1, 0]
    assert sim.model.customers_per_bus[list(sim.model.net.bus.index).index(10)] >= 2
