"""SunSpec Modbus stubs over TCP: pysunspec2 scans, the project's client, faults."""

from __future__ import annotations

import logging
import math
import socket
import threading
import time

import pytest
from hil_support import LOOPBACK, LinkProxy, SilentDevice, wait_until
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from components.hil.aio import BackgroundLoop
from components.hil.clients import Backoff, SunSpecClient
from components.hil.config import BatteryStubConfig, PVStubConfig
from components.hil.devices import BatteryStorage, PVInverter
from components.hil.errors import DeviceConnectionError, DeviceRejectedError, DeviceTimeoutError
from components.hil.modbus_stub import SunSpecModbusServer

PV_CFG = PVStubConfig(port=0, kwp=120.0, start="2026-06-01T12:00:00+08:00", horizon_days=0.5,
                      profile_step_s=60, seed=1)
BAT_CFG = BatteryStubConfig(port=0, e_kwh=200.0, p_charge_max_kw=100.0,
                            p_discharge_max_kw=100.0, ctrl_heartbeat_timeout_s=1.5)


@pytest.fixture(scope="module")
def loop():
    with BackgroundLoop("test-modbus") as bg:
        yield bg


class Stub:
    """A device served on a free loopback port for one test."""

    def __init__(self, loop, device):
        self.loop, self.device = loop, device
        self.server = SunSpecModbusServer(device, LOOPBACK, 0)
        self.port = loop.run(self.server.start(), 10)

    def client(self, **kw) -> SunSpecClient:
        return SunSpecClient(LOOPBACK, self.port, timeout_s=kw.pop("timeout_s", 2.0), **kw)

    def stop(self):
        self.loop.run(self.server.stop(), 10)


@pytest.fixture
def pv_stub(loop):
    stub = Stub(loop, PVInverter(PV_CFG))
    yield stub
    stub.stop()


@pytest.fixture
def bat_stub(loop):
    stub = Stub(loop, BatteryStorage(BAT_CFG))
    yield stub
    stub.stop()


def scan(port):
    dev = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr=LOOPBACK, ipport=port, timeout=2)
    try:
        dev.scan()
        return dev
    finally:
        dev.close()


# --------------------------------------------------------------------------- acceptance
def test_pysunspec2_finds_the_pv_models(pv_stub):
    dev = scan(pv_stub.port)
    ids = [k for k in dev.models if isinstance(k, int)]
    assert ids == [1, 701, 702, 704]
    common = dev.models[1][0]
    assert common.Mn.value == "sdg-twin" and common.SN.value == PV_CFG.serial_number
    meas, cap, ctl = dev.models[701][0], dev.models[702][0], dev.models[704][0]
    assert cap.WMaxRtg.cvalue == pytest.approx(PV_CFG.inverter_kw * 1000)
    assert 0 < meas.W.cvalue <= cap.WMaxRtg.cvalue
    assert meas.Hz.cvalue == pytest.approx(50.0) and meas.ACType.value == 2
    assert ctl.WMaxLimPctEna.value == 0 and ctl.WMaxLimPct.cvalue == pytest.approx(100.0)
    # "not implemented" markers decode as None in the SunSpec Alliance's client
    assert ctl.PFWInj.PF.value is None and ctl.WRmp.value is None and meas.TmpCab.value is None


def test_pysunspec2_finds_the_battery_models_and_writes_a_setpoint(bat_stub):
    dev = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr=LOOPBACK, ipport=bat_stub.port,
                                       timeout=2)
    try:
        dev.scan()
        assert [k for k in dev.models if isinstance(k, int)] == [1, 701, 702, 704, 802]
        bat = dev.models[802][0]
        assert bat.SoC.cvalue == pytest.approx(BAT_CFG.soc_init_pct)
        assert bat.WHRtg.cvalue == pytest.approx(BAT_CFG.e_kwh * 1000)
        assert bat.SoCMax.cvalue == pytest.approx(BAT_CFG.soc_max_pct)
        assert bat.Typ.value == 4 and bat.SetOp.value == 1
        ctl = dev.models[704][0]
        ctl.WSetEna.value, ctl.WSetMod.value = 1, 1
        ctl.WSet.cvalue = -40_000
        ctl.write()
        meas = dev.models[701][0]
        assert wait_until(lambda: (meas.read(), meas.W.cvalue)[1] == pytest.approx(-40_000), 3)
        bat.read()
        assert bat.ChaSt.value == 4  # CHARGING
    finally:
        dev.close()


# --------------------------------------------------------------------------- project client
def test_client_reads_measurements_and_limits_power(pv_stub):
    with pv_stub.client() as c:
        assert c.map.model_ids == (1, 701, 702, 704)
        m = c.measurements()
        assert m["p_kw"] < 0  # load convention: generation is negative
        assert m["limit_pct"] is None
        c.set_power_limit_kw(20.0)
        m = c.measurements()
        assert m["p_kw"] == pytest.approx(-20.0, abs=0.01)
        assert m["limit_pct"] == pytest.approx(100 * 20.0 / PV_CFG.inverter_kw, abs=0.05)
        assert m["inverter_state"] == "THROTTLED"
        c.clear_power_limit()
        assert c.measurements()["p_kw"] < -20.0


def test_client_battery_setpoint_heartbeat_and_soc_reserve(bat_stub):
    with bat_stub.client() as c:
        c.set_soc_reserve(10.0, 90.0)
        c.heartbeat()
        c.set_power_kw(30.0)  # charging draws from the grid: positive
        m = c.measurements()
        assert m["p_kw"] == pytest.approx(30.0) and m["charge_status"] == "CHARGING"
        assert (m["soc_min_pct"], m["soc_max_pct"]) == (10.0, 90.0)
        assert c.heartbeat() == 2
        time.sleep(1.9)  # no heartbeat for longer than the 1.5 s watchdog
        m = c.measurements()
        assert m["p_kw"] == 0.0 and m["events"] & 1  # COMMUNICATION_ERROR
        c.heartbeat()
        assert c.measurements()["p_kw"] == pytest.approx(30.0)


# --------------------------------------------------------------------------- faults
def test_write_to_a_read_only_register_answers_exception_2(pv_stub, bat_stub, caplog):
    for stub, model, point in ((pv_stub, 701, "W"), (bat_stub, 802, "SoC")):
        with stub.client() as c:
            with pytest.raises(DeviceRejectedError, match="exception 2") as exc:
                c.write_registers(c.map.address(model, point), [0])
            assert exc.value.code == 2


@pytest.mark.parametrize("raw_case", ["nan_marker", "negative", "over_rating"])
def test_bad_setpoints_on_the_wire_answer_exception_3(pv_stub, raw_case, caplog):
    with pv_stub.client() as c, caplog.at_level(logging.WARNING, "components.hil"):
        addr = c.map.address(704, "WSet")
        sf = c.image.scale_exponent(704, "WSet")
        raw = {"nan_marker": 0x8000_0000,  # int32 "no value": what NaN becomes on the wire
               "negative": (-1000 // 10**sf) & 0xFFFF_FFFF,  # a PV cannot absorb
               "over_rating": int(PV_CFG.inverter_kw * 1000 * 1.2 / 10**sf)}[raw_case]
        with pytest.raises(DeviceRejectedError, match="exception 3") as exc:
            c.write_registers(addr, [raw >> 16, raw & 0xFFFF])
        assert exc.value.code == 3
        assert c.read_point(704, "WSet") == 0.0  # unchanged
    assert any("refused write" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_client_refuses_non_finite_setpoints_before_sending(bat_stub, value):
    with bat_stub.client() as c:
        for command in (lambda: c.set_power_limit_pct(value), lambda: c.set_power_kw(value),
                        lambda: c.set_reactive_power_kvar(value),
                        lambda: c.set_soc_reserve(value, 90.0),
                        lambda: c.write_points(704, {"WSet": value})):
            with pytest.raises(ValueError, match="finite"):
                command()
        assert c.read_point(704, "WSetEna") == 0 and c.read_point(704, "WMaxLimPctEna") == 0


def test_client_refuses_negative_and_over_rating_setpoints(bat_stub):
    with bat_stub.client() as c:
        for command, match in (
                (lambda: c.set_power_limit_pct(-5.0), r"\[0, 100\]"),
                (lambda: c.set_power_limit_kw(150.0), "device rating"),
                (lambda: c.set_power_kw(-150.0), "device ratings"),
                (lambda: c.set_power_kw(101.0), "device ratings"),
                (lambda: c.set_reactive_power_kvar(500.0), "device rating"),
                (lambda: c.set_soc_reserve(2.0, 90.0), "nameplate"),
                (lambda: c.set_soc_reserve(60.0, 40.0), "nameplate")):
            with pytest.raises(ValueError, match=match):
                command()
        assert c.read_point(704, "WSetEna") == 0
        assert c.read_point(802, "SoCRsvMin") == BAT_CFG.soc_min_pct


def test_device_that_never_answers_times_out_clearly():
    silent = SilentDevice()
    try:
        c = SunSpecClient(LOOPBACK, silent.port, timeout_s=0.5)
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeoutError, match=r"did not answer read 40000\+2 within 0.5 s"):
            c.connect()
        assert time.monotonic() - t0 < 2.0
        c.close()
    finally:
        silent.close()


def test_unreachable_device_gives_up_after_the_backoff_deadline():
    with socket.create_server((LOOPBACK, 0)) as s:
        port = s.getsockname()[1]  # free, and nothing listens once closed
    c = SunSpecClient(LOOPBACK, port, timeout_s=0.3,
                      backoff=Backoff(first_s=0.05, max_s=0.2, deadline_s=0.5))
    t0 = time.monotonic()
    with pytest.raises(DeviceConnectionError, match="unreachable"):
        c.connect()
    assert 0.3 < time.monotonic() - t0 < 3.0


def test_link_loss_reverts_the_limit_and_the_client_reconnects(pv_stub):
    proxy = LinkProxy(pv_stub.port)
    try:
        c = SunSpecClient(LOOPBACK, proxy.port, timeout_s=0.5,
                          backoff=Backoff(first_s=0.1, max_s=0.4, deadline_s=5.0))
        c.connect()
        c.set_power_limit_kw(15.0, revert_after_s=2.0, revert_kw=PV_CFG.inverter_kw)
        assert c.measurements()["p_kw"] == pytest.approx(-15.0, abs=0.01)
        proxy.cut()
        with pytest.raises(DeviceTimeoutError):  # black hole: the request is lost
            c.measurements()
        with pv_stub.client() as direct:  # the device, seen from the site
            assert wait_until(lambda: direct.measurements()["p_kw"] < -15.5, 4.0)
            assert direct.measurements()["revert_in_s"]["WMaxLimPct"] == 0
        threading.Timer(0.4, proxy.restore).start()
        t0 = time.monotonic()
        m = c.measurements()  # reconnects with back-off once the link is back
        assert time.monotonic() - t0 >= 0.3
        assert m["p_kw"] < -15.5
    finally:
        proxy.close()
