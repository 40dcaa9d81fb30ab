"""The PV mosaik adapter, alone and inside a tiny in-process mosaik World."""

import importlib
from pathlib import Path

import mosaik
import numpy as np
import pandas as pd
import pvlib
import pytest

from components.pv.config import LocationConfig, PVConfig, WeatherConfig
from components.pv.model import PVFleet
from components.pv.simulator import OUTPUTS as OUTPUTS_ALL
from components.pv.simulator import PVSimulator, _combine
from components.pv.weather import synthetic_weather, weather_from_file

# the sink lives next to this file; import it under the name pytest gave this package
_PKG = __name__.rpartition(".")[0]
SINK_MODULE = f"{_PKG}.pv_sink" if _PKG else "pv_sink"
sink = importlib.import_module(SINK_MODULE)

START = "2026-06-01T09:00:00+08:00"
STEP_S = 900
N_STEPS = 12
SEED = 11
SECTION = {
    "plants": [{"name": "factory-roof", "bus": 5, "kwp": 400}],
    "generated": [{"total_kwp": 90, "count": 3, "buses": [7, 8], "tilt_deg": [5, 25]}],
}
BUSES = [5, 7, 8, 7]
# a clear-ish synthetic sky so that the morning has solar power
WEATHER = {"monthly_mean_kc": [0.9] * 12, "intraday_sigma": 0.0}


def _expected_fleet() -> PVFleet:
    """The same fleet built directly from the model, as the adapter should build it."""
    times = (pd.Timestamp(START)
             + pd.to_timedelta(np.arange(N_STEPS) * STEP_S + STEP_S / 2, unit="s"))
    loc = LocationConfig()
    weather = synthetic_weather(pd.DatetimeIndex(times), loc.latitude_deg, loc.longitude_deg,
                                loc.altitude_m, WeatherConfig(**WEATHER),
                                np.random.default_rng(SEED))
    cfg = PVConfig.model_validate(SECTION)
    return PVFleet(cfg.all_plants(SEED), loc.latitude_deg, loc.longitude_deg, loc.altitude_m,
                   weather)


def _world(with_setpoints: dict | None = None):
    sim_config = {
        "PV": {"python": "components.pv.simulator:PVSimulator"},
        "Sink": {"python": f"{SINK_MODULE}:Collector"},
        "SetPoints": {"python": f"{SINK_MODULE}:SetPoints"},
    }
    world = mosaik.World(sim_config)
    pv_sim = world.start("PV", start=START, step_s=STEP_S, n_steps=N_STEPS, seed=SEED,
                         location=LocationConfig().model_dump(), weather=WEATHER)
    pv = pv_sim.PVFleet(config=PVConfig.model_validate(SECTION).model_dump(mode="json"),
                        buses=BUSES)
    collector = world.start("Sink", step_s=STEP_S).Collector()
    world.connect(pv, collector, "p_kw", "q_kvar", "p_avail_kw", "p_curtailed_kw")
    if with_setpoints is not None:
        sp = world.start("SetPoints", step_s=STEP_S).SetPoints(**with_setpoints)
        world.connect(sp, pv, "curtail_kw", "q_kvar_set")
    return world, pv_sim


def test_world_reports_generation_as_negative_load():
    world, pv_sim = _world()
    plants = pv_sim.plants()
    world.run(until=N_STEPS * STEP_S, print_progress=False)
    rec = sink.Collector.records
    assert sorted(rec["p_kw"]) == [k * STEP_S for k in range(N_STEPS)]
    expected = _expected_fleet().available_ac_kw
    for k in range(N_STEPS):
        p = rec["p_kw"][k * STEP_S]
        assert p.shape == (4,)
        np.testing.assert_allclose(p, -expected[k])
        np.testing.assert_allclose(rec["p_avail_kw"][k * STEP_S], expected[k])
        assert (p <= 0).all() and (rec["q_kvar"][k * STEP_S] == 0).all()
    assert rec["p_kw"][(N_STEPS - 1) * STEP_S][0] < -100  # a 400 kWp roof near noon
    assert [p["name"] for p in plants] == ["factory-roof", "pv-1", "pv-2", "pv-3"]
    assert [p["bus"] for p in plants] == BUSES
    assert sum(p["kwp"] for p in plants) == pytest.approx(490)


def test_world_applies_setpoints():
    curtail = np.array([50.0, 1e6, 0.0, 10.0])
    q_set = np.array([1e4, -5.0, 2.0, -1e4])
    world, _ = _world({"curtail_kw": curtail.tolist(), "q_kvar_set": q_set.tolist()})
    world.run(until=N_STEPS * STEP_S, print_progress=False)
    rec = sink.Collector.records
    fleet = _expected_fleet()
    # set-points reach the PV simulator in the same step (the source steps first)
    for k in range(N_STEPS):
        t = k * STEP_S
        avail = fleet.available_ac_kw[k]
        ac = np.minimum(avail, curtail)
        np.testing.assert_allclose(rec["p_kw"][t], -ac)
        np.testing.assert_allclose(rec["p_curtailed_kw"][t], avail - ac)
        q_max = np.sqrt(fleet.inverter_kw**2 - ac**2)
        np.testing.assert_allclose(rec["q_kvar"][t], np.clip(q_set, -q_max, q_max))


def test_several_sources_combine():
    sim = PVSimulator()
    sim.init("PV-0", start=START, step_s=STEP_S, n_steps=N_STEPS, seed=SEED, weather=WEATHER)
    sim.create(1, "PVFleet", config=SECTION, buses=BUSES)
    k = N_STEPS - 1
    avail = sim.fleet.available_ac_kw[k]
    inputs = {"pv": {
        "curtail_kw": {"A.a": np.full(4, 80.0), "B.b": np.array([1e6, 5.0, 1e6, 1e6])},
        "q_kvar_set": {"A.a": np.full(4, 1.0), "B.b": np.full(4, 2.0)},
    }}
    assert sim.step(k * STEP_S, inputs, max_advance=k * STEP_S) == (k + 1) * STEP_S
    out = sim.get_data({"pv": ["p_kw", "q_kvar", "p_curtailed_kw"]})["pv"]
    ac = np.minimum(avail, [80.0, 5.0, 80.0, 80.0])
    np.testing.assert_allclose(out["p_kw"], -ac)
    np.testing.assert_allclose(out["q_kvar"], 3.0)


def test_adapter_rejects_bad_use():
    sim = PVSimulator()
    with pytest.raises(ValueError, match="UTC offset"):
        sim.init("PV-0", start="2026-06-01T00:00:00")
    sim.init("PV-0", start=START, step_s=STEP_S, n_steps=2)
    with pytest.raises(ValueError, match="one bus per plant"):
        sim.create(1, "PVFleet", config=SECTION, buses=[1, 2])
    with pytest.raises(ValueError, match="exactly one"):
        sim.create(2, "PVFleet", config=SECTION, buses=BUSES)
    sim.create(1, "PVFleet", config=SECTION, buses=BUSES)
    with pytest.raises(ValueError, match="past the horizon"):
        sim.step(2 * STEP_S, {}, 2 * STEP_S)
    with pytest.raises(ValueError, match="one value per plant"):
        sim.step(0, {"pv": {"curtail_kw": {"X.x": np.ones(3)}}}, 0)


def test_file_weather_and_site_mismatch_warning():
    tmy3 = str(Path(pvlib.__file__).parent / "data" / "703165TY.csv")
    sand_point = {"latitude_deg": 55.317, "longitude_deg": -160.517, "altitude_m": 7.0}
    start = "2026-06-01T06:00:00-09:00"
    sim = PVSimulator()
    sim.init("PV-0", start=start, step_s=3600, n_steps=12, location=sand_point,
             weather={"source": "file", "file": tmy3})
    sim.create(1, "PVFleet", config=SECTION, buses=BUSES)
    times = pd.Timestamp(start) + pd.to_timedelta(np.arange(12) * 3600 + 1800, unit="s")
    expected = PVFleet(PVConfig.model_validate(SECTION).all_plants(0), 55.317, -160.517, 7.0,
                       weather_from_file(tmy3, pd.DatetimeIndex(times)))
    np.testing.assert_allclose(sim.fleet.available_ac_kw, expected.available_ac_kw)
    assert sim.fleet.available_ac_kw.max() > 0

    far = PVSimulator()
    far.init("PV-1", start=start, step_s=3600, n_steps=2, weather={"source": "file",
                                                                  "file": tmy3})
    with pytest.warns(UserWarning, match="far from the location"):
        far.create(1, "PVFleet", config=SECTION, buses=BUSES)


def test_one_source_gives_what_the_reduction_over_sources_gives():
    values = np.array([-0.0, 0.0, 3.5, -2.0, np.nan, 1e-310])
    for ufunc in (np.minimum, np.maximum, np.add):
        want = ufunc.reduce(np.stack([values]), axis=0)
        got = _combine({"A.a": values}, ufunc)
        assert got.tobytes() == want.tobytes() and got is not values
    two = _combine({"A.a": values, "B.b": np.ones(6)}, np.add)
    np.testing.assert_array_equal(two, values + 1.0)
    assert _combine({}, np.add) is None and _combine({"A.a": None}, np.add) is None


def test_a_non_finite_output_fails_at_the_sender_naming_it():
    sim = PVSimulator()
    sim.init("PV-0", start=START, step_s=STEP_S, n_steps=N_STEPS, weather=WEATHER)
    sim.create(1, "PVFleet", config=SECTION, buses=BUSES)
    sim.step(0, {}, 0)
    assert np.isfinite(sim.get_data({"pv": OUTPUTS_ALL})["pv"]["p_kw"]).all()
    # a NaN limit from a faulty controller makes the delivered power NaN
    limit = np.array([50.0, np.nan, 10.0, 10.0])
    sim.step(STEP_S, {"pv": {"curtail_kw": {"Coord-0.coord": limit}}}, 0)
    assert sim.get_data({"pv": ["p_avail_kw"]})["pv"]["p_avail_kw"].shape == (4,)
    with pytest.raises(ValueError, match=r"PV-0\.pv: attribute 'p_kw' has 1 non-finite value\(s\), "
                                         r"first at index 1"):
        sim.get_data({"pv": ["p_kw"]})
    with pytest.raises(ValueError, match="'p_curtailed_kw' has 1 non-finite"):
        sim.get_data({"pv": ["p_curtailed_kw"]})
    with pytest.raises(ValueError, match="not an output"):
        sim.get_data({"pv": ["curtail_kw"]})
