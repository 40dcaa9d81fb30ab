"""EV fleet model: daily trip chains, charging sites with charger queues, charging physics, ageing.

Design (performance is the constraint: 10,000 EVs over a year at 15-minute steps in under a
minute on two cores):

- **Trip chains are drawn vectorised, a day at a time.** A SimPy process (the *day planner*)
  wakes at every local midnight, draws the trip chains of the day ``PLAN_AHEAD_DAYS`` ahead for all
  EVs of each user group with NumPy (commuters: home -> workplace -> home; shift workers: aligned
  to the factories' shift calendars; the commercial fleet: depot -> several stops -> depot;
  leisure trips on days off and some evenings), snaps them to the step grid and files the legs
  in each EV's ring of planned legs. Each EV knows its next event (the departure of its next
  leg, or the arrival of the leg it drives); the step boundary takes the EVs whose event is due
  in the order their legs were planned. So the SimPy environment holds one event per simulated
  day instead of one process per EV (tens of millions of events a year, far too slow in pure
  Python), and a step's trips cost one pass over an array. Planning ahead means every parked EV
  knows its next departure, which the coordinator needs.
- **Arrivals and departures happen at step boundaries.** Trip times are drawn in continuous time
  and rounded to the grid; a trip lasts at least one step, a stay at least one step. At a boundary
  the model applies departures first (chargers are freed), then arrivals, then serves the charger
  queue (first come, first served) and finally lets EVs whose patience ran out leave (a *plug
  refusal*). An EV is therefore plugged for whole steps, and energy is exact: trip energy leaves
  the battery at departure, charging energy is ``p * step``.
- **Charging physics is vectorised over the plugged EVs.** Each step, the largest energy a
  plugged EV can take is the exact integral of a constant-current / constant-voltage curve: the
  battery accepts its full power (the car's DC limit, at least ``charge_acceptance_c_rate`` x
  capacity) up to ``cv_taper_soc`` and, in the CV phase, a power falling linearly with SoC to zero
  at ``soc_max``; the charger delivers at most its own limit. So a 7 kW AC charge stays constant
  almost to full while a DC fast charge tapers from ``cv_taper_soc``, as with real CC-CV
  chargers. Charging ends when the acceptance has fallen to ``cv_end_power_share`` of the full
  acceptance: the battery is then *full* (see :func:`max_charge_energy_kwh`). Only EVs that are
  not full are touched by the uncontrolled step. A setpoint is read as the mean power over the
  step, clipped to ``[p_min, p_max]`` (counted when clipped); NaN means uncontrolled: charge at the
  maximum until full. Discharge (V2G) is limited by charger, car, willingness and ``min_soc_v2g``.
  The per-step passes over the plugged EVs (limits, setpoints, battery update, charger queue)
  and the trip events (finding the EVs due, departures, arrivals, planning the next trip), the
  filing of each day's legs and the ageing model's cycle counting run in the kernel
  ``ext.evstep`` (compiled, or its bit-identical NumPy twin); the limits of
  the plugged EVs are computed once between two steps, for the coordinator's view and the step.
  The kernels also tell whether the outputs they make are finite, so the adapter checks them
  without another pass.
- **Users.** An EV parked at a site with chargers plugs in if its user wants to: private users
  below a personal SoC threshold (``behaviour.plug_soc_threshold``), V2G users and the commercial
  fleet always, anyone at a public hub only below ``public_plug_soc``. It takes the first free
  charger of a compatible type in its order of preference, or waits ``patience_min`` and then
  gives up (counted). At departure, the energy it lacks against its need (the rest of its tour
  or its next tour plus a reserve, and at least ``departure_soc_target`` when leaving home or
  the depot) is *unmet energy*; a trip that needs more than the battery holds above ``soc_min``
  is a *short trip* (the missing energy is booked as ``shortfall``, e.g. charged elsewhere).
- **Ageing** (Xu et al. 2018, see :mod:`components.ev.ageing`) is fed every SoC change; calendar
  ageing and the capacity update (capacity = initial x (1 - fade)) happen at each local midnight.
  If a fade leaves more energy in the battery than the new ``soc_max`` allows, the excess is booked
  as ``fade_loss`` so the energy balance of every EV still closes.

Energy balance of every EV (kWh, battery side)::

    charged_grid * eta_c - driven - discharged_grid / eta_d - fade_loss = e_end - e_start

Sign convention: ``p_kw`` per site is drawn from the grid (load convention); V2G discharge is
negative. Time: step ``k`` covers ``[k * step_s, (k + 1) * step_s)`` seconds from ``start``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import simpy

from components.ev.ageing import FleetAgeing
from components.ev.config import EVConfig, weekday_numbers
from ext import Backend, select_kernel

PLAN_AHEAD_DAYS = 2
"""Trip chains exist for today and this many days ahead."""

DAY_S = 86_400
FULL_TOL_KWH = 1e-6
"""A battery this close to its end-of-charge energy counts as full."""

SITE_KINDS = ("home", "workplace", "public", "depot")
HOME, WORKPLACE, PUBLIC, DEPOT = range(4)
CHARGER_TYPES = ("ac7", "ac11", "dc60", "dc120", "v2g")
AC7, AC11, DC60, DC120, V2G = range(5)
AC_TYPES = (AC7, AC11)

COMMUTER, SHIFT_WORKER, COMMERCIAL = range(3)
USER_KINDS = ("commuter", "shift_worker", "commercial")

DEFAULT_SHIFTS: tuple[dict, ...] = (
    {"start": "06:00", "end": "14:00", "days": ["Mon-Sat"]},
    {"start": "14:00", "end": "22:00", "days": ["Mon-Sat"]},
    {"start": "22:00", "end": "06:00", "days": ["Mon-Fri"]},
)
"""Used for shift workers when no factory shift calendar is given: three eight-hour shifts."""


def max_charge_energy_kwh(e_kwh: np.ndarray, cap_kwh: np.ndarray, p_kw: np.ndarray,
                          accept_kw: np.ndarray, eta: float, soc_cv: float, soc_max: float,
                          dt_h: float, end_share: float = 0.0) -> np.ndarray:
    """Grid-side energy a battery takes in ``dt_h`` when charged as fast as allowed [kWh].

    The battery accepts (battery side) ``accept_kw`` up to ``soc_cv`` and then, in the
    constant-voltage phase, ``accept_kw * (soc_max - soc) / (soc_max - soc_cv)``; the charger
    delivers at most ``p_kw`` (grid side), i.e. ``eta * p_kw`` into the battery. So the current is
    constant until the acceptance falls below what the charger delivers (at ``soc_cv`` for a
    charger as strong as the battery, later for a weaker one), then SoC approaches ``soc_max``
    exponentially; charging ends when the acceptance has fallen to ``end_share * accept_kw``, at
    ``soc_full = soc_max - end_share * (soc_max - soc_cv)``. Integrated exactly, no overshoot.

    Parameters
    ----------
    e_kwh, cap_kwh : array
        Stored energy and capacity [kWh].
    p_kw : array
        Charger power limit, grid side [kW] (0 = not charging).
    accept_kw : array
        Power the battery accepts before the CV phase, battery side [kW] (> 0).
    eta : float
        Charge efficiency [-].
    soc_cv, soc_max : float
        Start of the CV phase at full acceptance, and the SoC it tends to [-].
    dt_h : float
        Length of the interval [h].
    end_share : float
        Share of ``accept_kw`` at which charging terminates [-].
    """
    soc0 = e_kwh / cap_kwh
    width = soc_max - soc_cv
    p_batt = np.minimum(p_kw * eta, accept_kw)
    rate = p_batt / cap_kwh  # SoC per hour in the constant-current phase
    soc_x = soc_max - p_batt * width / accept_kw  # acceptance falls below the charger here
    soc1 = soc0 + rate * dt_h
    cv = soc1 > soc_x  # reaches the CV phase within the interval
    if cv.any():
        i = np.flatnonzero(cv)
        s0, r, sx = soc0[i], rate[i], soc_x[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_cc = np.where(r > 0, np.maximum((sx - s0) / r, 0.0), dt_h)
        k_cv = accept_kw[i] / (cap_kwh[i] * width)  # exponential rate of the CV phase [1/h]
        s_start = np.maximum(s0, sx)
        soc1[i] = soc_max - (soc_max - s_start) * np.exp(-k_cv * (dt_h - t_cc))
    soc_full = soc_max - end_share * width
    soc1 = np.clip(soc1, soc0, np.maximum(soc0, soc_full))
    e = (soc1 - soc0) * cap_kwh / eta
    return np.where(e > FULL_TOL_KWH, e, 0.0)


def parse_hhmm(text: str) -> float:
    """``"HH:MM"`` -> hours after midnight."""
    hh, mm = text.split(":")
    h, m = int(hh), int(mm)
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ValueError(f"time {text!r} is not HH:MM within a day")
    return h + m / 60.0


_sum = np.add.reduce
"""NumPy's (pairwise) sum of an array, as ``ndarray.sum`` without its Python layer."""

_ACCOUNTS = ("charged_kwh", "discharged_kwh", "unmet_kwh", "driven_kwh", "shortfall_kwh")
"""Per-EV energy accounts whose fleet sums are KPIs."""


@dataclass
class _Tours:
    """Trip legs of one day for many EVs, flat, grouped in tours (base -> ... -> base)."""

    ev: np.ndarray       # EV of each leg
    tour: np.ndarray     # tour id of each leg (legs of a tour are contiguous and in order)
    start_s: np.ndarray  # planned departure of the tour's first leg, per leg [s from start]
    km: np.ndarray
    dest: np.ndarray     # destination site, -1 = not a charging site
    dwell_s: np.ndarray  # stay after arriving, before the next leg of the same tour [s]


class EVFleet:
    """The EV fleet of a zone, stepped at a fixed resolution.

    Parameters
    ----------
    cfg : EVConfig
        Fleet, vehicle, site, behaviour and ageing parameters.
    site_buses : sequence of int
        Grid bus of each charging site, in ``cfg.sites`` order.
    start : str or datetime
        Start of step 0 (ISO 8601 with offset, e.g. ``"2026-06-01T00:00:00+08:00"``); weekdays,
        months and trip times are local to its offset.
    step_s : int
        Step length [s].
    n_steps : int
        Number of steps the fleet will be run for.
    rng : numpy.random.Generator
        Source of all randomness (fleet, trips).
    shifts : sequence of mapping, optional
        Factory shift calendar, each ``{"start": "HH:MM", "end": "HH:MM", "days": [...]}`` with
        the weekdays the shift starts on as ISO numbers 1 (Mon) .. 7 (Sun), names or ranges
        (``"Mon-Sat"``), as the factory section stores them; other keys are ignored.
        ``DEFAULT_SHIFTS`` when empty.
    temperature_c : callable or array, optional
        Ambient temperature [degC]: a function of seconds from start, or one value per step.
        Default: ``cfg.ambient_temp_c_monthly``.
    log_trips : bool
        Keep every planned trip in ``trip_log`` (for analysis; costs memory on long runs).
    backend : {"auto", "compiled", "numpy"}
        Per-step kernel: the compiled ``ext.evstep`` or its NumPy twin (bit-identical results;
        see :func:`ext.select_kernel`).
    """

    def __init__(self, cfg: EVConfig, site_buses: Sequence[int], start: str | datetime,
                 step_s: int, n_steps: int, rng: np.random.Generator,
                 shifts: Sequence[Mapping] | None = None,
                 temperature_c: Callable[[float], float] | np.ndarray | None = None,
                 log_trips: bool = False, backend: Backend = "auto") -> None:
        if len(site_buses) != len(cfg.sites):
            raise ValueError(
                f"site_buses has {len(site_buses)} entries but the config has "
                f"{len(cfg.sites)} sites"
            )
        if step_s <= 0 or n_steps <= 0:
            raise ValueError(f"step_s and n_steps must be > 0, got {step_s}, {n_steps}")
        self.cfg = cfg
        self.rng = rng
        self.step_s = int(step_s)
        self.n_steps = int(n_steps)
        self.dt_h = self.step_s / 3600.0
        self.site_buses = np.asarray(site_buses, dtype=np.int64)
        self.start = datetime.fromisoformat(start) if isinstance(start, str) else start
        midnight = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        self._t0_local_s = (self.start - midnight).total_seconds()
        self._temperature = temperature_c
        self._shifts = self._parse_shifts(shifts or DEFAULT_SHIFTS)
        self.trip_log: list[dict[str, np.ndarray]] | None = [] if log_trips else None
        self._backend = backend
        self._kernel = select_kernel("evstep", backend)

        self._build_sites()
        self._build_fleet()
        self._init_state()
        self._legs_init()
        self._kernel_args()

        self.env = simpy.Environment()
        self.k = 0
        for d in range(PLAN_AHEAD_DAYS + 1):
            self._plan_day(d)
        self._settle(np.arange(self.n_ev), self.base_site.copy(), 0)
        self.env.process(self._day_process())
        self._boundary(0)

    # ---------------------------------------------------------------- set-up

    @staticmethod
    def _parse_shifts(shifts: Sequence[Mapping]) -> list[tuple[float, float, set[int]]]:
        out = []
        for i, sh in enumerate(shifts):
            try:
                start_h, end_h = parse_hhmm(str(sh["start"])), parse_hhmm(str(sh["end"]))
                days = set(weekday_numbers(sh["days"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"shifts[{i}]: needs start/end 'HH:MM' and days: {exc}") from exc
            if end_h <= start_h:
                end_h += 24.0
            out.append((start_h, end_h, days))
        return out

    def _build_sites(self) -> None:
        sites = self.cfg.sites
        s, t = len(sites), len(CHARGER_TYPES)
        self.n_sites = s
        self.site_kind = np.array([SITE_KINDS.index(x.kind) for x in sites], dtype=np.int64)
        self.n_chargers = np.zeros((s, t), dtype=np.int64)
        self.charger_kw = np.zeros((s, t))
        self.charger_dis_kw = np.zeros((s, t))
        for i, site in enumerate(sites):
            for g in site.chargers:
                j = CHARGER_TYPES.index(g.type)
                self.n_chargers[i, j] = g.count
                self.charger_kw[i, j] = g.charge_kw
                self.charger_dis_kw[i, j] = g.discharge_kw
        self.used = np.zeros((s, t), dtype=np.int64)
        self.patience_steps = np.array(
            [int(np.ceil(x.patience_min * 60 / self.step_s)) for x in sites], dtype=np.int64)
        self.site_has_chargers = self.n_chargers.sum(axis=1) > 0
        c = self.cfg
        self.soc_full = c.soc_max - c.cv_end_power_share * (c.soc_max - c.cv_taper_soc)
        pf = self.cfg.power_factor
        self._q_per_p = float(np.tan(np.arccos(pf))) if pf < 1 else 0.0

    def _weighted_sites(self, kind: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.flatnonzero(self.site_kind == kind)
        w = np.array([self.cfg.sites[i].weight if self.cfg.sites[i].weight is not None
                      else self.cfg.sites[i].n_chargers for i in idx], dtype=float)
        if idx.size and w.sum() <= 0:
            w = np.ones(idx.size)
        return idx, (w / w.sum() if idx.size else w)

    def _build_fleet(self) -> None:
        cfg, rng = self.cfg, self.rng
        n = cfg.fleet_size
        self.n_ev = n
        shares = np.array([cfg.user_mix.commuter, cfg.user_mix.shift_worker,
                           cfg.user_mix.commercial])
        counts = np.floor(shares * n).astype(np.int64)
        rest = np.argsort(-(shares * n - counts), kind="stable")[: n - counts.sum()]
        counts[rest] += 1
        self.user = rng.permutation(np.repeat(np.arange(3, dtype=np.int64), counts))

        table = cfg.vehicle_table()
        self.vehicle_names = list(table)
        self.vehicle = np.zeros(n, dtype=np.int64)
        for users, mix in (((COMMUTER, SHIFT_WORKER), cfg.vehicle_mix),
                           ((COMMERCIAL,), cfg.commercial_vehicle_mix)):
            ids = np.flatnonzero(np.isin(self.user, users))
            names = list(mix)
            p = np.array([mix[k] for k in names])
            pick = rng.choice(len(names), size=ids.size, p=p / p.sum())
            self.vehicle[ids] = [self.vehicle_names.index(names[j]) for j in pick]
        specs = [table[k] for k in self.vehicle_names]
        self.cap0_kwh = np.array([specs[v].capacity_kwh for v in self.vehicle])
        self.kwh_per_km = (np.array([specs[v].consumption_kwh_per_km for v in self.vehicle])
                           * cfg.consumption_factor)
        self.ac_kw = np.array([specs[v].ac_max_kw for v in self.vehicle])
        self.dc_kw = np.array([specs[v].dc_max_kw for v in self.vehicle])
        capable = np.array([specs[v].v2g for v in self.vehicle], dtype=bool)
        self.v2g_kw = np.array([specs[v].v2g_max_kw for v in self.vehicle])
        # battery-side power accepted before the CV phase: the car's DC limit, at least C-rate
        self.accept_kw = np.maximum(self.dc_kw, cfg.charge_acceptance_c_rate * self.cap0_kwh)
        self.willing = rng.random(n) < cfg.v2g_willing_share
        self.v2g_user = capable & self.willing

        # where each EV is based and works
        self.base_site = np.full(n, -1, dtype=np.int64)
        self.work_site = np.full(n, -1, dtype=np.int64)
        private = np.flatnonzero(self.user != COMMERCIAL)
        commercial = np.flatnonzero(self.user == COMMERCIAL)
        for ids, kind, target in ((private, HOME, self.base_site),
                                  (commercial, DEPOT, self.base_site),
                                  (private, WORKPLACE, self.work_site)):
            idx, w = self._weighted_sites(kind)
            if ids.size and idx.size:
                target[ids] = idx[rng.choice(idx.size, size=ids.size, p=w)]
        self.public_sites = np.flatnonzero(self.site_kind == PUBLIC)
        b = cfg.behaviour
        self.commute_km = rng.lognormal(np.log(b.commute_km_median), b.commute_km_sigma, n)
        self.shift = np.full(n, -1, dtype=np.int64)
        shift_ids = np.flatnonzero(self.user == SHIFT_WORKER)
        self.shift[shift_ids] = rng.integers(0, len(self._shifts), shift_ids.size)
        # the EVs of each user kind, and the shift workers of each shift (for the day planner)
        self._of_user = tuple(np.flatnonzero(self.user == u) for u in range(len(USER_KINDS)))
        self._on_shift = [self.shift[shift_ids] == j for j in range(len(self._shifts))]
        # plug-in habit: private users plug in below a personal SoC threshold; V2G users (paid
        # to be available) and fleet vehicles plug in whenever they park at a charging site
        self.plug_soc = rng.uniform(*b.plug_soc_threshold, n)
        self.plug_soc[self.v2g_user | (self.user == COMMERCIAL)] = np.inf

        # charger preference per EV and site kind: the first compatible free type wins. Parked
        # cars leave bidirectional chargers to V2G users and 11 kW points to cars that use them;
        # at public hubs drivers want DC. V2G (bidirectional DC) and DC points need a DC inlet.
        profile = (self.ac_kw > 7.4) * 1 + self.v2g_user * 2 + (self.dc_kw > 0) * 4
        table = np.full((8, 4, len(CHARGER_TYPES)), -1, dtype=np.int64)
        for prof in range(8):
            big_ac, v2g, has_dc = bool(prof & 1), bool(prof & 2), bool(prof & 4)
            ac_order = [AC11, AC7] if big_ac else [AC7, AC11]
            for kind in range(4):
                if kind == PUBLIC:
                    order = [DC120, DC60, V2G, *ac_order]
                elif v2g:
                    order = [V2G, *ac_order, DC60, DC120]
                else:
                    order = [*ac_order, V2G, DC60, DC120]
                ok = [t for t in order if t in AC_TYPES or has_dc]
                table[prof, kind, : len(ok)] = ok
        self.pref = table[profile]

    def _init_state(self) -> None:
        cfg, n = self.cfg, self.n_ev
        lo, hi = cfg.initial_soc
        self.cap_kwh = self.cap0_kwh.copy()
        self.e_kwh = self.rng.uniform(lo, hi, n) * self.cap_kwh
        self.e_start_kwh = self.e_kwh.copy()
        self.site = np.full(n, -1, dtype=np.int64)
        self.driving = np.zeros(n, dtype=bool)
        self.plug = np.full(n, -1, dtype=np.int64)      # charger type while plugged
        self.waiting = np.zeros(n, dtype=bool)
        self.wait_since = np.zeros(n, dtype=np.int64)
        self.wait_until = np.zeros(n, dtype=np.int64)
        self.wants = np.zeros(n, dtype=bool)            # intends to charge during this stay
        self.req_kwh = np.zeros(n)                      # energy wanted in the battery at departure
        self.next_dep = np.zeros(n, dtype=np.int64)     # step of the next departure
        self.p_ch_lim = np.zeros(n)                     # grid-side charge limit while plugged
        self.p_dis_lim = np.zeros(n)                    # grid-side discharge limit while plugged
        # per-EV energy accounts [kWh]
        self.charged_kwh = np.zeros(n)
        self.discharged_kwh = np.zeros(n)
        self.driven_kwh = np.zeros(n)
        self.shortfall_kwh = np.zeros(n)
        self.fade_loss_kwh = np.zeros(n)
        self.unmet_kwh = np.zeros(n)
        # fleet sums of the accounts above and the mean fade, for the KPIs: each is dropped
        # when its account changes (most steps change only the charged energy)
        self._totals: dict[str, float] = {}
        # fleet counters
        self.trips = 0
        self.trips_short = 0
        self.plug_refusals = 0
        self.clamped_total = 0
        self._e_sum_day = np.zeros(n)
        self._steps_in_day = 0
        self.ageing = FleetAgeing(self.e_kwh / self.cap_kwh, cfg.ageing, backend=self._backend)
        self.fade = np.zeros(n)
        self._plugged = np.zeros(0, dtype=np.int64)
        self._plugged_buf = np.zeros(n, dtype=np.int64)
        self._plugged_dirty = False
        self.charging = np.zeros(n, dtype=bool)  # plugged and not yet full
        self._charging_u8 = self.charging.view(np.uint8)  # the kernel's views of them
        self._waiting_u8 = self.waiting.view(np.uint8)
        self._v2g_user_u8 = self.v2g_user.view(np.uint8)
        self._driving_u8 = self.driving.view(np.uint8)
        self._wants_u8 = self.wants.view(np.uint8)
        self._has_chargers_u8 = self.site_has_chargers.view(np.uint8)
        # work buffers of the trip events (unmet energies, destinations, site kinds)
        self._unmet_buf = np.zeros(n)
        self._dest_buf = np.zeros(n, dtype=np.int64)
        self._kind_buf = np.zeros(n, dtype=np.int64)
        self._idle_buf = np.zeros(n, dtype=np.int64)  # parked EVs that get their first leg
        self._charging_ids: np.ndarray | None = None
        # limits of the EVs plugged now, valid until the next step changes any state
        self._plugged_lim: tuple[np.ndarray, np.ndarray] | None = None
        # work buffers of the per-step kernel (EVs in the CV phase, moving EVs)
        self._cv_pos = np.zeros(n, dtype=np.int64)
        self._cv_arg = np.zeros(n)
        self._cv_exp = np.zeros(n)
        self._cv_start = np.zeros(n)
        self._ch_kw = np.zeros(n)
        self._dis_kw = np.zeros(n)
        self._no_setpoints = np.zeros(0)
        self._lim_args = (cfg.charge_efficiency, cfg.discharge_efficiency, cfg.cv_taper_soc,
                          cfg.soc_max, cfg.cv_end_power_share, cfg.min_soc_v2g, self.dt_h,
                          FULL_TOL_KWH)
        # the constants of limits_cv: eta_c, soc_cv, soc_max, end_share, dt_h, tol
        self._cv_args = tuple(self._lim_args[i] for i in (0, 2, 3, 4, 6, 7))
        self._cv_bufs = (self._cv_pos, self._cv_arg, self._cv_start)
        # the limits of the EVs plugged now, as the last plugged_view computed them
        self._lim_max = np.zeros(n)
        self._lim_min = np.zeros(n)
        self._capacity_changed = False
        self._queue_dirty = False
        self._n_waiting = 0
        # results of the last step
        self.p_site_kw = np.zeros(self.n_sites)
        self.q_site_kvar = np.zeros(self.n_sites)
        self.sites_finite = True  # every value of the four site arrays (the kernel checks them)
        self.view_finite = True  # every value of the last plugged_view
        self.charge_kw = 0.0
        self.discharge_kw = 0.0
        self.charge_site_kw = np.zeros(self.n_sites)
        self.discharge_site_kw = np.zeros(self.n_sites)
        self.clamped_count = 0
        self.unmet_step_kwh = 0.0

    # ---------------------------------------------------------------- time helpers

    def _day_start_step(self, d: int) -> int:
        """First step at or after local midnight of day ``d`` (day 0 = the start date)."""
        t = d * DAY_S - self._t0_local_s
        return max(0, int(np.ceil(t / self.step_s - 1e-9)))

    def _day_offset_s(self, d: int) -> float:
        """Seconds from the start to local midnight of day ``d`` (negative for day 0 if the start
        is not at midnight)."""
        return d * DAY_S - self._t0_local_s

    def _date(self, d: int) -> datetime:
        return self.start + timedelta(days=d)

    def temperature_of_day(self, d: int) -> float:
        """Mean ambient temperature of local day ``d`` [degC]."""
        k0, k1 = self._day_start_step(d), self._day_start_step(d + 1)
        temp = self._temperature
        if temp is None:
            return float(self.cfg.ambient_temp_c_monthly[self._date(d).month - 1])
        steps = np.arange(k0, max(k1, k0 + 1))
        if callable(temp):
            return float(np.mean([temp(float(k * self.step_s)) for k in steps]))
        arr = np.asarray(temp, dtype=float)
        return float(arr[np.clip(steps, 0, arr.size - 1)].mean())

    # ---------------------------------------------------------------- trip chains

    def _legs_init(self) -> None:
        b = self.cfg.behaviour
        per_day = max(b.commercial_stops_max + 1, 2 + 2 + 2)
        self._m = (PLAN_AHEAD_DAYS + 2) * per_day + 2
        n, m = self.n_ev, self._m
        self.leg_dep = np.zeros((n, m), dtype=np.int64)
        self.leg_arr = np.zeros((n, m), dtype=np.int64)
        self.leg_km = np.zeros((n, m))
        self.leg_dest = np.zeros((n, m), dtype=np.int64)
        self.leg_rest_km = np.zeros((n, m))  # km of this leg and the rest of its tour
        self.leg_seq = np.zeros((n, m), dtype=np.int64)  # filing (planning call) of each leg
        self._filings = 0
        # each EV's next event: its departure (parked) or arrival (driving) at step evt_step
        # (-1 = none planned), of a leg of filing evt_seq; the events of a step are taken in
        # filing order, as planned
        self.evt_step = np.full(n, -1, dtype=np.int64)
        self.evt_seq = np.zeros(n, dtype=np.int64)
        self._dep_buf = np.zeros(n, dtype=np.int64)
        self._arr_buf = np.zeros(n, dtype=np.int64)
        self.head = np.zeros(n, dtype=np.int64)  # legs done (or under way: see `driving`)
        self.tail = np.zeros(n, dtype=np.int64)  # legs planned
        self.last_arr = np.full(n, -1, dtype=np.int64)
        self._set_horizon(0)

    def _kernel_args(self) -> None:
        """The arguments the kernel's per-step calls share: the same arrays all run long (they
        are changed in place) and the constants of the fleet."""
        cfg, ag = self.cfg, self.ageing
        turns = (ag.last_dir, ag.extreme, ag.tp_buf, ag.tp_n)
        # advance, around the step's own arrays
        self._battery_args = (self.e_kwh, self.cap_kwh, self.charged_kwh, self.discharged_kwh,
                              self.site)
        self._advance_args = (*turns, self._charging_u8, self.dt_h, cfg.charge_efficiency,
                              cfg.discharge_efficiency, self.soc_full, FULL_TOL_KWH, self._ch_kw,
                              self._dis_kw)
        self._depart_args = (self.leg_dep, self.leg_arr, self.evt_step, self.leg_km, self.head,
                             self._driving_u8, self.plug, self.site, self.used,
                             self._charging_u8, self._wants_u8, self._waiting_u8, self.req_kwh,
                             self.e_kwh, self.cap_kwh, self.kwh_per_km, cfg.soc_min,
                             self.unmet_kwh, self.driven_kwh, self.shortfall_kwh, self.p_ch_lim,
                             self.p_dis_lim, *turns, self._unmet_buf)
        self._limit_state = (self.e_kwh, self.cap_kwh, self.p_ch_lim, self.accept_kw,
                             self.p_dis_lim)  # (view_cc, up to its constants)
        self._view_state = (self.site, self.req_kwh, self.next_dep, self.step_s)
        self._due_args = (self.evt_step, self.evt_seq, self._driving_u8, self._dep_buf,
                          self._arr_buf)
        self._arrive_args = (self.leg_arr, self.leg_dest, self.head, self._driving_u8,
                             self._dest_buf)
        # parking (settle, arrive), up to the trip planning
        self._settle_args = (self.site, self.site_kind, self._has_chargers_u8,
                             self.patience_steps, self.e_kwh, self.plug_soc,
                             cfg.behaviour.public_plug_soc, PUBLIC, self._wants_u8,
                             self._waiting_u8, self.wait_since, self.wait_until, self._kind_buf)
        self._queue_args = (self._waiting_u8, self.wait_since, self.wait_until, self.site,
                            self.site_kind, self.pref, self.n_chargers, self.used, self.plug,
                            self._charging_u8, self.e_kwh, self.cap_kwh, self.soc_full,
                            FULL_TOL_KWH, self.ac_kw, self.dc_kw, self.charger_kw,
                            self.charger_dis_kw, self._v2g_user_u8, self.v2g_kw, self.p_ch_lim,
                            self.p_dis_lim, AC11, V2G)

    def _set_horizon(self, step: int) -> None:
        """Trips are planned up to step ``step`` (excluded); sets the arguments of the kernel's
        trip planning (``next_trip``, tail of ``settle``)."""
        cfg = self.cfg
        self._horizon_step = step
        self._plan_args = (self.leg_dep, self.leg_rest_km, self.leg_seq, self.evt_step,
                           self.evt_seq, self.next_dep, self.req_kwh, self.cap_kwh,
                           self.kwh_per_km, step,
                           cfg.soc_min + cfg.trip_reserve_soc, cfg.departure_soc_target,
                           self.soc_full, HOME, DEPOT)

    def _leisure(self, ids: np.ndarray, day0_s: float, start_h: np.ndarray
                 ) -> list[tuple]:
        """Round trips home -> leisure place -> home for ``ids`` starting at ``start_h``."""
        b, rng = self.cfg.behaviour, self.rng
        km = rng.lognormal(np.log(b.leisure_km_median), b.leisure_km_sigma, ids.size)
        dest = np.full(ids.size, -1, dtype=np.int64)
        if self.public_sites.size:
            to_hub = rng.random(ids.size) < b.leisure_public_share
            dest[to_hub] = rng.choice(self.public_sites, size=int(to_hub.sum()))
        dwell = rng.uniform(*b.leisure_dwell_h, ids.size) * 3600
        home = self.base_site[ids]
        start = day0_s + start_h * 3600
        return [(ids, start, km, dest, dwell), (ids, start, km, home, np.zeros(ids.size))]

    def _draw_day(self, d: int) -> _Tours:
        """Draw the trip chains of local day ``d`` for the whole fleet."""
        b, rng = self.cfg.behaviour, self.rng
        weekday = self._date(d).isoweekday()  # 1 = Monday, as in the factory shift calendars
        day0 = self._day_offset_s(d)
        tours: list[list[tuple]] = []  # each tour: legs (ids, start_s, km, dest, dwell_s)

        # commuters
        com = self._of_user[COMMUTER]
        off = com
        if weekday in b.workdays and com.size:
            go = rng.random(com.size) < b.workday_share
            ids, off = com[go], com[~go]
            leave = np.clip(rng.normal(b.leave_home_h_mean, b.leave_home_h_std, ids.size),
                            4.5, 11.0)
            work = np.clip(rng.normal(b.work_hours_mean, b.work_hours_std, ids.size), 3.0, 14.0)
            km = self.commute_km[ids]
            tours.append([(ids, day0 + leave * 3600, km, self.work_site[ids], work * 3600),
                          (ids, day0 + leave * 3600, km, self.base_site[ids],
                           np.zeros(ids.size))])
            eve = rng.random(ids.size) < b.leisure_prob_workday
            if eve.any():
                back_h = leave[eve] + work[eve] + km[eve] / b.speed_kmh + 1.0
                start_h = back_h + rng.uniform(0.0, 2.0, int(eve.sum()))
                tours.append(self._leisure(ids[eve], day0, np.minimum(start_h, 22.0)))
        self._add_offday(tours, off, day0)

        # shift workers
        sw = self._of_user[SHIFT_WORKER]
        on_shift = np.zeros(sw.size, dtype=bool)
        for j, (start_h, end_h, days) in enumerate(self._shifts):
            if weekday not in days:
                continue
            sel = self._on_shift[j]
            on_shift |= sel
            ids = sw[sel]
            if ids.size == 0:
                continue
            km = self.commute_km[ids]
            drive_h = km / b.speed_kmh
            lead_h = rng.uniform(*b.shift_lead_min, ids.size) / 60.0
            leave_h = start_h - drive_h - lead_h
            stay = (end_h - start_h + lead_h + rng.uniform(5, 20, ids.size) / 60.0) * 3600
            tours.append([(ids, day0 + leave_h * 3600, km, self.work_site[ids], stay),
                          (ids, day0 + leave_h * 3600, km, self.base_site[ids],
                           np.zeros(ids.size))])
        self._add_offday(tours, sw[~on_shift], day0)

        # commercial fleet
        cm = self._of_user[COMMERCIAL]
        if weekday in b.commercial_days and cm.size:
            leave = np.clip(rng.normal(b.commercial_leave_h_mean, b.commercial_leave_h_std,
                                       cm.size), 4.0, 14.0)
            stops = np.clip(rng.poisson(b.commercial_stops_mean, cm.size), 1,
                            b.commercial_stops_max)
            hub_stop = np.full(cm.size, -1)
            if self.public_sites.size:
                use_hub = rng.random(cm.size) < b.commercial_hub_prob
                hub_stop[use_hub] = stops[use_hub] // 2
                hub_site = rng.choice(self.public_sites, size=cm.size)
            start = day0 + leave * 3600
            legs = []
            for j in range(b.commercial_stops_max + 1):
                active = stops >= j  # j == stops is the way back to the depot
                if not active.any():
                    break
                a = np.flatnonzero(active)
                km = rng.lognormal(np.log(b.commercial_leg_km_median),
                                   b.commercial_leg_km_sigma, a.size)
                back = stops[a] == j
                dest = np.where(back, self.base_site[cm[a]], -1)
                dwell = rng.uniform(*b.commercial_dwell_min, a.size) * 60
                at_hub = hub_stop[a] == j
                if at_hub.any():
                    dest[at_hub] = hub_site[a[at_hub]]
                    dwell[at_hub] = rng.uniform(45, 75, int(at_hub.sum())) * 60
                dwell[back] = 0.0
                legs.append((a, km, dest, dwell))
            tours.append(self._commercial_tour(cm, start, legs))
        return self._flatten(tours)

    def _add_offday(self, tours: list, ids: np.ndarray, day0: float) -> None:
        b = self.cfg.behaviour
        if ids.size == 0:
            return
        go = self.rng.random(ids.size) < b.leisure_prob_offday
        if go.any():
            start_h = np.clip(self.rng.normal(11.0, 2.5, int(go.sum())), 8.0, 20.0)
            tours.append(self._leisure(ids[go], day0, start_h))

    @staticmethod
    def _commercial_tour(cm: np.ndarray, start: np.ndarray, legs: list) -> list[tuple]:
        out = []
        for a, km, dest, dwell in legs:
            out.append((cm[a], start[a], km, dest, dwell))
        return out

    @staticmethod
    def _flatten(tours: list[list[tuple]]) -> _Tours:
        """Merge tour blocks; a block's legs of the same EV form one tour, in list order.

        Each leg's ``start`` is an array over its ``ids``, as the tour builders draw it."""
        legs = [(b, order, leg) for b, block in enumerate(tours) for order, leg in enumerate(block)]
        if not legs:
            z = np.zeros(0)
            return _Tours(z.astype(np.int64), z.astype(np.int64), z, z, z.astype(np.int64), z)
        sizes = [leg[0].size for _, _, leg in legs]
        ev = np.concatenate([leg[0] for _, _, leg in legs])
        tour = ev + np.repeat(np.array([b << 32 for b, _, _ in legs], dtype=np.int64), sizes)
        order = np.repeat(np.array([o for _, o, _ in legs], dtype=np.int64), sizes)
        start, km, dest, dwell = (np.concatenate([leg[i] for _, _, leg in legs])
                                  for i in range(1, 5))
        idx = np.argsort(tour * 64 + order, kind="stable")  # by tour (unique per block and EV)
        return _Tours(ev[idx].astype(np.int64), tour[idx], start[idx].astype(float),
                      km[idx].astype(float), dest[idx].astype(np.int64),
                      dwell[idx].astype(float))

    def _plan_day(self, d: int) -> None:
        """Draw day ``d``, snap it to steps and append it to each EV's legs (one filing)."""
        t = self._draw_day(d)
        b = self.cfg.behaviour
        if t.ev.size:
            first = np.r_[True, t.tour[1:] != t.tour[:-1]]
            tour_id = np.cumsum(first) - 1
            drive_s = t.km / b.speed_kmh * 3600 * self.rng.uniform(0.85, 1.25, t.ev.size)
            # planned (continuous) departure of each leg: tour start + previous drives and stays
            step_len = drive_s + t.dwell_s
            csum = np.cumsum(step_len)
            tour_first = np.flatnonzero(first)
            before = csum - step_len
            dep_s = t.start_s + before - before[tour_first][tour_id]
            # drop tours that would begin before the start of the run
            keep_tour = dep_s[tour_first] >= 0
            keep = keep_tour[tour_id]
            rest = np.cumsum(t.km[::-1])[::-1]
            tour_end = np.r_[tour_first[1:], t.ev.size] - 1
            rest_km = rest - np.r_[rest[1:], 0.0][tour_end][tour_id]
            self._append_legs(t.ev[keep], dep_s[keep], drive_s[keep], t.km[keep],
                              t.dest[keep], rest_km[keep])
        self._set_horizon(self._day_start_step(d + 1))
        # parked EVs with still no trip planned: "not before the end of the horizon"
        self.next_dep[(self.head == self.tail) & ~self.driving] = self._horizon_step

    def _append_legs(self, ev: np.ndarray, dep_s: np.ndarray, drive_s: np.ndarray,
                     km: np.ndarray, dest: np.ndarray, rest_km: np.ndarray) -> None:
        if ev.size == 0:
            return
        dep_nom = np.rint(dep_s / self.step_s).astype(np.int64)
        order = np.argsort(ev * (1 << 32) + dep_nom, kind="stable")  # by EV, then time
        ev, dep_nom, drive_s, km, dest, rest_km = (x[order] for x in
                                                   (ev, dep_nom, drive_s, km, dest, rest_km))
        n_drive = np.maximum(1, np.rint(drive_s / self.step_s).astype(np.int64))
        dep, arr = np.empty_like(dep_nom), np.empty_like(dep_nom)
        n_idle = self._kernel.append_legs(
            ev, dep_nom, n_drive, km, dest, rest_km, self.head, self.tail, self.last_arr,
            self._driving_u8, self.leg_dep, self.leg_arr, self.leg_km, self.leg_dest,
            self.leg_rest_km, self.leg_seq, self._filings, dep, arr, self._idle_buf)
        if n_idle < 0:
            raise RuntimeError("EV leg buffer overflow: too many trips planned ahead")
        self._filings += 1
        if dep.min() < self.env.now:
            raise RuntimeError(f"EV trip planned at step {int(dep.min())}, before the current "
                               f"step {self.env.now}")
        idle = self._idle_buf[:n_idle]
        if idle.size:  # parked EVs that had no trip planned now know their next one
            self._next_trip(idle)
        if self.trip_log is not None:
            run = dep < self.n_steps
            self.trip_log.append({"ev": ev[run], "dep_step": dep[run], "arr_step": arr[run],
                                  "km": km[run], "dest": dest[run]})

    def _day_process(self):
        """SimPy process: at every local midnight, age the batteries and plan ahead."""
        d = 0
        while True:
            d += 1
            nxt = self._day_start_step(d)
            if nxt <= self.env.now:
                continue
            yield self.env.timeout(nxt - self.env.now)
            self._end_of_day(d - 1)
            self._plan_day(d + PLAN_AHEAD_DAYS)

    # ---------------------------------------------------------------- boundary events

    def _boundary(self, k: int) -> None:
        """Apply everything due at the start of step ``k``: departures, arrivals, queues."""
        env = self.env
        while env.peek() <= k:  # the day planner, at local midnight
            env.step()
        if k < self.n_steps:  # (the boundary after the last step has no events)
            n_dep, n_arr = self._kernel.due(k, *self._due_args)
            if n_dep:
                self._depart(self._dep_buf[:n_dep], k)
            if n_arr:
                self._arrive(self._arr_buf[:n_arr], k)
        if self._queue_dirty:  # new EVs wait, or chargers were freed while EVs wait
            self._serve_queue(k)
            self._queue_dirty = False
        elif self._n_waiting:
            self._expire(k)
        if self._plugged_dirty:
            n = self._kernel.plugged(self.plug, self._plugged_buf)
            self._plugged = self._plugged_buf[:n].copy()
            self._plugged_dirty = False
        if self._capacity_changed:
            self._refresh_charging()
            self._capacity_changed = False
        self._plugged_lim = None

    def _depart(self, ids: np.ndarray, k: int) -> None:
        """EVs ``ids`` (int64) leave at step ``k``: unplug, book unmet energy, take the trip's
        energy."""
        res = self._kernel.depart(ids, k, *self._depart_args)
        if res is None:
            raise RuntimeError(f"EV trip plan inconsistent at step {k}")
        n_unplugged, n_unmet, gave_up, n_short, flush, short_kwh = res
        totals = self._totals
        totals.pop("driven_kwh", None)
        if short_kwh:
            totals.pop("shortfall_kwh", None)
        if n_unplugged:
            self._charging_ids = None
            self._plugged_dirty = True
            self._queue_dirty |= self._n_waiting > 0
        # NumPy's (pairwise) sum, as over the unmet energies of these EVs (0 if all are 0)
        unmet_kwh = float(_sum(self._unmet_buf[:n_unmet])) if n_unmet else 0.0
        if unmet_kwh:  # a zero sum of energies >= 0: no EV added any
            self.unmet_step_kwh += unmet_kwh
            totals.pop("unmet_kwh", None)
        self.plug_refusals += gave_up  # still waiting when leaving
        self._n_waiting -= gave_up
        self.trips += ids.size
        self.trips_short += n_short
        if flush:  # a turning-point buffer is full
            self.ageing.flush()

    def _arrive(self, ids: np.ndarray, k: int) -> None:
        """EVs ``ids`` (int64) reach the destination of their leg at step ``k`` and settle
        there."""
        n_wait = self._kernel.arrive(ids, k, *self._arrive_args, *self._settle_args, self.tail,
                                     *self._plan_args)
        if n_wait < 0:
            raise RuntimeError(f"EV trip plan inconsistent at step {k}")
        self._waiters(n_wait)

    def _next_trip(self, ids: np.ndarray) -> np.ndarray:
        """Set next departure and energy wanted then for parked EVs ``ids``; return site kinds.

        Users want enough for the rest of their tour (or the next tour, at home or the depot)
        plus a reserve, and at least ``departure_soc_target`` when leaving home or the depot.
        Without a planned trip (none within the planning horizon yet) the departure is the end
        of the horizon.
        """
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        a = self._plan_args
        self._kernel.next_trip(ids, self.head, self.tail, *a[:8], self.site, self.site_kind,
                               *a[8:], self._kind_buf)
        return self._kind_buf[: ids.size].copy()

    def _settle(self, ids: np.ndarray, dest: np.ndarray, k: int) -> None:
        """EVs ``ids`` park at ``dest`` (-1 = no charging site) at step ``k``."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        dest = np.ascontiguousarray(dest, dtype=np.int64)
        n_wait = self._kernel.settle(ids, dest, k, *self._settle_args, self.head, self.tail,
                                     *self._plan_args)
        self._waiters(n_wait)

    def _waiters(self, n_wait: int) -> None:
        """``n_wait`` EVs just started waiting for a charger."""
        if n_wait:
            self._queue_dirty = True
            self._n_waiting += n_wait

    def _serve_queue(self, k: int) -> None:
        """Plug waiting EVs into free compatible chargers, first come first served; then let
        EVs whose patience ran out give up (plug refusals).

        Each waiting EV tries its preferred charger type first; an EV that finds none of that
        type free tries its next preference in the following round.
        """
        n_plugged, n_expired, self._n_waiting = self._kernel.serve_queue(k, *self._queue_args)
        if n_plugged:
            self._plugged_dirty = True
            self._charging_ids = None
        self.plug_refusals += n_expired

    def _expire(self, k: int) -> None:
        """Waiting EVs whose patience ran out give up: plug refusals."""
        expired = np.flatnonzero(self.waiting & (self.wait_until <= k))
        if expired.size:
            self.plug_refusals += expired.size
            self.waiting[expired] = False
        self._n_waiting = int(self.waiting.sum())

    # ---------------------------------------------------------------- daily ageing

    def _end_of_day(self, d: int) -> None:
        """Calendar ageing of day ``d`` and the capacity update (at the following midnight)."""
        if self._steps_in_day == 0:
            return
        mean_soc = self._e_sum_day / self._steps_in_day / self.cap_kwh
        duration_s = self._steps_in_day * self.step_s
        self._e_sum_day[:] = 0.0
        self._steps_in_day = 0
        if not self.cfg.ageing.enabled:
            return
        temp = self.temperature_of_day(d)
        self.ageing.temp_c = temp
        self.ageing.add_calendar(mean_soc, temp, duration_s)
        self.fade = self.ageing.fade()
        self._totals.pop("fade", None)
        np.multiply(self.cap0_kwh, 1.0 - self.fade, out=self.cap_kwh)  # in place: kept in args
        self._capacity_changed = True
        e_cap = self.cfg.soc_max * self.cap_kwh
        excess = np.maximum(self.e_kwh - e_cap, 0.0)
        if excess.any():
            self.fade_loss_kwh += excess
            self.e_kwh -= excess

    # ---------------------------------------------------------------- the step

    def limits(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean grid-side power limits over the next step of plugged EVs ``ids`` [kW].

        Returns ``(p_max, p_min)``: the most it can charge (taper, ``soc_max``) and the most it can
        discharge as a negative number (0 unless V2G is allowed and SoC is above ``min_soc_v2g``).
        The same numbers as :func:`max_charge_energy_kwh` ``/ dt_h``, computed by the kernel.
        """
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        n = ids.size
        p_max, p_min = np.empty(n), np.empty(n)
        n_cv = self._kernel.limits_cc(ids, self.e_kwh, self.cap_kwh, self.p_ch_lim,
                                      self.accept_kw, self.p_dis_lim, *self._lim_args, p_max,
                                      p_min, self._cv_pos, self._cv_arg, self._cv_start)
        if n_cv:
            self._limits_cv(n_cv, ids, p_max, p_max)
        return p_max, p_min

    def _limits_cv(self, n_cv: int, ids: np.ndarray, p_max: np.ndarray,
                   p_max_copy: np.ndarray) -> bool:
        """Finish ``p_max`` (and ``p_max_copy``) of the ``n_cv`` EVs the kernel found entering
        the CV phase; whether every value is finite."""
        # NumPy's exp for the CV phase, as in max_charge_energy_kwh (bit-identical)
        np.exp(self._cv_arg[:n_cv], out=self._cv_exp[:n_cv])
        return self._kernel.limits_cv(n_cv, self._cv_pos, self._cv_exp, self._cv_start, ids,
                                      self.e_kwh, self.cap_kwh, *self._cv_args, p_max,
                                      p_max_copy)

    def _plugged_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """``limits`` of the EVs plugged now: computed once between two steps, by the
        coordinator's view or else here (the next controlled step needs the same numbers)."""
        if self._plugged_lim is None:
            self._plugged_lim = self.limits(self._plugged)
        return self._plugged_lim

    def step(self, k: int, p_set_kw: np.ndarray | None = None) -> None:
        """Advance over step ``k`` (``[t_k, t_k+1)``), then apply the events at ``t_k+1``.

        Parameters
        ----------
        k : int
            Step index; steps must be called in order 0, 1, 2, ...
        p_set_kw : array over all EVs, optional
            Mean power setpoint for the step [kW], positive charges, negative discharges; NaN =
            uncontrolled for that EV (charge at the maximum until full). ``None``: the whole fleet
            is uncontrolled. Applies to the EVs plugged at ``t_k``; setpoints outside the EV's
            limits are clipped and counted in ``clamped_count``, and so are non-zero setpoints for
            EVs that are not plugged. Infinite setpoints are an error (nothing is changed).
        """
        if k != self.k:
            raise ValueError(f"EVFleet.step: expected step {self.k}, got {k}")
        if p_set_kw is None:
            # uncontrolled: only EVs below their end-of-charge energy draw power
            if self._charging_ids is None:
                self._charging_ids = np.flatnonzero(self.charging)
            ids = self._charging_ids
            p_max, p_min = self.limits(ids)
            p_set, controlled = self._no_setpoints, False
        else:
            p_set = np.ascontiguousarray(p_set_kw, dtype=float)
            if p_set.shape != (self.n_ev,):
                raise ValueError(
                    f"p_set_kw must have one value per EV ({self.n_ev}), got {p_set.shape}")
            ids = self._plugged
            p_max, p_min = self._plugged_limits()
            controlled = True
        # the site results of the step, new arrays each step (receivers may keep them)
        p_site_kw, q_site_kvar, ch_site_kw, dis_site_kw = np.zeros((4, self.n_sites))
        res = self._kernel.advance(
            ids, p_set, controlled, self.plug, p_max, p_min, *self._battery_args, p_site_kw,
            *self._advance_args, ch_site_kw, dis_site_kw, self._q_per_p, q_site_kvar,
            self._e_sum_day)
        if res is None:
            raise ValueError("p_set_kw has infinite values (NaN means uncontrolled)")
        n_moving, clamped, flush, self.sites_finite, n_dis = res
        if flush:  # a turning-point buffer is full
            self.ageing.flush()
        self._charging_ids = None
        self.clamped_count = clamped
        self.clamped_total += clamped
        self.p_site_kw, self.q_site_kvar = p_site_kw, q_site_kvar
        # what each site metered, both ways: one EV may charge while another feeds back
        self.charge_site_kw, self.discharge_site_kw = ch_site_kw, dis_site_kw
        # NumPy's (pairwise) sums over the moving EVs, 0 where all are 0
        self.charge_kw = float(_sum(self._ch_kw[:n_moving])) if n_moving > n_dis else 0.0
        self.discharge_kw = float(_sum(self._dis_kw[:n_moving])) if n_dis else 0.0
        # a zero sum of powers >= 0: no EV changed that account
        if self.charge_kw:
            self._totals.pop("charged_kwh", None)
        if self.discharge_kw:
            self._totals.pop("discharged_kwh", None)
        self._steps_in_day += 1  # (the kernel added the energies to _e_sum_day)
        self.unmet_step_kwh = 0.0
        self.k = k + 1
        self._boundary(self.k)

    def _refresh_charging(self) -> None:
        pl = self._plugged
        self.charging[pl] = self.e_kwh[pl] < self.soc_full * self.cap_kwh[pl] - FULL_TOL_KWH
        self._charging_ids = None

    # ---------------------------------------------------------------- views and results

    @property
    def soc(self) -> np.ndarray:
        """State of charge of every EV [-]."""
        return self.e_kwh / self.cap_kwh

    @property
    def n_plugged(self) -> int:
        """Number of EVs plugged now (the start of the next step)."""
        return int(self._plugged.size)

    def plugged_view(self) -> dict[str, np.ndarray]:
        """The EVs plugged now (the start of the next step), for a coordinator.

        Keys: ``plugged_ids``, ``plugged_site``, ``plugged_soc``, ``plugged_need_kwh`` (battery-side
        energy still needed by the planned departure), ``plugged_departure_s`` (seconds from
        start; the end of the planned horizon if no trip is planned yet), ``plugged_p_max_kw``,
        ``plugged_p_min_kw`` (mean powers achievable over the next step; p_min < 0 only when V2G
        is allowed) and ``plugged_v2g``. ``view_finite`` tells afterwards whether every value is
        finite (the kernels check what they write).
        """
        ids = self._plugged
        n = ids.size
        # new arrays each call, the kernel fills them (receivers may keep or change them)
        soc, need, dep, p_max, p_min = np.empty((5, n))
        ids_out, site = np.empty((2, n), dtype=np.int64)
        v2g = np.empty(n, dtype=bool)
        # the limits with the view, in one pass: the next controlled step uses the fleet's own
        # copy (a receiver may change the view's)
        lim = self._lim_max[:n], self._lim_min[:n]
        n_cv, finite = self._kernel.view_cc(
            ids, *self._limit_state, *self._lim_args, *lim, *self._cv_bufs, *self._view_state,
            ids_out, site, soc, need, dep, p_max, p_min, v2g.view(np.uint8))
        if n_cv and not self._limits_cv(n_cv, ids, lim[0], p_max):
            finite = False
        self.view_finite = finite
        self._plugged_lim = lim
        return {
            "plugged_ids": ids_out,
            "plugged_site": site,
            "plugged_soc": soc,
            "plugged_need_kwh": need,
            "plugged_departure_s": dep,
            "plugged_p_max_kw": p_max,
            "plugged_p_min_kw": p_min,
            "plugged_v2g": v2g,
        }

    def energy_balance_error_kwh(self) -> np.ndarray:
        """Per-EV residual of the battery energy balance [kWh]; zero up to rounding."""
        cfg = self.cfg
        lhs = (self.charged_kwh * cfg.charge_efficiency - self.driven_kwh
               - self.discharged_kwh / cfg.discharge_efficiency - self.fade_loss_kwh)
        return lhs - (self.e_kwh - self.e_start_kwh)

    def kpis(self) -> dict[str, float]:
        """Fleet totals since the start (units in the key names).

        The capacity fade is the one of the last local midnight, when capacities are updated.
        """
        totals = self._totals
        if len(totals) <= len(_ACCOUNTS):  # some changed since the last call: sum them again
            for account in _ACCOUNTS:
                if account not in totals:
                    totals[account] = float(_sum(getattr(self, account)))
            if "fade" not in totals:
                totals["fade"] = float(100 * self.fade.mean())
        return {
            "ev_charge_energy_mwh": totals["charged_kwh"] / 1000,
            "ev_discharge_energy_mwh": totals["discharged_kwh"] / 1000,
            "ev_unmet_energy_mwh": totals["unmet_kwh"] / 1000,
            "ev_trips_short": int(self.trips_short),
            "ev_plug_refusals": int(self.plug_refusals),
            "ev_capacity_fade_pct_mean": totals["fade"],
            "ev_driven_energy_mwh": totals["driven_kwh"] / 1000,
            "ev_trip_shortfall_mwh": totals["shortfall_kwh"] / 1000,
            "ev_trips": int(self.trips),
            "ev_setpoints_clamped": int(self.clamped_total),
        }
