"""Battery capacity fade of every EV: the semi-empirical model of Xu et al. (2018).

Reference: B. Xu, A. Oudalov, A. Ulbig, G. Andersson, D. S. Kirschen, "Modeling of lithium-ion
battery degradation for cell life assessment", IEEE Trans. Smart Grid 9(2), 1131-1140, 2018,
doi:10.1109/TSG.2016.2578950.

The model, as published:

- linearised degradation ``f_d = f_t + sum_i n_i f_c,i``,
- calendar ageing ``f_t = S_t(t) S_sigma(sigma_avg) S_T(T_avg)`` with ``S_t(t) = k_t t``,
- cycle ageing per rainflow cycle ``f_c,i = S_delta(delta_i) S_sigma(sigma_i) S_T(T_i)``, where
  ``n_i`` is 1 for a full and 0.5 for a half cycle, ``delta_i`` its depth and ``sigma_i`` its mean
  SoC,
- stress factors ``S_delta(d) = 1 / (k_d1 d^k_d2 + k_d3)``,
  ``S_sigma(s) = exp(k_s (s - s_ref))``, ``S_T(T) = exp(k_T (T - T_ref) T_ref / T)`` [K],
- nonlinear fade with SEI formation
  ``L = 1 - alpha_sei exp(-beta_sei f_d) - (1 - alpha_sei) exp(-f_d)``.

Two points the paper leaves to the implementer, decided here:

- Calendar ageing under changing conditions is summed over days: each day adds
  ``k_t * 86400 s * S_sigma(mean SoC of the day) * S_T(mean temperature of the day)``; with
  constant conditions this equals the paper's ``f_t`` exactly.
- Cycles are counted with the ASTM E1049-85 three-point rainflow algorithm, run as a stream
  (the turning points of each EV's SoC trajectory are fed in as they occur), so the result equals
  a rainflow count of the whole history. The open residue (and the running extreme) is counted as
  half cycles whenever the fade is evaluated, as a rainflow count of the history so far does. The
  cell temperature of a cycle is the ambient temperature on the day it closes (parked cars sit at
  ambient temperature; the model has no thermal state).

Everything is vectorised over the fleet: per-EV state lives in arrays, and each operation works on
the subset of EVs it concerns.
"""

from __future__ import annotations

import numpy as np

from components.ev.config import AgeingParams
from ext import Backend, select_kernel

KELVIN = 273.15


def stress_dod(depth: np.ndarray, p: AgeingParams) -> np.ndarray:
    """Cycle depth stress ``S_delta`` per cycle [-]; zero for empty cycles.

    Parameters
    ----------
    depth : array
        Cycle depth (SoC range) [-], within [0, 1].
    p : AgeingParams
        Model coefficients.
    """
    d = np.asarray(depth, dtype=float)
    out = np.zeros_like(d)
    ok = d > 1e-12
    out[ok] = 1.0 / (p.k_delta1 * d[ok] ** p.k_delta2 + p.k_delta3)
    return out


def stress_soc(soc: np.ndarray | float, p: AgeingParams) -> np.ndarray:
    """SoC stress ``S_sigma`` [-] for a mean SoC [-]."""
    return np.exp(p.k_sigma * (np.asarray(soc, dtype=float) - p.sigma_ref))


def stress_temperature(temp_c: np.ndarray | float, p: AgeingParams) -> np.ndarray:
    """Temperature stress ``S_T`` [-] for a cell temperature [degC] (Arrhenius-like, in kelvin)."""
    t = np.asarray(temp_c, dtype=float) + KELVIN
    t_ref = p.temp_ref_c + KELVIN
    return np.exp(p.k_temp * (t - t_ref) * t_ref / t)


def nonlinear_fade(f_d: np.ndarray, p: AgeingParams) -> np.ndarray:
    """Capacity fade ``L`` [-] (share of the initial capacity lost) from linearised ``f_d``."""
    f = np.asarray(f_d, dtype=float)
    return 1.0 - p.alpha_sei * np.exp(-p.beta_sei * f) - (1.0 - p.alpha_sei) * np.exp(-f)


class StreamingRainflow:
    """ASTM E1049-85 three-point rainflow counting for many signals at once, fed point by point.

    Each signal has a stack of unresolved turning points. ``push`` appends new turning points
    to each of a set of signals and extracts every cycle the three-point rule allows (in the
    kernel ``ext.evstep.rainflow``); the Xu cycle stress of each extracted cycle is added to
    ``f_cyc``.

    Parameters
    ----------
    start : array
        First point of each signal (the initial SoC) [-].
    p : AgeingParams
        Model coefficients.
    max_depth : int
        Stack capacity. A residue longer than this (not seen with SoC signals) has its oldest
        range counted as a half cycle, which ASTM allows for residues.
    backend : {"auto", "compiled", "numpy"}
        Kernel of the cycle extraction (see :func:`ext.select_kernel`); same results.
    """

    def __init__(self, start: np.ndarray, p: AgeingParams, max_depth: int = 48,
                 backend: Backend = "auto") -> None:
        n = len(start)
        self.p = p
        self._kernel = select_kernel("evstep", backend)
        self.stack = np.zeros((n, max_depth))
        self.stack[:, 0] = start
        self.depth = np.ones(n, dtype=np.int64)
        self.f_cyc = np.zeros(n)
        self.n_cycles = np.zeros(n)

    def push(self, ids: np.ndarray, values: np.ndarray, temp_c: float) -> None:
        """Append ``values[j]`` to signal ``ids[j]`` (ids unique) and extract closed cycles."""
        values = np.asarray(values, dtype=float)
        self.push_rows(ids, values.reshape(-1, 1), np.ones(values.size, dtype=np.int64), temp_c)

    def push_rows(self, ids: np.ndarray, points: np.ndarray, n_points: np.ndarray,
                  temp_c: float) -> None:
        """Append ``points[j, :n_points[j]]`` in order to signal ``ids[j]`` (ids unique) and
        extract closed cycles; their cell temperature is ``temp_c`` [degC]."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.size == 0:
            return
        points = np.ascontiguousarray(points, dtype=float)
        n_points = np.ascontiguousarray(n_points, dtype=np.int64)
        room = int(n_points.sum() + self.depth[ids].sum())  # bounds the cycles that can close
        ev, rng, mean, weight = (np.empty(room, dtype=np.int64), np.empty(room), np.empty(room),
                                 np.empty(room))
        m = self._kernel.rainflow(ids, points, n_points, self.stack, self.depth, ev, rng, mean,
                                  weight)
        if m:
            ev, weight = ev[:m], weight[:m]
            stress = stress_dod(rng[:m], self.p) * stress_soc(mean[:m], self.p)
            # np.add.at adds in list order: each signal's cycles in the order they closed
            np.add.at(self.f_cyc, ev, weight * stress * stress_temperature(temp_c, self.p))
            np.add.at(self.n_cycles, ev, weight)

    def copy(self, columns: int | None = None) -> StreamingRainflow:
        """An independent copy of the counter state, keeping the first ``columns`` stack slots."""
        other = object.__new__(StreamingRainflow)
        other.p = self.p
        other._kernel = self._kernel
        other.stack = self.stack[:, :columns].copy()
        other.depth = self.depth.copy()
        other.f_cyc = self.f_cyc.copy()
        other.n_cycles = self.n_cycles.copy()
        return other

    def total_stress(self, last: np.ndarray | None, temp_c: float) -> np.ndarray:
        """Xu cycle stress of the whole history as if it ended now, per signal [-].

        Closed cycles plus the open residue counted as half cycles; the counter is not changed.

        Parameters
        ----------
        last : array or None
            A final point per signal pushed first (NaN = none), e.g. the SoC now.
        temp_c : float
            Cell temperature assigned to cycles closed by ``last`` and to the residue [degC].
        """
        # the residue is short: work on the used part of the stacks (+1 slot for ``last``)
        probe = self.copy(min(int(self.depth.max()) + 1, self.stack.shape[1]))
        if last is not None:
            has = np.flatnonzero(~np.isnan(last))
            probe.push(has, last[has], temp_c)
        k = probe.stack.shape[1]
        a, b = probe.stack[:, :-1], probe.stack[:, 1:]
        valid = np.arange(1, k)[None, :] < probe.depth[:, None]
        rng = np.where(valid, np.abs(b - a), 0.0)
        mean = np.where(valid, 0.5 * (a + b), self.p.sigma_ref)
        residue = 0.5 * (stress_dod(rng, self.p) * stress_soc(mean, self.p)).sum(axis=1)
        return probe.f_cyc + residue * stress_temperature(temp_c, self.p)


class FleetAgeing:
    """Calendar and cycle ageing state of a fleet, fed with SoC changes as they happen.

    Parameters
    ----------
    soc0 : array
        Initial SoC of every battery [-].
    p : AgeingParams
        Model coefficients.
    buffer : int
        Turning points buffered per EV before they are passed to the rainflow counter.
    backend : {"auto", "compiled", "numpy"}
        Kernel of the rainflow counter (see :class:`StreamingRainflow`).
    """

    def __init__(self, soc0: np.ndarray, p: AgeingParams, buffer: int = 16,
                 backend: Backend = "auto") -> None:
        n = len(soc0)
        self.p = p
        self.rainflow = StreamingRainflow(np.asarray(soc0, dtype=float), p, backend=backend)
        self.f_cal = np.zeros(n)
        self.last_dir = np.zeros(n, dtype=np.int8)
        self.extreme = np.asarray(soc0, dtype=float).copy()
        self.tp_buf = np.zeros((n, buffer))
        self.tp_n = np.zeros(n, dtype=np.int64)
        self.temp_c = p.temp_ref_c

    def observe(self, ids: np.ndarray, soc_old: np.ndarray, soc_new: np.ndarray) -> None:
        """Record a SoC change of EVs ``ids`` (unique); finds the turning points of each EV.

        Changes below 1e-9 are ignored (no direction).
        """
        delta = soc_new - soc_old
        move = np.abs(delta) > 1e-9
        if not move.any():
            return
        ids, soc_new = ids[move], soc_new[move]
        direction = np.where(delta[move] > 0, 1, -1).astype(np.int8)
        last = self.last_dir[ids]
        turn = (last != 0) & (direction != last)
        if turn.any():
            t = ids[turn]
            n = self.tp_n[t]
            self.tp_buf[t, n] = self.extreme[t]
            self.tp_n[t] = n + 1
            if (n + 1).max() >= self.tp_buf.shape[1]:
                self.flush()
        self.last_dir[ids] = direction
        self.extreme[ids] = soc_new

    def flush(self) -> None:
        """Pass the buffered turning points, in order, to the rainflow counter."""
        ids = np.flatnonzero(self.tp_n)
        self.rainflow.push_rows(ids, self.tp_buf[ids], self.tp_n[ids], self.temp_c)
        self.tp_n[:] = 0

    def add_calendar(self, mean_soc: np.ndarray, temp_c: float, duration_s: float) -> None:
        """Add calendar ageing of a period with the given mean SoC [-] and temperature [degC]."""
        self.f_cal += (self.p.k_time * duration_s * stress_soc(mean_soc, self.p)
                       * stress_temperature(temp_c, self.p))

    def linearised(self) -> np.ndarray:
        """``f_d`` of the history so far (calendar + closed cycles + residue as half cycles)."""
        self.flush()
        last = np.where(self.last_dir != 0, self.extreme, np.nan)
        return self.f_cal + self.rainflow.total_stress(last, self.temp_c)

    def fade(self) -> np.ndarray:
        """Capacity fade ``L`` of every battery [-] (0 = new)."""
        return nonlinear_fade(self.linearised(), self.p)
