"""Steps per second of the default zone over 7 days, and the share of time per simulator.

Prints one JSON object. Run: ``.venv/bin/python benchmarks/run_zone.py [--days N]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import twin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--scenario", default=None)
    args = ap.parse_args()

    t0 = time.perf_counter()
    scenario = twin.load_scenario(args.scenario, {"days": args.days})
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        result = twin.run(scenario, out=f"{tmp}/run", progress=False)
    info = result.info
    wall = info["wall_time_s"]
    in_sims = sum(info["simulator_s"].values())
    share = {name: round(s / wall, 4) for name, s in info["simulator_s"].items()}
    share["mosaik_and_recorder_overhead"] = round(max(wall - in_sims, 0.0) / wall, 4)
    json.dump({
        "benchmark": "run_zone",
        "scenario": scenario.name,
        "days": args.days,
        "steps": info["steps"],
        "load_and_validate_s": round(load_s, 3),
        "setup_s": info["setup_s"],
        "run_s": wall,
        "steps_per_s": info["steps_per_s"],
        "simulator_s": info["simulator_s"],
        "share_of_run_time": share,
    }, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
