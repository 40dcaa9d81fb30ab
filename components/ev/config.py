"""The ``ev:`` section of a scenario: fleet, vehicles, charging sites, user behaviour, ageing.

Example (YAML)::

    ev:
      fleet_size: 1200
      user_mix: {commuter: 0.7, shift_worker: 0.2, commercial: 0.1}
      vehicle_mix: {byd_dolphin: 0.5, wuling_hongguang_mini_ev: 0.5}
      v2g_willing_share: 0.5
      sites:
        - {name: estate-a, kind: home, bus: 12,
           chargers: [{type: ac7, count: 300}, {type: v2g, count: 40}]}
        - {name: factory-carport, kind: workplace, bus: "LV bus 7",
           chargers: [{type: v2g, count: 60, p_max_kw: 20, p_discharge_max_kw: 15}]}
        - {name: depot, kind: depot, bus: 9, chargers: [{type: ac11, count: 100}]}

Bus references are resolved by the framework; this module only checks the values themselves.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from components.base import BusRef, StrictModel
from components.ev.vehicles import (
    DEFAULT_COMMERCIAL_MIX,
    DEFAULT_PRIVATE_MIX,
    VEHICLES,
    VehicleSpec,
)

SiteKind = Literal["home", "workplace", "public", "depot"]
ChargerType = Literal["ac7", "ac11", "dc60", "dc120", "v2g"]

CHARGER_DEFAULT_KW: dict[str, tuple[float, float]] = {
    "ac7": (7.0, 0.0),
    "ac11": (11.0, 0.0),
    "dc60": (60.0, 0.0),
    "dc120": (120.0, 0.0),
    "v2g": (11.0, 11.0),
}
"""Default (charge, discharge) power of each charger type [kW]. ``ac*`` chargers use the car's
on-board charger; ``dc*`` and ``v2g`` (bidirectional DC) need a DC inlet."""

CHONGQING_MONTHLY_TEMP_C: tuple[float, ...] = (
    7.9, 10.1, 13.8, 18.8, 22.8, 25.4, 28.5, 28.4, 24.1, 18.9, 14.2, 9.4,
)
"""Monthly mean air temperature of Chongqing (Shapingba station, China Meteorological
Administration 1981-2010 normals) [degC]; consistent with the 4-8 degC coldest-month and
26-29 degC hottest-month means given for the main urban area (csair.com climate guide)."""


_WEEKDAYS: dict[str, int] = {
    name: i
    for names in (("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
                  ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
    for i, name in enumerate(names, start=1)
}


def weekday_numbers(days: Any) -> list[int]:
    """ISO weekday numbers (Mon = 1 .. Sun = 7) of a list of numbers, names or ranges.

    Accepts what the factory shift calendars accept: ``[1, 2, 3]``, ``["Mon", "Wed"]``,
    ``["Mon-Fri"]`` or a single entry; returns them sorted, without repeats.
    """
    items = [days] if isinstance(days, (str, int)) else days
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError("must be a non-empty list of weekdays, e.g. ['Mon-Fri'] or [1, 2, 3]")
    out: set[int] = set()
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= 7:
            out.add(item)
            continue
        text = item.strip().lower() if isinstance(item, str) else None
        if text is not None and text.isdigit() and 1 <= int(text) <= 7:
            out.add(int(text))
        elif text is not None and text in _WEEKDAYS:
            out.add(_WEEKDAYS[text])
        elif text is not None and "-" in text:
            first, _, last = (x.strip() for x in text.partition("-"))
            if first not in _WEEKDAYS or last not in _WEEKDAYS:
                raise ValueError(f"unknown weekday range {item!r}, e.g. 'Mon-Sat'")
            lo, hi = _WEEKDAYS[first], _WEEKDAYS[last]
            if hi < lo:
                raise ValueError(f"weekday range {item!r} must run forward, e.g. 'Mon-Sat'")
            out.update(range(lo, hi + 1))
        else:
            raise ValueError(
                f"weekday must be a name (Mon..Sun), a range ('Mon-Sat') or an ISO number "
                f"1 (Mon) .. 7 (Sun), got {item!r}"
            )
    return sorted(out)


class ChargerGroup(StrictModel):
    """Chargers of one type at a site."""

    type: ChargerType = Field(..., description="ac7 | ac11 | dc60 | dc120 | v2g")
    count: int = Field(..., ge=0, description="number of charging points")
    p_max_kw: float | None = Field(None, gt=0, description="charge power per point [kW]")
    p_discharge_max_kw: float | None = Field(
        None, ge=0, description="discharge power per point, v2g only [kW]"
    )

    @model_validator(mode="after")
    def _discharge_only_v2g(self) -> ChargerGroup:
        if self.type != "v2g" and (self.p_discharge_max_kw or 0.0) > 0:
            raise ValueError(
                f"p_discharge_max_kw: only 'v2g' chargers can discharge, this group is "
                f"{self.type!r}"
            )
        return self

    @property
    def charge_kw(self) -> float:
        """Charge power per point [kW]."""
        return self.p_max_kw if self.p_max_kw is not None else CHARGER_DEFAULT_KW[self.type][0]

    @property
    def discharge_kw(self) -> float:
        """Discharge power per point [kW] (0 for charge-only types)."""
        if self.p_discharge_max_kw is not None:
            return self.p_discharge_max_kw
        return CHARGER_DEFAULT_KW[self.type][1]


class ChargingSite(StrictModel):
    """A place where EVs park and may charge, connected to one grid bus."""

    name: str = Field(..., min_length=1)
    kind: SiteKind = Field(..., description="home | workplace | public | depot")
    bus: BusRef = Field(..., description="grid bus (index or name) the chargers connect to")
    chargers: list[ChargerGroup] = Field(default_factory=list)
    weight: float | None = Field(
        None, ge=0,
        description="share of the EVs based here (home, depot) or working here (workplace) "
                    "relative to sites of the same kind; default: its number of chargers",
    )
    patience_min: float = Field(
        30.0, ge=0, description="how long an arriving EV waits for a free charger [min]"
    )

    @field_validator("chargers")
    @classmethod
    def _unique_types(cls, groups: list[ChargerGroup]) -> list[ChargerGroup]:
        types = [g.type for g in groups]
        dupes = sorted({t for t in types if types.count(t) > 1})
        if dupes:
            raise ValueError(f"charger type(s) {dupes} listed twice; give one group per type")
        return groups

    @property
    def n_chargers(self) -> int:
        """Total number of charging points."""
        return sum(g.count for g in self.chargers)


class UserMix(StrictModel):
    """Shares of the fleet by user type; they must sum to 1."""

    commuter: float = Field(0.7, ge=0, le=1)
    shift_worker: float = Field(0.2, ge=0, le=1)
    commercial: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> UserMix:
        total = self.commuter + self.shift_worker + self.commercial
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"shares must sum to 1, got {total:.6g}")
        return self


class Behaviour(StrictModel):
    """Distributions the daily trip chains are drawn from (local time, hours from midnight)."""

    speed_kmh: float = Field(22.0, gt=0, description="mean urban driving speed [km/h]")
    commute_km_median: float = Field(9.0, gt=0, description="one-way commute, median [km]")
    commute_km_sigma: float = Field(0.6, ge=0, description="log-normal sigma of the commute [-]")
    leave_home_h_mean: float = Field(7.75, ge=0, lt=24, description="commuters leave home [h]")
    leave_home_h_std: float = Field(0.75, ge=0, description="spread of leaving home [h]")
    work_hours_mean: float = Field(9.0, gt=0, le=16, description="time at work [h]")
    work_hours_std: float = Field(1.0, ge=0, description="spread of time at work [h]")
    workdays: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5],
                                description="commuters' workdays: ISO numbers 1 (Mon) .. 7 (Sun), "
                                            "names or ranges such as 'Mon-Fri'")
    workday_share: float = Field(0.92, ge=0, le=1,
                                 description="share of workdays a commuter drives to work")
    leisure_prob_workday: float = Field(0.2, ge=0, le=1,
                                        description="evening leisure/errand trip on workdays")
    leisure_prob_offday: float = Field(0.6, ge=0, le=1,
                                       description="leisure trip on days off")
    leisure_km_median: float = Field(9.0, gt=0, description="one-way leisure trip, median [km]")
    leisure_km_sigma: float = Field(0.7, ge=0)
    leisure_public_share: float = Field(
        0.5, ge=0, le=1, description="share of leisure trips ending at a public charging site"
    )
    leisure_dwell_h: tuple[float, float] = Field((1.0, 3.0), description="stay, uniform [h]")
    plug_soc_threshold: tuple[float, float] = Field(
        (0.4, 1.0),
        description="each private user plugs in at home or work only below a personal SoC "
                    "threshold drawn uniformly from this range; V2G users and the commercial "
                    "fleet plug in whenever they park at a site with chargers [-]",
    )
    public_plug_soc: float = Field(
        0.6, ge=0, le=1, description="at a public site users plug in only below this SoC [-]"
    )
    shift_lead_min: tuple[float, float] = Field(
        (10.0, 30.0), description="shift workers arrive this long before the shift [min]"
    )
    commercial_days: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6],
                                       description="days the commercial fleet works (as workdays)")
    commercial_leave_h_mean: float = Field(8.0, ge=0, lt=24)
    commercial_leave_h_std: float = Field(0.5, ge=0)
    commercial_stops_mean: float = Field(5.0, ge=0, description="stops per tour, Poisson mean")
    commercial_stops_max: int = Field(8, ge=1, le=20)
    commercial_leg_km_median: float = Field(6.0, gt=0)
    commercial_leg_km_sigma: float = Field(0.6, ge=0)
    commercial_dwell_min: tuple[float, float] = Field((10.0, 40.0),
                                                      description="stop length, uniform [min]")
    commercial_hub_prob: float = Field(
        0.3, ge=0, le=1, description="chance of a midday stop at a public charging site"
    )

    @field_validator("workdays", "commercial_days", mode="before")
    @classmethod
    def _weekdays(cls, days: Any) -> list[int]:
        return weekday_numbers(days)

    @field_validator("plug_soc_threshold")
    @classmethod
    def _share_interval(cls, lo_hi: tuple[float, float]) -> tuple[float, float]:
        lo, hi = lo_hi
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"need 0 <= low <= high <= 1, got {lo_hi}")
        return lo_hi

    @field_validator("leisure_dwell_h", "shift_lead_min", "commercial_dwell_min")
    @classmethod
    def _interval(cls, lo_hi: tuple[float, float]) -> tuple[float, float]:
        lo, hi = lo_hi
        if not 0 <= lo <= hi:
            raise ValueError(f"need 0 <= low <= high, got {lo_hi}")
        return lo_hi


class AgeingParams(StrictModel):
    """Battery degradation model of Xu et al. (2018), default parameters as published (LMO cells).

    B. Xu, A. Oudalov, A. Ulbig, G. Andersson, D. S. Kirschen, "Modeling of lithium-ion battery
    degradation for cell life assessment", IEEE Trans. Smart Grid 9(2), 1131-1140, 2018,
    doi:10.1109/TSG.2016.2578950.
    """

    enabled: bool = True
    alpha_sei: float = Field(5.75e-2, ge=0, lt=1, description="SEI capacity share [-]")
    beta_sei: float = Field(121.0, gt=0, description="SEI formation rate [-]")
    k_delta1: float = Field(1.40e5, description="DoD stress coefficient 1 [-]")
    k_delta2: float = Field(-5.01e-1, description="DoD stress exponent [-]")
    k_delta3: float = Field(-1.23e5, description="DoD stress coefficient 3 [-]")
    k_sigma: float = Field(1.04, description="SoC stress coefficient [-]")
    sigma_ref: float = Field(0.5, ge=0, le=1, description="reference SoC [-]")
    k_temp: float = Field(6.93e-2, description="temperature stress coefficient [1/K]")
    temp_ref_c: float = Field(25.0, description="reference cell temperature [degC]")
    k_time: float = Field(4.14e-10, ge=0, description="calendar stress per second [1/s]")

    @model_validator(mode="after")
    def _dod_stress_positive(self) -> AgeingParams:
        # S_delta(1) = 1 / (k1 + k3) must be positive, else full cycles would heal the battery
        if self.k_delta1 + self.k_delta3 <= 0:
            raise ValueError("k_delta1 + k_delta3 must be > 0 (stress of a full cycle)")
        return self


class EVConfig(StrictModel):
    """The EV fleet of a zone."""

    fleet_size: int = Field(1000, gt=0, description="number of EVs")
    user_mix: UserMix = Field(default_factory=UserMix)
    vehicles: dict[str, VehicleSpec] = Field(
        default_factory=dict, description="custom vehicle types, added to (or replacing) the table"
    )
    vehicle_mix: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_PRIVATE_MIX),
        description="vehicle types of commuters and shift workers, shares summing to 1",
    )
    commercial_vehicle_mix: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_COMMERCIAL_MIX),
        description="vehicle types of the commercial fleet, shares summing to 1",
    )
    consumption_factor: float = Field(
        1.2, gt=0, le=3, description="real-world / type-approval consumption [-]"
    )
    soc_min: float = Field(0.05, ge=0, lt=1, description="lowest SoC a car drives down to [-]")
    soc_max: float = Field(1.0, gt=0, le=1, description="highest SoC charging reaches [-]")
    initial_soc: tuple[float, float] = Field((0.5, 0.9), description="uniform range at start [-]")
    departure_soc_target: float = Field(
        0.8, ge=0, le=1, description="SoC users want when leaving home or depot [-]"
    )
    trip_reserve_soc: float = Field(
        0.1, ge=0, le=1, description="reserve users keep above the energy of their next trips [-]"
    )
    v2g_willing_share: float = Field(0.5, ge=0, le=1, description="users who allow V2G [-]")
    min_soc_v2g: float = Field(
        0.4, ge=0, le=1, description="SoC below which V2G never discharges a car [-]"
    )
    charge_efficiency: float = Field(0.92, gt=0, le=1, description="grid to battery [-]")
    discharge_efficiency: float = Field(0.92, gt=0, le=1, description="battery to grid [-]")
    cv_taper_soc: float = Field(
        0.8, gt=0, lt=1,
        description="SoC where the battery's acceptance starts to fall linearly to zero at "
                    "soc_max (CV phase); weaker chargers stay at full power longer [-]",
    )
    charge_acceptance_c_rate: float = Field(
        1.0, gt=0, le=10,
        description="power a battery accepts before the CV phase, as a C-rate; a car's DC limit "
                    "counts if higher [1/h]",
    )
    cv_end_power_share: float = Field(
        0.05, ge=0, lt=1,
        description="charging ends when the acceptance has fallen to this share of its full "
                    "value, i.e. at soc_max - share * (soc_max - cv_taper_soc) [-]",
    )
    power_factor: float = Field(1.0, gt=0, le=1, description="charger power factor [-]")
    sites: list[ChargingSite] = Field(..., min_length=1)
    ambient_temp_c_monthly: tuple[float, ...] = Field(
        CHONGQING_MONTHLY_TEMP_C, description="monthly mean ambient temperature [degC]"
    )
    behaviour: Behaviour = Field(default_factory=Behaviour)
    ageing: AgeingParams = Field(default_factory=AgeingParams)

    @field_validator("vehicle_mix", "commercial_vehicle_mix")
    @classmethod
    def _mix_known_and_normalised(cls, mix: dict[str, float], info: ValidationInfo
                                  ) -> dict[str, float]:
        known = set(VEHICLES) | set(info.data.get("vehicles") or {})
        unknown = sorted(set(mix) - known)
        if unknown:
            raise ValueError(
                f"unknown vehicle type(s) {unknown}; known: {sorted(known)} "
                f"(add custom types under 'vehicles')"
            )
        if not mix:
            raise ValueError("needs at least one vehicle type")
        negative = sorted(k for k, v in mix.items() if v < 0)
        if negative:
            raise ValueError(f"shares must be >= 0, negative for {negative}")
        total = sum(mix.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"shares must sum to 1, got {total:.6g}")
        return mix

    @field_validator("departure_soc_target", "min_soc_v2g", "cv_taper_soc")
    @classmethod
    def _below_soc_max(cls, value: float, info: ValidationInfo) -> float:
        soc_max = info.data.get("soc_max")
        if soc_max is not None and value > soc_max:
            raise ValueError(f"must not exceed soc_max ({soc_max}), got {value}")
        return value

    @field_validator("initial_soc")
    @classmethod
    def _initial_range(cls, lo_hi: tuple[float, float], info: ValidationInfo
                       ) -> tuple[float, float]:
        lo, hi = lo_hi
        soc_min, soc_max = info.data.get("soc_min", 0.0), info.data.get("soc_max", 1.0)
        if not soc_min <= lo <= hi <= soc_max:
            raise ValueError(f"need soc_min <= low <= high <= soc_max, got {lo_hi}")
        return lo_hi

    @field_validator("ambient_temp_c_monthly")
    @classmethod
    def _twelve_months(cls, temps: tuple[float, ...]) -> tuple[float, ...]:
        if len(temps) != 12:
            raise ValueError(f"needs 12 monthly values (January first), got {len(temps)}")
        return temps

    @model_validator(mode="after")
    def _consistent(self) -> EVConfig:
        if self.soc_min >= self.soc_max:
            raise ValueError(f"soc_min ({self.soc_min}) must be below soc_max ({self.soc_max})")
        if self.min_soc_v2g < self.soc_min:
            raise ValueError(
                f"min_soc_v2g ({self.min_soc_v2g}) must not be below soc_min ({self.soc_min})"
            )
        if self.cv_taper_soc >= self.soc_max:
            raise ValueError(f"cv_taper_soc must be below soc_max ({self.soc_max})")
        names = [s.name for s in self.sites]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sites: names must be unique, repeated: {dupes}")
        kinds = {s.kind for s in self.sites}
        private = self.user_mix.commuter + self.user_mix.shift_worker
        if private > 0 and "home" not in kinds:
            raise ValueError("sites: commuters and shift workers need at least one 'home' site")
        if self.user_mix.commercial > 0 and "depot" not in kinds:
            raise ValueError("sites: the commercial fleet needs at least one 'depot' site")
        return self

    def vehicle_table(self) -> dict[str, VehicleSpec]:
        """The default table with the scenario's custom types added (or replacing entries)."""
        return {**VEHICLES, **self.vehicles}


def example_config(fleet_size: int = 1000, **overrides: object) -> EVConfig:
    """A self-contained zone scaled to ``fleet_size``, used by tests, the benchmark and docs.

    Eight sites on buses 1..8: four residential estates (about 0.9 home chargers per private car,
    one in seven of them bidirectional), a factory car park with PV carport V2G chargers, an office,
    a public hub and a logistics depot.
    """
    n = fleet_size
    home_ac = max(1, round(0.70 * n / 4))
    home_v2g = max(1, round(0.11 * n / 4))
    sites = [
        {"name": f"estate-{i + 1}", "kind": "home", "bus": i + 1,
         "chargers": [{"type": "ac7", "count": home_ac}, {"type": "v2g", "count": home_v2g}]}
        for i in range(4)
    ]
    sites += [
        {"name": "factory-carport", "kind": "workplace", "bus": 5,
         "chargers": [{"type": "ac7", "count": max(1, round(0.25 * n))},
                      {"type": "v2g", "count": max(1, round(0.15 * n)), "p_max_kw": 20.0,
                       "p_discharge_max_kw": 15.0}]},
        {"name": "office-park", "kind": "workplace", "bus": 6,
         "chargers": [{"type": "ac7", "count": max(1, round(0.20 * n))},
                      {"type": "ac11", "count": max(1, round(0.10 * n))}]},
        {"name": "public-hub", "kind": "public", "bus": 7,
         "chargers": [{"type": "dc60", "count": max(1, round(0.02 * n))},
                      {"type": "ac11", "count": max(1, round(0.03 * n))}]},
        {"name": "logistics-depot", "kind": "depot", "bus": 8,
         "chargers": [{"type": "ac7", "count": max(1, round(0.10 * n))},
                      {"type": "dc60", "count": max(1, round(0.01 * n))}]},
    ]
    data: dict[str, object] = {"fleet_size": n, "sites": sites}
    data.update(overrides)
    return EVConfig.model_validate(data)
