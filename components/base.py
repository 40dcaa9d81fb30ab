"""What every component shares: the sign convention, strict config models, finite checks.

Sign convention (load convention): at every bus interface, positive active and reactive power is
drawn from the grid. A PV plant generating 100 kW therefore reports ``p_kw = -100``; an EV
discharging (V2G) reports negative ``p_kw`` too. Inside a model, quantities named ``*_gen_kw`` or
``ac_kw`` may count generation as positive; adapters convert at the boundary.

Time: a step ``k`` covers ``[t_k, t_k + step_s)``; a power reported for step ``k`` is the mean over
that interval, so its energy is ``p_kw * step_s / 3600`` kWh.
"""

from __future__ import annotations

from typing import Annotated
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


def require_finite(sender: str, **arrays: np.ndarray) -> None:
    """Raise ``ValueError`` naming ``sender`` and the attribute if any value is NaN or infinite.

    Called by adapters on everything they send, so a bad value fails where it was made.
    """
    for name, values in arrays.items():
        a = np.asarray(values, dtype=float)
        if not np.isfinite(a).all():
            bad = np.flatnonzero(~np.isfinite(a.ravel()))
            raise ValueError(
                f"{sender}: attribute {name!r} has {bad.size} non-finite value(s), "
                f"first at index {int(bad[0])}"
            )


def step_index(sender: str, time: int, step_ticks: int, n_steps: int) -> int:
    """The step ``k`` that mosaik time ``time`` starts; ``ValueError`` off the grid or horizon."""
    if time % step_ticks:
        raise ValueError(f"{sender}: time {time} is not on the step grid of {step_ticks}")
    k = time // step_ticks
    if k >= n_steps:
        raise ValueError(f"{sender}: time {time} (step {k}) is past the horizon of "
                         f"{n_steps} steps")
    return k
