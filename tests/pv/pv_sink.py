"""Tiny mosaik simulators for the PV adapter tests: a collecting sink and a set-point source."""

from __future__ import annotations

import mosaik_api_v3
import numpy as np


class Collector(mosaik_api_v3.Simulator):
    """Records every array it receives: ``Collector.records[attr][t_s] = array``."""

    records: dict[str, dict[int, np.ndarray]] = {}

    def __init__(self) -> None:
        super().__init__({"api_version": "3.0", "type": "time-based",
                          "models": {"Collector": {"public": True, "params": [],
                                                   "any_inputs": True, "attrs": []}}})

    def init(self, sid, time_resolution=1.0, step_s=900):
        self.step_s = step_s
        Collector.records = {}
        return self.meta

    def create(self, num, model):
        return [{"eid": f"c{i}", "type": model} for i in range(num)]

    def step(self, time, inputs, max_advance):
        for attrs in inputs.values():
            for attr, by_source in attrs.items():
                for value in by_source.values():
                    Collector.records.setdefault(attr, {})[time] = np.array(value, copy=True)
        return time + self.step_s

    def get_data(self, outputs):
        return {}


class SetPoints(mosaik_api_v3.Simulator):
    """Sends constant per-plant ``curtail_kw`` and ``q_kvar_set`` arrays every step."""

    def __init__(self) -> None:
        super().__init__({"api_version": "3.0", "type": "time-based",
                          "models": {"SetPoints": {"public": True,
                                                   "params": ["curtail_kw", "q_kvar_set"],
                                                   "attrs": ["curtail_kw", "q_kvar_set"]}}})

    def init(self, sid, time_resolution=1.0, step_s=900):
        self.step_s = step_s
        return self.meta

    def create(self, num, model, curtail_kw, q_kvar_set):
        self.values = {"curtail_kw": np.asarray(curtail_kw, dtype=float),
                       "q_kvar_set": np.asarray(q_kvar_set, dtype=float)}
        return [{"eid": "sp", "type": model}]

    def step(self, time, inputs, max_advance):
        return time + self.step_s

    def get_data(self, outputs):
        return {eid: {a: self.values[a] for a in attrs} for eid, attrs in outputs.items()}
