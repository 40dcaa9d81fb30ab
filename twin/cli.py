"""The ``twin`` command.

Exit codes: 0 success; 2 bad input (scenario, arguments), one line per problem naming the field;
1 a failure during the run, naming the simulator and the simulated time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class _BadInput(Exception):
    """Bad command-line input found after parsing (exit 2)."""


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
    r.add_argument("--strategy", type=str,
                   help="coordinator strategy (overrides coordinator.strategy)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override any scenario field, e.g. --set pv.losses_pct=12 (repeatable)")
    r.add_argument("--force", action="store_true", help="replace an existing --out folder")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    v = sub.add_parser("validate", help="check scenario files without running them")
    v.add_argument("scenarios", nargs="+", type=Path)

    c = sub.add_parser("compare", help="print the KPIs of several run folders side by side")
    c.add_argument("runs", nargs="+", type=Path)

    lg = sub.add_parser("ledger", help="settlement ledger of a run (see `twin ledger -h`)",
                        add_help=False)
    lg.add_argument("rest", nargs=argparse.REMAINDER)

    h = sub.add_parser("hil", help="hardware-in-the-loop device stubs (see `twin hil -h`)",
                       add_help=False)
    h.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from twin.scenario import ScenarioError

    try:
        if args.command == "validate":
            return _validate(args.scenarios)
        if args.command == "compare":
            return _compare(args.runs)
        if args.command == "ledger":
            from twin.ledger import main as ledger_main

            return ledger_main(args.rest)
        if args.command == "hil":
            from components.hil.cli import hil_main

            return hil_main(args.rest)
        return _run(args)
    except _BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ScenarioError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _validate(paths: list[Path]) -> int:
    from twin.scenario import ScenarioError, load_scenario

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
    from twin.scenario import load_scenario
    from twin.world import SimulationError

    overrides = list(args.overrides)
    if args.strategy is not None:
        overrides.append(f"coordinator.strategy={args.strategy}")
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


def _compare(runs: list[Path]) -> int:
    import json

    from twin.kpis import table

    columns: dict[str, dict] = {}
    for run in runs:
        path = run / "kpis.json"
        if not path.is_file():
            raise _BadInput(f"{run}: not a run folder (no kpis.json)")
        name = run.name
        while name in columns:
            name += "'"
        columns[name] = json.loads(path.read_text())
    print(table({}, columns=columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
