"""Scenario section of the PV domain: defaults, plant expansion and clear errors."""

import pytest
from pydantic import ValidationError

from components.pv.config import (
    DEFAULT_DC_AC_RATIO,
    LocationConfig,
    PVConfig,
    PVPlantConfig,
    WeatherConfig,
)


def _error_locs(exc: ValidationError) -> list[tuple]:
    return [e["loc"] for e in exc.errors()]


def test_defaults_describe_chongqing():
    loc = LocationConfig()
    assert (loc.latitude_deg, loc.longitude_deg) == (29.56, 106.55)
    assert 200 <= loc.altitude_m <= 400
    w = WeatherConfig()
    assert w.source == "synthetic" and len(w.monthly_mean_kc) == 12
    # winter is the most overcast season of Chongqing, August the clearest month
    assert w.monthly_mean_kc[7] == max(w.monthly_mean_kc)
    assert max(w.monthly_mean_kc[0], w.monthly_mean_kc[11]) < min(w.monthly_mean_kc[6:8])


def test_inverter_defaults_to_kwp_over_dc_ac_ratio():
    p = PVPlantConfig(name="a", bus=3, kwp=120.0)
    assert p.inverter_kw == pytest.approx(120.0 / DEFAULT_DC_AC_RATIO)
    assert PVPlantConfig(name="a", bus=3, kwp=120.0, inverter_kw=110.0).inverter_kw == 110.0


@pytest.mark.parametrize(
    "section, expected_loc",
    [
        ({"plants": [{"name": "a", "bus": 0, "kwp": -5}]}, ("plants", 0, "kwp")),
        ({"plants": [{"name": "a", "bus": 0, "kwp": 5, "tilt_deg": 95}]},
         ("plants", 0, "tilt_deg")),
        ({"plants": [{"name": "a", "bus": 0, "kwp": 5, "azimuth_deg": 360}]},
         ("plants", 0, "azimuth_deg")),
        ({"plants": [{"name": "a", "bus": 0, "kwp": 5, "mounting": "wall"}]},
         ("plants", 0, "mounting")),
        ({"plants": [{"name": "a", "bus": 0, "kwp": 5, "colour": "blue"}]},
         ("plants", 0, "colour")),
        ({"plants": [{"name": "a", "bus": 0, "kwp": 5}, {"name": "a", "bus": 1, "kwp": 5}]},
         ("plants",)),
        ({"plants": [{"name": "pv-2", "bus": 0, "kwp": 5}],
          "generated": [{"total_kwp": 10, "count": 2, "buses": [1]}]}, ("generated",)),
        ({"generated": [{"total_kwp": 10, "count": 0, "buses": [1]}]}, ("generated", 0, "count")),
        ({"generated": [{"total_kwp": 10, "count": 2, "buses": []}]}, ("generated", 0, "buses")),
        ({"generated": [{"total_kwp": 10, "count": 2, "buses": [1], "tilt_deg": [30, 10]}]},
         ("generated", 0, "tilt_deg")),
        ({"dc_model": "cec", "cec_module": "No_Such_Module"}, ("cec_module",)),
        ({"dc_model": "sapm"}, ("dc_model",)),
        ({"losses_pct": 100}, ("losses_pct",)),
    ],
)
def test_bad_pv_config_names_the_field(section, expected_loc):
    with pytest.raises(ValidationError) as err:
        PVConfig.model_validate(section)
    assert expected_loc in _error_locs(err.value)


@pytest.mark.parametrize(
    "section, expected_loc",
    [
        ({"source": "file"}, ("file",)),
        ({"source": "file", "file": __file__}, ("format",)),
        ({"source": "file", "file": "/no/such/weather.epw"}, ("file",)),
        ({"source": "cloud"}, ("source",)),
        ({"monthly_mean_kc": [0.5] * 11}, ("monthly_mean_kc",)),
        ({"monthly_mean_kc": [1.2] * 12}, ("monthly_mean_kc",)),
        ({"max_clear_sky_index": 0.9}, ("max_clear_sky_index",)),
    ],
)
def test_bad_weather_config_names_the_field(section, expected_loc):
    with pytest.raises(ValidationError) as err:
        WeatherConfig.model_validate(section)
    assert expected_loc in _error_locs(err.value)


def test_bad_location_names_the_field():
    with pytest.raises(ValidationError) as err:
        LocationConfig(latitude_deg=95)
    assert ("latitude_deg",) in _error_locs(err.value)


def test_file_format_from_suffix_or_field(tmp_path):
    for name in ("b.EPW", "b.csv", "b.dat"):
        (tmp_path / name).write_text("")
    assert WeatherConfig(source="file", file=str(tmp_path / "b.EPW")).file_format() == "epw"
    assert WeatherConfig(source="file", file=str(tmp_path / "b.csv")).file_format() == "tmy3"
    assert WeatherConfig(source="file", file=str(tmp_path / "b.dat"),
                         format="epw").file_format() == "epw"


def test_all_plants_order_buses_and_seeded_jitter():
    cfg = PVConfig.model_validate({
        "plants": [{"name": "roof-a", "bus": "LV1", "kwp": 50}],
        "generated": [
            {"total_kwp": 300, "count": 5, "buses": [4, 7], "tilt_deg": [5, 25],
             "azimuth_deg": [150, 210], "name_prefix": "res"},
            {"total_kwp": 40, "count": 2, "buses": [9], "mounting": "carport", "dc_ac_ratio": 1.0},
        ],
    })
    plants = cfg.all_plants(seed=7)
    assert [p.name for p in plants] == ["roof-a", "res-1", "res-2", "res-3", "res-4", "res-5",
                                        "pv-1", "pv-2"]
    assert [p.bus for p in plants] == ["LV1", 4, 7, 4, 7, 4, 9, 9]
    res = plants[1:6]
    assert sum(p.kwp for p in res) == pytest.approx(300)
    assert all(5 <= p.tilt_deg <= 25 and 150 <= p.azimuth_deg <= 210 for p in res)
    assert len({p.tilt_deg for p in res}) == 5
    assert all(p.inverter_kw == pytest.approx(p.kwp / 1.2) for p in res)
    assert plants[6].mounting == "carport" and plants[6].inverter_kw == pytest.approx(20)
    assert cfg.all_plants(seed=7) == plants
    other = cfg.all_plants(seed=8)
    assert [p.name for p in other] == [p.name for p in plants]
    assert [p.tilt_deg for p in other] != [p.tilt_deg for p in plants]


def test_azimuth_range_may_wrap_through_north():
    cfg = PVConfig.model_validate({"generated": [
        {"total_kwp": 10, "count": 50, "buses": [1], "azimuth_deg": [300, 360]}]})
    az = [p.azimuth_deg for p in cfg.all_plants(0)]
    assert all(0 <= a < 360 for a in az)


def test_section_round_trips_through_json():
    cfg = PVConfig.model_validate({
        "dc_model": "cec",
        "plants": [{"name": "a", "bus": 2, "kwp": 10}],
        "generated": [{"total_kwp": 30, "count": 3, "buses": [1], "tilt_deg": [5, 25]}],
    })
    again = PVConfig.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg
    assert again.all_plants(1) == cfg.all_plants(1)
