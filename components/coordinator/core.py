"""What every strategy sees and returns, and the allocation helpers they share.

A strategy gets a :class:`Snapshot` of step ``k`` (the EVs plugged at ``t_k``, PV and factory
power of step ``k``, the grid state after step ``k - 1``, prices and look-ahead) and returns
:class:`Setpoints`: a mean power per plugged EV for step ``k`` and PV / factory set-points that
take effect at step ``k + 1`` (see :mod:`components.coordinator.simulator` for why).

Sign convention (load convention, :mod:`components.base`): EV power is positive when charging,
negative when discharging; PV generation ``pv_kw`` is counted positive here (generation), and
enters injections as ``-pv_kw``. Energies an EV needs are battery side, powers are grid side.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import ModuleType
from typing import Any

import numpy as np

from components.coordinator.config import CoordinatorConfig
from ext import dispatch_np
from ext.dispatch_api import DispatchInfo, allocate, kernel_module

_EPS_KW = 1e-9


@dataclass(frozen=True)
class GridSensitivity:
    """Linear sensitivities of the grid state to the injections at a few buses.

    Columns follow ``ctrl_buses`` (the buses of sites, plants and factories), rows follow the
    grid simulator's ``bus_ids``, ``line_ids`` and ``trafo_ids``. Injections are in load
    convention: a positive ``dP`` draws more power, so ``dv_dp`` is mostly negative.

    Attributes
    ----------
    dv_dp, dv_dq : numpy.ndarray, shape (n_bus, n_ctrl)
        Voltage magnitude change per active / reactive power drawn [pu/kW], [pu/kvar].
    dline_dp, dline_dq : numpy.ndarray, shape (n_line, n_ctrl)
        Line loading change [%/kW], [%/kvar].
    dtrafo_dp, dtrafo_dq : numpy.ndarray, shape (n_trafo, n_ctrl)
        Transformer loading change [%/kW], [%/kvar].
    v_band_pu : tuple of float
        The grid's allowed voltage band [pu].
    """

    bus_ids: np.ndarray
    line_ids: np.ndarray
    trafo_ids: np.ndarray
    ctrl_buses: np.ndarray
    dv_dp: np.ndarray
    dv_dq: np.ndarray
    dline_dp: np.ndarray
    dline_dq: np.ndarray
    dtrafo_dp: np.ndarray
    dtrafo_dq: np.ndarray
    v_band_pu: tuple[float, float]

    ARRAYS = ("bus_ids", "line_ids", "trafo_ids", "ctrl_buses", "dv_dp", "dv_dq", "dline_dp",
              "dline_dq", "dtrafo_dp", "dtrafo_dq")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridSensitivity:
        """Build from plain data (lists or arrays), checking the shapes."""
        missing = [k for k in (*cls.ARRAYS, "v_band_pu") if k not in data]
        if missing:
            raise ValueError(f"grid: missing {missing}")
        arrays = {k: np.asarray(data[k], dtype=np.int64 if k.endswith(("_ids", "_buses"))
                                else float) for k in cls.ARRAYS}
        n_ctrl = arrays["ctrl_buses"].size
        for rows, names in (("bus_ids", ("dv_dp", "dv_dq")),
                            ("line_ids", ("dline_dp", "dline_dq")),
                            ("trafo_ids", ("dtrafo_dp", "dtrafo_dq"))):
            for name in names:
                shape = (arrays[rows].size, n_ctrl)
                arrays[name] = arrays[name].reshape(shape) if arrays[name].size == 0 \
                    else arrays[name]
                if arrays[name].shape != shape:
                    raise ValueError(f"grid.{name}: shape {arrays[name].shape}, expected {shape} "
                                     f"({rows} x ctrl_buses)")
                if not np.isfinite(arrays[name]).all():
                    raise ValueError(f"grid.{name}: has non-finite values")
        lo, hi = (float(v) for v in data["v_band_pu"])
        return cls(**arrays, v_band_pu=(lo, hi))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists) for a mosaik ``create`` call."""
        out: dict[str, Any] = {k: getattr(self, k).tolist() for k in self.ARRAYS}
        out["v_band_pu"] = list(self.v_band_pu)
        return out

    def columns(self, buses: np.ndarray) -> np.ndarray:
        """Column of each bus in ``buses`` (every one must be a control bus)."""
        pos = np.searchsorted(self.ctrl_buses, buses)
        pos = np.minimum(pos, self.ctrl_buses.size - 1)
        if self.ctrl_buses.size == 0 or np.any(self.ctrl_buses[pos] != buses):
            bad = sorted(set(np.asarray(buses).tolist()) - set(self.ctrl_buses.tolist()))
            raise ValueError(f"grid: bus(es) {bad} have no sensitivities (ctrl_buses)")
        return pos


@dataclass(frozen=True)
class ZoneLayout:
    """The static description of a zone as the coordinator sees it (arrays in config order)."""

    site_names: tuple[str, ...]
    site_bus: np.ndarray
    site_charge_kw: np.ndarray
    """Sum of the charge power of a site's charging points [kW]."""
    site_discharge_kw: np.ndarray
    """Sum of the discharge power of a site's bidirectional charging points [kW]."""
    site_point_kw: np.ndarray
    """Mean charge power of one charging point of a site [kW]."""
    plant_names: tuple[str, ...]
    plant_bus: np.ndarray
    plant_inverter_kw: np.ndarray
    plant_kwp: np.ndarray
    factory_names: tuple[str, ...]
    factory_bus: np.ndarray
    n_ev: int
    eta_ch: float
    eta_dis: float
    min_soc_v2g: float
    soc_max: float
    ev_capacity_kwh: np.ndarray | None
    latitude_deg: float
    longitude_deg: float
    grid: GridSensitivity | None

    # cached: read several times a step
    @cached_property
    def n_sites(self) -> int:
        return len(self.site_names)

    @cached_property
    def n_plants(self) -> int:
        return len(self.plant_names)

    @cached_property
    def n_factories(self) -> int:
        return len(self.factory_names)

    @cached_property
    def site_bus_groups(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per bus with sites and PV plants, in bus order: the indices of its sites and of
        its plants (see :func:`pv_by_site`)."""
        return [(np.flatnonzero(self.site_bus == bus), np.flatnonzero(self.plant_bus == bus))
                for bus in np.unique(self.site_bus).tolist()
                if (self.plant_bus == bus).any()]

    @cached_property
    def shared_site_bus(self) -> bool:
        """Whether a bus of :attr:`site_bus_groups` has more than one site (they share its PV
        by weight, see :func:`pv_by_site`)."""
        return any(here.size > 1 for here, _ in self.site_bus_groups)

    @cached_property
    def pv_groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:attr:`site_bus_groups` as arrays: the start of each group's sites and its sites,
        the start of each group's plants and its plants (see
        :func:`ext.dispatch_np.pv_by_site`)."""
        return group_arrays(self.site_bus_groups)

    @classmethod
    def from_params(cls, n_ev: int, sites: Sequence[dict], plants: Sequence[dict] = (),
                    factories: Sequence[dict] = (), ev: dict | None = None,
                    location: dict | None = None, grid: dict | None = None) -> ZoneLayout:
        """Check and convert the plain-data parameters of the coordinator's ``create``.

        Parameters
        ----------
        n_ev : int
            Number of EVs of the fleet (length of ``p_set_kw``).
        sites : sequence of dict
            Per charging site: ``name``, ``bus`` (int), ``charge_kw`` (sum over its charging
            points) [kW], ``discharge_kw`` [kW] and ``n_chargers``.
        plants : sequence of dict
            Per PV plant: ``name``, ``bus``, ``inverter_kw`` [kW], ``kwp`` [kWp].
        factories : sequence of dict
            Per factory: ``name``, ``bus``.
        ev : dict, optional
            ``charge_efficiency``, ``discharge_efficiency``, ``min_soc_v2g``, ``soc_max`` [-]
            and, optional, ``capacity_kwh`` (one value per EV) [kWh].
        location : dict, optional
            ``latitude_deg``, ``longitude_deg`` of the zone (for the PV forecast's sun path).
        grid : dict, optional
            :meth:`GridSensitivity.to_dict` data; needed by ``grid_aware``.
        """
        if int(n_ev) < 0:
            raise ValueError(f"n_ev: must be >= 0, got {n_ev}")
        if not sites:
            raise ValueError("sites: the coordinator needs at least one charging site")
        for i, s in enumerate(sites):
            for key in ("name", "bus", "charge_kw", "n_chargers"):
                if key not in s:
                    raise ValueError(f"sites[{i}]: missing {key!r}")
            if int(s["n_chargers"]) <= 0 or float(s["charge_kw"]) <= 0:
                raise ValueError(
                    f"sites[{i}].chargers: site {s['name']!r} has no charger; every charging "
                    "site of a coordinated zone needs at least one charging point")
        for i, p in enumerate(plants):
            for key in ("name", "bus", "inverter_kw", "kwp"):
                if key not in p:
                    raise ValueError(f"plants[{i}]: missing {key!r}")
            if not float(p["inverter_kw"]) > 0:
                raise ValueError(f"plants[{i}].inverter_kw: must be > 0 [kW]")
        ev = dict(ev or {})
        cap = ev.get("capacity_kwh")
        cap_arr = None
        if cap is not None:
            cap_arr = np.asarray(cap, dtype=float)
            if cap_arr.shape != (int(n_ev),) or not (cap_arr > 0).all():
                raise ValueError(f"ev.capacity_kwh: need {n_ev} values > 0 [kWh]")
        eta_ch = float(ev.get("charge_efficiency", 0.92))
        eta_dis = float(ev.get("discharge_efficiency", 0.92))
        for name, eta in (("charge_efficiency", eta_ch), ("discharge_efficiency", eta_dis)):
            if not 0 < eta <= 1:
                raise ValueError(f"ev.{name}: must be in (0, 1], got {eta}")
        n_ch = np.array([int(s["n_chargers"]) for s in sites], dtype=float)
        charge_kw = np.array([float(s["charge_kw"]) for s in sites])
        loc = location or {}
        return cls(
            site_names=tuple(str(s["name"]) for s in sites),
            site_bus=np.array([int(s["bus"]) for s in sites], dtype=np.int64),
            site_charge_kw=charge_kw,
            site_discharge_kw=np.array([float(s.get("discharge_kw", 0.0)) for s in sites]),
            site_point_kw=charge_kw / n_ch,
            plant_names=tuple(str(p["name"]) for p in plants),
            plant_bus=np.array([int(p["bus"]) for p in plants], dtype=np.int64),
            plant_inverter_kw=np.array([float(p["inverter_kw"]) for p in plants]),
            plant_kwp=np.array([float(p["kwp"]) for p in plants]),
            factory_names=tuple(str(f["name"]) for f in factories),
            factory_bus=np.array([int(f["bus"]) for f in factories], dtype=np.int64),
            n_ev=int(n_ev), eta_ch=eta_ch, eta_dis=eta_dis,
            min_soc_v2g=float(ev.get("min_soc_v2g", 0.4)), soc_max=float(ev.get("soc_max", 1.0)),
            ev_capacity_kwh=cap_arr,
            latitude_deg=float(loc.get("latitude_deg", 29.56)),
            longitude_deg=float(loc.get("longitude_deg", 106.55)),
            grid=None if grid is None else GridSensitivity.from_dict(grid),
        )


@dataclass(frozen=True)
class PluggedEVs:
    """The EVs plugged at the start of the step, as the EV fleet reports them.

    ``t_dep_s`` counts from the start of this step (> 0); ``p_rate_kw`` is the charge power an
    EV was last seen to take (its charger and car limit), used where ``p_max_kw`` is reduced by a
    full battery; ``p_dis_rate_kw`` likewise for discharge (0 for EVs that may not discharge).
    ``restore_kwh`` is the battery energy the coordinator has taken from an EV (net) since it
    plugged in: V2G returns it before departure, so a user never leaves with less energy than
    they arrived with (or than they need, whichever is more). ``room_kwh`` is the battery energy
    to full (``soc_max`` of the zone times the EV's capacity), or the need when capacities are
    unknown.
    """

    ids: np.ndarray
    site: np.ndarray
    soc: np.ndarray
    need_kwh: np.ndarray
    t_dep_s: np.ndarray
    p_max_kw: np.ndarray
    p_min_kw: np.ndarray
    v2g: np.ndarray
    p_rate_kw: np.ndarray
    p_dis_rate_kw: np.ndarray
    restore_kwh: np.ndarray
    room_kwh: np.ndarray

    @property
    def n(self) -> int:
        return int(self.ids.size)

    @classmethod
    def empty(cls) -> PluggedEVs:
        z = np.zeros(0)
        i = np.zeros(0, dtype=np.int64)
        return cls(i, i, z, z, z, z, z, np.zeros(0, dtype=bool), z, z, z, z)


@dataclass(frozen=True)
class GridState:
    """The grid after the previous step's power flow (arrays follow the grid's id lists)."""

    vm_pu: np.ndarray
    line_loading_pct: np.ndarray
    trafo_loading_pct: np.ndarray
    import_kw: float


@dataclass(frozen=True)
class Prices:
    """Prices of one step [CNY/kWh]; ``period`` indexes :data:`.tariffs.PERIODS`."""

    grid: float
    pv_local: float
    feed_in: float
    v2g: float
    period: int


@dataclass
class Snapshot:
    """Everything a strategy may use to decide step ``k``.

    Attributes
    ----------
    base_import_kw : float
        Predicted zone import of step ``k`` without the EVs: the last power flow's import, less
        the EVs' power then, plus the known changes of PV and factory power since [kW]; NaN
        before any grid state has arrived.
    ctrl_p_kw, ctrl_q_kvar : numpy.ndarray or None
        Known injections of step ``k`` per control bus of ``zone.grid`` (PV, factories; EVs
        excluded), load convention [kW], [kvar].
    prev_ctrl_p_kw, prev_ctrl_q_kvar : numpy.ndarray or None
        The injections of step ``k - 1`` per control bus, EVs included (those the grid state
        results from) [kW], [kvar].
    peak_import_kw : float
        Highest zone import observed so far in the run [kW] (-inf before any).
    lookahead : Lookahead
        Prices and forecasts of the coming steps.
    """

    k: int
    step_s: float
    zone: ZoneLayout
    ev: PluggedEVs
    pv_avail_kw: np.ndarray
    pv_kw: np.ndarray
    pv_q_kvar: np.ndarray
    factory_p_kw: np.ndarray
    factory_deferrable_kw: np.ndarray
    grid: GridState | None
    base_import_kw: float
    ctrl_p_kw: np.ndarray | None
    ctrl_q_kvar: np.ndarray | None
    prev_ctrl_p_kw: np.ndarray | None
    prev_ctrl_q_kvar: np.ndarray | None
    peak_import_kw: float
    prices: Prices
    lookahead: Lookahead

    @property
    def dt_h(self) -> float:
        return self.step_s / 3600.0


@dataclass
class Lookahead:
    """Prices and forecasts from step ``k`` on; index 0 is step ``k`` itself.

    ``pv_kw(h)`` and ``base_import_kw(h)`` are callables returning ``h`` values: the zone's PV
    generation [kW] and its import without EVs [kW]; the first value is the one of step ``k``.
    """

    grid_price: np.ndarray
    pv_price: np.ndarray
    v2g_price: np.ndarray
    period: np.ndarray
    pv_kw: Callable[[int], np.ndarray]
    base_import_kw: Callable[[int], np.ndarray]


@dataclass
class Setpoints:
    """A strategy's decision.

    ``p_kw`` is the mean power of each plugged EV over step ``k`` (NaN: uncontrolled, the EV
    charges at its maximum). ``curtail_kw`` (upper limit of each plant's output), ``q_kvar``
    (each plant's reactive power, load convention) and ``shed_kw`` (per factory) apply from step
    ``k + 1``; None means no limit, zero reactive power and no shedding.
    """

    p_kw: np.ndarray
    curtail_kw: np.ndarray | None = None
    q_kvar: np.ndarray | None = None
    shed_kw: np.ndarray | None = None
    peak_threshold_kw: float = float("nan")
    info: dict[str, float] = field(default_factory=dict)


class Strategy(ABC):
    """A dispatch strategy; registered by name in :data:`.strategies.STRATEGIES`."""

    def __init__(self, cfg: CoordinatorConfig, zone: ZoneLayout, step_s: float) -> None:
        self.cfg = cfg
        self.zone = zone
        self.step_s = float(step_s)

    @abstractmethod
    def decide(self, snap: Snapshot) -> Setpoints:
        """Set-points for step ``k`` (EVs) and ``k + 1`` (PV, factories)."""


# ------------------------------------------------------------------------------------------
# Helpers shared by the strategies
# ------------------------------------------------------------------------------------------


def planned_need_kwh(ev: PluggedEVs, cfg: CoordinatorConfig) -> np.ndarray:
    """Battery-side energy to plan for: the EV's need, at least the energy V2G took from it
    since it plugged in, plus ``need_margin`` [kWh]."""
    return np.maximum(ev.need_kwh, ev.restore_kwh) * (1.0 + cfg.need_margin)


def planned_t_dep_s(ev: PluggedEVs, cfg: CoordinatorConfig, step_s: float) -> np.ndarray:
    """Time to departure less ``departure_margin_s``, at least one step [s]."""
    return np.maximum(ev.t_dep_s - cfg.departure_margin_s, step_s)


def group_arrays(groups: list[tuple[np.ndarray, np.ndarray]]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Groups of (sites, plants) as the start of each group's sites, all their sites, the start
    of each group's plants and all their plants (int64)."""
    def flat(members: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        start = np.cumsum([0, *(m.size for m in members)], dtype=np.int64)
        return start, np.concatenate([np.zeros(0, np.int64), *members]).astype(np.int64)

    return (*flat([here for here, _ in groups]), *flat([plants for _, plants in groups]))


def pv_by_site(pv_kw: np.ndarray, plant_bus: np.ndarray, site_bus: np.ndarray,
               weight: np.ndarray | None,
               groups: list[tuple[np.ndarray, np.ndarray]] | None = None
               ) -> tuple[np.ndarray, float]:
    """Share each bus's PV among the sites on that bus; return (per site [kW], pool [kW]).

    Sites on one bus share its PV in proportion to ``weight`` (equally if all weights are 0;
    None will do where no two sites share a bus with PV, :attr:`ZoneLayout.shared_site_bus`);
    PV on buses without a site forms the zone pool. ``groups``: the zone's
    :attr:`ZoneLayout.site_bus_groups` (worked out from the buses when not given).
    """
    if groups is None:
        groups = [(np.flatnonzero(site_bus == bus), np.flatnonzero(plant_bus == bus))
                  for bus in np.unique(site_bus).tolist()]
    return dispatch_np.pv_by_site(np.asarray(pv_kw, dtype=float), *group_arrays(groups),
                                  weight, site_bus.size)


def site_sum(site: np.ndarray, values: np.ndarray, n_sites: int) -> np.ndarray:
    """Sum of ``values`` per site [same unit]."""
    return np.bincount(site, weights=values, minlength=n_sites)


def distinct(index: np.ndarray | None) -> bool:
    """Whether no index repeats (False for None)."""
    return index is not None and np.unique(index).size == index.size


def add_at(target: np.ndarray, index: np.ndarray, values: np.ndarray, distinct: bool) -> None:
    """``numpy.add.at(target, index, values)``; ``distinct``: no index repeats, so that one
    vectorised addition is the same sum."""
    if distinct:
        target[index] += values
    else:
        np.add.at(target, index, values)


_PURE_PYTHON_ENV = "SDG_TWIN_PURE_PYTHON"
_kernels: dict[str, ModuleType] = {}


def dispatch_kernel() -> ModuleType:
    """The kernel :func:`ext.dispatch_api.allocate` would use now (looked up once per choice):
    ``ext.dispatch`` or its NumPy twin."""
    choice = os.environ.get(_PURE_PYTHON_ENV, "")
    kernel = _kernels.get(choice)
    if kernel is None:
        kernel = _kernels[choice] = kernel_module("auto")
    return kernel


def dispatch(need_kwh: np.ndarray, t_dep_s: np.ndarray, p_max_kw: np.ndarray,
             p_min_kw: np.ndarray, site: np.ndarray, site_cap_kw: np.ndarray,
             site_pv_kw: np.ndarray, grid_budget_kw: float, step_s: float, eta_ch: float,
             eta_dis: float, *, p_rate_kw: np.ndarray | None = None
             ) -> tuple[np.ndarray, DispatchInfo]:
    """:func:`ext.dispatch_api.allocate`, same arguments and results, for the coordinator's
    own arrays.

    Float64 (``site``: int64) one-dimensional contiguous arrays go straight to the kernel,
    which checks every value and the lengths itself; anything it refuses (a value out of
    range, another dtype or layout, a scalar out of range) goes through
    :func:`~ext.dispatch_api.allocate`, which coerces what it can and raises its error.
    """
    budget = float(grid_budget_kw)
    if -1e12 <= budget <= 1e12 and 1e-3 <= step_s <= 1e9 and 0.0 < eta_ch <= 1.0 \
            and 0.0 < eta_dis <= 1.0:
        kernel = dispatch_kernel()
        p_rate = p_max_kw if p_rate_kw is None else p_rate_kw
        p = np.empty(len(need_kwh))
        site_out = np.empty((3, len(site_cap_kw)))
        totals = np.empty(kernel.N_TOTALS)
        try:
            code, _ = kernel.allocate_into(need_kwh, t_dep_s, p_max_kw, p_min_kw, p_rate, site,
                                           site_cap_kw, site_pv_kw, budget, float(step_s),
                                           float(eta_ch), float(eta_dis), p, site_out, totals)
        except (ValueError, TypeError, AttributeError):
            code = -1
        if code == 0:
            t = totals.tolist()
            return p, DispatchInfo(
                mandatory_kw=t[0], grid_kw=t[1], discharge_kw=t[2], charge_kw=t[3],
                pv_used_kw=site_out[0], site_shortfall_kw=site_out[1], site_p_kw=site_out[2],
                n_infeasible=int(t[4]), n_cap_limited=int(t[5]))
    return allocate(need_kwh, t_dep_s, p_max_kw, p_min_kw, site, site_cap_kw, site_pv_kw,
                    grid_budget_kw, step_s, eta_ch, eta_dis, p_rate_kw=p_rate_kw)


def allocate_evs(ev: PluggedEVs, cfg: CoordinatorConfig, zone: ZoneLayout, step_s: float,
                 site_pv_kw: np.ndarray, grid_budget_kw: float, *,
                 need_kwh: np.ndarray | None = None, t_dep_s: np.ndarray | None = None,
                 p_max_kw: np.ndarray | None = None, p_min_kw: np.ndarray | None = None,
                 p_rate_kw: np.ndarray | None = None,
                 site_cap_kw: np.ndarray | None = None) -> tuple[np.ndarray, DispatchInfo]:
    """:func:`dispatch` on the plugged EVs with the coordinator's margins.

    Defaults: planned need and departure (margins applied), the EVs' own bounds, the sites'
    charging capacity. V2G discharge happens only where ``p_min_kw`` is given.
    """
    p_max = ev.p_max_kw if p_max_kw is None else p_max_kw
    return dispatch(
        planned_need_kwh(ev, cfg) if need_kwh is None else need_kwh,
        planned_t_dep_s(ev, cfg, step_s) if t_dep_s is None else t_dep_s,
        p_max,
        np.zeros(ev.n) if p_min_kw is None else p_min_kw,
        ev.site,
        zone.site_charge_kw if site_cap_kw is None else site_cap_kw,
        site_pv_kw,
        float(grid_budget_kw), step_s, zone.eta_ch, zone.eta_dis,
        p_rate_kw=p_max if p_rate_kw is None else np.maximum(p_rate_kw, p_max),
    )


def _offpeak_flags(offpeak: np.ndarray, period: np.ndarray) -> bytes:
    """Whether each step of ``period`` is off-peak (``offpeak``: bool per period code), as
    bytes 1 or 0: :func:`_first` searches them without a NumPy call per question."""
    return offpeak.take(period).tobytes()


def _first(flags: bytes, value: bool, start: int = 0) -> int:
    """Index of the first of ``flags`` (:func:`_offpeak_flags`) from ``start`` on that equals
    ``value``; the number of flags if none does."""
    i = flags.find(b"\x01" if value else b"\x00", start)
    return len(flags) if i < 0 else i


def offpeak_steps(period: np.ndarray, offpeak: np.ndarray) -> int:
    """Number of consecutive off-peak steps from the first one of ``period`` (0 if on-peak);
    ``offpeak``: bool per period code."""
    if period.size == 0 or not offpeak[period[0]]:  # on-peak now, as most steps are
        return 0
    return _first(_offpeak_flags(offpeak, period), False)


class FillWindow:
    """Which departures count as "in the morning": within the current or next off-peak window
    or up to a margin after it ends, in steps from now; it remembers the window that ended
    last, so that departures in the margin after it still count.
    """

    def __init__(self, offpeak: np.ndarray, margin_steps: float) -> None:
        self.offpeak = np.asarray(offpeak, dtype=bool)
        self.margin = float(margin_steps)
        self._last_end_k: int | None = None

    def steps(self, k: int, period: np.ndarray) -> tuple[float, float] | None:
        """``(first, last)`` step offsets of departures that count at step ``k``; ``period``
        holds the tariff period codes from step ``k`` on. None if there is no window."""
        off = _offpeak_flags(self.offpeak, period)
        if off and off[0]:
            end = _first(off, False)
            self._last_end_k = k + end
            return 0.0, end + self.margin
        if self._last_end_k is not None and k < self._last_end_k + self.margin:
            return 0.0, self._last_end_k + self.margin - k
        first = _first(off, True)
        if first == len(off):
            return None
        return float(first), _first(off, False, first) + self.margin


def retarget(p: np.ndarray, lo: np.ndarray, hi: np.ndarray, site: np.ndarray,
             target_kw: np.ndarray) -> np.ndarray:
    """Move each site's EV powers toward ``target_kw`` (site sums), in proportion to the room.

    Every EV keeps within ``[lo, hi]``; a site whose target lies outside its reachable range
    ends at the nearest end of it.
    """
    n_sites = target_kw.size
    p = np.clip(p, lo, hi)
    now = site_sum(site, p, n_sites)
    up_room = site_sum(site, hi - p, n_sites)
    down_room = site_sum(site, p - lo, n_sites)
    delta = target_kw - now
    f_up = np.divide(np.maximum(delta, 0.0), up_room, out=np.zeros(n_sites),
                     where=up_room > _EPS_KW)
    f_down = np.divide(np.maximum(-delta, 0.0), down_room, out=np.zeros(n_sites),
                       where=down_room > _EPS_KW)
    f_up, f_down = np.minimum(f_up, 1.0), np.minimum(f_down, 1.0)
    return p + (hi - p) * f_up[site] - (p - lo) * f_down[site]


def discharge_floor_kw(ev: PluggedEVs, cfg: CoordinatorConfig, step_s: float, eta_ch: float,
                       eta_dis: float) -> np.ndarray:
    """Most negative power of each EV that keeps its departure need feasible [kW].

    An EV discharging ``d`` now must recharge ``d * dt / eta_dis`` more later, at the rate it
    was last seen to charge, and still finish ``v2g_reserve_h`` before its planned departure.
    0 for EVs that may not discharge or have no slack.
    """
    dt_h = step_s / 3600.0
    t_h = (planned_t_dep_s(ev, cfg, step_s) / 3600.0) - cfg.v2g_reserve_h
    after_h = np.maximum(t_h - dt_h, 0.0)
    room_kwh = eta_ch * np.maximum(ev.p_rate_kw, ev.p_max_kw) * after_h \
        - planned_need_kwh(ev, cfg)
    d_max = np.maximum(room_kwh, 0.0) * eta_dis / dt_h
    return -np.minimum(-ev.p_min_kw, d_max) * (t_h > dt_h)
