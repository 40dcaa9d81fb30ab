"""Vehicle types of the EV fleet and the default table, a mix typical of Chongqing.

Each entry gives the usable battery capacity, the energy use per km on the type-approval cycle,
the maximum AC and DC charging power the car accepts, and whether (and how fast) it can feed
power back through a bidirectional (V2G) charger. Trip energy is distance x consumption x the
fleet's ``consumption_factor`` (type-approval cycles understate real urban consumption).

Sources (public specifications; consumption = rated capacity / rated range where no figure is
published):

- Wuling Hongguang Mini EV (SAIC-GM-Wuling, China's best-selling EV in 2020-2021): 13.8 kWh LFP,
  170 km NEDC; about nine hours on a household socket for the larger battery, i.e. ~1.5 kW AC;
  no DC inlet. wapcar.my, "Check out Wuling's new toy car-looking Hong Guang Mini EV" (2020-07);
  afronomist.com, "Unveiling the most popular electric car in China".
- Changan Lumin (Changan Automobile, Chongqing): 17.65 kWh LFP, 210 km CLTC
  (automobile-propre.com, "Changan Lumin, une nouvelle mini citadine électrique chinoise");
  3.3 kW AC maximum (testcoches.es, 2023); no DC inlet.
- BYD Dolphin (long-range, China): 44.928 kWh LFP Blade battery, 405 km NEDC, 11 kWh/100 km
  NEDC (MIIT filing, reported by pushevs.com 2021-07-16); DC 30-80 % in 29 min on the 60.4 kWh
  version, i.e. ~60 kW (freenet.de); 7 kW AC (single-phase GB/T 20234.2 wallbox).
- BYD Seal (long-range): 82.5 kWh, 700 km CLTC, DC up to 150 kW (autoentusiastas.com.br,
  2022-08); 7 kW AC.
- Tesla Model Y RWD (Shanghai-built, LFP): 60 kWh, 525 km NEDC (MIIT documents reported by
  electrive.com 2021-07-14); on-board charger 7.4 kW single-phase / 11 kW three-phase
  (tesla.com, "Onboard Charger"); DC 170 kW is the commonly quoted Supercharger peak of the LFP
  pack (assumed, not from the sources above). Tesla does not offer V2G.
- Maxus eDeliver 3 / SAIC Maxus EV30 (light delivery van): 52.5 kWh, 342 km WLTP short body
  (mbl.is 2020-05-25; diariodesevilla.es); 6.6 kW AC and 50 kW DC are assumed typical values for
  this class.

V2G capability: China's first V2G pilot cities and projects were named by NDRC/NEA in April 2025
(nengpower.com; window-to-china.de 2025-04-19), and reports note that most cars on the road are not
yet able to feed back to the grid. The BYD e-platform 3.0 cars (Dolphin, Seal) discharge through
their bidirectional on-board charger (vehicle-to-load); we *assume* they take part in V2G through
a bidirectional charger at the power listed. Every other type is charge-only. Change the table
(or give custom ``vehicles:`` entries in the scenario) to study other assumptions.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from components.base import StrictModel


class VehicleSpec(StrictModel):
    """One vehicle type: battery, consumption and charging capabilities."""

    capacity_kwh: float = Field(..., gt=0, description="usable battery capacity [kWh]")
    consumption_kwh_per_km: float = Field(
        ..., gt=0, le=2.0, description="energy use per km on the type-approval cycle [kWh/km]"
    )
    ac_max_kw: float = Field(..., gt=0, description="maximum AC charging power [kW]")
    dc_max_kw: float = Field(0.0, ge=0, description="maximum DC charging power, 0 = no DC [kW]")
    v2g: bool = Field(False, description="can discharge into the grid through a V2G charger")
    v2g_max_kw: float = Field(0.0, ge=0, description="maximum V2G discharge power [kW]")
    source: str = Field("", description="where the numbers come from")

    @model_validator(mode="after")
    def _v2g_consistent(self) -> VehicleSpec:
        if self.v2g and self.v2g_max_kw <= 0:
            raise ValueError("v2g_max_kw must be > 0 when v2g is true")
        if self.v2g and self.dc_max_kw <= 0:
            raise ValueError("a V2G vehicle needs a DC inlet (dc_max_kw > 0): V2G chargers are DC")
        return self


VEHICLES: dict[str, VehicleSpec] = {
    "wuling_hongguang_mini_ev": VehicleSpec(
        capacity_kwh=13.8, consumption_kwh_per_km=13.8 / 170, ac_max_kw=1.5,
        source="13.8 kWh, 170 km NEDC; ~9 h on a socket; no DC (wapcar.my 2020; afronomist.com)",
    ),
    "changan_lumin": VehicleSpec(
        capacity_kwh=17.65, consumption_kwh_per_km=17.65 / 210, ac_max_kw=3.3,
        source="17.65 kWh, 210 km CLTC (automobile-propre.com); 3.3 kW AC (testcoches.es)",
    ),
    "byd_dolphin": VehicleSpec(
        capacity_kwh=44.928, consumption_kwh_per_km=0.110, ac_max_kw=7.0, dc_max_kw=60.0,
        v2g=True, v2g_max_kw=7.0,
        source="44.928 kWh, 405 km NEDC, 11 kWh/100 km (MIIT via pushevs.com 2021); "
               "DC ~60 kW (freenet.de); V2G assumed",
    ),
    "byd_seal": VehicleSpec(
        capacity_kwh=82.5, consumption_kwh_per_km=82.5 / 700, ac_max_kw=7.0, dc_max_kw=150.0,
        v2g=True, v2g_max_kw=7.0,
        source="82.5 kWh, 700 km CLTC, DC 150 kW (autoentusiastas.com.br 2022); V2G assumed",
    ),
    "tesla_model_y_rwd": VehicleSpec(
        capacity_kwh=60.0, consumption_kwh_per_km=60.0 / 525, ac_max_kw=11.0, dc_max_kw=170.0,
        source="60 kWh LFP, 525 km NEDC (MIIT via electrive.com 2021); OBC 11 kW (tesla.com); "
               "DC 170 kW assumed",
    ),
    "maxus_edeliver3": VehicleSpec(
        capacity_kwh=52.5, consumption_kwh_per_km=52.5 / 342, ac_max_kw=6.6, dc_max_kw=50.0,
        source="52.5 kWh, 342 km WLTP (mbl.is 2020; diariodesevilla.es); AC/DC powers assumed",
    ),
}
"""The default vehicle table; keys are the names used in ``vehicle_mix``."""

DEFAULT_PRIVATE_MIX: dict[str, float] = {
    "wuling_hongguang_mini_ev": 0.20,
    "changan_lumin": 0.15,
    "byd_dolphin": 0.25,
    "byd_seal": 0.15,
    "tesla_model_y_rwd": 0.25,
}
"""Default mix of commuters' and shift workers' cars: micro cars (Wuling, Changan) are a large
share of Chinese EV sales, BYD leads the market, Tesla's Shanghai-built Model Y is the best-selling
SUV. Shares are modelling choices, not registration statistics."""

DEFAULT_COMMERCIAL_MIX: dict[str, float] = {"maxus_edeliver3": 0.7, "byd_dolphin": 0.3}
"""Default mix of the commercial (depot-based) fleet: delivery vans and service cars."""
