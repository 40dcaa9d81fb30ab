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


def _rest_walk(rng, n, sigma_kw=80.0):
    """An import without EVs: a random walk of what the coordinator does not observe plus
    a factory it observes, switching between two shifts."""
    rest = 3000.0 + np.cumsum(rng.normal(0.0, sigma_kw, n))
    factory = np.where((np.arange(n) // 32) % 2 == 0, 1500.0, 400.0)
    return rest, factory


def test_forecast_errors_learn_the_shortfalls_of_the_estimate_not_the_known_changes():
    from components.coordinator.forecast import ForecastErrors

    rng = np.random.default_rng(11)
    rest, factory = _rest_walk(rng, 400)
    errors = ForecastErrors(4)
    for k in range(1, 400):
        # the estimate of step k: last step's rest, with the factory of step k (known now)
        errors.observe(k, rest[k - 1] + factory[k], factory[k])
    rises = np.diff(rest[:399])  # the estimate of step k misses rest[k] - rest[k-1]
    rises = rises[rises > 0]
    assert errors.n_rises == rises.size  # the factory's jumps of 1,100 kW are no error
    for q in (0.0, 0.5, 0.75, 0.95):
        assert errors.rise_quantile_kw(q) == pytest.approx(np.quantile(rises, q), rel=1e-12)
    assert errors.rise_quantile_kw(1.0) < 400.0  # nothing of the factory's shift changes


def test_forecast_errors_per_lead_match_the_forecasts_issued():
    from components.coordinator.forecast import ForecastErrors

    rng = np.random.default_rng(12)
    n, leads = 300, 6
    rest, factory = _rest_walk(rng, n)
    actual = rest + factory
    bias = np.array([0.0, 50.0, -20.0, 100.0, 0.0, 30.0])  # each lead off by its own amount
    errors = ForecastErrors(leads)
    issued = {}
    for k in range(1, n):
        estimate = rest[k - 1] + factory[k]
        forecast = actual[k:k + leads] - bias[:min(leads, n - k)]
        forecast[0] = estimate
        issued[k] = forecast
        errors.observe(k, estimate, factory[k], forecast)
    expected = []
    for lead in range(leads):
        # scored once the step is known: steps up to n - 2 (step n - 1 is never confirmed)
        err = [actual[k + lead] - issued[k][lead] for k in range(1, n - 1 - lead)]
        expected.append(np.sqrt(np.mean(np.square(err))))
    np.testing.assert_allclose(errors.rms_kw(leads), expected, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(errors.rms_kw(leads)[1:], np.abs(bias[1:]), rtol=1e-12,
                               atol=1e-9)
    assert errors.rms_kw(leads + 3)[-1] == errors.rms_kw(leads)[-1]  # beyond: the last lead


def test_forecast_errors_skip_gaps_and_need_enough_samples():
    from components.coordinator.forecast import MIN_SCORED, ForecastErrors

    errors = ForecastErrors(3)
    np.testing.assert_array_equal(errors.rms_kw(3), 0.0)  # nothing seen: no band
    for k in range(MIN_SCORED):
        if k == 3:
            errors.observe(k, np.nan, 0.0)  # no grid state this step: not scored
            continue
        errors.observe(k, 100.0 + 10.0 * k, 0.0)
    # rises of 10 kW at the steps with a known predecessor that is itself known
    assert errors.n_rises == MIN_SCORED - 1 - 2
    assert errors.rms_kw(1)[0] == 0.0  # fewer than MIN_SCORED errors scored: no band yet
    errors.observe(MIN_SCORED, 100.0 + 10.0 * MIN_SCORED, 0.0)
    errors.observe(MIN_SCORED + 1, 100.0 + 10.0 * (MIN_SCORED + 1), 0.0)
    errors.observe(MIN_SCORED + 2, 100.0 + 10.0 * (MIN_SCORED + 2), 0.0)
    assert errors.rms_kw(1)[0] == pytest.approx(10.0)


def test_forecast_errors_fail_cleanly():
    from components.coordinator.forecast import ForecastErrors

    with pytest.raises(ValueError, match="n_leads must be >= 1"):
        ForecastErrors(0)
    errors = ForecastErrors(2)
    with pytest.raises(ValueError, match="no shortfall"):
        errors.rise_quantile_kw(0.5)
    with pytest.raises(ValueError, match="n must be >= 0"):
        errors.rms_kw(-1)


def test_day_ahead_pv_ratio_blends_the_last_day_with_the_longer_record():
    """Cloudiness persists only partly: after sunny days, one cloudy day pulls the next day's
    forecast half-way (to the mean of its ratio and the record's)."""
    start = pd.Timestamp("2026-06-01", tz="Asia/Shanghai")
    f = Forecaster(start, 900, 96 * 5, 96, kwp=1000.0, latitude_deg=CQ[0], longitude_deg=CQ[1])
    ratios = [0.6, 0.6, 0.6, 0.2]
    for day, ratio in enumerate(ratios):
        for k in range(day * 96, (day + 1) * 96):
            f.observe_pv(k, ratio * f.shape[k])
    k = 4 * 96 + 8  # 02:00 of the fifth day: no daylight for hours, the day-ahead ratio rules
    ahead = f.pv_kw(k, 96)
    day = ahead / np.where(f.shape[k:k + 96] > 0, f.shape[k:k + 96], np.nan)
    # the record's mean weighs the days by their (nearly equal) sunshine
    assert np.nanmax(day) == pytest.approx(np.nanmin(day), rel=1e-12)
    assert np.nanmax(day) == pytest.approx(0.5 * (0.2 + np.mean(ratios)), rel=1e-3)


def test_pv_forecast_kept_over_the_night_is_the_one_worked_out_afresh():
    """The ratios are kept while the windows' bright steps stay the same (the nights) and
    dropped when PV is observed at a bright step, even one seen before: every forecast equals
    that of a forecaster that sees the same observations and forecasts once."""
    start = pd.Timestamp("2026-06-01", tz="Asia/Shanghai")
    rng = np.random.default_rng(3)

    def fresh(observed: dict[int, float], k: int, h: int) -> np.ndarray:
        g = Forecaster(start, 900, 96 * 4, 96, kwp=800.0, latitude_deg=CQ[0],
                       longitude_deg=CQ[1])
        for j, value in observed.items():
            g.observe_pv(j, value)
        return g.pv_kw(k, h)

    f = Forecaster(start, 900, 96 * 4, 96, kwp=800.0, latitude_deg=CQ[0], longitude_deg=CQ[1])
    observed: dict[int, float] = {}
    checked = 0
    for k in range(96 * 4):
        observed[k] = float(rng.uniform(0.2, 0.7) * f.shape[k])
        f.observe_pv(k, observed[k])
        if k % 7 == 0 or k % 96 in (0, 30, 80):
            for h in (1, 40):
                assert f.pv_kw(k, h).tobytes() == fresh(observed, k, h).tobytes()
                checked += 1
        if k == 96 + 50:  # a bright step of the day before seen again, corrected
            observed[50] = 0.1 * f.shape[50]
            f.observe_pv(50, observed[50])
            assert f.pv_kw(k, 40).tobytes() == fresh(observed, k, 40).tobytes()
    assert checked > 100
    # nights: the ratios are the same at every step, the forecast still moves with the sun
    night = [f.pv_kw(k, 40) for k in (3 * 96 + 4, 3 * 96 + 8)]
    assert night[0][0] == observed[3 * 96 + 4] == 0.0
    assert night[1][-1] > night[0][-1] > 0.0
