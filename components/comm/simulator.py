"""mosaik adapter of the communication channel: one entity, vector attributes.

Inputs:

    p_set_kw            the coordinator's set-point per EV for this step (all EVs; NaN = charge
                        at the maximum) [kW]; same step
    plugged_ids, plugged_p_max_kw
                        from the EV fleet, **time-shifted** like the coordinator's: the EVs
                        plugged at t_k (each gets a message) and their maximum mean power over
                        the step [kW]
    curtail_kw, q_kvar_set
                        the coordinator's PV set-points made in this step for the next [kW],
                        [kvar]; same step

Outputs:

    p_set_kw            what each EV applies over this step (step mean; NaN = uncontrolled):
                        connect to the EV fleet on the same step [kW]
    curtail_kw, q_kvar_set, setpoint_delay_s
                        what each plant applies in the next step, from ``setpoint_delay_s``
                        seconds into it (before: its previous set-points): connect to the PV
                        fleet **time-shifted**, initial data the inverter ratings, zeros, zeros
                        [kW], [kvar], [s]
    messages_sent, messages_lost, messages_late
                        this step's messages (EV and PV together); *late*: arrived after the step
                        they were made for

Randomness: one generator from the scenario seed, on a stream of its own (``[seed, 0x434F4D]``).
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3
import numpy as np

from components.base import last_outputs, step_index, step_ticks
from components.comm.config import CommConfig
from components.comm.model import Channel, Counts, EVLink, PVLink

MODEL = "Channel"
EID = "comm"
EV_INPUTS = ["plugged_ids", "plugged_p_max_kw"]
SETPOINTS = ["p_set_kw", "curtail_kw", "q_kvar_set"]
COUNTS = ["messages_sent", "messages_lost", "messages_late"]
OUTPUTS = [*SETPOINTS, "setpoint_delay_s", *COUNTS]
STREAM = 0x434F4D  # "COM"

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        MODEL: {
            "public": True,
            "params": ["config", "n_ev", "inverter_kw"],
            "attrs": [*OUTPUTS, *EV_INPUTS],
        },
    },
}


class CommSimulator(mosaik_api_v3.Simulator):
    """mosaik simulator of the set-point channel (EV chargers and PV plants)."""

    def __init__(self) -> None:
        super().__init__(META)
        self.ev: EVLink | None = None
        self.pv: PVLink | None = None
        self.created = False
        self._out: dict[str, Any] = {}

    def init(self, sid: str, time_resolution: float = 1.0, start: str | None = None,
             step_s: int = 900, n_steps: int = 96, seed: int = 0) -> dict:
        """Set the clock and the random stream."""
        self.sid = sid
        self.step_ticks = step_ticks(sid, step_s, n_steps, time_resolution)
        self.step_s = int(step_s)
        self.n_steps = int(n_steps)
        self.rng = np.random.default_rng([int(seed), STREAM])
        return self.meta

    def create(self, num: int, model: str, config: dict[str, Any], n_ev: int | None = None,
               inverter_kw: list[float] | None = None) -> list:
        """One channel for ``n_ev`` EVs (None: no EV link) and plants rated ``inverter_kw``."""
        if model != MODEL:
            raise ValueError(f"{self.sid}: unknown model {model!r}; this simulator has {MODEL!r}")
        if num != 1 or self.created:
            raise ValueError(f"{self.sid}: create exactly one {MODEL} entity")
        cfg = CommConfig.model_validate(config)
        p = cfg.params()
        channel = Channel(p.latency_median_ms / 1e3, p.latency_p98_ms / 1e3, p.loss_probability,
                          self.rng)
        if n_ev:
            self.ev = EVLink(int(n_ev), self.step_s, channel, cfg.ev_fallback)
        if inverter_kw:
            self.pv = PVLink(np.asarray(inverter_kw, dtype=float), self.step_s, channel)
        self.created = True
        return [{"eid": EID, "type": MODEL}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        """Send this step's set-points and compute what the devices apply."""
        k = step_index(self.sid, time, self.step_ticks, self.n_steps)
        attrs = inputs.get(EID, {})
        counts = Counts()
        out: dict[str, Any] = {}
        if self.ev is not None:
            p_set = _one(attrs, "p_set_kw", self.sid, time)
            ids = _one(attrs, "plugged_ids", self.sid, time)
            p_max = _one(attrs, "plugged_p_max_kw", self.sid, time)
            if p_set is None:
                p_set = np.full(self.ev.n_ev, np.nan)
            if ids is None:  # the fleet's view before its first step was empty
                ids, p_max = np.zeros(0, dtype=np.int64), np.zeros(0)
            out["p_set_kw"], c = self.ev.step(k, p_set, ids, p_max)
            counts.add(c)
        if self.pv is not None:
            curtail = _one(attrs, "curtail_kw", self.sid, time)
            q_set = _one(attrs, "q_kvar_set", self.sid, time)
            if curtail is None or q_set is None:
                raise ValueError(f"{self.sid} at t={time}: curtail_kw and q_kvar_set are not "
                                 "connected; connect both from the coordinator")
            out["curtail_kw"], out["q_kvar_set"], out["setpoint_delay_s"], c = self.pv.step(
                k, curtail, q_set)
            counts.add(c)
        out["messages_sent"], out["messages_lost"] = counts.sent, counts.lost
        out["messages_late"] = counts.late
        self._out = out
        return time + self.step_ticks

    def get_data(self, outputs: dict) -> dict:
        """The last step's outputs (arrays by reference); ``p_set_kw`` may hold NaN (no
        set-point: uncontrolled) but nothing infinite."""
        data = last_outputs(self.sid, EID, self._out, outputs, unchecked=("p_set_kw",))
        p_set = data.get(EID, {}).get("p_set_kw")
        if p_set is not None and np.isinf(p_set).any():
            raise ValueError(f"{self.sid}.{EID}: attribute 'p_set_kw' has infinite values")
        return data


def _one(attrs: dict, name: str, sid: str, time: int) -> np.ndarray | None:
    """The value of input ``name`` from its single source (None if absent)."""
    values = [v for v in attrs.get(name, {}).values() if v is not None]
    if not values:
        return None
    if len(values) > 1:
        raise ValueError(f"{sid} at t={time}: {name} comes from {len(values)} sources; connect "
                         "one")
    return np.asarray(values[0])


def main() -> None:
    """Run as a separate process: ``python -m components.comm.simulator HOST:PORT``."""
    mosaik_api_v3.start_simulation(CommSimulator(), "sdg-twin communication channel")


if __name__ == "__main__":
    main()
