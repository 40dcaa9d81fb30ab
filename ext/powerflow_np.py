"""NumPy twin of ``ext.powerflow``: the same kernel class, algorithm and results, without C.

See ``ext/powerflow.pyx`` for the method and ``ext/powerflow_net.py`` for the arrays it is built
from and the layout of the output rows. The triangular solves use SciPy's SuperLU on the product
of the given factors, factorised again in the same (natural) order, so no pivoting occurs and the
iterates match the compiled kernel's to rounding.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl

__all__ = ["PowerFlowKernel", "bin_sums"]

_RAD2DEG = 180.0 / np.pi


def bin_sums(parts: list[np.ndarray], ptr: np.ndarray, bins: np.ndarray,
             out: np.ndarray) -> bool:
    """Sum the elements of ``parts`` (concatenated) per bin into ``out``: ``out[b]`` adds, from
    0.0 and in element order, every element ``e`` with ``bins[e] == b``, as
    ``np.bincount(bins, weights, minlength=out.size)`` does.

    ``parts`` holds C-contiguous 1-D float64 arrays, ``ptr`` (int64, ``len(parts) + 1``
    entries, from 0) where each starts in the concatenation, ``bins`` (int64) one bin per
    element, ``out`` a writeable C-contiguous float64 array. Returns whether every sum is
    finite; ValueError when an array does not fit (naming the part) or a bin is out of range.
    """
    if not isinstance(parts, list):
        raise TypeError("bin_sums: parts must be a list")
    for name, a in (("ptr", ptr), ("bins", bins)):
        if not (isinstance(a, np.ndarray) and a.dtype == np.int64 and a.ndim == 1
                and a.flags.c_contiguous):
            raise ValueError(f"bin_sums: {name} must be a contiguous 1-D int64 array")
    if ptr.size != len(parts) + 1 or ptr[0] != 0:
        raise ValueError("bin_sums: ptr must hold 0 and the end of each part")
    if bins.size != ptr[-1]:
        raise ValueError("bin_sums: one bin per element of the parts expected")
    if not (isinstance(out, np.ndarray) and out.dtype == np.float64 and out.flags.c_contiguous
            and out.flags.writeable):
        raise ValueError("bin_sums: out must be a writeable contiguous float64 array")
    for j, a in enumerate(parts):
        n = int(ptr[j + 1] - ptr[j])
        if not (isinstance(a, np.ndarray) and a.dtype == np.float64 and a.ndim == 1
                and a.flags.c_contiguous and a.size == n):
            raise ValueError(f"bin_sums: part {j} must be a contiguous 1-D float64 array of "
                             f"{n} values")
    bad = np.flatnonzero((bins < 0) | (bins >= out.size))
    if bad.size:
        e = int(bad[0])
        raise ValueError(f"bin_sums: bin {int(bins[e])} of element {e} outside "
                         f"0..{out.size - 1}")
    weights = np.concatenate(parts) if parts else np.zeros(0)
    out.reshape(-1)[:] = np.bincount(bins, weights=weights, minlength=out.size)
    return bool(np.isfinite(out).all())


class PowerFlowKernel:
    """Fixed-point (implicit Z-bus) power flow on one converted network.

    Internal bus order: the ``n_pq`` PQ buses in elimination order, then the slack buses.
    Complex arrays are ``complex128``, index arrays ``int64``.

    Parameters
    ----------
    n_pq : int
        Number of PQ buses.
    base_mva : float
        System base power. [MVA]
    mismatch_weight : ndarray, shape (n_pq,)
        A step has converged when ``|current mismatch [pu]|**2 * weight < 1`` at every PQ bus.
    max_iter : int
        Iterations before a step is reported as not converged.
    bus_map : ndarray, shape (n_bus,)
        Internal bus of each pandapower bus, -1 when it is out of service or islanded.
    l_ptr, l_idx, l_val : ndarray
        Strictly lower part of the unit lower factor ``L`` of the PQ block (CSR).
    u_ptr, u_idx, u_val : ndarray
        Strictly upper part of the upper factor ``U`` (CSR).
    u_diag_inv : ndarray, shape (n_pq,)
        Inverse diagonal of ``U``.
    v_noload : ndarray, shape (n_pq,)
        PQ-bus voltages without any injection. [pu]
    v_slack : ndarray, shape (n_slack,)
        Slack voltages. [pu]
    s_ptr, s_idx, s_val : ndarray
        Rows of the admittance matrix of the slack buses (CSR over internal buses). [pu]
    br_from, br_to : ndarray, shape (n_branch,)
        Internal buses at both ends of every in-service branch.
    br_y : ndarray, shape (4 * n_branch,)
        Per branch ``(Yff, Yft, Ytf, Ytt)``: end currents ``If = Yff Vf + Yft Vt`` etc. [pu]
    br_rep : ndarray, shape (n_branch,)
        Reported line/trafo slot of each branch, -1 when it is not reported.
    br_base_i_from, br_base_i_to : ndarray, shape (n_branch,)
        Current base at both ends. [kA/pu]
    rep_load_a, rep_load_b : ndarray, shape (2 * n_rep,)
        Loading of each reported branch at (from, to): ``a * i_ka + b * s_mva``. [%/kA], [%/MVA]
    eg_slack : ndarray, shape (n_ext_grid,)
        Slack bus (0-based among the slack buses) of each external grid, -1 if none.
    rep_template : ndarray, shape (3 * n_rep,)
        Loading, from-current and to-current reported for branches outside the solved network.
    """

    def __init__(self, *, n_pq: int, base_mva: float, mismatch_weight: np.ndarray,
                 max_iter: int, bus_map: np.ndarray, l_ptr: np.ndarray, l_idx: np.ndarray,
                 l_val: np.ndarray, u_ptr: np.ndarray, u_idx: np.ndarray, u_val: np.ndarray,
                 u_diag_inv: np.ndarray, v_noload: np.ndarray, v_slack: np.ndarray,
                 s_ptr: np.ndarray, s_idx: np.ndarray, s_val: np.ndarray, br_from: np.ndarray,
                 br_to: np.ndarray, br_y: np.ndarray, br_rep: np.ndarray,
                 br_base_i_from: np.ndarray, br_base_i_to: np.ndarray, rep_load_a: np.ndarray,
                 rep_load_b: np.ndarray, eg_slack: np.ndarray,
                 rep_template: np.ndarray) -> None:
        m = int(n_pq)
        self.m = m
        self.base_mva = float(base_mva)
        # converged when |current mismatch (pu)|^2 * weight < 1 at every PQ bus
        self.weight = np.asarray(mismatch_weight, dtype=float)
        self.max_iter = int(max_iter)
        self.bus_map = np.asarray(bus_map, dtype=np.int64)
        self.n_bus = self.bus_map.size
        self.n_slack = np.asarray(v_slack).size
        self.n_int = m + self.n_slack
        if m:
            lower = sp.csr_matrix((l_val, l_idx, l_ptr), shape=(m, m)) + sp.identity(m)
            upper = sp.csr_matrix((u_val, u_idx, u_ptr), shape=(m, m)) + sp.diags(
                1.0 / np.asarray(u_diag_inv))
            self.lu = spl.splu(sp.csc_matrix(lower @ upper), permc_spec="NATURAL",
                               diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        self.v_noload = np.asarray(v_noload, dtype=np.complex128)
        self.v_slack = np.asarray(v_slack, dtype=np.complex128)
        self.y_slack = sp.csr_matrix((s_val, s_idx, s_ptr), shape=(self.n_slack, self.n_int))
        self.br_from = np.asarray(br_from, dtype=np.int64)
        self.br_to = np.asarray(br_to, dtype=np.int64)
        self.br_y = np.asarray(br_y, dtype=np.complex128).reshape(-1, 4)
        self.br_rep = np.asarray(br_rep, dtype=np.int64)
        self.bi_from = np.asarray(br_base_i_from, dtype=float)
        self.bi_to = np.asarray(br_base_i_to, dtype=float)
        self.n_rep = np.asarray(rep_load_a).size // 2
        self.load_a = np.asarray(rep_load_a, dtype=float).reshape(-1, 2)
        self.load_b = np.asarray(rep_load_b, dtype=float).reshape(-1, 2)
        self.eg_slack = np.asarray(eg_slack, dtype=np.int64)
        self.n_eg = self.eg_slack.size
        self.valid = self.bus_map >= 0
        self.template = np.asarray(rep_template, dtype=float).reshape(3, -1)
        self._v = self.v_noload.copy()
        self.row_finite = False
        """Every value of the output row the last step wrote is finite (False when that step
        did not converge or met non-finite input)."""

    # -- layout (same offsets as the compiled kernel) --------------------------------------
    def _width(self, flows: bool) -> int:
        return 2 * self.n_bus + self.n_rep + 2 * self.n_eg + 4 + (6 * self.n_rep if flows else 0)

    def solve(self, p: np.ndarray, q: np.ndarray, v0: np.ndarray | None, out: np.ndarray,
              flows: bool = True) -> int:
        """Solve one step into ``out`` (one output row, with or without the branch flows).

        Returns the iteration count, negated when not converged, or 0 on non-finite input.
        """
        if out.shape != (self._width(flows),) or p.shape != (self.n_bus,) \
                or q.shape != (self.n_bus,) or p.dtype != np.float64 or q.dtype != np.float64:
            raise ValueError("solve: array shapes do not match the network")
        if not (np.isfinite(p).all() and np.isfinite(q).all()):
            self.row_finite = False
            return 0
        return self._step(p, q, self._start(v0), out, flows)

    def solve_row(self, pq: np.ndarray, at: np.ndarray | None, extra: np.ndarray | None,
                  prev: np.ndarray | None, out: np.ndarray, flows: bool = True,
                  scale: float = 1.0) -> int:
        """Solve one step into ``out``: bus injections ``pq`` (P of every bus, then Q), plus
        ``scale * extra`` (P at each bus of ``at``, then Q) added at the bus positions ``at``;
        starting from the voltages of ``prev``, an earlier output row of this kernel (its ``vm``
        and ``va`` per bus, usable entries as for ``v0`` of :meth:`solve`), or from the no-load
        voltages when ``prev`` is None. ``at`` (int64, unique) and ``extra`` may be None.

        Returns as :meth:`solve`.
        """
        nb = self.n_bus
        if pq.shape != (2 * nb,) or pq.dtype != np.float64:
            raise ValueError("solve_row: array shapes do not match the network")
        w = pq.copy()
        if at is not None:
            if at.dtype != np.int64 or at.ndim != 1:
                raise ValueError("solve_row: at must be a contiguous int64 array")
            if np.any((at < 0) | (at >= nb)):
                raise ValueError("solve_row: bus position out of range")
            if extra.shape != (2 * at.size,) or extra.dtype != np.float64:
                raise ValueError("solve: array shapes do not match the network")
            w[at] += scale * extra[:at.size]
            w[nb + at] += scale * extra[at.size:]
        v0 = None
        if prev is not None:
            if prev.ndim != 1 or prev.dtype != np.float64 \
                    or prev.size not in (self._width(False), self._width(True)):
                raise ValueError("solve_row: prev is not an output row of this network")
            v0 = prev[:nb] * np.exp(1j * np.deg2rad(prev[nb:2 * nb]))
        return self.solve(w[:nb], w[nb:], v0, out, flows)

    def solve_batch(self, p: np.ndarray, q: np.ndarray, v0: np.ndarray | None, out: np.ndarray,
                    its: np.ndarray, flows: bool, warm_start: bool) -> int:
        """Solve T steps into ``out`` (T rows); return 1 on non-finite input."""
        if out.shape != (p.shape[0], self._width(flows)) or p.shape[1:] != (self.n_bus,) \
                or q.shape != p.shape or its.shape != (p.shape[0],):
            raise ValueError("solve_batch: array shapes do not match the network")
        if not (np.isfinite(p).all() and np.isfinite(q).all()):
            self.row_finite = False
            return 1
        v_start = self._start(v0)
        for t in range(p.shape[0]):
            its[t] = self._step(p[t], q[t], v_start, out[t], flows)
            v_start = self._v.copy() if (warm_start and its[t] > 0) else self.v_noload
        return 0

    # -- internals -------------------------------------------------------------------------
    def _start(self, v0: np.ndarray | None) -> np.ndarray:
        v = self.v_noload.copy()
        if v0 is not None:
            v0 = np.asarray(v0, dtype=np.complex128)
            if v0.shape != (self.n_bus,):
                raise ValueError("v0 must have one complex value per bus")
            k = self.bus_map
            use = (k >= 0) & (k < self.m) & np.isfinite(v0) & (v0 != 0)
            v[k[use]] = v0[use]
        return v

    def _load_current(self, s_load: np.ndarray, v: np.ndarray) -> np.ndarray:
        # current drawn by constant-power loads: conj(S / V) = conj(S) V / |V|^2
        return np.conj(s_load) * v / (v.real ** 2 + v.imag ** 2)

    def _step(self, p: np.ndarray, q: np.ndarray, v_start: np.ndarray, out: np.ndarray,
              flows: bool) -> int:
        m = self.m
        s_int = np.zeros(self.n_int, dtype=np.complex128)
        np.add.at(s_int, self.bus_map[self.valid],
                  (p[self.valid] + 1j * q[self.valid]) / self.base_mva)
        s_load = s_int[:m]
        v = v_start.copy()
        it = 0
        converged = m == 0
        if m:
            j = self._load_current(s_load, v)
            for it in range(1, self.max_iter + 1):
                v = self.v_noload - self.lu.solve(j)
                j_new = self._load_current(s_load, v)
                err = np.max(np.abs(j_new - j) ** 2 * self.weight)
                j = j_new
                if not np.isfinite(err):
                    break
                if err < 1.0:
                    converged = True
                    break
        if not converged:
            out[:] = np.nan
            self._v = self.v_noload.copy()
            self.row_finite = False
            return -max(it, 1)
        self._v = v
        self._outputs(np.concatenate([v, self.v_slack]), s_int, p, q, out, flows)
        self.row_finite = bool(np.isfinite(out).all())
        return max(it, 1) if m else 1

    def _outputs(self, v: np.ndarray, s_int: np.ndarray, p: np.ndarray, q: np.ndarray,
                 out: np.ndarray, flows: bool) -> None:
        nb, nr, ne = self.n_bus, self.n_rep, self.n_eg
        base = self.base_mva
        vb = np.full(nb, np.nan + 0j)
        vb[self.valid] = v[self.bus_map[self.valid]]
        out[:nb] = np.abs(vb)
        out[nb:2 * nb] = np.angle(vb) * _RAD2DEG
        o_load = 2 * nb
        o_sc = o_load + nr + 2 * ne
        vf, vt = v[self.br_from], v[self.br_to]
        i_f = self.br_y[:, 0] * vf + self.br_y[:, 1] * vt
        i_t = self.br_y[:, 2] * vf + self.br_y[:, 3] * vt
        s_f = vf * np.conj(i_f) * base
        s_t = vt * np.conj(i_t) * base
        rep = self.br_rep >= 0
        r = self.br_rep[rep]
        ia_f = np.abs(i_f[rep]) * self.bi_from[rep]
        ia_t = np.abs(i_t[rep]) * self.bi_to[rep]
        loading = self.template[0].copy()
        loading[r] = np.maximum(
            self.load_a[r, 0] * ia_f + self.load_b[r, 0] * np.abs(s_f[rep]),
            self.load_a[r, 1] * ia_t + self.load_b[r, 1] * np.abs(s_t[rep]))
        out[o_load:o_load + nr] = loading
        s_slack = (v[self.m:] * np.conj(self.y_slack @ v) + s_int[self.m:]) * base
        eg = np.zeros(ne, dtype=np.complex128)
        has = self.eg_slack >= 0
        eg[has] = s_slack[self.eg_slack[has]]
        out[o_load + nr:o_load + nr + ne] = eg.real
        out[o_load + nr + ne:o_sc] = eg.imag
        loss = np.sum(s_f + s_t)
        out[o_sc] = loss.real
        out[o_sc + 1] = loss.imag
        out[o_sc + 2] = p[~self.valid].sum()
        out[o_sc + 3] = q[~self.valid].sum()
        if flows:
            o = o_sc + 4
            block = np.zeros((6, nr))
            block[4:] = self.template[1:]
            block[0, r] = s_f[rep].real
            block[1, r] = s_f[rep].imag
            block[2, r] = s_t[rep].real
            block[3, r] = s_t[rep].imag
            block[4, r] = ia_f
            block[5, r] = ia_t
            out[o:o + 6 * nr] = block.ravel()
