"""The distribution grid: a pandapower network, its background profiles and one power flow a step.

The twin's own devices (PV, EVs, factories) inject at buses in load convention (positive = drawn
from the grid, see ``components.base``); everything else the network already contains (its loads,
static generators, storage) is the *background*, driven by the SimBench one-year profiles when
the network has them.

Two solvers give the same results (``solver``):

- ``"compiled"`` (default): the network is converted once to arrays
  (:class:`ext.powerflow_net.PowerFlowNetwork`); a step sums the background and injection powers
  per bus and solves them with the compiled kernel, warm-started from the last good voltages.
  It models lines, two-winding transformers, switches, external grids, loads, static
  generators, storage and shunts; a network with other elements is refused at set-up.
- ``"pandapower"`` (reference): the injections enter the network as one pandapower load per
  injection bus; a step writes the power columns and runs ``pandapower.runpp``. Slower, but it
  models every element pandapower does.

Either way the network is converted once at set-up: element positions, profile rows and the
output selection become index arrays.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandapower as pp
import pandapower.topology as top
import pandas as pd
from scipy.sparse.linalg import MatrixRankWarning

from components.base import BusRef
from components.grid.config import (
    SOLVERS,
    GridConfig,
    pandapower_network_names,
    simbench_codes,
)
from ext.powerflow_net import PowerFlowNetwork, UnsupportedNetworkError

if TYPE_CHECKING:
    from pandapower import pandapowerNet

PROFILE_STEP_S = 900
"""Resolution of the SimBench profiles. [s]"""

_ROWS_PER_DAY = 86_400 // PROFILE_STEP_S

INJECTION_LOAD_TYPE = "twin_injection"
"""``net.load.type`` of the loads the pandapower solver adds for the twin's injections."""

# (element, column) pairs the SimBench profiles drive.
_PROFILED = (("load", "p_mw"), ("load", "q_mvar"), ("sgen", "p_mw"), ("gen", "p_mw"),
             ("storage", "p_mw"))

# Result tables that dissipate active power, and the column holding it. [MW]
_LOSS_COLUMNS = (("res_line", "pl_mw"), ("res_trafo", "pl_mw"), ("res_trafo3w", "pl_mw"),
                 ("res_impedance", "pl_mw"), ("res_dcline", "pl_mw"), ("res_tcsc", "pl_mw"),
                 ("res_shunt", "p_mw"))
# Background consumers and producers besides net.load / net.sgen. [MW, load / generator sign]
_EXTRA_LOAD_TABLES = ("res_motor", "res_asymmetric_load", "res_ward", "res_xward")
_GEN_TABLES = ("res_sgen", "res_gen", "res_asymmetric_sgen")


# --------------------------------------------------------------------------------------------
# Loading and addressing a network
# --------------------------------------------------------------------------------------------

def load_network(cfg: GridConfig) -> pandapowerNet:
    """Build the network a ``grid`` section describes.

    Parameters
    ----------
    cfg : GridConfig
        ``source`` picks ``simbench.get_simbench_net(code)``, ``pandapower.networks.<name>()``
        or ``pandapower.from_json(path)``.

    Returns
    -------
    pandapowerNet
        A fresh network; callers may modify it.

    Raises
    ------
    ValueError
        Naming the field (``code``, ``name``, ``path``) and what is allowed, when the network
        cannot be built, or when it has no in-service external grid; naming ``solver`` when
        ``solver: compiled`` cannot model the network (see :func:`compiled_network`), so that
        a scenario fails at validation rather than when its world is built.
    """
    loader = _LOADERS.get(cfg.source)
    if loader is None:
        raise ValueError(f"source: {cfg.source!r} is not one of {sorted(_LOADERS)}")
    field, net = loader(cfg)
    has_slack = net.ext_grid["in_service"].astype(bool).any() or (
        "slack" in net.gen and (net.gen["slack"].astype(bool)
                                & net.gen["in_service"].astype(bool)).any())
    if not has_slack:
        raise ValueError(f"{field}: network {getattr(cfg, field)!s} has no in-service ext_grid "
                         "(slack); add one or choose another network")
    if cfg.solver == "compiled":
        compiled_network(net)
    return net


def _simbench_net(cfg: GridConfig) -> tuple[str, pandapowerNet]:
    import simbench

    if cfg.code not in simbench_codes():
        raise ValueError(f"code: unknown SimBench code {cfg.code!r}, e.g. '1-MV-comm--0-sw'")
    return "code", simbench.get_simbench_net(cfg.code)


def _pandapower_net(cfg: GridConfig) -> tuple[str, pandapowerNet]:
    import pandapower.networks as pn

    if cfg.name not in pandapower_network_names():
        raise ValueError(f"name: {cfg.name!r} is not a pandapower.networks function callable "
                         "without arguments, e.g. 'case33bw', 'create_cigre_network_mv'")
    return "name", getattr(pn, cfg.name)()


def _json_net(cfg: GridConfig) -> tuple[str, pandapowerNet]:
    path = Path(cfg.path) if cfg.path is not None else None
    if path is None or not path.is_file():
        raise ValueError(f"path: file {str(path)!r} not found; give a pandapower JSON file")
    try:
        net = pp.from_json(str(path))
    except Exception as err:  # from_json raises many types for a foreign or broken file
        raise ValueError(f"path: {str(path)!r} is not a network written by pandapower.to_json "
                         f"({type(err).__name__}: {err})") from err
    if not isinstance(net, pp.pandapowerNet):
        raise ValueError(  # noqa: TRY004 - bad input, reported like the other path errors
            f"path: {str(path)!r} holds no pandapower network")
    return "path", net


_LOADERS = {"simbench": _simbench_net, "pandapower": _pandapower_net, "json": _json_net}


def resolve_bus(net: pandapowerNet, ref: BusRef) -> int:
    """Return the pandapower index of the in-service bus named by ``ref``.

    Parameters
    ----------
    net : pandapowerNet
        The network.
    ref : int or str
        A bus index (``net.bus.index``) or a bus name (``net.bus.name``, matched exactly).

    Raises
    ------
    ValueError
        Listing the indices and some names that exist when ``ref`` matches no bus, naming the
        candidates when a name is ambiguous, and when the bus is out of service.
    """
    if isinstance(ref, (bool, np.bool_)) or not isinstance(ref, (int, np.integer, str)):
        raise ValueError(  # noqa: TRY004 - a scenario error, reported like the others
            f"bus reference {ref!r}: give a bus index (int) or a bus name (str)")
    if isinstance(ref, str):
        hits = net.bus.index[net.bus["name"] == ref]
        if len(hits) == 0:
            names = [str(n) for n in net.bus["name"] if isinstance(n, str)]
            close = difflib.get_close_matches(ref, names, n=3, cutoff=0.6)
            hint = ("did you mean " + ", ".join(map(repr, close))) if close else (
                "names include " + ", ".join(map(repr, names[:4])) if names else
                "the buses have no names; use an index")
            raise ValueError(f"bus {ref!r} not found: {_describe_indices(net)}; {hint}")
        if len(hits) > 1:
            raise ValueError(
                f"bus name {ref!r} is ambiguous: used by buses {list(map(int, hits))}; "
                "give the index instead"
            )
        index = int(hits[0])
    else:
        index = int(ref)
        if index not in net.bus.index:
            raise ValueError(f"bus {index} not found: {_describe_indices(net)}")
    if not bool(net.bus.at[index, "in_service"]):
        raise ValueError(f"bus {index} ({net.bus.at[index, 'name']!r}) is out of service")
    return index


def _describe_indices(net: pandapowerNet) -> str:
    idx = net.bus.index
    if len(idx) == 0:
        return "the network has no buses"
    if idx.is_monotonic_increasing and idx[-1] - idx[0] + 1 == len(idx):
        return f"the network has {len(idx)} buses with indices {idx[0]}..{idx[-1]}"
    shown = ", ".join(str(i) for i in idx[:8])
    return f"the network has {len(idx)} buses with indices {shown}{', ...' if len(idx) > 8 else ''}"


# --------------------------------------------------------------------------------------------
# Background profiles
# --------------------------------------------------------------------------------------------

def profile_lookup(table_time: pd.Series | int) -> np.ndarray:
    """Row of a 15-minute one-year profile table for each day of year and wall-clock slot.

    SimBench's rows are equidistant in standard time (CET) while their ``time`` labels are
    German wall-clock time: from 27 March to 30 October 2016 a label reads one hour later than
    the row's position. Human-driven profiles (households, shops, factories) follow the wall
    clock, so a step maps to the row whose *label* has its day of year and time of day. The
    wall-clock hour skipped in spring takes the next row; the hour repeated in autumn takes the
    first (summer-time) occurrence.

    Parameters
    ----------
    table_time : Series of str, or int
        The table's ``time`` column (``"%d.%m.%Y %H:%M"``), or its number of rows when it has
        no labels (then row ``r`` is day ``r // 96``, slot ``r % 96``).

    Returns
    -------
    ndarray of int, shape (n_days, 96)
        Table row per (day of year - 1, quarter hour of the day).
    """
    if isinstance(table_time, (int, np.integer)):
        n_days = -(-int(table_time) // _ROWS_PER_DAY)
        lookup = np.arange(n_days * _ROWS_PER_DAY, dtype=np.int64) % int(table_time)
        return lookup.reshape(n_days, _ROWS_PER_DAY)
    stamps = pd.DatetimeIndex(pd.to_datetime(pd.Series(table_time), format="%d.%m.%Y %H:%M"))
    day0 = stamps.dayofyear.to_numpy(np.int64) - 1
    slot = (stamps.hour.to_numpy(np.int64) * 3600 + stamps.minute.to_numpy(np.int64) * 60
            ) // PROFILE_STEP_S
    n_days = int(day0.max()) + 1
    lookup = np.full(n_days * _ROWS_PER_DAY, -1, dtype=np.int64)
    flat = day0 * _ROWS_PER_DAY + slot
    keys, first_row = np.unique(flat, return_index=True)  # repeated labels: first occurrence
    lookup[keys] = first_row
    # Labels that never occur (the skipped spring hour) take the next row that does.
    missing = lookup < 0
    if missing.any():
        filled = pd.Series(np.where(missing, np.nan, lookup)).bfill().ffill()
        lookup = filled.to_numpy().astype(np.int64)
    return lookup.reshape(n_days, _ROWS_PER_DAY)


def profile_rows(times: pd.DatetimeIndex | pd.Series, lookup: np.ndarray) -> np.ndarray:
    """Profile table row for each step start.

    A step maps by its local day of year and time of day (the row containing its start when it
    does not begin on a quarter hour). Days wrap at the table's end, so a run continues into
    January after 31 December. Leap days are kept: in a non-leap year 31 December is day 365,
    i.e. 30 December 2016 in SimBench.

    Parameters
    ----------
    times : DatetimeIndex
        Step starts, tz-aware (the wall clock of their zone counts) or naive (taken as local).
    lookup : ndarray of int, shape (n_days, 96)
        From :func:`profile_lookup`.
    """
    times = pd.DatetimeIndex(times)
    day0 = times.dayofyear.to_numpy(np.int64) - 1
    second = (times.hour.to_numpy(np.int64) * 3600 + times.minute.to_numpy(np.int64) * 60
              + times.second.to_numpy(np.int64))
    return lookup[day0 % lookup.shape[0], second // PROFILE_STEP_S]


def background_profiles(net: pandapowerNet, times: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    """Absolute SimBench profile values of the network's own elements, one row per step.

    Parameters
    ----------
    net : pandapowerNet
        A network with ``net.profiles`` (SimBench) or without (then nothing is returned).
    times : DatetimeIndex
        Step starts (see :func:`profile_lookup` and :func:`profile_rows` for the mapping).

    Returns
    -------
    dict
        ``"row"``: profile table row of each step, shape (n_steps,); and for each profiled
        element column, e.g. ``"load_p_mw"``, ``"load_q_mvar"``, ``"sgen_p_mw"``,
        ``"gen_p_mw"``, ``"storage_p_mw"``, the values in [MW] or [Mvar], shape
        (n_steps, len(net.<element>)), columns in ``net.<element>`` order. Elements without a
        profile table keep their static values and have no key. Empty when the network has
        no profiles.
    """
    profiles = net.get("profiles")
    if not isinstance(profiles, dict) or len(profiles.get("load", ())) == 0:
        return {}
    import simbench

    absolute = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    n_rows = len(profiles["load"])
    labels = profiles["load"].get("time")
    rows = profile_rows(times, profile_lookup(n_rows if labels is None else labels))
    out: dict[str, np.ndarray] = {"row": rows}
    for element, column in _PROFILED:
        table = absolute.get((element, column))
        if table is None or len(net[element]) == 0 or table.shape != (n_rows, len(net[element])):
            continue
        out[f"{element}_{column}"] = np.ascontiguousarray(table.to_numpy(np.float64)[rows])
    return out


# --------------------------------------------------------------------------------------------
# The compiled network
# --------------------------------------------------------------------------------------------

def compiled_network(net: pandapowerNet) -> PowerFlowNetwork:
    """Convert ``net`` once for the compiled solver (the net itself is not modified).

    Raises
    ------
    ValueError
        Starting with ``solver:``, listing what the compiled solver does not model and asking
        for ``solver: pandapower``. There is deliberately no silent fallback: pandapower takes
        some hundred times longer per step (22 ms against 0.05 ms on 1-MV-comm--0-sw), which
        decides whether a year or a sweep is affordable, so the user chooses it.
    """
    try:
        with _quiet_numba_advice():
            return PowerFlowNetwork(net)
    except UnsupportedNetworkError as err:
        reasons = [r.strip() for r in str(err).split("\n- ")[1:]] or [str(err)]
        if len(reasons) > 1:
            reasons = [f"({i}) {r}" for i, r in enumerate(reasons, start=1)]
        raise ValueError(
            "solver: 'compiled' cannot solve this network: " + " ".join(reasons)
            + ". Set grid.solver: pandapower for it (the reference solver, which models every "
            "pandapower element but takes some hundred times longer per step)"
        ) from None


@contextlib.contextmanager
def _quiet_numba_advice() -> Iterator[None]:
    """Mute pandapower's advice to install numba while the network is converted.

    The conversion runs pandapower's option set-up, which logs that advice when numba is
    missing; the conversion does not use numba, so the advice does not apply.
    """
    logger = logging.getLogger("pandapower.auxiliary")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GridResult:
    """State of the grid after one step's power flow.

    Array attributes follow the model's ``bus_ids``, ``line_ids`` and ``trafo_ids``. Powers
    are at the external grid or summed over element groups; ``import_kw`` is positive when
    the zone draws power from the upstream grid.
    """

    vm_pu: np.ndarray
    """Voltage magnitude per bus. [pu]"""
    va_deg: np.ndarray
    """Voltage angle per bus. [°]"""
    line_loading_pct: np.ndarray
    """Loading per line. [%]"""
    trafo_loading_pct: np.ndarray
    """Loading per two-winding transformer. [%]"""
    losses_kw: float
    """Active losses of lines, transformers, impedances, shunts and other branches. [kW]"""
    import_kw: float
    """Active power from the external grid(s) into the zone. [kW]"""
    q_import_kvar: float
    """Reactive power from the external grid(s) into the zone. [kvar]"""
    background_load_kw: float
    """Active power of the network's own loads (incl. motors, wards). [kW]"""
    background_gen_kw: float
    """Active power generated by the network's own sgens and gens (positive). [kW]"""
    background_storage_kw: float
    """Active power drawn by the network's own storage units (load convention). [kW]"""
    injection_kw: float
    """Active power drawn by the twin's injections, summed (load convention). [kW]"""
    converged: bool
    """False when this step's power flow failed and the last good state is repeated."""

    @property
    def balance_residual_kw(self) -> float:
        """Import minus everything it feeds: zero when the step's energy balance closes. [kW]"""
        return self.import_kw - (self.background_load_kw + self.background_storage_kw
                                 + self.injection_kw - self.background_gen_kw + self.losses_kw)


# Background element columns a step sets: the profiled ones and the static reactive powers.
_BACKGROUND = (*_PROFILED, ("sgen", "q_mvar"), ("storage", "q_mvar"))


@dataclass(frozen=True, slots=True)
class _Background:
    """Powers of the network's own elements: per (element, column), in ``net.<element>`` order,
    one row per step of shape (n_steps, n) where profiled, else the static values, shape (n,).
    Loads are already scaled by ``background_scale``. [MW], [Mvar]"""

    values: dict[tuple[str, str], np.ndarray]

    def at(self, key: tuple[str, str], k: int) -> np.ndarray:
        v = self.values[key]
        return v[k] if v.ndim == 2 else v


@dataclass(frozen=True, slots=True)
class _Selection:
    """Positions (in the net's tables) of the reported buses, lines and transformers."""

    bus: np.ndarray
    line: np.ndarray
    trafo: np.ndarray


class GridModel:
    """A network stepped through time with the twin's injections and background profiles.

    Parameters
    ----------
    net : pandapowerNet
        The network; the model takes ownership. The ``"pandapower"`` solver modifies it (it
        adds one load per injection bus and writes power columns every step); the
        ``"compiled"`` solver converts it once and leaves its tables unchanged.
    times : DatetimeIndex
        Start of each step (tz-aware local time); step ``k`` uses ``times[k]``.
    profiles : bool
        Drive the background elements with the SimBench profiles (if the network has them);
        otherwise they keep their static values.
    background_scale : float
        Factor on the background loads' P and Q. [-]
    injection_buses : array of int
        Bus index of each injection, unique; ``solve_step`` takes powers in this order.
    solver : str
        Power-flow solver, one of ``SOLVERS``: ``"compiled"`` (default) or ``"pandapower"``
        (the reference). Both give the same results to solver tolerance.

    Raises
    ------
    ValueError
        For unknown, repeated, out-of-service or unsupplied injection buses, when the
        compiled solver cannot model the network (naming ``solver``, see
        :func:`compiled_network`), and when the network's power flow does not converge at
        set-up (step 0, no injections).
    """

    def __init__(self, net: pandapowerNet, times: pd.DatetimeIndex, profiles: bool = True,
                 background_scale: float = 1.0, injection_buses: np.ndarray | list[int] = (),
                 solver: str = "compiled") -> None:
        flow_class = _FLOWS.get(solver)
        if flow_class is None:
            raise ValueError(f"solver: {solver!r} is not one of {SOLVERS}")
        if not np.isfinite(background_scale) or background_scale < 0:
            raise ValueError(f"background_scale: must be >= 0, got {background_scale}")
        self.net = net
        self.solver = solver
        self.times = pd.DatetimeIndex(times)
        if len(self.times) == 0:
            raise ValueError("times: need at least one step")
        self.background_scale = float(background_scale)
        self.injection_buses = self._check_injection_buses(injection_buses)
        n_inj = self.injection_buses.size

        # Background values: profile rows per step, or the static columns.
        prof = background_profiles(net, self.times) if profiles else {}
        self.profile_rows = prof.get("row")
        values = {}
        for element, column in _BACKGROUND:
            if len(net[element]) == 0:
                continue
            key = f"{element}_{column}"
            v = prof[key] if key in prof else net[element][column].to_numpy(np.float64).copy()
            values[(element, column)] = v * self.background_scale if element == "load" else v
        background = _Background(values)

        # Output selection: in-service elements on supplied buses, in table order.
        unsupplied = top.unsupplied_buses(net)
        bus_ok = net.bus["in_service"].astype(bool).to_numpy() & ~net.bus.index.isin(unsupplied)
        self.bus_ids = net.bus.index.to_numpy(np.int64)[bus_ok]
        self.line_ids = net.line.index.to_numpy(np.int64)[net.line["in_service"].astype(bool)]
        self.trafo_ids = net.trafo.index.to_numpy(np.int64)[net.trafo["in_service"].astype(bool)]
        selection = _Selection(net.bus.index.get_indexer(self.bus_ids),
                               net.line.index.get_indexer(self.line_ids),
                               net.trafo.index.get_indexer(self.trafo_ids))

        self.nonconverged_steps = 0
        self.nonconverged_at: list[int] = []
        self.step_time_s = 0.0
        self.steps_solved = 0
        self.injection_p_kw = np.zeros(n_inj)
        self.injection_q_kvar = np.zeros(n_inj)

        self._flow = flow_class(net, background, len(self.times), self.injection_buses,
                                selection)
        # A converged start: the initial guess of step 0 and the "last good state" fallback.
        result = self._flow.solve(0, self.injection_p_kw, self.injection_q_kvar, warm=False)
        if result is None:
            raise ValueError(
                "the network's power flow does not converge at set-up (background of step 0, "
                "no injections); check the network or lower background_scale"
            )
        self._last = result

    @property
    def initial_result(self) -> GridResult:
        """The set-up state (step 0 background, no injections), or the last good one after."""
        return self._last

    @property
    def solver_time_s(self) -> float:
        """Wall time spent inside the power-flow solver (runpp or the kernel) so far. [s]"""
        return self._flow.time_s

    def solve_step(self, k: int, p_kw_bus: np.ndarray, q_kvar_bus: np.ndarray) -> GridResult:
        """Solve step ``k`` with the given injections.

        Parameters
        ----------
        k : int
            Step index into ``times`` (selects the background profile row).
        p_kw_bus, q_kvar_bus : ndarray
            Active [kW] and reactive [kvar] power drawn at each injection bus (load
            convention), aligned to ``injection_buses``.

        Returns
        -------
        GridResult
            This step's state; when the power flow does not converge, the last good state with
            ``converged=False`` (the step is counted in ``nonconverged_steps``, never raised).
        """
        t_start = time.perf_counter()
        if not 0 <= k < len(self.times):
            raise ValueError(f"step {k} outside the {len(self.times)} steps of this run")
        p_kw = np.asarray(p_kw_bus, dtype=np.float64)
        q_kvar = np.asarray(q_kvar_bus, dtype=np.float64)
        n_inj = self.injection_buses.size
        if p_kw.shape != (n_inj,) or q_kvar.shape != (n_inj,):
            raise ValueError(f"p_kw_bus, q_kvar_bus: need shape ({n_inj},) aligned to "
                             f"injection_buses, got {p_kw.shape} and {q_kvar.shape}")
        if not (np.isfinite(p_kw).all() and np.isfinite(q_kvar).all()):
            raise ValueError("p_kw_bus, q_kvar_bus: non-finite injection")
        self.injection_p_kw = p_kw.copy()
        self.injection_q_kvar = q_kvar.copy()

        result = self._flow.solve(int(k), p_kw, q_kvar, warm=True)
        if result is not None:
            self._last = result
        else:
            self.nonconverged_steps += 1
            self.nonconverged_at.append(int(k))
            result = replace(self._last, converged=False)
        self.steps_solved += 1
        self.step_time_s += time.perf_counter() - t_start
        return result

    def _check_injection_buses(self, buses: np.ndarray | list[int]) -> np.ndarray:
        buses = np.asarray(buses, dtype=np.int64).ravel()
        if np.unique(buses).size != buses.size:
            raise ValueError("injection_buses: must be unique (aggregate sources per bus first)")
        for b in buses:
            resolve_bus(self.net, int(b))
        unsupplied = set(top.unsupplied_buses(self.net)) & set(buses.tolist())
        if unsupplied:
            raise ValueError(f"injection_buses: buses {sorted(unsupplied)} are not connected "
                             "to an external grid")
        return buses


@contextlib.contextmanager
def _diverging_iterations_are_quiet() -> Iterator[None]:
    # A diverging iteration overflows and meets singular Jacobians; the outcome is recorded as
    # non-convergence, so its numerical warnings are noise.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", MatrixRankWarning)
        yield


# --------------------------------------------------------------------------------------------
# Solvers: set up once from the net, then ``solve(k, p_kw, q_kvar, warm)`` per step, returning
# the step's GridResult or None when the power flow did not converge.
# --------------------------------------------------------------------------------------------

class _CompiledFlow:
    """The compiled kernel on arrays: no DataFrame is touched after set-up.

    The background powers of the whole run are summed per bus at set-up (one sparse product
    per element table); a step copies its row, adds the injections at their bus positions and
    solves, warm-started from the last good voltages.
    """

    def __init__(self, net: pandapowerNet, background: _Background, n_steps: int,
                 injection_buses: np.ndarray, select: _Selection) -> None:
        self.network = compiled_network(net)
        nw = self.network
        self._select = select
        self._inj_pos = nw.bus_positions(injection_buses)
        # Elements on out-of-service or islanded buses draw nothing (as in pandapower's res_*).
        dead = np.union1d(nw.islanded_buses, nw.out_of_service_buses)
        live = ~np.isin(nw.bus_index, dead)

        p_bus: np.ndarray | float = 0.0
        q_bus: np.ndarray | float = 0.0
        totals_mw = {}
        for element in ("load", "sgen", "storage"):
            df = net[element]
            if len(df) == 0:
                totals_mw[element] = 0.0
                continue
            p_mw = background.values[(element, "p_mw")]
            dp, dq = nw.aggregate(element, p_mw, background.values[(element, "q_mvar")])
            p_bus = p_bus + dp
            q_bus = q_bus + dq
            weight = (df["scaling"].to_numpy(np.float64) * df["in_service"].to_numpy(np.float64)
                      * live[nw.bus_positions(df["bus"])])
            totals_mw[element] = p_mw @ weight
        shape = (n_steps, nw.n_bus)
        self._p_bus = np.broadcast_to(np.ascontiguousarray(p_bus), shape)
        self._q_bus = np.broadcast_to(np.ascontiguousarray(q_bus), shape)
        self._load_kw = np.broadcast_to(1e3 * np.asarray(totals_mw["load"]), (n_steps,))
        self._gen_kw = np.broadcast_to(1e3 * np.asarray(totals_mw["sgen"]), (n_steps,))
        self._storage_kw = np.broadcast_to(1e3 * np.asarray(totals_mw["storage"]), (n_steps,))

        # Shunt losses (the kernel's p_loss_mw counts branches only): P = p_at_1pu * vm².
        self._shunt_pos, self._shunt_mw_1pu = _shunt_p_at_1pu(net, nw, live)
        self._v: np.ndarray | None = None
        self.time_s = 0.0

    def solve(self, k: int, p_kw: np.ndarray, q_kvar: np.ndarray,
              warm: bool) -> GridResult | None:
        p_mw = self._p_bus[k].copy()
        q_mvar = self._q_bus[k].copy()
        p_mw[self._inj_pos] += 1e-3 * p_kw
        q_mvar[self._inj_pos] += 1e-3 * q_kvar
        t0 = time.perf_counter()
        try:
            res = self._run(p_mw, q_mvar, self._v if warm else None)
            if res is None and warm:
                res = self._run(p_mw, q_mvar, None)  # from the no-load voltages
        finally:
            self.time_s += time.perf_counter() - t0
        if res is None:
            return None
        self._v = res.v_pu
        vm = res.vm_pu
        sel = self._select
        shunt_mw = float(self._shunt_mw_1pu @ np.square(vm[self._shunt_pos]))
        return GridResult(
            vm_pu=vm[sel.bus],
            va_deg=res.va_degree[sel.bus],
            line_loading_pct=res.line_loading_pct[sel.line],
            trafo_loading_pct=res.trafo_loading_pct[sel.trafo],
            losses_kw=1e3 * (res.p_loss_mw + shunt_mw),
            import_kw=1e3 * float(np.nansum(res.ext_grid_p_mw)),
            q_import_kvar=1e3 * float(np.nansum(res.ext_grid_q_mvar)),
            background_load_kw=float(self._load_kw[k]),
            background_gen_kw=float(self._gen_kw[k]),
            background_storage_kw=float(self._storage_kw[k]),
            injection_kw=float(np.sum(p_kw)),
            converged=True,
        )

    def _run(self, p_mw: np.ndarray, q_mvar: np.ndarray, v0: np.ndarray | None):
        with _diverging_iterations_are_quiet():
            res = self.network.solve(p_mw, q_mvar, v0, flows=False)
        if res.converged and np.isfinite(res.vm_pu[self._select.bus]).all():
            return res
        return None


def _shunt_p_at_1pu(net: pandapowerNet, network: PowerFlowNetwork,
                    live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bus position and active power at 1 pu of each shunt in service on a supplied bus, as
    pandapower computes ``res_shunt``: ``p_mw * step`` (or the characteristic table's value at
    ``step``) times ``(vn_kv of the bus / vn_kv of the shunt)²``. [MW]"""
    s = net.shunt
    if len(s) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    pos = network.bus_positions(s["bus"])
    p_mw = s["p_mw"].to_numpy(np.float64) * s["step"].to_numpy(np.float64)
    if "step_dependency_table" in s:
        table = net.get("shunt_characteristic_table")
        dependent = s["step_dependency_table"].fillna(False).astype(bool).to_numpy()
        for i in np.flatnonzero(dependent):
            row = table[(table["id_characteristic"] == s["id_characteristic_table"].iat[i])
                        & (table["step"] == s["step"].iat[i])]
            p_mw[i] = float(row["p_mw"].iloc[0]) if len(row) else 0.0
    bus_kv = net.bus["vn_kv"].to_numpy(np.float64)[net.bus.index.get_indexer(s["bus"])]
    shunt_kv = s["vn_kv"].to_numpy(np.float64)
    shunt_kv = np.where(np.isnan(shunt_kv), bus_kv, shunt_kv)
    # Shunts on islanded buses are left out: their voltage is NaN.
    keep = s["in_service"].to_numpy(bool) & live[pos]
    return pos[keep], (p_mw * (bus_kv / shunt_kv) ** 2)[keep]


class _PandapowerFlow:
    """The reference: injections as pandapower loads, ``pandapower.runpp``, ``res_*`` tables."""

    def __init__(self, net: pandapowerNet, background: _Background, n_steps: int,
                 injection_buses: np.ndarray, select: _Selection) -> None:
        self.net = net
        self._background = background
        self._select = select
        # The twin's injections: constant-power loads appended after the background loads.
        self._n_bg_loads = len(net.load)
        if injection_buses.size:
            pp.create_loads(net, injection_buses, p_mw=0.0, q_mvar=0.0,
                            name=[f"twin injection bus {b}" for b in injection_buses],
                            type=INJECTION_LOAD_TYPE)
        for element, column in _BACKGROUND:
            net[element][column] = net[element][column].astype(np.float64)
        self._inplace = _writes_through(net.load, "p_mw")
        # Impedance bus-bus switches are branches; ideal ones fuse buses and dissipate nothing.
        sw = net.switch
        self._switch_pos = np.flatnonzero(
            (sw["et"] == "b").to_numpy() & sw["closed"].astype(bool).to_numpy()
            & (sw["z_ohm"].fillna(0.0).to_numpy() > 0)) if len(sw) else np.empty(0, np.int64)
        self._numba = importlib.util.find_spec("numba") is not None
        self.time_s = 0.0

    def solve(self, k: int, p_kw: np.ndarray, q_kvar: np.ndarray,
              warm: bool) -> GridResult | None:
        self._write_background(k)
        n = self._n_bg_loads
        self._write(self.net.load, "p_mw", slice(n, None), p_kw * 1e-3)
        self._write(self.net.load, "q_mvar", slice(n, None), q_kvar * 1e-3)
        return self._collect() if self._solve(warm) else None

    def _run_power_flow(self, init: str) -> None:
        """Solve ``self.net`` in place; raises ``pp.LoadflowNotConverged`` on failure."""
        # lightsim2grid off: the same algorithm whether or not that optional package is installed.
        pp.runpp(self.net, init=init, calculate_voltage_angles=True, numba=self._numba,
                 lightsim2grid=False)

    def _solve(self, warm: bool) -> bool:
        """Warm start from the last results, then a cold start; True when one converged."""
        # Cold start is init="auto" (DC angles, flat magnitudes): a flat start cannot follow the
        # 150° phase shift of SimBench's YNd5 transformers.
        for init in (("results", "auto") if warm else ("auto",)):
            t0 = time.perf_counter()
            try:
                with _diverging_iterations_are_quiet():
                    self._run_power_flow(init)
                ok = bool(self.net.converged) and np.isfinite(
                    self.net.res_bus["vm_pu"].to_numpy()[self._select.bus]).all()
            except (pp.LoadflowNotConverged, np.linalg.LinAlgError):
                ok = False
            finally:
                self.time_s += time.perf_counter() - t0
            if ok:
                return True
        return False

    def _write_background(self, k: int) -> None:
        for (element, column), values in self._background.values.items():
            rows = slice(0, self._n_bg_loads) if element == "load" else slice(None)
            if element == "load" or values.ndim == 2:  # static sgen, gen, storage stay as they are
                self._write(self.net[element], column, rows, self._background.at(
                    (element, column), k))

    def _write(self, df: pd.DataFrame, column: str, rows: slice, values: np.ndarray) -> None:
        if self._inplace:
            df[column].values[rows] = values
        else:  # pandas with copy-on-write: .values is read-only, so replace the column
            full = df[column].to_numpy(np.float64, copy=True)
            full[rows] = values
            df[column] = full

    def _collect(self) -> GridResult:
        net = self.net
        n = self._n_bg_loads
        sel = self._select
        load_mw = net.res_load["p_mw"].to_numpy(np.float64)
        losses_mw = sum(_column_sum(net, table, col) for table, col in _LOSS_COLUMNS)
        if self._switch_pos.size:
            res_sw = net.res_switch
            losses_mw += float(np.nansum(res_sw["p_from_mw"].to_numpy()[self._switch_pos]
                                         + res_sw["p_to_mw"].to_numpy()[self._switch_pos]))
        bg_load_mw = float(np.nansum(load_mw[:n])) + sum(
            _column_sum(net, t, "p_mw") for t in _EXTRA_LOAD_TABLES)
        return GridResult(
            vm_pu=net.res_bus["vm_pu"].to_numpy(np.float64)[sel.bus],
            va_deg=net.res_bus["va_degree"].to_numpy(np.float64)[sel.bus],
            line_loading_pct=net.res_line["loading_percent"].to_numpy(np.float64)[sel.line],
            trafo_loading_pct=net.res_trafo["loading_percent"].to_numpy(np.float64)[sel.trafo],
            losses_kw=1e3 * losses_mw,
            import_kw=1e3 * _column_sum(net, "res_ext_grid", "p_mw"),
            q_import_kvar=1e3 * _column_sum(net, "res_ext_grid", "q_mvar"),
            background_load_kw=1e3 * bg_load_mw,
            background_gen_kw=1e3 * sum(_column_sum(net, t, "p_mw") for t in _GEN_TABLES),
            background_storage_kw=1e3 * _column_sum(net, "res_storage", "p_mw"),
            injection_kw=1e3 * float(np.nansum(load_mw[n:])),
            converged=True,
        )


_FLOWS: dict[str, type[_CompiledFlow | _PandapowerFlow]] = {
    "compiled": _CompiledFlow, "pandapower": _PandapowerFlow}


def _column_sum(net: pandapowerNet, table: str, column: str) -> float:
    df = net.get(table)
    if df is None or len(df) == 0 or column not in df:
        return 0.0
    return float(np.nansum(df[column].to_numpy(np.float64)))


def _writes_through(df: pd.DataFrame, column: str) -> bool:
    """Whether writing into ``df[column].values`` changes ``df`` (no copy-on-write)."""
    if len(df) == 0:
        return False
    values = df[column].values
    if not values.flags.writeable:
        return False
    old = values[0]
    values[0] = old + 1.0
    seen = df[column].iat[0]
    values[0] = old
    return bool(seen == old + 1.0)
