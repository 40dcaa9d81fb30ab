"""Whole runs: the run folder, the energy balance, reproducibility, failures named."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import twin
from components.pv.model import PVFleet
from twin.cli import main
from twin.scenario import load_scenario


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The acceptance run: the default zone over two days through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "zone"
    assert main(["run", "scenarios/sdg_zone.yaml", "--days", "2", "--out", str(out),
                 "--quiet"]) == 0
    return out


def test_default_zone_writes_the_run_folder(default_run):
    assert (default_run / "scenario.yaml").is_file()
    assert (default_run / "run.json").is_file()
    assert (default_run / "report.html").stat().st_size > 100_000
    assert (default_run / "ledger.sqlite").is_file()
    for name in ("pv", "factory", "ev", "grid"):
        df = pd.read_parquet(default_run / "timeseries" / f"{name}.parquet")
        assert len(df) == 2 * 96
        assert df.index.tz is not None
    kpis = json.loads((default_run / "kpis.json").read_text())
    for key in ("pv_energy_mwh", "load_energy_mwh", "grid_import_mwh", "grid_export_mwh",
                "losses_mwh", "self_consumption", "self_sufficiency", "peak_import_mw",
                "v_min_pu", "v_max_pu", "voltage_violation_bus_hours", "max_line_loading_pct",
                "max_trafo_loading_pct", "pf_nonconverged_steps", "co2_t",
                "energy_balance_error", "ev_charge_energy_mwh", "ev_discharge_energy_mwh",
                "ev_unmet_energy_mwh", "ev_trips_short", "ev_plug_refusals",
                "ev_capacity_fade_pct_mean"):
        assert key in kpis
    assert abs(kpis["energy_balance_error"]) < 1e-4
    assert kpis["pv_energy_mwh"] > 0 and kpis["losses_mwh"] > 0
    assert 0 <= kpis["self_sufficiency"] <= 1 and 0 <= kpis["self_consumption"] <= 1
    resolved = load_scenario(default_run / "scenario.yaml")
    assert resolved.days == 2 and resolved.seed == 42


def test_balance_closes_from_the_series(default_run):
    """Recompute the balance step by step from the Parquet files, independently of kpis.py."""
    pv = pd.read_parquet(default_run / "timeseries" / "pv.parquet")
    fac = pd.read_parquet(default_run / "timeseries" / "factory.parquet")
    grid = pd.read_parquet(default_run / "timeseries" / "grid.parquet")
    ev = pd.read_parquet(default_run / "timeseries" / "ev.parquet")
    injected = (pv.filter(like="p_kw[").sum(axis=1) + fac.filter(like="p_kw[").sum(axis=1)
                + ev.filter(like="p_kw[").sum(axis=1))
    # The fleet's per-site powers are its charging minus its V2G discharging.
    assert (ev.filter(like="p_kw[").sum(axis=1) - (ev["charge_kw"] - ev["discharge_kw"])).abs().max() < 1e-6
    expected_import = (injected + grid["background_load_kw"] + grid["background_storage_kw"]
                       - grid["background_gen_kw"] + grid["losses_kw"])
    err = (grid["import_kw"] - expected_import).abs()
    assert err.max() < 1e-6 * grid["background_load_kw"].max()
    # PV never injects more than is available, and nothing flows at night.
    assert (pv.filter(like="p_kw[") <= 1e-9).all().all()
    night = pv.index.hour.isin([0, 1, 2, 3])
    assert (pv.filter(like="p_kw[")[night] == 0).all().all()


def test_same_seed_same_kpis_other_seed_differs(tiny, write_yaml, tmp_path):
    path = write_yaml(tiny)
    runs = []
    for i, seed in enumerate((7, 7, 8)):
        scenario = load_scenario(path, {"seed": seed})
        runs.append(twin.run(scenario, out=tmp_path / f"r{i}", progress=False))
    first, again, other = ((r.out_dir / "kpis.json").read_text() for r in runs)
    assert first == again
    assert first != other
    assert abs(runs[0].kpis["energy_balance_error"]) < 1e-4


def test_scenario_script_api(tiny, write_yaml, tmp_path):
    scenario = twin.load_scenario(write_yaml(tiny))
    result = twin.run(scenario, out=tmp_path / "script", progress=False)
    assert result.kpis["pv_energy_mwh"] == pytest.approx(
        -result.frames["pv"].filter(like="p_kw[").to_numpy().sum() * 0.25 / 1000)
    assert set(result.info["simulator_s"]) == {"PV", "Factory", "EV", "Grid"}


def test_simulation_time_runs_without_lazy_stepping(tiny, write_yaml, tmp_path, monkeypatch):
    """Lazy stepping only paces real-time runs; elsewhere it costs mosaik time for nothing."""
    import mosaik

    seen = []
    run = mosaik.World.run

    def recording_run(self, *args, **kwargs):
        seen.append(kwargs.get("lazy_stepping", True))  # mosaik's default is lazy
        return run(self, *args, **kwargs)

    monkeypatch.setattr(mosaik.World, "run", recording_run)
    twin.run(load_scenario(write_yaml(tiny)), out=tmp_path / "r", progress=False)
    assert seen == [False]


def test_existing_out_is_not_overwritten(tiny, write_yaml, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["run", write_yaml(tiny), "--out", str(out), "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


def test_a_failing_simulator_is_named_and_leaves_no_result(tiny, write_yaml, tmp_path,
                                                           capsys, monkeypatch):
    real = PVFleet.dispatch

    def broken(self, k, *args, **kwargs):
        if k == 5:
            raise RuntimeError("inverter model diverged")
        return real(self, k, *args, **kwargs)

    monkeypatch.setattr(PVFleet, "dispatch", broken)
    out = tmp_path / "failed"
    assert main(["run", write_yaml(tiny), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "PV" in err and "t=4500 s" in err and "2026-06-03 01:15" in err
    assert "inverter model diverged" in err and "Traceback" not in err
    assert not out.exists()
    assert not list(tmp_path.glob("*.partial"))


def test_compare_prints_runs_side_by_side(default_run, capsys, tmp_path):
    assert main(["compare", str(default_run), str(default_run)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("pv_energy_mwh"))
    assert len(row.split()) == 4  # name, two values, unit
    assert main(["compare", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
