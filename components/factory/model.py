"""Factory loads as SimPy processes with exact step means.

All factories of a scenario share one :class:`simpy.Environment`; its clock counts seconds from
the scenario start. Calendar arithmetic (weekdays, shift clock times, holidays) is done in the
time zone of the start timestamp.

Processes
---------
Per production line, a SimPy process waits for each working window (merged shifts on working
days) and then runs the window for every machine of the line: a warm-up at idle power, then a
renewal sequence of job slots ``idle gap -> processing -> (breakdown: repair) -> (every N-th
job: set-up)`` until the window closes, after which the machine is off. Each machine is simulated
on its own (machine groups are expanded), with seeded random job durations (log-normal), idle
gaps (exponential), per-job power share (normal, clipped to the rating), breakdowns with an
operating-time hazard ``1/mtbf`` and gamma repair times. The job slots are drawn in bulk with
NumPy, a window (cut at local midnights, the slot in progress carried over) at a time, instead of
one heap event per job; this keeps a year of several 50-machine factories at a few seconds. A
repair that outlasts a window delays the machine in the next one, and the set-up counter carries
over.

Per factory, a building process emits each local day's always-on floor of the base loads and an
occupancy process the working-hours part (from the warm-up to the end of each window); the
variable part of compressed air follows the machines that are processing.

Step means
----------
Every machine and base load is piecewise constant in time, so its cumulative energy is
piecewise linear: the energy of a step is the difference of the cumulative energy at the step's
edges (machines: interpolated at the edges; base loads: each constant piece split at the edges).
The power of step ``k`` is thus the exact mean over ``[t_k, t_k + step_s)``. The step size
changes how the same trajectory is averaged, never the trajectory itself: no random draw
depends on it. The machines' timelines are laid out and integrated by ``ext.factory``
(compiled, or its bit-identical NumPy twin ``ext.factory_np``).

Sign: load convention (see :mod:`components.base`): all powers here are drawn, ``>= 0``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import simpy

from components.factory.config import BaseLoadConfig, FactoryConfig
from ext import Backend, select_kernel

CHANNELS = ("p_kw", "q_kvar", "critical_kw", "critical_q_kvar", "deferrable_kw")
"""Accumulated quantities, in this order, along the last axis of the internal accumulator."""

_N_CH = len(CHANNELS)
SHED_OUTPUTS = ("p_kw", "q_kvar", "critical_kw", "deferrable_kw", "shed_applied_kw")
"""Rows of :meth:`FactoryFleet.shed_step`'s array, in this order."""
_REPAIR_SHAPE = 2.0  # gamma shape of repair times (coefficient of variation 0.71)


@dataclass(frozen=True)
class StepPower:
    """Mean powers per factory (last axis) over one step or, from :meth:`FactoryFleet.run`,
    over every step (first axis). Load convention: drawn power is positive.

    Attributes
    ----------
    p_kw : numpy.ndarray
        Active power [kW].
    q_kvar : numpy.ndarray
        Reactive power [kvar].
    critical_kw : numpy.ndarray
        Part of ``p_kw`` that must stay supplied in an outage [kW].
    critical_q_kvar : numpy.ndarray
        Reactive power of the critical part [kvar].
    deferrable_kw : numpy.ndarray
        Part of ``p_kw`` that could be shifted in time; disjoint from the critical part [kW].
    """

    p_kw: np.ndarray
    q_kvar: np.ndarray
    critical_kw: np.ndarray
    critical_q_kvar: np.ndarray
    deferrable_kw: np.ndarray


def tan_phi(power_factor: float | np.ndarray) -> float | np.ndarray:
    """Ratio Q/P of an inductive load with displacement power factor ``power_factor`` [-]."""
    return np.tan(np.arccos(power_factor))


def season_factor(day: dt.date, base: BaseLoadConfig) -> float:
    """Seasonal share of the HVAC rating for ``day`` [-], in ``[hvac_offseason_share, 1]``.

    A cosine over the year peaks at 1 on ``hvac_cooling_peak_doy`` (Chongqing's hot, humid
    summer), falls to the off-season share in spring and autumn and rises to
    ``hvac_heating_share`` (if larger) at the opposite point of the year (mild winter heating).
    """
    doy = day.timetuple().tm_yday
    c = math.cos(2.0 * math.pi * (doy - base.hvac_cooling_peak_doy) / 365.25)
    off = base.hvac_offseason_share
    return (off + (1.0 - off) * max(c, 0.0)
            + max(base.hvac_heating_share - off, 0.0) * max(-c, 0.0))


def working_windows(factory: FactoryConfig, start: dt.datetime, horizon_s: float) -> np.ndarray:
    """Working windows of ``factory`` that overlap ``[0, horizon_s)`` [s from ``start``].

    Shifts starting on a working day (a listed weekday that is not a holiday) are merged where
    they touch or overlap. Each row is ``(lead_s, open_s, close_s)``: ``lead_s`` is the start of
    the warm-up (``warmup_min`` before ``open_s``, but not before the previous window closed).

    Parameters
    ----------
    factory : FactoryConfig
        Shift calendar, holidays and warm-up.
    start : datetime.datetime
        Scenario start, time-zone aware; clock times are local to its time zone.
    horizon_s : float
        Length of the simulated period [s].

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 3)``, sorted, non-overlapping [s].
    """
    tz = start.tzinfo
    t_start = start.timestamp()
    holidays = set(factory.holidays)
    first = start.date() - dt.timedelta(days=2)
    last = (start + dt.timedelta(seconds=horizon_s)).date() + dt.timedelta(days=1)
    raw: list[tuple[float, float]] = []
    day = first
    while day <= last:
        if day not in holidays:
            midnight = dt.datetime.combine(day, dt.time(0), tzinfo=tz)
            for shift in factory.shifts:
                if day.isoweekday() in shift.days:
                    # wall-clock arithmetic on an aware datetime: correct across DST changes
                    opens = midnight + dt.timedelta(minutes=shift.start_min)
                    closes = midnight + dt.timedelta(minutes=shift.start_min + shift.length_min)
                    raw.append((opens.timestamp() - t_start, closes.timestamp() - t_start))
        day += dt.timedelta(days=1)
    raw.sort()
    merged: list[list[float]] = []
    for opens, closes in raw:
        if merged and opens <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], closes)
        else:
            merged.append([opens, closes])
    warm_s = factory.warmup_min * 60.0
    rows = []
    prev_close = -math.inf
    for opens, closes in merged:
        lead = max(opens - warm_s, prev_close)
        if closes > 0.0 and lead < horizon_s:
            rows.append((lead, opens, closes))
        prev_close = closes
    return np.array(rows, dtype=float).reshape(-1, 3)


def add_piece(out: np.ndarray, t0_s: float, t1_s: float, weights: np.ndarray,
              step_s: float) -> None:
    """Add the energy of a constant piece to the steps it overlaps, in place.

    The piece has power ``weights[c]`` in channel ``c`` on ``[t0_s, t1_s)``. Step ``k`` covers
    ``[k * step_s, (k + 1) * step_s)``; the parts of the piece outside
    ``[0, n_steps * step_s)`` are dropped.

    Parameters
    ----------
    out : numpy.ndarray
        Shape ``(n_steps, n_channels)``; receives energies [kW s].
    t0_s, t1_s : float
        Start and end of the piece [s].
    weights : numpy.ndarray
        Shape ``(n_channels,)``, power of the piece per channel [kW].
    step_s : float
        Step length [s].
    """
    n_steps = out.shape[0]
    horizon = n_steps * step_s
    t0 = min(max(t0_s, 0.0), horizon)
    t1 = min(max(t1_s, 0.0), horizon)
    if not t1 > t0:
        return
    k0 = min(int(t0 // step_s), n_steps - 1)
    # last step touched: a piece ending exactly on a boundary does not enter the next step
    k1 = min(max(math.ceil(t1 / step_s) - 1, k0), n_steps - 1)
    if k0 == k1:
        out[k0] += weights * (t1 - t0)
        return
    # a piece over several steps (a day of base load, a shift)
    k = np.arange(k0, k1 + 1)
    dt_s = np.maximum(np.minimum(t1, (k + 1) * step_s) - np.maximum(t0, k * step_s), 0.0)
    out[k0:k1 + 1] += weights * dt_s[:, None]


def _slot_time(block: tuple[np.ndarray, ...]) -> np.ndarray:
    """Time covered per machine by a block of drawn job slots ``(gap, proc, share, repair)``,
    set-ups aside [s]."""
    gap, proc, _, repair = block
    return gap.sum(axis=1) + proc.sum(axis=1) + repair.sum(axis=1)


class _LineMachines:
    """The machines of one line, expanded from groups, with their state between windows;
    ``kernel`` (``ext.factory`` or its NumPy twin) lays out and integrates their timelines."""

    def __init__(self, factory: FactoryConfig, line_index: int, rng: np.random.Generator,
                 kernel: ModuleType):
        line = factory.lines[line_index]
        base = factory.base_loads
        groups = line.machines
        counts = [m.count for m in groups]

        def per_unit(values: Sequence[float]) -> np.ndarray:
            return np.repeat(np.asarray(values, dtype=float), counts)

        self.rng = rng
        self._kernel = kernel
        self.n = int(sum(counts))
        self.rated_kw = per_unit([m.rated_kw for m in groups])
        self.tan_phi = per_unit([tan_phi(m.power_factor) for m in groups])
        self.load_share = per_unit([m.load_share for m in groups])
        self.load_cv = per_unit([m.load_cv for m in groups])
        self.cycle_s = per_unit([m.cycle_min * 60.0 for m in groups])
        self.cycle_cv = per_unit([m.cycle_cv for m in groups])
        self.gap_s = per_unit([m.gap_min * 60.0 for m in groups])
        self.setup_s = per_unit([m.setup_min * 60.0 for m in groups])
        self.setup_every = np.repeat(np.array([m.setup_every_jobs for m in groups]), counts)
        self.mtbf_s = per_unit([math.inf if m.mtbf_h is None else m.mtbf_h * 3600.0
                                for m in groups])
        self.mttr_s = per_unit([m.mttr_min * 60.0 for m in groups])
        self.idle_kw = per_unit([m.idle_share for m in groups]) * self.rated_kw
        self.setup_kw = per_unit([m.setup_share for m in groups]) * self.rated_kw
        self.critical = per_unit([float(m.critical) for m in groups])
        self.deferrable = per_unit([float(m.deferrable) for m in groups])
        # the production-driven part of compressed air, split over machines by rating
        ca_var_kw = base.compressed_air_kw * (1.0 - base.compressed_air_floor_share)
        self.air_kw = ca_var_kw * self.rated_kw / factory.machine_rated_kw
        self.air_tan_phi = float(tan_phi(base.compressed_air_pf))
        self.air_critical = base.compressed_air_critical_share
        # log-normal job and set-up durations with the configured means and variations
        self._log_sigma = np.sqrt(np.log1p(self.cycle_cv**2))
        self._log_mu = np.log(self.cycle_s) - 0.5 * self._log_sigma**2
        setup_cv = per_unit([m.setup_cv for m in groups])
        self._setup_sigma = np.sqrt(np.log1p(setup_cv**2))
        self.slot_mean_s = (self.gap_s + self.cycle_s + self.setup_s / self.setup_every
                            + self.cycle_s * np.minimum(self.mttr_s / self.mtbf_s, 1e6))
        self.jobs_since_setup = np.zeros(self.n, dtype=np.int64)
        self.down_until_s = np.full(self.n, -math.inf)
        # rest of the job slot in progress (gap, processing, repair, set-up [s]) and its power
        # share, when a long window is simulated in parts
        self._carry = np.zeros((self.n, 4))
        self._carry_share = np.zeros(self.n)
        self._set_coefficients()

    def _draw(self, n_jobs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Random job slots of every machine: gap, processing, power share, repair [s, s, -, s]."""
        rng, shape = self.rng, (self.n, n_jobs)
        gap = rng.standard_exponential(shape) * self.gap_s[:, None]
        proc = np.exp(self._log_sigma[:, None] * rng.standard_normal(shape)
                      + self._log_mu[:, None])
        share = self.load_share[:, None] * (
            1.0 + self.load_cv[:, None] * rng.standard_normal(shape))
        np.clip(share, 0.0, 1.0, out=share)
        # operating-time hazard 1/mtbf: the job ends in a breakdown with this probability
        failed = (rng.random(shape) < -np.expm1(-proc / self.mtbf_s[:, None])).nonzero()
        repair = np.zeros(shape)
        repair[failed] = (rng.standard_gamma(_REPAIR_SHAPE, failed[0].size)
                          * self.mttr_s[failed[0]] / _REPAIR_SHAPE)
        return gap, proc, share, repair

    def run_window(self, lead_s: float, open_s: float, close_s: float, edges_s: np.ndarray,
                   continues: bool = False) -> np.ndarray:
        """Simulate every machine of the line over one working window (or a part of one).

        Parameters
        ----------
        lead_s, open_s, close_s : float
            Warm-up start, start of production and end of this part of the window [s].
        edges_s : numpy.ndarray
            Increasing step boundaries to evaluate the energy at [s].
        continues : bool
            The window goes on after ``close_s``: the job slot in progress is carried into
            the next call (whose ``lead_s`` and ``open_s`` must equal this ``close_s``)
            instead of being cut off by the shift end.

        Returns
        -------
        numpy.ndarray
            Shape ``(len(edges_s) - 1, len(CHANNELS))``: energy of the line between
            consecutive edges per channel [kW s]. Updates set-up counters and repairs.
        """
        job_start = np.maximum(open_s, self.down_until_s)
        warm_start = np.minimum(np.maximum(lead_s, self.down_until_s), job_start)
        span = np.maximum(close_s - job_start, 0.0)  # to fill with slots; 0: down till close
        n_jobs = math.ceil((span / self.slot_mean_s).max() * 1.15) + 4
        blocks = [self._draw(n_jobs)]
        covered = _slot_time(blocks[0])
        while (covered < span).any():  # rare: a machine ran short of slots; draw more
            blocks.append(self._draw(n_jobs))
            covered = covered + _slot_time(blocks[-1])
        gap, proc, share, repair = blocks[0] if len(blocks) == 1 else (
            np.concatenate(parts, axis=1) for parts in zip(*blocks))
        pending = self._carry[:, 1] > 0  # carried job not yet finished
        job_number = (self.jobs_since_setup + pending)[:, None] + np.arange(1, proc.shape[1] + 1)
        due = (job_number % self.setup_every[:, None] == 0).nonzero()
        setup = np.zeros_like(proc)
        n_due = due[0].size
        if n_due:
            sigma, mean = self._setup_sigma[due[0]], self.setup_s[due[0]]
            setup[due] = mean * np.exp(sigma * self.rng.standard_normal(n_due) - 0.5 * sigma**2)
        # timeline, state update and step energies of every machine (see ext/factory.pyx)
        per_bin_m, per_bin_a = self._kernel.line_window(
            gap, proc, share, repair, setup, self._carry, self._carry_share, warm_start,
            job_start, self.idle_kw, self.setup_kw, self.rated_kw, self.setup_every,
            self.jobs_since_setup, self.down_until_s, lead_s, close_s, edges_s, continues)
        return per_bin_m.T @ self._coef_machine + per_bin_a.T @ self._coef_air

    def _set_coefficients(self) -> None:
        """Channel coefficients per machine (of machine energy) and of processing time (air)."""
        tan, crit, defer = self.tan_phi, self.critical, self.deferrable
        self._coef_machine = np.stack([np.ones(self.n), tan, crit, crit * tan, defer], axis=1)
        air_q = self.air_kw * self.air_tan_phi
        self._coef_air = np.stack([self.air_kw, air_q, self.air_kw * self.air_critical,
                                   air_q * self.air_critical, np.zeros(self.n)], axis=1)


def _base_weights(base: BaseLoadConfig, season: float, working: bool) -> np.ndarray:
    """Channel powers of HVAC (x ``season``), lighting and other loads [kW].

    ``working=False`` gives their always-on floor, ``working=True`` the part on top of it
    during working hours; the two add up to the full rating.
    """
    loads = (  # (kW, power factor, floor share, critical share)
        (base.hvac_kw * season, base.hvac_pf, base.hvac_floor_share, base.hvac_critical_share),
        (base.lighting_kw, base.lighting_pf, base.lighting_floor_share,
         base.lighting_critical_share),
        (base.other_kw, base.other_pf, base.other_floor_share, base.other_critical_share),
    )
    w = np.zeros(_N_CH)
    for kw, pf, floor, crit in loads:
        p = kw * ((1.0 - floor) if working else floor)
        q = p * tan_phi(pf)
        w += (p, q, p * crit, q * crit, 0.0)
    return w


class FactoryFleet:
    """All factories of a scenario in one SimPy environment, read out as exact step means.

    Parameters
    ----------
    factories : Sequence[FactoryConfig]
        Validated factory configurations (a ``FactoriesConfig`` works too).
    start : datetime.datetime
        Scenario start, time-zone aware; weekdays, shifts and holidays are local to its zone.
    step_s : float
        Step length [s]; step ``k`` covers ``[k * step_s, (k + 1) * step_s)`` after ``start``.
    n_steps : int
        Number of steps of the simulated period.
    rng : numpy.random.Generator
        Source of all randomness; each line gets a child generator spawned from it, so the
        trajectory depends on the seed and the configuration only (not on ``step_s``).
    backend : {"auto", "compiled", "numpy"}
        Kernel of the machines' timelines and step energies: the compiled ``ext.factory`` or
        its NumPy twin (bit-identical results); see :func:`ext.select_kernel`.

    Examples
    --------
    >>> fleet = FactoryFleet(factories, start, step_s=900, n_steps=96, rng=np.random.default_rng(1))
    >>> fleet.step(0).p_kw          # mean draw of each factory in the first 15 minutes [kW]
    """

    def __init__(self, factories: Sequence[FactoryConfig], start: dt.datetime, step_s: float,
                 n_steps: int, rng: np.random.Generator, backend: Backend = "auto"):
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError(f"start must be time-zone aware (e.g. '+08:00'), got {start!r}")
        if not step_s > 0:
            raise ValueError(f"step_s must be > 0 [s], got {step_s!r}")
        if int(n_steps) < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps!r}")
        self.factories = list(factories)
        self.start = start
        self.step_s = float(step_s)
        self.n_steps = int(n_steps)
        self.horizon_s = self.step_s * self.n_steps
        self.env = simpy.Environment()
        n_f = len(self.factories)
        # machine ratings x count plus base-load ratings per factory: a bound of p_kw [kW]
        self.rated_kw = np.array([f.rated_kw for f in self.factories], dtype=float)
        self._energy = np.zeros((self.n_steps, n_f, _N_CH))  # [kW s]
        self._done_until_s = 0.0
        n_lines = sum(len(f.lines) for f in self.factories)
        line_rngs = iter(rng.spawn(n_lines))
        kernel = self._kernel = select_kernel("factory", backend)
        self.windows = [working_windows(f, start, self.horizon_s) for f in self.factories]
        first_day = start.date() - dt.timedelta(days=3)
        n_days = int(self.horizon_s // 86400) + 7
        self._midnights_s = [  # sorted [s]
            dt.datetime.combine(first_day + dt.timedelta(days=d), dt.time(0),
                                tzinfo=start.tzinfo).timestamp() - start.timestamp()
            for d in range(n_days)]
        for i, factory in enumerate(self.factories):
            self.env.process(self._building(i))
            self.env.process(self._occupancy(i))
            for j in range(len(factory.lines)):
                self.env.process(self._production(i, _LineMachines(factory, j, next(line_rngs),
                                                                       kernel)))

    # -- processes ---------------------------------------------------------------------------
    def _wait_until(self, t_s: float) -> simpy.Timeout:
        return self.env.timeout(max(t_s - self.env.now, 0.0))

    def _parts(self, i: int) -> Iterator[tuple[float, float, float, bool]]:
        """Windows of factory ``i`` cut at local midnights: ``(lead, open, close, continues)``.

        Parts keep the arrays of one simulation call to a day and let the HVAC season change
        daily inside windows that run for days (continuous operation).
        """
        midnights = self._midnights_s
        for lead_s, open_s, close_s in self.windows[i].tolist():
            lo = bisect.bisect_right(midnights, open_s)
            hi = bisect.bisect_right(midnights, close_s)
            cuts = [c for c in midnights[lo:hi] if open_s < c < close_s]
            bounds = [open_s, *cuts, close_s]
            for j in range(len(bounds) - 1):
                yield (lead_s if j == 0 else bounds[j]), bounds[j], bounds[j + 1], (
                    j < len(bounds) - 2)

    def _production(self, i: int, machines: _LineMachines) -> Iterator[simpy.Event]:
        """One line: idle -> jobs (with gaps, set-ups, breakdowns) -> off, window by window."""
        for lead_s, open_s, close_s, continues in self._parts(i):
            yield self._wait_until(lead_s)
            k_first = int(max(lead_s, 0.0) // self.step_s)
            # parts before the start still run: they set the machines' state at the start
            k_end = min(math.ceil(min(close_s, self.horizon_s) / self.step_s), self.n_steps)
            k_end = max(k_end, k_first)
            edges = np.arange(k_first, k_end + 1) * self.step_s
            self._energy[k_first:k_end, i, :] += machines.run_window(lead_s, open_s, close_s,
                                                                     edges, continues)

    def _occupancy(self, i: int) -> Iterator[simpy.Event]:
        """Working-hours part of HVAC, lighting and other loads, from warm-up to close."""
        base = self.factories[i].base_loads
        for lead_s, open_s, close_s, _ in self._parts(i):
            yield self._wait_until(lead_s)
            local = dt.datetime.fromtimestamp(self.start.timestamp() + open_s, self.start.tzinfo)
            w = _base_weights(base, season_factor(local.date(), base), working=True)
            add_piece(self._energy[:, i], lead_s, close_s, w, self.step_s)

    def _building(self, i: int) -> Iterator[simpy.Event]:
        """Always-on floor of every base load, day by local day (the HVAC season changes)."""
        base = self.factories[i].base_loads
        tz, t_start = self.start.tzinfo, self.start.timestamp()
        day = self.start.date()
        while True:
            begin = dt.datetime.combine(day, dt.time(0), tzinfo=tz).timestamp() - t_start
            if begin >= self.horizon_s:
                return
            nxt = day + dt.timedelta(days=1)
            end = dt.datetime.combine(nxt, dt.time(0), tzinfo=tz).timestamp() - t_start
            yield self._wait_until(begin)
            w = _base_weights(base, season_factor(day, base), working=False)
            air = base.compressed_air_kw * base.compressed_air_floor_share
            air_tan = tan_phi(base.compressed_air_pf)
            w += (air, air * air_tan, air * base.compressed_air_critical_share,
                  air * air_tan * base.compressed_air_critical_share, 0.0)
            add_piece(self._energy[:, i], begin, end, w, self.step_s)
            day = nxt

    # -- read-out ----------------------------------------------------------------------------
    def advance_to(self, k: int) -> None:
        """Simulate until every piece that touches step ``k`` is known."""
        if not 0 <= k < self.n_steps:
            raise IndexError(f"step {k} outside 0..{self.n_steps - 1}")
        until = (k + 1) * self.step_s
        if until > self._done_until_s:
            # Process the events before ``until`` in the order ``env.run(until=until)`` would;
            # most steps have none, and a peek is all they cost. (Processes time their waits
            # from the event that resumed them, so the clock between events is never read.)
            env = self.env
            while env.peek() < until:
                env.step()
            self._done_until_s = until

    def step(self, k: int) -> StepPower:
        """Mean powers of every factory over step ``k`` (arrays of length ``n_factories``)."""
        self.advance_to(k)
        # one division into a (channel, factory) array; each channel is a contiguous row
        return StepPower(*np.divide(self._energy[k].T, self.step_s, order="C"))

    def shed_step(self, k: int, shed_kw: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        """Mean powers of every factory over step ``k`` with load shed on request.

        Only the non-critical part can be shed: each request is clamped to
        ``[0, p_kw - critical_kw]`` (the clamped value is ``shed_applied_kw``). Shedding scales
        the non-critical reactive power in proportion and leaves the critical part untouched;
        ``deferrable_kw`` never exceeds what stays flexible once the shed part is gone.

        Parameters
        ----------
        k : int
            Step index.
        shed_kw : numpy.ndarray, optional
            Load asked to shed per factory, float64 of shape ``(n_factories,)``; None: nothing
            asked. [kW]

        Returns
        -------
        powers : numpy.ndarray
            Shape ``(5, n_factories)``, a new array: one row per name of ``SHED_OUTPUTS``
            (means over the step, load convention). [kW], [kvar]
        finite : bool
            Whether every value of ``powers`` is finite.
        """
        self.advance_to(k)
        powers = np.empty((len(SHED_OUTPUTS), len(self.factories)))
        finite = self._kernel.shed_step(self._energy[k], self.step_s, shed_kw, powers)
        return powers, finite

    def run(self) -> StepPower:
        """Simulate the whole period; arrays of shape ``(n_steps, n_factories)``."""
        self.advance_to(self.n_steps - 1)
        mean = self._energy / self.step_s
        return StepPower(*(mean[:, :, c].copy() for c in range(_N_CH)))
