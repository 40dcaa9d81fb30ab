"""The EV fleet's per-step kernel (``ext.evstep``) and its NumPy twin: same results, bit for bit,
and the same numbers as the model's reference formulas."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from components.ev.config import EVConfig, example_config
from components.ev.model import CHARGER_TYPES, EVFleet, max_charge_energy_kwh
from ext import select_kernel

pytestmark = pytest.mark.kernels

HAS_COMPILED = importlib.util.find_spec("ext.evstep") is not None
BACKENDS = ["numpy", pytest.param("compiled", marks=pytest.mark.skipif(
    not HAS_COMPILED, reason="ext.evstep is not built"))]
START = "2026-06-01T00:00:00+08:00"
STEP_S = 900


def fleet(backend: str, n: int = 250, days: int = 2, seed: int = 4, **overrides) -> EVFleet:
    cfg = example_config(n, **overrides)
    return EVFleet(cfg, [s.bus for s in cfg.sites], START, STEP_S, days * 96,
                   np.random.default_rng(seed), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_limits_equal_the_reference_integral_bit_for_bit(backend):
    f = fleet(backend, v2g_willing_share=1.0)
    rng = np.random.default_rng(7)
    cfg = f.cfg
    for _ in range(5):
        # states over the whole SoC range, CC and CV phases, some chargers off
        f.e_kwh[:] = rng.uniform(cfg.soc_min, cfg.soc_max, f.n_ev) * f.cap_kwh
        f.p_ch_lim[:] = rng.choice([0.0, 3.7, 7.0, 11.0, 60.0, 120.0], f.n_ev)
        f.p_dis_lim[:] = rng.choice([0.0, 7.0, 20.0], f.n_ev)
        ids = np.sort(rng.choice(f.n_ev, 180, replace=False))
        p_max, p_min = f.limits(ids)
        e, cap = f.e_kwh[ids], f.cap_kwh[ids]
        ref_max = max_charge_energy_kwh(e, cap, f.p_ch_lim[ids], f.accept_kw[ids],
                                        cfg.charge_efficiency, cfg.cv_taper_soc, cfg.soc_max,
                                        f.dt_h, cfg.cv_end_power_share) / f.dt_h
        room = np.maximum(e - cfg.min_soc_v2g * cap, 0.0) * cfg.discharge_efficiency / f.dt_h
        np.testing.assert_array_equal(p_max, ref_max)
        np.testing.assert_array_equal(p_min, -np.minimum(f.p_dis_lim[ids], room))
        assert (p_max > 0).any() and (p_max == 0).any() and (p_min < 0).any()
    f.p_ch_lim[:] = 120.0  # fast chargers: most EVs reach the CV phase within the step
    f.e_kwh[:] = 0.85 * f.cap_kwh
    ids = np.arange(f.n_ev)
    ref = max_charge_energy_kwh(f.e_kwh, f.cap_kwh, f.p_ch_lim, f.accept_kw,
                                cfg.charge_efficiency, cfg.cv_taper_soc, cfg.soc_max, f.dt_h,
                                cfg.cv_end_power_share) / f.dt_h
    np.testing.assert_array_equal(f.limits(ids)[0], ref)
    # at, just below (within the tolerance) and above the end of charge: p_max is 0 at once
    full = f.soc_full * f.cap_kwh
    f.e_kwh[:] = full * rng.choice([1.0, 1.0 - 1e-12, 1.0 + 1e-9, 1.001], f.n_ev)
    f.e_kwh[::7] = full[::7] - 2e-6  # still takes a little
    ref = max_charge_energy_kwh(f.e_kwh, f.cap_kwh, f.p_ch_lim, f.accept_kw,
                                cfg.charge_efficiency, cfg.cv_taper_soc, cfg.soc_max, f.dt_h,
                                cfg.cv_end_power_share) / f.dt_h
    np.testing.assert_array_equal(f.limits(ids)[0], ref)
    assert (ref[::7] > 0).all() and (np.delete(ref, np.s_[::7]) == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_plugged_view_limits_equal_limits_and_fields_follow_their_definitions(backend):
    f = fleet(backend, v2g_willing_share=1.0)
    rng = np.random.default_rng(5)
    cfg = f.cfg
    for k in range(60):
        f.step(k)
    ids = f.plugged_view()["plugged_ids"]
    assert ids.size > 20
    # states over the whole SoC range, CC and CV phases, some chargers off
    f.e_kwh[ids] = rng.uniform(cfg.soc_min, cfg.soc_max, ids.size) * f.cap_kwh[ids]
    f.p_ch_lim[ids] = rng.choice([0.0, 7.0, 11.0, 120.0], ids.size)
    f.p_dis_lim[ids] = rng.choice([0.0, 7.0, 20.0], ids.size)
    view = f.plugged_view()
    p_max, p_min = f.limits(ids)
    np.testing.assert_array_equal(view["plugged_p_max_kw"], p_max)
    np.testing.assert_array_equal(view["plugged_p_min_kw"], p_min)
    assert (p_max == 0).any() and (p_max > 0).any() and (p_min < 0).any()
    np.testing.assert_array_equal(view["plugged_site"], f.site[ids])
    np.testing.assert_array_equal(view["plugged_soc"], f.e_kwh[ids] / f.cap_kwh[ids])
    np.testing.assert_array_equal(view["plugged_need_kwh"],
                                  np.maximum(f.req_kwh[ids] - f.e_kwh[ids], 0.0))
    np.testing.assert_array_equal(view["plugged_departure_s"], f.next_dep[ids] * STEP_S)
    np.testing.assert_array_equal(view["plugged_v2g"], f.p_dis_lim[ids] > 0)
    assert f.view_finite


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernels_report_the_non_finite_values_they_write(backend):
    f = fleet(backend)
    kern = select_kernel("evstep", backend)
    for k in range(60):
        f.step(k)
    assert f.sites_finite
    ids = f.plugged_view()["plugged_ids"]
    assert f.view_finite and ids.size > 3
    f.e_kwh[ids[2]] = np.nan  # a corrupted battery: its SoC and need are not finite
    view = f.plugged_view()
    assert not f.view_finite and np.isnan(view["plugged_soc"][2])
    # the CV phase finished by limits_cv: finite, and not with an infinite capacity
    args = (0.95, 0.8, 0.95, 0.05, 0.25, 1e-6)  # eta_c, soc_cv, soc_max, end_share, dt_h, tol
    one = np.zeros(1, dtype=np.int64)
    cv = (one, np.array([0.5]), np.array([0.8]), one)
    p_max, copy = np.empty(1), np.empty(1)
    assert kern.limits_cv(1, *cv, np.array([30.0]), np.array([60.0]), *args, p_max, copy)
    assert np.isfinite(p_max[0]) and p_max[0] > 0 and copy[0] == p_max[0]
    assert not kern.limits_cv(1, *cv, np.array([30.0]), np.array([np.inf]), *args, p_max, copy)
    assert p_max[0] == np.inf and copy[0] == np.inf
    # a corrupted limit the next step takes: the site's power is not finite
    p_set = np.full(f.n_ev, np.nan)
    f.plugged_view()
    f._plugged_lim[0][0] = np.inf
    site = f.site[f._plugged[0]]
    with np.errstate(invalid="ignore"):  # inf * 0 for the reactive power at power factor 1
        f.step(f.k, p_set)
        np.testing.assert_array_equal(f.q_site_kvar, f.p_site_kw * f._q_per_p)
    assert not f.sites_finite
    assert f.p_site_kw[site] == np.inf


def scarce_fleet(backend: str, n: int = 250, days: int = 2, seed: int = 4) -> EVFleet:
    """A fleet with an eighth of the chargers and low SoC at the start: long queues, plug
    refusals, trips the battery cannot cover, unmet energy at departure."""
    d = example_config(n, v2g_willing_share=0.7, initial_soc=(0.1, 0.4)).model_dump(mode="json")
    for site in d["sites"]:
        for group in site["chargers"]:
            group["count"] = max(1, group["count"] // 8)
    cfg = EVConfig.model_validate(d)
    return EVFleet(cfg, [s.bus for s in cfg.sites], START, STEP_S, days * 96,
                   np.random.default_rng(seed), backend=backend)


def _run(backend: str, controlled: bool, scarce: bool = False) -> dict[str, np.ndarray]:
    f = scarce_fleet(backend) if scarce else fleet(backend, v2g_willing_share=0.7)
    rng = np.random.default_rng(11)
    rows = []
    both = 0  # site-steps with EVs charging and EVs feeding back at once
    for k in range(f.n_steps):
        view = f.plugged_view()
        if controlled:
            p_set = np.full(f.n_ev, np.nan)
            ids = view["plugged_ids"]
            p_set[ids] = rng.uniform(-15.0, 15.0, ids.size)  # many outside the limits
            p_set[rng.choice(f.n_ev, 3)] = 2.0  # some for EVs that may not be plugged
            f.step(k, p_set)
        else:
            f.step(k)
        # what each site metered, both ways: it nets to the site's power and sums to the totals
        np.testing.assert_allclose(f.charge_site_kw - f.discharge_site_kw, f.p_site_kw,
                                   rtol=0, atol=1e-9)
        assert f.charge_site_kw.sum() == pytest.approx(f.charge_kw, rel=1e-12, abs=1e-9)
        assert f.discharge_site_kw.sum() == pytest.approx(f.discharge_kw, rel=1e-12, abs=1e-9)
        assert f.charge_site_kw.min() >= 0 and f.discharge_site_kw.min() >= 0
        both += int(((f.charge_site_kw > 0) & (f.discharge_site_kw > 0)).sum())
        np.testing.assert_array_equal(f.q_site_kvar, f.p_site_kw * f._q_per_p)
        assert f.sites_finite and f.view_finite
        # the KPI totals kept between changes (a shortfall, a departure) equal fresh sums
        kpis = f.kpis()
        assert kpis["ev_trip_shortfall_mwh"] == float(f.shortfall_kwh.sum() / 1000)
        assert kpis["ev_driven_energy_mwh"] == float(f.driven_kwh.sum() / 1000)
        rows.append(np.r_[f.charge_site_kw, f.discharge_site_kw,
                          f.p_site_kw, f.q_site_kvar, f.charge_kw, f.discharge_kw,
                          f.clamped_count, f.unmet_step_kwh, f.n_plugged,
                          view["plugged_p_max_kw"].sum(), view["plugged_p_min_kw"].sum(),
                          view["plugged_need_kwh"].sum(), view["plugged_soc"].sum(),
                          view["plugged_departure_s"].sum(), view["plugged_v2g"].sum()])
    out = {"rows": np.array(rows), "e_kwh": f.e_kwh, "charging": f.charging, "plug": f.plug,
           "used": f.used, "fade": f.fade, "cycles": f.ageing.rainflow.n_cycles,
           "tp_n": f.ageing.tp_n, "extreme": f.ageing.extreme,
           "counters": np.array([f.plug_refusals, f.trips, f.trips_short, f.clamped_total]),
           "driven_kwh": f.driven_kwh, "shortfall_kwh": f.shortfall_kwh,
           "unmet_kwh": f.unmet_kwh, "req_kwh": f.req_kwh, "next_dep": f.next_dep,
           "site": f.site, "head": f.head, "driving": f.driving, "wants": f.wants,
           "waiting": f.waiting, "wait_until": f.wait_until}
    assert np.abs(f.energy_balance_error_kwh()).max() < 1e-9
    if controlled and not scarce:
        assert both > 0  # netting per site would have hidden those trades
    return out


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.evstep is not built")
@pytest.mark.parametrize("controlled", [False, True])
@pytest.mark.parametrize("scarce", [False, True])
def test_compiled_and_numpy_fleets_are_identical(controlled, scarce):
    a, b = _run("compiled", controlled, scarce), _run("numpy", controlled, scarce)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    rows = a["rows"]
    assert rows[:, -11].max() > 0  # EVs charged
    assert a["counters"][1] > 0 and a["head"].sum() > 0  # trips departed and arrived
    if controlled:
        assert rows[:, -10].max() > 0 and rows[:, -9].max() > 0  # V2G ran, setpoints clipped
    if scarce:  # the trip events' rarer branches ran
        assert a["counters"][0] > 0 and a["counters"][2] > 0  # refusals, short trips
        assert a["shortfall_kwh"].sum() > 0 and a["unmet_kwh"].sum() > 0
        assert rows[:, -8].max() > 0  # unmet energy booked in a step


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("event", ["depart", "arrive"])
def test_trip_events_off_plan_raise_and_change_nothing(backend, event):
    f = fleet(backend)
    for k in range(40):
        f.step(k)
    parked = np.flatnonzero(~f.driving)[:5]
    moving = np.flatnonzero(f.driving)[:5]
    assert parked.size and moving.size
    before = {key: v.copy() for key, v in vars(f).items() if isinstance(v, np.ndarray)}
    with pytest.raises(RuntimeError, match="trip plan inconsistent"):
        if event == "depart":  # EVs already driving, or not leaving now
            f._depart(np.r_[parked, moving], f.k)
        else:  # EVs parked, or not arriving now
            f._arrive(np.r_[moving, parked], f.k)
    for key, v in before.items():
        np.testing.assert_array_equal(getattr(f, key), v, err_msg=key)


def _queue_case() -> dict:
    """Two sites, one ac7 + one v2g charger at site 0 and one ac7 at site 1; five waiting EVs."""
    n_types = len(CHARGER_TYPES)
    ac7, v2g = CHARGER_TYPES.index("ac7"), CHARGER_TYPES.index("v2g")
    n_chargers = np.zeros((2, n_types), dtype=np.int64)
    n_chargers[0, ac7] = n_chargers[0, v2g] = n_chargers[1, ac7] = 1
    pref = np.full((5, 4, n_types), -1, dtype=np.int64)
    pref[:, :, 0], pref[:, :, 1] = ac7, v2g  # everyone: ac7 first, then v2g
    pref[3, :, :2] = [v2g, ac7]  # EV 3 prefers v2g
    return {
        "k": 10,
        "waiting": np.array([1, 1, 1, 1, 1], dtype=np.uint8),
        "wait_since": np.array([9, 8, 10, 10, 7], dtype=np.int64),
        "wait_until": np.array([20, 20, 10, 12, 20], dtype=np.int64),
        "site": np.array([0, 0, 0, 0, 1], dtype=np.int64),
        "site_kind": np.array([0, 0], dtype=np.int64),
        "pref": pref, "n_chargers": n_chargers, "used": np.zeros((2, n_types), dtype=np.int64),
        "plug": np.full(5, -1, dtype=np.int64), "charging": np.zeros(5, dtype=np.uint8),
        "e_kwh": np.array([10.0, 20.0, 30.0, 40.0, 50.0]), "cap_kwh": np.full(5, 50.0),
        "soc_full": 0.99, "full_tol_kwh": 1e-6,
        "ac_kw": np.full(5, 7.0), "dc_kw": np.full(5, 50.0),
        "charger_kw": np.where(n_chargers > 0, 7.0, 0.0) + np.eye(2, n_types, v2g) * 3.0,
        "charger_dis_kw": np.eye(2, n_types, v2g) * 10.0,
        "v2g_user": np.array([1, 0, 1, 1, 1], dtype=np.uint8), "v2g_kw": np.full(5, 6.0),
        "p_ch_lim": np.zeros(5), "p_dis_lim": np.zeros(5),
        "ac_max_type": CHARGER_TYPES.index("ac11"), "v2g_type": v2g,
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_queue_is_first_come_first_served_in_preference_rounds(backend):
    kern = select_kernel("evstep", backend)
    case = _queue_case()
    n_plugged, n_expired, n_waiting = kern.serve_queue(**case)
    ac7, v2g = CHARGER_TYPES.index("ac7"), CHARGER_TYPES.index("v2g")
    # site 0 in arrival order: EV 1 (t=8) takes ac7; EV 0 (t=9) finds no ac7 and waits for the
    # second round, where EV 3 (t=10, prefers v2g) has already taken v2g in the first round
    np.testing.assert_array_equal(case["plug"], [-1, ac7, -1, v2g, ac7])
    assert (n_plugged, n_expired, n_waiting) == (3, 1, 1)  # EV 2's patience ran out at k=10
    np.testing.assert_array_equal(case["waiting"], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(case["used"][0, [ac7, v2g]], [1, 1])
    np.testing.assert_allclose(case["p_ch_lim"], [0.0, 7.0, 0.0, 10.0, 7.0])
    np.testing.assert_allclose(case["p_dis_lim"], [0.0, 0.0, 0.0, 6.0, 0.0])  # V2G user on v2g
    np.testing.assert_array_equal(case["charging"], [0, 1, 0, 1, 0])  # EV 4 is full


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.evstep is not built")
def test_queue_compiled_equals_numpy_on_random_queues():
    rng = np.random.default_rng(3)
    compiled, twin = select_kernel("evstep", "compiled"), select_kernel("evstep", "numpy")
    n_types = len(CHARGER_TYPES)
    for _ in range(30):
        n, s = 60, 4
        base = _queue_case()
        case = dict(base)
        case["n_chargers"] = rng.integers(0, 4, (s, n_types))
        case["used"] = rng.integers(0, 2, (s, n_types)).clip(max=case["n_chargers"])
        order = np.array([rng.permutation(n_types) for _ in range(n * 4)]).reshape(n, 4, n_types)
        cut = rng.integers(1, n_types + 1, (n, 4))
        case["pref"] = np.where(np.arange(n_types) < cut[..., None], order, -1)
        case.update(
            waiting=(rng.random(n) < 0.7).astype(np.uint8),
            wait_since=rng.integers(0, 6, n), wait_until=rng.integers(3, 12, n),
            site=rng.integers(0, s, n), site_kind=rng.integers(0, 4, s),
            plug=np.full(n, -1, dtype=np.int64), charging=np.zeros(n, dtype=np.uint8),
            e_kwh=rng.uniform(5, 60, n), cap_kwh=np.full(n, 60.0), ac_kw=np.full(n, 11.0),
            dc_kw=rng.choice([0.0, 90.0], n),
            charger_kw=rng.uniform(5, 120, (s, n_types)),
            charger_dis_kw=rng.uniform(0, 20, (s, n_types)),
            v2g_user=rng.integers(0, 2, n).astype(np.uint8), v2g_kw=rng.uniform(5, 15, n),
            p_ch_lim=np.zeros(n), p_dis_lim=np.zeros(n), k=6)
        a = {key: (v.copy() if isinstance(v, np.ndarray) else v) for key, v in case.items()}
        b = {key: (v.copy() if isinstance(v, np.ndarray) else v) for key, v in case.items()}
        assert compiled.serve_queue(**a) == twin.serve_queue(**b)
        for key in ("waiting", "used", "plug", "charging", "p_ch_lim", "p_dis_lim"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert (a["used"] <= a["n_chargers"]).all()


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.evstep is not built")
def test_compiled_kernel_rejects_arrays_of_the_wrong_kind_naming_them():
    kern = select_kernel("evstep", "compiled")
    n = 4
    ids = np.arange(n)
    e, cap, lim = np.full(n, 30.0), np.full(n, 60.0), np.full(n, 7.0)
    out = [np.empty(n), np.empty(n), np.zeros(n, dtype=np.int64), np.empty(n), np.empty(n)]
    args = (0.95, 0.95, 0.8, 0.95, 0.05, 0.3, 0.25, 1e-6)
    assert kern.limits_cc(ids, e, cap, lim, lim, lim, *args, *out) == 0
    np.testing.assert_allclose(out[0], 7.0)  # the charger's full power all step long
    with pytest.raises(ValueError, match="e_kwh: needs a C-contiguous 1-d array of float64"):
        kern.limits_cc(ids, e.astype(np.float32), cap, lim, lim, lim, *args, *out)
    with pytest.raises(ValueError, match="cap_kwh: needs a C-contiguous"):
        kern.limits_cc(ids, e, np.full(2 * n, 60.0)[::2], lim, lim, lim, *args, *out)
    frozen = np.empty(n)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="p_max: needs a C-contiguous writable"):
        kern.limits_cc(ids, e, cap, lim, lim, lim, *args, frozen, *out[1:])
    with pytest.raises(ValueError, match="output arrays shorter"):
        kern.limits_cc(ids, e, cap, lim, lim, lim, *args, np.empty(1), *out[1:])
    site, dep = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    view = [np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), *np.empty((5, n)),
            np.empty(n, dtype=np.uint8)]
    view_args = (ids, e, cap, lim, lim, lim, *args, *out, site, e, dep, 900)
    assert kern.view_cc(*view_args, *view) == (0, True)
    np.testing.assert_array_equal(view[0], ids)  # the view's own copies of ids and limits
    np.testing.assert_array_equal(view[5], out[0])
    np.testing.assert_array_equal(view[6], out[1])
    with pytest.raises(ValueError, match="view_cc: output arrays shorter"):
        kern.view_cc(*view_args, *view[:7], np.empty(1, dtype=np.uint8))
    with pytest.raises(ValueError, match="out_v2g: needs a C-contiguous writable"):
        kern.view_cc(*view_args, *view[:7], np.empty(n, dtype=bool))


@pytest.mark.parametrize("backend", BACKENDS)
def test_infinite_setpoints_raise_and_change_nothing(backend):
    f = fleet(backend)
    for k in range(40):
        f.step(k)
    p_set = np.full(f.n_ev, np.nan)
    p_set[f.plugged_view()["plugged_ids"][:3]] = 5.0
    p_set[np.flatnonzero(f.plug < 0)[0]] = -np.inf  # an EV that is not even plugged
    before = {key: v.copy() for key, v in vars(f).items() if isinstance(v, np.ndarray)}
    with pytest.raises(ValueError, match="p_set_kw has infinite values"):
        f.step(f.k, p_set)
    for key, v in before.items():
        np.testing.assert_array_equal(getattr(f, key), v, err_msg=key)
    p_set[np.isinf(p_set)] = np.nan
    f.step(f.k, p_set)  # the same step, now valid
    assert f.k == 41


def _legs_case(rng: np.random.Generator, n_ev: int = 30, m: int = 8) -> tuple[dict, dict]:
    """Random legs (sorted by EV, then nominal departure) and leg rings partly filled."""
    n = int(rng.integers(1, 3 * n_ev))
    ev = np.sort(rng.integers(0, n_ev, n))
    dep_nom = rng.integers(0, 200, n)
    order = np.lexsort((dep_nom, ev))
    legs = {"ev": ev[order], "dep_nom": dep_nom[order], "n_drive": rng.integers(1, 6, n),
            "km": rng.uniform(1, 60, n), "dest": rng.integers(-1, 5, n),
            "rest_km": rng.uniform(1, 120, n)}
    head = rng.integers(0, 20, n_ev)
    state = {"head": head, "tail": head + rng.integers(0, 3, n_ev),
             "last_arr": rng.integers(-1, 150, n_ev),
             "driving": (rng.random(n_ev) < 0.3).astype(np.uint8),
             "leg_dep": rng.integers(0, 99, (n_ev, m)), "leg_arr": rng.integers(0, 99, (n_ev, m)),
             "leg_km": rng.uniform(0, 9, (n_ev, m)), "leg_dest": rng.integers(0, 9, (n_ev, m)),
             "leg_rest_km": rng.uniform(0, 9, (n_ev, m)),
             "leg_seq": rng.integers(0, 5, (n_ev, m)), "seq": 7,
             "dep_out": np.zeros(n, dtype=np.int64), "arr_out": np.zeros(n, dtype=np.int64),
             "idle_out": np.zeros(n_ev, dtype=np.int64)}
    return legs, state


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.evstep is not built")
def test_append_legs_compiled_equals_numpy_and_keeps_stays():
    rng = np.random.default_rng(8)
    compiled, twin = select_kernel("evstep", "compiled"), select_kernel("evstep", "numpy")
    overflows = 0
    for _ in range(60):
        legs, state = _legs_case(rng)
        a = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
        b = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
        n_a, n_b = compiled.append_legs(**legs, **a), twin.append_legs(**legs, **b)
        assert n_a == n_b
        for key in state:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        if n_a < 0:  # a ring would overflow: nothing changed
            overflows += 1
            for key in ("tail", "last_arr", "leg_dep", "leg_arr"):
                np.testing.assert_array_equal(a[key], state[key], err_msg=key)
            continue
        ev, dep, arr = legs["ev"], a["dep_out"], a["arr_out"]
        np.testing.assert_array_equal(arr - dep, legs["n_drive"])
        assert (dep >= legs["dep_nom"]).all()
        first = np.r_[True, ev[1:] != ev[:-1]]
        prev = np.where(first, state["last_arr"][ev], np.r_[0, arr[:-1]])
        assert (dep >= prev + 1).all()  # a stay lasts at least one step
        assert ((dep == legs["dep_nom"]) | (dep == prev + 1)).all()
        np.testing.assert_array_equal(a["tail"] - state["tail"], np.bincount(ev, minlength=30))
        slot = (state["tail"][ev] + np.arange(ev.size) - np.searchsorted(ev, ev)) % 8
        assert (a["leg_seq"][ev, slot] == 7).all()  # each new leg has the filing number
        idle = np.unique(ev)
        idle = idle[(state["head"][idle] == state["tail"][idle]) & (state["driving"][idle] == 0)]
        np.testing.assert_array_equal(a["idle_out"][:n_a], idle)
    assert 0 < overflows < 60


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.evstep is not built")
def test_append_legs_rejects_bad_arrays():
    kern = select_kernel("evstep", "compiled")
    legs, state = _legs_case(np.random.default_rng(1))
    with pytest.raises(ValueError, match="ev must be sorted"):
        kern.append_legs(**{**legs, "ev": legs["ev"][::-1].copy()}, **state)
    with pytest.raises(ValueError, match="one value per leg"):
        kern.append_legs(**{**legs, "km": legs["km"][:-1].copy()}, **state)
    with pytest.raises(ValueError, match="the leg rings need the shape of leg_dep"):
        kern.append_legs(**legs, **{**state, "leg_km": state["leg_km"][:, :3].copy()})
    with pytest.raises(ValueError, match="leg_dest: needs a C-contiguous writable 2-d array"):
        kern.append_legs(**legs, **{**state, "leg_dest": state["leg_dest"].astype(np.int32)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_step_takes_the_trips_planned_for_it_in_planning_order(backend):
    """The EVs leaving and arriving at each step are those whose legs were planned to, listed
    by planning call, then EV (as the legs were filed)."""
    cfg = example_config(250)
    f = EVFleet(cfg, [s.bus for s in cfg.sites], START, STEP_S, 3 * 96,
                np.random.default_rng(6), log_trips=True, backend=backend)
    seen: dict[str, dict[int, list[int]]] = {"dep": {}, "arr": {}}
    depart, arrive = f._depart, f._arrive
    f._depart = lambda ids, k: (seen["dep"].setdefault(k, []).extend(ids.tolist()),
                                depart(ids, k))
    f._arrive = lambda ids, k: (seen["arr"].setdefault(k, []).extend(ids.tolist()),
                                arrive(ids, k))
    for k in range(f.n_steps):
        f.step(k)
    planned: dict[str, dict[int, list[int]]] = {"dep": {}, "arr": {}}
    for filing in f.trip_log:  # one per planning call, legs by EV
        for key, col in (("dep", "dep_step"), ("arr", "arr_step")):
            for ev, step in zip(filing["ev"].tolist(), filing[col].tolist(), strict=True):
                if 0 < step < f.n_steps:  # (step 0: before the first boundary is watched)
                    planned[key].setdefault(step, []).append(ev)
    assert seen == planned
    # steps whose departures come from more than one planning call, not in EV order
    assert any(ids != sorted(ids) for ids in seen["dep"].values())


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.evstep is not built")
def test_due_compiled_equals_numpy_and_refuses_bad_arrays():
    compiled, twin = select_kernel("evstep", "compiled"), select_kernel("evstep", "numpy")
    rng = np.random.default_rng(9)
    n = 300
    for _ in range(20):
        evt_step, evt_seq = rng.integers(-1, 6, n), rng.integers(0, 4, n)
        driving = (rng.random(n) < 0.5).astype(np.uint8)
        outs = [[np.zeros(n, dtype=np.int64) for _ in range(2)] for _ in range(2)]
        k = int(rng.integers(0, 6))
        counts = [kern.due(k, evt_step, evt_seq, driving, *out)
                  for kern, out in zip((compiled, twin), outs, strict=True)]
        assert counts[0] == counts[1]
        n_dep, n_arr = counts[0]
        for a, b, m in zip(outs[0], outs[1], (n_dep, n_arr), strict=True):
            np.testing.assert_array_equal(a[:m], b[:m])
        leaving = outs[0][0][:n_dep]
        np.testing.assert_array_equal(np.sort(leaving),
                                      np.flatnonzero((evt_step == k) & (driving == 0)))
        assert (np.diff(evt_seq[leaving]) >= 0).all()
        same = np.diff(evt_seq[leaving]) == 0
        assert (np.diff(leaving)[same] > 0).all()  # by filing, then EV
    z = np.zeros(n, dtype=np.int64)
    with pytest.raises(ValueError, match="one value per EV"):
        compiled.due(0, z, z, np.zeros(n, dtype=np.uint8), z, z[:5].copy())
    with pytest.raises(ValueError, match="driving: needs a C-contiguous 1-d array of uint8"):
        compiled.due(0, z, z, np.zeros(n, dtype=bool), z, z)


@pytest.mark.parametrize("backend", BACKENDS)
def test_plugged_lists_the_evs_plugged_in_order(backend):
    kern = select_kernel("evstep", backend)
    plug = np.random.default_rng(4).integers(-1, 5, 200)
    out = np.full(200, -7, dtype=np.int64)
    n = kern.plugged(plug, out)
    np.testing.assert_array_equal(out[:n], np.flatnonzero(plug >= 0))
    with pytest.raises(ValueError, match="room for every EV"):
        kern.plugged(plug, out[:10].copy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_advance_adds_each_evs_energy_to_the_daily_sum_and_counts_discharging_evs(backend):
    f = fleet(backend, v2g_willing_share=1.0)
    kern = select_kernel("evstep", backend)
    for k in range(50):
        f.step(k)
    ids = f._plugged
    p_max, p_min = f.limits(ids)
    p_set = np.full(f.n_ev, np.nan)
    p_set[ids] = np.random.default_rng(3).uniform(-20.0, 20.0, ids.size)
    e_sum = np.random.default_rng(4).uniform(0.0, 500.0, f.n_ev)
    before = e_sum.copy()
    ag, s = f.ageing, f.n_sites
    p_site, q_site, ch_site, dis_site = np.zeros((4, s))
    m, _, _, finite, n_dis = kern.advance(
        ids, p_set, True, f.plug, p_max, p_min, f.e_kwh, f.cap_kwh, f.charged_kwh,
        f.discharged_kwh, f.site, p_site, ag.last_dir, ag.extreme, ag.tp_buf, ag.tp_n,
        f._charging_u8, f.dt_h, f.cfg.charge_efficiency, f.cfg.discharge_efficiency, f.soc_full,
        1e-6, f._ch_kw, f._dis_kw, ch_site, dis_site, 0.3, q_site, e_sum)
    np.testing.assert_array_equal(e_sum, before + f.e_kwh)  # the energies after the step
    assert finite and 0 < n_dis < m
    assert n_dis == np.count_nonzero(f._dis_kw[:m] > 0)
    np.testing.assert_array_equal(q_site, p_site * 0.3)
    with pytest.raises(ValueError, match="e_sum_kwh need one value per EV"):
        kern.advance(ids, p_set, True, f.plug, p_max, p_min, f.e_kwh, f.cap_kwh, f.charged_kwh,
                     f.discharged_kwh, f.site, p_site, ag.last_dir, ag.extreme, ag.tp_buf,
                     ag.tp_n, f._charging_u8, f.dt_h, 0.9, 0.9, f.soc_full, 1e-6, f._ch_kw,
                     f._dis_kw, ch_site, dis_site, 0.3, q_site, e_sum[:5].copy())
