"""The ``grid`` scenario section: defaults, cross-field rules and messages naming the field."""

import pytest
from pydantic import ValidationError

from components.grid.config import GridConfig, pandapower_network_names, simbench_codes


def _error(**kwargs) -> dict:
    with pytest.raises(ValidationError) as info:
        GridConfig(**kwargs)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    return errors[0]


def test_defaults_and_json_round_trip(tmp_path):
    cfg = GridConfig(source="simbench", code="1-MV-comm--0-sw")
    assert cfg.background_profiles and cfg.background_scale == 1.0
    assert cfg.solver == "compiled" and cfg.max_nonconverged_share == 0.05
    assert cfg.v_band_pu == (0.9, 1.1)
    assert GridConfig.model_validate(cfg.model_dump(mode="json")) == cfg

    path = tmp_path / "net.json"
    path.write_text("{}")
    dumped = GridConfig(source="json", path=path).model_dump(mode="json")
    assert dumped["path"] == str(path) and GridConfig.model_validate(dumped).path == path


def test_bad_simbench_code_names_field_and_suggests():
    err = _error(source="simbench", code="1-MV-comm--0-sww")
    assert err["loc"] == ("code",)
    assert "1-MV-comm--0-sw" in err["msg"] and "unknown SimBench code" in err["msg"]
    err = _error(source="simbench", code="nonsense")
    assert "e.g." in err["msg"] and "1-MV-urban--0-sw" in err["msg"]


def test_simbench_codes_cover_mv_grids():
    codes = simbench_codes()
    for kind in ("rural", "semiurb", "urban", "comm"):
        assert f"1-MV-{kind}--0-sw" in codes


def test_bad_network_name_names_field():
    err = _error(source="pandapower", name="case33")
    assert err["loc"] == ("name",) and "case33bw" in err["msg"]
    # Functions needing arguments, private ones and imported helpers are not networks.
    for not_a_network in ("create_dickert_lv_feeders", "_get_cases_path",
                          "create_empty_network", "runpp"):
        err = _error(source="pandapower", name=not_a_network)
        assert err["loc"] == ("name",)


def test_names_take_no_required_arguments():
    names = pandapower_network_names()
    assert {"case33bw", "create_cigre_network_mv", "mv_oberrhein"} <= set(names)
    assert "create_empty_network" not in names and "from_json" not in names


def test_missing_file_names_path(tmp_path):
    err = _error(source="json", path=tmp_path / "absent.json")
    assert err["loc"] == ("path",) and "not found" in err["msg"]


@pytest.mark.parametrize("source, field", [("simbench", "code"), ("pandapower", "name"),
                                           ("json", "path")])
def test_source_requires_its_field(source, field):
    err = _error(source=source)
    assert err["loc"] == (field,) and f"required when source is {source!r}" in err["msg"]


def test_field_of_another_source_is_rejected():
    err = _error(source="simbench", code="1-MV-comm--0-sw", name="case33bw")
    assert err["loc"] == ("name",) and "source: pandapower" in err["msg"]


@pytest.mark.parametrize("band", [(1.1, 0.9), (1.0, 1.0), (0.0, 1.1)])
def test_voltage_band_must_be_ordered(band):
    err = _error(source="pandapower", name="case33bw", v_band_pu=band)
    assert err["loc"] == ("v_band_pu",) and "low < high" in err["msg"]


@pytest.mark.parametrize("field, value", [("background_scale", -0.1),
                                          ("max_nonconverged_share", 1.5),
                                          ("solver", "lightsim"), ("source", "cim"),
                                          ("extra_key", 1)])
def test_out_of_range_values_name_field(field, value):
    err = _error(**{"source": "pandapower", "name": "case33bw", field: value})
    assert err["loc"][0] == field


def test_solver_choices_and_message():
    assert GridConfig(source="pandapower", name="case33bw", solver="pandapower").solver == (
        "pandapower")
    err = _error(source="pandapower", name="case33bw", solver="newton")
    assert err["loc"] == ("solver",)
    assert "'compiled'" in err["msg"] and "'pandapower'" in err["msg"]
