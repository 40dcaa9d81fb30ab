"""The ``coordinator:`` section of a scenario: strategy, prices, peak target, grid limits, LP.

Example (YAML)::

    coordinator:
      strategy: v2g_peak_shaving      # uncontrolled | pv_following | v2g_peak_shaving
                                      # | grid_aware | optimal
      tariffs: {v2g_base_cny_per_kwh: 0.45}
      peak_threshold_kw: null         # null: adaptive, the highest import incurred so far
      v2g_reserve_h: 1.0
      v_band_pu: [0.95, 1.05]         # grid_aware; default: the grid section's band
      optimal: {objective: peak, horizon_h: 24}
      island: {use_schedule: true, margin_kw: 200}   # island mode during upstream outages

``coordinator: {strategy: pv_following}`` is enough: every other field has a default.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from components.base import StrictModel
from components.coordinator.tariffs import PERIODS, TariffConfig

StrategyName = Literal["uncontrolled", "pv_following", "v2g_peak_shaving", "grid_aware",
                       "optimal"]
STRATEGY_NAMES: tuple[str, ...] = get_args(StrategyName)
"""Keys of :data:`components.coordinator.strategies.STRATEGIES`, in the order of the issue."""

Objective = Literal["cost", "pv", "peak"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)


class OptimalConfig(StrictModel):
    """The linear-programming reference (strategy ``optimal``), see :mod:`.optimal`."""

    objective: Objective = Field(
        "cost",
        description="cost: EV users' net bill (grid and local PV energy at their prices less "
        "V2G remuneration); pv: grid energy cost of EV charging with local PV free, i.e. the "
        "objective of pv_following; peak: the zone's peak import, i.e. the objective of "
        "v2g_peak_shaving",
    )
    horizon_h: float = Field(24.0, gt=0, le=168, description="look-ahead window [h]")
    resolve_every_steps: int = Field(
        1, ge=1, le=96,
        description="re-solve the programme every this many steps; in between the plan is "
        "followed and EVs that arrived since the last solve charge their mandatory power and "
        "local PV [-]",
    )
    unmet_penalty_cny_per_kwh: float = Field(
        20.0, gt=0, description="price of energy an EV lacks at departure (soft constraint) "
        "[CNY/kWh]")
    peak_weight_cny_per_kw: float = Field(
        100.0, gt=0, description="objective peak: weight of the peak against the energy cost, "
        "which only breaks ties [CNY/kW]")
    time_limit_s: float = Field(60.0, gt=0, description="HiGHS time limit per solve [s]")


class IslandConfig(StrictModel):
    """Island mode (see :mod:`.island`): how the coordinator balances the zone while the
    upstream grid is out and a grid-forming battery holds it."""

    enabled: bool = Field(
        True, description="balance the island (every strategy except uncontrolled)")
    use_schedule: bool = Field(
        True,
        description="use the grid operator's announced outage schedule: prepare PV "
        "curtailment and factory shedding one step before the island forms, budget the "
        "battery's energy over the rest of the outage and restore one step before it ends; "
        "false: react to the grid's telemetry only",
    )
    assumed_outage_h: float = Field(
        4.0, gt=0, le=168,
        description="without a schedule: how long an outage is assumed to last, for the "
        "battery's energy budget [h]",
    )
    margin_kw: float = Field(
        200.0, ge=0, description="fixed part of the safety margin kept below the grid-forming "
        "unit's power limits [kW]")
    load_margin_share: float = Field(
        0.08, ge=0, le=1,
        description="margin for the change of the background load and generation from the "
        "last step, as a share of what stays supplied (they are forecast by persistence) [-]",
    )
    pv_margin_share: float = Field(
        0.1, ge=0, le=1,
        description="margin for the change of PV output within a step, as a share of it [-]",
    )
    v2g_beyond_departure: bool = Field(
        True,
        description="when shedding every non-critical load is not enough, V2G EVs discharge "
        "down to their users' minimum state of charge, even below their departure needs "
        "(critical load first)",
    )


class CoordinatorConfig(StrictModel):
    """The SDG coordinator of a zone: how it sets EV power, PV curtailment and reactive power."""

    strategy: StrategyName = Field(
        "pv_following",
        description="dispatch strategy: " + " | ".join(STRATEGY_NAMES),
    )
    tariffs: TariffConfig = Field(default_factory=TariffConfig)
    offpeak_periods: tuple[str, ...] = Field(
        ("valley",),
        description="tariff periods in which pv_following and the V2G strategies charge from "
        "the grid beyond what departures need right now: " + ", ".join(PERIODS),
    )
    departure_target: Literal["full", "morning_full", "need"] = Field(
        "full",
        description="the energy EVs leave with: full: as full as they would leave "
        "uncontrolled, the strategies only choose when (so no user is worse off than without "
        "a coordinator); morning_full: full when leaving in the off-peak window or up to "
        "offpeak_fill_margin_h after it, else what their users need; need: what their users "
        "need (most room for PV and the lowest bill, but an EV that stops somewhere only "
        "briefly before leaving again may then lack energy)",
    )
    offpeak_fill_margin_h: float = Field(
        2.0, ge=0, le=24,
        description="EVs leaving in the off-peak window or up to this long after it count as "
        "leaving before the next PV hours: the grid fills them in the window [h]",
    )
    offpeak_fill_lead_h: float = Field(
        0.0, ge=0, le=12,
        description="finish the off-peak fill this long before the window ends or the EV "
        "leaves (where the window allows), e.g. away from the morning ramp of the load; 0 "
        "leaves the early-morning sun to EVs that leave after it [h]",
    )
    charge_pv_to_full: bool = Field(
        True, description="let EVs take local PV beyond their departure need, up to full",
    )
    departure_margin_s: float = Field(
        900.0, ge=0, le=14_400,
        description="plan each departure this much earlier, so that deferred charging still "
        "finishes in time [s]",
    )
    need_margin: float = Field(
        0.02, ge=0, le=0.5,
        description="plan this share more energy than each EV needs (taper, rounding) [-]",
    )
    peak_threshold_kw: float | None = Field(
        None, gt=0,
        description="zone import above which V2G discharges and charging is held back; null: "
        "adaptive, the highest import already incurred in the run [kW]",
    )
    v2g_horizon_h: float = Field(
        8.0, ge=0, le=48,
        description="adaptive threshold: at least the level that the V2G energy of the EVs "
        "plugged now could hold the forecast import to over this window, so that energy is "
        "kept for the highest part of the coming peak; 0: the highest import so far only [h]",
    )
    peak_margin_quantile: float = Field(
        0.75, ge=0, lt=1,
        description="V2G strategies hold the import at least this far below the threshold: "
        "this quantile of the amounts by which the coordinator's estimate of the zone's import "
        "without EVs fell short so far (the part of it the coordinator does not observe, the "
        "grid's other loads and generation, is known only up to the last step, so a margin "
        "pre-empts its jumps); 0: no margin [-]",
    )
    peak_margin_max_quantile: float = Field(
        0.95, ge=0, lt=1,
        description="V2G strategies: the widest margin below the threshold, this quantile of "
        "the amounts by which the estimate of the import fell short. Charging beyond the "
        "mandatory power is deferred below it (which costs no energy); V2G discharges down to "
        "it as far as the V2G energy at hand allows (what the forecast import of the "
        "v2g_horizon_h window may need, its learned forecast errors included, is kept), so "
        "that the rarer, larger jumps do not set a new peak; 0: the margin is never widened "
        "[-]",
    )
    v2g_reserve_h: float = Field(
        1.0, ge=0, le=24,
        description="an EV discharges only while it could still meet its departure need this "
        "long before departing [h]",
    )
    factory_shedding: bool = Field(
        False,
        description="V2G strategies may ask factories to shed deferrable load when V2G cannot "
        "hold the peak threshold (applies from the next step)",
    )
    v_band_pu: tuple[float, float] | None = Field(
        None, description="grid_aware: allowed bus voltage [low, high]; null: the grid "
        "section's v_band_pu [pu]",
    )
    v_margin_pu: float = Field(
        0.003, ge=0, le=0.05,
        description="grid_aware: keep predicted voltages this far inside the band [pu]",
    )
    loading_max_pct: float = Field(
        100.0, gt=0, le=200, description="grid_aware: line and transformer loading limit [%]",
    )
    loading_margin_pct: float = Field(
        2.0, ge=0, le=50, description="grid_aware: keep predicted loading this far below the "
        "limit [%]",
    )
    q_control: bool = Field(
        True, description="grid_aware: use the PV inverters' reactive power for voltage",
    )
    curtailment: bool = Field(
        True, description="grid_aware: curtail PV as the last resort against over-voltage or "
        "reverse-flow overloading",
    )
    optimal: OptimalConfig = Field(default_factory=OptimalConfig)
    island: IslandConfig = Field(default_factory=IslandConfig)

    @field_validator("offpeak_periods")
    @classmethod
    def _known_periods(cls, periods: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in periods if p not in PERIODS]
        if unknown:
            raise ValueError(f"unknown tariff period(s) {unknown}; known: {list(PERIODS)}")
        return periods

    @field_validator("v_band_pu")
    @classmethod
    def _band(cls, band: tuple[float, float] | None) -> tuple[float, float] | None:
        if band is not None and not 0.5 < band[0] < band[1] < 1.5:
            raise ValueError(f"need 0.5 < low < high < 1.5 [pu], got {list(band)}")
        return band

    @model_validator(mode="after")
    def _margin_quantiles_ordered(self) -> CoordinatorConfig:
        q, q_max = self.peak_margin_quantile, self.peak_margin_max_quantile
        if q_max != 0 and q_max < q:
            raise ValueError(f"peak_margin_max_quantile ({q_max}) must be 0 (never widen the "
                             f"margin) or at least peak_margin_quantile ({q})")
        return self

    @model_validator(mode="after")
    def _margin_inside_band(self) -> CoordinatorConfig:
        if self.v_band_pu is not None:
            lo, hi = self.v_band_pu
            if 2 * self.v_margin_pu >= hi - lo:
                raise ValueError(f"v_margin_pu ({self.v_margin_pu}) leaves nothing of the band "
                                 f"{list(self.v_band_pu)}")
        return self
