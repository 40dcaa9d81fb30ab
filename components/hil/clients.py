"""Synchronous protocol clients the co-simulation adapters call each step.

* :class:`SunSpecClient`: a SunSpec Modbus TCP client (pymodbus' synchronous client). It finds
  the map (``"SunS"`` at 40000, 0 or 50000), reads measurements and writes 704/802 setpoints,
  with bounded timeouts, reconnection with back-off, and client-side validation of setpoints
  against the ratings the device itself advertises (models 702 and 802).
* :class:`CSMSClient`: the CSMS of :mod:`components.hil.ocpp_csms` run in a background event
  loop, with blocking calls to push a charging limit to a connected station and read its meter
  values.

The same client code serves a stub and the real device. Sign convention at this boundary is the
project's load convention (:mod:`components.base`): ``p_kw`` is positive when drawn from the grid
(battery charging), negative when injected (PV generation, battery discharging).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Self

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from components.hil.config import finite
from components.hil.errors import (
    DeviceConnectionError,
    DeviceRejectedError,
    DeviceTimeoutError,
    HILError,
)
from components.hil.sunspec import (
    END_MODEL_ID,
    SUNS_MARKER,
    SunSpecImage,
    SunSpecMap,
    encode,
)

log = logging.getLogger("components.hil")

_MAX_READ = 125  # registers per read request (Modbus limit)
_MAX_WRITE = 123  # registers per write-multiple request
_EXCEPTIONS = {1: "illegal function", 2: "illegal data address (read-only or no such register)",
               3: "illegal data value (setpoint refused)", 4: "device failure",
               6: "device busy", 11: "gateway target failed to respond"}


@dataclass(frozen=True)
class Backoff:
    """Reconnection delays: ``first_s * 2**n`` capped at ``max_s``, for ``deadline_s`` in all."""

    first_s: float = 0.2
    max_s: float = 5.0
    deadline_s: float = 10.0

    def delays(self):
        """Successive delays until their sum would pass the deadline. [s]"""
        total, d = 0.0, self.first_s
        while total + d <= self.deadline_s:
            yield d
            total += d
            d = min(2 * d, self.max_s)


class SunSpecClient:
    """A SunSpec Modbus TCP client for a DER (PV inverter, battery).

    Parameters
    ----------
    host, port : str, int
        Device address.
    unit_id : int
        Modbus unit id.
    timeout_s : float
        Time to wait for each answer; a request that is not answered in time raises
        :class:`DeviceTimeoutError`. [s]
    backoff : Backoff
        Reconnection schedule when the connection is lost or refused.
    base_addrs : tuple of int
        Where to look for the "SunS" marker, in order.
    """

    def __init__(self, host: str, port: int, unit_id: int = 1, timeout_s: float = 2.0,
                 backoff: Backoff = Backoff(), base_addrs: tuple[int, ...] = (40000, 0, 50000),
                 ) -> None:
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError(f"timeout_s must be a positive number, got {timeout_s}")
        self.host, self.port, self.unit_id = host, int(port), int(unit_id)
        self.timeout_s = float(timeout_s)
        self.backoff = backoff
        self.base_addrs = base_addrs
        self._mb = ModbusTcpClient(host, port=self.port, timeout=self.timeout_s, retries=0,
                                   reconnect_delay=0, reconnect_delay_max=0)
        self.map: SunSpecMap | None = None
        self.image: SunSpecImage | None = None

    # -------------------------------------------------------------- transport
    def _where(self) -> str:
        return f"{self.host}:{self.port} (unit {self.unit_id})"

    def _call(self, what: str, fn, *args, **kwargs):
        """Run one request; reconnect with back-off on a lost link; map errors to HIL errors."""
        delays = self.backoff.delays()
        while True:
            try:
                if not self._mb.connected and not self._mb.connect():
                    raise ConnectionException(f"cannot connect to {self._where()}")
                rr = fn(*args, device_id=self.unit_id, **kwargs)
            except ModbusIOException as exc:
                self._mb.close()  # drop the late answer, if any, with the socket
                raise DeviceTimeoutError(f"{self._where()} did not answer {what} within "
                                         f"{self.timeout_s:g} s") from exc
            except (ConnectionException, OSError) as exc:
                self._mb.close()
                delay = next(delays, None)
                if delay is None:
                    raise DeviceConnectionError(
                        f"{self._where()} unreachable for {what} after reconnecting for "
                        f"{self.backoff.deadline_s:g} s: {exc}") from exc
                log.warning("%s: link lost during %s (%s); reconnecting in %.2f s",
                            self._where(), what, exc, delay)
                time.sleep(delay)
                continue
            except ModbusException as exc:
                raise HILError(f"{self._where()}: {what} failed: {exc}") from exc
            if rr.isError():
                code = int(getattr(rr, "exception_code", 0))
                raise DeviceRejectedError(
                    f"{self._where()} refused {what}: Modbus exception {code} "
                    f"({_EXCEPTIONS.get(code, 'unknown')})", code)
            return rr

    def read_registers(self, address: int, count: int) -> list[int]:
        """Read ``count`` holding registers from ``address`` (split in legal requests)."""
        out: list[int] = []
        while count > 0:
            n = min(count, _MAX_READ)
            rr = self._call(f"read {address}+{n}", self._mb.read_holding_registers, address,
                            count=n)
            out.extend(rr.registers)
            address += n
            count -= n
        return out

    def write_registers(self, address: int, values: list[int]) -> None:
        """Write ``values`` from ``address`` (function code 16)."""
        for k in range(0, len(values), _MAX_WRITE):
            chunk = [int(v) & 0xFFFF for v in values[k:k + _MAX_WRITE]]
            self._call(f"write {address + k}+{len(chunk)}", self._mb.write_registers,
                       address + k, chunk)

    def close(self) -> None:
        """Close the connection."""
        self._mb.close()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- map
    def connect(self) -> list[int]:
        """Find the SunSpec map, read every model; return the model ids found."""
        errors = []
        for base in self.base_addrs:
            try:
                head = self.read_registers(base, 2)
            except DeviceRejectedError as exc:
                errors.append(f"{base}: {exc}")
                continue
            if tuple(head) == SUNS_MARKER:
                break
            errors.append(f"{base}: no 'SunS' marker")
        else:
            raise HILError(f"{self._where()} is not a SunSpec device: " + "; ".join(errors))
        ids: list[int] = []
        addr = base + 2
        while True:
            mid, length = self.read_registers(addr, 2)
            if mid == END_MODEL_ID:
                break
            ids.append(mid)
            addr += 2 + length
        self.map = SunSpecMap(ids, base)
        for mid in ids:
            if self.map.models[mid].length != self.read_registers(self.map.model_addr[mid],
                                                                   2)[1]:
                raise HILError(f"{self._where()}: model {mid} length differs from its "
                               "SunSpec definition")
        self.image = SunSpecImage(self.map, [0] * self.map.size)
        self.refresh()
        return ids

    def _require_map(self) -> tuple[SunSpecMap, SunSpecImage]:
        if self.map is None or self.image is None:
            self.connect()
        return self.map, self.image

    def refresh(self, model_ids: tuple[int, ...] | None = None) -> SunSpecImage:
        """Read the given models (default: all) into :attr:`image`."""
        smap, img = self._require_map()
        for mid in model_ids or smap.model_ids:
            start = smap.model_addr[mid]
            n = 2 + smap.models[mid].length
            regs = self.read_registers(start, n)
            off = start - smap.base
            img.registers[off:off + n] = regs
        return img

    def has_model(self, model_id: int) -> bool:
        """True when the device serves model ``model_id``."""
        smap, _ = self._require_map()
        return model_id in smap.models

    def read_point(self, model_id: int, name: str) -> float | int | str | None:
        """Read one point now; engineering units, None when not implemented."""
        smap, img = self._require_map()
        p = smap.point(model_id, name)
        a = smap.address(model_id, name)
        regs = self.read_registers(a, p.size)
        off = a - smap.base
        img.registers[off:off + p.size] = regs
        return img.get(model_id, name)

    def write_points(self, model_id: int, values: dict[str, float | int]) -> None:
        """Encode and write points of one model, in address order, contiguous runs together.

        Values are in engineering units; each must be finite and fit its point (scale factors
        are read from the device). Raises ``ValueError`` before anything is sent otherwise.
        """
        smap, img = self._require_map()
        encoded: list[tuple[int, list[int]]] = []
        for name, value in values.items():
            p = smap.point(model_id, name)
            if not p.writable:
                raise ValueError(f"{model_id}.{name} is read-only in SunSpec model {model_id}")
            v = finite(f"{model_id}.{name}", value)
            raw = encode(p, v, img.scale_exponent(model_id, name))
            words = [(raw >> (16 * (p.size - 1 - k))) & 0xFFFF for k in range(p.size)]
            encoded.append((smap.address(model_id, name), words))
        encoded.sort()
        run_start, run = None, []
        for addr, words in encoded:
            if run_start is not None and addr == run_start + len(run):
                run.extend(words)
                continue
            if run:
                self.write_registers(run_start, run)
            run_start, run = addr, list(words)
        if run:
            self.write_registers(run_start, run)
        for addr, words in encoded:
            off = addr - smap.base
            img.registers[off:off + len(words)] = words

    # -------------------------------------------------------------- ratings
    def _rating(self, model_id: int, name: str) -> float:
        _, img = self._require_map()
        v = img.get(model_id, name)
        if v is None:
            raise HILError(f"{self._where()} does not publish {model_id}.{name}")
        return float(v)

    @property
    def w_max_kw(self) -> float:
        """Active power rating, injection (702 ``WMax``). [kW]"""
        return self._rating(702, "WMax") / 1000.0

    @property
    def w_charge_max_kw(self) -> float:
        """Active power rating, absorption (702 ``WChaRteMax``; 0 for generators). [kW]"""
        _, img = self._require_map()
        v = img.get(702, "WChaRteMax")
        return 0.0 if v is None else float(v) / 1000.0

    @property
    def var_max_kvar(self) -> float:
        """Reactive power rating (702 ``VarMaxInj``). [kvar]"""
        return self._rating(702, "VarMaxInj") / 1000.0

    # -------------------------------------------------------------- measurements
    def measurements(self) -> dict[str, Any]:
        """Read and return the operating point.

        Returns
        -------
        dict
            ``p_kw``, ``q_kvar`` (load convention), ``e_injected_kwh``, ``e_absorbed_kwh``,
            ``inverter_state`` (701 ``InvSt`` name), ``limit_pct`` (704 ``WMaxLimPct`` when
            enabled, else None), ``revert_in_s`` (per control function), and for batteries
            ``soc_pct``, ``soc_min_pct``, ``soc_max_pct``, ``charge_status``, ``heartbeat``,
            ``events``.
        """
        smap, _ = self._require_map()
        img = self.refresh(tuple(m for m in (701, 704, 802) if m in smap.models))
        w = img.get(701, "W")
        var = img.get(701, "Var")
        inv_st = img.get_int(701, "InvSt")
        names = {v: k for k, v in smap.point(701, "InvSt").symbols.items()}
        out: dict[str, Any] = {
            "p_kw": None if w is None else -float(w) / 1000.0 + 0.0,  # + 0.0: no "-0.0"
            "q_kvar": None if var is None else -float(var) / 1000.0 + 0.0,
            "e_injected_kwh": float(img.get(701, "TotWhInj") or 0) / 1000.0,
            "e_absorbed_kwh": float(img.get(701, "TotWhAbs") or 0) / 1000.0,
            "inverter_state": names.get(inv_st),
            "limit_pct": (float(img.get(704, "WMaxLimPct"))
                          if img.get_int(704, "WMaxLimPctEna") == 1 else None),
            "revert_in_s": {k: img.get(704, f"{k}RvrtRem")
                            for k in ("WMaxLimPct", "WSet", "VarSet")},
        }
        if 802 in smap.models:
            cha = {v: k for k, v in smap.point(802, "ChaSt").symbols.items()}
            lows = [v for v in (img.get(802, "SoCMin"), img.get(802, "SoCRsvMin")) if v is not None]
            highs = [v for v in (img.get(802, "SoCMax"), img.get(802, "SocRsvMax")) if v is not None]
            out.update({
                "soc_pct": img.get(802, "SoC"),
                "soc_min_pct": max(lows, default=0.0),
                "soc_max_pct": min(highs, default=100.0),
                "charge_status": cha.get(img.get_int(802, "ChaSt")),
                "heartbeat": img.get_int(802, "Hb"),
                "events": img.get_int(802, "Evt1"),
            })
        return out

    # -------------------------------------------------------------- setpoints
    @staticmethod
    def _timer(revert_after_s: float | None) -> int:
        if revert_after_s is None:
            return 0
        t = finite("revert_after_s", revert_after_s)
        if t < 0:
            raise ValueError(f"revert_after_s must be >= 0, got {t}")
        return math.ceil(t)

    def set_power_limit_pct(self, pct: float, revert_after_s: float | None = None,
                            revert_pct: float = 100.0) -> None:
        """Limit injected active power to ``pct`` % of ``WMax`` (704 ``WMaxLimPct``).

        With ``revert_after_s`` the device falls back to ``revert_pct`` unless the limit is
        written again within that time (keep-alive across a link loss).
        """
        pct = finite("pct", pct)
        revert_pct = finite("revert_pct", revert_pct)
        for name, v in (("pct", pct), ("revert_pct", revert_pct)):
            if not 0.0 <= v <= 100.0:
                raise ValueError(f"{name} must lie in [0, 100] %, got {v}")
        tms = self._timer(revert_after_s)
        self.write_points(704, {"WMaxLimPctRvrt": revert_pct, "WMaxLimPctEnaRvrt": int(tms > 0),
                                "WMaxLimPctRvrtTms": tms})
        self.write_points(704, {"WMaxLimPctEna": 1, "WMaxLimPct": pct})

    def set_power_limit_kw(self, limit_kw: float, revert_after_s: float | None = None,
                           revert_kw: float | None = None) -> None:
        """Limit injected active power to ``limit_kw`` (0 <= limit <= ``WMax``). [kW]"""
        limit_kw = finite("limit_kw", limit_kw)
        w_max = self.w_max_kw
        if not 0.0 <= limit_kw <= w_max:
            raise ValueError(f"limit_kw must lie in [0, {w_max:g}] kW (the device rating), got "
                             f"{limit_kw:g}")
        revert = w_max if revert_kw is None else finite("revert_kw", revert_kw)
        if not 0.0 <= revert <= w_max:
            raise ValueError(f"revert_kw must lie in [0, {w_max:g}] kW, got {revert:g}")
        self.set_power_limit_pct(100.0 * limit_kw / w_max, revert_after_s,
                                 100.0 * revert / w_max)

    def clear_power_limit(self) -> None:
        """Disable the active power limit."""
        self.write_points(704, {"WMaxLimPctEna": 0})

    def set_power_kw(self, p_kw: float, revert_after_s: float | None = None,
                     revert_kw: float = 0.0) -> None:
        """Command active power ``p_kw``, load convention (704 ``WSet``, watts mode).

        Positive ``p_kw`` draws from the grid (battery charging), negative injects. A generator
        accepts only ``-WMax <= p_kw <= 0`` (a ceiling on its output); a battery
        ``-WMax <= p_kw <= WChaRteMax``. With ``revert_after_s`` the device falls back to
        ``revert_kw`` unless commanded again in time.
        """
        p_kw = finite("p_kw", p_kw)
        revert_kw = finite("revert_kw", revert_kw)
        lo, hi = -self.w_max_kw, self.w_charge_max_kw
        for name, v in (("p_kw", p_kw), ("revert_kw", revert_kw)):
            if not lo <= v <= hi:
                raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}] kW (device ratings, load "
                                 f"convention), got {v:g}")
        tms = self._timer(revert_after_s)
        self.write_points(704, {"WSetRvrt": -revert_kw * 1000.0, "WSetEnaRvrt": int(tms > 0),
                                "WSetRvrtTms": tms})
        self.write_points(704, {"WSetEna": 1, "WSetMod": 1, "WSet": -p_kw * 1000.0})

    def release_power(self) -> None:
        """Disable the active power setpoint (the device follows its own logic)."""
        self.write_points(704, {"WSetEna": 0})

    def set_reactive_power_kvar(self, q_kvar: float, revert_after_s: float | None = None,
                                revert_kvar: float = 0.0, reactive_priority: bool = False,
                                ) -> None:
        """Command reactive power ``q_kvar``, load convention (positive = absorbed). [kvar]"""
        q_kvar = finite("q_kvar", q_kvar)
        revert_kvar = finite("revert_kvar", revert_kvar)
        q_max = self.var_max_kvar
        for name, v in (("q_kvar", q_kvar), ("revert_kvar", revert_kvar)):
            if abs(v) > q_max:
                raise ValueError(f"{name} must lie in [{-q_max:g}, {q_max:g}] kvar (device "
                                 f"rating), got {v:g}")
        tms = self._timer(revert_after_s)
        self.write_points(704, {"VarSetRvrt": -revert_kvar * 1000.0,
                                "VarSetEnaRvrt": int(tms > 0), "VarSetRvrtTms": tms})
        self.write_points(704, {"VarSetEna": 1, "VarSetMod": 4,
                                "VarSetPri": int(reactive_priority), "VarSet": -q_kvar * 1000.0})

    def set_soc_reserve(self, soc_min_pct: float, soc_max_pct: float) -> None:
        """Set the battery's SoC reserve window (802 ``SoCRsvMin``/``SocRsvMax``). [%]"""
        lo, hi = finite("soc_min_pct", soc_min_pct), finite("soc_max_pct", soc_max_pct)
        if not self.has_model(802):
            raise HILError(f"{self._where()} has no battery model (802)")
        name_lo, name_hi = self._rating(802, "SoCMin"), self._rating(802, "SoCMax")
        if not name_lo <= lo < hi <= name_hi:
            raise ValueError(f"SoC reserve must satisfy {name_lo:g} <= soc_min_pct < soc_max_pct"
                             f" <= {name_hi:g} % (nameplate), got [{lo:g}, {hi:g}]")
        self.write_points(802, {"SocRsvMax": hi, "SoCRsvMin": lo})

    def heartbeat(self) -> int:
        """Write the next controller heartbeat (802 ``CtrlHb``); return the value written."""
        if not self.has_model(802):
            raise HILError(f"{self._where()} has no battery model (802)")
        _, img = self._require_map()
        value = (int(img.get_raw(802, "CtrlHb")) + 1) % 0xFFFF
        a = self.map.address(802, "CtrlHb")
        self.write_registers(a, [value])
        img.set_raw(802, "CtrlHb", value)
        return value


class CSMSClient:
    """The CSMS running in a background event loop, with blocking calls.

    Parameters
    ----------
    cfg : CSMSConfig or dict
        The ``hil.csms`` section.
    timeout_s : float
        Bound on every blocking call beyond the OCPP response timeout. [s]
    now : callable, optional
        UTC clock of the CSMS (default: the system clock).

    Examples
    --------
    >>> csms = CSMSClient({"port": 0, "stations": {"CS-001": "0123456789abcdef"}})
    >>> csms.wait_for_station("CS-001", timeout_s=30)          # doctest: +SKIP
    >>> csms.push_charging_limit("CS-001", 7.4)                # doctest: +SKIP
    >>> csms.meter_values("CS-001")["p_w"]                     # doctest: +SKIP
    >>> csms.close()
    """

    def __init__(self, cfg: Any, timeout_s: float = 10.0, now: Any = None) -> None:
        from components.hil.aio import BackgroundLoop
        from components.hil.ocpp_csms import CSMS

        self.timeout_s = float(timeout_s)
        self._loop = BackgroundLoop("csms")
        try:
            self.csms = CSMS(cfg) if now is None else CSMS(cfg, now=now)
            self.port = self._loop.run(self.csms.start(), self.timeout_s)
        except BaseException:
            self._loop.close()
            raise

    @property
    def url(self) -> str:
        """Base URL stations connect to (their id is appended)."""
        return self.csms.url

    def _run(self, coro, extra_s: float = 0.0):
        try:
            return self._loop.run(coro, self.timeout_s + extra_s)
        except TimeoutError as exc:
            if isinstance(exc, HILError):
                raise
            raise DeviceTimeoutError(f"CSMS call did not finish within "
                                     f"{self.timeout_s + extra_s:g} s") from exc

    def wait_for_station(self, station_id: str, timeout_s: float = 10.0) -> None:
        """Block until the station has connected and booted."""
        self._run(self.csms.wait_for_station(station_id, timeout_s), extra_s=timeout_s)

    def is_connected(self, station_id: str) -> bool:
        """True while the station's WebSocket is open."""
        return self.csms.record(station_id).connected

    def push_charging_limit(self, station_id: str, limit_kw: float, evse_id: int = 1,
                            purpose: str | None = None, duration_s: int | None = None,
                            timeout_s: float | None = None) -> str:
        """Send a charging limit (see :meth:`CSMS.set_charging_limit`); return the profile."""
        return self._run(self.csms.set_charging_limit(
            station_id, limit_kw, evse_id=evse_id, purpose=purpose, duration_s=duration_s,
            timeout_s=timeout_s), extra_s=timeout_s or 0.0)

    def clear_charging_limit(self, station_id: str, evse_id: int | None = None,
                             purpose: str | None = None) -> bool:
        """Clear the station's profiles (by EVSE and/or purpose)."""
        return self._run(self.csms.clear_charging_limit(station_id, evse_id, purpose))

    def composite_schedule(self, station_id: str, evse_id: int = 1, duration_s: int = 3600
                           ) -> list[dict[str, float]]:
        """The station's composite schedule from now, ``[{start_s, limit_kw}]``."""
        return self._run(self.csms.composite_schedule(station_id, evse_id, duration_s))

    def read_meter(self, station_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Trigger a meter reading and return it (see :meth:`CSMS.read_meter`)."""
        return self._run(self.csms.read_meter(station_id, timeout_s=timeout_s),
                         extra_s=2 * (timeout_s or 0.0))

    def meter_values(self, station_id: str) -> dict[str, Any]:
        """Latest meter values reported by the station (``e_wh``, ``p_w``, ``soc_pct``...)."""

        async def read() -> dict[str, Any]:
            return self.csms.meter_values(station_id)

        return self._run(read())

    def close(self) -> None:
        """Stop the CSMS and its loop."""
        try:
            self._loop.run(self.csms.stop(), self.timeout_s)
        finally:
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
