"""Scenario files: the pydantic schema of a demonstration zone, loading, overrides, checks.

A scenario is YAML. Each component owns the schema of its own section
(``components/<domain>/config.py``); this module composes them, adds the clock (start, days,
step), checks what needs more than one section (bus references against the grid), and turns
every problem into one line ``field.path: what is wrong (what is allowed)``.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator

from components.base import StrictModel, TimeZoneName
from components.comm.config import CommConfig
from components.coordinator.config import CoordinatorConfig
from components.ev.config import EVConfig
from components.factory.config import FactoryConfig
from components.grid.config import GridConfig
from components.grid.events import Event, schedule_problems
from components.hil.config import HILConfig, hil_problems
from components.pv.config import LocationConfig, PVConfig, WeatherConfig

DEFAULT_SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "sdg_zone.yaml"

# Ministry of Ecology and Environment & National Bureau of Statistics of China, "Announcement on
# the 2022 electricity CO2 emission factors" (Dec 2024): Central China regional grid average
# 0.5395 kgCO2/kWh = 0.5395 t/MWh.
CENTRAL_CHINA_GRID_T_PER_MWH = 0.5395


class ScenarioError(Exception):
    """A scenario (or an override of it) is invalid. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class KPIConfig(StrictModel):
    """How results are valued."""

    co2_t_per_mwh: float = Field(
        CENTRAL_CHINA_GRID_T_PER_MWH, ge=0,
        description="CO2 emission factor of grid imports [t/MWh]; default: Central China grid, "
                    "MEE/NBS 2022 electricity emission factors",
    )


class Scenario(StrictModel):
    """A Solar Digital Grid demonstration zone and how long to simulate it."""

    name: str = Field(min_length=1, description="Name of the zone; used for run folders")
    description: str = ""
    start: datetime = Field(datetime(2026, 6, 1), description="Start of the run, local time")
    timezone: TimeZoneName = Field("Asia/Shanghai", description="IANA time zone of `start`")
    step_s: int = Field(900, ge=60, le=3600, description="Step size [s]")
    days: float = Field(7.0, gt=0, le=3660, description="Simulated horizon [d]")
    seed: int = Field(0, ge=0, description="Seed of every random stream of the run")
    location: LocationConfig = LocationConfig()
    weather: WeatherConfig = WeatherConfig()
    grid: GridConfig
    pv: PVConfig = PVConfig()
    factories: list[FactoryConfig] = []
    ev: EVConfig | None = None
    kpi: KPIConfig = KPIConfig()
    coordinator: CoordinatorConfig | None = None
    comm: CommConfig | None = None
    hil: HILConfig | None = None
    events: list[Event] | None = None

    @field_validator("step_s")
    @classmethod
    def _step_divides_day(cls, step_s: int) -> int:
        if 86400 % step_s:
            raise ValueError("must divide a day (86400 s) evenly, e.g. 300, 900, 1800 or 3600")
        return step_s

    @field_validator("events")
    @classmethod
    def _events_in_horizon(cls, events: list | None, info: ValidationInfo) -> list | None:
        d = info.data
        if not events or not all(k in d for k in ("start", "timezone", "step_s", "days")):
            return events
        ts = pd.Timestamp(d["start"])
        ts = ts.tz_localize(d["timezone"]) if ts.tzinfo is None else ts.tz_convert(d["timezone"])
        n_steps = round(d["days"] * 86400 / d["step_s"])
        problems = schedule_problems(events, ts, n_steps, d["step_s"])
        if problems:
            raise ValueError("; ".join(problems))
        return events

    @field_validator("factories")
    @classmethod
    def _unique_factories(cls, factories: list[FactoryConfig]) -> list[FactoryConfig]:
        names = [f.name for f in factories]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"factory names must be unique; repeated: {', '.join(dupes)}")
        return factories

    @field_validator("days")
    @classmethod
    def _whole_steps(cls, days: float, info: ValidationInfo) -> float:
        step_s = info.data.get("step_s")
        if step_s:
            n = days * 86400 / step_s
            if abs(n - round(n)) > 1e-9 or round(n) < 1:
                raise ValueError(f"{days} d is not a whole number of {step_s} s steps")
        return days

    # -- the clock ---------------------------------------------------------------------------
    @property
    def n_steps(self) -> int:
        return int(round(self.days * 86400 / self.step_s))

    @property
    def start_ts(self) -> pd.Timestamp:
        """The start as a time-zone-aware timestamp in the scenario's zone."""
        ts = pd.Timestamp(self.start)
        return ts.tz_localize(self.timezone) if ts.tzinfo is None else ts.tz_convert(self.timezone)

    def step_starts(self) -> pd.DatetimeIndex:
        return pd.date_range(self.start_ts, periods=self.n_steps, freq=f"{self.step_s}s")

    def clock(self) -> dict[str, Any]:
        """The init parameters every simulator gets."""
        return {"start": self.start_ts.isoformat(), "step_s": self.step_s,
                "n_steps": self.n_steps, "seed": self.seed}


# -- loading ---------------------------------------------------------------------------------

# libyaml's safe loader and dumper when PyYAML has them (its wheels do): the same documents,
# ~10x faster than the pure-Python ones on a scenario file, which a sweep reads on every run.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a scenario file into a plain dict, or raise ScenarioError saying why not."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError([f"{path}: cannot be read ({exc})"]) from None
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ScenarioError([f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict):
        raise ScenarioError([f"{path}: must be a YAML mapping of scenario fields, "
                             f"not {type(data).__name__}"])
    return data


def load_scenario(path: str | Path | None = None, overrides: list[str] | dict[str, Any] = (),
                  check_grid: bool = True) -> Scenario:
    """Load, override and validate a scenario file.

    Parameters
    ----------
    path : path of a YAML file; None means the default zone ``scenarios/sdg_zone.yaml``.
    overrides : ``["a.b=value", ...]`` as on the command line (values parsed as YAML), or a
        mapping ``{"a.b": value}``.
    check_grid : also load the grid and check every bus reference (slower: SimBench nets take
        seconds to build).

    Raises
    ------
    ScenarioError
        With every problem found, one line each.
    """
    path = DEFAULT_SCENARIO if path is None else Path(path)
    data = read_yaml(path)
    apply_overrides(data, overrides)
    _anchor_paths(data, path.parent)
    scenario = validate(data)
    if check_grid:
        check_buses(scenario)
    return scenario


def _anchor_paths(data: dict[str, Any], folder: Path) -> None:
    """Relative file paths in a scenario are relative to the scenario file, not the shell."""
    for section, key in (("weather", "file"), ("grid", "path")):
        part = data.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), str) and part[key].strip():
            p = Path(part[key]).expanduser()
            if not p.is_absolute():
                part[key] = str((folder / p).resolve())


def validate(data: dict[str, Any]) -> Scenario:
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(describe_errors(exc, Scenario)) from None
    problems = coordinator_problems(scenario)
    if scenario.hil is not None:
        problems += hil_problems(scenario.hil, scenario.pv.plants,
                                 scenario.ev.sites if scenario.ev is not None else None)
    if problems:
        raise ScenarioError(problems)
    return scenario


def coordinator_problems(scenario: Scenario) -> list[str]:
    """What a coordinated zone needs beyond each section's own rules: an EV fleet whose
    charging sites all have chargers (the coordinator settles energy per site)."""
    if scenario.coordinator is None:
        return []
    if scenario.ev is None:
        return [("coordinator: needs an 'ev' section (the coordinator dispatches the EV "
                 "fleet); add one or remove the coordinator")]
    return [f"ev.sites.{i}.chargers: site {site.name!r} has no charger; every charging site of "
            "a coordinated zone needs at least one charging point (add chargers or remove the "
            "site)" for i, site in enumerate(scenario.ev.sites) if site.n_chargers == 0]


def describe_errors(exc: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per pydantic error: ``field.path: message``."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(scenario)"
        if err["type"] == "extra_forbidden":
            parent = _model_at(root, err["loc"][:-1])
            allowed = ", ".join(parent.model_fields) if parent else ""
            msg = "unknown field" + (f" (allowed: {allowed})" if allowed else "")
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] in {"union_tag_not_found", "union_tag_invalid"}:
            tag = err["ctx"]["discriminator"].strip("'")
            expected = err["ctx"].get("expected_tags")
            got = "is missing" if err["type"] == "union_tag_not_found" else (
                f"{err['ctx'].get('tag')!r} is not allowed")
            lines.append(f"{loc}.{tag}: {got}" + (f" (one of {expected})" if expected else ""))
            continue
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] in {"literal_error", "enum"}:
                msg += f" (got {err.get('input')!r})"
            parts = msg.split("; ")
            if all(p.startswith(f"{loc}.") for p in parts):  # already named, one per item
                lines.extend(parts)
                continue
        lines.append(f"{loc}: {msg}")
    return lines


# -- overrides -------------------------------------------------------------------------------

def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> None:
    """Set ``a.b.0.c = value`` in ``data`` for each override; every bad path is reported."""
    items = overrides.items() if isinstance(overrides, dict) else (_split(o) for o in overrides)
    problems = []
    for key, value in items:
        if key is None:
            problems.append(f"--set {value!r}: expected PATH=VALUE, e.g. pv.losses_pct=12")
            continue
        problem = _set_path(data, key, value)
        if problem:
            problems.append(problem)
    if problems:
        raise ScenarioError(problems)


def _split(item: str) -> tuple[str | None, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        return None, item
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_path(data: dict[str, Any], key: str, value: Any) -> str | None:
    parts = key.split(".")
    model: Any = Scenario
    node: Any = data
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return f"{here}: no such list item (the list has {len(node)} item(s))"
            idx = int(part)
            model = _item_type(model)
            if last:
                node[idx] = value
                return None
            node = node[idx]
            continue
        if not isinstance(node, dict):
            return f"{here}: cannot set a field inside a {type(node).__name__}"
        cls = _as_model(model)
        if cls is not None:
            if part not in cls.model_fields:
                return (f"{here}: no such field in the scenario (allowed here: "
                        f"{', '.join(cls.model_fields)})")
            model = cls.model_fields[part].annotation
        elif _is_mapping(model):
            model = typing.get_args(_strip_optional(model))[1:2] or [Any]
            model = model[0]
        else:
            return f"{here}: no such field in the scenario"
        if last:
            node[part] = value
            return None
        if part not in node or node[part] is None:
            node[part] = [] if _is_list(model) else {}
        node = node[part]
    return None


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _as_model(tp: Any) -> type[BaseModel] | None:
    tp = _strip_optional(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _is_list(tp: Any) -> bool:
    return typing.get_origin(_strip_optional(tp)) in (list, tuple)


def _is_mapping(tp: Any) -> bool:
    return typing.get_origin(_strip_optional(tp)) is dict


def _item_type(tp: Any) -> Any:
    args = typing.get_args(_strip_optional(tp))
    return args[0] if args else Any


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    model: Any = root
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            model = _item_type(model)
            continue
        cls = _as_model(model)
        if cls is None or part not in cls.model_fields:
            return None
        model = cls.model_fields[part].annotation
    return _as_model(model)


# -- cross-section checks --------------------------------------------------------------------

def bus_references(scenario: Scenario) -> list[tuple[str, Any]]:
    """Every (field path, bus reference) the scenario makes, in the order simulators use them."""
    refs: list[tuple[str, Any]] = []
    for i, plant in enumerate(scenario.pv.plants):
        refs.append((f"pv.plants.{i}.bus", plant.bus))
    for i, gen in enumerate(scenario.pv.generated):
        refs.extend((f"pv.generated.{i}.buses.{j}", b) for j, b in enumerate(gen.buses))
    for i, factory in enumerate(scenario.factories):
        refs.append((f"factories.{i}.bus", factory.bus))
    if scenario.ev is not None:
        for i, site in enumerate(scenario.ev.sites):
            refs.append((f"ev.sites.{i}.bus", site.bus))
    if scenario.hil is not None:
        refs.extend((f"hil.batteries.{i}.bus", b.bus)
                    for i, b in enumerate(scenario.hil.batteries))
    if scenario.grid.grid_forming is not None:
        refs.append(("grid.grid_forming.bus", scenario.grid.grid_forming.bus))
    refs.extend((f"grid.shunts.{i}.bus", s.bus) for i, s in enumerate(scenario.grid.shunts))
    return refs


_NETWORKS: dict[str, Any] = {}


def grid_network(grid: GridConfig) -> Any:
    """A fresh copy of the network of a ``grid`` section.

    Each distinct section is built once per process: a SimBench network takes seconds to build
    and a deep copy milliseconds, and a sweep worker validates, runs and reports many runs on
    the same grid. A JSON file's modification time is part of the key.
    """
    import copy

    from components.grid.model import load_network

    key = grid.model_dump_json()
    if grid.source == "json" and grid.path is not None and Path(grid.path).is_file():
        key += f"@{Path(grid.path).stat().st_mtime_ns}"
    if key not in _NETWORKS:
        if len(_NETWORKS) >= 4:
            _NETWORKS.pop(next(iter(_NETWORKS)))
        _NETWORKS[key] = load_network(grid)
    return copy.deepcopy(_NETWORKS[key])


def check_buses(scenario: Scenario, net: Any = None) -> Any:
    """Load the grid (unless given) and check every bus reference, the faulted elements of
    ``events``, the tie switches and the grid-forming unit's bus; return the net."""
    from components.grid.events import resolve_fault_elements
    from components.grid.model import resolve_bus
    from components.grid.topology import resolve_tie_switches

    if net is None:
        try:
            net = grid_network(scenario.grid)
        except ValueError as exc:
            raise ScenarioError([_prefixed("grid", exc)]) from None
    problems = []
    for where, ref in bus_references(scenario):
        try:
            resolve_bus(net, ref)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    problems += resolve_fault_elements(net, scenario.events or [])[1]
    problems += resolve_tie_switches(net, scenario.grid.tie_switches)[1]
    gfm = scenario.grid.grid_forming
    if gfm is not None and not any(p.startswith("grid.grid_forming.bus") for p in problems):
        bus = resolve_bus(net, gfm.bus)
        if bus in set(net.ext_grid["bus"].astype(int)):
            problems.append(f"grid.grid_forming.bus: bus {bus} holds the external grid; put "
                            "the grid-forming unit inside the zone")
    if problems:
        raise ScenarioError(problems)
    return net


def _prefixed(section: str, exc: Exception) -> str:
    msg = str(exc)
    return msg if msg.startswith(section) else f"{section}: {msg}"


def to_yaml(scenario: Scenario) -> str:
    """The resolved scenario (defaults filled in) as YAML, as written into run folders."""
    data = scenario.model_dump(mode="json", exclude_none=True)
    return yaml.dump(data, Dumper=_YAML_DUMPER, sort_keys=False, allow_unicode=True)

