"""The rolling-horizon programme and the hindsight bound on problems whose optimum is known.

The hindsight bound (:mod:`components.coordinator.hindsight`) is checked three ways: by hand on
one EV (the analytic optimum of each objective), on the tiny mosaik world (the bound is at or
below every fast strategy's value on every objective, each run is a feasible point of its own
programme, the programme's dispatch keeps every EV within its limits) and through the gap.
"""

from __future__ import annotations

import numpy as np
import pytest

from components.coordinator.hindsight import (
    Exogenous,
    FleetLog,
    FleetPhysics,
    HindsightProblem,
    Sessions,
)
from components.coordinator.optimal import gap, objective_value, strategy_gaps
from components.coordinator.strategies import water_level
from components.coordinator.tariffs import FLAT, PEAK, VALLEY
from tests.coordinator.conftest import DT_H, apply, fleet, snapshot, strategy, view


def plan_of(name_obj: str, zone, snap, **cfg):
    strat = strategy("optimal", zone, optimal={"objective": name_obj}, **cfg)
    plan = strat.solve(snap)
    assert strat.last_status == "ok"
    return strat, plan


def test_cost_objective_buys_in_the_cheapest_steps(zone):
    rng = np.random.default_rng(0)
    state = fleet(10, rng, need_kwh=(8.0, 12.0), dep_steps=(24, 25))
    ev = view(state, 0)
    periods = np.r_[np.full(8, PEAK), np.full(8, VALLEY), np.full(80, FLAT)]
    strat = strategy("optimal", zone, departure_target="need",
                     optimal={"objective": "cost"})
    plan = strat.solve(snapshot(zone, ev, period=periods))
    need = 1.02 * ev.need_kwh
    for j, i in enumerate(ev.ids):
        p = plan[i]
        assert p.size == 24 - 1  # planned departure one step (the margin) earlier
        assert p[:8].max() < 1e-6  # nothing at the peak
        charged = 0.92 * p.sum() * DT_H
        # the need, and beyond it only what the cheapest price is worth keeping
        assert charged >= need[j] - 1e-6
        assert p[16:].max() < 1e-6 or p[8:16].min() > 7.0 - 1e-6  # valley used first


def test_infeasible_need_charges_all_the_time_it_can(zone):
    rng = np.random.default_rng(1)
    state = fleet(1, rng, soc=(0.2, 0.2), need_kwh=(30.0, 30.0), dep_steps=(6, 7))
    ev = view(state, 0)
    _, plan = plan_of("cost", zone, snapshot(zone, ev, period=PEAK))
    np.testing.assert_allclose(plan[0], 7.0, rtol=1e-9)


def test_peak_objective_cuts_the_forecast_peak_to_the_water_level(zone):
    rng = np.random.default_rng(2)
    state = fleet(20, rng, v2g_share=1.0, soc=(0.8, 0.8), need_kwh=(0.0, 0.0),
                  dep_steps=(90, 91))
    ev = view(state, 0)
    base = 500.0 + 300.0 * np.exp(-0.5 * ((np.arange(96) - 40) / 3.0) ** 2)
    snap = snapshot(zone, ev, base_kw=base[0], base_forecast=base, peak_kw=500.0,
                    period=FLAT)
    _, plan = plan_of("peak", zone, snap)
    net = np.zeros(96)
    for p in plan.values():
        net[:p.size] += p
    imports = base + net
    # the V2G energy (20 EVs x 20 kWh above the minimum SoC, grid side) cut off the top
    energy = 20 * (0.8 - 0.4) * 50.0 * 0.92
    level = water_level(base, energy, DT_H)
    assert level > 500.0  # not limited by the energy: by power and the level
    assert imports.max() == pytest.approx(max(level, base.max() - 20 * 7.0), abs=1.0)
    # every EV returns at least to its energy at plug-in (V2G gives back what it takes)
    for p in plan.values():
        assert 0.92 * np.maximum(p, 0).sum() - np.maximum(-p, 0).sum() / 0.92 >= -1e-6


def test_pv_objective_charges_with_the_sun_first(zone):
    rng = np.random.default_rng(3)
    state = fleet(10, rng, soc=(0.2, 0.2), need_kwh=(5.0, 5.0), dep_steps=(40, 41))
    ev = view(state, 0)
    pv = np.zeros(96)
    pv[20:30] = 30.0  # 30 kW for 2.5 h: 75 kWh, more than the 50 kWh needed
    periods = np.r_[np.full(8, VALLEY), np.full(88, FLAT)]
    _, plan = plan_of("pv", zone, snapshot(zone, ev, period=periods, pv_forecast=pv),
                      departure_target="need")
    total = sum(plan.values())
    # no grid energy at all: the sun gives the needs and more (up to full)
    assert total[:20].max() < 1e-6 and total[30:].max() < 1e-6
    assert total[20:30].sum() * DT_H == pytest.approx(75.0, rel=1e-6)
    # little sun: the need's rest comes from the valley, the cheapest grid energy
    pv[20:30] = 5.0
    _, plan = plan_of("pv", zone, snapshot(zone, ev, period=periods, pv_forecast=pv),
                      departure_target="need")
    total = sum(plan.values())
    np.testing.assert_allclose(total[20:30], 5.0, rtol=1e-6)
    assert total[8:20].max() < 1e-6 and total[30:].max() < 1e-6
    grid_kwh = total[:8].sum() * DT_H
    assert 0.92 * (grid_kwh + 12.5) == pytest.approx(1.02 * 50.0, rel=1e-6)


def test_decide_follows_the_plan_and_never_leaves_bounds(zone):
    rng = np.random.default_rng(4)
    state = fleet(30, rng, v2g_share=0.5, need_kwh=(0.0, 15.0), dep_steps=(10, 60))
    feasible = state["req_kwh"] - state["e_kwh"] <= 0.92 * 7.0 * DT_H * state["dep_step"] * 0.9
    start = state["e_kwh"].copy()
    strat = strategy("optimal", zone, optimal={"objective": "cost", "resolve_every_steps": 4})
    periods = np.r_[np.full(16, PEAK), np.full(32, VALLEY), np.full(60, FLAT)]
    for k in range(60):
        ev = view(state, k)
        if ev.n == 0:
            break
        p = strat.decide(snapshot(zone, ev, k=k, period=periods[k:k + 96])).p_kw
        assert np.all(p <= ev.p_max_kw + 1e-9) and np.all(p >= ev.p_min_kw - 1e-9)
        apply(state, ev, p)
    assert strat.solves == 15
    assert np.all(state["req_kwh"][feasible] - state["e_kwh"][feasible] < 1e-6)
    assert np.all(state["e_kwh"] >= np.minimum(start, state["req_kwh"]) - 1e-6)


# -- the hindsight bound ----------------------------------------------------------------------

PHYSICS = FleetPhysics(step_s=900.0, eta_ch=0.92, eta_dis=0.92, soc_min=0.05, soc_max=1.0,
                       soc_cv=0.8, soc_full=0.99, min_soc_v2g=0.4)
OBJECTIVES = ("pv", "cost", "peak")


def one_ev(e0_kwh: float, c_run_kw: np.ndarray, steps: int = 16, n_steps: int = 20,
           p_dis_kw: float = 0.0, d_run_kw: np.ndarray | None = None) -> Sessions:
    """One EV of 50 kWh plugged from step 0 to ``steps - 1`` at a 7 kW charger."""
    z = np.zeros(steps)
    return Sessions(
        ev=np.zeros(steps, dtype=np.int64), k=np.arange(steps), n_ev=1, n_steps=n_steps,
        site=np.zeros(steps, dtype=np.int64), p_ch_kw=np.full(steps, 7.0),
        p_dis_kw=np.full(steps, p_dis_kw), cap_kwh=np.full(steps, 50.0),
        accept_kw=np.full(steps, 50.0),
        e_start_kwh=e0_kwh + np.r_[0.0, np.cumsum(0.92 * c_run_kw * DT_H)[:-1]]
        - (0.0 if d_run_kw is None else np.r_[0.0, np.cumsum(d_run_kw * DT_H / 0.92)[:-1]]),
        req_kwh=np.full(steps, 40.0), c_kw=c_run_kw,
        d_kw=z if d_run_kw is None else d_run_kw, e_low_kwh=np.array([2.5]))


def exogenous(n: int = 20, pv=0.0, base=100.0, grid=1.0, pv_price=None, v2g=0.5) -> Exogenous:
    grid = np.broadcast_to(np.asarray(grid, dtype=float), (n,)).copy()
    return Exogenous(pv_avail_kw=np.broadcast_to(np.asarray(pv, dtype=float), (n,)).copy(),
                     base_import_kw=np.broadcast_to(np.asarray(base, dtype=float), (n,)).copy(),
                     price_grid=grid,
                     price_pv=0.8 * grid if pv_price is None else np.asarray(pv_price, float),
                     price_v2g=np.full(n, v2g))


def test_hindsight_pv_fills_the_room_to_full_with_the_sun():
    c_run = np.r_[np.full(4, 7.0), np.zeros(12)]  # the run charged at night
    sessions = one_ev(35.0, c_run)
    pv = np.r_[np.zeros(4), np.full(12, 10.0), np.zeros(4)]  # 10 kW for 3 h
    problem = HindsightProblem(sessions, PHYSICS, exogenous(pv=pv))
    res = problem.solve("pv")
    # the room to end of charge, grid side: less than the 7 kW charger takes in 3 h
    room_kwh = (0.99 * 50.0 - 35.0) / 0.92
    assert res.value == pytest.approx(room_kwh / 1000.0, rel=1e-7)
    assert res.c_kw[:4].max() < 1e-7
    assert res.e_kwh[-1] == pytest.approx(0.99 * 50.0, abs=1e-6)
    assert problem.value("pv") == 0.0 and problem.value("pv", res.c_kw, res.d_kw) \
        == pytest.approx(res.value, rel=1e-9)


def test_hindsight_cost_buys_local_pv_then_the_cheapest_grid_energy():
    c_run = np.r_[np.full(4, 7.0), np.zeros(12)]
    sessions = one_ev(35.0, c_run)
    grid = np.r_[np.full(8, 1.0), np.full(12, 0.4)]
    pv_price = np.r_[np.full(8, 0.3), np.full(12, 0.4)]
    pv = np.r_[np.full(4, 2.0), np.zeros(16)]
    problem = HindsightProblem(sessions, PHYSICS, exogenous(pv=pv, grid=grid,
                                                            pv_price=pv_price))
    res = problem.solve("cost")
    # the run's 6.44 kWh (battery) again, i.e. 7 kWh from the grid side: 2 kWh of PV at 0.3,
    # the other 5 kWh in the 0.4 hours
    assert res.value == pytest.approx(2.0 * 0.3 + 5.0 * 0.4, rel=1e-7)
    assert problem.value("cost") == pytest.approx(2.0 * 0.3 + 5.0 * 1.0)
    assert res.e_kwh[-1] == pytest.approx(35.0 + 0.92 * 7.0, abs=1e-6)


def test_hindsight_peak_is_shaved_by_v2g_and_recharged_below_it():
    sessions = one_ev(35.0, np.zeros(16), p_dis_kw=7.0)
    base = np.full(20, 100.0)
    base[5] = 150.0
    problem = HindsightProblem(sessions, PHYSICS, exogenous(base=base))
    assert problem.solve("peak").value == pytest.approx(0.150, rel=1e-9)  # run: no V2G
    res = problem.solve("peak", v2g=True)
    assert res.value == pytest.approx(0.143, rel=1e-7)  # the charger's 7 kW off the top
    assert res.d_kw[5] == pytest.approx(7.0, rel=1e-7)
    assert res.e_kwh[-1] >= 35.0 - 1e-6  # what V2G took is given back
    assert max(problem.violation(res.c_kw, res.d_kw).values()) < 1e-6


def test_hindsight_refuses_to_drop_v2g_the_run_used():
    d_run = np.r_[np.zeros(5), 7.0, np.zeros(10)]
    c_run = np.r_[np.zeros(8), 2.0, 2.0, np.zeros(6)]
    problem = HindsightProblem(one_ev(35.0, c_run, p_dis_kw=7.0, d_run_kw=d_run), PHYSICS,
                               exogenous())
    assert problem.uses_v2g()
    assert max(problem.violation(problem.s.c_kw, problem.s.d_kw).values()) < 1e-9
    with pytest.raises(ValueError, match="v2g=False"):
        problem.solve("peak", v2g=False)
    with pytest.raises(ValueError, match="objective"):
        problem.solve("profit")


def test_energy_is_carried_across_sessions_with_the_trip_between():
    # sessions at steps 0-3 (home) and 8-15 (work); the trip between takes 5 kWh. The run
    # charged 2 steps at home from the grid and then filled from the sun at work.
    k = np.r_[np.arange(4), np.arange(8, 16)]
    to_full_kw = (49.5 - (45.0 + 5 * 0.92 * 7.0 * DT_H - 5.0)) / (0.92 * DT_H)
    c_run = np.r_[7.0, 7.0, 0.0, 0.0, 7.0, 7.0, 7.0, to_full_kw, np.zeros(4)]
    home = 45.0 + 0.92 * DT_H * np.cumsum(np.r_[0.0, c_run[:3]])
    work = home[-1] + 0.92 * c_run[3] * DT_H - 5.0 \
        + 0.92 * DT_H * np.cumsum(np.r_[0.0, c_run[4:11]])
    sessions = Sessions(
        ev=np.zeros(12, dtype=np.int64), k=k, n_ev=1, n_steps=20,
        site=np.r_[np.zeros(4), np.ones(8)].astype(np.int64), p_ch_kw=np.full(12, 7.0),
        p_dis_kw=np.zeros(12), cap_kwh=np.full(12, 50.0), accept_kw=np.full(12, 50.0),
        e_start_kwh=np.r_[home, work], req_kwh=np.full(12, 20.0), c_kw=c_run,
        d_kw=np.zeros(12), e_low_kwh=np.array([2.5]))
    pv = np.zeros(20)
    pv[8:16] = 30.0
    problem = HindsightProblem(sessions, PHYSICS, exogenous(n=20, pv=pv),
                               departure_target="need")
    assert problem.first.tolist() == [True] + [False] * 3 + [True] + [False] * 7
    assert problem.e_end_run[-1] == pytest.approx(49.5)
    assert max(problem.violation(c_run, np.zeros(12)).values()) < 1e-9
    assert problem.value("pv") == pytest.approx((49.5 - (45.0 + 0.92 * 3.5 - 5.0)) / 0.92
                                                / 1000.0, rel=1e-9)
    # in hindsight the home charging only takes room from the sun: none at home, and the
    # EV arrives at work with 40 kWh
    res = problem.solve("pv")
    assert res.value == pytest.approx((49.5 - 40.0) / 0.92 / 1000.0, rel=1e-6)
    e = problem.energies(res.c_kw, res.d_kw)
    np.testing.assert_allclose(e, res.e_kwh, atol=1e-6)
    np.testing.assert_allclose(e[:4], 45.0, atol=1e-6)
    assert e[-1] == pytest.approx(49.5, abs=1e-6)


def test_service_at_departure_is_the_target_up_to_what_the_run_gave():
    c_run = np.r_[np.full(8, 7.0), np.zeros(8)]  # the run leaves with 47.88 kWh
    sessions = one_ev(35.0, c_run)
    run_end = 35.0 + 8 * 0.92 * 7.0 * DT_H

    def floor(target, **kw):
        problem = HindsightProblem(sessions, PHYSICS, exogenous(), departure_target=target,
                                   **kw)
        return problem.floor_kwh[-1]

    assert floor("full") == pytest.approx(run_end)  # full is more than the run gave
    assert floor("need") == pytest.approx(40.0)  # the user's request
    offpeak = np.r_[np.ones(14, dtype=bool), np.zeros(6, dtype=bool)]
    # leaving at step 16: two steps after the off-peak window, within a margin of 2, not 1
    assert floor("morning_full", offpeak=offpeak, fill_margin_steps=2) \
        == pytest.approx(run_end)
    assert floor("morning_full", offpeak=offpeak, fill_margin_steps=1) == pytest.approx(40.0)
    with pytest.raises(ValueError, match="departure_target"):
        floor("always")
    with pytest.raises(ValueError, match="off-peak"):
        floor("morning_full")
    # a session still plugged at the end of the run keeps the run's energy
    problem = HindsightProblem(one_ev(35.0, c_run, n_steps=16), PHYSICS, exogenous(n=16),
                               departure_target="need")
    assert problem.floor_kwh[-1] == pytest.approx(run_end)


def test_gap_is_relative_to_the_bound_and_positive_when_worse():
    runs = {"pv_following": {"pv_to_ev_mwh": 9.5, "peak_import_mw": 9.0,
                             "cost_cny": 300.0, "ev_user_revenue_cny": 0.0},
            "v2g_peak_shaving": {"pv_to_ev_mwh": 7.0, "peak_import_mw": 10.2,
                                 "cost_cny": 400.0, "ev_user_revenue_cny": 50.0},
            "optimal/cost": {"pv_to_ev_mwh": 7.0, "peak_import_mw": 10.2,
                             "cost_cny": 400.0, "ev_user_revenue_cny": 90.0}}
    bounds = {"pv_following": 10.0, "v2g_peak_shaving": 10.0, "optimal/cost": 300.0}
    out = strategy_gaps(runs, bounds, {"optimal/cost": "cost"})
    assert out["pv_following"]["objective"] == "pv"
    assert out["pv_following"]["gap"] == pytest.approx(0.05)  # 5 % less PV to EVs
    assert out["v2g_peak_shaving"]["objective"] == "peak"
    assert out["v2g_peak_shaving"]["gap"] == pytest.approx(0.02)
    assert out["optimal/cost"]["value"] == pytest.approx(310.0)
    assert out["optimal/cost"]["gap"] == pytest.approx(10 / 300)
    assert gap(-90.0, -100.0, "cost") == pytest.approx(0.1)  # a net income, 10 % less
    with pytest.raises(ValueError, match="objective"):
        objective_value(runs["pv_following"], "profit")
    with pytest.raises(ValueError, match="objective"):
        gap(1.0, 1.0, "profit")


# -- the bound on the tiny world --------------------------------------------------------------

FAST = ["uncontrolled", "pv_following", "v2g_peak_shaving", "grid_aware"]


def _sink_series(sink, sim: str, attr: str) -> np.ndarray:
    return np.array(sink.rows[(sim, attr)], dtype=float)


@pytest.fixture(scope="module")
def tiny_problems():
    """One day of the tiny world per fast strategy: (KPI values, hindsight programme)."""
    from components.ev.model import EVFleet
    from tests.coordinator.tiny_world import run_tiny

    logs: list[FleetLog] = []
    init = EVFleet.__init__

    def logged_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        logs.append(FleetLog.attach(self))

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EVFleet, "__init__", logged_init)
        for name in FAST:
            sink, coord = run_tiny(name, days=1)
            log = logs[-1]
            n = log.sessions().n_steps
            charge = _sink_series(sink, "EV", "charge_kw")
            discharge = _sink_series(sink, "EV", "discharge_kw")
            imp = _sink_series(sink, "Grid", "import_kw")
            pv_avail = _sink_series(sink, "PV", "p_avail_kw").sum(axis=1)
            exo = Exogenous(pv_avail_kw=pv_avail, base_import_kw=imp - charge + discharge,
                            price_grid=coord.price_grid[:n], price_pv=coord.price_pv[:n],
                            price_v2g=coord.price_v2g[:n])
            kpis = {"pv_to_ev_mwh": _sink_series(sink, "Coordinator", "pv_to_ev_kw").sum()
                    * DT_H / 1000.0,
                    "cost_cny": _sink_series(sink, "Coordinator", "cost_cny").sum(),
                    "ev_user_revenue_cny":
                        _sink_series(sink, "Coordinator", "ev_user_revenue_cny").sum(),
                    "peak_import_mw": max(imp.max(), 0.0) / 1000.0}
            out[name] = (kpis, HindsightProblem(log.sessions(), log.physics, exo))
    return out


@pytest.mark.parametrize("name", FAST)
def test_each_run_is_a_feasible_point_of_its_own_programme(tiny_problems, name):
    kpis, problem = tiny_problems[name]
    assert problem.s.n > 100 and problem.first.sum() > 20  # sessions of many EVs
    viol = problem.violation(problem.s.c_kw, problem.s.d_kw)
    assert max(viol.values()) < 1e-6, viol
    # the log closes: within a session the energy follows the recorded powers; between
    # sessions an EV only loses energy (its trips)
    s = problem.s
    np.testing.assert_allclose(problem._e_start(problem.e_end_run), s.e_start_kwh, atol=1e-9)
    between = problem.first & ~problem.ev_first
    assert between.sum() > 0
    trip = s.e_start_kwh[between] - problem.e_end_run[np.flatnonzero(between) - 1]
    assert trip.max() <= 1e-9
    # the programme's objectives replay the run's KPIs
    for objective in OBJECTIVES:
        assert problem.value(objective) == pytest.approx(objective_value(kpis, objective),
                                                         rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", FAST)
def test_the_bound_is_at_or_below_every_fast_strategy_on_every_objective(tiny_problems, name):
    kpis, problem = tiny_problems[name]
    s = problem.s
    for objective in OBJECTIVES:
        res = problem.solve(objective)
        value = objective_value(kpis, objective)
        assert gap(value, res.value, objective) >= -1e-7, (objective, value, res.value)
        # the programme's own dispatch: within every limit, energies as the chain says
        viol = problem.violation(res.c_kw, res.d_kw)
        assert max(viol.values()) < 1e-5, (objective, viol)
        e = problem.energies(res.c_kw, res.d_kw)
        np.testing.assert_allclose(e, res.e_kwh, atol=1e-5)
        top = np.maximum(PHYSICS.soc_full * s.cap_kwh, np.maximum(problem.e_end_run, s.e_start_kwh))
        assert np.all(e <= top + 1e-5)
        assert np.all(e >= s.e_low_kwh[s.ev] - 1e-5)
        assert np.all(res.c_kw <= s.p_ch_kw + 1e-6)
        assert np.all(res.d_kw <= s.p_dis_kw + 1e-6)
        assert problem.value(objective, res.c_kw, res.d_kw) == pytest.approx(
            res.value, rel=1e-6, abs=1e-9)
        if not res.v2g:
            assert res.d_kw.max() == 0.0
