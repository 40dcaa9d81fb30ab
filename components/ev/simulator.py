"""mosaik adapter of the EV fleet: one entity models every EV; attributes are arrays.

Input (optional):

    p_set_kw   mean power setpoint per EV over the step, an array over *all* EVs of the fleet
               (positive charges, negative discharges; NaN = uncontrolled for that EV). Without
               this input the whole fleet is uncontrolled. It applies to the EVs plugged at the
               start of the step; values outside an EV's limits are clipped and counted.

Outputs for the grid (aligned to ``site_buses``, i.e. to the charging sites in config order):

    p_kw, q_kvar   mean power drawn over the step, load convention (V2G is negative) [kW, kvar]

Metered per site (same alignment), both directions, for settlement:

    charge_site_kw, discharge_site_kw   mean charging and V2G power over the step, >= 0 [kW]

Outputs for a coordinator, describing the EVs plugged at the *start of the next step* (the EVs
the next setpoints apply to):

    plugged_ids, plugged_site, plugged_soc [-], plugged_need_kwh (battery energy still needed by
    departure), plugged_departure_s (seconds from start), plugged_p_max_kw, plugged_p_min_kw
    (mean powers achievable over the next step; p_min < 0 only where V2G is allowed), plugged_v2g

Per-step totals: charge_kw, discharge_kw, clamped_count, unmet_kwh (energy users lacked when
leaving at the end of this step), n_plugged (EVs plugged at the start of the next step).
Fleet totals since the start (for KPIs; take the last value): the keys of
:meth:`components.ev.model.EVFleet.kpis`; the capacity fade is updated at each local midnight.
Static: n_ev.

Timing: mosaik time ``t = k * step_s`` (in mosaik time units) is step ``k`` of the model.
"""

from __future__ import annotations

import math
from typing import Any

import mosaik_api_v3
import numpy as np

from components.base import finite_output, require_finite, step_index, step_outputs, step_ticks
from components.ev.config import EVConfig
from components.ev.model import EVFleet

MODEL = "EVFleet"
EID = "fleet"
INPUTS = ["p_set_kw"]
GRID_OUTPUTS = ["p_kw", "q_kvar"]
METERED_OUTPUTS = ["charge_site_kw", "discharge_site_kw"]
PLUGGED_OUTPUTS = [
    "plugged_ids", "plugged_site", "plugged_soc", "plugged_need_kwh", "plugged_departure_s",
    "plugged_p_max_kw", "plugged_p_min_kw", "plugged_v2g",
]
STEP_OUTPUTS = ["charge_kw", "discharge_kw", "clamped_count", "unmet_kwh", "n_plugged"]
KPI_OUTPUTS = [
    "ev_charge_energy_mwh", "ev_discharge_energy_mwh", "ev_unmet_energy_mwh", "ev_trips_short",
    "ev_plug_refusals", "ev_capacity_fade_pct_mean", "ev_driven_energy_mwh",
    "ev_trip_shortfall_mwh", "ev_trips", "ev_setpoints_clamped",
]
STATIC_OUTPUTS = ["n_ev"]
# the outputs computed (and checked) together: the step's results, the plugged view, the KPIs
_GROUP = {**dict.fromkeys([*GRID_OUTPUTS, *METERED_OUTPUTS, *STEP_OUTPUTS], "step"),
          **dict.fromkeys(PLUGGED_OUTPUTS, "plugged"), **dict.fromkeys(KPI_OUTPUTS, "kpis")}

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        MODEL: {
            "public": True,
            "params": ["config", "site_buses", "shifts", "temperature_c"],
            "attrs": INPUTS + GRID_OUTPUTS + METERED_OUTPUTS + PLUGGED_OUTPUTS + STEP_OUTPUTS
            + KPI_OUTPUTS + STATIC_OUTPUTS,
        },
    },
}


class EVSimulator(mosaik_api_v3.Simulator):
    """mosaik simulator wrapping :class:`~components.ev.model.EVFleet`."""

    def __init__(self) -> None:
        super().__init__(META)
        self.sid = MODEL
        self.fleet: EVFleet | None = None
        self._sender = f"{self.sid}.{EID}"
        # outputs of the current step, computed and checked once: a world may ask for them
        # more than once per step (its connections, then its recorder)
        self._out: dict[str, Any] = {}

    def init(self, sid: str, time_resolution: float = 1.0,
             start: str = "2026-06-01T00:00:00+08:00", step_s: int = 900, n_steps: int = 96,
             seed: int = 0) -> dict:
        """Set the clock: step ``k`` starts at ``start + k * step_s``; randomness from ``seed``."""
        self.sid = sid
        self._sender = f"{sid}.{EID}"
        self.step_ticks = step_ticks(sid, step_s, n_steps, time_resolution)
        self.start = start
        self.step_s = int(step_s)
        self.n_steps = int(n_steps)
        self.rng = np.random.default_rng(int(seed))
        return self.meta

    def create(self, num: int, model: str, config: dict[str, Any], site_buses: list[int],
               shifts: list[dict] | None = None,
               temperature_c: list[float] | None = None) -> list[dict]:
        """Create the single fleet entity.

        Parameters
        ----------
        config : dict
            The ``ev`` section (``EVConfig.model_dump(mode="json")``).
        site_buses : list of int
            Grid bus of each charging site, in config order.
        shifts : list of dict, optional
            Factory shifts ``{"start": "HH:MM", "end": "HH:MM", "days": [0..6]}`` for shift
            workers.
        temperature_c : list of float, optional
            Ambient temperature per step [degC]; default: the config's monthly table.
        """
        if model != MODEL:
            raise ValueError(f"{self.sid}: unknown model {model!r}; this simulator has {MODEL!r}")
        if num != 1 or self.fleet is not None:
            raise ValueError(f"{self.sid}: create exactly one {MODEL} entity (it models every EV)")
        cfg = EVConfig.model_validate(config)
        temps = None if temperature_c is None else np.asarray(temperature_c, dtype=float)
        if temps is not None:
            require_finite(f"{self.sid}.create", temperature_c=temps)
        self.fleet = EVFleet(cfg, [int(b) for b in site_buses], self.start, self.step_s,
                             self.n_steps, self.rng, shifts=shifts, temperature_c=temps)
        return [{"eid": EID, "type": MODEL}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        """Run step ``time // step`` with the setpoints received (if any)."""
        if self.fleet is None:
            raise RuntimeError(f"{self.sid}: step called before create")
        k = step_index(self.sid, time, self.step_ticks, self.n_steps)
        # a time-shifted connection delivers its initial_data (None = no setpoints) first
        sources = inputs[EID].get("p_set_kw", {}) if EID in inputs else {}
        if len(sources) > 1:
            sources = {src: v for src, v in sources.items() if v is not None}
            if len(sources) > 1:
                raise ValueError(f"{self.sid}.{EID} at t={time}: p_set_kw comes from "
                                 f"{sorted(sources)}; connect one coordinator only")
        p_set = next(iter(sources.values())) if sources else None
        if p_set is not None:  # the model rejects infinite setpoints
            p_set = np.asarray(p_set, dtype=float)
        try:
            self.fleet.step(k, p_set)
        except (ValueError, RuntimeError) as exc:
            raise RuntimeError(f"{self.sid}.{EID} at t={time} (step {k}): {exc}") from exc
        self._out = {}
        return time + self.step_ticks

    def get_data(self, outputs: dict) -> dict:
        """Arrays by reference; every numeric value is checked to be finite before it leaves."""
        if self.fleet is None:
            raise RuntimeError(f"{self.sid}: get_data called before create")
        return step_outputs(self.sid, EID, outputs, self._out, self._output)

    def _output(self, attr: str) -> Any:
        """The value of ``attr`` after the last step, checked to be finite.

        The outputs made together (the step's results, the plugged view, the KPIs) are checked
        and kept together: a world asks for most of them in every step.
        """
        fleet = self.fleet
        group_of = _GROUP.get(attr)
        arrays_finite = False  # whether the kernel that made the arrays found them all finite
        if group_of == "step":
            group = {"p_kw": fleet.p_site_kw, "q_kvar": fleet.q_site_kvar,
                     "charge_site_kw": fleet.charge_site_kw,
                     "discharge_site_kw": fleet.discharge_site_kw, "charge_kw": fleet.charge_kw,
                     "discharge_kw": fleet.discharge_kw, "clamped_count": fleet.clamped_count,
                     "unmet_kwh": fleet.unmet_step_kwh, "n_plugged": fleet.n_plugged}
            arrays_finite = fleet.sites_finite
        elif group_of == "plugged":
            group = fleet.plugged_view()
            if fleet.view_finite:  # all arrays, each value checked by the kernels
                self._out.update(group)
                return group[attr]
        elif group_of == "kpis":
            group = fleet.kpis()
        elif attr == "n_ev":
            group = {attr: fleet.n_ev}
        elif attr == "p_set_kw":
            raise ValueError(f"{self.sid}: p_set_kw is an input, not an output")
        else:
            raise ValueError(f"{self.sid}: unknown attribute {attr!r}")
        self._keep_checked(group, arrays_finite)
        return group[attr]

    def _keep_checked(self, group: dict[str, Any], arrays_finite: bool = False) -> None:
        """Keep the values of ``group`` as this step's outputs once each is known to be finite.

        One test for the whole group: a sum of squares is finite only if every value is; if it
        is not (a bad value, or values beyond 1e154), each value is checked, naming a bad one.
        With ``arrays_finite`` (the kernel that made them checked each value) only the other
        values are tested; without it, a bad array is named the same way.
        """
        sender = self._sender
        squares = 0.0
        for name, value in group.items():
            kind = type(value)
            if kind is float:
                squares += value * value
            elif kind is np.ndarray and (arrays_finite or value.dtype.kind in "biu"):
                continue
            elif kind is np.ndarray and value.ndim == 1 and value.dtype.kind == "f":
                squares += value.dot(value)
            elif not (kind is int or kind is bool):
                finite_output(sender, name, value)
        if not math.isfinite(squares):
            for name, value in group.items():
                finite_output(sender, name, value)
        self._out.update(group)


def main() -> None:
    """Run as a separate process: ``python -m components.ev.simulator HOST:PORT``."""
    mosaik_api_v3.start_simulation(EVSimulator(), "EV fleet simulator")


if __name__ == "__main__":
    main()
