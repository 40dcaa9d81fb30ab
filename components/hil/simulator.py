"""mosaik adapter of the hardware-in-the-loop devices: one entity per simulator, array attributes.

Two models, each run by its own simulator instance because they sit at different places in a
step (a simulator steps all its entities at once):

``HILDevices`` - PV inverters and batteries (SunSpec Modbus), stepped *before* the coordinator:

    inputs   curtail_kw, q_kvar_set   per plant of the zone (all plants, coordinator order),
                                      from the coordinator, time-shifted [kW], [kvar]
             fleet_p_kw, fleet_q_kvar, fleet_avail_kw
                                      the PV fleet's arrays (the fleet without the replaced
                                      plants), same step [kW], [kvar]
             grid_import_kw           the grid's import of the previous step (time-shifted)
    outputs  pv_p_kw, pv_q_kvar, pv_avail_kw
                                      all plants of the zone, fleet and devices merged in the
                                      coordinator's order (what the coordinator reads)
             battery_soc_pct          per battery [%]

``HILSites`` - charging sites (OCPP 2.0.1 stations behind the twin's CSMS), stepped *after*
the EV fleet:

    inputs   ev_p_kw, ev_q_kvar       the fleet's power per site, same step [kW], [kvar]
    outputs  metered_kw, sim_kw       per replaced site: the station's metered power and the
                                      site's simulated power it replaces [kW]

Both, per device (aligned to the ``buses`` given at creation): ``p_kw``, ``q_kvar`` to the
grid (load convention; for a charging site the correction ``metered - simulated``, so that the
grid sees the metered power where the fleet reported the simulated one), ``setpoint_kw``,
``stale`` (1 when the device did not answer in time and its fallback was used), ``rtt_ms``
(wall time of the step's exchange); per step ``lag_s`` (wall-clock lag behind the real-time
schedule, relative to the first step; 0 without a real-time factor), ``n_stale``,
``rtt_max_ms``, and totals ``pv_gen_kw``, ``pv_avail_total_kw``, ``pv_curtailed_total_kw``,
``battery_p_kw``, ``evse_metered_kw``, ``evse_sim_kw``.
"""

from __future__ import annotations

import logging
import time as wallclock
from typing import Any

import mosaik_api_v3
import numpy as np
import pandas as pd

from components.base import last_outputs, step_index, step_ticks
from components.hil.cosim import (
    BatteryLink,
    ChargingSiteLink,
    InProcessSunSpec,
    PVLink,
    Reading,
    SimClock,
    StubBench,
    battery_stub_config,
    pv_stub_config,
    revert_after_s,
    station_stub_config,
)
from components.hil.errors import HILError

log = logging.getLogger("components.hil")

DEVICES, SITES = "HILDevices", "HILSites"
EID = "hil"
PER_DEVICE = ["p_kw", "q_kvar", "setpoint_kw", "stale", "rtt_ms"]
PER_STEP = ["lag_s", "n_stale", "rtt_max_ms"]
DEVICE_INPUTS = ["curtail_kw", "q_kvar_set", "fleet_p_kw", "fleet_q_kvar", "fleet_avail_kw",
                 "grid_import_kw"]
DEVICE_OUTPUTS = [*PER_DEVICE, *PER_STEP, "pv_p_kw", "pv_q_kvar", "pv_avail_kw",
                  "battery_soc_pct", "pv_gen_kw", "pv_avail_total_kw", "pv_curtailed_total_kw",
                  "battery_p_kw"]
SITE_INPUTS = ["ev_p_kw", "ev_q_kvar"]
SITE_OUTPUTS = [*PER_DEVICE, *PER_STEP, "metered_kw", "sim_kw", "evse_metered_kw",
                "evse_sim_kw"]

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        DEVICES: {"public": True, "params": ["config", "devices", "plants"],
                  "attrs": DEVICE_INPUTS + DEVICE_OUTPUTS},
        SITES: {"public": True, "params": ["config", "devices"],
                "attrs": SITE_INPUTS + SITE_OUTPUTS},
    },
    "extra_methods": ["bench_device"],
}


class HILSimulator(mosaik_api_v3.Simulator):
    """mosaik simulator exchanging setpoints and measurements with devices each step."""

    def __init__(self) -> None:
        super().__init__(META)
        self.model: str | None = None
        self.links: list[Any] = []
        self.bench: StubBench | None = None
        self.csms: Any = None
        self._out: dict[str, Any] = {}
        self._wall0: float | None = None

    def init(self, sid: str, time_resolution: float = 1.0,
             start: str = "2026-06-01T00:00:00+08:00", step_s: int = 900, n_steps: int = 96,
             seed: int = 0, rt_factor: float | None = None) -> dict:
        """Set the clock; ``rt_factor`` (wall s per simulated s) is only used for lag figures."""
        self.sid = sid
        self.step_ticks = step_ticks(sid, step_s, n_steps, time_resolution)
        self.start = pd.Timestamp(start)
        self.step_s, self.n_steps = int(step_s), n_steps
        self.seed = int(seed)
        self.rt_factor = None if rt_factor is None else float(rt_factor)
        self.clock = SimClock(self.start.tz_convert("UTC").to_pydatetime())
        return self.meta

    # ------------------------------------------------------------------ set-up
    def create(self, num: int, model: str, config: dict[str, Any], devices: list[dict],
               plants: dict[str, Any] | None = None) -> list[dict]:
        """Create the single entity and open every device link.

        Parameters
        ----------
        config : dict
            The ``hil`` section (``HILConfig.model_dump(mode="json")``; passwords resolved).
        devices : list of dict
            One per device, in output order: ``kind`` ('pv', 'battery', 'evse'), ``name``,
            ``bus``, ``index`` (position in the section's list) and per kind ``plant`` (ratings
            and orientation), ``available_kw``/``temp_air_c`` (the plant's per-step profile),
            ``plant_index`` (position among the zone's plants), ``site_index``, ``rating_kw``,
            ``station_id``, ``password``.
        plants : dict, optional
            ``{"n": plants of the zone, "fleet": zone index of each fleet plant}`` when the
            coordinator reads merged PV arrays from this entity.
        """
        from components.hil.config import HILConfig

        if model not in (DEVICES, SITES):
            raise ValueError(f"{self.sid}: unknown model {model!r}")
        if num != 1 or self.model is not None:
            raise ValueError(f"{self.sid}: create exactly one {model} entity")
        self.model = model
        self.cfg = HILConfig.model_validate(config)
        self.devices = devices
        self.plants = plants
        self.buses = [int(d["bus"]) for d in devices]
        deadline = self.cfg.timeout_s
        if self.cfg.rt_factor is not None:
            deadline = min(deadline, self.cfg.rt_factor * self.step_s)
        self.deadline_s = deadline
        try:
            self._open()
        except BaseException:
            self.finalize()
            raise
        return [{"eid": EID, "type": model}]

    def _open(self) -> None:
        cfg = self.cfg
        in_process = cfg.simulate
        if cfg.start_stubs and not in_process:
            self.bench = StubBench(self.clock)
        # the stubs (and in-process models) run on simulated time, set by step()
        self.own_clock = bool(cfg.start_stubs or in_process)
        if self.model == SITES:
            self._open_csms(self.clock if self.own_clock else None)
        for d in self.devices:
            revert = revert_after_s(d.get("revert_after_s"), self.step_s)
            if d["kind"] == "pv":
                self.links.append(PVLink(d["name"], d["bus"], d["plant"]["inverter_kw"],
                                         self._sunspec(d, revert), revert, self.deadline_s))
            elif d["kind"] == "battery":
                spec = cfg.batteries[d["index"]]
                self.links.append(BatteryLink(d["name"], d["bus"], spec.target_import_kw,
                                              self._sunspec(d, revert), revert,
                                              self.deadline_s))
            else:
                spec = cfg.charging_sites[d["index"]]
                if self.bench is not None:
                    self.bench.start_station(d["name"], station_stub_config(
                        spec, d["station_id"], d["password"], self.csms.url,
                        cfg.csms.security_profile, cfg.csms.ca_file, d["rating_kw"],
                        cfg.timeout_s, self.seed))
                self.links.append(ChargingSiteLink(
                    d["name"], d["bus"], d["site_index"], d["station_id"], d["rating_kw"],
                    spec.offline_limit_kw, self.csms, cfg.timeout_s, self.deadline_s))
        for link in self.links:
            link.open()

    def _sunspec(self, d: dict[str, Any], revert: float) -> Any:
        from components.hil.clients import Backoff, SunSpecClient
        from components.hil.cosim import make_battery_device, make_pv_device
        from components.hil.devices import PVProfile

        cfg = self.cfg
        spec = (cfg.pv_plants if d["kind"] == "pv" else cfg.batteries)[d["index"]]
        device = None
        if cfg.start_stubs or cfg.simulate:
            if d["kind"] == "pv":
                profile = PVProfile.from_steps(np.asarray(d["available_kw"]) * 1000.0,
                                               np.asarray(d["temp_air_c"]), self.step_s)
                device = make_pv_device(pv_stub_config(spec, d["plant"], spec.port), profile)
            else:
                device = make_battery_device(battery_stub_config(spec, revert))
        if cfg.simulate:
            return InProcessSunSpec(device, self.clock)
        port = spec.port
        if self.bench is not None:
            port = self.bench.serve_modbus(d["name"], device, spec.host, spec.port)
        # retry inside the step's budget only: a dead link must not stall the run
        backoff = Backoff(first_s=0.05, max_s=0.5, deadline_s=cfg.timeout_s)
        return SunSpecClient(spec.host, port, spec.unit_id, timeout_s=cfg.timeout_s,
                             backoff=backoff)

    def _open_csms(self, clock: SimClock | None) -> None:
        from components.hil.clients import CSMSClient

        c = self.cfg.csms
        stations = {d["station_id"]: d["password"] for d in self.devices}
        csms_cfg = {"host": c.host, "port": c.port, "path": c.path,
                    "security_profile": c.security_profile, "certfile": c.certfile,
                    "keyfile": c.keyfile, "stations": stations,
                    "response_timeout_s": self.cfg.timeout_s,
                    "heartbeat_interval_s": 60}
        self.csms = CSMSClient(csms_cfg, timeout_s=self.cfg.timeout_s,
                               now=None if clock is None else clock.utc)

    def finalize(self) -> None:
        """Close the links, stop the CSMS and the stubs."""
        for link in self.links:
            try:
                link.close()
            except (HILError, OSError, RuntimeError) as exc:  # clean-up must reach every device
                log.warning("%s: closing %s failed: %s", self.sid, link.name, exc)
        if self.bench is not None:
            self.bench.close()
            self.bench = None
        if self.csms is not None:
            self.csms.close()
            self.csms = None

    def bench_device(self, name: str, up: bool) -> None:
        """Cut (``up=False``) or restore the link of a stub the twin started."""
        if self.bench is None:
            raise RuntimeError(f"{self.sid}: no stubs were started (start_stubs is false)")
        (self.bench.start_device if up else self.bench.stop_device)(name)

    # ------------------------------------------------------------------ stepping
    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        """Exchange setpoints and measurements of step ``time // step`` with every device."""
        k = step_index(self.sid, time, self.step_ticks, self.n_steps)
        now = wallclock.perf_counter()
        if self._wall0 is None:
            self._wall0 = now
        lag = 0.0 if self.rt_factor is None else now - (self._wall0 + time * self.rt_factor)
        t_s = float(k * self.step_s)
        got = {a: _one(v) for a, v in inputs.get(EID, {}).items()}
        readings: list[Reading] = []
        if self.model == DEVICES:
            readings = self._step_devices(t_s, got)
        else:
            readings = self._step_sites(t_s, got)
        for link, r in zip(self.links, readings, strict=True):
            if r.stale:
                log.warning("%s: %s stale at t=%d s: %s", self.sid, link.name, time, r.error)
        out = self._out
        out["p_kw"] = np.array([r.p_kw for r in readings], dtype=float)
        out["q_kvar"] = np.array([r.q_kvar for r in readings], dtype=float)
        out["setpoint_kw"] = np.array([r.setpoint_kw for r in readings], dtype=float)
        out["stale"] = np.array([float(r.stale) for r in readings])
        rtt = np.array([r.rtt_s * 1000.0 for r in readings], dtype=float)
        out["rtt_ms"] = rtt
        out["lag_s"] = float(max(lag, 0.0))
        out["n_stale"] = int(sum(r.stale for r in readings))
        out["rtt_max_ms"] = float(rtt.max()) if rtt.size else 0.0
        return time + self.step_ticks

    def _exchange(self, t_s: float, writes: list[tuple[Any, tuple]]) -> list[Reading]:
        """Every link writes at ``t_s``, the step passes, every link reads at its end."""
        if self.own_clock:
            self.clock.set(t_s)
        for link, args in writes:
            link.write(*args)
        if self.own_clock:
            self.clock.set(t_s + self.step_s)
        return [link.read(t_s + self.step_s, self.step_s) for link, _ in writes]

    def _step_devices(self, t_s: float, got: dict[str, Any]) -> list[Reading]:
        curtail, q_set = got.get("curtail_kw"), got.get("q_kvar_set")
        imp = got.get("grid_import_kw")
        writes = []
        for link, d in zip(self.links, self.devices, strict=True):
            if link.kind == "pv":
                j = d.get("plant_index")
                c = None if curtail is None or j is None else float(np.asarray(curtail)[j])
                q = None if q_set is None or j is None else float(np.asarray(q_set)[j])
                writes.append((link, (c, q)))
            else:
                writes.append((link, (None if imp is None else float(imp),)))
        readings = self._exchange(t_s, writes)
        out = self._out
        pv = [(r, d) for r, d in zip(readings, self.devices, strict=True) if d["kind"] == "pv"]
        gen = np.array([max(-r.p_kw, 0.0) for r, _ in pv])
        avail = np.array([r.extra["avail_kw"] for r, _ in pv])
        out["pv_gen_kw"] = float(gen.sum())
        out["pv_avail_total_kw"] = float(avail.sum())
        out["pv_curtailed_total_kw"] = float(np.maximum(avail - gen, 0.0).sum())
        out["battery_p_kw"] = float(sum(r.p_kw for r, d in zip(readings, self.devices,
                                                                 strict=True)
                                        if d["kind"] == "battery"))
        out["battery_soc_pct"] = np.array([r.extra["soc_pct"] for r, d in
                                           zip(readings, self.devices, strict=True)
                                           if d["kind"] == "battery"], dtype=float)
        if self.plants is not None:
            n = int(self.plants["n"])
            merged = {a: np.zeros(n) for a in ("pv_p_kw", "pv_q_kvar", "pv_avail_kw")}
            fleet_idx = np.asarray(self.plants["fleet"], dtype=int)
            for mine, theirs in (("pv_p_kw", "fleet_p_kw"), ("pv_q_kvar", "fleet_q_kvar"),
                                 ("pv_avail_kw", "fleet_avail_kw")):
                if fleet_idx.size:
                    values = got.get(theirs)
                    if values is None:
                        raise ValueError(f"{self.sid}: no {theirs} from the PV fleet")
                    merged[mine][fleet_idx] = np.asarray(values, dtype=float)
            for r, d in pv:
                merged["pv_p_kw"][d["plant_index"]] = r.p_kw
                merged["pv_q_kvar"][d["plant_index"]] = r.q_kvar
                merged["pv_avail_kw"][d["plant_index"]] = r.extra["avail_kw"]
            out.update(merged)
        return readings

    def _step_sites(self, t_s: float, got: dict[str, Any]) -> list[Reading]:
        ev_p, ev_q = got.get("ev_p_kw"), got.get("ev_q_kvar")
        if ev_p is None:
            raise ValueError(f"{self.sid}: no ev_p_kw from the EV fleet")
        ev_p = np.asarray(ev_p, dtype=float)
        ev_q = np.zeros_like(ev_p) if ev_q is None else np.asarray(ev_q, dtype=float)
        sim = [float(ev_p[link.site_index]) for link in self.links]
        measured = self._exchange(t_s, [(link, (kw,)) for link, kw in zip(self.links, sim,
                                                                            strict=True)])
        readings, metered = [], []
        for link, r, sim_kw in zip(self.links, measured, sim, strict=True):
            metered.append(r.p_kw)
            # to the grid: replace the site's simulated power with the metered one
            readings.append(Reading(r.p_kw - sim_kw, -float(ev_q[link.site_index]) + 0.0,
                                    r.setpoint_kw, r.stale, r.rtt_s, r.extra, r.error))
        out = self._out
        out["metered_kw"] = np.array(metered, dtype=float)
        out["sim_kw"] = np.array(sim, dtype=float)
        out["evse_metered_kw"] = float(sum(metered))
        out["evse_sim_kw"] = float(sum(sim))
        return readings

    def get_data(self, outputs: dict) -> dict:
        """The requested arrays and totals of the last step (checked to be finite)."""
        return last_outputs(self.sid, EID, self._out, outputs)


def _one(by_source: dict | None) -> Any:
    """The value of an input with one source (None when absent or None)."""
    if not by_source:
        return None
    values = [v for v in by_source.values() if v is not None]
    if len(values) > 1:
        raise ValueError(f"an input of the HIL simulator comes from {sorted(by_source)}; "
                         "connect one source only")
    return values[0] if values else None


def main() -> None:
    """Run as a separate process: ``python -m components.hil.simulator HOST:PORT``."""
    mosaik_api_v3.start_simulation(HILSimulator(), "sdg-twin hardware-in-the-loop simulator")


if __name__ == "__main__":
    main()
