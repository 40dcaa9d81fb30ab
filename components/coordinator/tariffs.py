"""Electricity prices of the district: the grid's time-of-use tariff, PV feed-in, local PV and V2G.

All prices are in CNY per kWh and depend only on the wall-clock time of the start of a step
(a step never straddles a period boundary at the default 15-min resolution: every boundary of the
Chongqing schedule is on the full hour).

Grid purchase tariff (Chongqing, industrial and commercial users)
-----------------------------------------------------------------
Periods, 8 h each, from 重庆市发展和改革委员会《关于进一步完善我市分时电价机制有关事项的通知》
(渝发改规范〔2021〕14号, Chongqing Municipal Development and Reform Commission, 9 Dec 2021):

========  ==========================================================
peak      11:00-17:00, 20:00-22:00
flat      08:00-11:00, 17:00-20:00, 22:00-24:00
valley    00:00-08:00
critical  12:00-14:00 in July, August (summer) and December, January (winter), inside the peak
========  ==========================================================

Float ratios of the same notice: the peak price is the flat price +60 %, the valley price -62 %
(peak : valley = 4.2 : 1), the critical-peak price is the peak price +20 %. Only the energy part
of the price floats; transmission and distribution, government funds and surcharges do not.

Price level: 国网重庆市电力有限公司《代理购电价格信息表》(State Grid Chongqing Electric Power,
agency-purchase price table, February 2025), 1-10 kV two-part industrial and commercial users:
flat 0.762307, peak 1.133067, valley 0.379188 CNY/kWh. These three numbers fix the floating part
exactly: (peak - valley) / (1.60 - 0.38) = 0.617934 CNY/kWh, so the non-floating part is
0.762307 - 0.617934 = 0.144373 CNY/kWh, and the critical price follows as
0.144373 + 0.617934 * 1.60 * 1.20 = 1.330805 CNY/kWh. The agency-purchase level changes every month;
set ``flat_cny_per_kwh`` and ``fixed_component_cny_per_kwh`` from the month you study.

PV feed-in
----------
Exported PV energy is paid at Chongqing's coal-fired benchmark price, 0.3964 CNY/kWh
(燃煤发电基准价, set by 国家发展改革委《关于深化燃煤发电上网电价形成机制改革的指导意见》,
发改价格规〔2019〕1658号, NDRC, Oct 2019, equal to the former desulphurised-coal benchmark).

Local PV to EV
--------------
A PV plant selling to a charging site in the zone charges the grid price of the moment less a
discount (default 15 %: an assumption, typical of rooftop PV energy-performance contracts, not a
published tariff), but not less than the feed-in price (below it the plant would rather export)
and never more than the grid price (above it the site would rather buy from the grid). In the
valley the grid price (0.379) is below the feed-in price (0.3964): the local price is then the
grid price, and local trade gains the seller nothing over exporting.

V2G remuneration
----------------
Energy discharged by EVs into the grid is paid the feed-in benchmark times the time-of-use ratio
of the moment, the rule of the Guangdong pilot: 广东省发展改革委 (2025) sets the discharge price of
new-energy vehicles at 0.453 CNY/kWh (Guangdong's coal benchmark) times the peak/flat/valley ratio,
first settled by China Southern Power Grid Shenzhen on 13 Jan 2026 (Xinhua, 14 Jan 2026). Here the
Chongqing benchmark and Chongqing ratios are used: 0.3964 * (0.38, 1, 1.6, 1.92) for
(valley, flat, peak, critical). Set ``v2g_follows_tou: false`` for a flat remuneration.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import Field, ValidationInfo, field_validator, model_validator

from components.base import StrictModel, TimeZoneName

PERIODS: tuple[str, ...] = ("valley", "flat", "peak", "critical")
"""Period names; :func:`period_code` returns indices into this tuple."""
VALLEY, FLAT, PEAK, CRITICAL = range(4)

CHONGQING_COAL_BENCHMARK_CNY_PER_KWH = 0.3964

HourRange = Annotated[tuple[float, float], Field(description="[start, end) in hours of the day")]

_PRICE_FIELDS = (
    "flat_cny_per_kwh", "fixed_component_cny_per_kwh", "pv_feed_in_cny_per_kwh",
    "v2g_base_cny_per_kwh",
)


class TariffConfig(StrictModel):
    """Time-of-use grid tariff and the prices of local trades; defaults are Chongqing's."""

    timezone: TimeZoneName = Field("Asia/Shanghai", description="IANA time zone the schedule is given in")
    flat_cny_per_kwh: float = Field(
        0.762307, description="grid purchase price in the flat period [CNY/kWh]"
    )
    fixed_component_cny_per_kwh: float = Field(
        0.144373,
        description="part of the flat price that does not float with the period: transmission "
        "and distribution, government funds and surcharges [CNY/kWh]",
    )
    peak_uplift: float = Field(0.60, description="peak floating part = flat x (1 + uplift) [-]")
    valley_reduction: float = Field(
        0.62, description="valley floating part = flat x (1 - reduction) [-]"
    )
    critical_uplift: float = Field(
        0.20, description="critical floating part = peak x (1 + uplift) [-]"
    )
    peak_hours: tuple[HourRange, ...] = ((11.0, 17.0), (20.0, 22.0))
    valley_hours: tuple[HourRange, ...] = ((0.0, 8.0),)
    critical_hours: tuple[HourRange, ...] = ((12.0, 14.0),)
    critical_months: tuple[int, ...] = Field(
        (1, 7, 8, 12), description="months (1-12) in which critical_hours apply"
    )
    pv_feed_in_cny_per_kwh: float = Field(
        CHONGQING_COAL_BENCHMARK_CNY_PER_KWH, description="price paid for exported PV [CNY/kWh]"
    )
    pv_to_ev_discount: float = Field(
        0.15, description="discount of the local PV price on the grid price of the moment [-]"
    )
    v2g_base_cny_per_kwh: float = Field(
        CHONGQING_COAL_BENCHMARK_CNY_PER_KWH,
        description="V2G remuneration in the flat period (or always, if v2g_follows_tou is "
        "false) [CNY/kWh]",
    )
    v2g_follows_tou: bool = Field(
        True, description="scale the V2G remuneration by the time-of-use ratio of the moment"
    )

    @field_validator(*_PRICE_FIELDS)
    @classmethod
    def _price_not_negative(cls, value: float, info: ValidationInfo) -> float:
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{info.field_name} must be a finite price >= 0 CNY/kWh, got {value}")
        return value

    @field_validator("peak_uplift", "critical_uplift")
    @classmethod
    def _uplift(cls, value: float, info: ValidationInfo) -> float:
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{info.field_name} must be a finite share >= 0, got {value}")
        return value

    @field_validator("valley_reduction", "pv_to_ev_discount")
    @classmethod
    def _share(cls, value: float, info: ValidationInfo) -> float:
        if not 0 <= value <= 1:
            raise ValueError(f"{info.field_name} must be within [0, 1], got {value}")
        return value

    @field_validator("peak_hours", "valley_hours", "critical_hours")
    @classmethod
    def _hour_ranges(cls, ranges: tuple[tuple[float, float], ...], info: ValidationInfo):
        for start, end in ranges:
            if not 0 <= start < end <= 24:
                raise ValueError(f"{info.field_name}: range [{start}, {end}) must satisfy "
                                 "0 <= start < end <= 24 [h]")
            for h in (start, end):
                if abs(h * 60 - round(h * 60)) > 1e-9:
                    raise ValueError(f"{info.field_name}: {h} h is not on a whole minute")
        minutes = [m for r in ranges for m in _minutes(r)]
        if len(minutes) != len(set(minutes)):
            raise ValueError(f"{info.field_name}: ranges overlap")
        return ranges

    @field_validator("critical_months")
    @classmethod
    def _months(cls, months: tuple[int, ...]) -> tuple[int, ...]:
        bad = [m for m in months if not 1 <= m <= 12]
        if bad:
            raise ValueError(f"critical_months must be months 1-12, got {bad}")
        return months

    @model_validator(mode="after")
    def _consistent(self) -> TariffConfig:
        if self.fixed_component_cny_per_kwh > self.flat_cny_per_kwh:
            raise ValueError(
                f"fixed_component_cny_per_kwh ({self.fixed_component_cny_per_kwh}) must not "
                f"exceed flat_cny_per_kwh ({self.flat_cny_per_kwh}): the floating part would "
                "be negative")
        both = {m for r in self.peak_hours for m in _minutes(r)} & {
            m for r in self.valley_hours for m in _minutes(r)}
        if both:
            first = min(both)
            raise ValueError(f"peak_hours and valley_hours overlap (e.g. at "
                             f"{first // 60:02d}:{first % 60:02d})")
        return self

    # -- derived numbers ------------------------------------------------------------------------

    @property
    def ratios(self) -> np.ndarray:
        """Multiplier of the floating part per period, in :data:`PERIODS` order [-]."""
        peak = 1.0 + self.peak_uplift
        return np.array([1.0 - self.valley_reduction, 1.0, peak, peak * (1 + self.critical_uplift)])

    @property
    def period_prices_cny_per_kwh(self) -> dict[str, float]:
        """Grid purchase price of each period [CNY/kWh]."""
        return dict(zip(PERIODS, _period_prices(self).tolist(), strict=True))

    # -- vectorised look-ups --------------------------------------------------------------------

    def period_code(self, times) -> np.ndarray:
        """Period index (into :data:`PERIODS`) at each time, as ``int8``."""
        month, minute = _month_minute(times, self.timezone)
        table = _schedule(self.peak_hours, self.valley_hours, self.critical_hours)
        critical_month = np.isin(month, np.asarray(self.critical_months, dtype=month.dtype))
        return table[critical_month.astype(np.intp), minute]

    def period(self, times) -> np.ndarray:
        """Period name (``valley``, ``flat``, ``peak``, ``critical``) at each time."""
        return np.asarray(PERIODS)[self.period_code(times)]

    def price_cny_per_kwh(self, times) -> np.ndarray:
        """Grid purchase price at each time [CNY/kWh]."""
        return _period_prices(self)[self.period_code(times)]

    def pv_to_ev_price_cny_per_kwh(self, times) -> np.ndarray:
        """Price of PV energy sold to a charging site in the zone at each time [CNY/kWh]."""
        grid = self.price_cny_per_kwh(times)
        local = np.maximum(grid * (1.0 - self.pv_to_ev_discount), self.pv_feed_in_cny_per_kwh)
        return np.minimum(local, grid)

    def pv_feed_in_price_cny_per_kwh(self, times) -> np.ndarray:
        """Price paid for PV energy exported to the grid at each time [CNY/kWh]."""
        return np.full(len(pd.DatetimeIndex(times)), self.pv_feed_in_cny_per_kwh)

    def v2g_price_cny_per_kwh(self, times) -> np.ndarray:
        """Remuneration of energy discharged by EVs into the grid at each time [CNY/kWh]."""
        if not self.v2g_follows_tou:
            return np.full(len(pd.DatetimeIndex(times)), self.v2g_base_cny_per_kwh)
        return self.v2g_base_cny_per_kwh * self.ratios[self.period_code(times)]


def _minutes(hour_range: tuple[float, float]) -> range:
    start, end = hour_range
    return range(round(start * 60), round(end * 60))


@lru_cache(maxsize=32)
def _schedule(peak, valley, critical) -> np.ndarray:
    """Period code per minute of the day: row 0 ordinary months, row 1 critical months."""
    day = np.full(1440, FLAT, dtype=np.int8)
    for r in peak:
        day[_minutes(r).start:_minutes(r).stop] = PEAK
    for r in valley:
        day[_minutes(r).start:_minutes(r).stop] = VALLEY
    critical_day = day.copy()
    for r in critical:
        critical_day[_minutes(r).start:_minutes(r).stop] = CRITICAL
    table = np.stack([day, critical_day])
    table.flags.writeable = False
    return table


def _period_prices(cfg: TariffConfig) -> np.ndarray:
    floating = cfg.flat_cny_per_kwh - cfg.fixed_component_cny_per_kwh
    return cfg.fixed_component_cny_per_kwh + floating * cfg.ratios


def _month_minute(times, tz: str) -> tuple[np.ndarray, np.ndarray]:
    idx = pd.DatetimeIndex(times)
    if idx.tz is None:
        raise ValueError("times must be time-zone aware (e.g. localised to 'Asia/Shanghai'); "
                         "a naive time is ambiguous for a time-of-use tariff")
    local = idx.tz_convert(tz)
    minute = local.hour.to_numpy(np.intp) * 60 + local.minute.to_numpy(np.intp)
    return local.month.to_numpy(np.int64), minute


def period(times, tariff: TariffConfig | None = None) -> np.ndarray:
    """Period name at each time of a tz-aware ``DatetimeIndex`` (default: Chongqing tariff)."""
    return (tariff or TariffConfig()).period(times)


def price_cny_per_kwh(times, tariff: TariffConfig | None = None) -> np.ndarray:
    """Grid purchase price at each time of a tz-aware ``DatetimeIndex`` [CNY/kWh]."""
    return (tariff or TariffConfig()).price_cny_per_kwh(times)
