"""Scenario section ``events``: upstream outages and feeder faults, and their step schedule.

Example (YAML)::

    events:
      - type: upstream_outage          # the external grid is lost; the zone runs as an island
        start: "2026-06-03T14:00:00+08:00"
        end: 4.0                      # hours from the scenario start, or a timestamp
      - type: fault                    # a line or transformer trips and is repaired
        element: line
        index: 9                       # or name: "Line 3-8"
        at: 30.25
        repair_h: 3.0

A time is a timestamp (with UTC offset; one without is local time of the scenario's time zone)
or a number of hours from the scenario start.

Events act on whole steps: an outage islands every step that overlaps ``[start, end)``; a fault
trips its element from the step containing ``at`` until the first step that starts at or after
``at + repair_h``; a tie switch closes from the first step that starts at or after
``at + switching_time_s`` (see ``grid.tie_switches``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field, TypeAdapter, field_validator

from components.base import StrictModel

EventTime = float | datetime
"""Hours from the scenario start [h], or a timestamp."""


class UpstreamOutage(StrictModel):
    """The upstream (external) grid is unavailable over ``[start, end)``."""

    type: Literal["upstream_outage"]
    start: EventTime = Field(..., description="Start: timestamp, or hours from the run start [h]")
    end: EventTime = Field(..., description="End: timestamp, or hours from the run start [h]")


class Fault(StrictModel):
    """A line or two-winding transformer trips at ``at`` and is back ``repair_h`` later."""

    type: Literal["fault"]
    element: Literal["line", "trafo"] = Field(..., description="Faulted element table")
    index: int | None = Field(None, ge=0, description="pandapower index of the element")
    name: str | None = Field(None, min_length=1, validate_default=True,
                             description="Name of the element")
    at: EventTime = Field(..., description="Fault time: timestamp, or hours from the start [h]")
    repair_h: float = Field(..., gt=0, description="Time until the element is repaired [h]")

    @field_validator("name")
    @classmethod
    def _one_reference(cls, name: str | None, info) -> str | None:
        index = info.data.get("index")
        if (index is None) == (name is None):
            raise ValueError("give exactly one of 'index' (pandapower index) or 'name' of the "
                             f"faulted {info.data.get('element', 'element')}")
        return name


Event = Annotated[UpstreamOutage | Fault, Field(discriminator="type")]
EVENT_TYPES = ("upstream_outage", "fault")

_EVENTS = TypeAdapter(list[Event])


def parse_events(events: list[dict] | list[Event] | None) -> list[UpstreamOutage | Fault]:
    """Validate plain event dicts (as they cross to the simulator) into event models."""
    return _EVENTS.validate_python(list(events or []))


def resolve_time(value: EventTime, start: pd.Timestamp) -> pd.Timestamp:
    """An event time as a tz-aware timestamp.

    Parameters
    ----------
    value : float or datetime
        Hours from ``start`` [h], or a timestamp (naive: local time of ``start``'s zone).
    start : Timestamp
        The run's start, tz-aware.
    """
    if isinstance(value, datetime):
        ts = pd.Timestamp(value)
        return ts.tz_localize(start.tz) if ts.tzinfo is None else ts.tz_convert(start.tz)
    return start + pd.Timedelta(hours=float(value))


def schedule_problems(events: list[UpstreamOutage | Fault], start: pd.Timestamp,
                      n_steps: int, step_s: int) -> list[str]:
    """What is wrong with the events' times against the run's horizon, one line each.

    Each line names the field: ``events.<i>.<field>: ...``. An outage must end after it starts
    and overlap the run; a fault must happen within the run.
    """
    end_run = start + pd.Timedelta(seconds=n_steps * step_s)
    horizon = f"the run covers {start.isoformat()} .. {end_run.isoformat()}"
    problems = []
    for i, ev in enumerate(events):
        if isinstance(ev, UpstreamOutage):
            t0, t1 = resolve_time(ev.start, start), resolve_time(ev.end, start)
            if t1 <= t0:
                problems.append(f"events.{i}.end: must be after start ({t1.isoformat()} is not "
                                f"after {t0.isoformat()})")
            elif t1 <= start or t0 >= end_run:
                problems.append(f"events.{i}.start: the outage {t0.isoformat()} .. "
                                f"{t1.isoformat()} lies outside the run; {horizon}")
        else:
            at = resolve_time(ev.at, start)
            if not start <= at < end_run:
                problems.append(f"events.{i}.at: {at.isoformat()} is outside the run; {horizon}")
    return problems


@dataclass(frozen=True)
class FaultWindow:
    """A fault on the step grid."""

    event: int
    """Position of the event in the ``events`` list."""
    element: str
    """``"line"`` or ``"trafo"``."""
    index: int
    """pandapower index of the element."""
    t_s: float
    """Fault time from the run start. [s]"""
    k_fault: int
    """First faulted step (the step containing the fault)."""
    k_repair: int
    """First step with the element back in service (may be ``n_steps``: not within the run)."""


@dataclass(frozen=True)
class Schedule:
    """The events on the step grid of one run."""

    outage: np.ndarray
    """Whether the upstream grid is out, per step. [bool]"""
    faults: tuple[FaultWindow, ...]

    @property
    def n_steps(self) -> int:
        return int(self.outage.size)

    def first_step_at_or_after(self, t_s: float, step_s: int) -> int:
        """First step whose start is at or after ``t_s`` seconds from the run start."""
        return min(int(np.ceil(t_s / step_s - 1e-9)), self.n_steps)


def build_schedule(events: list[UpstreamOutage | Fault], times: pd.DatetimeIndex, step_s: int,
                   element_index: dict[tuple[int, str], int]) -> Schedule:
    """Place the events on the step grid.

    Parameters
    ----------
    events : list
        Validated events (see :func:`parse_events`).
    times : DatetimeIndex
        Step starts, tz-aware.
    step_s : int
        Step length. [s]
    element_index : dict
        ``(event position, element) -> pandapower index`` of each fault, names resolved.

    Raises
    ------
    ValueError
        With every problem of :func:`schedule_problems`.
    """
    start = pd.Timestamp(times[0])
    n = len(times)
    problems = schedule_problems(events, start, n, step_s)
    if problems:
        raise ValueError("; ".join(problems))
    outage = np.zeros(n, dtype=bool)
    t_step = np.arange(n) * float(step_s)
    faults = []
    for i, ev in enumerate(events):
        if isinstance(ev, UpstreamOutage):
            t0 = (resolve_time(ev.start, start) - start).total_seconds()
            t1 = (resolve_time(ev.end, start) - start).total_seconds()
            # every step overlapping [t0, t1)
            outage |= (t_step < t1) & (t_step + step_s > t0)
        else:
            t_f = (resolve_time(ev.at, start) - start).total_seconds()
            k_fault = int(t_f // step_s)
            k_repair = min(int(np.ceil((t_f + ev.repair_h * 3600.0) / step_s - 1e-9)), n)
            faults.append(FaultWindow(i, ev.element, element_index[(i, ev.element)], t_f,
                                      k_fault, max(k_repair, k_fault + 1)))
    return Schedule(outage, tuple(faults))


def resolve_fault_elements(net, events: list[UpstreamOutage | Fault]
                           ) -> tuple[dict[tuple[int, str], int], list[str]]:
    """pandapower index of every faulted element, and one problem line per bad reference.

    An element must exist and be in service (``events.<i>.index`` / ``events.<i>.name``).
    """
    found: dict[tuple[int, str], int] = {}
    problems = []
    for i, ev in enumerate(events):
        if not isinstance(ev, Fault):
            continue
        table = net[ev.element]
        what = "lines" if ev.element == "line" else "two-winding transformers"
        if ev.index is not None:
            field = f"events.{i}.index"
            if ev.index not in table.index:
                problems.append(f"{field}: {ev.element} {ev.index} not found; the network has "
                                f"{len(table)} {what}" + (
                                    f" with indices {table.index.min()}..{table.index.max()}"
                                    if len(table) else ""))
                continue
            idx = int(ev.index)
        else:
            field = f"events.{i}.name"
            hits = table.index[table["name"] == ev.name]
            if len(hits) != 1:
                names = [str(n) for n in table["name"] if isinstance(n, str)][:4]
                problems.append(f"{field}: {ev.element} name {ev.name!r} " + (
                    f"is ambiguous (indices {list(map(int, hits))}); give index instead"
                    if len(hits) else f"not found; names include {names}"))
                continue
            idx = int(hits[0])
        if not bool(table.at[idx, "in_service"]):
            problems.append(f"{field}: {ev.element} {idx} is out of service; a fault needs an "
                            "element in service")
            continue
        found[(i, ev.element)] = idx
    return found, problems
