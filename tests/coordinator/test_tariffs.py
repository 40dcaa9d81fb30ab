"""Chongqing time-of-use tariff, local PV and V2G prices."""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from components.coordinator.tariffs import (
    PERIODS,
    TariffConfig,
    period,
    price_cny_per_kwh,
)

CQ = "Asia/Shanghai"
# State Grid Chongqing agency-purchase table, Feb 2025, 1-10 kV two-part users [CNY/kWh].
PUBLISHED_FEB_2025 = {"valley": 0.379188, "flat": 0.762307, "peak": 1.133067}


def at(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(list(stamps))).tz_localize(CQ)


@pytest.mark.parametrize(("stamp", "expected"), [
    ("2025-02-10 00:00", "valley"), ("2025-02-10 07:45", "valley"),
    ("2025-02-10 08:00", "flat"), ("2025-02-10 10:59", "flat"),
    ("2025-02-10 11:00", "peak"), ("2025-02-10 12:30", "peak"), ("2025-02-10 16:45", "peak"),
    ("2025-02-10 17:00", "flat"), ("2025-02-10 19:45", "flat"),
    ("2025-02-10 20:00", "peak"), ("2025-02-10 21:45", "peak"),
    ("2025-02-10 22:00", "flat"), ("2025-02-10 23:59", "flat"),
    # critical peak 12:00-14:00 in July, August, December and January only
    ("2025-07-15 12:00", "critical"), ("2025-08-01 13:59", "critical"),
    ("2025-12-31 12:15", "critical"), ("2026-01-05 13:45", "critical"),
    ("2026-01-05 14:00", "peak"), ("2026-01-05 11:45", "peak"), ("2025-06-30 12:30", "peak"),
    ("2025-09-01 12:30", "peak"),
])
def test_periods_follow_the_chongqing_notice(stamp, expected):
    assert period(at(stamp))[0] == expected


@pytest.mark.parametrize("name", ["valley", "flat", "peak"])
def test_prices_match_the_published_agency_purchase_table(name):
    hour = {"valley": "03:00", "flat": "09:00", "peak": "15:00"}[name]
    price = price_cny_per_kwh(at(f"2025-02-10 {hour}"))[0]
    assert price == pytest.approx(PUBLISHED_FEB_2025[name], abs=1e-6)


def test_critical_price_is_the_peak_floating_part_plus_20_percent():
    cfg = TariffConfig()
    prices = cfg.period_prices_cny_per_kwh
    floating = {k: v - cfg.fixed_component_cny_per_kwh for k, v in prices.items()}
    assert floating["critical"] == pytest.approx(floating["peak"] * 1.2)
    assert floating["peak"] == pytest.approx(floating["flat"] * 1.6)
    assert floating["valley"] == pytest.approx(floating["flat"] * 0.38)
    # the notice's peak : valley ratio of 4.2 : 1 on the floating part
    assert floating["peak"] / floating["valley"] == pytest.approx(4.2, abs=0.02)
    assert price_cny_per_kwh(at("2025-07-15 12:30"))[0] == pytest.approx(prices["critical"])
    assert prices["critical"] == pytest.approx(1.330806, abs=1e-6)


def test_each_period_lasts_eight_hours_a_day():
    day = pd.date_range("2025-03-03", periods=96, freq="15min", tz=CQ)
    names, counts = np.unique(period(day), return_counts=True)
    assert dict(zip(names, counts, strict=True)) == {"valley": 32, "flat": 32, "peak": 32}
    july = pd.date_range("2025-07-03", periods=96, freq="15min", tz=CQ)
    names, counts = np.unique(period(july), return_counts=True)
    assert dict(zip(names, counts, strict=True)) == {
        "valley": 32, "flat": 32, "peak": 24, "critical": 8}


def test_the_same_instant_in_another_zone_gets_the_same_price():
    local = pd.date_range("2025-07-01", periods=96 * 3, freq="15min", tz=CQ)
    utc = local.tz_convert("UTC")
    np.testing.assert_array_equal(price_cny_per_kwh(local), price_cny_per_kwh(utc))
    assert period(utc)[local.get_loc(pd.Timestamp("2025-07-01 12:30", tz=CQ))] == "critical"


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="time-zone aware"):
        price_cny_per_kwh(pd.date_range("2025-01-01", periods=4, freq="h"))


def _reference_price(ts: datetime, cfg: TariffConfig) -> float:
    """Scalar restatement of the tariff, hour by hour, for checking the vectorised look-up."""
    local = ts.astimezone(ZoneInfo(cfg.timezone))
    h = local.hour + local.minute / 60
    prices = cfg.period_prices_cny_per_kwh
    if local.month in (1, 7, 8, 12) and 12 <= h < 14:
        return prices["critical"]
    if 11 <= h < 17 or 20 <= h < 22:
        return prices["peak"]
    if h < 8:
        return prices["valley"]
    return prices["flat"]


def test_vectorised_over_a_year_is_fast_and_matches_the_scalar_rule():
    cfg = TariffConfig()
    year = pd.date_range("2026-01-01", periods=365 * 96, freq="15min", tz=CQ)
    cfg.price_cny_per_kwh(year[:10])  # warm the schedule cache
    t0 = time.perf_counter()
    prices = cfg.price_cny_per_kwh(year)
    names = cfg.period(year)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5, f"a year of 15-min prices took {elapsed:.3f} s"
    assert prices.shape == (len(year),) and set(names) == set(PERIODS)
    sample = np.random.default_rng(3).choice(len(year), 2000, replace=False)
    expected = [_reference_price(year[i].to_pydatetime(), cfg) for i in sample]
    np.testing.assert_allclose(prices[sample], expected, rtol=0, atol=1e-12)


def test_v2g_follows_the_time_of_use_ratio_of_the_coal_benchmark():
    cfg = TariffConfig()
    t = at("2025-02-10 03:00", "2025-02-10 09:00", "2025-02-10 15:00", "2025-07-15 12:30")
    np.testing.assert_allclose(cfg.v2g_price_cny_per_kwh(t),
                               0.3964 * np.array([0.38, 1.0, 1.6, 1.92]))
    flat = TariffConfig(v2g_follows_tou=False, v2g_base_cny_per_kwh=0.7)
    np.testing.assert_allclose(flat.v2g_price_cny_per_kwh(t), 0.7)


def test_local_pv_price_lies_between_feed_in_and_grid_price():
    cfg = TariffConfig(pv_to_ev_discount=0.2)
    t = pd.date_range("2025-07-01", periods=96, freq="15min", tz=CQ)
    local = cfg.pv_to_ev_price_cny_per_kwh(t)
    grid = cfg.price_cny_per_kwh(t)
    assert np.all(local <= grid)
    above_feed_in = grid >= cfg.pv_feed_in_cny_per_kwh
    assert np.all(local[above_feed_in] >= cfg.pv_feed_in_cny_per_kwh)
    # valley: the grid is cheaper than the feed-in price, so the site pays the grid price
    valley = cfg.period(t) == "valley"
    assert valley.any() and not above_feed_in[valley].any()
    np.testing.assert_allclose(local[valley], grid[valley])
    flat = cfg.period(t) == "flat"  # 0.8 x 0.762 = 0.610 > 0.3964: the discount applies
    np.testing.assert_allclose(local[flat], 0.8 * grid[flat])
    peak = cfg.period(t) == "peak"
    np.testing.assert_allclose(local[peak], 0.8 * grid[peak])
    np.testing.assert_allclose(cfg.pv_feed_in_price_cny_per_kwh(t), 0.3964)
    deep = TariffConfig(pv_to_ev_discount=0.5)  # 0.5 x 0.762 = 0.381 < 0.3964 in the flat period
    np.testing.assert_allclose(deep.pv_to_ev_price_cny_per_kwh(t)[flat], 0.3964)


@pytest.mark.parametrize("field", [
    "flat_cny_per_kwh", "fixed_component_cny_per_kwh", "pv_feed_in_cny_per_kwh",
    "v2g_base_cny_per_kwh",
])
def test_negative_price_is_an_error_naming_the_field(field):
    with pytest.raises(ValidationError) as info:
        TariffConfig(**{field: -0.1})
    err = info.value.errors()[0]
    assert err["loc"] == (field,)
    assert field in err["msg"] and ">= 0" in err["msg"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"valley_reduction": 1.5}, "valley_reduction must be within [0, 1]"),
    ({"pv_to_ev_discount": -0.1}, "pv_to_ev_discount must be within [0, 1]"),
    ({"peak_uplift": -0.2}, "peak_uplift must be a finite share"),
    ({"peak_hours": [[20, 25]]}, "0 <= start < end <= 24"),
    ({"peak_hours": [[11, 17], [16, 18]]}, "peak_hours: ranges overlap"),
    ({"peak_hours": [[7, 9]]}, "peak_hours and valley_hours overlap"),
    ({"critical_hours": [[12.01, 14]]}, "whole minute"),
    ({"critical_months": [0, 7]}, "critical_months must be months 1-12"),
    ({"fixed_component_cny_per_kwh": 0.9}, "must not exceed flat_cny_per_kwh"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"flat_price": 0.7}, "Extra inputs are not permitted"),
])
def test_bad_config_says_what_is_wrong(changes, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TariffConfig(**changes)


def test_config_round_trips_through_plain_data():
    cfg = TariffConfig(pv_to_ev_discount=0.1, critical_months=[7, 8])
    assert TariffConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_half_hour_boundaries_work():
    cfg = TariffConfig(peak_hours=[[10.5, 12], [14, 19]], valley_hours=[[0, 8]],
                       critical_hours=[[11, 11.5]], critical_months=[7])
    t = at("2025-07-01 10:15", "2025-07-01 10:30", "2025-07-01 11:15", "2025-07-01 11:30")
    assert list(cfg.period(t)) == ["flat", "peak", "critical", "peak"]
