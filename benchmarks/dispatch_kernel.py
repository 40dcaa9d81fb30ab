"""Time the per-step EV allocation kernel and its NumPy twin; print one JSON object.

For 1,000 and 10,000 plugged EVs spread over 50 sites (random zone: AC and DC chargers, a third
of the EVs V2G-capable, site connections at 20-100 % of their chargers' total, PV surplus up to
half of it), each step kind is timed:

* ``charge``: a positive grid budget (10 % of the chargers' total): all four phases run except
  discharge;
* ``discharge``: a negative budget (peak shaving, 5 % of the chargers' total).

Per backend: ``kernel_us`` is the median time of ``allocate_into`` with preallocated outputs
(what the coordinator's step costs in the kernel), ``api_us`` the median time of
``ext.dispatch_api.allocate`` (validation, coercion, output allocation included); ``min`` the
fastest call. ``twin_over_compiled`` is the ratio of the kernel medians. Both backends are
measured in this one run, calls interleaved in rounds so that load from other processes affects
both alike.

Run: ``.venv/bin/python benchmarks/dispatch_kernel.py``
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ext.dispatch_api import allocate, kernel_module

N_SITES = 50
STEP_S = 900.0
ETA = 0.95


def random_zone(n: int, rng: np.random.Generator) -> dict[str, Any]:
    """Plugged EVs of one step (units as in ``ext.dispatch_api.allocate``)."""
    p_max = rng.choice([3.7, 7.4, 11.0, 22.0, 60.0], n, p=[0.1, 0.35, 0.25, 0.2, 0.1])
    site = rng.integers(0, N_SITES, n)
    chargers_kw = np.bincount(site, p_max, N_SITES)
    return {
        "need_kwh": np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0.0, 50.0, n)),
        "t_dep_s": rng.integers(1, 61, n) * STEP_S,
        "p_max_kw": p_max,
        "p_min_kw": np.where(rng.random(n) < 1 / 3, -np.minimum(p_max, 11.0), 0.0),
        "site": site,
        "site_cap_kw": rng.uniform(0.2, 1.0, N_SITES) * chargers_kw,
        "site_pv_kw": rng.uniform(0.0, 0.5, N_SITES) * chargers_kw,
    }


def median_us(fns: dict[str, Callable[[], Any]], calls: dict[str, int],
              rounds: int = 5) -> dict[str, dict[str, float]]:
    """Median and minimum time per call of each function, calls interleaved in rounds. [µs]"""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(max(1, calls[name] // rounds)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: {"median": float(np.median(t)) * 1e6, "min": float(np.min(t)) * 1e6,
                   "calls": len(t)} for name, t in times.items()}


def bench(n: int, kind: str, backends: list[str], rng: np.random.Generator) -> dict[str, Any]:
    zone = random_zone(n, rng)
    chargers_kw = float(zone["p_max_kw"].sum())
    budget_kw = 0.10 * chargers_kw if kind == "charge" else -0.05 * chargers_kw
    fns: dict[str, Callable[[], Any]] = {}
    calls: dict[str, int] = {}
    p = np.empty(n)
    site_out = np.empty((3, N_SITES))
    for backend in backends:
        kernel = kernel_module(backend)
        totals = np.empty(kernel.N_TOTALS)
        args = (zone["need_kwh"], zone["t_dep_s"], zone["p_max_kw"], zone["p_min_kw"],
                zone["p_max_kw"], zone["site"], zone["site_cap_kw"], zone["site_pv_kw"],
                budget_kw, STEP_S, ETA, ETA, p, site_out, totals)
        fns[f"{backend}.kernel"] = (lambda k=kernel, a=args: k.allocate_into(*a))
        fns[f"{backend}.api"] = (lambda b=backend: allocate(**zone, grid_budget_kw=budget_kw,
                                                            step_s=STEP_S, eta_ch=ETA,
                                                            eta_dis=ETA, backend=b))
        many = 2000 if backend == "compiled" else 200
        calls[f"{backend}.kernel"] = calls[f"{backend}.api"] = max(20, many * 1000 // n)
    for fn in fns.values():  # warm up
        fn()
    t = median_us(fns, calls)
    p_kw, info = allocate(**zone, grid_budget_kw=budget_kw, step_s=STEP_S, eta_ch=ETA,
                          eta_dis=ETA)
    out: dict[str, Any] = {
        "grid_budget_kw": round(budget_kw, 1),
        "charge_kw": round(info.charge_kw, 1), "discharge_kw": round(info.discharge_kw, 1),
        "evs_charging": int((p_kw > 0).sum()), "evs_discharging": int((p_kw < 0).sum()),
    }
    for backend in backends:
        out[backend] = {
            "kernel_us": round(t[f"{backend}.kernel"]["median"], 1),
            "kernel_min_us": round(t[f"{backend}.kernel"]["min"], 1),
            "api_us": round(t[f"{backend}.api"]["median"], 1),
            "calls": t[f"{backend}.kernel"]["calls"],
        }
    if len(backends) == 2:
        out["twin_over_compiled"] = round(out["numpy"]["kernel_us"]
                                          / out["compiled"]["kernel_us"], 1)
    return out


def main() -> None:
    backends = ["numpy"]
    if importlib.util.find_spec("ext.dispatch") is not None:
        backends.insert(0, "compiled")
    rng = np.random.default_rng(2026)
    result: dict[str, Any] = {
        "benchmark": "ext.dispatch per-step allocation",
        "n_sites": N_SITES, "step_s": STEP_S, "target_us_10000": 200.0,
        "backends": backends,
        "load_average_1min": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
    }
    for n in (1000, 10000):
        for kind in ("charge", "discharge"):
            result[f"n{n}_{kind}"] = bench(n, kind, backends, rng)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
