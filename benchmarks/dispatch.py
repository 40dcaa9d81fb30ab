"""Dispatch: kernel time per step and the fast strategies' gap to the optimal reference.

Prints one JSON object:

* ``kernel``: time of one ``ext.dispatch_api.allocate`` step for 1,000 and 10,000 plugged EVs,
  compiled kernel and NumPy twin in the same run (see ``benchmarks/dispatch_kernel.py``);
* ``gaps``: one week of the default zone (``--start``, default the summer week from Monday
  2026-06-01) run with each fast strategy and with ``optimal`` under each objective; each fast
  strategy is compared with ``optimal`` on its own objective (``pv_following``: grid energy cost
  of EV charging with local PV free; ``v2g_peak_shaving`` and ``grid_aware``: peak import;
  ``uncontrolled``: the EV users' net bill), gap = (value - optimum) / |optimum|
  (:func:`components.coordinator.optimal.strategy_gaps`);
* ``runs``: the headline KPIs of every run and its wall time.

Run: ``.venv/bin/python benchmarks/dispatch.py [--days 7] [--start "2026-01-05 00:00"]
[--no-gaps]``. The week takes minutes: ``optimal`` solves a linear programme per step.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from components.coordinator.optimal import OBJECTIVE_OF, strategy_gaps

FAST = ["uncontrolled", "pv_following", "v2g_peak_shaving", "grid_aware"]
KEYS = ["peak_import_mw", "pv_to_ev_mwh", "grid_to_ev_mwh", "v2g_mwh", "ev_unmet_energy_mwh",
        "ev_charge_energy_mwh", "cost_cny", "ev_grid_cost_cny", "ev_user_revenue_cny",
        "voltage_violation_bus_hours", "pv_curtailed_mwh", "ledger_blocks"]


def kernel_times() -> dict[str, Any]:
    """Median ``allocate`` time per step [us], compiled and NumPy twin, 1,000 and 10,000 EVs."""
    import dispatch_kernel as dk

    backends = ["numpy"]
    if importlib.util.find_spec("ext.dispatch") is not None:
        backends.insert(0, "compiled")
    rng = np.random.default_rng(2026)
    out: dict[str, Any] = {"backends": backends}
    for n in (1000, 10000):
        for kind in ("charge", "discharge"):
            res = dk.bench(n, kind, backends, rng)
            out[f"n{n}_{kind}"] = {b: res[b] for b in backends}
            if "twin_over_compiled" in res:
                out[f"n{n}_{kind}"]["twin_over_compiled"] = res["twin_over_compiled"]
    return out


def run_zone(strategy: str, days: float, start: str | None, net: Any,
             *overrides: str) -> tuple[dict[str, float], float, dict[str, float]]:
    """KPIs, wall time [s] and strategy statistics of one run of the default zone."""
    from twin import kpis as kpi_mod
    from twin import world as world_mod
    from twin.scenario import load_scenario

    extra = [f"days={days}", f"coordinator.strategy={strategy}", *overrides]
    if start:
        extra.append(f"start={start}")
    scenario = load_scenario(None, extra, check_grid=False)
    t0 = time.perf_counter()
    assembly = world_mod.build(scenario, net=copy.deepcopy(net))
    try:
        world_mod.execute(assembly, progress=False)
        frames = world_mod.frames(assembly)
    finally:
        assembly.discard_ledger()
    wall = time.perf_counter() - t0
    strat = world_mod._instance(assembly.world,
                                assembly.entities["Coordinator"].sid).coord.strategy
    stats = {}
    if hasattr(strat, "solves"):
        stats = {"lp_solves": strat.solves, "lp_s": round(strat.solve_s, 1)}
    return kpi_mod.compute(scenario, frames), wall, stats


def compare_with_optimal(days: float = 7.0, start: str | None = None) -> dict[str, Any]:
    """Run the fast strategies and ``optimal`` (each objective) on the default zone."""
    from twin.scenario import check_buses, load_scenario

    net = check_buses(load_scenario(None, [], check_grid=False))
    runs: dict[str, dict[str, Any]] = {}
    fast: dict[str, dict[str, float]] = {}
    for name in FAST:
        kpis, wall, _ = run_zone(name, days, start, net)
        fast[name] = kpis
        runs[name] = {"wall_s": round(wall, 1), **{k: _round(kpis.get(k)) for k in KEYS}}
    optimum: dict[str, dict[str, float]] = {}
    for objective in sorted(set(OBJECTIVE_OF.values())):
        kpis, wall, stats = run_zone("optimal", days, start, net,
                                     f"coordinator.optimal.objective={objective}")
        optimum[objective] = kpis
        runs[f"optimal/{objective}"] = {"wall_s": round(wall, 1), **stats,
                                        **{k: _round(kpis.get(k)) for k in KEYS}}
    gaps = {name: {k: _round(v) if isinstance(v, float) else v for k, v in g.items()}
            for name, g in strategy_gaps(fast, optimum).items()}
    return {"days": days, "start": start or "2026-06-01 00:00", "gaps": gaps, "runs": runs}


def _round(v: Any) -> Any:
    return round(float(v), 4) if isinstance(v, (float, np.floating)) else v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--start", default=None, help="start of the run, e.g. '2026-01-05 00:00'")
    parser.add_argument("--no-gaps", action="store_true", help="kernel times only")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "SDG coordinator dispatch",
        "load_average_1min": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
        "kernel": kernel_times(),
    }
    if not args.no_gaps:
        result.update(compare_with_optimal(args.days, args.start))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
