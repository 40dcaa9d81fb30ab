"""Weather for the PV model: a seeded synthetic generator fitted to Chongqing, or a TMY3/EPW file.

Both functions return a DataFrame indexed by the requested timestamps with the columns

    ghi, dni, dhi   global horizontal, direct normal, diffuse horizontal irradiance [W/m²]
    temp_air        air temperature [°C]
    wind_speed      wind speed at 10 m [m/s]

The timestamps are the midpoints of the simulation steps, so an instantaneous value stands for
the step mean.

Synthetic weather
-----------------
GHI = clear-sky GHI x clear-sky index. Clear sky: Ineichen-Perez [1] with pvlib's Linke turbidity
climatology for the site. The clear-sky index has two layers:

* a daily cloudiness state ``kd``: a Beta law per day whose mean follows the monthly means
  ``monthly_mean_kc`` (interpolated between mid-months), with day-to-day persistence from an
  AR(1) process in a Gaussian copula;
* intra-day fluctuations: ``kc = kd * exp(s*x - s²/2)`` with ``x`` a unit AR(1) process of
  correlation time ``intraday_tau_min`` and ``s = intraday_sigma * 4 kd (1 - kd)``, largest on
  half-cloudy days and vanishing under clear or fully overcast skies; capped at
  ``max_clear_sky_index`` (cloud enhancement of a step mean).

GHI is split into DNI and DHI with the Erbs model [2]; DNI is capped at the clear-sky DNI (cloud
enhancement is diffuse light) and DHI closes ``ghi = dhi + dni cos(zenith)``.

Chongqing fit (defaults of :class:`~components.pv.config.WeatherConfig`)
------------------------------------------------------------------------
Chongqing lies in the Sichuan Basin, the least sunny region of China:

* sunshine: 1,000-1,500 h a year in most of the municipality, August the sunniest month
  (> 180 h), July next, December to February under 35 h a month (CMA Chongqing Weather Forecast
  Technical Manual, 2012, data 1951-2010, published by the CMA Public Meteorological Service
  Centre: https://weather.com.cn/chongqing/kpyd/zqqhtz/04/2092945.shtml); the city station
  Shapingba averages about 1,055-1,150 h with 8 % of possible sunshine in December and January
  and 48 % in August (CMA normals);
* irradiation: Chongqing is China's low-value centre of annual GHI, down to 905 kWh/m² (CMA
  national solar resource assessment 2010, as reported in the 2013 climate-change Green Paper),
  inside the least-resourced class of the Chinese zoning (3,344-4,180 MJ/m², i.e.
  929-1,161 kWh/m², 1,000-1,400 sunshine hours).

The monthly relative sunshine used for the fit is
``s = 0.08 0.10 0.18 0.26 0.27 0.24 0.42 0.48 0.30 0.17 0.13 0.08`` (Jan-Dec; 1,050 h a year
at 29.56° N, matching the anchors above). The monthly shape of irradiation follows the
Angstrom-Prescott relation ``H = H0 (0.25 + 0.50 s)`` with the FAO-56 coefficients [3]; those
generic coefficients give 1,209 kWh/m² a year, above the published range, as they do not know
the basin's haze, so the monthly targets are scaled by 0.85 to put the year (1,028 kWh/m²) in
the middle of the 905-1,161 kWh/m² range. ``monthly_mean_kc`` was then tuned (16 seeded years)
until the generator's mean monthly GHI matched the targets within 1 %, with
``daily_kc_concentration`` and ``intraday_sigma`` chosen so that the sunshine duration (time
with DNI >= 120 W/m², the WMO definition) averages 1,059 h a year (target 1,054 h). Winter
months come out sunnier (about 50 h) and July/August less sunny (about 155 h) than observed:
one set of shape parameters for the whole year cannot reproduce both extremes.

Air temperature: monthly means and diurnal ranges approximating the Shapingba station normals
(CMA 1981-2010; rounded values, consistent with the published anchors: January about 8 °C,
July/August about 28.5 °C with daily highs of 33-34 °C, and for the whole municipality a
coldest month of 4-8 °C and a hottest of 26-29 °C), interpolated between mid-months, plus an
AR(1) day-to-day anomaly and a diurnal cycle peaking at 15:00 solar time whose amplitude
grows on clear days. Wind: weak, about 1.3 m/s on average, as the basin is sheltered.

References
----------
.. [1] P. Ineichen and R. Perez, "A new airmass independent formulation for the Linke turbidity
   coefficient", Solar Energy 73(3), 2002, :doi:`10.1016/S0038-092X(02)00045-2`.
.. [2] D. G. Erbs, S. A. Klein and J. A. Duffie, "Estimation of the diffuse radiation fraction
   for hourly, daily and monthly-average global radiation", Solar Energy 28(4), 1982,
   :doi:`10.1016/0038-092X(82)90302-4`.
.. [3] R. G. Allen, L. S. Pereira, D. Raes and M. Smith, "Crop evapotranspiration", FAO
   Irrigation and Drainage Paper 56, 1998, eq. 35.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pvlib
from scipy.signal import lfilter
from scipy.special import betaincinv, ndtr

from components.pv.config import WeatherConfig

COLUMNS = ["ghi", "dni", "dhi", "temp_air", "wind_speed"]

# Day of year of each month's midpoint (non-leap year), for periodic interpolation of monthly
# climate values.
_MID_MONTH_DOY = np.array([16.0, 45.5, 75.0, 105.5, 136.0, 166.5, 197.0, 228.0, 258.5, 289.0,
                           319.5, 350.0])


def _monthly_to_doy(values: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """Interpolate 12 monthly values (at mid-month) periodically to fractional day of year."""
    xp = np.concatenate([_MID_MONTH_DOY - 365.0, _MID_MONTH_DOY, _MID_MONTH_DOY + 365.0])
    fp = np.tile(np.asarray(values, dtype=float), 3)
    return np.interp(doy, xp, fp)


def _ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary unit-variance AR(1) series of length ``n`` with lag-1 correlation ``phi``."""
    e = rng.standard_normal(n)
    if n == 0:
        return e
    scale = np.sqrt(1.0 - phi * phi)
    if scale == 0.0:
        return np.full(n, e[0])
    e[0] /= scale  # the first value then has unit variance too
    return lfilter([scale], [1.0, -phi], e)


def _check_times(times: pd.DatetimeIndex) -> pd.DatetimeIndex:
    times = pd.DatetimeIndex(times)
    if times.tz is None:
        raise ValueError("times must be time-zone aware (e.g. Asia/Shanghai or +08:00)")
    return times


def _check_solar_position(solpos: pd.DataFrame, times: pd.DatetimeIndex) -> pd.DataFrame:
    if not solpos.index.equals(times):
        raise ValueError("solar_position must be indexed by the same timestamps as times")
    return solpos


def _step_s(times: pd.DatetimeIndex) -> float:
    if len(times) < 2:
        return 3600.0
    return float(np.median(np.diff(times.asi8)) / 1e9)


def sun_position(times: pd.DatetimeIndex, latitude_deg: float, longitude_deg: float,
                 altitude_m: float) -> pd.DataFrame:
    """Sun position at ``times`` for the site: pvlib's NREL SPA (numpy) at the site's standard
    pressure and pvlib's default air temperature (12 °C, which only the apparent angles use).

    Returns
    -------
    pandas.DataFrame
        :func:`pvlib.solarposition.spa_python`'s columns, among them ``elevation`` and
        ``apparent_zenith`` [°] and ``azimuth`` [°, clockwise from north].
    """
    site = pvlib.location.Location(latitude_deg, longitude_deg, altitude=altitude_m)
    return site.get_solarposition(times)


def synthetic_weather(
    times: pd.DatetimeIndex,
    latitude_deg: float,
    longitude_deg: float,
    altitude_m: float,
    cfg: WeatherConfig,
    rng: np.random.Generator,
    solar_position: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Seeded synthetic weather at ``times``.

    Parameters
    ----------
    times : pandas.DatetimeIndex
        Time-zone aware timestamps (step midpoints), evenly spaced.
    latitude_deg, longitude_deg : float
        Site position, north and east positive. [°]
    altitude_m : float
        Site elevation. [m]
    cfg : WeatherConfig
        Parameters of the clear-sky-index, temperature and wind models.
    rng : numpy.random.Generator
        Source of randomness; the same generator state gives the same weather.
    solar_position : pandas.DataFrame, optional
        :func:`sun_position` at ``times`` for the site, if the caller has it; computed when
        omitted.

    Returns
    -------
    pandas.DataFrame
        Columns ghi, dni, dhi [W/m²], temp_air [°C], wind_speed [m/s]; also ``ghi_clear``
        (clear-sky GHI [W/m²]) and ``kc`` (clear-sky index [-]).
    """
    times = _check_times(times)
    n = len(times)
    step_s = _step_s(times)
    site = pvlib.location.Location(latitude_deg, longitude_deg, altitude=altitude_m)
    solpos = (sun_position(times, latitude_deg, longitude_deg, altitude_m)
              if solar_position is None else _check_solar_position(solar_position, times))
    linke = pvlib.clearsky.lookup_linke_turbidity(times, latitude_deg, longitude_deg)
    clear = site.get_clearsky(times, model="ineichen", solar_position=solpos,
                              linke_turbidity=linke)

    # daily cloudiness state, one per local calendar day
    day_codes, days = pd.factorize(times.normalize())
    n_days = len(days)
    day_doy = (days.dayofyear.to_numpy() - 0.5).astype(float)
    mu = np.clip(_monthly_to_doy(cfg.monthly_mean_kc, day_doy), 0.01, 0.99)
    a = mu * cfg.daily_kc_concentration
    b = (1.0 - mu) * cfg.daily_kc_concentration
    z_day = _ar1(n_days, cfg.daily_persistence, rng)
    kd_day = betaincinv(a, b, np.clip(ndtr(z_day), 1e-9, 1 - 1e-9))

    # intra-day fluctuation, lognormal around the daily state so its mean is kd
    x = _ar1(n, float(np.exp(-step_s / (60.0 * cfg.intraday_tau_min))), rng)
    kd = kd_day[day_codes]
    s = cfg.intraday_sigma * 4.0 * kd * (1.0 - kd)
    kc = np.minimum(kd * np.exp(s * x - 0.5 * s * s), cfg.max_clear_sky_index)

    ghi_clear = clear["ghi"].to_numpy()
    ghi = kc * ghi_clear
    zenith = solpos["zenith"].to_numpy()
    erbs = pvlib.irradiance.erbs(ghi, zenith, times.dayofyear.to_numpy())
    dni = np.minimum(np.nan_to_num(np.asarray(erbs["dni"], dtype=float)),
                     clear["dni"].to_numpy())
    cos_z = np.cos(np.radians(zenith))
    dhi = np.where(cos_z > 0, ghi - dni * np.clip(cos_z, 0.0, None), ghi)
    dhi = np.maximum(dhi, 0.0)

    # air temperature: seasonal mean + daily anomaly + diurnal cycle (larger on clear days)
    doy = times.dayofyear.to_numpy() - 1 + (times.hour.to_numpy() + times.minute / 60.0) / 24.0
    t_mean = _monthly_to_doy(cfg.monthly_temp_c, doy)
    dtr = _monthly_to_doy(cfg.monthly_dtr_k, doy)
    anomaly = cfg.daily_temp_sd_k * _ar1(n_days, 0.7, rng)[day_codes]
    clearness = np.clip(kd / mu[day_codes], 0.3, 1.8)
    solar_hour = (times.tz_convert("UTC").hour.to_numpy()
                  + times.tz_convert("UTC").minute.to_numpy() / 60.0 + longitude_deg / 15.0) % 24
    diurnal = np.cos(2.0 * np.pi * (solar_hour - 15.0) / 24.0)
    temp_air = t_mean + anomaly + 0.5 * dtr * clearness * diurnal

    # wind: lognormal with a 3 h correlation time, a little stronger in the afternoon
    y = _ar1(n, float(np.exp(-step_s / (3.0 * 3600.0))), rng)
    wind = cfg.wind_mean_ms * np.exp(0.5 * y - 0.125) * (1.0 + 0.3 * diurnal)

    return pd.DataFrame(
        {"ghi": ghi, "dni": dni, "dhi": dhi, "temp_air": temp_air,
         "wind_speed": np.maximum(wind, 0.0), "ghi_clear": ghi_clear, "kc": kc},
        index=times,
    )


def _read(path: Path, fmt: str) -> tuple[pd.DataFrame, dict, pd.DatetimeIndex]:
    """Read a file; return data, metadata and the start of each row's hour (file local time)."""
    if fmt == "tmy3":
        data, meta = pvlib.iotools.read_tmy3(str(path), map_variables=True)
        # TMY3 rows are labelled with the END of the hour they integrate (01:00 ... 24:00)
        starts = data.index - pd.Timedelta(hours=1)
    else:
        data, meta = pvlib.iotools.read_epw(str(path))
        # EPW hour h covers (h-1, h]; pvlib labels it with the START, h-1 (0 ... 23)
        starts = data.index
    return data, meta, pd.DatetimeIndex(starts)


def _row_keys(t: pd.DatetimeIndex) -> np.ndarray:
    """(month, day, hour) as one integer; 29 February is read as 28 February."""
    month, day = t.month.to_numpy(), t.day.to_numpy()
    day = np.where((month == 2) & (day == 29), 28, day)
    return month * 10000 + day * 100 + t.hour.to_numpy()


def weather_from_file(
    path: str | Path, times: pd.DatetimeIndex, fmt: str | None = None
) -> pd.DataFrame:
    """Weather from a TMY3 or EPW file, mapped onto ``times`` ignoring the file's year.

    Each timestamp is converted to the file's local standard time and takes the irradiance of
    the file row whose hour contains it (TMY3 and EPW rows integrate the preceding hour), by
    (month, day, hour); 29 February uses 28 February. Air temperature and wind speed, which the
    files give at the end of each hour, are interpolated linearly in time.

    Parameters
    ----------
    path : str or pathlib.Path
        TMY3 (.csv) or EPW (.epw) file.
    times : pandas.DatetimeIndex
        Time-zone aware timestamps (step midpoints).
    fmt : {'tmy3', 'epw'}, optional
        File format; inferred from the suffix when omitted.

    Returns
    -------
    pandas.DataFrame
        Columns ghi, dni, dhi [W/m²], temp_air [°C], wind_speed [m/s]; ``attrs`` holds the
        file's site (``latitude_deg``, ``longitude_deg``, ``altitude_m``, ``utc_offset_h``).

    Raises
    ------
    ValueError
        If the file is missing, of unknown format, unreadable, or lacks a needed column or row;
        the message names the path.
    """
    times = _check_times(times)
    path = Path(path)
    if fmt is None:
        fmt = {".csv": "tmy3", ".epw": "epw"}.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"weather file {str(path)!r}: cannot infer the format from the "
                             "suffix; use .csv (TMY3) or .epw, or pass fmt='tmy3' or 'epw'")
    if fmt not in ("tmy3", "epw"):
        raise ValueError(f"weather file {str(path)!r}: format must be 'tmy3' or 'epw', not {fmt!r}")
    if not path.is_file():
        raise ValueError(f"weather file {str(path)!r} does not exist")
    try:
        data, meta, starts = _read(path, fmt)
    except Exception as exc:  # pvlib raises many kinds on a malformed file
        raise ValueError(f"weather file {str(path)!r} is not a readable {fmt.upper()} file: "
                         f"{type(exc).__name__}: {exc}") from exc
    missing = [c for c in COLUMNS if c not in data.columns]
    if missing:
        raise ValueError(f"weather file {str(path)!r} lacks column(s) {missing}")

    keys = _row_keys(starts)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]

    def rows_of(t: pd.DatetimeIndex) -> np.ndarray:
        wanted = _row_keys(t)
        pos = np.clip(np.searchsorted(sorted_keys, wanted), 0, len(sorted_keys) - 1)
        if not np.array_equal(sorted_keys[pos], wanted):
            bad = t[np.flatnonzero(sorted_keys[pos] != wanted)[0]]
            raise ValueError(f"weather file {str(path)!r} has no row for {bad:%m-%d %H}:00 "
                             "(file local standard time)")
        return order[pos]

    utc_offset_h = float(meta["TZ"])
    local = times.tz_convert(dt.timezone(dt.timedelta(hours=utc_offset_h)))
    rows = rows_of(local)
    prev_rows = rows_of(local - pd.Timedelta(hours=1))
    frac = (local.minute.to_numpy() * 60 + local.second.to_numpy()) / 3600.0

    def values(col: str) -> np.ndarray:
        return data[col].to_numpy(dtype=float)

    out = pd.DataFrame(
        {c: values(c)[rows] for c in ("ghi", "dni", "dhi")}
        | {c: (1 - frac) * values(c)[prev_rows] + frac * values(c)[rows]
           for c in ("temp_air", "wind_speed")},
        index=times,
    )
    if not np.isfinite(out.to_numpy()).all():
        raise ValueError(f"weather file {str(path)!r} has missing values in {COLUMNS}")
    out.attrs = {"source": str(path), "latitude_deg": float(meta["latitude"]),
                 "longitude_deg": float(meta["longitude"]),
                 "altitude_m": float(meta["altitude"]), "utc_offset_h": utc_offset_h}
    return out
