"""Dispatch strategies of the SDG coordinator and their registry.

Each strategy turns a :class:`~components.coordinator.core.Snapshot` into
:class:`~components.coordinator.core.Setpoints`. The fast ones share one step's power among the
plugged EVs with :func:`ext.dispatch_api.allocate` (least laxity first, water-filling), so every
EV still reaches its target by departure where that is feasible: it always gets its *mandatory*
power, the least it must take now to finish in time at full power later. An EV's target
(``departure_target``) is by default full, as it would leave uncontrolled: the strategies choose
when it charges, not how much, so no user is worse off; alternatively its user's need (plus
``need_margin``, and at least the energy V2G took from it during the stay), or full only when
leaving in the morning.

``uncontrolled``
    The fleet's own behaviour: every EV charges at its maximum until full.
``pv_following``
    Local PV first (same bus, then the zone pool), up to each EV's target and then, with
    ``charge_pv_to_full``, beyond it up to full; grid energy only in the off-peak periods,
    toward the targets of the EVs leaving in the morning (less the share of the PV forecast
    before they leave), spread evenly over the window; mandatory power at any time.
``v2g_peak_shaving``
    ``pv_following``, but the zone's import is held below a threshold: charging beyond the
    mandatory power is cut when it would push the import above it, and V2G EVs with slack (most
    laxity first, keeping ``v2g_reserve_h``) discharge to shave what the base load puts above
    it; where the import has room below it, EVs charge toward their targets spread evenly over
    their stay, so that little is left for the mandatory power at the end of it. The
    threshold is ``peak_threshold_kw`` or, adaptively, the highest of: the highest import
    already incurred in the run (shaving below a peak on record cannot lower the run's peak,
    only cost energy), the level the plugged V2G energy can hold the forecast import to
    over ``v2g_horizon_h`` (energy is kept for the top of the coming peak) and the level under
    which the planned charging fits. The import is held a margin below it because the part of
    the import the coordinator does not observe is only known from the previous step: a
    quantile of the shortfalls of its estimate so far (:class:`.forecast.ForecastErrors`).
    Charging beyond the mandatory power is deferred below a wider margin (a higher quantile),
    which costs no energy; V2G discharges down to the wider margin as far as its energy
    allows, the import of the window being the forecast plus its learned error at each lead,
    so that spare energy covers the rarer, larger jumps. Discharge is shared so that the V2G
    EVs keep their power for as long as their energy lasts. Factory peaks are part of the
    zone import; with ``factory_shedding`` the factories shed deferrable load (from the next
    step) when V2G cannot hold the threshold.
``grid_aware``
    ``v2g_peak_shaving``, then corrected to keep the predicted bus voltages within
    ``v_band_pu`` and line and transformer loading below ``loading_max_pct``. Prediction: the
    last power flow's state plus linear sensitivities (:mod:`.sensitivity`) times the change of
    the injections since that power flow. The smallest change of the sites' EV power that
    meets the limits is found by a small linear programme; the PV inverters' reactive power
    and, as the last resort, curtailment are set the same way for the next step.
``optimal``
    The rolling-horizon linear programme of :mod:`.optimal` (a reference, slow).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog
from scipy.special import ndtr

from components.coordinator.config import CoordinatorConfig
from components.coordinator.core import (
    FillWindow,
    Setpoints,
    Snapshot,
    Strategy,
    ZoneLayout,
    add_at,
    allocate_evs,
    discharge_floor_kw,
    dispatch,
    dispatch_kernel,
    distinct,
    offpeak_steps,
    retarget,
    site_sum,
)
from components.coordinator.forecast import MIN_SCORED, ForecastErrors
from components.coordinator.optimal import OptimalStrategy
from components.coordinator.tariffs import PERIODS
from ext.dispatch_api import TARGET_MODES, charge_error
from ext.dispatch_np import spread_budget_kw

_EPS_KW = 1e-6
_NO_FORECAST = np.zeros(0)
_SQRT_2PI = np.sqrt(2 * np.pi)


class Uncontrolled(Strategy):
    """No control: NaN set-points, every EV charges at its maximum until full."""

    def decide(self, snap: Snapshot) -> Setpoints:
        return Setpoints(p_kw=np.full(snap.ev.n, np.nan))


class PVFollowing(Strategy):
    """Local PV first, grid energy in off-peak periods, mandatory power always."""

    def __init__(self, cfg: CoordinatorConfig, zone: ZoneLayout, step_s: float) -> None:
        super().__init__(cfg, zone, step_s)
        self.offpeak = np.array([p in cfg.offpeak_periods for p in PERIODS])
        self.fill_window = FillWindow(self.offpeak, cfg.offpeak_fill_margin_h * 3600 / step_s)
        self._kernel = dispatch_kernel()
        self._target_mode = TARGET_MODES.index(cfg.departure_target)
        # the kernel's scratch, for the whole fleet plugged (grown where a forecast needs more)
        self._work = np.empty(self._kernel.charge_work_size(zone.n_ev, zone.n_sites,
                                                            zone.n_plants, 0))
        # the snapshot last planned and its rows: charging powers, planned needs and
        # departures, targets
        self._plan: tuple[Snapshot, np.ndarray] | None = None

    def decide(self, snap: Snapshot) -> Setpoints:
        return Setpoints(p_kw=self.charge(snap))

    def planned(self, snap: Snapshot) -> tuple[np.ndarray, np.ndarray]:
        """The plugged EVs' planned need [kWh] and departure [s] (:func:`.core.planned_need_kwh`,
        :func:`.core.planned_t_dep_s`)."""
        plan = self.plan(snap)
        return plan[1], plan[2]

    def targets(self, snap: Snapshot) -> np.ndarray:
        """Battery energy to plan for per EV [kWh]: the planned need
        (:func:`.core.planned_need_kwh`) or the room to full, as ``departure_target`` says
        (``morning_full``: full for the EVs leaving within the current or next off-peak
        window, or up to ``offpeak_fill_margin_h`` after it)."""
        return self.plan(snap)[3]

    def charge(self, snap: Snapshot) -> np.ndarray:
        """Charging powers (no discharge) of the plugged EVs for step ``k`` [kW].

        1. mandatory power (what each EV must take now to reach its target, :meth:`targets`,
           by departure at full power later) and PV up to the targets: a site's own bus
           first, then the zone pool, then the PV other sites' EVs do not need;
        2. PV left over, up to full (``charge_pv_to_full``), in the same order;
        3. in an off-peak period, grid energy toward the targets of the EVs leaving in the
           morning (within the current or next off-peak window or up to
           ``offpeak_fill_margin_h`` after it), less the share of the PV forecast before they
           leave, spread evenly over the window and done ``offpeak_fill_lead_h`` early.

        One call of the kernel ``charge_into`` (:mod:`ext.dispatch_np` describes it).
        """
        return self.plan(snap)[0]

    def plan(self, snap: Snapshot) -> np.ndarray:
        """Rows of the plugged EVs' charging powers, planned needs, planned departures and
        targets, worked out once per snapshot."""
        if self._plan is not None and self._plan[0] is snap:
            return self._plan[1]
        ev = snap.ev
        out = self.rows(snap.k, ev.need_kwh, ev.restore_kwh, ev.room_kwh, ev.t_dep_s,
                        ev.p_max_kw, ev.site, snap.pv_kw, snap.lookahead.period,
                        snap.lookahead.pv_kw)
        self._plan = (snap, out)
        return out

    def rows(self, k: int, need_kwh: np.ndarray, restore_kwh: np.ndarray, room_kwh: np.ndarray,
             t_dep_s: np.ndarray, p_max_kw: np.ndarray, site: np.ndarray, pv_kw: np.ndarray,
             period: np.ndarray, pv_forecast_kw: Callable[[int], np.ndarray]) -> np.ndarray:
        """:meth:`plan` of step ``k`` from the plugged EVs' arrays (as in
        :class:`~.core.PluggedEVs`), the PV generation per plant [kW] and the look-ahead's
        ``period`` and ``pv_kw`` (:class:`~.core.Lookahead`): rows (4, n) of charging powers
        [kW], planned needs [kWh], planned departures [s] and targets [kWh]."""
        zone, cfg = self.zone, self.cfg
        out = np.empty((4, need_kwh.size))  # the kernel writes every row
        if need_kwh.size:
            n_off = offpeak_steps(period, self.offpeak)
            # which departures count as "in the morning", asked where the targets or the fill
            # need them (the window remembers the last one)
            window = None
            if cfg.departure_target == "morning_full" \
                    or (cfg.departure_target == "full" and n_off):
                window = self.fill_window.steps(k, period)
            lo, hi = (np.inf, -np.inf) if window is None else window
            # the fill reads the forecast up to the departures in the window at most
            forecast = (np.asarray(pv_forecast_kw(math.ceil(hi) + 1), dtype=float)
                        if n_off and window is not None else _NO_FORECAST)
            n_work = self._kernel.charge_work_size(need_kwh.size, zone.n_sites, pv_kw.size,
                                                   forecast.size)
            if self._work.size < n_work:
                self._work = np.empty(n_work)
            code, bad = self._kernel.charge_into(
                need_kwh, restore_kwh, room_kwh, t_dep_s, p_max_kw, site,
                zone.site_charge_kw, pv_kw, *zone.pv_groups, forecast, self.step_s,
                zone.eta_ch, zone.eta_dis, cfg.need_margin, cfg.departure_margin_s,
                self._target_mode, cfg.charge_pv_to_full, lo, hi, n_off * self.step_s,
                cfg.offpeak_fill_lead_h, out, self._work)
            if code:
                raise charge_error(code, bad, {
                    "need_kwh": need_kwh, "restore_kwh": restore_kwh, "room_kwh": room_kwh,
                    "t_dep_s": t_dep_s, "p_max_kw": p_max_kw, "site": site,
                    "site_cap_kw": zone.site_charge_kw, "pv_kw": pv_kw,
                    "pv_forecast_kw": forecast})
        return out


class V2GPeakShaving(PVFollowing):
    """``pv_following`` under a zone import threshold, with V2G discharge above it."""

    def __init__(self, cfg: CoordinatorConfig, zone: ZoneLayout, step_s: float) -> None:
        super().__init__(cfg, zone, step_s)
        self.n_horizon = round(cfg.v2g_horizon_h * 3600.0 / step_s)
        self.errors = ForecastErrors(max(self.n_horizon, 1))
        self._v2g_energy: tuple[Snapshot, int, float] | None = None

    def decide(self, snap: Snapshot) -> Setpoints:
        forecast = self.base_forecast(snap)
        self.errors.observe(snap.k, snap.base_import_kw,
                            float(snap.factory_p_kw.sum() - snap.pv_kw.sum()), forecast)
        p = self.charge(snap)
        base = snap.base_import_kw
        if not np.isfinite(base) or snap.ev.n == 0:
            return Setpoints(p_kw=p)
        margin = self.margin(snap)
        threshold = self.threshold(snap, margin, forecast)
        sp = Setpoints(p_kw=p, peak_threshold_kw=threshold)
        # charging is deferred below the widest margin, V2G discharges down to the margin
        # its energy affords
        cut, held = self.widest_margin(margin), self.hold_margin(snap, threshold, margin,
                                                                 forecast)
        target = threshold - cut - base  # net EV power the threshold allows
        if p.sum() > target + _EPS_KW:
            sp.p_kw = self.hold(snap, p, target, threshold - held - base)
        elif target > p.sum() + _EPS_KW:
            sp.p_kw = p + self.precharge(snap, p, target - p.sum())
        excess = base + sp.p_kw.sum() - threshold
        if self.cfg.factory_shedding and excess > _EPS_KW:
            sp.shed_kw = shed_request(snap.factory_deferrable_kw, excess)
        return sp

    def threshold(self, snap: Snapshot, margin: float = 0.0,
                  forecast: np.ndarray | None = None) -> float:
        """Import threshold of step ``k`` [kW].

        ``peak_threshold_kw`` if set; otherwise the highest of: the highest import so far (at
        the first step the base import: add nothing to it), the level the plugged EVs' V2G
        energy could hold the forecast import to over the next ``v2g_horizon_h`` (so that
        energy is kept for the top of the coming peak), and the level under which their
        planned charging fits in that window (plus the margin the import is held below it).
        """
        if self.cfg.peak_threshold_kw is not None:
            return float(self.cfg.peak_threshold_kw)
        record = snap.peak_import_kw if np.isfinite(snap.peak_import_kw) \
            else snap.base_import_kw
        forecast = self.base_forecast(snap) if forecast is None else forecast
        if forecast is None:
            return float(record)
        return float(max(record, self.discharge_level(snap, forecast),
                         self.charge_level(snap, forecast) + margin))

    def base_forecast(self, snap: Snapshot) -> np.ndarray | None:
        """Forecast import without EVs over ``v2g_horizon_h`` (None if none) [kW]."""
        n = self.n_horizon
        if n <= 0:
            return None
        forecast = np.asarray(snap.lookahead.base_import_kw(n), dtype=float)
        if forecast.size == 0 or not np.isfinite(forecast).all():
            return None
        return forecast

    def _window_h(self, snap: Snapshot, reserve_h: float, n: int) -> np.ndarray:
        """Hours each EV stays plugged within the window, less ``reserve_h`` [h]."""
        t_h = self.planned(snap)[1] / 3600.0 - reserve_h
        return np.clip(t_h, 0.0, n * snap.dt_h)

    def discharge_level(self, snap: Snapshot, forecast: np.ndarray) -> float:
        """Lowest level the plugged EVs' V2G energy can hold ``forecast`` to [kW].

        Water level ``L`` with ``sum_t max(forecast_t - L, 0) dt = E``, ``E`` the energy the
        V2G EVs plugged now can deliver in the window (:meth:`v2g_energy_kwh`).
        """
        return water_level(forecast, self.v2g_energy_kwh(snap, forecast.size), snap.dt_h)

    def v2g_energy_kwh(self, snap: Snapshot, n: int) -> float:
        """Energy the V2G EVs plugged now can deliver in the next ``n`` steps: above the
        users' minimum SoC, at their discharge rate, until their departure less the reserve
        (grid side) [kWh]. Worked out once per snapshot and window (the threshold and the
        hold margin both ask)."""
        if self._v2g_energy is not None and self._v2g_energy[0] is snap \
                and self._v2g_energy[1] == n:
            return self._v2g_energy[2]
        ev, zone = snap.ev, self.zone
        energy = ev.p_dis_rate_kw * self._window_h(snap, self.cfg.v2g_reserve_h, n)
        if zone.ev_capacity_kwh is not None and ev.n:
            above = (ev.soc - zone.min_soc_v2g) * zone.ev_capacity_kwh[ev.ids] * zone.eta_dis
            energy = np.minimum(energy, np.maximum(above, 0.0))
        self._v2g_energy = (snap, n, float(energy.sum()))
        return self._v2g_energy[2]

    def charge_level(self, snap: Snapshot, forecast: np.ndarray) -> float:
        """Lowest import level under which the plugged EVs' planned charging fits [kW].

        Water level from below: ``sum_t max(L - forecast_t, 0) dt = E``, ``E`` the grid
        energy the EVs plan to charge within the window (their need, or up to full for those
        the off-peak fill would fill), each at most its charge rate over its stay.
        """
        ev = snap.ev
        hours = self._window_h(snap, 0.0, forecast.size)
        target = self.targets(snap)
        energy = np.minimum(target / self.zone.eta_ch, np.maximum(ev.p_rate_kw, ev.p_max_kw)
                            * hours)
        return -water_level(-forecast, float(energy.sum()), snap.dt_h)

    def margin(self, snap: Snapshot) -> float:
        """How far below the threshold the predicted import is held [kW].

        A quantile (``peak_margin_quantile``) of the amounts by which the estimate of a
        step's import without EVs fell short of it (:class:`.forecast.ForecastErrors`; none
        before eight shortfalls have been seen): the part of that import the coordinator does
        not observe is known only from the previous step, so the margin pre-empts its jumps.
        """
        q = self.cfg.peak_margin_quantile
        if q <= 0 or self.errors.n_rises < MIN_SCORED:
            return 0.0
        return self.errors.rise_quantile_kw(q)

    def widest_margin(self, margin: float) -> float:
        """The widest margin below the threshold [kW]: the ``peak_margin_max_quantile`` of
        the estimate's shortfalls (``margin`` if that is not wider, the threshold is fixed or
        fewer than eight shortfalls have been seen).

        Charging beyond the mandatory power is deferred below it: a rarer, larger jump of the
        import then finds room without V2G, and deferring costs no energy (the threshold's
        charge level keeps room for the deferred charging later).
        """
        q = self.cfg.peak_margin_max_quantile
        if q <= 0 or self.cfg.peak_threshold_kw is not None \
                or self.errors.n_rises < MIN_SCORED:
            return margin
        return max(margin, self.errors.rise_quantile_kw(q))

    def hold_margin(self, snap: Snapshot, threshold: float, margin: float,
                    forecast: np.ndarray | None) -> float:
        """How far below ``threshold`` V2G holds the import this step [kW].

        At least ``margin``; wider, up to :meth:`widest_margin`, as far as the V2G energy at
        hand allows: down to the level that energy can hold the import of the window to in
        expectation, the import being the forecast plus a normal error with the root mean
        square error the forecast has had at each lead (:func:`expected_water_level`). Spare
        energy thus covers the rarer, larger jumps of the import, which would otherwise set a
        new peak, while energy the forecast may need later is kept.
        """
        widest = self.widest_margin(margin)
        if widest <= margin or forecast is None:
            return margin
        level = expected_water_level(forecast, self.errors.rms_kw(forecast.size),
                                     self.v2g_energy_kwh(snap, forecast.size), snap.dt_h)
        return float(np.clip(threshold - level, margin, widest))

    def precharge(self, snap: Snapshot, p: np.ndarray, headroom_kw: float) -> np.ndarray:
        """Charging toward the targets spread evenly over each EV's stay, in the headroom
        below the threshold [kW].

        Energy an EV would otherwise take as mandatory power just before it leaves (perhaps
        into the next peak) is taken now, where the import has room, least laxity first.
        """
        ev, zone = snap.ev, self.zone
        rest = np.maximum(self.targets(snap) - zone.eta_ch * p * snap.dt_h, 0.0)
        room = np.maximum(ev.p_max_kw - p, 0.0)
        if rest.sum() <= 1e-9 or room.sum() <= _EPS_KW:
            return np.zeros(ev.n)
        t_dep = self.planned(snap)[1]
        budget = min(spread_budget_kw(rest, t_dep, float(t_dep.max()), zone.eta_ch),
                     headroom_kw)
        cap_left = np.maximum(zone.site_charge_kw - site_sum(ev.site, p, zone.n_sites), 0.0)
        extra, _ = dispatch(rest, t_dep, room, np.zeros(ev.n), ev.site, cap_left,
                            np.zeros(zone.n_sites), budget, self.step_s, zone.eta_ch,
                            zone.eta_dis, p_rate_kw=np.maximum(ev.p_rate_kw, room))
        return extra

    def hold(self, snap: Snapshot, p: np.ndarray, target_kw: float,
             discharge_target_kw: float | None = None) -> np.ndarray:
        """EV powers summing to ``target_kw`` where possible [kW].

        Charging beyond the mandatory power is cut, in proportion, down to the target; below
        the mandatory power, V2G EVs with slack discharge the difference, or only down to
        ``discharge_target_kw`` if that is higher.
        """
        ev, zone, cfg = snap.ev, self.zone, self.cfg
        p_mand, _ = allocate_evs(ev, cfg, zone, self.step_s, np.zeros(zone.n_sites), 0.0,
                                 need_kwh=self.targets(snap), t_dep_s=self.planned(snap)[1])
        p_mand = np.minimum(p_mand, p)
        mandatory = float(p_mand.sum())
        if target_kw >= mandatory:
            extra = p - p_mand
            f = (target_kw - mandatory) / extra.sum() if extra.sum() > _EPS_KW else 0.0
            return p_mand + extra * min(f, 1.0)
        floor = target_kw if discharge_target_kw is None else max(target_kw,
                                                                  discharge_target_kw)
        if floor >= mandatory:
            return p_mand
        return p_mand + self.discharge(snap, p_mand, mandatory - floor)

    def discharge(self, snap: Snapshot, p_now: np.ndarray, want_kw: float) -> np.ndarray:
        """V2G discharge (negative powers) of up to ``want_kw`` by EVs with slack [kW].

        EVs that do not charge now, may discharge and can still meet their planned need (which
        includes returning the energy V2G takes) ``v2g_reserve_h`` before departing at the
        charge power they were last seen to take; the most laxity discharges first. When the
        batteries' capacities are known, the discharge is first shared so that the EVs keep
        their discharge power as long as their energy above the users' minimum SoC lasts
        (:func:`balanced_discharge_kw`): the fleet's V2G power is then still there for the
        top of a peak, rather than lost with the EVs that reached their minimum first. What
        that leaves (EVs without slack) goes by laxity alone.
        """
        ev, zone, cfg = snap.ev, self.zone, self.cfg
        need, t_dep = self.planned(snap)
        t_dep = t_dep - 3600.0 * cfg.v2g_reserve_h
        cand = np.flatnonzero((p_now <= _EPS_KW) & (ev.p_min_kw < -_EPS_KW)
                              & (t_dep > self.step_s))
        out = np.zeros(ev.n)
        if cand.size == 0 or want_kw <= 0:
            return out
        need, t_dep = need[cand], t_dep[cand]
        rate = np.maximum(ev.p_rate_kw[cand], _EPS_KW)
        limit = ev.p_min_kw[cand]
        d = np.zeros(cand.size)
        if zone.ev_capacity_kwh is not None:
            above = (ev.soc[cand] - zone.min_soc_v2g) * zone.ev_capacity_kwh[ev.ids[cand]] \
                * zone.eta_dis
            share = balanced_discharge_kw(np.maximum(above, 0.0), -limit, want_kw, snap.dt_h)
            d, _ = dispatch(need, t_dep, np.zeros(cand.size), -share, ev.site[cand],
                            zone.site_charge_kw, np.zeros(zone.n_sites), -want_kw,
                            self.step_s, zone.eta_ch, zone.eta_dis, p_rate_kw=rate)
            d = np.minimum(d, 0.0)
            limit = np.minimum(limit - d, 0.0)
            want_kw += float(d.sum())
        if want_kw > _EPS_KW:
            cap_left = np.maximum(zone.site_charge_kw + site_sum(ev.site[cand], d, zone.n_sites),
                                  0.0)
            more, _ = dispatch(need, t_dep, np.zeros(cand.size), limit, ev.site[cand],
                               cap_left, np.zeros(zone.n_sites), -want_kw, self.step_s,
                               zone.eta_ch, zone.eta_dis, p_rate_kw=rate)
            d = d + np.minimum(more, 0.0)
        out[cand] = d
        return out


def balanced_discharge_kw(energy_kwh: np.ndarray, d_max_kw: np.ndarray, want_kw: float,
                          dt_h: float) -> np.ndarray:
    """Discharge of each EV (positive) summing to ``want_kw`` (or all the EVs can give)
    that leaves them at full power for as long as possible [kW].

    EV ``i`` can discharge at ``d_max_kw[i]`` for ``r_i = energy_kwh[i] / d_max_kw[i]`` hours.
    The EVs with the most such hours give first, down to a common level ``tau``:
    ``x_i = d_i clip((r_i - tau) / dt_h, 0, 1)``. The fleet thus keeps its discharge power
    while its energy lasts instead of losing the EVs that would empty first.
    """
    d = np.maximum(np.asarray(d_max_kw, dtype=float), 0.0)
    e = np.maximum(np.asarray(energy_kwh, dtype=float), 0.0)
    if d.shape != e.shape:
        raise ValueError(f"balanced_discharge_kw: {e.size} energies for {d.size} powers")
    if not dt_h > 0:
        raise ValueError(f"balanced_discharge_kw: dt_h must be > 0, got {dt_h}")
    ok = d > _EPS_KW
    if not ok.any() or not want_kw > 0:
        return np.zeros(d.size)
    hours = np.where(ok, e / np.where(ok, d, 1.0), 0.0)

    def give(tau: float) -> np.ndarray:
        return np.where(ok, d * np.clip((hours - tau) / dt_h, 0.0, 1.0), 0.0)

    lo, hi = float(hours[ok].min()) - dt_h, float(hours[ok].max())
    if give(lo).sum() <= want_kw:
        return give(lo)  # every EV at its limit
    for _ in range(60):  # the sum falls with tau: halve the interval to well below a watt
        mid = 0.5 * (lo + hi)
        if give(mid).sum() > want_kw:
            lo = mid
        else:
            hi = mid
    return give(hi)


def water_level(profile_kw: np.ndarray, energy_kwh: float, dt_h: float) -> float:
    """Level ``L`` with ``sum(max(profile - L, 0)) * dt_h = energy_kwh`` [kW].

    The lowest cap that ``energy_kwh`` taken off the top of ``profile_kw`` achieves; the
    profile's minimum less what is left spread over all steps when the energy covers more.
    """
    top = np.sort(np.asarray(profile_kw, dtype=float))[::-1]
    if top.size == 0:
        return -np.inf
    # area above the i-th highest value, for levels at each value
    area = (np.cumsum(top) - top * np.arange(1, top.size + 1)) * dt_h
    i = int(np.searchsorted(area, energy_kwh, side="right"))  # levels below top[i-1] too dear
    if i >= top.size:
        return float(top[-1] - (energy_kwh - area[-1]) / (top.size * dt_h))
    # between top[i-1] and top[i]: i steps above the level
    return float(top[i - 1] - (energy_kwh - area[i - 1]) / (i * dt_h))


def expected_water_level(profile_kw: np.ndarray, sigma_kw: np.ndarray, energy_kwh: float,
                         dt_h: float) -> float:
    """Level ``L`` that ``energy_kwh`` holds an uncertain profile to in expectation [kW].

    Each step's value is normal with mean ``profile_kw`` and standard deviation ``sigma_kw``;
    ``L`` solves ``sum_t E[max(X_t - L, 0)] dt_h = energy_kwh``, with
    ``E[max(X - L, 0)] = s phi(z) + (m - L) Phi(z)``, ``z = (m - L) / s`` (the profile's own
    excess where ``s = 0``). Never below :func:`water_level` of the profile, to which it
    reduces without uncertainty.
    """
    m = np.asarray(profile_kw, dtype=float)
    s = np.maximum(np.asarray(sigma_kw, dtype=float), 0.0)
    if m.size == 0:
        return -np.inf
    lo = water_level(m, energy_kwh, dt_h)
    if not (s > 0).any():
        return lo
    sure: np.ndarray | None = s <= 0
    if sure.any():
        s_safe = np.where(sure, 1.0, s)
    else:  # every step uncertain: no step takes the profile's own excess
        sure, s_safe = None, s

    def energy(level: float) -> float:
        # evaluated some 50 times per call: no operation twice, none where nothing is sure
        d = m - level
        z = d / s_safe
        excess = s_safe * np.exp(-0.5 * z * z) / _SQRT_2PI + d * ndtr(z)
        if sure is not None:
            excess = np.where(sure, np.maximum(d, 0.0), excess)
        return float(np.add.reduce(excess) * dt_h)

    hi = float((m + 10.0 * s).max())
    if energy(lo) <= energy_kwh:
        return lo
    for _ in range(50):  # the expected excess falls with the level
        mid = 0.5 * (lo + hi)
        if energy(mid) > energy_kwh:
            lo = mid
        else:
            hi = mid
    return hi


def shed_request(deferrable_kw: np.ndarray, excess_kw: float) -> np.ndarray:
    """Share ``excess_kw`` of shedding among factories by their deferrable load [kW]."""
    total = float(deferrable_kw.sum())
    if total <= 0:
        return np.zeros_like(deferrable_kw)
    return deferrable_kw * min(1.0, excess_kw / total)


class GridAware(V2GPeakShaving):
    """``v2g_peak_shaving`` corrected to keep voltages and loading within limits."""

    #: objective weights: EV power moved [1/kW], reactive power [1/kvar], curtailment [1/kW],
    #: violation of a limit [1/pu] and [1/%] (large: limits first)
    W_EV, W_Q, W_CURTAIL, W_V, W_LOAD = 1.0, 0.01, 5.0, 1e7, 1e4

    def __init__(self, cfg: CoordinatorConfig, zone: ZoneLayout, step_s: float) -> None:
        super().__init__(cfg, zone, step_s)
        grid = zone.grid
        if grid is None:
            raise ValueError("strategy 'grid_aware' needs the grid's sensitivities (parameter "
                             "'grid' of the coordinator)")
        self.band = cfg.v_band_pu or grid.v_band_pu
        self.site_col = grid.columns(zone.site_bus)
        self.site_distinct = distinct(self.site_col)
        self.plant_col = grid.columns(zone.plant_bus)
        lo, hi = self.band
        self.v_lo, self.v_hi = lo + cfg.v_margin_pu, hi - cfg.v_margin_pu
        self.l_max = cfg.loading_max_pct - cfg.loading_margin_pct
        self.n_corrections = 0

    def decide(self, snap: Snapshot) -> Setpoints:
        sp = super().decide(snap)
        if snap.grid is None or snap.ctrl_p_kw is None or snap.prev_ctrl_p_kw is None:
            return sp
        v, line, trafo = self.predict(snap, sp.p_kw)
        if self.violated(v, line, trafo) and snap.ev.n:
            sp.p_kw = self.correct_evs(snap, sp.p_kw, v, line, trafo)
            self.n_corrections += 1
        if self.zone.n_plants:
            # the plants' set-points act from the next step: sized so that the uncorrected
            # plan would be within limits, they spare the EVs the correction next time
            sp.q_kvar, sp.curtail_kw = self.pv_setpoints(snap, v, line, trafo)
        return sp

    def predict(self, snap: Snapshot, p_ev: np.ndarray) -> tuple[np.ndarray, ...]:
        """Voltages [pu] and loadings [%] of step ``k`` with EV powers ``p_ev``, linearised."""
        grid, zone = self.zone.grid, self.zone
        dp = snap.ctrl_p_kw - snap.prev_ctrl_p_kw
        ev_site = site_sum(snap.ev.site, np.nan_to_num(p_ev, nan=0.0), zone.n_sites)
        add_at(dp, self.site_col, ev_site, self.site_distinct)
        dq = snap.ctrl_q_kvar - snap.prev_ctrl_q_kvar
        state = snap.grid
        return (state.vm_pu + grid.dv_dp @ dp + grid.dv_dq @ dq,
                state.line_loading_pct + grid.dline_dp @ dp + grid.dline_dq @ dq,
                state.trafo_loading_pct + grid.dtrafo_dp @ dp + grid.dtrafo_dq @ dq)

    def violated(self, v: np.ndarray, line: np.ndarray, trafo: np.ndarray) -> bool:
        ok = np.isfinite(v)
        return bool((v[ok] < self.v_lo).any() or (v[ok] > self.v_hi).any()
                    or (line > self.l_max).any() or (trafo > self.l_max).any())

    def _limit_rows(self, v: np.ndarray, line: np.ndarray, trafo: np.ndarray,
                    s_v: np.ndarray, s_line: np.ndarray, s_trafo: np.ndarray):
        """Constraint rows ``A x - slack <= b`` for the limits near binding."""
        ok = np.isfinite(v)
        near = 0.02  # pu / share of the limit: rows farther from their limit cannot bind
        rows, rhs, w = [], [], []
        hi = ok & (v > self.v_hi - near)
        lo = ok & (v < self.v_lo + near)
        rows += [s_v[hi], -s_v[lo]]
        rhs += [self.v_hi - v[hi], v[lo] - self.v_lo]
        w += [np.full(hi.sum() + lo.sum(), self.W_V)]
        for load, s in ((line, s_line), (trafo, s_trafo)):
            sel = load > self.l_max * (1 - near * 5)
            rows.append(s[sel])
            rhs.append(self.l_max - load[sel])
            w.append(np.full(sel.sum(), self.W_LOAD))
        return np.vstack(rows), np.concatenate(rhs), np.concatenate(w)

    def _solve(self, cost: np.ndarray, bounds: np.ndarray, a: np.ndarray, b: np.ndarray,
               w_slack: np.ndarray) -> np.ndarray | None:
        """min cost·x + w·s  s.t.  A x - s <= b,  bounds, s >= 0; x or None."""
        n, m = cost.size, b.size
        if m == 0:
            return np.zeros(n)
        a_ub = sp.hstack([sp.csr_matrix(a), -sp.identity(m, format="csr")], format="csr")
        c = np.concatenate([cost, w_slack])
        bnd = np.vstack([bounds, np.column_stack([np.zeros(m), np.full(m, np.inf)])])
        res = linprog(c, A_ub=a_ub, b_ub=b, bounds=bnd, method="highs")
        return res.x[:n] if res.status == 0 else None

    def correct_evs(self, snap: Snapshot, p: np.ndarray, v: np.ndarray, line: np.ndarray,
                    trafo: np.ndarray) -> np.ndarray:
        """Smallest change of the sites' EV power that meets the limits [kW per EV]."""
        ev, zone, grid = snap.ev, self.zone, self.zone.grid
        need, t_dep = self.planned(snap)
        p_mand, _ = allocate_evs(ev, self.cfg, zone, self.step_s, np.zeros(zone.n_sites), 0.0,
                                 need_kwh=need, t_dep_s=t_dep)
        floor = discharge_floor_kw(ev, self.cfg, self.step_s, zone.eta_ch, zone.eta_dis)
        lo = np.where(p_mand > _EPS_KW, p_mand, np.minimum(floor, p))
        hi = ev.p_max_kw
        now = site_sum(ev.site, p, zone.n_sites)
        down = site_sum(ev.site, lo, zone.n_sites) - now
        up = site_sum(ev.site, hi, zone.n_sites) - now
        # x = (raise, lower) of each site's power; both >= 0
        cols = self.site_col
        s_v = grid.dv_dp[:, cols]
        s_l = grid.dline_dp[:, cols]
        s_t = grid.dtrafo_dp[:, cols]
        a, b, w = self._limit_rows(v, line, trafo, s_v, s_l, s_t)
        a2 = np.hstack([a, -a])
        bounds = np.column_stack([np.zeros(2 * zone.n_sites),
                                  np.concatenate([np.maximum(up, 0), np.maximum(-down, 0)])])
        x = self._solve(np.full(2 * zone.n_sites, self.W_EV), bounds, a2, b, w)
        if x is None:
            return p
        delta = x[: zone.n_sites] - x[zone.n_sites:]
        return retarget(p, lo, hi, ev.site, now + delta)

    def pv_setpoints(self, snap: Snapshot, v: np.ndarray, line: np.ndarray, trafo: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """Reactive power and curtailment of the plants for step ``k + 1``."""
        zone, grid, cfg = self.zone, self.zone.grid, self.cfg
        q_now = snap.pv_q_kvar
        q_max = np.sqrt(np.maximum(zone.plant_inverter_kw ** 2 - snap.pv_avail_kw ** 2, 0.0))
        q_max = q_max if cfg.q_control else np.zeros(zone.n_plants)
        c_max = snap.pv_kw if cfg.curtailment else np.zeros(zone.n_plants)
        if not (q_now != 0).any() and not self.violated(v, line, trafo):
            return np.zeros(zone.n_plants), None
        # the state of step k+1 is taken as that of step k with the plants' q and curtailment
        # changed: x = (q_absorb, q_inject, curtail) per plant, q = q_absorb - q_inject
        cols = self.plant_col
        s_vq, s_vp = grid.dv_dq[:, cols], grid.dv_dp[:, cols]
        base_v = v - s_vq @ q_now
        base_line = line - grid.dline_dq[:, cols] @ q_now
        base_trafo = trafo - grid.dtrafo_dq[:, cols] @ q_now
        a_q, b, w = self._limit_rows(base_v, base_line, base_trafo, s_vq, grid.dline_dq[:, cols],
                                     grid.dtrafo_dq[:, cols])
        a_p, _, _ = self._limit_rows(base_v, base_line, base_trafo, s_vp, grid.dline_dp[:, cols],
                                     grid.dtrafo_dp[:, cols])
        a = np.hstack([a_q, -a_q, a_p])
        n = zone.n_plants
        cost = np.concatenate([np.full(2 * n, self.W_Q), np.full(n, self.W_CURTAIL)])
        bounds = np.column_stack([np.zeros(3 * n), np.concatenate([q_max, q_max, c_max])])
        x = self._solve(cost, bounds, a, b, w)
        if x is None:
            return np.zeros(n), None
        q = x[:n] - x[n:2 * n]
        curtail = x[2 * n:]
        limit = np.where(curtail > 1e-3, np.maximum(snap.pv_kw - curtail, 0.0),
                         zone.plant_inverter_kw)
        return q, (limit if (curtail > 1e-3).any() else None)


STRATEGIES: dict[str, type[Strategy]] = {
    "uncontrolled": Uncontrolled,
    "pv_following": PVFollowing,
    "v2g_peak_shaving": V2GPeakShaving,
    "grid_aware": GridAware,
    "optimal": OptimalStrategy,
}
"""Registry: ``coordinator.strategy`` -> strategy class."""
