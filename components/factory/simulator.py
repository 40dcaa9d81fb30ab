"""mosaik adapter of the factory fleet: one entity, arrays aligned to the factories' order.

Outputs per factory (load convention, drawn power positive, means over the step):
``p_kw``, ``q_kvar``, ``critical_kw``, ``deferrable_kw``, ``shed_applied_kw`` and the constant
``rated_kw``. Input ``shed_kw`` (optional, summed over senders): load the coordinator asks each
factory to shed in this step. Only the non-critical part can be shed; the request is clamped to
``[0, p_kw - critical_kw]`` and the clamped value is reported as ``shed_applied_kw``. Shedding
scales the non-critical reactive power in proportion and leaves the critical part untouched.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import mosaik_api_v3
import numpy as np

from components.base import all_finite, finite_output, step_outputs, step_ticks
from components.factory.config import FactoriesConfig
from components.factory.model import SHED_OUTPUTS, FactoryFleet

MODEL = "Factories"
EID = "factories"
OUTPUTS = (*SHED_OUTPUTS, "rated_kw")

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        MODEL: {
            "public": True,
            "params": ["config", "buses"],
            "attrs": [*OUTPUTS, "shed_kw"],
        },
    },
}


class FactorySimulator(mosaik_api_v3.Simulator):
    """All factories of a scenario as one mosaik entity (``Factories``)."""

    def __init__(self) -> None:
        super().__init__(META)
        self.sid = ""
        self._sender = ""
        self.fleet: FactoryFleet | None = None
        self.buses: list[int] = []
        self._out: dict[str, np.ndarray] = {}
        self._sent: dict[str, np.ndarray] = {}  # outputs of this step already checked

    def init(self, sid: str, time_resolution: float = 1.0,
             start: str = "2026-06-01T00:00:00+08:00", step_s: int = 900, n_steps: int = 96,
             seed: int = 0) -> dict[str, Any]:
        """Set the clock: step ``k`` starts at ``start + k * step_s``; mosaik time counts
        ``time_resolution`` seconds per tick from ``start``.

        Parameters
        ----------
        start : str
            ISO 8601 timestamp with a UTC offset; shifts and holidays are local to it.
        step_s : int
            Step length [s]; must be a whole number of mosaik ticks.
        n_steps : int
            Number of steps to simulate.
        seed : int
            Seed of the simulator's random generator.
        """
        self.sid = sid
        self._sender = f"{sid}.{EID}"  # names the entity in errors about non-finite outputs
        self.start = dt.datetime.fromisoformat(start)
        if self.start.tzinfo is None:
            raise ValueError(f"{sid}: start {start!r} needs a UTC offset, e.g. '+08:00'")
        self.ticks_per_step = step_ticks(sid, step_s, n_steps, time_resolution)
        self.step_s = step_s
        self.n_steps = int(n_steps)
        self.rng = np.random.default_rng(seed)
        return self.meta

    def create(self, num: int, model: str, config: list[dict[str, Any]],
               buses: list[int]) -> list[dict[str, str]]:
        """Create the single entity modelling every factory of ``config`` (in its order).

        ``config`` is the ``factories`` section as plain data; ``buses`` holds the pandapower
        bus index of each factory, in the same order.
        """
        if self.fleet is not None or num != 1:
            raise ValueError(f"{self.sid}: create exactly one {MODEL} entity (it models all)")
        factories = FactoriesConfig.model_validate(config)
        if len(buses) != len(factories):
            raise ValueError(
                f"{self.sid}: got {len(buses)} bus(es) for {len(factories)} factories; "
                "give one bus per factory"
            )
        self.buses = [int(b) for b in buses]
        self.fleet = FactoryFleet(factories, self.start, self.step_s, self.n_steps, self.rng)
        self._rated_kw = self.fleet.rated_kw.copy()
        self._rated_kw.flags.writeable = False  # the same array every step
        return [{"eid": EID, "type": model}]

    def step(self, time: int, inputs: dict[str, dict[str, dict[str, Any]]],
             max_advance: int) -> int:
        """Compute the means over ``[time, time + step_s)`` and apply requested shedding
        (several senders' requests add up)."""
        if self.fleet is None:
            raise RuntimeError(f"{self.sid}: step before create")
        k, rest = divmod(time, self.ticks_per_step)
        if rest or not 0 <= k < self.n_steps:
            raise ValueError(
                f"{self.sid}: time {time} is not a step start within the {self.n_steps} steps"
            )
        n = len(self.buses)
        request = None
        for source, value in inputs.get(EID, {}).get("shed_kw", {}).items():
            arr = np.asarray(value, dtype=float)
            if arr.shape != (n,) or not all_finite(arr):
                raise ValueError(
                    f"{self.sid}.{EID} at t={time} s: shed_kw from {source} must be {n} finite "
                    f"values (one per factory), got shape {arr.shape}"
                )
            request = np.ascontiguousarray(arr) if request is None else request + arr
        powers, finite = self.fleet.shed_step(k, request)
        self._out = dict(zip(SHED_OUTPUTS, powers))
        self._out["rated_kw"] = self._rated_kw
        # all finite (the usual step): every output is checked; otherwise each is when asked
        self._sent = dict(self._out) if finite else {}
        return time + self.ticks_per_step

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, dict[str, np.ndarray]]:
        """Arrays per requested attribute, aligned to the factories' order."""
        # mosaik and the recorder ask separately: check each output once per step
        return step_outputs(self.sid, EID, outputs, self._sent, self._checked)

    def _checked(self, attr: str) -> np.ndarray:
        """Output ``attr`` of the last step, checked to be finite."""
        if attr not in OUTPUTS:
            raise ValueError(f"{self.sid}: {attr!r} is not an output; outputs: {OUTPUTS}")
        if not self._out:
            raise RuntimeError(f"{self.sid}: get_data before the first step")
        return finite_output(self._sender, attr, self._out[attr])


if __name__ == "__main__":
    mosaik_api_v3.start_simulation(FactorySimulator())
