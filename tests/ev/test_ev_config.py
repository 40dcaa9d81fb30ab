"""The ``ev`` scenario section: defaults, the vehicle table and clear errors for bad input."""

import pytest
import yaml
from pydantic import ValidationError

import components.ev.config as config_module
from components.ev.config import EVConfig, example_config
from components.ev.vehicles import DEFAULT_COMMERCIAL_MIX, DEFAULT_PRIVATE_MIX, VEHICLES

HOME = {"name": "estate", "kind": "home", "bus": 3, "chargers": [{"type": "ac7", "count": 10}]}
DEPOT = {"name": "depot", "kind": "depot", "bus": 4, "chargers": [{"type": "dc60", "count": 2}]}


def _errors(data: dict) -> list[dict]:
    with pytest.raises(ValidationError) as info:
        EVConfig.model_validate(data)
    return info.value.errors()


def _locs(errors: list[dict]) -> list[tuple]:
    return [tuple(e["loc"]) for e in errors]


def test_docstring_example_is_valid():
    text = config_module.__doc__.split("Example (YAML)::")[1].split("Bus references")[0]
    section = yaml.safe_load(text)["ev"]
    cfg = EVConfig.model_validate(section)
    assert cfg.fleet_size == 1200
    assert cfg.sites[1].chargers[0].discharge_kw == 15
    assert cfg.sites[0].chargers[1].discharge_kw == 11  # v2g default


def test_defaults_and_round_trip():
    cfg = EVConfig.model_validate({"sites": [HOME, DEPOT]})
    assert cfg.fleet_size == 1000
    assert cfg.vehicle_mix == DEFAULT_PRIVATE_MIX
    again = EVConfig.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg


def test_default_table_is_sourced_and_consistent():
    for mix in (DEFAULT_PRIVATE_MIX, DEFAULT_COMMERCIAL_MIX):
        assert set(mix) <= set(VEHICLES)
        assert sum(mix.values()) == pytest.approx(1.0)
    for name, spec in VEHICLES.items():
        assert spec.source, name
        # plausible EVs: 5-15 kWh per 100 km on the test cycle, 100-800 km rated range
        assert 0.05 <= spec.consumption_kwh_per_km <= 0.2, name
        assert 100 <= spec.capacity_kwh / spec.consumption_kwh_per_km <= 800, name
        assert not spec.v2g or spec.dc_max_kw > 0


def test_negative_capacity_names_the_field():
    bad = {"capacity_kwh": -40, "consumption_kwh_per_km": 0.12, "ac_max_kw": 7}
    errs = _errors({"sites": [HOME, DEPOT], "vehicles": {"my_car": bad},
                    "vehicle_mix": {"my_car": 1.0}})
    assert ("vehicles", "my_car", "capacity_kwh") in _locs(errs)


def test_departure_soc_above_one_names_the_field():
    errs = _errors({"sites": [HOME, DEPOT], "departure_soc_target": 1.2})
    assert _locs(errs) == [("departure_soc_target",)]
    assert "less than or equal to 1" in errs[0]["msg"]


def test_departure_soc_above_soc_max_is_rejected():
    errs = _errors({"sites": [HOME, DEPOT], "soc_max": 0.9, "departure_soc_target": 0.95})
    assert _locs(errs) == [("departure_soc_target",)]
    assert "soc_max" in errs[0]["msg"]


def test_unknown_vehicle_type_names_the_field_and_the_choices():
    errs = _errors({"sites": [HOME, DEPOT], "vehicle_mix": {"flying_car": 1.0}})
    assert _locs(errs) == [("vehicle_mix",)]
    assert "flying_car" in errs[0]["msg"] and "byd_dolphin" in errs[0]["msg"]


def test_custom_vehicle_type_can_be_used():
    car = {"capacity_kwh": 50, "consumption_kwh_per_km": 0.13, "ac_max_kw": 7,
           "dc_max_kw": 80, "v2g": True, "v2g_max_kw": 10, "source": "test"}
    cfg = EVConfig.model_validate({"sites": [HOME, DEPOT], "vehicles": {"my_car": car},
                                   "vehicle_mix": {"my_car": 0.5, "byd_seal": 0.5}})
    assert cfg.vehicle_table()["my_car"].v2g_max_kw == 10


@pytest.mark.parametrize("data, loc, words", [
    ({"vehicle_mix": {"byd_dolphin": 0.5, "byd_seal": 0.4}}, ("vehicle_mix",), "sum to 1"),
    ({"user_mix": {"commuter": 0.5, "shift_worker": 0.2, "commercial": 0.1}}, ("user_mix",),
     "sum to 1"),
    ({"fleet_size": 0}, ("fleet_size",), "greater than 0"),
    ({"charge_efficiency": 1.1}, ("charge_efficiency",), "less than or equal to 1"),
    ({"min_soc_v2g": 0.01, "soc_min": 0.05}, (), "min_soc_v2g"),
    ({"sites": [HOME, DEPOT, HOME]}, (), "unique"),
    ({"sites": [DEPOT]}, (), "'home'"),
    ({"sites": [HOME]}, (), "'depot'"),
    ({"ambient_temp_c_monthly": [20.0] * 11}, ("ambient_temp_c_monthly",), "12 monthly"),
    ({"initial_soc": [0.9, 0.5]}, ("initial_soc",), "low <= high"),
])
def test_bad_values_are_reported(data, loc, words):
    errs = _errors({"sites": [HOME, DEPOT], **data})
    assert any(tuple(e["loc"]) == loc and words in e["msg"] for e in errs), errs


def test_bad_chargers_are_reported():
    site = {**HOME, "chargers": [{"type": "ac7", "count": 5, "p_discharge_max_kw": 3}]}
    errs = _errors({"sites": [site, DEPOT]})
    assert any("only 'v2g' chargers can discharge" in e["msg"] for e in errs)
    site = {**HOME, "chargers": [{"type": "ac7", "count": 5}, {"type": "ac7", "count": 1}]}
    errs = _errors({"sites": [site, DEPOT]})
    assert _locs(errs) == [("sites", 0, "chargers")]
    site = {**HOME, "chargers": [{"type": "ac22", "count": 5}]}
    errs = _errors({"sites": [site, DEPOT]})
    assert _locs(errs)[0][:4] == ("sites", 0, "chargers", 0)
    errs = _errors({"sites": [{**HOME, "kind": "garage"}, DEPOT]})
    assert _locs(errs) == [("sites", 0, "kind")]


def test_weekdays_follow_the_factory_convention():
    cfg = EVConfig.model_validate({"sites": [HOME, DEPOT],
                                   "behaviour": {"workdays": ["Mon-Thu", "sat"],
                                                 "commercial_days": [1, "7"]}})
    assert cfg.behaviour.workdays == [1, 2, 3, 4, 6]
    assert cfg.behaviour.commercial_days == [1, 7]
    assert EVConfig.model_validate({"sites": [HOME, DEPOT]}).behaviour.workdays == [1, 2, 3, 4, 5]
    for bad in ([0], ["Fri-Mon"], ["Funday"], []):
        errs = _errors({"sites": [HOME, DEPOT], "behaviour": {"workdays": bad}})
        assert _locs(errs) == [("behaviour", "workdays")], bad


def test_v2g_vehicle_needs_a_dc_inlet():
    car = {"capacity_kwh": 30, "consumption_kwh_per_km": 0.1, "ac_max_kw": 3.3, "v2g": True,
           "v2g_max_kw": 3}
    errs = _errors({"sites": [HOME, DEPOT], "vehicles": {"tiny": car},
                    "vehicle_mix": {"tiny": 1.0}})
    assert any(tuple(e["loc"])[:2] == ("vehicles", "tiny") and "DC inlet" in e["msg"]
               for e in errs)


def test_example_config_scales_with_the_fleet():
    small, big = example_config(100), example_config(10_000)
    assert small.fleet_size == 100 and big.fleet_size == 10_000
    n_small = sum(s.n_chargers for s in small.sites)
    n_big = sum(s.n_chargers for s in big.sites)
    assert n_big / n_small == pytest.approx(100, rel=0.05)
    assert {s.kind for s in big.sites} == {"home", "workplace", "public", "depot"}
