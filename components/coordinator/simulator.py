"""mosaik adapter of the SDG coordinator: one entity for the whole zone, array attributes.

Inputs (each from one source; attributes renamed on connection, e.g.
``world.connect(pv, coord, ("p_kw", "pv_p_kw"))``):

    plugged_ids, plugged_site, plugged_soc, plugged_need_kwh, plugged_departure_s,
    plugged_p_max_kw, plugged_p_min_kw, plugged_v2g
                     from the EV fleet, **time-shifted**: the fleet's values after step k-1
                     describe the EVs plugged at t_k. initial_data: the fleet's view before
                     its first step (None: no EV is known at step 0, all charge uncontrolled).
    pv_avail_kw, pv_p_kw, pv_q_kvar
                     from the PV fleet, same step: available, delivered (load convention,
                     generation negative) and reactive power per plant [kW], [kvar]
    factory_p_kw, factory_q_kvar, factory_deferrable_kw, factory_critical_kw
                     from the factories, same step [kW], [kvar]
    grid_vm_pu, grid_line_loading_pct, grid_trafo_loading_pct, grid_import_kw
                     from the grid, **time-shifted**: the power flow of step k-1. initial_data:
                     the grid's state before the first step (its set-up power flow).
    grid_<attr>      for island mode, optional, the same way: the grid's ``islanded``,
                     ``island_held``, ``islanded_next``, ``gfm_*``, ``background_class_kw``,
                     ``background_load_shed_kw``, ``background_storage_kw``,
                     ``background_gen_kw``, ``background_gen_unserved_kw``, ``losses_kw``
                     (:data:`components.coordinator.island.GRID_TELEMETRY`)

Outputs:

    p_set_kw       mean power per EV for step k, over *all* EVs (NaN = uncontrolled: the EV
                   charges at its maximum; EVs not plugged are NaN) [kW]; connect to the fleet
                   on the same step.
    curtail_kw, q_kvar_set
                   per plant, for step k+1: connect to the PV fleet **time-shifted**,
                   initial_data ``curtail_kw`` = the inverter ratings (no limit), ``q_kvar_set``
                   = zeros [kW], [kvar]
    shed_kw        per factory, for step k+1 (time-shifted, initial zeros) [kW]
    shed_background_share
                   share of the grid's background loads to shed in step k, per shedding class
                   (non-household, household); connect to the grid on the same step [-]
    island_mode    1 when island mode set the EV power of step k
    pv_to_ev_kw, grid_to_ev_kw, v2g_kw, pv_export_kw, pv_curtailed_kw
                   settled totals of step k (means over the step) [kW]
    cost_cny, ev_user_revenue_cny, grid_cost_cny, pv_revenue_cny
                   money of step k: EV users' charging bill, their V2G remuneration, the grid
                   part of the bill, the PV plants' income [CNY]
    peak_threshold_kw
                   import threshold of the V2G strategies (0 for the others, and before the
                   first grid state) [kW]
    n_controlled   EVs given a finite set-point this step
    transactions   the trades of step k: list of (seller, buyer, kWh, CNY/kWh, kind)

Settlement: a world that can read the EV fleet's metered site powers once the fleet has made
the step calls :meth:`CoordinatorSimulator.settle_metered` (``twin`` does); the settlement totals
and ``transactions`` then describe what the sites drew. Asked for before that, they settle the
coordinator's own set-points.

Why this wiring: the coordinator needs the PV and factory power of the step it decides (so it
runs after them and its PV/factory set-points wait one step) and the EVs plugged at its start
(the fleet's view after the previous step); the grid state can only be the previous step's.
The EVs then run on the set-points of the same step and the grid solves it. So the cycles
coordinator -> PV -> coordinator, coordinator -> EV -> coordinator and coordinator -> EV ->
grid -> coordinator are each broken by exactly one time-shifted connection.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import mosaik_api_v3
import numpy as np

from components.base import finite_output, step_index, step_outputs, step_ticks
from components.coordinator.config import CoordinatorConfig
from components.coordinator.core import ZoneLayout
from components.coordinator.island import GRID_TELEMETRY
from components.coordinator.model import (
    SETTLEMENT_TOTALS,
    TOTALS,
    Coordinator,
    StepResult,
    settlement_totals,
)

MODEL = "Coordinator"
EID = "coord"
EV_INPUTS = ["plugged_ids", "plugged_site", "plugged_soc", "plugged_need_kwh",
             "plugged_departure_s", "plugged_p_max_kw", "plugged_p_min_kw", "plugged_v2g"]
PV_INPUTS = {"pv_avail_kw": "p_avail_kw", "pv_p_kw": "p_kw", "pv_q_kvar": "q_kvar"}
FACTORY_INPUTS = {"factory_p_kw": "p_kw", "factory_q_kvar": "q_kvar",
                  "factory_deferrable_kw": "deferrable_kw", "factory_critical_kw": "critical_kw"}
GRID_INPUTS = {"grid_vm_pu": "vm_pu", "grid_line_loading_pct": "line_loading_pct",
               "grid_trafo_loading_pct": "trafo_loading_pct", "grid_import_kw": "import_kw"}
ISLAND_INPUTS = {f"grid_{a}": a for a in GRID_TELEMETRY}
SETPOINT_OUTPUTS = ["p_set_kw", "curtail_kw", "q_kvar_set", "shed_kw", "shed_background_share"]
TOTAL_OUTPUTS = [*(t for t in TOTALS), "peak_threshold_kw", "n_controlled", "island_mode"]
OUTPUTS = [*SETPOINT_OUTPUTS, *TOTAL_OUTPUTS, "transactions"]
_OUTPUT_SET = frozenset(OUTPUTS)
_SETTLED = frozenset((*SETTLEMENT_TOTALS, "transactions"))
_RESULT_OUTPUTS: dict[str, Callable[[StepResult], Any]] = {
    **{a: attrgetter(a) for a in ("curtail_kw", "q_kvar_set", "shed_kw",
                                  "shed_background_share", "island_mode", "n_controlled")},
    "peak_threshold_kw": lambda res: (res.peak_threshold_kw
                                      if math.isfinite(res.peak_threshold_kw) else 0.0),
}
"""The outputs read off a step's result other than ``p_set_kw``, ``transactions`` and the
totals."""
INPUTS = [*EV_INPUTS, *PV_INPUTS, *FACTORY_INPUTS, *GRID_INPUTS, *ISLAND_INPUTS]
_INPUT_GROUPS: dict[str, tuple[str, str]] = {
    **{a: ("ev", a) for a in EV_INPUTS},
    **{a: ("pv", src) for a, src in PV_INPUTS.items()},
    **{a: ("factory", src) for a, src in FACTORY_INPUTS.items()},
    **{a: ("grid", src) for a, src in GRID_INPUTS.items()},
    **{a: ("island", src) for a, src in ISLAND_INPUTS.items()},
}
"""Input -> (group, the source's own attribute name); the groups go to the model as dicts."""
_GROUPS = ("ev", "pv", "factory", "grid", "island")
_INPUT_SLOTS = {a: (_GROUPS.index(group), src) for a, (group, src) in _INPUT_GROUPS.items()}
"""Input -> (index of its group in :data:`_GROUPS`, the source's own attribute name)."""

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        MODEL: {
            "public": True,
            "params": ["config", "n_ev", "sites", "plants", "factories", "ev", "location",
                       "grid", "outage", "grid_forming"],
            "attrs": INPUTS + OUTPUTS,
        },
    },
}


class CoordinatorSimulator(mosaik_api_v3.Simulator):
    """mosaik simulator wrapping :class:`~components.coordinator.model.Coordinator`."""

    def __init__(self) -> None:
        super().__init__(META)
        self.sid = MODEL
        self._sender = f"{MODEL}.{EID}"
        self.coord: Coordinator | None = None
        self._result: StepResult | None = None
        self._checked: dict[str, Any] = {}  # outputs of this step, computed and checked
        self._checked_once: frozenset[int] = frozenset()  # ids of outputs checked at set-up

    def init(self, sid: str, time_resolution: float = 1.0,
             start: str = "2026-06-01T00:00:00+08:00", step_s: int = 900, n_steps: int = 96,
             seed: int = 0) -> dict:
        """Set the clock: step ``k`` starts at ``start + k * step_s`` (mosaik time ``k * step``).

        The coordinator is deterministic; ``seed`` is accepted for a uniform interface.
        """
        self.sid = sid
        self._sender = f"{sid}.{EID}"  # who the outputs' errors name
        self.step_ticks = step_ticks(sid, step_s, n_steps, time_resolution)
        self.start = start
        self.step_s = int(step_s)
        self.n_steps = int(n_steps)
        self.rng = np.random.default_rng(int(seed))
        return self.meta

    def create(self, num: int, model: str, config: dict[str, Any], n_ev: int,
               sites: list[dict], plants: list[dict] | None = None,
               factories: list[dict] | None = None, ev: dict | None = None,
               location: dict | None = None, grid: dict | None = None,
               outage: list[int] | None = None, grid_forming: dict | None = None
               ) -> list[dict]:
        """Create the single coordinator entity.

        Parameters
        ----------
        config : dict
            The ``coordinator`` section (``CoordinatorConfig.model_dump(mode="json")``).
        n_ev : int
            Fleet size: the length of ``p_set_kw``.
        sites, plants, factories, ev, location, grid
            See :meth:`components.coordinator.core.ZoneLayout.from_params`.
        outage : list of int, optional
            The grid operator's announced outage schedule, 1 per islanded step (island mode).
        grid_forming : dict, optional
            ``e_kwh``, ``soc_min``, ``efficiency`` of the grid-forming battery (island mode's
            energy budget).
        """
        if model != MODEL:
            raise ValueError(f"{self.sid}: unknown model {model!r}; this simulator has {MODEL!r}")
        if num != 1 or self.coord is not None:
            raise ValueError(f"{self.sid}: create exactly one {MODEL} entity (it coordinates "
                             "the whole zone)")
        cfg = CoordinatorConfig.model_validate(config)
        zone = ZoneLayout.from_params(n_ev, sites, plants or [], factories or [], ev, location,
                                      grid)
        self.coord = Coordinator(cfg, zone, self.start, self.step_s, self.n_steps,
                                 None if outage is None else np.asarray(outage, dtype=bool),
                                 grid_forming)
        # the model's shared set-points are read-only: checked once here, not every step
        for attr, value in self.coord.shared_setpoints.items():
            finite_output(self._sender, attr, value)
        self._checked_once = frozenset(map(id, self.coord.shared_setpoints.values()))
        return [{"eid": EID, "type": MODEL}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        """Decide and settle step ``time // step``."""
        if self.coord is None:
            raise RuntimeError(f"{self.sid}: step called before create")
        k = step_index(self.sid, time, self.step_ticks, self.n_steps)
        # each input under its source's own name, in the group of its source (None: not sent)
        groups: tuple[dict[str, Any], ...] = ({}, {}, {}, {}, {})  # in _GROUPS order
        for attr, by_source in inputs.get(EID, {}).items():
            try:
                (value,) = by_source.values()  # the usual case: one source
            except ValueError:
                value = self._one(attr, by_source, time)
            slot = _INPUT_SLOTS.get(attr)
            if value is not None and slot is not None:
                groups[slot[0]][slot[1]] = value
        ev_view, pv, factory, grid, island = groups
        if len(ev_view) < len(EV_INPUTS):
            if ev_view:
                missing = [a for a in EV_INPUTS if a not in ev_view]
                raise ValueError(f"{self.sid}.{EID} at t={time}: EV inputs incomplete, missing "
                                 f"{missing}; connect all of {EV_INPUTS}")
            ev_view = None
        if len(grid) < len(GRID_INPUTS):
            grid = None  # the grid state is used complete or not at all
        elif island:
            grid.update(island)
        try:
            self._result = self.coord.step(k, ev_view, pv or None, factory or None, grid)
        except (ValueError, RuntimeError) as exc:
            raise RuntimeError(f"{self.sid}.{EID} at t={time} (step {k}): {exc}") from exc
        self._checked = self._ready(self._result)
        return time + self.step_ticks

    def _ready(self, res: StepResult) -> dict[str, Any]:
        """The outputs of step result ``res`` known to be valid at a glance, those asked for
        every step: the counts and the threshold, ``p_set_kw`` without infinite values, a
        finite curtailment total and the set-points shared read-only (checked at set-up). The
        others are checked when asked for (:meth:`_output`)."""
        ready: dict[str, Any] = {"n_controlled": res.n_controlled,
                                 "island_mode": res.island_mode,
                                 "peak_threshold_kw": _RESULT_OUTPUTS["peak_threshold_kw"](res)}
        if not res.n_infinite:
            ready["p_set_kw"] = res.p_set_kw
        curtailed = res.totals["pv_curtailed_kw"]
        if math.isfinite(curtailed):
            ready["pv_curtailed_kw"] = curtailed
        once = self._checked_once
        for attr, value in (("curtail_kw", res.curtail_kw), ("q_kvar_set", res.q_kvar_set),
                            ("shed_kw", res.shed_kw),
                            ("shed_background_share", res.shed_background_share)):
            if id(value) in once:
                ready[attr] = value
        return ready

    def settle_metered(self, time: int, charge_kw: np.ndarray, discharge_kw: np.ndarray
                       ) -> dict[str, Any]:
        """Settle the step at ``time`` on the sites' metered powers (see
        :meth:`Coordinator.settle`); return its settlement totals and ``transactions``, which
        ``get_data`` gives from then on. A world calls this once the EV fleet has made the
        step; otherwise the first ``get_data`` of those settles the dispatch."""
        if self.coord is None or self._result is None:
            raise RuntimeError(f"{self.sid}: settle_metered before the first step")
        k = step_index(self.sid, time, self.step_ticks, self.n_steps)
        out: dict[str, Any] = self._settle(k, charge_kw, discharge_kw)
        if not math.isfinite(sum(out.values())):  # NaN and infinities carry into the sum
            for a, value in out.items():
                finite_output(self._sender, a, value)
        out["transactions"] = self._result.transactions
        return out

    def _settle(self, k: int, charge_kw: np.ndarray | None = None,
                discharge_kw: np.ndarray | None = None) -> dict[str, float]:
        """Settle step ``k`` into the step's result (dispatch unless metered powers given);
        return its settlement totals (a new dict)."""
        try:
            settle = self.coord.settle(k, charge_kw, discharge_kw)
        except ValueError as exc:
            raise RuntimeError(f"{self.sid}.{EID} (step {k}): {exc}") from exc
        res = self._result
        totals = settlement_totals(settle)
        res.totals.update(totals)
        res.transactions = settle.transactions
        res.settlement = settle
        if not _SETTLED.isdisjoint(self._checked):  # got before: the dispatch's, now stale
            for attr in _SETTLED:
                self._checked.pop(attr, None)
        return totals

    def _one(self, attr: str, by_source: dict, time: int) -> Any:
        """The value of ``attr`` from its one source that sent one (None if none did)."""
        sources = {s: v for s, v in by_source.items() if v is not None}
        if len(sources) > 1:
            raise ValueError(f"{self.sid}.{EID} at t={time}: {attr} comes from "
                             f"{sorted(sources)}; connect one source only")
        return next(iter(sources.values())) if sources else None

    def get_data(self, outputs: dict) -> dict:
        """Arrays by reference; numbers are checked to be finite (``p_set_kw``: not infinite)."""
        if self.coord is None:
            raise RuntimeError(f"{self.sid}: get_data called before create")
        for attrs in outputs.values():
            if not _OUTPUT_SET.issuperset(attrs):
                unknown = [a for a in attrs if a not in _OUTPUT_SET]
                raise ValueError(f"{self.sid}: {unknown} are not outputs; outputs: {OUTPUTS}")
            if self._result is None:
                raise RuntimeError(f"{self.sid}: get_data before the first step")
        return step_outputs(self.sid, EID, outputs, self._checked, self._output)

    def _output(self, attr: str) -> Any:
        """Output ``attr`` of the step, checked: numbers finite, ``p_set_kw`` not infinite."""
        res = self._result
        if attr == "p_set_kw":
            if res.n_infinite:  # NaN is allowed: uncontrolled
                raise ValueError(f"{self._sender}: attribute 'p_set_kw' has infinite values")
            return res.p_set_kw
        if attr in _SETTLED:
            if res.settlement is None:
                self._settle(self.coord.k - 1)  # not settled on metered power: the dispatch
            if attr == "transactions":
                return res.transactions
        read = _RESULT_OUTPUTS.get(attr)
        value = res.totals[attr] if read is None else read(res)
        return value if id(value) in self._checked_once \
            else finite_output(self._sender, attr, value)


def main() -> None:
    """Run as a separate process: ``python -m components.coordinator.simulator HOST:PORT``."""
    mosaik_api_v3.start_simulation(CoordinatorSimulator(), "SDG coordinator simulator")


if __name__ == "__main__":
    main()
