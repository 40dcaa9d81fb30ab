"""Per-step EV power allocation for the SDG coordinator: validation, coercion, kernel choice.

:func:`allocate` shares one step's power among the plugged EVs of a zone: mandatory power first
(what an EV must take now to still reach its departure need), then each site's local PV
surplus, then the zone's grid budget, or, when the budget is negative, V2G discharge by the EVs
with the most slack. Sharing is least laxity first with water-filling: EVs of equal urgency end
the step equally urgent. The work is done by the compiled kernel ``ext.dispatch`` or its NumPy
twin ``ext.dispatch_np`` (see :func:`kernel_module`); the method is described in
``ext/dispatch.pyx``.

Sign convention (load convention): a positive power is drawn from the grid (the EV charges),
a negative power is delivered to it (V2G discharge). Powers are means over the step, grid side
(before charger and battery losses); energies needed are battery side.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from ext import select_kernel
from ext.dispatch_np import CHARGE_ARRAYS, TARGET_MODES

__all__ = ["TARGET_MODES", "DispatchInfo", "allocate", "charge_error", "kernel_module"]

Backend = Literal["auto", "compiled", "numpy"]


def kernel_module(backend: Backend = "auto") -> ModuleType:
    """The compiled ``ext.dispatch`` or its twin (see :func:`ext.select_kernel`)."""
    return select_kernel("dispatch", backend)


@dataclass(frozen=True, slots=True)
class DispatchInfo:
    """Totals of one allocation. Powers are grid-side means over the step. [kW]

    Attributes
    ----------
    mandatory_kw : float
        Power the EVs had to take this step to keep their departure needs feasible (each
        clamped to its ``p_max_kw``), asked in total. [kW]
    grid_kw : float
        Charging power not covered by the sites' PV surplus, i.e. drawn from the zone grid. [kW]
    discharge_kw : float
        Power delivered by discharging EVs (positive number). [kW]
    charge_kw : float
        Total charging power, ``grid_kw + pv_used_kw.sum()``. [kW]
    pv_used_kw : numpy.ndarray
        Per site, the part of its PV surplus that its charging EVs take. [kW]
    site_shortfall_kw : numpy.ndarray
        Per site, mandatory power its connection capacity could not carry. [kW]
    site_p_kw : numpy.ndarray
        Per site, net EV power (charging minus discharging), within ``±site_cap_kw``. [kW]
    n_infeasible : int
        EVs whose departure need cannot be met any more after this step, even at full power
        (already infeasible ones included; 0 when all needs are feasible and caps suffice).
    n_cap_limited : int
        EVs given less than their mandatory power because of their site's capacity.
    """

    mandatory_kw: float
    grid_kw: float
    discharge_kw: float
    charge_kw: float
    pv_used_kw: np.ndarray
    site_shortfall_kw: np.ndarray
    site_p_kw: np.ndarray
    n_infeasible: int
    n_cap_limited: int


_ARRAY_RULES = {
    1: ("need_kwh", "must be in [0, 1e9] [kWh]"),
    2: ("t_dep_s", "must be in (0, 1e12] [s]"),
    3: ("p_max_kw", "must be in [0, 1e9] [kW]"),
    4: ("p_min_kw", "must be in [-1e9, 0] [kW]"),
    5: ("p_rate_kw", "must be in [0, 1e9] [kW]"),
    6: ("site", "must be a site index in [0, {n_site})"),
    7: ("site_cap_kw", "must be in [0, 1e9] [kW]"),
    8: ("site_pv_kw", "must be in [0, 1e9] [kW]"),
}
"""Per argument code of the kernels: name and rule (NaN and infinities break every rule)."""


def _float_array(name: str, values: ArrayLike) -> np.ndarray:
    try:
        arr = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: must be an array of numbers ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name}: must be one-dimensional, got shape {arr.shape}")
    return arr


def _index_array(name: str, values: ArrayLike) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: must be one-dimensional, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{name}: must hold integer site indices, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _scalar(name: str, value: float, low: float, high: float, low_open: bool,
            rule: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a number, got {value!r}") from None
    ok = np.isfinite(x) and (x > low if low_open else x >= low) and x <= high
    if not ok:
        raise ValueError(f"{name}: {rule}, got {value!r}")
    return x


def allocate(need_kwh: ArrayLike, t_dep_s: ArrayLike, p_max_kw: ArrayLike, p_min_kw: ArrayLike,
             site: ArrayLike, site_cap_kw: ArrayLike, site_pv_kw: ArrayLike,
             grid_budget_kw: float, step_s: float, eta_ch: float, eta_dis: float, *,
             p_rate_kw: ArrayLike | None = None,
             backend: Backend = "auto") -> tuple[np.ndarray, DispatchInfo]:
    """Share one step's power among the plugged EVs of a zone.

    Priorities: (1) each EV gets its mandatory power, the least it must take now to still meet
    its need by departure at full power afterwards (clamped to ``p_max_kw``), even beyond the
    grid budget but never beyond its site's capacity (the rest is reported as shortfall);
    (2) each site's PV surplus goes to its EVs that still need energy; (3) a positive grid
    budget, less the mandatory power PV does not cover, is shared across all sites; (4) a
    negative budget asks for ``-grid_budget_kw`` of V2G discharge from EVs that do not charge,
    the ones with the most laxity first, never so much that a departure need becomes
    infeasible. Each sharing is least laxity first with water-filling (equal laxity after the
    step for EVs not at a bound); no EV charges beyond its remaining need.

    Parameters
    ----------
    need_kwh : array_like, shape (N,)
        Battery-side energy each EV still needs by its departure, >= 0. [kWh]
    t_dep_s : array_like, shape (N,)
        Time from the start of this step to each EV's departure, > 0. [s]
    p_max_kw : array_like, shape (N,)
        Most grid-side charge power over this step (taper and SoC limits included), >= 0. [kW]
    p_min_kw : array_like, shape (N,)
        Most discharge power over this step as a negative number; 0 for EVs that may not
        discharge (no V2G, or at their V2G SoC floor). [kW]
    site : array_like of int, shape (N,)
        Site index of each EV, in ``[0, S)``.
    site_cap_kw : array_like, shape (S,)
        Connection capacity of each site: its EVs' net power stays within ``±site_cap_kw``. [kW]
    site_pv_kw : array_like, shape (S,)
        Local PV surplus available to each site's EVs this step, >= 0. [kW]
    grid_budget_kw : float
        Grid import (beyond local PV) the zone allows for EV charging this step; negative asks
        the EVs to deliver ``-grid_budget_kw`` by discharging (peak shaving). [kW]
    step_s : float
        Step length, > 0. [s]
    eta_ch, eta_dis : float
        Grid-to-battery and battery-to-grid efficiencies, in (0, 1]. [-]
    p_rate_kw : array_like, shape (N,), optional
        Charge power each EV is assumed to take in later steps (e.g. its charger's rating when
        ``p_max_kw`` is reduced by taper or a full battery); values below ``p_max_kw`` are
        raised to it. Laxity and departure feasibility use it. Default: ``p_max_kw``. [kW]
    backend : {"auto", "compiled", "numpy"}
        Kernel to use; see :func:`kernel_module`.

    Returns
    -------
    p_kw : numpy.ndarray, shape (N,)
        Mean grid-side power of each EV over the step, ``p_min_kw <= p_kw <= p_max_kw``. [kW]
    info : DispatchInfo
        Totals and per-site figures of the allocation.

    Raises
    ------
    ValueError
        An argument is malformed (NaN, out of range, wrong length or dimension); the message
        names it, the rule and the first offending element.

    Notes
    -----
    Laxity is ``t_dep - need / (eta_ch * p_rate)``: how long an EV can still wait before it
    must charge at full power, assuming ``p_rate_kw`` for the rest of its stay. The mandatory
    power is what keeps the laxity at the end of the step at least 0 (all of the remaining need
    when the EV leaves within the step). Each site's PV surplus covers its EVs' charging first,
    mandatory power included, so only mandatory power PV does not cover draws on the grid budget
    (``grid_kw`` is charging beyond the PV surplus, summed over sites). A site's capacity bounds
    the net power of its EVs whatever feeds them. Discharge is asked only of V2G EVs that do not
    charge (a charge power of at most 1e-9 kW counts as none); it never makes a departure need
    infeasible, i.e. it stops where the laxity after the step reaches 0. Charge rates below
    1e-9 kW count as 0, and laxities are held within +-1e9 h.
    """
    need = _float_array("need_kwh", need_kwh)
    n = need.size
    arrays = {"need_kwh": need}
    for name, values in (("t_dep_s", t_dep_s), ("p_max_kw", p_max_kw), ("p_min_kw", p_min_kw)):
        arrays[name] = _float_array(name, values)
    arrays["p_rate_kw"] = (arrays["p_max_kw"] if p_rate_kw is None
                           else _float_array("p_rate_kw", p_rate_kw))
    site_idx = _index_array("site", site)
    for name, arr in (*arrays.items(), ("site", site_idx)):
        if arr.size != n:
            raise ValueError(f"{name}: has {arr.size} values, need_kwh has {n} (one per EV)")
    cap = _float_array("site_cap_kw", site_cap_kw)
    pv = _float_array("site_pv_kw", site_pv_kw)
    if pv.size != cap.size:
        raise ValueError(f"site_pv_kw: has {pv.size} values, site_cap_kw has {cap.size} "
                         "(one per site)")
    budget = _scalar("grid_budget_kw", grid_budget_kw, -1e12, 1e12, False,
                     "must be in [-1e12, 1e12] [kW]")
    step = _scalar("step_s", step_s, 1e-3, 1e9, False, "must be in [0.001, 1e9] [s]")
    eta_c = _scalar("eta_ch", eta_ch, 0.0, 1.0, True, "must be in (0, 1]")
    eta_d = _scalar("eta_dis", eta_dis, 0.0, 1.0, True, "must be in (0, 1]")

    kernel = kernel_module(backend)
    p = np.empty(n)
    site_out = np.empty((3, cap.size))
    totals = np.empty(kernel.N_TOTALS)
    code, bad = kernel.allocate_into(need, arrays["t_dep_s"], arrays["p_max_kw"],
                                     arrays["p_min_kw"], arrays["p_rate_kw"], site_idx, cap, pv,
                                     budget, step, eta_c, eta_d, p, site_out, totals)
    if code:
        name, rule = _ARRAY_RULES[code]
        values = {"site": site_idx, "site_cap_kw": cap, "site_pv_kw": pv, **arrays}[name]
        raise ValueError(f"{name}: {rule.format(n_site=cap.size)}; element {bad} is "
                         f"{values[bad].item()!r}")
    info = DispatchInfo(
        mandatory_kw=float(totals[0]), grid_kw=float(totals[1]),
        discharge_kw=float(totals[2]), charge_kw=float(totals[3]),
        pv_used_kw=site_out[0], site_shortfall_kw=site_out[1], site_p_kw=site_out[2],
        n_infeasible=int(totals[4]), n_cap_limited=int(totals[5]),
    )
    return p, info


_CHARGE_RULES = {
    "need_kwh": "must be in [0, 1e9] [kWh]",
    "restore_kwh": "must be in [0, 1e9] [kWh]",
    "room_kwh": "must be in [0, 1e9] [kWh]",
    "t_dep_s": "must be in (0, 1e12] [s]",
    "p_max_kw": "must be in [0, 1e9] [kW]",
    "site": "must be a site index in [0, {n_site})",
    "site_cap_kw": "must be in [0, 1e9] [kW]",
    "pv_kw": "must be in [0, 1e9] [kW]",
    "pv_forecast_kw": "must be in [-1e9, 1e9] [kW]",
}
"""Per array argument of ``charge_into`` (:data:`ext.dispatch_np.CHARGE_ARRAYS`): its rule."""


def charge_error(code: int, index: int, arrays: dict[str, np.ndarray]) -> ValueError:
    """The error of a ``charge_into`` call that returned ``(code, index)``, naming the argument
    (``arrays``: its array arguments by name), its rule and the offending element."""
    if not 1 <= code <= len(CHARGE_ARRAYS):
        return ValueError(f"charge_into: an allocation refused the powers or energies worked "
                          f"out for EV {index} (margins put a need beyond 1e9 kWh?)")
    name = CHARGE_ARRAYS[code - 1]
    rule = _CHARGE_RULES[name].format(n_site=arrays["site_cap_kw"].size)
    return ValueError(f"{name}: {rule}; element {index} is {arrays[name][index].item()!r}")
