"""The CSMS (charging station management system) the co-simulation commands chargers with.

An OCPP 2.0.1 server (the ``ocpp`` package over ``websockets``). Stations connect to
``ws[s]://host:port<path>/<station id>`` with HTTP Basic authentication (user name = station
id, security profiles 1 and 2); the CSMS accepts their boot, heartbeats, status notifications,
transaction events and meter values, keeps the latest meter values per station, and offers
calls to push a charging limit (SetChargingProfile), read the composite schedule and clear
profiles. Setpoints are checked before they are sent (finite, >= 0, <= the station's rating
as learned with GetVariables after boot); anything refused is logged and raised.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any, Self

import websockets
from ocpp.exceptions import OCPPError
from ocpp.routing import after, on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action
from websockets.exceptions import ConnectionClosed, WebSocketException

from components.hil.config import CSMSConfig
from components.hil.errors import DeviceConnectionError, DeviceRejectedError, DeviceTimeoutError
from components.hil.ocpp_common import (
    SUBPROTOCOL,
    RobustChargePoint,
    iso,
    parse_basic_auth,
    server_tls_context,
    utc_now,
)

log = logging.getLogger("components.hil")

# Profile ids the CSMS uses, one per purpose, so that a new limit replaces the previous one.
PROFILE_IDS = {"ChargingStationMaxProfile": 100, "TxDefaultProfile": 200, "TxProfile": 300}
_MEASURANDS = {"Energy.Active.Import.Register": "e_wh", "Power.Active.Import": "p_w",
               "Current.Import": "current_a", "Current.Offered": "current_offered_a",
               "Voltage": "voltage_v", "SoC": "soc_pct"}
_TO_BASE = {"kWh": 1000.0, "kW": 1000.0, "Wh": 1.0, "W": 1.0}


@dataclass
class StationRecord:
    """What the CSMS knows about one station."""

    station_id: str
    session: CSMSSession | None = None
    boot: dict[str, Any] | None = None
    connector_status: dict[tuple[int, int], str] = field(default_factory=dict)
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    tx_events: list[dict[str, Any]] = field(default_factory=list)
    meter: dict[str, Any] = field(default_factory=dict)
    rating_w: float | None = None
    heartbeats: int = 0
    connections: int = 0
    duplicates: int = 0
    read: dict[str, Any] = field(default_factory=dict)
    """Values of the latest MeterValues message (what a TriggerMessage answers with)."""
    reads: int = 0

    @property
    def connected(self) -> bool:
        """True while a WebSocket connection is open."""
        return self.session is not None

    def active_transaction(self, evse_id: int) -> str | None:
        """Id of the running transaction on ``evse_id`` (None if none)."""
        for tx_id, tx in self.transactions.items():
            if tx["evse_id"] == evse_id and not tx["ended"]:
                return tx_id
        return None


def parse_meter_values(meter_value: list[dict[str, Any]]) -> dict[str, Any]:
    """The last sample of an OCPP ``meterValue`` list as ``{e_wh, p_w, soc_pct, ...}``."""
    out: dict[str, Any] = {}
    for mv in meter_value or []:
        out["timestamp"] = mv.get("timestamp")
        for sv in mv.get("sampled_value", []):
            key = _MEASURANDS.get(sv.get("measurand", "Energy.Active.Import.Register"))
            if key is None or sv.get("phase"):
                continue
            unit = (sv.get("unit_of_measure") or {}).get("unit")
            mult = 10.0 ** (sv.get("unit_of_measure") or {}).get("multiplier", 0)
            out[key] = float(sv["value"]) * _TO_BASE.get(unit, 1.0) * mult
    return out


class CSMSSession(RobustChargePoint):
    """The CSMS's end of one station's WebSocket connection."""

    def __init__(self, record: StationRecord, connection: Any, csms: CSMS) -> None:
        super().__init__(record.station_id, connection,
                         response_timeout=csms.cfg.response_timeout_s)
        self.record = record
        self.csms = csms
        self.ws = connection

    @on(Action.boot_notification)
    async def on_boot_notification(self, charging_station: dict, reason: str, **_: Any):
        self.record.boot = {"charging_station": charging_station, "reason": reason,
                            "time": iso(utc_now())}
        await self.csms._notify()
        log.info("CSMS: %s booted (%s, %s)", self.id, charging_station.get("model"), reason)
        return call_result.BootNotification(current_time=iso(utc_now()),
                                            interval=self.csms.cfg.heartbeat_interval_s,
                                            status="Accepted")

    @after(Action.boot_notification)
    async def learn_rating(self, **_: Any) -> None:
        """Ask the station for its EVSE power rating (device model), to check setpoints."""
        try:
            resp = await self.call(call.GetVariables(get_variable_data=[
                {"component": {"name": "EVSE", "evse": {"id": 1}},
                 "variable": {"name": "Power"}, "attribute_type": "MaxSet"}]), suppress=False)
        except (TimeoutError, OCPPError, WebSocketException, OSError) as exc:
            log.info("CSMS: %s did not report its rating (%s); only station-side checks apply",
                     self.id, exc)
            return
        for res in resp.get_variable_result:
            if res.get("attribute_status") == "Accepted":
                try:
                    rating = float(res["attribute_value"])
                except (KeyError, ValueError):
                    continue
                if math.isfinite(rating) and rating > 0:
                    self.record.rating_w = rating

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any):
        self.record.heartbeats += 1
        return call_result.Heartbeat(current_time=iso(utc_now()))

    @on(Action.status_notification)
    def on_status_notification(self, timestamp: str, connector_status: str, evse_id: int,
                               connector_id: int, **_: Any):
        self.record.connector_status[(evse_id, connector_id)] = connector_status
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_token: dict, **_: Any):
        return call_result.Authorize(id_token_info={"status": "Accepted"})

    @on(Action.transaction_event)
    def on_transaction_event(self, event_type: str, timestamp: str, trigger_reason: str,
                             seq_no: int, transaction_info: dict, **kw: Any):
        rec = self.record
        tx_id = transaction_info["transaction_id"]
        tx = rec.transactions.setdefault(tx_id, {"evse_id": (kw.get("evse") or {}).get("id", 1),
                                                 "started": timestamp, "ended": False,
                                                 "seq_nos": []})
        if seq_no in tx["seq_nos"]:
            # a retransmission whose answer was lost with the link: acknowledge, record once
            rec.duplicates += 1
            log.info("CSMS: %s resent TransactionEvent %s seq %d", self.id, tx_id, seq_no)
            return call_result.TransactionEvent()
        if "evse" in kw:
            tx["evse_id"] = kw["evse"]["id"]
        tx["seq_nos"].append(seq_no)
        tx["charging_state"] = transaction_info.get("charging_state", tx.get("charging_state"))
        if event_type == "Ended":
            tx["ended"] = True
        rec.tx_events.append({"event_type": event_type, "seq_no": seq_no,
                              "offline": bool(kw.get("offline", False)),
                              "trigger_reason": trigger_reason, "transaction_id": tx_id,
                              "timestamp": timestamp})
        values = parse_meter_values(kw.get("meter_value") or [])
        if values:
            rec.meter = {**rec.meter, **values, "transaction_id": tx_id,
                         "offline": bool(kw.get("offline", False))}
        if kw.get("id_token"):
            return call_result.TransactionEvent(id_token_info={"status": "Accepted"})
        return call_result.TransactionEvent()

    @on(Action.meter_values)
    async def on_meter_values(self, evse_id: int, meter_value: list[dict], **_: Any):
        values = parse_meter_values(meter_value)
        if values:
            self.record.meter = {**self.record.meter, **values}
            self.record.read = values
            self.record.reads += 1
            await self.csms._notify()
        return call_result.MeterValues()

    @on(Action.notify_event)
    def on_notify_event(self, **_: Any):
        return call_result.NotifyEvent()

    @on(Action.security_event_notification)
    def on_security_event(self, type: str, timestamp: str, **_: Any):
        log.warning("CSMS: security event from %s: %s", self.id, type)
        return call_result.SecurityEventNotification()


class CSMS:
    """The CSMS server.

    Parameters
    ----------
    cfg : CSMSConfig
        Listen address, security profile, known stations and their passwords, timeouts.
    now : callable
        Current UTC time (start of the charging schedules sent); a bench on simulated time
        passes its simulated clock.
    """

    def __init__(self, cfg: CSMSConfig, now: Callable[[], datetime] = utc_now) -> None:
        self.cfg = CSMSConfig.model_validate(cfg)
        self._now = now
        self.stations: dict[str, StationRecord] = {
            sid: StationRecord(sid) for sid in self.cfg.stations}
        self.port: int | None = None
        self.auth_failures: list[str] = []
        self._server: Any = None
        self._changed: asyncio.Condition | None = None

    @property
    def url(self) -> str:
        """Base URL stations append their id to."""
        scheme = "wss" if self.cfg.security_profile == 2 else "ws"
        return f"{scheme}://{self.cfg.host}:{self.port}{self.cfg.path}"

    # ------------------------------------------------------------------ server
    async def start(self) -> int:
        """Bind and serve; return the port actually bound."""
        if self._server is not None:
            raise RuntimeError("CSMS already started")
        cfg = self.cfg
        ssl_ctx = (server_tls_context(cfg.certfile, cfg.keyfile)
                   if cfg.security_profile == 2 else None)
        self._changed = asyncio.Condition()
        self._server = await websockets.serve(
            self._handler, cfg.host, cfg.port, subprotocols=[SUBPROTOCOL], ssl=ssl_ctx,
            process_request=self._authenticate, ping_interval=cfg.ping_interval_s,
            ping_timeout=cfg.ping_interval_s, close_timeout=1.0)
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])
        log.info("CSMS: listening on %s (security profile %d)", self.url, cfg.security_profile)
        return self.port

    async def stop(self) -> None:
        """Close every connection and the listener."""
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _station_from_path(self, path: str) -> str | None:
        prefix = self.cfg.path + "/"
        path = path.split("?", 1)[0]
        if not path.startswith(prefix):
            return None
        sid = path[len(prefix):]
        return sid if sid and "/" not in sid else None

    def _authenticate(self, connection: Any, request: Any) -> Any:
        """Security profiles 1/2: the Basic user must be the station id, the password its key."""
        sid = self._station_from_path(request.path)
        creds = parse_basic_auth(request.headers.get("Authorization"))
        reason = None
        if sid is None or sid not in self.cfg.stations:
            reason = f"unknown station path {request.path!r}"
        elif creds is None:
            reason = f"{sid}: no HTTP Basic credentials"
        elif creds[0] != sid:
            reason = f"{sid}: user name {creds[0]!r} is not the station id"
        elif not hmac.compare_digest(creds[1].encode("utf-8"),
                                     self.cfg.stations[sid].get_secret_value().encode("utf-8")):
            reason = f"{sid}: wrong password"
        if reason is None:
            return None
        self.auth_failures.append(reason)
        log.warning("CSMS: refused connection: %s", reason)
        response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        response.headers["WWW-Authenticate"] = 'Basic realm="sdg-twin CSMS", charset="UTF-8"'
        return response

    async def _handler(self, ws: Any) -> None:
        sid = self._station_from_path(ws.request.path)
        if ws.subprotocol != SUBPROTOCOL:
            log.warning("CSMS: %s offered no %s sub-protocol; closing", sid, SUBPROTOCOL)
            await ws.close(1002, f"sub-protocol {SUBPROTOCOL} required")
            return
        rec = self.stations[sid]
        if rec.session is not None:  # a reconnecting station replaces its stale connection
            await rec.session.ws.close()
        session = CSMSSession(rec, ws, self)
        rec.session = session
        rec.connections += 1
        await self._notify()
        log.info("CSMS: %s connected (connection %d)", sid, rec.connections)
        try:
            await session.start()
        except ConnectionClosed:
            pass  # the normal end of a session
        finally:
            if rec.session is session:
                rec.session = None
            await self._notify()
            log.info("CSMS: %s disconnected", sid)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ queries
    def record(self, station_id: str) -> StationRecord:
        """The record of a configured station."""
        try:
            return self.stations[station_id]
        except KeyError:
            raise KeyError(f"station {station_id!r} is not configured in the CSMS (known: "
                           f"{sorted(self.stations)})") from None

    async def wait_for_station(self, station_id: str, timeout_s: float = 10.0,
                               booted: bool = True) -> StationRecord:
        """Wait until the station is connected (and has booted, by default)."""
        rec = self.record(station_id)

        def ready() -> bool:
            return rec.connected and (rec.boot is not None or not booted)

        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(ready), timeout_s)
        except TimeoutError:
            raise DeviceTimeoutError(f"station {station_id} did not connect within "
                                     f"{timeout_s:g} s") from None
        return rec

    async def _call(self, station_id: str, payload: Any, timeout_s: float | None) -> Any:
        rec = self.record(station_id)
        session = rec.session
        action = type(payload).__name__
        if session is None:
            raise DeviceConnectionError(f"station {station_id} is not connected; cannot send "
                                        f"{action}")
        timeout = self.cfg.response_timeout_s if timeout_s is None else float(timeout_s)
        try:
            return await asyncio.wait_for(session.call(payload, suppress=False), timeout)
        except TimeoutError:
            raise DeviceTimeoutError(f"station {station_id} did not answer {action} within "
                                     f"{timeout:g} s") from None
        except ConnectionClosed as exc:
            raise DeviceConnectionError(f"link to station {station_id} closed during {action}: "
                                        f"{exc}") from exc
        except OCPPError as exc:
            raise DeviceRejectedError(f"station {station_id} answered {action} with CALLERROR "
                                      f"{exc.code}: {exc.description}", exc.code) from exc

    async def set_charging_limit(self, station_id: str, limit_kw: float, evse_id: int = 1,
                                 purpose: str | None = None, stack_level: int = 0,
                                 duration_s: int | None = None, timeout_s: float | None = None,
                                 ) -> str:
        """Push a charging limit to a station (SetChargingProfile, watts).

        Parameters
        ----------
        station_id : str
            Target station.
        limit_kw : float
            Limit on the EVSE's charging power, ``0 <= limit_kw <= rating``. [kW]
        evse_id : int
            EVSE (0 = the whole station, with ``ChargingStationMaxProfile``).
        purpose : str, optional
            ``TxProfile`` (default when a transaction runs on the EVSE), ``TxDefaultProfile``
            (default otherwise) or ``ChargingStationMaxProfile``.
        stack_level : int
            Stack level of the profile.
        duration_s : int, optional
            Validity from now; absent = until replaced (or the transaction ends). [s]
        timeout_s : float, optional
            Time to wait for the answer (default: the configured response timeout). [s]

        Returns
        -------
        str
            The profile id and purpose, e.g. ``"TxProfile 300"``.

        Raises
        ------
        ValueError
            The limit is NaN, infinite, negative or above the station's rating (nothing sent).
        DeviceRejectedError
            The station answered ``Rejected`` (with its reason) or a CALLERROR.
        DeviceTimeoutError, DeviceConnectionError
            No answer in time, or the station is not connected.
        """
        rec = self.record(station_id)
        limit_w = float(limit_kw) * 1000.0
        reason = None
        if not math.isfinite(limit_w):
            reason = f"limit_kw must be finite, got {limit_kw!r}"
        elif limit_w < 0:
            reason = f"limit_kw must be >= 0, got {limit_kw!r}"
        elif rec.rating_w is not None and limit_w > rec.rating_w:
            reason = f"limit_kw {limit_kw:g} exceeds the rating of {rec.rating_w / 1000:g} kW"
        if reason is not None:
            log.warning("CSMS: refused to send a limit to %s: %s", station_id, reason)
            raise ValueError(f"station {station_id}: {reason}")
        tx_id = rec.active_transaction(evse_id) if evse_id else None
        if purpose is None:
            purpose = ("ChargingStationMaxProfile" if evse_id == 0
                       else "TxProfile" if tx_id else "TxDefaultProfile")
        if purpose not in PROFILE_IDS:
            raise ValueError(f"purpose must be one of {sorted(PROFILE_IDS)}, got {purpose!r}")
        if purpose == "TxProfile" and tx_id is None:
            raise ValueError(f"station {station_id}: no transaction runs on EVSE {evse_id}; use "
                             "purpose='TxDefaultProfile'")
        schedule: dict[str, Any] = {
            "id": 1, "charging_rate_unit": "W", "start_schedule": iso(self._now()),
            "charging_schedule_period": [{"start_period": 0, "limit": round(limit_w, 1)}]}
        if duration_s is not None:
            schedule["duration"] = int(duration_s)
        profile: dict[str, Any] = {
            "id": PROFILE_IDS[purpose], "stack_level": int(stack_level),
            "charging_profile_purpose": purpose, "charging_profile_kind": "Absolute",
            "charging_schedule": [schedule]}
        if purpose == "TxProfile":
            profile["transaction_id"] = tx_id
        resp = await self._call(station_id, call.SetChargingProfile(
            evse_id=evse_id, charging_profile=profile), timeout_s)
        if resp.status != "Accepted":
            info = resp.status_info or {}
            raise DeviceRejectedError(
                f"station {station_id} rejected a {limit_kw:g} kW {purpose}: "
                f"{info.get('reason_code', '')} {info.get('additional_info', '')}".strip(),
                resp.status)
        return f"{purpose} {PROFILE_IDS[purpose]}"

    async def clear_charging_limit(self, station_id: str, evse_id: int | None = None,
                                   purpose: str | None = None, timeout_s: float | None = None,
                                   ) -> bool:
        """Clear profiles (by EVSE and/or purpose); True if the station removed any."""
        criteria = {k: v for k, v in (("evse_id", evse_id),
                                      ("charging_profile_purpose", purpose)) if v is not None}
        resp = await self._call(station_id, call.ClearChargingProfile(
            charging_profile_criteria=criteria or None), timeout_s)
        return resp.status == "Accepted"

    async def composite_schedule(self, station_id: str, evse_id: int = 1,
                                 duration_s: int = 3600, timeout_s: float | None = None,
                                 ) -> list[dict[str, float]]:
        """The station's composite schedule from now: ``[{start_s, limit_kw}, ...]``."""
        resp = await self._call(station_id, call.GetCompositeSchedule(
            duration=int(duration_s), evse_id=evse_id, charging_rate_unit="W"), timeout_s)
        if resp.status != "Accepted" or not resp.schedule:
            raise DeviceRejectedError(f"station {station_id} rejected GetCompositeSchedule: "
                                      f"{resp.status_info}", resp.status)
        return [{"start_s": p["start_period"], "limit_kw": p["limit"] / 1000.0}
                for p in resp.schedule["charging_schedule_period"]]

    async def read_meter(self, station_id: str, evse_id: int = 1,
                         timeout_s: float | None = None) -> dict[str, Any]:
        """Ask the station for its meter now (TriggerMessage MeterValues) and return the values
        of the MeterValues message it sends in reply (``e_wh``, ``p_w``, ...).

        Raises
        ------
        DeviceRejectedError
            The station does not support the trigger.
        DeviceTimeoutError, DeviceConnectionError
            No answer (or no meter values) in time, or the station is not connected.
        """
        rec = self.record(station_id)
        before = rec.reads
        timeout = self.cfg.response_timeout_s if timeout_s is None else float(timeout_s)
        resp = await self._call(station_id, call.TriggerMessage(
            requested_message="MeterValues", evse={"id": evse_id}), timeout)
        if resp.status != "Accepted":
            raise DeviceRejectedError(f"station {station_id} answered TriggerMessage "
                                      f"MeterValues with {resp.status}", resp.status)
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(lambda: rec.reads > before),
                                       timeout)
        except TimeoutError:
            raise DeviceTimeoutError(f"station {station_id} sent no MeterValues within "
                                     f"{timeout:g} s of the trigger") from None
        return dict(rec.read)

    def meter_values(self, station_id: str) -> dict[str, Any]:
        """Latest meter values of a station: ``e_wh``, ``p_w``, ``soc_pct``, ``current_a``,
        ``current_offered_a``, ``timestamp``, ``transaction_id``, ``offline``; ``{}`` if none."""
        return dict(self.record(station_id).meter)

    async def drop_link(self, station_id: str) -> None:
        """Close the station's connection (the station is expected to reconnect)."""
        session = self.record(station_id).session
        if session is not None:
            await session.ws.close()
