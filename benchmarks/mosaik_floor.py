"""mosaik's own time per step for a zone's wiring: the same simulators, connections, time shifts
and event loop, with simulators that do nothing.

Whatever the simulators compute, a co-simulated step cannot take less than this; ``year.py``
reports it next to the co-simulated year. Run alone:
``.venv/bin/python benchmarks/mosaik_floor.py [--days 30]`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import mosaik
import mosaik_api_v3
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import twin
from twin import world as world_mod

YEAR_STEPS = 365 * 96


class EmptySimulator(mosaik_api_v3.Simulator):
    """One entity with the given attributes: steps every ``step`` and hands out a fixed array
    for each output asked for (by reference, as the zone's in-process simulators do)."""

    def __init__(self) -> None:
        super().__init__({"api_version": "3.0", "type": "time-based", "models": {}})
        self.step_ticks = 900
        self.value = np.zeros(0)

    def init(self, sid: str, time_resolution: float = 1.0, step: int = 900,
             attrs: tuple[str, ...] = (), size: int = 0) -> dict:
        self.step_ticks = int(step)
        self.value = np.zeros(size)
        self.meta["models"]["Empty"] = {"public": True, "params": [], "attrs": list(attrs)}
        return self.meta

    def create(self, num: int, model: str) -> list[dict[str, str]]:
        return [{"eid": "e", "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        return time + self.step_ticks

    def get_data(self, outputs: dict) -> dict:
        return {eid: dict.fromkeys(attrs, self.value) for eid, attrs in outputs.items()}


def wiring(scenario: Any) -> list[tuple[str, str, str, str, bool, Any]]:
    """The connections the twin makes for ``scenario``: ``(source, destination, source
    attribute, destination attribute, time-shifted, initial value)`` with simulators by name
    (``EV``, ``Grid``, ...). Builds the world (without running it) and reads what mosaik
    recorded of each ``connect``."""
    assembly = world_mod.build(scenario, ledger_process=False)
    try:
        pending = assembly.world._async_world._pending_connections  # mosaik keeps no public list
        return [(c.src_entity.sid.rsplit("-", 1)[0], c.dest_entity.sid.rsplit("-", 1)[0],
                 c.src_attr, c.dest_attr, c.delay.tiers[0] > 0, c.initial_data)
                for c in pending]
    finally:
        world_mod._shutdown(assembly.world)
        assembly.discard_ledger()


def floor(scenario: Any, days: float = 10.0, goes: int = 3) -> dict[str, Any]:
    """Run empty simulators wired as the twin wires ``scenario`` for ``days``, ``goes`` times
    (a fresh world each), and keep the fastest go: a floor, which noise only raises."""
    links = wiring(scenario)
    n_steps = round(days * 86400 / scenario.step_s)
    walls, loop = [], ""
    for _ in range(goes):
        world = _empty_world(links, scenario.step_s)
        loop = type(world.loop).__module__.partition(".")[0]
        t0 = time.perf_counter()
        world.run(until=n_steps * scenario.step_s, print_progress=False, lazy_stepping=False)
        walls.append(time.perf_counter() - t0)
    wall = min(walls)
    return {"simulators": sorted({link[0] for link in links} | {link[1] for link in links}),
            "connections": len(links), "days": days, "goes": goes,
            "us_per_step": round(wall / n_steps * 1e6),
            "year_s": round(wall / n_steps * YEAR_STEPS, 1), "event_loop": loop}


def _empty_world(links: list[tuple[str, str, str, str, bool, Any]], step_s: int) -> mosaik.World:
    """A world of empty simulators, one per name in ``links``, connected as ``links`` say."""
    attrs: dict[str, set[str]] = defaultdict(set)
    for src, dest, src_attr, dest_attr, _, _ in links:
        attrs[src].add(src_attr)
        attrs[dest].add(dest_attr)
    world = mosaik.World({name: {"python": "mosaik_floor:EmptySimulator"} for name in attrs},
                         skip_greetings=True, configure_logging=False,
                         asyncio_loop=world_mod._event_loop())
    entities = {name: world.start(name, step=step_s, attrs=tuple(sorted(names)), size=100)
                .Empty() for name, names in attrs.items()}
    grouped: dict[tuple[str, str, bool], list[tuple[str, str, Any]]] = defaultdict(list)
    for src, dest, src_attr, dest_attr, shifted, initial in links:
        grouped[(src, dest, shifted)].append((src_attr, dest_attr, initial))
    for (src, dest, shifted), pairs in grouped.items():
        extra = {}
        if shifted:
            extra = {"time_shifted": True,
                     "initial_data": {s: initial for s, _, initial in pairs}}
        world.connect(entities[src], entities[dest], *[(s, d) for s, d, _ in pairs], **extra)
    return world


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--days", type=float, default=10.0, help="simulated days of each go")
    ap.add_argument("--goes", type=int, default=3, help="goes (the fastest counts)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))  # mosaik imports this module by name
    scenario = twin.load_scenario(None, {})
    out = {"benchmark": "mosaik_floor", **floor(scenario, args.days, args.goes)}
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
