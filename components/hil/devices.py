"""Physics and SunSpec behaviour of the Modbus device stubs, without any networking.

A device owns a :class:`~components.hil.sunspec.SunSpecImage` (its register map) and a clock in
seconds since it started. :meth:`DERDevice.advance` integrates the physics up to a time, firing
reversion timers and watchdogs exactly when they fall due; :meth:`DERDevice.write` validates a
Modbus write against the SunSpec definitions and the device ratings and commits it, or raises
:class:`WriteRefused` with the Modbus exception code to answer.

Models served:

* PV inverter (:class:`PVInverter`): 1 common, 701 DER AC measurement, 702 DER capacity,
  704 DER AC controls. Available power comes from :class:`components.pv.model.PVFleet` (pvlib
  chain) on seeded synthetic weather.
* Battery (:class:`BatteryStorage`): the same plus 802 battery base model; the stored energy is
  integrated with separate charge and discharge efficiencies and self-discharge, within the SoC
  window ``[max(SoCMin, SoCRsvMin), min(SoCMax, SocRsvMax)]``.

Controls implemented from model 704: ``WMaxLimPct`` (active power limit, % of ``WMax``),
``WSet``/``WSetPct`` (active power setpoint), ``VarSet``/``VarSetPct`` (reactive power
setpoint, all ``VarSetMod`` modes, active or reactive priority), each with its enable flag and
reversion (``*Rvrt`` values, ``*EnaRvrt``, ``*RvrtTms`` timer, ``*RvrtRem`` countdown). A write
to a function's enable, mode or setpoint re-arms its reversion timer, so a controller that keeps
writing keeps its command; when the link drops the device reverts to the reversion values once
the timer runs out. Points the stub does not implement (power-factor groups, ramps,
anti-islanding) hold SunSpec's "not implemented" pattern and are read-only.

Signs: SunSpec DER power is positive when injected (generator convention); for the battery,
802 ``W`` and ``A`` are positive when discharging.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from components.hil.config import BatteryStubConfig, PVStubConfig
from components.hil.sunspec import SunSpecImage, SunSpecMap

log = logging.getLogger("components.hil")

ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3

MAX_SUBSTEP_S = 1.0  # physics resolution of advance(); timers fire exactly regardless
V_NOM_LN_V = 230.0  # low-voltage grid of the demonstration zones: 230/400 V, 50 Hz
F_NOM_HZ = 50.0
ENABLED, DISABLED = 1, 0


class WriteRefused(Exception):
    """A Modbus write the device refuses.

    Attributes
    ----------
    code : int
        Modbus exception code to answer (2 illegal data address, 3 illegal data value).
    reason : str
        What was wrong, for the log.
    """

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class _Function:
    """A 704 control function: its enable, setpoints, reversion values and timer points."""

    ena: str
    setpoints: tuple[str, ...]
    reversion: dict[str, str]  # setpoint -> its reversion value
    ena_rvrt: str
    tms: str
    rem: str


FUNCTIONS: dict[str, _Function] = {
    "WMaxLimPct": _Function("WMaxLimPctEna", ("WMaxLimPct",), {"WMaxLimPct": "WMaxLimPctRvrt"},
                            "WMaxLimPctEnaRvrt", "WMaxLimPctRvrtTms", "WMaxLimPctRvrtRem"),
    "WSet": _Function("WSetEna", ("WSetMod", "WSet", "WSetPct"),
                      {"WSet": "WSetRvrt", "WSetPct": "WSetPctRvrt"},
                      "WSetEnaRvrt", "WSetRvrtTms", "WSetRvrtRem"),
    "VarSet": _Function("VarSetEna", ("VarSetMod", "VarSetPri", "VarSet", "VarSetPct"),
                        {"VarSet": "VarSetRvrt", "VarSetPct": "VarSetPctRvrt"},
                        "VarSetEnaRvrt", "VarSetRvrtTms", "VarSetRvrtRem"),
}
_WRITABLE_704 = sorted({p for f in FUNCTIONS.values()
                        for p in (f.ena, *f.setpoints, *f.reversion.values(), f.ena_rvrt, f.tms)})
_MAX_TIMER_S = 7 * 86400  # longest reversion time accepted [s]


def scale_exponent(max_abs: float, signed: bool) -> int:
    """Smallest power-of-ten exponent >= 0 at which ``max_abs`` fits a 16-bit register."""
    limit = 32766 if signed else 65534
    sf = 0
    while max_abs / 10.0**sf > limit:
        sf += 1
    return sf


class DERDevice:
    """A distributed energy resource with SunSpec models 1, 701, 702 and 704.

    Parameters
    ----------
    base_addr : int
        Address of the "SunS" marker.
    unit_id : int
        Modbus unit id, shown in the common model's ``DA``.
    serial_number, model_name : str
        Identification in the common model.
    w_max_w : float
        Active power rating (702 ``WMaxRtg``, injection). [W]
    va_max_va : float
        Apparent power rating. [VA]
    w_cha_max_w : float
        Active power rating when absorbing (batteries), 0 for generators. [W]
    """

    MODELS: tuple[int, ...] = (1, 701, 702, 704)
    KIND = "der"

    def __init__(self, base_addr: int, unit_id: int, serial_number: str, model_name: str,
                 w_max_w: float, va_max_va: float, w_cha_max_w: float = 0.0) -> None:
        self.map = SunSpecMap(self.MODELS, base_addr)
        self.image = self.map.blank_image()
        self.t_s = 0.0
        self.w_max_w = float(w_max_w)
        self.va_max_va = float(va_max_va)
        self.w_cha_max_w = float(w_cha_max_w)
        self.var_max_w = self.va_max_va  # reactive capability up to the apparent rating
        self._deadlines: dict[str, float] = {}
        self.p_w = 0.0  # last mean active power, injection positive [W]
        self.q_var = 0.0  # last mean reactive power, injection positive [var]
        self.e_inj_wh = 0.0
        self.e_abs_wh = 0.0
        self.eq_inj_varh = 0.0
        self.eq_abs_varh = 0.0
        self.throttle_src = 0
        self.writable: dict[tuple[int, str], tuple[float, float] | None] = {}
        self._init_common(serial_number, model_name, unit_id)
        self._init_capacity()
        self._init_controls()

    # ----------------------------------------------------------------- static content
    def _init_common(self, serial: str, model_name: str, unit_id: int) -> None:
        img = self.image
        img.set(1, "Mn", "sdg-twin")
        img.set(1, "Md", model_name)
        img.set(1, "Opt", self.KIND)
        img.set(1, "Vr", "0.1.0")
        img.set(1, "SN", serial)
        img.set(1, "DA", unit_id)

    def _init_capacity(self) -> None:
        img = self.image
        top = max(self.w_max_w, self.va_max_va, self.w_cha_max_w)
        w_sf = scale_exponent(top, signed=True)
        self.w_sf = w_sf
        a_max = self.va_max_va / (3.0 * V_NOM_LN_V)
        for name, v in (("W_SF", w_sf), ("VA_SF", w_sf), ("Var_SF", w_sf), ("PF_SF", -3),
                        ("V_SF", -1), ("A_SF", -1 + scale_exponent(a_max * 10, True))):
            img.set(702, name, v)
        img.set(702, "WMaxRtg", self.w_max_w)
        img.set(702, "VAMaxRtg", self.va_max_va)
        img.set(702, "VarMaxInjRtg", self.var_max_w)
        img.set(702, "VarMaxAbsRtg", self.var_max_w)
        img.set(702, "VNomRtg", V_NOM_LN_V)
        img.set(702, "VMaxRtg", 1.1 * V_NOM_LN_V)
        img.set(702, "VMinRtg", 0.88 * V_NOM_LN_V)
        img.set(702, "AMaxRtg", a_max)
        img.set(702, "NorOpCatRtg", 1)  # CAT_B: reactive power capability of IEEE 1547
        img.set(702, "AbnOpCatRtg", 1)  # CAT_2
        modes = self.map.point(702, "CtrlModes").symbols
        img.set_raw(702, "CtrlModes", sum(1 << modes[m] for m in ("MAX_W", "FIXED_W",
                                                                  "FIXED_VAR")))
        img.set(702, "WMax", self.w_max_w)
        img.set(702, "VAMax", self.va_max_va)
        img.set(702, "VarMaxInj", self.var_max_w)
        img.set(702, "VarMaxAbs", self.var_max_w)
        img.set(702, "VNom", V_NOM_LN_V)
        img.set(702, "VMax", 1.1 * V_NOM_LN_V)
        img.set(702, "VMin", 0.88 * V_NOM_LN_V)
        img.set(702, "AMax", a_max)
        if self.w_cha_max_w > 0:
            img.set(702, "WChaRteMaxRtg", self.w_cha_max_w)
            img.set(702, "WDisChaRteMaxRtg", self.w_max_w)
            img.set(702, "WChaRteMax", self.w_cha_max_w)
            img.set(702, "WDisChaRteMax", self.w_max_w)
        # 701 scale factors follow the ratings
        for name, v in (("W_SF", w_sf), ("VA_SF", w_sf), ("Var_SF", w_sf), ("PF_SF", -3),
                        ("V_SF", -1), ("Hz_SF", -2), ("A_SF", img.get_int(702, "A_SF")),
                        ("TotWh_SF", 0), ("TotVarh_SF", 0), ("Tmp_SF", -1)):
            img.set(701, name, v)
        img.set(701, "ACType", 2)  # THREE_PHASE

    def _init_controls(self) -> None:
        img = self.image
        for name, v in (("PF_SF", -3), ("WMaxLimPct_SF", -1), ("WSet_SF", self.w_sf),
                        ("WSetPct_SF", -1), ("VarSet_SF", self.w_sf), ("VarSetPct_SF", -1)):
            img.set(704, name, v)
        p_lo = -self.w_cha_max_w
        pct_lo = -100.0 if self.w_cha_max_w > 0 else 0.0
        ranges: dict[str, tuple[float, float] | None] = {
            "WMaxLimPct": (0.0, 100.0), "WMaxLimPctRvrt": (0.0, 100.0),
            "WSet": (p_lo, self.w_max_w), "WSetRvrt": (p_lo, self.w_max_w),
            "WSetPct": (pct_lo, 100.0), "WSetPctRvrt": (pct_lo, 100.0),
            "VarSet": (-self.var_max_w, self.var_max_w),
            "VarSetRvrt": (-self.var_max_w, self.var_max_w),
            "VarSetPct": (-100.0, 100.0), "VarSetPctRvrt": (-100.0, 100.0),
        }
        for f in FUNCTIONS.values():
            ranges[f.tms] = (0.0, float(_MAX_TIMER_S))
        for name in _WRITABLE_704:
            self.writable[(704, name)] = ranges.get(name)  # None: enumerations
        defaults = {
            "WMaxLimPctEna": DISABLED, "WMaxLimPct": 100.0, "WMaxLimPctRvrt": 100.0,
            "WMaxLimPctEnaRvrt": DISABLED, "WMaxLimPctRvrtTms": 0,
            "WSetEna": DISABLED, "WSetMod": 1, "WSet": 0.0, "WSetRvrt": 0.0, "WSetPct": 0.0,
            "WSetPctRvrt": 0.0, "WSetEnaRvrt": DISABLED, "WSetRvrtTms": 0,
            "VarSetEna": DISABLED, "VarSetMod": 4, "VarSetPri": 0, "VarSet": 0.0,
            "VarSetRvrt": 0.0, "VarSetPct": 0.0, "VarSetPctRvrt": 0.0,
            "VarSetEnaRvrt": DISABLED, "VarSetRvrtTms": 0,
        }
        for name, v in defaults.items():
            img.set(704, name, v)
        for f in FUNCTIONS.values():
            img.set(704, f.rem, 0)

    # ----------------------------------------------------------------- writes
    def writable_addresses(self) -> set[int]:
        """Addresses of every register a client may write."""
        out: set[int] = set()
        for (m, name) in self.writable:
            p = self.map.point(m, name)
            a = self.map.address(m, name)
            out.update(range(a, a + p.size))
        return out

    def write(self, address: int, values: list[int], t_s: float) -> None:
        """Validate and commit a write of ``values`` at ``address`` at device time ``t_s``.

        Raises
        ------
        WriteRefused
            Code 2 when the registers are not writable points or split a multi-register point;
            code 3 when a value is out of range, not a defined enumeration value, not finite
            (the "not implemented" pattern) or inconsistent with related settings.
        """
        self.advance(t_s)
        base, n = self.map.base, len(values)
        if address < base or address + n > base + self.map.size:
            raise WriteRefused(ILLEGAL_ADDRESS, f"registers {address}..{address + n - 1} are "
                               "outside the SunSpec map")
        touched: list[tuple[int, str]] = []
        a = address
        while a < address + n:
            hit = self.map.locate(a)
            if hit is None or (hit[0], hit[1].name) not in self.writable:
                what = "no point" if hit is None else f"{hit[0]}.{hit[1].name}"
                raise WriteRefused(ILLEGAL_ADDRESS, f"register {a} ({what}) is read-only")
            m, p = hit
            start = self.map.address(m, p.name)
            if start < address or start + p.size > address + n:
                raise WriteRefused(ILLEGAL_ADDRESS, f"write {address}+{n} splits the "
                                   f"{p.size}-register point {m}.{p.name}")
            touched.append((m, p.name))
            a = start + p.size
        new = self.image.copy()
        new.registers[address - base:address - base + n] = [int(v) & 0xFFFF for v in values]
        reason = self._validate(new, touched)
        if reason is not None:
            raise WriteRefused(ILLEGAL_VALUE, reason)
        self.image.registers[address - base:address - base + n] = new.registers[
            address - base:address - base + n]
        self._after_write(touched, t_s)
        self._publish()

    def _validate(self, new: SunSpecImage, touched: list[tuple[int, str]]) -> str | None:
        for m, name in touched:
            p = self.map.point(m, name)
            if p.type in ("enum16", "enum32"):
                raw = new.get_raw(m, name)
                if raw not in p.symbols.values():
                    return f"{m}.{name} = {raw} is not one of {dict(p.symbols)}"
                continue
            rng = self.writable[(m, name)]
            if rng is None:
                continue
            v = new.get(m, name)
            if v is None:
                return f"{m}.{name}: the 'not implemented' pattern is not a setpoint"
            lo, hi = rng
            if not lo <= float(v) <= hi:
                return f"{m}.{name} = {v:g} is outside [{lo:g}, {hi:g}] {p.units or ''}".strip()
        return None

    def _after_write(self, touched: list[tuple[int, str]], t_s: float) -> None:
        names = {n for m, n in touched if m == 704}
        for key, f in FUNCTIONS.items():
            if names & {f.ena, *f.setpoints, f.ena_rvrt, f.tms}:
                self._arm(key, f, t_s)

    def _arm(self, key: str, f: _Function, t_s: float) -> None:
        img = self.image
        tms = img.get(704, f.tms) or 0
        if (img.get_int(704, f.ena) == ENABLED and img.get_int(704, f.ena_rvrt) == ENABLED
                and tms > 0):
            self._deadlines[key] = t_s + float(tms)
        else:
            self._deadlines.pop(key, None)

    # ----------------------------------------------------------------- time
    def advance(self, t_s: float) -> None:
        """Integrate the physics to device time ``t_s`` (seconds since start).

        Timers falling inside the interval fire at their exact time; the physics uses sub-steps
        of at most :data:`MAX_SUBSTEP_S`. Times before the current one are ignored.
        """
        t_s = float(t_s)
        if not math.isfinite(t_s):
            raise ValueError(f"device time must be finite, got {t_s}")
        while self.t_s < t_s:
            t1 = min(t_s, self.t_s + MAX_SUBSTEP_S)
            due = [d for d in self._deadlines.values() if d <= t1]
            if due:
                t1 = max(self.t_s, min(due))
            dt = t1 - self.t_s
            if dt > 0:
                self._step(self.t_s, dt)
                self._count(dt)
            self.t_s = t1
            for key in [k for k, d in self._deadlines.items() if d <= t1]:
                del self._deadlines[key]
                self._on_deadline(key, t1)
        self._publish()

    def _count(self, dt: float) -> None:
        h = dt / 3600.0
        if self.p_w >= 0:
            self.e_inj_wh += self.p_w * h
        else:
            self.e_abs_wh -= self.p_w * h
        if self.q_var >= 0:
            self.eq_inj_varh += self.q_var * h
        else:
            self.eq_abs_varh -= self.q_var * h

    def _on_deadline(self, key: str, t_s: float) -> None:
        f = FUNCTIONS[key]
        img = self.image
        for sp, rv in f.reversion.items():
            img.set_raw(704, sp, img.get_raw(704, rv))
        log.warning("%s: no %s command for %g s: reverted to %s at t=%.1f s", self.KIND, key,
                    img.get(704, f.tms),
                    ", ".join(f"{sp}={img.get(704, sp):g}" for sp in f.reversion), t_s)

    def remaining_s(self, key: str) -> float:
        """Seconds until the reversion of control function ``key`` (0 if not armed)."""
        d = self._deadlines.get(key)
        return 0.0 if d is None else max(0.0, d - self.t_s)

    # ----------------------------------------------------------------- controls
    def p_cap_w(self) -> float:
        """Active power cap from ``WMaxLimPct`` (inf when disabled). [W]"""
        img = self.image
        if img.get_int(704, "WMaxLimPctEna") != ENABLED:
            return math.inf
        return float(img.get(704, "WMaxLimPct")) / 100.0 * self.w_max_w

    def p_setpoint_w(self) -> float | None:
        """Active power setpoint from ``WSet``/``WSetPct`` (None when disabled). [W]"""
        img = self.image
        if img.get_int(704, "WSetEna") != ENABLED:
            return None
        if img.get_int(704, "WSetMod") == 1:  # WATTS
            return float(img.get(704, "WSet"))
        return float(img.get(704, "WSetPct")) / 100.0 * self.w_max_w

    def q_setpoint(self, p_w: float) -> tuple[float | None, bool]:
        """Reactive power setpoint [var] (None when disabled) and whether it has priority."""
        img = self.image
        if img.get_int(704, "VarSetEna") != ENABLED:
            return None, False
        mode = img.get_int(704, "VarSetMod")
        reactive_first = img.get_int(704, "VarSetPri") == 1
        if mode == 4:  # VARS
            return float(img.get(704, "VarSet")), reactive_first
        pct = float(img.get(704, "VarSetPct")) / 100.0
        base = {0: self.w_max_w, 1: self.var_max_w, 3: self.va_max_va,
                2: math.sqrt(max(self.va_max_va**2 - p_w**2, 0.0))}[mode]
        return pct * base, reactive_first

    def _share_apparent(self, p_w: float) -> tuple[float, float]:
        """Apply the reactive setpoint within the apparent power rating; return (p, q)."""
        q_set, reactive_first = self.q_setpoint(p_w)
        if q_set is None:
            return p_w, 0.0
        q = float(np.clip(q_set, -self.var_max_w, self.var_max_w))
        if reactive_first:
            q = float(np.clip(q, -self.va_max_va, self.va_max_va))
            p_room = math.sqrt(max(self.va_max_va**2 - q**2, 0.0))
            p_w = float(np.clip(p_w, -p_room, p_room))
        else:
            q_room = math.sqrt(max(self.va_max_va**2 - p_w**2, 0.0))
            q = float(np.clip(q, -q_room, q_room))
        return p_w, q

    # ----------------------------------------------------------------- publishing
    def _step(self, t0: float, dt: float) -> None:
        raise NotImplementedError

    def _publish(self) -> None:
        img = self.image
        p, q = self.p_w, self.q_var
        s = math.hypot(p, q)
        img.set(701, "St", 1)
        img.set(701, "ConnSt", 1)
        img.set_raw(701, "Alrm", 0)
        img.set_raw(701, "DERMode", 1)  # GRID_FOLLOWING
        img.set(701, "W", p)
        img.set(701, "VA", s)
        img.set(701, "Var", q)
        img.set(701, "PF", (abs(p) / s) if s > 1e-9 else 1.0)
        img.set(701, "A", s / (3.0 * V_NOM_LN_V))
        img.set(701, "LLV", math.sqrt(3.0) * V_NOM_LN_V)
        img.set(701, "LNV", V_NOM_LN_V)
        img.set(701, "Hz", F_NOM_HZ)
        img.set(701, "TotWhInj", math.floor(self.e_inj_wh))
        img.set(701, "TotWhAbs", math.floor(self.e_abs_wh))
        img.set(701, "TotVarhInj", math.floor(self.eq_inj_varh))
        img.set(701, "TotVarhAbs", math.floor(self.eq_abs_varh))
        img.set_raw(701, "ThrotSrc", self.throttle_src)
        for key, f in FUNCTIONS.items():
            img.set(704, f.rem, math.ceil(self.remaining_s(key)))

    def measurements(self) -> dict[str, Any]:
        """The current operating point in engineering units (for logs and tests)."""
        return {"t_s": self.t_s, "p_w": self.p_w, "q_var": self.q_var,
                "e_inj_wh": self.e_inj_wh, "e_abs_wh": self.e_abs_wh}


class PVProfile:
    """Available AC power of one PV plant over a horizon, from the project's PV physics.

    Parameters
    ----------
    cfg : PVStubConfig
        Plant, site, weather and time settings.
    """

    def __init__(self, cfg: PVStubConfig) -> None:
        from components.pv.model import PVFleet
        from components.pv.weather import synthetic_weather

        self.step_s = float(cfg.profile_step_s)
        n = max(2, round(cfg.horizon_days * 86400 / self.step_s))
        self.horizon_s = n * self.step_s
        start = pd.Timestamp(cfg.start)
        mids = start + pd.to_timedelta((np.arange(n) + 0.5) * self.step_s, unit="s")
        loc = cfg.location
        rng = np.random.default_rng(cfg.seed)
        weather = synthetic_weather(pd.DatetimeIndex(mids), loc.latitude_deg, loc.longitude_deg,
                                    loc.altitude_m, cfg.weather, rng)
        fleet = PVFleet([cfg], loc.latitude_deg, loc.longitude_deg, loc.altitude_m, weather,
                        dc_model="pvwatts", losses_pct=cfg.losses_pct)
        self.available_w = fleet.available_ac_kw[:, 0] * 1000.0
        self.temp_air_c = weather["temp_air"].to_numpy(dtype=float)
        self.t_mid_s = (np.arange(n) + 0.5) * self.step_s
        self.hold = False

    @classmethod
    def from_steps(cls, available_w: np.ndarray, temp_air_c: np.ndarray, step_s: float
                   ) -> PVProfile:
        """A profile that holds one value per step: step ``k`` covers ``[k, k+1) * step_s``.

        A bench uses it to give the stub exactly the step means the simulated plant has.
        """
        avail = np.asarray(available_w, dtype=float)
        temp = np.asarray(temp_air_c, dtype=float)
        if avail.ndim != 1 or avail.shape != temp.shape or avail.size == 0:
            raise ValueError("available_w and temp_air_c must be 1-D arrays of equal length")
        if not (np.isfinite(avail).all() and np.isfinite(temp).all()) or step_s <= 0:
            raise ValueError("profile values must be finite and step_s > 0")
        self = cls.__new__(cls)
        self.step_s = float(step_s)
        self.horizon_s = avail.size * self.step_s
        self.available_w = avail
        self.temp_air_c = temp
        self.t_mid_s = (np.arange(avail.size) + 0.5) * self.step_s
        self.hold = True
        return self

    def _interp(self, series: np.ndarray, t_s: float) -> float:
        t = float(t_s) % self.horizon_s  # the profile repeats after the horizon
        if self.hold:
            return float(series[min(int(t // self.step_s), series.size - 1)])
        return float(np.interp(t, self.t_mid_s, series))

    def available(self, t_s: float) -> float:
        """Available AC power at ``t_s`` seconds after the start. [W]"""
        return max(self._interp(self.available_w, t_s), 0.0)

    def temp_air(self, t_s: float) -> float:
        """Air temperature at ``t_s``. [°C]"""
        return self._interp(self.temp_air_c, t_s)


class PVInverter(DERDevice):
    """PV inverter: available power from :class:`PVProfile`, limited by the 704 controls.

    Output: ``P = min(available, WMaxLimPct * WMax, WSet)`` (``WSet`` is a ceiling for a
    generator that cannot produce more than the sun gives), ``Q`` from ``VarSet`` within the
    apparent power rating.
    """

    KIND = "pv"

    def __init__(self, cfg: PVStubConfig, profile: PVProfile | None = None) -> None:
        self.cfg = cfg
        self.profile = profile if profile is not None else PVProfile(cfg)
        rating_w = float(cfg.inverter_kw) * 1000.0
        super().__init__(cfg.base_addr, cfg.unit_id, cfg.serial_number, "PV-HIL",
                         w_max_w=rating_w, va_max_va=rating_w)
        self.available_w = self.profile.available(0.0)
        self.p_w, self.q_var = self._operate(0.0)
        self._publish()

    def _operate(self, t_s: float) -> tuple[float, float]:
        avail = self.profile.available(t_s)
        self.available_w = avail
        p = avail
        src = 0
        cap = self.p_cap_w()
        if cap < p:
            p, src = cap, src | 1  # MAX_W
        target = self.p_setpoint_w()
        if target is not None and target < p:
            p, src = max(target, 0.0), src | 2  # FIXED_W
        p2, q = self._share_apparent(p)
        if p2 < p:
            src |= 4  # FIXED_VAR
        self.throttle_src = src
        return p2, q

    def _step(self, t0: float, dt: float) -> None:
        self.p_w, self.q_var = self._operate(t0 + dt / 2)

    def _publish(self) -> None:
        super()._publish()
        img = self.image
        avail = self.available_w
        if avail <= 0:
            inv_st = 1  # SLEEPING
        elif self.p_w < avail - 0.5:
            inv_st = 4  # THROTTLED
        else:
            inv_st = 3  # RUNNING
        img.set(701, "InvSt", inv_st)
        img.set(701, "ThrotPct", 100.0 * (avail - self.p_w) / avail if avail > 0 else 0.0)
        img.set(701, "TmpAmb", self.profile.temp_air(self.t_s))

    def measurements(self) -> dict[str, Any]:
        return {**super().measurements(), "available_w": self.available_w}


class BatteryStorage(DERDevice):
    """Battery behind a bidirectional inverter (models 1, 701, 702, 704, 802).

    The AC setpoint (``WSet``/``WSetPct``, positive = discharge; 0 when disabled) is limited by
    the charge/discharge ratings, ``WMaxLimPct`` (on discharge), the apparent power rating and
    the SoC window. The stored energy follows

        dE/dt = eta_charge * P_charge - P_discharge / eta_discharge - self_discharge

    and the power is cut so that E ends exactly on a window bound instead of crossing it.
    ``SetOp = DISCONNECT`` or ``SetInvState`` other than started hold the power at 0; so does a
    lost controller heartbeat (802 ``CtrlHb`` not written for ``ctrl_heartbeat_timeout_s``),
    which also latches the COMMUNICATION_ERROR event until ``AlmRst``.
    """

    MODELS = (1, 701, 702, 704, 802)
    KIND = "battery"

    def __init__(self, cfg: BatteryStubConfig) -> None:
        self.cfg = cfg
        self.cap_wh = cfg.e_kwh * 1000.0
        self.e_wh = cfg.soc_init_pct / 100.0 * self.cap_wh
        self.e_discharged_wh = 0.0
        self.p_dc_w = 0.0
        self.soc_limited = False
        self.hb_lost = False
        self.events = 0
        super().__init__(cfg.base_addr, cfg.unit_id, cfg.serial_number, "BAT-HIL",
                         w_max_w=cfg.p_discharge_max_kw * 1000.0,
                         va_max_va=cfg.s_rating_kva * 1000.0,
                         w_cha_max_w=cfg.p_charge_max_kw * 1000.0)
        self._init_battery()
        self._publish()

    def _init_battery(self) -> None:
        cfg, img = self.cfg, self.image
        v_nom = 0.5 * (cfg.v_dc_empty_v + cfg.v_dc_full_v)
        ah = self.cap_wh / v_nom
        w_top = max(self.w_max_w, self.w_cha_max_w) / min(cfg.eta_charge, cfg.eta_discharge)
        v_sf = -1 + scale_exponent(cfg.v_dc_full_v * 10, signed=False)
        a_top = w_top / cfg.v_dc_empty_v
        for name, v in (("AHRtg_SF", scale_exponent(ah, False)),
                        ("WHRtg_SF", scale_exponent(self.cap_wh, False)),
                        ("WChaDisChaMax_SF", scale_exponent(w_top, False)),
                        ("DisChaRte_SF", -2), ("SoC_SF", -1), ("DoD_SF", -1), ("SoH_SF", 0),
                        ("V_SF", v_sf), ("CellV_SF", -3),
                        ("A_SF", -1 + scale_exponent(a_top * 10, True)),
                        ("AMax_SF", -1 + scale_exponent(a_top * 10, False)),
                        ("W_SF", scale_exponent(w_top, True))):
            img.set(802, name, v)
        img.set(802, "AHRtg", ah)
        img.set(802, "WHRtg", self.cap_wh)
        img.set(802, "WChaRteMax", self.w_cha_max_w)
        img.set(802, "WDisChaRteMax", self.w_max_w)
        img.set(802, "DisChaRte", cfg.self_discharge_pct_per_day)
        img.set(802, "SoCMax", cfg.soc_max_pct)
        img.set(802, "SoCMin", cfg.soc_min_pct)
        img.set(802, "SocRsvMax", cfg.soc_max_pct)
        img.set(802, "SoCRsvMin", cfg.soc_min_pct)
        img.set(802, "SoH", 100)
        img.set(802, "LocRemCtl", 0)  # REMOTE
        img.set(802, "CtrlHb", 0)
        img.set(802, "AlmRst", 0)
        img.set(802, "Typ", 4)  # LITHIUM_ION
        for name in ("Evt2", "EvtVnd1", "EvtVnd2"):
            img.set_raw(802, name, 0)
        img.set(802, "VMax", cfg.v_dc_full_v)
        img.set(802, "VMin", cfg.v_dc_empty_v)
        img.set(802, "ReqInvState", 0)  # NO REQUEST
        img.set(802, "SetOp", 1)  # CONNECT
        img.set(802, "SetInvState", 3)  # INVERTER_STARTED
        soc = (cfg.soc_min_pct, cfg.soc_max_pct)
        self.writable.update({
            (802, "SocRsvMax"): soc, (802, "SoCRsvMin"): soc, (802, "CtrlHb"): None,
            (802, "AlmRst"): (0.0, 1.0), (802, "SetOp"): None, (802, "SetInvState"): None,
        })

    # ---------------------------------------------------------------- validation
    def _validate(self, new: SunSpecImage, touched: list[tuple[int, str]]) -> str | None:
        # CtrlHb is a free-running counter: every 16-bit value (0xFFFF included) is legal
        reason = super()._validate(new, [t for t in touched if t != (802, "CtrlHb")])
        if reason is not None:
            return reason
        names = {n for m, n in touched if m == 802}
        if names & {"SocRsvMax", "SoCRsvMin"}:
            lo, hi = new.get(802, "SoCRsvMin"), new.get(802, "SocRsvMax")
            if lo >= hi:
                return (f"802 SoC reserve window [SoCRsvMin, SocRsvMax] = [{lo:g}, {hi:g}] % is "
                        "empty")
        return None

    def _after_write(self, touched: list[tuple[int, str]], t_s: float) -> None:
        super()._after_write(touched, t_s)
        names = {n for m, n in touched if m == 802}
        if "CtrlHb" in names and self.cfg.ctrl_heartbeat_timeout_s > 0:
            self._deadlines["_ctrl_hb"] = t_s + self.cfg.ctrl_heartbeat_timeout_s
            if self.hb_lost:
                log.warning("battery: controller heartbeat back at t=%.1f s", t_s)
            self.hb_lost = False
        if "AlmRst" in names and self.image.get_int(802, "AlmRst") == 1:
            self.events = 0
            self.image.set(802, "AlmRst", 0)  # reset done

    def _on_deadline(self, key: str, t_s: float) -> None:
        if key != "_ctrl_hb":
            super()._on_deadline(key, t_s)
            return
        self.hb_lost = True
        self.events |= 1 << self.map.point(802, "Evt1").symbols["COMMUNICATION_ERROR"]
        log.warning("battery: controller heartbeat lost (no CtrlHb write for %g s) at "
                    "t=%.1f s: holding power at 0", self.cfg.ctrl_heartbeat_timeout_s, t_s)

    # ---------------------------------------------------------------- physics
    def soc_window_wh(self) -> tuple[float, float]:
        """Stored-energy bounds from nameplate and reserve SoC limits. [Wh]"""
        img = self.image
        lo = max(self.cfg.soc_min_pct, float(img.get(802, "SoCRsvMin")))
        hi = min(self.cfg.soc_max_pct, float(img.get(802, "SocRsvMax")))
        return lo / 100.0 * self.cap_wh, hi / 100.0 * self.cap_wh

    def requested_w(self) -> float:
        """AC power the controls ask for before SoC limits; positive = discharge. [W]"""
        img = self.image
        if (self.hb_lost or img.get_int(802, "SetOp") != 1
                or img.get_int(802, "SetInvState") != 3):
            return 0.0
        target = self.p_setpoint_w()
        p = 0.0 if target is None else target
        p = float(np.clip(p, -self.w_cha_max_w, self.w_max_w))
        return min(p, self.p_cap_w())

    def _step(self, t0: float, dt: float) -> None:
        cfg = self.cfg
        p_req, q = self._share_apparent(self.requested_w())
        lo, hi = self.soc_window_wh()
        sd_wh = cfg.self_discharge_pct_per_day / 100.0 * self.cap_wh * dt / 86400.0
        h = dt / 3600.0
        if p_req < 0:  # charging
            room = max(hi - (self.e_wh - sd_wh), 0.0)
            p = -min(-p_req, room / (cfg.eta_charge * h))
            self.p_dc_w = p * cfg.eta_charge
        elif p_req > 0:  # discharging
            room = max((self.e_wh - sd_wh) - lo, 0.0)
            p = min(p_req, room * cfg.eta_discharge / h)
            self.p_dc_w = p / cfg.eta_discharge
        else:
            p, self.p_dc_w = 0.0, 0.0
        self.soc_limited = abs(p) < abs(p_req) - 1e-9
        self.e_wh = max(self.e_wh - self.p_dc_w * h - sd_wh, 0.0)
        if self.p_dc_w > 0:
            self.e_discharged_wh += self.p_dc_w * h
        self.p_w, self.q_var = p, q
        self.throttle_src = 1 if self.p_cap_w() < abs(p_req) else 0

    @property
    def soc_pct(self) -> float:
        """State of charge. [%]"""
        return 100.0 * self.e_wh / self.cap_wh

    def _publish(self) -> None:
        super()._publish()
        cfg, img = self.cfg, self.image
        connected = img.get_int(802, "SetOp") == 1
        soc = min(max(self.soc_pct, 0.0), 100.0)
        v = cfg.v_dc_empty_v + (cfg.v_dc_full_v - cfg.v_dc_empty_v) * soc / 100.0
        lo, hi = self.soc_window_wh()
        if not connected:
            cha_st, state = 1, 1  # OFF, DISCONNECTED
        elif self.p_w < 0:
            cha_st, state = 4, 3  # CHARGING, CONNECTED
        elif self.p_w > 0:
            cha_st, state = 3, 3  # DISCHARGING
        elif self.e_wh >= hi - 1e-6:
            cha_st, state = 5, 3  # FULL
        elif self.e_wh <= lo + 1e-6:
            cha_st, state = 2, 3  # EMPTY
        else:
            cha_st, state = 6, 3  # HOLDING
        if connected and self.soc_limited:
            state = 5  # SOC PROTECTION
        ev = self.events
        syms = self.map.point(802, "Evt1").symbols
        if self.soc_limited and self.requested_w() > 0:
            ev |= 1 << syms["UNDER_SOC_MIN_WARNING"]
        if self.soc_limited and self.requested_w() < 0:
            ev |= 1 << syms["OVER_SOC_MAX_WARNING"]
        img.set(802, "SoC", soc)
        img.set(802, "DoD", 100.0 - soc)
        img.set(802, "NCyc", math.floor(self.e_discharged_wh / self.cap_wh))
        img.set(802, "ChaSt", cha_st)
        img.set(802, "State", state)
        img.set(802, "Hb", math.floor(self.t_s) % 0xFFFF)
        img.set_raw(802, "Evt1", ev)
        img.set(802, "V", v)
        img.set(802, "A", self.p_dc_w / v)
        img.set(802, "AChaMax", self.w_cha_max_w * cfg.eta_charge / v)
        img.set(802, "ADisChaMax", self.w_max_w / cfg.eta_discharge / v)
        img.set(802, "W", self.p_dc_w)
        img.set(701, "InvSt", 3 if self.p_w != 0 else 7)  # RUNNING or STANDBY
        img.set(701, "ConnSt", 1 if connected else 0)

    def measurements(self) -> dict[str, Any]:
        return {**super().measurements(), "soc_pct": self.soc_pct, "e_wh": self.e_wh,
                "p_dc_w": self.p_dc_w, "hb_lost": self.hb_lost}


def make_device(kind: str, cfg: PVStubConfig | BatteryStubConfig) -> DERDevice:
    """The device of ``kind`` ('pv' or 'battery') built from its stub config."""
    if kind == "pv":
        return PVInverter(PVStubConfig.model_validate(cfg))
    if kind == "battery":
        return BatteryStorage(BatteryStubConfig.model_validate(cfg))
    raise ValueError(f"unknown device kind {kind!r}; choose 'pv' or 'battery'")
