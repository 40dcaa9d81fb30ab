"""Local controls of the grid: the grid-forming battery's state of charge, switched shunt banks.

Both are plain state machines stepped by :class:`components.grid.model.GridModel`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GridFormingBattery:
    """A stationary battery that is the island's slack; its energy follows the slack power.

    Parameters
    ----------
    p_max_kw : float
        Rated power, charging and discharging. [kW]
    e_kwh : float
        Usable capacity. [kWh]
    soc : float
        State of charge now. [-]
    soc_min, soc_max : float
        Allowed state-of-charge range. [-]
    efficiency : float
        Round-trip efficiency; ``sqrt(efficiency)`` applies on each of charge and discharge. [-]

    Notes
    -----
    ``supply_kw`` is the power the unit delivers to the grid (positive: discharging, negative:
    charging), like ``import_kw`` of the external grid. Over a step of ``h`` hours the stored
    energy changes by ``-supply_kw * h / eta`` when discharging and ``-supply_kw * h * eta`` when
    charging, ``eta = sqrt(efficiency)``.
    """

    p_max_kw: float
    e_kwh: float
    soc: float
    soc_min: float
    soc_max: float
    efficiency: float

    @property
    def eta(self) -> float:
        """One-way efficiency. [-]"""
        return float(np.sqrt(self.efficiency))

    @property
    def energy_kwh(self) -> float:
        """Stored energy. [kWh]"""
        return self.soc * self.e_kwh

    def max_supply_kw(self, h: float) -> float:
        """Largest discharge power the unit can hold for ``h`` hours. [kW]"""
        avail = max(self.soc - self.soc_min, 0.0) * self.e_kwh * self.eta / h
        return min(self.p_max_kw, avail)

    def max_absorb_kw(self, h: float) -> float:
        """Largest charge power the unit can take for ``h`` hours. [kW]"""
        room = max(self.soc_max - self.soc, 0.0) * self.e_kwh / (self.eta * h)
        return min(self.p_max_kw, room)

    def shortfall_kw(self, supply_kw: float, h: float) -> float:
        """How far ``supply_kw`` lies beyond what the unit can hold for ``h`` hours (0: it can).

        Positive for too much discharge and for too much charge alike. [kW]
        """
        if supply_kw >= 0:
            return max(supply_kw - self.max_supply_kw(h), 0.0)
        return max(-supply_kw - self.max_absorb_kw(h), 0.0)

    def step(self, supply_kw: float, h: float) -> float:
        """Deliver ``supply_kw`` for ``h`` hours; return the internal losses. [kW]"""
        if supply_kw >= 0:
            de_kwh = -supply_kw * h / self.eta
        else:
            de_kwh = -supply_kw * h * self.eta
        soc = self.soc + de_kwh / self.e_kwh
        # rounding only: shortfall_kw == 0 was checked before
        self.soc = float(min(max(soc, self.soc_min), self.soc_max))
        # energy leaving the cells minus energy delivered to the grid
        return (-de_kwh - supply_kw * h) / h


class ShuntBanks:
    """Switched shunt banks stepped with hysteresis on the previous step's bus voltage.

    A bank whose steps absorb reactive power (reactor, ``q_kvar > 0``) adds a step after
    ``delay_steps`` steps in a row above ``v_on_pu`` and removes one after ``delay_steps``
    steps in a row below ``v_off_pu``; a capacitor (``q_kvar < 0``) adds below ``v_on_pu`` and
    removes above ``v_off_pu``. A bank whose bus is de-energised keeps its step.

    Parameters
    ----------
    q_kvar, steps, v_on_pu, v_off_pu, delay_steps : array_like
        Per bank, as in ``grid.shunts``.
    """

    def __init__(self, q_kvar, steps, v_on_pu, v_off_pu, delay_steps) -> None:
        self.q_kvar = np.asarray(q_kvar, dtype=np.float64)
        self.max_step = np.asarray(steps, dtype=np.int64)
        self.v_on = np.asarray(v_on_pu, dtype=np.float64)
        self.v_off = np.asarray(v_off_pu, dtype=np.float64)
        self.delay = np.asarray(delay_steps, dtype=np.int64)
        n = self.q_kvar.size
        self.step_now = np.zeros(n, dtype=np.int64)
        self._up = np.zeros(n, dtype=np.int64)
        self._down = np.zeros(n, dtype=np.int64)
        self.switchings = 0

    @property
    def n(self) -> int:
        return int(self.q_kvar.size)

    def update(self, vm_pu: np.ndarray) -> tuple[int, ...]:
        """Count the thresholds crossed at ``vm_pu`` (per bank, NaN: de-energised), switch.

        Returns the steps after switching.
        """
        vm = np.asarray(vm_pu, dtype=np.float64)
        live = np.isfinite(vm)
        reactor = self.q_kvar > 0
        with np.errstate(invalid="ignore"):
            want_up = live & np.where(reactor, vm > self.v_on, vm < self.v_on)
            want_down = live & np.where(reactor, vm < self.v_off, vm > self.v_off)
        self._up = np.where(want_up, self._up + 1, 0)
        self._down = np.where(want_down, self._down + 1, 0)
        up = (self._up >= self.delay) & (self.step_now < self.max_step)
        down = (self._down >= self.delay) & (self.step_now > 0)
        self.step_now = self.step_now + up - down
        self._up[up] = 0
        self._down[down] = 0
        self.switchings += int(up.sum() + down.sum())
        return tuple(int(s) for s in self.step_now)
