"""``hil_main``: stubs from the command line, configuration errors, exit codes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from hil_support import LOOPBACK, PASSWORD, run, wait_until
from pydantic import ValidationError

from components.hil import hil_main
from components.hil.config import (
    BatteryStubConfig,
    CSMSConfig,
    EVSEStubConfig,
    PVStubConfig,
    StubFileConfig,
)
from components.hil.errors import HILError
from components.hil.ocpp_csms import CSMS


def test_bad_arguments_exit_2_naming_the_field(capsys):
    assert hil_main(["stub", "battery", "--port", "70000", "--unit-id", "0"]) == 2
    err = capsys.readouterr().err
    assert "battery.port:" in err and "battery.unit_id:" in err
    assert "Traceback" not in err
    assert hil_main(["stub", "toaster"]) == 2
    assert hil_main(["stub", "pv", "--duration-s", "-1"]) == 2


def test_evse_needs_a_password_from_file_or_environment(capsys, monkeypatch):
    monkeypatch.delenv("SDG_TWIN_OCPP_PASSWORD", raising=False)
    assert hil_main(["stub", "evse"]) == 2
    assert "evse.password: Field required" in capsys.readouterr().err
    monkeypatch.setenv("SDG_TWIN_OCPP_PASSWORD", "short")
    assert hil_main(["stub", "evse"]) == 2
    assert "16 to 40 bytes" in capsys.readouterr().err


def test_config_file_errors_are_reported(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("hil:\n  battery: {soc_min_pct: 50, soc_max_pct: 40}\n")
    assert hil_main(["stub", "battery", "--config", str(bad)]) == 2
    assert "soc_min_pct (50.0) must be below soc_max_pct" in capsys.readouterr().err
    assert hil_main(["stub", "pv", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_port_in_use_exits_1(capsys):
    with socket.create_server((LOOPBACK, 0)) as taken:
        port = taken.getsockname()[1]
        code = hil_main(["stub", "battery", "--port", str(port), "--duration-s", "0.2"])
    assert code == 1
    assert "error: battery:" in capsys.readouterr().err


def test_listeners_default_to_loopback():
    for cfg in (PVStubConfig(), BatteryStubConfig(),
                CSMSConfig(stations={"CS-1": PASSWORD})):
        assert cfg.host == "127.0.0.1"
    assert EVSEStubConfig(password=PASSWORD).csms_url.startswith("ws://127.0.0.1:")


@pytest.mark.parametrize("data, message", [
    ({"evse": {"password": PASSWORD, "station_id": "a/b"}}, "no '/' or ':'"),
    ({"evse": {"password": PASSWORD, "security_profile": 2}}, "needs a wss:// csms_url"),
    ({"csms": {"stations": {"CS-1": PASSWORD}, "security_profile": 2}}, "certfile and keyfile"),
    ({"csms": {"stations": {"CS-1": "x" * 41}}}, "16 to 40 bytes"),
    ({"pv": {"start": "2026-06-01T10:00:00"}}, "UTC offset"),
    ({"battery": {"s_max_kva": 50, "p_charge_max_kw": 100}}, "s_max_kva"),
    ({"pv": {"colour": "blue"}}, "Extra inputs are not permitted"),
])
def test_hil_section_validation(data, message):
    with pytest.raises(ValidationError, match=message):
        StubFileConfig.model_validate(data)


def test_evse_stub_from_the_command_line_reaches_the_csms(tmp_path, monkeypatch):
    monkeypatch.setenv("SDG_TWIN_OCPP_PASSWORD", PASSWORD)
    scenario = tmp_path / "zone.yaml"
    scenario.write_text("hil:\n  evse:\n    station_id: CS-CLI\n    meter_interval_s: 0.2\n")

    async def scenario_run():
        async with CSMS(CSMSConfig(port=0, stations={"CS-CLI": PASSWORD})) as csms:
            result = {}
            thread = threading.Thread(target=lambda: result.setdefault("code", hil_main([
                "stub", "evse", "--config", str(scenario), "--port", str(csms.port),
                "--duration-s", "1.5", "--log-level", "WARNING"])))
            thread.start()
            await csms.wait_for_station("CS-CLI", 10)
            deadline = time.monotonic() + 5
            while "p_w" not in csms.meter_values("CS-CLI") and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            meter = csms.meter_values("CS-CLI")
            await asyncio.to_thread(thread.join, 10)
            return result.get("code"), meter, csms.record("CS-CLI").tx_events

    code, meter, events = run(scenario_run(), 30)
    assert code == 0
    assert meter["p_w"] == pytest.approx(11_000.0)  # the car's on-board charger limit
    assert events[0]["event_type"] == "Started" and events[-1]["event_type"] == "Ended"


def test_pv_stub_from_the_command_line_serves_sunspec(tmp_path):
    with socket.create_server((LOOPBACK, 0)) as probe:
        port = probe.getsockname()[1]
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", hil_main([
        "stub", "pv", "--port", str(port), "--duration-s", "2", "--log-level", "WARNING"])))
    thread.start()
    from components.hil.clients import SunSpecClient

    client = SunSpecClient(LOOPBACK, port, timeout_s=1.0)
    assert wait_until(lambda: _connects(client), 10)
    assert client.map.model_ids == (1, 701, 702, 704)
    client.close()
    thread.join(10)
    assert result["code"] == 0


def _connects(client) -> bool:
    try:
        client.connect()
        return True
    except HILError:  # not listening yet
        return False
