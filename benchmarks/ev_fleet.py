"""Benchmark: the EV fleet model alone, uncontrolled, one year at 15-minute steps.

Runs the default example zone (``components.ev.config.example_config``) with 1,000 and 10,000 EVs
and prints one JSON object: wall time per run (set-up and stepping) and the CPU time of this
process (the machine may be shared: wall time then exceeds CPU time), time per step and per
EV-year, the ratio of the two run times (cost growth with fleet size) and the fleet totals.
Target: 10,000 EVs over a year in at most 60 s on a 2-core machine.

Usage: ``python benchmarks/ev_fleet.py [--days N] [--sizes 1000 10000] [--backend auto|compiled|numpy]``
(``--backend``: the per-step kernel, ``ext.evstep`` or its NumPy twin).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.ev.config import example_config  # noqa: E402
from components.ev.model import EVFleet  # noqa: E402

STEP_S = 900
TARGET_S = 60.0


def run(n_ev: int, days: int, seed: int = 0, backend: str = "auto") -> dict:
    """Build and step one uncontrolled fleet; return timings and totals."""
    cfg = example_config(n_ev)
    n_steps = days * 86_400 // STEP_S
    t0, c0 = time.perf_counter(), time.process_time()
    fleet = EVFleet(cfg, [s.bus for s in cfg.sites], "2026-01-01T00:00:00+08:00", STEP_S,
                    n_steps, np.random.default_rng(seed), backend=backend)
    t1 = time.perf_counter()
    peak_kw = 0.0
    for k in range(n_steps):
        fleet.step(k)
        peak_kw = max(peak_kw, fleet.charge_kw)
    t2, c2 = time.perf_counter(), time.process_time()
    kpis = fleet.kpis()
    return {
        "n_ev": n_ev,
        "kernel": fleet._kernel.__name__,
        "days": days,
        "n_steps": n_steps,
        "setup_s": round(t1 - t0, 3),
        "run_s": round(t2 - t1, 3),
        "total_s": round(t2 - t0, 3),
        "cpu_s": round(c2 - c0, 3),
        "us_per_step": round(1e6 * (t2 - t1) / n_steps, 1),
        "ms_per_ev_year": round(1e3 * (t2 - t0) / n_ev * 365 / days, 3),
        "peak_charge_mw": round(peak_kw / 1000, 3),
        "energy_balance_max_error_kwh": float(np.abs(fleet.energy_balance_error_kwh()).max()),
        "kpis": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in kpis.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--backend", choices=["auto", "compiled", "numpy"], default="auto")
    args = parser.parse_args()
    runs = [run(n, args.days, backend=args.backend) for n in args.sizes]
    out = {
        "benchmark": "ev_fleet_uncontrolled",
        "step_s": STEP_S,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "runs": runs,
    }
    if len(runs) >= 2:
        a, b = runs[0], runs[-1]
        out["time_ratio"] = round(b["total_s"] / a["total_s"], 2)
        out["size_ratio"] = round(b["n_ev"] / a["n_ev"], 2)
        out["at_most_linear"] = out["time_ratio"] <= out["size_ratio"] * 1.1
    big = [r for r in runs if r["n_ev"] >= 10_000 and r["days"] >= 365]
    if big:
        out["target_s"] = TARGET_S
        out["meets_target"] = big[0]["total_s"] <= TARGET_S
    print(json.dumps(out))


if __name__ == "__main__":
    main()
