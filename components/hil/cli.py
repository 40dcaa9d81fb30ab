"""Command line of the hardware-in-the-loop stubs: ``hil_main(argv) -> int``.

::

    stub pv|battery [--host H] [--port P] [--unit-id N] [--config FILE] [--duration-s S]
    stub evse [--host H] [--port P] [--station-id ID] [--config FILE] [--duration-s S]
    csms [--host H] [--port P] [--config FILE] [--duration-s S]

``--config`` names a YAML file holding either the stub's section itself or a mapping with a
``hil:`` key (a scenario), whose ``pv``/``battery``/``evse``/``csms`` entry is used. Command-line
options override the file. For ``evse``, ``--host``/``--port`` give the CSMS to connect to. OCPP
passwords are never taken from the command line (process lists are readable by every user): they
come from the config file or the environment (``SDG_TWIN_OCPP_PASSWORD`` for a station,
``SDG_TWIN_OCPP_STATIONS`` = ``id=password,id=password`` for the CSMS).

Exit codes: 0 success (interrupted or ``--duration-s`` elapsed), 2 bad input (one line per
problem naming the field), 1 a failure while running (e.g. the port is taken).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import ValidationError

from components.hil.config import BatteryStubConfig, CSMSConfig, EVSEStubConfig, PVStubConfig

log = logging.getLogger("components.hil")

PASSWORD_ENV = "SDG_TWIN_OCPP_PASSWORD"
STATIONS_ENV = "SDG_TWIN_OCPP_STATIONS"
_CONFIGS = {"pv": PVStubConfig, "battery": BatteryStubConfig, "evse": EVSEStubConfig,
            "csms": CSMSConfig}


class BadInput(Exception):
    """Invalid arguments or configuration; ``problems`` has one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twin hil", description="Hardware-in-the-loop device stubs "
                                "(SunSpec Modbus PV inverter and battery, OCPP 2.0.1 charging "
                                "station) and the CSMS.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stub", help="run one device stub")
    s.add_argument("kind", choices=["pv", "battery", "evse"])
    c = sub.add_parser("csms", help="run the CSMS (OCPP 2.0.1 server)")
    for q in (s, c):
        q.add_argument("--host", help="listen address (default 127.0.0.1); for evse: CSMS host")
        q.add_argument("--port", type=int, help="TCP port (0 = any free one); for evse: CSMS "
                       "port")
        q.add_argument("--config", type=Path, help="YAML with the section (or a scenario with "
                       "a 'hil:' section)")
        q.add_argument("--duration-s", type=float, default=None,
                       help="stop after this many seconds (default: run until interrupted)")
        q.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.add_argument("--unit-id", type=int, help="Modbus unit id (pv, battery)")
    s.add_argument("--station-id", help="OCPP station id (evse)")
    return p


def _section(path: Path | None, kind: str) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput([f"--config: cannot read {path}: {exc.strerror}"]) from None
    except yaml.YAMLError as exc:
        raise BadInput([f"--config: {path} is not valid YAML: {exc}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInput([f"--config: {path} must hold a mapping"])
    if "hil" in data:
        hil = data["hil"] or {}
        if not isinstance(hil, dict) or not isinstance(hil.get(kind) or {}, dict):
            raise BadInput([f"--config: hil.{kind} in {path} must be a mapping"])
        return dict(hil.get(kind) or {})
    return dict(data)


def _stations_from_env() -> dict[str, str]:
    out = {}
    for item in filter(None, (s.strip() for s in os.environ.get(STATIONS_ENV, "").split(","))):
        sid, sep, pw = item.partition("=")
        if not sep:
            raise BadInput([f"{STATIONS_ENV}: entry {sid!r} must be id=password"])
        out[sid.strip()] = pw
    return out


def build_config(args: argparse.Namespace) -> Any:
    """The validated config of the requested stub from file, environment and options."""
    kind = "csms" if args.command == "csms" else args.kind
    data = _section(args.config, kind)
    if kind == "evse":
        if args.station_id:
            data["station_id"] = args.station_id
        if "password" not in data and os.environ.get(PASSWORD_ENV):
            data["password"] = os.environ[PASSWORD_ENV]
        if args.host or args.port is not None:
            parts = urlsplit(data.get("csms_url", EVSEStubConfig.model_fields["csms_url"].default))
            host = args.host or parts.hostname
            port = args.port if args.port is not None else parts.port
            data["csms_url"] = urlunsplit(parts._replace(netloc=f"{host}:{port}"))
    else:
        if args.host:
            data["host"] = args.host
        if args.port is not None:
            data["port"] = args.port
        if kind == "csms" and "stations" not in data:
            data["stations"] = _stations_from_env()
        if getattr(args, "unit_id", None) is not None:
            data["unit_id"] = args.unit_id
    try:
        return _CONFIGS[kind].model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"]) or kind
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing" and where == "password":
                msg += f" (give it in --config or the {PASSWORD_ENV} environment variable)"
            if err["type"] in ("missing", "too_short") and where == "stations":
                msg += f" (give them in --config or {STATIONS_ENV}=id=password,...)"
            problems.append(f"{kind}.{where}: {msg}")
        raise BadInput(problems) from None


async def _serve(kind: str, cfg: Any, duration_s: float | None,
                 on_ready: Callable[[str], None]) -> None:
    if kind in ("pv", "battery"):
        from components.hil.devices import make_device
        from components.hil.modbus_stub import SunSpecModbusServer

        server = SunSpecModbusServer(make_device(kind, cfg), cfg.host, cfg.port)
        port = await server.start()
        stop = server.stop
        on_ready(f"{kind} stub: SunSpec Modbus TCP on {cfg.host}:{port}, unit {cfg.unit_id}, "
                 f"models {list(server.device.map.model_ids)} at {cfg.base_addr}")
    elif kind == "csms":
        from components.hil.ocpp_csms import CSMS

        csms = CSMS(cfg)
        await csms.start()
        stop = csms.stop
        on_ready(f"CSMS: OCPP 2.0.1 on {csms.url}/<station id>, stations "
                 f"{sorted(cfg.stations)}")
    else:
        from components.hil.ocpp_station import ChargingStation

        station = ChargingStation(cfg)
        await station.start()
        stop = station.stop
        on_ready(f"evse stub: OCPP 2.0.1 station {cfg.station_id} connecting to "
                 f"{station.url}")
    try:
        if duration_s is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration_s)
    finally:
        await stop()


def hil_main(argv: list[str] | None = None) -> int:
    """Run ``stub pv|battery|evse`` or ``csms``; return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed the problem
        return 0 if exc.code == 0 else 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    kind = "csms" if args.command == "csms" else args.kind
    try:
        if args.duration_s is not None and not args.duration_s > 0:
            raise BadInput([f"--duration-s must be > 0, got {args.duration_s}"])
        cfg = build_config(args)
        asyncio.run(_serve(kind, cfg, args.duration_s, lambda msg: print(msg, flush=True)))
    except BadInput as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"error: {kind}: {exc}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    """Entry point of ``python -m components.hil``."""
    sys.exit(hil_main(sys.argv[1:]))
