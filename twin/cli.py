"""The ``twin`` command.

Exit codes: 0 success; 2 bad input (scenario, arguments), one line per problem naming the field;
1 a failure during the run, naming the simulator and the simulated time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from twin.scenario import ScenarioError, load_scenario


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twin", description="Digital twin of Solar Digital Grid "
                                "demonstration zones: PV, EV fleet, factories and grid.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="simulate a scenario and write its run folder")
    r.add_argument("scenario", nargs="?", type=Path, default=None,
                   help="scenario YAML (default: scenarios/sdg_zone.yaml, the default zone)")
    r.add_argument("--out", type=Path, help="run folder (default: runs/<name>-seed<seed>-<time>)")
    r.add_argument("--days", type=str, help="simulated days (overrides the scenario)")
    r.add_argument("--seed", type=str, help="random seed (overrides the scenario)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override any scenario field, e.g. --set pv.losses_pct=12 (repeatable)")
    r.add_argument("--force", action="store_true", help="replace an existing --out folder")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    v = sub.add_parser("validate", help="check scenario files without running them")
    v.add_argument("scenarios", nargs="+", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "validate":
            return _validate(args.scenarios)
        return _run(args)
    except ScenarioError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _validate(paths: list[Path]) -> int:
    bad = 0
    for path in paths:
        try:
            load_scenario(path)
            print(f"{path}: ok")
        except ScenarioError as exc:
            bad += 1
            for problem in exc.problems:
                print(f"error: {path}: {problem}", file=sys.stderr)
    return 2 if bad else 0


def _run(args: argparse.Namespace) -> int:
    from twin.kpis import table
    from twin.run import run
    from twin.world import SimulationError

    overrides = list(args.overrides)
    if args.days is not None:
        overrides.append(f"days={args.days}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    scenario = load_scenario(args.scenario, overrides)
    try:
        result = run(scenario, out=args.out, progress=not args.quiet, force=args.force)
    except SimulationError as exc:
        print(f"error: run failed: {exc}", file=sys.stderr)
        return 1
    info = result.info
    print(f"\n{scenario.name}: {info['steps']} steps of {scenario.step_s} s in "
          f"{info['wall_time_s']:.1f} s ({info['steps_per_s']} steps/s)")
    print(table(result.kpis))
    print(f"\nrun folder: {result.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
