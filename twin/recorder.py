"""A mosaik simulator that keeps every step's vectors in memory for the run folder and KPIs.

It is connected to the attributes worth keeping; each arrives as ``{source_full_id: value}``.
Rows are preallocated once the first value of an attribute shows its width.
"""

from __future__ import annotations

import mosaik_api_v3
import numpy as np

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Recorder": {"public": True, "params": [], "attrs": [], "any_inputs": True}},
}


class Recorder(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.series: dict[tuple[str, str], np.ndarray] = {}

    def init(self, sid, time_resolution=1.0, start=None, step_s=900, n_steps=1, seed=0):
        self.step_s = step_s
        self.n_steps = n_steps
        return self.meta

    def create(self, num, model):
        if num != 1:
            raise ValueError("one Recorder entity per world")
        return [{"eid": "recorder", "type": model}]

    def step(self, time, inputs, max_advance):
        k = time // self.step_s
        for attr, by_source in inputs.get("recorder", {}).items():
            for source, value in by_source.items():
                rows = self.series.get((source, attr))
                if rows is None:
                    width = np.shape(value)
                    rows = np.full((self.n_steps, *width), np.nan)
                    self.series[(source, attr)] = rows
                rows[k] = value
        return time + self.step_s

    def get_data(self, outputs):
        return {}
