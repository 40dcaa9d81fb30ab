"""Run a scenario end to end and write its run folder.

A run folder holds ``scenario.yaml`` (resolved, seed included), ``kpis.json``, one Parquet file
of time series per simulator under ``timeseries/``, ``run.json`` (versions, wall time, steps,
time per simulator) and, with a coordinator, ``ledger.sqlite`` and ``ledger.pub`` (the settlement
ledger, written during the run into a temporary folder and moved here). It is written under a temporary name and renamed when complete, so a folder
with the final name is always a whole result.
"""

from __future__ import annotations

import json
import platform
import shutil
import time as wallclock
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from components.hil import results as hil_results
from twin import kpis as kpi_mod
from twin import world as world_mod
from twin.ledger import LEDGER_FILE, PUBLIC_KEY_FILE
from twin.scenario import Scenario, ScenarioError, to_yaml

VERSIONED = ["sdg-twin", "mosaik", "mosaik-api-v3", "pandapower", "simbench", "pvlib", "simpy",
             "numpy", "pandas", "pydantic"]


@dataclass
class RunResult:
    """What a run produced: its folder, KPIs, time series and timing."""

    out_dir: Path
    kpis: dict
    frames: dict[str, pd.DataFrame]
    info: dict


def default_out_dir(scenario: Scenario) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{scenario.name}-seed{scenario.seed}-{stamp}"


def run(scenario: Scenario, out: str | Path | None = None, progress: bool = True,
        force: bool = False, report: bool = False,
        ledger_process: bool | None = None) -> RunResult:
    """Simulate ``scenario`` and write its run folder.

    Parameters
    ----------
    out : run folder; default ``runs/<name>-seed<seed>-<time>``.
    progress : show mosaik's progress bar.
    force : replace an existing folder ``out``.
    report : also write ``report.html`` (a few seconds; ``twin report`` can do it later).
    ledger_process : seal the ledger's blocks in a process of its own, on a spare core; by
        default where the machine has one (:func:`twin.ledger_writer.spare_core`).

    Raises
    ------
    ScenarioError
        ``out`` exists (and ``force`` is not set).
    twin.world.SimulationError
        A simulator failed; nothing is left at ``out``.
    """
    out_dir = Path(out) if out is not None else default_out_dir(scenario)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ScenarioError([f"--out: {out_dir} exists and is not empty "
                             "(choose another folder or pass --force)"])
    t0 = wallclock.perf_counter()
    assembly = world_mod.build(scenario, ledger_process=ledger_process)
    try:
        setup_s = wallclock.perf_counter() - t0
        sim_s = world_mod.execute(assembly, progress=progress)
        frames = world_mod.frames(assembly)
        kpis = kpi_mod.compute(scenario, frames)
        result = _finish(assembly, out_dir, setup_s, sim_s, frames, kpis)
    finally:
        assembly.discard_ledger()
    if report:
        from twin.report import write_report

        write_report(out_dir, net=assembly.net)
    return result


def _finish(assembly: world_mod.Assembly, out_dir: Path, setup_s: float, sim_s: float,
            frames: dict[str, pd.DataFrame], kpis: dict) -> RunResult:
    scenario = assembly.scenario
    info = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "start": scenario.start_ts.isoformat(),
        "steps": scenario.n_steps,
        "step_s": scenario.step_s,
        "setup_s": round(setup_s, 3),
        "wall_time_s": round(sim_s, 3),
        "steps_per_s": round(scenario.n_steps / sim_s, 2) if sim_s > 0 else None,
        "simulator_s": {k: round(v, 3) for k, v in assembly.timing.seconds.items()},
        # whether a forked process sealed the ledger's blocks (None: no ledger)
        "ledger_process": None if assembly.ledger is None else assembly.ledger.separate_process,
        # the event loop mosaik ran on ("uvloop" or "asyncio"): it sets mosaik's time per step
        "event_loop": type(assembly.world.loop).__module__.partition(".")[0],
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in VERSIONED},
    }
    write_run_folder(out_dir, scenario, kpis, frames, info, ledger_dir=assembly.ledger_dir)
    return RunResult(out_dir, kpis, frames, info)


def write_run_folder(out_dir: Path, scenario: Scenario, kpis: dict,
                     frames: dict[str, pd.DataFrame], info: dict,
                     ledger_dir: Path | None = None) -> None:
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        (partial / "timeseries").mkdir(parents=True)
        (partial / "scenario.yaml").write_text(to_yaml(scenario), encoding="utf-8")
        for name, df in frames.items():
            df.to_parquet(partial / "timeseries" / f"{name}.parquet")
        hil_steps = hil_results.step_table(frames)  # lag and stale devices per step
        if hil_steps is not None:
            hil_steps.to_parquet(partial / "hil.parquet")
        (partial / "kpis.json").write_text(json.dumps(kpis, indent=2, allow_nan=True) + "\n")
        (partial / "run.json").write_text(json.dumps(info, indent=2) + "\n")
        if ledger_dir is not None:
            for name in (LEDGER_FILE, PUBLIC_KEY_FILE):
                shutil.move(str(ledger_dir / name), str(partial / name))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        partial.rename(out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def hil_main(argv: list[str]) -> int:
    """``twin hil``: run a scenario with devices in the loop in real time, or a device stub.

    ::

        twin hil SCENARIO [--rt-factor F] [--rt-strict] [--out DIR] [--force] [--quiet]
                 [--set PATH=VALUE ...]
        twin hil stub pv|battery|evse ... | twin hil csms ...   (components.hil.cli)

    Exit codes as ``twin run``: 0 success, 2 bad input, 1 a failure during the run.
    """
    import argparse
    import sys

    from components.hil.cli import hil_main as stub_main

    if not argv or argv[0] in ("stub", "csms"):
        return stub_main(argv)
    p = argparse.ArgumentParser(
        prog="twin hil", description="Run a scenario whose 'hil' section puts devices in the "
        "loop, in real time (mosaik rt_factor). Device stubs: twin hil stub pv|battery|evse, "
        "twin hil csms.")
    p.add_argument("scenario", type=Path, help="scenario YAML with a 'hil' section")
    p.add_argument("--rt-factor", type=float, help="wall seconds per simulated second "
                   "(overrides hil.rt_factor; 1 = real time)")
    p.add_argument("--rt-strict", action="store_true",
                   help="fail when the run falls behind real time")
    p.add_argument("--out", type=Path, help="run folder (default: runs/<name>-seed<seed>-<time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override any scenario field (repeatable)")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    from twin.scenario import load_scenario
    from twin.world import SimulationError

    overrides = list(args.overrides)
    if args.rt_factor is not None:
        overrides.append(f"hil.rt_factor={args.rt_factor}")
    if args.rt_strict:
        overrides.append("hil.rt_strict=true")
    try:
        if args.rt_factor is not None and not args.rt_factor > 0:
            raise ScenarioError([f"--rt-factor must be > 0, got {args.rt_factor}"])
        scenario = load_scenario(args.scenario, overrides)
        if scenario.hil is None:
            raise ScenarioError([(f"{args.scenario}: has no 'hil' section (use twin run for "
                                  "a fully simulated zone)")])
        result = run(scenario, out=args.out, progress=not args.quiet, force=args.force)
    except ScenarioError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except SimulationError as exc:
        print(f"error: run failed: {exc}", file=sys.stderr)
        return 1
    k = result.kpis
    print(f"{scenario.name}: {scenario.n_steps} steps of {scenario.step_s} s in "
          f"{result.info['wall_time_s']:.1f} s wall (rt factor {scenario.hil.rt_factor}); "
          f"max lag {k.get('hil_max_lag_s', 0.0):.3f} s, stale steps "
          f"{k.get('hil_stale_steps', 0)}, slowest exchange {k.get('hil_rtt_max_ms', 0.0):.1f} ms")
    print(f"run folder: {result.out_dir}")
    return 0
