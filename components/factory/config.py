"""Scenario section ``factories``: machines, lines, shift calendars, base loads and presets.

A factory is a set of production lines, each a list of machine groups (``count`` identical
machines), plus building base loads (HVAC, lighting, compressed air, other). The section is a
plain list of factories (:class:`FactoriesConfig` is a ``RootModel`` over that list), so a
scenario reads::

    factories:
      - {name: changan_parts, bus: 12, preset: auto_parts}
      - name: laptop_plant
        bus: lv_bus_7
        preset: electronics
        base_loads: {hvac_kw: 800}        # overrides one field of the preset
        holidays: [2026-10-01, 2026-10-02]

A ``preset`` fills ``lines``, ``shifts`` and ``base_loads`` with plausible defaults of a typical
Chongqing industry; fields given explicitly win (``lines`` and ``shifts`` as a whole,
``base_loads`` field by field).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import ConfigDict, Field, RootModel, field_validator, model_validator

from components.base import BusRef, StrictModel

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Weekday names in ISO order: ``mon`` is ISO weekday 1, ``sun`` is 7."""

_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")


def clock_minutes(value: str, *, allow_24: bool) -> int:
    """Minutes after midnight of a ``"HH:MM"`` clock time; ``"24:00"`` only if ``allow_24``.

    Raises ``ValueError`` with the accepted format when ``value`` is not a clock time.
    """
    m = _HHMM.match(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"must be a clock time 'HH:MM', got {value!r}")
    hours, minutes = int(m.group(1)), int(m.group(2))
    if hours == 24 and minutes == 0 and allow_24:
        return 24 * 60
    if hours > 23 or minutes > 59:
        upper = "'24:00'" if allow_24 else "'23:59'"
        raise ValueError(f"must be between '00:00' and {upper}, got {value!r}")
    return hours * 60 + minutes


_WEEKDAYS: dict[str, int] = {
    **{name: i for i, name in enumerate(WEEKDAY_NAMES, start=1)},
    **{name: i for i, name in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"), start=1)},
}


def _weekday_numbers(item: Any) -> list[int]:
    """ISO weekday numbers (Mon=1 .. Sun=7) of one ``days`` entry: number, name or range."""
    if isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= 7:
        return [item]
    if isinstance(item, str):
        text = item.strip().lower()
        if text in _WEEKDAYS:
            return [_WEEKDAYS[text]]
        if text.isdigit():
            return _weekday_numbers(int(text))
        first, sep, last = text.partition("-")
        if sep and first.strip() in _WEEKDAYS and last.strip() in _WEEKDAYS:
            lo, hi = _WEEKDAYS[first.strip()], _WEEKDAYS[last.strip()]
            if hi < lo:
                raise ValueError(f"weekday range {item!r} must run forward, e.g. 'Mon-Sat'")
            return list(range(lo, hi + 1))
    raise ValueError(
        f"weekday must be a name (Mon..Sun or Monday..Sunday), a range ('Mon-Sat') or an ISO "
        f"number 1 (Mon) .. 7 (Sun), got {item!r}"
    )


class MachineConfig(StrictModel):
    """A group of ``count`` identical machines and their duty cycle."""

    name: str = Field(min_length=1, description="Machine (group) name, unique within its line.")
    count: int = Field(1, ge=1, description="Number of identical machines in the group.")
    rated_kw: float = Field(gt=0, description="Rated electric power of one machine [kW].")
    power_factor: float = Field(0.85, gt=0, le=1, description="Displacement power factor [-].")
    load_share: float = Field(
        0.7, ge=0, le=1, description="Mean share of rated power while processing a job [-]."
    )
    load_cv: float = Field(
        0.1, ge=0, le=1, description="Coefficient of variation of the per-job power share [-]."
    )
    idle_share: float = Field(
        0.2, ge=0, le=1, description="Share of rated power drawn when idle during a shift [-]."
    )
    setup_share: float = Field(
        0.3, ge=0, le=1, description="Share of rated power drawn during a set-up [-]."
    )
    cycle_min: float = Field(
        ge=0.5,
        description="Mean processing time of one job [min]; model faster cycles as a job that "
        "processes a batch of parts (a box, a magazine, a coil).",
    )
    cycle_cv: float = Field(
        0.1, ge=0, le=2, description="Coefficient of variation of the job duration [-]."
    )
    gap_min: float = Field(
        1.0, ge=0, description="Mean idle gap between jobs (loading, waiting) [min]."
    )
    setup_min: float = Field(0.0, ge=0, description="Mean duration of one set-up [min].")
    setup_cv: float = Field(
        0.2, ge=0, le=2, description="Coefficient of variation of the set-up duration [-]."
    )
    setup_every_jobs: int = Field(20, ge=1, description="A set-up follows every N-th job [-].")
    mtbf_h: float | None = Field(
        400.0, gt=0,
        description="Mean processing time between breakdowns [h]; null for no breakdowns.",
    )
    mttr_min: float = Field(90.0, gt=0, description="Mean repair time after a breakdown [min].")
    critical: bool = Field(False, description="Must stay supplied in an outage.")
    deferrable: bool = Field(False, description="Its consumption could be shifted in time.")

    @model_validator(mode="after")
    def _not_critical_and_deferrable(self) -> MachineConfig:
        if self.critical and self.deferrable:
            raise ValueError(
                f"machine {self.name!r}: critical and deferrable exclude each other; "
                "set at most one of them to true"
            )
        return self


class LineConfig(StrictModel):
    """A production line: machine groups that share the factory's shift calendar."""

    name: str = Field(min_length=1, description="Line name, unique within its factory.")
    machines: list[MachineConfig] = Field(min_length=1, description="Machine groups of the line.")

    @field_validator("machines")
    @classmethod
    def _unique_machine_names(cls, machines: list[MachineConfig]) -> list[MachineConfig]:
        _require_unique([m.name for m in machines], "machine")
        return machines


class ShiftConfig(StrictModel):
    """A shift: clock times in the scenario's local time and the weekdays it starts on.

    A shift whose end is not after its start crosses midnight (``22:00``-``06:00`` that starts
    on Friday ends on Saturday 06:00). ``"24:00"`` is allowed as an end.
    """

    start: str = Field(description="Start clock time 'HH:MM' (local).")
    end: str = Field(description="End clock time 'HH:MM' or '24:00' (local).")
    days: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6],
        description="Weekdays the shift starts on: names 'Mon'..'Sun', ranges 'Mon-Sat' or "
        "ISO numbers 1 (Mon) .. 7 (Sun); stored as sorted ISO numbers.",
    )

    @field_validator("start")
    @classmethod
    def _check_start(cls, value: str) -> str:
        clock_minutes(value, allow_24=False)
        return value

    @field_validator("end")
    @classmethod
    def _check_end(cls, value: str) -> str:
        clock_minutes(value, allow_24=True)
        return value

    @field_validator("days", mode="before")
    @classmethod
    def _normalise_days(cls, value: Any) -> list[int]:
        if isinstance(value, (str, int)):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError("must be a non-empty list of weekdays, e.g. ['Mon-Sat'] or [1, 2, 3]")
        days: set[int] = set()
        for item in value:
            days.update(_weekday_numbers(item))
        return sorted(days)

    @model_validator(mode="after")
    def _positive_length(self) -> ShiftConfig:
        if self.length_min <= 0:
            raise ValueError(f"shift {self.start}-{self.end} has zero length")
        return self

    @property
    def start_min(self) -> int:
        """Start in minutes after local midnight of the start day [min]."""
        return clock_minutes(self.start, allow_24=False)

    @property
    def length_min(self) -> int:
        """Length of the shift [min]; a shift that crosses midnight ends on the next day."""
        end = clock_minutes(self.end, allow_24=True)
        length = end - self.start_min
        return length + 24 * 60 if length < 0 else length


def default_shifts() -> list[ShiftConfig]:
    """Two shifts Monday to Saturday: 08:00-16:00 and 16:00-24:00."""
    return [ShiftConfig(start="08:00", end="16:00"), ShiftConfig(start="16:00", end="24:00")]


class BaseLoadConfig(StrictModel):
    """Building loads of a factory, each a rated power with its schedule.

    Every load draws ``floor_share`` of its rating at all times (night, Sunday, holiday floor:
    security lighting, servers, leakage of the air network, frost or humidity protection). On top:

    - HVAC draws the rest of its rating during working hours (from the warm-up before a shift)
      scaled by a seasonal factor for Chongqing's climate (hot humid summer peaking around
      ``hvac_cooling_peak_doy``, mild winter heating, ``hvac_offseason_share`` in spring/autumn);
      the floor is scaled by the same factor.
    - Lighting and other loads (offices, IT, canteen) draw the rest during working hours.
    - Compressed air draws the rest in proportion to the rated power of machines that are
      processing a job at that instant.

    ``*_critical_share`` is the share of each load's draw that must stay supplied in an outage.
    Base loads are never counted as deferrable; flexibility comes from deferrable machines.
    """

    hvac_kw: float = Field(0.0, ge=0, description="Rated electric power of HVAC [kW].")
    hvac_pf: float = Field(0.85, gt=0, le=1, description="HVAC power factor [-].")
    hvac_floor_share: float = Field(0.1, ge=0, le=1, description="HVAC off-hours share [-].")
    hvac_critical_share: float = Field(0.0, ge=0, le=1, description="HVAC critical share [-].")
    hvac_offseason_share: float = Field(
        0.3, ge=0, le=1, description="HVAC seasonal factor in spring and autumn [-]."
    )
    hvac_heating_share: float = Field(
        0.5, ge=0, le=1, description="HVAC seasonal factor at the winter peak [-]."
    )
    hvac_cooling_peak_doy: int = Field(
        205, ge=1, le=366, description="Day of year of the cooling peak (factor 1) [d]."
    )
    lighting_kw: float = Field(0.0, ge=0, description="Rated lighting power [kW].")
    lighting_pf: float = Field(0.95, gt=0, le=1, description="Lighting power factor [-].")
    lighting_floor_share: float = Field(
        0.1, ge=0, le=1, description="Lighting off-hours share (security lighting) [-]."
    )
    lighting_critical_share: float = Field(
        0.1, ge=0, le=1, description="Lighting critical share (emergency lighting) [-]."
    )
    compressed_air_kw: float = Field(0.0, ge=0, description="Rated compressor power [kW].")
    compressed_air_pf: float = Field(0.85, gt=0, le=1, description="Compressor power factor [-].")
    compressed_air_floor_share: float = Field(
        0.15, ge=0, le=1, description="Compressor share at no production (leakage) [-]."
    )
    compressed_air_critical_share: float = Field(
        0.0, ge=0, le=1, description="Compressed-air critical share [-]."
    )
    other_kw: float = Field(0.0, ge=0, description="Rated power of other loads [kW].")
    other_pf: float = Field(0.9, gt=0, le=1, description="Other loads power factor [-].")
    other_floor_share: float = Field(
        0.5, ge=0, le=1, description="Other loads off-hours share (IT, cold stores) [-]."
    )
    other_critical_share: float = Field(
        0.3, ge=0, le=1, description="Other loads critical share [-]."
    )

    @property
    def rated_kw(self) -> float:
        """Sum of the base-load ratings [kW]."""
        return self.hvac_kw + self.lighting_kw + self.compressed_air_kw + self.other_kw


PresetName = Literal["auto_parts", "electronics", "food_processing"]


def _machine(name: str, count: int, rated_kw: float, pf: float, load: float, idle: float,
             cycle: float, setup: float = 0.0, every: int = 20, setup_share: float = 0.3,
             gap: float = 1.0, **flags: Any) -> dict[str, Any]:
    return {"name": name, "count": count, "rated_kw": rated_kw, "power_factor": pf,
            "load_share": load, "idle_share": idle, "cycle_min": cycle, "setup_min": setup,
            "setup_every_jobs": every, "setup_share": setup_share, "gap_min": gap, **flags}


PRESETS: dict[str, dict[str, Any]] = {
    # Automotive parts supplier (stamping, machining, welding, heat treatment, painting):
    # two shifts Monday-Saturday, ~49 machines, ~3.3 MW machine rating.
    "auto_parts": {
        "lines": [
            {"name": "stamping", "machines": [
                _machine("press_400t", 3, 90.0, 0.80, 0.55, 0.25, 20.0, 35.0, 12, gap=3.0),
            ]},
            {"name": "machining", "machines": [
                _machine("cnc_lathe", 14, 22.0, 0.82, 0.55, 0.20, 12.0, 25.0, 40),
                _machine("machining_center", 10, 30.0, 0.82, 0.50, 0.20, 18.0, 30.0, 30),
            ]},
            {"name": "welding", "machines": [
                _machine("robot_weld_cell", 10, 45.0, 0.75, 0.45, 0.10, 6.0, 15.0, 50, gap=0.5),
            ]},
            {"name": "heat_treatment", "machines": [
                _machine("induction_hardening", 2, 250.0, 0.90, 0.70, 0.15, 30.0, 20.0, 16,
                         gap=5.0, deferrable=True),
            ]},
            {"name": "paint_assembly", "machines": [
                _machine("paint_curing_oven", 2, 160.0, 0.95, 0.65, 0.45, 45.0, gap=2.0,
                         critical=True),
                _machine("assembly_test_bench", 8, 11.0, 0.88, 0.60, 0.30, 8.0),
            ]},
        ],
        "base_loads": {"hvac_kw": 250.0, "lighting_kw": 120.0, "compressed_air_kw": 180.0,
                       "other_kw": 80.0},
    },
    # Laptop / electronics assembly (SMT, reflow, final assembly, burn-in, packaging): two
    # 12-hour shifts Monday-Saturday, clean-room HVAC, burn-in racks are deferrable.
    "electronics": {
        "lines": [
            {"name": "smt", "machines": [
                _machine("smt_placement_line", 8, 35.0, 0.90, 0.60, 0.35, 10.0, 40.0, 30,
                         gap=0.5),
                _machine("reflow_oven", 8, 60.0, 0.95, 0.75, 0.60, 10.0, gap=0.5),
            ]},
            {"name": "assembly", "machines": [
                _machine("final_assembly_line", 10, 15.0, 0.90, 0.70, 0.40, 5.0, gap=0.5),
            ]},
            {"name": "test", "machines": [
                _machine("burn_in_rack", 12, 40.0, 0.95, 0.80, 0.05, 120.0, 10.0, 1,
                         setup_share=0.1, gap=5.0, deferrable=True),
            ]},
            {"name": "packaging", "machines": [
                _machine("packaging_line", 4, 12.0, 0.85, 0.60, 0.30, 10.0),
            ]},
        ],
        "shifts": [{"start": "08:00", "end": "20:00", "days": ["Mon-Sat"]},
                   {"start": "20:00", "end": "08:00", "days": ["Mon-Sat"]}],
        "base_loads": {"hvac_kw": 600.0, "hvac_floor_share": 0.3, "hvac_critical_share": 0.3,
                       "lighting_kw": 150.0, "compressed_air_kw": 90.0,
                       "other_kw": 120.0, "other_critical_share": 0.8},
    },
    # Food processing (hot-pot seasoning, noodles, pickles): two shifts every day; blast
    # freezers are critical, cold stores sit in the always-on "other" loads.
    "food_processing": {
        "lines": [
            {"name": "preparation", "machines": [
                _machine("mixer", 6, 30.0, 0.82, 0.65, 0.15, 25.0, 20.0, 8, gap=3.0),
                _machine("cooking_kettle", 8, 45.0, 0.98, 0.75, 0.20, 60.0, 30.0, 6, gap=5.0),
            ]},
            {"name": "noodles", "machines": [
                _machine("noodle_line", 4, 55.0, 0.85, 0.70, 0.25, 30.0, 25.0, 10, gap=2.0),
            ]},
            {"name": "cold_chain", "machines": [
                _machine("blast_freezer", 3, 75.0, 0.85, 0.80, 0.40, 90.0, gap=10.0,
                         critical=True),
            ]},
            {"name": "packaging", "machines": [
                _machine("seasoning_filler", 6, 7.5, 0.85, 0.65, 0.30, 6.0, 10.0, 40, gap=0.5),
                _machine("packaging_line", 10, 15.0, 0.85, 0.60, 0.30, 10.0, 15.0, 24),
            ]},
        ],
        "shifts": [{"start": "06:00", "end": "14:00", "days": ["Mon-Sun"]},
                   {"start": "14:00", "end": "22:00", "days": ["Mon-Sun"]}],
        "base_loads": {"hvac_kw": 120.0, "lighting_kw": 60.0, "compressed_air_kw": 60.0,
                       "other_kw": 250.0, "other_floor_share": 0.8, "other_critical_share": 0.9},
    },
}
"""Defaults per preset; :class:`FactoryConfig` copies them into fields the scenario leaves out."""


class FactoryConfig(StrictModel):
    """One factory at one grid bus."""

    name: str = Field(min_length=1, description="Factory name, unique in the scenario.")
    bus: BusRef = Field(description="Grid bus: pandapower index or bus name.")
    preset: PresetName | None = Field(
        None, description="Industry preset filling lines, shifts and base loads left out."
    )
    lines: list[LineConfig] = Field(
        default_factory=list, validate_default=True, description="Production lines."
    )
    shifts: list[ShiftConfig] = Field(
        default_factory=default_shifts, min_length=1,
        description="Shift calendar; default two shifts Mon-Sat 08:00-16:00 and 16:00-24:00.",
    )
    base_loads: BaseLoadConfig = Field(
        default_factory=BaseLoadConfig, description="HVAC, lighting, compressed air, other."
    )
    holidays: list[dt.date] = Field(
        default_factory=list, description="Dates (YYYY-MM-DD) on which no shift starts."
    )
    warmup_min: float = Field(
        15.0, ge=0, le=240,
        description="Machines idle and building loads run this long before a shift [min].",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") not in PRESETS:
            return data  # an unknown preset is reported by the field's own validation
        preset = PRESETS[data["preset"]]
        filled = dict(data)
        for key in ("lines", "shifts"):
            if key in preset and key not in filled:
                filled[key] = preset[key]
        given = filled.get("base_loads")
        if isinstance(given, BaseLoadConfig):
            given = given.model_dump(exclude_unset=True)
        if given is None or isinstance(given, dict):
            filled["base_loads"] = {**preset.get("base_loads", {}), **(given or {})}
        return filled

    @field_validator("lines")
    @classmethod
    def _lines_present(cls, lines: list[LineConfig]) -> list[LineConfig]:
        if not lines:
            raise ValueError(
                "a factory needs at least one line; give 'lines' or a 'preset' "
                f"(one of {', '.join(sorted(PRESETS))})"
            )
        _require_unique([line.name for line in lines], "line")
        return lines

    @property
    def machine_rated_kw(self) -> float:
        """Sum over all machines of rating times count [kW]."""
        return sum(m.rated_kw * m.count for line in self.lines for m in line.machines)

    @property
    def rated_kw(self) -> float:
        """Machine ratings plus base-load ratings: an upper bound of the factory's draw [kW]."""
        return self.machine_rated_kw + self.base_loads.rated_kw


class FactoriesConfig(RootModel[list[FactoryConfig]]):
    """The scenario section ``factories``: a list of factories with unique names."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _unique_names(self) -> FactoriesConfig:
        seen: dict[str, int] = {}
        for i, factory in enumerate(self.root):
            if factory.name in seen:
                raise ValueError(
                    f"{i}.name: factory name {factory.name!r} is already used by entry "
                    f"{seen[factory.name]}; names must be unique"
                )
            seen[factory.name] = i
        return self

    def __iter__(self) -> Iterator[FactoryConfig]:
        """Iterate over the factories (not over pydantic fields)."""
        return iter(self.root)

    def __len__(self) -> int:
        return len(self.root)

    def __getitem__(self, index: int) -> FactoryConfig:
        return self.root[index]


def _require_unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} name {name!r} appears twice; {what} names must be unique")
        seen.add(name)
