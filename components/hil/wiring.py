"""How the ``hil`` section changes a world: what leaves the simulated populations, what joins.

:class:`HILWiring` is used by the framework while it assembles a world (it receives the world
and the entities; it imports neither mosaik nor the framework):

* a PV plant with a device leaves the PV fleet (:attr:`HILWiring.pv_config`,
  :attr:`HILWiring.fleet_plants`); the coordinator still sees every plant of the zone, in the
  same order: it reads merged arrays from the ``HIL`` entity (fleet plants from the fleet,
  replaced plants from their inverters) and its setpoints go to the fleet (without the replaced
  plants) and to the devices;
* a battery joins the grid at its bus;
* a charging site with a station stays in the EV fleet - the fleet keeps simulating the site's
  EVs under the coordinator's setpoints - but the grid sees the station's metered power there:
  the ``HILSites`` entity sends ``metered - simulated`` to the site's bus.

With ``simulate: true`` no plant or site is replaced and batteries run their model in-process:
the fully simulated reference of the same zone.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from components.hil.config import HILConfig, plant_index
from components.hil.cosim import default_station_id, new_password

STATIONS_ENV = "SDG_TWIN_OCPP_STATIONS"

# What each side of a connection calls the attribute
_FLEET_TO_HIL = [("p_kw", "fleet_p_kw"), ("q_kvar", "fleet_q_kvar"),
                 ("p_avail_kw", "fleet_avail_kw")]
_HIL_TO_COORD = [("pv_avail_kw", "pv_avail_kw"), ("pv_p_kw", "pv_p_kw"),
                 ("pv_q_kvar", "pv_q_kvar")]


class HILWiring:
    """The ``hil`` section of a scenario, resolved against its grid and plants.

    Parameters
    ----------
    scenario : Scenario
        The validated scenario (its ``hil`` section is not None).
    net : pandapowerNet
        The grid, for bus references.
    plants : list
        Every plant of the zone in simulation order (``scenario.pv.all_plants(seed)``).
    resolve_bus : callable
        ``resolve_bus(net, ref) -> int``.
    """

    def __init__(self, scenario: Any, net: Any, plants: list, resolve_bus: Any) -> None:
        self.scenario = scenario
        self.hil: HILConfig = scenario.hil
        self.active = not self.hil.simulate
        names = [p.name for p in scenario.pv.plants]
        # explicit plants come first in simulation order: their zone index is their list index
        self.replaced = {plant_index(d.plant, names): i for i, d in enumerate(self.hil.pv_plants)
                         } if self.active else {}
        self.plants = plants
        self.fleet_index = [j for j in range(len(plants)) if j not in self.replaced]
        self.fleet_plants = [plants[j] for j in self.fleet_index]
        self.pv_config = scenario.pv.model_copy(update={"plants": [
            p for j, p in enumerate(scenario.pv.plants) if j not in self.replaced]})
        self.devices = self._pv_devices(net, resolve_bus) + [
            {"kind": "battery", "name": b.name, "bus": resolve_bus(net, b.bus), "index": i,
             "revert_after_s": b.revert_after_s} for i, b in enumerate(self.hil.batteries)]
        self.sites = self._site_devices(net, resolve_bus) if self.active else []
        self.config = self.hil.model_dump(
            mode="json", exclude={"charging_sites": {"__all__": {"password"}}})

    # ------------------------------------------------------------------ devices
    def _pv_devices(self, net: Any, resolve_bus: Any) -> list[dict[str, Any]]:
        out = []
        for j, i in sorted(self.replaced.items(), key=lambda item: item[1]):
            plant = self.plants[j]
            d = {"kind": "pv", "name": plant.name, "bus": resolve_bus(net, plant.bus),
                 "index": i, "plant_index": j,
                 "revert_after_s": self.hil.pv_plants[i].revert_after_s,
                 "plant": {"name": plant.name, "kwp": plant.kwp,
                           "inverter_kw": plant.inverter_kw, "tilt_deg": plant.tilt_deg,
                           "azimuth_deg": plant.azimuth_deg, "mounting": plant.mounting}}
            if self.hil.start_stubs:
                avail, temp = plant_profile(self.scenario, plant)
                d["available_kw"], d["temp_air_c"] = avail.tolist(), temp.tolist()
            out.append(d)
        return out

    def _site_devices(self, net: Any, resolve_bus: Any) -> list[dict[str, Any]]:
        ev = self.scenario.ev
        names = [s.name for s in ev.sites] if ev is not None else []
        env = _stations_from_env()
        out = []
        for i, spec in enumerate(self.hil.charging_sites):
            s = names.index(spec.site)
            site = ev.sites[s]
            station_id = spec.station_id or default_station_id(s)
            if spec.password is not None:
                password = spec.password.get_secret_value()
            elif station_id in env:
                password = env[station_id]
            else:
                password = new_password()
            out.append({"kind": "evse", "name": site.name, "bus": resolve_bus(net, site.bus),
                        "index": i, "site_index": s, "station_id": station_id,
                        "password": password,
                        "rating_kw": sum(g.count * g.charge_kw for g in site.chargers)})
        return out

    @property
    def routes_pv(self) -> bool:
        """True when the coordinator must read PV through the ``HIL`` entity."""
        return self.scenario.coordinator is not None and bool(self.replaced)

    # ------------------------------------------------------------------ world
    def add_entities(self, start: Any, entities: dict[str, Any], labels: dict[str, dict],
                     injectors: dict[str, list[int]]) -> None:
        """Create the HIL entities (before the grid, which needs their buses)."""
        rt = {"rt_factor": self.hil.rt_factor}
        if self.devices:
            plants = ({"n": len(self.plants), "fleet": self.fleet_index} if self.routes_pv
                      else None)
            ent = start("HIL", **rt).HILDevices(config=self.config, devices=self.devices,
                                                plants=plants)
            entities["HIL"] = ent
            injectors[ent.full_id] = [d["bus"] for d in self.devices]
            labels["HIL"] = {"": [d["name"] for d in self.devices],
                             "battery_soc_pct": [d["name"] for d in self.devices
                                                 if d["kind"] == "battery"]}
        if self.sites:
            ent = start("HILSites", **rt).HILSites(config=self.config, devices=self.sites)
            entities["HILSites"] = ent
            injectors[ent.full_id] = [d["bus"] for d in self.sites]
            labels["HILSites"] = {"": [d["name"] for d in self.sites]}

    def connect(self, world: Any, entities: dict[str, Any]) -> None:
        """Connect the HIL entities to the grid and the EV fleet (after the grid exists)."""
        grid = entities["Grid"]
        if "HIL" in entities:
            world.connect(entities["HIL"], grid, "p_kw", "q_kvar")
            if self.hil.batteries:
                world.connect(grid, entities["HIL"], ("import_kw", "grid_import_kw"),
                              time_shifted=True, initial_data={"import_kw": None})
        if "HILSites" in entities:
            world.connect(entities["EV"], entities["HILSites"], ("p_kw", "ev_p_kw"),
                          ("q_kvar", "ev_q_kvar"))
            world.connect(entities["HILSites"], grid, "p_kw", "q_kvar")

    def connect_coordinator(self, world: Any, coord: Any, entities: dict[str, Any]) -> None:
        """Route PV between the coordinator, the fleet and the inverters (see the module)."""
        hil = entities["HIL"]
        keep = np.asarray(self.fleet_index, dtype=int)
        if "PV" in entities:
            pv = entities["PV"]
            world.connect(pv, hil, *_FLEET_TO_HIL)
            world.connect(coord, pv, "curtail_kw", "q_kvar_set", time_shifted=True,
                          initial_data={"curtail_kw": [self.plants[j].inverter_kw for j in keep],
                                        "q_kvar_set": [0.0] * keep.size},
                          transform=lambda values: np.asarray(values, dtype=float)[keep])
        world.connect(hil, coord, *_HIL_TO_COORD)
        world.connect(coord, hil, "curtail_kw", "q_kvar_set", time_shifted=True,
                      initial_data={"curtail_kw": [p.inverter_kw for p in self.plants],
                                    "q_kvar_set": [0.0] * len(self.plants)})

    def bench(self, world: Any, entities: dict[str, Any], instance: Any) -> dict[str, Any]:
        """The simulator objects of the HIL entities (for benches that cut links)."""
        return {name: instance(world, entities[name].sid) for name in ("HIL", "HILSites")
                if name in entities}


def plant_profile(scenario: Any, plant: Any) -> tuple[np.ndarray, np.ndarray]:
    """Available AC power [kW] and air temperature [°C] of one plant per step, computed
    exactly as the PV fleet computes them (same weather stream, step midpoints)."""
    from components.pv.model import PVFleet
    from components.pv.weather import synthetic_weather, weather_from_file

    step_s, n = scenario.step_s, scenario.n_steps
    times = pd.DatetimeIndex(scenario.start_ts + pd.to_timedelta(
        np.arange(n) * step_s + step_s / 2, unit="s"))
    loc, w, pv = scenario.location, scenario.weather, scenario.pv
    if w.source == "synthetic":
        weather = synthetic_weather(times, loc.latitude_deg, loc.longitude_deg, loc.altitude_m,
                                    w, np.random.default_rng(int(scenario.seed)))
    else:
        weather = weather_from_file(w.file, times, w.file_format())
    fleet = PVFleet([plant], loc.latitude_deg, loc.longitude_deg, loc.altitude_m, weather,
                    dc_model=pv.dc_model, losses_pct=pv.losses_pct,
                    gamma_pdc_per_c=pv.gamma_pdc_per_c, cec_module=pv.cec_module)
    return (np.asarray(fleet.available_ac_kw[:, 0], dtype=float),
            weather["temp_air"].to_numpy(dtype=float))


def _stations_from_env() -> dict[str, str]:
    out = {}
    for item in filter(None, (s.strip() for s in os.environ.get(STATIONS_ENV, "").split(","))):
        sid, sep, pw = item.partition("=")
        if sep:
            out[sid.strip()] = pw
    return out
