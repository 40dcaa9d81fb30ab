"""The linear-programming reference on small problems whose optimum is known."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_gaps_compare_each_strategy_on_its_own_objective():
    runs = {"pv_following": {"pv_to_ev_mwh": 9.5, "peak_import_mw": 9.0,
                             "cost_cny": 300.0, "ev_user_revenue_cny": 0.0},
            "v2g_peak_shaving": {"pv_to_ev_mwh": 7.0, "peak_import_mw": 10.2,
                                 "cost_cny": 400.0, "ev_user_revenue_cny": 50.0}}
    optimum = {"pv": {"pv_to_ev_mwh": 10.0, "peak_import_mw": 9.5, "cost_cny": 310.0,
                      "ev_user_revenue_cny": 0.0},
               "peak": {"pv_to_ev_mwh": 6.0, "peak_import_mw": 10.0, "cost_cny": 420.0,
                        "ev_user_revenue_cny": 90.0}}
    out = strategy_gaps(runs, optimum)
    assert out["pv_following"]["objective"] == "pv"
    assert out["pv_following"]["gap"] == pytest.approx(0.05)  # 5 % less PV to EVs
    assert out["v2g_peak_shaving"]["objective"] == "peak"
    assert out["v2g_peak_shaving"]["gap"] == pytest.approx(0.02)
    assert objective_value(optimum["peak"], "cost") == pytest.approx(330.0)
    assert gap(runs["pv_following"], optimum["pv"], "cost") == pytest.approx(-10 / 310)
    with pytest.raises(ValueError, match="objective"):
        objective_value(optimum["pv"], "profit")


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
