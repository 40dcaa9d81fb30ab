"""The EV fleet model: physics bounds, energy balance, charger limits, trips, determinism."""

from datetime import datetime

import numpy as np
import pytest

from components.ev.config import EVConfig, example_config
from components.ev.model import (
    CHARGER_TYPES,
    COMMERCIAL,
    COMMUTER,
    SHIFT_WORKER,
    EVFleet,
    max_charge_energy_kwh,
)

START = "2026-06-01T00:00:00+08:00"  # a Monday
STEP_S = 900
DAY = 96


def fleet(n=300, days=3, seed=1, start=START, **overrides) -> EVFleet:
    cfg = example_config(n, **overrides)
    return EVFleet(cfg, [s.bus for s in cfg.sites], start, STEP_S, days * DAY,
                   np.random.default_rng(seed), log_trips=True)


def check_invariants(f: EVFleet) -> None:
    """What must hold at every step boundary."""
    cfg = f.cfg
    soc = f.soc
    assert soc.min() >= cfg.soc_min - 1e-9
    assert soc.max() <= cfg.soc_max + 1e-9
    plugged = f.plug >= 0
    assert not (plugged & f.driving).any(), "an EV is plugged while driving"
    assert not (plugged & (f.site < 0)).any()
    assert not (plugged & f.waiting).any()
    assert (f.used <= f.n_chargers).all(), "more EVs plugged than chargers"
    recount = np.zeros_like(f.used)
    np.add.at(recount, (f.site[plugged], f.plug[plugged]), 1)
    np.testing.assert_array_equal(recount, f.used)


def test_charge_curve_matches_a_fine_numerical_integration():
    cap, eta, soc_cv, soc_max, end = 50.0, 0.9, 0.8, 1.0, 0.05
    soc0 = np.array([0.1, 0.5, 0.75, 0.79, 0.85, 0.95, 0.99, 0.3, 0.97])
    p = np.array([11.0, 11.0, 11.0, 60.0, 60.0, 60.0, 60.0, 3.3, 7.0])  # charger, grid side
    accept = np.full(soc0.size, 50.0)  # battery side, 1C
    soc_full = soc_max - end * (soc_max - soc_cv)
    for dt_h in (0.25, 1.0, 4.0):
        got = max_charge_energy_kwh(soc0 * cap, np.full(soc0.size, cap), p, accept, eta, soc_cv,
                                    soc_max, dt_h, end)
        # reference: explicit integration of dsoc/dt = min(eta P, acceptance(soc)) / cap
        soc = soc0.copy()
        n = 100_000
        h = dt_h / n
        for _ in range(n):
            acc = accept * np.clip((soc_max - soc) / (soc_max - soc_cv), 0, 1)
            power = np.where(soc < soc_full, np.minimum(p * eta, acc), 0.0)
            soc = np.minimum(soc + power / cap * h, np.maximum(soc, soc_full))
        want = (soc - soc0) * cap / eta
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    # a weak charger runs at constant power almost to full: 7 kW on a 50 kWh battery (1C)
    # meets the acceptance only at 1 - 0.2 * 7 * 0.9 / 50 = 0.975
    e = max_charge_energy_kwh(np.array([40.0]), np.array([cap]), np.array([7.0]),
                              np.array([50.0]), eta, soc_cv, soc_max, 0.5, end)
    assert e[0] == pytest.approx(3.5)
    e = max_charge_energy_kwh(np.array([49.9]), np.array([cap]), np.array([7.0]),
                              np.array([50.0]), eta, soc_cv, soc_max, 10.0, end)
    assert e[0] == 0.0


def test_run_respects_limits_and_conserves_energy_per_ev():
    f = fleet(300, days=4, ageing={"enabled": False})
    cap = f.cap_kwh.copy()
    soc_start = f.soc.copy()
    check_invariants(f)
    for k in range(4 * DAY):
        e_before = f.e_kwh.copy()
        plugged_before = f.plug >= 0
        charged_before = f.charged_kwh.copy()
        f.step(k)
        check_invariants(f)
        gained = f.e_kwh > e_before + 1e-12
        assert not (gained & ~plugged_before).any(), "an EV gained energy while not plugged"
        assert not ((f.charged_kwh > charged_before) & ~plugged_before).any()
    cfg = f.cfg
    # the identity of the issue: charged * eta - driven - discharged / eta = dSoC * capacity
    lhs = (f.charged_kwh * cfg.charge_efficiency - f.driven_kwh
           - f.discharged_kwh / cfg.discharge_efficiency)
    np.testing.assert_allclose(lhs, (f.soc - soc_start) * cap, atol=1e-9)
    assert f.driven_kwh.sum() > 0 and f.charged_kwh.sum() > 0
    np.testing.assert_array_equal(f.cap_kwh, cap)


def test_energy_balance_with_ageing_includes_fade_loss():
    f = fleet(200, days=3)
    for k in range(3 * DAY):
        f.step(k)
    assert np.abs(f.energy_balance_error_kwh()).max() < 1e-9
    assert (f.cap_kwh < f.cap0_kwh).all()  # two midnights of ageing
    kpis = f.kpis()
    assert 0 < kpis["ev_capacity_fade_pct_mean"] < 2


def test_same_seed_same_fleet_and_results():
    a, b, c = fleet(200, days=2, seed=5), fleet(200, days=2, seed=5), fleet(200, days=2, seed=6)
    for name in ("user", "vehicle", "base_site", "work_site", "commute_km", "e_kwh",
                 "v2g_user", "leg_dep", "leg_arr", "leg_km"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.vehicle, c.vehicle)
    for k in range(2 * DAY):
        a.step(k)
        b.step(k)
        np.testing.assert_array_equal(a.p_site_kw, b.p_site_kw)
    assert a.kpis() == b.kpis()


def test_fleet_composition_follows_the_config():
    f = fleet(1000, days=1)
    counts = np.bincount(f.user, minlength=3)
    assert counts.tolist() == [700, 200, 100]
    names = np.array(f.vehicle_names)[f.vehicle]
    assert set(names[f.user == COMMERCIAL]) <= set(f.cfg.commercial_vehicle_mix)
    assert set(names[f.user != COMMERCIAL]) <= set(f.cfg.vehicle_mix)
    share_mini = np.mean(names[f.user != COMMERCIAL] == "wuling_hongguang_mini_ev")
    assert share_mini == pytest.approx(0.20, abs=0.04)
    kinds = f.site_kind[f.base_site]
    assert set(kinds[f.user == COMMERCIAL]) == {3} and set(kinds[f.user != COMMERCIAL]) == {0}


def test_uncontrolled_charges_every_plugged_ev_at_its_maximum_until_full():
    f = fleet(300, days=1)
    for k in range(40):
        ids = f._plugged
        p_max, _ = f.limits(ids)
        charged_before = f.charged_kwh[ids].copy()
        f.step(k)  # (EVs leaving at the end of the step also lose their trip energy)
        charged = (f.charged_kwh[ids] - charged_before) / f.dt_h
        np.testing.assert_allclose(charged, p_max, atol=1e-9)
        assert f.charge_kw == pytest.approx(p_max.sum())
    # EVs plugged long enough end full (the end of the CV phase)
    full = f.soc_full * f.cap_kwh
    long_plugged = (f.plug >= 0) & (f.e_kwh > full - 1e-6)
    assert long_plugged.sum() > 0.3 * (f.plug >= 0).sum()


def test_setpoints_are_clipped_and_counted():
    f = fleet(300, days=1, v2g_willing_share=1.0)
    nan = np.full(f.n_ev, np.nan)
    f.step(0, nan)  # NaN everywhere = uncontrolled: nothing is clamped
    assert f.clamped_count == 0
    ids = f._plugged
    p_max, p_min = f.limits(ids)
    p_set = np.full(f.n_ev, np.nan)
    p_set[ids] = 1e4  # far above every limit
    f.step(1, p_set)
    assert f.clamped_count == ids.size
    assert f.charge_kw == pytest.approx(p_max.sum())
    ids = f._plugged
    p_max, p_min = f.limits(ids)
    p_set = np.full(f.n_ev, np.nan)
    p_set[ids] = -1e4
    unplugged = np.setdiff1d(np.arange(f.n_ev), ids)[:5]
    p_set[unplugged] = 3.0  # not plugged: counted, ignored
    f.step(2, p_set)
    assert f.clamped_count == ids.size + 5
    assert f.discharge_kw == pytest.approx(-p_min.sum())
    assert f.charge_kw == 0.0
    with pytest.raises(ValueError, match="one value per EV"):
        f.step(3, np.zeros(5))


def test_nan_setpoints_equal_no_input():
    a, b = fleet(200, days=1, seed=3), fleet(200, days=1, seed=3)
    for k in range(DAY):
        a.step(k)
        b.step(k, np.full(b.n_ev, np.nan))
        np.testing.assert_allclose(a.p_site_kw, b.p_site_kw, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.e_kwh, b.e_kwh)


def test_v2g_respects_willingness_charger_and_min_soc():
    f = fleet(300, days=2, v2g_willing_share=0.6, min_soc_v2g=0.45)
    cfg = f.cfg
    discharged_any = False
    for k in range(2 * DAY):
        view = f.plugged_view()
        ids = view["plugged_ids"]
        allowed = view["plugged_p_min_kw"] < 0
        assert (view["plugged_v2g"] | ~allowed).all()
        ok = f.v2g_user[ids] & (f.plug[ids] == CHARGER_TYPES.index("v2g"))
        assert not (allowed & ~ok).any(), "V2G offered where it is not allowed"
        assert (view["plugged_soc"][allowed] > cfg.min_soc_v2g).all()
        assert (view["plugged_p_max_kw"] >= 0).all()
        soc_before = f.soc.copy()
        p_set = np.full(f.n_ev, np.nan)
        p_set[ids] = -100.0  # discharge whatever may be discharged
        f.step(k, p_set)
        dropped = (f.soc < soc_before - 1e-12) & ~f.driving
        if dropped.any():
            discharged_any = True
            assert (f.soc[dropped] >= cfg.min_soc_v2g - 1e-9).all()
        check_invariants(f)
    assert discharged_any
    assert np.abs(f.energy_balance_error_kwh()).max() < 1e-9


def test_chargers_are_never_overbooked_and_queues_refuse():
    # 20 commuters who always plug in, one home charger, nobody waits: 19 refusals at once
    cfg = EVConfig.model_validate({
        "fleet_size": 20, "user_mix": {"commuter": 1.0, "shift_worker": 0.0, "commercial": 0.0},
        "behaviour": {"plug_soc_threshold": [1.0, 1.0]},
        "sites": [{"name": "estate", "kind": "home", "bus": 1, "patience_min": 0,
                   "chargers": [{"type": "ac7", "count": 1}]}],
    })
    f = EVFleet(cfg, [1], START, STEP_S, 2 * DAY, np.random.default_rng(0))
    assert (f.plug >= 0).sum() == 1
    assert f.plug_refusals == 19
    for k in range(2 * DAY):
        f.step(k)
        assert (f.plug >= 0).sum() <= 1
        check_invariants(f)
    assert f.plug_refusals > 19


def test_waiting_ev_gets_a_charger_that_frees_up():
    cfg = EVConfig.model_validate({
        "fleet_size": 60, "user_mix": {"commuter": 1.0, "shift_worker": 0.0, "commercial": 0.0},
        "behaviour": {"plug_soc_threshold": [1.0, 1.0]},
        "sites": [{"name": "estate", "kind": "home", "bus": 1,
                   "chargers": [{"type": "ac7", "count": 60}]},
                  {"name": "office", "kind": "workplace", "bus": 2, "patience_min": 600,
                   "chargers": [{"type": "ac7", "count": 5}]}],
    })
    f = EVFleet(cfg, [1, 2], START, STEP_S, DAY, np.random.default_rng(2))
    served_after_wait = 0
    for k in range(DAY):
        waiting = f.waiting.copy()
        f.step(k)
        served_after_wait += int((waiting & (f.plug >= 0)).sum())
        check_invariants(f)
    assert served_after_wait > 0


def test_users_plug_in_below_their_threshold_v2g_users_always():
    f = fleet(600, days=2, v2g_willing_share=0.5)
    parked = (f.site >= 0) & ~f.driving
    at_home = parked & (f.site_kind[np.maximum(f.site, 0)] == 0)
    private = f.user != COMMERCIAL
    soc = f.soc
    # at the start everybody is at home: plugged or waiting exactly when below the threshold
    wants = f.wants[at_home & private]
    np.testing.assert_array_equal(wants, (soc < f.plug_soc)[at_home & private])
    assert np.isinf(f.plug_soc[f.v2g_user]).all() and np.isinf(f.plug_soc[~private]).all()
    assert f.wants[at_home & f.v2g_user].all()
    assert 0.2 < wants.mean() < 0.9


def test_trip_times_and_energy_are_plausible():
    f = fleet(1000, days=7)
    for k in range(7 * DAY):
        f.step(k)
    log = {key: np.concatenate([t[key] for t in f.trip_log]) for key in f.trip_log[0]}
    hours = (log["dep_step"] * STEP_S % 86_400) / 3600
    weekday = (log["dep_step"] * STEP_S // 86_400) < 5
    to_work = np.isin(log["dest"], np.flatnonzero(f.site_kind == 1)) & weekday
    commuter = f.user[log["ev"]] == COMMUTER
    h_to_work = hours[to_work & commuter]
    assert 7.0 < np.median(h_to_work) < 8.5  # morning peak 7-9 h (Beijing EV trajectories)
    home = np.isin(log["dest"], np.flatnonzero(f.site_kind == 0)) & weekday & commuter
    arr_h = (log["arr_step"] * STEP_S % 86_400)[home] / 3600
    assert 16.5 < np.median(arr_h) < 19.5
    # mean trip 8-13 km (national platform, private cars: 11.4 km in 2020)
    private = f.user[log["ev"]] != COMMERCIAL
    assert 8.0 < log["km"][private].mean() < 13.0
    # daily energy per private EV a few kWh
    kwh_day = f.driven_kwh[f.user != COMMERCIAL].mean() / 7
    assert 1.5 < kwh_day < 6.0
    kpis = f.kpis()
    assert kpis["ev_trips"] == log["ev"].size
    assert kpis["ev_trips_short"] < 0.01 * kpis["ev_trips"]


def test_shift_workers_arrive_before_their_shift():
    # as the factory section dumps its shifts: ISO weekdays, extra keys
    shifts = [{"start": "07:00", "end": "15:00", "days": [1, 2, 3, 4, 5], "name": "early"},
              {"start": "22:00", "end": "06:00", "days": [1, 2, 3, 4, 5]}]
    cfg = example_config(400)
    f = EVFleet(cfg, [s.bus for s in cfg.sites], START, STEP_S, 3 * DAY,
                np.random.default_rng(4), shifts=shifts, log_trips=True)
    log = {key: np.concatenate([t[key] for t in f.trip_log]) for key in f.trip_log[0]}
    to_work = (f.user[log["ev"]] == SHIFT_WORKER) & np.isin(log["dest"],
                                                              np.flatnonzero(f.site_kind == 1))
    arr_h = (log["arr_step"][to_work] * STEP_S % 86_400) / 3600
    shift_start = np.array([7.0, 22.0])[f.shift[log["ev"][to_work]]]
    early = shift_start - arr_h
    assert early.size > 50
    assert (early >= -0.5).all() and (early <= 1.0).all()  # 10-30 min early, +-1 step rounding
    with pytest.raises(ValueError, match="shifts\\[0\\]"):
        EVFleet(cfg, [s.bus for s in cfg.sites], START, STEP_S, DAY,
                np.random.default_rng(4), shifts=[{"start": "25:00", "end": "06:00",
                                                   "days": [1]}])
    with pytest.raises(ValueError, match="shifts\\[0\\]"):
        EVFleet(cfg, [s.bus for s in cfg.sites], START, STEP_S, DAY,
                np.random.default_rng(4), shifts=[{"start": "06:00", "end": "14:00",
                                                   "days": [0]}])


def test_plugged_view_describes_the_next_step():
    f = fleet(300, days=1)
    f.step(0)
    view = f.plugged_view()
    ids = view["plugged_ids"]
    np.testing.assert_array_equal(ids, np.flatnonzero(f.plug >= 0))
    assert (view["plugged_departure_s"] >= STEP_S).all()
    assert (view["plugged_need_kwh"] >= 0).all()
    assert (view["plugged_site"] >= 0).all()
    # the EVs plugged now are exactly the ones the next step charges
    e_before = f.e_kwh.copy()
    f.step(1)
    gained = np.flatnonzero(f.e_kwh > e_before + 1e-12)
    assert np.isin(gained, ids).all()
    np.testing.assert_allclose(f.charge_kw, view["plugged_p_max_kw"].sum())


def test_departure_times_are_always_in_the_future():
    f = fleet(400, days=7)
    for k in range(7 * DAY):
        f.step(k)
        view = f.plugged_view()
        assert (view["plugged_departure_s"] > k * STEP_S).all()
        ids = view["plugged_ids"]
        has_trip = f.head[ids] < f.tail[ids]
        slot = f.head[ids] % f._m
        np.testing.assert_array_equal(f.next_dep[ids][has_trip], f.leg_dep[ids, slot][has_trip])


def test_start_not_at_midnight_and_temperature_input():
    temps = np.full(2 * DAY, 35.0)
    cfg = example_config(200)
    start = datetime.fromisoformat("2026-06-01T13:00:00+08:00")
    f = EVFleet(cfg, [s.bus for s in cfg.sites], start, STEP_S, 2 * DAY,
                np.random.default_rng(1), temperature_c=temps)
    g = EVFleet(cfg, [s.bus for s in cfg.sites], start, STEP_S, 2 * DAY,
                np.random.default_rng(1), temperature_c=lambda t: 15.0)
    for k in range(2 * DAY):
        f.step(k)
        g.step(k)
        check_invariants(f)
    assert f.temperature_of_day(0) == 35.0 and g.temperature_of_day(0) == 15.0
    assert f.kpis()["ev_capacity_fade_pct_mean"] > g.kpis()["ev_capacity_fade_pct_mean"] > 0
    with pytest.raises(ValueError, match="site_buses"):
        EVFleet(cfg, [1, 2], START, STEP_S, DAY, np.random.default_rng(1))
