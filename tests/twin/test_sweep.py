"""Parameter sweeps: the design, run ids, bad input, failures, and a real dask cluster that
loses a worker mid-sweep."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from distributed import Client, LocalCluster
from zones import TINY

from twin.run import run
from twin.scenario import load_scenario
from twin.sweep import (
    LHSConfig,
    SweepFile,
    design,
    latin_hypercube,
    load_sweep,
    read_table,
    run_sweep,
    sweep_main,
)

DASK = str(Path(sys.executable).parent / "dask")


@pytest.fixture
def base(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def write_sweep(folder: Path, body: dict, name: str = "sweep.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({"base": "tiny.yaml", **body}, sort_keys=False))
    return path


# -- the design ------------------------------------------------------------------------------

def test_blocks_combine_by_cross_product():
    spec = SweepFile.model_validate({
        "grid": {"pv.losses_pct": [10, 14, 18], "ev.fleet_size": [30, 60]},
        "points": [{"ev.v2g_willing_share": 0.2}, {"ev.v2g_willing_share": 0.8}],
        "lhs": {"samples": 4, "ranges": {"pv.plants.0.kwp": [400, 1600]}},
    })
    combos = design(spec)
    assert len(combos) == 3 * 2 * 2 * 4
    assert all(set(c) == {"pv.losses_pct", "ev.fleet_size", "ev.v2g_willing_share",
                          "pv.plants.0.kwp"} for c in combos)
    grid = {(c["pv.losses_pct"], c["ev.fleet_size"]) for c in combos}
    assert grid == {(a, b) for a in (10, 14, 18) for b in (30, 60)}
    assert len({json.dumps(c, sort_keys=True) for c in combos}) == len(combos)


def test_latin_hypercube_puts_one_sample_in_each_stratum():
    cfg = LHSConfig.model_validate({"samples": 50, "seed": 4, "ranges": {
        "a": [10, 20],
        "b": {"low": 1, "high": 1000, "log": True},
        "c": {"low": 0, "high": 49, "integer": True},
    }})
    points = latin_hypercube(cfg)
    a = np.array([p["a"] for p in points])
    b = np.array([p["b"] for p in points])
    c = np.array([p["c"] for p in points])
    assert sorted(np.floor((a - 10) / 10 * 50).astype(int)) == list(range(50))
    assert sorted(np.floor(np.log10(b) / 3 * 50).astype(int)) == list(range(50))
    assert all(isinstance(p["c"], int) for p in points) and c.min() >= 0 and c.max() <= 49
    assert sorted(c) == list(range(50))  # 50 whole numbers, 50 strata: each number once
    assert latin_hypercube(cfg) == points  # seeded


def test_run_ids_are_stable_and_follow_the_resolved_scenario(tmp_path, base):
    path = write_sweep(tmp_path, {"grid": {"pv.losses_pct": [10, 14]}, "repeats": 2})
    first, again = load_sweep(path), load_sweep(path)
    ids = [r.run_id for r in first.runs]
    assert ids == [r.run_id for r in again.runs]
    assert len(set(ids)) == 4
    assert [(r.params["pv.losses_pct"], r.seed) for r in first.runs] == [
        (10, 7), (10, 8), (14, 7), (14, 8)]
    # Another way to say the same scenario is the same run; a changed base is a new one.
    same = write_sweep(tmp_path, {"grid": {"pv.losses_pct": [10.0, 14.0]}, "seeds": [7, 8]},
                       name="same.yaml")
    assert [r.run_id for r in load_sweep(same).runs] == ids
    base.write_text(yaml.safe_dump({**TINY, "days": 2}))
    assert not set(ids) & {r.run_id for r in load_sweep(path).runs}


# -- bad input -------------------------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("body, expected", [
    ({"grid": {"pv.losses_pcx": [10, 12]}},
     r"grid: pv.losses_pcx: no such field in the scenario \(allowed here: .*losses_pct"),
    ({"points": [{"ev.fleet_size": 30, "ev.nope": 1}]},
     r"points.0: ev.nope: no such field in the scenario"),
    ({"lhs": {"samples": 3, "ranges": {"pv.plants.7.kwp": [1, 2]}}},
     r"lhs.ranges: pv.plants.7: no such list item \(the list has 1 item\(s\)\)"),
    ({"grid": {"pv.losses_pct": []}}, r"grid: pv.losses_pct: empty list of values"),
    ({"points": []}, r"points: empty list of points"),
    ({"lhs": {"samples": 4, "ranges": {}}}, r"lhs.ranges: no field to sample"),
    ({"name": "nothing"}, r"nothing to vary: give `grid`, `points` or `lhs`"),
    ({"grid": {"seed": [1, 2]}}, r"grid: vary the seed with `repeats` or `seeds`"),
    ({"grid": {"pv.losses_pct": [10, -5]}},
     (r"run with pv.losses_pct=-5, seed=7: pv.losses_pct: Input should be greater than or "
      r"equal to 0")),
    ({"grid": {"factories.0.bus": [5, 99]}},
     r"run with factories.0.bus=99, seed=7: factories.0.bus: "),
    ({"grid": {"pv.losses_pct": [10]}, "lhs": {"samples": 2, "ranges": {
        "pv.losses_pct": [5, 9]}}}, r"pv.losses_pct set in both `grid` and `lhs`"),
])
def test_bad_sweep_files_exit_2_naming_the_problem(tmp_path, base, capsys, body, expected):
    path = write_sweep(tmp_path, body)
    assert sweep_main([str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err), err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unreachable_scheduler_exits_2(tmp_path, base, capsys):
    path = write_sweep(tmp_path, {"grid": {"pv.losses_pct": [10]}})
    address = f"tcp://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    code = sweep_main([str(path), "--scheduler", address, "--timeout", "2", "--quiet"])
    assert code == 2
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    assert f"--scheduler {address}: no scheduler answered within 2 s" in err
    assert "dask scheduler" in err


def test_missing_sweep_file_exits_2(tmp_path, capsys):
    assert sweep_main([str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: no such file" in capsys.readouterr().err


def test_missing_base_and_bad_fixed_values_exit_2(tmp_path, base, capsys):
    path = write_sweep(tmp_path, {"base": "elsewhere.yaml", "grid": {"days": [1]}})
    assert sweep_main([str(path)]) == 2
    assert re.search(r"sweep.yaml: base: .*elsewhere.yaml: no such file",
                     capsys.readouterr().err)
    path = write_sweep(tmp_path, {"set": {"days": -1}, "grid": {"pv.losses_pct": [10]}})
    assert sweep_main([str(path)]) == 2
    assert "sweep.yaml: set: days: Input should be greater than 0" in capsys.readouterr().err


# -- a local cluster: failures are recorded, finished runs skipped ---------------------------

def test_failing_run_is_recorded_and_retried_without_stopping_the_sweep(tmp_path, base, capsys):
    # A 30-fold background load makes case33bw's power flow collapse at set-up.
    path = write_sweep(tmp_path, {"set": {"days": 0.25},
                                  "points": [{"grid.background_scale": 1.0},
                                             {"grid.background_scale": 30.0}]})
    out = tmp_path / "out"
    assert sweep_main([str(path), "--out", str(out), "--workers", "1", "--quiet"]) == 1
    table = read_table(out)
    assert list(table["status"]) == ["ok", "failed"]
    ok, failed = table.iloc[0], table.iloc[1]
    assert "power flow does not converge" in failed["error"]
    assert np.isnan(failed["grid_import_mwh"])
    assert ok["error"] == "" and ok["grid_import_mwh"] > 0
    assert (out / ok["run_dir"] / "report.html").is_file()
    assert not (out / failed["run_dir"]).exists()
    assert (out / "sweep.html").is_file()
    capsys.readouterr()

    # Again, through the Python API on an in-process cluster: the finished run is skipped,
    # the failed one is tried again (and fails again).
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address="127.0.0.1:0") as local, Client(local) as client:
        result = run_sweep(load_sweep(path), out, client, progress=False)
    assert (result.executed, result.skipped, result.failed) == (1, 1, 1)
    assert list(result.table["executed"]) == [False, True]
    assert read_table(out)["error"].iloc[1] == failed["error"]


# -- a real scheduler and two workers; one is killed mid-sweep -------------------------------

class Processes:
    """Processes a test starts; all killed at the end, whatever happens."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                                start_new_session=True)
        proc.log = log
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.log.close()

    def kill_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)


@pytest.fixture
def cluster(tmp_path, request):
    """A dask scheduler and two single-threaded workers (no nanny) on 127.0.0.1."""
    procs = Processes(tmp_path)
    request.addfinalizer(procs.kill_all)
    scheduler_file = tmp_path / "scheduler.json"
    procs.start("scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0",
                              "--no-dashboard", "--scheduler-file", str(scheduler_file)])
    deadline = time.monotonic() + 60
    while not scheduler_file.is_file() or not scheduler_file.read_text().strip():
        assert time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
        time.sleep(0.2)
    time.sleep(0.2)
    address = json.loads(scheduler_file.read_text())["address"]
    for name in ("worker-a", "worker-b"):
        procs.start(name, [DASK, "worker", address, "--no-nanny", "--nthreads", "1",
                           "--host", "127.0.0.1", "--name", name, "--no-dashboard",
                           "--death-timeout", "60"])
    return address, procs


def test_sweep_survives_a_killed_worker_and_reruns_nothing(tmp_path, base, cluster):
    address, procs = cluster
    kwps = [400, 800, 1200, 1600]
    path = write_sweep(tmp_path, {"name": "pv-size", "set": {"days": 0.5},
                                  "grid": {"pv.plants.0.kwp": kwps}, "repeats": 2})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "twin.sweep", str(path), "--scheduler", address,
           "--workers", "2", "--timeout", "60", "--out", str(out), "--quiet"]
    sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=tmp_path)
    try:
        # Kill worker-a once two runs have finished: both workers are busy by then.
        deadline = time.monotonic() + 90
        while len(list(out.glob("runs/*/kpis.json"))) < 2:
            assert sweep.poll() is None, sweep.communicate()
            assert time.monotonic() < deadline, "no run finished within 90 s"
            time.sleep(0.1)
        finished_before_kill = len(list(out.glob("runs/*/kpis.json")))
        killed_pid = procs.procs["worker-a"].pid
        procs.kill("worker-a")
        stdout, stderr = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait(timeout=30)
    assert sweep.returncode == 0, stderr
    assert finished_before_kill < 8
    assert "pv-size: 8 runs: 8 executed, 0 already finished, 0 failed" in stdout

    table = read_table(out)
    assert len(table) == 8 and table["run_id"].is_unique and (table["status"] == "ok").all()
    assert sorted(zip(table["pv.plants.0.kwp"], table["seed"])) == sorted(
        (k, s) for k in kwps for s in (7, 8))
    # The killed worker did not finish more runs than were finished when it died.
    pids = table["worker"].str.rsplit(":", n=1).str[1].astype(int)
    assert (pids == killed_pid).sum() <= finished_before_kill
    assert set(pids) - {killed_pid}
    assert not list(out.glob("runs/*.partial"))

    # Every row is its run folder's result, for the scenario the row names.
    for row in table.to_dict("records"):
        folder = out / row["run_dir"]
        kpis = json.loads((folder / "kpis.json").read_text())
        assert {k: row[k] for k in kpis} == kpis
        scenario = yaml.safe_load((folder / "scenario.yaml").read_text())
        assert scenario["seed"] == row["seed"] and scenario["days"] == 0.5
        assert scenario["pv"]["plants"][0]["kwp"] == row["pv.plants.0.kwp"]
        assert (folder / "report.html").is_file()
    # ... and equals a run made directly.
    last = table.iloc[-1]
    direct = run(load_scenario(base, {"days": 0.5, "pv.plants.0.kwp": int(last["pv.plants.0.kwp"]),
                                      "seed": int(last["seed"])}),
                 out=tmp_path / "direct", progress=False)
    for key, value in direct.kpis.items():
        assert last[key] == value, key
    # More PV on the roof, more PV energy, for each weather seed.
    for _seed, rows in table.groupby("seed"):
        energy = rows.sort_values("pv.plants.0.kwp")["pv_energy_mwh"].to_numpy()
        assert (np.diff(energy) > 0).all()

    # Running the same sweep again executes nothing.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/kpis.json")}
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                           check=False)
    assert again.returncode == 0, again.stderr
    assert "pv-size: 8 runs: 0 executed, 8 already finished, 0 failed" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/kpis.json")} == stamps
    table2 = read_table(out)
    assert not table2["executed"].any()
    pd.testing.assert_frame_equal(table2.drop(columns=["executed", "worker"]),
                                  table.drop(columns=["executed", "worker"]))
