"""The coordinator in the framework: scenario section, run folder with its ledger, failures."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from zones import TINY as ZONE

from twin import ledger as ledger_mod
from twin.run import run
from twin.scenario import ScenarioError, load_scenario
from twin.world import SimulationError

# the tiny case33bw zone with the V2G strategy
TINY = {**ZONE, "coordinator": {"strategy": "v2g_peak_shaving"}}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(autouse=True)
def own_temp_dir(tmp_path, monkeypatch):
    """Temporary ledger folders go under this test's folder: other processes' runs cannot
    disturb the counts below."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))


def ledger_temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("sdg-twin-ledger-*")}


def test_run_folder_holds_a_verifiable_ledger(tmp_path):
    before = ledger_temp_dirs()
    scenario = load_scenario(write(tmp_path, TINY))
    result = run(scenario, out=tmp_path / "out", progress=False)
    out = result.out_dir
    assert (out / "ledger.sqlite").is_file() and (out / "ledger.pub").is_file()
    check = ledger_mod.verify(out)
    assert check.ok, check.reason
    kpis = json.loads((out / "kpis.json").read_text())
    assert kpis["ledger_blocks"] == check.n_blocks == 24
    assert kpis["ledger_transactions"] == check.n_transactions
    for key in ("pv_to_ev_mwh", "pv_curtailed_mwh", "v2g_mwh", "cost_cny",
                "ev_user_revenue_cny"):
        assert key in kpis
    # double entry: what is paid is received, energy bought is energy sold
    statements = ledger_mod.statements(out)
    assert sum(s.paid_mcny for s in statements) == sum(s.received_mcny for s in statements)
    assert sum(s.bought_wh for s in statements) == sum(s.sold_wh for s in statements)
    # the EV users' bill in the ledger is the KPI, to the ledger's rounding
    sites = [s for s in statements if s.participant.startswith("site:")]
    paid = sum(s.paid_mcny for s in sites) / 1000
    assert paid == pytest.approx(kpis["cost_cny"], abs=0.01 * kpis["ledger_transactions"])
    assert "coordinator" in (out / "scenario.yaml").read_text()
    assert ledger_temp_dirs() == before  # moved, nothing left behind


def test_a_failing_coordinator_is_named_and_leaves_no_ledger(tmp_path, monkeypatch):
    from components.coordinator import model

    def broken(self, k, *args, **kwargs):
        raise ValueError("strategy exploded")

    monkeypatch.setattr(model.Coordinator, "step", broken)
    before = ledger_temp_dirs()
    scenario = load_scenario(write(tmp_path, TINY))
    with pytest.raises(SimulationError, match=r"Coordinator.*t=0 s.*strategy exploded"):
        run(scenario, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert ledger_temp_dirs() == before


@pytest.mark.parametrize(("mutate", "line"), [
    (lambda d: d["coordinator"].update(strategy="greedy"),
     ("coordinator.strategy: Input should be 'uncontrolled', 'pv_following', "
      "'v2g_peak_shaving', 'grid_aware' or 'optimal' (got 'greedy')")),
    (lambda d: d["coordinator"].update(tariffs={"flat_cny_per_kwh": -0.5}),
     "coordinator.tariffs.flat_cny_per_kwh: flat_cny_per_kwh must be a finite price >= 0"),
    (lambda d: d["ev"]["sites"][2].update(chargers=[]),
     "ev.sites.2.chargers: site 'depot' has no charger"),
    (lambda d: d.pop("ev"), "coordinator: needs an 'ev' section"),
])
def test_bad_coordinated_scenarios_name_the_field(tmp_path, mutate, line):
    data = copy.deepcopy(TINY)
    mutate(data)
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, data))
    assert any(p.startswith(line) for p in info.value.problems), info.value.problems


def test_strategy_override_on_a_zone_without_the_section(tmp_path):
    data = copy.deepcopy(TINY)
    del data["coordinator"]
    scenario = load_scenario(write(tmp_path, data), ["coordinator.strategy=grid_aware"],
                             check_grid=False)
    assert scenario.coordinator.strategy == "grid_aware"
    assert scenario.coordinator.v_band_pu is None


@pytest.mark.parametrize("strategy", ["grid_aware", "optimal"])
def test_same_scenario_same_kpis(tmp_path, strategy):
    data = copy.deepcopy(TINY)
    data["coordinator"] = {"strategy": strategy, "optimal": {"resolve_every_steps": 4}}
    data["days"] = 0.5
    path = write(tmp_path, data)
    first = run(load_scenario(path), out=tmp_path / "a", progress=False).kpis
    again = run(load_scenario(path), out=tmp_path / "b", progress=False).kpis
    assert first == again
    assert first["ev_charge_energy_mwh"] > 0
