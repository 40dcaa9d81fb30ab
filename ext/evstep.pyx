"""Per-step physics and trip events of the EV fleet: compiled kernel.

The passes that :class:`components.ev.model.EVFleet` runs every step, written as loops over
the EVs concerned instead of a few dozen NumPy operations on small gathered arrays:

- ``limits_cc`` / ``limits_cv``: the mean power limits over the next step (the exact CC-CV
  integral of :func:`components.ev.model.max_charge_energy_kwh`, and the V2G room). EVs that
  reach the constant-voltage phase within the step need ``exp``; ``limits_cc`` lists them with
  the exponent, the caller evaluates ``numpy.exp`` on that list (so both kernels and the
  reference function share one ``exp``), and ``limits_cv`` finishes them. EVs so full that
  not even the energy up to the end of charge exceeds the tolerance get ``p_max = 0`` at once:
  the clipped integral cannot exceed that bound, whatever ``exp`` gives.
- ``advance``: apply the setpoints (clipped to the limits, counted when clipped) or the
  uncontrolled maximum, update the batteries and energy accounts, feed the SoC changes to the
  ageing model's turning-point detection, sum the power per site and refresh ``charging``.
- ``view_cc``: ``limits_cc`` of the plugged EVs and what a coordinator sees of them, in one
  pass (the limits go to the caller's arrays and to the view's own).
- ``serve_queue``: plug waiting EVs into free chargers (first come, first served), then let
  EVs whose patience ran out give up; ``plugged`` lists the EVs plugged in.
- ``depart``, ``arrive``, ``settle``, ``next_trip``: the trip events at a step boundary (leave
  on the next leg, arrive and park, decide whether to wait for a charger, plan the energy wanted
  at the next departure), keeping each EV's next event for ``due``. ``depart`` records the
  SoC drop as the ageing model's ``observe`` does; the caller sums the unmet energies with
  NumPy (its pairwise sum).
- ``append_legs``: file the legs of a day's trip chains in each EV's ring of planned legs,
  keeping a stay of at least one step between them.
- ``due``: the EVs leaving and arriving at a step, from each EV's next event, in the order
  their legs were filed.
- ``rainflow``: the ageing model's cycle counting over the turning points of each EV's SoC;
  it lists the cycles it closes, the caller evaluates their stress with NumPy (whose ``exp``
  and ``pow`` differ from the C library's in the last bit) and adds them up.

``advance``, ``view_cc`` and ``limits_cv`` also tell whether every value they wrote is finite,
so the adapter sends them on without another pass over them (and names a bad one if not).

Every value is computed with the same floating-point operations, in the same order, as the
NumPy twin ``ext/evstep_np.py`` (and the model's vectorised reference code), so results are
bit-identical. Arrays are C-contiguous; boolean arrays are passed as ``uint8`` views; outputs
are written into arrays the caller owns. The kernels run several times per step with up to 30
arrays each, so an array is read through its data pointer after a check of its type, shape,
layout and (for outputs) writability, which costs far less per call than a typed memoryview.
"""

cimport numpy as cnp
from libc.math cimport fabs, isfinite, isinf, isnan
from libc.stdint cimport int8_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memcpy, memmove

from ext.arrays cimport array_data

cnp.import_array()


cdef inline double *_f64(cnp.ndarray a, str name, int ndim=1, bint out=False) except NULL:
    return <double *>array_data(a, cnp.NPY_FLOAT64, ndim, out, None, name)


cdef inline int64_t *_i64(cnp.ndarray a, str name, int ndim=1, bint out=False) except NULL:
    return <int64_t *>array_data(a, cnp.NPY_INT64, ndim, out, None, name)


cdef inline uint8_t *_u8(cnp.ndarray a, str name, bint out=False) except NULL:
    return <uint8_t *>array_data(a, cnp.NPY_UINT8, 1, out, None, name)


cdef struct Turns:
    # the ageing model's turning-point state (see ``_turn``)
    int8_t *last_dir
    double *extreme
    double *tp_buf
    int64_t *tp_n
    Py_ssize_t width  # turning points buffered per EV


cdef int _turns(Turns *t, cnp.ndarray last_dir, cnp.ndarray extreme, cnp.ndarray tp_buf,
                cnp.ndarray tp_n) except -1:
    t.last_dir = <int8_t *>array_data(last_dir, cnp.NPY_INT8, 1, True, None, "last_dir")
    t.extreme = _f64(extreme, "extreme", 1, True)
    t.tp_buf = _f64(tp_buf, "tp_buf", 2, True)
    t.tp_n = _i64(tp_n, "tp_n", 1, True)
    t.width = cnp.PyArray_DIM(tp_buf, 1)
    return 0


cdef inline bint _turn(Py_ssize_t j, double soc_old, double soc_new, Turns *t) noexcept nogil:
    """The ageing model's turning-point record (``ageing.observe``) for EV ``j`` moving from
    ``soc_old`` to ``soc_new``; True when its buffer is full and must be flushed."""
    cdef double delta = soc_new - soc_old
    cdef int8_t direction
    cdef int64_t n
    cdef bint full = False
    if fabs(delta) > 1e-9:
        direction = 1 if delta > 0 else -1
        if t.last_dir[j] != 0 and direction != t.last_dir[j]:
            n = t.tp_n[j]
            t.tp_buf[j * t.width + n] = t.extreme[j]
            t.tp_n[j] = n + 1
            full = n + 1 >= t.width
        t.last_dir[j] = direction
        t.extreme[j] = soc_new
    return full


cdef struct View:
    # what ``view_cc`` reads and writes besides the limits
    const int64_t *site
    const double *req_kwh
    const int64_t *next_dep
    int64_t step_s
    int64_t *o_ids
    int64_t *o_site
    double *o_soc
    double *o_need
    double *o_dep
    double *o_p_max
    double *o_p_min
    uint8_t *o_v2g
    bint finite  # every value written is (p_max of EVs entering the CV phase aside)


cdef Py_ssize_t _limits_cc(const int64_t *ids_, Py_ssize_t n, const double *e_,
                           const double *cap_, const double *ch_lim, const double *accept,
                           const double *dis_lim, double eta_c, double eta_d, double soc_cv,
                           double soc_max, double end_share, double min_soc_v2g, double dt_h,
                           double full_tol_kwh, double *p_max_, double *p_min_, int64_t *pos,
                           double *arg, double *start, View *v) noexcept nogil:
    """The loop of ``limits_cc``, and of ``view_cc`` unless ``v`` is NULL; returns ``n_cv``."""
    cdef Py_ssize_t i, j, n_cv = 0
    cdef double width = soc_max - soc_cv
    cdef double soc_full = soc_max - end_share * width
    cdef double e, cap, soc0, p_batt, rate, soc_x, soc1, t_cc, k_cv, hi, e_in, room, acc
    cdef double need, dep_s
    cdef bint finite = True
    for i in range(n):
        j = ids_[i]
        e = e_[j]
        cap = cap_[j]
        acc = accept[j]
        soc0 = e / cap
        p_batt = ch_lim[j] * eta_c
        if not p_batt < acc:
            p_batt = acc
        rate = p_batt / cap
        soc_x = soc_max - p_batt * width / acc
        soc1 = soc0 + rate * dt_h
        hi = soc0 if soc0 > soc_full else soc_full
        if soc1 > soc_x:
            if not (hi - soc0) * cap / eta_c > full_tol_kwh:
                # full: the clipped integral cannot exceed this bound, so p_max is 0 without exp
                p_max_[i] = 0.0
            else:
                if rate > 0:
                    t_cc = (soc_x - soc0) / rate
                    if not t_cc > 0.0:
                        t_cc = 0.0
                else:
                    t_cc = dt_h
                k_cv = acc / (cap * width)
                pos[n_cv] = i
                arg[n_cv] = -k_cv * (dt_h - t_cc)
                start[n_cv] = soc0 if soc0 > soc_x else soc_x
                n_cv += 1
        else:
            if soc1 < soc0:
                soc1 = soc0
            if soc1 > hi:
                soc1 = hi
            e_in = (soc1 - soc0) * cap / eta_c
            p_max_[i] = (e_in if e_in > full_tol_kwh else 0.0) / dt_h
        room = e - min_soc_v2g * cap
        if not room > 0.0:
            room = 0.0
        room = room * eta_d / dt_h
        p_min_[i] = -(dis_lim[j] if dis_lim[j] < room else room)
        if v != NULL:
            v.o_ids[i] = j
            v.o_p_max[i] = p_max_[i]  # (rewritten by limits_cv for EVs entering the CV phase)
            v.o_p_min[i] = p_min_[i]
            v.o_site[i] = v.site[j]
            v.o_soc[i] = soc0
            need = v.req_kwh[j] - e
            if not need > 0.0:
                need = 0.0
            v.o_need[i] = need
            dep_s = <double>(v.next_dep[j] * v.step_s)
            v.o_dep[i] = dep_s
            v.o_v2g[i] = dis_lim[j] > 0
            if not (isfinite(soc0) and isfinite(need) and isfinite(dep_s)
                    and isfinite(p_min_[i])):
                finite = False
            if not ((n_cv > 0 and pos[n_cv - 1] == i) or isfinite(p_max_[i])):
                finite = False  # (p_max of an EV entering the CV phase is written later)
    if v != NULL:
        v.finite = finite
    return n_cv


cdef int _long_enough(str kernel, Py_ssize_t n, cnp.ndarray p_max, cnp.ndarray p_min,
                      cnp.ndarray cv_pos, cnp.ndarray cv_arg, cnp.ndarray cv_start) except -1:
    """``ValueError`` unless the outputs of ``_limits_cc`` hold ``n`` values each."""
    if (cnp.PyArray_DIM(p_max, 0) < n or cnp.PyArray_DIM(p_min, 0) < n
            or cnp.PyArray_DIM(cv_pos, 0) < n or cnp.PyArray_DIM(cv_arg, 0) < n
            or cnp.PyArray_DIM(cv_start, 0) < n):
        raise ValueError(f"{kernel}: output arrays shorter than ids")
    return 0


def limits_cc(cnp.ndarray ids not None, cnp.ndarray e_kwh not None,
              cnp.ndarray cap_kwh not None, cnp.ndarray p_ch_lim not None,
              cnp.ndarray accept_kw not None, cnp.ndarray p_dis_lim not None, double eta_c,
              double eta_d, double soc_cv, double soc_max, double end_share, double min_soc_v2g,
              double dt_h, double full_tol_kwh, cnp.ndarray p_max not None,
              cnp.ndarray p_min not None, cnp.ndarray cv_pos not None,
              cnp.ndarray cv_arg not None, cnp.ndarray cv_start not None):
    """Power limits of EVs ``ids`` [kW]; EVs entering the CV phase are listed, not finished.

    Writes ``p_max[i]`` (except for listed EVs) and ``p_min[i]`` for ``ids[i]``. Listed are the
    EVs entering the CV phase that are not full (see the module docstring); for the ``n_cv``
    EVs returned, ``cv_pos[j]`` is the position ``i``, ``cv_arg[j]`` the exponent
    ``-k_cv * t_cv`` and ``cv_start[j]`` the SoC where the CV phase starts [-].
    """
    cdef Py_ssize_t n = cnp.PyArray_DIM(ids, 0)
    cdef const int64_t *ids_ = _i64(ids, "ids")
    cdef const double *e_ = _f64(e_kwh, "e_kwh")
    cdef const double *cap_ = _f64(cap_kwh, "cap_kwh")
    cdef const double *ch_lim = _f64(p_ch_lim, "p_ch_lim")
    cdef const double *accept = _f64(accept_kw, "accept_kw")
    cdef const double *dis_lim = _f64(p_dis_lim, "p_dis_lim")
    cdef double *p_max_ = _f64(p_max, "p_max", 1, True)
    cdef double *p_min_ = _f64(p_min, "p_min", 1, True)
    cdef int64_t *pos = _i64(cv_pos, "cv_pos", 1, True)
    cdef double *arg = _f64(cv_arg, "cv_arg", 1, True)
    cdef double *start = _f64(cv_start, "cv_start", 1, True)
    _long_enough("limits_cc", n, p_max, p_min, cv_pos, cv_arg, cv_start)
    return _limits_cc(ids_, n, e_, cap_, ch_lim, accept, dis_lim, eta_c, eta_d, soc_cv, soc_max,
                      end_share, min_soc_v2g, dt_h, full_tol_kwh, p_max_, p_min_, pos, arg,
                      start, NULL)


def limits_cv(Py_ssize_t n_cv, cnp.ndarray cv_pos not None, cnp.ndarray cv_exp not None,
              cnp.ndarray cv_start not None, cnp.ndarray ids not None,
              cnp.ndarray e_kwh not None, cnp.ndarray cap_kwh not None, double eta_c,
              double soc_cv, double soc_max, double end_share, double dt_h, double full_tol_kwh,
              cnp.ndarray p_max not None, cnp.ndarray p_max_copy not None):
    """Finish ``p_max`` of the EVs listed by ``limits_cc``; ``cv_exp = exp(cv_arg)``. The same
    values go to ``p_max_copy`` (which may be ``p_max``). Returns whether every value written
    is finite."""
    cdef const int64_t *pos = _i64(cv_pos, "cv_pos")
    cdef const double *exp_ = _f64(cv_exp, "cv_exp")
    cdef const double *start = _f64(cv_start, "cv_start")
    cdef const int64_t *ids_ = _i64(ids, "ids")
    cdef const double *e_ = _f64(e_kwh, "e_kwh")
    cdef const double *cap_ = _f64(cap_kwh, "cap_kwh")
    cdef double *p_max_ = _f64(p_max, "p_max", 1, True)
    cdef double *p_copy = _f64(p_max_copy, "p_max_copy", 1, True)
    cdef Py_ssize_t k, i, j
    cdef double width = soc_max - soc_cv
    cdef double soc_full = soc_max - end_share * width
    cdef double cap, soc0, soc1, hi, e_in, p
    cdef bint finite = True
    for k in range(n_cv):
        i = pos[k]
        j = ids_[i]
        cap = cap_[j]
        soc0 = e_[j] / cap
        soc1 = soc_max - (soc_max - start[k]) * exp_[k]
        hi = soc0 if soc0 > soc_full else soc_full
        if soc1 < soc0:
            soc1 = soc0
        if soc1 > hi:
            soc1 = hi
        e_in = (soc1 - soc0) * cap / eta_c
        p = (e_in if e_in > full_tol_kwh else 0.0) / dt_h
        p_max_[i] = p
        p_copy[i] = p
        finite &= isfinite(p)
    return finite


def advance(cnp.ndarray ids not None, cnp.ndarray p_set not None, bint controlled,
            cnp.ndarray plug not None, cnp.ndarray p_max not None, cnp.ndarray p_min not None,
            cnp.ndarray e_kwh not None, cnp.ndarray cap_kwh not None,
            cnp.ndarray charged_kwh not None, cnp.ndarray discharged_kwh not None,
            cnp.ndarray site not None, cnp.ndarray p_site_kw not None,
            cnp.ndarray last_dir not None, cnp.ndarray extreme not None,
            cnp.ndarray tp_buf not None, cnp.ndarray tp_n not None,
            cnp.ndarray charging not None, double dt_h, double eta_c, double eta_d,
            double soc_full, double full_tol_kwh, cnp.ndarray ch_kw not None,
            cnp.ndarray dis_kw not None, cnp.ndarray ch_site_kw not None,
            cnp.ndarray dis_site_kw not None, double q_per_p, cnp.ndarray q_site_kvar not None,
            cnp.ndarray e_sum_kwh not None):
    """One step of EVs ``ids`` (the plugged EVs when ``controlled``, else the charging ones).

    ``p_set`` is over all EVs (NaN = uncontrolled) when ``controlled``; otherwise every EV draws
    ``p_max``. Updates the battery, accounts, turning points, ``charging`` in place; adds the
    power of each moving EV to ``p_site_kw`` and its charge and discharge power to
    ``ch_site_kw`` / ``dis_site_kw`` (all zeroed by the caller), lists its charge and
    discharge power in ``ch_kw`` / ``dis_kw`` in ``ids`` order, sets ``q_site_kvar`` to
    ``p_site_kw * q_per_p`` and adds the energy of every EV after the step to ``e_sum_kwh``
    (over all EVs, as ``plug``). Returns ``(n_moving, n_clamped, flush, finite, n_discharging)``:
    ``flush`` is true when a turning-point buffer is full, ``finite`` when every value of the
    four site arrays is; ``n_discharging`` of the moving EVs discharge (the others charge). Or
    ``None`` (nothing changed) when ``controlled`` and a setpoint is infinite.
    """
    cdef const int64_t *ids_ = _i64(ids, "ids")
    cdef const double *p_set_ = _f64(p_set, "p_set")
    cdef const int64_t *plug_ = _i64(plug, "plug")
    cdef const double *p_max_ = _f64(p_max, "p_max")
    cdef const double *p_min_ = _f64(p_min, "p_min")
    cdef double *e_ = _f64(e_kwh, "e_kwh", 1, True)
    cdef const double *cap_ = _f64(cap_kwh, "cap_kwh")
    cdef double *charged = _f64(charged_kwh, "charged_kwh", 1, True)
    cdef double *discharged = _f64(discharged_kwh, "discharged_kwh", 1, True)
    cdef const int64_t *site_ = _i64(site, "site")
    cdef double *p_site = _f64(p_site_kw, "p_site_kw", 1, True)
    cdef uint8_t *charging_ = _u8(charging, "charging", True)
    cdef double *ch_ = _f64(ch_kw, "ch_kw", 1, True)
    cdef double *dis_ = _f64(dis_kw, "dis_kw", 1, True)
    cdef double *ch_site = _f64(ch_site_kw, "ch_site_kw", 1, True)
    cdef double *dis_site = _f64(dis_site_kw, "dis_site_kw", 1, True)
    cdef double *q_site = _f64(q_site_kvar, "q_site_kvar", 1, True)
    cdef double *e_sum = _f64(e_sum_kwh, "e_sum_kwh", 1, True)
    cdef Turns turns
    _turns(&turns, last_dir, extreme, tp_buf, tp_n)
    cdef Py_ssize_t i, j, n = cnp.PyArray_DIM(ids, 0), n_ev = cnp.PyArray_DIM(plug, 0)
    cdef Py_ssize_t m = 0, clamped = 0, s, n_sites = cnp.PyArray_DIM(p_site_kw, 0), n_dis = 0
    cdef bint flush = False, finite = True
    if (cnp.PyArray_DIM(ch_site_kw, 0) != n_sites or cnp.PyArray_DIM(dis_site_kw, 0) != n_sites
            or cnp.PyArray_DIM(q_site_kvar, 0) != n_sites):
        raise ValueError("advance: the site arrays need the length of p_site_kw")
    if cnp.PyArray_DIM(e_kwh, 0) != n_ev or cnp.PyArray_DIM(e_sum_kwh, 0) != n_ev:
        raise ValueError("advance: e_kwh and e_sum_kwh need one value per EV, as plug")
    cdef double p, ps, ch, dis, e_old, e_new, cap, v
    cdef double c_ch = dt_h * eta_c, c_dis = dt_h / eta_d
    if controlled:
        if cnp.PyArray_DIM(p_set, 0) != n_ev:
            raise ValueError(f"advance: p_set needs one value per EV ({n_ev}), "
                             f"got {cnp.PyArray_DIM(p_set, 0)}")
        for j in range(n_ev):
            v = p_set_[j]
            if isinf(v):
                return None
            if plug_[j] < 0 and not isnan(v) and fabs(v) > 1e-6:
                clamped += 1  # setpoints for EVs that are not plugged: ignored, counted
    for i in range(n):
        j = ids_[i]
        p = p_max_[i]
        if controlled:
            ps = p_set_[j]
            if not isnan(ps):
                p = ps if ps > p_min_[i] else p_min_[i]
                if p > p_max_[i]:
                    p = p_max_[i]
                if fabs(p - ps) > 1e-6:
                    clamped += 1
        cap = cap_[j]
        if p != 0.0:
            e_old = e_[j]
            ch = p if p > 0.0 else 0.0
            dis = -p if -p > 0.0 else 0.0
            e_new = e_old + ch * c_ch - dis * c_dis
            e_[j] = e_new
            charged[j] += ch * dt_h
            discharged[j] += dis * dt_h
            p_site[site_[j]] += p
            ch_site[site_[j]] += ch
            dis_site[site_[j]] += dis
            ch_[m] = ch
            dis_[m] = dis
            m += 1
            n_dis += dis > 0.0
            if _turn(j, e_old / cap, e_new / cap, &turns):
                flush = True
            if not controlled and e_new >= soc_full * cap - full_tol_kwh:
                charging_[j] = 0
        if controlled:
            charging_[j] = e_[j] < soc_full * cap - full_tol_kwh
    for j in range(n_ev):
        e_sum[j] += e_[j]
    for s in range(n_sites):
        q_site[s] = p_site[s] * q_per_p
        finite &= (isfinite(p_site[s]) and isfinite(q_site[s]) and isfinite(ch_site[s])
                   and isfinite(dis_site[s]))
    return m, clamped, flush, finite, n_dis


def view_cc(cnp.ndarray ids not None, cnp.ndarray e_kwh not None, cnp.ndarray cap_kwh not None,
            cnp.ndarray p_ch_lim not None, cnp.ndarray accept_kw not None,
            cnp.ndarray p_dis_lim not None, double eta_c, double eta_d, double soc_cv,
            double soc_max, double end_share, double min_soc_v2g, double dt_h,
            double full_tol_kwh, cnp.ndarray p_max not None, cnp.ndarray p_min not None,
            cnp.ndarray cv_pos not None, cnp.ndarray cv_arg not None,
            cnp.ndarray cv_start not None, cnp.ndarray site not None,
            cnp.ndarray req_kwh not None, cnp.ndarray next_dep not None, int64_t step_s,
            cnp.ndarray out_ids not None, cnp.ndarray out_site not None,
            cnp.ndarray out_soc not None, cnp.ndarray out_need_kwh not None,
            cnp.ndarray out_departure_s not None, cnp.ndarray out_p_max not None,
            cnp.ndarray out_p_min not None, cnp.ndarray out_v2g not None):
    """``limits_cc`` of EVs ``ids`` and what a coordinator sees of them, in arrays of its own:
    the EVs, their site, SoC, energy need, departure time [s], the limits again and the V2G
    flag. Returns ``(n_cv, finite)``: ``finite`` tells whether every value written is
    (``p_max`` of the ``n_cv`` listed EVs is written by ``limits_cv``, to both copies)."""
    cdef Py_ssize_t n = cnp.PyArray_DIM(ids, 0)
    cdef const int64_t *ids_ = _i64(ids, "ids")
    cdef const double *e_ = _f64(e_kwh, "e_kwh")
    cdef const double *cap_ = _f64(cap_kwh, "cap_kwh")
    cdef const double *ch_lim = _f64(p_ch_lim, "p_ch_lim")
    cdef const double *accept = _f64(accept_kw, "accept_kw")
    cdef const double *dis_lim = _f64(p_dis_lim, "p_dis_lim")
    cdef double *p_max_ = _f64(p_max, "p_max", 1, True)
    cdef double *p_min_ = _f64(p_min, "p_min", 1, True)
    cdef int64_t *pos = _i64(cv_pos, "cv_pos", 1, True)
    cdef double *arg = _f64(cv_arg, "cv_arg", 1, True)
    cdef double *start = _f64(cv_start, "cv_start", 1, True)
    cdef View v
    v.site = _i64(site, "site")
    v.req_kwh = _f64(req_kwh, "req_kwh")
    v.next_dep = _i64(next_dep, "next_dep")
    v.step_s = step_s
    v.o_ids = _i64(out_ids, "out_ids", 1, True)
    v.o_site = _i64(out_site, "out_site", 1, True)
    v.o_soc = _f64(out_soc, "out_soc", 1, True)
    v.o_need = _f64(out_need_kwh, "out_need_kwh", 1, True)
    v.o_dep = _f64(out_departure_s, "out_departure_s", 1, True)
    v.o_p_max = _f64(out_p_max, "out_p_max", 1, True)
    v.o_p_min = _f64(out_p_min, "out_p_min", 1, True)
    v.o_v2g = _u8(out_v2g, "out_v2g", True)
    _long_enough("view_cc", n, p_max, p_min, cv_pos, cv_arg, cv_start)
    cdef cnp.ndarray a
    for a in (out_ids, out_site, out_soc, out_need_kwh, out_departure_s, out_p_max, out_p_min,
              out_v2g):
        if cnp.PyArray_DIM(a, 0) < n:
            raise ValueError("view_cc: output arrays shorter than ids")
    n_cv = _limits_cc(ids_, n, e_, cap_, ch_lim, accept, dis_lim, eta_c, eta_d, soc_cv, soc_max,
                      end_share, min_soc_v2g, dt_h, full_tol_kwh, p_max_, p_min_, pos, arg,
                      start, &v)
    return n_cv, v.finite


cdef Py_ssize_t _set_bytes(const uint8_t *a, Py_ssize_t n, int64_t *out) noexcept nogil:
    """Write the indices of the non-zero bytes of ``a`` to ``out``, in increasing order; return
    their number. Reads eight bytes at a time: few are set (EVs waiting for a charger)."""
    cdef Py_ssize_t i, j = 0, m = 0
    cdef uint64_t word
    while j + 8 <= n:
        memcpy(&word, a + j, 8)
        if word:
            for i in range(j, j + 8):
                out[m] = i
                m += a[i] != 0
        j += 8
    for i in range(j, n):
        out[m] = i
        m += a[i] != 0
    return m


cdef struct Waiter:
    int64_t since
    int64_t ev


cdef int _by_arrival(const void *a, const void *b) noexcept nogil:
    cdef const Waiter *x = <const Waiter *>a
    cdef const Waiter *y = <const Waiter *>b
    if x.since != y.since:
        return -1 if x.since < y.since else 1
    return -1 if x.ev < y.ev else (1 if x.ev > y.ev else 0)


def serve_queue(int64_t k, cnp.ndarray waiting not None, cnp.ndarray wait_since not None,
                cnp.ndarray wait_until not None, cnp.ndarray site not None,
                cnp.ndarray site_kind not None, cnp.ndarray pref not None,
                cnp.ndarray n_chargers not None, cnp.ndarray used not None,
                cnp.ndarray plug not None, cnp.ndarray charging not None,
                cnp.ndarray e_kwh not None, cnp.ndarray cap_kwh not None, double soc_full,
                double full_tol_kwh, cnp.ndarray ac_kw not None, cnp.ndarray dc_kw not None,
                cnp.ndarray charger_kw not None, cnp.ndarray charger_dis_kw not None,
                cnp.ndarray v2g_user not None, cnp.ndarray v2g_kw not None,
                cnp.ndarray p_ch_lim not None, cnp.ndarray p_dis_lim not None,
                int64_t ac_max_type, int64_t v2g_type):
    """Plug waiting EVs into free compatible chargers, first come first served; then let EVs
    whose patience ran out (``wait_until <= k``) give up.

    In round ``r`` every EV still waiting (in order of arrival, then EV index) tries its
    ``r``-th preferred charger type at its site and takes one if free. Returns ``(n_plugged,
    n_expired, n_waiting)``.
    """
    cdef uint8_t *waiting_ = _u8(waiting, "waiting", True)
    cdef const int64_t *since = _i64(wait_since, "wait_since")
    cdef const int64_t *until = _i64(wait_until, "wait_until")
    cdef const int64_t *site_ = _i64(site, "site")
    cdef const int64_t *kind_ = _i64(site_kind, "site_kind")
    cdef const int64_t *pref_ = _i64(pref, "pref", 3)
    cdef const int64_t *n_ch = _i64(n_chargers, "n_chargers", 2)
    cdef int64_t *used_ = _i64(used, "used", 2, True)
    cdef int64_t *plug_ = _i64(plug, "plug", 1, True)
    cdef uint8_t *charging_ = _u8(charging, "charging", True)
    cdef const double *e_ = _f64(e_kwh, "e_kwh")
    cdef const double *cap_ = _f64(cap_kwh, "cap_kwh")
    cdef const double *ac_ = _f64(ac_kw, "ac_kw")
    cdef const double *dc_ = _f64(dc_kw, "dc_kw")
    cdef const double *ch_kw = _f64(charger_kw, "charger_kw", 2)
    cdef const double *dis_kw = _f64(charger_dis_kw, "charger_dis_kw", 2)
    cdef const uint8_t *v2g_user_ = _u8(v2g_user, "v2g_user")
    cdef const double *v2g_kw_ = _f64(v2g_kw, "v2g_kw")
    cdef double *ch_lim = _f64(p_ch_lim, "p_ch_lim", 1, True)
    cdef double *dis_lim = _f64(p_dis_lim, "p_dis_lim", 1, True)
    cdef Py_ssize_t n_ev = cnp.PyArray_DIM(waiting, 0), n_sites = cnp.PyArray_DIM(n_chargers, 0)
    cdef Py_ssize_t n_types = cnp.PyArray_DIM(n_chargers, 1)
    cdef Py_ssize_t n_kinds = cnp.PyArray_DIM(pref, 1), n_pref = cnp.PyArray_DIM(pref, 2)
    cdef Py_ssize_t i, j, r, s, t, st, nq = 0, n_left, n_plugged = 0, n_expired = 0, n_wait = 0
    cdef Py_ssize_t w, n_waiters
    cdef double car_kw, lim
    cdef bint any_pref
    cdef Waiter *queue
    cdef int64_t *waiters
    cdef uint8_t *has_free = <uint8_t *>calloc(n_sites if n_sites else 1, 1)
    if has_free == NULL:
        raise MemoryError()
    waiters = <int64_t *>malloc((n_ev if n_ev else 1) * sizeof(int64_t))
    if waiters == NULL:
        free(has_free)
        raise MemoryError()
    try:
        n_waiters = _set_bytes(waiting_, n_ev, waiters)
        for s in range(n_sites):
            for t in range(n_types):
                if n_ch[s * n_types + t] - used_[s * n_types + t] > 0:
                    has_free[s] = 1
                    break
        for w in range(n_waiters):
            if has_free[site_[waiters[w]]]:  # at full sites, EVs just keep waiting
                nq += 1
        if nq:
            queue = <Waiter *>malloc(nq * sizeof(Waiter))
            if queue == NULL:
                raise MemoryError()
            try:
                i = 0
                for w in range(n_waiters):
                    j = waiters[w]
                    if has_free[site_[j]]:
                        queue[i].since = since[j]
                        queue[i].ev = j
                        i += 1
                qsort(queue, nq, sizeof(Waiter), _by_arrival)
                n_left = nq
                for r in range(n_pref):
                    any_pref = False
                    for i in range(nq):
                        j = queue[i].ev
                        if j < 0:
                            continue  # plugged in an earlier round
                        s = site_[j]
                        t = pref_[(j * n_kinds + kind_[s]) * n_pref + r]
                        if t < 0:
                            continue
                        any_pref = True
                        st = s * n_types + t
                        if n_ch[st] - used_[st] <= 0:
                            continue
                        used_[st] += 1
                        plug_[j] = t
                        charging_[j] = e_[j] < soc_full * cap_[j] - full_tol_kwh
                        waiting_[j] = 0
                        car_kw = ac_[j] if t <= ac_max_type else dc_[j]
                        ch_lim[j] = ch_kw[st] if ch_kw[st] < car_kw else car_kw
                        if t == v2g_type and v2g_user_[j]:
                            lim = dis_kw[st]
                            dis_lim[j] = lim if lim < v2g_kw_[j] else v2g_kw_[j]
                        else:
                            dis_lim[j] = 0.0
                        queue[i].ev = -1
                        n_plugged += 1
                        n_left -= 1
                    if not any_pref or n_left == 0:
                        break
            finally:
                free(queue)
        for w in range(n_waiters):
            j = waiters[w]
            if waiting_[j]:  # (not plugged above)
                if until[j] <= k:
                    waiting_[j] = 0
                    n_expired += 1
                else:
                    n_wait += 1
    finally:
        free(has_free)
        free(waiters)
    return n_plugged, n_expired, n_wait


cdef struct Plan:
    # what the trip planning of parked EVs reads and writes (see ``next_trip``)
    const int64_t *head
    const int64_t *tail
    const int64_t *leg_dep
    const double *leg_rest_km
    const int64_t *leg_seq
    Py_ssize_t m  # leg slots per EV
    int64_t *evt_step
    int64_t *evt_seq
    int64_t *next_dep
    double *req_kwh
    const double *cap_kwh
    const int64_t *site
    const int64_t *site_kind
    const double *kwh_per_km
    int64_t horizon_step
    double need_soc
    double target_soc
    double soc_full
    int64_t home_kind
    int64_t depot_kind


cdef int _plan(Plan *p, cnp.ndarray head, cnp.ndarray tail, cnp.ndarray leg_dep,
               cnp.ndarray leg_rest_km, cnp.ndarray leg_seq, cnp.ndarray evt_step,
               cnp.ndarray evt_seq, cnp.ndarray next_dep, cnp.ndarray req_kwh,
               cnp.ndarray cap_kwh, cnp.ndarray site, cnp.ndarray site_kind,
               cnp.ndarray kwh_per_km, int64_t horizon_step, double need_soc,
               double target_soc, double soc_full, int64_t home_kind,
               int64_t depot_kind) except -1:
    p.head = _i64(head, "head")
    p.tail = _i64(tail, "tail")
    p.leg_dep = _i64(leg_dep, "leg_dep", 2)
    p.leg_rest_km = _f64(leg_rest_km, "leg_rest_km", 2)
    p.m = cnp.PyArray_DIM(leg_dep, 1)
    if cnp.PyArray_DIM(leg_rest_km, 1) != p.m:
        raise ValueError("leg_rest_km: needs as many leg slots as leg_dep")
    p.leg_seq = _i64(leg_seq, "leg_seq", 2)
    if cnp.PyArray_DIM(leg_seq, 1) != p.m:
        raise ValueError("leg_seq: needs as many leg slots as leg_dep")
    p.evt_step = _i64(evt_step, "evt_step", 1, True)
    p.evt_seq = _i64(evt_seq, "evt_seq", 1, True)
    p.next_dep = _i64(next_dep, "next_dep", 1, True)
    p.req_kwh = _f64(req_kwh, "req_kwh", 1, True)
    p.cap_kwh = _f64(cap_kwh, "cap_kwh")
    p.site = _i64(site, "site")
    p.site_kind = _i64(site_kind, "site_kind")
    p.kwh_per_km = _f64(kwh_per_km, "kwh_per_km")
    p.horizon_step = horizon_step
    p.need_soc = need_soc
    p.target_soc = target_soc
    p.soc_full = soc_full
    p.home_kind = home_kind
    p.depot_kind = depot_kind
    return 0


cdef void _next_trip(const int64_t *ids, Py_ssize_t n, const Plan *p,
                     int64_t *kind_out) noexcept nogil:
    cdef Py_ssize_t i, j, slot
    cdef double rest_km, cap, need, target
    cdef int64_t kind
    for i in range(n):
        j = ids[i]
        if p.head[j] < p.tail[j]:
            slot = j * p.m + p.head[j] % p.m
            p.next_dep[j] = p.leg_dep[slot]
            p.evt_step[j] = p.leg_dep[slot]
            p.evt_seq[j] = p.leg_seq[slot]
            rest_km = p.leg_rest_km[slot]
        else:
            p.next_dep[j] = p.horizon_step
            p.evt_step[j] = -1
            rest_km = 0.0
        cap = p.cap_kwh[j]
        kind = p.site_kind[p.site[j]] if p.site[j] >= 0 else -1
        need = p.need_soc * cap + rest_km * p.kwh_per_km[j]
        target = p.target_soc * cap if (kind == p.home_kind or kind == p.depot_kind) else 0.0
        if not need >= target:
            need = target
        target = p.soc_full * cap
        p.req_kwh[j] = need if need < target else target
        kind_out[i] = kind


def next_trip(cnp.ndarray ids not None, cnp.ndarray head not None, cnp.ndarray tail not None,
              cnp.ndarray leg_dep not None, cnp.ndarray leg_rest_km not None,
              cnp.ndarray leg_seq not None, cnp.ndarray evt_step not None,
              cnp.ndarray evt_seq not None,
              cnp.ndarray next_dep not None, cnp.ndarray req_kwh not None,
              cnp.ndarray cap_kwh not None, cnp.ndarray site not None,
              cnp.ndarray site_kind not None, cnp.ndarray kwh_per_km not None,
              int64_t horizon_step, double need_soc, double target_soc, double soc_full,
              int64_t home_kind, int64_t depot_kind, cnp.ndarray kind_out not None):
    """Next departure step and energy wanted then [kWh] of parked EVs ``ids``.

    ``need_soc`` is ``soc_min + trip_reserve_soc``; ``target_soc`` (``departure_soc_target``)
    applies when leaving a site of kind ``home_kind`` or ``depot_kind``. Without a planned leg
    the departure is ``horizon_step``. The EV's next event (see ``due``) is that departure, at
    ``evt_step``, of the leg filed ``evt_seq`` (its ``leg_seq``); -1 without a planned leg.
    Writes the site kind of ``ids[i]`` (-1 = no site) to ``kind_out[i]``.
    """
    cdef Plan plan
    _plan(&plan, head, tail, leg_dep, leg_rest_km, leg_seq, evt_step, evt_seq, next_dep,
          req_kwh, cap_kwh, site, site_kind, kwh_per_km, horizon_step, need_soc, target_soc,
          soc_full, home_kind, depot_kind)
    _next_trip(_i64(ids, "ids"), cnp.PyArray_DIM(ids, 0), &plan,
               _i64(kind_out, "kind_out", 1, True))


cdef struct Park:
    # what parking EVs at a site reads and writes (see ``settle``)
    int64_t *site
    const int64_t *site_kind
    const uint8_t *site_has_chargers
    const int64_t *patience_steps
    const double *e_kwh
    const double *plug_soc
    double public_plug_soc
    int64_t public_kind
    uint8_t *wants
    uint8_t *waiting
    int64_t *wait_since
    int64_t *wait_until
    int64_t *kind_buf


cdef int _park(Park *q, cnp.ndarray site, cnp.ndarray site_kind,
               cnp.ndarray site_has_chargers, cnp.ndarray patience_steps, cnp.ndarray e_kwh,
               cnp.ndarray plug_soc, double public_plug_soc, int64_t public_kind,
               cnp.ndarray wants, cnp.ndarray waiting, cnp.ndarray wait_since,
               cnp.ndarray wait_until, cnp.ndarray kind_buf) except -1:
    q.site = _i64(site, "site", 1, True)
    q.site_kind = _i64(site_kind, "site_kind")
    q.site_has_chargers = _u8(site_has_chargers, "site_has_chargers")
    q.patience_steps = _i64(patience_steps, "patience_steps")
    q.e_kwh = _f64(e_kwh, "e_kwh")
    q.plug_soc = _f64(plug_soc, "plug_soc")
    q.public_plug_soc = public_plug_soc
    q.public_kind = public_kind
    q.wants = _u8(wants, "wants", True)
    q.waiting = _u8(waiting, "waiting", True)
    q.wait_since = _i64(wait_since, "wait_since", 1, True)
    q.wait_until = _i64(wait_until, "wait_until", 1, True)
    q.kind_buf = _i64(kind_buf, "kind_buf", 1, True)
    return 0


cdef Py_ssize_t _settle(const int64_t *ids, Py_ssize_t n, const int64_t *dest, int64_t k,
                        const Park *q, const Plan *p) noexcept nogil:
    cdef Py_ssize_t i, j, n_wait = 0
    cdef int64_t d, until
    cdef double soc
    cdef bint want
    for i in range(n):
        q.site[ids[i]] = dest[i]
    _next_trip(ids, n, p, q.kind_buf)
    for i in range(n):
        j = ids[i]
        d = dest[i]
        want = False
        if d >= 0 and q.site_has_chargers[d]:
            soc = q.e_kwh[j] / p.cap_kwh[j]
            if q.kind_buf[i] == q.public_kind:
                want = soc < q.public_plug_soc
            else:
                want = soc < q.plug_soc[j]
        q.wants[j] = want
        if want:
            n_wait += 1
            q.waiting[j] = 1
            q.wait_since[j] = k
            until = k + q.patience_steps[d]
            q.wait_until[j] = until if until < p.next_dep[j] else p.next_dep[j]
    return n_wait


def settle(cnp.ndarray ids not None, cnp.ndarray dest not None, int64_t k,
           cnp.ndarray site not None, cnp.ndarray site_kind not None,
           cnp.ndarray site_has_chargers not None, cnp.ndarray patience_steps not None,
           cnp.ndarray e_kwh not None, cnp.ndarray plug_soc not None, double public_plug_soc,
           int64_t public_kind, cnp.ndarray wants not None, cnp.ndarray waiting not None,
           cnp.ndarray wait_since not None, cnp.ndarray wait_until not None,
           cnp.ndarray kind_buf not None, cnp.ndarray head not None, cnp.ndarray tail not None,
           cnp.ndarray leg_dep not None, cnp.ndarray leg_rest_km not None,
              cnp.ndarray leg_seq not None, cnp.ndarray evt_step not None,
              cnp.ndarray evt_seq not None,
           cnp.ndarray next_dep not None, cnp.ndarray req_kwh not None,
           cnp.ndarray cap_kwh not None, cnp.ndarray kwh_per_km not None,
           int64_t horizon_step, double need_soc, double target_soc, double soc_full,
           int64_t home_kind, int64_t depot_kind):
    """EVs ``ids`` park at ``dest`` (-1 = no charging site) at step ``k``.

    Plans their next trip (see ``next_trip``); those at a site with chargers whose SoC is below
    their plug threshold (``public_plug_soc`` at public sites) want to charge and start waiting,
    until their patience runs out or they leave. Returns the number of new waiting EVs.
    """
    cdef Park park
    cdef Plan plan
    _park(&park, site, site_kind, site_has_chargers, patience_steps, e_kwh, plug_soc,
          public_plug_soc, public_kind, wants, waiting, wait_since, wait_until, kind_buf)
    _plan(&plan, head, tail, leg_dep, leg_rest_km, leg_seq, evt_step, evt_seq, next_dep,
          req_kwh, cap_kwh, site, site_kind, kwh_per_km, horizon_step, need_soc, target_soc,
          soc_full, home_kind, depot_kind)
    return _settle(_i64(ids, "ids"), cnp.PyArray_DIM(ids, 0), _i64(dest, "dest"), k, &park,
                   &plan)


def arrive(cnp.ndarray ids not None, int64_t k, cnp.ndarray leg_arr not None,
           cnp.ndarray leg_dest not None, cnp.ndarray head not None,
           cnp.ndarray driving not None, cnp.ndarray dest_buf not None,
           cnp.ndarray site not None, cnp.ndarray site_kind not None,
           cnp.ndarray site_has_chargers not None, cnp.ndarray patience_steps not None,
           cnp.ndarray e_kwh not None, cnp.ndarray plug_soc not None, double public_plug_soc,
           int64_t public_kind, cnp.ndarray wants not None, cnp.ndarray waiting not None,
           cnp.ndarray wait_since not None, cnp.ndarray wait_until not None,
           cnp.ndarray kind_buf not None, cnp.ndarray tail not None,
           cnp.ndarray leg_dep not None, cnp.ndarray leg_rest_km not None,
              cnp.ndarray leg_seq not None, cnp.ndarray evt_step not None,
              cnp.ndarray evt_seq not None,
           cnp.ndarray next_dep not None, cnp.ndarray req_kwh not None,
           cnp.ndarray cap_kwh not None, cnp.ndarray kwh_per_km not None,
           int64_t horizon_step, double need_soc, double target_soc, double soc_full,
           int64_t home_kind, int64_t depot_kind):
    """EVs ``ids`` arrive at step ``k`` at the destination of their current leg and settle
    there (see ``settle``). Returns the number of new waiting EVs, or -1 (nothing changed) when
    the trip plan does not match (a leg not arriving at ``k``, or an EV not driving)."""
    cdef const int64_t *ids_ = _i64(ids, "ids")
    cdef const int64_t *arr = _i64(leg_arr, "leg_arr", 2)
    cdef const int64_t *leg_dest_ = _i64(leg_dest, "leg_dest", 2)
    cdef int64_t *head_ = _i64(head, "head", 1, True)
    cdef uint8_t *driving_ = _u8(driving, "driving", True)
    cdef int64_t *dest_ = _i64(dest_buf, "dest_buf", 1, True)
    cdef Py_ssize_t i, j, n = cnp.PyArray_DIM(ids, 0), m = cnp.PyArray_DIM(leg_arr, 1), slot
    cdef Park park
    cdef Plan plan
    if cnp.PyArray_DIM(leg_dest, 1) != m:
        raise ValueError("leg_dest: needs as many leg slots as leg_arr")
    _park(&park, site, site_kind, site_has_chargers, patience_steps, e_kwh, plug_soc,
          public_plug_soc, public_kind, wants, waiting, wait_since, wait_until, kind_buf)
    _plan(&plan, head, tail, leg_dep, leg_rest_km, leg_seq, evt_step, evt_seq, next_dep,
          req_kwh, cap_kwh, site, site_kind, kwh_per_km, horizon_step, need_soc, target_soc,
          soc_full, home_kind, depot_kind)
    for i in range(n):
        j = ids_[i]
        slot = j * m + head_[j] % m
        if arr[slot] != k or not driving_[j]:
            return -1
    for i in range(n):
        j = ids_[i]
        slot = j * m + head_[j] % m
        dest_[i] = leg_dest_[slot]
        head_[j] += 1
        driving_[j] = 0
    return _settle(ids_, n, dest_, k, &park, &plan)


def depart(cnp.ndarray ids not None, int64_t k, cnp.ndarray leg_dep not None,
           cnp.ndarray leg_arr not None, cnp.ndarray evt_step not None,
           cnp.ndarray leg_km not None, cnp.ndarray head not None,
           cnp.ndarray driving not None, cnp.ndarray plug not None, cnp.ndarray site not None,
           cnp.ndarray used not None, cnp.ndarray charging not None,
           cnp.ndarray wants not None, cnp.ndarray waiting not None,
           cnp.ndarray req_kwh not None, cnp.ndarray e_kwh not None,
           cnp.ndarray cap_kwh not None, cnp.ndarray kwh_per_km not None, double soc_min,
           cnp.ndarray unmet_kwh not None, cnp.ndarray driven_kwh not None,
           cnp.ndarray shortfall_kwh not None, cnp.ndarray p_ch_lim not None,
           cnp.ndarray p_dis_lim not None, cnp.ndarray last_dir not None,
           cnp.ndarray extreme not None, cnp.ndarray tp_buf not None,
           cnp.ndarray tp_n not None, cnp.ndarray unmet_buf not None):
    """EVs ``ids`` leave at step ``k`` on their current leg; their next event (``evt_step``,
    see ``due``) is its arrival.

    Unplugs them (frees the charger), books the energy still missing of those that wanted to
    charge (``unmet_kwh``; the values, in ``ids`` order, also in ``unmet_buf``), ends waiting,
    and takes the trip's energy from the battery down to ``soc_min`` (the rest is a shortfall),
    recording the SoC change as the ageing model's ``observe`` does. Returns ``(n_unplugged,
    n_unmet, n_gave_up, n_short, flush, short_kwh)``: ``n_unmet`` values are listed in
    ``unmet_buf``, or 0 when none of them is positive (their sum is 0); ``short_kwh`` is true
    when a shortfall was booked (``n_short`` counts only those beyond 1e-9 kWh). Or ``None``
    (nothing changed) when the trip plan does not match (a leg not departing at ``k``, or an
    EV already driving).
    """
    cdef const int64_t *ids_ = _i64(ids, "ids")
    cdef const int64_t *dep = _i64(leg_dep, "leg_dep", 2)
    cdef const int64_t *arr = _i64(leg_arr, "leg_arr", 2)
    cdef int64_t *evt = _i64(evt_step, "evt_step", 1, True)
    cdef const double *km = _f64(leg_km, "leg_km", 2)
    cdef const int64_t *head_ = _i64(head, "head")
    cdef uint8_t *driving_ = _u8(driving, "driving", True)
    cdef int64_t *plug_ = _i64(plug, "plug", 1, True)
    cdef int64_t *site_ = _i64(site, "site", 1, True)
    cdef int64_t *used_ = _i64(used, "used", 2, True)
    cdef uint8_t *charging_ = _u8(charging, "charging", True)
    cdef uint8_t *wants_ = _u8(wants, "wants", True)
    cdef uint8_t *waiting_ = _u8(waiting, "waiting", True)
    cdef const double *req = _f64(req_kwh, "req_kwh")
    cdef double *e_ = _f64(e_kwh, "e_kwh", 1, True)
    cdef const double *cap_ = _f64(cap_kwh, "cap_kwh")
    cdef const double *per_km = _f64(kwh_per_km, "kwh_per_km")
    cdef double *unmet_ = _f64(unmet_kwh, "unmet_kwh", 1, True)
    cdef double *driven = _f64(driven_kwh, "driven_kwh", 1, True)
    cdef double *shortfall = _f64(shortfall_kwh, "shortfall_kwh", 1, True)
    cdef double *ch_lim = _f64(p_ch_lim, "p_ch_lim", 1, True)
    cdef double *dis_lim = _f64(p_dis_lim, "p_dis_lim", 1, True)
    cdef double *unmet_out = _f64(unmet_buf, "unmet_buf", 1, True)
    cdef Turns turns
    _turns(&turns, last_dir, extreme, tp_buf, tp_n)
    cdef Py_ssize_t i, j, n = cnp.PyArray_DIM(ids, 0), m = cnp.PyArray_DIM(leg_dep, 1), slot
    cdef Py_ssize_t n_types = cnp.PyArray_DIM(used, 1)
    cdef Py_ssize_t n_unplugged = 0, n_unmet = 0, n_gave_up = 0, n_short = 0
    cdef bint flush = False, short_kwh = False, any_unmet = False
    cdef double unmet, e_trip, avail, used_kwh, cap, e_old, e_new
    if cnp.PyArray_DIM(leg_km, 1) != m or cnp.PyArray_DIM(leg_arr, 1) != m:
        raise ValueError("leg_km, leg_arr: need as many leg slots as leg_dep")
    for i in range(n):
        j = ids_[i]
        if dep[j * m + head_[j] % m] != k or driving_[j]:
            return None
    for i in range(n):
        j = ids_[i]
        slot = j * m + head_[j] % m
        if plug_[j] >= 0:
            used_[site_[j] * n_types + plug_[j]] -= 1
            charging_[j] = 0
            n_unplugged += 1
        if wants_[j]:
            unmet = req[j] - e_[j]
            if not unmet > 0.0:
                unmet = 0.0
            unmet_[j] += unmet
            unmet_out[n_unmet] = unmet
            n_unmet += 1
            any_unmet |= unmet > 0.0
        if waiting_[j]:
            n_gave_up += 1
        e_trip = km[slot] * per_km[j]
        cap = cap_[j]
        e_old = e_[j]
        avail = e_old - soc_min * cap
        if not avail > 0.0:
            avail = 0.0
        used_kwh = e_trip if e_trip < avail else avail
        if e_trip > avail + 1e-9:
            n_short += 1
        e_new = e_old - used_kwh
        e_[j] = e_new
        driven[j] += used_kwh
        if e_trip - used_kwh != 0.0:
            shortfall[j] += e_trip - used_kwh
            short_kwh = True
        if _turn(j, e_old / cap, e_new / cap, &turns):
            flush = True
        plug_[j] = -1
        ch_lim[j] = 0.0
        dis_lim[j] = 0.0
        waiting_[j] = 0
        wants_[j] = 0
        site_[j] = -1
        driving_[j] = 1
        evt[j] = arr[slot]
    return n_unplugged, n_unmet if any_unmet else 0, n_gave_up, n_short, flush, short_kwh


def rainflow(cnp.ndarray ids not None, cnp.ndarray points not None,
             cnp.ndarray n_points not None, cnp.ndarray stack not None,
             cnp.ndarray depth not None, cnp.ndarray cyc_ev not None,
             cnp.ndarray cyc_range not None, cnp.ndarray cyc_mean not None,
             cnp.ndarray cyc_weight not None):
    """ASTM E1049-85 three-point rainflow counting of many signals, fed point by point.

    Signal ``ids[i]`` (unique) has the unresolved turning points ``stack[ids[i], :depth[ids[i]]]``
    (at least its first point); ``points[i, :n_points[i]]`` are appended to it in order, and
    every cycle the three-point rule closes is listed: its signal in ``cyc_ev``, its range and
    mean (``|a - b|``, ``0.5 * (a + b)`` of its two points ``a``, ``b``) and its count in
    ``cyc_weight`` (1 for a full cycle; 0.5 for a half cycle, one that contains the first point
    of the stack). A full stack first has its oldest range counted as a half cycle and dropped,
    as ASTM allows for residues. The cycles of one signal are listed in the order they close.
    The cycle arrays need room for ``sum(n_points) + sum(depth[ids])`` cycles. Returns the
    number of cycles.
    """
    cdef const int64_t *ids_ = _i64(ids, "ids")
    cdef const double *pts = _f64(points, "points", 2)
    cdef const int64_t *n_pts = _i64(n_points, "n_points")
    cdef double *stk = _f64(stack, "stack", 2, True)
    cdef int64_t *depth_ = _i64(depth, "depth", 1, True)
    cdef int64_t *ev_out = _i64(cyc_ev, "cyc_ev", 1, True)
    cdef double *rng_out = _f64(cyc_range, "cyc_range", 1, True)
    cdef double *mean_out = _f64(cyc_mean, "cyc_mean", 1, True)
    cdef double *w_out = _f64(cyc_weight, "cyc_weight", 1, True)
    cdef Py_ssize_t n = cnp.PyArray_DIM(ids, 0), width = cnp.PyArray_DIM(points, 1)
    cdef Py_ssize_t n_sig = cnp.PyArray_DIM(stack, 0), max_depth = cnp.PyArray_DIM(stack, 1)
    cdef Py_ssize_t cap = cnp.PyArray_DIM(cyc_ev, 0), need = 0, m = 0, i, c, j, d
    cdef double *s
    cdef double s1, s2, s3
    cdef uint8_t *seen
    if cnp.PyArray_DIM(points, 0) != n or cnp.PyArray_DIM(n_points, 0) != n:
        raise ValueError("rainflow: points and n_points need one row per id")
    if cnp.PyArray_DIM(depth, 0) != n_sig:
        raise ValueError("rainflow: depth needs one value per stack row")
    if max_depth < 2:
        raise ValueError(f"rainflow: the stack needs room for 2 points at least, has {max_depth}")
    if (cnp.PyArray_DIM(cyc_range, 0) < cap or cnp.PyArray_DIM(cyc_mean, 0) < cap
            or cnp.PyArray_DIM(cyc_weight, 0) < cap):
        raise ValueError("rainflow: cyc_range, cyc_mean and cyc_weight need the room of cyc_ev")
    seen = <uint8_t *>calloc(n_sig if n_sig else 1, 1)
    if seen == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            j = ids_[i]
            if j < 0 or j >= n_sig or seen[j]:
                raise ValueError(f"rainflow: ids must be unique signals in [0, {n_sig}), "
                                 f"got {j} at position {i}")
            seen[j] = 1
            if n_pts[i] < 0 or n_pts[i] > width:
                raise ValueError(f"rainflow: n_points[{i}] = {n_pts[i]} is not within "
                                 f"[0, {width}]")
            if depth_[j] < 1 or depth_[j] > max_depth:
                raise ValueError(f"rainflow: depth[{j}] = {depth_[j]} is not within "
                                 f"[1, {max_depth}]")
            need += n_pts[i] + depth_[j]
    finally:
        free(seen)
    if cap < need:
        raise ValueError(f"rainflow: room for {cap} cycles, needs {need}")
    for i in range(n):
        j = ids_[i]
        s = stk + j * max_depth
        d = depth_[j]
        for c in range(n_pts[i]):
            if d >= max_depth:
                ev_out[m] = j
                rng_out[m] = fabs(s[0] - s[1])
                mean_out[m] = 0.5 * (s[0] + s[1])
                w_out[m] = 0.5
                m += 1
                memmove(s, s + 1, (max_depth - 1) * sizeof(double))
                d -= 1
            s[d] = pts[i * width + c]
            d += 1
            while d >= 3:
                s1 = s[d - 1]
                s2 = s[d - 2]
                s3 = s[d - 3]
                if not fabs(s1 - s2) >= fabs(s2 - s3):
                    break
                ev_out[m] = j
                rng_out[m] = fabs(s2 - s3)
                mean_out[m] = 0.5 * (s2 + s3)
                if d == 3:  # the range holds the first point: half cycle, drop that point
                    w_out[m] = 0.5
                    s[0] = s2
                    s[1] = s1
                    d = 2
                else:
                    w_out[m] = 1.0
                    s[d - 3] = s1
                    d -= 2
                m += 1
        depth_[j] = d
    return m


def append_legs(cnp.ndarray ev not None, cnp.ndarray dep_nom not None,
                cnp.ndarray n_drive not None, cnp.ndarray km not None,
                cnp.ndarray dest not None, cnp.ndarray rest_km not None,
                cnp.ndarray head not None, cnp.ndarray tail not None,
                cnp.ndarray last_arr not None, cnp.ndarray driving not None,
                cnp.ndarray leg_dep not None, cnp.ndarray leg_arr not None,
                cnp.ndarray leg_km not None, cnp.ndarray leg_dest not None,
                cnp.ndarray leg_rest_km not None, cnp.ndarray leg_seq not None, int64_t seq,
                cnp.ndarray dep_out not None, cnp.ndarray arr_out not None,
                cnp.ndarray idle_out not None):
    """Append planned legs to the legs of each EV (ring buffers of ``leg_*``, one row per EV).

    The legs are sorted by EV, then by nominal departure step ``dep_nom``. A leg departs at
    ``dep_nom`` but not before the step after the EV's previous arrival (a stay lasts at least
    one step) and arrives ``n_drive`` steps later; its steps go to ``dep_out`` / ``arr_out``,
    the filing number ``seq`` to ``leg_seq``.
    Updates ``tail`` and ``last_arr``; lists in ``idle_out`` the EVs that are parked with no leg
    planned before (in EV order). Returns their number, or -1 (nothing changed) when an EV
    would have more legs than its ring holds.
    """
    cdef const int64_t *ev_ = _i64(ev, "ev")
    cdef const int64_t *nom = _i64(dep_nom, "dep_nom")
    cdef const int64_t *drive = _i64(n_drive, "n_drive")
    cdef const double *km_ = _f64(km, "km")
    cdef const int64_t *dest_ = _i64(dest, "dest")
    cdef const double *rest = _f64(rest_km, "rest_km")
    cdef const int64_t *head_ = _i64(head, "head")
    cdef int64_t *tail_ = _i64(tail, "tail", 1, True)
    cdef int64_t *last_ = _i64(last_arr, "last_arr", 1, True)
    cdef const uint8_t *driving_ = _u8(driving, "driving")
    cdef int64_t *l_dep = _i64(leg_dep, "leg_dep", 2, True)
    cdef int64_t *l_arr = _i64(leg_arr, "leg_arr", 2, True)
    cdef double *l_km = _f64(leg_km, "leg_km", 2, True)
    cdef int64_t *l_dest = _i64(leg_dest, "leg_dest", 2, True)
    cdef double *l_rest = _f64(leg_rest_km, "leg_rest_km", 2, True)
    cdef int64_t *l_seq = _i64(leg_seq, "leg_seq", 2, True)
    cdef int64_t *d_out = _i64(dep_out, "dep_out", 1, True)
    cdef int64_t *a_out = _i64(arr_out, "arr_out", 1, True)
    cdef int64_t *idle = _i64(idle_out, "idle_out", 1, True)
    cdef Py_ssize_t n = cnp.PyArray_DIM(ev, 0), n_ev = cnp.PyArray_DIM(head, 0)
    cdef Py_ssize_t m = cnp.PyArray_DIM(leg_dep, 1), i, i0, slot, n_idle = 0
    cdef int64_t e, rank, prev, dep
    cdef cnp.ndarray a
    for a in (dep_nom, n_drive, km, dest, rest_km, dep_out, arr_out):
        if cnp.PyArray_DIM(a, 0) != n:
            raise ValueError("append_legs: every leg array needs one value per leg")
    for a in (tail, last_arr, driving, idle_out):
        if cnp.PyArray_DIM(a, 0) != n_ev:
            raise ValueError("append_legs: every EV array needs one value per EV")
    for a in (leg_dep, leg_arr, leg_km, leg_dest, leg_rest_km, leg_seq):
        if cnp.PyArray_DIM(a, 0) != n_ev or cnp.PyArray_DIM(a, 1) != m:
            raise ValueError("append_legs: the leg rings need the shape of leg_dep, one row "
                             "per EV")
    i = 0
    while i < n:  # check every EV first: an overflow changes nothing
        e = ev_[i]
        if e < 0 or e >= n_ev or (i and e < ev_[i - 1]):
            raise ValueError(f"append_legs: ev must be sorted EV indices in [0, {n_ev})")
        i0 = i
        while i < n and ev_[i] == e:
            i += 1
        if tail_[e] - head_[e] + (i - i0) > m:
            return -1
    i = 0
    while i < n:
        e = ev_[i]
        if head_[e] == tail_[e] and not driving_[e]:
            idle[n_idle] = e
            n_idle += 1
        prev = last_[e]
        rank = 0
        while i < n and ev_[i] == e:
            dep = nom[i] if nom[i] > prev + 1 else prev + 1
            prev = dep + drive[i]
            d_out[i] = dep
            a_out[i] = prev
            slot = e * m + (tail_[e] + rank) % m
            l_dep[slot] = dep
            l_arr[slot] = prev
            l_km[slot] = km_[i]
            l_dest[slot] = dest_[i]
            l_rest[slot] = rest[i]
            l_seq[slot] = seq
            rank += 1
            i += 1
        tail_[e] += rank
        last_[e] = prev
    return n_idle


cdef void _by_seq(int64_t *ids, Py_ssize_t n, const int64_t *seq) noexcept nogil:
    """Sort EVs ``ids`` (in increasing order) stably by ``seq[ids[i]]``: insertion sort, the
    EVs of a step are few and mostly of one filing."""
    cdef Py_ssize_t i, h
    cdef int64_t x
    for i in range(1, n):
        x = ids[i]
        h = i
        while h > 0 and seq[ids[h - 1]] > seq[x]:
            ids[h] = ids[h - 1]
            h -= 1
        ids[h] = x


def due(int64_t k, cnp.ndarray evt_step not None, cnp.ndarray evt_seq not None,
        cnp.ndarray driving not None, cnp.ndarray dep_out not None,
        cnp.ndarray arr_out not None):
    """The EVs whose next event is at step ``k``: leaving (parked) to ``dep_out`` and arriving
    (driving) to ``arr_out``, each by filing number ``evt_seq`` of the leg, then EV. Returns
    ``(n_leaving, n_arriving)``.
    """
    cdef const int64_t *evt = _i64(evt_step, "evt_step")
    cdef const int64_t *seq = _i64(evt_seq, "evt_seq")
    cdef const uint8_t *driving_ = _u8(driving, "driving")
    cdef int64_t *d_out = _i64(dep_out, "dep_out", 1, True)
    cdef int64_t *a_out = _i64(arr_out, "arr_out", 1, True)
    cdef Py_ssize_t j, n_ev = cnp.PyArray_DIM(evt_step, 0), n_dep = 0, n_arr = 0
    cdef cnp.ndarray a
    for a in (evt_seq, driving, dep_out, arr_out):
        if cnp.PyArray_DIM(a, 0) != n_ev:
            raise ValueError("due: every array needs one value per EV")
    for j in range(n_ev):
        if evt[j] == k:
            if driving_[j]:
                a_out[n_arr] = j
                n_arr += 1
            else:
                d_out[n_dep] = j
                n_dep += 1
    _by_seq(d_out, n_dep, seq)
    _by_seq(a_out, n_arr, seq)
    return n_dep, n_arr


def plugged(cnp.ndarray plug not None, cnp.ndarray out not None):
    """Write the EVs plugged in (``plug >= 0``), in increasing order, to ``out``; return their
    number."""
    cdef const int64_t *plug_ = _i64(plug, "plug")
    cdef int64_t *out_ = _i64(out, "out", 1, True)
    cdef Py_ssize_t j, n_ev = cnp.PyArray_DIM(plug, 0), m = 0
    if cnp.PyArray_DIM(out, 0) < n_ev:
        raise ValueError("plugged: out needs room for every EV")
    for j in range(n_ev):  # without a branch: about half the EVs are plugged
        out_[m] = j
        m += plug_[j] >= 0
    return m
