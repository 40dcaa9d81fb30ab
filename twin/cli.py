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
    r.add_argument("--no-report", action="store_true", help="do not write report.html")

    v = sub.add_parser("validate", help="check scenario files without running them")
    v.add_argument("scenarios", nargs="+", type=Path)

    c = sub.add_parser("compare", help="print the KPIs of several run folders side by side")
    c.add_argument("runs", nargs="+", type=Path)

    # Listed for `twin -h`; main() hands their arguments to their own parsers.
    sub.add_parser("ledger", help="verify a run's settlement ledger (twin ledger verify RUN_DIR)")
    sub.add_parser("sweep", help="batch parameter sweep on Dask (twin sweep SWEEP.yaml)")
    sub.add_parser("report", help="rebuild report.html of run folders (twin report RUN_DIR)")
    sub.add_parser("hil", help="hardware-in-the-loop: run a bench in real time (twin hil "
                   "SCENARIO) or a device stub (twin hil stub pv|battery|evse)")
    return p


# Commands whose own parsers take the rest of the line (`twin sweep -h` is the sweep's help).
PASSTHROUGH = {
    "ledger": ("twin.ledger", "main"),
    "sweep": ("twin.sweep", "sweep_main"),
    "report": ("twin.report", "report_main"),
    "hil": ("twin.run", "hil_main"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PASSTHROUGH:
        from importlib import import_module

        module, func = PASSTHROUGH[argv[0]]
        return getattr(import_module(module), func)(argv[1:])
    args = _parser().parse_args(argv)
    from twin.scenario import ScenarioError

    try:
        if args.command == "validate":
            return _validate(args.scenarios)
        if args.command == "compare":
            return _compare(args.runs)
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
        result = run(scenario, out=args.out, progress=not args.quiet, force=args.force,
                     report=not args.no_report)
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
