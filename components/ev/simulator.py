"""mosaik adapter of the EV fleet: one entity models every EV; attributes are arrays.

Input (optional):

    p_set_kw   mean power setpoint per EV over the step, an array over *all* EVs of the fleet
               (positive charges, negative discharges; NaN = uncontrolled for that EV). Without
               this input the whole fleet is uncontrolled. It applies to the EVs plugged at the
               start of the step; values outside an EV's limits are clipped and counted.

Outputs for the grid (aligned to ``site_buses``, i.e. to the charging sites in config order):

    p_kw, q_kvar   mean power drawn over the step, load convention (V2G is negative) [kW, kvar]

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

from typing import Any

import mosaik_api_v3
import numpy as np

from components.base import require_finite, step_index
from components.ev.config import EVConfig
from components.ev.model import EVFleet

MODEL = "EVFleet"
EID = "fleet"
INPUTS = ["p_set_kw"]
GRID_OUTPUTS = ["p_kw", "q_kvar"]
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

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        MODEL: {
            "public": True,
            "params": ["config", "site_buses", "shifts", "temperature_c"],
            "attrs": INPUTS + GRID_OUTPUTS + PLUGGED_OUTPUTS + STEP_OUTPUTS + KPI_OUTPUTS
            + STATIC_OUTPUTS,
        },
    },
}


class EVSimulator(mosaik_api_v3.Simulator):
    """mosaik simulator wrapping :class:`~components.ev.model.EVFleet`."""

    def __init__(self) -> None:
        super().__init__(META)
        self.sid = MODEL
        self.fleet: EVFleet | None = None
        self._plugged: dict[str, np.ndarray] | None = None
        self._unmet_kwh = 0.0

    def init(self, sid: str, time_resolution: float = 1.0,
             start: str = "2026-06-01T00:00:00+08:00", step_s: int = 900, n_steps: int = 96,
             seed: int = 0) -> dict:
        """Set the clock: step ``k`` starts at ``start + k * step_s``; randomness from ``seed``."""
        self.sid = sid
        if step_s <= 0 or n_steps <= 0:
            raise ValueError(f"{sid}: step_s and n_steps must be > 0, got {step_s}, {n_steps}")
        ticks = step_s / time_resolution
        if abs(ticks - round(ticks)) > 1e-9:
            raise ValueError(f"{sid}: step_s={step_s} is not a whole number of mosaik time "
                             f"units of {time_resolution} s")
        self.start = start
        self.step_s = int(step_s)
        self.step_ticks = int(round(ticks))
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
        sources = {src: v for src, v in inputs.get(EID, {}).get("p_set_kw", {}).items()
                   if v is not None}
        p_set = None
        if len(sources) > 1:
            raise ValueError(f"{self.sid}.{EID} at t={time}: p_set_kw comes from "
                             f"{sorted(sources)}; connect one coordinator only")
        if sources:
            p_set = np.asarray(next(iter(sources.values())), dtype=float)
            if np.isinf(p_set).any():
                raise ValueError(f"{self.sid}.{EID} at t={time}: p_set_kw has infinite values")
        try:
            self.fleet.step(k, p_set)
        except (ValueError, RuntimeError) as exc:
            raise RuntimeError(f"{self.sid}.{EID} at t={time} (step {k}): {exc}") from exc
        self._unmet_kwh = self.fleet.unmet_step_kwh
        self._plugged = None
        return time + self.step_ticks

    def get_data(self, outputs: dict) -> dict:
        """Arrays by reference; every numeric value is checked to be finite before it leaves."""
        fleet = self.fleet
        if fleet is None:
            raise RuntimeError(f"{self.sid}: get_data called before create")
        data: dict[str, dict[str, Any]] = {}
        for eid, attrs in outputs.items():
            if eid != EID:
                raise ValueError(f"{self.sid}: unknown entity {eid!r}")
            values: dict[str, Any] = {}
            kpis = None
            for attr in attrs:
                if attr == "p_kw":
                    values[attr] = fleet.p_site_kw
                elif attr == "q_kvar":
                    values[attr] = fleet.q_site_kvar
                elif attr in PLUGGED_OUTPUTS:
                    if self._plugged is None:
                        self._plugged = fleet.plugged_view()
                    values[attr] = self._plugged[attr]
                elif attr == "charge_kw":
                    values[attr] = fleet.charge_kw
                elif attr == "discharge_kw":
                    values[attr] = fleet.discharge_kw
                elif attr == "clamped_count":
                    values[attr] = fleet.clamped_count
                elif attr == "unmet_kwh":
                    values[attr] = self._unmet_kwh
                elif attr == "n_plugged":
                    values[attr] = int(fleet.n_plugged)
                elif attr in KPI_OUTPUTS:
                    kpis = kpis or fleet.kpis()
                    values[attr] = kpis[attr]
                elif attr == "n_ev":
                    values[attr] = fleet.n_ev
                elif attr == "p_set_kw":
                    raise ValueError(f"{self.sid}: p_set_kw is an input, not an output")
                else:
                    raise ValueError(f"{self.sid}: unknown attribute {attr!r}")
            numeric = {k: v for k, v in values.items() if k not in ("plugged_v2g",)}
            require_finite(f"{self.sid}.{eid}", **numeric)
            data[eid] = values
        return data


def main() -> None:
    """Run as a separate process: ``python -m components.ev.simulator HOST:PORT``."""
    mosaik_api_v3.start_simulation(EVSimulator(), "EV fleet simulator")


if __name__ == "__main__":
    main()
