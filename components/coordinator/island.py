"""Island mode of the SDG coordinator: keep the zone on its grid-forming battery.

While the upstream grid is out, a grid-forming battery is the island's slack: it supplies (or
absorbs) whatever the rest of the island does not balance, within its power and energy. When
the island asks more of it, it trips and the whole island goes dark for the step, critical
loads included. So in island mode the coordinator keeps the island's predicted net load within
the battery's limits, less a safety margin:

- **Net load above what the battery can supply** (a deficit), in this order: V2G EVs with
  slack discharge (as far as their departure needs allow, :func:`.core.discharge_floor_kw`);
  the grid sheds its own (background) loads, non-household first and households last
  (``shed_background_share``, applied in the same step); with
  ``island.v2g_beyond_departure``, V2G EVs then discharge down to their users' minimum state of
  charge, below their departure needs, because the critical load comes first. For the next
  step the factories shed non-critical load (deferrable first), which takes the place of
  background shedding (factory shedding acts one step late, so it is planned on a forecast).
  Critical factory load is never shed: it is lost only when the island collapses.
- **Net generation beyond what the battery can absorb** (a surplus): plugged EVs charge from
  it; PV is curtailed from the next step.
- EVs never charge from the battery: EV charging stops except from PV the battery cannot take.

Forecast: the background loads and generation and the network losses of the step are those
of the last step (persistence); PV and factory power of the step are known (they are measured
before the coordinator decides); the PV of the next step is the available PV of this step
scaled by the sun's elevation. The margin kept below the limits is ``margin_kw`` plus
``load_margin_share`` of the background load and generation left supplied plus
``pv_margin_share`` of the PV output. The battery's discharge is further held to the energy it
has left spread over the rest of the outage, so that it lasts to the end.

Timing: with ``island.use_schedule`` the coordinator uses the grid operator's announced outage
schedule (a planned outage, or one whose end the operator announces): it knows one step ahead
when the island forms and ends, prepares curtailment and factory shedding for the first island
step, and releases them for the first step back on the grid. Without it, it reacts to the grid's
telemetry (``islanded_next``: whether the step it decides is islanded, known from the grid's
schedule after the previous step), so in the first island step only EV power and background
shedding act, and the outage is assumed to last ``assumed_outage_h``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from components.coordinator.config import CoordinatorConfig, IslandConfig
from components.coordinator.core import PluggedEVs, ZoneLayout, discharge_floor_kw
from components.coordinator.forecast import sin_elevation

N_SHED_CLASSES = 2
"""Background shedding classes of the grid, in the order they are shed: non-household, then
household loads (``components.grid.model.SHED_CLASSES``)."""

_EPS_KW = 1e-6

GRID_TELEMETRY = ("islanded", "island_held", "islanded_next", "gfm_demand_kw",
                  "gfm_headroom_kw", "gfm_absorb_headroom_kw", "gfm_e_kwh", "gfm_supply_kw",
                  "background_class_kw", "background_load_shed_kw", "background_storage_kw",
                  "background_gen_kw", "background_gen_unserved_kw", "losses_kw")
"""Grid outputs island mode reads (the grid's state after the previous step)."""
_TELEMETRY_KEYS = frozenset(GRID_TELEMETRY)


@dataclass(frozen=True)
class IslandTelemetry:
    """What the grid reported after the previous step, as island mode needs it."""

    islanded_now: bool
    """The step being decided is islanded (the grid's schedule for it)."""
    held_last: bool
    """The previous step was islanded and the battery held the island."""
    islanded_last: bool
    supply_max_kw: float
    """Discharge power the battery can hold over the step being decided. [kW]"""
    absorb_max_kw: float
    """Charge power the battery can take over the step being decided. [kW]"""
    e_kwh: float
    """Energy stored in the battery. [kWh]"""
    gfm_supply_kw: float
    background_class_kw: np.ndarray
    """What each background shedding class asked in the previous step. [kW]"""
    background_shed_kw: float
    background_other_kw: float
    """Background storage less background generation asked in the previous step (load
    convention). [kW]"""
    losses_kw: float

    @classmethod
    def from_grid(cls, grid: dict[str, Any] | None) -> IslandTelemetry | None:
        """From the grid's outputs (None when they are not connected)."""
        if grid is None or not _TELEMETRY_KEYS <= grid.keys() \
                or any(grid[a] is None for a in GRID_TELEMETRY):
            return None
        demand = float(grid["gfm_demand_kw"])
        classes = np.zeros(N_SHED_CLASSES)
        got = np.asarray(grid["background_class_kw"], dtype=float).ravel()
        classes[:min(got.size, N_SHED_CLASSES)] = got[:N_SHED_CLASSES]
        return cls(
            islanded_now=bool(grid["islanded_next"]),
            held_last=bool(grid["island_held"]),
            islanded_last=bool(grid["islanded"]),
            supply_max_kw=max(float(grid["gfm_headroom_kw"]) + demand, 0.0),
            absorb_max_kw=max(float(grid["gfm_absorb_headroom_kw"]) - demand, 0.0),
            e_kwh=float(grid["gfm_e_kwh"]),
            gfm_supply_kw=float(grid["gfm_supply_kw"]),
            background_class_kw=classes,
            background_shed_kw=float(grid["background_load_shed_kw"]),
            background_other_kw=float(grid["background_storage_kw"])
            - float(grid["background_gen_kw"]) - float(grid["background_gen_unserved_kw"]),
            losses_kw=float(grid["losses_kw"]),
        )


@dataclass
class IslandDecision:
    """Island mode's set-points: EVs and background shedding for this step, PV and factories
    for the next one (None: leave the normal strategy's)."""

    p_kw: np.ndarray | None
    shed_background_share: np.ndarray
    shed_kw: np.ndarray | None
    curtail_kw: np.ndarray | None
    info: dict[str, float]


class IslandController:
    """Balances the island on the grid-forming battery (see the module docstring).

    Parameters
    ----------
    cfg : CoordinatorConfig
        The coordinator section (``island`` and the V2G reserve rules).
    zone : ZoneLayout
    start : Timestamp
        Start of step 0 (tz-aware).
    step_s : int
        Step length. [s]
    n_steps : int
    outage : array of bool, optional
        The announced outage schedule, one flag per step (used with ``island.use_schedule``).
    grid_forming : dict, optional
        ``e_kwh``, ``soc_min`` and ``efficiency`` of the grid-forming battery, for its energy
        budget; without it the budget is not applied.
    """

    def __init__(self, cfg: CoordinatorConfig, zone: ZoneLayout, start: pd.Timestamp,
                 step_s: int, n_steps: int, outage: np.ndarray | None = None,
                 grid_forming: dict[str, Any] | None = None) -> None:
        self.ccfg = cfg
        self.cfg: IslandConfig = cfg.island
        self.zone = zone
        self.step_s = int(step_s)
        self.dt_h = self.step_s / 3600.0
        self.n_steps = int(n_steps)
        self.schedule = None
        if outage is not None and self.cfg.use_schedule:
            self.schedule = np.asarray(outage, dtype=bool).ravel()
            if self.schedule.size != self.n_steps:
                raise ValueError(f"outage: need {self.n_steps} flags, one per step, got "
                                 f"{self.schedule.size}")
        self.gfm = dict(grid_forming) if grid_forming else None
        mid = pd.Timestamp(start) + pd.to_timedelta(
            (np.arange(self.n_steps + 1) + 0.5) * self.step_s, unit="s")
        self.sun = np.maximum(sin_elevation(mid, zone.latitude_deg, zone.longitude_deg), 0.0)
        self.losses_kw = 0.0
        self.island_start: int | None = None

    # -- when ------------------------------------------------------------------------------

    def islanded(self, k: int, tel: IslandTelemetry | None) -> tuple[bool, bool]:
        """Whether step ``k`` and step ``k + 1`` are (expected to be) islanded."""
        if self.schedule is not None:
            nxt = bool(self.schedule[k + 1]) if k + 1 < self.n_steps else False
            return bool(self.schedule[k]), nxt
        now = tel is not None and tel.islanded_now
        return now, now

    def remaining_h(self, k: int) -> float:
        """Hours of outage left from the start of step ``k`` (at least one step). [h]"""
        if self.schedule is not None:
            rest = self.schedule[k:]
            n = int(np.argmin(rest)) if not rest.all() else rest.size
            return max(n, 1) * self.dt_h
        elapsed = 0 if self.island_start is None else k - self.island_start
        return max(self.cfg.assumed_outage_h - elapsed * self.dt_h, self.dt_h)

    # -- how -------------------------------------------------------------------------------

    def supply_limit_kw(self, k: int, tel: IslandTelemetry) -> float:
        """Discharge the battery may give this step: its power and one-step energy limit,
        and its energy left spread over the rest of the outage. [kW]"""
        limit = tel.supply_max_kw
        if self.gfm is not None:
            eta = float(np.sqrt(self.gfm.get("efficiency", 1.0)))
            floor_kwh = float(self.gfm.get("soc_min", 0.0)) * float(self.gfm["e_kwh"])
            left_kwh = max(tel.e_kwh - floor_kwh, 0.0) * eta
            limit = min(limit, left_kwh / self.remaining_h(k))
        return limit

    def margin_kw(self, bg_supplied_kw: float, bg_other_kw: float, pv_kw: float) -> float:
        cfg = self.cfg
        return (cfg.margin_kw + cfg.load_margin_share * (max(bg_supplied_kw, 0.0)
                                                         + abs(bg_other_kw))
                + cfg.pv_margin_share * max(pv_kw, 0.0))

    def when(self, k: int, tel: IslandTelemetry | None) -> tuple[bool, bool] | None:
        """Whether step ``k`` and step ``k + 1`` are islanded (:meth:`islanded`), as
        :meth:`decide` needs it; None when island mode leaves step ``k`` to the normal strategy
        (neither is, or the grid's telemetry is missing). Asked once per step: it keeps track of
        when the island formed."""
        now, nxt = self.islanded(k, tel)
        if not now:
            self.island_start = None
        elif self.island_start is None:
            self.island_start = k
        if tel is None or not (now or nxt):
            return None
        return now, nxt

    def decide(self, k: int, when: tuple[bool, bool], ev: PluggedEVs, pv_kw: np.ndarray,
               pv_avail_kw: np.ndarray, factory_p_kw: np.ndarray,
               factory_critical_kw: np.ndarray, factory_deferrable_kw: np.ndarray,
               factory_shed_last_kw: np.ndarray, tel: IslandTelemetry) -> IslandDecision:
        """Island mode's set-points for step ``k``, where :meth:`when` gave ``when``."""
        now, nxt = when
        if not tel.islanded_last or tel.held_last:
            self.losses_kw = tel.losses_kw  # the last losses of a supplied network
        bg_load = float(tel.background_class_kw.sum())
        other = tel.background_other_kw
        fac = float(factory_p_kw.sum())
        pv = float(pv_kw.sum())
        limit = self.supply_limit_kw(k, tel)
        info = {"island_mode": float(now), "gfm_supply_limit_kw": limit}
        decision = IslandDecision(None, np.zeros(N_SHED_CLASSES), None, None, info)
        slack_floor = discharge_floor_kw(ev, self.ccfg, self.step_s, self.zone.eta_ch,
                                         self.zone.eta_dis) if ev.n else np.zeros(0)
        if now:
            self._balance_now(decision, ev, slack_floor, bg_load, other, fac, pv, limit,
                              tel.absorb_max_kw, tel.background_class_kw)
        if nxt:
            self._plan_next(k, decision, slack_floor, bg_load, other, pv_avail_kw,
                            factory_p_kw, factory_critical_kw, factory_deferrable_kw,
                            factory_shed_last_kw, limit, tel.absorb_max_kw)
        return decision

    def band_kw(self, limit: float, absorb: float, margin: float) -> tuple[float, float]:
        """Safe range of the battery's power (positive discharging): the unit's limits less
        the margin on both sides; their midpoint when the margin leaves no room. [kW]"""
        lo, hi = -absorb + margin, limit - margin
        if lo > hi:
            lo = hi = 0.5 * (limit - absorb)
        return lo, hi

    def _balance_now(self, d: IslandDecision, ev: PluggedEVs, slack_floor: np.ndarray,
                     bg_load: float, other: float, fac: float, pv: float, limit: float,
                     absorb: float, classes: np.ndarray) -> None:
        """EV powers and background shedding of this step.

        The island's net load without EVs and shedding is held within the safe band
        (:meth:`band_kw`); the margin shrinks with the background load shed, so the band is
        found again once shedding is known.
        """
        net = bg_load + other + self.losses_kw + fac - pv  # without EVs and shedding
        share = np.zeros(N_SHED_CLASSES)
        for _ in range(3):
            supplied = float(((1.0 - share) * classes).sum())
            lo, hi = self.band_kw(limit, absorb, self.margin_kw(supplied, other, pv))
            p, share, deficit = self._meet(ev, slack_floor, net, lo, hi, classes)
        d.p_kw = p
        d.shed_background_share = share
        d.info.update(island_net_kw=net, island_deficit_kw=deficit, island_band_lo_kw=lo,
                      island_band_hi_kw=hi)

    def _meet(self, ev: PluggedEVs, slack_floor: np.ndarray, net: float, lo: float, hi: float,
              classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """EV powers, background shedding shares and the deficit left to bring ``net`` into
        ``[lo, hi]``."""
        p = np.zeros(ev.n)
        share = np.zeros(N_SHED_CLASSES)
        if net < lo:  # PV the battery cannot absorb goes to the EVs
            room = np.maximum(ev.p_max_kw, 0.0)
            if room.sum() > _EPS_KW:
                p = room * min((lo - net) / room.sum(), 1.0)
            return p, share, 0.0
        deficit = net - hi
        if deficit <= 0:
            return p, share, 0.0
        slack = float(-slack_floor.sum())
        if slack > _EPS_KW:  # 1. V2G within the departure needs
            use = min(deficit, slack)
            p = slack_floor * (use / slack)
            deficit -= use
        for c in range(N_SHED_CLASSES):  # 2. background loads by priority
            if deficit > 0 and classes[c] > _EPS_KW:
                x = min(classes[c], deficit)
                share[c] = x / classes[c]
                deficit -= x
        if deficit > 0 and self.cfg.v2g_beyond_departure and ev.n:  # 3. critical load first
            room = np.minimum(ev.p_min_kw - p, 0.0)
            if -room.sum() > _EPS_KW:
                f = min(deficit / -room.sum(), 1.0)
                p = p + room * f
                deficit += float(room.sum()) * f
        return p, np.clip(share, 0.0, 1.0), max(deficit, 0.0)

    def _plan_next(self, k: int, d: IslandDecision, slack_floor: np.ndarray, bg_load: float,
                   other: float, pv_avail_kw: np.ndarray, factory_p_kw: np.ndarray,
                   critical_kw: np.ndarray, deferrable_kw: np.ndarray,
                   shed_last_kw: np.ndarray, limit: float, absorb: float) -> None:
        """Factory shedding and PV curtailment for step ``k + 1``.

        The factories shed (deferrable load first) what the forecast net load of the next step
        puts above the safe band after V2G within departure needs, but never so much that it
        falls below the band; background shedding then closes what remains in that step. PV
        is curtailed by what the forecast net load, PV on the high side, puts below the band.
        """
        zone, cfg = self.zone, self.cfg
        ratio = self.sun[k + 1] / self.sun[k] if self.sun[k] > 1e-3 else 1.0
        pv_next = np.maximum(pv_avail_kw, 0.0) * min(ratio, 1.5)
        pv_sum = float(pv_next.sum())
        # what the factories would draw unshed: at most this step's power plus what they were
        # asked to shed (a factory sheds less only when nothing non-critical is left)
        unshed = factory_p_kw + np.maximum(shed_last_kw, 0.0)
        noncrit = np.maximum(unshed - critical_kw, 0.0)
        net = bg_load + other + self.losses_kw + float(unshed.sum()) - pv_sum
        lo, hi = self.band_kw(limit, absorb, self.margin_kw(bg_load, other, pv_sum))
        slack = float(-slack_floor.sum())
        want = min(max(net - slack - hi, 0.0), max(net - lo, 0.0), float(noncrit.sum()))
        shed = np.zeros(zone.n_factories)
        if want > _EPS_KW:
            first = np.minimum(np.maximum(deferrable_kw + shed_last_kw, 0.0), noncrit)
            x1 = min(want, float(first.sum()))
            if first.sum() > _EPS_KW:
                shed += first * (x1 / first.sum())
            rest = noncrit - shed
            if want - x1 > _EPS_KW and rest.sum() > _EPS_KW:
                shed += rest * min((want - x1) / rest.sum(), 1.0)
        d.shed_kw = shed
        limit_kw = zone.plant_inverter_kw.copy()
        excess = lo - (net - want - cfg.pv_margin_share * pv_sum)
        if excess > 0 and pv_sum > _EPS_KW:
            pv_high = pv_next * (1.0 + cfg.pv_margin_share)
            cut = min(excess / float(pv_high.sum()), 1.0)
            limit_kw = np.minimum(limit_kw, pv_high * (1.0 - cut))
        d.curtail_kw = limit_kw
        d.info["island_next_shed_kw"] = want
