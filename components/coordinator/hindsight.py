"""A perfect-hindsight bound: one linear programme over a whole finished run.

The rolling-horizon programme of :mod:`.optimal` is "the best one can do with the information at
hand"; it forecasts PV, the base load and nothing of the EVs that arrive later, so a fast
strategy can beat it and a gap against it measures nothing. The programme here knows the whole
run in advance: every plug session (which EV, when, at which charger), the PV available at every
step, the zone's import without the EVs, the prices. Its optimum is a bound: no dispatch of the
same sessions with at least the same service does better on the objective, causal or not.

What is held fixed, taken from the run (:class:`FleetLog` records it)
    The plug sessions and their charger limits; the energy every trip takes out of a battery
    and any other change while an EV is not plugged (so each EV's energy is carried across all
    its sessions of the run: charging more in one session means arriving fuller at the next);
    the capacities (ageing); PV available per step; the zone's import less the EVs' power (for
    ``peak``; PV curtailment, factory shedding and network losses are thereby the run's).
    Why: in the fleet model whether an EV plugs in depends on its state of charge at arrival
    (private users plug in below a personal threshold) and chargers are first come first
    served, so sessions are not exogenous to dispatch. The bound is therefore conditional on
    the run's sessions: the best dispatch of the sessions that occurred. The run's own
    dispatch is one feasible point of the programme, so the bound never exceeds the run's value
    (see :meth:`HindsightProblem.violation`).
Physics (that of :class:`components.ev.model.EVFleet`, relaxed only where it is not linear)
    ``E[s] = E[s-1] + eta_c c[s] dt - d[s] dt / eta_d`` per plugged step ``s`` of an EV, with
    ``c <= `` the charger and car limit (and ``eta_c c <=`` the battery's acceptance) and
    ``d <= `` the discharge limit (V2G chargers and willing users only); ``E`` stays at or
    below the end-of-charge energy ``soc_full cap``.
    The constant-current/constant-voltage taper enters as the exact linear cut "battery power
    over a step at most the acceptance at its start": ``eta_c c <= a (soc_max cap - E_start) /
    ((soc_max - soc_cv) cap)``. The V2G floor (discharge only down to ``min_soc_v2g``) is
    either-or and enters as its convex hull: ``d <= d_max (E - L) / (F - L)`` with ``F`` the
    floor and ``L`` the lowest energy the EV ever had (or ``soc_min``), exact above the floor;
    an EV does not charge and discharge at once: ``c / c_max + d / d_max <= 1``. Site capacity
    needs no constraint: every plugged EV holds one charger, whose limit is in ``c_max``.
Service
    At the end of each session the EV holds at least ``min(target, energy of the run)``: the
    target is full (``departure_target: full``, the default), its user's request (``need``) or
    full for departures in or shortly after the off-peak window (``morning_full``); so the
    programme gives every user at least the service the run gave, up to the target. A session
    that V2G used gives back what it took, as far as the run did. Sessions still plugged at the
    end of the run keep at least the run's energy.
Objectives (in the units of the KPIs, see :func:`.optimal.objective_value`)
    ``pv``: PV energy to EVs, ``sum_t dt m[t]`` with ``m[t] <= PV available`` and
    ``m[t] <= sum_s c[s, t]`` (the matching ships ``min(PV, charging)`` each step) [MWh],
    maximised. ``cost``: the EV users' net bill ``sum_t dt (grid (C - m) + pv_local m - v2g
    D)`` [CNY] (local PV is never dearer than the grid, so ``m`` takes its largest value).
    ``peak``: ``max_t (base[t] + C[t] - D[t])`` [MW], over the steps whose power flow
    converged. V2G enters the programme when the run discharged (a strategy that does not use
    V2G is compared with the best dispatch without it) unless told otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

OBJECTIVES = ("cost", "pv", "peak")
DEPARTURE_TARGETS = ("full", "need", "morning_full")
_TOL_KWH = 1e-9


@dataclass(frozen=True)
class FleetPhysics:
    """Battery and charging parameters of the fleet (see :class:`components.ev.config.EVConfig`).

    ``soc_full`` is the end-of-charge SoC, ``soc_max - cv_end_power_share (soc_max - soc_cv)``.
    """

    step_s: float
    eta_ch: float
    eta_dis: float
    soc_min: float
    soc_max: float
    soc_cv: float
    soc_full: float
    min_soc_v2g: float

    @property
    def dt_h(self) -> float:
        return self.step_s / 3600.0


@dataclass(frozen=True)
class Sessions:
    """The plugged EVs of a run, one row per EV and plugged step (a *slot*), by EV then step.

    Attributes
    ----------
    ev, k : numpy.ndarray of int
        EV and step of each slot.
    n_ev, n_steps : int
        Fleet size and number of steps of the run.
    site : numpy.ndarray of int
        Charging site.
    p_ch_kw, p_dis_kw : numpy.ndarray
        Charger and car limit of charge and of discharge (0: no V2G), grid side [kW].
    cap_kwh, accept_kw : numpy.ndarray
        Battery capacity [kWh]; power the battery accepts before its CV phase [kW].
    e_start_kwh : numpy.ndarray
        The run's battery energy at the start of the slot's step [kWh].
    req_kwh : numpy.ndarray
        Battery energy the EV's user wants at departure [kWh].
    c_kw, d_kw : numpy.ndarray
        The run's charge and discharge power [kW].
    e_low_kwh : numpy.ndarray, shape (n_ev,)
        Lowest battery energy each EV may have: ``soc_min cap``, or less if the run had less
        [kWh].
    """

    ev: np.ndarray
    k: np.ndarray
    n_ev: int
    n_steps: int
    site: np.ndarray
    p_ch_kw: np.ndarray
    p_dis_kw: np.ndarray
    cap_kwh: np.ndarray
    accept_kw: np.ndarray
    e_start_kwh: np.ndarray
    req_kwh: np.ndarray
    c_kw: np.ndarray
    d_kw: np.ndarray
    e_low_kwh: np.ndarray

    @property
    def n(self) -> int:
        return int(self.ev.size)

    def first(self) -> np.ndarray:
        """Slots that start a session (a new EV, a gap of at least one step, or a new site)."""
        return np.r_[True, (self.ev[1:] != self.ev[:-1]) | (self.k[1:] != self.k[:-1] + 1)
                     | (self.site[1:] != self.site[:-1])]

    def last(self) -> np.ndarray:
        """Slots that end a session."""
        return np.r_[self.first()[1:], True]

    def ev_first(self) -> np.ndarray:
        """Slots that are an EV's first of the run."""
        return np.r_[True, self.ev[1:] != self.ev[:-1]]

    def e_end_kwh(self, physics: FleetPhysics, c_kw: np.ndarray | None = None,
                  d_kw: np.ndarray | None = None) -> np.ndarray:
        """Energy at the end of each slot's step with the run's powers (or ``c_kw``, ``d_kw``
        applied from the run's energy at its start) [kWh]."""
        c = self.c_kw if c_kw is None else c_kw
        d = self.d_kw if d_kw is None else d_kw
        return self.e_start_kwh + (physics.eta_ch * c - d / physics.eta_dis) * physics.dt_h


@dataclass(frozen=True)
class Exogenous:
    """What the EVs do not change, per step of the run.

    ``base_import_kw`` is the zone's import less the EVs' net power, NaN where the power flow
    did not converge (such steps count as no import in the KPIs).
    """

    pv_avail_kw: np.ndarray
    base_import_kw: np.ndarray
    price_grid: np.ndarray
    price_pv: np.ndarray
    price_v2g: np.ndarray

    @property
    def n_steps(self) -> int:
        return int(self.pv_avail_kw.size)


class FleetLog:
    """Records a fleet's plug sessions and energies while it runs.

    :meth:`attach` wraps the ``step`` method of one :class:`components.ev.model.EVFleet`
    object: before each step it notes the plugged EVs (site, charger limits, capacity,
    energy, request), after it the energy each of them charged and discharged.
    """

    def __init__(self, fleet: Any) -> None:
        cfg = fleet.cfg
        self.physics = FleetPhysics(
            step_s=float(fleet.step_s), eta_ch=cfg.charge_efficiency,
            eta_dis=cfg.discharge_efficiency, soc_min=cfg.soc_min, soc_max=cfg.soc_max,
            soc_cv=cfg.cv_taper_soc, soc_full=float(fleet.soc_full),
            min_soc_v2g=cfg.min_soc_v2g)
        self.fleet = fleet
        self.n_ev = int(fleet.n_ev)
        self.accept_kw = np.asarray(fleet.accept_kw, dtype=float).copy()
        self.e_min_kwh = fleet.e_kwh.copy()
        self.rows: list[dict[str, np.ndarray]] = []

    @classmethod
    def attach(cls, fleet: Any) -> FleetLog:
        """Start recording ``fleet`` (before its first step); return the log."""
        if fleet.k != 0:
            raise ValueError(f"FleetLog.attach: the fleet is at step {fleet.k}; attach it "
                             "before its first step")
        log = cls(fleet)
        inner = fleet.step

        def step(k: int, p_set_kw: np.ndarray | None = None) -> None:
            log._before(k)
            inner(k, p_set_kw)
            log._after()

        fleet.step = step
        return log

    def _before(self, k: int) -> None:
        f = self.fleet
        ids = np.flatnonzero(f.plug >= 0)
        self.rows.append({
            "k": k, "ids": ids, "site": f.site[ids].copy(), "p_ch": f.p_ch_lim[ids].copy(),
            "p_dis": f.p_dis_lim[ids].copy(), "cap": f.cap_kwh[ids].copy(),
            "e": f.e_kwh[ids].copy(), "req": f.req_kwh[ids].copy(),
            "ch0": f.charged_kwh[ids].copy(), "dis0": f.discharged_kwh[ids].copy()})
        np.minimum(self.e_min_kwh, f.e_kwh, out=self.e_min_kwh)

    def _after(self) -> None:
        f, row = self.fleet, self.rows[-1]
        dt = self.physics.dt_h
        row["c"] = (f.charged_kwh[row["ids"]] - row.pop("ch0")) / dt
        row["d"] = (f.discharged_kwh[row["ids"]] - row.pop("dis0")) / dt
        np.minimum(self.e_min_kwh, f.e_kwh, out=self.e_min_kwh)

    def sessions(self) -> Sessions:
        """The recorded slots as :class:`Sessions` (only complete steps)."""
        rows = [r for r in self.rows if "c" in r]
        if [r["k"] for r in rows] != list(range(len(rows))):
            raise RuntimeError("FleetLog: steps were not recorded in order from 0")
        cat = {key: np.concatenate([r[key] for r in rows]) if rows else np.zeros(0)
               for key in ("ids", "site", "p_ch", "p_dis", "cap", "e", "req", "c", "d")}
        k = np.concatenate([np.full(r["ids"].size, r["k"]) for r in rows]) if rows \
            else np.zeros(0, dtype=np.int64)
        ev = cat["ids"].astype(np.int64)
        order = np.lexsort((k, ev))
        phys = self.physics
        cap0 = self.fleet.cap0_kwh
        e_low = np.minimum(phys.soc_min * cap0, self.e_min_kwh) - _TOL_KWH
        return Sessions(
            ev=ev[order], k=k[order].astype(np.int64), n_ev=self.n_ev, n_steps=len(rows),
            site=cat["site"][order].astype(np.int64), p_ch_kw=cat["p_ch"][order],
            p_dis_kw=cat["p_dis"][order], cap_kwh=cat["cap"][order],
            accept_kw=self.accept_kw[ev[order]], e_start_kwh=cat["e"][order],
            req_kwh=cat["req"][order], c_kw=cat["c"][order], d_kw=cat["d"][order],
            e_low_kwh=e_low)


@dataclass
class HindsightResult:
    """The bound of one objective and the dispatch that attains it.

    ``value`` is in the objective's KPI unit (``pv`` [MWh], ``cost`` [CNY], ``peak`` [MW]);
    ``c_kw``, ``d_kw``, ``e_kwh`` are per slot (charge, discharge, energy at the end of the
    step).
    """

    objective: str
    value: float
    status: str
    v2g: bool
    solve_s: float
    build_s: float
    n_vars: int
    n_rows: int
    c_kw: np.ndarray = field(repr=False)
    d_kw: np.ndarray = field(repr=False)
    e_kwh: np.ndarray = field(repr=False)

    def summary(self) -> dict[str, Any]:
        return {"objective": self.objective, "bound": self.value, "status": self.status,
                "v2g": self.v2g, "build_s": round(self.build_s, 2),
                "solve_s": round(self.solve_s, 2), "n_vars": self.n_vars, "n_rows": self.n_rows}


class HindsightProblem:
    """The hindsight programme of a run (see the module docstring).

    Parameters
    ----------
    sessions : Sessions
        The run's plug sessions (:meth:`FleetLog.sessions`).
    physics : FleetPhysics
        The fleet's parameters.
    exo : Exogenous
        PV, base import and prices per step (``sessions.n_steps`` values each).
    departure_target : str
        ``full``, ``need`` or ``morning_full``: the service each session must give (up to
        what the run gave).
    offpeak : numpy.ndarray of bool, optional
        Per step, whether it is in an off-peak tariff period (``morning_full`` only).
    fill_margin_steps : int
        ``morning_full``: departures this many steps after an off-peak window still count.
    """

    def __init__(self, sessions: Sessions, physics: FleetPhysics, exo: Exogenous,
                 departure_target: str = "full", offpeak: np.ndarray | None = None,
                 fill_margin_steps: int = 8) -> None:
        if exo.n_steps != sessions.n_steps:
            raise ValueError(f"exogenous series have {exo.n_steps} steps, the sessions "
                             f"{sessions.n_steps}")
        if departure_target not in DEPARTURE_TARGETS:
            raise ValueError(f"departure_target: must be one of {DEPARTURE_TARGETS}, got "
                             f"{departure_target!r}")
        if departure_target == "morning_full" and offpeak is None:
            raise ValueError("departure_target 'morning_full' needs the off-peak steps")
        self.s, self.phys, self.exo = sessions, physics, exo
        self.first, self.last = sessions.first(), sessions.last()
        self.ev_first = sessions.ev_first()
        self.e_end_run = sessions.e_end_kwh(physics)
        self.floor_kwh = self._service_floor(departure_target, offpeak, fill_margin_steps)

    # -- service -----------------------------------------------------------------------------

    def _service_floor(self, target: str, offpeak: np.ndarray | None,
                       margin: int) -> np.ndarray:
        """Least energy at the end of each session's last slot [kWh] (NaN elsewhere)."""
        s, phys = self.s, self.phys
        last = np.flatnonzero(self.last)
        full = phys.soc_full * s.cap_kwh[last]
        if target == "full":
            want = full
        elif target == "need":
            want = s.req_kwh[last]
        else:
            dep = s.k[last] + 1  # the boundary the EV leaves at
            off = np.r_[np.asarray(offpeak, dtype=bool)[:s.n_steps], False]
            near = np.zeros(dep.size, dtype=bool)
            for lag in range(margin + 1):
                near |= off[np.clip(dep - 1 - lag, 0, s.n_steps)]
            want = np.where(near, full, s.req_kwh[last])
        run_end = self.e_end_run[last]
        floor = np.full(s.n, np.nan)
        # sessions cut by the end of the run keep at least the run's energy
        floor[last] = np.where(s.k[last] == s.n_steps - 1, run_end, np.minimum(want, run_end))
        return floor

    # -- evaluation --------------------------------------------------------------------------

    def step_sums(self, c_kw: np.ndarray, d_kw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Total charge and discharge of the fleet per step [kW]."""
        n = self.s.n_steps
        return (np.bincount(self.s.k, weights=c_kw, minlength=n),
                np.bincount(self.s.k, weights=d_kw, minlength=n))

    def value(self, objective: str, c_kw: np.ndarray | None = None,
              d_kw: np.ndarray | None = None) -> float:
        """The objective of a dispatch of the slots (default: the run's) in its KPI unit."""
        _check_objective(objective)
        c = self.s.c_kw if c_kw is None else c_kw
        d = self.s.d_kw if d_kw is None else d_kw
        ch, dis = self.step_sums(c, d)
        exo, dt = self.exo, self.phys.dt_h
        matched = np.minimum(np.maximum(exo.pv_avail_kw, 0.0), ch)
        if objective == "pv":
            return float(matched.sum() * dt / 1000.0)
        if objective == "cost":
            return float(dt * (exo.price_grid * (ch - matched) + exo.price_pv * matched
                               - exo.price_v2g * dis).sum())
        imp = exo.base_import_kw + ch - dis
        ok = np.isfinite(imp)
        return float(max(np.max(imp[ok], initial=0.0), 0.0) / 1000.0)

    def energies(self, c_kw: np.ndarray, d_kw: np.ndarray) -> np.ndarray:
        """Energy at the end of each slot's step under dispatch ``c_kw``, ``d_kw`` [kWh], with
        each EV's energy carried across its sessions (trips as in the run)."""
        s, phys = self.s, self.phys
        delta = (phys.eta_ch * c_kw - d_kw / phys.eta_dis) * phys.dt_h
        delta_run = self.e_end_run - s.e_start_kwh
        # change against the run, summed along each EV's slots
        diff = np.cumsum(delta - delta_run)
        start = np.flatnonzero(self.ev_first)
        offset = np.repeat(np.r_[0.0, diff][start], np.diff(np.r_[start, s.n]))
        return self.e_end_run + diff - offset

    def violation(self, c_kw: np.ndarray, d_kw: np.ndarray) -> dict[str, float]:
        """Largest violation of each constraint family by a dispatch (0: feasible) [kW, kWh]."""
        s, phys = self.s, self.phys
        e = self.energies(c_kw, d_kw)
        e_start = self._e_start(e)
        v2g = s.p_dis_kw > 0
        out = {
            "c_bounds": float(np.max(np.r_[-c_kw, c_kw - self._c_max()], initial=0.0)),
            "d_bounds": float(np.max(np.r_[-d_kw, np.where(v2g, d_kw - s.p_dis_kw, d_kw)],
                                     initial=0.0)),
            "e_upper": float(np.max(e - self._e_upper(), initial=0.0)),
            "e_lower": float(np.max(s.e_low_kwh[s.ev] - e, initial=0.0)),
            "service": float(np.nanmax(np.r_[self.floor_kwh - e, 0.0])),
        }
        cv = self._cv_rows()
        slope = s.accept_kw[cv] / ((phys.soc_max - phys.soc_cv) * s.cap_kwh[cv])
        out["cv_taper"] = float(np.max(phys.eta_ch * c_kw[cv] + slope * e_start[cv]
                                       - slope * phys.soc_max * s.cap_kwh[cv], initial=0.0))
        fl = np.flatnonzero(v2g)
        big_f, low = self._v2g_floor(fl)
        out["v2g_floor"] = float(np.max(
            (big_f - low) * d_kw[fl] - s.p_dis_kw[fl] * (e[fl] - low), initial=0.0))
        out["one_way"] = float(np.max(c_kw[fl] / s.p_ch_kw[fl].clip(1e-9)
                                      + d_kw[fl] / s.p_dis_kw[fl] - 1.0, initial=0.0))
        return out

    # -- the programme -----------------------------------------------------------------------

    def _e_start(self, e_end: np.ndarray) -> np.ndarray:
        """Energy at the start of each slot given the energies at the ends of the slots."""
        s = self.s
        prev = np.r_[0.0, e_end[:-1]]
        gap = s.e_start_kwh - np.r_[0.0, self.e_end_run[:-1]]  # trips between sessions
        return np.where(self.ev_first, s.e_start_kwh,
                        prev + np.where(self.first, gap, 0.0))

    def _c_max(self) -> np.ndarray:
        """Charge limit: the charger and car, and what the battery accepts [kW]."""
        return np.minimum(self.s.p_ch_kw, self.s.accept_kw / self.phys.eta_ch)

    def _e_upper(self) -> np.ndarray:
        s = self.s
        return np.maximum(self.phys.soc_full * s.cap_kwh,
                          np.maximum(self.e_end_run, s.e_start_kwh)) + _TOL_KWH

    def _cv_rows(self) -> np.ndarray:
        """Slots whose charger is strong enough for the taper to bind before end of charge."""
        s, phys = self.s, self.phys
        width = phys.soc_max - phys.soc_cv
        p_batt = np.minimum(phys.eta_ch * s.p_ch_kw, s.accept_kw)
        at_full = s.accept_kw * (phys.soc_max - phys.soc_full) / width
        return np.flatnonzero(p_batt > at_full + 1e-9)

    def _v2g_floor(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.s
        big_f = self.phys.min_soc_v2g * s.cap_kwh[slots]
        low = np.minimum(s.e_low_kwh[s.ev[slots]], big_f - 1e-3)
        return big_f, low

    def uses_v2g(self) -> bool:
        """Whether the run discharged any EV."""
        return bool((self.s.d_kw > 1e-9).any())

    def solve(self, objective: str, v2g: bool | None = None,
              time_limit_s: float = 1800.0) -> HindsightResult:
        """The bound of ``objective``; ``v2g``: allow discharge (default: as the run did)."""
        _check_objective(objective)
        if v2g is None:
            v2g = self.uses_v2g()
        if not v2g and self.uses_v2g():
            raise ValueError("v2g=False: the run discharged EVs, so a programme without V2G "
                             "would not contain the run's dispatch and would be no bound")
        t0 = time.perf_counter()
        lp = self._build(objective, v2g)
        t1 = time.perf_counter()
        res = linprog(lp["c"], A_ub=lp["a_ub"], b_ub=lp["b_ub"], A_eq=lp["a_eq"],
                      b_eq=lp["b_eq"], bounds=lp["bounds"], method="highs",
                      options={"time_limit": time_limit_s, "presolve": True})
        t2 = time.perf_counter()
        n = self.s.n
        if res.x is None or res.status != 0:
            raise RuntimeError(f"hindsight programme ({objective}) not solved: {res.message}")
        x = res.x
        c = np.clip(x[:n], 0.0, None)
        d = np.zeros(n)
        d[lp["d_slots"]] = np.clip(x[lp["d_idx"]], 0.0, None)
        value = float(res.fun) * lp["scale"]
        return HindsightResult(objective=objective, value=value, status="optimal", v2g=v2g,
                               solve_s=t2 - t1, build_s=t1 - t0, n_vars=int(lp["c"].size),
                               n_rows=int(lp["a_ub"].shape[0] + lp["a_eq"].shape[0]),
                               c_kw=c, d_kw=d, e_kwh=x[n:2 * n].copy())

    def _build(self, objective: str, v2g: bool) -> dict[str, Any]:
        s, phys, exo = self.s, self.phys, self.exo
        n, n_k, dt = s.n, s.n_steps, phys.dt_h
        eta_c, eta_d = phys.eta_ch, phys.eta_dis
        d_slots = np.flatnonzero(s.p_dis_kw > 0) if v2g else np.zeros(0, dtype=np.int64)
        nd = d_slots.size
        # variables: c (n) | E at the end of each slot (n) | d (nd) | m per step | P
        i_e, i_d = n, 2 * n
        i_m = 2 * n + nd
        i_p = i_m + n_k
        n_var = i_p + 1
        d_idx = i_d + np.arange(nd)
        has_d = np.full(n, -1, dtype=np.int64)
        has_d[d_slots] = d_idx

        lo = np.zeros(n_var)
        hi = np.full(n_var, np.inf)
        hi[:n] = self._c_max()
        lo[i_e:i_d] = s.e_low_kwh[s.ev]
        hi[i_e:i_d] = self._e_upper()
        last = np.flatnonzero(self.last)
        lo[i_e + last] = np.maximum(lo[i_e + last], self.floor_kwh[last])
        hi[d_idx] = s.p_dis_kw[d_slots]
        hi[i_m:i_p] = np.maximum(exo.pv_avail_kw, 0.0)
        if objective == "peak":
            hi[i_m:i_p] = 0.0  # no PV matching in this objective

        cost = np.zeros(n_var)
        scale = 1.0
        if objective == "pv":
            cost[i_m:i_p] = -dt
            scale = -1.0 / 1000.0
        elif objective == "cost":
            cost[:n] = dt * exo.price_grid[s.k]
            cost[i_m:i_p] = dt * (exo.price_pv - exo.price_grid)
            cost[d_idx] = -dt * exo.price_v2g[s.k[d_slots]]
        else:
            cost[i_p] = 1.0
            scale = 1.0 / 1000.0

        # energy: E[s] - E[s-1] - eta_c dt c[s] + dt / eta_d d[s] = rhs
        prev = ~self.ev_first
        rows = [np.arange(n), np.flatnonzero(prev), np.arange(n), d_slots]
        cols = [i_e + np.arange(n), i_e + np.flatnonzero(prev) - 1, np.arange(n), d_idx]
        vals = [np.ones(n), -np.ones(int(prev.sum())), np.full(n, -eta_c * dt),
                np.full(nd, dt / eta_d)]
        gap = s.e_start_kwh - np.r_[0.0, self.e_end_run[:-1]]
        b_eq = np.where(self.ev_first, s.e_start_kwh, np.where(self.first, gap, 0.0))
        a_eq = _csr(rows, cols, vals, n, n_var)

        ub_rows: list[np.ndarray] = []
        ub_cols: list[np.ndarray] = []
        ub_vals: list[np.ndarray] = []
        b_ub: list[np.ndarray] = []
        r = 0

        def add(rr, cc, vv):
            ub_rows.append(np.asarray(rr, dtype=np.int64))
            ub_cols.append(np.asarray(cc, dtype=np.int64))
            ub_vals.append(np.asarray(vv, dtype=float))

        # taper: eta_c c + slope E_start <= slope soc_max cap, E_start = E[s-1] + gap
        cv = self._cv_rows()
        slope = s.accept_kw[cv] / ((phys.soc_max - phys.soc_cv) * s.cap_kwh[cv])
        add(r + np.arange(cv.size), cv, np.full(cv.size, eta_c))
        chained = prev[cv]
        add(r + np.flatnonzero(chained), i_e + cv[chained] - 1, slope[chained])
        const = np.where(self.ev_first[cv], s.e_start_kwh[cv],
                         np.where(self.first[cv], gap[cv], 0.0))
        b_ub.append(slope * (phys.soc_max * s.cap_kwh[cv] - const))
        r += cv.size
        if nd:
            # V2G floor, convex hull: (F - L) d - d_max E <= -d_max L
            big_f, low = self._v2g_floor(d_slots)
            dmax = s.p_dis_kw[d_slots]
            add(r + np.arange(nd), d_idx, big_f - low)
            add(r + np.arange(nd), i_e + d_slots, -dmax)
            b_ub.append(-dmax * low)
            r += nd
            # no charge and discharge at once: c / c_max + d / d_max <= 1
            add(r + np.arange(nd), d_slots, 1.0 / np.maximum(s.p_ch_kw[d_slots], 1e-9))
            add(r + np.arange(nd), d_idx, 1.0 / dmax)
            b_ub.append(np.ones(nd))
            r += nd
            # V2G gives back what it takes (as far as the run did): E_arr - E_end <= -min(0, ..)
            sess = np.cumsum(self.first) - 1
            used = np.zeros(sess[-1] + 1, dtype=bool)
            used[sess[d_slots]] = True
            f_idx = np.flatnonzero(self.first)[used]
            l_idx = last[used]
            run_gain = self.e_end_run[l_idx] - s.e_start_kwh[f_idx]
            m_rows = r + np.arange(f_idx.size)
            add(m_rows, i_e + l_idx, -np.ones(f_idx.size))
            chain = ~self.ev_first[f_idx]
            add(m_rows[chain], i_e + f_idx[chain] - 1, np.ones(int(chain.sum())))
            const = np.where(self.ev_first[f_idx], s.e_start_kwh[f_idx], gap[f_idx])
            b_ub.append(-np.minimum(run_gain, 0.0) - const)
            r += f_idx.size
        if objective in ("pv", "cost"):
            # PV to EVs at most their charging: m[t] - sum_s c[s, t] <= 0
            add(r + s.k, np.arange(n), -np.ones(n))
            add(r + np.arange(n_k), i_m + np.arange(n_k), np.ones(n_k))
            b_ub.append(np.zeros(n_k))
            r += n_k
        else:
            ok = np.isfinite(exo.base_import_kw)
            step_row = np.full(n_k, -1, dtype=np.int64)
            step_row[ok] = r + np.arange(int(ok.sum()))
            sel = ok[s.k]
            add(step_row[s.k[sel]], np.flatnonzero(sel), np.ones(int(sel.sum())))
            dsel = ok[s.k[d_slots]]
            add(step_row[s.k[d_slots[dsel]]], d_idx[dsel], -np.ones(int(dsel.sum())))
            add(step_row[ok], np.full(int(ok.sum()), i_p), -np.ones(int(ok.sum())))
            b_ub.append(-exo.base_import_kw[ok])
            r += int(ok.sum())
        a_ub = _csr(ub_rows, ub_cols, ub_vals, r, n_var)
        return {"c": cost, "a_ub": a_ub, "b_ub": np.concatenate(b_ub), "a_eq": a_eq,
                "b_eq": b_eq, "bounds": np.column_stack([lo, hi]), "scale": scale,
                "d_slots": d_slots, "d_idx": d_idx}


def _csr(rows: list[np.ndarray], cols: list[np.ndarray], vals: list[np.ndarray], n_rows: int,
         n_cols: int) -> sp.csr_matrix:
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_rows, n_cols))


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: must be one of {OBJECTIVES}, got {objective!r}")
