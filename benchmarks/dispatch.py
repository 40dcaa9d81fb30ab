"""Dispatch: kernel time per step and the fast strategies' gap to the hindsight bound.

Prints one JSON object:

* ``kernel``: time of one ``ext.dispatch_api.allocate`` step for 1,000 and 10,000 plugged EVs,
  compiled kernel and NumPy twin in the same run (see ``benchmarks/dispatch_kernel.py``);
* ``gaps``: one week of the default zone (``--start``, default the summer week from Monday
  2026-06-01) run with each fast strategy; each run is compared on its strategy's own
  objective (``pv_following``: PV energy to EVs; ``v2g_peak_shaving`` and ``grid_aware``: peak
  import; ``uncontrolled``: the EV users' net bill) with the perfect-hindsight bound of the
  same run (:mod:`components.coordinator.hindsight`: one linear programme over the whole week
  with every plug session, PV and load known, at least the run's service), gap = (value -
  bound) / |bound| for objectives minimised, (bound - value) / |bound| for those maximised,
  >= 0 (:func:`components.coordinator.optimal.strategy_gaps`);
* ``rolling``: with ``--rolling``, the rolling-horizon LP (strategy ``optimal``) run with each
  objective and its own gap to the hindsight bound of its run;
* ``runs``: the headline KPIs of every run, its wall time, the bound's solve time and size.

Run: ``.venv/bin/python benchmarks/dispatch.py [--days 7] [--start "2026-01-05 00:00"]
[--no-gaps] [--no-kernel] [--rolling]``. Each fast run takes seconds, each bound up to a few
minutes; ``--rolling`` adds an LP solve per step of each ``optimal`` run.
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

from components.coordinator.hindsight import Exogenous, FleetLog, HindsightProblem
from components.coordinator.optimal import OBJECTIVE_OF, strategy_gaps
from components.coordinator.tariffs import PERIODS

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


def run_zone(strategy: str, days: float, start: str | None, net: Any, *overrides: str
             ) -> tuple[dict[str, float], float, dict[str, float], HindsightProblem]:
    """One run of the default zone: KPIs, wall time [s], strategy statistics and the
    hindsight programme of the run."""
    from twin import kpis as kpi_mod
    from twin import world as world_mod
    from twin.scenario import load_scenario

    extra = [f"days={days}", f"coordinator.strategy={strategy}", *overrides]
    if start:
        extra.append(f"start={start}")
    scenario = load_scenario(None, extra, check_grid=False)
    t0 = time.perf_counter()
    assembly = world_mod.build(scenario, net=copy.deepcopy(net))
    fleet = world_mod._instance(assembly.world, assembly.entities["EV"].sid).fleet
    log = FleetLog.attach(fleet)
    try:
        world_mod.execute(assembly, progress=False)
        frames = world_mod.frames(assembly)
    finally:
        assembly.discard_ledger()
    wall = time.perf_counter() - t0
    coord = world_mod._instance(assembly.world, assembly.entities["Coordinator"].sid).coord
    stats = {}
    if hasattr(coord.strategy, "solves"):
        stats = {"lp_solves": coord.strategy.solves, "lp_s": round(coord.strategy.solve_s, 1)}
    return kpi_mod.compute(scenario, frames), wall, stats, problem_of(log, frames, coord)


def problem_of(log: FleetLog, frames: dict, coord: Any) -> HindsightProblem:
    """The hindsight programme of a finished run from its fleet log, recorded series and
    coordinator (prices, service policy)."""
    n = len(frames["grid"])
    grid, ev, pv = frames["grid"], frames["ev"], frames.get("pv")
    ok = grid["converged"].to_numpy(float) > 0.5
    ev_kw = ev["charge_kw"].to_numpy(float) - ev["discharge_kw"].to_numpy(float)
    base = np.where(ok, grid["import_kw"].to_numpy(float) - ev_kw, np.nan)
    pv_avail = np.zeros(n) if pv is None else \
        pv[[c for c in pv.columns if c.startswith("p_avail_kw")]].to_numpy(float).sum(axis=1)
    exo = Exogenous(pv_avail_kw=pv_avail, base_import_kw=base,
                    price_grid=coord.price_grid[:n], price_pv=coord.price_pv[:n],
                    price_v2g=coord.price_v2g[:n])
    cfg = coord.cfg
    offpeak = np.isin(coord.period[:n], [PERIODS.index(p) for p in cfg.offpeak_periods])
    return HindsightProblem(log.sessions(), log.physics, exo,
                            departure_target=cfg.departure_target, offpeak=offpeak,
                            fill_margin_steps=round(cfg.offpeak_fill_margin_h * 3600
                                                    / coord.step_s))


def bound_of(problem: HindsightProblem, objective: str) -> dict[str, Any]:
    """Solve the bound of ``objective``; with the run's value replayed through the programme's
    objective (equal to the KPI unless PV was curtailed) and the run's largest violation of
    the programme's constraints (0 up to rounding: the run is a feasible point)."""
    res = problem.solve(objective)
    viol = problem.violation(problem.s.c_kw, problem.s.d_kw)
    return {**res.summary(), "replayed_value": _round(problem.value(objective)),
            "run_violation": float(f"{max(viol.values()):.3g}"),
            "slots": problem.s.n, "sessions": int(problem.first.sum())}


def compare_with_bound(days: float = 7.0, start: str | None = None,
                       rolling: bool = False) -> dict[str, Any]:
    """Run the fast strategies (and, with ``rolling``, ``optimal``) on the default zone and
    compare each with the hindsight bound of its run."""
    from twin.scenario import check_buses, load_scenario

    net = check_buses(load_scenario(None, [], check_grid=False))
    runs: dict[str, dict[str, Any]] = {}
    kpis_by: dict[str, dict[str, float]] = {}
    bounds: dict[str, float] = {}
    for name in FAST:
        kpis, wall, _, problem = run_zone(name, days, start, net)
        info = bound_of(problem, OBJECTIVE_OF[name])
        kpis_by[name], bounds[name] = kpis, info["bound"]
        runs[name] = {"wall_s": round(wall, 1), "hindsight": info,
                      **{k: _round(kpis.get(k)) for k in KEYS}}
    out: dict[str, Any] = {"days": days, "start": start or "2026-06-01 00:00",
                           "gaps": _rounded(strategy_gaps(kpis_by, bounds))}
    if rolling:
        roll_kpis: dict[str, dict[str, float]] = {}
        roll_bounds: dict[str, float] = {}
        objectives: dict[str, str] = {}
        for objective in sorted(set(OBJECTIVE_OF.values())):
            name = f"optimal/{objective}"
            kpis, wall, stats, problem = run_zone("optimal", days, start, net,
                                                  f"coordinator.optimal.objective={objective}")
            info = bound_of(problem, objective)
            roll_kpis[name], roll_bounds[name], objectives[name] = kpis, info["bound"], objective
            runs[name] = {"wall_s": round(wall, 1), **stats, "hindsight": info,
                          **{k: _round(kpis.get(k)) for k in KEYS}}
        out["rolling"] = _rounded(strategy_gaps(roll_kpis, roll_bounds, objectives))
    out["runs"] = runs
    return out


def _round(v: Any) -> Any:
    return round(float(v), 4) if isinstance(v, (float, np.floating)) else v


def _rounded(gaps: dict[str, dict]) -> dict[str, dict]:
    return {name: {k: (round(float(v), 5) if isinstance(v, float) else v) for k, v in g.items()}
            for name, g in gaps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--start", default=None, help="start of the run, e.g. '2026-01-05 00:00'")
    parser.add_argument("--no-gaps", action="store_true", help="kernel times only")
    parser.add_argument("--no-kernel", action="store_true", help="gaps only")
    parser.add_argument("--rolling", action="store_true",
                        help="also run the rolling-horizon LP and its gap to the bound")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "SDG coordinator dispatch",
        "load_average_1min": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
    }
    if not args.no_kernel:
        result["kernel"] = kernel_times()
    if not args.no_gaps:
        result.update(compare_with_bound(args.days, args.start, args.rolling))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
