"""OCPP 2.0.1: the CSMS and the charging-station stub against independent peers, and faults.

The "independent" station and CSMS below are built directly with the ``ocpp`` package and
``websockets``, without any code of the project.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import time

import pytest
import websockets
from hil_support import (
    LOOPBACK,
    PASSWORD,
    LinkProxy,
    legacy_tls_context,
    make_certificates,
    run,
)
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from websockets.exceptions import InvalidStatus

from components.hil.clients import CSMSClient
from components.hil.config import CSMSConfig, EVSEStubConfig
from components.hil.errors import DeviceTimeoutError
from components.hil.ocpp_common import basic_auth_header
from components.hil.ocpp_csms import CSMS
from components.hil.ocpp_station import ChargingStation

SID = "CS-001"
FAST = {"meter_interval_s": 0.2, "retry_backoff_min_s": 0.1, "retry_backoff_random_s": 0.05,
        "ping_interval_s": 0.3, "response_timeout_s": 3.0}


def csms_cfg(**kw) -> CSMSConfig:
    base = {"port": 0, "stations": {SID: PASSWORD, "CS-002": PASSWORD},
            "response_timeout_s": 3.0, "ping_interval_s": 0.3}
    base.update(kw)
    return CSMSConfig(**base)


def station_cfg(url: str, **kw) -> EVSEStubConfig:
    base = {"station_id": SID, "csms_url": url, "password": PASSWORD, **FAST}
    base.update(kw)
    return EVSEStubConfig(**base)


async def until(predicate, timeout_s: float, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step_s)
    return bool(predicate())


# --------------------------------------------------------------------------- independent peers
class IndependentStation(ChargePoint):
    """A minimal charging station written with the ocpp package only."""

    def __init__(self, sid, connection):
        super().__init__(sid, connection, response_timeout=5)
        self.profiles: list[tuple[int, dict]] = []

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, evse_id, charging_profile, **_):
        self.profiles.append((evse_id, charging_profile))
        return call_result.SetChargingProfile(status="Accepted")


class IndependentCSMSSession(ChargePoint):
    """The server side of a minimal CSMS written with the ocpp package only."""

    def __init__(self, sid, connection):
        super().__init__(sid, connection, response_timeout=5)
        self.events: list[dict] = []
        self.raw: list[str] = []
        self.booted = asyncio.Event()

    async def route_message(self, raw_msg):
        self.raw.append(raw_msg)
        await super().route_message(raw_msg)

    @on(Action.boot_notification)
    def on_boot(self, charging_station, reason, **_):
        self.booted.set()
        return call_result.BootNotification(current_time="2026-06-01T00:00:00Z", interval=60,
                                            status="Accepted")

    @on(Action.status_notification)
    def on_status(self, **_):
        return call_result.StatusNotification()

    @on(Action.heartbeat)
    def on_heartbeat(self, **_):
        return call_result.Heartbeat(current_time="2026-06-01T00:00:00Z")

    @on(Action.transaction_event)
    def on_tx(self, **kw):
        self.events.append(kw)
        return call_result.TransactionEvent()


async def independent_csms(ssl_ctx=None):
    """Start a minimal CSMS; return (server, port, sessions)."""
    sessions: dict[str, IndependentCSMSSession] = {}

    async def handler(ws):
        sid = ws.request.path.rsplit("/", 1)[-1]
        session = IndependentCSMSSession(sid, ws)
        session.auth = ws.request.headers.get("Authorization")
        sessions[sid] = session
        try:
            await session.start()
        except websockets.exceptions.ConnectionClosed:
            return

    server = await websockets.serve(handler, LOOPBACK, 0, subprotocols=["ocpp2.0.1"],
                                    ssl=ssl_ctx)
    port = next(iter(server.sockets)).getsockname()[1]
    return server, port, sessions


async def connect_raw(url, user=SID, password=PASSWORD, **kw):
    headers = basic_auth_header(user, password) if user is not None else {}
    return await websockets.connect(url, subprotocols=["ocpp2.0.1"], additional_headers=headers,
                                    proxy=None, open_timeout=3, **kw)


# --------------------------------------------------------------------------- acceptance
def test_independent_station_boots_against_our_csms_and_receives_a_limit():
    csms = CSMSClient(csms_cfg())
    try:
        async def station_side():
            async with await connect_raw(f"{csms.url}/{SID}") as ws:
                cp = IndependentStation(SID, ws)
                reader = asyncio.create_task(cp.start())
                boot = await cp.call(call.BootNotification(
                    charging_station={"model": "Indep-1", "vendor_name": "ocpp-only"},
                    reason="PowerUp"))
                assert boot.status == "Accepted" and boot.interval == 60
                await asyncio.to_thread(csms.wait_for_station, SID, 5.0)
                result = await asyncio.to_thread(csms.push_charging_limit, SID, 7.4)
                reader.cancel()
                return result, cp.profiles

        result, profiles = run(station_side(), 20)
        assert result == "TxDefaultProfile 200"  # no transaction runs: the default profile
        evse_id, profile = profiles[0]
        assert evse_id == 1 and profile["charging_profile_purpose"] == "TxDefaultProfile"
        sched = profile["charging_schedule"][0]
        assert sched["charging_rate_unit"] == "W"
        assert sched["charging_schedule_period"] == [{"start_period": 0, "limit": 7400.0}]
    finally:
        csms.close()


def test_our_station_works_against_an_independent_csms():
    async def scenario():
        server, port, sessions = await independent_csms()
        station = ChargingStation(station_cfg(f"ws://{LOOPBACK}:{port}/ocpp"))
        try:
            await station.start()
            assert await until(lambda: SID in sessions and sessions[SID].events, 5)
            cp = sessions[SID]
            assert cp.booted.is_set() and cp.auth == basic_auth_header(SID, PASSWORD)[
                "Authorization"]
            started = cp.events[0]
            assert started["event_type"] == "Started" and started["seq_no"] == 0
            tx_id = started["transaction_info"]["transaction_id"]
            profile = {"id": 11, "stack_level": 1, "charging_profile_purpose": "TxProfile",
                       "charging_profile_kind": "Relative", "transaction_id": tx_id,
                       "charging_schedule": [{"id": 1, "charging_rate_unit": "W",
                                              "charging_schedule_period": [
                                                  {"start_period": 0, "limit": 4000.0}]}]}
            resp = await cp.call(call.SetChargingProfile(evse_id=1, charging_profile=profile))
            assert resp.status == "Accepted"
            assert await until(lambda: station.snapshot()["p_w"] == pytest.approx(4000.0), 2)
            comp = await cp.call(call.GetCompositeSchedule(duration=300, evse_id=1,
                                                           charging_rate_unit="W"))
            assert comp.status == "Accepted"
            assert comp.schedule["charging_schedule_period"][0]["limit"] == 4000.0
            clear = await cp.call(call.ClearChargingProfile(charging_profile_id=11))
            assert clear.status == "Accepted"
            comp = await cp.call(call.GetCompositeSchedule(duration=300, evse_id=1,
                                                           charging_rate_unit="A"))
            assert comp.schedule["charging_schedule_period"][0]["limit"] == 32.0  # rating
            assert await until(lambda: station.snapshot()["p_w"] == pytest.approx(11_000.0), 2)
            unknown = await cp.call(call.ClearChargingProfile(charging_profile_id=99))
            assert unknown.status == "Unknown"
            # the meter values the station reports follow its physics
            assert await until(lambda: any(
                e["trigger_reason"] == "MeterValuePeriodic" for e in cp.events), 2)
            energies = [sv["value"] for e in cp.events for mv in e.get("meter_value", [])
                        for sv in mv["sampled_value"]
                        if sv["measurand"] == "Energy.Active.Import.Register"]
            assert energies == sorted(energies) and energies[-1] > 0
        finally:
            await station.stop()
            server.close()
            await server.wait_closed()
        ended = [e for e in cp.events if e["event_type"] == "Ended"]
        assert len(ended) == 1 and ended[0]["seq_no"] == len(cp.events) - 1

    run(scenario(), 30)


# --------------------------------------------------------------------------- bad setpoints
@pytest.mark.parametrize("limit, code", [(math.nan, "InvalidValue"), (math.inf, "InvalidValue"),
                                         (-1000.0, "InvalidValue"),
                                         (30_000.0, "ExceedsRating")])
def test_station_rejects_bad_limits_from_a_csms(limit, code, caplog):
    async def scenario():
        server, port, sessions = await independent_csms()
        station = ChargingStation(station_cfg(f"ws://{LOOPBACK}:{port}/ocpp"))
        try:
            await station.start()
            assert await until(lambda: SID in sessions and sessions[SID].booted.is_set(), 5)
            profile = {"id": 1, "stack_level": 0, "charging_profile_purpose": "TxDefaultProfile",
                       "charging_profile_kind": "Absolute",
                       "charging_schedule": [{"id": 1, "charging_rate_unit": "W",
                                              "start_schedule": "2026-01-01T00:00:00Z",
                                              "charging_schedule_period": [
                                                  {"start_period": 0, "limit": limit}]}]}
            resp = await sessions[SID].call(call.SetChargingProfile(evse_id=1,
                                                                    charging_profile=profile))
            assert station.profiles.profiles == {}
            return resp
        finally:
            await station.stop()
            server.close()
            await server.wait_closed()

    resp = run(scenario(), 20)
    assert resp.status == "Rejected" and resp.status_info["reason_code"] == code
    assert any("refused SetChargingProfile" in r.getMessage() for r in caplog.records)


def test_csms_refuses_bad_limits_before_sending():
    async def scenario():
        async with CSMS(csms_cfg()) as csms, await connect_raw(f"{csms.url}/{SID}") as ws:
            cp = IndependentStation(SID, ws)
            reader = asyncio.create_task(cp.start())
            await cp.call(call.BootNotification(charging_station={
                "model": "m", "vendor_name": "v"}, reason="PowerUp"))
            await csms.wait_for_station(SID, 5)
            csms.record(SID).rating_w = 11_000.0  # as if learned from the device model
            for bad in (math.nan, math.inf, -1.0, 11.5):
                with pytest.raises(ValueError, match=SID):
                    await csms.set_charging_limit(SID, bad)
            reader.cancel()
            return cp.profiles

    assert run(scenario(), 20) == []  # nothing reached the station


# --------------------------------------------------------------------------- security
@pytest.mark.parametrize("user, password", [(SID, "wrong-password-0123"), (None, None),
                                            ("CS-002", PASSWORD)],
                         ids=["wrong-password", "no-credentials", "user-is-not-station"])
def test_csms_refuses_bad_credentials(user, password):
    async def scenario():
        async with CSMS(csms_cfg()) as csms:
            with pytest.raises(InvalidStatus) as exc:
                await connect_raw(f"{csms.url}/{SID}", user=user, password=password)
            assert exc.value.response.status_code == 401
            assert "Basic" in exc.value.response.headers["WWW-Authenticate"]
            assert not csms.record(SID).connected
            return csms.auth_failures

    failures = run(scenario(), 15)
    assert len(failures) == 1 and failures[0].startswith(SID)


def test_station_with_a_wrong_key_keeps_backing_off():
    async def scenario():
        async with CSMS(csms_cfg()) as csms:
            station = ChargingStation(station_cfg(csms.url, password="not-the-key-01234"))
            await station.start()
            try:
                assert await until(lambda: len(station.reconnect_delays) >= 3, 5)
                assert not station.online and "401" in station.last_error
            finally:
                await station.stop()
            return station.reconnect_delays

    delays = run(scenario(), 15)
    for n, d in enumerate(delays[:3]):
        assert 0.1 * 2**n <= d <= 0.1 * 2**n + 0.05


def test_security_profile_2_tls(tmp_path):
    certs = make_certificates(tmp_path)

    async def scenario():
        cfg = csms_cfg(security_profile=2, certfile=certs["cert"], keyfile=certs["key"])
        async with CSMS(cfg) as csms:
            assert csms.url.startswith("wss://")
            station = ChargingStation(station_cfg(csms.url, security_profile=2,
                                                  ca_file=certs["ca"]))
            await station.start()
            try:
                await station.wait_online(5)
                version = station._ws.transport.get_extra_info("ssl_object").version()
            finally:
                await station.stop()
            # a client limited to TLS 1.1 is refused by the CSMS (alert, or reset first)...
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await connect_raw(csms.url + f"/{SID}", ssl=legacy_tls_context(
                    False, ssl.TLSVersion.TLSv1_1))
            return version

    assert run(scenario(), 20) in ("TLSv1.2", "TLSv1.3")

    async def legacy_server_accepts_legacy_client():
        # ...although that same client can speak TLS 1.1 (control)
        server, port, _sessions = await independent_csms(
            legacy_tls_context(True, ssl.TLSVersion.TLSv1_1, certs))
        try:
            async with await connect_raw(f"wss://{LOOPBACK}:{port}/ocpp/{SID}",
                                         ssl=legacy_tls_context(False, ssl.TLSVersion.TLSv1_1)
                                         ) as ws:
                return ws.transport.get_extra_info("ssl_object").version()
        finally:
            server.close()
            await server.wait_closed()

    assert run(legacy_server_accepts_legacy_client(), 15) == "TLSv1.1"


def test_station_refuses_a_csms_below_tls_1_2(tmp_path):
    certs = make_certificates(tmp_path)

    async def scenario():
        server, port, sessions = await independent_csms(
            legacy_tls_context(True, ssl.TLSVersion.TLSv1_1, certs))
        station = ChargingStation(station_cfg(f"wss://{LOOPBACK}:{port}/ocpp",
                                              security_profile=2, ca_file=certs["ca"]))
        try:
            await station.start()
            assert await until(lambda: station.last_error is not None, 5)
            assert not station.online and not sessions
            return station.last_error
        finally:
            await station.stop()
            server.close()
            await server.wait_closed()

    error = run(scenario(), 15)  # refused in the handshake: alert or reset, never HTTP
    assert "SSL" in error or "ConnectionResetError" in error


# --------------------------------------------------------------------------- protocol faults
def test_malformed_frames_and_unknown_actions_get_call_errors(caplog):
    async def scenario():
        async with CSMS(csms_cfg()) as csms, await connect_raw(f"{csms.url}/{SID}") as ws:
            replies = {}
            for name, frame in (
                    ("not_json", "{this is not json"),
                    ("not_array", '{"a": 1}'),
                    ("bad_type", '[7, "m7", "Heartbeat", {}]'),
                    ("unknown_action", '[2, "m1", "FlyToTheMoon", {}]'),
                    ("not_implemented", '[2, "m2", "Reset", {"type": "Immediate"}]'),
                    ("bad_payload", '[2, "m3", "BootNotification", {"reason": 5}]'),
                    ("good", '[2, "m4", "Heartbeat", {}]')):
                await ws.send(frame)
                replies[name] = json.loads(await asyncio.wait_for(ws.recv(), 3))
            return replies

    r = run(scenario(), 15)
    assert r["not_json"][:3] == [4, "-1", "RpcFrameworkError"]
    assert r["not_array"][:3] == [4, "-1", "RpcFrameworkError"]
    assert r["bad_type"][:3] == [4, "m7", "MessageTypeNotSupported"]
    assert r["unknown_action"][:3] == [4, "m1", "NotSupported"]
    assert r["not_implemented"][:3] == [4, "m2", "NotImplemented"]
    assert r["bad_payload"][0] == 4 and r["bad_payload"][1] == "m3"
    assert r["bad_payload"][2] in ("FormatViolation", "TypeConstraintViolation",
                                   "OccurrenceConstraintViolation")
    assert r["good"][0] == 3 and "currentTime" in r["good"][2]
    assert sum("malformed OCPP frame" in rec.getMessage() for rec in caplog.records) == 3


def test_station_answers_malformed_frames_and_unknown_actions():
    async def scenario():
        server, port, sessions = await independent_csms()
        station = ChargingStation(station_cfg(f"ws://{LOOPBACK}:{port}/ocpp"))
        try:
            await station.start()
            assert await until(lambda: SID in sessions and sessions[SID].booted.is_set(), 5)
            cp = sessions[SID]
            await cp._connection.send("]]garbage[[")
            await cp._connection.send('[2, "u1", "OpenThePodBayDoors", {}]')
            assert await until(lambda: sum(1 for m in cp.raw if m.startswith("[4")) >= 2, 3)
            return [json.loads(m) for m in cp.raw if m.startswith("[4")]
        finally:
            await station.stop()
            server.close()
            await server.wait_closed()

    errors = run(scenario(), 15)
    assert [e[:3] for e in errors] == [[4, "-1", "RpcFrameworkError"],
                                       [4, "u1", "NotSupported"]]


def test_station_that_never_answers_times_out_clearly():
    async def scenario():
        async with (CSMS(csms_cfg(response_timeout_s=0.5)) as csms,
                    await connect_raw(f"{csms.url}/{SID}") as ws):
            await ws.send(json.dumps([2, "b1", "BootNotification", {
                "chargingStation": {"model": "mute", "vendorName": "v"},
                "reason": "PowerUp"}]))
            assert json.loads(await ws.recv())[0] == 3  # accepted; from now on: silence
            await csms.wait_for_station(SID, 3)
            t0 = time.monotonic()
            with pytest.raises(DeviceTimeoutError,
                               match=f"station {SID} did not answer SetChargingProfile "
                                     r"within 0.5 s"):
                await csms.set_charging_limit(SID, 5.0, timeout_s=0.5)
            return time.monotonic() - t0

    assert run(scenario(), 15) < 2.0


# --------------------------------------------------------------------------- link loss
def test_link_loss_queues_events_falls_back_and_reconnects_with_backoff():
    async def scenario():
        async with CSMS(csms_cfg()) as csms:
            proxy = LinkProxy(csms.port)
            url = f"ws://{LOOPBACK}:{proxy.port}/ocpp"
            car = {"plug_in_after_s": 0.3}  # plugged in once online
            plain = ChargingStation(station_cfg(url, ev=car))  # falls back to TxDefaultProfile
            capped = ChargingStation(station_cfg(url, station_id="CS-002", ev=car,
                                                 offline_limit_kw=4.0))
            stations = (plain, capped)
            try:
                for st in stations:
                    await st.start()
                for st in stations:
                    await st.wait_online(5)
                    sid = st.cfg.station_id
                    assert await until(
                        lambda sid=sid: csms.record(sid).active_transaction(1) is not None, 5)
                    await csms.set_charging_limit(sid, 6.0, purpose="TxDefaultProfile")
                    assert await csms.set_charging_limit(sid, 9.0) == "TxProfile 300"
                    assert await until(lambda st=st: st.snapshot()["p_w"] == 9000.0, 2)
                seq_at_cut = plain.seq_no
                proxy.cut()  # pull the cable: nothing is closed, traffic just stops
                assert await until(lambda: not plain.online and not capped.online, 5)
                first_offline = plain.seq_no  # events from here on know they are offline
                assert plain.snapshot()["p_w"] == pytest.approx(6000.0)
                assert capped.snapshot()["p_w"] == pytest.approx(4000.0)
                await asyncio.sleep(0.8)  # offline: meter values pile up, reconnects fail
                assert len(plain.tx_queue) >= 3
                last_offline = plain.seq_no
                proxy.restore()
                for st in stations:
                    await st.wait_online(5)
                assert await until(lambda: not plain.tx_queue and not capped.tx_queue, 5)
                assert await until(lambda: plain.snapshot()["p_w"] == 9000.0, 2)
                return (plain.reconnect_delays, csms.record(SID).tx_events,
                        range(first_offline, last_offline), seq_at_cut)
            finally:
                for st in stations:
                    await st.stop()
                proxy.close()

    delays, events, offline_seq, seq_at_cut = run(scenario(), 40)
    assert len(delays) >= 2
    for n, d in enumerate(delays):
        assert 0.1 * 2**n <= d <= 0.1 * 2**n + 0.05  # RetryBackOff doubling plus jitter
    seq = [e["seq_no"] for e in events]
    assert seq == list(range(len(seq)))  # every event once, in order, none lost
    assert len(offline_seq) >= 3
    assert all(events[k]["offline"] for k in offline_seq)  # flagged, delivered after reconnect
    assert not any(e["offline"] for e in events[:seq_at_cut])
