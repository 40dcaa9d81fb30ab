"""Devices in the co-simulation: one link per device, a step = setpoints out, measurements in.

Each step ``k`` covers ``[t_k, t_k + step_s)``. A link writes the step's setpoints over the
device's protocol, then reads what the device did over the step:

* :class:`PVLink` (SunSpec inverter): the coordinator's curtailment as ``WMaxLimPct`` and its
  reactive power as ``VarSet`` (704), each with a reversion timer (fallback: full output, no
  reactive power); reads the output (energy counters ``TotWhInj``/``TotWhAbs`` of 701 give the
  step mean) and estimates the available power from ``W`` and ``ThrotPct``.
* :class:`BatteryLink` (SunSpec battery, 704 ``WSet`` + 802 controller heartbeat): a grid-import
  tracking controller, ``p_set = p_prev + target_import_kw - import_prev``; fallback 0 kW.
* :class:`ChargingSiteLink` (OCPP 2.0.1 station behind the twin's CSMS): the site's simulated
  charging power as a charging limit (SetChargingProfile), the metered energy read back on a
  TriggerMessage; fallback: the station's offline limit.

A step whose exchange fails (timeout, lost link, refusal) or ends after ``deadline_s`` is
*stale*: the link reports the device's declared fallback for it, flagged, never the previous
answer. Links reconnect on the next step (the Modbus client retries with back-off inside its
timeout; an OCPP station reconnects by itself with OCPP's back-off).

Time: devices whose stubs the twin starts (:class:`StubBench`) run on :class:`SimClock`, the
simulated time: the adapter sets it to ``t_k``, every link writes, the adapter sets it to
``t_k + step_s``, every link reads - so each stub integrates exactly the step under its
setpoints and a bench reproduces the simulated run. External devices run on their own clock
(use a real-time factor of 1).

Sign convention (:mod:`components.base`): load convention, positive = drawn from the grid.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from components.hil.clients import Backoff, CSMSClient, SunSpecClient
from components.hil.config import (
    BatteryStubConfig,
    EVSEStubConfig,
    EVStubConfig,
    HILBatteryConfig,
    HILChargingSiteConfig,
    HILConfig,
    HILPVConfig,
    PVStubConfig,
)
from components.hil.devices import BatteryStorage, DERDevice, PVInverter, PVProfile, WriteRefused
from components.hil.errors import DeviceRejectedError, HILError

log = logging.getLogger("components.hil")

STUB_VOLTAGE_V = 230.0
STUB_PHASES = 3


class SimClock:
    """Simulated time shared by the twin and the stubs it starts.

    Calling it returns seconds since the scenario start (the stubs' monotonic clock);
    :meth:`utc` the matching UTC time. It never goes backwards.
    """

    def __init__(self, start_utc: datetime) -> None:
        if start_utc.tzinfo is None:
            raise ValueError("start_utc needs a time zone")
        self.start_utc = start_utc
        self.t_s = 0.0

    def __call__(self) -> float:
        return self.t_s

    def utc(self) -> datetime:
        """Simulated UTC time now."""
        return self.start_utc + timedelta(seconds=self.t_s)

    def set(self, t_s: float) -> None:
        """Advance to ``t_s`` seconds since the start (earlier times are ignored). [s]"""
        self.t_s = max(self.t_s, float(t_s))


@dataclass
class Reading:
    """What one device did over one step.

    Attributes
    ----------
    p_kw, q_kvar : mean power over the step, load convention. [kW], [kvar]
    setpoint_kw : the setpoint sent (curtailment limit, battery power, charging limit). [kW]
    stale : True when the values are the device's fallback, not an answer.
    rtt_s : wall time of the step's exchange with the device. [s]
    extra : kind-specific values (``avail_kw`` for PV, ``soc_pct`` for batteries,
        ``sim_kw`` for charging sites).
    error : why the step is stale.
    """

    p_kw: float
    q_kvar: float
    setpoint_kw: float
    stale: bool
    rtt_s: float
    extra: dict[str, float] = field(default_factory=dict)
    error: str | None = None


class InProcessSunSpec(SunSpecClient):
    """A :class:`SunSpecClient` wired straight to a device object (no network).

    Reads and writes go through the device's own register map and validation, so the
    in-process model behaves exactly like its stub, quantisation included.
    """

    def __init__(self, device: DERDevice, clock: SimClock) -> None:
        self.host, self.port, self.unit_id = "in-process", 0, 1
        self.timeout_s = 1.0
        self.backoff = Backoff()
        self.base_addrs = (device.map.base,)
        self.device = device
        self.clock = clock
        self.map = None
        self.image = None

    def read_registers(self, address: int, count: int) -> list[int]:
        self.device.advance(self.clock())
        off = address - self.device.map.base
        regs = self.device.image.registers
        if off < 0 or off + count > len(regs):
            raise DeviceRejectedError(f"in-process device: no registers {address}+{count}", 2)
        return [int(v) for v in regs[off:off + count]]

    def write_registers(self, address: int, values: list[int]) -> None:
        try:
            self.device.write(address, [int(v) & 0xFFFF for v in values], self.clock())
        except WriteRefused as exc:
            raise DeviceRejectedError(f"in-process device refused a write: {exc.reason}",
                                      exc.code) from exc

    def close(self) -> None:
        return None


class _SunSpecLink:
    """What the PV and battery links share: the client, energy counters, stale handling."""

    kind = "der"

    def __init__(self, name: str, bus: int, client: SunSpecClient, revert_after_s: float,
                 deadline_s: float) -> None:
        self.name, self.bus = name, int(bus)
        self.client = client
        self._t0, self._error = 0.0, None
        self.revert_after_s = float(revert_after_s)
        self.deadline_s = float(deadline_s)
        self._counters: tuple[float, float, float] | None = None  # (t_s, inj_kwh, abs_kwh)

    def open(self) -> None:
        """Find the device's SunSpec map and take the first energy counter reading."""
        self.client.connect()
        m = self.client.measurements()
        self._counters = (0.0, m["e_injected_kwh"], m["e_absorbed_kwh"])

    def close(self) -> None:
        self.client.close()

    def _mean_p_kw(self, t_end_s: float, step_s: float, m: dict[str, Any]) -> float:
        """Mean power over the step from the energy counters, load convention. [kW]

        Falls back to the instantaneous power when the counters at the step start are unknown
        (the step before was stale).
        """
        prev = self._counters
        self._counters = (t_end_s, m["e_injected_kwh"], m["e_absorbed_kwh"])
        if prev is None or abs(prev[0] - (t_end_s - step_s)) > 1e-6:
            return float(m["p_kw"] or 0.0)
        h = step_s / 3600.0
        return ((m["e_absorbed_kwh"] - prev[2]) - (m["e_injected_kwh"] - prev[1])) / h + 0.0

    def _write(self, write) -> None:
        """Send the step's setpoints (the clock is at the step start)."""
        self._t0 = time.perf_counter()
        self._error = None
        try:
            write()
        except HILError as exc:
            self._error = f"{type(exc).__name__}: {exc}"

    def _read(self) -> tuple[dict[str, Any] | None, float, str | None]:
        """Read the step's outcome (the clock is at the step end): (measurements, rtt, error)."""
        m = None
        if self._error is None:
            try:
                m = self.client.measurements()
            except HILError as exc:
                self._error = f"{type(exc).__name__}: {exc}"
        rtt = time.perf_counter() - self._t0
        if self._error is None and rtt > self.deadline_s:
            self._error = f"late: answered after {rtt:.3f} s (deadline {self.deadline_s:g} s)"
        if self._error is not None:
            self._counters = None
            return None, rtt, self._error
        return m, rtt, None


class PVLink(_SunSpecLink):
    """A PV inverter replacing a plant of the fleet (see the module docstring)."""

    kind = "pv"

    def __init__(self, name: str, bus: int, rating_kw: float, client: SunSpecClient,
                 revert_after_s: float, deadline_s: float) -> None:
        super().__init__(name, bus, client, revert_after_s, deadline_s)
        self.rating_kw = float(rating_kw)
        self.last_avail_kw = 0.0
        self.limit_kw = self.rating_kw

    def write(self, curtail_kw: float | None, q_kvar_set: float | None) -> None:
        """Send the curtailment limit and the reactive power request of the step."""
        w_max = self.rating_kw
        self.limit_kw = w_max if curtail_kw is None or not math.isfinite(curtail_kw) else float(
            np.clip(curtail_kw, 0.0, w_max))
        q_set = 0.0 if q_kvar_set is None else float(np.clip(q_kvar_set, -w_max, w_max))

        def send() -> None:
            self.client.set_power_limit_kw(self.limit_kw, self.revert_after_s, revert_kw=w_max)
            self.client.set_reactive_power_kvar(q_set, self.revert_after_s, revert_kvar=0.0)

        self._write(send)

    def read(self, t_end_s: float, step_s: float) -> Reading:
        """What the inverter delivered over the step (fallback when stale)."""
        m, rtt, error = self._read()
        if m is None:
            avail = self.last_avail_kw
            return Reading(-min(avail, self.rating_kw), 0.0, self.limit_kw, True, rtt,
                           {"avail_kw": avail}, error)
        p_kw = self._mean_p_kw(t_end_s, step_s, m)
        gen_kw = max(-p_kw, 0.0)
        if m["inverter_state"] == "THROTTLED":
            throttled = float(self.client.image.get(701, "ThrotPct") or 0.0)
            inst = max(-(m["p_kw"] or 0.0), 0.0)
            avail = inst / (1.0 - throttled / 100.0) if throttled < 99.5 else self.last_avail_kw
            avail = max(avail, gen_kw)
        else:
            avail = gen_kw
        self.last_avail_kw = avail
        return Reading(p_kw, float(m["q_kvar"] or 0.0), self.limit_kw, False, rtt,
                       {"avail_kw": avail})


class BatteryLink(_SunSpecLink):
    """A stationary battery tracking a grid import target (see the module docstring)."""

    kind = "battery"

    def __init__(self, name: str, bus: int, target_import_kw: float, client: SunSpecClient,
                 revert_after_s: float, deadline_s: float) -> None:
        super().__init__(name, bus, client, revert_after_s, deadline_s)
        self.target_import_kw = float(target_import_kw)
        self.p_prev_kw = 0.0
        self.p_set_kw = 0.0
        self.soc_pct = float("nan")

    def open(self) -> None:
        super().open()
        self.charge_max_kw = self.client.w_charge_max_kw
        self.discharge_max_kw = self.client.w_max_kw
        self.soc_pct = float(self.client.measurements().get("soc_pct") or 0.0)

    def setpoint(self, import_prev_kw: float | None) -> float:
        """Power for this step from the grid import of the previous one, load convention. [kW]"""
        if import_prev_kw is None or not math.isfinite(import_prev_kw):
            return 0.0
        p = self.p_prev_kw + self.target_import_kw - float(import_prev_kw)
        return float(np.clip(p, -self.discharge_max_kw, self.charge_max_kw))

    def write(self, import_prev_kw: float | None) -> None:
        """Send the controller heartbeat and the step's power setpoint."""
        self.p_set_kw = self.setpoint(import_prev_kw)

        def send() -> None:
            self.client.heartbeat()
            self.client.set_power_kw(self.p_set_kw, self.revert_after_s, revert_kw=0.0)

        self._write(send)

    def read(self, t_end_s: float, step_s: float) -> Reading:
        """What the battery did over the step (its reversion value, 0 kW, when stale)."""
        m, rtt, error = self._read()
        if m is None:
            self.p_prev_kw = 0.0
            return Reading(0.0, 0.0, self.p_set_kw, True, rtt, {"soc_pct": self.soc_pct},
                           error)
        p_kw = self._mean_p_kw(t_end_s, step_s, m)
        self.p_prev_kw = p_kw
        self.soc_pct = float(m.get("soc_pct") or 0.0)
        return Reading(p_kw, float(m["q_kvar"] or 0.0), self.p_set_kw, False, rtt,
                       {"soc_pct": self.soc_pct})


class ChargingSiteLink:
    """A charging site replaced by an OCPP 2.0.1 station (see the module docstring)."""

    kind = "evse"

    def __init__(self, name: str, bus: int, site_index: int, station_id: str, rating_kw: float,
                 offline_limit_kw: float, csms: CSMSClient, timeout_s: float,
                 deadline_s: float) -> None:
        self.name, self.bus, self.site_index = name, int(bus), int(site_index)
        self.station_id = station_id
        self.rating_kw = float(rating_kw)
        self.offline_limit_kw = float(offline_limit_kw)
        self.csms = csms
        self.timeout_s = float(timeout_s)
        self.deadline_s = float(deadline_s)
        self._energy: tuple[float, float] | None = None  # (t_s, e_wh)
        self.limit_kw = 0.0
        self.sim_kw = 0.0

    def open(self) -> None:
        """Wait for the station to boot and take the first meter reading."""
        self.csms.wait_for_station(self.station_id, timeout_s=max(10.0, 5 * self.timeout_s))
        read = self.csms.read_meter(self.station_id, timeout_s=self.timeout_s)
        self._energy = (0.0, float(read.get("e_wh", 0.0)))

    def close(self) -> None:
        return None

    def write(self, sim_kw: float) -> None:
        """Send the site's simulated charging power as the station's charging limit."""
        self.sim_kw = float(sim_kw)
        self.limit_kw = float(np.clip(sim_kw, 0.0, self.rating_kw))
        self._t0 = time.perf_counter()
        self._error = None
        try:
            self.csms.push_charging_limit(self.station_id, self.limit_kw,
                                          timeout_s=self.timeout_s)
        except HILError as exc:
            self._error = f"{type(exc).__name__}: {exc}"

    def read(self, t_end_s: float, step_s: float) -> Reading:
        """The station's metered mean power over the step (its offline limit when stale)."""
        read: dict[str, Any] = {}
        if self._error is None:
            try:
                read = self.csms.read_meter(self.station_id, timeout_s=self.timeout_s)
                if "e_wh" not in read:
                    raise DeviceRejectedError(f"station {self.station_id} sent no energy "
                                              "register", "NoEnergy")
            except HILError as exc:
                self._error = f"{type(exc).__name__}: {exc}"
        rtt = time.perf_counter() - self._t0
        if self._error is None and rtt > self.deadline_s:
            self._error = f"late: answered after {rtt:.3f} s (deadline {self.deadline_s:g} s)"
        if self._error is not None:
            self._energy = None
            fallback = min(self.offline_limit_kw, self.limit_kw)
            return Reading(fallback, 0.0, self.limit_kw, True, rtt, {"sim_kw": self.sim_kw},
                           self._error)
        prev, e_wh = self._energy, float(read["e_wh"])
        self._energy = (t_end_s, e_wh)
        if prev is None or abs(prev[0] - (t_end_s - step_s)) > 1e-6:
            p_kw = float(read.get("p_w", 0.0)) / 1000.0
        else:
            p_kw = (e_wh - prev[1]) / 1000.0 / (step_s / 3600.0)
        return Reading(p_kw, 0.0, self.limit_kw, False, rtt, {"sim_kw": self.sim_kw})


# -------------------------------------------------------------------------------------------
# Stubs the twin starts itself (start_stubs: true)

class StubBench:
    """Protocol stubs of the devices, served on this machine, on simulated time.

    Modbus servers and charging stations run on one background event loop; their clock is the
    twin's :class:`SimClock`. :meth:`stop_device` / :meth:`start_device` cut and restore one
    device's link (a bench's link-loss test).
    """

    def __init__(self, clock: SimClock) -> None:
        from components.hil.aio import BackgroundLoop

        self.clock = clock
        self.loop = BackgroundLoop("hil-stubs")
        self.servers: dict[str, Any] = {}
        self.stations: dict[str, Any] = {}

    def serve_modbus(self, name: str, device: DERDevice, host: str, port: int) -> int:
        """Serve ``device`` over SunSpec Modbus TCP; return the port bound."""
        from components.hil.modbus_stub import SunSpecModbusServer

        server = SunSpecModbusServer(device, host, port, clock=self.clock)
        bound = self.loop.run(server.start(), 10.0)
        server.requested_port = bound  # a restart binds the same port
        self.servers[name] = server
        return bound

    def start_station(self, name: str, cfg: EVSEStubConfig) -> None:
        """Start a charging-station stub that connects to the CSMS in ``cfg``."""
        from components.hil.ocpp_station import ChargingStation

        station = ChargingStation(cfg, clock=self.clock, now=self.clock.utc)
        self.loop.run(station.start(), 10.0)
        self.stations[name] = station

    def stop_device(self, name: str) -> None:
        """Cut a device's link: close its Modbus listener, or stop its station's connection."""
        if name in self.servers:
            self.loop.run(self.servers[name].stop(), 10.0)
        elif name in self.stations:
            self.loop.run(self._pause_station(self.stations[name]), 10.0)
        else:
            raise KeyError(f"no stub named {name!r}")

    def start_device(self, name: str) -> None:
        """Restore a device's link cut by :meth:`stop_device`."""
        if name in self.servers:
            self.loop.run(self.servers[name].start(), 10.0)
        elif name in self.stations:
            st = self.stations[name]
            self.loop.run(self._resume_station(st), 10.0)
        else:
            raise KeyError(f"no stub named {name!r}")

    @staticmethod
    async def _pause_station(station: Any) -> None:
        import asyncio

        link = next(t for t in station._tasks if t.get_name().endswith("_link_loop"))
        link.cancel()
        await asyncio.gather(link, return_exceptions=True)
        station._set_offline("link cut by the bench")

    @staticmethod
    async def _resume_station(station: Any) -> None:
        import asyncio

        station._tasks = [t for t in station._tasks if not t.done()]
        station._tasks.append(asyncio.create_task(station._link_loop(),
                                                  name=f"{station.cfg.station_id}-_link_loop"))

    def close(self) -> None:
        """Stop every stub and the loop."""
        try:
            for station in self.stations.values():
                try:
                    self.loop.run(station.stop(), 5.0)
                except (TimeoutError, RuntimeError, OSError) as exc:
                    log.warning("stub station: stop failed: %s", exc)
            for server in self.servers.values():
                try:
                    self.loop.run(server.stop(), 5.0)
                except (TimeoutError, RuntimeError, OSError) as exc:
                    log.warning("stub server: stop failed: %s", exc)
        finally:
            self.loop.close()


def pv_stub_config(spec: HILPVConfig, plant: dict[str, Any], port: int) -> PVStubConfig:
    """The stub of a PV plant: the plant's own ratings and orientation."""
    return PVStubConfig(host=spec.host, port=port, unit_id=spec.unit_id, name=plant["name"],
                        kwp=plant["kwp"], inverter_kw=plant["inverter_kw"],
                        tilt_deg=plant["tilt_deg"], azimuth_deg=plant["azimuth_deg"],
                        mounting=plant["mounting"], serial_number=f"PV-{plant['name']}"[:32])


def battery_stub_config(spec: HILBatteryConfig, revert_after_s: float) -> BatteryStubConfig:
    """The battery model of a ``hil.batteries`` entry, its heartbeat watchdog = the reversion."""
    data = spec.model_dump(exclude={"name", "bus", "target_import_kw", "revert_after_s"})
    data["ctrl_heartbeat_timeout_s"] = revert_after_s
    return BatteryStubConfig.model_validate(data)


def station_stub_config(spec: HILChargingSiteConfig, station_id: str, password: str,
                        csms_url: str, security_profile: int, ca_file: str | None,
                        rating_kw: float, timeout_s: float, seed: int) -> EVSEStubConfig:
    """A station standing for the whole site: rated at the site's charging capacity, with one
    aggregate car that accepts up to that rating (no taper) - the EV fleet simulates the EVs."""
    return EVSEStubConfig(
        station_id=station_id, csms_url=csms_url, security_profile=security_profile,
        password=password, ca_file=ca_file, phases=STUB_PHASES, voltage_v=STUB_VOLTAGE_V,
        max_current_a=rating_kw * 1000.0 / (STUB_PHASES * STUB_VOLTAGE_V),
        meter_interval_s=3600.0, response_timeout_s=timeout_s,
        retry_backoff_min_s=0.2, retry_backoff_random_s=0.2, retry_backoff_repeat=3,
        offline_fallback="tx_default", offline_limit_kw=spec.offline_limit_kw, seed=seed,
        ev=EVStubConfig(battery_kwh=spec.car_battery_kwh, soc_init_pct=spec.car_soc_init_pct,
                        soc_target_pct=100.0, p_max_kw=min(rating_kw, 350.0),
                        taper_from_soc_pct=100.0, id_token=station_id[:36]))


def default_station_id(site_index: int) -> str:
    return f"HIL-{site_index}"


def new_password() -> str:
    """A random basic-auth password for a station the twin starts itself (32 bytes)."""
    return secrets.token_urlsafe(24)


def revert_after_s(spec_value: float | None, step_s: float) -> float:
    """The reversion timer: given, or just over one step. [s]"""
    return float(spec_value) if spec_value is not None else math.ceil(1.05 * step_s)


def make_pv_device(cfg: PVStubConfig, profile: PVProfile) -> PVInverter:
    return PVInverter(cfg, profile=profile)


def make_battery_device(cfg: BatteryStubConfig) -> BatteryStorage:
    return BatteryStorage(cfg)


__all__ = ["BatteryLink", "ChargingSiteLink", "HILConfig", "InProcessSunSpec", "PVLink",
           "Reading", "SimClock", "StubBench"]
