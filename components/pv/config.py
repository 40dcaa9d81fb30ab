"""Scenario section of the PV domain: site, weather, plants and the DC/AC model choice.

The framework composes :class:`PVConfig` (section ``pv``), :class:`LocationConfig` (``location``)
and :class:`WeatherConfig` (``weather``) into the scenario; bus references stay as given here and
are resolved to pandapower bus indices by the framework.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from components.base import BusRef, StrictModel

Mounting = Literal["roof", "carport", "ground"]
InverterMode = Literal["unity", "volt_var", "volt_watt", "volt_var_watt"]
"""Inverter control mode: ``unity`` (unity power factor unless the coordinator asks for reactive
power), ``volt_var``, ``volt_watt`` or both curves at once (``volt_var_watt``)."""

# SAPM cell-temperature parameter sets (King et al. 2004, as tabulated in
# pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS['sapm']) per mounting type. Roof arrays on the
# metal and concrete roofs of factories and housing blocks sit a few centimetres above the roof
# with little rear ventilation but are not insulated behind: "close_mount_glass_glass" describes
# exactly that gap (a = -2.98, b = -0.0471, deltaT = 1); "insulated_back_glass_polymer" is for
# building-integrated modules with no air gap and would run them about 6 K hotter at 800 W/m².
# Carports and ground racks are open on both sides: "open_rack_glass_polymer".
SAPM_MOUNTING: dict[str, str] = {
    "roof": "close_mount_glass_glass",
    "carport": "open_rack_glass_polymer",
    "ground": "open_rack_glass_polymer",
}

DEFAULT_CEC_MODULE = "LONGi_Green_Energy_Technology_Co___Ltd__LR6_72PE_360M"
DEFAULT_DC_AC_RATIO = 1.2

# Monthly means of the daily clear-sky index (daily GHI / daily Ineichen clear-sky GHI), January
# first, fitted so that the synthetic weather reproduces Chongqing's monthly irradiation and
# sunshine duration; see components/pv/weather.py for the derivation and the sources.
CHONGQING_MONTHLY_KC: tuple[float, ...] = (
    0.383, 0.345, 0.450, 0.450, 0.466, 0.453, 0.541, 0.652, 0.468, 0.402, 0.444, 0.333,
)
# Shapingba (Chongqing) monthly mean air temperature [°C] and mean diurnal range [K], January
# first; sources in components/pv/weather.py.
CHONGQING_MONTHLY_TEMP_C: tuple[float, ...] = (
    7.9, 10.3, 14.0, 18.9, 22.6, 25.3, 28.5, 28.5, 24.0, 18.7, 14.1, 9.5,
)
CHONGQING_MONTHLY_DTR_K: tuple[float, ...] = (
    4.5, 5.4, 7.2, 8.3, 8.4, 7.7, 8.7, 9.4, 7.5, 5.8, 5.2, 4.4,
)

Twelve = Annotated[tuple[float, ...], Field(min_length=12, max_length=12)]


@lru_cache(maxsize=1)
def cec_module_database():
    """pvlib's bundled CEC module database (SAM 2019-03-05), loaded once per process."""
    import pvlib

    return pvlib.pvsystem.retrieve_sam("cecmod")


class LocationConfig(StrictModel):
    """Geographic site of the district; weather and sun position are computed for it."""

    latitude_deg: float = Field(29.56, ge=-90, le=90, description="Latitude, north positive [°]")
    longitude_deg: float = Field(
        106.55, ge=-180, le=180, description="Longitude, east positive [°]"
    )
    altitude_m: float = Field(
        260.0, ge=-430, le=8848, description="Site elevation above sea level [m]"
    )


class WeatherConfig(StrictModel):
    """Where the weather comes from: a seeded synthetic generator or a TMY3/EPW file.

    The synthetic defaults are fitted to Chongqing (see :mod:`components.pv.weather`).
    """

    source: Literal["synthetic", "file"] = "synthetic"
    file: str | None = Field(
        None, validate_default=True,
        description="TMY3 (.csv) or EPW (.epw) weather file; required when source=file",
    )
    format: Literal["tmy3", "epw"] | None = Field(
        None, validate_default=True,
        description="File format; inferred from the suffix (.csv -> tmy3, .epw -> epw)",
    )
    monthly_mean_kc: Twelve = Field(
        default=CHONGQING_MONTHLY_KC,
        description="Monthly mean of the daily clear-sky index, January first [-]",
    )
    daily_kc_concentration: float = Field(
        2.5, gt=0, description="Concentration a+b of the Beta law of the daily clear-sky index [-]"
    )
    daily_persistence: float = Field(
        0.45, ge=0, lt=1, description="Day-to-day correlation of the cloudiness state [-]"
    )
    intraday_sigma: float = Field(
        0.35, ge=0, le=2,
        description="Intra-day clear-sky index standard deviation on half-cloudy days [-]",
    )
    intraday_tau_min: float = Field(
        40.0, gt=0, description="Correlation time of intra-day cloud fluctuations [min]"
    )
    max_clear_sky_index: float = Field(
        1.15, ge=1, le=1.5,
        description="Cap on GHI / clear-sky GHI (cloud enhancement of step means) [-]",
    )
    monthly_temp_c: Twelve = Field(
        default=CHONGQING_MONTHLY_TEMP_C,
        description="Monthly mean air temperature, January first [°C]",
    )
    monthly_dtr_k: Twelve = Field(
        default=CHONGQING_MONTHLY_DTR_K,
        description="Monthly mean diurnal temperature range (max - min), January first [K]",
    )
    daily_temp_sd_k: float = Field(
        1.5, ge=0, description="Standard deviation of day-to-day temperature anomalies [K]"
    )
    wind_mean_ms: float = Field(1.3, ge=0, description="Mean wind speed at 10 m [m/s]")

    @field_validator("monthly_mean_kc")
    @classmethod
    def _kc_in_unit_interval(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not all(0.05 <= x <= 0.95 for x in v):
            raise ValueError("every monthly mean clear-sky index must lie in [0.05, 0.95]")
        return v

    @field_validator("monthly_dtr_k")
    @classmethod
    def _dtr_non_negative(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not all(x >= 0 for x in v):
            raise ValueError("every monthly diurnal temperature range must be >= 0")
        return v

    @field_validator("file", mode="after")
    @classmethod
    def _file_needed_for_file_source(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must be a path to a TMY3 (.csv) or EPW (.epw) file")
        if v is None and info.data.get("source") == "file":
            raise ValueError("required when source is 'file': a TMY3 (.csv) or EPW (.epw) path")
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError(f"no such file: {v}")
        return v

    @field_validator("format", mode="after")
    @classmethod
    def _format_known(cls, v: str | None, info: ValidationInfo) -> str | None:
        path = info.data.get("file")
        if (v is None and path and info.data.get("source") == "file"
                and Path(path).suffix.lower() not in (".csv", ".epw")):
            raise ValueError(f"cannot infer it from {path!r}; name a .csv (TMY3) or .epw file, "
                             "or set format to 'tmy3' or 'epw'")
        return v

    def file_format(self) -> Literal["tmy3", "epw"] | None:
        """Format of :attr:`file`: the explicit ``format`` or the one its suffix implies."""
        if self.format is not None or self.file is None:
            return self.format
        return "epw" if Path(self.file).suffix.lower() == ".epw" else "tmy3"


class PVPlantConfig(StrictModel):
    """One PV plant: a fixed-tilt array behind one inverter, connected to one bus."""

    name: str = Field(..., min_length=1, description="Unique plant name")
    bus: BusRef = Field(..., description="Grid bus: pandapower index or bus name")
    kwp: float = Field(..., gt=0, description="DC nameplate power at STC [kWp]")
    tilt_deg: float = Field(15.0, ge=0, le=90, description="Array tilt from horizontal [°]")
    azimuth_deg: float = Field(
        180.0, ge=0, lt=360, description="Array azimuth, clockwise from north; 180 = south [°]"
    )
    inverter_kw: float | None = Field(
        None, gt=0, description=f"Inverter AC rating [kW]; default kwp / {DEFAULT_DC_AC_RATIO}"
    )
    mounting: Mounting = Field("roof", description="roof, carport or ground (thermal model)")
    control: InverterMode = Field(
        "unity", description="Inverter control: unity, volt_var, volt_watt or volt_var_watt"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_inverter(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("inverter_kw") is None:
            kwp = data.get("kwp")
            if isinstance(kwp, (int, float)) and not isinstance(kwp, bool) and kwp > 0:
                data = {**data, "inverter_kw": kwp / DEFAULT_DC_AC_RATIO}
        return data


def _check_range(v: float | tuple[float, float], lo: float, hi: float, single_hi_open: bool):
    """Check one value, or a ``(low, high)`` range, against ``[lo, hi]``."""
    if isinstance(v, tuple):
        if not (lo <= v[0] <= v[1] <= hi):
            raise ValueError(f"range must be [low, high] with {lo} <= low <= high <= {hi}, "
                             f"got {list(v)}")
    elif not (lo <= v < hi if single_hi_open else lo <= v <= hi):
        raise ValueError(f"must lie in [{lo}, {hi}{')' if single_hi_open else ']'}, got {v}")
    return v


class PVGeneratedConfig(StrictModel):
    """A population of similar plants made from a total: ``count`` plants of equal size.

    ``tilt_deg`` and ``azimuth_deg`` take one value or a ``[low, high]`` range from which each
    plant draws uniformly (seeded), to mimic the spread of real rooftops.
    """

    total_kwp: float = Field(..., gt=0, description="Sum of the plants' DC nameplate [kWp]")
    count: int = Field(..., ge=1, description="Number of plants")
    buses: list[BusRef] = Field(
        ..., min_length=1, description="Buses the plants are spread over, round robin"
    )
    tilt_deg: float | tuple[float, float] = Field(15.0, description="Tilt or [low, high] [°]")
    azimuth_deg: float | tuple[float, float] = Field(
        180.0, description="Azimuth (180 = south) or [low, high] [°]"
    )
    dc_ac_ratio: float = Field(DEFAULT_DC_AC_RATIO, gt=0, description="kWp per kW inverter [-]")
    mounting: Mounting = Field("roof", description="roof, carport or ground (thermal model)")
    name_prefix: str = Field("pv", min_length=1, description="Plants are named <prefix>-<i>")
    control: InverterMode = Field(
        "unity", description="Inverter control of every plant: unity, volt_var, volt_watt or "
                             "volt_var_watt"
    )

    @field_validator("tilt_deg")
    @classmethod
    def _tilt_range(cls, v):
        return _check_range(v, 0.0, 90.0, single_hi_open=False)

    @field_validator("azimuth_deg")
    @classmethod
    def _azimuth_range(cls, v):
        # a range may end at 360 (draws wrap to [0, 360)); a single value may not
        return _check_range(v, 0.0, 360.0, single_hi_open=True)

    def names(self) -> list[str]:
        """Names of the generated plants, in order."""
        return [f"{self.name_prefix}-{i + 1}" for i in range(self.count)]

    def expand(self, rng: np.random.Generator) -> list[PVPlantConfig]:
        """The generated plants, drawing jittered orientations from ``rng``."""
        kwp = self.total_kwp / self.count
        tilts = _draw(self.tilt_deg, self.count, rng)
        azimuths = np.mod(_draw(self.azimuth_deg, self.count, rng), 360.0)
        return [
            PVPlantConfig(
                name=name, bus=self.buses[i % len(self.buses)], kwp=kwp,
                tilt_deg=float(tilts[i]), azimuth_deg=float(azimuths[i]),
                inverter_kw=kwp / self.dc_ac_ratio, mounting=self.mounting,
                control=self.control,
            )
            for i, name in enumerate(self.names())
        ]


def _draw(v: float | tuple[float, float], n: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(v, tuple):
        return rng.uniform(v[0], v[1], size=n)
    return np.full(n, float(v))


def _first_duplicate(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"plant name {name!r} is used twice (generated plants are named "
                             "<name_prefix>-<i>); every plant needs a unique name")
        seen.add(name)


# IEEE Std 1547-2018, "Standard for Interconnection and Interoperability of Distributed Energy
# Resources with Associated Electric Power Systems Interfaces", clause 5.3.3 and Table 8
# (voltage-reactive power settings, Category B DER, default values): V1/V2/V3/V4 = 0.92/0.98/
# 1.02/1.08 VN with Q1/Q2/Q3/Q4 = 44 % injection / 0 / 0 / 44 % absorption of the nameplate
# apparent power rating, VRef = VN, open-loop response time 5 s (range 1-90 s).
VOLT_VAR_V_PU: tuple[float, ...] = (0.92, 0.98, 1.02, 1.08)
VOLT_VAR_Q_PCT: tuple[float, ...] = (44.0, 0.0, 0.0, -44.0)
VOLT_VAR_RESPONSE_S = 5.0
# IEEE Std 1547-2018 clause 5.4.2 and Table 10 (voltage-active power settings, Category A and B,
# default values): V1 = 1.06 VN with P1 = Prated, V2 = 1.10 VN with, for a DER that can only
# generate active power, P2 = the lesser of 0.2 Prated and Pmin; open-loop response time 10 s
# (range 0.5-60 s). A PV inverter operates down to zero output (it can be curtailed to nothing
# without tripping), so its Pmin is 0 and the default P2 is 0 % -- the same end point as the
# California Rule 21 volt-watt default (100 % at 106 %, 0 % at 110 % of nominal voltage).
# Set ``p_pct`` to [100, 20] for an inverter whose minimum stable output is 20 % or more.
VOLT_WATT_V_PU: tuple[float, ...] = (1.06, 1.10)
VOLT_WATT_P_PCT: tuple[float, ...] = (100.0, 0.0)
VOLT_WATT_RESPONSE_S = 10.0


def _increasing(v: tuple[float, ...]) -> tuple[float, ...]:
    if any(b <= a for a, b in pairwise(v)):
        raise ValueError(f"voltages must be strictly increasing, got {list(v)}")
    if not all(0.5 <= x <= 1.5 for x in v):
        raise ValueError(f"voltages must lie in [0.5, 1.5] pu, got {list(v)}")
    return v


class VoltVarConfig(StrictModel):
    """Volt-var curve shared by the plants in ``volt_var`` or ``volt_var_watt`` mode.

    Reactive power is in percent of each inverter's apparent-power rating (``inverter_kw``),
    *injection positive* (capacitive, over-excited), as in IEEE 1547; the plant reports it in the
    load convention (injection = negative ``q_kvar``). Between the points the curve is linear,
    outside them flat.
    """

    v_pu: Annotated[tuple[float, ...], Field(min_length=4, max_length=4)] = Field(
        VOLT_VAR_V_PU, description="V1..V4, strictly increasing [pu]")
    q_pct: Annotated[tuple[float, ...], Field(min_length=4, max_length=4)] = Field(
        VOLT_VAR_Q_PCT, description="Q1..Q4, injection positive [% of apparent-power rating]")
    response_time_s: float = Field(
        VOLT_VAR_RESPONSE_S, gt=0, le=90,
        description="Open-loop response time: time to 90 % of a reference change [s]")

    @field_validator("v_pu")
    @classmethod
    def _v_increasing(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        return _increasing(v)

    @field_validator("q_pct")
    @classmethod
    def _q_in_rating(cls, q: tuple[float, ...]) -> tuple[float, ...]:
        if not all(-100.0 <= x <= 100.0 for x in q):
            raise ValueError(f"every Q point must lie in [-100, 100] % of the rating, got {list(q)}")
        if any(b > a for a, b in pairwise(q)):
            raise ValueError("Q points must not increase with voltage (inject at low voltage, "
                             f"absorb at high voltage), got {list(q)}")
        return q


class VoltWattConfig(StrictModel):
    """Volt-watt curve shared by the plants in ``volt_watt`` or ``volt_var_watt`` mode.

    Active power is capped at ``P1`` below ``V1``, falls linearly to ``P2`` at ``V2`` and stays at
    ``P2`` above, in percent of each inverter's rating.
    """

    v_pu: Annotated[tuple[float, ...], Field(min_length=2, max_length=2)] = Field(
        VOLT_WATT_V_PU, description="V1, V2, strictly increasing [pu]")
    p_pct: Annotated[tuple[float, ...], Field(min_length=2, max_length=2)] = Field(
        VOLT_WATT_P_PCT, description="P1, P2 [% of rated active power]")
    response_time_s: float = Field(
        VOLT_WATT_RESPONSE_S, gt=0, le=60,
        description="Open-loop response time: time to 90 % of a reference change [s]")

    @field_validator("v_pu")
    @classmethod
    def _v_increasing(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        return _increasing(v)

    @field_validator("p_pct")
    @classmethod
    def _p_falling(cls, p: tuple[float, ...]) -> tuple[float, ...]:
        if not (0.0 <= p[1] <= p[0] <= 100.0):
            raise ValueError(f"need 0 <= P2 <= P1 <= 100 %, got {list(p)}")
        return p


class PVConfig(StrictModel):
    """The PV section: DC model, losses, and the plants (explicit and generated)."""

    dc_model: Literal["pvwatts", "cec"] = Field(
        "pvwatts", description="pvwatts (linear with temperature) or cec (single diode)"
    )
    cec_module: str = Field(
        DEFAULT_CEC_MODULE, validate_default=True,
        description="Module name in pvlib's CEC database (dc_model=cec)",
    )
    losses_pct: float = Field(
        14.0, ge=0, lt=100, description="PVWatts system losses applied to DC power [%]"
    )
    gamma_pdc_per_c: float = Field(
        -0.0037, ge=-0.02, le=0, description="PVWatts DC temperature coefficient [1/°C]"
    )
    volt_var: VoltVarConfig = Field(
        VoltVarConfig(), description="Volt-var curve (IEEE 1547-2018 Category B defaults)")
    volt_watt: VoltWattConfig = Field(
        VoltWattConfig(), description="Volt-watt curve (IEEE 1547-2018 defaults)")
    plants: list[PVPlantConfig] = Field(default_factory=list, description="Explicit plants")
    generated: list[PVGeneratedConfig] = Field(
        default_factory=list, description="Populations of generated plants"
    )

    @field_validator("cec_module", mode="after")
    @classmethod
    def _known_module(cls, v: str, info: ValidationInfo) -> str:
        if info.data.get("dc_model") == "cec" and v not in cec_module_database().columns:
            raise ValueError(f"{v!r} is not in pvlib's CEC module database "
                             "(pvlib.pvsystem.retrieve_sam('cecmod').columns lists the names)")
        return v

    @field_validator("plants", mode="after")
    @classmethod
    def _unique_plant_names(cls, v: list[PVPlantConfig]) -> list[PVPlantConfig]:
        _first_duplicate([p.name for p in v])
        return v

    @field_validator("generated", mode="after")
    @classmethod
    def _unique_generated_names(
        cls, v: list[PVGeneratedConfig], info: ValidationInfo
    ) -> list[PVGeneratedConfig]:
        explicit = [p.name for p in info.data.get("plants", [])]
        _first_duplicate(explicit + [n for g in v for n in g.names()])
        return v

    def voltage_controlled(self) -> bool:
        """Whether any plant (explicit or generated) follows a voltage-dependent curve."""
        return any(p.control != "unity" for p in [*self.plants, *self.generated])

    def all_plants(self, seed: int) -> list[PVPlantConfig]:
        """Every plant in simulation order: explicit plants, then each generated population.

        Names and buses do not depend on ``seed``; jittered orientations do. The draws come from
        a stream of their own (``[seed, 0x5056]``), independent of the weather stream.
        """
        rng = np.random.default_rng([int(seed), 0x5056])
        out = list(self.plants)
        for g in self.generated:
            out.extend(g.expand(rng))
        return out
