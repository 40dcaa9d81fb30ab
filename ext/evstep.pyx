"""Per-step physics and trip events of the EV fleet: compiled kernel.

The passes that :class:`components.ev.model.EVFleet` runs every step, written as loops over
the EVs concerned instead of a few dozen NumPy operations on small gathered arrays:

- ``limits_cc`` / ``limits_cv``: the mean power limits over the next step (the exact CC-CV
  integral of :func:`components.ev.model.max_charge_energy_kwh`, and the V2G room). EVs that
  reach the constant-voltage phase within the step need ``exp``; ``limits_cc`` lists them with
  the exponent, the caller evaluates ``numpy.exp`` on that list (so both kernels and the
  reference function share one ``exp``), and ``limits_cv`` finishes them.
- ``advance``: apply the setpoints (clipped to the limits, counted when clipped) or the
  uncontrolled maximum, update the batteries and energy accounts, feed the SoC changes to the
  ageing model's turning-point detection, sum the power per site and refresh ``charging``.
- ``gather_view``: what a coordinator sees of the plugged EVs.
- ``serve_queue``: plug waiting EVs into free chargers (first come, first served), then let
  EVs whose patience ran out give up.
- ``depart``, ``arrive``, ``settle``, ``next_trip``: the trip events at a step boundary (leave
  on the next leg, arrive and park, decide whether to wait for a charger, plan the energy wanted
  at the next departure). ``depart`` records the SoC drop as the ageing model's ``observe``
  does; the caller sums the unmet energies with NumPy (its pairwise sum).

Every value is computed with the same floating-point operations, in the same order, as the
NumPy twin ``ext/evstep_np.py`` (and the model's vectorised reference code), so results are
bit-identical. Arrays are C-contiguous; boolean arrays are passed as ``uint8`` views; outputs
are written into arrays the caller owns.
"""

from libc.math cimport fabs, isnan
from libc.stdint cimport int8_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc, qsort


cdef inline bint _turn(Py_ssize_t j, double soc_old, double soc_new, int8_t[::1] last_dir,
                       double[::1] extreme, double[:, ::1] tp_buf, int64_t[::1] tp_n
                       ) noexcept nogil:
    """The ageing model's turning-point record (``ageing.observe``) for EV ``j`` moving from
    ``soc_old`` to ``soc_new``; True when its buffer is full and must be flushed."""
    cdef double delta = soc_new - soc_old
    cdef int8_t direction
    cdef int64_t t
    cdef bint full = False
    if fabs(delta) > 1e-9:
        direction = 1 if delta > 0 else -1
        if last_dir[j] != 0 and direction != last_dir[j]:
            t = tp_n[j]
            tp_buf[j, t] = extreme[j]
            tp_n[j] = t + 1
            full = t + 1 >= tp_buf.shape[1]
        last_dir[j] = direction
        extreme[j] = soc_new
    return full


def limits_cc(const int64_t[::1] ids, const double[::1] e_kwh, const double[::1] cap_kwh,
              const double[::1] p_ch_lim, const double[::1] accept_kw,
              const double[::1] p_dis_lim, double eta_c, double eta_d, double soc_cv,
              double soc_max, double end_share, double min_soc_v2g, double dt_h,
              double full_tol_kwh, double[::1] p_max, double[::1] p_min,
              int64_t[::1] cv_pos, double[::1] cv_arg, double[::1] cv_start):
    """Power limits of EVs ``ids`` [kW]; EVs entering the CV phase are listed, not finished.

    Writes ``p_max[i]`` (except for listed EVs) and ``p_min[i]`` for ``ids[i]``; for the
    ``n_cv`` EVs returned, ``cv_pos[j]`` is the position ``i``, ``cv_arg[j]`` the exponent
    ``-k_cv * t_cv`` and ``cv_start[j]`` the SoC where the CV phase starts [-].
    """
    cdef Py_ssize_t i, j, n = ids.shape[0], n_cv = 0
    cdef double width = soc_max - soc_cv
    cdef double soc_full = soc_max - end_share * width
    cdef double e, cap, soc0, p_batt, rate, soc_x, soc1, t_cc, k_cv, hi, e_in, room, acc
    for i in range(n):
        j = ids[i]
        e = e_kwh[j]
        cap = cap_kwh[j]
        acc = accept_kw[j]
        soc0 = e / cap
        p_batt = p_ch_lim[j] * eta_c
        if not p_batt < acc:
            p_batt = acc
        rate = p_batt / cap
        soc_x = soc_max - p_batt * width / acc
        soc1 = soc0 + rate * dt_h
        if soc1 > soc_x:
            if rate > 0:
                t_cc = (soc_x - soc0) / rate
                if not t_cc > 0.0:
                    t_cc = 0.0
            else:
                t_cc = dt_h
            k_cv = acc / (cap * width)
            cv_pos[n_cv] = i
            cv_arg[n_cv] = -k_cv * (dt_h - t_cc)
            cv_start[n_cv] = soc0 if soc0 > soc_x else soc_x
            n_cv += 1
        else:
            hi = soc0 if soc0 > soc_full else soc_full
            if soc1 < soc0:
                soc1 = soc0
            if soc1 > hi:
                soc1 = hi
            e_in = (soc1 - soc0) * cap / eta_c
            p_max[i] = (e_in if e_in > full_tol_kwh else 0.0) / dt_h
        room = e - min_soc_v2g * cap
        if not room > 0.0:
            room = 0.0
        room = room * eta_d / dt_h
        p_min[i] = -(p_dis_lim[j] if p_dis_lim[j] < room else room)
    return n_cv


def limits_cv(Py_ssize_t n_cv, const int64_t[::1] cv_pos, const double[::1] cv_exp,
              const double[::1] cv_start, const int64_t[::1] ids, const double[::1] e_kwh,
              const double[::1] cap_kwh, double eta_c, double soc_cv, double soc_max,
              double end_share, double dt_h, double full_tol_kwh, double[::1] p_max):
    """Finish ``p_max`` of the EVs listed by ``limits_cc``; ``cv_exp = exp(cv_arg)``."""
    cdef Py_ssize_t k, i, j
    cdef double width = soc_max - soc_cv
    cdef double soc_full = soc_max - end_share * width
    cdef double cap, soc0, soc1, hi, e_in
    for k in range(n_cv):
        i = cv_pos[k]
        j = ids[i]
        cap = cap_kwh[j]
        soc0 = e_kwh[j] / cap
        soc1 = soc_max - (soc_max - cv_start[k]) * cv_exp[k]
        hi = soc0 if soc0 > soc_full else soc_full
        if soc1 < soc0:
            soc1 = soc0
        if soc1 > hi:
            soc1 = hi
        e_in = (soc1 - soc0) * cap / eta_c
        p_max[i] = (e_in if e_in > full_tol_kwh else 0.0) / dt_h


def advance(const int64_t[::1] ids, const double[::1] p_set, bint controlled,
            const int64_t[::1] plug, const double[::1] p_max, const double[::1] p_min,
            double[::1] e_kwh, const double[::1] cap_kwh, double[::1] charged_kwh,
            double[::1] discharged_kwh, const int64_t[::1] site, double[::1] p_site_kw,
            int8_t[::1] last_dir, double[::1] extreme, double[:, ::1] tp_buf,
            int64_t[::1] tp_n, uint8_t[::1] charging, double dt_h, double eta_c,
            double eta_d, double soc_full, double full_tol_kwh, double[::1] ch_kw,
            double[::1] dis_kw, double[::1] ch_site_kw, double[::1] dis_site_kw):
    """One step of EVs ``ids`` (the plugged EVs when ``controlled``, else the charging ones).

    ``p_set`` is over all EVs (NaN = uncontrolled) when ``controlled``; otherwise every EV draws
    ``p_max``. Updates the battery, accounts, turning points, ``charging`` in place; adds the
    power of each moving EV to ``p_site_kw`` and its charge and discharge power to
    ``ch_site_kw`` / ``dis_site_kw`` (all zeroed by the caller), and lists its charge and
    discharge power in ``ch_kw`` / ``dis_kw`` in ``ids`` order. Returns ``(n_moving,
    n_clamped, flush)``: ``flush`` is true when a turning-point buffer is full.
    """
    cdef Py_ssize_t i, j, n = ids.shape[0], n_ev = plug.shape[0], m = 0, clamped = 0
    cdef bint flush = False
    cdef double p, ps, ch, dis, e_old, e_new, cap, v
    cdef double c_ch = dt_h * eta_c, c_dis = dt_h / eta_d
    if controlled:
        for j in range(n_ev):  # setpoints for EVs that are not plugged: ignored, counted
            if plug[j] < 0:
                v = p_set[j]
                if not isnan(v) and fabs(v) > 1e-6:
                    clamped += 1
    for i in range(n):
        j = ids[i]
        p = p_max[i]
        if controlled:
            ps = p_set[j]
            if not isnan(ps):
                p = ps if ps > p_min[i] else p_min[i]
                if p > p_max[i]:
                    p = p_max[i]
                if fabs(p - ps) > 1e-6:
                    clamped += 1
        cap = cap_kwh[j]
        if p != 0.0:
            e_old = e_kwh[j]
            ch = p if p > 0.0 else 0.0
            dis = -p if -p > 0.0 else 0.0
            e_new = e_old + ch * c_ch - dis * c_dis
            e_kwh[j] = e_new
            charged_kwh[j] += ch * dt_h
            discharged_kwh[j] += dis * dt_h
            p_site_kw[site[j]] += p
            ch_site_kw[site[j]] += ch
            dis_site_kw[site[j]] += dis
            ch_kw[m] = ch
            dis_kw[m] = dis
            m += 1
            if _turn(j, e_old / cap, e_new / cap, last_dir, extreme, tp_buf, tp_n):
                flush = True
            if not controlled and e_new >= soc_full * cap - full_tol_kwh:
                charging[j] = 0
        if controlled:
            charging[j] = e_kwh[j] < soc_full * cap - full_tol_kwh
    return m, clamped, flush


def gather_view(const int64_t[::1] ids, const int64_t[::1] site, const double[::1] e_kwh,
                const double[::1] cap_kwh, const double[::1] req_kwh,
                const int64_t[::1] next_dep, int64_t step_s, const double[::1] p_dis_lim,
                int64_t[::1] out_site, double[::1] out_soc, double[::1] out_need_kwh,
                double[::1] out_departure_s, uint8_t[::1] out_v2g):
    """Site, SoC, energy need, departure time [s] and V2G flag of EVs ``ids``."""
    cdef Py_ssize_t i, j, n = ids.shape[0]
    cdef double need
    for i in range(n):
        j = ids[i]
        out_site[i] = site[j]
        out_soc[i] = e_kwh[j] / cap_kwh[j]
        need = req_kwh[j] - e_kwh[j]
        out_need_kwh[i] = need if need > 0.0 else 0.0
        out_departure_s[i] = <double>(next_dep[j] * step_s)
        out_v2g[i] = p_dis_lim[j] > 0


cdef struct Waiter:
    int64_t since
    int64_t ev


cdef int _by_arrival(const void *a, const void *b) noexcept nogil:
    cdef const Waiter *x = <const Waiter *>a
    cdef const Waiter *y = <const Waiter *>b
    if x.since != y.since:
        return -1 if x.since < y.since else 1
    return -1 if x.ev < y.ev else (1 if x.ev > y.ev else 0)


def serve_queue(int64_t k, uint8_t[::1] waiting, const int64_t[::1] wait_since,
                const int64_t[::1] wait_until, const int64_t[::1] site,
                const int64_t[::1] site_kind, const int64_t[:, :, ::1] pref,
                const int64_t[:, ::1] n_chargers, int64_t[:, ::1] used, int64_t[::1] plug,
                uint8_t[::1] charging, const double[::1] e_kwh, const double[::1] cap_kwh,
                double soc_full, double full_tol_kwh, const double[::1] ac_kw,
                const double[::1] dc_kw, const double[:, ::1] charger_kw,
                const double[:, ::1] charger_dis_kw, const uint8_t[::1] v2g_user,
                const double[::1] v2g_kw, double[::1] p_ch_lim, double[::1] p_dis_lim,
                int64_t ac_max_type, int64_t v2g_type):
    """Plug waiting EVs into free compatible chargers, first come first served; then let EVs
    whose patience ran out (``wait_until <= k``) give up.

    In round ``r`` every EV still waiting (in order of arrival, then EV index) tries its
    ``r``-th preferred charger type at its site and takes one if free. Returns ``(n_plugged,
    n_expired, n_waiting)``.
    """
    cdef Py_ssize_t n_ev = waiting.shape[0], n_sites = n_chargers.shape[0]
    cdef Py_ssize_t n_types = n_chargers.shape[1]
    cdef Py_ssize_t i, j, r, s, t, nq = 0, n_left, n_plugged = 0, n_expired = 0, n_wait = 0
    cdef int64_t kind
    cdef double car_kw, lim
    cdef bint any_pref
    cdef Waiter *queue
    site_free = bytearray(n_sites)
    cdef unsigned char[::1] has_free = site_free
    for s in range(n_sites):
        for t in range(n_types):
            if n_chargers[s, t] - used[s, t] > 0:
                has_free[s] = 1
                break
    for j in range(n_ev):
        if waiting[j] and has_free[site[j]]:  # at full sites, EVs just keep waiting
            nq += 1
    if nq:
        queue = <Waiter *>malloc(nq * sizeof(Waiter))
        if queue == NULL:
            raise MemoryError()
        try:
            i = 0
            for j in range(n_ev):
                if waiting[j] and has_free[site[j]]:
                    queue[i].since = wait_since[j]
                    queue[i].ev = j
                    i += 1
            qsort(queue, nq, sizeof(Waiter), _by_arrival)
            n_left = nq
            for r in range(n_types):
                any_pref = False
                for i in range(nq):
                    j = queue[i].ev
                    if j < 0:
                        continue  # plugged in an earlier round
                    s = site[j]
                    t = pref[j, site_kind[s], r]
                    if t < 0:
                        continue
                    any_pref = True
                    if n_chargers[s, t] - used[s, t] <= 0:
                        continue
                    used[s, t] += 1
                    plug[j] = t
                    charging[j] = e_kwh[j] < soc_full * cap_kwh[j] - full_tol_kwh
                    waiting[j] = 0
                    car_kw = ac_kw[j] if t <= ac_max_type else dc_kw[j]
                    p_ch_lim[j] = charger_kw[s, t] if charger_kw[s, t] < car_kw else car_kw
                    if t == v2g_type and v2g_user[j]:
                        lim = charger_dis_kw[s, t]
                        p_dis_lim[j] = lim if lim < v2g_kw[j] else v2g_kw[j]
                    else:
                        p_dis_lim[j] = 0.0
                    queue[i].ev = -1
                    n_plugged += 1
                    n_left -= 1
                if not any_pref or n_left == 0:
                    break
        finally:
            free(queue)
    for j in range(n_ev):
        if waiting[j]:
            if wait_until[j] <= k:
                waiting[j] = 0
                n_expired += 1
            else:
                n_wait += 1
    return n_plugged, n_expired, n_wait


cdef void _next_trip(const int64_t[::1] ids, Py_ssize_t n, const int64_t[::1] head,
                     const int64_t[::1] tail, const int64_t[:, ::1] leg_dep,
                     const double[:, ::1] leg_rest_km, int64_t[::1] next_dep,
                     double[::1] req_kwh, const double[::1] cap_kwh, const int64_t[::1] site,
                     const int64_t[::1] site_kind, const double[::1] kwh_per_km,
                     int64_t horizon_step, double need_soc, double target_soc,
                     double soc_full, int64_t home_kind, int64_t depot_kind,
                     int64_t[::1] kind_out) noexcept:
    cdef Py_ssize_t i, j, m = leg_dep.shape[1], slot
    cdef double rest_km, cap, need, target
    cdef int64_t kind
    for i in range(n):
        j = ids[i]
        if head[j] < tail[j]:
            slot = head[j] % m
            next_dep[j] = leg_dep[j, slot]
            rest_km = leg_rest_km[j, slot]
        else:
            next_dep[j] = horizon_step
            rest_km = 0.0
        cap = cap_kwh[j]
        kind = site_kind[site[j]] if site[j] >= 0 else -1
        need = need_soc * cap + rest_km * kwh_per_km[j]
        target = target_soc * cap if (kind == home_kind or kind == depot_kind) else 0.0
        if not need >= target:
            need = target
        target = soc_full * cap
        req_kwh[j] = need if need < target else target
        kind_out[i] = kind


def next_trip(const int64_t[::1] ids, const int64_t[::1] head, const int64_t[::1] tail,
              const int64_t[:, ::1] leg_dep, const double[:, ::1] leg_rest_km,
              int64_t[::1] next_dep, double[::1] req_kwh, const double[::1] cap_kwh,
              const int64_t[::1] site, const int64_t[::1] site_kind,
              const double[::1] kwh_per_km, int64_t horizon_step, double need_soc,
              double target_soc, double soc_full, int64_t home_kind, int64_t depot_kind,
              int64_t[::1] kind_out):
    """Next departure step and energy wanted then [kWh] of parked EVs ``ids``.

    ``need_soc`` is ``soc_min + trip_reserve_soc``; ``target_soc`` (``departure_soc_target``)
    applies when leaving a site of kind ``home_kind`` or ``depot_kind``. Without a planned leg
    the departure is ``horizon_step``. Writes the site kind of ``ids[i]`` (-1 = no site) to
    ``kind_out[i]``.
    """
    _next_trip(ids, ids.shape[0], head, tail, leg_dep, leg_rest_km, next_dep, req_kwh,
               cap_kwh, site, site_kind, kwh_per_km, horizon_step, need_soc, target_soc,
               soc_full, home_kind, depot_kind, kind_out)


cdef Py_ssize_t _settle(const int64_t[::1] ids, const int64_t[::1] dest, int64_t k,
                        int64_t[::1] site, const int64_t[::1] site_kind,
                        const uint8_t[::1] site_has_chargers,
                        const int64_t[::1] patience_steps, const double[::1] e_kwh,
                        const double[::1] plug_soc, double public_plug_soc,
                        int64_t public_kind, uint8_t[::1] wants, uint8_t[::1] waiting,
                        int64_t[::1] wait_since, int64_t[::1] wait_until,
                        int64_t[::1] kind_buf, const int64_t[::1] head,
                        const int64_t[::1] tail, const int64_t[:, ::1] leg_dep,
                        const double[:, ::1] leg_rest_km, int64_t[::1] next_dep,
                        double[::1] req_kwh, const double[::1] cap_kwh,
                        const double[::1] kwh_per_km, int64_t horizon_step, double need_soc,
                        double target_soc, double soc_full, int64_t home_kind,
                        int64_t depot_kind) noexcept:
    cdef Py_ssize_t i, j, n = ids.shape[0], n_wait = 0
    cdef int64_t d, until
    cdef double soc
    cdef bint want
    for i in range(n):
        site[ids[i]] = dest[i]
    _next_trip(ids, n, head, tail, leg_dep, leg_rest_km, next_dep, req_kwh, cap_kwh, site,
               site_kind, kwh_per_km, horizon_step, need_soc, target_soc, soc_full, home_kind,
               depot_kind, kind_buf)
    for i in range(n):
        j = ids[i]
        d = dest[i]
        want = False
        if d >= 0 and site_has_chargers[d]:
            soc = e_kwh[j] / cap_kwh[j]
            if kind_buf[i] == public_kind:
                want = soc < public_plug_soc
            else:
                want = soc < plug_soc[j]
        wants[j] = want
        if want:
            n_wait += 1
            waiting[j] = 1
            wait_since[j] = k
            until = k + patience_steps[d]
            wait_until[j] = until if until < next_dep[j] else next_dep[j]
    return n_wait


def settle(const int64_t[::1] ids, const int64_t[::1] dest, int64_t k, int64_t[::1] site,
           const int64_t[::1] site_kind, const uint8_t[::1] site_has_chargers,
           const int64_t[::1] patience_steps, const double[::1] e_kwh,
           const double[::1] plug_soc, double public_plug_soc, int64_t public_kind,
           uint8_t[::1] wants, uint8_t[::1] waiting, int64_t[::1] wait_since,
           int64_t[::1] wait_until, int64_t[::1] kind_buf, const int64_t[::1] head,
           const int64_t[::1] tail, const int64_t[:, ::1] leg_dep,
           const double[:, ::1] leg_rest_km, int64_t[::1] next_dep, double[::1] req_kwh,
           const double[::1] cap_kwh, const double[::1] kwh_per_km, int64_t horizon_step,
           double need_soc, double target_soc, double soc_full, int64_t home_kind,
           int64_t depot_kind):
    """EVs ``ids`` park at ``dest`` (-1 = no charging site) at step ``k``.

    Plans their next trip (see ``next_trip``); those at a site with chargers whose SoC is below
    their plug threshold (``public_plug_soc`` at public sites) want to charge and start waiting,
    until their patience runs out or they leave. Returns the number of new waiting EVs.
    """
    return _settle(ids, dest, k, site, site_kind, site_has_chargers, patience_steps, e_kwh,
                   plug_soc, public_plug_soc, public_kind, wants, waiting, wait_since,
                   wait_until, kind_buf, head, tail, leg_dep, leg_rest_km, next_dep, req_kwh,
                   cap_kwh, kwh_per_km, horizon_step, need_soc, target_soc, soc_full,
                   home_kind, depot_kind)


def arrive(const int64_t[::1] ids, int64_t k, const int64_t[:, ::1] leg_arr,
           const int64_t[:, ::1] leg_dest, int64_t[::1] head, uint8_t[::1] driving,
           int64_t[::1] dest_buf, int64_t[::1] site, const int64_t[::1] site_kind,
           const uint8_t[::1] site_has_chargers, const int64_t[::1] patience_steps,
           const double[::1] e_kwh, const double[::1] plug_soc, double public_plug_soc,
           int64_t public_kind, uint8_t[::1] wants, uint8_t[::1] waiting,
           int64_t[::1] wait_since, int64_t[::1] wait_until, int64_t[::1] kind_buf,
           const int64_t[::1] tail, const int64_t[:, ::1] leg_dep,
           const double[:, ::1] leg_rest_km, int64_t[::1] next_dep, double[::1] req_kwh,
           const double[::1] cap_kwh, const double[::1] kwh_per_km, int64_t horizon_step,
           double need_soc, double target_soc, double soc_full, int64_t home_kind,
           int64_t depot_kind):
    """EVs ``ids`` arrive at step ``k`` at the destination of their current leg and settle
    there (see ``settle``). Returns the number of new waiting EVs, or -1 (nothing changed) when
    the trip plan does not match (a leg not arriving at ``k``, or an EV not driving)."""
    cdef Py_ssize_t i, j, n = ids.shape[0], m = leg_arr.shape[1], slot
    for i in range(n):
        j = ids[i]
        slot = head[j] % m
        if leg_arr[j, slot] != k or not driving[j]:
            return -1
    for i in range(n):
        j = ids[i]
        slot = head[j] % m
        dest_buf[i] = leg_dest[j, slot]
        head[j] += 1
        driving[j] = 0
    return _settle(ids, dest_buf[:n], k, site, site_kind, site_has_chargers, patience_steps,
                   e_kwh, plug_soc, public_plug_soc, public_kind, wants, waiting, wait_since,
                   wait_until, kind_buf, head, tail, leg_dep, leg_rest_km, next_dep, req_kwh,
                   cap_kwh, kwh_per_km, horizon_step, need_soc, target_soc, soc_full,
                   home_kind, depot_kind)


def depart(const int64_t[::1] ids, int64_t k, const int64_t[:, ::1] leg_dep,
           const double[:, ::1] leg_km, const int64_t[::1] head, uint8_t[::1] driving,
           int64_t[::1] plug, int64_t[::1] site, int64_t[:, ::1] used, uint8_t[::1] charging,
           uint8_t[::1] wants, uint8_t[::1] waiting, const double[::1] req_kwh,
           double[::1] e_kwh, const double[::1] cap_kwh, const double[::1] kwh_per_km,
           double soc_min, double[::1] unmet_kwh, double[::1] driven_kwh,
           double[::1] shortfall_kwh, double[::1] p_ch_lim, double[::1] p_dis_lim,
           int8_t[::1] last_dir, double[::1] extreme, double[:, ::1] tp_buf,
           int64_t[::1] tp_n, double[::1] unmet_buf):
    """EVs ``ids`` leave at step ``k`` on their current leg.

    Unplugs them (frees the charger), books the energy still missing of those that wanted to
    charge (``unmet_kwh``; the values, in ``ids`` order, also in ``unmet_buf``), ends waiting,
    and takes the trip's energy from the battery down to ``soc_min`` (the rest is a shortfall),
    recording the SoC change as the ageing model's ``observe`` does. Returns ``(n_unplugged,
    n_unmet, n_gave_up, n_short, flush)``, or ``None`` (nothing changed) when the trip plan
    does not match (a leg not departing at ``k``, or an EV already driving).
    """
    cdef Py_ssize_t i, j, n = ids.shape[0], m = leg_dep.shape[1]
    cdef Py_ssize_t n_unplugged = 0, n_unmet = 0, n_gave_up = 0, n_short = 0
    cdef bint flush = False
    cdef double unmet, e_trip, avail, used_kwh, cap, e_old, e_new
    for i in range(n):
        j = ids[i]
        if leg_dep[j, head[j] % m] != k or driving[j]:
            return None
    for i in range(n):
        j = ids[i]
        if plug[j] >= 0:
            used[site[j], plug[j]] -= 1
            charging[j] = 0
            n_unplugged += 1
        if wants[j]:
            unmet = req_kwh[j] - e_kwh[j]
            if not unmet > 0.0:
                unmet = 0.0
            unmet_kwh[j] += unmet
            unmet_buf[n_unmet] = unmet
            n_unmet += 1
        if waiting[j]:
            n_gave_up += 1
        e_trip = leg_km[j, head[j] % m] * kwh_per_km[j]
        cap = cap_kwh[j]
        e_old = e_kwh[j]
        avail = e_old - soc_min * cap
        if not avail > 0.0:
            avail = 0.0
        used_kwh = e_trip if e_trip < avail else avail
        if e_trip > avail + 1e-9:
            n_short += 1
        e_new = e_old - used_kwh
        e_kwh[j] = e_new
        driven_kwh[j] += used_kwh
        shortfall_kwh[j] += e_trip - used_kwh
        if _turn(j, e_old / cap, e_new / cap, last_dir, extreme, tp_buf, tp_n):
            flush = True
        plug[j] = -1
        p_ch_lim[j] = 0.0
        p_dis_lim[j] = 0.0
        waiting[j] = 0
        wants[j] = 0
        site[j] = -1
        driving[j] = 1
    return n_unplugged, n_unmet, n_gave_up, n_short, flush
