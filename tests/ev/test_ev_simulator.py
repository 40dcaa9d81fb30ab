"""The EV fleet mosaik adapter, alone and in a tiny in-process World with a coordinator."""

import importlib

import mosaik
import numpy as np
import pytest

from components.ev.config import example_config
from components.ev.model import EVFleet
from components.ev.simulator import EVSimulator

_PKG = __name__.rpartition(".")[0]
SINK_MODULE = f"{_PKG}.ev_sink" if _PKG else "ev_sink"
sink = importlib.import_module(SINK_MODULE)

START = "2026-06-03T00:00:00+08:00"
STEP_S = 900
N_STEPS = 40
SEED = 3
CFG = example_config(150)
SECTION = CFG.model_dump(mode="json")
BUSES = [s.bus for s in CFG.sites]


def _sim() -> EVSimulator:
    sim = EVSimulator()
    sim.init("EV-0", start=START, step_s=STEP_S, n_steps=N_STEPS, seed=SEED)
    sim.create(1, "EVFleet", config=SECTION, site_buses=BUSES)
    return sim


def test_adapter_matches_the_model_and_checks_its_inputs():
    sim = _sim()
    model = EVFleet(CFG, BUSES, START, STEP_S, N_STEPS, np.random.default_rng(SEED))
    n_ev = sim.fleet.n_ev
    for k in range(N_STEPS):
        assert sim.step(k * STEP_S, {}, N_STEPS * STEP_S) == (k + 1) * STEP_S
        model.step(k)
        data = sim.get_data({"fleet": ["p_kw", "q_kvar", "charge_kw", "n_ev", "n_plugged",
                                       "plugged_ids", "ev_charge_energy_mwh"]})["fleet"]
        np.testing.assert_array_equal(data["p_kw"], model.p_site_kw)
        assert data["p_kw"].shape == (len(BUSES),) and (data["q_kvar"] == 0).all()
        assert data["n_ev"] == n_ev
        np.testing.assert_array_equal(data["plugged_ids"], model.plugged_view()["plugged_ids"])
        assert data["n_plugged"] == data["plugged_ids"].size
        assert data["ev_charge_energy_mwh"] == pytest.approx(
            model.kpis()["ev_charge_energy_mwh"])
    with pytest.raises(ValueError, match="past the horizon"):
        sim.step(N_STEPS * STEP_S, {}, 0)
    with pytest.raises(ValueError, match="step grid"):
        sim.step(10, {}, 0)
    with pytest.raises(ValueError, match="exactly one"):
        sim.create(1, "EVFleet", config=SECTION, site_buses=BUSES)


def test_setpoint_errors_name_simulator_entity_and_time():
    sim = _sim()
    bad = {"fleet": {"p_set_kw": {"Coord-0.coord": np.zeros(3)}}}
    with pytest.raises(RuntimeError, match=r"EV-0\.fleet at t=0 .*one value per EV"):
        sim.step(0, bad, 0)
    two = {"fleet": {"p_set_kw": {"A.a": np.zeros(150), "B.b": np.zeros(150)}}}
    with pytest.raises(ValueError, match="connect one coordinator only"):
        sim.step(0, two, 0)
    other = EVSimulator()
    other.init("EV-1")
    with pytest.raises(ValueError, match="unknown model"):
        other.create(1, "Car", SECTION, BUSES)


def test_bad_config_is_a_validation_error():
    sim = EVSimulator()
    sim.init("EV-0", start=START, step_s=STEP_S, n_steps=N_STEPS)
    with pytest.raises(Exception, match="departure_soc_target"):
        sim.create(1, "EVFleet", config={**SECTION, "departure_soc_target": 1.5},
                   site_buses=BUSES)


def test_world_with_coordinator_applies_setpoints_one_step_later():
    sim_config = {
        "EV": {"python": "components.ev.simulator:EVSimulator"},
        "Coord": {"python": f"{SINK_MODULE}:HalfPower"},
        "Sink": {"python": f"{SINK_MODULE}:Collector"},
    }
    world = mosaik.World(sim_config)
    ev = world.start("EV", start=START, step_s=STEP_S, n_steps=N_STEPS, seed=SEED).EVFleet(
        config=SECTION, site_buses=BUSES)
    coord = world.start("Coord", step_s=STEP_S).HalfPower(n_ev=150, share=0.5)
    sink_entity = world.start("Sink", step_s=STEP_S).Collector()
    world.connect(ev, coord, *sink.PLUGGED)
    world.connect(coord, ev, "p_set_kw", time_shifted=True, initial_data={"p_set_kw": None})
    world.connect(ev, sink_entity, "p_kw", "charge_kw", "clamped_count", "ev_plug_refusals")
    world.run(until=N_STEPS * STEP_S, print_progress=False)
    rec, seen = sink.Collector.records, sink.HalfPower.seen
    assert sorted(rec["p_kw"]) == [k * STEP_S for k in range(N_STEPS)]
    # step 0 has no setpoints (uncontrolled); from step 1 on, each EV plugged at the start of
    # the step charges at half the maximum the coordinator was told one step earlier
    for k in range(1, N_STEPS):
        t = k * STEP_S
        told = seen[t - STEP_S]["plugged_p_max_kw"]
        assert float(rec["charge_kw"][t]) == pytest.approx(0.5 * told.sum(), rel=1e-9, abs=1e-9)
        assert int(rec["clamped_count"][t]) == 0
        assert float(rec["p_kw"][t].sum()) == pytest.approx(0.5 * told.sum(), abs=1e-6)
    assert sum(float(rec["charge_kw"][k * STEP_S]) for k in range(N_STEPS)) > 0


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf
def test_a_non_finite_output_fails_at_the_sender_naming_it():
    sim = _sim()
    sim.step(0, {}, 0)
    view = sim.get_data({"fleet": ["plugged_ids", "plugged_site"]})["fleet"]
    assert view["plugged_ids"].size
    # a corrupted limit of the next step: the EV, left uncontrolled (NaN), charges at it and
    # the kernel finds its site's power non-finite
    sim.fleet._plugged_lim[0][0] = np.inf
    site = int(view["plugged_site"][0])
    p_set = np.full(sim.fleet.n_ev, np.nan)
    sim.step(STEP_S, {"fleet": {"p_set_kw": {"Coord-0.coord": p_set}}}, 0)
    # and a corrupted battery state of a plugged EV: the view's kernel finds its SoC bad
    fleet = sim.fleet
    fleet.e_kwh[fleet._plugged[np.isfinite(fleet.e_kwh[fleet._plugged])][0]] = np.nan
    first = int(np.flatnonzero(~np.isfinite(fleet.e_kwh[fleet._plugged]))[0])
    with pytest.raises(ValueError, match=r"EV-0\.fleet: attribute 'plugged_soc' has \d+ "
                                         rf"non-finite value\(s\), first at index {first}"):
        sim.get_data({"fleet": ["plugged_ids", "plugged_soc"]})
    with pytest.raises(ValueError, match=f"'p_kw' has 1 non-finite value.*first at index {site}"):
        sim.get_data({"fleet": ["p_kw"]})
    # the outputs made with it (the step's results) are not sent either
    with pytest.raises(ValueError, match="'p_kw' has 1 non-finite"):
        sim.get_data({"fleet": ["charge_kw"]})
    with pytest.raises(ValueError, match="is an input"):
        sim.get_data({"fleet": ["p_set_kw"]})


def test_kpi_totals_follow_the_accounts_through_trips_v2g_and_midnight():
    """The fleet sums the KPIs keep between changes equal fresh sums at every step."""
    n_steps = 110  # past the first local midnight (capacity fade)
    fleet = EVFleet(CFG, BUSES, START, STEP_S, n_steps, np.random.default_rng(SEED))
    rng = np.random.default_rng(0)
    for k in range(n_steps):
        # charging, V2G and idle steps
        p_set = rng.uniform(-11.0, 11.0, fleet.n_ev) if k % 3 else np.zeros(fleet.n_ev)
        fleet.step(k, None if k % 7 == 0 else p_set)
        kpis = fleet.kpis()
        for key, account in (("ev_charge_energy_mwh", fleet.charged_kwh),
                             ("ev_discharge_energy_mwh", fleet.discharged_kwh),
                             ("ev_unmet_energy_mwh", fleet.unmet_kwh),
                             ("ev_driven_energy_mwh", fleet.driven_kwh),
                             ("ev_trip_shortfall_mwh", fleet.shortfall_kwh)):
            assert kpis[key] == float(account.sum() / 1000), (k, key)
        assert kpis["ev_capacity_fade_pct_mean"] == float(100 * fleet.fade.mean())
    assert kpis["ev_discharge_energy_mwh"] > 0 and kpis["ev_unmet_energy_mwh"] > 0
    assert kpis["ev_driven_energy_mwh"] > 0 and kpis["ev_capacity_fade_pct_mean"] > 0
