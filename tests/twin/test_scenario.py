"""Scenario files: every kind of bad input is reported with its field, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from twin.cli import main
from twin.scenario import ScenarioError, load_scenario


def _validate(capsys, path) -> tuple[int, str]:
    code = main(["validate", path])
    captured = capsys.readouterr()
    return code, captured.err


def test_tiny_scenario_is_valid(tiny, write_yaml, capsys):
    code, err = _validate(capsys, write_yaml(tiny))
    assert code == 0, err


def test_defaults_are_filled_in(tiny, write_yaml):
    s = load_scenario(write_yaml(tiny))
    assert s.step_s == 900 and s.timezone == "Asia/Shanghai"
    assert (s.location.latitude_deg, s.location.longitude_deg) == (29.56, 106.55)
    assert s.n_steps == 96
    assert str(s.start_ts.tz) == "Asia/Shanghai" and s.start_ts.hour == 0


def test_the_default_zone_is_valid(capsys):
    assert main(["validate", "scenarios/sdg_zone.yaml"]) == 0
    s = load_scenario(None)
    assert len(s.factories) >= 3
    assert len(s.pv.all_plants(s.seed)) >= 20


@pytest.mark.parametrize(
    ("mutate", "field", "allowed"),
    [
        (lambda d: d.pop("grid"), "grid", "required"),
        (lambda d: d.update(days="three"), "days", "number"),
        (lambda d: d["pv"]["plants"][0].update(kwp=-5), "pv.plants.0.kwp", "greater than 0"),
        (lambda d: d["factories"][0].update(bus=999), "factories.0.bus", ""),
        (lambda d: d["pv"]["generated"][0].update(buses=[12, "no such bus"]),
         "pv.generated.0.buses.1", ""),
        (lambda d: d.update(grid={"source": "simbench", "code": "1-MV-nowhere--9-sw"}),
         "grid.code", "1-MV-"),
        (lambda d: d.update(timezone="Mars/Olympus_Mons"), "timezone", "IANA"),
        (lambda d: d.update(days=0), "days", "greater than 0"),
        (lambda d: d.update(dayz=3), "dayz", "allowed: name"),
        (lambda d: d["pv"]["plants"][0].update(colour="blue"), "pv.plants.0.colour",
         "allowed: name"),
        (lambda d: d.update(step_s=7), "step_s", "greater than or equal to 60"),
        (lambda d: d.update(step_s=700), "step_s", "divide a day"),
        (lambda d: d.update(days=0.3), "days", "whole number"),
        (lambda d: d["pv"]["plants"][0].update(mounting="balcony"), "pv.plants.0.mounting",
         "roof"),
        (lambda d: d["factories"].append(dict(d["factories"][0])), "factories", "unique"),
        (lambda d: d.update(events=[{"outage": {"start": "2026-06-03 14:00"}}]), "events.0.type",
         "missing"),
        (lambda d: d.update(events=[{"type": "upstream_outage", "start": "2026-06-03 14:00",
                                     "end": "2026-06-03 12:00"}]), "events.0.end", "after start"),
        (lambda d: d.update(coordinator={"strategy": "cheapest_guess"}), "coordinator.strategy",
         "pv_following"),
        (lambda d: d.update(grid={"source": "pandapower", "name": "no_such_net"}), "grid.name",
         ""),
        (lambda d: d["ev"].update(vehicles={"tiny_car": {"capacity_kwh": -20,
                                                          "consumption_kwh_per_km": 0.1,
                                                          "ac_max_kw": 7}}),
         "ev.vehicles.tiny_car.capacity_kwh", "greater than 0"),
        (lambda d: d["ev"].update(departure_soc_target=1.2), "ev.departure_soc_target", "1"),
        (lambda d: d["ev"]["sites"][1].update(bus=4242), "ev.sites.1.bus", ""),
        (lambda d: d["ev"].update(vehicle_mix={"flying_car": 1.0}), "ev.vehicle_mix",
         "byd_dolphin"),
        (lambda d: d["ev"].update(fleet_size=0), "ev.fleet_size", "greater than 0"),
    ],
    ids=["missing-field", "wrong-type", "negative-capacity", "unknown-bus-index",
         "unknown-bus-name", "unknown-simbench-code", "bad-timezone", "zero-days", "unknown-key",
         "unknown-nested-key", "step-too-short", "step-not-dividing-day", "partial-step",
         "bad-literal", "duplicate-factory", "event-without-type", "event-ends-before-start",
         "unknown-strategy",
         "unknown-pandapower-net",
         "ev-negative-capacity", "ev-departure-soc-above-1", "ev-site-on-missing-bus",
         "ev-unknown-vehicle-type", "ev-empty-fleet"],
)
def test_bad_scenario_names_the_field(tiny, write_yaml, capsys, mutate, field, allowed):
    mutate(tiny)
    code, err = _validate(capsys, write_yaml(tiny))
    assert code == 2
    assert f": {field}: " in err, err
    assert allowed in err
    assert "Traceback" not in err


def test_every_problem_is_reported_at_once(tiny, write_yaml, capsys):
    tiny["days"] = 0
    tiny["timezone"] = "Nowhere/Special"
    tiny["pv"]["plants"][0]["kwp"] = -1
    code, err = _validate(capsys, write_yaml(tiny))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 3
    for field in ("days", "timezone", "pv.plants.0.kwp"):
        assert any(f": {field}: " in line for line in lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", "not valid YAML at line"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("", "must be a YAML mapping"),
    ],
    ids=["non-yaml", "list", "empty"],
)
def test_unreadable_files(write_yaml, capsys, text, expected):
    code, err = _validate(capsys, write_yaml(text))
    assert code == 2 and expected in err and "Traceback" not in err


def test_missing_file(capsys, tmp_path):
    code, err = _validate(capsys, str(tmp_path / "absent.yaml"))
    assert code == 2 and "no such file" in err


def test_overrides_set_nested_fields(tiny, write_yaml):
    s = load_scenario(write_yaml(tiny), ["pv.losses_pct=11.5", "pv.plants.0.kwp=900",
                                         "weather.intraday_sigma=0.2", "grid.v_band_pu=[0.95, 1.05]"])
    assert s.pv.losses_pct == 11.5
    assert s.pv.plants[0].kwp == 900
    assert s.weather.intraday_sigma == 0.2
    assert s.grid.v_band_pu == (0.95, 1.05)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pv.colour=blue", "pv.colour: no such field"),
        ("nothing=1", "nothing: no such field"),
        ("pv.plants.4.kwp=1", "pv.plants.4: no such list item"),
        ("pv.plants.x.kwp=1", "pv.plants.x: no such list item"),
        ("days", "expected PATH=VALUE"),
        ("days=-1", "days: Input should be greater than 0"),
        ("pv.plants.0.kwp=lots", "pv.plants.0.kwp: Input should be a valid number"),
    ],
)
def test_bad_overrides_fail_cleanly(tiny, write_yaml, capsys, override, message):
    code = main(["run", write_yaml(tiny), "--set", override, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert "Traceback" not in err


def test_cli_exit_code_and_no_traceback_in_a_real_process(tiny, write_yaml):
    tiny["pv"]["plants"][0]["kwp"] = -1
    proc = subprocess.run([sys.executable, "-m", "twin.cli", "validate", write_yaml(tiny)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "pv.plants.0.kwp" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_scenario_error_lists_problems(tiny, write_yaml):
    tiny["days"] = -1
    with pytest.raises(ScenarioError) as info:
        load_scenario(write_yaml(tiny))
    assert info.value.problems == ["days: Input should be greater than 0"]
