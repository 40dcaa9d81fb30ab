"""Tiny mosaik simulators for the EV adapter tests: a coordinator stand-in and a collector."""

from __future__ import annotations

import mosaik_api_v3
import numpy as np

PLUGGED = ["plugged_ids", "plugged_p_max_kw", "plugged_p_min_kw", "plugged_need_kwh"]


class HalfPower(mosaik_api_v3.Simulator):
    """Asks every plugged EV for ``share`` of its maximum power; records what it saw."""

    seen: dict[int, dict[str, np.ndarray]] = {}

    def __init__(self) -> None:
        super().__init__({"api_version": "3.0", "type": "time-based",
                          "models": {"HalfPower": {"public": True, "params": ["n_ev", "share"],
                                                   "attrs": PLUGGED + ["p_set_kw"]}}})

    def init(self, sid, time_resolution=1.0, step_s=900):
        self.step_s = step_s
        HalfPower.seen = {}
        return self.meta

    def create(self, num, model, n_ev, share):
        self.n_ev, self.share = n_ev, share
        self.p_set = np.full(n_ev, np.nan)
        return [{"eid": "coord", "type": model}]

    def step(self, time, inputs, max_advance):
        attrs = {a: next(iter(v.values())) for a, v in inputs["coord"].items()}
        HalfPower.seen[time] = {a: np.array(v, copy=True) for a, v in attrs.items()}
        self.p_set = np.full(self.n_ev, np.nan)
        self.p_set[attrs["plugged_ids"]] = self.share * attrs["plugged_p_max_kw"]
        return time + self.step_s

    def get_data(self, outputs):
        return {"coord": {"p_set_kw": self.p_set}}


class Collector(mosaik_api_v3.Simulator):
    """Records every value it receives: ``Collector.records[attr][t_s] = value``."""

    records: dict[str, dict[int, object]] = {}

    def __init__(self) -> None:
        super().__init__({"api_version": "3.0", "type": "time-based",
                          "models": {"Collector": {"public": True, "params": [],
                                                   "any_inputs": True, "attrs": []}}})

    def init(self, sid, time_resolution=1.0, step_s=900):
        self.step_s = step_s
        Collector.records = {}
        return self.meta

    def create(self, num, model):
        return [{"eid": "c0", "type": model}]

    def step(self, time, inputs, max_advance):
        for attrs in inputs.values():
            for attr, by_source in attrs.items():
                for value in by_source.values():
                    Collector.records.setdefault(attr, {})[time] = np.array(value, copy=True)
        return time + self.step_s

    def get_data(self, outputs):
        return {}
