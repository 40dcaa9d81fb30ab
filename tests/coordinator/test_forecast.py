"""Forecasts: the sun's path, PV scaled by what was observed, the base import from yesterday."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.coordinator.forecast import DEFAULT_PV_RATIO, Forecaster, sin_elevation

CQ = (29.56, 106.55)


def test_solar_elevation_matches_pvlib():
    import pvlib

    times = pd.date_range("2026-01-01", periods=365 * 8, freq="3h", tz="Asia/Shanghai")
    ours = np.degrees(np.arcsin(sin_elevation(times, *CQ)))
    ref = pvlib.solarposition.get_solarposition(times, *CQ)["elevation"].to_numpy()
    assert np.abs(ours - ref).max() < 0.7  # degrees: NOAA's low-accuracy equations


def test_pv_forecast_follows_the_sun_scaled_by_observation():
    start = pd.Timestamp("2026-06-01", tz="Asia/Shanghai")
    f = Forecaster(start, 900, 96 * 2, 96, kwp=1000.0, latitude_deg=CQ[0], longitude_deg=CQ[1])
    night = f.pv_kw(0, 96)
    assert night[:20].max() == 0.0  # before sunrise
    assert night.max() == pytest.approx(DEFAULT_PV_RATIO * f.shape[:96].max(), rel=1e-9)
    # a cloudy morning: half the default ratio observed for two hours
    for k in range(36, 44):
        f.observe_pv(k, 0.5 * DEFAULT_PV_RATIO * f.shape[k])
    ahead = f.pv_kw(43, 24)
    assert ahead[0] == pytest.approx(0.5 * DEFAULT_PV_RATIO * f.shape[43])
    ratio = ahead[1:] / f.shape[44:67]
    assert ratio[0] == pytest.approx(0.5 * DEFAULT_PV_RATIO, rel=0.05)
    assert np.all(np.diff(ratio) <= 1e-12)  # the observed clearness lasts, then gives way


def test_base_forecast_is_yesterday_shifted_by_todays_deviation():
    start = pd.Timestamp("2026-06-01", tz="Asia/Shanghai")
    f = Forecaster(start, 900, 96 * 2, 96, kwp=0.0, latitude_deg=CQ[0], longitude_deg=CQ[1])
    np.testing.assert_allclose(f.base_kw(10, 8, 700.0), 700.0)  # first day: held
    day = 500.0 + 100.0 * np.sin(np.arange(96) / 96 * 2 * np.pi)
    for k in range(96):
        f.observe_base(k, day[k])
    out = f.base_kw(100, 12, day[4] + 50.0)  # today 50 kW above yesterday at this time
    assert out[0] == pytest.approx(day[4] + 50.0)
    dev = out - day[4:16]
    assert np.all(np.diff(dev) < 0) and dev[-1] < 50.0 * np.exp(-11 * 0.25 / 2.0) + 1e-9
    rises = f.base_rises_kw(97)
    assert (rises > 0).all() and rises.size == (np.diff(day) > 0).sum()


@pytest.mark.parametrize("seed", range(5))
def test_base_rises_kept_as_they_arrive_equal_the_full_history(seed):
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-06-01", tz="Asia/Shanghai")
    f = Forecaster(start, 900, 300, 96, kwp=0.0, latitude_deg=CQ[0], longitude_deg=CQ[1])
    base = 500.0 + np.cumsum(rng.normal(0, 30, 300))
    seen = rng.random(300) < 0.9  # steps without a grid state are never observed
    for k in range(1, 300):
        if seen[k - 1]:
            f.observe_base(k - 1, base[k - 1])
        diff = np.diff(np.where(seen[:k], base[:k], np.nan))
        full = diff[np.isfinite(diff) & (diff > 0)]
        assert f.base_rises_kw(k).tobytes() == full.tobytes()
        if full.size:
            for q in (0.0, 0.3, 0.75, 0.999):
                assert f.base_rise_quantile_kw(k, q) == np.quantile(full, q)
    # a step observed again: the history is taken in full from then on
    f.observe_base(10, base[10] + 1e3)
    diff = np.diff(f.base[:300])
    full = diff[np.isfinite(diff) & (diff > 0)]
    assert f.base_rises_kw(300).tobytes() == full.tobytes()
    assert f.base_rise_quantile_kw(300, 0.75) == np.quantile(full, 0.75)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 9, 100, 1001])
def test_sorted_quantile_is_numpys_linear_quantile_exactly(n):
    from components.coordinator.forecast import sorted_quantile

    rng = np.random.default_rng(n)
    values = rng.lognormal(3.0, 1.5, n)
    ordered = sorted(values.tolist())
    for q in [0.0, 1.0, 0.5, 0.75, *rng.random(50).tolist()]:
        assert sorted_quantile(ordered, q) == np.quantile(values, q)
    with pytest.raises(ValueError, match="q must be in"):
        sorted_quantile(ordered, 1.5)
