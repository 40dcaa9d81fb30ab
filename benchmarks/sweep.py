"""Sweep throughput on a local dask cluster with 1 and with 2 worker processes.

The same sweep (the default zone over one day, ``--runs`` values of ``pv.losses_pct``) runs
into a fresh folder on each cluster. The workers and this process make one short run with its
report first, so the figures are steady-state throughput: runs (simulation and report) per
minute.
The two set-ups take turns ``--repeats`` times and the median wall time of each counts: a
sweep of a few seconds on two cores shared with the client varies by ~15 % from one go to
the next.

Prints one JSON object. Run: ``.venv/bin/python benchmarks/sweep.py [--runs 16] [--days 1]
[--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import yaml

from twin.scenario import DEFAULT_SCENARIO
from twin.sweep import load_sweep, run_sweep


REPEATS = 5
"""Goes of each set-up: a sweep of 16 one-day runs takes 4 to 8 s, and on this 2-core machine
the ratio of the medians of three goes came out at 1.73 and 1.85 in two invocations a few
minutes apart."""

RUNS = 16
"""Runs per sweep: a one-day run takes about half a second, so eight runs made a two-second
sweep on two workers, where one hiccup of the scheduler moved the figure by 5 %."""


def warm_up(scenario: dict) -> None:
    """Make one short run with its report, untimed: the first run in a process pays one-off
    costs (imports, building the network, plotly's validators, the report's map traces) that
    are not part of steady-state throughput."""
    from twin.sweep import execute_run

    with tempfile.TemporaryDirectory() as tmp:
        result = execute_run({**scenario, "days": 0.25}, f"{tmp}/warm-up")
    if result["status"] != "ok" or result["error"]:
        raise RuntimeError(f"warm-up run failed: {result['error']}")


def measure(sweep_file: Path, out: Path, workers: int) -> dict:
    from distributed import Client, LocalCluster

    sweep = load_sweep(sweep_file)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        # as a task on each worker: runs execute in a worker's task thread, as a sweep's do
        client.gather([client.submit(warm_up, sweep.runs[0].scenario, workers=[address],
                                     allow_other_workers=False, pure=False)
                       for address in client.scheduler_info()["workers"]])
        result = run_sweep(sweep, out, client, progress=False)
    if result.failed:
        raise SystemExit(f"{result.failed} run(s) failed: "
                         f"{result.table.loc[result.table['status'] != 'ok', 'error'].tolist()}")
    runs = len(sweep.runs)
    return {"workers": workers, "runs": runs, "wall_s": round(result.wall_time_s, 2),
            "runs_per_min": round(runs / result.wall_time_s * 60, 2),
            "mean_run_simulation_s": round(float(result.table["wall_time_s"].mean()), 2)}


def throughput(runs: int = RUNS, days: float = 1.0, scenario: Path = DEFAULT_SCENARIO,
               repeats: int = REPEATS) -> dict:
    """Run the same sweep on 1 and on 2 local workers, ``repeats`` times each in turn; return
    the median figures of both and the ratio of their median wall times."""
    with tempfile.TemporaryDirectory() as tmp:
        sweep_file = Path(tmp) / "bench.yaml"
        losses = [round(8 + 10 * i / max(1, runs - 1), 3) for i in range(runs)]
        sweep_file.write_text(yaml.safe_dump({
            "name": "bench", "base": str(Path(scenario).resolve()),
            "set": {"days": days}, "grid": {"pv.losses_pct": losses}}))
        load_before = os.getloadavg()[0]
        warm_up(load_sweep(sweep_file).runs[0].scenario)  # this process writes sweep reports
        goes: dict[int, list[dict]] = {1: [], 2: []}
        for r in range(repeats):
            for workers in (1, 2):
                goes[workers].append(measure(sweep_file, Path(tmp) / f"w{workers}-{r}", workers))
    one, two = (_median_go(goes[w]) for w in (1, 2))
    return {
        "scenario": str(scenario),
        "days": days,
        "cpu_count": os.cpu_count(),
        "load_average_1min_before": round(load_before, 2),
        "repeats": repeats,
        "one_worker": one,
        "two_workers": two,
        "speedup_2_vs_1": round(one["wall_s"] / two["wall_s"], 3),
    }


def _median_go(goes: list[dict]) -> dict:
    """The go with the median wall time, with every go's wall time."""
    ranked = sorted(goes, key=lambda g: g["wall_s"])
    return {**ranked[(len(ranked) - 1) // 2], "wall_s_each": [g["wall_s"] for g in goes]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=RUNS, help="runs per sweep")
    ap.add_argument("--days", type=float, default=1.0, help="simulated days per run")
    ap.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO, help="base scenario")
    ap.add_argument("--repeats", type=int, default=REPEATS, help="goes of each set-up (median)")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    json.dump({"benchmark": "sweep",
               **throughput(args.runs, args.days, args.scenario, args.repeats)},
              sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
