"""Properties of the per-step EV allocation: bounds, caps, needs, sign logic, energy, fairness."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ext.dispatch_api import DispatchInfo, allocate

pytestmark = pytest.mark.kernels

HAS_COMPILED = importlib.util.find_spec("ext.dispatch") is not None
TOL_KW = 1e-7
TOL_H = 1e-7

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Case:
    """One step's inputs (units as in ``allocate``)."""

    need_kwh: np.ndarray
    t_dep_s: np.ndarray
    p_max_kw: np.ndarray
    p_min_kw: np.ndarray
    p_rate_kw: np.ndarray
    site: np.ndarray
    site_cap_kw: np.ndarray
    site_pv_kw: np.ndarray
    grid_budget_kw: float
    step_s: float
    eta_ch: float
    eta_dis: float

    @property
    def n_site(self) -> int:
        return self.site_cap_kw.size

    def run(self, backend: str = "auto") -> tuple[np.ndarray, DispatchInfo]:
        return allocate(self.need_kwh, self.t_dep_s, self.p_max_kw, self.p_min_kw, self.site,
                        self.site_cap_kw, self.site_pv_kw, self.grid_budget_kw, self.step_s,
                        self.eta_ch, self.eta_dis, p_rate_kw=self.p_rate_kw, backend=backend)

    # -- reference quantities, written from the definitions
    @property
    def dt_h(self) -> float:
        return self.step_s / 3600.0

    @property
    def rate_kw(self) -> np.ndarray:
        """Battery-side charge rate assumed for the rest of the stay."""
        return self.eta_ch * np.maximum(self.p_rate_kw, self.p_max_kw)

    @property
    def after_h(self) -> np.ndarray:
        return np.maximum(self.t_dep_s / 3600.0 - self.dt_h, 0.0)

    @property
    def h_max(self) -> np.ndarray:
        return np.minimum(self.p_max_kw, self.need_kwh / (self.eta_ch * self.dt_h))

    @property
    def mandatory(self) -> np.ndarray:
        e_kwh = self.need_kwh - self.rate_kw * self.after_h
        return np.minimum(np.maximum(e_kwh, 0.0) / (self.eta_ch * self.dt_h), self.h_max)

    @property
    def d_max(self) -> np.ndarray:
        slack_kwh = self.rate_kw * self.after_h - self.need_kwh
        return np.maximum(np.minimum(-self.p_min_kw, self.eta_dis * slack_kwh / self.dt_h), 0.0)

    def feasible(self, p_kw: np.ndarray | None = None, tol: float = 1e-7) -> np.ndarray:
        """Departure need reachable at full power: now (``p_kw`` None) or after the step."""
        if p_kw is None:  # full power this step and at the assumed rate afterwards suffices
            reach_kwh = self.eta_ch * self.p_max_kw * self.dt_h + self.rate_kw * self.after_h
            return self.need_kwh <= reach_kwh * (1 + 1e-12) + 1e-12
        e_kwh = np.where(p_kw >= 0, p_kw * self.eta_ch, p_kw / self.eta_dis) * self.dt_h
        left = self.need_kwh - e_kwh
        return left <= self.rate_kw * self.after_h + tol * (1.0 + self.need_kwh)



def finite(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def cases(draw, max_ev: int = 24, max_site: int = 4, budget=None, pv=None) -> Case:
    n = draw(st.integers(0, max_ev))
    n_site = draw(st.integers(1, max_site))
    step_s = draw(st.sampled_from([300.0, 900.0, 3600.0]))

    def vec(elements: st.SearchStrategy, size: int = n) -> np.ndarray:
        return draw(arrays(np.float64, size, elements=elements))

    need = vec(st.one_of(st.just(0.0), finite(0.0, 80.0)))
    t_dep = vec(st.one_of(st.sampled_from([step_s, 2 * step_s, 8 * step_s, 40 * step_s]),
                          finite(60.0, 2 * 86400.0)))
    p_max = vec(st.one_of(st.sampled_from([0.0, 3.7, 7.4, 11.0, 22.0]), finite(0.0, 150.0)))
    p_min = vec(st.one_of(st.just(0.0), finite(-60.0, 0.0)))
    # the rate assumed for later steps: mostly at or above this step's maximum (raised if below)
    p_rate = np.maximum(p_max + vec(st.one_of(st.just(0.0), finite(0.0, 50.0),
                                              finite(-20.0, 0.0))), 0.0)
    site = draw(arrays(np.int64, n, elements=st.integers(0, n_site - 1)))
    cap = vec(st.one_of(st.just(0.0), finite(0.0, 300.0), st.just(1e4)), n_site)
    pv_kw = vec(st.one_of(st.just(0.0), finite(0.0, 300.0)), n_site) if pv is None \
        else np.full(n_site, pv)
    grid = draw(st.one_of(st.just(0.0), finite(-300.0, 600.0))) if budget is None \
        else draw(budget)
    return Case(need, t_dep, p_max, p_min, p_rate, site, cap, pv_kw, grid, step_s,
                draw(finite(0.8, 1.0)), draw(finite(0.8, 1.0)))


def site_sum(case: Case, values: np.ndarray) -> np.ndarray:
    return np.bincount(case.site, values, case.n_site)


def laxity_after(case: Case, p_kw: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """Laxity at the end of the step (time to spare before full power is needed) of the EVs
    ``sel`` (NaN elsewhere) [h]."""
    lax = np.full(p_kw.size, np.nan)
    p = p_kw[sel]
    e_kwh = np.where(p >= 0, p * case.eta_ch, p / case.eta_dis) * case.dt_h
    lax[sel] = case.after_h[sel] - (case.need_kwh[sel] - e_kwh) / case.rate_kw[sel]
    return lax


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------
@SETTINGS
@given(cases())
def test_bounds_caps_and_remaining_need_are_respected(case: Case) -> None:
    p, info = case.run()
    assert p.shape == case.need_kwh.shape and np.isfinite(p).all()
    assert (p <= case.p_max_kw + TOL_KW).all()
    assert (p >= case.p_min_kw - TOL_KW).all()
    assert (p <= case.h_max + TOL_KW).all()  # never beyond the need left within the step
    net = site_sum(case, p)
    assert (np.abs(net) <= case.site_cap_kw + TOL_KW).all()
    np.testing.assert_allclose(info.site_p_kw, net, atol=TOL_KW)


@SETTINGS
@given(cases())
def test_mandatory_power_is_given_where_the_site_can_carry_it(case: Case) -> None:
    p, info = case.run()
    mand = case.mandatory
    mand_s = site_sum(case, mand)
    ok = mand_s <= case.site_cap_kw
    must = ok[case.site] & (mand > 0)
    assert (p[must] >= mand[must] - TOL_KW).all()
    np.testing.assert_allclose(info.site_shortfall_kw, np.maximum(mand_s - case.site_cap_kw, 0),
                               atol=TOL_KW)
    # a site that cannot carry its mandatory power spends all of its capacity on it
    over = ~ok
    charge_s = site_sum(case, np.maximum(p, 0.0))
    np.testing.assert_allclose(charge_s[over], case.site_cap_kw[over], atol=1e-6)
    assert info.mandatory_kw == pytest.approx(mand.sum(), abs=TOL_KW)
    short = (mand > 0) & (mand - p > 1e-9 * (1.0 + mand))
    assert info.n_cap_limited == int(short.sum())
    assert not short[ok[case.site]].any()


@SETTINGS
@given(cases())
def test_feasible_departure_needs_stay_feasible(case: Case) -> None:
    p, info = case.run()
    after = case.feasible(p)
    uncapped = (site_sum(case, case.mandatory) <= case.site_cap_kw)[case.site]
    assert after[case.feasible() & uncapped].all()
    # the count, up to EVs within rounding of the boundary
    lenient, strict = (~case.feasible(p, tol=1e-6)).sum(), (~case.feasible(p, tol=1e-12)).sum()
    assert lenient <= info.n_infeasible <= strict


@SETTINGS
@given(cases())
def test_only_evs_with_slack_discharge_and_only_when_asked(case: Case) -> None:
    p, _ = case.run()
    dis = p < 0
    if case.grid_budget_kw >= 0:
        assert not dis.any()
    assert (case.p_min_kw[dis] < 0).all()
    assert (case.mandatory[dis] == 0).all()
    assert (-p[dis] <= case.d_max[dis] + TOL_KW).all()
    # an EV with need and no laxity left never discharges
    lax0_h = case.t_dep_s / 3600.0 - case.need_kwh / np.maximum(case.rate_kw, 1e-300)
    assert not (dis & (case.need_kwh > 0) & (lax0_h <= 0)).any()
    assert case.feasible(p)[dis].all()


@SETTINGS
@given(cases())
def test_energy_is_accounted(case: Case) -> None:
    p, info = case.run()
    charge_s = site_sum(case, np.maximum(p, 0))
    dis_s = site_sum(case, np.maximum(-p, 0))
    assert (info.pv_used_kw <= case.site_pv_kw + TOL_KW).all()
    np.testing.assert_allclose(info.pv_used_kw, np.minimum(case.site_pv_kw, charge_s), atol=TOL_KW)
    assert info.charge_kw == pytest.approx(charge_s.sum(), abs=TOL_KW)
    assert info.discharge_kw == pytest.approx(dis_s.sum(), abs=TOL_KW)
    assert info.grid_kw == pytest.approx(info.charge_kw - info.pv_used_kw.sum(), abs=1e-6)
    # grid charging: the budget, or the mandatory power local PV cannot cover if that is more
    given_s = np.minimum(site_sum(case, case.mandatory), case.site_cap_kw)
    mand_grid = np.maximum(given_s - case.site_pv_kw, 0).sum()
    assert info.grid_kw <= max(case.grid_budget_kw, mand_grid) + 1e-6
    assert info.discharge_kw <= max(-case.grid_budget_kw, 0.0) + 1e-6


@SETTINGS
@given(cases())
def test_resources_are_not_left_unused(case: Case) -> None:
    """Water-filling is exhaustive: PV, grid budget and discharge request go as far as bounds
    and site capacities allow."""
    p, info = case.run()
    charge_s = site_sum(case, np.maximum(p, 0))
    site_full = charge_s >= case.site_cap_kw - 1e-6
    short = (p >= 0) & (p < case.h_max - 1e-6)
    pv_left = case.site_pv_kw - info.pv_used_kw > 1e-6
    assert not (short & pv_left[case.site] & ~site_full[case.site]).any()
    if case.grid_budget_kw > 0 and info.grid_kw < case.grid_budget_kw - 1e-6:
        assert not (short & ~site_full[case.site]).any()
    if case.grid_budget_kw < 0 and info.discharge_kw < -case.grid_budget_kw - 1e-6:
        net_s = site_sum(case, p)
        site_out = net_s <= -case.site_cap_kw + 1e-6
        able = (p <= 0) & (case.mandatory == 0) & (-p < case.d_max - 1e-6)
        # an EV that took PV power (beyond a trace) is not asked to discharge
        assert not (able & ~site_out[case.site]).any()


@SETTINGS
@given(cases(max_site=1, pv=0.0, budget=finite(1.0, 400.0)))
def test_charging_levels_laxity_least_laxity_first(case: Case) -> None:
    """With one budget to share and no binding cap: EVs between their bounds end the step with
    the same laxity, EVs held at the lower bound have at least it, EVs at the upper bound at
    most it."""
    case = replace(case, site_cap_kw=np.array([1e6]))
    p, _ = case.run()
    lo, hi = case.mandatory, case.h_max
    movable = (hi > lo + 1e-6) & (case.rate_kw > 0)
    lax = laxity_after(case, p, movable)
    at_lo = movable & (p <= lo + 1e-9)
    at_hi = movable & (p >= hi - 1e-9)
    inside = movable & ~at_lo & ~at_hi
    if inside.any():
        level = np.median(lax[inside])
        np.testing.assert_allclose(lax[inside], level, atol=1e-6)
    else:
        level = lax[at_hi].max() if at_hi.any() else -np.inf
    assert (lax[at_hi] <= level + TOL_H).all()
    if at_lo.any() and (at_hi.any() or inside.any()):
        assert (lax[at_lo] >= max(lax[at_hi | inside]) - TOL_H).all()


@SETTINGS
@given(cases(max_site=1, pv=0.0, budget=finite(-400.0, -1.0)))
def test_discharge_levels_laxity_most_slack_first(case: Case) -> None:
    """Discharge mirrored: EVs between 0 and their most end with the same laxity, EVs that do
    not discharge have at most it, EVs at their most at least it."""
    case = replace(case, site_cap_kw=np.array([1e6]))
    p, _ = case.run()
    cand = (case.d_max > 1e-6) & (case.mandatory == 0) & (p <= 0)
    d = -np.where(cand, p, 0.0)
    lax = laxity_after(case, -d, cand)
    at_zero = cand & (d <= 1e-9)
    at_max = cand & (d >= case.d_max - 1e-9)
    inside = cand & ~at_zero & ~at_max
    if inside.any():
        level = np.median(lax[inside])
        np.testing.assert_allclose(lax[inside], level, atol=1e-6)
    if at_zero.any() and (at_max.any() or inside.any()):
        assert (lax[at_zero] <= min(lax[at_max | inside]) + TOL_H).all()
    assert (lax[cand] >= -TOL_H).all()  # discharge never eats into the departure need


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.dispatch is not built")
@SETTINGS
@given(cases())
def test_compiled_kernel_and_twin_agree(case: Case) -> None:
    p_c, info_c = case.run("compiled")
    p_n, info_n = case.run("numpy")
    np.testing.assert_allclose(p_c, p_n, rtol=1e-9, atol=1e-9)
    for field in ("mandatory_kw", "grid_kw", "discharge_kw", "charge_kw", "pv_used_kw",
                  "site_shortfall_kw", "site_p_kw"):
        np.testing.assert_allclose(getattr(info_c, field), getattr(info_n, field), rtol=1e-9,
                                   atol=1e-9, err_msg=field)
    assert info_c.n_infeasible == info_n.n_infeasible
    assert info_c.n_cap_limited == info_n.n_cap_limited


def random_zone(n: int, n_site: int, budget_kw: float, seed: int) -> Case:
    """A random zone: mixed chargers, a third of the EVs V2G, tight site connections."""
    rng = np.random.default_rng(seed)
    p_max = rng.choice([3.7, 7.4, 11.0, 22.0, 60.0], n)
    site = rng.integers(0, n_site, n)
    return Case(
        need_kwh=np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0, 50, n)),
        t_dep_s=rng.integers(1, 60, n) * 900.0, p_max_kw=p_max,
        p_min_kw=np.where(rng.random(n) < 0.3, -rng.choice([7.0, 11.0], n), 0.0),
        p_rate_kw=p_max, site=site,
        site_cap_kw=rng.uniform(0.2, 1.0, n_site) * np.bincount(site, p_max, n_site),
        site_pv_kw=rng.uniform(0.0, 0.5, n_site) * np.bincount(site, p_max, n_site),
        grid_budget_kw=budget_kw, step_s=900.0, eta_ch=0.95, eta_dis=0.95)


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.dispatch is not built")
@pytest.mark.parametrize("budget_kw", [-2000.0, 0.0, 3000.0, 1e6])
def test_compiled_kernel_and_twin_agree_on_a_large_zone(budget_kw: float) -> None:
    case = random_zone(3000, 50, budget_kw, seed=11)
    p_c, info_c = case.run("compiled")
    p_n, info_n = case.run("numpy")
    np.testing.assert_allclose(p_c, p_n, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(info_c.site_p_kw, info_n.site_p_kw, rtol=1e-9, atol=1e-9)
    assert info_c.n_infeasible == info_n.n_infeasible


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.dispatch is not built")
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("budget_share", [0.05, 0.2, 0.6])
def test_compiled_kernel_and_twin_agree_when_sites_are_held_at_their_bounds(
        seed: int, budget_share: float) -> None:
    """Many sites with tight connections and PV: the zone-wide charging level holds some sites
    at their connection and leaves others at their PV share (solved together in the kernel)."""
    case = random_zone(2000, 40, 0.0, seed=seed)
    chargers_s = site_sum(case, case.p_max_kw)
    rng = np.random.default_rng(seed)
    case = replace(case, site_cap_kw=rng.uniform(0.15, 0.8, case.n_site) * chargers_s,
                   site_pv_kw=rng.uniform(0.0, 0.6, case.n_site) * chargers_s,
                   grid_budget_kw=budget_share * chargers_s.sum())
    p_c, info_c = case.run("compiled")
    p_n, info_n = case.run("numpy")
    np.testing.assert_allclose(p_c, p_n, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(info_c.site_p_kw, info_n.site_p_kw, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(info_c.pv_used_kw, info_n.pv_used_kw, rtol=1e-9, atol=1e-9)
    assert info_c.grid_kw == pytest.approx(info_n.grid_kw, rel=1e-9, abs=1e-9)
    assert info_c.n_infeasible == info_n.n_infeasible
    assert (info_c.site_p_kw <= case.site_cap_kw + info_c.site_shortfall_kw + TOL_KW).all()
    at_cap = info_c.site_p_kw >= case.site_cap_kw - 1e-6
    assert at_cap.any() and not at_cap.all()


# --------------------------------------------------------------------------------------------
# scenarios worked out by hand
# --------------------------------------------------------------------------------------------
def one_site(need, t_dep_h, p_max, p_min=None, budget=0.0, cap=1e4, pv=0.0) -> Case:
    n = len(need)
    return Case(np.array(need, float), np.array(t_dep_h, float) * 3600.0,
                np.array(p_max, float), np.zeros(n) if p_min is None else np.array(p_min, float),
                np.array(p_max, float), np.zeros(n, np.int64), np.array([cap]), np.array([pv]),
                budget, 3600.0, 1.0, 1.0)


@pytest.mark.parametrize(("budget", "expected"), [(10.0, [0.0, 10.0]), (15.0, [5.0, 10.0]),
                                                  (30.0, [10.0, 10.0])])
def test_least_laxity_first_by_hand(budget: float, expected: list[float]) -> None:
    # laxity 3 h and 1 h; 1-hour step, lossless: the second EV is served first, the first EV
    # starts once the second's laxity after the step (1 h at full power) reaches its own - 1 h
    p, info = one_site([10, 10], [4, 2], [10, 10], budget=budget).run()
    np.testing.assert_allclose(p, expected, atol=1e-12)
    assert info.grid_kw == pytest.approx(sum(expected))


def test_mandatory_power_ignores_the_budget_but_not_the_site() -> None:
    # laxity 0: 10 kW now or the need is missed; laxity 1 h: nothing mandatory yet
    p, info = one_site([20, 10], [2, 2], [10, 10], budget=0.0).run()
    np.testing.assert_allclose(p, [10.0, 0.0])
    assert info.mandatory_kw == pytest.approx(10.0) and info.grid_kw == pytest.approx(10.0)
    # three EVs that each must take 10 kW on a 21 kW connection share it equally
    p, info = one_site([20] * 3, [2] * 3, [10] * 3, cap=21.0).run()
    np.testing.assert_allclose(p, [7.0, 7.0, 7.0])
    assert info.site_shortfall_kw[0] == pytest.approx(9.0)
    assert info.n_cap_limited == 3 and info.n_infeasible == 3


@pytest.mark.parametrize(("budget", "expected"), [(-3.0, [-3.0, 0.0]), (-8.0, [-5.0, -3.0]),
                                                  (-50.0, [-5.0, -5.0])])
def test_most_slack_discharges_first_by_hand(budget: float, expected: list[float]) -> None:
    # no need left, departures in 10 h and 4 h: the first has more slack and gives first
    p, info = one_site([0, 0], [10, 4], [10, 10], p_min=[-5, -5], budget=budget).run()
    np.testing.assert_allclose(p, expected, atol=1e-12)
    assert info.discharge_kw == pytest.approx(-sum(expected))


def test_discharge_keeps_the_departure_need_feasible() -> None:
    # 10 kWh needed in 2 h at 10 kW, 1-hour step, lossless: after discharging d kW for the
    # step, 10 + d kWh must fit into the last hour at 10 kW, so d <= 0
    p, _ = one_site([10], [2], [10], p_min=[-7], budget=-50.0).run()
    assert p[0] == pytest.approx(0.0)
    # with 4 h left: 10 + d <= 30  ->  d <= 20, limited by the charger to 7 kW
    p, _ = one_site([10], [4], [10], p_min=[-7], budget=-50.0).run()
    assert p[0] == pytest.approx(-7.0)
    # lossy: eta 0.9 both ways, 3 h left, 10 kWh needed -> 10 + d / 0.9 <= 2 * 9 -> d <= 7.2
    case = replace(one_site([10], [3], [10], p_min=[-20], budget=-50.0), eta_ch=0.9, eta_dis=0.9)
    p, _ = case.run()
    assert p[0] == pytest.approx(-7.2)


def test_pv_surplus_covering_all_demand_leaves_the_grid_untouched() -> None:
    case = random_zone(400, 8, 500.0, seed=3)
    demand_s = site_sum(case, case.h_max)
    case = replace(case, site_pv_kw=demand_s * 1.2 + 1.0, site_cap_kw=demand_s * 2.0 + 1.0)
    p, info = case.run()
    np.testing.assert_allclose(p, case.h_max, atol=1e-9)
    assert info.grid_kw == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(info.pv_used_kw, demand_s, atol=1e-9)


def test_pv_is_shared_within_its_site_only() -> None:
    # site 0 has 10 kW of PV and two identical EVs; site 1 has none and a third EV
    case = Case(np.array([10.0, 10.0, 10.0]), np.full(3, 8 * 3600.0), np.full(3, 11.0),
                np.zeros(3), np.full(3, 11.0), np.array([0, 0, 1]), np.array([100.0, 100.0]),
                np.array([10.0, 0.0]), 0.0, 3600.0, 1.0, 1.0)
    p, info = case.run()
    np.testing.assert_allclose(p, [5.0, 5.0, 0.0])
    np.testing.assert_allclose(info.pv_used_kw, [10.0, 0.0])
    assert info.grid_kw == pytest.approx(0.0)


def test_site_capacity_holds_back_grid_charging_at_that_site() -> None:
    # equal EVs at two sites, the budget would give each 10 kW, site 0 can take only 4 kW in
    # total: it gets 2 + 2 and the budget it could not take goes to site 1 (up to the EVs' max)
    case = Case(np.full(4, 30.0), np.full(4, 8 * 3600.0), np.full(4, 11.0), np.zeros(4),
                np.full(4, 11.0), np.array([0, 0, 1, 1]), np.array([4.0, 100.0]),
                np.zeros(2), 40.0, 3600.0, 1.0, 1.0)
    p, info = case.run()
    np.testing.assert_allclose(p, [2.0, 2.0, 11.0, 11.0])
    assert info.grid_kw == pytest.approx(26.0)


@pytest.mark.parametrize(("budget", "expected"), [(20.0, [5.0, 5.0, 3.0, 3.0, 7.0, 7.0]),
                                                  (30.0, [6.0, 6.0, 3.0, 3.0, 11.0, 11.0])])
def test_pv_share_and_connection_bound_sites_at_the_zone_level_by_hand(
        budget: float, expected: list[float]) -> None:
    # two equal EVs per site, lossless, 1-hour step, rate 11 kW. Site 0: 10 kW of PV, EVs with
    # laxity 7.1 h needing 10 kWh; site 1: a 6 kW connection, laxity 1.3 h; site 2: laxity
    # 3.3 h. PV gives site 0's EVs 5 kW each. The grid budget fills site 1 to its connection
    # (3 + 3), then site 2; with 20 kW site 2 takes the other 14 and site 0 stays at its PV
    # share (laxity 6.5 h after the step, above site 2's 2.9 h); with 30 kW site 2 is full
    # (22 kW) and the 2 kW left go to site 0 on top of its PV.
    case = Case(np.array([10.0, 10.0, 30.0, 30.0, 30.0, 30.0]),
                np.array([8.0, 8.0, 4.0, 4.0, 6.0, 6.0]) * 3600.0, np.full(6, 11.0),
                np.zeros(6), np.full(6, 11.0), np.array([0, 0, 1, 1, 2, 2]),
                np.array([100.0, 6.0, 100.0]), np.array([10.0, 0.0, 0.0]), budget, 3600.0,
                1.0, 1.0)
    for backend in ("auto", "numpy"):
        p, info = case.run(backend)
        np.testing.assert_allclose(p, expected, atol=1e-9)
        assert info.grid_kw == pytest.approx(budget)
        np.testing.assert_allclose(info.pv_used_kw, [10.0, 0.0, 0.0], atol=1e-9)


def test_empty_zone() -> None:
    p, info = allocate([], [], [], [], [], [10.0, 5.0], [3.0, 0.0], 100.0, 900.0, 0.95, 0.95)
    assert p.shape == (0,)
    assert info.mandatory_kw == info.grid_kw == info.discharge_kw == info.charge_kw == 0.0
    np.testing.assert_array_equal(info.site_p_kw, [0.0, 0.0])
    np.testing.assert_array_equal(info.pv_used_kw, [0.0, 0.0])
    assert info.n_infeasible == info.n_cap_limited == 0
    p, info = allocate([], [], [], [], [], [], [], -5.0, 900.0, 0.95, 0.95)
    assert p.shape == (0,) and info.site_p_kw.shape == (0,)


def test_inputs_are_left_alone_and_lists_work() -> None:
    case = random_zone(200, 5, 300.0, seed=5)
    before = [a.copy() for a in (case.need_kwh, case.t_dep_s, case.p_max_kw, case.p_min_kw,
                                 case.site, case.site_cap_kw, case.site_pv_kw)]
    p, _ = case.run()
    for a, b in zip(before, (case.need_kwh, case.t_dep_s, case.p_max_kw, case.p_min_kw,
                             case.site, case.site_cap_kw, case.site_pv_kw)):
        np.testing.assert_array_equal(a, b)
    p_list, _ = allocate(case.need_kwh.tolist(), case.t_dep_s.tolist(), case.p_max_kw.tolist(),
                         case.p_min_kw.tolist(), case.site.astype(np.int32),
                         case.site_cap_kw.tolist(), case.site_pv_kw.tolist(), 300.0, 900.0,
                         0.95, 0.95)
    np.testing.assert_array_equal(p, p_list)
