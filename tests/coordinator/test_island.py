"""Island mode: the outage scenario with and without the SDG coordinator, PV and V2G.

The runs cover 12:00-18:00 of the outage day (the outage is 13:00-17:00), 24 steps each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twin import kpis as kpi_module
from twin import world as world_module
from twin.scenario import ScenarioError, load_scenario

OUTAGE = Path(__file__).resolve().parents[2] / "scenarios" / "outage.yaml"
WINDOW = ["start=2026-06-03 12:00", "days=0.25"]


def _run(*overrides: str):
    scenario = load_scenario(OUTAGE, [*WINDOW, *overrides])
    assembly = world_module.build(scenario)
    world_module.execute(assembly, progress=False)
    frames = world_module.frames(assembly)
    return scenario, frames, kpi_module.compute(scenario, frames)


@pytest.fixture(scope="module")
def sdg():
    return _run()


@pytest.fixture(scope="module")
def bare():
    # no PV, no coordinator control (so no V2G and no shedding): the fleet's own behaviour
    return _run("pv.plants=[]", "pv.generated=[]", "coordinator.strategy=uncontrolled")


def test_sdg_coordinator_keeps_the_critical_load_through_the_outage(sdg):
    scenario, frames, k = sdg
    grid = frames["grid"]
    islanded = grid["islanded"].to_numpy() > 0.5
    assert k["islanded_hours"] == pytest.approx(4.0)
    assert islanded.sum() == 16
    assert (grid["island_held"].to_numpy()[islanded] > 0.5).all()
    assert k["island_lost_steps"] == 0
    assert k["pf_nonconverged_steps"] == 0
    assert k["critical_load_served_fraction"] >= 0.99
    # island mode was on exactly in the islanded steps and used V2G and shedding
    mode = frames["coordinator"]["island_mode"].to_numpy() > 0.5
    assert (mode == islanded).all()
    assert k["shed_energy_mwh"] > 0
    assert frames["ev"]["discharge_kw"].to_numpy()[islanded].sum() > 0
    # shedding only while islanded, and the factories never below their critical load
    assert grid["background_load_shed_kw"].to_numpy()[~islanded].max() == 0.0
    fac = frames["factory"]
    p = fac[[c for c in fac.columns if c.startswith("p_kw[")]].to_numpy()
    crit = fac[[c for c in fac.columns if c.startswith("critical_kw[")]].to_numpy()
    assert (p >= crit - 1e-6).all()
    # the battery stayed within its state-of-charge range and power
    gfm = scenario.grid.grid_forming
    soc = grid["gfm_soc"].to_numpy()
    assert soc.min() >= gfm.soc_min - 1e-9 and soc.max() <= gfm.soc_max + 1e-9
    assert np.abs(grid["gfm_supply_kw"].to_numpy()).max() <= gfm.p_max_kw + 1e-6
    # no upstream supply in the island, none from the battery outside it
    assert np.abs(grid["import_kw"].to_numpy()[islanded]).max() == 0.0
    assert np.abs(grid["gfm_supply_kw"].to_numpy()[~islanded]).max() == 0.0


def test_energy_balance_closes_in_island_mode(sdg, bare):
    for _, _, k in (sdg, bare):
        assert abs(k["energy_balance_error"]) < 1e-4
    # step by step while the island is held: battery, PV, background generation and V2G
    # supply the factories, background loads, EV charging and losses
    _, frames, _ = sdg
    grid, ev = frames["grid"], frames["ev"]

    def total(df, attr):
        return df[[c for c in df.columns if c.startswith(attr + "[")]].to_numpy().sum(axis=1)

    supply = (grid["import_kw"] + grid["gfm_supply_kw"] + grid["background_gen_kw"]
              - total(frames["pv"], "p_kw") + ev["discharge_kw"]).to_numpy()
    use = (grid["background_load_kw"] + grid["background_storage_kw"] + grid["losses_kw"]
           + total(frames["factory"], "p_kw") + ev["charge_kw"]).to_numpy()
    assert np.abs(supply - use).max() < 1e-6 * supply.max()


def test_without_pv_and_v2g_the_outage_drops_the_critical_load(bare):
    _, frames, k = bare
    assert k["pv_energy_mwh"] == 0.0 and k["ev_discharge_energy_mwh"] == 0.0
    assert k["critical_load_served_fraction"] < 0.5
    assert k["island_lost_steps"] > 0
    grid = frames["grid"]
    islanded = grid["islanded"].to_numpy() > 0.5
    lost = islanded & (grid["island_held"].to_numpy() < 0.5)
    # de-energised buses are reported: none energised, customers off, energy not supplied
    energised = grid[[c for c in grid.columns if c.startswith("energised[")]].to_numpy()
    assert energised[lost].max() == 0 and energised[~islanded].min() == 1
    assert (grid["customers_off"].to_numpy()[lost] > 0).all()
    assert k["energy_not_supplied_mwh"] > 10.0
    assert k["customers_interrupted"] > 0


def test_sdg_coordinator_supplies_more_than_the_bare_zone(sdg, bare):
    assert sdg[2]["energy_not_supplied_mwh"] < bare[2]["energy_not_supplied_mwh"]
    assert sdg[2]["critical_load_served_fraction"] > bare[2]["critical_load_served_fraction"]


@pytest.mark.parametrize(("override", "field"), [
    ("events=[{type: fault, element: line, index: 9999, at: 2.0, repair_h: 1}]",
     "events.0.index: line 9999 not found"),
    ("grid.tie_switches=[{switch: 99999}]", "grid.tie_switches.0.switch: switch 99999 not"),
    ("grid.grid_forming.bus=no such bus", "grid.grid_forming.bus: bus 'no such bus' not found"),
    ("grid.grid_forming.bus=1", "grid.grid_forming.bus: bus 1 holds the external grid"),
])
def test_validation_catches_bad_grid_references(override, field):
    with pytest.raises(ScenarioError) as err:
        load_scenario(OUTAGE, [*WINDOW, "events=[]", override] if "events=" not in override
                      else [*WINDOW, override])
    assert any(p.startswith(field) for p in err.value.problems), err.value.problems
