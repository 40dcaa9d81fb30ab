"""An OCPP 2.0.1 charging station stub: one EVSE, one connector, one car.

Protocol (the ``ocpp`` package over ``websockets``): BootNotification, Heartbeat at the interval
the CSMS gives, StatusNotification, TransactionEvent (Started / Updated with periodic meter
values / Ended), and smart charging: SetChargingProfile, GetCompositeSchedule,
ClearChargingProfile (logic in :mod:`components.hil.smart_charging`), plus GetVariables for the
EVSE's power rating. Security profile 1 (HTTP Basic) or 2 (Basic over TLS >= 1.2).

Physics: the car accepts ``p_max_kw`` up to ``taper_from_soc_pct`` and linearly less above it
(constant-voltage phase), and stops at ``soc_target_pct``; the delivered power is the minimum of
that, the composite charging limit and the EVSE rating. Energy is integrated in sub-steps of at
most 1 s; the meter is the energy delivered (losses in the car are not modelled).

Offline behaviour (OCPP 2.0.1 E and K, B for reconnection): when the link drops the station
keeps charging, queues every TransactionEvent (``offline = true``) and delivers them in order
after reconnecting; it charges by the TxDefaultProfile instead of the CSMS's TxProfile
(``offline_fallback = 'tx_default'``) and under ``offline_limit_kw`` when one is set; it
reconnects after ``RetryBackOffWaitMinimum * 2**n + U(0, RetryBackOffRandomRange)`` seconds,
``n`` capped at ``RetryBackOffRepeatTimes``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Self

import numpy as np
import websockets
from ocpp.exceptions import OCPPError
from ocpp.routing import after, on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action
from websockets.exceptions import WebSocketException

from components.hil.config import EVSEStubConfig
from components.hil.ocpp_common import (
    SUBPROTOCOL,
    RobustChargePoint,
    basic_auth_header,
    client_tls_context,
    iso,
    utc_now,
)
from components.hil.smart_charging import EVSERating, ProfileRejected, ProfileStore, parse_profile

log = logging.getLogger("components.hil")

EVSE_ID = 1
CONNECTOR_ID = 1
_LINK_ERRORS = (OSError, asyncio.TimeoutError, WebSocketException,
                ConnectionError)


class _StationSession(RobustChargePoint):
    """The station's end of one WebSocket connection; CSMS requests go to the station."""

    def __init__(self, station: ChargingStation, connection: Any) -> None:
        super().__init__(station.cfg.station_id, connection,
                         response_timeout=station.cfg.response_timeout_s)
        self.station = station

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict, **_: Any):
        return self.station.set_charging_profile(evse_id, charging_profile)

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(self, duration: int, evse_id: int,
                                  charging_rate_unit: str | None = None, **_: Any):
        return self.station.composite_schedule(duration, evse_id, charging_rate_unit)

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, charging_profile_id: int | None = None,
                                  charging_profile_criteria: dict | None = None, **_: Any):
        return self.station.clear_charging_profile(charging_profile_id, charging_profile_criteria)

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict], **_: Any):
        return self.station.get_variables(get_variable_data)

    @on(Action.trigger_message)
    def on_trigger_message(self, requested_message: str, evse: dict | None = None, **_: Any):
        ok = requested_message == "MeterValues" and (evse or {}).get("id", EVSE_ID) == EVSE_ID
        return call_result.TriggerMessage(status="Accepted" if ok else "NotImplemented")

    @after(Action.trigger_message)
    async def send_triggered(self, requested_message: str, evse: dict | None = None,
                             **_: Any) -> None:
        """Answer a triggered MeterValues request with the meter read now."""
        if requested_message != "MeterValues" or (evse or {}).get("id", EVSE_ID) != EVSE_ID:
            return
        self.station.advance()
        try:
            await self.call(call.MeterValues(
                evse_id=EVSE_ID, meter_value=[self.station._meter_value("Trigger")]),
                suppress=False)
        except (*_LINK_ERRORS, OCPPError) as exc:
            log.warning("%s: triggered MeterValues not delivered: %s", self.id, exc)


class ChargingStation:
    """The charging-station stub.

    Parameters
    ----------
    cfg : EVSEStubConfig
        Identity, CSMS endpoint, security, rating, timing, offline policy and the car.
    clock : callable
        Monotonic seconds (physics time).
    now : callable
        Current UTC time, consistent with ``clock`` (profile validity, message timestamps).
        A bench on simulated time passes the simulated clock and its UTC here.
    """

    def __init__(self, cfg: EVSEStubConfig, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = utc_now) -> None:
        self.cfg = cfg
        self._now = now
        self.rating = EVSERating(cfg.voltage_v, cfg.phases, cfg.max_current_a)
        self.profiles = ProfileStore(self.rating, n_evse=1)
        # jitter differs between stations with the same seed: that is what it is for
        self.rng = np.random.default_rng([cfg.seed, zlib.crc32(cfg.station_id.encode())])
        self._clock = clock
        self.url = f"{cfg.csms_url}/{cfg.station_id}"
        self.session: _StationSession | None = None
        self.boot_accepted = False
        self.heartbeat_interval_s = cfg.heartbeat_interval_s
        self.plugged = False
        self.charging_state = "Idle"
        self.tx_id: str | None = None
        self.tx_start: datetime | None = None
        self.seq_no = 0
        self.energy_wh = 0.0
        self.p_w = 0.0
        self.limit_w = self.rating.max_power_w
        self.ev_soc_pct = cfg.ev.soc_init_pct
        self.tx_queue: deque[dict[str, Any]] = deque()
        self.tx_delivered: list[dict[str, Any]] = []
        self.reconnect_delays: list[float] = []
        self.connections = 0
        self.last_error: str | None = None
        self.refused: list[str] = []
        self._t_mono: float | None = None
        self._t_utc: datetime | None = None
        self._tasks: list[asyncio.Task] = []
        self._online: asyncio.Event | None = None
        self._tx_wake: asyncio.Event | None = None
        self._ws: Any = None
        self._reader: asyncio.Task | None = None

    # ------------------------------------------------------------------ status
    @property
    def online(self) -> bool:
        """True while connected and accepted by the CSMS."""
        return self._online is not None and self._online.is_set()

    def snapshot(self) -> dict[str, Any]:
        """Operating point for logs and tests (advances the physics first)."""
        self.advance()
        return {"online": self.online, "p_w": self.p_w, "limit_w": self.limit_w,
                "energy_wh": self.energy_wh, "ev_soc_pct": self.ev_soc_pct,
                "transaction_id": self.tx_id, "charging_state": self.charging_state,
                "queued_tx_events": len(self.tx_queue)}

    # ------------------------------------------------------------------ physics
    def _ev_acceptance_w(self) -> float:
        ev = self.cfg.ev
        if self.ev_soc_pct >= ev.soc_target_pct:
            return 0.0
        share = min(1.0, (100.0 - self.ev_soc_pct) / (100.0 - ev.taper_from_soc_pct)
                    if ev.taper_from_soc_pct < 100.0 else 1.0)
        return ev.p_max_kw * 1000.0 * max(share, 0.0)

    def current_limit_w(self, t: datetime | None = None) -> float:
        """Charging limit now: composite schedule, offline fallback and offline cap. [W]"""
        t = t or self._now()
        offline = not self.online
        limit = self.profiles.limit_w(
            EVSE_ID, t, self.tx_id, self.tx_start,
            ignore_tx_profiles=offline and self.cfg.offline_fallback == "tx_default")
        if offline and self.cfg.offline_limit_kw is not None:
            limit = min(limit, self.cfg.offline_limit_kw * 1000.0)
        return limit

    def advance(self) -> None:
        """Integrate the delivered energy and the car's SoC up to now."""
        now_m, now_u = self._clock(), self._now()
        if self._t_mono is None:
            self._t_mono, self._t_utc = now_m, now_u
            return
        cap_wh = self.cfg.ev.battery_kwh * 1000.0
        while self._t_mono < now_m:
            dt = min(1.0, now_m - self._t_mono)
            t_mid = self._t_utc + timedelta(seconds=dt / 2)
            self.limit_w = self.current_limit_w(t_mid)
            if self.tx_id is not None and self.plugged:
                p = min(self.limit_w, self.rating.max_power_w, self._ev_acceptance_w())
            else:
                p = 0.0
            self.p_w = p
            self.energy_wh += p * dt / 3600.0
            self.ev_soc_pct = min(100.0, self.ev_soc_pct + 100.0 * p * dt / 3600.0 / cap_wh)
            self._t_mono += dt
            self._t_utc += timedelta(seconds=dt)
        self._update_charging_state()

    def _update_charging_state(self) -> None:
        if self.tx_id is None:
            return
        if self.p_w > 0:
            state = "Charging"
        elif self._ev_acceptance_w() <= 0:
            state = "SuspendedEV"
        else:
            state = "SuspendedEVSE"  # the limit is 0
        if state != self.charging_state:
            self.charging_state = state
            self._queue_tx("Updated", "ChargingStateChanged")

    # ------------------------------------------------------------------ meter values
    def _meter_value(self, context: str) -> dict[str, Any]:
        i_a = self.p_w / (self.rating.voltage_v * self.rating.phases)
        offered_a = self.limit_w / (self.rating.voltage_v * self.rating.phases)
        sv = [
            ("Energy.Active.Import.Register", round(self.energy_wh, 1), "Wh"),
            ("Power.Active.Import", round(self.p_w, 1), "W"),
            ("Current.Import", round(i_a, 2), "A"),
            ("Current.Offered", round(offered_a, 2), "A"),
            ("Voltage", self.rating.voltage_v, "V"),
            ("SoC", round(self.ev_soc_pct, 2), "Percent"),
        ]
        return {"timestamp": iso(self._now()), "sampled_value": [
            {"value": v, "measurand": m, "context": context, "unit_of_measure": {"unit": u}}
            for m, v, u in sv]}

    def _queue_tx(self, event_type: str, trigger: str, context: str = "Sample.Periodic",
                  **extra: Any) -> None:
        """Queue a TransactionEvent; it is sent in order when (or as soon as) online."""
        info: dict[str, Any] = {"transaction_id": self.tx_id,
                                "charging_state": self.charging_state}
        info.update(extra.pop("info", {}))
        payload: dict[str, Any] = {
            "event_type": event_type, "timestamp": iso(self._now()), "trigger_reason": trigger,
            "seq_no": self.seq_no, "transaction_info": info,
            "meter_value": [self._meter_value(context)], **extra,
        }
        if not self.online:
            payload["offline"] = True
        self.seq_no += 1
        self.tx_queue.append(payload)
        if self._tx_wake is not None:
            self._tx_wake.set()

    # ------------------------------------------------------------------ CSMS requests
    def set_charging_profile(self, evse_id: int, data: dict) -> call_result.SetChargingProfile:
        """Check and install a profile; ``Rejected`` (and a log line) when it is not acceptable."""
        self.advance()
        txs = {EVSE_ID: self.tx_id} if self.tx_id is not None else {}
        try:
            profile = parse_profile(evse_id, data, self.rating, 1, txs)
        except ProfileRejected as exc:
            self.refused.append(str(exc))
            log.warning("%s: refused SetChargingProfile: %s", self.cfg.station_id, exc)
            return call_result.SetChargingProfile(
                status="Rejected",
                status_info={"reason_code": exc.reason_code, "additional_info": str(exc)[:512]})
        self.profiles.install(profile)
        self.advance()
        log.info("%s: installed %s %d (stack %d) on EVSE %d", self.cfg.station_id,
                 profile.purpose, profile.id, profile.stack_level, evse_id)
        return call_result.SetChargingProfile(status="Accepted")

    def composite_schedule(self, duration: int, evse_id: int, unit: str | None
                           ) -> call_result.GetCompositeSchedule:
        """The composite schedule of an EVSE from now for ``duration`` seconds."""
        if evse_id not in (0, EVSE_ID) or duration <= 0:
            return call_result.GetCompositeSchedule(
                status="Rejected", status_info={"reason_code": "UnknownEvse" if duration > 0
                                                else "InvalidValue"})
        unit = unit or "W"
        start = self._now()
        periods = self.profiles.composite(
            EVSE_ID, start, int(duration), unit, self.tx_id, self.tx_start,
            ignore_tx_profiles=not self.online and self.cfg.offline_fallback == "tx_default")
        return call_result.GetCompositeSchedule(status="Accepted", schedule={
            "evse_id": evse_id, "duration": int(duration), "schedule_start": iso(start),
            "charging_rate_unit": unit,
            "charging_schedule_period": [{"start_period": p.start_s, "limit": p.limit,
                                          "number_phases": p.phases} for p in periods]})

    def clear_charging_profile(self, profile_id: int | None, criteria: dict | None
                               ) -> call_result.ClearChargingProfile:
        """Remove profiles by id or criteria (evse, purpose, stack level)."""
        criteria = criteria or {}
        n = self.profiles.clear(profile_id, criteria.get("evse_id"),
                                criteria.get("charging_profile_purpose"),
                                criteria.get("stack_level"))
        self.advance()
        return call_result.ClearChargingProfile(status="Accepted" if n else "Unknown")

    def get_variables(self, items: list[dict]) -> call_result.GetVariables:
        """Device-model reads: EVSE Power (MaxSet, Actual) and SmartChargingCtrlr Enabled."""
        self.advance()
        known = {("EVSE", "Power", "MaxSet"): f"{self.rating.max_power_w:.0f}",
                 ("EVSE", "Power", "Actual"): f"{self.p_w:.1f}",
                 ("SmartChargingCtrlr", "Enabled", "Actual"): "true"}
        out = []
        for item in items:
            comp, var = item.get("component", {}), item.get("variable", {})
            attr = item.get("attribute_type", "Actual")
            value = known.get((comp.get("name"), var.get("name"), attr))
            res: dict[str, Any] = {"component": comp, "variable": var, "attribute_type": attr}
            if value is None:
                names = {k[0] for k in known}
                res["attribute_status"] = ("UnknownComponent" if comp.get("name") not in names
                                           else "UnknownVariable")
            else:
                res["attribute_status"] = "Accepted"
                res["attribute_value"] = value
            out.append(res)
        return call_result.GetVariables(get_variable_result=out)

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Start the station's tasks (connection, meter, heartbeat, queue, car)."""
        if self._tasks:
            raise RuntimeError("station already started")
        self._online = asyncio.Event()
        self._tx_wake = asyncio.Event()
        self.advance()
        self._tasks = [asyncio.create_task(coro, name=f"{self.cfg.station_id}-{coro.__name__}")
                       for coro in (self._link_loop(), self._meter_loop(),
                                    self._heartbeat_loop(), self._tx_sender(),
                                    self._car_arrives())]

    async def stop(self, flush_timeout_s: float = 2.0) -> None:
        """End the transaction (delivering it if online), then stop every task."""
        if not self._tasks:
            return
        self.advance()
        if self.tx_id is not None:
            self._end_transaction()
            if self.online:
                deadline = time.monotonic() + flush_timeout_s
                while self.tx_queue and self.online and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_online(self, timeout_s: float) -> None:
        """Wait until connected and booted; ``TimeoutError`` naming the last error otherwise."""
        try:
            await asyncio.wait_for(self._online.wait(), timeout_s)
        except TimeoutError:
            raise TimeoutError(f"{self.cfg.station_id} not online after {timeout_s} s "
                               f"(last error: {self.last_error})") from None

    def backoff_s(self, attempt: int) -> float:
        """Reconnect delay after ``attempt`` consecutive failures (OCPP RetryBackOff*). [s]"""
        cfg = self.cfg
        return (cfg.retry_backoff_min_s * 2 ** min(attempt, cfg.retry_backoff_repeat)
                + float(self.rng.uniform(0.0, cfg.retry_backoff_random_s)))

    async def _link_loop(self) -> None:
        cfg = self.cfg
        ssl_ctx = client_tls_context(cfg.ca_file) if cfg.security_profile == 2 else None
        headers = basic_auth_header(cfg.station_id, cfg.password.get_secret_value())
        attempt = 0
        while True:
            try:
                async with websockets.connect(
                        self.url, subprotocols=[SUBPROTOCOL], additional_headers=headers,
                        ssl=ssl_ctx, open_timeout=cfg.response_timeout_s, proxy=None,
                        ping_interval=cfg.ping_interval_s, ping_timeout=cfg.ping_interval_s,
                        close_timeout=1.0) as ws:
                    if ws.subprotocol != SUBPROTOCOL:
                        raise ConnectionError(f"CSMS did not accept sub-protocol {SUBPROTOCOL}")
                    self._ws = ws
                    session = _StationSession(self, ws)
                    reader = asyncio.create_task(session.start())
                    self._reader = reader
                    try:
                        await self._on_connected(session)
                        attempt = 0
                        await reader
                    finally:
                        reader.cancel()
                        await asyncio.gather(reader, return_exceptions=True)
            except asyncio.CancelledError:
                self._set_offline(None)
                raise
            except (*_LINK_ERRORS, OCPPError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            else:
                self.last_error = "connection closed"
            self._set_offline(self.last_error)
            delay = self.backoff_s(attempt)
            attempt += 1
            self.reconnect_delays.append(delay)
            log.warning("%s: link to %s lost (%s); reconnecting in %.2f s", cfg.station_id,
                        self.url, self.last_error, delay)
            await asyncio.sleep(delay)

    async def _on_connected(self, session: _StationSession) -> None:
        self.connections += 1
        if not self.boot_accepted:
            cfg = self.cfg
            resp = await session.call(call.BootNotification(
                charging_station={"model": cfg.model, "vendor_name": cfg.vendor,
                                  "serial_number": cfg.serial_number},
                reason="PowerUp"), suppress=False)
            if resp.status != "Accepted":
                raise ConnectionError(f"BootNotification {resp.status}")
            if resp.interval and resp.interval > 0:
                self.heartbeat_interval_s = float(resp.interval)
            self.boot_accepted = True
        self.advance()
        self.session = session
        self._online.set()
        self._tx_wake.set()
        log.info("%s: online at %s (connection %d)", self.cfg.station_id, self.url,
                 self.connections)
        await self._try("StatusNotification", self._status_notification())
        self.advance()

    def _set_offline(self, reason: str | None) -> None:
        """Mark the link down; ``reason`` None means the station is being stopped."""
        if reason is None:
            if self._online is not None:
                self._online.clear()
        elif self._online is not None and self._online.is_set():
            self.advance()
            cap = self.cfg.offline_limit_kw
            log.warning("%s: offline (%s): charging by %s%s; transaction events are queued",
                        self.cfg.station_id, reason,
                        "the TxDefaultProfile" if self.cfg.offline_fallback == "tx_default"
                        else "the installed profiles",
                        f", capped at {cap:g} kW" if cap is not None else "")
            self._online.clear()
        self.session = None
        self._ws = None

    async def _status_notification(self) -> None:
        if self.session is None:
            return
        await self.session.call(call.StatusNotification(
            timestamp=iso(self._now()), connector_status="Occupied" if self.plugged else "Available",
            evse_id=EVSE_ID, connector_id=CONNECTOR_ID), suppress=False)

    async def _try(self, what: str, coro) -> None:
        try:
            await coro
        except (*_LINK_ERRORS, OCPPError) as exc:
            log.warning("%s: %s failed: %s", self.cfg.station_id, what, exc)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            if self.online and self.session is not None:
                await self._try("Heartbeat",
                                self._call_while_linked(self.session, call.Heartbeat()))

    async def _meter_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.meter_interval_s)
            self.advance()
            if self.tx_id is not None:
                self._queue_tx("Updated", "MeterValuePeriodic")

    async def _car_arrives(self) -> None:
        await asyncio.sleep(self.cfg.ev.plug_in_after_s)
        self.advance()
        self.plugged = True
        self.tx_id = str(uuid.uuid4())  # unique across stations and restarts
        self.tx_start = self._now()
        self.seq_no = 0  # numbered per transaction, from 0 at Started
        self.charging_state = "EVConnected"
        self._queue_tx("Started", "CablePluggedIn", context="Transaction.Begin",
                       evse={"id": EVSE_ID, "connector_id": CONNECTOR_ID},
                       id_token={"id_token": self.cfg.ev.id_token, "type": "ISO14443"})
        if self.online:
            await self._try("StatusNotification", self._status_notification())
        self.advance()

    def _end_transaction(self) -> None:
        self.charging_state = "EVConnected"
        self._queue_tx("Ended", "StopAuthorized", context="Transaction.End",
                       info={"stopped_reason": "Local"})
        self.profiles.end_transaction(self.tx_id)
        self.tx_id = None

    async def _call_while_linked(self, session: _StationSession, payload: Any) -> Any:
        """``session.call`` that gives up as soon as the link drops (not only on timeout)."""
        reader = self._reader
        sent = asyncio.ensure_future(session.call(payload, suppress=False))
        if reader is None or reader.done():
            sent.cancel()
            raise ConnectionError("link down")
        await asyncio.wait({sent, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not sent.done():
            sent.cancel()
            await asyncio.gather(sent, return_exceptions=True)
            raise ConnectionError("link lost while waiting for the answer")
        return sent.result()

    async def _tx_sender(self) -> None:
        while True:
            await self._online.wait()
            if not self.tx_queue:
                self._tx_wake.clear()
                await self._tx_wake.wait()
                continue
            session = self.session
            if session is None:
                await asyncio.sleep(0.05)
                continue
            payload = self.tx_queue[0]
            try:
                await self._call_while_linked(session, call.TransactionEvent(**payload))
            except OCPPError as exc:
                log.error("%s: CSMS refused TransactionEvent seq %d (%s); dropped",
                          self.cfg.station_id, payload["seq_no"], exc)
            except _LINK_ERRORS as exc:
                log.warning("%s: TransactionEvent seq %d not delivered (%s); kept in queue",
                            self.cfg.station_id, payload["seq_no"], exc)
                await asyncio.sleep(0.2)
                continue
            else:
                self.tx_delivered.append(payload)
            self.tx_queue.popleft()
