"""The SDG coordinator of a zone, stepped at a fixed resolution (no mosaik here).

Each step :meth:`Coordinator.step` turns what the coordinator observes into a
:class:`~components.coordinator.core.Snapshot`, lets the configured strategy decide
(``pv_following`` on its own, outside island mode, plans straight from the plugged EVs' arrays,
to the same set-points) and keeps the little state it needs: the injections of the previous
step (to predict the zone import and, for ``grid_aware``, the grid state), the highest import
so far, the charge and discharge power each EV was last seen to take, the battery energy the
coordinator has added to or taken from each EV since it plugged in (V2G gives back what it
takes before the EV leaves), and the history behind the forecasts (:mod:`.forecast`).

Timing: step ``k`` covers ``[t_k, t_k + step_s)``. The inputs of :meth:`Coordinator.step` for
step ``k`` are the EVs plugged at ``t_k``, PV and factory power of step ``k`` and the grid state
after step ``k - 1``; the EV set-points returned apply to step ``k``, the PV and factory
set-points to step ``k + 1``. While the upstream grid is out (or, with an announced schedule,
one step before), island mode (:mod:`.island`) overrides the strategy's set-points and asks the
grid to shed background load in step ``k``. :meth:`Coordinator.settle` then settles step ``k``
(:mod:`.matching`): on the sites' metered powers once the fleet has made the step, or on the
set-points (within the EVs' own bounds; NaN = maximum).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from components.coordinator.config import CoordinatorConfig
from components.coordinator.core import (
    GridState,
    Lookahead,
    PluggedEVs,
    Prices,
    Setpoints,
    Snapshot,
    ZoneLayout,
    add_at,
    dispatch_kernel,
    distinct,
)
from components.coordinator.forecast import Forecaster
from components.coordinator.island import (
    N_SHED_CLASSES,
    IslandController,
    IslandDecision,
    IslandTelemetry,
)
from components.coordinator.matching import Matcher, Settlement, Transaction
from components.coordinator.strategies import STRATEGIES, PVFollowing

TOTALS = ("pv_to_ev_kw", "grid_to_ev_kw", "v2g_kw", "pv_export_kw", "pv_curtailed_kw",
          "cost_cny", "ev_user_revenue_cny", "grid_cost_cny", "pv_revenue_cny")
"""Per-step totals the coordinator reports (powers are means over the step)."""
SETTLEMENT_TOTALS = ("pv_to_ev_kw", "grid_to_ev_kw", "v2g_kw", "pv_export_kw", "cost_cny",
                     "ev_user_revenue_cny", "grid_cost_cny", "pv_revenue_cny")
"""The totals that come from the step's settlement (:func:`settlement_totals`)."""


@dataclass
class StepResult:
    """What one step produces: set-points and totals; the settlement totals, ``transactions``
    and ``settlement`` once the step is settled (:meth:`Coordinator.settle`)."""

    p_set_kw: np.ndarray
    curtail_kw: np.ndarray
    q_kvar_set: np.ndarray
    shed_kw: np.ndarray
    totals: dict[str, float]
    transactions: list[Transaction]
    peak_threshold_kw: float
    settlement: Settlement | None = None
    info: dict[str, float] = field(default_factory=dict)
    shed_background_share: np.ndarray = field(
        default_factory=lambda: np.zeros(N_SHED_CLASSES))
    """Share of the grid's background loads of each shedding class to shed this step. [-]"""
    island_mode: int = 0
    """1 when island mode set this step's EV power and background shedding."""
    n_controlled: int = 0
    """EVs given a finite set-point (in ``p_set_kw``)."""
    n_infinite: int = 0
    """Infinite values of ``p_set_kw`` (a strategy's error; NaN is allowed: uncontrolled)."""


class Coordinator:
    """Strategy, settlement and state of the SDG coordinator.

    Parameters
    ----------
    cfg : CoordinatorConfig
        The ``coordinator`` section.
    zone : ZoneLayout
        Sites, plants, factories, fleet parameters and (optional) grid sensitivities.
    start : str or Timestamp
        Start of step 0, tz-aware.
    step_s : int
        Step length [s].
    n_steps : int
        Steps of the run.
    outage : array of bool, optional
        The grid operator's announced outage schedule, one flag per step (island mode uses it
        with ``island.use_schedule``; see :mod:`.island`).
    grid_forming : dict, optional
        ``e_kwh``, ``soc_min``, ``efficiency`` of the zone's grid-forming battery.
    """

    def __init__(self, cfg: CoordinatorConfig, zone: ZoneLayout, start: str | pd.Timestamp,
                 step_s: int, n_steps: int, outage: np.ndarray | None = None,
                 grid_forming: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.zone = zone
        self.step_s = int(step_s)
        self.dt_h = self.step_s / 3600.0
        self.n_steps = int(n_steps)
        self.start = pd.Timestamp(start)
        if self.start.tzinfo is None:
            raise ValueError(f"start {start!r} needs a UTC offset or time zone")
        self.strategy = STRATEGIES[cfg.strategy](cfg, zone, self.step_s)
        # pv_following itself (no subclass) steps from the plugged EVs' rows without a snapshot
        # wherever island mode leaves the step to it
        self._follow = self.strategy if type(self.strategy) is PVFollowing else None
        self.horizon = max(1, round(cfg.optimal.horizon_h * 3600 / self.step_s))
        times = self.start + pd.to_timedelta(
            np.arange(self.n_steps + self.horizon) * self.step_s, unit="s")
        tariff = cfg.tariffs
        self.price_grid = tariff.price_cny_per_kwh(times)
        self.price_pv = tariff.pv_to_ev_price_cny_per_kwh(times)
        self.price_feed_in = tariff.pv_feed_in_price_cny_per_kwh(times)
        self.price_v2g = tariff.v2g_price_cny_per_kwh(times)
        self.period = tariff.period_code(times)
        # each step's prices as Python numbers, made once (they are immutable)
        self._step_prices = [
            Prices(*prices) for prices in zip(
                self.price_grid.tolist(), self.price_pv.tolist(), self.price_feed_in.tolist(),
                self.price_v2g.tolist(), self.period.tolist(), strict=True)]
        self.forecaster = Forecaster(self.start, self.step_s, self.n_steps, self.horizon,
                                     float(zone.plant_kwp.sum()), zone.latitude_deg,
                                     zone.longitude_deg)
        self.rate_kw = np.zeros(zone.n_ev)
        self.dis_rate_kw = np.zeros(zone.n_ev)
        self.delta_e_kwh = np.zeros(zone.n_ev)  # battery energy change since plug-in
        self.site_of = np.full(zone.n_ev, -1, dtype=np.int64)  # site at the previous step
        self._capacity_kwh = (np.zeros(0) if zone.ev_capacity_kwh is None
                              else np.ascontiguousarray(zone.ev_capacity_kwh, dtype=float))
        self._kernel = dispatch_kernel()  # ext.dispatch or its twin, chosen once
        grid = zone.grid
        n_ctrl = 0 if grid is None else grid.ctrl_buses.size
        self._site_col = None if grid is None else grid.columns(zone.site_bus)
        self._plant_col = None if grid is None else grid.columns(zone.plant_bus)
        self._factory_col = None if grid is None else grid.columns(zone.factory_bus)
        self._factory_distinct = distinct(self._factory_col)
        self._site_distinct = distinct(self._site_col)
        self.matcher = Matcher(zone.plant_bus, zone.site_bus, zone.plant_names, zone.site_names)
        self.prev_ctrl_p = np.zeros(n_ctrl)
        self.prev_ctrl_q = np.zeros(n_ctrl)
        self.prev_twin_kw = 0.0  # PV and factory injections of step k-1 (load convention)
        self.prev_ev_kw = 0.0
        self.peak_import_kw = -np.inf
        self.k = 0
        # island mode: every strategy but the fleet's own behaviour
        self.island = None
        if cfg.island.enabled and cfg.strategy != "uncontrolled":
            self.island = IslandController(cfg, zone, self.start, self.step_s, self.n_steps,
                                           outage, grid_forming)
        # the set-points of a step that neither limits nor sheds anything, shared by the results
        # of such steps (read-only)
        self._no_curtail = _read_only(zone.plant_inverter_kw.copy())
        self._no_q = _read_only(np.zeros(zone.n_plants))
        self._no_shed = _read_only(np.zeros(zone.n_factories))
        self._no_background_shed = _read_only(np.zeros(N_SHED_CLASSES))
        self.shared_setpoints = {"curtail_kw": self._no_curtail, "q_kvar_set": self._no_q,
                                 "shed_kw": self._no_shed,
                                 "shed_background_share": self._no_background_shed}
        """The read-only set-points above by the output they stand for."""
        self.factory_shed_kw = self._no_shed  # requested for the step now
        # the last step decided, for settle: k, PV per plant, prices, dispatched charging and
        # V2G per site [kW]
        self._to_settle: tuple[int, np.ndarray, Prices, np.ndarray, np.ndarray] | None = None

    # -- inputs ------------------------------------------------------------------------------

    def plugged(self, k: int, view: dict[str, Any] | None) -> PluggedEVs:
        """The EV fleet's ``plugged_*`` arrays as :class:`PluggedEVs` of step ``k``."""
        if view is None:
            return PluggedEVs.empty()
        ids, site, soc, v2g, rows = self._plugged_rows(k, view)
        need, t_dep, p_max, p_min, p_rate, p_dis_rate, restore, room = rows
        return PluggedEVs(
            ids=ids, site=site, soc=soc, need_kwh=need, t_dep_s=t_dep, p_max_kw=p_max,
            p_min_kw=p_min, v2g=v2g, p_rate_kw=p_rate, p_dis_rate_kw=p_dis_rate,
            restore_kwh=restore, room_kwh=room)

    def _plugged_rows(self, k: int, view: dict[str, Any]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The fleet's ``plugged_*`` arrays of step ``k``: ids, sites, state of charge, V2G
        flags and the other fields of :class:`PluggedEVs` as rows (8, n), ``need_kwh`` to
        ``room_kwh`` in field order."""
        ids = np.ascontiguousarray(view["plugged_ids"], dtype=np.int64)
        site = np.ascontiguousarray(view["plugged_site"], dtype=np.int64)
        soc = np.ascontiguousarray(view["plugged_soc"], dtype=float)
        v2g = np.ascontiguousarray(view["plugged_v2g"], dtype=bool)
        rows = np.empty((8, ids.size))
        # need, departure and power bounds as the fleet reports them (clamped); the rates
        # seen, the stays and the energy V2G took, kept per EV of the fleet
        code = self._kernel.plugged_into(
            ids, site, soc, np.ascontiguousarray(view["plugged_need_kwh"], dtype=float),
            np.ascontiguousarray(view["plugged_departure_s"], dtype=float),
            np.ascontiguousarray(view["plugged_p_max_kw"], dtype=float),
            np.ascontiguousarray(view["plugged_p_min_kw"], dtype=float), v2g.view(np.uint8),
            float(k * self.step_s), float(self.step_s), self.zone.site_point_kw,
            self._capacity_kwh, self.zone.soc_max, self.rate_kw, self.dis_rate_kw,
            self.delta_e_kwh, self.site_of, rows)
        if code == 1:
            raise ValueError(f"plugged_ids: EV index outside [0, {self.zone.n_ev})")
        if code == 2:
            raise ValueError(f"plugged_site: site index outside [0, {self.zone.n_sites})")
        return ids, site, soc, v2g, rows

    def prices(self, k: int) -> Prices:
        """The prices of step ``k``."""
        return self._step_prices[k]

    # -- the step ----------------------------------------------------------------------------

    def step(self, k: int, ev_view: dict[str, Any] | None = None,
             pv: dict[str, np.ndarray] | None = None,
             factories: dict[str, np.ndarray] | None = None,
             grid: dict[str, Any] | None = None) -> StepResult:
        """Decide and settle step ``k``.

        Parameters
        ----------
        ev_view : dict, optional
            ``plugged_*`` arrays of the EVs plugged at ``t_k``; None: no EV is known (all
            uncontrolled, nothing settled for EVs).
        pv : dict, optional
            ``p_avail_kw``, ``p_kw`` (load convention, generation negative) and ``q_kvar`` per
            plant for step ``k``.
        factories : dict, optional
            ``p_kw``, ``q_kvar``, ``deferrable_kw`` per factory for step ``k``.
        grid : dict, optional
            ``vm_pu``, ``line_loading_pct``, ``trafo_loading_pct``, ``import_kw`` after step
            ``k - 1`` (at ``k = 0``: the grid's state before any injection); for island mode
            also the grid's island telemetry (:data:`.island.GRID_TELEMETRY`).
        """
        if k != self.k:
            raise ValueError(f"Coordinator.step: expected step {self.k}, got {k}")
        if not 0 <= k < self.n_steps:
            raise ValueError(f"step {k} outside the run's {self.n_steps} steps")
        zone = self.zone
        pv_avail = _vector(pv, "p_avail_kw", zone.n_plants)
        pv_q = _vector(pv, "q_kvar", zone.n_plants)
        fac_p = _vector(factories, "p_kw", zone.n_factories)
        fac_q = _vector(factories, "q_kvar", zone.n_factories)
        fac_def = _vector(factories, "deferrable_kw", zone.n_factories)
        # PV generation (counted positive) and the totals, in one kernel call
        pv_kw = np.empty(zone.n_plants)
        pv_total_kw, fac_total_kw, pv_curtailed_kw = self._kernel.supply_into(
            _vector(pv, "p_kw", zone.n_plants), pv_avail, fac_p, pv_kw)
        twin_kw = fac_total_kw - pv_total_kw

        base = np.nan
        tel = IslandTelemetry.from_grid(grid)
        if grid is not None:
            # the zone's supply: from upstream, or in an island from the grid-forming battery
            # (with the background load shed to keep it added back)
            supply_kw = float(grid["import_kw"]) + (
                0.0 if tel is None else tel.gfm_supply_kw + tel.background_shed_kw)
            if k > 0:
                self.peak_import_kw = max(self.peak_import_kw, supply_kw)
                self.forecaster.observe_base(k - 1, supply_kw - self.prev_ev_kw)
            base = supply_kw - self.prev_ev_kw - self.prev_twin_kw + twin_kw
        self.forecaster.observe_pv(k, pv_total_kw)

        ctrl_p = ctrl_q = None
        if zone.grid is not None:
            # sums per control bus in device order, as numpy.add.at on zeros would add them
            n_ctrl = zone.grid.ctrl_buses.size
            ctrl_p = np.bincount(self._plant_col, weights=-pv_kw, minlength=n_ctrl)
            ctrl_q = np.bincount(self._plant_col, weights=pv_q, minlength=n_ctrl)
            add_at(ctrl_p, self._factory_col, fac_p, self._factory_distinct)
            add_at(ctrl_q, self._factory_col, fac_q, self._factory_distinct)

        h = self.horizon
        when = None if self.island is None else self.island.when(k, tel)
        sp = island = None
        if self._follow is not None and when is None and ev_view is not None:
            # pv_following on its own: its charging from the plugged EVs' rows, no snapshot
            ids, site, _, _, rows = self._plugged_rows(k, ev_view)
            p_max, p_min = rows[2], rows[3]
            p = self._follow.rows(
                k, rows[0], rows[6], rows[7], rows[1], p_max, site, pv_kw,
                self.period[k:k + h], lambda n: self.forecaster.pv_kw(k, n))[0]
        else:
            ev = self.plugged(k, ev_view)
            look = Lookahead(
                grid_price=self.price_grid[k:k + h], pv_price=self.price_pv[k:k + h],
                v2g_price=self.price_v2g[k:k + h], period=self.period[k:k + h],
                pv_kw=lambda n: self.forecaster.pv_kw(k, n),
                base_import_kw=lambda n: self.forecaster.base_kw(k, n, base),
            )
            state = None if grid is None else GridState(
                vm_pu=np.asarray(grid["vm_pu"], dtype=float),
                line_loading_pct=np.asarray(grid["line_loading_pct"], dtype=float),
                trafo_loading_pct=np.asarray(grid["trafo_loading_pct"], dtype=float),
                import_kw=supply_kw)
            snap = Snapshot(
                k=k, step_s=self.step_s, zone=zone, ev=ev, pv_avail_kw=pv_avail, pv_kw=pv_kw,
                pv_q_kvar=pv_q, factory_p_kw=fac_p, factory_deferrable_kw=fac_def, grid=state,
                base_import_kw=base, ctrl_p_kw=ctrl_p, ctrl_q_kvar=ctrl_q,
                prev_ctrl_p_kw=self.prev_ctrl_p if state is not None else None,
                prev_ctrl_q_kvar=self.prev_ctrl_q if state is not None else None,
                peak_import_kw=self.peak_import_kw,
                prices=self.prices(k),
                lookahead=look)
            sp = self.strategy.decide(snap)
            if when is not None:
                island = self.island.decide(
                    k, when, ev, pv_kw, pv_avail, fac_p,
                    _vector(factories, "critical_kw", zone.n_factories), fac_def,
                    self.factory_shed_kw, tel)
                _apply_island(sp, island)
            p = np.ascontiguousarray(sp.p_kw, dtype=float)
            if p.shape != (ev.n,):
                raise RuntimeError(f"strategy {self.cfg.strategy!r} returned {p.shape} powers "
                                   f"for {ev.n} plugged EVs")
            ids, site, p_max, p_min = ev.ids, ev.site, ev.p_max_kw, ev.p_min_kw
        # what the fleet will do (NaN = its maximum, everything within its bounds), per site,
        # and the energy it adds to each battery (state for the next step)
        p_done = np.empty(p.size)
        site_kw = np.empty((2, zone.n_sites))
        p_set = np.empty(zone.n_ev)
        self.prev_ev_kw, n_finite, n_infinite = self._kernel.done_into(
            p, p_min, p_max, ids, site, zone.eta_ch, zone.eta_dis, self.dt_h,
            self.delta_e_kwh, p_done, site_kw, p_set)
        charge_site, discharge_site = site_kw[0], site_kw[1]
        self.prev_twin_kw = twin_kw
        if ctrl_p is not None:
            self.prev_ctrl_p = ctrl_p.copy()
            add_at(self.prev_ctrl_p, self._site_col, charge_site - discharge_site,
                   self._site_distinct)
            self.prev_ctrl_q = ctrl_q.copy()
        self.k = k + 1

        totals = {"pv_curtailed_kw": pv_curtailed_kw}
        self._to_settle = (k, pv_kw, self._step_prices[k], charge_site, discharge_site)
        if sp is None:  # pv_following's own set-points: no limit, no shedding, no threshold
            self.factory_shed_kw = self._no_shed
            return StepResult(
                p_set_kw=p_set, curtail_kw=self._no_curtail, q_kvar_set=self._no_q,
                shed_kw=self._no_shed, totals=totals, transactions=[],
                peak_threshold_kw=np.nan, shed_background_share=self._no_background_shed,
                n_controlled=n_finite, n_infinite=n_infinite)
        if sp.shed_kw is None:
            shed_kw = self.factory_shed_kw = self._no_shed
        else:
            shed_kw = np.asarray(sp.shed_kw, dtype=float)
            self.factory_shed_kw = shed_kw.copy()
        return StepResult(
            p_set_kw=p_set,
            curtail_kw=(self._no_curtail if sp.curtail_kw is None
                        else np.asarray(sp.curtail_kw, dtype=float)),
            q_kvar_set=(self._no_q if sp.q_kvar is None
                        else np.asarray(sp.q_kvar, dtype=float)),
            shed_kw=shed_kw,
            totals=totals, transactions=[],
            peak_threshold_kw=float(sp.peak_threshold_kw), info=dict(sp.info),
            shed_background_share=(self._no_background_shed if island is None
                                   else island.shed_background_share),
            island_mode=int(island is not None and island.p_kw is not None),
            n_controlled=n_finite, n_infinite=n_infinite)

    def settle(self, k: int, charge_site_kw: np.ndarray | None = None,
               discharge_site_kw: np.ndarray | None = None) -> Settlement:
        """Settle step ``k``, the last step decided: what each PV plant sold to which site and to
        the grid, what the sites bought from the grid and fed back, at the step's prices.

        Without site powers the dispatch is settled (the set-points as the fleet will clip
        them), which is what the sites draw when every set-point arrives and is followed. Where
        one is lost or late on the channel, or clamped, the sites' metered mean powers of the
        step (``charge_site_kw``, ``discharge_site_kw`` per site, from the fleet once it has
        made the step) are what was delivered and paid.
        """
        if self._to_settle is None or self._to_settle[0] != k:
            last = None if self._to_settle is None else self._to_settle[0]
            raise ValueError(f"settle: step {k} is not the last step decided ({last})")
        _, pv_kw, prices, charge, discharge = self._to_settle
        if charge_site_kw is not None or discharge_site_kw is not None:
            metered = {"charge_kw": charge_site_kw, "discharge_kw": discharge_site_kw}
            charge = _vector(metered, "charge_kw", self.zone.n_sites)
            discharge = _vector(metered, "discharge_kw", self.zone.n_sites)
        # every array checked already (the PV and dispatch are the coordinator's own)
        return self.matcher.settle_arrays(pv_kw, charge, discharge, self.dt_h, prices)


def settlement_totals(settle: Settlement) -> dict[str, float]:
    """A step's settlement as the coordinator's per-step totals (:data:`SETTLEMENT_TOTALS`)
    [kW, CNY]."""
    return {
        "pv_to_ev_kw": settle.pv_to_ev_kw,
        "grid_to_ev_kw": settle.grid_to_ev_kw,
        "v2g_kw": settle.v2g_kw,
        "pv_export_kw": settle.pv_export_total_kw,
        "cost_cny": settle.cost_cny,
        "ev_user_revenue_cny": settle.ev_user_revenue_cny,
        "grid_cost_cny": settle.grid_cost_cny,
        "pv_revenue_cny": settle.pv_revenue_cny,
    }


def _apply_island(sp: Setpoints, island: IslandDecision) -> None:
    """Island mode's set-points replace the strategy's where it gives them."""
    if island.p_kw is not None:
        sp.p_kw = island.p_kw
    if island.shed_kw is not None:
        sp.shed_kw = island.shed_kw
    if island.curtail_kw is not None:
        sp.curtail_kw = island.curtail_kw
    sp.info = {**sp.info, **island.info}


def _read_only(values: np.ndarray) -> np.ndarray:
    """``values``, made read-only."""
    values.flags.writeable = False
    return values


def _vector(source: dict[str, np.ndarray] | None, attr: str, n: int) -> np.ndarray:
    """``source[attr]`` as a contiguous float array of length ``n``; zeros when absent."""
    value = None if source is None else source.get(attr)
    if value is None:
        return np.zeros(n)
    arr = np.ascontiguousarray(value, dtype=float)
    if arr.shape != (n,):
        raise ValueError(f"{attr}: expected {n} values, got shape {arr.shape}")
    return arr
