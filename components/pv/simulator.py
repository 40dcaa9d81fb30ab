"""mosaik adapter of the PV fleet: one entity models every plant; attributes are per-plant arrays.

Inputs (optional; several sources are combined):

    curtail_kw   upper limit of each plant's AC output [kW]; element-wise minimum over sources
    q_kvar_set   reactive power request per plant, load convention [kvar]; summed over sources
                 (ignored by plants in a volt-var mode, which follow their curve)
    vm_pu        bus voltage [pu] for the plants' volt-var / volt-watt curves, from one source:
                 the grid's whole ``vm_pu`` vector once :meth:`PVSimulator.use_grid_buses` has
                 told the bus order (each plant picks its bus), otherwise one value per plant.
                 Connect it **time-shifted** (the previous step's power flow) with initial data
                 1.0; a plant whose bus is missing or non-finite sees nominal voltage.
    setpoint_delay_s
                 seconds into the step before ``curtail_kw`` / ``q_kvar_set`` apply (from a
                 communication channel); before that each plant runs on the set-points it
                 applied in the previous step [s]

Outputs (arrays aligned to the plant order, i.e. to the ``buses`` given at creation):

    p_kw            active power, load convention: generation is negative (= -ac) [kW]
    q_kvar          reactive power, load convention [kvar]
    p_avail_kw      AC power the plants could deliver (>= 0) [kW]
    p_curtailed_kw  available power withheld by curtailment (>= 0) [kW]

The weather is evaluated at step midpoints (``start + k*step_s + step_s/2``) so that the value
of step ``k`` approximates its mean over ``[t_k, t_k + step_s)``.
"""

from __future__ import annotations

import warnings
from typing import Any

import mosaik_api_v3
import numpy as np
import pandas as pd

from components.base import all_finite, finite_output, step_index, step_outputs, step_ticks
from components.pv.config import LocationConfig, PVConfig, WeatherConfig
from components.pv.inverter import InverterControl
from components.pv.model import PVFleet
from components.pv.weather import sun_position, synthetic_weather, weather_from_file

MODEL = "PVFleet"
EID = "pv"
OUTPUTS = ["p_kw", "q_kvar", "p_avail_kw", "p_curtailed_kw"]
INPUTS = ["curtail_kw", "q_kvar_set", "vm_pu", "setpoint_delay_s"]

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        MODEL: {
            "public": True,
            "params": ["config", "buses"],
            "attrs": OUTPUTS + INPUTS,
        },
    },
    "extra_methods": ["plants", "use_grid_buses"],
}

# A weather file for a site farther than this from the configured location is probably a
# mistake (the sun would not match the irradiance).
_SITE_MISMATCH_DEG = 1.0


class PVSimulator(mosaik_api_v3.Simulator):
    """mosaik simulator wrapping :class:`~components.pv.model.PVFleet`."""

    def __init__(self) -> None:
        super().__init__(META)
        self.fleet: PVFleet | None = None
        self.buses: list[int] = []
        self._vm_index: np.ndarray | None = None
        self._applied: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        self._out: dict[str, np.ndarray] = {}
        self._sent: dict[str, np.ndarray] = {}  # outputs of this step already checked

    def init(
        self,
        sid: str,
        time_resolution: float = 1.0,
        start: str = "2026-06-01T00:00:00+08:00",
        step_s: int = 900,
        n_steps: int = 96,
        seed: int = 0,
        location: dict[str, Any] | None = None,
        weather: dict[str, Any] | None = None,
    ) -> dict:
        """Set the clock (step ``k`` starts at ``start + k*step_s``), the site and the weather."""
        self.sid = sid
        self.start = pd.Timestamp(start)
        if self.start.tz is None:
            raise ValueError(f"{sid}: start {start!r} needs a UTC offset or time zone")
        self.step_ticks = step_ticks(sid, step_s, n_steps, time_resolution)
        self.step_s = int(step_s)
        self.n_steps = int(n_steps)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.location = LocationConfig.model_validate(location or {})
        self.weather_cfg = WeatherConfig.model_validate(weather or {})
        return self.meta

    def create(self, num: int, model: str, config: dict[str, Any], buses: list[int]) -> list:
        """Create the single fleet entity from the ``pv`` section and one bus per plant."""
        if model != MODEL:
            raise ValueError(f"{self.sid}: unknown model {model!r}; this simulator has {MODEL!r}")
        if num != 1 or self.fleet is not None:
            raise ValueError(f"{self.sid}: create exactly one {MODEL} entity (it models every "
                             "plant)")
        cfg = PVConfig.model_validate(config)
        plants = cfg.all_plants(self.seed)
        if len(buses) != len(plants):
            raise ValueError(f"{self.sid}: buses has {len(buses)} entries for {len(plants)} "
                             "plants; give one bus per plant in plant order")
        self.buses = [int(b) for b in buses]
        self.plant_list = plants
        times = pd.DatetimeIndex(self.start + pd.to_timedelta(
            np.arange(self.n_steps) * self.step_s + self.step_s / 2, unit="s"))
        loc = self.location
        # one sun position for the synthetic weather and the plants
        solpos = sun_position(times, loc.latitude_deg, loc.longitude_deg, loc.altitude_m)
        self.weather = self._weather(times, solpos)
        vv, vw = cfg.volt_var, cfg.volt_watt
        control = InverterControl(
            [p.control for p in plants], self.step_s, vv.v_pu, vv.q_pct, vv.response_time_s,
            vw.v_pu, vw.p_pct, vw.response_time_s,
        ) if cfg.voltage_controlled() else None
        self.fleet = PVFleet(
            plants, loc.latitude_deg, loc.longitude_deg, loc.altitude_m, self.weather,
            dc_model=cfg.dc_model, losses_pct=cfg.losses_pct,
            gamma_pdc_per_c=cfg.gamma_pdc_per_c, cec_module=cfg.cec_module, control=control,
            solar_position=solpos,
        )
        return [{"eid": EID, "type": MODEL}]

    def _weather(self, times: pd.DatetimeIndex, solpos: pd.DataFrame) -> pd.DataFrame:
        w, loc = self.weather_cfg, self.location
        if w.source == "synthetic":
            return synthetic_weather(times, loc.latitude_deg, loc.longitude_deg, loc.altitude_m,
                                     w, self.rng, solar_position=solpos)
        data = weather_from_file(w.file, times, w.file_format())
        if (abs(data.attrs["latitude_deg"] - loc.latitude_deg) > _SITE_MISMATCH_DEG
                or abs(data.attrs["longitude_deg"] - loc.longitude_deg) > _SITE_MISMATCH_DEG):
            warnings.warn(
                f"{self.sid}: weather file {w.file!r} is for ({data.attrs['latitude_deg']}, "
                f"{data.attrs['longitude_deg']}), far from the location "
                f"({loc.latitude_deg}, {loc.longitude_deg}); set location to the file's site",
                stacklevel=2,
            )
        return data

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        """Apply the set-points of step ``time // step`` and compute the outputs."""
        if self.fleet is None:
            raise RuntimeError(f"{self.sid}: step called before create")
        k = step_index(self.sid, time, self.step_ticks, self.n_steps)
        attrs = inputs.get(EID, {})
        curtail = _combine(attrs.get("curtail_kw"), np.minimum)
        q_set = _combine(attrs.get("q_kvar_set"), np.add)
        vm_pu = attrs.get("vm_pu")
        vm = None if vm_pu is None else self._plant_voltages(vm_pu, time)
        delay = _combine(attrs.get("setpoint_delay_s"), np.maximum)
        before = None
        if delay is not None and (delay > 0).any():
            before = (delay / self.step_s, *self._applied)
        self._applied = (curtail, q_set)
        try:
            ac, q, curtailed = self.fleet.dispatch(k, curtail, q_set, vm, before)
        except ValueError as exc:
            raise ValueError(f"{self.sid} at t={time} s: {exc}") from exc
        self._out = {
            "p_kw": -ac,
            "q_kvar": q,
            "p_avail_kw": self.fleet.available_ac_kw[k],  # a read-only row, finite
            "p_curtailed_kw": curtailed,
        }
        # all finite (the usual step): every output is checked; otherwise each is when asked.
        # curtailed = available - ac is finite when ac is (0 <= ac <= available, both finite)
        finite = all_finite(ac) and all_finite(q)
        self._sent = dict(self._out) if finite else {}
        return time + self.step_ticks

    def get_data(self, outputs: dict) -> dict:
        """Return the requested per-plant arrays of the last step."""
        # mosaik and the recorder ask separately: check each output once per step
        return step_outputs(self.sid, EID, outputs, self._sent, self._checked)

    def _checked(self, attr: str) -> np.ndarray:
        """Output ``attr`` of the last step, checked to be finite."""
        value = self._out.get(attr)
        if value is None:
            raise ValueError(f"{self.sid}: {attr!r} is not an output (or no step ran yet); "
                             f"outputs are {OUTPUTS}")
        return finite_output(f"{self.sid}.{EID}", attr, value)

    def _plant_voltages(self, by_source: dict | None, time: int) -> np.ndarray | None:
        """Each plant's bus voltage from the ``vm_pu`` input (None if not connected)."""
        values = [v for v in (by_source or {}).values() if v is not None]
        if not values:
            return None
        if len(values) > 1:
            raise ValueError(f"{self.sid} at t={time} s: vm_pu comes from {len(values)} sources; "
                             "connect one grid only")
        vm = np.asarray(values[0], dtype=float)
        if self._vm_index is None:
            return vm
        if vm.shape != (self._n_grid_buses,):
            raise ValueError(f"{self.sid} at t={time} s: vm_pu has shape {vm.shape}, but the grid "
                             f"bus order given has {self._n_grid_buses} buses")
        out = np.full(len(self.buses), np.nan)
        known = self._vm_index >= 0
        out[known] = vm[self._vm_index[known]]
        return out

    def use_grid_buses(self, bus_ids: list[int]) -> None:
        """Read ``vm_pu`` as the grid's vector over ``bus_ids`` (pandapower bus indices).

        A plant whose bus is not among them (e.g. out of service) sees nominal voltage.
        """
        if self.fleet is None:
            raise RuntimeError(f"{self.sid}: use_grid_buses called before create")
        ids = pd.Index([int(b) for b in bus_ids])
        self._n_grid_buses = len(ids)
        self._vm_index = ids.get_indexer(self.buses)

    def plants(self) -> list[dict[str, Any]]:
        """The plants in array order: name, kwp [kWp], inverter_kw [kW], bus, orientation."""
        return [
            {"name": p.name, "kwp": p.kwp, "inverter_kw": p.inverter_kw, "bus": bus,
             "tilt_deg": p.tilt_deg, "azimuth_deg": p.azimuth_deg, "mounting": p.mounting,
             "control": p.control}
            for p, bus in zip(self.plant_list, self.buses)
        ]


def _combine(by_source: dict | None, ufunc: np.ufunc) -> np.ndarray | None:
    """Combine one attribute's values from several sources with ``ufunc`` (None if none)."""
    if not by_source:
        return None
    values = [np.asarray(v, dtype=float) for v in by_source.values() if v is not None]
    if not values:
        return None
    if len(values) == 1:  # the usual case: what the reduction of one value gives
        if ufunc is np.add:
            return values[0] + 0.0  # the sum starts from add's identity
        if ufunc is np.minimum or ufunc is np.maximum:
            return values[0].copy()
    return ufunc.reduce(np.stack(np.broadcast_arrays(*values)), axis=0)


def main() -> None:
    """Run as a separate process: ``python -m components.pv.simulator HOST:PORT``."""
    mosaik_api_v3.start_simulation(PVSimulator(), "sdg-twin PV fleet simulator")


if __name__ == "__main__":
    main()
