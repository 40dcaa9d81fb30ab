"""A tiny mosaik world wired by hand: PV, factories, EV fleet, grid (case33bw), coordinator.

It shows the wiring the coordinator needs without the framework: which connections are
time-shifted and with which initial data (see components/coordinator/simulator.py).
"""

from __future__ import annotations

from typing import Any

import mosaik
import mosaik_api_v3
import numpy as np

from components.coordinator.sensitivity import grid_sensitivity
from components.coordinator.simulator import EV_INPUTS
from components.ev.config import EVConfig
from components.grid.config import GridConfig
from components.grid.model import load_network
from components.pv.config import PVConfig

START = "2026-06-03T00:00:00+08:00"
STEP_S = 900

PV = {"plants": [
    {"name": "roof", "bus": 5, "kwp": 300, "tilt_deg": 10, "azimuth_deg": 180},
    {"name": "carport", "bus": 25, "kwp": 150, "tilt_deg": 5, "azimuth_deg": 180,
     "mounting": "carport"},
    {"name": "field", "bus": 12, "kwp": 200, "tilt_deg": 20, "azimuth_deg": 180,
     "mounting": "ground"}]}
FACTORIES = [{"name": "works", "bus": 5, "preset": "auto_parts"}]
EV = {
    "fleet_size": 60,
    "user_mix": {"commuter": 0.6, "shift_worker": 0.3, "commercial": 0.1},
    "v2g_willing_share": 0.6,
    "sites": [
        {"name": "homes", "kind": "home", "bus": 25,
         "chargers": [{"type": "ac7", "count": 30}, {"type": "v2g", "count": 15}]},
        {"name": "works", "kind": "workplace", "bus": 5,
         "chargers": [{"type": "ac7", "count": 15}, {"type": "v2g", "count": 15}]},
        {"name": "depot", "kind": "depot", "bus": 30, "chargers": [{"type": "ac7", "count": 8}]},
    ],
}
GRID = {"source": "pandapower", "name": "case33bw", "background_profiles": False}

SIMS = {
    "PV": "components.pv.simulator:PVSimulator",
    "Factory": "components.factory.simulator:FactorySimulator",
    "EV": "components.ev.simulator:EVSimulator",
    "Grid": "components.grid.simulator:GridSimulator",
    "Coordinator": "components.coordinator.simulator:CoordinatorSimulator",
    "Sink": "tests.coordinator.tiny_world:Sink",
}

KEEP = {
    "Coordinator": ["pv_to_ev_kw", "grid_to_ev_kw", "v2g_kw", "pv_export_kw",
                    "pv_curtailed_kw", "cost_cny", "ev_user_revenue_cny", "grid_cost_cny",
                    "pv_revenue_cny", "peak_threshold_kw", "n_controlled", "transactions",
                    "p_set_kw", "q_kvar_set", "curtail_kw"],
    "EV": ["charge_kw", "discharge_kw", "clamped_count", "n_plugged", "unmet_kwh",
           "ev_unmet_energy_mwh", "ev_setpoints_clamped", "p_kw"],
    "PV": ["p_kw", "p_avail_kw", "p_curtailed_kw", "q_kvar"],
    "Grid": ["import_kw", "vm_pu"],
}


class Sink(mosaik_api_v3.Simulator):
    """Keeps every value it receives: ``rows[(source, attr)] = [value of each step]``."""

    def __init__(self) -> None:
        super().__init__({"api_version": "3.0", "type": "time-based", "models": {
            "Sink": {"public": True, "params": [], "attrs": [], "any_inputs": True}}})
        self.rows: dict[tuple[str, str], list] = {}

    def init(self, sid, time_resolution=1.0, step_s=STEP_S):
        self.step_s = step_s
        return self.meta

    def create(self, num, model):
        return [{"eid": "sink", "type": model}]

    def step(self, time, inputs, max_advance):
        for attr, by_source in inputs.get("sink", {}).items():
            for source, value in by_source.items():
                name = source.split("-")[0]
                self.rows.setdefault((name, attr), []).append(
                    value.copy() if isinstance(value, np.ndarray) else value)
        return time + self.step_s

    def get_data(self, outputs):
        return {}


def sites_param(ev_cfg: EVConfig, buses: list[int]) -> list[dict]:
    return [{"name": s.name, "bus": b, "n_chargers": s.n_chargers,
             "charge_kw": sum(g.count * g.charge_kw for g in s.chargers),
             "discharge_kw": sum(g.count * g.discharge_kw for g in s.chargers)}
            for s, b in zip(ev_cfg.sites, buses, strict=True)]


def instance(world: mosaik.World, sid: str) -> Any:
    return world.sims[sid]._proxy.sim


def run_tiny(strategy: str, days: float = 1.0, coordinator: dict | None = None,
             ev: dict | None = None, seed: int = 7) -> tuple[Sink, Any]:
    """Build and run the tiny world; return the sink and the coordinator model."""
    n_steps = int(days * 86400 / STEP_S)
    clock = {"start": START, "step_s": STEP_S, "n_steps": n_steps, "seed": seed}
    world = mosaik.World({k: {"python": v} for k, v in SIMS.items()}, skip_greetings=True,
                         configure_logging=False)
    try:
        pv_cfg = PVConfig.model_validate(PV)
        plants = pv_cfg.all_plants(seed)
        pv = world.start("PV", **clock).PVFleet(config=pv_cfg.model_dump(mode="json"),
                                                buses=[p.bus for p in plants])
        fac = world.start("Factory", **clock).Factories(config=FACTORIES,
                                                        buses=[f["bus"] for f in FACTORIES])
        ev_cfg = EVConfig.model_validate({**EV, **(ev or {})})
        site_buses = [s.bus for s in ev_cfg.sites]
        ev_ent = world.start("EV", **clock).EVFleet(config=ev_cfg.model_dump(mode="json"),
                                                    site_buses=site_buses)
        grid_cfg = GridConfig.model_validate(GRID)
        net = load_network(grid_cfg)
        injectors = {pv.full_id: [p.bus for p in plants],
                     fac.full_id: [f["bus"] for f in FACTORIES],
                     ev_ent.full_id: site_buses}
        grid = world.start("Grid", **clock).Grid(config=grid_cfg.model_dump(mode="json"),
                                                 injectors=injectors, net=net)
        grid_model = instance(world, grid.sid).model
        ctrl = sorted({p.bus for p in plants} | {f["bus"] for f in FACTORIES} | set(site_buses))
        sens = grid_sensitivity(load_network(grid_cfg), ctrl, grid_model.bus_ids,
                                grid_model.line_ids, grid_model.trafo_ids, (0.9, 1.1))
        fleet = instance(world, ev_ent.sid).fleet
        coord = world.start("Coordinator", **clock).Coordinator(
            config={"strategy": strategy, **(coordinator or {})}, n_ev=ev_cfg.fleet_size,
            sites=sites_param(ev_cfg, site_buses),
            plants=[{"name": p.name, "bus": p.bus, "kwp": p.kwp,
                     "inverter_kw": p.inverter_kw} for p in plants],
            factories=[{"name": f["name"], "bus": f["bus"]} for f in FACTORIES],
            ev={"charge_efficiency": ev_cfg.charge_efficiency,
                "discharge_efficiency": ev_cfg.discharge_efficiency,
                "min_soc_v2g": ev_cfg.min_soc_v2g, "soc_max": ev_cfg.soc_max,
                "capacity_kwh": fleet.cap_kwh.tolist()},
            grid=sens.to_dict())

        # EV -> coordinator: time-shifted, starting with the fleet's view before step 0
        view = instance(world, ev_ent.sid).get_data({"fleet": EV_INPUTS})["fleet"]
        world.connect(ev_ent, coord, *EV_INPUTS, time_shifted=True, initial_data=view)
        world.connect(pv, coord, ("p_avail_kw", "pv_avail_kw"), ("p_kw", "pv_p_kw"),
                      ("q_kvar", "pv_q_kvar"))
        world.connect(fac, coord, ("p_kw", "factory_p_kw"), ("q_kvar", "factory_q_kvar"),
                      ("deferrable_kw", "factory_deferrable_kw"))
        state = instance(world, grid.sid).get_data(
            {"grid": ["vm_pu", "line_loading_pct", "trafo_loading_pct", "import_kw"]})["grid"]
        world.connect(grid, coord, *[(a, f"grid_{a}") for a in state], time_shifted=True,
                      initial_data=state)
        world.connect(coord, ev_ent, "p_set_kw")
        world.connect(coord, pv, "curtail_kw", "q_kvar_set", time_shifted=True,
                      initial_data={"curtail_kw": [p.inverter_kw for p in plants],
                                    "q_kvar_set": [0.0] * len(plants)})
        world.connect(coord, fac, "shed_kw", time_shifted=True,
                      initial_data={"shed_kw": [0.0] * len(FACTORIES)})
        for src in (pv, fac, ev_ent):
            world.connect(src, grid, "p_kw", "q_kvar")
        sink = world.start("Sink", step_s=STEP_S).Sink()
        for name, ent in (("Coordinator", coord), ("EV", ev_ent), ("PV", pv), ("Grid", grid)):
            world.connect(ent, sink, *KEEP[name])
        world.run(until=n_steps * STEP_S, print_progress=False)
        out = instance(world, sink.sid)
        out.fleet = instance(world, ev_ent.sid).fleet
        return out, instance(world, coord.sid).coord
    finally:
        world.shutdown()  # a no-op after a complete run
