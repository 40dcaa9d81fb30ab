"""A simulated year of the default zone, against pandapower's own time series of the grid alone.

Prints one JSON object:

* ``year``: wall time of the default zone (1,200 EVs, coordinator, ledger) over 365 days at
  15-minute steps, set-up and run, with the share of run time per simulator (the ledger's
  blocks are sealed in a process of their own where a core is spare, as ``twin run`` does);
* ``pandapower_timeseries``: ``pandapower.timeseries.run_timeseries`` over the same network,
  the same SimBench background profiles and the injections the twin's PV plants, factories
  and charging sites made in the first ``--pp-days`` days of that year (``ConstControl`` per
  element, the documented way to drive a time series), timed and extrapolated to 365 days;
  ``speedup`` = extrapolated pandapower year / co-simulated year, both measured in this run;
* ``grid_alone_speedup_vs_pandapower_timeseries``: the same comparison for the twin's grid
  simulator alone (its time inside the co-simulated run): the like-for-like comparison, and the
  one the 30x target applies to;
* ``mosaik_floor``: mosaik's own time for the same wiring with simulators that do nothing
  (``benchmarks/mosaik_floor.py``, the fastest of three goes), and
  ``speedup_bound_from_mosaik_floor``, the most any co-simulated year could gain on
  pandapower's time series: the extrapolated pandapower year over that floor;
* ``sweep`` (unless ``--no-sweep``): throughput of ``benchmarks/sweep.py`` with 1 and 2 local
  worker processes.

Run: ``.venv/bin/python benchmarks/year.py [--days 365] [--pp-days 2] [--no-sweep]``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import mosaik_floor  # noqa: E402

import twin  # noqa: E402
from components.grid.model import background_profiles, resolve_bus  # noqa: E402
from twin.scenario import grid_network  # noqa: E402

YEAR_STEPS = 365 * 96


def co_simulated(days: float) -> tuple[dict[str, Any], Any]:
    """Run the default zone; return its timing figures and the run's result."""
    t0 = time.perf_counter()
    scenario = twin.load_scenario(None, {"days": days})
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        result = twin.run(scenario, out=f"{tmp}/run", progress=False)
    info = result.info
    wall = info["wall_time_s"]
    share = {k: round(v / wall, 4) for k, v in info["simulator_s"].items()}
    share["mosaik"] = round(max(wall - sum(info["simulator_s"].values()), 0.0) / wall, 4)
    return {
        "days": days, "steps": info["steps"], "load_and_validate_s": round(load_s, 2),
        "setup_s": info["setup_s"], "run_s": wall,
        "total_s": round(load_s + info["setup_s"] + wall, 2),
        "steps_per_s": info["steps_per_s"], "share_of_run_time": share,
        "ledger_sealed_in_own_process": info["ledger_process"],
        "event_loop": info["event_loop"],
    }, (scenario, result)


def injections_by_bus(scenario: Any, frames: dict[str, pd.DataFrame], net: Any,
                      n: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The twin's P and Q per bus for the first ``n`` steps [kW, kvar, load convention]."""
    buses = {
        "pv": [p.bus for p in scenario.pv.all_plants(scenario.seed)],
        "factory": [f.bus for f in scenario.factories],
        "ev": [s.bus for s in scenario.ev.sites] if scenario.ev is not None else [],
    }
    per_bus_p: dict[int, np.ndarray] = {}
    per_bus_q: dict[int, np.ndarray] = {}
    for name, refs in buses.items():
        frame = frames.get(name)
        if frame is None:
            continue
        p_cols = [c for c in frame.columns if c.startswith("p_kw[")]
        q_cols = [c for c in frame.columns if c.startswith("q_kvar[")]
        for ref, pc, qc in zip(refs, p_cols, q_cols, strict=True):
            bus = resolve_bus(net, ref)
            per_bus_p[bus] = per_bus_p.get(bus, 0.0) + frame[pc].to_numpy()[:n]
            per_bus_q[bus] = per_bus_q.get(bus, 0.0) + frame[qc].to_numpy()[:n]
    order = sorted(per_bus_p)
    return (order, np.column_stack([per_bus_p[b] for b in order]),
            np.column_stack([per_bus_q[b] for b in order]))


def pandapower_timeseries(scenario: Any, frames: dict[str, pd.DataFrame],
                          pp_days: float) -> dict[str, Any]:
    """Time pandapower's run_timeseries of the grid alone over the first ``pp_days`` days."""
    import pandapower as pp
    from pandapower.control import ConstControl
    from pandapower.timeseries import DFData, OutputWriter, run_timeseries

    n = int(round(pp_days * 96))
    net = grid_network(scenario.grid)
    buses, p_kw, q_kvar = injections_by_bus(scenario, frames, net, n)
    profiles = background_profiles(net, scenario.step_starts()[:n])
    background = {el: net[el].index.copy() for el in ("load", "sgen", "gen", "storage")}
    twin_loads = [pp.create_load(net, bus=b, p_mw=0.0, q_mvar=0.0, name=f"twin@{b}")
                  for b in buses]
    columns: dict[tuple[str, str], pd.DataFrame] = {
        ("load", "p_mw"): pd.DataFrame(p_kw / 1e3, columns=twin_loads),
        ("load", "q_mvar"): pd.DataFrame(q_kvar / 1e3, columns=twin_loads),
    }
    for key, values in profiles.items():
        if key == "row":
            continue
        element, column = key.split("_", 1)
        frame = pd.DataFrame(values, columns=background[element])
        if (element, column) in columns:  # loads: the background's own loads as well
            frame = pd.concat([columns[(element, column)], frame], axis=1)
        columns[(element, column)] = frame
    for (element, column), frame in columns.items():
        ConstControl(net, element=element, variable=column, element_index=list(frame.columns),
                     profile_name=list(frame.columns), data_source=DFData(frame))
    out = tempfile.mkdtemp(prefix="sdg-twin-pp-ts-")
    OutputWriter(net, time_steps=range(n), output_path=out, output_file_type=".json",
                 log_variables=[("res_bus", "vm_pu"), ("res_line", "loading_percent")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # one power flow on a copy first, untimed: the first in a process pays one-off costs
        # (lazy imports, lookup tables) that are not pandapower's time per step
        pp.runpp(copy.deepcopy(net))
        t0 = time.perf_counter()
        run_timeseries(net, time_steps=range(n), verbose=False)
        wall = time.perf_counter() - t0
    vm = pd.read_json(Path(out) / "res_bus" / "vm_pu.json")
    if len(vm) != n or not np.isfinite(vm.to_numpy()).all() or vm.std().max() == 0:
        raise SystemExit(f"pandapower's time series did not solve every step ({len(vm)} of {n})")
    return {"days": pp_days, "steps": n, "wall_s": round(wall, 2),
            "ms_per_step": round(wall / n * 1e3, 2),
            "extrapolated_year_s": round(wall / n * YEAR_STEPS, 1),
            # pandapower solves with lightsim2grid when it is installed (not a dependency of
            # ours): about 3x faster per step on this grid
            "lightsim2grid": importlib.util.find_spec("lightsim2grid") is not None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--days", type=float, default=365.0, help="co-simulated days")
    ap.add_argument("--pp-days", type=float, default=2.0,
                    help="days of pandapower's time series to extrapolate from (>= 2)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the sweep throughput")
    args = ap.parse_args()
    if args.pp_days < 2 or args.pp_days > args.days:
        ap.error("--pp-days must be at least 2 and at most --days")

    load_before = os.getloadavg()[0]
    year, (scenario, result) = co_simulated(args.days)
    pp_ts = pandapower_timeseries(scenario, result.frames, args.pp_days)
    floor = mosaik_floor.floor(scenario)
    year_equiv_s = year["run_s"] * YEAR_STEPS / year["steps"]
    grid_equiv_s = result.info["simulator_s"]["Grid"] * YEAR_STEPS / year["steps"]
    out: dict[str, Any] = {
        "benchmark": "year", "cpu_count": os.cpu_count(),
        "load_average_1min_before": round(load_before, 2),
        "year": year, "pandapower_timeseries": pp_ts,
        "speedup_vs_pandapower_timeseries": round(pp_ts["extrapolated_year_s"] / year_equiv_s, 1),
        # the twin's grid simulator alone (its share of the same co-simulated run)
        "grid_simulator_year_s": round(grid_equiv_s, 2),
        "grid_alone_speedup_vs_pandapower_timeseries": round(
            pp_ts["extrapolated_year_s"] / grid_equiv_s, 1),
        "mosaik_floor": floor,
        "speedup_bound_from_mosaik_floor": round(pp_ts["extrapolated_year_s"] / floor["year_s"],
                                                 1),
        "targets": {"year_s": 30, "grid_alone_speedup_vs_pandapower": 30, "sweep_2_vs_1": 1.8},
    }
    if not args.no_sweep:
        import sweep as sweep_bench

        out["sweep"] = sweep_bench.throughput(days=1.0)
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
