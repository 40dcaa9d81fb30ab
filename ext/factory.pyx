"""A production line's timeline and step energies over one working window: compiled kernel.

:meth:`components.factory.model._LineMachines.run_window` draws the job slots of every machine
of a line with NumPy, then calls :func:`line_window` to

- lay each machine's timeline from the window's lead: off until the warm-up (or the end of a
  repair), idle warm-up, then the job slots (the slot carried over from the previous part of
  the window first), each ``idle gap -> processing -> repair -> set-up``;
- update the machine state: jobs done since the last set-up, and either the slot in progress at
  ``close_s`` (``continues``) or the end of a repair that outlasts the window;
- integrate each machine's energy and processing time (which drives compressed air) up to
  every step edge, exactly, since both are piecewise linear in time, and return their
  differences between consecutive edges.

The NumPy twin ``ext/factory_np.py`` does this for all machines at once and evaluates the
cumulative curves with one ``numpy.interp`` call over every machine's timeline laid side by side
(row ``i`` shifted by ``i * (span + 1)``). This kernel walks each row with the same
floating-point operations, in the same order (sequential cumulative sums, the shifted abscissae,
``numpy.interp``'s formula, including its step into the next row's first point), so both give
bit-identical results. Arrays are C-contiguous and read through their data pointers after a
check of type, shape, layout and (for outputs) writability.
"""

cimport numpy as cnp
from libc.math cimport INFINITY, isnan
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

cnp.import_array()


cdef inline void *_data(cnp.ndarray a, int typenum, Py_ssize_t rows, Py_ssize_t cols,
                        bint out, str name) except NULL:
    """Data pointer of ``a`` once it is a C-contiguous array of ``typenum`` with shape
    ``(rows,)`` (``cols < 0``) or ``(rows, cols)`` (and writable when ``out``); ``ValueError``
    naming the argument otherwise."""
    cdef int ndim = 1 if cols < 0 else 2
    if (cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != ndim
            or cnp.PyArray_DIM(a, 0) != rows or (ndim == 2 and cnp.PyArray_DIM(a, 1) != cols)
            or not cnp.PyArray_IS_C_CONTIGUOUS(a) or (out and not cnp.PyArray_ISWRITEABLE(a))):
        shape = (<object>rows,) if cols < 0 else (<object>rows, <object>cols)
        raise ValueError(f"{name}: needs a C-contiguous{' writable' if out else ''} array of "
                         f"{cnp.PyArray_DescrFromType(typenum)} with shape {shape}, got "
                         f"{a.dtype} with shape {(<object>a).shape}")
    return cnp.PyArray_DATA(a)


cdef inline double *_f64(cnp.ndarray a, str name, Py_ssize_t rows, Py_ssize_t cols=-1,
                         bint out=False) except NULL:
    return <double *>_data(a, cnp.NPY_FLOAT64, rows, cols, out, name)


cdef inline double _interp(double q, const double *x, const double *y, Py_ssize_t j,
                           double x_next, double y_next) noexcept nogil:
    """``numpy.interp`` at ``q`` with ``x[j] <= q < x_next`` (``x_next``, ``y_next``: the point
    after ``j``), ``x[j] != q`` [same units as ``y``]."""
    cdef double slope = (y_next - y[j]) / (x_next - x[j])
    cdef double r = slope * (q - x[j]) + y[j]
    if isnan(r):  # numpy's second try, from the right end of the interval
        r = slope * (q - x_next) + y_next
        if isnan(r) and y[j] == y_next:
            r = y[j]
    return r


def line_window(cnp.ndarray gap not None, cnp.ndarray proc not None,
                cnp.ndarray share not None, cnp.ndarray repair not None,
                cnp.ndarray setup not None, cnp.ndarray carry not None,
                cnp.ndarray carry_share not None, cnp.ndarray warm_start not None,
                cnp.ndarray job_start not None, cnp.ndarray idle_kw not None,
                cnp.ndarray setup_kw not None, cnp.ndarray rated_kw not None,
                cnp.ndarray setup_every not None, cnp.ndarray jobs_since_setup not None,
                cnp.ndarray down_until not None, double lead_s, double close_s,
                cnp.ndarray edges_s not None, bint continues):
    """Timeline of every machine of a line over one window part, its state, its step energies.

    See ``ext/factory_np.py`` for the parameters. Returns the machine energy [kW s] and the
    processing time [s] of each machine between consecutive edges, shape
    ``(n, len(edges_s) - 1)`` each.
    """
    cdef Py_ssize_t n = cnp.PyArray_DIM(proc, 0) if cnp.PyArray_NDIM(proc) == 2 else -1
    cdef Py_ssize_t n_jobs = cnp.PyArray_DIM(proc, 1) if cnp.PyArray_NDIM(proc) == 2 else -1
    if n < 0:
        raise ValueError("proc: needs a 2-d array (machines x jobs), got shape "
                         f"{(<object>proc).shape}")
    cdef const double *gap_ = _f64(gap, "gap", n, n_jobs)
    cdef const double *proc_ = _f64(proc, "proc", n, n_jobs)
    cdef const double *share_ = _f64(share, "share", n, n_jobs)
    cdef const double *repair_ = _f64(repair, "repair", n, n_jobs)
    cdef const double *setup_ = _f64(setup, "setup", n, n_jobs)
    cdef double *carry_ = _f64(carry, "carry", n, 4, True)
    cdef double *carry_share_ = _f64(carry_share, "carry_share", n, -1, True)
    cdef const double *warm_ = _f64(warm_start, "warm_start", n)
    cdef const double *job_ = _f64(job_start, "job_start", n)
    cdef const double *idle_kw_ = _f64(idle_kw, "idle_kw", n)
    cdef const double *setup_kw_ = _f64(setup_kw, "setup_kw", n)
    cdef const double *rated_ = _f64(rated_kw, "rated_kw", n)
    cdef const int64_t *every = <int64_t *>_data(setup_every, cnp.NPY_INT64, n, -1, False,
                                                 "setup_every")
    cdef int64_t *jobs = <int64_t *>_data(jobs_since_setup, cnp.NPY_INT64, n, -1, True,
                                          "jobs_since_setup")
    cdef double *down = _f64(down_until, "down_until", n, -1, True)
    if cnp.PyArray_NDIM(edges_s) != 1:
        raise ValueError(f"edges_s: needs a 1-d array, got shape {(<object>edges_s).shape}")
    cdef Py_ssize_t n_edges = cnp.PyArray_DIM(edges_s, 0)
    cdef const double *edges = _f64(edges_s, "edges_s", n_edges)
    cdef Py_ssize_t n_bins = n_edges - 1 if n_edges > 0 else 0
    cdef cnp.npy_intp dims[2]
    dims[0], dims[1] = n, n_bins
    cdef cnp.ndarray per_bin_m = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT64, 0)
    cdef cnp.ndarray per_bin_a = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT64, 0)
    cdef double *out_m = <double *>cnp.PyArray_DATA(per_bin_m)
    cdef double *out_a = <double *>cnp.PyArray_DATA(per_bin_a)

    cdef Py_ssize_t n_slots = n_jobs + 1  # slot 0: the rest carried over
    cdef Py_ssize_t n_t = 3 + 4 * n_slots  # timeline points: off, warm-up, 4 per slot, end
    cdef double *buf = <double *>malloc(4 * n_t * sizeof(double))
    if buf == NULL:
        raise MemoryError()
    cdef double *t = buf  # timeline from lead_s [s], absolute, then clipped and shifted
    cdef double *kw = buf + n_t  # power of each piece [kW]
    cdef double *e_m = buf + 2 * n_t  # cumulative machine energy at each point [kW s]
    cdef double *e_a = buf + 3 * n_t  # cumulative processing time at each point [s]
    cdef double span_s = close_s - lead_s
    # first point of every row after clipping and shifting (before the row's offset)
    cdef double t_first = (0.0 + lead_s if 0.0 + lead_s < close_s else close_s) - lead_s
    cdef Py_ssize_t i, s, p, c, e, j
    cdef double acc, busy, prev_busy, d, off, off_next, x_next = 0.0, q
    cdef double s_share, rest, lo, r_m, r_a, last_m, last_a, down_max
    cdef int64_t done
    cdef bint active, straddle
    try:
        with nogil:
            for i in range(n):
                active = job_[i] < close_s
                # timeline: t[c], t[c + 1] are start and end of piece c (a sequential sum)
                t[0] = 0.0 + lead_s
                acc = warm_[i] - lead_s
                t[1] = acc + lead_s
                acc = acc + (job_[i] - warm_[i])
                t[2] = acc + lead_s
                kw[0] = 0.0
                kw[1] = idle_kw_[i]
                s_share = carry_share_[i]
                for s in range(n_slots):
                    c = 2 + 4 * s
                    for p in range(4):
                        if s == 0:
                            d = carry_[4 * i + p]
                        else:
                            if p == 0:
                                d = gap_[i * n_jobs + s - 1]
                            elif p == 1:
                                d = proc_[i * n_jobs + s - 1]
                            elif p == 2:
                                d = repair_[i * n_jobs + s - 1]
                            else:
                                d = setup_[i * n_jobs + s - 1]
                        acc = acc + d
                        t[c + p + 1] = acc + lead_s
                    kw[c] = idle_kw_[i]
                    kw[c + 1] = (s_share if s == 0 else share_[i * n_jobs + s - 1]) * rated_[i]
                    kw[c + 2] = 0.0
                    kw[c + 3] = setup_kw_[i]

                # state carried into the next window (or the next part of this one)
                done = 0
                if active:
                    for s in range(n_slots):
                        d = carry_[4 * i + 1] if s == 0 else proc_[i * n_jobs + s - 1]
                        if t[4 + 4 * s] <= close_s and d > 0:
                            done += 1
                jobs[i] = (jobs[i] + done) % every[i]
                if continues:
                    # at most one slot straddles close_s: the timeline is non-decreasing
                    for s in range(n_slots):
                        c = 2 + 4 * s
                        if t[c] < close_s and t[c + 4] > close_s:
                            for p in range(4):
                                lo = t[c + p] if t[c + p] > close_s else close_s
                                rest = t[c + p + 1] - lo
                                carry_[4 * i + p] = rest if rest > 0.0 else 0.0
                            carry_share_[i] = s_share if s == 0 else share_[i * n_jobs + s - 1]
                            break
                    else:
                        for p in range(4):
                            carry_[4 * i + p] = 0.0
                        carry_share_[i] = 0.0
                else:
                    for p in range(4):
                        carry_[4 * i + p] = 0.0
                    carry_share_[i] = 0.0
                    straddle = False
                    down_max = -INFINITY
                    if active:
                        for s in range(n_slots):
                            c = 4 + 4 * s
                            if t[c] < close_s and t[c + 1] > close_s:
                                straddle = True
                                if t[c + 1] > down_max:
                                    down_max = t[c + 1]
                    if straddle:
                        down[i] = down_max

                # cumulative energy and processing time at every point, on the clipped timeline
                for c in range(n_t):
                    t[c] = (t[c] if t[c] < close_s else close_s) - lead_s
                e_m[0] = 0.0
                e_a[0] = e_a[1] = e_a[2] = 0.0
                acc = 0.0
                busy = 0.0
                prev_busy = 0.0
                for c in range(n_t - 1):
                    d = t[c + 1] - t[c]
                    acc = acc + kw[c] * d
                    e_m[c + 1] = acc
                for s in range(n_slots):
                    c = 3 + 4 * s
                    busy = busy + (t[c + 1] - t[c])
                    e_a[c] = prev_busy
                    e_a[c + 1] = e_a[c + 2] = e_a[c + 3] = busy
                    prev_busy = busy

                # numpy.interp over the rows laid side by side: shift by the row's offset
                off = <double>i * (span_s + 1.0)
                for c in range(n_t):
                    t[c] = t[c] + off
                if i + 1 < n:
                    off_next = <double>(i + 1) * (span_s + 1.0)
                    x_next = t_first + off_next
                j = 0
                last_m = last_a = 0.0
                for e in range(n_edges):
                    q = edges[e] - lead_s
                    q = q if q > 0.0 else 0.0
                    q = (q if q < span_s else span_s) + off
                    while j + 1 < n_t and t[j + 1] <= q:
                        j += 1
                    if t[j] == q or (j + 1 == n_t and i + 1 == n):
                        r_m, r_a = e_m[j], e_a[j]
                    elif j + 1 < n_t:
                        r_m = _interp(q, t, e_m, j, t[j + 1], e_m[j + 1])
                        r_a = _interp(q, t, e_a, j, t[j + 1], e_a[j + 1])
                    else:  # past the row's last point: towards the next row's first one
                        r_m = _interp(q, t, e_m, j, x_next, 0.0)
                        r_a = _interp(q, t, e_a, j, x_next, 0.0)
                    if e > 0:
                        out_m[i * n_bins + e - 1] = r_m - last_m
                        out_a[i * n_bins + e - 1] = r_a - last_a
                    last_m, last_a = r_m, r_a
    finally:
        free(buf)
    return per_bin_m, per_bin_a


cdef inline double _max(double a, double b) noexcept nogil:
    """``numpy.maximum`` of two scalars: NaN propagates, a tie gives ``b`` (zeros' signs)."""
    return a if (a > b or a != a) else b


cdef inline double _min(double a, double b) noexcept nogil:
    """``numpy.minimum`` of two scalars: NaN propagates, a tie gives ``b`` (zeros' signs)."""
    return a if (a < b or a != a) else b


def shed_step(cnp.ndarray energy not None, double step_s, cnp.ndarray request,
              cnp.ndarray out not None):
    """Step means of every factory with a shedding request applied, into ``out``.

    See ``ext/factory_np.py`` for the parameters. Each value is the one the twin's NumPy
    operations give, bit for bit (IEEE division and subtraction, ``numpy.maximum`` and
    ``numpy.minimum`` semantics). Returns whether every value written is finite.
    """
    cdef Py_ssize_t n = cnp.PyArray_DIM(energy, 0) if cnp.PyArray_NDIM(energy) == 2 else -1
    if n < 0:
        raise ValueError("energy: needs a 2-d array (factories x channels), got shape "
                         f"{(<object>energy).shape}")
    cdef const double *e = _f64(energy, "energy", n, 5)
    cdef const double *r = NULL
    if request is not None:
        r = _f64(request, "request", n)
    cdef double *o = _f64(out, "out", 5, n, True)
    cdef double *p_out = o
    cdef double *q_out = o + n
    cdef double *crit_out = o + 2 * n
    cdef double *defer_out = o + 3 * n
    cdef double *applied_out = o + 4 * n
    cdef Py_ssize_t i
    cdef double p, q, crit, sheddable, applied, ratio, flexible
    cdef bint any_applied = False, finite = True
    with nogil:
        for i in range(n):
            p = e[5 * i] / step_s
            crit = e[5 * i + 2] / step_s
            sheddable = _max(p - crit, 0.0)
            applied = _min(_max(r[i] if r != NULL else 0.0, 0.0), sheddable)
            if applied != 0.0:  # also NaN, as numpy's any() counts it
                any_applied = True
            p_out[i] = p
            crit_out[i] = crit
            applied_out[i] = applied
        for i in range(n):
            p = p_out[i]
            crit = crit_out[i]
            q = e[5 * i + 1] / step_s
            sheddable = _max(p - crit, 0.0)
            if any_applied:  # one factory sheds: the shedding formulas apply to all
                applied = applied_out[i]
                ratio = (q - e[5 * i + 3] / step_s) / sheddable if sheddable > 0.0 else 0.0
                p = p - applied
                q = q - applied * ratio
                flexible = _max(p - crit, 0.0)
            else:
                flexible = sheddable
            p_out[i] = p
            q_out[i] = q
            defer_out[i] = _min(_max(e[5 * i + 4] / step_s, 0.0), flexible)
        for i in range(5 * n):
            if not o[i] - o[i] == 0.0:  # NaN for a NaN or an infinite value
                finite = False
    return finite
