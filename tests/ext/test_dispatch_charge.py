"""The ``pv_following`` step kernel of ``ext.dispatch`` (``charge_into``) and the PV sharing of
its twin (``pv_by_site``). Given the same allocation kernel, the compiled step equals the twin
to the bit; with each its own allocation they agree to rounding; and both do what the strategy
is defined to do."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import ext.dispatch_np as twin
from ext.dispatch_api import charge_error, kernel_module

pytestmark = pytest.mark.kernels

HAS_COMPILED = importlib.util.find_spec("ext.dispatch") is not None
BACKENDS = ["numpy", *(["compiled"] if HAS_COMPILED else [])]
STEP_S, ETA = 900.0, 0.92


def _groups(site_bus: np.ndarray, plant_bus: np.ndarray) -> tuple[np.ndarray, ...]:
    """The zone's (sites, plants) per bus with sites and plants, as ``charge_into`` takes them."""
    groups = [(np.flatnonzero(site_bus == b), np.flatnonzero(plant_bus == b))
              for b in np.unique(site_bus).tolist() if (plant_bus == b).any()]
    out = []
    for part in (0, 1):
        members = [g[part] for g in groups]
        out.append(np.cumsum([0, *(m.size for m in members)], dtype=np.int64))
        out.append(np.concatenate([np.zeros(0, np.int64), *members]).astype(np.int64))
    return tuple(out)


def _case(seed: int) -> dict:
    """A random zone and step: up to 300 EVs (more than NumPy's pairwise-sum block), sites
    that share buses, plants on site buses and elsewhere, zeros of both signs."""
    rng = np.random.default_rng(seed)
    n, n_site, n_plant = int(rng.integers(0, 300)), int(rng.integers(1, 7)), \
        int(rng.integers(0, 12))
    site_bus = rng.integers(0, 4, n_site)
    plant_bus = rng.integers(0, 6, n_plant)
    need = rng.uniform(0, 60, n) * (rng.random(n) < 0.8)
    p_max = rng.choice([0.0, 3.7, 7.0, 11.0, 60.0], n)
    p_max[rng.random(n) < 0.1] = -0.0
    pv = rng.uniform(0, 400, n_plant) * (rng.random(n_plant) < 0.7)
    pv[rng.random(n_plant) < 0.2] = -0.0
    lo = float(rng.integers(0, 20))
    return {
        "need_kwh": need, "restore_kwh": rng.uniform(0, 20, n) * (rng.random(n) < 0.3),
        "room_kwh": need + rng.uniform(0, 30, n) * (rng.random(n) < 0.7),
        "t_dep_s": rng.uniform(1.0, 60 * STEP_S, n), "p_max_kw": p_max,
        "site": rng.integers(0, n_site, n).astype(np.int64),
        "site_cap_kw": rng.uniform(0, 400, n_site),
        "pv_kw": pv, "groups": _groups(site_bus, plant_bus),
        "pv_forecast_kw": rng.uniform(-10, 300, int(rng.integers(0, 70))),
        "need_margin": float(rng.choice([0.0, 0.02])), "departure_margin_s": 900.0,
        "target_mode": int(rng.integers(0, 3)), "pv_to_full": bool(rng.random() < 0.7),
        "window": (lo, lo + float(rng.integers(0, 40))) if rng.random() < 0.8
        else (np.inf, -np.inf),
        "fill_s": float(rng.integers(0, 30)) * STEP_S * (rng.random() < 0.7),
        "fill_lead_h": float(rng.choice([0.0, 0.5])),
    }


def _work(kernel, case: dict) -> np.ndarray:
    """The kernel's scratch for ``case``, holding garbage (what it held before is never read)."""
    c = case
    return np.full(kernel.charge_work_size(c["need_kwh"].size, c["site_cap_kw"].size,
                                           c["pv_kw"].size, c["pv_forecast_kw"].size), np.nan)


def _charge(kernel, case: dict, work: np.ndarray | None = None,
            **kw) -> tuple[tuple[int, int], np.ndarray]:
    c = case
    out = np.full((4, c["need_kwh"].size), np.nan)
    code = kernel.charge_into(
        c["need_kwh"], c["restore_kwh"], c["room_kwh"], c["t_dep_s"], c["p_max_kw"], c["site"],
        c["site_cap_kw"], c["pv_kw"], *c["groups"], c["pv_forecast_kw"], STEP_S, ETA, ETA,
        c["need_margin"], c["departure_margin_s"], c["target_mode"], c["pv_to_full"],
        *c["window"], c["fill_s"], c["fill_lead_h"], out,
        _work(kernel, case) if work is None else work, **kw)
    return code, out


@pytest.mark.parametrize("seed", range(60))
def test_compiled_step_equals_the_twin_to_the_bit_on_the_same_allocation(seed: int) -> None:
    if not HAS_COMPILED:
        pytest.skip("ext.dispatch is not built")
    compiled = kernel_module("compiled")
    case = _case(seed)
    code_c, out_c = _charge(compiled, case)
    code_t, out_t = _charge(twin, case, allocate=compiled.allocate_into)
    assert code_c == code_t == (0, -1)
    assert out_c.tobytes() == out_t.tobytes()


@pytest.mark.parametrize("seed", range(30))
def test_compiled_step_and_twin_agree_with_their_own_allocations(seed: int) -> None:
    if not HAS_COMPILED:
        pytest.skip("ext.dispatch is not built")
    case = _case(seed)
    (code_c, out_c), (code_t, out_t) = (_charge(kernel_module(b), case)
                                        for b in ("compiled", "numpy"))
    assert code_c == code_t == (0, -1)
    np.testing.assert_array_equal(out_c[1:], out_t[1:])
    np.testing.assert_allclose(out_c[0], out_t[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(30))
def test_step_follows_its_definition(backend: str, seed: int) -> None:
    kernel = kernel_module(backend)
    case = _case(seed)
    code, (p, need, t_dep, target) = _charge(kernel, case)
    assert code == (0, -1)
    c = case
    np.testing.assert_array_equal(
        need, np.maximum(c["need_kwh"], c["restore_kwh"]) * (1.0 + c["need_margin"]))
    np.testing.assert_array_equal(t_dep, np.maximum(c["t_dep_s"] - 900.0, STEP_S))
    dep = t_dep / STEP_S
    lo, hi = c["window"]
    morning = (dep >= lo) & (dep <= hi) & (c["target_mode"] != 2)
    full = np.maximum(c["room_kwh"], need)
    np.testing.assert_array_equal(target, full if c["target_mode"] == 0
                                  else np.where(morning, full, need))
    # charging only, within each EV's bound and, beyond the mandatory power, its site's
    # connection; never beyond the target unless PV fills up to full
    assert (p >= 0).all() and (p <= c["p_max_kw"] + 1e-9).all()
    site_p = np.bincount(c["site"], p, c["site_cap_kw"].size)
    mand = np.empty_like(p)
    kernel.allocate_into(target, t_dep, c["p_max_kw"], np.zeros(p.size), c["p_max_kw"],
                         c["site"], c["site_cap_kw"], np.zeros(c["site_cap_kw"].size), 0.0,
                         STEP_S, ETA, ETA, mand, np.empty((3, c["site_cap_kw"].size)),
                         np.empty(6))
    mand_site = np.bincount(c["site"], mand, c["site_cap_kw"].size)
    assert (site_p <= np.maximum(c["site_cap_kw"], mand_site) + 1e-6).all()
    assert (p >= mand - 1e-6).all()
    if not c["pv_to_full"]:
        assert (ETA * p * STEP_S / 3600.0 <= np.maximum(target, ETA * mand * STEP_S / 3600.0)
                + 1e-6).all()


def _zone(pv_kw: float, n: int = 4) -> dict:
    """Two sites on one bus with one plant, a second plant on a bus without a site."""
    return {
        "need_kwh": np.full(n, 10.0), "restore_kwh": np.zeros(n), "room_kwh": np.full(n, 30.0),
        "t_dep_s": np.full(n, 40 * STEP_S), "p_max_kw": np.full(n, 7.0),
        "site": np.arange(n, dtype=np.int64) % 2, "site_cap_kw": np.full(2, 100.0),
        "pv_kw": np.array([pv_kw, 0.0]), "groups": _groups(np.array([5, 5]), np.array([5, 9])),
        "pv_forecast_kw": np.zeros(0), "need_margin": 0.0, "departure_margin_s": 900.0,
        "target_mode": 0, "pv_to_full": True, "window": (np.inf, -np.inf), "fill_s": 0.0,
        "fill_lead_h": 0.0,
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_by_hand(backend: str) -> None:
    kernel = kernel_module(backend)
    # no PV, no off-peak period, departures far: nothing is mandatory, nothing charges
    code, out = _charge(kernel, _zone(0.0))
    assert code == (0, -1) and not out[0].any()
    # 14 kW of PV on the sites' bus: shared by the sites' maximum power, 3.5 kW per EV
    code, out = _charge(kernel, _zone(14.0))
    np.testing.assert_allclose(out[0], 3.5, rtol=1e-12)
    # more PV than the EVs can take: every EV at its maximum (up to full), the rest exported
    code, out = _charge(kernel, _zone(100.0))
    np.testing.assert_allclose(out[0], 7.0, rtol=1e-12)
    # off-peak for the next 12 steps, every EV leaving in the window: the 10 kWh of each
    # spread over the 11 steps (2.75 h) to its planned departure, none of it mandatory yet
    case = _zone(0.0)
    case.update(t_dep_s=np.full(4, 12 * STEP_S), room_kwh=np.full(4, 10.0),
                window=(0.0, 14.0), fill_s=12 * STEP_S, pv_forecast_kw=np.zeros(16))
    code, out = _charge(kernel, case)
    np.testing.assert_allclose(out[0], 10.0 / ETA / 2.75, rtol=1e-9)
    # 5 kW of PV expected in each of the 10 steps before they leave (12.5 kWh) covers its
    # share of the 40 kWh left: 10 - 0.92 * 12.5 / 4 kWh each from the grid
    case["pv_forecast_kw"] = np.full(16, 5.0)
    _, with_pv = _charge(kernel, case)
    np.testing.assert_allclose(with_pv[0], (10.0 - ETA * 12.5 / 4) / ETA / 2.75, rtol=1e-9)


def test_work_sizes_of_the_kernel_and_the_twin_agree() -> None:
    if not HAS_COMPILED:
        pytest.skip("ext.dispatch is not built")
    compiled = kernel_module("compiled")
    for sizes in [(0, 0, 0, 0), (1, 1, 0, 0), (7, 3, 5, 11), (1200, 9, 24, 96)]:
        assert compiled.charge_work_size(*sizes) == twin.charge_work_size(*sizes)
    with pytest.raises(ValueError, match="sizes"):
        compiled.charge_work_size(-1, 1, 1, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_work_array_serves_every_step(backend: str) -> None:
    """A work array sized for the largest step serves smaller ones, and what a step left in it
    does not change the next; one too small is refused."""
    kernel = kernel_module(backend)
    cases = [_case(seed) for seed in range(12)]
    work = np.full(max(_work(kernel, c).size for c in cases), np.nan)
    for case in cases:
        assert _charge(kernel, case, work)[1].tobytes() == _charge(kernel, case)[1].tobytes()
    case = _case(0)
    with pytest.raises(ValueError, match="work holds fewer values"):
        _charge(kernel, case, _work(kernel, case)[:-1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arrays_are_named(backend: str) -> None:
    kernel = kernel_module(backend)
    for code, (name, bad) in enumerate(
            [("need_kwh", -1.0), ("restore_kwh", np.nan), ("room_kwh", np.inf),
             ("t_dep_s", 0.0), ("p_max_kw", -2.0), ("site", 2), ("site_cap_kw", np.nan),
             ("pv_kw", -5.0), ("pv_forecast_kw", np.nan)], start=1):
        case = _zone(10.0)
        case["pv_forecast_kw"] = np.zeros(3)
        case[name] = case[name].copy()
        case[name][1] = bad
        got, _ = _charge(kernel, case)
        assert got == (code, 1), name
        err = charge_error(*got, {k: case[k] for k in twin.CHARGE_ARRAYS})
        assert str(err).startswith(f"{name}: must be") and "element 1" in str(err)
    with pytest.raises(ValueError, match="sizes"):
        case = _zone(10.0)
        case["restore_kwh"] = np.zeros(3)
        _charge(kernel, case)
    with pytest.raises(ValueError, match="group"):
        case = _zone(10.0)
        case["groups"] = (case["groups"][0], np.array([0, 7], np.int64), *case["groups"][2:])
        _charge(kernel, case)
    with pytest.raises(ValueError, match="scalar"):
        case = _zone(10.0)
        case["target_mode"] = 3
        _charge(kernel, case)


def test_pv_by_site_follows_its_definition() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        n_site, n_plant = int(rng.integers(1, 6)), int(rng.integers(0, 20))
        site_bus, plant_bus = rng.integers(0, 3, n_site), rng.integers(0, 5, n_plant)
        pv = rng.uniform(0, 100, n_plant) * (rng.random(n_plant) < 0.7)
        weight = rng.uniform(0, 10, n_site) * (rng.random(n_site) < 0.7)
        site_pv, pool = twin.pv_by_site(pv, *_groups(site_bus, plant_bus), weight, n_site)
        for bus in np.unique(site_bus):
            here = site_bus == bus
            supply = pv[plant_bus == bus].sum()
            w = weight[here] / weight[here].sum() if weight[here].sum() > 0 \
                else np.full(here.sum(), 1 / here.sum())
            np.testing.assert_allclose(site_pv[here], supply * w, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(pool, pv[~np.isin(plant_bus, site_bus)].sum(), atol=1e-9)
        # energy closes: every plant's PV goes to a site of its bus or to the pool
        assert site_pv.sum() + pool == pytest.approx(pv.sum(), abs=1e-9)
