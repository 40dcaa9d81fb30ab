"""Balanced AC power flow of a distribution network: compiled kernel.

Method: fixed-point current injection on the bus admittance matrix ("implicit Z-bus Gauss").
With the slack voltages ``V_s`` fixed, the PQ buses satisfy ``Y_pp V + Y_ps V_s = -J(V)``, where
``J_k = conj(S_k / V_k)`` is the current drawn by the constant-power injection ``S_k`` (load
convention). Each iteration solves ``V = V_0 - Y_pp^{-1} J(V)`` with ``V_0 = -Y_pp^{-1} Y_ps V_s``
the no-load voltage; ``Y_pp`` is factorised once per topology (``L U``, no pivoting), so an
iteration costs one evaluation of ``J`` and one pair of sparse triangular solves.

Why this method:

* Exactness: ``Y`` is pandapower's own admittance matrix (lines, transformer T or pi model with
  taps and phase shift, shunts, fused switches), so at convergence the solution is the one
  ``pandapower.runpp`` finds. Convergence is tested on the true bus current mismatch: after
  the update ``Y_pp V_new + Y_ps V_s = -J(V_old)``, so the mismatch current at ``V_new`` is
  ``J(V_new) - J(V_old)``, which the next iteration needs anyway (no extra mat-vec). Each bus
  has its own weight, so that the test reads "below 1e-9 kA and below 1e-8 MVA" at every
  voltage level.
* Speed: the PQ block is ordered by minimum degree before factorisation. On a radial network this
  eliminates leaves first and the factors have no fill-in: the two triangular solves *are* a
  backward/forward sweep over the tree, O(n) per iteration. Meshes (closed rings) only add the
  few fill-in entries of their loops, so radial and meshed networks use the same code.
* Phase shifters and unsymmetrical ``Y`` need nothing special (complex, non-Hermitian LU), and
  no flat-start problem arises: iterations start from the no-load voltage, which already carries
  tap ratios and phase shifts.
* Distribution grids converge in 4-12 iterations. Far from the usual operating
  range (near voltage collapse) the fixed point can fail; the Python layer then retries the step
  with Newton-Raphson.
* Considered and measured: Newton-Raphson needs 3-4 iterations, but each costs a residual
  mat-vec, a refactorisation of the 2x2-block Jacobian and its solve, about three fixed-point
  iterations; Anderson acceleration saved at most one iteration in eight; a constant-impedance
  diagonal in the factorised matrix does not help, because a constant-power load's current is
  anti-linear in the voltage.

The kernel works on plain arrays built by ``ext.powerflow_net.PowerFlowNetwork``. Complex values
are split into real and imaginary arrays so that the element-wise loops (load currents, branch
flows, bus angles) vectorise; the triangular solves are sequential by nature. Per-step loops run
without the GIL and without Python objects. ``ext/powerflow_np.py`` is the NumPy twin.
"""

import numpy as np

cimport numpy as cnp

from libc.math cimport atan2, cos, fabs, sin, sqrt, NAN
from libc.stdint cimport int64_t

cnp.import_array()

cdef double RAD2DEG = 180.0 / 3.14159265358979323846
cdef double DEG2RAD = 3.14159265358979323846 / 180.0

# Pointers that never alias: the element-wise loops below read and write several distinct
# arrays, and only with this promise does the C compiler vectorise them.
cdef extern from *:
    ctypedef double* dptr "double * __restrict__"
    ctypedef const double* cdptr "const double * __restrict__"


cdef double _load_currents(int m, cdptr vnl_re, cdptr vnl_im, cdptr x_re, cdptr x_im,
                           cdptr s_re, cdptr s_im, cdptr w, dptr v_re, dptr v_im, dptr j_re,
                           dptr j_im, dptr dd) noexcept nogil:
    """V = V0 - x; new load currents J; return the largest weighted squared change of J."""
    cdef int i
    cdef double vr, vi, inv, jr, ji, dr, di, err = 0.0
    for i in range(m):
        vr = vnl_re[i] - x_re[i]
        vi = vnl_im[i] - x_im[i]
        v_re[i] = vr
        v_im[i] = vi
        inv = 1.0 / (vr * vr + vi * vi)
        jr = (s_re[i] * vr + s_im[i] * vi) * inv
        ji = (s_re[i] * vi - s_im[i] * vr) * inv
        dr = jr - j_re[i]
        di = ji - j_im[i]
        j_re[i] = jr
        j_im[i] = ji
        dd[i] = (dr * dr + di * di) * w[i]
    for i in range(m):
        if not dd[i] <= err:  # also catches NaN
            err = dd[i]
    return err


cdef void _scale(int m, dptr x_re, dptr x_im, cdptr d_re, cdptr d_im) noexcept nogil:
    """x = d x, element-wise complex product in place."""
    cdef int i
    cdef double xr, xi
    for i in range(m):
        xr = x_re[i]
        xi = x_im[i]
        x_re[i] = d_re[i] * xr - d_im[i] * xi
        x_im[i] = d_re[i] * xi + d_im[i] * xr


cdef void _branch_flows(int n, cdptr vf_re, cdptr vf_im, cdptr vt_re, cdptr vt_im,
                        cdptr yff_re, cdptr yff_im, cdptr yft_re, cdptr yft_im, cdptr ytf_re,
                        cdptr ytf_im, cdptr ytt_re, cdptr ytt_im, dptr if_re, dptr if_im,
                        dptr it_re, dptr it_im, dptr sf_re, dptr sf_im, dptr st_re,
                        dptr st_im) noexcept nogil:
    """Currents and powers (pu) entering each branch at both ends: I = Y V, S = V conj(I)."""
    cdef int l
    cdef double vfr, vfi, vtr, vti, ifr, ifi, itr, iti
    for l in range(n):
        vfr = vf_re[l]
        vfi = vf_im[l]
        vtr = vt_re[l]
        vti = vt_im[l]
        ifr = yff_re[l] * vfr - yff_im[l] * vfi + yft_re[l] * vtr - yft_im[l] * vti
        ifi = yff_re[l] * vfi + yff_im[l] * vfr + yft_re[l] * vti + yft_im[l] * vtr
        itr = ytf_re[l] * vfr - ytf_im[l] * vfi + ytt_re[l] * vtr - ytt_im[l] * vti
        iti = ytf_re[l] * vfi + ytf_im[l] * vfr + ytt_re[l] * vti + ytt_im[l] * vtr
        if_re[l] = ifr
        if_im[l] = ifi
        it_re[l] = itr
        it_im[l] = iti
        sf_re[l] = vfr * ifr + vfi * ifi
        sf_im[l] = vfi * ifr - vfr * ifi
        st_re[l] = vtr * itr + vti * iti
        st_im[l] = vti * itr - vtr * iti


# Square roots two at a time: errno handling keeps C compilers from vectorising sqrt() calls,
# the SSE2 instruction (baseline on x86-64) has none; other targets use the plain loop.
cdef extern from *:
    """
    #include <math.h>
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif
    static void pf_magnitudes(int n, double *re, const double *im, const double *scale) {
        int l = 0;
    #if defined(__SSE2__)
        for (; l + 2 <= n; l += 2) {
            __m128d r = _mm_loadu_pd(re + l), i = _mm_loadu_pd(im + l);
            __m128d m = _mm_sqrt_pd(_mm_add_pd(_mm_mul_pd(r, r), _mm_mul_pd(i, i)));
            _mm_storeu_pd(re + l, _mm_mul_pd(m, _mm_loadu_pd(scale + l)));
        }
    #endif
        for (; l < n; l++) re[l] = sqrt(re[l] * re[l] + im[l] * im[l]) * scale[l];
    }
    static void pf_sqrt(int n, double *x) {
        int l = 0;
    #if defined(__SSE2__)
        for (; l + 2 <= n; l += 2) _mm_storeu_pd(x + l, _mm_sqrt_pd(_mm_loadu_pd(x + l)));
    #endif
        for (; l < n; l++) x[l] = sqrt(x[l]);
    }
    """
    void _magnitudes "pf_magnitudes"(int n, double* re, const double* im,
                                     const double* scale) noexcept nogil
    void _sqrt_inplace "pf_sqrt"(int n, double* x) noexcept nogil


cdef void _relative_angles(int n, cdptr v_re, cdptr v_im, cdptr ref_re, cdptr ref_im,
                           dptr vm2, dptr dva) noexcept nogil:
    """|V|^2 and the angle of V relative to the reference phasor [rad] (small-angle series)."""
    cdef int k
    cdef double vr, vi, wr, wi
    for k in range(n):
        vr = v_re[k]
        vi = v_im[k]
        wr = vr * ref_re[k] + vi * ref_im[k]
        wi = vi * ref_re[k] - vr * ref_im[k]
        vm2[k] = vr * vr + vi * vi
        dva[k] = _atan_small(wi / wr)


cdef bint _all_finite(int n, cdptr x) noexcept nogil:
    """Whether no value of ``x`` is NaN or infinite (independent tests: the loop vectorises)."""
    cdef int k
    cdef int bad = 0
    for k in range(n):
        bad |= not (x[k] - x[k] == 0.0)
    return not bad


cdef inline double _atan_small(double z) noexcept nogil:
    """atan(z) for |z| <= 1/8: odd Taylor series to z**17 (truncation error < 1e-18)."""
    cdef double z2 = z * z
    cdef double a = 1.0 / 17.0
    a = a * z2 - 1.0 / 15.0
    a = a * z2 + 1.0 / 13.0
    a = a * z2 - 1.0 / 11.0
    a = a * z2 + 1.0 / 9.0
    a = a * z2 - 1.0 / 7.0
    a = a * z2 + 1.0 / 5.0
    a = a * z2 - 1.0 / 3.0
    a = a * z2 + 1.0
    return z * a


cdef const double* _data(object a, Py_ssize_t n, bint writeable) except NULL:
    """Data pointer of a C-contiguous float64 array with ``n`` elements; ValueError otherwise."""
    cdef cnp.ndarray arr
    if not cnp.PyArray_Check(a):
        raise ValueError("solve: expected a NumPy array")
    arr = <cnp.ndarray> a
    if (cnp.PyArray_TYPE(arr) != cnp.NPY_DOUBLE or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or cnp.PyArray_SIZE(arr) != n or cnp.PyArray_NDIM(arr) != 1
            or (writeable and not cnp.PyArray_ISWRITEABLE(arr))):
        raise ValueError("solve: array shapes do not match the network")
    return <const double*> cnp.PyArray_DATA(arr)


cdef const double* _row(object a, Py_ssize_t n_core, Py_ssize_t n_flows) except NULL:
    """Data pointer of an output row (with or without the branch flows); ValueError otherwise."""
    cdef cnp.ndarray arr
    if not cnp.PyArray_Check(a):
        raise ValueError("solve_row: prev must be a NumPy array")
    arr = <cnp.ndarray> a
    if (cnp.PyArray_TYPE(arr) != cnp.NPY_DOUBLE or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or cnp.PyArray_NDIM(arr) != 1
            or (cnp.PyArray_SIZE(arr) != n_core and cnp.PyArray_SIZE(arr) != n_flows)):
        raise ValueError("solve_row: prev is not an output row of this network")
    return <const double*> cnp.PyArray_DATA(arr)


def _parts(values, n=None):
    """Real and imaginary parts as two contiguous float64 arrays."""
    arr = np.asarray(values, dtype=np.complex128).ravel()
    if n is not None and arr.size != n:
        raise ValueError(f"PowerFlowKernel: expected {n} values, got {arr.size}")
    return np.ascontiguousarray(arr.real), np.ascontiguousarray(arr.imag)


def _reals(values, n=None):
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.float64).ravel())
    if n is not None and arr.size != n:
        raise ValueError(f"PowerFlowKernel: expected {n} values, got {arr.size}")
    return arr


def _index(values, n=None):
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.int64).ravel())
    if n is not None and arr.size != n:
        raise ValueError(f"PowerFlowKernel: expected {n} indices, got {arr.size}")
    return arr


def bin_sums(list parts not None, ptr, bins, out):
    """Sum the elements of ``parts`` (concatenated) per bin into ``out``, in element order from
    0.0 as ``np.bincount`` does; returns whether every sum is finite. See the twin
    ``ext.powerflow_np.bin_sums`` for the arguments and errors."""
    cdef Py_ssize_t j, e, e0, e1, n_parts = len(parts), n_out
    cdef int64_t b
    cdef const int64_t* pp
    cdef const int64_t* bb
    cdef const double* aa
    cdef double* oo
    cdef double x
    cdef bint finite = True
    cdef cnp.ndarray arr
    for name, a in (("ptr", ptr), ("bins", bins)):
        if (not cnp.PyArray_Check(a) or cnp.PyArray_TYPE(<cnp.ndarray> a) != cnp.NPY_INT64
                or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> a)
                or cnp.PyArray_NDIM(<cnp.ndarray> a) != 1):
            raise ValueError(f"bin_sums: {name} must be a contiguous 1-D int64 array")
    pp = <const int64_t*> cnp.PyArray_DATA(<cnp.ndarray> ptr)
    if cnp.PyArray_SIZE(<cnp.ndarray> ptr) != n_parts + 1 or pp[0] != 0:
        raise ValueError("bin_sums: ptr must hold 0 and the end of each part")
    if cnp.PyArray_SIZE(<cnp.ndarray> bins) != pp[n_parts]:
        raise ValueError("bin_sums: one bin per element of the parts expected")
    bb = <const int64_t*> cnp.PyArray_DATA(<cnp.ndarray> bins)
    if (not cnp.PyArray_Check(out) or cnp.PyArray_TYPE(<cnp.ndarray> out) != cnp.NPY_DOUBLE
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> out)
            or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray> out)):
        raise ValueError("bin_sums: out must be a writeable contiguous float64 array")
    n_out = cnp.PyArray_SIZE(<cnp.ndarray> out)
    oo = <double*> cnp.PyArray_DATA(<cnp.ndarray> out)
    for e in range(n_out):
        oo[e] = 0.0
    for j in range(n_parts):
        e0 = pp[j]
        e1 = pp[j + 1]
        a = parts[j]
        if not cnp.PyArray_Check(a):
            raise ValueError(f"bin_sums: part {j} is not a NumPy array")
        arr = <cnp.ndarray> a
        if (cnp.PyArray_TYPE(arr) != cnp.NPY_DOUBLE or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
                or cnp.PyArray_NDIM(arr) != 1 or cnp.PyArray_SIZE(arr) != e1 - e0):
            raise ValueError(f"bin_sums: part {j} must be a contiguous 1-D float64 array of "
                             f"{e1 - e0} values")
        aa = <const double*> cnp.PyArray_DATA(arr)
        for e in range(e0, e1):
            b = bb[e]
            if b < 0 or b >= n_out:
                raise ValueError(f"bin_sums: bin {b} of element {e} outside 0..{n_out - 1}")
            oo[b] += aa[e - e0]
    for e in range(n_out):
        x = oo[e]
        if not x - x == 0.0:
            finite = False
    return finite


cdef class PowerFlowKernel:
    """Fixed-point (implicit Z-bus) power flow on one converted network.

    Parameters are the arrays built by ``ext.powerflow_net.PowerFlowNetwork``, documented in
    ``ext.powerflow_np.PowerFlowKernel`` (same signature). A kernel keeps its work arrays between
    calls: one kernel must not solve in two threads at once.
    """

    cdef int m, n_int, n_slack, n_bus, n_br, n_rep, n_eg, max_iter
    cdef readonly bint row_finite
    """Every value of the output row the last step wrote is finite (False when that step did
    not converge or met non-finite input)."""
    cdef double base_mva
    cdef bint power_loading  # some loading is rated on apparent power, not current
    cdef int64_t[::1] bus_map, l_ptr, l_idx, u_ptr, u_idx, s_ptr, s_idx
    cdef int64_t[::1] br_from, br_to, br_rep, eg_slack
    cdef int64_t[::1] rep_branch  # branch of each reported line/trafo, -1 if not in service
    # factors: strictly lower L, strictly upper D^-1 U, inverse diagonal D^-1 of U
    cdef double[::1] l_re, l_im, u_re, u_im, d_re, d_im
    # no-load voltage of every internal bus (PQ buses, then the slack voltages)
    cdef double[::1] vnl_re, vnl_im
    # rows of Y for the slack buses; branch admittances (from-from, from-to, to-from, to-to)
    cdef double[::1] ys_re, ys_im, yff_re, yff_im, yft_re, yft_im, ytf_re, ytf_im, ytt_re, ytt_im
    # kA per pu current at both ends; loading per kA and per MVA at both ends; fill values
    cdef double[::1] bi_from, bi_to, la_f, la_t, lb_f, lb_t, template
    # converged when |current mismatch (pu)|^2 * weight < 1 at every PQ bus
    cdef double[::1] weight
    # unit phasor and angle [°] of each internal bus at no load: reference for the angle output
    cdef double[::1] ref_re, ref_im, va_ref
    # work arrays
    cdef double[::1] v_re, v_im, s_re, s_im, j_re, j_im, x_re, x_im, dd
    cdef double[::1] pq_w  # the bus injections of solve_row, extras added (never empty)
    cdef double[::1] vm_int, va_int, eg_re, eg_im
    cdef double[::1] b_ifr, b_ifi, b_itr, b_iti, b_sfr, b_sfi, b_str, b_sti
    cdef double[::1] g_vf_re, g_vf_im, g_vt_re, g_vt_im

    def __init__(self, *, n_pq, base_mva, mismatch_weight, max_iter, bus_map, l_ptr, l_idx,
                 l_val, u_ptr, u_idx, u_val, u_diag_inv, v_noload, v_slack, s_ptr,
                 s_idx, s_val, br_from, br_to, br_y, br_rep, br_base_i_from, br_base_i_to,
                 rep_load_a, rep_load_b, eg_slack, rep_template):
        cdef int m = int(n_pq)
        self.m = m
        self.base_mva = float(base_mva)
        self.max_iter = int(max_iter)
        self.weight = _reals(mismatch_weight, m)
        self.bus_map = _index(bus_map)
        self.n_bus = self.bus_map.shape[0]
        self.l_ptr = _index(l_ptr, m + 1)
        self.l_idx = _index(l_idx)
        self.l_re, self.l_im = _parts(l_val, self.l_idx.shape[0])
        self.u_ptr = _index(u_ptr, m + 1)
        self.u_idx = _index(u_idx)
        d_inv = np.asarray(u_diag_inv, dtype=np.complex128).ravel()
        if d_inv.size != m:
            raise ValueError(f"PowerFlowKernel: expected {m} diagonal values, got {d_inv.size}")
        # rows of U scaled by the inverse diagonal: a unit upper factor
        u_rows = np.repeat(np.arange(m), np.diff(np.asarray(self.u_ptr)))
        self.u_re, self.u_im = _parts(np.asarray(u_val, dtype=np.complex128).ravel()
                                      * d_inv[u_rows], self.u_idx.shape[0])
        self.d_re, self.d_im = _parts(d_inv, m)
        v_slack = np.asarray(v_slack, dtype=np.complex128).ravel()
        self.n_slack = v_slack.size
        self.n_int = m + self.n_slack
        v_start = np.concatenate([np.asarray(v_noload, dtype=np.complex128).ravel(), v_slack])
        self.vnl_re, self.vnl_im = _parts(v_start, self.n_int)
        self.s_ptr = _index(s_ptr, self.n_slack + 1)
        self.s_idx = _index(s_idx)
        self.ys_re, self.ys_im = _parts(s_val, self.s_idx.shape[0])
        self.br_from = _index(br_from)
        self.n_br = self.br_from.shape[0]
        self.br_to = _index(br_to, self.n_br)
        y = np.asarray(br_y, dtype=np.complex128).reshape(-1, 4)
        if y.shape[0] != self.n_br:
            raise ValueError("PowerFlowKernel: one admittance quadruple per branch expected")
        self.yff_re, self.yff_im = _parts(y[:, 0])
        self.yft_re, self.yft_im = _parts(y[:, 1])
        self.ytf_re, self.ytf_im = _parts(y[:, 2])
        self.ytt_re, self.ytt_im = _parts(y[:, 3])
        self.br_rep = _index(br_rep, self.n_br)
        self.bi_from = _reals(br_base_i_from, self.n_br)
        self.bi_to = _reals(br_base_i_to, self.n_br)
        load_a = np.asarray(rep_load_a, dtype=np.float64).reshape(-1, 2)
        load_b = np.asarray(rep_load_b, dtype=np.float64).reshape(-1, 2)
        self.n_rep = load_a.shape[0]
        self.la_f, self.la_t = _reals(load_a[:, 0]), _reals(load_a[:, 1])
        self.lb_f, self.lb_t = _reals(load_b[:, 0], self.n_rep), _reals(load_b[:, 1])
        self.power_loading = bool(np.any(load_b != 0.0))
        self.template = _reals(rep_template, 3 * self.n_rep)
        rep_branch = np.full(self.n_rep, -1, dtype=np.int64)
        rep = np.asarray(self.br_rep)
        if np.any(rep >= self.n_rep):
            raise ValueError("PowerFlowKernel: index out of range")
        rep_branch[rep[rep >= 0]] = np.flatnonzero(rep >= 0)
        self.rep_branch = rep_branch
        self.eg_slack = _index(eg_slack)
        self.n_eg = self.eg_slack.shape[0]
        if np.any(np.asarray(self.bus_map) >= self.n_int):
            raise ValueError("PowerFlowKernel: index out of range")
        self.ref_re, self.ref_im = _parts(np.exp(1j * np.angle(v_start)))
        self.va_ref = _reals(np.angle(v_start, deg=True))
        self.v_re, self.v_im = _parts(v_start)  # the slack part never changes
        self.s_re, self.s_im = np.zeros(self.n_int), np.zeros(self.n_int)
        self.pq_w = np.zeros(2 * self.n_bus + 1)
        self.j_re, self.j_im = np.zeros(m), np.zeros(m)
        self.x_re, self.x_im = np.zeros(m), np.zeros(m)
        self.dd = np.zeros(m)
        self.vm_int, self.va_int = np.zeros(self.n_int), np.zeros(self.n_int)
        self.eg_re, self.eg_im = np.zeros(self.n_slack), np.zeros(self.n_slack)
        self.b_ifr, self.b_ifi = np.zeros(self.n_br), np.zeros(self.n_br)
        self.b_itr, self.b_iti = np.zeros(self.n_br), np.zeros(self.n_br)
        self.b_sfr, self.b_sfi = np.zeros(self.n_br), np.zeros(self.n_br)
        self.b_str, self.b_sti = np.zeros(self.n_br), np.zeros(self.n_br)
        self.g_vf_re, self.g_vf_im = np.zeros(self.n_br), np.zeros(self.n_br)
        self.g_vt_re, self.g_vt_im = np.zeros(self.n_br), np.zeros(self.n_br)

    cdef int _width(self, bint flows) noexcept nogil:
        return 2 * self.n_bus + self.n_rep + 2 * self.n_eg + 4 + (6 * self.n_rep if flows else 0)

    cdef void _start(self, const double[::1] v0) noexcept nogil:
        """Starting voltages: no-load voltages, replaced by the usable entries of ``v0``."""
        cdef int b, k
        cdef double vr, vi
        for k in range(self.m):
            self.v_re[k] = self.vnl_re[k]
            self.v_im[k] = self.vnl_im[k]
        for b in range(self.n_bus):
            k = <int> self.bus_map[b]
            if k < 0 or k >= self.m:
                continue
            vr = v0[2 * b]
            vi = v0[2 * b + 1]
            if vr - vr == 0.0 and vi - vi == 0.0 and (vr != 0.0 or vi != 0.0):
                self.v_re[k] = vr
                self.v_im[k] = vi

    cdef void _start_polar(self, const double* prev) noexcept nogil:
        """Starting voltages from an output row: ``vm · e^{j·va}`` per bus, computed as NumPy's
        ``vm * np.exp(1j * np.deg2rad(va))`` (``PowerFlowResult.v_pu``), so that a warm start
        from a row gives the same iterates as one from ``v_pu``; the rest as :meth:`_start`."""
        cdef int b, k, nb = self.n_bus
        cdef double rad, c, s, vr, vi
        for k in range(self.m):
            self.v_re[k] = self.vnl_re[k]
            self.v_im[k] = self.vnl_im[k]
        for b in range(nb):
            k = <int> self.bus_map[b]
            if k < 0 or k >= self.m:
                continue
            rad = prev[nb + b] * DEG2RAD
            c = cos(rad)
            s = sin(rad)
            # the complex product (vm + 0j)(c + js), term by term, as NumPy forms it
            vr = prev[b] * c - 0.0 * s
            vi = prev[b] * s + 0.0 * c
            if vr - vr == 0.0 and vi - vi == 0.0 and (vr != 0.0 or vi != 0.0):
                self.v_re[k] = vr
                self.v_im[k] = vi

    cdef const double[::1] _v0_doubles(self, v0):
        v = np.ascontiguousarray(v0, dtype=np.complex128).ravel()
        if v.size != self.n_bus:
            raise ValueError("v0 must have one complex value per bus")
        return v.view(np.float64)

    def solve(self, p, q, v0, out, bint flows=True):
        """Solve one step into ``out`` (one output row, with or without the branch flows).

        ``p``, ``q`` and ``out`` must be C-contiguous float64 arrays of the right size (checked
        through NumPy's C API, cheaper per call than buffer acquisition). Returns the iteration
        count, negated when not converged, or 0 on non-finite input.
        """
        cdef int status
        cdef int64_t its = 0
        cdef const double* pp = _data(p, self.n_bus, False)
        cdef const double* qq = _data(q, self.n_bus, False)
        cdef double* oo = <double*> _data(out, self._width(flows), True)
        if v0 is not None:
            self._start(self._v0_doubles(v0))
        with nogil:
            status = self._step(pp, qq, v0 is not None, oo, flows, &its)
        return 0 if status else its

    def solve_row(self, pq, at, extra, prev, out, bint flows=True, double scale=1.0):
        """Solve one step into ``out``: bus injections ``pq`` (P of every bus, then Q), plus
        ``scale * extra`` (P at each bus of ``at``, then Q) added at the bus positions ``at``;
        starting from the voltages of ``prev``, an earlier output row of this kernel (its ``vm``
        and ``va`` per bus, usable entries as for ``v0`` of :meth:`solve`), or from the no-load
        voltages when ``prev`` is None. ``at`` (int64, unique) and ``extra`` may be None.

        Returns as :meth:`solve`.
        """
        cdef int status, i, nb = self.n_bus, n_at = 0
        cdef int64_t b, its = 0
        cdef const double* rr = _data(pq, 2 * nb, False)
        cdef double* oo = <double*> _data(out, self._width(flows), True)
        cdef const double* vv = NULL
        cdef const int64_t* aa = NULL
        cdef const double* ee = NULL
        cdef double* w = &self.pq_w[0]
        cdef cnp.ndarray at_arr
        if at is not None:
            if (not cnp.PyArray_Check(at) or cnp.PyArray_TYPE(<cnp.ndarray> at) != cnp.NPY_INT64
                    or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> at)
                    or cnp.PyArray_NDIM(<cnp.ndarray> at) != 1):
                raise ValueError("solve_row: at must be a contiguous int64 array")
            at_arr = <cnp.ndarray> at
            n_at = <int> cnp.PyArray_SIZE(at_arr)
            aa = <const int64_t*> cnp.PyArray_DATA(at_arr)
            for i in range(n_at):
                if aa[i] < 0 or aa[i] >= nb:
                    raise ValueError("solve_row: bus position out of range")
            ee = _data(extra, 2 * n_at, False)
        if prev is not None:
            vv = _row(prev, self._width(False), self._width(True))
        with nogil:
            for i in range(2 * nb):
                w[i] = rr[i]
            for i in range(n_at):
                b = aa[i]
                w[b] = w[b] + scale * ee[i]
                w[nb + b] = w[nb + b] + scale * ee[n_at + i]
            if vv != NULL:
                self._start_polar(vv)
            status = self._step(w, w + nb, vv != NULL, oo, flows, &its)
        return 0 if status else its

    def solve_batch(self, const double[:, ::1] p, const double[:, ::1] q, v0,
                    double[:, ::1] out, int64_t[::1] its, bint flows, bint warm_start):
        """Solve T steps into ``out`` (T rows); return 1 on non-finite input."""
        cdef int status = 0
        cdef Py_ssize_t t, n_t = p.shape[0]
        cdef bint from_v = v0 is not None
        if p.shape[1] != self.n_bus or q.shape[0] != n_t or q.shape[1] != self.n_bus \
                or out.shape[0] != n_t or its.shape[0] != n_t or out.shape[1] != self._width(flows):
            raise ValueError("solve_batch: array shapes do not match the network")
        if from_v:
            self._start(self._v0_doubles(v0))
        if n_t == 0:
            return 0
        with nogil:
            for t in range(n_t):
                status = self._step(&p[t, 0], &q[t, 0], from_v, &out[t, 0], flows, &its[t])
                if status:
                    break
                from_v = warm_start and its[t] > 0
        return status

    cdef int _step(self, const double* p, const double* q, bint from_v, double* out, bint flows,
                   int64_t* its) noexcept nogil:
        cdef int m = self.m
        cdef int b, k, i, it = 0
        cdef int64_t e, e0, e1
        cdef double pb, qb, p_isl = 0.0, q_isl = 0.0, inv_base = 1.0 / self.base_mva
        cdef double vr, vi, inv, ar, ai, xr, xi, err
        cdef bint converged = m == 0
        cdef double* v_re = &self.v_re[0]
        cdef double* v_im = &self.v_im[0]
        cdef double* s_re = &self.s_re[0]
        cdef double* s_im = &self.s_im[0]
        cdef double* j_re = NULL
        cdef double* j_im = NULL
        cdef double* x_re = NULL
        cdef double* x_im = NULL
        cdef double* dd = NULL
        cdef const int64_t* bus_map = &self.bus_map[0]
        cdef const int64_t* l_ptr = &self.l_ptr[0]
        cdef const int64_t* l_idx = NULL
        cdef const double* l_re = NULL
        cdef const double* l_im = NULL
        cdef const int64_t* u_ptr = &self.u_ptr[0]
        cdef const int64_t* u_idx = NULL
        cdef const double* u_re = NULL
        cdef const double* u_im = NULL
        cdef const double* d_re = NULL
        cdef const double* d_im = NULL
        cdef const double* vnl_re = &self.vnl_re[0]
        cdef const double* vnl_im = &self.vnl_im[0]
        cdef const double* w = NULL
        if m > 0:
            j_re, j_im, x_re, x_im = &self.j_re[0], &self.j_im[0], &self.x_re[0], &self.x_im[0]
            dd, w = &self.dd[0], &self.weight[0]
            d_re, d_im = &self.d_re[0], &self.d_im[0]
        if self.l_idx.shape[0] > 0:
            l_idx, l_re, l_im = &self.l_idx[0], &self.l_re[0], &self.l_im[0]
        if self.u_idx.shape[0] > 0:
            u_idx, u_re, u_im = &self.u_idx[0], &self.u_re[0], &self.u_im[0]

        self.row_finite = False
        # per-bus injections -> internal buses (fused buses add up; islanded ones are reported)
        for k in range(self.n_int):
            s_re[k] = 0.0
            s_im[k] = 0.0
        for b in range(self.n_bus):
            pb = p[b]
            qb = q[b]
            if not (pb - pb == 0.0 and qb - qb == 0.0):
                return 1
            k = <int> bus_map[b]
            if k < 0:
                p_isl += pb
                q_isl += qb
            else:
                s_re[k] += pb * inv_base
                s_im[k] += qb * inv_base

        if not from_v:
            for k in range(m):
                v_re[k] = vnl_re[k]
                v_im[k] = vnl_im[k]

        # J = conj(S) V / |V|^2: current drawn by each constant-power bus
        for k in range(m):
            vr = v_re[k]
            vi = v_im[k]
            inv = 1.0 / (vr * vr + vi * vi)
            j_re[k] = (s_re[k] * vr + s_im[k] * vi) * inv
            j_im[k] = (s_re[k] * vi - s_im[k] * vr) * inv

        while not converged and it < self.max_iter:
            it += 1
            # x = L^-1 J: on a tree, the backward sweep summing currents towards the slack
            for i in range(m):
                xr = j_re[i]
                xi = j_im[i]
                e0 = l_ptr[i]
                e1 = l_ptr[i + 1]
                for e in range(e0, e1):
                    k = <int> l_idx[e]
                    ar = l_re[e]
                    ai = l_im[e]
                    xr -= ar * x_re[k] - ai * x_im[k]
                    xi -= ar * x_im[k] + ai * x_re[k]
                x_re[i] = xr
                x_im[i] = xi
            # x = U^-1 x = (D^-1 U)^-1 D^-1 x: the diagonal scaling is element-wise and off the
            # dependency chain of the sweep; on a tree, the forward sweep of voltage drops
            _scale(m, x_re, x_im, d_re, d_im)
            for i in range(m - 1, -1, -1):
                xr = x_re[i]
                xi = x_im[i]
                e0 = u_ptr[i]
                e1 = u_ptr[i + 1]
                for e in range(e0, e1):
                    k = <int> u_idx[e]
                    ar = u_re[e]
                    ai = u_im[e]
                    xr -= ar * x_re[k] - ai * x_im[k]
                    xi -= ar * x_im[k] + ai * x_re[k]
                x_re[i] = xr
                x_im[i] = xi
            # new voltages and load currents; |J_new - J_old| is the current mismatch of the new
            # voltages
            err = _load_currents(m, vnl_re, vnl_im, x_re, x_im, s_re, s_im, w, v_re, v_im, j_re,
                                 j_im, dd)
            if not (err - err == 0.0):
                break  # diverged (overflow or NaN)
            if err < 1.0:
                converged = True

        if not converged:
            for k in range(self._width(flows)):
                out[k] = NAN
            its[0] = -(it if it > 0 else 1)
            return 0
        its[0] = it if it > 0 else 1
        self._outputs(p_isl, q_isl, out, flows)
        self.row_finite = _all_finite(self._width(flows), out)
        return 0

    cdef void _outputs(self, double p_isl, double q_isl, double* out, bint flows) noexcept nogil:
        cdef int nb = self.n_bus, nr = self.n_rep, ne = self.n_eg, m = self.m
        cdef int n_int = self.n_int, n_br = self.n_br
        cdef int o_load = 2 * nb
        cdef int o_eg = o_load + nr
        cdef int o_sc = o_eg + 2 * ne
        cdef int o_fl = o_sc + 4
        cdef int b, k, l, r, f, t
        cdef int64_t e
        cdef double base = self.base_mva
        cdef double vr, vi, wr, wi, a, z, vfr, vfi, vtr, vti, ifr, ifi, itr, iti
        cdef double ia_f, ia_t, ld_f, ld_t, ploss = 0.0, qloss = 0.0, accr, acci
        cdef double* v_re = &self.v_re[0]
        cdef double* v_im = &self.v_im[0]
        cdef double* vm_int = &self.vm_int[0]
        cdef double* va_int = &self.va_int[0]
        cdef const double* ref_re = &self.ref_re[0]
        cdef const double* ref_im = &self.ref_im[0]
        cdef const double* va_ref = &self.va_ref[0]
        cdef const int64_t* bus_map = &self.bus_map[0]
        cdef const int64_t* br_from = NULL
        cdef const int64_t* br_to = NULL
        cdef const int64_t* br_rep = NULL
        cdef const double* yff_re = NULL
        cdef const double* yff_im = NULL
        cdef const double* yft_re = NULL
        cdef const double* yft_im = NULL
        cdef const double* ytf_re = NULL
        cdef const double* ytf_im = NULL
        cdef const double* ytt_re = NULL
        cdef const double* ytt_im = NULL
        cdef const double* bi_from = NULL
        cdef const double* bi_to = NULL
        cdef double* ifr_a = NULL
        cdef double* ifi_a = NULL
        cdef double* itr_a = NULL
        cdef double* iti_a = NULL
        cdef double* sfr_a = NULL
        cdef double* sfi_a = NULL
        cdef double* str_a = NULL
        cdef double* sti_a = NULL
        cdef bint power_loading = self.power_loading
        cdef const int64_t* rep_branch = NULL
        cdef const double* la_f = NULL
        cdef const double* la_t = NULL
        cdef double* vf_re = NULL
        cdef double* vf_im = NULL
        cdef double* vt_re = NULL
        cdef double* vt_im = NULL
        if nr > 0:
            rep_branch, la_f, la_t = &self.rep_branch[0], &self.la_f[0], &self.la_t[0]
        if n_br > 0:
            vf_re, vf_im = &self.g_vf_re[0], &self.g_vf_im[0]
            vt_re, vt_im = &self.g_vt_re[0], &self.g_vt_im[0]
            br_from, br_to, br_rep = &self.br_from[0], &self.br_to[0], &self.br_rep[0]
            yff_re, yff_im = &self.yff_re[0], &self.yff_im[0]
            yft_re, yft_im = &self.yft_re[0], &self.yft_im[0]
            ytf_re, ytf_im = &self.ytf_re[0], &self.ytf_im[0]
            ytt_re, ytt_im = &self.ytt_re[0], &self.ytt_im[0]
            bi_from, bi_to = &self.bi_from[0], &self.bi_to[0]
            ifr_a, ifi_a, itr_a, iti_a = &self.b_ifr[0], &self.b_ifi[0], &self.b_itr[0], \
                &self.b_iti[0]
            sfr_a, sfi_a, str_a, sti_a = &self.b_sfr[0], &self.b_sfi[0], &self.b_str[0], \
                &self.b_sti[0]

        # voltage angle relative to each bus's no-load angle: small, so a short odd series of
        # atan replaces the (slower) atan2; element-wise, vectorised by the compiler
        _relative_angles(n_int, v_re, v_im, ref_re, ref_im, vm_int, va_int)
        for k in range(n_int):
            vr = v_re[k]
            vi = v_im[k]
            wr = vr * ref_re[k] + vi * ref_im[k]
            wi = vi * ref_re[k] - vr * ref_im[k]
            if not (wr > 0.0 and fabs(wi) <= 0.125 * wr):
                va_int[k] = atan2(wi, wr)
            a = va_ref[k] + va_int[k] * RAD2DEG
            if a > 180.0:
                a -= 360.0
            elif a <= -180.0:
                a += 360.0
            va_int[k] = a
        _sqrt_inplace(n_int, vm_int)
        for b in range(nb):
            k = <int> bus_map[b]
            if k < 0:
                out[b] = NAN
                out[nb + b] = NAN
            else:
                out[b] = vm_int[k]
                out[nb + b] = va_int[k]

        # branch currents and powers at both ends (pu): gather, then element-wise
        for l in range(n_br):
            f = <int> br_from[l]
            t = <int> br_to[l]
            vf_re[l] = v_re[f]
            vf_im[l] = v_im[f]
            vt_re[l] = v_re[t]
            vt_im[l] = v_im[t]
        _branch_flows(n_br, vf_re, vf_im, vt_re, vt_im, yff_re, yff_im, yft_re, yft_im, ytf_re,
                      ytf_im, ytt_re, ytt_im, ifr_a, ifi_a, itr_a, iti_a, sfr_a, sfi_a, str_a,
                      sti_a)
        for l in range(n_br):
            ploss += sfr_a[l] + str_a[l]
            qloss += sfi_a[l] + sti_a[l]

        # current magnitudes at both ends [kA], element-wise (reuses the current arrays)
        _magnitudes(n_br, ifr_a, ifi_a, bi_from)
        _magnitudes(n_br, itr_a, iti_a, bi_to)
        if power_loading:  # apparent power at both ends [MVA], into the imaginary parts
            for l in range(n_br):
                ifi_a[l] = sqrt(sfr_a[l] * sfr_a[l] + sfi_a[l] * sfi_a[l]) * base
                iti_a[l] = sqrt(str_a[l] * str_a[l] + sti_a[l] * sti_a[l]) * base
        # every reported slot is written once; branches outside the solved network get the
        # fill values (zero power, NaN current at an islanded end)
        for r in range(nr):
            l = <int> rep_branch[r]
            if l < 0:
                out[o_load + r] = self.template[r]
                if flows:
                    out[o_fl + r] = 0.0
                    out[o_fl + nr + r] = 0.0
                    out[o_fl + 2 * nr + r] = 0.0
                    out[o_fl + 3 * nr + r] = 0.0
                    out[o_fl + 4 * nr + r] = self.template[nr + r]
                    out[o_fl + 5 * nr + r] = self.template[2 * nr + r]
                continue
            ia_f = ifr_a[l]
            ia_t = itr_a[l]
            ld_f = la_f[r] * ia_f
            ld_t = la_t[r] * ia_t
            if power_loading:
                ld_f += self.lb_f[r] * ifi_a[l]
                ld_t += self.lb_t[r] * iti_a[l]
            out[o_load + r] = ld_f if ld_f >= ld_t else ld_t
            if flows:
                out[o_fl + r] = sfr_a[l] * base
                out[o_fl + nr + r] = sfi_a[l] * base
                out[o_fl + 2 * nr + r] = str_a[l] * base
                out[o_fl + 3 * nr + r] = sti_a[l] * base
                out[o_fl + 4 * nr + r] = ia_f
                out[o_fl + 5 * nr + r] = ia_t

        # power supplied at each slack bus: injection into the network plus local load
        for k in range(self.n_slack):
            accr = 0.0
            acci = 0.0
            for e in range(self.s_ptr[k], self.s_ptr[k + 1]):
                b = <int> self.s_idx[e]
                accr += self.ys_re[e] * v_re[b] - self.ys_im[e] * v_im[b]
                acci += self.ys_re[e] * v_im[b] + self.ys_im[e] * v_re[b]
            vr = v_re[m + k]
            vi = v_im[m + k]
            self.eg_re[k] = (vr * accr + vi * acci + self.s_re[m + k]) * base
            self.eg_im[k] = (vi * accr - vr * acci + self.s_im[m + k]) * base
        for e in range(ne):
            k = <int> self.eg_slack[e]
            if k < 0:
                out[o_eg + e] = 0.0
                out[o_eg + ne + e] = 0.0
            else:
                out[o_eg + e] = self.eg_re[k]
                out[o_eg + ne + e] = self.eg_im[k]

        out[o_sc] = ploss * base
        out[o_sc + 1] = qloss * base
        out[o_sc + 2] = p_isl
        out[o_sc + 3] = q_isl
