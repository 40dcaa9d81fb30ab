"""Short runs of the default zone per strategy, shared by the acceptance tests (cached).

Two days each, starting on a Monday: a summer week (June) and a winter week (January). The
network is loaded once and copied for each run.
"""

from __future__ import annotations

import copy
from functools import cache

import numpy as np
import pandas as pd

from twin import kpis as kpi_mod
from twin import world as world_mod
from twin.scenario import Scenario, check_buses, load_scenario

SEASONS = {"summer": "2026-06-01 00:00", "winter": "2026-01-05 00:00"}
DAYS = 2
TIGHT_BAND = (0.95, 1.03)
"""A stricter voltage band than the zone's +-10 %, under which its feeders with background
generation run high at midday: something for grid_aware to do."""


@cache
def _net():
    return check_buses(load_scenario(None, [], check_grid=False))


def scenario(strategy: str, season: str, *extra: str) -> Scenario:
    overrides = [f"days={DAYS}", f"start={SEASONS[season]}",
                 f"coordinator.strategy={strategy}", *extra]
    return load_scenario(None, overrides, check_grid=False)


@cache
def zone_run(strategy: str, season: str, *extra: str) -> tuple[dict, dict[str, pd.DataFrame]]:
    """KPIs and recorded frames of the default zone under ``strategy`` (cached)."""
    sc = scenario(strategy, season, *extra)
    assembly = world_mod.build(sc, net=copy.deepcopy(_net()))
    try:
        world_mod.execute(assembly, progress=False)
        frames = world_mod.frames(assembly)
    finally:
        assembly.discard_ledger()
    return kpi_mod.compute(sc, frames), frames


def violation_hours(frames: dict[str, pd.DataFrame], band: tuple[float, float],
                    step_s: float = 900.0) -> float:
    """Bus-hours outside ``band`` in a run's recorded voltages [bus h]."""
    grid = frames["grid"]
    vm = grid[[c for c in grid.columns if c.startswith("vm_pu[")]].to_numpy(float)
    ok = grid["converged"].to_numpy(float) > 0.5
    vm = vm[ok]
    return float((np.isfinite(vm) & ((vm < band[0]) | (vm > band[1]))).sum() * step_s / 3600)
