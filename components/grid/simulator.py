"""mosaik adapter of the grid: one entity, the whole network, one power flow per step.

Inputs ``p_kw`` and ``q_kvar`` arrive per source (``{source_full_id: array}``), each array
aligned to the bus list that source was registered with in ``create(injectors=...)``; the
model sums them per bus (``GridModel.solve_step_sum``). A registered source that sends
nothing in a step counts as zero for that step. Outputs are arrays aligned to ``bus_ids``,
``line_ids`` and ``trafo_ids`` (static attributes of the entity) plus zone totals.

Resilience outputs (see :class:`components.grid.model.GridResult` for each): ``energised`` and
``v_quality_ok`` per bus; ``islanded``, ``island_held`` and ``islanded_next`` (the event
schedule's next step); the grid-forming unit's ``gfm_supply_kw`` (delivered into the zone,
positive discharging), ``gfm_demand_kw``, ``gfm_soc``, ``gfm_e_kwh``, ``gfm_headroom_kw`` (how much
the island's net load may grow next step; negative: shed or dispatch that much) and
``gfm_absorb_headroom_kw`` (how much its net generation may grow; negative: curtail that much);
energy not supplied as ``background_load_unserved_kw`` and ``injection_unserved_kw`` (per
``injection_buses``, load convention); ``customers_off`` and ``customers_interrupted``.

Load shedding: input ``shed_background_share`` (optional, one array per sender, summed and
clipped to [0, 1]) is the share of the network's own loads of each class of
:data:`components.grid.model.SHED_CLASSES` (non-household first, households last) to shed in
this step; outputs ``background_class_kw`` (what each class asked, before shedding) and
``background_load_shed_kw`` (what was shed at energised buses).
"""

from __future__ import annotations

import mosaik_api_v3
import numpy as np
import pandas as pd

from components.base import finite_output, step_index, step_outputs, step_ticks
from components.grid.config import GridConfig
from components.grid.model import SHED_CLASSES, GridModel, GridResult, load_network, resolve_bus

EID = "grid"

_ARRAY_ATTRS = ("vm_pu", "va_deg", "line_loading_pct", "trafo_loading_pct", "energised",
                "v_quality_ok", "injection_unserved_kw", "shunt_steps", "shunt_q_kvar",
                "background_class_kw")
_SCALAR_ATTRS = ("losses_kw", "import_kw", "q_import_kvar", "background_load_kw",
                 "background_gen_kw", "background_storage_kw", "injection_kw", "islanded",
                 "island_held", "gfm_supply_kw", "gfm_demand_kw", "gfm_losses_kw", "gfm_soc",
                 "gfm_e_kwh", "gfm_headroom_kw", "gfm_absorb_headroom_kw",
                 "background_load_unserved_kw", "background_gen_unserved_kw", "customers_off",
                 "customers_interrupted", "ties_closed", "background_load_shed_kw")
_STATIC_ATTRS = ("bus_ids", "line_ids", "trafo_ids", "injection_buses", "shunt_buses",
                 "tie_switch_ids")
_RESULT_ATTRS = frozenset(_ARRAY_ATTRS + _SCALAR_ATTRS)  # read from the step's GridResult
_NONE: dict = {}  # no inputs (never modified)


def _finite_outputs(r: GridResult) -> dict[str, object]:
    """The outputs of a ``GridModel.finite_result``, which need no check of their own (a dict
    display: several times cheaper than one built from names and values)."""
    return {"vm_pu": r.vm_pu, "va_deg": r.va_deg, "line_loading_pct": r.line_loading_pct,
            "trafo_loading_pct": r.trafo_loading_pct, "losses_kw": r.losses_kw,
            "import_kw": r.import_kw, "q_import_kvar": r.q_import_kvar,
            "background_load_kw": r.background_load_kw,
            "background_gen_kw": r.background_gen_kw,
            "background_storage_kw": r.background_storage_kw, "injection_kw": r.injection_kw,
            "converged": int(r.converged)}


META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Grid": {
            "public": True,
            "params": ["config", "injectors", "net", "events"],
            "attrs": ["p_kw", "q_kvar", "shed_background_share", *_ARRAY_ATTRS, *_SCALAR_ATTRS,
                      "converged", "nonconverged_steps", "islanded_next", *_STATIC_ATTRS],
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
        self._no_shed = np.zeros(len(SHED_CLASSES))
        self._no_shed.flags.writeable = False  # handed out step after step
        self._shed_applied = self._no_shed
        # outputs of the current state, each checked for finiteness once: mosaik and the
        # recorder ask for them separately every step (None: none asked for yet)
        self._sent: dict[str, object] | None = None
        # per set of senders (P, then Q): bin of each concatenated element, start of each array
        self._plans: dict[tuple[tuple[str, ...], tuple[str, ...]],
                          tuple[np.ndarray, np.ndarray]] = {}

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
        self.step_ticks = step_ticks(sid, step_s, n_steps, time_resolution)
        self.sid = sid
        self._name = f"{sid}.{EID}"
        self.time_resolution = float(time_resolution)
        self.step_s = int(step_s)
        self.n_steps = int(n_steps)
        self.times = pd.date_range(pd.Timestamp(start), periods=self.n_steps,
                                   freq=pd.Timedelta(seconds=self.step_s))
        self.rng = np.random.default_rng(seed)
        return self.meta

    def create(self, num: int, model: str, config: dict,
               injectors: dict[str, list[int]] | None = None, net=None,
               events: list[dict] | None = None) -> list[dict]:
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
        events : list of dict, optional
            The scenario's ``events`` (upstream outages, faults), each as a plain dict
            (``model_dump(mode="json")``); times in hours count from ``start``.
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

        # one customer connection per device element at each bus
        customers = np.zeros(self.injection_buses.size, dtype=np.int64)
        for pos in self._source_pos.values():
            np.add.at(customers, pos, 1)
        cfg = self.config
        self.model = GridModel(net, self.times, profiles=cfg.background_profiles,
                               background_scale=cfg.background_scale,
                               injection_buses=self.injection_buses, solver=cfg.solver,
                               grid_forming=cfg.grid_forming, tie_switches=cfg.tie_switches,
                               shunts=cfg.shunts, events=events or [], step_s=self.step_s,
                               v_band_pu=cfg.v_band_pu,
                               max_loading_pct=cfg.restoration_max_loading_pct,
                               injection_customers=customers)
        self._next = 0  # step the next power flow solves
        self._result = self.model.initial_result
        self._sent = None
        self._max_nonconverged = int(np.floor(self.config.max_nonconverged_share * self.n_steps))
        return [{"eid": EID, "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        """Sum the sources' powers per bus and solve the power flow of step ``time``.

        A registered source with no value in ``inputs`` this step counts as zero. Raises
        ``RuntimeError`` once more steps failed to converge than ``max_nonconverged_share``
        of the run allows.
        """
        k = step_index(self._name, time, self.step_ticks, self.n_steps)
        values = inputs.get(EID, _NONE)
        by_source = values.get("shed_background_share")
        shed = self._shed_share(by_source, time) if by_source else None
        self._shed_applied = self._no_shed if shed is None else shed
        self._result = self._solve(k, values.get("p_kw", _NONE), values.get("q_kvar", _NONE),
                                   shed, time)
        self._next = k + 1
        self._sent = None
        if self.model.nonconverged_steps > self._max_nonconverged:
            raise RuntimeError(
                f"{self._name} at t={time} s ({self.times[k].isoformat()}): the power flow "
                f"did not converge in {self.model.nonconverged_steps} steps (at steps "
                f"{self.model.nonconverged_at[:10]}), more than max_nonconverged_share="
                f"{self.config.max_nonconverged_share} of {self.n_steps} steps allows "
                f"({self._max_nonconverged})"
            )
        return time + self.step_ticks

    def _shed_share(self, by_source: dict, time: int) -> np.ndarray | None:
        total = None
        for src, values in by_source.items():
            arr = np.asarray(values, dtype=np.float64).ravel()
            if arr.shape != (len(SHED_CLASSES),) or not np.isfinite(arr).all():
                raise ValueError(f"{self._name} at t={time} s: shed_background_share from "
                                 f"{src!r} must be {len(SHED_CLASSES)} finite shares (classes "
                                 f"{SHED_CLASSES}), got {arr.tolist()}")
            total = arr if total is None else total + arr
        return None if total is None else np.clip(total, 0.0, 1.0)

    def _solve(self, k: int, p_by_source: dict, q_by_source: dict, shed: np.ndarray | None,
               time: int) -> GridResult:
        """Solve step ``k`` with P [kW] and Q [kvar] per injection bus summed over the sources
        (each element added to its bus in source order, as np.add.at would)."""
        key = (tuple(p_by_source), tuple(q_by_source))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(key, time)
        bins, ptr = plan
        try:  # the model checks each array's length (and converts lists)
            return self.model.solve_step_sum(k, [*p_by_source.values(), *q_by_source.values()],
                                             ptr, bins, shed)
        except ValueError:
            for attr, by_source in (("p_kw", p_by_source), ("q_kvar", q_by_source)):
                for src, values in by_source.items():  # name a sender whose array does not fit
                    self._check_source(attr, src, values, time)
            raise

    def _plan(self, key: tuple[tuple[str, ...], tuple[str, ...]],
              time: int) -> tuple[np.ndarray, np.ndarray]:
        """Bin of each element of the senders' arrays concatenated (Q into bins n..2n-1) and
        where each array starts in the concatenation; ``ValueError`` naming a sender that is no
        injector."""
        n = self.injection_buses.size
        for attr, sources in zip(("p_kw", "q_kvar"), key, strict=True):
            for src in sources:
                if src not in self._source_pos:
                    raise ValueError(f"{self._name} at t={time} s: {attr} from {src!r}, which "
                                     f"is not among the injectors {sorted(self._source_pos)}")
        pos = [self._source_pos[s] for s in key[0]] + [n + self._source_pos[s] for s in key[1]]
        bins = np.concatenate(pos) if pos else np.zeros(0, np.int64)
        ptr = np.zeros(len(pos) + 1, np.int64)
        np.cumsum([p.size for p in pos], out=ptr[1:])
        return bins, ptr

    def _check_source(self, attr: str, src: str, values, time: int) -> None:
        """``ValueError`` naming the sender when its array does not fit its bus list."""
        pos = self._source_pos[src]
        shape = np.shape(values)
        if shape != pos.shape:
            raise ValueError(f"{self._name} at t={time} s: {attr} from {src!r} has shape "
                             f"{shape}, its bus list has {pos.size} entries")

    def get_data(self, outputs: dict) -> dict:
        sent = self._sent
        if sent is None:  # the first request since the state changed
            result = self._result
            # known finite: ready to send (the rest is checked when first asked for)
            sent = self._sent = (_finite_outputs(result) if result is self.model.finite_result
                                 else {})
        return step_outputs(self.sid, EID, outputs, sent, self._checked_output)

    def _checked_output(self, attr: str):
        """Output ``attr`` once it is known to be finite (``ValueError`` naming it if not)."""
        if attr not in _RESULT_ATTRS:
            return finite_output(self._name, attr, self._output(attr))
        return finite_output(self._name, attr, getattr(self._result, attr))

    def _output(self, attr: str):
        if attr == "shed_background_share":  # as applied in the last step
            return self._shed_applied
        if attr == "converged":
            return int(self._result.converged)
        if attr == "nonconverged_steps":
            return self.model.nonconverged_steps
        if attr == "islanded_next":
            outage = self.model.schedule.outage
            return int(outage[self._next]) if self._next < outage.size else 0
        if attr in _STATIC_ATTRS:
            return getattr(self.model, attr)
        raise ValueError(f"{self._name}: {attr!r} is not an output attribute")
