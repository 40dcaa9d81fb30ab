"""Assemble one mosaik World from a validated scenario and run it.

Few simulators, one entity each, vector attributes (DESIGN.md): PV fleet, factories, EV fleet and
grid exchange arrays aligned to their own device order; the grid is told at creation which buses
each source's arrays belong to. Right after each step the world reads the outputs worth keeping
straight from the in-process simulator into a :class:`~twin.recorder.Recorder` (a sink simulator
would cost mosaik a process and a dependency per source on every step).

With a ``coordinator`` section, the SDG coordinator joins: it reads the EVs plugged at the start
of each step (the fleet's view after the previous step, time-shifted), PV and factory power of
the step, and the grid state of the previous step (time-shifted); it sets the EVs' power for the
same step and PV curtailment, reactive power and factory shedding for the next one
(time-shifted). Once the EV fleet (and any charging station in the loop) has made a step, the
world has the coordinator settle it on the sites' metered power and hands the trades to a
:class:`~twin.ledger_writer.LedgerWriter`, which seals a block per simulated hour into
``ledger.sqlite`` in a temporary folder (``Assembly.ledger_dir``) that ``twin.run`` moves into the
run folder.
"""

from __future__ import annotations

import asyncio
import copy
import shutil
import tempfile
import time as wallclock
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mosaik
import numpy as np
import pandas as pd

from components.grid.model import resolve_bus
from twin.ledger_writer import LedgerWriter
from twin.recorder import Recorder
from twin.scenario import Scenario, check_buses

SIMULATORS = {
    "PV": "components.pv.simulator:PVSimulator",
    "Factory": "components.factory.simulator:FactorySimulator",
    "EV": "components.ev.simulator:EVSimulator",
    "Grid": "components.grid.simulator:GridSimulator",
    "Coordinator": "components.coordinator.simulator:CoordinatorSimulator",
    "Comm": "components.comm.simulator:CommSimulator",
    "HIL": "components.hil.simulator:HILSimulator",
    "HILSites": "components.hil.simulator:HILSimulator",
}

# What the Recorder keeps of each simulator (everything a KPI or a plot needs); "Ledger" is the
# LedgerWriter's running count.
RECORDED = {
    "PV": ["p_kw", "q_kvar", "p_avail_kw", "p_curtailed_kw"],
    "Factory": ["p_kw", "q_kvar", "critical_kw", "deferrable_kw", "shed_applied_kw"],
    "EV": ["p_kw", "q_kvar", "charge_kw", "discharge_kw", "n_plugged", "clamped_count",
           "unmet_kwh", "ev_charge_energy_mwh", "ev_discharge_energy_mwh", "ev_unmet_energy_mwh",
           "ev_trips_short", "ev_plug_refusals", "ev_capacity_fade_pct_mean",
           "ev_driven_energy_mwh", "ev_trips"],
    "Grid": ["vm_pu", "line_loading_pct", "trafo_loading_pct", "losses_kw", "import_kw",
             "q_import_kvar", "background_load_kw", "background_gen_kw",
             "background_storage_kw", "converged"],
    "Coordinator": ["pv_to_ev_kw", "grid_to_ev_kw", "v2g_kw", "pv_export_kw", "pv_curtailed_kw",
                    "cost_cny", "ev_user_revenue_cny", "grid_cost_cny", "pv_revenue_cny",
                    "peak_threshold_kw", "n_controlled", "shed_kw", "island_mode"],
    "Ledger": ["n_blocks", "n_transactions"],
    "Comm": ["messages_sent", "messages_lost", "messages_late"],
    "HIL": ["p_kw", "q_kvar", "setpoint_kw", "stale", "rtt_ms", "lag_s", "n_stale",
            "rtt_max_ms", "battery_soc_pct", "pv_gen_kw", "pv_avail_total_kw",
            "pv_curtailed_total_kw", "battery_p_kw"],
    "HILSites": ["p_kw", "q_kvar", "setpoint_kw", "stale", "rtt_ms", "lag_s", "n_stale",
                 "rtt_max_ms", "metered_kw", "sim_kw", "evse_metered_kw", "evse_sim_kw"],
}

# What the Recorder keeps of the grid only where buses can go dark or an island can form (with
# events or a grid-forming unit): otherwise every bus is energised, no load goes unserved, and
# the per-bus flags would only double the grid's share of the run folder.
RECORDED_OUTAGES = ["energised", "v_quality_ok", "islanded", "island_held", "gfm_supply_kw",
                    "gfm_soc", "gfm_headroom_kw", "background_load_unserved_kw",
                    "background_gen_unserved_kw", "injection_unserved_kw", "customers_off",
                    "customers_interrupted", "background_load_shed_kw"]


def recorded(scenario: Scenario, name: str) -> list[str]:
    """The attributes the Recorder keeps of simulator ``name`` in this scenario."""
    if name == "Grid" and (scenario.events or scenario.grid.grid_forming is not None):
        return [*RECORDED["Grid"], *RECORDED_OUTAGES]
    return RECORDED[name]


# What the coordinator reads of each source: (source attribute, coordinator attribute)
_COORD_PV = [("p_avail_kw", "pv_avail_kw"), ("p_kw", "pv_p_kw"), ("q_kvar", "pv_q_kvar")]
_COORD_FACTORY = [("p_kw", "factory_p_kw"), ("q_kvar", "factory_q_kvar"),
                  ("deferrable_kw", "factory_deferrable_kw"),
                  ("critical_kw", "factory_critical_kw")]
# the grid state of the previous step; the island telemetry only with a grid-forming unit
_COORD_GRID = ["vm_pu", "line_loading_pct", "trafo_loading_pct", "import_kw"]
_COORD_ISLAND = ["islanded", "island_held", "islanded_next", "gfm_demand_kw", "gfm_headroom_kw",
                 "gfm_absorb_headroom_kw", "gfm_e_kwh", "gfm_supply_kw", "background_class_kw",
                 "background_load_shed_kw", "background_storage_kw", "background_gen_kw",
                 "background_gen_unserved_kw", "losses_kw"]


EV_METERED = ["charge_site_kw", "discharge_site_kw"]
"""What the world reads of the EV fleet after each step to settle it (see ``_instrument``)."""


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
    recorder: Recorder
    ledger_dir: Path | None = None
    """Temporary folder holding ``ledger.sqlite`` and ``ledger.pub`` (None without a
    coordinator); :func:`twin.run.run` moves them into the run folder."""
    ledger: LedgerWriter | None = None
    ledger_process: bool | None = None
    """Whether the ledger seals its blocks in a process of its own (None: where a core is
    spare)."""
    station_sites: tuple[int, ...] = ()
    """EV site index of each charging station in the loop (``HILSites`` order): their meters,
    not the fleet's simulation, are settled."""

    def close_ledger(self) -> None:
        """Close the ledger's database (unsealed trades of a failed run are left out)."""
        if self.ledger is not None:
            self.ledger.close()

    def discard_ledger(self) -> None:
        """Remove the temporary ledger folder (after a failed run, or once moved)."""
        self.close_ledger()
        if self.ledger_dir is not None:
            shutil.rmtree(self.ledger_dir, ignore_errors=True)


def build(scenario: Scenario, net: Any = None, ledger_process: bool | None = None) -> Assembly:
    """Start the simulators, create one entity each and connect them. ``ledger_process``: seal
    the ledger's blocks in a process of its own (see :class:`~twin.ledger_writer.LedgerWriter`;
    by default where a core is spare)."""
    if net is None:
        net = check_buses(scenario)  # a fresh copy of the process's cached network
    world = mosaik.World({k: {"python": v} for k, v in SIMULATORS.items()},
                         skip_greetings=True, configure_logging=False, asyncio_loop=_event_loop())
    ledger_dir = None
    if scenario.coordinator is not None:
        ledger_dir = Path(tempfile.mkdtemp(prefix="sdg-twin-ledger-"))
    assembly = Assembly(world, scenario, net, {}, {}, Timing(), Recorder(scenario.n_steps),
                        ledger_dir, ledger_process=ledger_process)
    try:
        _assemble(assembly)
        return assembly
    except Exception as exc:
        _shutdown(world)
        assembly.discard_ledger()
        raise SimulationError(f"while building the world: {type(exc).__name__}: {exc}") from exc


def _event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop for mosaik, set as this thread's: uvloop's where it is installed (mosaik's
    scheduling costs a tenth less per step on it, with callbacks in the same order), else
    asyncio's, which is what mosaik would make itself."""
    try:
        import uvloop
    except ImportError:  # not built for this platform (Windows)
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def _assemble(assembly: Assembly) -> None:
    world, scenario, net = assembly.world, assembly.scenario, assembly.net
    entities, labels = assembly.entities, assembly.labels
    clock = scenario.clock()
    injectors: dict[str, list[int]] = {}

    def start(name: str, **params: Any):
        factory = world.start(name, **clock, **params)
        _instrument(assembly, factory._sid, name)
        return factory

    plants = scenario.pv.all_plants(scenario.seed)
    # devices in the loop: replaced plants leave the fleet (components/hil/wiring.py)
    hil = None
    if scenario.hil is not None:
        from components.hil.wiring import HILWiring

        hil = HILWiring(scenario, net, plants, resolve_bus)
    fleet_plants = plants if hil is None else hil.fleet_plants
    # the coordinator's sensitivities need the network before the grid adds its loads to it
    base_net = copy.deepcopy(net) if _needs_sensitivities(scenario) else None
    if fleet_plants:
        buses = [resolve_bus(net, p.bus) for p in fleet_plants]
        pv = start("PV", location=scenario.location.model_dump(mode="json"),
                   weather=scenario.weather.model_dump(mode="json"))
        pv_cfg = scenario.pv if hil is None else hil.pv_config
        entities["PV"] = pv.PVFleet(config=pv_cfg.model_dump(mode="json"), buses=buses)
        injectors[entities["PV"].full_id] = buses
        labels["PV"] = {"": [p.name for p in fleet_plants]}

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

    if hil is not None:
        hil.add_entities(start, entities, labels, injectors)
        if "HILSites" in entities:
            assembly.station_sites = tuple(int(d["site_index"]) for d in hil.sites)

    grid = start("Grid")
    entities["Grid"] = grid.Grid(config=scenario.grid.model_dump(mode="json"),
                                 injectors=injectors, net=net,
                                 events=[e.model_dump(mode="json") for e in scenario.events or []])
    model = _instance(world, entities["Grid"].sid).model
    labels["Grid"] = {"vm_pu": list(model.bus_ids), "line_loading_pct": list(model.line_ids),
                      "trafo_loading_pct": list(model.trafo_ids),
                      "energised": list(model.bus_ids), "v_quality_ok": list(model.bus_ids),
                      "injection_unserved_kw": list(model.injection_buses)}
    if "PV" in entities and scenario.pv.voltage_controlled():
        # volt-var / volt-watt inverters act on the previous step's bus voltages
        _instance(world, entities["PV"].sid).use_grid_buses(list(model.bus_ids))
        world.connect(entities["Grid"], entities["PV"], "vm_pu", time_shifted=True,
                      initial_data={"vm_pu": [1.0] * len(model.bus_ids)})

    for name in ("PV", "Factory", "EV"):
        if name in entities:
            world.connect(entities[name], entities["Grid"], "p_kw", "q_kvar")
    if hil is not None:
        hil.connect(world, entities)

    if scenario.coordinator is not None:
        _add_coordinator(world, scenario, net, base_net, plants, entities, labels, start,
                         hil=hil)
        assembly.ledger = LedgerWriter(assembly.ledger_dir, scenario.start_ts, scenario.step_s,
                                       scenario.n_steps,
                                       separate_process=assembly.ledger_process)


def _needs_sensitivities(scenario: Scenario) -> bool:
    return scenario.coordinator is not None and scenario.coordinator.strategy == "grid_aware"


def _add_coordinator(world: mosaik.World, scenario: Scenario, net: Any, base_net: Any,
                     plants: list, entities: dict[str, Any], labels: dict[str, dict[str, list]],
                     start: Callable[..., Any], hil: Any = None) -> None:
    """Create the coordinator and wire it (see the module docstring)."""
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
        location=scenario.location.model_dump(mode="json"), grid=sensitivity,
        **_island_params(scenario, grid_model))
    entities["Coordinator"] = coord
    labels["Coordinator"] = {"shed_kw": [f.name for f in scenario.factories]}

    # EVs plugged at t_k are the fleet's view after step k-1: time-shifted, starting with the
    # view before the first step
    view = _instance(world, ev_ent.sid).get_data({"fleet": EV_INPUTS})["fleet"]
    world.connect(ev_ent, coord, *EV_INPUTS, time_shifted=True, initial_data=view)
    comm = _add_comm(world, scenario, plants, entities, labels, start, view)
    if hil is not None and hil.routes_pv:
        # PV reaches the coordinator merged with the inverters in the loop, all plants in order
        hil.connect_coordinator(world, coord, entities)
    elif "PV" in entities:
        world.connect(entities["PV"], coord, *_COORD_PV)
        initial = {"curtail_kw": [p.inverter_kw for p in plants],
                   "q_kvar_set": [0.0] * len(plants)}
        if comm is not None and scenario.comm.pv:
            world.connect(coord, comm, "curtail_kw", "q_kvar_set")
            world.connect(comm, entities["PV"], "curtail_kw", "q_kvar_set", "setpoint_delay_s",
                          time_shifted=True,
                          initial_data={**initial, "setpoint_delay_s": [0.0] * len(plants)})
        else:
            world.connect(coord, entities["PV"], "curtail_kw", "q_kvar_set", time_shifted=True,
                          initial_data=initial)
    if "Factory" in entities:
        world.connect(entities["Factory"], coord, *_COORD_FACTORY)
        world.connect(coord, entities["Factory"], "shed_kw", time_shifted=True,
                      initial_data={"shed_kw": [0.0] * len(scenario.factories)})
    # the grid state of step k-1, starting with the grid's set-up power flow
    grid_attrs = _COORD_GRID + (_COORD_ISLAND if scenario.grid.grid_forming is not None else [])
    state = _instance(world, grid_ent.sid).get_data({"grid": grid_attrs})["grid"]
    if scenario.grid.grid_forming is not None:
        # island mode: background shedding applies in the step the coordinator decides
        world.connect(coord, grid_ent, "shed_background_share")
    world.connect(grid_ent, coord, *[(a, f"grid_{a}") for a in grid_attrs], time_shifted=True,
                  initial_data=state)
    if comm is not None:
        world.connect(coord, comm, "p_set_kw")
        world.connect(comm, ev_ent, "p_set_kw")
    else:
        world.connect(coord, ev_ent, "p_set_kw")


def _island_params(scenario: Scenario, grid_model: Any) -> dict[str, Any]:
    """The coordinator's island-mode parameters: the grid-forming battery and the grid
    operator's announced outage schedule (none without a grid-forming unit)."""
    gfm = scenario.grid.grid_forming
    if gfm is None:
        return {}
    return {"grid_forming": {"e_kwh": gfm.e_kwh, "soc_min": gfm.soc_min,
                             "efficiency": gfm.efficiency},
            "outage": grid_model.schedule.outage.astype(int).tolist()}


def _add_comm(world: mosaik.World, scenario: Scenario, plants: list, entities: dict[str, Any],
              labels: dict[str, dict[str, list]], start: Callable[..., Any],
              view: dict[str, Any]) -> Any:
    """The channel between the coordinator and the EV and PV fleets (None when ideal or absent:
    the set-points then go straight to the devices)."""
    cfg = scenario.comm
    if cfg is None or cfg.is_ideal():
        return None
    with_pv = "PV" in entities and cfg.pv
    comm = start("Comm").Channel(
        config=cfg.model_dump(mode="json"), n_ev=scenario.ev.fleet_size,
        inverter_kw=[p.inverter_kw for p in plants] if with_pv else None)
    entities["Comm"] = comm
    labels["Comm"] = {}
    # the EVs plugged at t_k each get a message: the fleet's view after step k-1, as the
    # coordinator sees it
    ev_view = ["plugged_ids", "plugged_p_max_kw"]
    world.connect(entities["EV"], comm, *ev_view, time_shifted=True,
                  initial_data={a: view[a] for a in ev_view})
    return comm


def execute(assembly: Assembly, progress: bool = True) -> float:
    """Run the world to the end of the horizon; return the wall time [s]."""
    scenario = assembly.scenario
    realtime: dict[str, Any] = {}
    if scenario.hil is not None and scenario.hil.rt_factor is not None:
        realtime = {"rt_factor": scenario.hil.rt_factor, "rt_strict": scenario.hil.rt_strict}
    t0 = wallclock.perf_counter()
    try:
        with warnings.catch_warnings():
            # mosaik warns on every step behind the real-time schedule; the HIL simulators
            # record the lag of each step instead (hil.parquet, kpis.json)
            warnings.filterwarnings("ignore", message="Simulation too slow for real-time")
            # Without lazy stepping a simulator steps as soon as its inputs are there instead
            # of also waiting for its successors: a fifth less of mosaik's time per step, same
            # results (every loop here is closed by a time-shifted connection, so nothing runs
            # more than a step ahead). Real-time runs keep mosaik's default pacing.
            assembly.world.run(until=scenario.n_steps * scenario.step_s,
                               print_progress=progress, lazy_stepping=bool(realtime), **realtime)
    except SimulationError:
        _shutdown(assembly.world)
        raise
    except Exception as exc:  # an error outside any simulator call (mosaik itself)
        _shutdown(assembly.world)
        raise SimulationError(f"mosaik: {type(exc).__name__}: {exc}") from exc
    else:
        if assembly.ledger is not None:
            try:
                assembly.ledger.finish()  # the last blocks are written before the run ends
            except RuntimeError as exc:
                raise SimulationError(str(exc)) from exc
    finally:
        assembly.close_ledger()
    return wallclock.perf_counter() - t0


def frames(assembly: Assembly) -> dict[str, pd.DataFrame]:
    """The recorded series as one wide DataFrame per simulator, indexed by step start time.

    Vector attributes become columns ``attr[label]``; scalars keep their name.
    """
    index = assembly.scenario.step_starts()
    index.name = "time"
    out: dict[str, pd.DataFrame] = {}
    series = assembly.recorder.series
    names = [*assembly.entities, *(["Ledger"] if assembly.ledger is not None else [])]
    for name in names:
        cols: dict[str, np.ndarray] = {}
        for attr in recorded(assembly.scenario, name):
            rows = series.get((name, attr))
            if rows is None:
                continue
            if rows.ndim == 1:
                cols[attr] = rows
                continue
            labels = assembly.labels[name].get(attr, assembly.labels[name].get(""))
            for j in range(rows.shape[1]):
                cols[f"{attr}[{labels[j]}]"] = rows[:, j]
        out[name.lower()] = pd.DataFrame(cols, index=index)
    return out


def _instance(world: mosaik.World, sid: str) -> Any:
    """The simulator object behind an in-process mosaik simulator."""
    return world.sims[sid]._proxy.sim


def _instrument(assembly: Assembly, sid: str, name: str) -> None:
    """Time each simulator's calls, name it and the simulated time when one fails, and record
    its outputs after each step (after the sites' step, also settle it into the ledger)."""
    sim = _instance(assembly.world, sid)
    step, get_data = sim.step, sim.get_data
    scenario, timing, recorder = assembly.scenario, assembly.timing, assembly.recorder
    last = {"t": 0}

    def fail(what: str, t_s: int, exc: Exception) -> SimulationError:
        when = scenario.start_ts + pd.Timedelta(seconds=t_s)
        return SimulationError(f"simulator {sid} ({name}) failed in {what} at t={t_s} s "
                               f"({when:%Y-%m-%d %H:%M %Z}): {type(exc).__name__}: {exc}")

    attrs = recorded(scenario, name) if name in RECORDED else []
    if name == "Coordinator":  # recorded once the sites have metered the step (settle below)
        from components.coordinator.model import SETTLEMENT_TOTALS
        attrs = [a for a in attrs if a not in SETTLEMENT_TOTALS]

    def record(time: int) -> float:
        """Record the step's outputs; return the time spent settling for the coordinator [s]."""
        entity = assembly.entities.get(name)
        if entity is None or not attrs:
            return 0.0
        k = time // scenario.step_s
        recorder.record(k, name, get_data({entity.eid: attrs})[entity.eid])
        # the last of the EV fleet and the stations in the loop to make the step settles it
        if name == ("HILSites" if assembly.station_sites else "EV") \
                and "Coordinator" in assembly.entities:
            return settle(k, time)
        return 0.0

    def settle(k: int, time: int) -> float:
        """Settle step ``k`` on the sites' metered powers, now that the sites have made it (the
        trades then describe what was drawn, also when set-points were lost or clamped)."""
        t0 = wallclock.perf_counter()
        entities = assembly.entities
        coordinator = _instance(assembly.world, entities["Coordinator"].sid)
        ev = entities["EV"]
        metered = _instance(assembly.world, ev.sid).get_data({ev.eid: EV_METERED})[ev.eid]
        charge, discharge = metered["charge_site_kw"], metered["discharge_site_kw"]
        if assembly.station_sites:  # a station's meter replaces its site's simulation
            stations = entities["HILSites"]
            sites = list(assembly.station_sites)
            charge, discharge = charge.copy(), discharge.copy()
            charge[sites] = get_data({stations.eid: ["metered_kw"]})[stations.eid]["metered_kw"]
            discharge[sites] = 0.0  # a station takes charging limits only (no V2G site)
        totals = coordinator.settle_metered(time, charge, discharge)
        trades = totals.pop("transactions")
        if assembly.ledger is not None:
            recorder.record(k, "Ledger", assembly.ledger.add(k, trades))
        recorder.record(k, "Coordinator", totals)
        spent = wallclock.perf_counter() - t0
        timing.add("Coordinator", spent)
        return spent

    def timed_step(time, inputs, max_advance):
        last["t"] = time
        t0 = wallclock.perf_counter()
        settling = 0.0
        try:
            next_time = step(time, inputs, max_advance)
            settling = record(time)
            return next_time
        except Exception as exc:
            raise fail("step", time, exc) from exc
        finally:
            timing.add(name, wallclock.perf_counter() - t0 - settling)

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
