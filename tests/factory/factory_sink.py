"""Tiny mosaik simulators for the factory adapter tests: a recording sink and a constant source.

Started in-process (``python`` starter) as ``tests.factory.factory_sink:Sink`` and
``tests.factory.factory_sink:ConstantSource``. The sink stores copies of every received array in
the module-level ``RECORDS`` so a test can read them after ``world.run``.
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3
import numpy as np

RECORDS: dict[str, list[tuple[int, dict[str, dict[str, np.ndarray]]]]] = {}
"""Per sink sid: ``(time, {attr: {source_full_id: array}})`` for every step."""

SINK_META = {
    "api_version": "3.0",
    "type": "event-based",
    "models": {"Recorder": {"public": True, "params": [], "attrs": [], "any_inputs": True}},
}

SOURCE_META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Constant": {"public": True, "params": ["values"], "attrs": ["shed_kw"]}},
}


class Sink(mosaik_api_v3.Simulator):
    """Records whatever arrays arrive, per step."""

    def __init__(self) -> None:
        super().__init__(SINK_META)

    def init(self, sid: str, time_resolution: float = 1.0) -> dict[str, Any]:
        self.sid = sid
        RECORDS[sid] = []
        return self.meta

    def create(self, num: int, model: str) -> list[dict[str, str]]:
        return [{"eid": f"rec{i}", "type": model} for i in range(num)]

    def step(self, time: int, inputs: dict[str, Any], max_advance: int) -> None:
        for attrs in inputs.values():
            copied = {attr: {src: np.array(v, dtype=float, copy=True) for src, v in by_src.items()}
                      for attr, by_src in attrs.items()}
            RECORDS[self.sid].append((time, copied))
        return None

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, Any]:
        return {}


class ConstantSource(mosaik_api_v3.Simulator):
    """Sends the same ``shed_kw`` array every ``step_s`` seconds."""

    def __init__(self) -> None:
        super().__init__(SOURCE_META)

    def init(self, sid: str, time_resolution: float = 1.0, step_s: int = 900) -> dict[str, Any]:
        self.step_s = step_s
        return self.meta

    def create(self, num: int, model: str, values: list[float]) -> list[dict[str, str]]:
        self.values = np.asarray(values, dtype=float)
        return [{"eid": "const", "type": model}]

    def step(self, time: int, inputs: dict[str, Any], max_advance: int) -> int:
        return time + self.step_s

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, Any]:
        return {eid: {attr: self.values.copy() for attr in attrs} for eid, attrs in outputs.items()}
