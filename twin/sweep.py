"""Parameter sweeps: many runs of one base scenario, executed on dask.distributed.

A sweep file names a base scenario and the fields to vary, by the same field paths as
``twin run --set``::

    name: pv-vs-fleet
    base: sdg_zone.yaml              # relative to this file; default: the default zone
    set: {days: 1}                   # fixed overrides of every run
    grid:                            # full factorial
      pv.losses_pct: [10, 14, 18]
    points:                          # explicit combinations
      - {ev.fleet_size: 600, ev.v2g_willing_share: 0.2}
      - {ev.fleet_size: 1800, ev.v2g_willing_share: 0.8}
    lhs:                             # Latin-hypercube samples
      samples: 8
      seed: 0
      ranges:
        pv.plants.0.kwp: [1200, 3600]
        ev.consumption_factor: {low: 0.9, high: 1.2}
        factories.0.lines.0.count: {low: 1, high: 4, integer: true}
    repeats: 2                       # seeds base seed, base seed + 1; or `seeds: [1, 5, 9]`

The blocks that are given (``grid``, ``points``, ``lhs``) combine by cross product; each
combination runs once per seed. A run's id is a hash of its resolved scenario (seed included),
so re-running a sweep skips every run whose folder ``runs/<id>/`` holds ``kpis.json``, and a
changed base scenario makes new runs instead of reusing stale ones.

Runs execute on a ``LocalCluster`` of worker processes, or on an existing scheduler
(``--scheduler tcp://host:8786``) whose workers see the output folder at the same path. A failing
run is recorded with its error and does not stop the sweep. ``sweep.parquet`` holds one row per
run: parameters, seed, status, error and KPIs; ``sweep.html`` plots each KPI against each varied
parameter.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import math
import os
import sys
import time as wallclock
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, field_validator, model_validator

from components.base import StrictModel
from twin.scenario import (
    ScenarioError,
    check_buses,
    describe_errors,
    load_scenario,
    read_yaml,
)

RUNS_FOLDER = "runs"
TABLE_FILE = "sweep.parquet"
# Columns of sweep.parquet besides parameters and KPIs, in this order.
META_COLUMNS = ["run", "run_id", "seed", "status", "executed", "error", "wall_time_s", "worker",
                "run_dir"]
# At most this many problem lines are printed for a bad sweep; the rest are counted.
MAX_PROBLEMS = 20


# -- the sweep file --------------------------------------------------------------------------

class Range(StrictModel):
    """A sampled interval of one field."""

    low: float = Field(..., description="lower bound [unit of the field]")
    high: float = Field(..., description="upper bound [unit of the field]")
    integer: bool = Field(False, description="round samples to whole numbers")
    log: bool = Field(False, description="sample uniformly in log space (low > 0)")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.high > self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError("log sampling needs low > 0")
        if self.integer and math.floor(self.high) < math.ceil(self.low):
            raise ValueError(f"[{self.low}, {self.high}] holds no whole number")
        return self


class LHSConfig(StrictModel):
    """Latin-hypercube samples over continuous ranges."""

    samples: int = Field(..., gt=0, description="number of samples")
    seed: int = Field(0, ge=0, description="seed of the sampling")
    ranges: dict[str, Range] = Field(..., description="field path -> [low, high] or "
                                                      "{low, high, integer, log}")

    @field_validator("ranges", mode="before")
    @classmethod
    def _shorthand(cls, ranges: Any) -> Any:
        if isinstance(ranges, dict):
            return {k: ({"low": v[0], "high": v[1]}
                        if isinstance(v, (list, tuple)) and len(v) == 2 else v)
                    for k, v in ranges.items()}
        return ranges

    @field_validator("ranges")
    @classmethod
    def _some(cls, ranges: dict[str, Range]) -> dict[str, Range]:
        if not ranges:
            raise ValueError("no field to sample; give at least one `path: [low, high]`")
        return ranges


class SweepFile(StrictModel):
    """What a sweep file may hold."""

    name: str | None = Field(None, min_length=1, pattern=r"^[^/\\]+$",
                             description="sweep name (no slashes); default: file stem")
    description: str = ""
    base: str | None = Field(None, description="base scenario, relative to the sweep file; "
                                               "default: the default zone")
    set: dict[str, Any] = Field(default_factory=dict,
                                description="overrides applied to every run")
    grid: dict[str, list[Any]] | None = Field(None, description="field path -> values; "
                                                                "all combinations run")
    points: list[dict[str, Any]] | None = Field(None, description="explicit combinations")
    lhs: LHSConfig | None = None
    repeats: int | None = Field(None, ge=1, description="seeds per combination: base seed, "
                                                        "base seed + 1, ...")
    seeds: list[int] | None = Field(None, min_length=1, description="explicit seeds")

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, grid: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if grid is None:
            return grid
        if not grid:
            raise ValueError("no field to vary; give at least one `path: [values]`")
        problems = []
        for path, values in grid.items():
            if not values:
                problems.append(f"{path}: empty list of values (give at least one)")
            elif len({json.dumps(v, sort_keys=True) for v in values}) < len(values):
                problems.append(f"{path}: a value is repeated")
        if problems:
            raise ValueError("; ".join(problems))
        return grid

    @field_validator("points")
    @classmethod
    def _points(cls, points: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if points is None:
            return points
        if not points:
            raise ValueError("empty list of points (give at least one mapping path: value)")
        empty = [str(i) for i, p in enumerate(points) if not p]
        if empty:
            raise ValueError(f"point(s) {', '.join(empty)} set no field")
        return points

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None:
            if any(s < 0 for s in seeds):
                raise ValueError("seeds must be >= 0")
            if len(set(seeds)) < len(seeds):
                raise ValueError("a seed is repeated")
        return seeds

    @model_validator(mode="after")
    def _consistent(self) -> SweepFile:
        if self.grid is None and self.points is None and self.lhs is None:
            raise ValueError("nothing to vary: give `grid`, `points` or `lhs` (or several; "
                             "they combine by cross product)")
        if self.repeats is not None and self.seeds is not None:
            raise ValueError("give either `repeats` or `seeds`, not both")
        blocks = {"set": set(self.set), "grid": set(self.grid or ()),
                  "lhs": set(self.lhs.ranges) if self.lhs else set(),
                  "points": {k for p in self.points or () for k in p}}
        for name, paths in blocks.items():
            if "seed" in paths:
                raise ValueError(f"{name}: vary the seed with `repeats` or `seeds`, "
                                 "not as a field")
        for (a, pa), (b, pb) in itertools.combinations(blocks.items(), 2):
            both = sorted(pa & pb)
            if both:
                raise ValueError(f"{', '.join(both)} set in both `{a}` and `{b}`; "
                                 "set each field in one place")
        return self


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its varied values, seed and resolved scenario."""

    index: int
    run_id: str
    params: dict[str, Any]
    seed: int
    scenario: dict[str, Any] = field(repr=False)


@dataclass
class Sweep:
    """A validated sweep: its definition and every run it makes, in design order."""

    name: str
    path: Path
    base: Path | None
    definition: SweepFile
    parameters: list[str]
    runs: list[RunSpec]


@dataclass
class SweepResult:
    """What a sweep invocation did."""

    out_dir: Path
    table: pd.DataFrame
    executed: int
    skipped: int
    failed: int
    wall_time_s: float


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep file, expand its design and validate every run's scenario.

    Raises
    ------
    ScenarioError
        One line per problem: unknown or bad fields of the sweep file, field paths that do not
        exist in the scenario, values the scenario rejects, runs that coincide.
    """
    path = Path(path)
    data = read_yaml(path)
    try:
        spec = SweepFile.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError([f"{path}: {p.replace('(scenario): ', '')}"
                             for p in describe_errors(exc, SweepFile)]) from None
    base = None
    if spec.base is not None:
        base = Path(spec.base).expanduser()
        base = base if base.is_absolute() else (path.parent / base).resolve()
    name = spec.name or path.stem

    try:
        base_data = read_yaml(base if base is not None else _default_scenario())
    except ScenarioError as exc:
        raise ScenarioError([f"{path}: base: {p}" for p in exc.problems]) from None
    _check_paths(path, base_data, spec)
    try:
        base_scenario = load_scenario(base, spec.set, check_grid=False)
    except ScenarioError as exc:
        raise ScenarioError([f"{path}: set: {p}" for p in exc.problems]) from None
    seeds = spec.seeds or [base_scenario.seed + i for i in range(spec.repeats or 1)]
    combos = design(spec)
    parameters = list(dict.fromkeys(k for c in combos for k in c))

    runs: list[RunSpec] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for combo, seed in itertools.product(combos, seeds):
        index = len(runs)
        where = _describe(combo, seed)
        try:
            scenario = load_scenario(base, {**spec.set, **combo, "seed": seed}, check_grid=False)
            check_buses(scenario)  # each distinct grid is built once per process
        except ScenarioError as exc:
            problems.extend(f"{path}: run with {where}: {p}" for p in exc.problems)
            continue
        resolved = scenario.model_dump(mode="json")
        run_id = run_hash(resolved)
        if run_id in seen:
            other = runs[seen[run_id]]
            problems.append(f"{path}: run with {where} is the same scenario as the run with "
                            f"{_describe(other.params, other.seed)}")
            continue
        seen[run_id] = index
        runs.append(RunSpec(index, run_id, combo, seed, resolved))
    if problems:
        raise ScenarioError(_capped(list(dict.fromkeys(problems))))
    return Sweep(name, path, base, spec, parameters, runs)


def design(spec: SweepFile) -> list[dict[str, Any]]:
    """The combinations of varied values: the cross product of the blocks that are given."""
    blocks: list[list[dict[str, Any]]] = []
    if spec.grid:
        keys = list(spec.grid)
        blocks.append([dict(zip(keys, values))
                       for values in itertools.product(*(spec.grid[k] for k in keys))])
    if spec.points:
        blocks.append([dict(p) for p in spec.points])
    if spec.lhs:
        blocks.append(latin_hypercube(spec.lhs))
    return [{k: v for part in parts for k, v in part.items()}
            for parts in itertools.product(*blocks)]


def latin_hypercube(cfg: LHSConfig) -> list[dict[str, float | int]]:
    """``cfg.samples`` points with exactly one sample in each of ``samples`` equal strata of
    every range (McKay, Beckman & Conover 1979, doi:10.1080/00401706.1979.10489755).

    An integer range samples ``[ceil(low) - 0.5, floor(high) + 0.5)`` and rounds, so every whole
    number is equally likely. Other values are rounded to 6 significant digits so that they
    read well and hash stably.
    """
    rng = np.random.default_rng(cfg.seed)
    n = cfg.samples
    points: list[dict[str, float | int]] = [{} for _ in range(n)]
    for path, r in cfg.ranges.items():
        u = (rng.permutation(n) + rng.random(n)) / n
        low, high = (math.ceil(r.low) - 0.5, math.floor(r.high) + 0.5) if r.integer \
            else (r.low, r.high)
        if r.log:
            values = np.exp(np.log(low) + u * (np.log(high) - np.log(low)))
        else:
            values = low + u * (high - low)
        for point, v in zip(points, values):
            if r.integer:
                point[path] = int(np.clip(np.floor(v + 0.5), math.ceil(r.low),
                                          math.floor(r.high)))
            else:
                point[path] = float(f"{v:.6g}")
    return points


def run_hash(resolved_scenario: dict[str, Any]) -> str:
    """A stable id of a resolved scenario (seed included): 12 hex digits of its SHA-256."""
    text = json.dumps(resolved_scenario, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _check_paths(path: Path, data: dict[str, Any], spec: SweepFile) -> None:
    """Every field path of the sweep must exist in the base scenario, named by its block."""
    from twin.scenario import apply_overrides

    blocks: dict[str, dict[str, Any]] = {
        "set": spec.set,
        "grid": {k: v[0] for k, v in (spec.grid or {}).items()},
        "lhs.ranges": {k: r.low for k, r in (spec.lhs.ranges if spec.lhs else {}).items()},
    }
    for i, point in enumerate(spec.points or ()):
        blocks[f"points.{i}"] = point
    problems = []
    for block, overrides in blocks.items():
        for key, value in overrides.items():
            try:
                apply_overrides(copy.deepcopy(data), {key: value})
            except ScenarioError as exc:
                problems.extend(f"{path}: {block}: {p}" for p in exc.problems)
    if problems:
        raise ScenarioError(problems)


def _default_scenario() -> Path:
    from twin.scenario import DEFAULT_SCENARIO

    return DEFAULT_SCENARIO


def _describe(params: dict[str, Any], seed: int) -> str:
    return ", ".join([f"{k}={_short(v)}" for k, v in params.items()] + [f"seed={seed}"])


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return problems[:MAX_PROBLEMS] + [f"... and {len(problems) - MAX_PROBLEMS} more problem(s)"]


# -- one run (executes on a dask worker) -----------------------------------------------------

def execute_run(scenario: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """Run one resolved scenario into ``run_dir`` and write its report; never raises.

    A folder that already holds ``kpis.json`` is a finished run and is not run again (a task
    can be sent twice when its first worker died after writing it).

    Returns
    -------
    dict
        ``status`` ("ok" or "failed"), ``executed``, ``error`` (empty when none), ``kpis``,
        ``wall_time_s`` (simulation wall time [s]) and ``worker`` (host:pid).
    """
    from twin.run import run
    from twin.scenario import validate
    from twin.world import SimulationError

    folder = Path(run_dir)
    worker = f"{os.uname().nodename}:{os.getpid()}"
    if (folder / "kpis.json").is_file():
        return {**finished_row(folder), "error": ensure_report(folder), "worker": worker}
    try:
        # a worker is one core of the sweep: its runs seal their ledgers themselves
        result = run(validate(scenario), out=folder, progress=False, force=True,
                     ledger_process=False)
    except ScenarioError as exc:
        return _failed(f"scenario: {'; '.join(exc.problems)}", worker)
    except SimulationError as exc:
        return _failed(str(exc), worker)
    except Exception as exc:  # noqa: BLE001 - a run must not stop the sweep; the row says why
        return _failed(f"{type(exc).__name__}: {exc}", worker)
    return {"status": "ok", "executed": True, "error": ensure_report(folder),
            "kpis": result.kpis, "wall_time_s": result.info.get("wall_time_s"),
            "worker": worker}


def ensure_report(run_dir: Path) -> str:
    """Write ``report.html`` into a finished run folder that lacks one (a worker may have died
    in between); return "" or why it could not be written (the run itself stays valid)."""
    from twin.report import REPORT_FILE, write_report

    if (run_dir / REPORT_FILE).is_file():
        return ""
    try:
        write_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - the run stays finished; the row says why
        return f"report: {type(exc).__name__}: {exc}"
    return ""


def finished_row(run_dir: Path) -> dict[str, Any]:
    """The result of a run folder that was finished earlier."""
    kpis = json.loads((run_dir / "kpis.json").read_text())
    info_file = run_dir / "run.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    return {"status": "ok", "executed": False, "error": "", "kpis": kpis,
            "wall_time_s": info.get("wall_time_s"), "worker": ""}


def _failed(error: str, worker: str) -> dict[str, Any]:
    return {"status": "failed", "executed": True, "error": error, "kpis": {},
            "wall_time_s": None, "worker": worker}


# -- the sweep (client side) -----------------------------------------------------------------

def run_sweep(sweep: Sweep, out: str | Path, client: Any, progress: bool = True,
              save_every_s: float = 10.0) -> SweepResult:
    """Execute every run of ``sweep`` that has not finished, on the workers of ``client``.

    Parameters
    ----------
    sweep : from :func:`load_sweep`.
    out : sweep folder: ``runs/<id>/`` per run, ``sweep.parquet``, ``sweep.html``.
    client : a connected ``distributed.Client``; may be None when every run has finished.
    progress : show a progress bar of runs done.
    save_every_s : rewrite ``sweep.parquet`` at most this often while runs finish [s].
    """
    from distributed import as_completed
    from tqdm import tqdm

    from twin.report import write_sweep_report

    out_dir = Path(out)
    (out_dir / RUNS_FOLDER).mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.yaml").write_text(sweep.path.read_text(encoding="utf-8"),
                                        encoding="utf-8")
    t0 = wallclock.perf_counter()
    todo = pending(sweep, out_dir)
    waiting = {spec.index for spec in todo}
    results = {}
    for spec in sweep.runs:
        if spec.index not in waiting:
            folder = out_dir / RUNS_FOLDER / spec.run_id
            results[spec.index] = {**finished_row(folder), "error": ensure_report(folder)}
    if todo and client is None:
        raise ValueError(f"{len(todo)} run(s) to execute and no client given")

    # A per-invocation token keeps keys apart from other clients of a shared scheduler.
    token = uuid.uuid4().hex[:8]
    futures = {
        client.submit(execute_run, spec.scenario, str((out_dir / RUNS_FOLDER / spec.run_id)
                                                      .resolve()),
                      key=f"twin-run-{spec.run_id}-{token}", retries=0): spec
        for spec in todo
    }
    if not futures:
        table = write_table(out_dir, sweep, results)
        write_sweep_report(out_dir)
        return SweepResult(out_dir, table, 0, len(sweep.runs), 0, wallclock.perf_counter() - t0)
    bar = tqdm(total=len(sweep.runs), initial=len(results), unit="run", desc=sweep.name,
               disable=not progress, dynamic_ncols=True)
    failed = 0
    last_save = wallclock.monotonic()
    try:
        for future in as_completed(futures):
            spec = futures.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - never returned: worker lost, cancelled
                result = _failed(f"{type(exc).__name__}: {exc}", "")
            finally:
                future.release()
            # Executed in this invocation, also when a resent task found the folder finished
            # by a worker that died before its result was collected.
            results[spec.index] = {**result, "executed": True}
            failed += result["status"] != "ok"
            bar.update(1)
            bar.set_postfix(failed=failed, refresh=False)
            if wallclock.monotonic() - last_save > save_every_s:
                write_table(out_dir, sweep, results)
                last_save = wallclock.monotonic()
    finally:
        bar.close()
        for future in futures:
            future.cancel()
        table = write_table(out_dir, sweep, results)
    write_sweep_report(out_dir)
    executed = sum(1 for r in results.values() if r.get("executed"))
    return SweepResult(out_dir, table, executed, len(sweep.runs) - len(todo), failed,
                       wallclock.perf_counter() - t0)


def pending(sweep: Sweep, out_dir: Path) -> list[RunSpec]:
    """The runs of ``sweep`` whose folder under ``out_dir`` holds no ``kpis.json`` yet."""
    return [spec for spec in sweep.runs
            if not (Path(out_dir) / RUNS_FOLDER / spec.run_id / "kpis.json").is_file()]


def sweep_table(sweep: Sweep, results: dict[int, dict[str, Any]]) -> pd.DataFrame:
    """One row per run that has a result, in design order: meta columns, parameters, KPIs."""
    rows = []
    for spec in sweep.runs:
        result = results.get(spec.index)
        if result is None:
            continue
        row: dict[str, Any] = {
            "run": spec.index, "run_id": spec.run_id, "seed": spec.seed,
            "status": result["status"], "executed": bool(result.get("executed")),
            "error": result.get("error", ""),
            "wall_time_s": _float(result.get("wall_time_s")),
            "worker": result.get("worker", ""),
            "run_dir": f"{RUNS_FOLDER}/{spec.run_id}",
        }
        for p in sweep.parameters:
            row[p] = _cell(spec.params.get(p))
        row.update(result.get("kpis") or {})
        rows.append(row)
    table = pd.DataFrame(rows)
    for p in sweep.parameters:
        # One Parquet type per column: a parameter given as numbers and as text becomes text.
        if p in table and table[p].map(lambda v: isinstance(v, str)).any() \
                and not table[p].map(lambda v: isinstance(v, str) or v is None).all():
            table[p] = table[p].map(lambda v: v if v is None or isinstance(v, str)
                                    else json.dumps(v))
    kpis = [c for c in table.columns if c not in META_COLUMNS and c not in sweep.parameters]
    for column in META_COLUMNS + sweep.parameters:
        if column not in table:
            table[column] = pd.Series(dtype=object)
    table = table[META_COLUMNS + sweep.parameters + kpis]
    table.attrs = {"sweep": sweep.name, "description": sweep.definition.description,
                   "parameters": list(sweep.parameters), "kpis": kpis}
    return table


def write_table(out_dir: Path, sweep: Sweep, results: dict[int, dict[str, Any]]) -> pd.DataFrame:
    """Write ``sweep.parquet`` atomically and return it."""
    table = sweep_table(sweep, results)
    partial = out_dir / (TABLE_FILE + ".partial")
    table.to_parquet(partial, index=False)
    partial.replace(out_dir / TABLE_FILE)
    return table


def read_table(sweep_dir: str | Path) -> pd.DataFrame:
    """``sweep.parquet`` of a sweep folder; ``attrs`` name its parameters and KPIs."""
    table = pd.read_parquet(Path(sweep_dir) / TABLE_FILE)
    if "parameters" not in table.attrs:
        params = [c for c in table.columns if c not in META_COLUMNS and "." in c]
        table.attrs = {"sweep": Path(sweep_dir).name, "parameters": params,
                       "kpis": [c for c in table.columns
                                if c not in META_COLUMNS and c not in params]}
    return table


def _float(value: Any) -> float:
    return float(value) if value is not None else float("nan")


def _cell(value: Any) -> Any:
    """Scalars stay as they are; lists and mappings become JSON text (one Parquet type)."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


# -- the cluster -----------------------------------------------------------------------------

class ClusterError(Exception):
    """The scheduler cannot be reached or has no workers."""


def connect(scheduler: str | None, workers: int | None, timeout_s: float) -> tuple[Any, Any]:
    """A ``(client, cluster)`` pair: a LocalCluster of ``workers`` processes (cluster is then
    closed by the caller), or a client of the scheduler at ``scheduler`` (cluster is None).

    Raises
    ------
    ClusterError
        The scheduler did not answer within ``timeout_s``, or no worker joined it in that time.
    """
    import logging

    from distributed import Client, LocalCluster

    if scheduler is None:
        n = workers or os.cpu_count() or 1
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address="127.0.0.1:0",
                               silence_logs=logging.ERROR)
        return Client(cluster), cluster
    address = scheduler if "://" in scheduler else f"tcp://{scheduler}"
    try:
        client = Client(address, timeout=f"{timeout_s}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"--scheduler {scheduler}: no scheduler answered within "
                           f"{timeout_s:g} s ({type(exc).__name__}: {exc}); start one with "
                           "`dask scheduler` and give its address (tcp://HOST:8786)") from None
    try:
        client.wait_for_workers(workers or 1, timeout=timeout_s)
    except TimeoutError:
        have = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        client.close()
        raise ClusterError(f"--scheduler {scheduler}: {have} worker(s) joined within "
                           f"{timeout_s:g} s, {workers or 1} needed; start workers with "
                           f"`dask worker {address}`") from None
    return client, None


# -- command line ----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="twin sweep",
        description="Run a parameter sweep of a scenario on dask.distributed: a local cluster "
                    "of worker processes, or an existing scheduler.")
    p.add_argument("sweep", type=Path, help="sweep YAML file")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="address of a running dask scheduler, e.g. tcp://10.0.0.5:8786 "
                        "(default: start a local cluster)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes (default: CPU count); with --scheduler, "
                        "wait for N workers before starting (default 1)")
    p.add_argument("--out", type=Path,
                   help="sweep folder (default: sweeps/<sweep name>); re-using it skips "
                        "finished runs")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for the scheduler and its workers (default 30)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def sweep_main(argv: list[str] | None = None) -> int:
    """``twin sweep``: exit 0 when every run succeeded, 1 when a run failed (the sweep still
    completes and records it), 2 on bad input (sweep file, arguments, scheduler)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    problems = []
    if args.workers is not None and args.workers < 1:
        problems.append("--workers: must be >= 1")
    if not args.timeout > 0:
        problems.append("--timeout: must be > 0")
    if problems:
        return _bad(problems)
    try:
        sweep = load_sweep(args.sweep)
    except ScenarioError as exc:
        return _bad(exc.problems)
    out_dir = args.out if args.out is not None else Path("sweeps") / sweep.name
    if out_dir.exists() and not out_dir.is_dir():
        return _bad([f"--out: {out_dir} exists and is not a folder"])
    todo = pending(sweep, out_dir)
    client = cluster = None
    if todo:  # a sweep whose runs have all finished needs no cluster
        try:
            client, cluster = connect(args.scheduler, args.workers, args.timeout)
        except ClusterError as exc:
            return _bad([str(exc)])
    try:
        if not args.quiet:
            where = args.scheduler or f"a local cluster of " \
                f"{len(client.scheduler_info()['workers']) if client else 0} worker process(es)"
            print(f"{sweep.name}: {len(sweep.runs)} runs, {len(todo)} to execute"
                  + (f" on {where}" if todo else ""), file=sys.stderr)
        result = run_sweep(sweep, out_dir, client, progress=not args.quiet)
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept and skipped next time", file=sys.stderr)
        return 130
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    print(f"{sweep.name}: {len(sweep.runs)} runs: {result.executed} executed, "
          f"{result.skipped} already finished, {result.failed} failed "
          f"({result.wall_time_s:.1f} s)")
    for row in result.table[result.table["status"] != "ok"].itertuples():
        print(f"failed: run {row.run} ({row.run_id}): {row.error}", file=sys.stderr)
    print(f"table: {out_dir / TABLE_FILE}\nreport: {out_dir / 'sweep.html'}")
    return 1 if result.failed else 0


def _bad(problems: list[str]) -> int:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(sweep_main())
