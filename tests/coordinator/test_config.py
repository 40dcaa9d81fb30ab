"""The coordinator section: defaults, and bad input failing with the field named."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from components.coordinator.config import STRATEGY_NAMES, CoordinatorConfig
from components.coordinator.core import ZoneLayout
from components.coordinator.simulator import CoordinatorSimulator
from tests.coordinator.conftest import make_zone


def test_strategy_alone_is_enough():
    cfg = CoordinatorConfig.model_validate({"strategy": "pv_following"})
    assert cfg.tariffs.flat_cny_per_kwh == pytest.approx(0.762307)
    assert cfg.offpeak_periods == ("valley",)
    assert cfg.optimal.objective == "cost"


def _error(data: dict) -> str:
    with pytest.raises(ValidationError) as info:
        CoordinatorConfig.model_validate(data)
    errs = info.value.errors(include_url=False)
    return "\n".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errs)


def test_unknown_strategy_lists_the_known_ones():
    msg = _error({"strategy": "greedy"})
    assert msg.startswith("strategy: ")
    for name in STRATEGY_NAMES:
        assert repr(name) in msg


@pytest.mark.parametrize("field", ["flat_cny_per_kwh", "pv_feed_in_cny_per_kwh",
                                   "v2g_base_cny_per_kwh", "fixed_component_cny_per_kwh"])
def test_negative_tariff_names_the_field(field):
    msg = _error({"strategy": "pv_following", "tariffs": {field: -0.1}})
    assert msg.startswith(f"tariffs.{field}: ")
    assert ">= 0" in msg


@pytest.mark.parametrize(("data", "field"), [
    ({"offpeak_periods": ["night"]}, "offpeak_periods"),
    ({"v_band_pu": [1.05, 0.95]}, "v_band_pu"),
    ({"peak_threshold_kw": -5}, "peak_threshold_kw"),
    ({"optimal": {"objective": "profit"}}, "optimal.objective"),
    ({"optimal": {"horizon_h": 0}}, "optimal.horizon_h"),
    ({"need_margin": 2}, "need_margin"),
    ({"surprise": 1}, "surprise"),
])
def test_other_bad_values_name_the_field(data, field):
    assert _error({"strategy": "v2g_peak_shaving", **data}).startswith(f"{field}: ")


def _sites(charge_kw=(70.0, 0.0), n=(10, 0)):
    return [{"name": f"s{i}", "bus": i + 1, "charge_kw": c, "n_chargers": k}
            for i, (c, k) in enumerate(zip(charge_kw, n, strict=True))]


def test_a_site_without_a_charger_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"sites\[1\]\.chargers: site 's1' has no charger"):
        ZoneLayout.from_params(5, _sites())


def test_the_simulator_refuses_it_too():
    sim = CoordinatorSimulator()
    sim.init("Coord-0", start="2026-06-01T00:00:00+08:00", n_steps=4)
    with pytest.raises(ValueError, match="has no charger"):
        sim.create(1, "Coordinator", {"strategy": "uncontrolled"}, n_ev=5, sites=_sites())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"ev": {"capacity_kwh": [50.0] * 3}}, "ev.capacity_kwh"),
    ({"ev": {"charge_efficiency": 1.5}}, "ev.charge_efficiency"),
    ({"plants": [{"name": "p", "bus": 1, "kwp": 10, "inverter_kw": 0}]}, "inverter_kw"),
    ({"grid": {"bus_ids": [0]}}, "grid: missing"),
])
def test_bad_zone_parameters_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ZoneLayout.from_params(5, _sites((70.0, 70.0), (10, 10)), **kwargs)


def test_grid_aware_and_optimal_say_what_they_need():
    from components.coordinator.strategies import STRATEGIES

    zone = make_zone(capacity_kwh=None)
    with pytest.raises(ValueError, match="grid_aware.*sensitivities"):
        STRATEGIES["grid_aware"](CoordinatorConfig(strategy="grid_aware"), zone, 900)
    with pytest.raises(ValueError, match="optimal.*capacity"):
        STRATEGIES["optimal"](CoordinatorConfig(strategy="optimal"), zone, 900)


def test_the_simulator_checks_its_inputs():
    sim = CoordinatorSimulator()
    sim.init("Coord-0", start="2026-06-01T00:00:00+08:00", n_steps=4)
    sim.create(1, "Coordinator", {"strategy": "pv_following"}, n_ev=3,
               sites=_sites((70.0, 70.0), (10, 10)))
    view = {"plugged_ids": np.array([0, 7]), "plugged_site": np.array([0, 1]),
            "plugged_soc": np.array([0.5, 0.5]), "plugged_need_kwh": np.zeros(2),
            "plugged_departure_s": np.array([9000.0, 9000.0]),
            "plugged_p_max_kw": np.full(2, 7.0), "plugged_p_min_kw": np.zeros(2),
            "plugged_v2g": np.zeros(2, bool)}
    inputs = {"coord": {a: {"EV-0.fleet": v} for a, v in view.items()}}
    with pytest.raises(RuntimeError, match=r"Coord-0.coord at t=0 .*plugged_ids"):
        sim.step(0, inputs, 3600)
    del inputs["coord"]["plugged_soc"]
    with pytest.raises(ValueError, match="EV inputs incomplete.*plugged_soc"):
        sim.step(0, inputs, 3600)


def test_the_simulator_sends_no_value_unchecked(monkeypatch):
    """Outputs known valid at a glance are ready when the step is made; any other value is
    checked when asked for: an infinite set-point, a NaN total or a NaN in a set-point of the
    strategy's own is an error naming the output, while the rest is still served."""
    from components.coordinator.model import StepResult

    sim = CoordinatorSimulator()
    sim.init("Coord-0", start="2026-06-01T00:00:00+08:00", n_steps=4)
    sim.create(1, "Coordinator", {"strategy": "pv_following"}, n_ev=3,
               sites=_sites((70.0, 70.0), (10, 10)))
    bad = StepResult(p_set_kw=np.array([np.inf, np.nan, 1.0]), curtail_kw=np.array([np.nan]),
                     q_kvar_set=sim.coord.shared_setpoints["q_kvar_set"],
                     shed_kw=sim.coord.shared_setpoints["shed_kw"],
                     totals={"pv_curtailed_kw": np.nan}, transactions=[],
                     peak_threshold_kw=np.nan, n_controlled=2, n_infinite=1)
    monkeypatch.setattr(sim.coord, "step", lambda *args: bad)
    sim.step(0, {}, 900)
    got = sim.get_data({"coord": ["n_controlled", "peak_threshold_kw", "q_kvar_set"]})["coord"]
    assert got["n_controlled"] == 2 and got["peak_threshold_kw"] == 0.0
    assert got["q_kvar_set"] is sim.coord.shared_setpoints["q_kvar_set"]
    for attr in ("p_set_kw", "curtail_kw", "pv_curtailed_kw"):
        with pytest.raises(ValueError, match=f"Coord-0.coord.*'{attr}'"):
            sim.get_data({"coord": [attr]})


@pytest.mark.parametrize("strategy", ["pv_following", "v2g_peak_shaving"])
def test_the_fleets_view_in_other_kinds_of_arrays_is_taken_as_converted(strategy):
    """Lists, other dtypes (values a float32 holds exactly) and strided views give the
    set-points of the same values as C-contiguous float64, int64 and bool arrays."""
    def p_set(view: dict) -> list[bytes]:
        sim = CoordinatorSimulator()
        sim.init("Coord-0", start="2026-06-01T00:00:00+08:00", n_steps=3)
        sim.create(1, "Coordinator", {"strategy": strategy}, n_ev=4,
                   sites=_sites((70.0, 70.0), (10, 10)))
        inputs = {"coord": {a: {"EV-0.fleet": v} for a, v in view.items()}}
        return [sim.step(t, inputs, 1800) and sim.get_data({"coord": ["p_set_kw"]})[
            "coord"]["p_set_kw"].tobytes() for t in (0, 900, 1800)]

    exact = {"plugged_ids": np.array([0, 3, 2]), "plugged_site": np.array([0, 1, 1]),
             "plugged_soc": np.array([0.5, 0.25, 0.75]),
             "plugged_need_kwh": np.array([20.0, 12.5, 4.0]),
             "plugged_departure_s": np.array([10800.0, 14400.0, 36000.0]),
             "plugged_p_max_kw": np.full(3, 7.0), "plugged_p_min_kw": np.array([0.0, -7.0, 0.0]),
             "plugged_v2g": np.array([False, True, False])}
    other = {"plugged_ids": exact["plugged_ids"].astype(np.int32),
             "plugged_site": exact["plugged_site"].tolist(),
             "plugged_soc": exact["plugged_soc"].astype(np.float32),
             "plugged_need_kwh": np.repeat(exact["plugged_need_kwh"], 2)[::2],
             "plugged_departure_s": exact["plugged_departure_s"].tolist(),
             "plugged_p_max_kw": exact["plugged_p_max_kw"].astype(np.float32),
             "plugged_p_min_kw": exact["plugged_p_min_kw"][::-1][::-1],
             "plugged_v2g": exact["plugged_v2g"].astype(np.int64)}
    assert p_set(other) == p_set(exact)


def test_widest_peak_margin_is_checked_against_the_usual_one():
    cfg = CoordinatorConfig.model_validate({"strategy": "v2g_peak_shaving"})
    assert cfg.peak_margin_quantile <= cfg.peak_margin_max_quantile < 1
    CoordinatorConfig.model_validate({"peak_margin_max_quantile": 0})  # never widened
    msg = _error({"peak_margin_quantile": 0.9, "peak_margin_max_quantile": 0.8})
    assert "peak_margin_max_quantile (0.8)" in msg and "peak_margin_quantile (0.9)" in msg
    assert _error({"peak_margin_max_quantile": 1.0}).startswith("peak_margin_max_quantile: ")
