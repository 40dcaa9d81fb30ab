"""Scenario section of the PV domain: site, weather, plants and the DC/AC model choice.

The framework composes :class:`PVConfig` (section ``pv``), :class:`LocationConfig` (``location``)
and :class:`WeatherConfig` (``weather``) into the scenario; bus references stay as given here and
are resolved to pandapower bus indices by the framework.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from components.base import BusRef, StrictModel

Mounting = Literal["roof", "carport", "ground"]

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
