"""Power flow of a pandapower network on arrays: conversion once, then fast solves per step.

:class:`PowerFlowNetwork` converts a pandapower net once (through pandapower's own conversion to
its internal bus/branch model, so branch impedances, transformer taps and phase shifts, fused
bus-bus switches, open line switches, shunts and slack set-points are exactly pandapower's) and
then solves balanced AC power flows from per-bus injections with the compiled kernel
``ext.powerflow`` or its NumPy twin ``ext.powerflow_np``.

Sign convention (load convention): per-bus injections ``p_mw_bus`` and ``q_mvar_bus`` are positive
when drawn from the grid. :meth:`PowerFlowNetwork.aggregate` converts per-element values in
pandapower's own conventions (load and storage positive when consuming, sgen positive when
generating) to that convention, applying each element's ``scaling`` and ``in_service``.

Results follow pandapower's definitions (``res_bus``, ``res_line``, ``res_trafo``,
``res_ext_grid``): ``vm_pu``, ``va_degree`` per bus; per line and transformer the currents at both
ends, the power entering at both ends, losses and loading; per external grid the power it supplies
(generation positive, as in ``res_ext_grid``). Buses that are out of service or have no path to an
external grid are found at set-up (:attr:`PowerFlowNetwork.islanded_buses`,
:attr:`PowerFlowNetwork.out_of_service_buses`); their voltages are NaN, like pandapower's, and any
power asked of them is reported as ``p_islanded_mw`` instead of being solved.

A step whose fixed-point iteration does not converge is retried with Newton-Raphson (SciPy sparse
LU); a step that neither method solves is reported with ``converged=False`` and NaN results.
"""

from __future__ import annotations

import copy
import warnings
from types import ModuleType
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl

from ext import select_kernel

__all__ = [
    "BatchPowerFlowResult",
    "PowerFlowNetwork",
    "PowerFlowResult",
    "UnsupportedNetworkError",
    "kernel_module",
]

_SQRT3 = float(np.sqrt(3.0))
_empty = np.empty

# pandapower element tables this solver models; any other table with in-service rows is refused.
_UNSUPPORTED_TABLES = (
    "gen", "ward", "xward", "dcline", "trafo3w", "impedance", "motor", "asymmetric_load",
    "asymmetric_sgen", "svc", "tcsc", "ssc", "vsc", "vsc_stacked", "vsc_bipolar", "b2b_vsc",
    "line_dc", "bus_dc", "source_dc", "load_dc",
)
_INJECTION_SIGN = {"load": 1.0, "sgen": -1.0, "storage": 1.0}  # to load convention


class UnsupportedNetworkError(ValueError):
    """The pandapower net holds something this solver does not model."""


def kernel_module(backend: Literal["auto", "compiled", "numpy"] = "auto") -> ModuleType:
    """The compiled ``ext.powerflow`` or its twin (see :func:`ext.select_kernel`)."""
    return select_kernel("powerflow", backend)


# --------------------------------------------------------------------------------------------
# Output layout: one float64 row per step, shared by the kernels and the result classes.
# --------------------------------------------------------------------------------------------
class _Layout:
    """Where each output sits in a row; the slices are made once, as results read them often."""

    __slots__ = ("eg_p", "eg_q", "flows", "line", "n_branch", "n_bus", "n_ext_grid", "scalars",
                 "trafo", "va", "vm", "width")

    def __init__(self, n_bus: int, n_branch: int, n_ext_grid: int, n_line: int,
                 flows: bool) -> None:
        self.n_bus = n_bus
        self.n_branch = n_branch  # reported branches: lines, then transformers
        self.n_ext_grid = n_ext_grid
        self.flows = flows
        self.vm = slice(0, n_bus)
        self.va = slice(n_bus, 2 * n_bus)
        start = 2 * n_bus  # loadings: lines, then transformers
        self.line = slice(start, start + n_line)
        self.trafo = slice(start + n_line, start + n_branch)
        self.eg_p = slice(start + n_branch, start + n_branch + n_ext_grid)
        self.eg_q = slice(start + n_branch + n_ext_grid, start + n_branch + 2 * n_ext_grid)
        self.scalars = start + n_branch + 2 * n_ext_grid
        """Offset of p_loss_mw, q_loss_mvar, p_islanded_mw, q_islanded_mvar."""
        self.width = self.scalars + 4 + (6 * n_branch if flows else 0)

    def flow(self, k: int) -> slice:
        """k: 0 p_from_mw, 1 q_from_mvar, 2 p_to_mw, 3 q_to_mvar, 4 i_from_ka, 5 i_to_ka."""
        if not self.flows:
            raise AttributeError("branch flows were not stored; solve with flows=True")
        start = self.scalars + 4 + k * self.n_branch
        return slice(start, start + self.n_branch)


class _ResultBase:
    """Views into the output rows; shape ``(n,)`` for one step or ``(T, n)`` for a batch."""

    __slots__ = ("_finite", "_its", "_layout", "_net", "_out")

    def __init__(self, network: PowerFlowNetwork, out: np.ndarray, layout: _Layout,
                 its: Any, finite: bool = False) -> None:
        self._net, self._out, self._layout, self._its = network, out, layout, its
        self._finite = finite

    def _cols(self, sl: slice) -> np.ndarray:
        return self._out[..., sl]

    def _scalar(self, k: int) -> np.ndarray:
        return self._out[..., self._layout.scalars + k]

    # buses -----------------------------------------------------------------------------
    @property
    def vm_pu(self) -> np.ndarray:
        """Voltage magnitude per bus (order of :attr:`PowerFlowNetwork.bus_index`). [pu]"""
        return self._cols(self._layout.vm)

    @property
    def va_degree(self) -> np.ndarray:
        """Voltage angle per bus. [°]"""
        return self._cols(self._layout.va)

    @property
    def v_pu(self) -> np.ndarray:
        """Complex bus voltage, usable as ``v0`` of the next solve. [pu]"""
        return self.vm_pu * np.exp(1j * np.deg2rad(self.va_degree))

    # branches ----------------------------------------------------------------------------
    def _line(self, sl: slice) -> np.ndarray:
        return self._out[..., sl.start:sl.start + self._net.n_line]

    def _trafo(self, sl: slice) -> np.ndarray:
        return self._out[..., sl.start + self._net.n_line:sl.stop]

    @property
    def line_loading_pct(self) -> np.ndarray:
        """Line loading as pandapower: max(i_from, i_to) / (max_i_ka·df·parallel). [%]"""
        return self._out[..., self._layout.line]

    @property
    def trafo_loading_pct(self) -> np.ndarray:
        """Transformer loading as pandapower (``trafo_loading`` option). [%]"""
        return self._out[..., self._layout.trafo]

    def _flow_line(self, k: int) -> np.ndarray:
        return self._line(self._layout.flow(k))

    def _flow_trafo(self, k: int) -> np.ndarray:
        return self._trafo(self._layout.flow(k))

    @property
    def line_p_from_mw(self) -> np.ndarray:
        """Active power entering each line at its from bus. [MW]"""
        return self._flow_line(0)

    @property
    def line_q_from_mvar(self) -> np.ndarray:
        """Reactive power entering each line at its from bus. [Mvar]"""
        return self._flow_line(1)

    @property
    def line_p_to_mw(self) -> np.ndarray:
        """Active power entering each line at its to bus. [MW]"""
        return self._flow_line(2)

    @property
    def line_q_to_mvar(self) -> np.ndarray:
        """Reactive power entering each line at its to bus. [Mvar]"""
        return self._flow_line(3)

    @property
    def line_i_from_ka(self) -> np.ndarray:
        """Current magnitude at the from end of each line. [kA]"""
        return self._flow_line(4)

    @property
    def line_i_to_ka(self) -> np.ndarray:
        """Current magnitude at the to end of each line. [kA]"""
        return self._flow_line(5)

    @property
    def line_i_ka(self) -> np.ndarray:
        """Larger of the two end currents of each line. [kA]"""
        return np.maximum(self.line_i_from_ka, self.line_i_to_ka)

    @property
    def line_pl_mw(self) -> np.ndarray:
        """Active power loss of each line. [MW]"""
        return self.line_p_from_mw + self.line_p_to_mw

    @property
    def line_ql_mvar(self) -> np.ndarray:
        """Reactive power balance of each line (series loss minus charging). [Mvar]"""
        return self.line_q_from_mvar + self.line_q_to_mvar

    @property
    def trafo_p_hv_mw(self) -> np.ndarray:
        """Active power entering each transformer at its HV side. [MW]"""
        return self._flow_trafo(0)

    @property
    def trafo_q_hv_mvar(self) -> np.ndarray:
        """Reactive power entering each transformer at its HV side. [Mvar]"""
        return self._flow_trafo(1)

    @property
    def trafo_p_lv_mw(self) -> np.ndarray:
        """Active power entering each transformer at its LV side. [MW]"""
        return self._flow_trafo(2)

    @property
    def trafo_q_lv_mvar(self) -> np.ndarray:
        """Reactive power entering each transformer at its LV side. [Mvar]"""
        return self._flow_trafo(3)

    @property
    def trafo_i_hv_ka(self) -> np.ndarray:
        """Current magnitude at the HV side of each transformer. [kA]"""
        return self._flow_trafo(4)

    @property
    def trafo_i_lv_ka(self) -> np.ndarray:
        """Current magnitude at the LV side of each transformer. [kA]"""
        return self._flow_trafo(5)

    @property
    def trafo_pl_mw(self) -> np.ndarray:
        """Active power loss of each transformer. [MW]"""
        return self.trafo_p_hv_mw + self.trafo_p_lv_mw

    @property
    def trafo_ql_mvar(self) -> np.ndarray:
        """Reactive power consumed by each transformer. [Mvar]"""
        return self.trafo_q_hv_mvar + self.trafo_q_lv_mvar

    # external grids and totals ----------------------------------------------------------
    @property
    def ext_grid_p_mw(self) -> np.ndarray:
        """Active power supplied by each external grid (generation positive). [MW]"""
        return self._cols(self._layout.eg_p)

    @property
    def ext_grid_q_mvar(self) -> np.ndarray:
        """Reactive power supplied by each external grid (generation positive). [Mvar]"""
        return self._cols(self._layout.eg_q)

    @property
    def p_loss_mw(self) -> np.ndarray | float:
        """Active power lost in all branches (lines, transformers, switch impedances). [MW]"""
        return self._scalar(0)

    @property
    def q_loss_mvar(self) -> np.ndarray | float:
        """Reactive power balance of all branches. [Mvar]"""
        return self._scalar(1)

    @property
    def p_islanded_mw(self) -> np.ndarray | float:
        """Power asked of islanded or out-of-service buses, not supplied (load convention). [MW]"""
        return self._scalar(2)

    @property
    def q_islanded_mvar(self) -> np.ndarray | float:
        """Reactive power asked of islanded or out-of-service buses. [Mvar]"""
        return self._scalar(3)

    @property
    def iterations(self) -> np.ndarray | int:
        """Fixed-point iterations (plus Newton iterations where the fallback ran)."""
        return np.abs(self._its)

    @property
    def converged(self) -> np.ndarray | bool:
        """Whether the mismatch fell below the tolerance."""
        return self._its > 0


class PowerFlowResult(_ResultBase):
    """Result of one :meth:`PowerFlowNetwork.solve`; every array is a view of one buffer."""

    __slots__ = ()

    @property
    def iterations(self) -> int:
        """Fixed-point iterations (plus Newton iterations where the fallback ran)."""
        return abs(self._its)

    @property
    def converged(self) -> bool:
        """Whether the mismatch fell below the tolerance."""
        return self._its > 0

    @property
    def finite(self) -> bool:
        """Every value of the result is finite (NaN marks buses and branch ends without
        voltage, and every value of a step that did not converge)."""
        return self._finite

    @property
    def p_loss_mw(self) -> float:
        """Active power lost in all branches (lines, transformers, switch impedances). [MW]"""
        return float(self._scalar(0))

    @property
    def q_loss_mvar(self) -> float:
        """Reactive power balance of all branches. [Mvar]"""
        return float(self._scalar(1))

    @property
    def p_islanded_mw(self) -> float:
        """Power asked of islanded or out-of-service buses, not supplied (load convention). [MW]"""
        return float(self._scalar(2))

    @property
    def q_islanded_mvar(self) -> float:
        """Reactive power asked of islanded or out-of-service buses. [Mvar]"""
        return float(self._scalar(3))


class BatchPowerFlowResult(_ResultBase):
    """Result of :meth:`PowerFlowNetwork.solve_batch`: every array has a leading step axis."""

    __slots__ = ()


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------
def _check_supported(net: Any) -> None:
    problems = []
    for table in _UNSUPPORTED_TABLES:
        df = net.get(table) if hasattr(net, "get") else None
        if df is None or not hasattr(df, "__len__") or len(df) == 0:
            continue
        active = df["in_service"].astype(bool).any() if "in_service" in df else True
        if active:
            problems.append(f"net.{table}: {len(df)} element(s); not modelled (remove them or "
                            "set in_service=False)")
    if len(net.ext_grid) == 0 or not net.ext_grid.in_service.astype(bool).any():
        problems.append("net.ext_grid: at least one in-service external grid (slack) is required")
    else:
        eg_buses = net.ext_grid.bus[net.ext_grid.in_service.astype(bool)]
        if eg_buses.duplicated().any():
            problems.append("net.ext_grid: several in-service external grids on one bus are not "
                            "supported")
    zip_cols = [c for c in net.load.columns if c.startswith("const_") and c.endswith("percent")]
    if zip_cols and len(net.load):
        active = net.load[net.load.in_service.astype(bool)]
        if (active[zip_cols].fillna(0.0).to_numpy(dtype=float) != 0.0).any():
            problems.append(f"net.load: voltage-dependent loads ({', '.join(zip_cols)} != 0) are "
                            "not supported; only constant-power loads")
    for table in ("line", "trafo"):
        if len(net[table]) and "df" in net[table] and (net[table].df <= 0).any():
            problems.append(f"net.{table}.df: must be > 0")
    if problems:
        raise UnsupportedNetworkError("cannot build a power-flow network:\n- "
                                      + "\n- ".join(problems))


def _pandapower_internal(net: Any, calculate_voltage_angles: bool, trafo_model: str,
                         trafo_loading: str) -> tuple[Any, dict, dict]:
    """Run pandapower's own conversion (as ``runpp`` does) on a copy of ``net``."""
    from pandapower.auxiliary import _add_auxiliary_elements, _init_runpp_options
    from pandapower.pd2ppc import _pd2ppc

    net = copy.deepcopy(net)
    _init_runpp_options(
        net, algorithm="nr", calculate_voltage_angles=calculate_voltage_angles, init="flat",
        max_iteration="auto", tolerance_mva=1e-8, trafo_model=trafo_model,
        trafo_loading=trafo_loading, enforce_p_lims=False, enforce_q_lims=False,
        check_connectivity=True, voltage_depend_loads=True,
    )
    _add_auxiliary_elements(net)
    net._pd2ppc_lookups = {key: np.array([], dtype=np.int64) for key in
                           ("bus", "bus_dc", "ext_grid", "gen", "branch", "branch_dc")}
    ppc, ppci = _pd2ppc(net)
    return net, ppc, ppci


def _positions(index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Positions of ``values`` in ``index`` (every value must occur)."""
    order = np.argsort(index, kind="stable")
    pos = np.searchsorted(index, values, sorter=order)
    return order[np.minimum(pos, index.size - 1)]


def _minimum_degree_order(mat: sp.spmatrix) -> np.ndarray:
    """Exact minimum-degree elimination order of the symmetrised sparsity pattern.

    Ties go to the lowest index, so the order is deterministic. On a tree a leaf always has the
    minimum degree, so no fill-in arises (SuperLU's approximate orderings leave some).
    """
    import heapq

    pattern = sp.csr_matrix(abs(mat) + abs(mat).T)
    n = pattern.shape[0]
    adj = [set(pattern.indices[pattern.indptr[i]:pattern.indptr[i + 1]]) - {i} for i in range(n)]
    heap = [(len(a), i) for i, a in enumerate(adj)]
    heapq.heapify(heap)
    done = np.zeros(n, dtype=bool)
    order = []
    while heap:
        degree, v = heapq.heappop(heap)
        if done[v] or degree != len(adj[v]):
            continue  # stale heap entry
        done[v] = True
        order.append(v)
        neighbours = adj[v]
        for u in neighbours:
            adj[u].discard(v)
            adj[u] |= neighbours - {u}  # eliminating v connects its neighbours (fill-in)
            heapq.heappush(heap, (len(adj[u]), u))
        adj[v] = set()
    return np.asarray(order, dtype=np.int64)


def _natural_lu(ypp: sp.csc_matrix, order: np.ndarray) -> Any:
    return spl.splu(ypp[order][:, order].tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0,
                    options={"SymmetricMode": True})


def _factorize(ypp: sp.csc_matrix) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]:
    """Order the PQ block for little fill-in and factorise it without pivoting.

    Returns the elimination order and the factors of ``ypp[order][:, order] = L @ U`` with ``L``
    unit lower triangular. For a radial grid the minimum-degree order eliminates leaves first and
    the factors have no fill-in: a triangular solve is then a backward/forward sweep.
    """
    m = ypp.shape[0]
    if m == 0:
        empty = sp.csr_matrix((0, 0), dtype=complex)
        return np.zeros(0, dtype=np.int64), empty, empty
    order = _minimum_degree_order(ypp)
    lu = _natural_lu(ypp, order)
    # Reorder by height in the elimination tree (leaves first, then their parents, ...): the
    # fill-in stays the same, but consecutive rows of the triangular solves no longer depend on
    # each other, so the processor overlaps them instead of waiting on one long chain.
    lower = lu.L.tocsc()
    parent = np.full(m, -1, dtype=np.int64)
    for col in range(m):
        rows = lower.indices[lower.indptr[col]:lower.indptr[col + 1]]
        rows = rows[rows > col]
        if rows.size:
            parent[col] = rows.min()
    height = np.zeros(m, dtype=np.int64)
    for col in range(m):  # children precede parents in elimination order
        if parent[col] >= 0:
            height[parent[col]] = max(height[parent[col]], height[col] + 1)
    order = order[np.argsort(height, kind="stable")]
    lu = _natural_lu(ypp, order)
    if not (np.array_equal(lu.perm_r, np.arange(m)) and np.array_equal(lu.perm_c, np.arange(m))):
        raise UnsupportedNetworkError("the admittance matrix needs pivoting to be factorised; "
                                      "check for branches of zero or infinite impedance")
    return order, lu.L.tocsr(), lu.U.tocsr()


def _csr_arrays(mat: sp.csr_matrix, strict: Literal["lower", "upper", "all"]) -> tuple:
    """CSR pointer, index and interleaved complex value arrays (without the diagonal if strict)."""
    coo = mat.tocoo()
    if strict == "lower":
        keep = coo.col < coo.row
    elif strict == "upper":
        keep = coo.col > coo.row
    else:
        keep = np.ones(coo.nnz, dtype=bool)
    kept = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=mat.shape)
    kept.sort_indices()
    return (kept.indptr.astype(np.int64), kept.indices.astype(np.int64),
            np.ascontiguousarray(kept.data.astype(np.complex128)))


class PowerFlowNetwork:
    """A pandapower net converted once to arrays, solved per step by a compiled kernel.

    Parameters
    ----------
    net : pandapowerNet
        Network with lines, two-winding transformers, switches, external grids (slack), loads,
        static generators, storage and shunts. It is copied, never modified.
    calculate_voltage_angles, trafo_model, trafo_loading : as in ``pandapower.runpp``.
    tolerance_ka, tolerance_mva : float
        Convergence: at every bus the current mismatch must be below ``tolerance_ka`` [kA] and
        the power mismatch below ``tolerance_mva`` [MVA] (measured as current mismatch times
        1 pu voltage). The current criterion keeps currents and loadings exact in LV grids, where
        pandapower's power criterion (1e-8 MVA) is 50 times looser in kA than at 20 kV; the power
        criterion keeps slack and transformer powers exact at higher voltages.
    max_iteration : int
        Fixed-point iterations before the Newton-Raphson fallback takes over.
    backend : {"auto", "compiled", "numpy"}
        Kernel to use; see :func:`kernel_module`.

    Attributes
    ----------
    bus_index : ndarray
        pandapower bus indices, in the order of every per-bus array (``net.bus.index``).
    line_index, trafo_index, ext_grid_index : ndarray
        pandapower indices, in the order of the per-line, per-trafo and per-ext_grid results.
    islanded_buses : ndarray
        In-service buses without a path to an external grid (pandapower indices).
    out_of_service_buses : ndarray
        Buses with ``in_service=False`` (pandapower indices).

    Notes
    -----
    The kernel keeps work arrays between calls: use one network from one thread at a time.

    Examples
    --------
    >>> import pandapower.networks as pn
    >>> network = PowerFlowNetwork(pn.create_cigre_network_mv(with_der="all"))
    >>> p_mw_bus, q_mvar_bus = network.base_injections()  # loads and generation of the net
    >>> res = network.solve(p_mw_bus, q_mvar_bus)
    >>> res.converged, round(float(res.vm_pu.min()), 3)
    (True, 0.944)
    >>> res = network.solve(p_mw_bus * 0.5, q_mvar_bus * 0.5, v0=res.v_pu)  # warm start
    >>> batch = network.solve_batch(np.vstack([p_mw_bus, 0.5 * p_mw_bus]),
    ...                             np.vstack([q_mvar_bus, 0.5 * q_mvar_bus]))
    >>> batch.vm_pu.shape == (2, network.n_bus)
    True
    """

    def __init__(self, net: Any, *, calculate_voltage_angles: bool = True,
                 trafo_model: Literal["t", "pi"] = "t",
                 trafo_loading: Literal["current", "power"] = "current",
                 tolerance_ka: float = 1e-9, tolerance_mva: float = 1e-8,
                 max_iteration: int = 60,
                 backend: Literal["auto", "compiled", "numpy"] = "auto") -> None:
        if trafo_model not in ("t", "pi"):
            raise ValueError(f"trafo_model: must be 't' or 'pi', got {trafo_model!r}")
        if trafo_loading not in ("current", "power"):
            raise ValueError(f"trafo_loading: must be 'current' or 'power', got {trafo_loading!r}")
        for name, value in (("tolerance_ka", tolerance_ka), ("tolerance_mva", tolerance_mva)):
            if not (isinstance(value, (int, float)) and value > 0 and np.isfinite(value)):
                raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
        if int(max_iteration) < 1:
            raise ValueError(f"max_iteration: must be >= 1, got {max_iteration!r}")
        self._module = kernel_module(backend)
        self.backend = "numpy" if self._module.__name__.endswith("_np") else "compiled"
        _check_supported(net)
        self.tolerance_ka = float(tolerance_ka)
        self.tolerance_mva = float(tolerance_mva)
        self.max_iteration = int(max_iteration)
        self._build(net, bool(calculate_voltage_angles), trafo_model, trafo_loading)

    # -- set-up ----------------------------------------------------------------------------
    def _build(self, net0: Any, calculate_voltage_angles: bool, trafo_model: str,
               trafo_loading: str) -> None:
        from pandapower.pf.ppci_variables import _get_pf_variables_from_ppci
        from pandapower.pypower.idx_brch import F_BUS, T_BUS
        from pandapower.pypower.idx_bus import BASE_KV, BUS_TYPE, NONE, PQ, PV, REF
        from pandapower.pypower.makeYbus import makeYbus

        net, ppc, ppci = _pandapower_internal(net0, calculate_voltage_angles, trafo_model,
                                              trafo_loading)
        base_mva = float(ppci["baseMVA"])
        bus_type = ppci["bus"][:, BUS_TYPE].astype(np.int64)
        n = bus_type.size
        if (bus_type == PV).any():
            raise UnsupportedNetworkError("voltage-controlled (PV) buses are not supported")
        ref = np.flatnonzero(bus_type == REF)
        pq = np.flatnonzero(bus_type == PQ)
        if ref.size + pq.size != n:
            raise UnsupportedNetworkError("unexpected bus types in pandapower's internal model")

        ybus, yf, yt = makeYbus(base_mva, ppci["bus"], ppci["branch"])
        ybus = sp.csr_matrix(ybus)
        *_, v_start, _ = _get_pf_variables_from_ppci(ppci)
        v_slack = np.asarray(v_start[ref], dtype=np.complex128)

        ypp = ybus[pq][:, pq].tocsc()
        order, lower, upper = _factorize(ypp)
        m = pq.size
        pq_ordered = pq[order]
        internal_of_ppci = np.full(n, -1, dtype=np.int64)
        internal_of_ppci[pq_ordered] = np.arange(m)
        internal_of_ppci[ref] = m + np.arange(ref.size)
        self._ppci_of_internal = np.concatenate([pq_ordered, ref])

        # pandapower bus -> internal bus (-1: out of service or islanded)
        bus_index = net0.bus.index.to_numpy()
        ppc_of_bus = net._pd2ppc_lookups["bus"][bus_index]
        ppc_bus_type = ppc["bus"][:, BUS_TYPE].astype(np.int64)
        in_ppci = (ppc_of_bus < n) & (ppc_bus_type[np.minimum(ppc_of_bus, len(ppc_bus_type) - 1)]
                                     != NONE)
        bus_map = np.full(bus_index.size, -1, dtype=np.int64)
        bus_map[in_ppci] = internal_of_ppci[ppc_of_bus[in_ppci]]
        bus_in_service = net0.bus.in_service.to_numpy(dtype=bool)
        self.bus_index = bus_index
        self.out_of_service_buses = bus_index[~bus_in_service]
        self.islanded_buses = bus_index[bus_in_service & (bus_map < 0)]

        # branches of pandapower's internal model (all in-service ones enter losses)
        branch_is = np.asarray(ppci["internal"]["branch_is"], dtype=bool)
        ppci_of_ppc_branch = np.full(branch_is.size, -1, dtype=np.int64)
        ppci_of_ppc_branch[branch_is] = np.arange(int(branch_is.sum()))
        br = ppci["branch"]
        nbr = br.shape[0]
        f_ppci = br[:, F_BUS].real.astype(np.int64)
        t_ppci = br[:, T_BUS].real.astype(np.int64)
        yf, yt = sp.csr_matrix(yf), sp.csr_matrix(yt)
        rows = np.arange(nbr)
        y_branch = np.empty((nbr, 4), dtype=np.complex128)
        if nbr:
            y_branch[:, 0] = np.asarray(yf[rows, f_ppci]).ravel()
            y_branch[:, 1] = np.asarray(yf[rows, t_ppci]).ravel()
            y_branch[:, 2] = np.asarray(yt[rows, f_ppci]).ravel()
            y_branch[:, 3] = np.asarray(yt[rows, t_ppci]).ravel()
        base_kv = ppci["bus"][:, BASE_KV].astype(float)
        base_i_ka = base_mva / (_SQRT3 * base_kv)  # kA per pu current, per ppci bus

        # reported branches: lines, then transformers
        lookups = net._pd2ppc_lookups["branch"]
        self.line_index = net0.line.index.to_numpy()
        self.trafo_index = net0.trafo.index.to_numpy()
        n_line, n_trafo = self.line_index.size, self.trafo_index.size
        rep_ppci = np.full(n_line + n_trafo, -1, dtype=np.int64)
        load_a = np.zeros((n_line + n_trafo, 2))  # loading per kA at (from, to)
        load_b = np.zeros((n_line + n_trafo, 2))  # loading per MVA at (from, to)
        if n_line:
            f, t = lookups["line"]
            rep_ppci[:n_line] = ppci_of_ppc_branch[f:t]
            line = net0.line
            i_max_ka = (line.max_i_ka * line.df * line.parallel).to_numpy(dtype=float)
            with np.errstate(divide="ignore"):
                load_a[:n_line] = (100.0 / i_max_ka)[:, None]
        if n_trafo:
            f, t = lookups["trafo"]
            rep_ppci[n_line:] = ppci_of_ppc_branch[f:t]
            tr = net0.trafo
            scale = 100.0 / (tr.sn_mva * tr.parallel * tr.df).to_numpy(dtype=float)
            if trafo_loading == "current":
                load_a[n_line:, 0] = scale * tr.vn_hv_kv.to_numpy(dtype=float) * _SQRT3
                load_a[n_line:, 1] = scale * tr.vn_lv_kv.to_numpy(dtype=float) * _SQRT3
            else:
                load_b[n_line:] = scale[:, None]
        # branches left out of pandapower's internal model report zero power; their current
        # and loading are NaN at an end whose bus has no voltage (islanded), as in pandapower
        end_buses = np.concatenate([
            np.stack([net0.line.from_bus.to_numpy(), net0.line.to_bus.to_numpy()], axis=1),
            np.stack([net0.trafo.hv_bus.to_numpy(), net0.trafo.lv_bus.to_numpy()], axis=1),
        ]).astype(np.int64).reshape(-1, 2)
        bus_pos_arr = _positions(bus_index, end_buses.ravel()).reshape(-1, 2)
        end_dead = np.zeros_like(end_buses, dtype=bool)
        end_dead[:] = bus_map[bus_pos_arr] < 0
        rep_template = np.zeros((3, n_line + n_trafo))
        rep_template[1:][end_dead.T] = np.nan
        rep_template[0] = np.where(end_dead.any(axis=1), np.nan, 0.0)
        rep_of_branch = np.full(nbr, -1, dtype=np.int64)
        rep_of_branch[rep_ppci[rep_ppci >= 0]] = np.flatnonzero(rep_ppci >= 0)

        # external grids
        self.ext_grid_index = net0.ext_grid.index.to_numpy()
        eg_pos = np.full(self.ext_grid_index.size, -1, dtype=np.int64)
        bus_pos = {b: i for i, b in enumerate(bus_index)}
        for k, (bus, in_service) in enumerate(zip(net0.ext_grid.bus, net0.ext_grid.in_service,
                                                  strict=True)):
            internal = bus_map[bus_pos[bus]]
            if in_service and internal >= m:
                eg_pos[k] = internal - m

        slack_rows = ybus[ref][:, self._ppci_of_internal].tocsr() if ref.size else sp.csr_matrix(
            (0, n), dtype=complex)
        c_const = np.asarray(ybus[pq_ordered][:, ref] @ v_slack).ravel() if m else np.zeros(0)

        l_ptr, l_idx, l_val = _csr_arrays(lower, "lower")
        u_ptr, u_idx, u_val = _csr_arrays(upper, "upper")
        u_diag_inv = 1.0 / upper.diagonal() if m else np.zeros(0, dtype=complex)
        # voltages with no injections: the starting point (taps and phase shifts included)
        v_noload = (-spl.spsolve(ypp[order][:, order].tocsc(), c_const) if m
                    else np.zeros(0, dtype=complex))
        s_ptr, s_idx, s_val = _csr_arrays(slack_rows, "all")

        self.n_line, self.n_trafo = n_line, n_trafo
        self.base_mva = base_mva
        self._arrays = {
            "n_pq": m,
            "base_mva": base_mva,
            "mismatch_weight": np.maximum((base_i_ka[pq_ordered] / self.tolerance_ka) ** 2,
                                          (base_mva / self.tolerance_mva) ** 2),
            "max_iter": self.max_iteration,
            "bus_map": bus_map,
            "l_ptr": l_ptr, "l_idx": l_idx, "l_val": l_val,
            "u_ptr": u_ptr, "u_idx": u_idx, "u_val": u_val,
            "u_diag_inv": np.asarray(u_diag_inv, dtype=np.complex128),
            "v_noload": np.asarray(v_noload, dtype=np.complex128),
            "v_slack": v_slack,
            "s_ptr": s_ptr, "s_idx": s_idx, "s_val": s_val,
            "br_from": internal_of_ppci[f_ppci] if nbr else np.zeros(0, np.int64),
            "br_to": internal_of_ppci[t_ppci] if nbr else np.zeros(0, np.int64),
            "br_y": y_branch.ravel(),
            "br_rep": rep_of_branch,
            "br_base_i_from": base_i_ka[f_ppci] if nbr else np.zeros(0),
            "br_base_i_to": base_i_ka[t_ppci] if nbr else np.zeros(0),
            "rep_load_a": load_a.ravel(),
            "rep_load_b": load_b.ravel(),
            "eg_slack": eg_pos,
            "rep_template": rep_template.ravel(),
        }
        for key, value in self._arrays.items():
            if isinstance(value, np.ndarray):
                self._arrays[key] = np.ascontiguousarray(value)
        self._kernel = self._module.PowerFlowKernel(**self._arrays)
        self._kernel_solve = self._kernel.solve
        self._kernel_solve_row = self._kernel.solve_row
        if self.backend == "numpy":  # NumPy warns where the compiled kernel cannot
            self._kernel_solve = _quietly(self._kernel.solve)
            self._kernel_solve_row = _quietly(self._kernel.solve_row)
        self._layout_flows = _Layout(bus_index.size, n_line + n_trafo, eg_pos.size, n_line, True)
        self._layout_core = _Layout(bus_index.size, n_line + n_trafo, eg_pos.size, n_line, False)
        self._n_bus = bus_index.size

        # Newton-Raphson fallback data, in internal order; its power criterion is set to the
        # strictest criterion of any bus
        self._newton_tol_pu = min(self.tolerance_ka / float(np.max(base_i_ka, initial=1.0)),
                                  self.tolerance_mva / base_mva)
        perm = self._ppci_of_internal
        self._ybus_internal = ybus[perm][:, perm].tocsr()

        # per-element aggregation to buses, in each element's own sign convention
        self._incidence: dict[str, sp.csr_matrix] = {}
        self._element_pos: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.element_index: dict[str, np.ndarray] = {}
        for element, sign in _INJECTION_SIGN.items():
            df = net0[element]
            pos = np.array([bus_pos[b] for b in df.bus], dtype=np.int64)
            weight = sign * df.scaling.to_numpy(dtype=float) * df.in_service.to_numpy(dtype=float)
            self._incidence[element] = sp.csr_matrix(
                (weight, (np.arange(len(df)), pos)), shape=(len(df), bus_index.size))
            self._element_pos[element] = (pos, weight)
            self.element_index[element] = df.index.to_numpy()
        self._element_pq = {e: (net0[e].p_mw.to_numpy(dtype=float),
                                net0[e].q_mvar.to_numpy(dtype=float)) for e in _INJECTION_SIGN}

    @classmethod
    def from_pandapower(cls, net: Any, **options: Any) -> PowerFlowNetwork:
        """Build the network from a pandapower net; ``options`` as for the constructor."""
        return cls(net, **options)

    # -- injections ------------------------------------------------------------------------
    @property
    def n_bus(self) -> int:
        """Number of pandapower buses (length of every per-bus array)."""
        return self._n_bus

    def bus_positions(self, buses: Any) -> np.ndarray:
        """Positions in every per-bus array of the given pandapower bus indices.

        For adding device injections: ``np.add.at(p_mw_bus, network.bus_positions(buses), p)``.
        """
        wanted = np.asarray(buses, dtype=np.int64).ravel()
        unknown = np.setdiff1d(wanted, self.bus_index)
        if unknown.size:
            raise ValueError(f"buses: not in the network: {unknown[:10].tolist()}")
        return _positions(self.bus_index, wanted)

    def aggregate(self, element: Literal["load", "sgen", "storage"], p_mw: np.ndarray,
                  q_mvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sum per-element powers to per-bus injections in load convention.

        Parameters
        ----------
        element : {"load", "sgen", "storage"}
            pandapower table; values follow its sign (sgen positive when generating).
        p_mw, q_mvar : array_like, shape (n_element,) or (T, n_element)
            Element powers in the order of ``net[element].index``, before ``scaling``. [MW], [Mvar]

        Returns
        -------
        p_mw_bus, q_mvar_bus : ndarray, shape (n_bus,) or (T, n_bus)
            Load-convention bus injections with ``scaling`` and ``in_service`` applied. [MW], [Mvar]
        """
        if element not in self._incidence:
            raise ValueError(f"element: must be one of {sorted(self._incidence)}, got {element!r}")
        inc = self._incidence[element]
        out = []
        for name, values in (("p_mw", p_mw), ("q_mvar", q_mvar)):
            a = np.asarray(values, dtype=np.float64)
            if a.shape[-1:] != (inc.shape[0],) or a.ndim not in (1, 2):
                raise ValueError(f"{name}: expected shape ({inc.shape[0]},) or (T, "
                                 f"{inc.shape[0]}) for net.{element}, got {a.shape}")
            if a.ndim == 1:  # one step: bincount is several times faster than a sparse product
                pos, weight = self._element_pos[element]
                out.append(np.bincount(pos, weights=weight * a, minlength=self._n_bus))
            else:
                out.append(np.asarray((inc.T @ a.T).T))
        return out[0], out[1]

    def base_injections(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-bus injections (load convention) of the element values stored in the net. [MW]"""
        p = np.zeros(self._n_bus)
        q = np.zeros(self._n_bus)
        for element, (pe, qe) in self._element_pq.items():
            dp, dq = self.aggregate(element, pe, qe)
            p += dp
            q += dq
        return p, q

    # -- solving ---------------------------------------------------------------------------
    def _coerce(self, name: str, values: Any, ndim: int) -> np.ndarray:
        a = np.ascontiguousarray(values, dtype=np.float64)
        if a.ndim != ndim or a.shape[-1] != self._n_bus:
            want = f"({self._n_bus},)" if ndim == 1 else f"(T, {self._n_bus})"
            raise ValueError(f"{name}: expected shape {want} (one value per bus of "
                             f"bus_index), got {a.shape}")
        return a

    def _coerce_v0(self, v0: Any) -> np.ndarray | None:
        if v0 is None:
            return None
        v = np.ascontiguousarray(v0, dtype=np.complex128)
        if v.shape != (self._n_bus,):
            raise ValueError(f"v0: expected shape ({self._n_bus},) complex, got {v.shape}")
        return v

    @staticmethod
    def _raise_nonfinite(p: Any, q: Any) -> None:
        for name, values in (("p_mw_bus", p), ("q_mvar_bus", q)):
            bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64).ravel()))
            if bad.size:
                raise ValueError(f"{name}: {bad.size} non-finite value(s), first at flat index "
                                 f"{int(bad[0])}")

    def solve(self, p_mw_bus: np.ndarray, q_mvar_bus: np.ndarray,
              v0: np.ndarray | None = None, *, flows: bool = True) -> PowerFlowResult:
        """Solve one step.

        Parameters
        ----------
        p_mw_bus, q_mvar_bus : array_like, shape (n_bus,)
            Bus injections in load convention (positive drawn from the grid), in the order of
            :attr:`bus_index`. [MW], [Mvar]
        v0 : array_like of complex, shape (n_bus,), optional
            Starting voltages (e.g. ``previous.v_pu``); default: the no-load voltages. [pu]
        flows : bool
            Also compute the power and current at both ends of every line and transformer
            (voltages, loadings, losses and external-grid powers are always computed).

        Returns
        -------
        PowerFlowResult

        Notes
        -----
        Warnings of a diverging step (from the NumPy twin or the Newton-Raphson fallback) are
        not shown: its outcome is reported by ``converged``. A filter that turns warnings into
        errors still raises them.
        """
        layout = self._layout_flows if flows else self._layout_core
        out = _empty(layout.width)
        try:  # arrays of the right type go straight to the kernel
            its = self._kernel_solve(p_mw_bus, q_mvar_bus, v0, out, flows)
        except (ValueError, TypeError, AttributeError):
            p = self._coerce("p_mw_bus", p_mw_bus, 1)
            q = self._coerce("q_mvar_bus", q_mvar_bus, 1)
            its = self._kernel_solve(p, q, self._coerce_v0(v0), out, flows)
        if its <= 0:
            its = self._unconverged(p_mw_bus, q_mvar_bus, out, its, flows)
            return PowerFlowResult(self, out, layout, its, bool(np.isfinite(out).all()))
        return PowerFlowResult(self, out, layout, its, self._kernel.row_finite)

    def solve_row(self, pq_mw_bus: np.ndarray, at: np.ndarray | None = None,
                  extra: np.ndarray | None = None, start: PowerFlowResult | None = None, *,
                  flows: bool = True, scale: float = 1.0) -> PowerFlowResult:
        """Solve one step whose injections are one row, plus extra injections at some buses.

        For a caller that keeps its base injections as rows and adds its own at a few buses:
        the sum is formed in the kernel, as ``pq[at] += extra`` (with P and Q positions) would.

        Parameters
        ----------
        pq_mw_bus : ndarray of float64, shape (2 * n_bus,)
            P of every bus, then Q, in load convention. [MW], [Mvar]
        at : ndarray of int64, optional
            Positions (see :meth:`bus_positions`) of the buses with extra injections; unique.
        extra : ndarray of float64, shape (2 * len(at),), optional
            P at each bus of ``at``, then Q, added to ``pq_mw_bus`` times ``scale``.
            [MW / scale], [Mvar / scale]
        start : PowerFlowResult, optional
            A result of this network to start from: the same iterates as ``v0=start.v_pu`` of
            :meth:`solve`, without forming the complex voltages; default: no-load voltages.
        flows : bool
            As for :meth:`solve`.
        scale : float
            Factor on ``extra`` (e.g. 1e-3 for kW and kvar); each sum is formed as
            ``pq_mw_bus[b] + scale * extra[i]``. [MW per unit of extra]

        Returns
        -------
        PowerFlowResult
            As :meth:`solve` gives it (warnings as there).
        """
        if start is not None and start._net is not self:
            raise ValueError("start: a result of another network")
        layout = self._layout_flows if flows else self._layout_core
        out = _empty(layout.width)
        prev = None if start is None else start._out
        its = self._kernel_solve_row(pq_mw_bus, at, extra, prev, out, flows, scale)
        if its <= 0:
            pq = np.array(pq_mw_bus, dtype=np.float64)
            if at is not None:
                pq[at] += scale * extra[:at.size]
                pq[self._n_bus + at] += scale * extra[at.size:]
            its = self._unconverged(pq[:self._n_bus], pq[self._n_bus:], out, its, flows)
            return PowerFlowResult(self, out, layout, its, bool(np.isfinite(out).all()))
        return PowerFlowResult(self, out, layout, its, self._kernel.row_finite)

    def _unconverged(self, p_mw_bus: Any, q_mvar_bus: Any, out: np.ndarray, its: int,
                     flows: bool) -> int:
        """After the fixed point failed (``its < 0``) or met non-finite input (``its == 0``,
        ValueError): the Newton-Raphson fallback into ``out``; its iteration count."""
        if its == 0:
            self._raise_nonfinite(p_mw_bus, q_mvar_bus)
        its_arr = np.array([its], dtype=np.int64)
        p = np.ascontiguousarray(p_mw_bus, dtype=np.float64)
        q = np.ascontiguousarray(q_mvar_bus, dtype=np.float64)
        with _Quiet():
            self._newton_fallback(p[None, :], q[None, :], out[None, :], its_arr, flows)
        return int(its_arr[0])

    def solve_batch(self, p_mw_bus: np.ndarray, q_mvar_bus: np.ndarray,
                    v0: np.ndarray | None = None, *, flows: bool = False,
                    warm_start: bool = True) -> BatchPowerFlowResult:
        """Solve T steps in one call.

        Parameters
        ----------
        p_mw_bus, q_mvar_bus : array_like, shape (T, n_bus)
            Bus injections per step in load convention. [MW], [Mvar]
        v0 : array_like of complex, shape (n_bus,), optional
            Starting voltages of the first step. [pu]
        flows : bool
            Also store per-branch powers and currents (6 more arrays of shape (T, n_branch)).
        warm_start : bool
            Start each step from the previous step's solution (fewer iterations).

        Returns
        -------
        BatchPowerFlowResult
        """
        p = self._coerce("p_mw_bus", p_mw_bus, 2)
        q = self._coerce("q_mvar_bus", q_mvar_bus, 2)
        if p.shape != q.shape:
            raise ValueError(f"q_mvar_bus: shape {q.shape} differs from p_mw_bus {p.shape}")
        v = self._coerce_v0(v0)
        layout = self._layout_flows if flows else self._layout_core
        out = np.empty((p.shape[0], layout.width))
        its = np.empty(p.shape[0], dtype=np.int64)
        status = self._kernel.solve_batch(p, q, v, out, its, bool(flows), bool(warm_start))
        if status:
            self._raise_nonfinite(p, q)
        failed = np.flatnonzero(its <= 0)
        if failed.size:
            sub_out = out[failed]
            sub_its = its[failed]
            self._newton_fallback(p[failed], q[failed], sub_out, sub_its, flows)
            out[failed] = sub_out
            its[failed] = sub_its
        return BatchPowerFlowResult(self, out, layout, its)

    # -- Newton-Raphson fallback -------------------------------------------------------------
    def _newton_fallback(self, p: np.ndarray, q: np.ndarray, out: np.ndarray, its: np.ndarray,
                         flows: bool) -> None:
        """Solve the steps the fixed point left unconverged; write results in place."""
        a = self._arrays
        m = a["n_pq"]
        bus_map = a["bus_map"]
        for k in range(p.shape[0]):
            s_load = np.zeros(m, dtype=np.complex128)
            sel = (bus_map >= 0) & (bus_map < m)
            np.add.at(s_load, bus_map[sel], (p[k, sel] + 1j * q[k, sel]) / self.base_mva)
            v, n_it, ok = _newton_raphson(self._ybus_internal, -s_load, m, a["v_noload"],
                                          a["v_slack"], self._newton_tol_pu)
            if not ok:
                out[k] = np.nan
                its[k] = -(abs(int(its[k])) + n_it)
                continue
            v_internal = np.concatenate([v, a["v_slack"]])
            v0 = np.full(self._n_bus, np.nan + 0j)
            v0[bus_map >= 0] = v_internal[bus_map[bus_map >= 0]]
            row = np.empty((1, out.shape[1]))
            one = np.empty(1, dtype=np.int64)
            # from the Newton solution the fixed point converges at once and fills the outputs
            self._kernel.solve_batch(np.ascontiguousarray(p[k][None, :]),
                                     np.ascontiguousarray(q[k][None, :]), v0, row, one, flows,
                                     False)
            out[k] = row[0]
            its[k] = (abs(int(its[k])) + n_it + abs(int(one[0]))) * (1 if one[0] > 0 else -1)
            if one[0] <= 0:
                out[k] = np.nan


class _Quiet:
    """Context of a diverging step's numerics: NumPy's floating-point warnings are off and any
    warning raised inside (overflows, singular Jacobians) is recorded and dropped; a filter that
    turns a warning into an error still raises it."""

    __slots__ = ("_errstate", "_warnings")

    def __enter__(self) -> None:
        self._warnings = warnings.catch_warnings(record=True)
        self._warnings.__enter__()
        self._errstate = np.errstate(all="ignore")
        self._errstate.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._errstate.__exit__(*exc)
        self._warnings.__exit__(*exc)


def _quietly(solve: Any) -> Any:
    """``solve`` run inside :class:`_Quiet`."""
    def quiet_solve(*args: Any) -> Any:
        with _Quiet():
            return solve(*args)
    return quiet_solve


def _newton_raphson(ybus: sp.csr_matrix, s_inj: np.ndarray, m: int, v_start: np.ndarray,
                    v_slack: np.ndarray, tol_pu: float, max_iter: int = 30
                    ) -> tuple[np.ndarray, int, bool]:
    """Newton-Raphson in polar form over the PQ buses ``0..m-1`` (slack buses after them)."""
    v = np.concatenate([v_start, v_slack]).astype(np.complex128)
    for it in range(max_iter + 1):
        i_bus = ybus @ v
        mis = v[:m] * np.conj(i_bus[:m]) - s_inj
        f = np.concatenate([mis.real, mis.imag])
        if not np.isfinite(f).all():
            return v[:m], it, False
        if np.abs(mis).max(initial=0.0) < tol_pu:
            return v[:m], it, True
        if it == max_iter:
            break
        diag_v = sp.diags(v)
        diag_i = sp.diags(i_bus)
        diag_vn = sp.diags(v / np.abs(v))
        ds_dvm = diag_v @ np.conj(ybus @ diag_vn) + np.conj(diag_i) @ diag_vn
        ds_dva = 1j * diag_v @ np.conj(diag_i - ybus @ diag_v)
        ds_dvm = ds_dvm[:m, :m]
        ds_dva = ds_dva[:m, :m]
        jac = sp.bmat([[ds_dva.real, ds_dvm.real], [ds_dva.imag, ds_dvm.imag]], format="csc")
        dx = spl.spsolve(jac, -f)
        va = np.angle(v[:m]) + dx[:m]
        vm = np.abs(v[:m]) + dx[m:]
        v[:m] = vm * np.exp(1j * va)
    return v[:m], max_iter, False
