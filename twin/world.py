"""Assemble one mosaik World from a validated scenario and run it.

Few simulators, one entity each, vector attributes (DESIGN.md): PV fleet, factories, EV fleet and
grid exchange arrays aligned to their own device order; the grid is told at creation which buses
each source's arrays belong to. A Recorder keeps every step for the run folder.

With a ``coordinator`` section, the SDG coordinator joins: it reads the EVs plugged at the start
of each step (the fleet's view after the previous step, time-shifted), PV and factory power of
the step, and the grid state of the previous step (time-shifted); it sets the EVs' power for the
same step and PV curtailment, reactive power and factory shedding for the next one
(time-shifted). Its trades go to a LedgerWriter, which seals a block per simulated hour into
``ledger.sqlite`` in a temporary folder (``Assembly.ledger_dir``) that ``twin.run`` moves into the
run folder.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time as wallclock
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mosaik
import numpy as np
import pandas as pd

from components.grid.model import load_network, resolve_bus
from twin.recorder import Recorder
from twin.scenario import Scenario, check_buses

SIMULATORS = {
    "PV": "components.pv.simulator:PVSimulator",
    "Factory": "components.factory.simulator:FactorySimulator",
    "EV": "components.ev.simulator:EVSimulator",
    "Grid": "components.grid.simulator:GridSimulator",
    "Coordinator": "components.coordinator.simulator:CoordinatorSimulator",
    "Ledger": "twin.ledger_writer:LedgerWriter",
    "Recorder": "twin.recorder:Recorder",
}

# What the Recorder keeps of each simulator (everything a KPI or a plot needs).
RECORDED = {
    "PV": ["p_kw", "q_kvar", "p_avail_kw", "p_curtailed_kw"],
    "Factory": ["p_kw", "q_kvar", "critical_kw", "deferrable_kw"],
    "EV": ["p_kw", "q_kvar", "charge_kw", "discharge_kw", "n_plugged", "clamped_count",
           "unmet_kwh", "ev_charge_energy_mwh", "ev_discharge_energy_mwh", "ev_unmet_energy_mwh",
           "ev_trips_short", "ev_plug_refusals", "ev_capacity_fade_pct_mean",
           "ev_driven_energy_mwh", "ev_trips"],
    "Grid": ["vm_pu", "line_loading_pct", "trafo_loading_pct", "losses_kw", "import_kw",
             "q_import_kvar", "background_load_kw", "background_gen_kw",
             "background_storage_kw", "converged"],
    "Coordinator": ["pv_to_ev_kw", "grid_to_ev_kw", "v2g_kw", "pv_export_kw", "pv_curtailed_kw",
                    "cost_cny", "ev_user_revenue_cny", "grid_cost_cny", "pv_revenue_cny",
                    "peak_threshold_kw", "n_controlled", "shed_kw"],
    "Ledger": ["n_blocks", "n_transactions"],
}

# What the coordinator reads of each source: (source attribute, coordinator attribute)
_COORD_PV = [("p_avail_kw", "pv_avail_kw"), ("p_kw", "pv_p_kw"), ("q_kvar", "pv_q_kvar")]
_COORD_FACTORY = [("p_kw", "factory_p_kw"), ("q_kvar", "factory_q_kvar"),
                  ("deferrable_kw", "factory_deferrable_kw")]
_COORD_GRID = ["vm_pu", "line_loading_pct", "trafo_loading_pct", "import_kw"]


class SimulationError(Exception):
    """A simulator failed during the run; the message names it and the simulated time."""


@dataclass
class Timing:
    """Wall time spent inside each simulator's step and get_data calls [s]."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, dt: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + dt


@dataclass
class Assembly:
    """A built world and what is needed to read its results."""

    world: mosaik.World
    scenario: Scenario
    net: Any
    entities: dict[str, Any]
    labels: dict[str, dict[str, list]]
    timing: Timing
    recorder_sid: str
    ledger_dir: Path | None = None
    """Temporary folder holding ``ledger.sqlite`` and ``ledger.pub`` (None without a
    coordinator); :func:`twin.run.run` moves them into the run folder."""

    def recorder(self) -> Recorder:
        return _instance(self.world, self.recorder_sid)

    def discard_ledger(self) -> None:
        """Remove the temporary ledger folder (after a failed run, or once moved)."""
        if self.ledger_dir is not None:
            shutil.rmtree(self.ledger_dir, ignore_errors=True)


def build(scenario: Scenario, net: Any = None) -> Assembly:
    """Start the simulators, create one entity each and connect them."""
    if net is None:
        net = check_buses(scenario, load_network(scenario.grid))
    world = mosaik.World({k: {"python": v} for k, v in SIMULATORS.items()},
                         skip_greetings=True, configure_logging=False)
    ledger_dir = None
    if scenario.coordinator is not None:
        ledger_dir = Path(tempfile.mkdtemp(prefix="sdg-twin-ledger-"))
    try:
        return _assemble(world, scenario, net, ledger_dir)
    except Exception as exc:
        _shutdown(world)
        if ledger_dir is not None:
            shutil.rmtree(ledger_dir, ignore_errors=True)
        raise SimulationError(f"while building the world: {type(exc).__name__}: {exc}") from exc


def _assemble(world: mosaik.World, scenario: Scenario, net: Any,
              ledger_dir: Path | None) -> Assembly:
    clock = scenario.clock()
    timing = Timing()
    entities: dict[str, Any] = {}
    labels: dict[str, dict[str, list]] = {}
    injectors: dict[str, list[int]] = {}

    def start(name: str, **params: Any):
        factory = world.start(name, **clock, **params)
        sid = factory._sid
        _instrument(world, sid, name, scenario, timing)
        return factory

    plants = scenario.pv.all_plants(scenario.seed)
    # the coordinator's sensitivities need the network before the grid adds its loads to it
    base_net = copy.deepcopy(net) if _needs_sensitivities(scenario) else None
    if plants:
        buses = [resolve_bus(net, p.bus) for p in plants]
        pv = start("PV", location=scenario.location.model_dump(mode="json"),
                   weather=scenario.weather.model_dump(mode="json"))
        entities["PV"] = pv.PVFleet(config=scenario.pv.model_dump(mode="json"), buses=buses)
        injectors[entities["PV"].full_id] = buses
        labels["PV"] = {"": [p.name for p in plants]}

    if scenario.factories:
        buses = [resolve_bus(net, f.bus) for f in scenario.factories]
        fac = start("Factory")
        entities["Factory"] = fac.Factories(
            config=[f.model_dump(mode="json") for f in scenario.factories], buses=buses)
        injectors[entities["Factory"].full_id] = buses
        labels["Factory"] = {"": [f.name for f in scenario.factories]}

    if scenario.ev is not None:
        site_buses = [resolve_bus(net, s.bus) for s in scenario.ev.sites]
        ev = start("EV")
        shifts = [s.model_dump(mode="json") for f in scenario.factories for s in f.shifts]
        entities["EV"] = ev.EVFleet(config=scenario.ev.model_dump(mode="json"),
                                    site_buses=site_buses, shifts=shifts)
        injectors[entities["EV"].full_id] = site_buses
        labels["EV"] = {"": [s.name for s in scenario.ev.sites]}

    grid = start("Grid")
    entities["Grid"] = grid.Grid(config=scenario.grid.model_dump(mode="json"),
                                 injectors=injectors, net=net)
    model = _instance(world, entities["Grid"].sid).model
    labels["Grid"] = {"vm_pu": list(model.bus_ids), "line_loading_pct": list(model.line_ids),
                      "trafo_loading_pct": list(model.trafo_ids)}

    for name in ("PV", "Factory", "EV"):
        if name in entities:
            world.connect(entities[name], entities["Grid"], "p_kw", "q_kvar")

    if scenario.coordinator is not None:
        _add_coordinator(world, scenario, net, base_net, plants, entities, labels, start,
                         ledger_dir)

    rec_factory = start("Recorder")
    recorder = rec_factory.Recorder()
    for name, entity in entities.items():
        world.connect(entity, recorder, *RECORDED[name])
    return Assembly(world, scenario, net, entities, labels, timing, recorder.sid, ledger_dir)


def _needs_sensitivities(scenario: Scenario) -> bool:
    return scenario.coordinator is not None and scenario.coordinator.strategy == "grid_aware"


def _add_coordinator(world: mosaik.World, scenario: Scenario, net: Any, base_net: Any,
                     plants: list, entities: dict[str, Any], labels: dict[str, dict[str, list]],
                     start: Callable[..., Any], ledger_dir: Path) -> None:
    """Create the coordinator and the ledger writer and wire them (see the module docstring)."""
    from components.coordinator.sensitivity import grid_sensitivity
    from components.coordinator.simulator import EV_INPUTS

    cfg, ev_cfg = scenario.coordinator, scenario.ev
    ev_ent, grid_ent = entities["EV"], entities["Grid"]
    site_buses = [resolve_bus(net, s.bus) for s in ev_cfg.sites]
    plant_buses = [resolve_bus(net, p.bus) for p in plants]
    factory_buses = [resolve_bus(net, f.bus) for f in scenario.factories]
    grid_model = _instance(world, grid_ent.sid).model
    fleet = _instance(world, ev_ent.sid).fleet
    sensitivity = None
    if base_net is not None:
        band = cfg.v_band_pu or scenario.grid.v_band_pu
        sensitivity = grid_sensitivity(
            base_net, sorted(set(site_buses) | set(plant_buses) | set(factory_buses)),
            grid_model.bus_ids, grid_model.line_ids, grid_model.trafo_ids, band).to_dict()
    soc_full = ev_cfg.soc_max - ev_cfg.cv_end_power_share * (ev_cfg.soc_max
                                                             - ev_cfg.cv_taper_soc)
    coord = start("Coordinator").Coordinator(
        config=cfg.model_dump(mode="json"), n_ev=ev_cfg.fleet_size,
        sites=[{"name": s.name, "bus": b, "n_chargers": s.n_chargers,
                "charge_kw": sum(g.count * g.charge_kw for g in s.chargers),
                "discharge_kw": sum(g.count * g.discharge_kw for g in s.chargers)}
               for s, b in zip(ev_cfg.sites, site_buses, strict=True)],
        plants=[{"name": p.name, "bus": b, "kwp": p.kwp, "inverter_kw": p.inverter_kw}
                for p, b in zip(plants, plant_buses, strict=True)],
        factories=[{"name": f.name, "bus": b}
                   for f, b in zip(scenario.factories, factory_buses, strict=True)],
        ev={"charge_efficiency": ev_cfg.charge_efficiency,
            "discharge_efficiency": ev_cfg.discharge_efficiency,
            "min_soc_v2g": ev_cfg.min_soc_v2g, "soc_max": soc_full,
            "capacity_kwh": fleet.cap_kwh.tolist()},
        location=scenario.location.model_dump(mode="json"), grid=sensitivity)
    entities["Coordinator"] = coord
    labels["Coordinator"] = {"shed_kw": [f.name for f in scenario.factories]}

    # EVs plugged at t_k are the fleet's view after step k-1: time-shifted, starting with the
    # view before the first step
    view = _instance(world, ev_ent.sid).get_data({"fleet": EV_INPUTS})["fleet"]
    world.connect(ev_ent, coord, *EV_INPUTS, time_shifted=True, initial_data=view)
    if "PV" in entities:
        world.connect(entities["PV"], coord, *_COORD_PV)
        world.connect(coord, entities["PV"], "curtail_kw", "q_kvar_set", time_shifted=True,
                      initial_data={"curtail_kw": [p.inverter_kw for p in plants],
                                    "q_kvar_set": [0.0] * len(plants)})
    if "Factory" in entities:
        world.connect(entities["Factory"], coord, *_COORD_FACTORY)
        world.connect(coord, entities["Factory"], "shed_kw", time_shifted=True,
                      initial_data={"shed_kw": [0.0] * len(scenario.factories)})
    # the grid state of step k-1, starting with the grid's set-up power flow
    state = _instance(world, grid_ent.sid).get_data({"grid": _COORD_GRID})["grid"]
    world.connect(grid_ent, coord, *[(a, f"grid_{a}") for a in _COORD_GRID], time_shifted=True,
                  initial_data=state)
    world.connect(coord, ev_ent, "p_set_kw")

    ledger = start("Ledger").LedgerWriter(folder=str(ledger_dir))
    entities["Ledger"] = ledger
    labels["Ledger"] = {}
    world.connect(coord, ledger, "transactions")


def execute(assembly: Assembly, progress: bool = True) -> float:
    """Run the world to the end of the horizon; return the wall time [s]."""
    scenario = assembly.scenario
    t0 = wallclock.perf_counter()
    try:
        assembly.world.run(until=scenario.n_steps * scenario.step_s, print_progress=progress)
    except SimulationError:
        _shutdown(assembly.world)
        raise
    except Exception as exc:  # an error outside any simulator call (mosaik itself)
        _shutdown(assembly.world)
        raise SimulationError(f"mosaik: {type(exc).__name__}: {exc}") from exc
    return wallclock.perf_counter() - t0


def frames(assembly: Assembly) -> dict[str, pd.DataFrame]:
    """The recorded series as one wide DataFrame per simulator, indexed by step start time.

    Vector attributes become columns ``attr[label]``; scalars keep their name.
    """
    index = assembly.scenario.step_starts()
    index.name = "time"
    out: dict[str, pd.DataFrame] = {}
    series = assembly.recorder().series
    for name, entity in assembly.entities.items():
        cols: dict[str, np.ndarray] = {}
        for attr in RECORDED[name]:
            rows = series.get((entity.full_id, attr))
            if rows is None:
                continue
            if rows.ndim == 1:
                cols[attr] = rows
                continue
            names = assembly.labels[name].get(attr, assembly.labels[name].get(""))
            for j in range(rows.shape[1]):
                cols[f"{attr}[{names[j]}]"] = rows[:, j]
        out[name.lower()] = pd.DataFrame(cols, index=index)
    return out


def _instance(world: mosaik.World, sid: str) -> Any:
    """The simulator object behind an in-process mosaik simulator."""
    return world.sims[sid]._proxy.sim


def _instrument(world: mosaik.World, sid: str, name: str, scenario: Scenario,
                timing: Timing) -> None:
    """Time each simulator's calls, and name it and the simulated time when one fails."""
    sim = _instance(world, sid)
    step, get_data = sim.step, sim.get_data
    last = {"t": 0}

    def fail(what: str, t_s: int, exc: Exception) -> SimulationError:
        when = scenario.start_ts + pd.Timedelta(seconds=t_s)
        return SimulationError(f"simulator {sid} ({name}) failed in {what} at t={t_s} s "
                               f"({when:%Y-%m-%d %H:%M %Z}): {type(exc).__name__}: {exc}")

    def timed_step(time, inputs, max_advance):
        last["t"] = time
        t0 = wallclock.perf_counter()
        try:
            return step(time, inputs, max_advance)
        except Exception as exc:
            raise fail("step", time, exc) from exc
        finally:
            timing.add(name, wallclock.perf_counter() - t0)

    def timed_get_data(outputs):
        t0 = wallclock.perf_counter()
        try:
            return get_data(outputs)
        except Exception as exc:
            raise fail("get_data", last["t"], exc) from exc
        finally:
            timing.add(name, wallclock.perf_counter() - t0)

    sim.step, sim.get_data = timed_step, timed_get_data


def _shutdown(world: mosaik.World) -> None:
    try:
        world.shutdown()
    except Exception:  # the original error matters more than a failed clean-up
        pass
