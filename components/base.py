"""What every component shares: the sign convention, strict config models, finite checks.

Sign convention (load convention): at every bus interface, positive active and reactive power is
drawn from the grid. A PV plant generating 100 kW therefore reports ``p_kw = -100``; an EV
discharging (V2G) reports negative ``p_kw`` too. Inside a model, quantities named ``*_gen_kw`` or
``ac_kw`` may count generation as positive; adapters convert at the boundary.

Time: a step ``k`` covers ``[t_k, t_k + step_s)``; a power reported for step ``k`` is the mean over
that interval, so its energy is ``p_kw * step_s / 3600`` kWh.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base of every scenario section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


BusRef = int | str
"""A grid bus named by its pandapower index or by its ``name`` column."""


def _known_timezone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r} (use an IANA name such as "
                         "'Asia/Shanghai' or 'UTC')") from None
    return tz


TimeZoneName = Annotated[str, AfterValidator(_known_timezone)]
"""An IANA time zone name, checked against the system's zone database."""


def all_finite(values: np.ndarray) -> bool:
    """Whether every value of the float array ``values`` is finite (neither NaN nor infinite)."""
    flat = values if values.ndim == 1 else values.reshape(-1)
    # the sum of squares is NaN or infinite when any value is: one BLAS pass with no temporary
    # array, on every output of every step; only a non-finite sum (or an overflow, from values
    # beyond 1e154 in magnitude) checks each value
    return math.isfinite(flat.dot(flat)) or bool(np.isfinite(values).all())


def require_finite(sender: str, **arrays: np.ndarray) -> None:
    """Raise ``ValueError`` naming ``sender`` and the attribute if any value is NaN or infinite.

    Called by adapters on everything they send, so a bad value fails where it was made.
    """
    for name, values in arrays.items():
        a = np.asarray(values, dtype=float)
        if not all_finite(a):
            bad = np.flatnonzero(~np.isfinite(a.ravel()))
            raise ValueError(
                f"{sender}: attribute {name!r} has {bad.size} non-finite value(s), "
                f"first at index {int(bad[0])}"
            )


def finite_output(sender: str, attr: str, value: Any) -> Any:
    """``value`` once it is known to be finite; ``ValueError`` naming ``sender`` and ``attr`` if
    not. Integers and booleans pass unchecked; for the per-step outputs of the adapters."""
    kind = type(value)
    if kind is int or kind is bool or (kind is float and math.isfinite(value)):
        return value
    if kind is np.ndarray and (value.dtype.kind in "biu"
                               or (value.dtype.kind == "f" and all_finite(value))):
        return value
    require_finite(sender, **{attr: value})
    return value


def step_outputs(sender: str, eid: str, outputs: dict[str, list[str]], cache: dict[str, Any],
                 compute: Callable[[str], Any]) -> dict[str, dict[str, Any]]:
    """``get_data`` of a one-entity simulator whose outputs are computed (and checked) once per
    step: ``compute(attr)`` fills ``cache``, which the adapter clears when it steps. The world
    asks twice per step (mosaik's connections, then the recorder), for different attributes."""
    data: dict[str, dict[str, Any]] = {}
    for name, attrs in outputs.items():
        if name != eid:
            raise ValueError(f"{sender}: unknown entity {name!r}")
        values: dict[str, Any] = {}
        for attr in attrs:
            value = cache.get(attr, cache)  # the cache itself: not computed yet
            if value is cache:
                value = cache[attr] = compute(attr)
            values[attr] = value
        data[eid] = values
    return data


def last_outputs(sender: str, eid: str, last: dict[str, Any], outputs: dict[str, list[str]],
                 unchecked: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """``get_data`` of a one-entity simulator that keeps its last step's outputs in ``last``.

    Checks the entity and attribute names (``ValueError`` listing what exists) and, with
    :func:`require_finite`, every value but those named in ``unchecked``.
    """
    data: dict[str, dict[str, Any]] = {}
    for name, attrs in outputs.items():
        if name != eid:
            raise ValueError(f"{sender}: unknown entity {name!r}")
        missing = [a for a in attrs if a not in last]
        if missing:
            raise ValueError(f"{sender}: {missing} are not outputs (or no step ran yet); "
                             f"outputs: {sorted(last)}")
        values = {a: last[a] for a in attrs}
        require_finite(f"{sender}.{eid}", **{a: v for a, v in values.items()
                                              if a not in unchecked})
        data[eid] = values
    return data


def step_ticks(sender: str, step_s: float, n_steps: int, time_resolution: float = 1.0) -> int:
    """Mosaik time units per step; ``ValueError`` unless ``step_s`` and ``n_steps`` are > 0 and
    ``step_s`` is a whole number of mosaik time units (the clock check of every adapter)."""
    if step_s <= 0 or n_steps <= 0:
        raise ValueError(f"{sender}: step_s and n_steps must be > 0, got {step_s}, {n_steps}")
    ticks = step_s / time_resolution
    if abs(ticks - round(ticks)) > 1e-9:
        raise ValueError(f"{sender}: step_s={step_s} is not a whole number of mosaik time units "
                         f"of {time_resolution} s")
    return round(ticks)


def step_index(sender: str, time: int, step_ticks: int, n_steps: int) -> int:
    """The step ``k`` that mosaik time ``time`` starts; ``ValueError`` off the grid or horizon."""
    if time % step_ticks:
        raise ValueError(f"{sender}: time {time} is not on the step grid of {step_ticks}")
    k = time // step_ticks
    if k >= n_steps:
        raise ValueError(f"{sender}: time {time} (step {k}) is past the horizon of "
                         f"{n_steps} steps")
    return k
