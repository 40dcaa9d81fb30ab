"""mosaik adapter of the grid: one entity, the whole network, one power flow per step.

Inputs ``p_kw`` and ``q_kvar`` arrive per source (``{source_full_id: array}``), each array
aligned to the bus list that source was registered with in ``create(injectors=...)``; the
adapter sums them per bus. A registered source that sends nothing in a step counts as zero
for that step. Outputs are arrays aligned to ``bus_ids``, ``line_ids`` and ``trafo_ids``
(static attributes of the entity) plus zone totals.
"""

from __future__ import annotations

import mosaik_api_v3
import numpy as np
import pandas as pd

from components.base import require_finite, step_index
from components.grid.config import GridConfig
from components.grid.model import GridModel, GridResult, load_network, resolve_bus

EID = "grid"

_ARRAY_ATTRS = ("vm_pu", "va_deg", "line_loading_pct", "trafo_loading_pct")
_SCALAR_ATTRS = ("losses_kw", "import_kw", "q_import_kvar", "background_load_kw",
                 "background_gen_kw", "background_storage_kw", "injection_kw")
_STATIC_ATTRS = ("bus_ids", "line_ids", "trafo_ids")

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Grid": {
            "public": True,
            "params": ["config", "injectors", "net"],
            "attrs": ["p_kw", "q_kvar", *_ARRAY_ATTRS, *_SCALAR_ATTRS, "converged",
                      "nonconverged_steps", *_STATIC_ATTRS],
        }
    },
}


class GridSimulator(mosaik_api_v3.Simulator):
    """The distribution grid as a mosaik simulator (a single ``Grid`` entity)."""

    def __init__(self) -> None:
        super().__init__(META)
        self.model: GridModel | None = None
        self.config: GridConfig | None = None
        self._result: GridResult | None = None

    def init(self, sid: str, time_resolution: float = 1.0,
             start: str = "2026-06-01T00:00:00+08:00", step_s: int = 900, n_steps: int = 96,
             seed: int = 0) -> dict:
        """Set the clock: step ``k`` starts at ``start + k * step_s``.

        Parameters
        ----------
        start : str
            ISO timestamp of the first step, with UTC offset (a naive one is local time).
        step_s : int
            Step length. [s]
        n_steps : int
            Steps in the run.
        seed : int
            Seed of the simulator's random generator (the grid itself is deterministic).
        """
        if step_s <= 0 or n_steps <= 0:
            raise ValueError(f"{sid}: step_s and n_steps must be > 0, got {step_s}, {n_steps}")
        ticks = step_s / time_resolution
        if ticks != round(ticks):
            raise ValueError(f"{sid}: step_s={step_s} is not a whole number of mosaik time "
                             f"units of {time_resolution} s")
        self.sid = sid
        self.time_resolution = float(time_resolution)
        self.step_s = int(step_s)
        self.step_ticks = round(ticks)
        self.n_steps = int(n_steps)
        self.times = pd.date_range(pd.Timestamp(start), periods=self.n_steps,
                                   freq=pd.Timedelta(seconds=self.step_s))
        self.rng = np.random.default_rng(seed)
        return self.meta

    def create(self, num: int, model: str, config: dict,
               injectors: dict[str, list[int]] | None = None, net=None) -> list[dict]:
        """Build the network and its single entity.

        Parameters
        ----------
        config : dict
            The ``grid`` section (``GridConfig.model_dump(mode="json")``).
        injectors : dict
            Full id of each source simulator entity (e.g. ``"PV-0.pv"``) -> bus of each
            element of its ``p_kw`` / ``q_kvar`` arrays (index or name). The model injects per
            distinct bus over all sources.
        net : pandapowerNet, optional
            The network already loaded from ``config`` (in-process callers that have it save
            the seconds a SimBench build takes). With ``solver: pandapower`` it is modified
            (one injection load per bus is added); the compiled solver leaves it unchanged.
        """
        if num != 1 or self.model is not None:
            raise ValueError(f"{self.sid}: exactly one {model} entity per simulator")
        self.config = GridConfig.model_validate(config)
        if net is None:
            net = load_network(self.config)

        injectors = injectors or {}
        source_buses = {src: np.array([resolve_bus(net, b) for b in buses], dtype=np.int64)
                        for src, buses in injectors.items()}
        all_buses = [b for buses in source_buses.values() for b in buses.tolist()]
        self.injection_buses = np.unique(np.array(all_buses, dtype=np.int64))
        # Position of each source element in injection_buses, for the per-bus sums.
        self._source_pos = {src: np.searchsorted(self.injection_buses, buses)
                            for src, buses in source_buses.items()}

        self.model = GridModel(net, self.times, profiles=self.config.background_profiles,
                               background_scale=self.config.background_scale,
                               injection_buses=self.injection_buses, solver=self.config.solver)
        self._result = self.model.initial_result
        self._max_nonconverged = int(np.floor(self.config.max_nonconverged_share * self.n_steps))
        return [{"eid": EID, "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        """Sum the sources' powers per bus and solve the power flow of step ``time``.

        A registered source with no value in ``inputs`` this step counts as zero. Raises
        ``RuntimeError`` once more steps failed to converge than ``max_nonconverged_share``
        of the run allows.
        """
        k = step_index(f"{self.sid}.{EID}", time, self.step_ticks, self.n_steps)
        values = inputs.get(EID, {})
        p_kw = self._per_bus("p_kw", values.get("p_kw", {}), time)
        q_kvar = self._per_bus("q_kvar", values.get("q_kvar", {}), time)
        self._result = self.model.solve_step(k, p_kw, q_kvar)
        if self.model.nonconverged_steps > self._max_nonconverged:
            raise RuntimeError(
                f"{self.sid}.{EID} at t={time} s ({self.times[k].isoformat()}): the power flow "
                f"did not converge in {self.model.nonconverged_steps} steps (at steps "
                f"{self.model.nonconverged_at[:10]}), more than max_nonconverged_share="
                f"{self.config.max_nonconverged_share} of {self.n_steps} steps allows "
                f"({self._max_nonconverged})"
            )
        return time + self.step_ticks

    def _per_bus(self, attr: str, by_source: dict, time: int) -> np.ndarray:
        total = np.zeros(self.injection_buses.size)
        for src, values in by_source.items():
            pos = self._source_pos.get(src)
            if pos is None:
                raise ValueError(f"{self.sid}.{EID} at t={time} s: {attr} from {src!r}, which "
                                 f"is not among the injectors {sorted(self._source_pos)}")
            arr = np.asarray(values, dtype=np.float64)
            if arr.shape != pos.shape:
                raise ValueError(f"{self.sid}.{EID} at t={time} s: {attr} from {src!r} has shape "
                                 f"{arr.shape}, its bus list has {pos.size} entries")
            np.add.at(total, pos, arr)
        return total

    def get_data(self, outputs: dict) -> dict:
        res = self._result
        data = {}
        for eid, attrs in outputs.items():
            if eid != EID:
                raise ValueError(f"{self.sid}: unknown entity {eid!r}")
            out = {}
            for attr in attrs:
                if attr in _ARRAY_ATTRS or attr in _SCALAR_ATTRS:
                    out[attr] = getattr(res, attr)
                elif attr == "converged":
                    out[attr] = int(res.converged)
                elif attr == "nonconverged_steps":
                    out[attr] = self.model.nonconverged_steps
                elif attr in _STATIC_ATTRS:
                    out[attr] = getattr(self.model, attr)
                else:
                    raise ValueError(f"{self.sid}.{EID}: {attr!r} is not an output attribute")
            require_finite(f"{self.sid}.{EID}", **out)
            data[eid] = out
        return data
