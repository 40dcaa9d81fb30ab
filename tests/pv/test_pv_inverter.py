"""Volt-var and volt-watt: the IEEE 1547-2018 curves, the response, and the fleet's limits."""

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from components.pv.config import PVConfig, VoltVarConfig, VoltWattConfig
from components.pv.inverter import InverterControl, curve, first_order_step
from components.pv.model import PVFleet

VV, VW = VoltVarConfig(), VoltWattConfig()


def _control(modes, step_s=900.0, vv=VV, vw=VW):
    return InverterControl(modes, step_s, vv.v_pu, vv.q_pct, vv.response_time_s,
                           vw.v_pu, vw.p_pct, vw.response_time_s)


def test_default_curves_are_ieee_1547_category_b():
    v = np.array([0.90, 0.92, 0.95, 1.00, 1.02, 1.05, 1.08, 1.12])
    q = curve(v, VV.v_pu, np.array(VV.q_pct) / 100)
    np.testing.assert_allclose(q, [0.44, 0.44, 0.22, 0.0, 0.0, -0.22, -0.44, -0.44], atol=1e-12)
    p = curve(np.array([1.0, 1.06, 1.08, 1.10, 1.2]), VW.v_pu, np.array(VW.p_pct) / 100)
    np.testing.assert_allclose(p, [1.0, 1.0, 0.5, 0.0, 0.0], atol=1e-12)
    assert VV.response_time_s == 5.0 and VW.response_time_s == 10.0


def test_first_order_response_reaches_90_percent_in_the_response_time():
    _, end = first_order_step(np.array([0.0]), np.array([1.0]), 5.0, 5.0)
    assert end[0] == pytest.approx(0.9)
    # the step mean is the integral of the exponential approach
    t = np.linspace(0, 20.0, 200_001)
    tau = 5.0 / math.log(10)
    numeric = np.trapezoid(1 - np.exp(-t / tau), t) / 20.0
    mean, _ = first_order_step(np.array([0.0]), np.array([1.0]), 20.0, 5.0)
    assert mean[0] == pytest.approx(numeric, rel=1e-6)
    # a 15-minute step is the steady state to within tau/dt
    mean, _ = first_order_step(np.array([0.0]), np.array([1.0]), 900.0, 5.0)
    assert mean[0] == pytest.approx(1 - tau / 900, rel=1e-9)


def test_curve_settings_are_validated_with_clear_messages():
    with pytest.raises(ValidationError, match="strictly increasing"):
        VoltVarConfig(v_pu=(0.92, 0.98, 0.97, 1.08))
    with pytest.raises(ValidationError, match="must not increase with voltage"):
        VoltVarConfig(q_pct=(-44, 0, 0, 44))
    with pytest.raises(ValidationError, match="0 <= P2 <= P1 <= 100"):
        VoltWattConfig(p_pct=(100, 120))
    with pytest.raises(ValidationError, match="control"):
        PVConfig.model_validate({"plants": [{"name": "a", "bus": 1, "kwp": 10,
                                             "control": "droop"}]})
    cfg = PVConfig.model_validate({"generated": [{"total_kwp": 30, "count": 3, "buses": [1],
                                                  "control": "volt_watt"}]})
    assert cfg.voltage_controlled()
    assert {p.control for p in cfg.all_plants(0)} == {"volt_watt"}
    assert not PVConfig.model_validate({"plants": [{"name": "a", "bus": 1, "kwp": 10}]}
                                       ).voltage_controlled()


class _Plant:
    def __init__(self, name, control):
        self.name, self.kwp, self.tilt_deg, self.azimuth_deg = name, 160.0, 30.0, 180.0
        self.inverter_kw, self.mounting, self.control = 100.0, "ground", control


def _fleet(modes):
    times = pd.date_range("2026-06-21 11:00", periods=4, freq="900s", tz="Asia/Shanghai")
    weather = pd.DataFrame({"ghi": 1000.0, "dni": 900.0, "dhi": 100.0, "temp_air": 15.0,
                            "wind_speed": 3.0}, index=times)
    plants = [_Plant(f"p{i}", m) for i, m in enumerate(modes)]
    return PVFleet(plants, 29.56, 106.55, 260.0, weather, control=_control(modes))


def test_volt_var_has_reactive_priority_within_the_apparent_power_rating():
    fleet = _fleet(["unity", "volt_var", "volt_var"])
    avail = fleet.available_ac_kw[0]
    assert (avail > 95).all()  # near the rating: reactive power must take room from P
    ac, q, curtailed = fleet.dispatch(0, vm_pu=np.array([1.10, 1.10, 1.00]))
    tau = 5.0 / math.log(10)
    q_pu = 0.44 * (1 - tau / 900 * (1 - math.exp(-900 / tau)))  # step mean from 0 at 1 pu
    assert q[0] == 0.0 and ac[0] == avail[0]
    assert q[1] == pytest.approx(q_pu * 100.0)  # absorbs: positive in the load convention
    assert ac[1] == pytest.approx(min(avail[1], math.sqrt(100.0**2 - q[1] ** 2)))
    assert q[2] == 0.0 and ac[2] == avail[2]
    assert (np.hypot(ac, q) <= 100.0 + 1e-9).all()
    np.testing.assert_allclose(curtailed, avail - ac)
    # low voltage: injection (negative q), coordinator requests ignored by volt-var plants
    ac, q, _ = fleet.dispatch(1, q_kvar_set=np.array([10.0, 10.0, 10.0]),
                              vm_pu=np.array([0.9, 0.9, 0.9]))
    assert q[1] < -40.0 and q[2] < -40.0
    assert q[0] == pytest.approx(min(10.0, math.sqrt(100.0**2 - ac[0] ** 2)))


def test_volt_watt_curtails_only_above_v1():
    fleet = _fleet(["volt_watt", "volt_watt", "unity"])
    avail = fleet.available_ac_kw
    ac, q, curtailed = fleet.dispatch(0, vm_pu=np.array([1.059, 1.08, 1.12]))
    assert curtailed[0] == 0.0 and curtailed[2] == 0.0 and not q.any()
    assert ac[1] < avail[0, 1] and ac[1] == pytest.approx(50.0, rel=0.01)
    # back below V1: the cap recovers with the response time; the next step is free
    ac, _, curtailed = fleet.dispatch(1, vm_pu=np.array([1.0, 1.0, 1.0]))
    assert curtailed[1] == pytest.approx(max(0, avail[1, 1] - (1.0 - 0.5 * (10 / math.log(10))
                                         / 900 * (1 - math.exp(-900 * math.log(10) / 10)))
                                         * 100.0), abs=1e-9)
    ac, _, curtailed = fleet.dispatch(2, vm_pu=np.array([1.0, 1.0, 1.0]))
    assert not curtailed.any()


def test_set_points_late_within_the_step_mix_by_the_share_of_the_step():
    fleet = _fleet(["unity"])
    avail = fleet.available_ac_kw[0, 0]
    ac, _, curtailed = fleet.dispatch(0, curtail_kw=np.array([100.0]),
                                      before=(np.array([0.25]), np.array([0.0]), None))
    assert ac[0] == pytest.approx(0.75 * avail)
    assert curtailed[0] == pytest.approx(0.25 * avail)
