"""Assemble one mosaik World from a validated scenario and run it.

Few simulators, one entity each, vector attributes (DESIGN.md): PV fleet, factories, EV fleet and
grid exchange arrays aligned to their own device order; the grid is told at creation which buses
each source's arrays belong to. A Recorder keeps every step for the run folder.
"""

from __future__ import annotations

import time as wallclock
from dataclasses import dataclass, field
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
}


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

    def recorder(self) -> Recorder:
        return _instance(self.world, self.recorder_sid)


def build(scenario: Scenario, net: Any = None) -> Assembly:
    """Start the simulators, create one entity each and connect them."""
    if net is None:
        net = check_buses(scenario, load_network(scenario.grid))
    world = mosaik.World({k: {"python": v} for k, v in SIMULATORS.items()},
                         skip_greetings=True, configure_logging=False)
    try:
        return _assemble(world, scenario, net)
    except Exception as exc:
        _shutdown(world)
        raise SimulationError(f"while building the world: {type(exc).__name__}: {exc}") from exc


def _assemble(world: mosaik.World, scenario: Scenario, net: Any) -> Assembly:
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

    rec_factory = start("Recorder")
    recorder = rec_factory.Recorder()
    for name, entity in entities.items():
        world.connect(entity, recorder, *RECORDED[name])
    return Assembly(world, scenario, net, entities, labels, timing, recorder.sid)


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
