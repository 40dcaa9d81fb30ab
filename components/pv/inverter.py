"""Autonomous inverter functions of IEEE Std 1547-2018: volt-var and volt-watt, per plant.

Each plant follows one mode (see :data:`components.pv.config.InverterMode`):

``unity``          no autonomous function; reactive power only as requested remotely
``volt_var``       reactive power from the volt-var curve, with *reactive priority*: the active
                   power is reduced if needed so that ``P² + Q² <= S²``
``volt_watt``      active power capped by the volt-watt curve
``volt_var_watt``  both

Reactive power on the curves counts *injection* positive (capacitive, over-excited), as IEEE 1547
does; :meth:`InverterControl.step` returns it as such and :class:`~components.pv.model.PVFleet`
converts it to the load convention of :mod:`components.base` (injection = negative ``q_kvar``).

Time. The curves are evaluated at the voltage the plant measured, which in the co-simulation is
the bus voltage of the *previous* step's power flow (a loop inverter -> grid -> inverter needs one
delay). The inverter does not jump to the curve's value: IEEE 1547 specifies an *open-loop
response time* ``T_ol``, the time to reach 90 % of a reference change, which a first-order lag
with ``tau = T_ol / ln 10`` reproduces. Over a step of length ``dt`` the lag starting from ``x0``
toward the reference ``r`` has the exact step mean
``r + (x0 - r) * tau/dt * (1 - exp(-dt/tau))`` and ends at ``r + (x0 - r) * exp(-dt/tau)``; that
mean is what a step reports. With 15-minute steps (``dt = 900 s``) and the default 5 s (10 s)
response time, ``tau/dt`` is 0.24 % (0.48 %): practically the steady state of the curve at the
previous step's voltage. The lag matters at short steps (a minute or less), where it also damps
the step-to-step interplay between the curve and the voltage it changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MODES = ("unity", "volt_var", "volt_watt", "volt_var_watt")
_VOLT_VAR = {"volt_var", "volt_var_watt"}
_VOLT_WATT = {"volt_watt", "volt_var_watt"}


def curve(vm_pu: np.ndarray, v_pu: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Piecewise-linear curve through ``(v_pu[i], y[i])``, flat beyond the end points.

    Parameters
    ----------
    vm_pu : numpy.ndarray
        Measured voltages. [pu]
    v_pu : sequence of float
        Curve voltages, strictly increasing. [pu]
    y : sequence of float
        Curve values at ``v_pu`` (any unit; the result has the same).
    """
    return np.interp(np.asarray(vm_pu, dtype=float), np.asarray(v_pu, dtype=float),
                     np.asarray(y, dtype=float))


def first_order_step(x0: np.ndarray, target: np.ndarray, dt_s: float,
                     response_time_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and end value of a first-order lag driven by a constant reference over one step.

    Parameters
    ----------
    x0 : numpy.ndarray
        Value at the start of the step.
    target : numpy.ndarray
        Reference held over the step.
    dt_s : float
        Step length. [s]
    response_time_s : float
        Open-loop response time, to 90 % of a change; ``tau = response_time_s / ln 10``. [s]

    Returns
    -------
    mean, end : numpy.ndarray
        Mean over the step and value at its end.
    """
    tau = response_time_s / math.log(10.0)
    decay = math.exp(-dt_s / tau)
    gap = np.asarray(x0, dtype=float) - target
    return target + gap * (tau / dt_s) * (1.0 - decay), target + gap * decay


class InverterControl:
    """The volt-var and volt-watt state of a fleet of inverters.

    Parameters
    ----------
    modes : sequence of str
        Mode of each plant, one of :data:`MODES`.
    step_s : float
        Step length. [s]
    volt_var_v_pu, volt_var_q_pct : sequence of float
        Volt-var curve: 4 voltages [pu] and reactive powers, injection positive [% of the
        apparent-power rating].
    volt_var_response_s : float
        Volt-var open-loop response time. [s]
    volt_watt_v_pu, volt_watt_p_pct : sequence of float
        Volt-watt curve: 2 voltages [pu] and active-power caps [% of the rating].
    volt_watt_response_s : float
        Volt-watt open-loop response time. [s]
    """

    def __init__(
        self,
        modes: Sequence[str],
        step_s: float,
        volt_var_v_pu: Sequence[float],
        volt_var_q_pct: Sequence[float],
        volt_var_response_s: float,
        volt_watt_v_pu: Sequence[float],
        volt_watt_p_pct: Sequence[float],
        volt_watt_response_s: float,
    ) -> None:
        unknown = sorted({m for m in modes if m not in MODES})
        if unknown:
            raise ValueError(f"unknown inverter mode(s) {unknown}; allowed: {list(MODES)}")
        if step_s <= 0:
            raise ValueError(f"step_s must be > 0, got {step_s}")
        self.modes = list(modes)
        self.volt_var = np.array([m in _VOLT_VAR for m in modes])
        self.volt_watt = np.array([m in _VOLT_WATT for m in modes])
        self.step_s = float(step_s)
        self.vv_v, self.vv_q = tuple(volt_var_v_pu), tuple(q / 100 for q in volt_var_q_pct)
        self.vw_v, self.vw_p = tuple(volt_watt_v_pu), tuple(p / 100 for p in volt_watt_p_pct)
        self.vv_response_s = float(volt_var_response_s)
        self.vw_response_s = float(volt_watt_response_s)
        n = len(self.modes)
        # the inverters start settled at nominal voltage
        self.q_pu = curve(np.ones(n), self.vv_v, self.vv_q)
        self.p_cap_pu = curve(np.ones(n), self.vw_v, self.vw_p)

    @property
    def any_active(self) -> bool:
        """Whether any plant follows a curve."""
        return bool(self.volt_var.any() or self.volt_watt.any())

    def step(self, vm_pu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance one step at the measured voltages; return the step means.

        Parameters
        ----------
        vm_pu : numpy.ndarray
            Voltage at each plant's bus, shape (n,). Non-finite values (a de-energised bus)
            count as nominal voltage (1 pu): the curves then ask for nothing. [pu]

        Returns
        -------
        q_inj_pu : numpy.ndarray
            Mean reactive power, injection positive, of the plants in a volt-var mode (NaN for
            the others). [pu of the apparent-power rating]
        p_cap_pu : numpy.ndarray
            Mean active-power cap of the plants in a volt-watt mode (``inf`` for the others).
            [pu of the rating]
        """
        v = np.asarray(vm_pu, dtype=float)
        if v.shape != (len(self.modes),):
            raise ValueError(f"vm_pu must have one value per plant, shape ({len(self.modes)},), "
                             f"got shape {v.shape}")
        v = np.where(np.isfinite(v), v, 1.0)
        q_mean, self.q_pu = first_order_step(self.q_pu, curve(v, self.vv_v, self.vv_q),
                                             self.step_s, self.vv_response_s)
        p_mean, self.p_cap_pu = first_order_step(self.p_cap_pu, curve(v, self.vw_v, self.vw_p),
                                                 self.step_s, self.vw_response_s)
        return np.where(self.volt_var, q_mean, np.nan), np.where(self.volt_watt, p_mean, np.inf)
