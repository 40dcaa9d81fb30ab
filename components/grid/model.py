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
import copy
import difflib
import importlib.util
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandapower as pp
import pandapower.topology as top
import pandas as pd
from scipy.sparse.linalg import MatrixRankWarning

from components.base import BusRef, all_finite
from components.grid.config import (
    SOLVERS,
    GridConfig,
    GridFormingConfig,
    ShuntBankConfig,
    TieSwitchConfig,
    pandapower_network_names,
    simbench_codes,
)
from components.grid.control import GridFormingBattery, ShuntBanks
from components.grid.events import build_schedule, parse_events, resolve_fault_elements
from components.grid.topology import (
    SwitchingBase,
    Topology,
    energised_buses,
    fault_section,
    has_slack,
    resolve_tie_switches,
)
from ext.powerflow_net import (
    PowerFlowNetwork,
    PowerFlowResult,
    UnsupportedNetworkError,
    kernel_module,
)

if TYPE_CHECKING:
    from pandapower import pandapowerNet

PROFILE_STEP_S = 900
"""Resolution of the SimBench profiles. [s]"""

_ROWS_PER_DAY = 86_400 // PROFILE_STEP_S

SHED_CLASSES = ("non_household", "household")
"""Priority classes of the background loads for shedding, in the order they are shed: first
commercial, agricultural and other loads, then households (SimBench profiles ``H*`` and the
aggregated low-voltage grids ``lv_*``, which are mostly homes). No background load is critical:
the critical loads of the zone are the factories' (their ``critical_kw``)."""

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


def _frozen(a: np.ndarray) -> np.ndarray:
    """``a`` made read-only: a constant handed out step after step must not be changed."""
    a.flags.writeable = False
    return a


def _total_kw(mw: np.ndarray) -> float:
    """``float(np.add.reduce(1e3 * mw))``: a sum in kW of values in MW; a single value without
    the array operations' set-up cost (the usual single external grid)."""
    return 1e3 * mw.item(0) if mw.size == 1 else float(np.add.reduce(1e3 * mw))


def _finite_totals(r: GridResult) -> bool:
    """Whether the power totals of ``r`` (losses, imports, background, injections) are all
    finite: their sum is, unless a term is NaN or infinite (or the sum overflows)."""
    return math.isfinite(r.losses_kw + r.import_kw + r.q_import_kvar + r.background_load_kw
                         + r.background_gen_kw + r.background_storage_kw + r.injection_kw)


def _nan_to_zero(a: np.ndarray) -> np.ndarray:
    """``np.nan_to_num(a)``, but ``a`` itself when every value is finite (the usual case)."""
    return a if all_finite(a) else np.nan_to_num(a)


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
    field, net = _cached(cfg, loader) if cfg.source in _CACHED_SOURCES else loader(cfg)
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

CACHE_ENV = "SDG_TWIN_CACHE_DIR"
"""Environment variable: folder of the built-network cache; ``off`` disables it. Default:
``$XDG_CACHE_HOME/sdg-twin`` (``~/.cache/sdg-twin``)."""
_CACHED_SOURCES = ("simbench", "pandapower")  # built from installed packages; a JSON file is not
_CACHE_FORMAT = 1


def network_cache_dir() -> Path | None:
    """The folder built networks are cached in, or None when caching is off."""
    import os

    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured.lower() == "off":
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "sdg-twin"


def _cached(cfg: GridConfig, loader) -> tuple[str, pandapowerNet]:
    """``loader(cfg)``, from the cache when an earlier process built the same network.

    Building a SimBench network reads its CSV tables and takes ~3 s; the pickled result loads in
    ~40 ms. Every fresh process pays the build otherwise: each ``twin`` command, each sweep
    worker. The key holds the network's name and the versions of simbench and pandapower, so an
    upgrade builds anew; an unreadable entry is rebuilt, and a cache that cannot be written is
    skipped (the network is built as before).
    """
    import hashlib
    import os
    import pickle
    import tempfile

    folder = network_cache_dir()
    if folder is None:
        return loader(cfg)
    versions = [pp.__version__]
    if cfg.source == "simbench":
        import simbench

        versions.append(simbench.__version__)
    ident = f"{_CACHE_FORMAT}|{cfg.source}|{cfg.code}|{cfg.name}|{'|'.join(versions)}"
    path = folder / f"net-{hashlib.sha256(ident.encode()).hexdigest()[:24]}.pickle"
    with contextlib.suppress(Exception):  # missing or unreadable: build it
        with path.open("rb") as fh:
            stored_ident, field, net = pickle.load(fh)
        if stored_ident == ident and isinstance(net, pp.pandapowerNet):
            return field, net
    field, net = loader(cfg)
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        # write then rename: processes building the same network at once never see half a file
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".net-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump((ident, field, net), fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return field, net


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
    day0, seconds = _label_day_and_second(pd.Series(table_time))
    slot = seconds // PROFILE_STEP_S
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


def _label_day_and_second(labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Day of year - 1 and second of the day of ``"%d.%m.%Y %H:%M"`` labels.

    SimBench labels are fixed-width; those are read digit by digit (a year of labels in ~2 ms
    instead of ~90 ms with strptime, which every run paid). Anything else goes through pandas'
    parser, which also names a malformed label.
    """
    text = labels.to_numpy(dtype=str)
    if text.dtype.itemsize == 16 * 4:  # '<U16': every label 16 characters (or shorter)
        raw = np.frombuffer(text.astype("S16").tobytes(), np.uint8).reshape(-1, 16)
        seps = raw[:, [2, 5, 10, 13]]
        digits = raw[:, [0, 1, 3, 4, 6, 7, 8, 9, 11, 12, 14, 15]].astype(np.int64) - ord("0")
        if ((seps == np.frombuffer(b".. :", np.uint8)).all()
                and ((digits >= 0) & (digits <= 9)).all()):
            d = digits
            day, month = d[:, 0] * 10 + d[:, 1], d[:, 2] * 10 + d[:, 3]
            year = d[:, 4] * 1000 + d[:, 5] * 100 + d[:, 6] * 10 + d[:, 7]
            hour, minute = d[:, 8] * 10 + d[:, 9], d[:, 10] * 10 + d[:, 11]
            first = (year - 1970).astype("datetime64[Y]")
            date = (first.astype("datetime64[M]") + (month - 1).astype("timedelta64[M]")
                    ).astype("datetime64[D]") + (day - 1).astype("timedelta64[D]")
            valid = ((month >= 1) & (month <= 12) & (day >= 1) & (hour <= 23) & (minute <= 59)
                     & (date.astype("datetime64[M]") == first.astype("datetime64[M]")
                        + (month - 1).astype("timedelta64[M]")))
            if valid.all():
                day0 = (date - first.astype("datetime64[D]")).astype(np.int64)
                return day0, hour * 3600 + minute * 60
    stamps = pd.DatetimeIndex(pd.to_datetime(labels, format="%d.%m.%Y %H:%M"))
    return (stamps.dayofyear.to_numpy(np.int64) - 1,
            stamps.hour.to_numpy(np.int64) * 3600 + stamps.minute.to_numpy(np.int64) * 60)


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

    n_rows = len(profiles["load"])
    labels = profiles["load"].get("time")
    rows = profile_rows(times, profile_lookup(n_rows if labels is None else labels))
    # Scale only the rows the run uses (a day is 96 of the year's 35,136): the values are the
    # same element-wise products, and a short run no longer pays for the whole year.
    used, position = np.unique(rows, return_inverse=True)
    sliced = {key: table.iloc[used] if isinstance(table, pd.DataFrame) and len(table) == n_rows
              else table for key, table in profiles.items()}
    net["profiles"] = sliced
    try:
        absolute = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    finally:
        net["profiles"] = profiles
    out: dict[str, np.ndarray] = {"row": rows}
    for element, column in _PROFILED:
        table = absolute.get((element, column))
        if (table is None or len(net[element]) == 0
                or table.shape != (len(used), len(net[element]))):
            continue
        out[f"{element}_{column}"] = np.ascontiguousarray(table.to_numpy(np.float64)[position])
    return out


def load_shed_classes(net: pandapowerNet) -> np.ndarray:
    """Shedding class of each of the network's loads (``net.load`` order), see ``SHED_CLASSES``.

    1 (household) for SimBench household profiles (``H*``) and aggregated low-voltage grids
    (``lv_*``); 0 for every other load, and for all loads of a network without profiles.
    """
    profile = net.load["profile"] if "profile" in net.load else pd.Series(
        [None] * len(net.load), index=net.load.index)
    text = profile.fillna("").astype(str).str.strip()
    return (text.str.startswith("H") | text.str.startswith("lv_")).to_numpy().astype(np.int64)


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

@dataclass(slots=True)
class GridResult:
    """State of the grid after one step's power flow.

    Array attributes follow the model's ``bus_ids``, ``line_ids`` and ``trafo_ids`` (and
    ``injection_buses``, ``shunt_buses``). Powers are at the external grid or summed over
    element groups; ``import_kw`` is positive when the zone draws power from the upstream grid.
    A de-energised bus reports ``vm_pu = 0`` and ``energised = 0``; a line or transformer
    without voltage at an end reports loading 0. Background and injection powers count what was
    served; what de-energised buses asked for is in the ``*_unserved_kw`` attributes.

    Read-only by contract: the model keeps the last good result to repeat it. (Not a frozen
    dataclass, whose construction costs several times more, once per step.)
    """

    vm_pu: np.ndarray
    """Voltage magnitude per bus, 0 where de-energised. [pu]"""
    va_deg: np.ndarray
    """Voltage angle per bus, 0 where de-energised. [°]"""
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
    """Active power served to the network's own loads (incl. motors, wards). [kW]"""
    background_gen_kw: float
    """Active power generated by the network's own sgens and gens (positive). [kW]"""
    background_storage_kw: float
    """Active power drawn by the network's own storage units (load convention). [kW]"""
    injection_kw: float
    """Active power drawn by the twin's injections at energised buses (load convention). [kW]"""
    converged: bool
    """False when this step's power flow failed and the last good state is repeated."""
    energised: np.ndarray
    """1 where the bus has a path to a slack (external grid or grid-forming unit), else 0."""
    injection_unserved_kw: np.ndarray
    """Power asked at each injection bus but not delivered (load convention: positive a load
    not served, negative a generation not taken). [kW]"""
    shunt_steps: np.ndarray
    """Step of each switched shunt bank during this step."""
    shunt_q_kvar: np.ndarray
    """Reactive power of each switched shunt bank (absorbed positive). [kvar]"""
    background_class_kw: np.ndarray
    """Active power the network's own loads asked for, per class of ``SHED_CLASSES`` (before
    shedding, energised or not). [kW]"""
    islanded: int = 0
    """1 while the upstream grid is out."""
    island_held: int = 0
    """1 while islanded with the grid-forming unit holding the island."""
    gfm_supply_kw: float = 0.0
    """Power the grid-forming unit delivered into the zone (negative: charging). [kW]"""
    gfm_demand_kw: float = 0.0
    """Power the island asked of the grid-forming unit (equals ``gfm_supply_kw`` while it
    holds; what it could not deliver when the island collapsed). [kW]"""
    gfm_losses_kw: float = 0.0
    """Conversion losses inside the grid-forming unit. [kW]"""
    gfm_soc: float = 0.0
    """State of charge of the grid-forming unit after the step. [-]"""
    gfm_e_kwh: float = 0.0
    """Stored energy of the grid-forming unit after the step. [kWh]"""
    gfm_headroom_kw: float = 0.0
    """Discharge power the unit can hold over the next step, minus ``gfm_demand_kw``: how much
    the island's net load may grow (negative: must shrink by this much). [kW]"""
    gfm_absorb_headroom_kw: float = 0.0
    """Charge power the unit can take over the next step, plus ``gfm_demand_kw``: how much the
    island's net generation may grow (negative: must shrink, e.g. curtail PV). [kW]"""
    background_load_unserved_kw: float = 0.0
    """Active power of the network's own loads at de-energised buses. [kW]"""
    background_gen_unserved_kw: float = 0.0
    """Generation of the network's own sgens at de-energised buses (positive). [kW]"""
    customers_off: int = 0
    """Customer connections (background loads and injection devices) at de-energised buses."""
    customers_interrupted: int = 0
    """Customer connections de-energised this step that were supplied the step before."""
    ties_closed: int = 0
    """Tie switches closed to restore supply."""
    background_load_shed_kw: float = 0.0
    """Active power of the network's own loads shed on request (``shed_share``) at energised
    buses; not part of ``background_load_kw``. [kW]"""

    @property
    def v_quality_ok(self) -> np.ndarray:
        """1 where the bus is energised and its voltage within ±10 % of nominal (EN 50160)."""
        return self.energised & (np.abs(self.vm_pu - 1.0) <= 0.1)

    @property
    def balance_residual_kw(self) -> float:
        """Sources minus everything they feed: zero when the step's energy balance closes. [kW]"""
        return self.import_kw + self.gfm_supply_kw - (
            self.background_load_kw + self.background_storage_kw + self.injection_kw
            - self.background_gen_kw + self.losses_kw)


@dataclass(slots=True)
class _Raw:
    """A solved topology in the net's own order (NaN where a bus has no voltage)."""

    vm_pu: np.ndarray
    va_deg: np.ndarray
    line_loading_pct: np.ndarray
    trafo_loading_pct: np.ndarray
    losses_kw: float
    ext_grid_p_mw: np.ndarray
    ext_grid_q_mvar: np.ndarray
    background_load_kw: float
    background_gen_kw: float
    background_storage_kw: float
    injection_kw: float
    finite: bool = False
    """Every value above is known to be finite (nothing to blank out)."""


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
class _Supply:
    """What the energised buses of one switching state fix in every step's result (computed
    once per topology; arrays handed out are read-only)."""

    energised: np.ndarray
    """Per bus of the net: has a path to a slack. [bool]"""
    dead: np.ndarray
    """``~energised``. [bool]"""
    any_dead: bool
    reported_on: bool
    """Every reported bus (``bus_ids``) is energised."""
    energised_out: np.ndarray
    """``energised`` of the reported buses as 0/1. [int64]"""
    unserved_w: dict[str, np.ndarray]
    """Per element table: weight of each element on a de-energised bus, else 0."""
    load_on: np.ndarray | None
    """Per background load: on an energised bus. [bool]"""
    inj_dead: np.ndarray
    """Per injection bus: de-energised. [bool]"""
    any_inj_dead: bool
    customers_off: int


@dataclass(frozen=True, slots=True)
class _Selection:
    """Positions (in the net's tables) of the reported buses, lines and transformers."""

    bus: np.ndarray
    line: np.ndarray
    trafo: np.ndarray


class GridModel:
    """A network stepped through time with the twin's injections, background profiles and
    events (upstream outages, faults), islanding, restoration and switched shunts.

    Parameters
    ----------
    net : pandapowerNet
        The network; the model takes ownership. The ``"pandapower"`` solver modifies it (it
        adds one load per injection bus and writes power columns every step); the
        ``"compiled"`` solver converts it once and leaves its tables unchanged. A grid-forming
        unit or shunt banks add rows (an external grid, shunts) to it.
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
    grid_forming : GridFormingConfig, optional
        Battery that becomes the slack while the upstream grid is out.
    tie_switches : list of TieSwitchConfig
        Normally open switches restoration may close, in order of preference.
    shunts : list of ShuntBankConfig
        Switched shunt banks.
    events : list of event dicts or models
        Upstream outages and faults (``components.grid.events``).
    step_s : int, optional
        Step length [s]; default: the spacing of ``times`` (900 with a single step).
    v_band_pu : (float, float)
        Voltage band a restoration must keep on energised buses. [pu]
    max_loading_pct : float
        Highest line and transformer loading a restoration may cause. [%]
    injection_customers : array of int, optional
        Customer connections (devices) at each injection bus; default one each.

    Raises
    ------
    ValueError
        For unknown, repeated, out-of-service or unsupplied injection buses, when the
        compiled solver cannot model the network (naming ``solver``, see
        :func:`compiled_network`), for bad event, tie-switch, grid-forming or shunt
        references (naming the field), and when the network's power flow does not converge
        at set-up (step 0, no injections).
    """

    def __init__(self, net: pandapowerNet, times: pd.DatetimeIndex, profiles: bool = True,
                 background_scale: float = 1.0, injection_buses: np.ndarray | list[int] = (),
                 solver: str = "compiled", *, grid_forming: GridFormingConfig | None = None,
                 tie_switches: Sequence[TieSwitchConfig] = (),
                 shunts: Sequence[ShuntBankConfig] = (), events: Sequence[Any] = (),
                 step_s: int | None = None, v_band_pu: tuple[float, float] = (0.9, 1.1),
                 max_loading_pct: float = 100.0,
                 injection_customers: np.ndarray | list[int] | None = None) -> None:
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
        if step_s is None:
            step_s = (int((self.times[1] - self.times[0]).total_seconds())
                      if len(self.times) > 1 else PROFILE_STEP_S)
        self.step_s = int(step_s)
        self._h = self.step_s / 3600.0
        self.background_scale = float(background_scale)
        self.injection_buses = self._check_injection_buses(injection_buses)
        n_inj = self.injection_buses.size
        self._inj_shape = (n_inj,)
        self._n_steps = len(self.times)
        self.v_band_pu = (float(v_band_pu[0]), float(v_band_pu[1]))
        self.max_loading_pct = float(max_loading_pct)

        # Background values: profile rows per step, or the static columns.
        prof = background_profiles(net, self.times) if profiles else {}
        self.profile_rows = prof.get("row")
        values = {}
        for element, column in _BACKGROUND:
            if len(net[element]) == 0:
                continue
            key = f"{element}_{column}"
            v = prof[key] if key in prof else net[element][column].to_numpy(np.float64).copy()
            if element == "load":
                v *= self.background_scale  # in place: v is a fresh array
            values[(element, column)] = v
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
        self._select = selection
        # every element reported, in table order (the usual case): a copy is the selection
        self._select_all = tuple(np.array_equal(pos, np.arange(len(net[table])))
                                 for pos, table in ((selection.bus, "bus"),
                                                    (selection.line, "line"),
                                                    (selection.trafo, "trafo")))

        self._setup_events(net, grid_forming, tie_switches, shunts, events)
        self._setup_accounting(net, background, injection_customers)

        self.nonconverged_steps = 0
        self.nonconverged_at: list[int] = []
        self.steps_solved = 0
        self.injection_p_kw = np.zeros(n_inj)
        self.injection_q_kvar = np.zeros(n_inj)
        self._bin_sums = kernel_module().bin_sums

        self._flow = flow_class(net, background, len(self.times), self.injection_buses,
                                self._switching, self._scratch)
        # A converged start: the initial guess of step 0 and the "last good state" fallback.
        raw = self._flow.solve(0, self.injection_p_kw, self.injection_q_kvar, self._normal,
                               warm=False)
        if raw is None:
            raise ValueError(
                "the network's power flow does not converge at set-up (background of step 0, "
                "no injections); check the network or lower background_scale"
            )
        self._prev_energised = self._energised(self._normal)
        self._last = self._result(0, raw, self._normal, self.injection_p_kw, held=False,
                                  supply_kw=0.0, demand_kw=0.0, gfm_losses_kw=0.0)
        self._last_vm = raw.vm_pu
        self.finite_result: GridResult | None = (
            self._last if raw.finite and _finite_totals(self._last) else None)
        """The last result whose solved arrays (``vm_pu``, ``va_deg``, ``line_loading_pct``,
        ``trafo_loading_pct``) and power totals (see :func:`_finite_totals`) are known to be
        finite (the solver's output checked whole, the totals at once), or None."""

    # -- set-up of events, islanding, restoration and shunts -------------------------------
    def _setup_events(self, net: pandapowerNet, grid_forming: GridFormingConfig | None,
                      tie_switches: Sequence[TieSwitchConfig],
                      shunts: Sequence[ShuntBankConfig], events: Sequence[Any]) -> None:
        problems: list[str] = []
        self.events = parse_events(list(events))
        fault_index, bad = resolve_fault_elements(net, self.events)
        problems += bad

        self.gfm_bus: int | None = None
        gfm_eg = None
        if grid_forming is not None:
            try:
                self.gfm_bus = resolve_bus(net, grid_forming.bus)
            except ValueError as err:
                problems.append(f"grid.grid_forming.bus: {err}")
            else:
                if self.gfm_bus in set(net.ext_grid["bus"].astype(int)):
                    problems.append(f"grid.grid_forming.bus: bus {self.gfm_bus} holds the "
                                    "external grid; put the grid-forming unit inside the zone")
        self.shunt_buses = np.zeros(0, np.int64)
        shunt_buses = []
        for i, bank in enumerate(shunts):
            try:
                shunt_buses.append(resolve_bus(net, bank.bus))
            except ValueError as err:
                problems.append(f"grid.shunts.{i}.bus: {err}")
        self.tie_switch_ids = np.zeros(0, np.int64)
        ties, bad = resolve_tie_switches(net, tie_switches)
        problems += bad
        if problems:
            raise ValueError("; ".join(problems))

        self.schedule = build_schedule(self.events, self.times, self.step_s, fault_index)
        dynamic = bool(self.events) or grid_forming is not None or bool(shunts)
        if grid_forming is not None:
            gfm_eg = int(pp.create_ext_grid(net, self.gfm_bus, vm_pu=grid_forming.vm_pu,
                                            va_degree=0.0, in_service=False,
                                            name="grid-forming unit"))
            self.gfm = GridFormingBattery(grid_forming.p_max_kw, grid_forming.e_kwh,
                                          grid_forming.soc_init, grid_forming.soc_min,
                                          grid_forming.soc_max, grid_forming.efficiency)
        else:
            self.gfm = None
        shunt_index = np.zeros(0, np.int64)
        if shunts:
            self.shunt_buses = np.asarray(shunt_buses, dtype=np.int64)
            shunt_index = np.array([
                pp.create_shunt(net, b, q_mvar=bank.q_kvar * 1e-3, p_mw=0.0, step=0,
                                max_step=bank.steps, name=f"switched bank {i}")
                for i, (b, bank) in enumerate(zip(self.shunt_buses, shunts, strict=True))],
                dtype=np.int64)
        self.shunts = ShuntBanks([s.q_kvar for s in shunts], [s.steps for s in shunts],
                                 [s.v_on_pu for s in shunts], [s.v_off_pu for s in shunts],
                                 [s.delay_steps for s in shunts])
        self._shunt_bus_pos = net.bus.index.get_indexer(self.shunt_buses)
        self._ext_grid_is_gfm = np.zeros(len(net.ext_grid), dtype=bool)
        if gfm_eg is not None:
            self._ext_grid_is_gfm[net.ext_grid.index.get_loc(gfm_eg)] = True
        self._ext_grid_upstream = ~self._ext_grid_is_gfm
        self._all_ext_grids_upstream = bool(self._ext_grid_upstream.all())

        self._switching = SwitchingBase.of(net, gfm_eg, shunt_index)
        # The compiled solver converts a scratch copy per topology; the net may be emptied.
        self._scratch = copy.deepcopy(net) if dynamic else None
        self._sections = {fw.event: fault_section(net, fw.element, fw.index)
                          for fw in self.schedule.faults}
        self.tie_switch_ids = np.array([t[0] for t in ties], dtype=np.int64)
        self._tie_ready = {fw.event: [self.schedule.first_step_at_or_after(fw.t_s + t_sw,
                                                                            self.step_s)
                                      for _, t_sw in ties] for fw in self.schedule.faults}
        self._normal = Topology(shunt_steps=tuple(0 for _ in shunts))
        self._energised_cache: dict[Topology, np.ndarray] = {}
        self._normal_energised = energised_buses(net) if self._scratch is None else None
        # without faults a step's topology depends on the outage flag and shunt steps only
        self._plain_topologies: dict[tuple[bool, tuple[int, ...]], Topology] = {}
        self._supplies: dict[Topology, _Supply] = {}
        self._last_supply: tuple[Topology | None, _Supply | None] = (None, None)
        self._no_shunt_steps = _frozen(np.zeros(0, np.int64))
        self._no_shunt_q = _frozen(np.zeros(0))
        self._has_shunts = bool(self.shunts.n)

    def _setup_accounting(self, net: pandapowerNet, background: _Background,
                          injection_customers: np.ndarray | list[int] | None) -> None:
        """Per-element bus positions and weights for served / unserved sums, customers."""
        bus_index = net.bus.index
        self._acct = {}
        for element in ("load", "sgen"):
            df = net[element]
            if len(df) == 0 or (element, "p_mw") not in background.values:
                continue
            pos = bus_index.get_indexer(df["bus"])
            w = df["scaling"].to_numpy(np.float64) * df["in_service"].to_numpy(np.float64)
            self._acct[element] = (pos, w, background.values[(element, "p_mw")])
        self._load_class = load_shed_classes(net)
        self._class_kw = None
        self._no_classes = _frozen(np.zeros(len(SHED_CLASSES)))
        if "load" in self._acct:
            # what the loads of each class ask, every step [kW]: summed in load order like
            # np.bincount(classes, weights=asked) (the + 0.0 gives an empty sum its +0)
            _, w, values = self._acct["load"]
            asked = np.multiply(values, 1e3)
            asked *= w
            self._class_kw = _frozen(np.stack(
                [np.cumsum(asked[..., self._load_class == c], axis=-1)[..., -1] + 0.0
                 if (self._load_class == c).any() else np.zeros(asked.shape[:-1])
                 for c in range(len(SHED_CLASSES))], axis=-1))
        customers = np.zeros(len(bus_index), dtype=np.int64)
        loads = net.load[net.load["in_service"].astype(bool)]
        np.add.at(customers, bus_index.get_indexer(loads["bus"]), 1)
        n_inj = self.injection_buses.size
        inj_c = (np.ones(n_inj, np.int64) if injection_customers is None
                 else np.asarray(injection_customers, dtype=np.int64))
        if inj_c.shape != (n_inj,):
            raise ValueError(f"injection_customers: need shape ({n_inj},), got {inj_c.shape}")
        self._inj_bus_pos = bus_index.get_indexer(self.injection_buses)
        np.add.at(customers, self._inj_bus_pos, inj_c)
        self.customers_per_bus = customers
        self._all_served = _frozen(np.zeros(n_inj))

    @property
    def initial_result(self) -> GridResult:
        """The set-up state (step 0 background, no injections), or the last good one after."""
        return self._last

    @property
    def solver_time_s(self) -> float:
        """Wall time spent inside the power-flow solver (runpp or the kernel) so far. [s]"""
        return self._flow.time_s

    # -- topology --------------------------------------------------------------------------
    def _energised(self, topo: Topology) -> np.ndarray:
        if self._scratch is None:
            return self._normal_energised
        hit = self._energised_cache.get(topo)
        if hit is None:
            self._switching.apply(self._scratch, topo)
            hit = energised_buses(self._scratch)
            self._energised_cache[topo] = hit
        return hit

    def _supply(self, topo: Topology) -> _Supply:
        """What the energised buses of ``topo`` fix in a step's result (cached per topology)."""
        last = self._last_supply
        if last[0] is topo:  # the same topology object as the step before (no hashing)
            return last[1]
        hit = self._supplies.get(topo)
        if hit is None:
            energised = self._energised(topo)
            dead = ~energised
            reported = energised[self._select.bus]
            load = self._acct.get("load")
            inj_dead = dead[self._inj_bus_pos]
            hit = _Supply(
                energised=energised, dead=dead, any_dead=bool(dead.any()),
                reported_on=bool(reported.all()),
                energised_out=_frozen(reported.astype(np.int64)),
                unserved_w={e: w * dead[pos] for e, (pos, w, _) in self._acct.items()},
                load_on=None if load is None else energised[load[0]],
                inj_dead=inj_dead, any_inj_dead=bool(inj_dead.any()),
                customers_off=int(self.customers_per_bus @ dead))
            self._supplies[topo] = hit
        self._last_supply = (topo, hit)
        return hit

    def _topology(self, k: int, shunt_steps: tuple[int, ...]
                  ) -> tuple[Topology, Sequence[int]]:
        """The step's switching state before restoration, and the tie switches ready."""
        islanded = bool(self.schedule.outage[k])
        if not self.schedule.faults:
            key = (islanded, shunt_steps)
            topo = self._plain_topologies.get(key)
            if topo is None:
                topo = Topology(islanded, islanded and self.gfm is not None,
                                shunt_steps=shunt_steps)
                self._plain_topologies[key] = topo
            return topo, ()
        out_l: set[int] = set()
        out_t: set[int] = set()
        opened: set[int] = set()
        ready: list[int] = []
        for fw in self.schedule.faults:
            if fw.k_fault <= k < fw.k_repair:
                sec = self._sections[fw.event]
                out_l |= sec.lines
                out_t |= sec.trafos
                opened |= sec.switches
                ready += [int(sw) for sw, k_ready in zip(self.tie_switch_ids,
                                                         self._tie_ready[fw.event], strict=True)
                          if k >= k_ready]
        ready = [sw for sw in dict.fromkeys(ready) if sw not in opened]
        topo = Topology(islanded, islanded and self.gfm is not None, frozenset(out_l),
                        frozenset(out_t), frozenset(opened), frozenset(), shunt_steps)
        return topo, ready

    def _within_limits(self, raw: _Raw, topo: Topology) -> bool:
        lo, hi = self.v_band_pu
        vm = raw.vm_pu[self._energised(topo)]
        if vm.size and (np.nanmin(vm) < lo or np.nanmax(vm) > hi):
            return False
        for loading in (raw.line_loading_pct, raw.trafo_loading_pct):
            if loading.size and np.nanmax(loading, initial=0.0) > self.max_loading_pct:
                return False
        if topo.islanded and self.gfm is not None:
            supply = _total_kw(raw.ext_grid_p_mw[self._ext_grid_is_gfm])
            if self.gfm.shortfall_kw(supply, self._h) > 0:
                return False
        return True

    # -- stepping --------------------------------------------------------------------------
    def solve_step(self, k: int, p_kw_bus: np.ndarray, q_kvar_bus: np.ndarray,
                   shed_share: np.ndarray | None = None) -> GridResult:
        """Solve step ``k`` with the given injections.

        The step's switching state follows the events: an upstream outage makes the
        grid-forming unit the slack (or de-energises the zone without one); a fault isolates
        its section, and once a tie switch's switching time has passed, tie switches are
        closed in order where they re-energise buses within the voltage band and loading
        limit. When the island asks more of the grid-forming unit than its power or energy
        allows, the island collapses for the step (its buses are de-energised). Shunt banks
        switch on the previous step's voltages.

        Parameters
        ----------
        k : int
            Step index into ``times`` (selects the background profile row and events).
        p_kw_bus, q_kvar_bus : ndarray
            Active [kW] and reactive [kvar] power drawn at each injection bus (load
            convention), aligned to ``injection_buses``.
        shed_share : ndarray, optional
            Share of the background loads of each class of ``SHED_CLASSES`` to shed this step
            (P and Q alike), each within [0, 1]; None: shed nothing. [-]

        Returns
        -------
        GridResult
            This step's state; when the power flow does not converge, the last good state with
            ``converged=False`` (the step is counted in ``nonconverged_steps``, never raised).
        """
        self._check_step(k)
        p_kw = np.asarray(p_kw_bus, dtype=np.float64)
        q_kvar = np.asarray(q_kvar_bus, dtype=np.float64)
        n_inj = self.injection_buses.size
        if p_kw.shape != self._inj_shape or q_kvar.shape != self._inj_shape:
            raise ValueError(f"p_kw_bus, q_kvar_bus: need shape ({n_inj},) aligned to "
                             f"injection_buses, got {p_kw.shape} and {q_kvar.shape}")
        pq_kw = np.concatenate((p_kw, q_kvar))  # a copy: P [kW], then Q [kvar]
        if not all_finite(pq_kw):
            raise ValueError("p_kw_bus, q_kvar_bus: non-finite injection")
        return self._solve_step(k, pq_kw, shed_share)

    def solve_step_sum(self, k: int, parts: list[np.ndarray], ptr: np.ndarray,
                       bins: np.ndarray, shed_share: np.ndarray | None = None) -> GridResult:
        """:meth:`solve_step` with the injections summed per bus from several arrays.

        Parameters
        ----------
        k : int
            Step index into ``times``.
        parts : list of array_like
            1-D arrays of powers drawn (load convention), concatenated in this order: their
            elements add up per bin. C-contiguous float64 arrays are summed as they are, others
            converted first. [kW], [kvar]
        ptr : ndarray of int64, shape (len(parts) + 1,)
            Where each part starts in the concatenation (0 first), then its end.
        bins : ndarray of int64, shape (ptr[-1],)
            Bin of each element: ``i`` adds to P of ``injection_buses[i]``, ``n + i`` to its Q
            (``n`` injection buses). Each bin sums its elements in their order, as
            ``np.bincount`` does.
        shed_share : ndarray, optional
            As for :meth:`solve_step`.

        Returns
        -------
        GridResult
            As :meth:`solve_step`.

        Raises
        ------
        ValueError
            When a part's length differs from ``ptr``, a bin is out of range or a sum is not
            finite.
        """
        self._check_step(k)
        pq_kw = np.empty(2 * self.injection_buses.size)  # P [kW], then Q [kvar]
        try:
            finite = self._bin_sums(parts, ptr, bins, pq_kw)
        except ValueError:  # lists or other dtypes: converted, then summed (or a clear error)
            parts = [np.ascontiguousarray(a, dtype=np.float64) for a in parts]
            finite = self._bin_sums(parts, ptr, bins, pq_kw)
        if not finite:
            raise ValueError("parts: non-finite injection")
        return self._solve_step(k, pq_kw, shed_share)

    def _check_step(self, k: int) -> None:
        if not 0 <= k < self._n_steps:
            raise ValueError(f"step {k} outside the {self._n_steps} steps of this run")

    def _solve_step(self, k: int, pq_kw: np.ndarray, shed_share: np.ndarray | None
                    ) -> GridResult:
        """The step of :meth:`solve_step` once its injections (P [kW], then Q [kvar], finite,
        owned by the model from now on) are known."""
        n_inj = self.injection_buses.size
        p_kw, q_kvar = self.injection_p_kw, self.injection_q_kvar = pq_kw[:n_inj], pq_kw[n_inj:]
        shed = None if shed_share is None else self._shed_fraction(shed_share)

        steps = (self.shunts.update(self._last_vm[self._shunt_bus_pos]) if self._has_shunts
                 else ())
        topo, ready = self._topology(k, steps)
        raw = self._flow.solve(int(k), p_kw, q_kvar, topo, warm=True, shed=shed, pq_kw=pq_kw)
        if raw is not None:
            for sw in ready:  # restoration: close ties that re-energise buses within limits
                trial = topo.with_tie(sw)
                if self._energised(trial).sum() <= self._energised(topo).sum():
                    continue
                cand = self._flow.solve(int(k), p_kw, q_kvar, trial, warm=True, shed=shed,
                                        pq_kw=pq_kw)
                if cand is not None and self._within_limits(cand, trial):
                    topo, raw = trial, cand
        held, supply, demand, gfm_loss = False, 0.0, 0.0, 0.0
        if raw is not None and topo.gfm_on:
            demand = _total_kw(raw.ext_grid_p_mw[self._ext_grid_is_gfm])
            if self.gfm.shortfall_kw(demand, self._h) > 0:
                topo = topo.without_gfm()  # the unit trips: the island goes dark
                raw = self._flow.solve(int(k), p_kw, q_kvar, topo, warm=True, shed=shed,
                                       pq_kw=pq_kw)
            else:
                held, supply = True, demand
        if raw is not None:
            if held:
                gfm_loss = self.gfm.step(supply, self._h)
            result = self._result(k, raw, topo, p_kw, held, supply, demand, gfm_loss, shed)
            self._prev_energised = self._energised(topo)
            self._last_vm = raw.vm_pu
            self._last = result
            self.finite_result = result if raw.finite and _finite_totals(result) else None
        else:
            self.nonconverged_steps += 1
            self.nonconverged_at.append(int(k))
            result = replace(self._last, converged=False)
            self.finite_result = None
        self.steps_solved += 1
        return result

    def _shed_fraction(self, shed_share: np.ndarray) -> np.ndarray | None:
        """Share of each background load to shed (``net.load`` order), None when nothing."""
        share = np.asarray(shed_share, dtype=np.float64).ravel()
        if share.shape != (len(SHED_CLASSES),) or not np.isfinite(share).all():
            raise ValueError(f"shed_share: need {len(SHED_CLASSES)} finite shares, one per "
                             f"class {SHED_CLASSES}, got {share.tolist()}")
        if (share < -1e-12).any() or (share > 1 + 1e-12).any():
            raise ValueError(f"shed_share: each share must lie within [0, 1], got "
                             f"{share.tolist()}")
        if not (share > 0).any() or "load" not in self._acct:
            return None
        return np.clip(share, 0.0, 1.0)[self._load_class]

    def _result(self, k: int, raw: _Raw, topo: Topology, p_kw: np.ndarray, held: bool,
                supply_kw: float, demand_kw: float, gfm_losses_kw: float,
                shed: np.ndarray | None = None) -> GridResult:
        sel = self._select
        all_bus, all_line, all_trafo = self._select_all
        sup = self._supply(topo)
        if sup.reported_on:  # every reported bus energised: nothing to blank out
            vm = raw.vm_pu if all_bus else raw.vm_pu[sel.bus]
            va = raw.va_deg if all_bus else raw.va_deg[sel.bus]
        else:
            vm = np.where(sup.energised, raw.vm_pu, 0.0)[sel.bus]
            va = np.where(sup.energised, raw.va_deg, 0.0)[sel.bus]
        line = raw.line_loading_pct if all_line else raw.line_loading_pct[sel.line]
        trafo = raw.trafo_loading_pct if all_trafo else raw.trafo_loading_pct[sel.trafo]
        if not raw.finite:  # a line or transformer without voltage at an end: loading 0
            line, trafo = _nan_to_zero(line), _nan_to_zero(trafo)
        if self._all_ext_grids_upstream:
            import_kw = _total_kw(raw.ext_grid_p_mw)
            q_import_kvar = _total_kw(raw.ext_grid_q_mvar)
        else:
            upstream = self._ext_grid_upstream
            import_kw = _total_kw(raw.ext_grid_p_mw[upstream])
            q_import_kvar = _total_kw(raw.ext_grid_q_mvar[upstream])
        if not (math.isfinite(import_kw) and math.isfinite(q_import_kvar)):
            # a finite sum means finite terms; otherwise zero the non-finite ones first
            upstream = self._ext_grid_upstream
            import_kw = _total_kw(np.nan_to_num(raw.ext_grid_p_mw)[upstream])
            q_import_kvar = _total_kw(np.nan_to_num(raw.ext_grid_q_mvar)[upstream])
        classes = self._class_kw
        if classes is None:
            classes = self._no_classes
        elif classes.ndim == 2:
            classes = classes[k]
        # positional, in field order: keywords cost several times more, once per step
        result = GridResult(
            vm, va, line, trafo, raw.losses_kw, import_kw, q_import_kvar,
            raw.background_load_kw, raw.background_gen_kw, raw.background_storage_kw,
            raw.injection_kw, True, sup.energised_out,
            np.where(sup.inj_dead, p_kw, 0.0) if sup.any_inj_dead else self._all_served,
            self._no_shunt_steps, self._no_shunt_q, classes)
        # The rest keeps its default (no island, nothing unserved, shed or switched) unless the
        # step has it: set only then, as a plain zone's steps never do.
        if topo.islanded:
            result.islanded = 1
        if topo.closed_switches:
            result.ties_closed = len(topo.closed_switches)
        if sup.any_dead:
            for element, (_, _, values) in self._acct.items():
                row = values[k] if values.ndim == 2 else values
                unserved_kw = 1e3 * float(row @ sup.unserved_w[element])
                if element == "load":
                    result.background_load_unserved_kw = unserved_kw
                else:
                    result.background_gen_unserved_kw = unserved_kw
            result.customers_off = sup.customers_off
            result.customers_interrupted = int(
                self.customers_per_bus @ (sup.dead & self._prev_energised))
        load = self._acct.get("load")
        if shed is not None and load is not None:
            _, w, values = load
            asked = 1e3 * (values[k] if values.ndim == 2 else values) * w
            result.background_load_shed_kw = float((asked * shed) @ sup.load_on)
        gfm = self.gfm
        if gfm is not None:
            result.island_held = int(held)
            result.gfm_supply_kw = supply_kw
            result.gfm_demand_kw = demand_kw
            result.gfm_losses_kw = gfm_losses_kw
            result.gfm_soc = gfm.soc
            result.gfm_e_kwh = gfm.energy_kwh
            result.gfm_headroom_kw = gfm.max_supply_kw(self._h) - demand_kw
            result.gfm_absorb_headroom_kw = gfm.max_absorb_kw(self._h) + demand_kw
        if self._has_shunts:
            steps = np.asarray(topo.shunt_steps, dtype=np.int64)
            result.shunt_steps = steps
            result.shunt_q_kvar = (self.shunts.q_kvar * steps
                                   * np.square(np.nan_to_num(raw.vm_pu[self._shunt_bus_pos])))
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

_SERVED = ("load", "sgen", "storage")  # background tables a step reports served powers of


class _CompiledTopology:
    """One switching state converted for the kernel (``network`` None: no slack, all dark)."""

    def __init__(self, net: pandapowerNet, network: PowerFlowNetwork | None,
                 weights: dict[str, np.ndarray], bus_pos: dict[str, np.ndarray],
                 values: dict[str, np.ndarray], inj_pos: np.ndarray) -> None:
        self.network = network
        self.last: PowerFlowResult | None = None
        """The last converged solution: the warm start of the next step."""
        if network is None:
            self.live = np.zeros(len(net.bus), dtype=bool)
        else:
            dead = np.union1d(network.islanded_buses, network.out_of_service_buses)
            self.live = ~np.isin(network.bus_index, dead)
        self.all_live = bool(self.live.all())
        self.inj_live = self.live[inj_pos].astype(np.float64)  # 1 or 0: a dot product's weights
        # Elements on out-of-service or islanded buses draw nothing (as in pandapower's res_*).
        self.weights = {e: w * self.live[bus_pos[e]] for e, w in weights.items()}
        # served background per table: profiled ones per step, static ones once [MW]
        self.profiled = [(e, values[e], w) for e, w in self.weights.items()
                         if values[e].ndim == 2]
        self.static = {e: float(values[e] @ w) for e, w in self.weights.items()
                       if values[e].ndim != 2}
        self.per_step: list[tuple[float, float, float]] | None = None
        """:meth:`served_mw` of every step, once filled."""
        if network is None:
            self.shunt_pos, self.shunt_mw_1pu = np.zeros(0, np.int64), np.zeros(0)
        else:
            self.shunt_pos, self.shunt_mw_1pu = _shunt_p_at_1pu(net, network, self.live)
        self.has_shunts = bool(self.shunt_pos.size)

    def served_mw(self, k: int) -> tuple[float, float, float]:
        """Served background of step ``k``: load, sgen and storage, each summed over its table
        (0 without one). [MW]"""
        if self.per_step is not None:
            return self.per_step[k]
        static, profiled = self.static, {e: (values, w) for e, values, w in self.profiled}
        return tuple(float(profiled[e][0][k] @ profiled[e][1]) if e in profiled
                     else static.get(e, 0.0) for e in _SERVED)

    def fill_per_step(self) -> None:
        """Sum the profiled tables of every step now: ``np.vecdot`` takes each row's dot
        product as ``row @ w`` does in a step (a matrix product would sum in another order)."""
        if not self.profiled:
            return
        n_steps = self.profiled[0][1].shape[0]
        columns = {e: np.vecdot(values, w).tolist() for e, values, w in self.profiled}
        self.per_step = list(zip(*(columns[e] if e in columns
                                   else [self.static.get(e, 0.0)] * n_steps
                                   for e in _SERVED), strict=True))


class _CompiledFlow:
    """The compiled kernel on arrays: no DataFrame is touched after set-up.

    The background powers of the whole run are summed per bus at set-up (one sparse product
    per element table); a step hands its row and the injections to the kernel, which adds them
    at their bus positions and solves, warm-started from the last good voltages of the same
    switching state. Each switching state (topology) is converted once, when first met, and
    kept.
    """

    def __init__(self, net: pandapowerNet, background: _Background, n_steps: int,
                 injection_buses: np.ndarray, switching: SwitchingBase,
                 scratch: pandapowerNet | None) -> None:
        self.network = compiled_network(net)
        nw = self.network
        self._switching = switching
        self._scratch = scratch
        self._inj_pos = nw.bus_positions(injection_buses)

        tables = [e for e in _SERVED if len(net[e])]
        profiled = any(background.values[(e, c)].ndim == 2
                       for e in tables for c in ("p_mw", "q_mvar"))
        # P and Q of a step side by side, [p_mw..., q_mvar...]: the kernel's input row
        self._pq_bus = np.zeros((n_steps if profiled else 1, 2 * nw.n_bus))
        p_bus, q_bus = self._pq_bus[:, :nw.n_bus], self._pq_bus[:, nw.n_bus:]
        self._values: dict[str, np.ndarray] = {}
        weights: dict[str, np.ndarray] = {}
        self._bus_pos: dict[str, np.ndarray] = {}
        for element in tables:
            df = net[element]
            p_mw = background.values[(element, "p_mw")]
            dp, dq = nw.aggregate(element, p_mw, background.values[(element, "q_mvar")])
            p_bus += dp
            q_bus += dq
            self._values[element] = p_mw
            weights[element] = (df["scaling"].to_numpy(np.float64)
                                * df["in_service"].to_numpy(np.float64))
            self._bus_pos[element] = nw.bus_positions(df["bus"])
        values = background.values
        self._load_pq = ((values[("load", "p_mw")], values[("load", "q_mvar")])
                         if len(net.load) else (np.zeros(0), np.zeros(0)))
        self._pq_profiled = profiled
        self._n_bus = nw.n_bus
        self._pq_inj_pos = np.concatenate([self._inj_pos, nw.n_bus + self._inj_pos])
        self._weights = weights
        self._eg_n = len(net.ext_grid)
        self._n = (len(net.bus), len(net.line), len(net.trafo))
        self._topologies: dict[Topology, _CompiledTopology] = {}
        self._last: tuple[Topology | None, _CompiledTopology | None] = (None, None)
        self._normal = _CompiledTopology(net, nw, weights, self._bus_pos, self._values,
                                         self._inj_pos)
        self._normal.fill_per_step()  # most steps of most runs are in the normal topology
        self.time_s = 0.0

    def _topology(self, topo: Topology) -> _CompiledTopology:
        last = self._last
        if last[0] is topo:  # the same topology object as the call before (no hashing)
            return last[1]
        hit = self._topologies.get(topo)
        if hit is not None:
            self._last = (topo, hit)
            return hit
        if self._scratch is None:
            hit = self._normal
        else:
            self._switching.apply(self._scratch, topo)
            network = compiled_network(self._scratch) if has_slack(self._scratch) else None
            hit = _CompiledTopology(self._scratch, network, self._weights, self._bus_pos,
                                    self._values, self._inj_pos)
        self._topologies[topo] = hit
        self._last = (topo, hit)
        return hit

    def solve(self, k: int, p_kw: np.ndarray, q_kvar: np.ndarray, topo: Topology,
              warm: bool, shed: np.ndarray | None = None,
              pq_kw: np.ndarray | None = None) -> _Raw | None:
        """Solve step ``k``; ``pq_kw``, if given, is ``p_kw`` followed by ``q_kvar``."""
        entry = self._topology(topo)
        if entry.network is None:
            n_bus, n_line, n_trafo = self._n
            nan = np.full(n_bus, np.nan)
            return _Raw(nan, nan, np.zeros(n_line), np.zeros(n_trafo), 0.0,
                        np.zeros(self._eg_n), np.zeros(self._eg_n), 0.0, 0.0, 0.0, 0.0)
        load_mw, sgen_mw, storage_mw = entry.served_mw(k)
        row = self._pq_bus[k if self._pq_profiled else 0]
        at = self._inj_pos
        extra = np.concatenate((p_kw, q_kvar)) if pq_kw is None else pq_kw  # [kW], [kvar]
        if shed is not None:  # the row formed here: injections added, then shed loads taken off
            row = row.copy()
            row[self._pq_inj_pos] += 1e-3 * extra
            at = extra = None
            n_bus = self._n_bus
            p_row, q_row = (v[k] if v.ndim == 2 else v for v in self._load_pq)
            shed_p, shed_q = shed * p_row, shed * q_row
            load_mw -= float(shed_p @ entry.weights["load"])
            dp, dq = self.network.aggregate("load", shed_p, shed_q)
            row[:n_bus] -= dp
            row[n_bus:] -= dq
        t0 = time.perf_counter()
        try:
            res, finite = self._run(entry, row, at, extra, entry.last if warm else None)
            if res is None and warm and entry.last is not None:
                # from the no-load voltages
                res, finite = self._run(entry, row, at, extra, None)
        finally:
            self.time_s += time.perf_counter() - t0
        if res is None:
            return None
        entry.last = res
        out, lay = res._out, res._layout
        vm = out[lay.vm]
        shunt_mw = (float(entry.shunt_mw_1pu @ np.square(vm[entry.shunt_pos]))
                    if entry.has_shunts else 0.0)
        return _Raw(  # positional, in field order: keywords cost several times more
            vm, out[lay.va], out[lay.line], out[lay.trafo],
            1e3 * (out.item(lay.scalars) + shunt_mw),  # losses [kW]
            out[lay.eg_p], out[lay.eg_q],
            1e3 * load_mw, 1e3 * sgen_mw, 1e3 * storage_mw,
            # injections [kW]; .dot: the product @ gives, at half the call's cost
            float(p_kw.dot(entry.inj_live)) if p_kw.size else 0.0,
            finite)

    @staticmethod
    def _run(entry: _CompiledTopology, row: np.ndarray, at: np.ndarray | None,
             extra: np.ndarray | None, start: PowerFlowResult | None
             ) -> tuple[PowerFlowResult | None, bool]:
        """The kernel's result, or None if it failed (a warning turned into an error by a
        filter counts as failing: only a diverging step warns); and whether its whole output
        row is finite. The row is made read-only: results hand out views of it, and the next
        step starts from it."""
        try:
            res = entry.network.solve_row(row, at, extra, start, flows=False, scale=1e-3)
        except Warning:
            return None, False
        if res._its <= 0:  # not converged
            return None, False
        out = res._out
        # with every bus supplied, a converged row is finite throughout (the kernel tells)
        finite = entry.all_live and res._finite
        if not finite:
            vm = out[res._layout.vm]
            if not all_finite(vm if entry.all_live else vm[entry.live]):
                return None, False
        out.setflags(write=False)
        return res, finite


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
    """The reference: injections as pandapower loads, ``pandapower.runpp``, ``res_*`` tables.

    A step in another switching state than the last first writes it into the net's
    ``in_service``, ``closed`` and ``step`` columns.
    """

    def __init__(self, net: pandapowerNet, background: _Background, n_steps: int,
                 injection_buses: np.ndarray, switching: SwitchingBase,
                 scratch: pandapowerNet | None) -> None:
        self.net = net
        self._background = background
        self._switching = switching
        self._applied: Topology | None = None
        # The twin's injections: constant-power loads appended after the background loads.
        self._n_bg_loads = len(net.load)
        if injection_buses.size:
            pp.create_loads(net, injection_buses, p_mw=0.0, q_mvar=0.0,
                            name=[f"twin injection bus {b}" for b in injection_buses],
                            type=INJECTION_LOAD_TYPE)
        for element, column in _BACKGROUND:
            net[element][column] = net[element][column].astype(np.float64)
        self._inplace = _writes_through(net.load, "p_mw")
        self._numba = importlib.util.find_spec("numba") is not None
        self._find_impedance_switches()
        self._live: dict[Topology, np.ndarray] = {}
        self._live_now = energised_buses(net)
        self.time_s = 0.0

    def _find_impedance_switches(self) -> None:
        # Impedance bus-bus switches are branches; ideal ones fuse buses and dissipate nothing.
        sw = self.net.switch
        self._switch_pos = np.flatnonzero(
            (sw["et"] == "b").to_numpy() & sw["closed"].astype(bool).to_numpy()
            & (sw["z_ohm"].fillna(0.0).to_numpy() > 0)) if len(sw) else np.empty(0, np.int64)

    def solve(self, k: int, p_kw: np.ndarray, q_kvar: np.ndarray, topo: Topology,
              warm: bool, shed: np.ndarray | None = None,
              pq_kw: np.ndarray | None = None) -> _Raw | None:
        if topo != self._applied:
            self._switching.apply(self.net, topo)
            self._find_impedance_switches()
            live = self._live.get(topo)
            if live is None:
                live = self._live[topo] = energised_buses(self.net)
            self._live_now = live
            warm = False  # the last results belong to another topology
            self._applied = topo
        self._write_background(k, shed)
        n = self._n_bg_loads
        self._write(self.net.load, "p_mw", slice(n, None), p_kw * 1e-3)
        self._write(self.net.load, "q_mvar", slice(n, None), q_kvar * 1e-3)
        if not has_slack(self.net):
            return self._dark()
        return self._collect() if self._solve(warm) else None

    def _dark(self) -> _Raw:
        net = self.net
        nan = np.full(len(net.bus), np.nan)
        n_eg = len(net.ext_grid)
        return _Raw(nan, nan, np.zeros(len(net.line)), np.zeros(len(net.trafo)), 0.0,
                    np.zeros(n_eg), np.zeros(n_eg), 0.0, 0.0, 0.0, 0.0)

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
                    self.net.res_bus["vm_pu"].to_numpy()[self._live_now]).all()
            except (pp.LoadflowNotConverged, np.linalg.LinAlgError):
                ok = False
            finally:
                self.time_s += time.perf_counter() - t0
            if ok:
                return True
        return False

    def _write_background(self, k: int, shed: np.ndarray | None = None) -> None:
        for (element, column), values in self._background.values.items():
            rows = slice(0, self._n_bg_loads) if element == "load" else slice(None)
            if element == "load" or values.ndim == 2:  # static sgen, gen, storage stay as they are
                row = self._background.at((element, column), k)
                if element == "load" and shed is not None:
                    row = row * (1.0 - shed)
                self._write(self.net[element], column, rows, row)

    def _write(self, df: pd.DataFrame, column: str, rows: slice, values: np.ndarray) -> None:
        if self._inplace:
            df[column].values[rows] = values
        else:  # pandas with copy-on-write: .values is read-only, so replace the column
            full = df[column].to_numpy(np.float64, copy=True)
            full[rows] = values
            df[column] = full

    def _collect(self) -> _Raw:
        net = self.net
        n = self._n_bg_loads
        load_mw = net.res_load["p_mw"].to_numpy(np.float64)
        losses_mw = sum(_column_sum(net, table, col) for table, col in _LOSS_COLUMNS)
        if self._switch_pos.size:
            res_sw = net.res_switch
            losses_mw += float(np.nansum(res_sw["p_from_mw"].to_numpy()[self._switch_pos]
                                         + res_sw["p_to_mw"].to_numpy()[self._switch_pos]))
        bg_load_mw = float(np.nansum(load_mw[:n])) + sum(
            _column_sum(net, t, "p_mw") for t in _EXTRA_LOAD_TABLES)
        return _Raw(  # copies: the next power flow writes the res_* tables anew
            vm_pu=net.res_bus["vm_pu"].to_numpy(np.float64, copy=True),
            va_deg=net.res_bus["va_degree"].to_numpy(np.float64, copy=True),
            line_loading_pct=net.res_line["loading_percent"].to_numpy(np.float64, copy=True),
            trafo_loading_pct=net.res_trafo["loading_percent"].to_numpy(np.float64, copy=True),
            losses_kw=1e3 * losses_mw,
            ext_grid_p_mw=np.nan_to_num(net.res_ext_grid["p_mw"].to_numpy(np.float64)),
            ext_grid_q_mvar=np.nan_to_num(
                net.res_ext_grid["q_mvar"].to_numpy(np.float64)),
            background_load_kw=1e3 * bg_load_mw,
            background_gen_kw=1e3 * sum(_column_sum(net, t, "p_mw") for t in _GEN_TABLES),
            background_storage_kw=1e3 * _column_sum(net, "res_storage", "p_mw"),
            injection_kw=1e3 * float(np.nansum(load_mw[n:])),
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
