"""Scenario section ``factories``: defaults, presets, overrides and errors that name the field."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from components.base import StrictModel
from components.factory.config import (
    PRESETS,
    FactoriesConfig,
    FactoryConfig,
    MachineConfig,
    ShiftConfig,
)


class _Scenario(StrictModel):
    """The way the framework embeds the section: a field ``factories``."""

    factories: FactoriesConfig


def _paths(exc: ValidationError) -> list[str]:
    return [".".join(str(p) for p in err["loc"]) for err in exc.errors()]


def _machine(**overrides):
    return {"name": "cnc", "rated_kw": 20.0, "cycle_min": 10.0, **overrides}


def _factory(**overrides):
    return {"name": "f0", "bus": 3, "lines": [{"name": "l0", "machines": [_machine()]}],
            **overrides}


def test_defaults_two_shifts_monday_to_saturday():
    f = FactoryConfig.model_validate(_factory())
    assert [(s.start, s.end) for s in f.shifts] == [("08:00", "16:00"), ("16:00", "24:00")]
    assert all(s.days == [1, 2, 3, 4, 5, 6] for s in f.shifts)
    assert sum(s.length_min for s in f.shifts) == 16 * 60
    assert f.rated_kw == pytest.approx(20.0)
    assert f.holidays == []


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_give_plausible_factories(preset):
    f = FactoryConfig.model_validate({"name": "x", "bus": "lv_7", "preset": preset})
    n_machines = sum(m.count for line in f.lines for m in line.machines)
    assert 30 <= n_machines <= 60
    assert 500.0 < f.machine_rated_kw < 5000.0
    assert f.base_loads.rated_kw > 0
    base = f.base_loads
    critical_base = base.hvac_critical_share + base.other_critical_share
    assert any(m.critical for line in f.lines for m in line.machines) or critical_base > 0
    # round trip through plain data, the way the framework hands sections to simulators
    again = FactoryConfig.model_validate(f.model_dump(mode="json"))
    assert again == f


def test_explicit_fields_override_the_preset():
    f = FactoryConfig.model_validate({
        "name": "x", "bus": 1, "preset": "electronics",
        "base_loads": {"hvac_kw": 800.0},
        "shifts": [{"start": "07:00", "end": "19:00", "days": ["Mon-Fri"]}],
    })
    preset = PRESETS["electronics"]["base_loads"]
    assert f.base_loads.hvac_kw == 800.0
    assert f.base_loads.lighting_kw == preset["lighting_kw"]  # kept from the preset
    assert f.base_loads.hvac_critical_share == preset["hvac_critical_share"]
    assert [(s.start, s.end, s.days) for s in f.shifts] == [("07:00", "19:00", [1, 2, 3, 4, 5])]
    preset_lines = [line["name"] for line in PRESETS["electronics"]["lines"]]
    assert [line.name for line in f.lines] == preset_lines
    own = FactoryConfig.model_validate({**_factory(), "preset": "auto_parts"})
    assert [line.name for line in own.lines] == ["l0"]


@pytest.mark.parametrize("days, expected", [
    (["Mon", "wed", "Friday"], [1, 3, 5]),
    (["Mon-Sat"], [1, 2, 3, 4, 5, 6]),
    ([7, "6"], [6, 7]),
    ("Sun", [7]),
])
def test_weekdays_by_name_range_or_iso_number(days, expected):
    assert ShiftConfig(start="22:00", end="06:00", days=days).days == expected


def test_shift_crossing_midnight_and_24h_end():
    assert ShiftConfig(start="22:00", end="06:00").length_min == 8 * 60
    assert ShiftConfig(start="16:00", end="24:00").length_min == 8 * 60
    assert ShiftConfig(start="00:00", end="24:00").length_min == 24 * 60


@pytest.mark.parametrize("machine, field", [
    ({"rated_kw": -5.0}, "rated_kw"),
    ({"rated_kw": 0.0}, "rated_kw"),
    ({"power_factor": 0.0}, "power_factor"),
    ({"power_factor": 1.2}, "power_factor"),
    ({"count": 0}, "count"),
    ({"idle_share": 1.5}, "idle_share"),
    ({"load_share": -0.1}, "load_share"),
    ({"cycle_min": 0}, "cycle_min"),
    ({"setup_every_jobs": 0}, "setup_every_jobs"),
    ({"mtbf_h": 0}, "mtbf_h"),
    ({"colour": "red"}, "colour"),
])
def test_bad_machine_fields_are_named_with_their_full_path(machine, field):
    factories = [_factory(name="ok"), _factory(name="bad", lines=[
        {"name": "a", "machines": [_machine()]},
        {"name": "b", "machines": [_machine(**machine)]},
    ])]
    with pytest.raises(ValidationError) as info:
        _Scenario.model_validate({"factories": factories})
    assert _paths(info.value) == [f"factories.1.lines.1.machines.0.{field}"]


def test_critical_and_deferrable_exclude_each_other():
    with pytest.raises(ValidationError) as info:
        MachineConfig.model_validate(_machine(critical=True, deferrable=True))
    assert "critical and deferrable" in str(info.value)


@pytest.mark.parametrize("factory, path, words", [
    (_factory(shifts=[{"start": "25:00", "end": "06:00"}]), "shifts.0.start", "between"),
    (_factory(shifts=[{"start": "8h", "end": "16:00"}]), "shifts.0.start", "HH:MM"),
    (_factory(shifts=[{"start": "08:00", "end": "08:00"}]), "shifts.0", "zero length"),
    (_factory(shifts=[{"start": "08:00", "end": "16:00", "days": ["Funday"]}]),
     "shifts.0.days", "Mon..Sun"),
    (_factory(shifts=[{"start": "08:00", "end": "16:00", "days": [0]}]),
     "shifts.0.days", "ISO"),
    (_factory(shifts=[{"start": "08:00", "end": "16:00", "days": ["Sat-Mon"]}]),
     "shifts.0.days", "forward"),
    (_factory(shifts=[]), "shifts", "at least 1"),
    (_factory(holidays=["2026-13-01"]), "holidays.0", "date"),
    (_factory(preset="steelworks"), "preset", "auto_parts"),
    ({"name": "f0", "bus": 1}, "lines", "preset"),
    (_factory(lines=[{"name": "l", "machines": [_machine(), _machine()]}]),
     "lines.0.machines", "twice"),
    (_factory(base_loads={"hvac_kw": -1}), "base_loads.hvac_kw", "greater than or equal"),
    (_factory(base_loads={"lighting_pf": 0}), "base_loads.lighting_pf", "greater than 0"),
    (_factory(warmup_min=-5), "warmup_min", "greater than or equal"),
])
def test_bad_factory_fields_are_named(factory, path, words):
    with pytest.raises(ValidationError) as info:
        FactoryConfig.model_validate(factory)
    assert path in _paths(info.value)
    assert words in str(info.value)


def test_factory_names_must_be_unique():
    with pytest.raises(ValidationError) as info:
        FactoriesConfig.model_validate([_factory(name="a"), _factory(name="b"),
                                        _factory(name="a")])
    assert "2.name" in str(info.value) and "'a'" in str(info.value)


def test_section_is_a_plain_list():
    section = FactoriesConfig.model_validate([_factory(name="a"), {"name": "b", "bus": 4,
                                                                   "preset": "food_processing"}])
    assert [f.name for f in section] == ["a", "b"]
    assert len(section) == 2 and section[1].preset == "food_processing"
    assert isinstance(section.model_dump(mode="json"), list)
    assert FactoryConfig.model_validate(_factory(holidays=["2026-10-01"])).holidays == [
        dt.date(2026, 10, 1)]
