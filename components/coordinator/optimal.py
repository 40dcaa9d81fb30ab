"""Strategy ``optimal``: a linear programme over a rolling horizon, solved with HiGHS.

At step ``k`` (and then every ``optimal.resolve_every_steps`` steps) the programme plans the
power of every plugged EV over the next ``optimal.horizon_h`` hours (up to its departure) and
the first step of the plan is applied; EVs that arrive between solves get their mandatory power
and the PV left over until the next solve. Per-EV variables (no aggregation), so the programme
is exact for the EVs it knows; what it does not know is forecast: PV from the sun's path scaled
by the clearness observed lately, the zone's import without EVs from the day before (see
:mod:`.forecast`), EVs arriving later not at all. It is slow (one HiGHS solve per step): the
best one can do for the stated objective with the information available at the time, as a
runnable strategy. It is no bound -- a fast strategy may beat it, so a gap against it measures
nothing. The bound is the perfect-hindsight programme of a finished run
(:mod:`.hindsight`), and the gaps of the fast strategies (and of this one) are taken to it:
see :func:`strategy_gaps`.

Variables (``dt`` step [h], ``eta_c``, ``eta_d`` efficiencies)
    ``c[i,t] in [0, p_max]`` charge and, for V2G EVs, ``d[i,t] in [0, -p_min]`` discharge
    [kW, grid side]; for V2G EVs the battery energy ``E[i,t]`` [kWh] with
    ``E[i,t+1] = E[i,t] + eta_c c[i,t] dt - d[i,t] dt / eta_d`` within
    ``[min(E0, min_soc_v2g cap), soc_full cap]``; a charge-only EV only keeps its total within
    the room to full. ``u[i] >= 0`` the energy an EV would lack at departure, ``pv[t] in [0,
    PV forecast]`` the PV energy going to EVs, ``pv[t] <= sum_i c[i,t]``.
Constraints
    Departure: energy charged by departure (or by the horizon's end, less what the EV can
    still take at full power after it) ``+ u[i] >= need[i]``: the target of
    ``departure_target`` (by default the room to full; else the planned need, margins
    included, or full for EVs leaving in the morning), the service the fast strategies give,
    so that only the objective differs. Objective ``peak``: ``base[t] + sum_i (c - d) <= P`` with ``P`` at least the
    highest import already incurred.
Objectives [CNY]
    ``cost``: ``sum_t dt (grid_price (C - pv) + pv_price pv - v2g_price D)`` -- the EV users'
    net bill (``cost_cny - ev_user_revenue_cny``); battery energy left at the horizon's end by
    EVs that stay longer is valued at the cheapest grid price of the horizon.
    ``pv``: ``sum_t dt (grid_price (C - pv) - w_pv pv)`` with ``w_pv`` =
    ``PV_FIRST_CNY_PER_KWH``, far above any price: PV energy delivered to EVs first (up to
    full, as ``pv_following`` does), then the grid energy's cost; no V2G.
    ``peak``: ``w P`` plus the ``cost`` terms as tie-breaker (``w`` =
    ``peak_weight_cny_per_kw``).
    Every objective adds ``unmet_penalty_cny_per_kwh * sum_i u[i]``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from components.coordinator.config import CoordinatorConfig
from components.coordinator.core import (
    FillWindow,
    PluggedEVs,
    Setpoints,
    Snapshot,
    Strategy,
    ZoneLayout,
    allocate_evs,
    planned_need_kwh,
    planned_t_dep_s,
    pv_by_site,
    site_sum,
)
from components.coordinator.tariffs import PERIODS

PV_FIRST_CNY_PER_KWH = 10.0
"""Weight of PV energy to EVs in the ``pv`` objective: far above any price, so PV comes first
and the grid energy's cost only decides the rest."""

OBJECTIVE_OF: dict[str, str] = {
    "uncontrolled": "cost",
    "pv_following": "pv",
    "v2g_peak_shaving": "peak",
    "grid_aware": "peak",
}
"""The objective each fast strategy pursues, to compare it with ``optimal`` on that one."""


class OptimalStrategy(Strategy):
    """Rolling-horizon linear programme (HiGHS via :func:`scipy.optimize.linprog`)."""

    def __init__(self, cfg: CoordinatorConfig, zone: ZoneLayout, step_s: float) -> None:
        super().__init__(cfg, zone, step_s)
        if zone.ev_capacity_kwh is None:
            raise ValueError("strategy 'optimal' needs each EV's battery capacity (parameter "
                             "'ev' of the coordinator, key 'capacity_kwh')")
        self.opt = cfg.optimal
        self.horizon = max(1, round(self.opt.horizon_h * 3600.0 / step_s))
        self.soc_full = zone.soc_max
        offpeak = np.array([p in cfg.offpeak_periods for p in PERIODS], dtype=bool)
        self.fill_window = FillWindow(offpeak, cfg.offpeak_fill_margin_h * 3600 / step_s)
        self._plan: dict[int, np.ndarray] = {}
        self._plan_k = -1
        self.solves = 0
        self.solve_s = 0.0
        self.last_status = ""

    # -- the step ------------------------------------------------------------------------------

    def decide(self, snap: Snapshot) -> Setpoints:
        ev = snap.ev
        if ev.n == 0:
            return Setpoints(p_kw=np.zeros(0))
        if snap.k - self._plan_k >= self.opt.resolve_every_steps or self._plan_k < 0:
            self._plan = self.solve(snap)
            self._plan_k = snap.k
        t = snap.k - self._plan_k
        p = np.full(ev.n, np.nan)
        for j, i in enumerate(ev.ids.tolist()):
            row = self._plan.get(i)
            if row is not None and t < row.size:
                p[j] = row[t]
        known = ~np.isnan(p)
        # never less than the mandatory power, never outside the EV's own bounds
        no_pv = np.zeros(self.zone.n_sites)
        p_mand, _ = allocate_evs(ev, self.cfg, self.zone, self.step_s, no_pv, 0.0)
        if (~known).any():
            # EVs unknown to the plan: mandatory power and the PV the plan leaves unused
            pv_left = max(float(snap.pv_kw.sum()) - float(np.maximum(p[known], 0).sum()), 0.0)
            weight = site_sum(ev.site[~known], ev.p_max_kw[~known], self.zone.n_sites)
            site_pv, pool = pv_by_site(snap.pv_kw * (pv_left / max(snap.pv_kw.sum(), 1e-9)),
                                       self.zone.plant_bus, self.zone.site_bus, weight)
            sub = _subset(ev, ~known)
            p_new, _ = allocate_evs(sub, self.cfg, self.zone, self.step_s, site_pv, pool)
            p[~known] = p_new
        p = np.clip(np.maximum(p, np.where(p_mand > 0, p_mand, -np.inf)), ev.p_min_kw,
                    ev.p_max_kw)
        return Setpoints(p_kw=p, info={"lp_status": float(self.last_status == "ok")})

    # -- the programme -------------------------------------------------------------------------

    def solve(self, snap: Snapshot) -> dict[int, np.ndarray]:
        """Solve the programme from step ``k``; return ``{ev id: planned power per step}``."""
        import time

        t0 = time.perf_counter()
        window = self.fill_window.steps(snap.k, snap.lookahead.period)
        lp = build_lp(snap, self.cfg, self.zone, self.step_s, self.horizon, self.soc_full,
                      window)
        res = linprog(lp.c, A_ub=lp.a_ub, b_ub=lp.b_ub, A_eq=lp.a_eq, b_eq=lp.b_eq,
                      bounds=lp.bounds, method="highs",
                      options={"time_limit": self.opt.time_limit_s, "presolve": True})
        self.solves += 1
        self.solve_s += time.perf_counter() - t0
        if res.x is None:
            self.last_status = res.message
            return {}
        self.last_status = "ok" if res.status == 0 else res.message
        return lp.plan(res.x)


def _subset(ev: PluggedEVs, mask: np.ndarray) -> PluggedEVs:
    return PluggedEVs(*(getattr(ev, f)[mask] for f in PluggedEVs.__dataclass_fields__))


class _LP:
    """Arrays of one linear programme and how to read a plan off its solution."""

    def __init__(self) -> None:
        self.c = np.zeros(0)
        self.bounds = np.zeros((0, 2))
        self.a_ub = self.a_eq = None
        self.b_ub = self.b_eq = None
        self.ev_ids = np.zeros(0, dtype=np.int64)
        self.c_start = self.c_len = self.d_start = np.zeros(0, dtype=np.int64)

    def plan(self, x: np.ndarray) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for j, i in enumerate(self.ev_ids.tolist()):
            s, n = self.c_start[j], self.c_len[j]
            p = x[s:s + n].copy()
            if self.d_start[j] >= 0:
                p -= x[self.d_start[j]:self.d_start[j] + n]
            out[i] = p
        return out


def build_lp(snap: Snapshot, cfg: CoordinatorConfig, zone: ZoneLayout, step_s: float,
             horizon: int, soc_full: float, window: tuple[float, float] | None = None) -> _LP:
    """Assemble the programme of step ``k`` (see the module docstring); ``window``: the
    departures (step offsets) of EVs that are to leave full (:class:`.core.FillWindow`)."""
    opt = cfg.optimal
    objective = opt.objective
    ev = snap.ev
    n = ev.n
    dt = step_s / 3600.0
    eta_c, eta_d = zone.eta_ch, zone.eta_dis
    look = snap.lookahead
    h = int(min(horizon, look.grid_price.size))
    price = look.grid_price[:h]
    pv_price = look.pv_price[:h]
    v2g_price = look.v2g_price[:h]
    pv_fc = np.maximum(look.pv_kw(h), 0.0)
    base_fc = look.base_import_kw(h)

    cap = zone.ev_capacity_kwh[ev.ids]
    e0 = ev.soc * cap
    e_full = np.maximum(soc_full * cap, e0)
    need = planned_need_kwh(ev, cfg)
    dep = np.ceil(planned_t_dep_s(ev, cfg, step_s) / step_s - 1e-9).astype(np.int64)
    # the fleet policy of the fast strategies holds here too: EVs of the fill sites leaving
    # before the next off-peak window ends (plus the margin) leave full
    if cfg.departure_target == "full":
        need = np.maximum(need, e_full - e0)
    elif cfg.departure_target == "morning_full" and window is not None:
        t_dep = planned_t_dep_s(ev, cfg, step_s) / step_s
        fill = (t_dep >= window[0]) & (t_dep <= window[1])
        need = np.where(fill, np.maximum(need, e_full - e0), need)
    steps = np.clip(dep, 1, h)
    rate = np.maximum(ev.p_rate_kw, ev.p_max_kw)
    post = eta_c * rate * dt * np.maximum(dep - h, 0)  # can still be charged after the horizon
    stays = dep > h
    v2g = ev.v2g & (objective != "pv") & (ev.p_dis_rate_kw > 0)
    dis_rate = np.where(v2g, ev.p_dis_rate_kw, 0.0)

    # variable layout: c (per EV and step) | d, E (V2G EVs) | u (per EV) | pv (per step) | P
    c_len = steps
    c_start = (np.cumsum(c_len) - c_len).astype(np.int64)
    n_c = int(c_len.sum())
    vi = np.flatnonzero(v2g)
    d_len = steps[vi]
    d_off = (np.cumsum(d_len) - d_len).astype(np.int64)
    d_start_v = n_c + d_off
    n_d = int(d_len.sum())
    e_start_v = n_c + n_d + d_off  # E[i, 1..T]
    u_start = n_c + 2 * n_d
    pv_start = u_start + n
    p_idx = pv_start + h
    n_var = p_idx + (1 if objective == "peak" else 0)

    ev_of_c = np.repeat(np.arange(n), c_len)
    t_of_c = np.arange(n_c) - np.repeat(c_start, c_len)
    ev_of_d = np.repeat(vi, d_len)
    t_of_d = np.arange(n_d) - np.repeat(d_off, d_len)

    lo = np.zeros(n_var)
    hi = np.full(n_var, np.inf)
    hi[:n_c] = np.where(t_of_c == 0, ev.p_max_kw[ev_of_c], rate[ev_of_c])
    hi[n_c:n_c + n_d] = np.where(t_of_d == 0, -ev.p_min_kw[ev_of_d], dis_rate[ev_of_d])
    e_lo = np.minimum(e0, zone.min_soc_v2g * cap)
    lo[n_c + n_d:u_start] = e_lo[ev_of_d]
    hi[n_c + n_d:u_start] = e_full[ev_of_d]
    hi[pv_start:pv_start + h] = pv_fc
    if objective == "peak":
        lo[p_idx] = snap.peak_import_kw if np.isfinite(snap.peak_import_kw) else 0.0

    # objective
    cost = np.zeros(n_var)
    grid_c = price[t_of_c] * dt
    cost[:n_c] = grid_c
    pv_terms = (pv_price - price) * dt  # moving a kWh from grid to PV changes the bill so
    if objective == "pv":
        pv_terms = -(price + PV_FIRST_CNY_PER_KWH) * dt
    cost[pv_start:pv_start + h] = pv_terms
    cost[n_c:n_c + n_d] = -v2g_price[t_of_d] * dt
    cost[u_start:u_start + n] = opt.unmet_penalty_cny_per_kwh
    if objective in ("cost", "peak"):
        # energy left at the horizon's end by EVs that stay: worth its cheapest recharge
        value = float(price.min()) / eta_c
        charge_only_stays = stays & ~v2g
        sel = charge_only_stays[ev_of_c]
        cost[:n_c][sel] -= value * eta_c * dt
        last_e = e_start_v + d_len - 1
        stay_v = stays[vi]
        cost[last_e[stay_v]] -= value
    if objective == "peak":
        cost[p_idx] = opt.peak_weight_cny_per_kw

    rows, cols, vals, rhs = [], [], [], []
    r = 0

    def add(rr, cc, vv):
        rows.append(np.asarray(rr, dtype=np.int64))
        cols.append(np.asarray(cc, dtype=np.int64))
        vals.append(np.asarray(vv, dtype=float))

    # departure need: -(energy by departure) - u <= -(need - post)
    co = ~v2g
    sel = co[ev_of_c]
    add(r + ev_of_c[sel], np.flatnonzero(sel), np.full(sel.sum(), -eta_c * dt))
    last_e = e_start_v + d_len - 1
    add(r + vi, last_e, -np.ones(vi.size))
    add(r + np.arange(n), u_start + np.arange(n), -np.ones(n))
    need_rhs = -(need - post)
    need_rhs[vi] -= e0[vi]
    rhs.append(need_rhs)
    r += n
    # room to full of charge-only EVs
    coi = np.flatnonzero(co)
    pos = np.full(n, -1)
    pos[coi] = np.arange(coi.size)
    add(r + pos[ev_of_c[sel]], np.flatnonzero(sel), np.full(sel.sum(), eta_c * dt))
    rhs.append(e_full[coi] - e0[coi])
    r += coi.size
    # PV to EVs at most what they charge: pv[t] - sum_i c[i,t] <= 0
    add(r + t_of_c, np.arange(n_c), -np.ones(n_c))
    add(r + np.arange(h), pv_start + np.arange(h), np.ones(h))
    rhs.append(np.zeros(h))
    r += h
    if objective == "peak":
        base = np.nan_to_num(base_fc, nan=0.0)
        add(r + t_of_c, np.arange(n_c), np.ones(n_c))
        add(r + t_of_d, n_c + np.arange(n_d), -np.ones(n_d))
        add(r + np.arange(h), np.full(h, p_idx), -np.ones(h))
        rhs.append(-base)
        r += h
    a_ub = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(r, n_var))
    b_ub = np.concatenate(rhs)

    # battery energy of V2G EVs: E[t+1] - E[t] - eta_c dt c[t] + dt/eta_d d[t] = 0 (E[0] = E0)
    lp = _LP()
    if n_d:
        rows_e = np.arange(n_d)
        c_of_d = c_start[ev_of_d] + t_of_d
        e_idx = e_start_v[np.searchsorted(vi, ev_of_d)] + t_of_d
        prev = t_of_d > 0
        rr = np.concatenate([rows_e, rows_e[prev], rows_e, rows_e])
        cc = np.concatenate([e_idx, e_idx[prev] - 1, c_of_d, n_c + np.arange(n_d)])
        vv = np.concatenate([np.ones(n_d), -np.ones(prev.sum()), np.full(n_d, -eta_c * dt),
                             np.full(n_d, dt / eta_d)])
        lp.a_eq = sp.csr_matrix((vv, (rr, cc)), shape=(n_d, n_var))
        lp.b_eq = np.where(prev, 0.0, e0[ev_of_d])
    lp.c, lp.a_ub, lp.b_ub = cost, a_ub, b_ub
    lp.bounds = np.column_stack([lo, hi])
    lp.ev_ids = ev.ids.astype(np.int64)
    lp.c_start, lp.c_len = c_start, c_len
    d_start = np.full(n, -1, dtype=np.int64)
    d_start[vi] = d_start_v
    lp.d_start = d_start
    return lp


# -- comparing strategies with the bound ------------------------------------------------------

OBJECTIVE_SENSE: dict[str, str] = {"cost": "min", "pv": "max", "peak": "min"}


def objective_value(kpis: dict[str, float], objective: str) -> float:
    """A run's value of ``objective`` from its KPIs.

    ``cost``: the EV users' net bill ``cost_cny - ev_user_revenue_cny`` [CNY] (lower is
    better); ``pv``: ``pv_to_ev_mwh``, the PV energy delivered to EVs [MWh] (higher is
    better); ``peak``: ``peak_import_mw`` [MW] (lower is better). These are the units of
    :meth:`.hindsight.HindsightProblem.value` and of the bounds.
    """
    if objective == "cost":
        return float(kpis["cost_cny"] - kpis["ev_user_revenue_cny"])
    if objective == "pv":
        return float(kpis["pv_to_ev_mwh"])
    if objective == "peak":
        return float(kpis["peak_import_mw"])
    raise ValueError(f"objective: must be one of 'cost', 'pv', 'peak', got {objective!r}")


def gap(value: float, bound: float, objective: str) -> float:
    """Relative gap of a value to the bound of ``objective`` [-].

    ``(J - J*) / |J*|`` for objectives minimised, ``(J* - J) / |J*|`` for those maximised:
    the share by which the run is worse than the best dispatch of the same sessions in
    hindsight (:mod:`.hindsight`); >= 0 up to the solver's tolerance.
    """
    if OBJECTIVE_SENSE.get(objective) is None:
        raise ValueError(f"objective: must be one of 'cost', 'pv', 'peak', got {objective!r}")
    if bound == 0:
        return 0.0 if value == 0 else float("inf")
    worse = value - bound if OBJECTIVE_SENSE[objective] == "min" else bound - value
    return worse / abs(bound)


def strategy_gaps(kpis_by_run: dict[str, dict[str, float]], bound_by_run: dict[str, float],
                  objective_by_run: dict[str, str] | None = None) -> dict[str, dict]:
    """Gap of each run to the hindsight bound of the same run on its strategy's objective.

    Parameters
    ----------
    kpis_by_run : dict
        KPIs of runs, by name (a strategy name, or any name listed in ``objective_by_run``).
    bound_by_run : dict
        The hindsight bound of each run on its objective, in the objective's KPI unit
        (:meth:`.hindsight.HindsightProblem.solve`).
    objective_by_run : dict, optional
        Objective of each run; default :data:`OBJECTIVE_OF` of the run's name.

    Returns
    -------
    dict
        Per run: ``objective``, ``value``, ``bound`` and ``gap`` (relative, [-]).
    """
    out = {}
    for name, kpis in kpis_by_run.items():
        objective = (objective_by_run or {}).get(name, OBJECTIVE_OF.get(name))
        if objective is None or name not in bound_by_run:
            continue
        value = objective_value(kpis, objective)
        bound = float(bound_by_run[name])
        out[name] = {"objective": objective, "value": value, "bound": bound,
                     "gap": gap(value, bound, objective)}
    return out
