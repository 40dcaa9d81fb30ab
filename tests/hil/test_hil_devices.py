"""Device physics and SunSpec control semantics, without networking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from components.hil.config import BatteryStubConfig, PVStubConfig
from components.hil.devices import (
    ILLEGAL_ADDRESS,
    ILLEGAL_VALUE,
    BatteryStorage,
    PVInverter,
    PVProfile,
    WriteRefused,
)

NOON_S = 12 * 3600.0  # the PV profile starts at local midnight


@pytest.fixture(scope="module")
def pv_cfg() -> PVStubConfig:
    return PVStubConfig(port=0, kwp=120.0, start="2026-06-01T00:00:00+08:00", horizon_days=1,
                        profile_step_s=60, seed=3)


@pytest.fixture(scope="module")
def profile(pv_cfg) -> PVProfile:
    return PVProfile(pv_cfg)


def put(dev, t_s, model, **values):
    """Write points one by one, in engineering units, as a client would."""
    for name, value in values.items():
        img = dev.image.copy()
        img.set(model, name, value)
        a = dev.map.address(model, name)
        n = dev.map.point(model, name).size
        dev.write(a, img.registers[a - dev.map.base:a - dev.map.base + n], t_s)


def put_raw(dev, t_s, model, name, raw):
    img = dev.image.copy()
    img.set_raw(model, name, raw)
    a = dev.map.address(model, name)
    n = dev.map.point(model, name).size
    dev.write(a, img.registers[a - dev.map.base:a - dev.map.base + n], t_s)


# --------------------------------------------------------------------------- PV
def test_pv_profile_is_night_at_midnight_and_bounded_by_the_inverter(pv_cfg, profile):
    assert profile.available(0.0) == 0.0
    noon = profile.available(NOON_S)
    assert 0.3 * pv_cfg.inverter_kw * 1000 < noon <= pv_cfg.inverter_kw * 1000 + 1e-6
    day = np.array([profile.available(t) for t in np.arange(0, 86400, 600.0)])
    assert day.min() >= 0.0 and day.max() <= pv_cfg.inverter_kw * 1000 + 1e-6
    assert profile.available(NOON_S + 86400) == pytest.approx(noon)  # repeats after the horizon


def test_pv_follows_the_sun_and_counts_its_energy(pv_cfg, profile):
    pv = PVInverter(pv_cfg, profile)
    t0, t1 = NOON_S - 1800, NOON_S + 1800
    pv.advance(t0)
    e0 = pv.e_inj_wh
    pv.advance(t1)
    ts = np.arange(t0, t1 + 0.1, 5.0)
    reference_wh = np.trapezoid([profile.available(t) for t in ts], ts) / 3600.0
    assert pv.e_inj_wh - e0 == pytest.approx(reference_wh, rel=1e-3)
    # the register holds the last sub-step's mean (midpoint t1 - 0.5 s) in steps of 10 W
    assert pv.image.get(701, "W") == pytest.approx(profile.available(t1 - 0.5), abs=5.0)
    assert pv.image.get(701, "TotWhInj") == math.floor(pv.e_inj_wh)
    assert pv.image.get_int(701, "InvSt") == 3  # RUNNING


def test_pv_power_limit_caps_output_and_reverts_when_not_renewed(pv_cfg, profile):
    pv = PVInverter(pv_cfg, profile)
    w_max = pv_cfg.inverter_kw * 1000
    pv.advance(NOON_S)
    put(pv, NOON_S, 704, WMaxLimPctRvrt=100.0, WMaxLimPctEnaRvrt=1, WMaxLimPctRvrtTms=30)
    put(pv, NOON_S, 704, WMaxLimPctEna=1, WMaxLimPct=25.0)
    pv.advance(NOON_S + 10)
    assert pv.p_w == pytest.approx(0.25 * w_max)
    assert pv.image.get_int(701, "InvSt") == 4  # THROTTLED
    assert pv.image.get(704, "WMaxLimPctRvrtRem") == 20
    put(pv, NOON_S + 20, 704, WMaxLimPct=25.0)  # the controller renews its command
    pv.advance(NOON_S + 49.9)
    assert pv.p_w == pytest.approx(0.25 * w_max)  # 30 s after the renewal, not the first write
    pv.advance(NOON_S + 50.1)
    assert pv.image.get(704, "WMaxLimPct") == pytest.approx(100.0)
    assert pv.p_w == pytest.approx(profile.available(NOON_S + 50.05), rel=1e-3)
    assert pv.image.get(704, "WMaxLimPctRvrtRem") == 0


def test_pv_setpoint_is_a_ceiling_and_reactive_power_shares_the_rating(pv_cfg, profile):
    pv = PVInverter(pv_cfg, profile)
    s_max = pv_cfg.inverter_kw * 1000
    pv.advance(NOON_S)
    avail = profile.available(NOON_S + 0.5)
    put(pv, NOON_S, 704, WSetEna=1, WSetMod=1, WSet=min(s_max, 2 * avail))
    pv.advance(NOON_S + 1)
    assert pv.p_w == pytest.approx(avail, rel=1e-3)  # cannot make more than the sun gives
    put(pv, NOON_S + 1, 704, WSet=0.4 * avail)
    pv.advance(NOON_S + 2)
    assert pv.p_w == pytest.approx(0.4 * avail, abs=5.0)  # WSet_SF = 1: 10 W steps
    # active-power priority: Q limited to what the rating leaves
    put(pv, NOON_S + 2, 704, VarSetEna=1, VarSetMod=4, VarSetPri=0, VarSet=-s_max)
    pv.advance(NOON_S + 3)
    assert pv.q_var == pytest.approx(-math.sqrt(s_max**2 - pv.p_w**2), rel=1e-6)
    # reactive priority: P gives way
    put(pv, NOON_S + 3, 704, WSet=s_max, VarSetPri=1, VarSet=0.9 * s_max)
    pv.advance(NOON_S + 4)
    assert pv.q_var == pytest.approx(0.9 * s_max)
    assert math.hypot(pv.p_w, pv.q_var) <= s_max * (1 + 1e-9)


@pytest.mark.parametrize("name, value", [("WMaxLimPct", 100.1), ("WSet", -100.0),
                                         ("WSetPct", -5.0), ("VarSetPct", 101.0)])
def test_pv_refuses_setpoints_out_of_range(pv_cfg, profile, name, value):
    pv = PVInverter(pv_cfg, profile)
    before = list(pv.image.registers)
    with pytest.raises(WriteRefused) as exc:
        put(pv, 0.0, 704, **{name: value})
    assert exc.value.code == ILLEGAL_VALUE
    assert pv.image.registers == before


def test_pv_refuses_above_rating_and_not_implemented_patterns(pv_cfg, profile):
    pv = PVInverter(pv_cfg, profile)
    with pytest.raises(WriteRefused, match="outside"):
        put(pv, 0.0, 704, WSet=pv_cfg.inverter_kw * 1000 * 1.05)
    with pytest.raises(WriteRefused, match="not implemented") as exc:
        put_raw(pv, 0.0, 704, "WSet", 0x8000_0000)  # int32 "no value"
    assert exc.value.code == ILLEGAL_VALUE
    with pytest.raises(WriteRefused, match="not one of"):
        put_raw(pv, 0.0, 704, "WSetMod", 7)


def test_pv_refuses_read_only_and_split_writes(pv_cfg, profile):
    pv = PVInverter(pv_cfg, profile)
    with pytest.raises(WriteRefused) as exc:
        pv.write(pv.map.address(701, "W"), [0], 0.0)
    assert exc.value.code == ILLEGAL_ADDRESS
    with pytest.raises(WriteRefused, match="splits") as exc:
        pv.write(pv.map.address(704, "WSet") + 1, [5], 0.0)
    assert exc.value.code == ILLEGAL_ADDRESS
    with pytest.raises(WriteRefused) as exc:  # implemented as "not implemented": read-only
        pv.write(pv.map.address(704, "PFWInj.PF"), [900], 0.0)
    assert exc.value.code == ILLEGAL_ADDRESS


# --------------------------------------------------------------------------- battery
def battery(**kw) -> BatteryStorage:
    base = {"port": 0, "e_kwh": 200.0, "p_charge_max_kw": 100.0, "p_discharge_max_kw": 100.0,
            "eta_charge": 0.95, "eta_discharge": 0.96, "soc_init_pct": 50.0,
            "self_discharge_pct_per_day": 0.0, "ctrl_heartbeat_timeout_s": 0.0}
    base.update(kw)
    return BatteryStorage(BatteryStubConfig(**base))


def test_battery_energy_balance_charge_and_discharge():
    bat = battery(self_discharge_pct_per_day=1.0)
    e0 = bat.e_wh
    put(bat, 0.0, 704, WSetEna=1, WSetMod=1, WSet=-50_000.0)  # charge 50 kW
    bat.advance(1800.0)
    sd_wh = 0.01 * 200_000 * 1800 / 86400
    assert bat.e_wh == pytest.approx(e0 + 0.95 * 50_000 * 0.5 - sd_wh, rel=1e-9)
    assert bat.e_abs_wh == pytest.approx(25_000.0, rel=1e-9)
    assert bat.image.get(802, "W") == pytest.approx(-0.95 * 50_000, rel=1e-3)  # DC, charging
    e1 = bat.e_wh
    put(bat, 1800.0, 704, WSet=40_000.0)  # discharge 40 kW
    bat.advance(3600.0)
    assert bat.e_wh == pytest.approx(e1 - 40_000 * 0.5 / 0.96 - sd_wh, rel=1e-9)
    assert bat.e_inj_wh == pytest.approx(20_000.0, rel=1e-9)
    assert bat.image.get(802, "SoC") == pytest.approx(100 * bat.e_wh / 200_000, abs=0.05)


def test_battery_round_trip_efficiency():
    bat = battery()
    put(bat, 0.0, 704, WSetEna=1, WSetMod=1, WSet=-80_000.0)
    bat.advance(900.0)
    stored = bat.e_wh - 100_000.0
    put(bat, 900.0, 704, WSet=80_000.0)
    t_back = 900.0 + stored * 0.96 / 80_000 * 3600
    bat.advance(t_back)
    assert bat.e_wh == pytest.approx(100_000.0, abs=1e-3)
    assert bat.e_inj_wh / bat.e_abs_wh == pytest.approx(0.95 * 0.96, rel=1e-9)


def test_battery_stops_exactly_at_the_soc_window():
    bat = battery(soc_init_pct=90.0, soc_max_pct=95.0)
    put(bat, 0.0, 704, WSetEna=1, WSetMod=1, WSet=-100_000.0)
    bat.advance(3600.0)
    assert bat.e_wh == pytest.approx(0.95 * 200_000, rel=1e-12)
    assert bat.e_abs_wh == pytest.approx(10_000 / 0.95, rel=1e-9)  # 10 kWh room
    assert bat.p_w == 0.0
    assert bat.image.get_int(802, "State") == 5  # SOC PROTECTION
    evt = bat.image.get_int(802, "Evt1")
    assert evt & (1 << 16)  # OVER_SOC_MAX_WARNING
    # the reserve window narrows it further; discharging stops at SoCRsvMin
    put(bat, 3600.0, 802, SoCRsvMin=80.0)
    put(bat, 3600.0, 704, WSet=100_000.0)
    bat.advance(3 * 3600.0)
    assert bat.e_wh == pytest.approx(0.80 * 200_000, rel=1e-12)
    assert bat.image.get(802, "SoC") == pytest.approx(80.0)


@pytest.mark.parametrize("values", [{"SocRsvMax": 97.0}, {"SoCRsvMin": 2.0},
                                    {"SoCRsvMin": 60.0, "SocRsvMax": 55.0}])
def test_battery_refuses_soc_reserves_outside_limits(values):
    bat = battery()
    with pytest.raises(WriteRefused) as exc:
        put(bat, 0.0, 802, **values)
    assert exc.value.code == ILLEGAL_VALUE


def test_battery_refuses_power_above_its_ratings():
    bat = battery(p_charge_max_kw=60.0, p_discharge_max_kw=80.0)
    with pytest.raises(WriteRefused, match="outside"):
        put(bat, 0.0, 704, WSet=-61_000.0)
    with pytest.raises(WriteRefused, match="outside"):
        put(bat, 0.0, 704, WSet=81_000.0)
    put(bat, 0.0, 704, WSet=-60_000.0)  # at the rating: accepted


def test_battery_heartbeat_watchdog_holds_power_and_latches_the_alarm():
    bat = battery(ctrl_heartbeat_timeout_s=5.0)
    put(bat, 0.0, 704, WSetEna=1, WSetMod=1, WSet=30_000.0)
    put(bat, 0.0, 802, CtrlHb=1)
    for k in range(1, 4):
        put(bat, 4.0 * k, 802, CtrlHb=1 + k)  # heartbeats every 4 s
    bat.advance(16.9)
    assert bat.p_w == pytest.approx(30_000.0) and not bat.hb_lost
    bat.advance(17.1)  # last heartbeat at 12 s
    assert bat.hb_lost and bat.p_w == 0.0
    assert bat.image.get_int(802, "Evt1") & 1  # COMMUNICATION_ERROR
    put(bat, 18.0, 802, CtrlHb=9)
    bat.advance(19.0)
    assert bat.p_w == pytest.approx(30_000.0)
    assert bat.image.get_int(802, "Evt1") & 1  # latched until reset
    put(bat, 19.0, 802, AlmRst=1)
    assert bat.image.get_int(802, "Evt1") & 1 == 0
    assert bat.image.get_int(802, "AlmRst") == 0
    assert bat.image.get_int(802, "Hb") == 19


def test_battery_disconnect_holds_power():
    bat = battery()
    put(bat, 0.0, 704, WSetEna=1, WSetMod=1, WSet=30_000.0)
    put(bat, 0.0, 802, SetOp=2)
    bat.advance(60.0)
    assert bat.p_w == 0.0 and bat.e_inj_wh == 0.0
    assert bat.image.get_int(802, "ChaSt") == 1 and bat.image.get_int(701, "ConnSt") == 0
