"""The example bench: devices in the loop over their protocols, in real time.

* the bench (stubs on loopback, rt factor of the YAML) reproduces the fully simulated run of
  the same zone (``hil.simulate: true``: plant and site back in their populations, the battery
  model in-process) within the tolerance below;
* a link lost mid-run (stubs stopped and restarted) gives stale steps that use the devices'
  fallbacks, and the run finishes;
* a device that never answers fails the build with a clear timeout;
* the section's errors name the field.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hil_support import SilentDevice

from components.hil.simulator import HILSimulator
from twin.run import hil_main, run
from twin.scenario import ScenarioError, load_scenario
from twin.world import SimulationError

BENCH = Path(__file__).resolve().parents[2] / "scenarios" / "hil_bench.yaml"

# Bench vs fully simulated run. The stubs integrate the same physics on simulated time; what
# differs is the protocols' resolution: 704 WMaxLimPct (0.1 % of the rating), 701 power (10 W)
# and energy registers (1 Wh per step, i.e. 12 W at 5-min steps), OCPP meter values (0.1 Wh).
REL_TOL = 1e-4  # on energies, money and powers
ABS_TOL_PU = 1e-5  # on voltages
TIMING = {"hil_max_lag_s", "hil_mean_lag_s", "hil_rtt_max_ms"}


@pytest.fixture(scope="module")
def bench_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    t0 = time.perf_counter()
    bench = run(load_scenario(BENCH), out=out / "bench", progress=False)
    wall_s = time.perf_counter() - t0
    reference = run(load_scenario(BENCH, ["hil.simulate=true", "hil.rt_factor=null"]),
                    out=out / "reference", progress=False)
    return bench, reference, wall_s


def test_bench_reproduces_the_fully_simulated_zone(bench_runs):
    bench, reference, wall_s = bench_runs
    assert wall_s < 60.0  # one simulated hour at rt factor 1/180: 20 s of wall time
    kb, kr = bench.kpis, reference.kpis
    assert kb["hil_stale_steps"] == 0 and kr["hil_stale_steps"] == 0
    # every device took part: PV from the inverter, energy through the battery and the station
    assert kb["hil_pv_energy_mwh"] > 0.01 and kr.get("hil_pv_energy_mwh") == 0.0
    assert kb["hil_battery_discharge_mwh"] > 0.01
    assert kb["hil_evse_energy_mwh"] > 0.01
    assert abs(kb["hil_evse_mismatch_mwh"]) < REL_TOL * kb["hil_evse_energy_mwh"]
    assert abs(kb["energy_balance_error"]) < 1e-6
    compared = 0
    for key, ref in kr.items():
        if key in TIMING or key.startswith(("hil_pv", "hil_evse")):
            continue
        assert key in kb, key
        if key.endswith("_pu"):
            assert kb[key] == pytest.approx(ref, abs=ABS_TOL_PU), key
        elif isinstance(ref, float):
            assert kb[key] == pytest.approx(ref, rel=REL_TOL, abs=1e-9), key
        else:
            assert kb[key] == ref, key
        compared += 1
    assert compared > 30
    # the grid saw the same voltages step by step
    vb = bench.frames["grid"].filter(like="vm_pu").to_numpy()
    vr = reference.frames["grid"].filter(like="vm_pu").to_numpy()
    np.testing.assert_allclose(vb, vr, atol=ABS_TOL_PU)


def test_bench_records_lag_per_step(bench_runs):
    bench, _, _ = bench_runs
    table = pd.read_parquet(bench.out_dir / "hil.parquet")
    assert len(table) == 12
    assert {"lag_s", "n_stale", "hil.rtt_ms[bess]", "hilsites.rtt_ms[depot]"} <= set(table)
    assert (table["hilsites.rtt_ms[depot]"] > 0).all()
    kpis = json.loads((bench.out_dir / "kpis.json").read_text())
    assert kpis["hil_max_lag_s"] == pytest.approx(table["lag_s"].max())
    assert kpis["hil_max_lag_s"] < 300 * 0.005556  # never a whole step behind


def test_link_loss_mid_run_uses_fallbacks_and_finishes(tmp_path, monkeypatch):
    """Battery and station stubs go away for steps 3-5 and come back."""
    original = HILSimulator.step

    def step(self, time, inputs, max_advance):
        k = time // self.step_s
        names = [link.name for link in self.links]
        for name in set(names) & {"bess", "depot"}:
            if k == 3:
                self.bench_device(name, up=False)
            elif k == 6:
                self.bench_device(name, up=True)
        if k == 7 and "depot" in names:  # the station reconnects with OCPP back-off
            link = self.links[names.index("depot")]
            deadline = time_module.monotonic() + 10
            while (not link.csms.is_connected(link.station_id)
                   and time_module.monotonic() < deadline):
                time_module.sleep(0.05)
        return original(self, time, inputs, max_advance)

    import time as time_module

    monkeypatch.setattr(HILSimulator, "step", step)
    scenario = load_scenario(BENCH, ["hil.timeout_s=0.5", "hil.rt_factor=0.002"])
    result = run(scenario, out=tmp_path / "loss", progress=False)
    dev, sites, k = result.frames["hil"], result.frames["hilsites"], result.kpis
    stale_bess = dev["stale[bess]"].to_numpy()
    stale_site = sites["stale[depot]"].to_numpy()
    assert stale_bess[3:6].all() and stale_site[3:6].all()
    assert not stale_bess[:3].any() and not stale_site[:3].any()
    assert not stale_bess[7:].any() and not stale_site[8:].any()
    assert not dev["stale[depot_carport]"].any()  # the inverter kept its link
    # stale steps use the declared fallbacks: battery reversion 0 kW, station offline limit
    assert (dev["p_kw[bess]"].to_numpy()[3:6] == 0.0).all()
    limit = sites["setpoint_kw[depot]"].to_numpy()[3:6]
    np.testing.assert_allclose(sites["metered_kw[depot]"].to_numpy()[3:6],
                               np.minimum(11.0, limit))
    assert k["hil_stale_steps"] >= 3
    assert k["hil_stale_device_steps"] == int(stale_bess.sum() + stale_site.sum())
    # the station's meter, not the fleet's simulation of its site, is settled
    coord, ev = result.frames["coordinator"], result.frames["ev"]
    metered = sites["metered_kw[depot]"].to_numpy()
    simulated = sites["sim_kw[depot]"].to_numpy()
    assert np.abs(metered - simulated)[3:6].max() > 1.0
    np.testing.assert_allclose((coord["pv_to_ev_kw"] + coord["grid_to_ev_kw"]).to_numpy(),
                               ev["charge_kw"].to_numpy() - simulated + metered, atol=1e-9)
    assert abs(k["energy_balance_error"]) < 1e-6
    # the device itself fell back: the battery stub reverted WSet to 0 while unreachable
    assert (dev["battery_soc_pct[bess]"].diff().to_numpy()[7:] != 0).any()


def test_a_device_that_never_answers_fails_with_a_timeout(tmp_path):
    silent = SilentDevice()
    try:
        scenario = load_scenario(BENCH, [
            "hil.start_stubs=false", "hil.rt_factor=null", "hil.timeout_s=0.3",
            "hil.charging_sites=[]", "hil.pv_plants=[]",
            f"hil.batteries.0.port={silent.port}"])
        t0 = time.perf_counter()
        with pytest.raises(SimulationError, match="did not answer .* within 0.3 s"):
            run(scenario, out=tmp_path / "silent", progress=False)
        assert time.perf_counter() - t0 < 20
        assert not (tmp_path / "silent").exists()
    finally:
        silent.close()


@pytest.mark.parametrize("override, message", [
    ("hil.pv_plants.0.plant=nowhere", "hil.pv_plants.0.plant: no plant named 'nowhere'"),
    ("hil.pv_plants.0.plant=7", "hil.pv_plants.0.plant: index 7 is outside pv.plants"),
    ("hil.batteries.0.port=70000", "hil.batteries.0.port: Input should be less than or equal"),
    ("hil.charging_sites.0.site=homes", "hil.charging_sites.0.site: site 'homes' has V2G"),
    ("hil.charging_sites.0.site=mall", "hil.charging_sites.0.site: no site named 'mall'"),
    ("hil.start_stubs=false", "hil.pv_plants.0.port: give the device's port"),
    ("hil.batteries.0.bus=999", "hil.batteries.0.bus:"),
    ("hil.rt_factor=0", "hil.rt_factor: Input should be greater than 0"),
])
def test_bad_hil_sections_name_the_field(override, message):
    with pytest.raises(ScenarioError) as err:
        load_scenario(BENCH, [override])
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def test_duplicate_device_addresses_are_refused():
    with pytest.raises(ScenarioError) as err:
        load_scenario(BENCH, ["hil.pv_plants.0.port=5020", "hil.batteries.0.port=5020"])
    assert any(p.startswith("hil.batteries.0.port: address 127.0.0.1:5020 is already used by "
                            "pv_plants.0") for p in err.value.problems)


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert hil_main([str(BENCH), "--set", "hil.pv_plants.0.plant=nowhere"]) == 2
    assert "hil.pv_plants.0.plant" in capsys.readouterr().err
    assert hil_main([str(BENCH), "--rt-factor", "-1"]) == 2
    no_hil = tmp_path / "plain.yaml"
    no_hil.write_text(BENCH.read_text().split("\nhil:")[0])
    assert hil_main([str(no_hil)]) == 2
    assert "has no 'hil' section" in capsys.readouterr().err
