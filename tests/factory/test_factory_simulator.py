"""The mosaik adapter in tiny worlds: arrays per factory, shedding clamped to what may go."""

from __future__ import annotations

import datetime as dt
import importlib

import mosaik
import numpy as np
import pytest
from pydantic import ValidationError

from components.factory.config import FactoriesConfig
from components.factory.model import FactoryFleet
from components.factory.simulator import FactorySimulator

SINK = "tests.factory.factory_sink"
START = "2026-06-01T00:00:00+08:00"
STEP_S, N_STEPS, SEED = 900, 96, 7
CONFIG = [{"name": "parts", "bus": "lv_3", "preset": "auto_parts"},
          {"name": "food", "bus": "lv_5", "preset": "food_processing",
           "base_loads": {"other_kw": 400.0}}]
ATTRS = ("p_kw", "q_kvar", "critical_kw", "deferrable_kw", "shed_applied_kw", "rated_kw")


def _reference():
    fleet = FactoryFleet(FactoriesConfig.model_validate(CONFIG),
                         dt.datetime.fromisoformat(START), STEP_S, N_STEPS,
                         np.random.default_rng(SEED))
    return fleet, fleet.run()


def _run_world(shed_kw=None):
    sink_module = importlib.import_module(SINK)
    world = mosaik.World({
        "Factories": {"python": "components.factory.simulator:FactorySimulator"},
        "Sink": {"python": f"{SINK}:Sink"},
        "Shed": {"python": f"{SINK}:ConstantSource"},
    }, skip_greetings=True)
    sim = world.start("Factories", start=START, step_s=STEP_S, n_steps=N_STEPS, seed=SEED)
    factories = sim.Factories(config=CONFIG, buses=[3, 5])
    sink = world.start("Sink").Recorder()
    world.connect(factories, sink, *ATTRS)
    if shed_kw is not None:
        source = world.start("Shed", step_s=STEP_S).Constant(values=shed_kw)
        world.connect(source, factories, "shed_kw")
    world.run(until=STEP_S * N_STEPS, print_progress=False)
    records = sink_module.RECORDS[sink.sid]
    assert [t for t, _ in records] == list(range(0, STEP_S * N_STEPS, STEP_S))
    (source_id,) = records[0][1]["p_kw"]
    assert source_id.endswith(".factories")
    return {a: np.array([rec[a][source_id] for _, rec in records]) for a in ATTRS}


def test_world_delivers_the_model_arrays_per_factory():
    fleet, ref = _reference()
    got = _run_world()
    assert got["p_kw"].shape == (N_STEPS, 2)
    for name in ("p_kw", "q_kvar", "critical_kw"):
        np.testing.assert_array_equal(got[name], getattr(ref, name))
    np.testing.assert_allclose(got["deferrable_kw"], ref.deferrable_kw, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(got["shed_applied_kw"], 0.0)
    np.testing.assert_array_equal(got["rated_kw"], np.tile(fleet.rated_kw, (N_STEPS, 1)))
    # a working Monday: the shifts are visible through the adapter too
    assert got["p_kw"][40:60].mean(axis=0).min() > 3 * got["p_kw"][0:20].mean(axis=0).max()


def test_shedding_is_clamped_to_the_non_critical_part():
    _, ref = _reference()
    request = [1e9, 100.0]  # shed everything possible in factory 0, 100 kW in factory 1
    got = _run_world(shed_kw=request)
    sheddable = ref.p_kw - ref.critical_kw
    np.testing.assert_allclose(got["shed_applied_kw"][:, 0], sheddable[:, 0], rtol=1e-12)
    np.testing.assert_allclose(got["shed_applied_kw"][:, 1], np.minimum(100.0, sheddable[:, 1]),
                               rtol=1e-12)
    np.testing.assert_allclose(got["p_kw"], ref.p_kw - got["shed_applied_kw"], rtol=1e-12)
    np.testing.assert_allclose(got["p_kw"][:, 0], ref.critical_kw[:, 0], rtol=1e-9)
    np.testing.assert_allclose(got["critical_kw"], ref.critical_kw, rtol=1e-12)
    # reactive power of the shed part goes with it, at the non-critical Q/P ratio
    q_ratio = (ref.q_kvar - ref.critical_q_kvar) / sheddable
    np.testing.assert_allclose(got["q_kvar"], ref.q_kvar - got["shed_applied_kw"] * q_ratio,
                               rtol=1e-9)
    np.testing.assert_allclose(got["q_kvar"][:, 0], ref.critical_q_kvar[:, 0], rtol=1e-9)
    assert (got["deferrable_kw"] <= got["p_kw"] - got["critical_kw"] + 1e-9).all()
    assert (got["deferrable_kw"][:, 0] < 1e-6).all()


def _adapter():
    sim = FactorySimulator()
    sim.init("Factories-0", time_resolution=1.0, start=START, step_s=STEP_S, n_steps=4,
             seed=1)
    return sim


def test_adapter_rejects_bad_config_buses_and_inputs():
    with pytest.raises(ValidationError) as info:
        _adapter().create(1, "Factories", [{"name": "x", "bus": 1, "preset": "auto_parts",
                                            "warmup_min": -1}], [1])
    assert info.value.errors()[0]["loc"] == (0, "warmup_min")
    with pytest.raises(ValueError, match="one bus per factory"):
        _adapter().create(1, "Factories", CONFIG, [3])
    sim = _adapter()
    sim.create(1, "Factories", CONFIG, [3, 5])
    with pytest.raises(ValueError, match="exactly one"):
        sim.create(1, "Factories", CONFIG, [3, 5])
    with pytest.raises(ValueError, match="2 finite values"):
        sim.step(0, {"factories": {"shed_kw": {"Coord-0.coord": np.ones(3)}}}, 3600)
    with pytest.raises(ValueError, match="2 finite values"):
        sim.step(0, {"factories": {"shed_kw": {"Coord-0.coord": np.array([1.0, np.nan])}}},
                 3600)
    with pytest.raises(ValueError, match="not a step start"):
        sim.step(450, {}, 3600)
    assert sim.step(0, {}, 3600) == STEP_S
    # negative requests shed nothing; requests from several senders add up
    sim.step(STEP_S, {"factories": {"shed_kw": {"a": np.array([-5.0, 1.0]),
                                                "b": np.array([0.0, 2.0])}}}, 3600)
    out = sim.get_data({"factories": ["shed_applied_kw", "p_kw"]})["factories"]
    np.testing.assert_allclose(out["shed_applied_kw"], [0.0, 3.0])
    with pytest.raises(ValueError, match="needs a UTC offset"):
        FactorySimulator().init("F", start="2026-06-01T00:00:00")
    with pytest.raises(ValueError, match="whole number of mosaik time units"):
        FactorySimulator().init("F", time_resolution=60.0, step_s=90)


def test_a_non_finite_output_fails_at_the_sender_naming_it():
    sim = _adapter()
    sim.create(1, "Factories", CONFIG, [3, 5])
    sim.step(0, {}, 3600)
    assert np.isfinite(sim.get_data({"factories": list(ATTRS)})["factories"]["p_kw"]).all()
    # a corrupted energy record of the second factory in step 1 (reactive channel)
    sim.fleet._energy[1, 1, 1] = np.inf
    sim.step(STEP_S, {}, 3600)
    assert np.isfinite(sim.get_data({"factories": ["p_kw"]})["factories"]["p_kw"]).all()
    with pytest.raises(ValueError, match=r"Factories-0\.factories: attribute 'q_kvar' has 1 "
                                         r"non-finite value\(s\), first at index 1"):
        sim.get_data({"factories": ["p_kw", "q_kvar"]})
    with pytest.raises(ValueError, match="not an output"):
        sim.get_data({"factories": ["shed_kw"]})
