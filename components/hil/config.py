"""The ``hil:`` section: device stubs (PV and battery over SunSpec Modbus, an OCPP 2.0.1 charging
station) and the CSMS the co-simulation uses to command chargers.

Example (YAML)::

    hil:
      pv: {port: 5020, kwp: 100, start: "2026-06-01T10:00:00+08:00"}
      battery: {port: 5021, e_kwh: 200, p_charge_max_kw: 100, p_discharge_max_kw: 100}
      csms:
        port: 9000
        security_profile: 2
        certfile: certs/csms.pem
        keyfile: certs/csms.key
        stations: {CS-001: "a-secret-of-16+-bytes"}
      evse:
        station_id: CS-001
        csms_url: wss://127.0.0.1:9000/ocpp
        security_profile: 2
        password: "a-secret-of-16+-bytes"
        ca_file: certs/ca.pem
        offline_limit_kw: 3.7

Every listener binds to 127.0.0.1 unless ``host`` says otherwise.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from components.base import BusRef, StrictModel
from components.pv.config import DEFAULT_DC_AC_RATIO, LocationConfig, Mounting, WeatherConfig

LOOPBACK = "127.0.0.1"
# OCPP 2.0.1 (part 2, BasicAuthPassword; part 4, security profile 1): 16 to 40 bytes.
PASSWORD_MIN_BYTES = 16
PASSWORD_MAX_BYTES = 40
# OCPP-J: the station identity is the last URL path segment and the HTTP Basic user name, so it
# may contain neither '/' nor ':' (RFC 7617); OCPP 2.0.1 limits it to 48 characters.
_STATION_ID = re.compile(r"^[A-Za-z0-9*\-_=+|@.]{1,48}$")


def _check_password(secret: SecretStr | None, field: str) -> SecretStr | None:
    if secret is None:
        return None
    n = len(secret.get_secret_value().encode("utf-8"))
    if not PASSWORD_MIN_BYTES <= n <= PASSWORD_MAX_BYTES:
        raise ValueError(f"{field} must be {PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes "
                         f"(OCPP security profile 1/2), got {n}")
    return secret


def _check_station_id(v: str) -> str:
    if not _STATION_ID.match(v):
        raise ValueError(f"station id {v!r} must be 1-48 characters of A-Z a-z 0-9 * - _ = + | @ "
                         "(no '/' or ':')")
    return v


def _url_path(v: str) -> str:
    if not v.startswith("/") or any(c.isspace() for c in v):
        raise ValueError(f"path must start with '/' and contain no spaces, got {v!r}")
    return v.rstrip("/") or ""


def _existing_file(v: str | None) -> str | None:
    if v is not None and not Path(v).expanduser().is_file():
        raise ValueError(f"no such file: {v}")
    return v


class ModbusListenConfig(StrictModel):
    """Where a SunSpec Modbus TCP stub listens."""

    host: str = Field(LOOPBACK, min_length=1, description="Listen address (loopback by default)")
    port: int = Field(5020, ge=0, le=65535, description="TCP port; 0 picks a free one")
    unit_id: int = Field(1, ge=1, le=247, description="Modbus unit id the device answers to")
    base_addr: Literal[0, 40000, 50000] = Field(
        40000, description="Address of the 'SunS' marker (one of the three SunSpec bases)")
    serial_number: str = Field("SDG-0001", min_length=1, max_length=32,
                               description="Serial number in the common model (1)")


class PVStubConfig(ModbusListenConfig):
    """A PV inverter: one fixed-tilt array behind one inverter, physics of ``components.pv``."""

    name: str = Field("pv-hil", min_length=1, description="Plant name")
    kwp: float = Field(100.0, gt=0, le=6500, description="DC nameplate power at STC [kWp]")
    inverter_kw: float | None = Field(
        None, gt=0, le=3270,
        description=f"Inverter AC rating [kW]; default kwp / {DEFAULT_DC_AC_RATIO}")
    tilt_deg: float = Field(15.0, ge=0, le=90, description="Array tilt from horizontal [°]")
    azimuth_deg: float = Field(180.0, ge=0, lt=360, description="Array azimuth, 180 = south [°]")
    mounting: Mounting = Field("roof", description="roof, carport or ground (thermal model)")
    losses_pct: float = Field(14.0, ge=0, lt=100, description="PVWatts system losses [%]")
    location: LocationConfig = LocationConfig()
    weather: WeatherConfig = WeatherConfig()
    start: datetime = Field(
        datetime.fromisoformat("2026-06-01T10:00:00+08:00"),
        description="Simulated time when the stub starts (with UTC offset)")
    profile_step_s: int = Field(60, ge=1, le=3600,
                                description="Resolution of the available-power profile [s]")
    horizon_days: float = Field(2.0, gt=0, le=31,
                                description="Length of the profile; it repeats after [d]")
    seed: int = Field(0, ge=0, description="Seed of the synthetic weather")

    @model_validator(mode="before")
    @classmethod
    def _default_inverter(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("inverter_kw") is None:
            kwp = data.get("kwp", 100.0)
            if isinstance(kwp, (int, float)) and not isinstance(kwp, bool) and kwp > 0:
                data = {**data, "inverter_kw": kwp / DEFAULT_DC_AC_RATIO}
        return data

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2026-06-01T10:00:00+08:00")
        return v


class BatteryStubConfig(ModbusListenConfig):
    """A stationary battery behind a bidirectional inverter (SunSpec 701/702/704/802)."""

    port: int = Field(5021, ge=0, le=65535, description="TCP port; 0 picks a free one")
    serial_number: str = Field("SDG-BAT-0001", min_length=1, max_length=32,
                               description="Serial number in the common model (1)")
    e_kwh: float = Field(200.0, gt=0, le=6000, description="Usable nameplate energy [kWh]")
    p_charge_max_kw: float = Field(100.0, gt=0, le=3000, description="Max charging power [kW]")
    p_discharge_max_kw: float = Field(100.0, gt=0, le=3000,
                                      description="Max discharging power [kW]")
    s_max_kva: float | None = Field(None, gt=0, le=3270,
                                    description="Inverter apparent power rating [kVA]; "
                                    "default max(p_charge_max_kw, p_discharge_max_kw) * 1.1")
    eta_charge: float = Field(0.96, gt=0, le=1, description="Charging efficiency, AC to stored")
    eta_discharge: float = Field(0.96, gt=0, le=1,
                                 description="Discharging efficiency, stored to AC")
    self_discharge_pct_per_day: float = Field(
        0.05, ge=0, le=5, description="Self-discharge [% of e_kwh per day]")
    soc_init_pct: float = Field(50.0, ge=0, le=100, description="Initial state of charge [%]")
    soc_min_pct: float = Field(5.0, ge=0, lt=100, description="Nameplate minimum SoC [%]")
    soc_max_pct: float = Field(95.0, gt=0, le=100, description="Nameplate maximum SoC [%]")
    v_dc_empty_v: float = Field(650.0, gt=0, description="DC voltage at SoC 0 % [V]")
    v_dc_full_v: float = Field(780.0, gt=0, description="DC voltage at SoC 100 % [V]")
    ctrl_heartbeat_timeout_s: float = Field(
        10.0, ge=0, description="Controller heartbeat (802 CtrlHb) watchdog; once the controller "
        "has written CtrlHb, silence longer than this stops the battery (0 = off) [s]")

    @model_validator(mode="after")
    def _consistent(self) -> BatteryStubConfig:
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError(f"soc_min_pct ({self.soc_min_pct}) must be below soc_max_pct "
                             f"({self.soc_max_pct})")
        if not self.soc_min_pct <= self.soc_init_pct <= self.soc_max_pct:
            raise ValueError(f"soc_init_pct ({self.soc_init_pct}) must lie in [soc_min_pct, "
                             f"soc_max_pct] = [{self.soc_min_pct}, {self.soc_max_pct}]")
        if self.v_dc_empty_v >= self.v_dc_full_v:
            raise ValueError("v_dc_empty_v must be below v_dc_full_v")
        if self.s_max_kva is not None and self.s_max_kva < max(self.p_charge_max_kw,
                                                               self.p_discharge_max_kw):
            raise ValueError(f"s_max_kva ({self.s_max_kva}) must cover the largest active power "
                             "rating (p_charge_max_kw, p_discharge_max_kw)")
        return self

    @property
    def s_rating_kva(self) -> float:
        """Apparent power rating of the inverter. [kVA]"""
        if self.s_max_kva is not None:
            return self.s_max_kva
        return 1.1 * max(self.p_charge_max_kw, self.p_discharge_max_kw)


class EVStubConfig(StrictModel):
    """The car plugged into the stub charging station."""

    plug_in_after_s: float = Field(0.0, ge=0, description="Delay from boot to plug-in [s]")
    battery_kwh: float = Field(60.0, gt=0, le=300, description="Battery capacity [kWh]")
    soc_init_pct: float = Field(30.0, ge=0, le=100, description="SoC at plug-in [%]")
    soc_target_pct: float = Field(90.0, gt=0, le=100, description="SoC at which it stops [%]")
    p_max_kw: float = Field(11.0, gt=0, le=350, description="On-board charger limit [kW]")
    taper_from_soc_pct: float = Field(
        80.0, gt=0, le=100, description="Above this SoC the acceptance falls linearly to 0 at "
        "100 % (constant-voltage phase) [%]")
    id_token: str = Field("SDG-0001", min_length=1, max_length=36,
                          description="Authorisation token presented by the driver")

    @model_validator(mode="after")
    def _targets(self) -> EVStubConfig:
        if self.soc_target_pct <= self.soc_init_pct:
            raise ValueError(f"soc_target_pct ({self.soc_target_pct}) must exceed soc_init_pct "
                             f"({self.soc_init_pct})")
        return self


class EVSEStubConfig(StrictModel):
    """An OCPP 2.0.1 charging station with one EVSE, one connector and one car."""

    station_id: str = Field("CS-001", description="Station identity (URL path and user name)")
    csms_url: str = Field("ws://127.0.0.1:9000/ocpp",
                          description="CSMS endpoint; the station id is appended as a path segment")
    security_profile: Literal[1, 2] = Field(
        1, description="1: HTTP Basic over ws://; 2: HTTP Basic over TLS >= 1.2 (wss://)")
    password: SecretStr = Field(..., description="Basic-auth password, 16-40 bytes")
    ca_file: str | None = Field(None, description="CA certificate that signed the CSMS "
                                "certificate (profile 2); default: the system store")
    phases: Literal[1, 3] = Field(3, description="Phases wired to the EVSE")
    voltage_v: float = Field(230.0, gt=0, le=1000, description="Phase-to-neutral voltage [V]")
    max_current_a: float = Field(32.0, gt=0, le=630, description="Rated current per phase [A]")
    vendor: str = Field("sdg-twin", min_length=1, max_length=50, description="Vendor name")
    model: str = Field("HIL-EVSE", min_length=1, max_length=20, description="Model name")
    serial_number: str = Field("SDG-EVSE-0001", min_length=1, max_length=25,
                               description="Serial number")
    meter_interval_s: float = Field(10.0, gt=0, le=3600,
                                    description="Meter values in transactions every [s]")
    heartbeat_interval_s: float = Field(
        60.0, gt=0, description="Heartbeat interval until the CSMS sets one at boot [s]")
    response_timeout_s: float = Field(10.0, gt=0, le=300,
                                      description="Time to wait for a CSMS response [s]")
    ping_interval_s: float = Field(5.0, gt=0, le=300,
                                   description="WebSocket ping interval (link supervision) [s]")
    retry_backoff_min_s: float = Field(
        1.0, gt=0, le=3600, description="RetryBackOffWaitMinimum: first reconnect delay [s]")
    retry_backoff_random_s: float = Field(
        1.0, ge=0, le=3600, description="RetryBackOffRandomRange: random extra delay [s]")
    retry_backoff_repeat: int = Field(
        5, ge=0, le=20, description="RetryBackOffRepeatTimes: doublings of the delay")
    offline_fallback: Literal["tx_default", "keep"] = Field(
        "tx_default", description="While offline: 'tx_default' drops the CSMS's TxProfile and "
        "charges by the TxDefaultProfile; 'keep' keeps every installed profile")
    offline_limit_kw: float | None = Field(
        None, ge=0, description="Extra cap on charging power while offline [kW]")
    ev: EVStubConfig = EVStubConfig()
    seed: int = Field(0, ge=0, description="Seed of the reconnect jitter")

    @field_validator("station_id")
    @classmethod
    def _station_id(cls, v: str) -> str:
        return _check_station_id(v)

    @field_validator("password")
    @classmethod
    def _password(cls, v: SecretStr) -> SecretStr:
        return _check_password(v, "password")

    @field_validator("ca_file")
    @classmethod
    def _ca(cls, v: str | None) -> str | None:
        return _existing_file(v)

    @field_validator("csms_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^wss?://[^/\s]+(/[^\s]*)?$", v):
            raise ValueError(f"{v!r} is not a ws:// or wss:// URL")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _scheme_matches_profile(self) -> EVSEStubConfig:
        want = "wss://" if self.security_profile == 2 else "ws://"
        if not self.csms_url.startswith(want):
            raise ValueError(f"security_profile {self.security_profile} needs a {want} csms_url, "
                             f"got {self.csms_url!r}")
        return self

    @property
    def rating_kw(self) -> float:
        """Rated power of the EVSE. [kW]"""
        return self.phases * self.voltage_v * self.max_current_a / 1000.0


class CSMSConfig(StrictModel):
    """The charging station management system the co-simulation commands chargers with."""

    host: str = Field(LOOPBACK, min_length=1, description="Listen address (loopback by default)")
    port: int = Field(9000, ge=0, le=65535, description="TCP port; 0 picks a free one")
    path: str = Field("/ocpp", description="URL path before the station id")
    security_profile: Literal[1, 2] = Field(
        1, description="1: HTTP Basic over ws://; 2: HTTP Basic over TLS >= 1.2 (wss://)")
    stations: dict[str, SecretStr] = Field(
        ..., min_length=1, description="Known stations: station id -> basic-auth password")
    certfile: str | None = Field(None, description="Server certificate chain, PEM (profile 2)")
    keyfile: str | None = Field(None, description="Server private key, PEM (profile 2)")
    heartbeat_interval_s: int = Field(60, ge=1, le=86400,
                                      description="Interval given to stations at boot [s]")
    response_timeout_s: float = Field(10.0, gt=0, le=300,
                                      description="Time to wait for a station's response [s]")
    ping_interval_s: float = Field(5.0, gt=0, le=300,
                                   description="WebSocket ping interval (link supervision) [s]")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _url_path(v)

    @field_validator("stations")
    @classmethod
    def _stations(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for sid, secret in v.items():
            _check_station_id(sid)
            _check_password(secret, f"stations[{sid!r}]")
        return v

    @field_validator("certfile", "keyfile")
    @classmethod
    def _files(cls, v: str | None) -> str | None:
        return _existing_file(v)

    @model_validator(mode="after")
    def _tls_files(self) -> CSMSConfig:
        if self.security_profile == 2 and not (self.certfile and self.keyfile):
            raise ValueError("security_profile 2 needs certfile and keyfile (TLS server "
                             "certificate)")
        return self


class StubFileConfig(StrictModel):
    """A stub configuration file for ``twin hil stub --config``: one section per stub kind."""

    pv: PVStubConfig | None = None
    battery: BatteryStubConfig | None = None
    evse: EVSEStubConfig | None = None
    csms: CSMSConfig | None = None


# ---------------------------------------------------------------------------------------------
# The scenario's ``hil:`` section: which simulated element each device replaces, and where it is.

class _DeviceAddress(StrictModel):
    """Where the twin reaches a SunSpec Modbus TCP device."""

    host: str = Field(LOOPBACK, min_length=1,
                      description="Device address (with start_stubs: where the stub listens)")
    port: int = Field(0, ge=0, le=65535,
                      description="TCP port; 0 (start_stubs only) picks a free one")
    unit_id: int = Field(1, ge=1, le=247, description="Modbus unit id")
    revert_after_s: float | None = Field(
        None, gt=0, le=86400,
        description="Reversion timer written with every setpoint: the device falls back to its "
                    "reversion value when no command comes for this long; default 1.05 x step_s "
                    "[s]")


class HILPVConfig(_DeviceAddress):
    """A PV plant of the fleet replaced by a SunSpec inverter (models 1, 701, 702, 704).

    The coordinator's curtailment becomes ``WMaxLimPct``, its reactive power request
    ``VarSet``; the reversion values are full output and zero reactive power.
    """

    plant: int | str = Field(..., description="Name of the plant in pv.plants, or its index")


class HILBatteryConfig(BatteryStubConfig):
    """A stationary battery added at a bus, reached over SunSpec (704 ``WSet``, 802).

    Its controller tracks a grid import target: ``p_set = p_prev + target_import_kw - import_prev``
    (load convention, positive charges), from the grid's import of the previous step, clipped to
    the ratings. The reversion value (fallback on a lost link) is 0 kW. The physical fields are
    the battery model's: with ``start_stubs`` (or ``simulate``) the twin runs that model; with
    external hardware the ratings are read from the device.
    """

    name: str = Field(..., min_length=1, description="Name of the battery")
    bus: BusRef = Field(..., description="Grid bus (index or name) the battery connects to")
    port: int = Field(0, ge=0, le=65535,
                      description="TCP port; 0 (start_stubs only) picks a free one")
    target_import_kw: float = Field(
        ..., description="Grid import the battery steers towards [kW]")
    revert_after_s: float | None = Field(
        None, gt=0, le=86400, description="Reversion timer and controller heartbeat timeout; "
        "default 1.05 x step_s [s]")

    @field_validator("target_import_kw")
    @classmethod
    def _finite_target(cls, v: float) -> float:
        return finite("target_import_kw", v)


class HILChargingSiteConfig(StrictModel):
    """A charging site of the EV fleet replaced by an OCPP 2.0.1 charging station.

    Each step the site's simulated charging power (the EV fleet still simulates the site's EVs
    under the coordinator's setpoints) goes to the station as a charging limit
    (SetChargingProfile); the station's metered power then replaces the site's simulated power
    in the grid. Charge only: OCPP 2.0.1 charging limits cannot command discharge, so the site
    must have no V2G chargers.
    """

    site: str = Field(..., min_length=1, description="Name of the site in ev.sites")
    station_id: str | None = Field(
        None, description="Station identity; default HIL-<site index>")
    password: SecretStr | None = Field(
        None, description="Basic-auth password, 16-40 bytes; with start_stubs a random one is "
        "made when absent; without, it is required (or SDG_TWIN_OCPP_STATIONS)")
    offline_limit_kw: float = Field(
        0.0, ge=0, description="Charging cap of the station while offline, and the twin's "
        "value for a step the station does not answer [kW]")
    car_battery_kwh: float = Field(
        300.0, gt=0, le=300, description="start_stubs: battery of the stub's aggregate car [kWh]")
    car_soc_init_pct: float = Field(
        10.0, ge=0, lt=100, description="start_stubs: SoC of the aggregate car at start [%]")

    @field_validator("station_id")
    @classmethod
    def _station_id(cls, v: str | None) -> str | None:
        return None if v is None else _check_station_id(v)

    @field_validator("password")
    @classmethod
    def _password(cls, v: SecretStr | None) -> SecretStr | None:
        return _check_password(v, "password")


class HILCSMSConfig(StrictModel):
    """The twin's CSMS, which charging stations connect to."""

    host: str = Field(LOOPBACK, min_length=1, description="Listen address (loopback by default)")
    port: int = Field(0, ge=0, le=65535, description="TCP port; 0 picks a free one")
    path: str = Field("/ocpp", description="URL path before the station id")
    security_profile: Literal[1, 2] = Field(
        1, description="1: HTTP Basic over ws://; 2: HTTP Basic over TLS >= 1.2 (wss://)")
    certfile: str | None = Field(None, description="Server certificate chain, PEM (profile 2)")
    keyfile: str | None = Field(None, description="Server private key, PEM (profile 2)")
    ca_file: str | None = Field(None, description="start_stubs with profile 2: the CA the "
                                "stub stations verify the CSMS certificate with")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _url_path(v)

    @field_validator("certfile", "keyfile", "ca_file")
    @classmethod
    def _files(cls, v: str | None) -> str | None:
        return _existing_file(v)

    @model_validator(mode="after")
    def _tls_files(self) -> HILCSMSConfig:
        if self.security_profile == 2 and not (self.certfile and self.keyfile):
            raise ValueError("security_profile 2 needs certfile and keyfile (TLS server "
                             "certificate)")
        return self


class HILConfig(StrictModel):
    """The ``hil`` section: devices that replace simulated elements (or add to them).

    Every listener binds to 127.0.0.1 unless an address is given.
    """

    start_stubs: bool = Field(
        False, description="Start protocol stubs of every device on this machine for a bench "
        "(torn down at the end); false: the devices are hardware at the given addresses")
    simulate: bool = Field(
        False, description="Contact no device: replaced elements stay in their simulated "
        "populations and batteries run their model in-process (the fully simulated reference)")
    rt_factor: float | None = Field(
        None, gt=0, le=10, description="Wall seconds per simulated second (mosaik real-time "
        "mode); none: as fast as possible")
    rt_strict: bool = Field(False, description="Fail the run when it falls behind real time")
    timeout_s: float = Field(2.0, gt=0, le=60,
                             description="Time a device has to answer one request [s]")
    pv_plants: list[HILPVConfig] = Field(default_factory=list)
    batteries: list[HILBatteryConfig] = Field(default_factory=list)
    charging_sites: list[HILChargingSiteConfig] = Field(default_factory=list)
    csms: HILCSMSConfig = HILCSMSConfig()

    def address_problems(self) -> list[str]:
        """Ports that must be given, addresses used twice, devices listed twice."""
        problems = []
        for i, d in enumerate([*self.pv_plants, *self.batteries]):
            if d.port == 0 and not self.start_stubs:
                kind, j = (("pv_plants", i) if i < len(self.pv_plants)
                           else ("batteries", i - len(self.pv_plants)))
                problems.append(f"{kind}.{j}.port: give the device's port (0 = any free port "
                                "works only with start_stubs: true)")
        if self.charging_sites and self.csms.port == 0 and not self.start_stubs:
            problems.append("csms.port: give the port stations connect to (0 only with "
                            "start_stubs: true)")
        seen: dict[tuple[str, int], str] = {}
        endpoints = [(f"pv_plants.{i}", d.host, d.port) for i, d in enumerate(self.pv_plants)]
        endpoints += [(f"batteries.{i}", d.host, d.port) for i, d in enumerate(self.batteries)]
        if self.charging_sites:
            endpoints.append(("csms", self.csms.host, self.csms.port))
        for where, host, port in endpoints:
            if port == 0:
                continue
            if (host, port) in seen:
                problems.append(f"{where}.port: address {host}:{port} is already used by "
                                f"{seen[(host, port)]}; every device needs its own address")
            seen.setdefault((host, port), where)
        for field, key in (("pv_plants", "plant"), ("charging_sites", "site"),
                           ("batteries", "name")):
            values = [getattr(d, key) for d in getattr(self, field)]
            dupes = sorted({str(v) for v in values if values.count(v) > 1})
            if dupes:
                problems.append(f"{field}: {key} listed twice: {', '.join(dupes)}")
        ids = [s.station_id for s in self.charging_sites if s.station_id is not None]
        if len(set(ids)) < len(ids):
            problems.append("charging_sites: station_id listed twice")
        return [f"hil.{p}" for p in problems]

    @property
    def has_devices(self) -> bool:
        """True when the section names any device."""
        return bool(self.pv_plants or self.batteries or self.charging_sites)


def hil_problems(hil: HILConfig, pv_plants: list, ev_sites: list | None) -> list[str]:
    """What the ``hil`` section needs of the other sections, one line per problem.

    Parameters
    ----------
    hil : the section.
    pv_plants : the explicit plants (``pv.plants``); generated plants cannot be replaced.
    ev_sites : the charging sites (``ev.sites``), None without an EV fleet.
    """
    problems = hil.address_problems()
    names = [p.name for p in pv_plants]
    for i, d in enumerate(hil.pv_plants):
        ref = d.plant
        if isinstance(ref, int) and not isinstance(ref, bool):
            if not 0 <= ref < len(names):
                problems.append(f"hil.pv_plants.{i}.plant: index {ref} is outside pv.plants "
                                f"(0..{len(names) - 1})" if names else
                                f"hil.pv_plants.{i}.plant: pv.plants is empty; only listed "
                                "plants can be replaced (not generated ones)")
        elif ref not in names:
            problems.append(f"hil.pv_plants.{i}.plant: no plant named {ref!r} in pv.plants "
                            f"(known: {', '.join(names) or 'none'}; generated plants cannot "
                            "be replaced)")
    if hil.pv_plants and len({plant_index(d.plant, names) for d in hil.pv_plants
                              if plant_index(d.plant, names) is not None}) < sum(
            plant_index(d.plant, names) is not None for d in hil.pv_plants):
        problems.append("hil.pv_plants: the same plant is replaced twice (by name and index)")
    site_names = [s.name for s in ev_sites] if ev_sites is not None else []
    for i, d in enumerate(hil.charging_sites):
        if ev_sites is None:
            problems.append(f"hil.charging_sites.{i}.site: the scenario has no 'ev' section")
            continue
        if d.site not in site_names:
            problems.append(f"hil.charging_sites.{i}.site: no site named {d.site!r} in ev.sites "
                            f"(known: {', '.join(site_names)})")
            continue
        site = ev_sites[site_names.index(d.site)]
        if any(g.discharge_kw > 0 and g.count > 0 for g in site.chargers):
            problems.append(f"hil.charging_sites.{i}.site: site {d.site!r} has V2G chargers; an "
                            "OCPP 2.0.1 charging limit cannot command discharge, so only "
                            "charge-only sites can be replaced")
        elif sum(g.count * g.charge_kw for g in site.chargers) <= 0:
            problems.append(f"hil.charging_sites.{i}.site: site {d.site!r} has no chargers")
        if not hil.start_stubs and not hil.simulate and d.password is None:
            problems.append(f"hil.charging_sites.{i}.password: required for an external "
                            "station (16-40 bytes)")
    return problems


def plant_index(ref: int | str, names: list[str]) -> int | None:
    """Index in ``pv.plants`` of a plant named by index or name (None if unknown)."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        return ref if 0 <= ref < len(names) else None
    return names.index(ref) if ref in names else None


def finite(name: str, value: float) -> float:
    """``value`` as float, or ``ValueError`` naming ``name`` when NaN or infinite."""
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v
