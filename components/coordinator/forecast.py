"""Short-term forecasts the coordinator makes from what it has observed.

PV: the shape of the day is the sine of the sun's elevation (NOAA's low-accuracy solar
position: declination and equation of time from the fractional year, error below a degree),
scaled by the ratio of observed PV to that shape. The recent ratio (last two hours of daylight)
holds for the next hours and gives way to the day-ahead ratio with an e-folding time of three
hours. Cloudiness persists only partly from one day to the next, so the day-ahead ratio is the
mean of the last day's ratio and that of the last ``PV_HISTORY_DAYS`` days (which counts the
last day too); before any daylight has been seen the ratio is ``DEFAULT_PV_RATIO``.

Zone import without EVs: the same step of the day before, shifted by today's deviation at the
current step, which fades with an e-folding time of two hours; on the first day the current
value is held. :class:`ForecastErrors` scores these forecasts as the import they forecast
becomes known: the one-step errors of the estimate of the current step, and the root mean
square error at each lead.

Reference for the solar position: NOAA Global Monitoring Laboratory, "General Solar Position
Calculations" (gml.noaa.gov/grad/solcalc/solareqns.PDF).
"""

from __future__ import annotations

import math
from bisect import insort

import numpy as np
import pandas as pd

DEFAULT_PV_RATIO = 0.4
"""PV output per kWp and per unit of sin(elevation) assumed before any daylight is seen [-]:
Chongqing's mean clear-sky index (~0.45) times a performance ratio of ~0.85."""
RECENT_H = 2.0
PV_FADE_H = 3.0
PV_HISTORY_DAYS = 30
"""Days behind the longer mean ratio of the day-ahead PV forecast [d]."""
BASE_FADE_H = 2.0
MIN_SIN_ELEVATION = 0.1
"""Below this sine of the elevation (~6 degrees) observations are too noisy to scale by."""
MIN_SCORED = 8
"""Forecast errors at a lead count only once this many have been seen [-]."""


def sin_elevation(times: pd.DatetimeIndex, latitude_deg: float, longitude_deg: float
                  ) -> np.ndarray:
    """Sine of the sun's elevation at each time (negative at night) [-]."""
    utc = pd.DatetimeIndex(times).tz_convert("UTC")
    doy = utc.dayofyear.to_numpy(float)
    hour = (utc.hour + utc.minute / 60.0 + utc.second / 3600.0).to_numpy(float)
    gamma = 2 * np.pi / 365.0 * (doy - 1 + (hour - 12) / 24.0)
    eqtime = 229.18 * (0.000075 + 0.001868 * np.cos(gamma) - 0.032077 * np.sin(gamma)
                       - 0.014615 * np.cos(2 * gamma) - 0.040849 * np.sin(2 * gamma))
    decl = (0.006918 - 0.399912 * np.cos(gamma) + 0.070257 * np.sin(gamma)
            - 0.006758 * np.cos(2 * gamma) + 0.000907 * np.sin(2 * gamma)
            - 0.002697 * np.cos(3 * gamma) + 0.00148 * np.sin(3 * gamma))
    true_solar_min = hour * 60.0 + eqtime + 4.0 * longitude_deg
    hour_angle = np.deg2rad(true_solar_min / 4.0 - 180.0)
    lat = np.deg2rad(latitude_deg)
    return np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)


def sorted_quantile(values: list[float], q: float) -> float:
    """``numpy.quantile(values, q)`` of values sorted ascending, without sorting them again.

    NumPy's default ("linear", Hyndman & Fan's method 7) operation for operation: the
    quantile lies at index ``(n - 1) q`` and is interpolated between its neighbours from the
    nearer one.
    """
    n = len(values)
    if n == 0:
        raise ValueError("sorted_quantile: no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"sorted_quantile: q must be in [0, 1], got {q}")
    virtual = (n - 1) * q
    if virtual >= n - 1:
        return float(values[-1])
    below = int(virtual)  # floor: virtual >= 0
    a, b = values[below], values[below + 1]
    t = virtual - below
    diff = b - a
    return float(b - diff * (1 - t)) if t >= 0.5 else float(a + diff * t)


class Forecaster:
    """Observes PV and the zone's import without EVs step by step and forecasts both.

    Parameters
    ----------
    start : Timestamp
        Start of step 0 (tz-aware).
    step_s : float
        Step length [s].
    n_steps : int
        Steps of the run; forecasts reach ``horizon`` steps beyond.
    horizon : int
        Longest forecast [steps].
    kwp : float
        Installed PV of the zone [kWp].
    latitude_deg, longitude_deg : float
        Location of the zone [deg].
    """

    def __init__(self, start: pd.Timestamp, step_s: float, n_steps: int, horizon: int,
                 kwp: float, latitude_deg: float, longitude_deg: float) -> None:
        self.step_s = float(step_s)
        self.per_day = round(86_400 / step_s)
        total = n_steps + horizon
        mid = pd.Timestamp(start) + pd.to_timedelta(
            (np.arange(total) + 0.5) * step_s, unit="s")
        self.shape = np.maximum(sin_elevation(pd.DatetimeIndex(mid), latitude_deg,
                                              longitude_deg), 0.0) * kwp
        self._shape_floor = MIN_SIN_ELEVATION * self.shape.max() if total else 0.0
        self.pv = np.full(total, np.nan)
        self.base = np.full(total, np.nan)
        self._fades: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        # the windows of the PV ratios: recent, the day, the history [steps]
        self._pv_windows = (int(RECENT_H * 3600 / step_s), self.per_day,
                            PV_HISTORY_DAYS * self.per_day)
        # the steps bright enough to scale by, as the first one at or after each step and the
        # last one at or before it (-1: none): a window's bright steps are those two's span
        bright = self.shape > self._shape_floor
        idx = np.arange(total)
        self._bright = bright
        self._next_bright = np.minimum.accumulate(
            np.where(bright, idx, total)[::-1])[::-1].tolist() + [total]
        self._prev_bright = np.maximum.accumulate(np.where(bright, idx, -1)).tolist()
        # the last ratios worked out, by the bright steps of their windows; PV observed at a
        # bright step drops them
        self._ratio_memo: tuple[tuple, list[float | None]] | None = None

    def observe_pv(self, k: int, pv_kw: float) -> None:
        """PV generation of step ``k`` [kW]."""
        self.pv[k] = pv_kw
        if self._bright[k]:
            self._ratio_memo = None

    def observe_base(self, k: int, base_kw: float) -> None:
        """Zone import without EVs of step ``k`` (known once its power flow is done) [kW]."""
        self.base[k] = base_kw

    def _fade(self, h: int, fade_h: float) -> tuple[np.ndarray, np.ndarray]:
        """``w = exp(-lead / fade_h)`` at the leads of ``h`` steps from 0, and ``1 - w`` (kept
        for the longest asked, and the same values for any shorter) [-]."""
        fade = self._fades.get(fade_h)
        if fade is None or fade[0].size < h:
            lead_h = np.arange(h) * self.step_s / 3600.0
            w = np.exp(-lead_h / fade_h)
            fade = self._fades[fade_h] = (w, 1 - w)
        return fade[0][:h], fade[1][:h]

    def _ratios(self, k: int, back_steps: tuple[int, ...]) -> list[float | None]:
        """Observed PV per unit of the shape over the last ``back`` steps up to ``k``, for each
        ``back``; None where no step of that window was bright enough."""
        # windows with the same bright steps (nights, mostly) give the same ratios
        nxt = self._next_bright
        key = (self._prev_bright[k], back_steps,
               [nxt[max(0, k - back + 1)] for back in back_steps])
        memo = self._ratio_memo
        if memo is not None and memo[0] == key:
            return memo[1]
        lo = max(0, k - max(back_steps) + 1)
        ok = self._bright[lo:k + 1] & np.isfinite(self.pv[lo:k + 1])
        ratios: list[float | None] = []
        for back in back_steps:
            # the window's own steps are the tail of the longest one
            start = max(0, k - back + 1)
            keep = ok[start - lo:]
            shape = self.shape[start:k + 1][keep].sum()
            ratios.append(None if shape <= 0
                          else float(self.pv[start:k + 1][keep].sum() / shape))
        self._ratio_memo = (key, ratios)
        return ratios

    def pv_kw(self, k: int, h: int) -> np.ndarray:
        """PV generation of steps ``k .. k+h-1``; the first is the observed one if known [kW]."""
        recent, day, history = self._ratios(k, self._pv_windows)
        day = DEFAULT_PV_RATIO if day is None else 0.5 * (day + history)
        recent = day if recent is None else recent
        w, rest = self._fade(h, PV_FADE_H)
        out = w * recent
        out += rest * day
        out *= self.shape[k:k + h]
        if h and math.isfinite(self.pv[k]):
            out[0] = self.pv[k]
        return out

    def base_kw(self, k: int, h: int, now_kw: float) -> np.ndarray:
        """Zone import without EVs of steps ``k .. k+h-1`` given its estimate now [kW]."""
        steps = np.arange(k, k + h)
        yesterday = steps - self.per_day
        prior = np.where(yesterday >= 0, self.base[np.maximum(yesterday, 0)], np.nan)
        if not np.isfinite(now_kw):
            return np.where(np.isfinite(prior), prior, 0.0)
        ref = prior[0] if h else np.nan
        if not np.isfinite(ref):
            return np.where(np.isfinite(prior), prior, now_kw)
        shifted = prior + (now_kw - ref) * self._fade(h, BASE_FADE_H)[0]
        return np.where(np.isfinite(shifted), shifted, now_kw)


class ForecastErrors:
    """Errors of the coordinator's forecasts of the zone import without EVs, learned as the
    import becomes known.

    The estimate of step ``k`` (:attr:`.core.Snapshot.base_import_kw`) is the import of step
    ``k - 1`` less the EVs' power then, with the part the coordinator observes (factories less
    PV) updated to step ``k``. ``estimate - observed`` is thus the rest (the grid's other loads
    and generation, the losses) of step ``k - 1``, and the import without EVs of step ``k - 1``
    is that rest plus what was observed then: each step's value is known one step later. A
    forecast issued at step ``k`` (index 0: the estimate of step ``k``) is scored at each of
    its steps; lead ``l`` is the forecast of step ``k + l``.

    Parameters
    ----------
    n_leads : int
        Leads scored, 0 .. ``n_leads - 1`` [steps]; at least 1 (the estimate itself).
    """

    def __init__(self, n_leads: int) -> None:
        if int(n_leads) < 1:
            raise ValueError(f"ForecastErrors: n_leads must be >= 1, got {n_leads}")
        self.n_leads = int(n_leads)
        # forecasts issued at the last n_leads steps, in slots step % n_leads
        self._issued = np.full((self.n_leads, self.n_leads), np.nan)
        self._issued_k = np.full(self.n_leads, -1, dtype=np.int64)
        self._sq_sum = np.zeros(self.n_leads)
        self._count = np.zeros(self.n_leads, dtype=np.int64)
        self._last: tuple[int, float] | None = None  # (step, observed part) of the last step
        self._rises_sorted: list[float] = []

    def observe(self, k: int, estimate_kw: float, observed_kw: float,
                forecast_kw: np.ndarray | None = None) -> None:
        """Step ``k``: the estimate of its import without EVs, the part of it observed
        (factories less PV) and, optionally, the forecast issued now (index 0: step ``k``)
        [kW].

        Steps come in order; after a gap, or a step without an estimate, scoring resumes one
        step later. Non-finite forecast values are not scored.
        """
        k = int(k)
        rest = float(estimate_kw) - float(observed_kw)
        last = self._last
        if np.isfinite(rest) and last is not None and last[0] == k - 1:
            actual = rest + last[1]  # import without EVs of step k - 1
            self._score(k - 1, actual)
        if not np.isfinite(rest):
            self._last = None
            return
        self._last = (k, float(observed_kw))
        slot = k % self.n_leads
        self._issued[slot] = np.nan
        self._issued[slot, 0] = float(estimate_kw)
        if forecast_kw is not None:
            f = np.asarray(forecast_kw, dtype=float)[:self.n_leads]
            self._issued[slot, 1:f.size] = f[1:]
        self._issued_k[slot] = k

    def _score(self, j: int, actual_kw: float) -> None:
        """Score every kept forecast of step ``j`` against its value ``actual_kw``."""
        leads = np.arange(min(self.n_leads, j + 1))
        issued_at = j - leads
        slots = issued_at % self.n_leads
        kept = self._issued_k[slots] == issued_at
        err = actual_kw - self._issued[slots, leads]
        ok = kept & np.isfinite(err)
        self._sq_sum[leads[ok]] += err[ok] ** 2
        self._count[leads[ok]] += 1
        if ok[0] and err[0] > 0:
            insort(self._rises_sorted, float(err[0]))

    @property
    def n_rises(self) -> int:
        """Number of times the estimate of a step fell short of its value [-]."""
        return len(self._rises_sorted)

    def rise_quantile_kw(self, q: float) -> float:
        """Quantile ``q`` of the amounts by which the estimate fell short (``numpy.quantile``,
        linear method) [kW]."""
        if not self._rises_sorted:
            raise ValueError("ForecastErrors: no shortfall of the estimate seen yet")
        return sorted_quantile(self._rises_sorted, q)

    def rms_kw(self, n: int) -> np.ndarray:
        """Root mean square error of the forecasts at leads ``0 .. n-1``; 0 at leads with
        fewer than ``MIN_SCORED`` errors seen and beyond ``n_leads`` the last lead's [kW]."""
        if n < 0:
            raise ValueError(f"ForecastErrors.rms_kw: n must be >= 0, got {n}")
        scored = self._count >= MIN_SCORED
        rms = np.where(scored, np.sqrt(self._sq_sum / np.maximum(self._count, 1)), 0.0)
        return rms[np.minimum(np.arange(n), self.n_leads - 1)]
