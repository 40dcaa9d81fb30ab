"""Per-step EV power allocation of the SDG coordinator: compiled kernel.

Given the plugged EVs of one step (energy still needed by departure, time to departure, power
bounds), each site's connection capacity and PV surplus, and the zone's grid budget, return each
EV's mean power over the step (load convention: positive charges, negative discharges). The
public entry point, with the meaning and units of every argument, is
``ext.dispatch_api.allocate``; ``ext/dispatch_np.py`` is the NumPy twin of this module.

Method. Urgency is *laxity*: the time an EV can still wait before it must charge at full power,
``lax = t_dep - need / (eta_ch * p_rate)`` [h], with ``p_rate`` the charge power assumed for the
rest of the stay. Charging at ``p`` for one step of ``dt`` hours leaves the laxity
``lax - dt + p * dt / p_rate``, linear in ``p``. Sharing a power budget "least laxity first with
water-filling" means choosing one level ``lam`` and giving every EV the power that brings its
laxity after the step up to ``lam``, within its bounds ``[lo, hi]``:

    p_i(lam) = clip(lo_i + a_i * (lam - bl_i), lo_i, hi_i),   a_i = p_rate_i / dt,
    bl_i = c_i + lo_i * dt / p_rate_i,   bh_i = c_i + hi_i * dt / p_rate_i,   c_i = lax_i - dt.

EVs of equal laxity end equal; the most urgent start first. The total ``S(lam)`` is continuous,
non-decreasing and piecewise linear with breakpoints ``bl_i, bh_i``. The level solving
``S(lam) = sum(lo) + budget`` is found by randomised selection over the breakpoints, without
sorting: pick a median-of-three pivot breakpoint, evaluate ``S`` over the EVs whose breakpoints
are still inside the bracket, keep the half that holds the level, and move EVs that became
constant or linear on the bracket into running sums (kept relative to a moving reference point
inside the bracket, so every term is a power between an EV's bounds and nothing large cancels).
Each round removes at least one breakpoint from the bracket and, in expectation, a constant
share of them: expected O(N) per level (O(N^2) only with vanishing probability), O(N) memory.
The pivot generator is seeded identically on every call, so results are deterministic.
Discharge uses the same machinery mirrored: the EVs with the largest laxity give power first,
and the level is capped where their laxity after the step would reach zero (departure need
still feasible).

Phases, in priority order: (1) mandatory power (laxity after the step at least 0), water-filled
within a site whose connection cannot carry it all; (2) each site's PV surplus to its own EVs;
(3) the rest of a positive grid budget across the zone, each site held to its capacity by a
per-site level; (4) for a negative budget, discharge of V2G EVs that are not charging until
``-grid_budget_kw`` is delivered, each site held to ``-capacity`` net.

Layout: the EVs are copied once, grouped by site (counting sort, index order kept within a
site), into one 64-byte record each, so that every per-site pass reads contiguous memory; a
site's PV level and cap level run back to back while its records are in cache. The hot loops
are branch-free (min/max clipping, 0/1 flags, compaction by an advancing slot): written as
conditionals, the compiler turns some clips into branches that mispredict on every other EV,
so the clips use the processor's min/max instructions directly (``_min``/``_max``). Everything runs
without the GIL; the Python wrapper validates scalars and turns the status code into an
exception.

Numerical guards (the same in the twin): inputs are limited to ranges that keep every
intermediate finite (see ``ext.dispatch_api``), charge rates below 1e-9 kW count as 0 and
laxities are held within +-1e9 h.
"""

from libc.math cimport INFINITY
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc

cdef extern from *:
    """
    /* max(x, y) = x > y ? x : y and min(x, y) = x < y ? x : y (a NaN x gives y) as single
       instructions on x86-64: as plain conditionals the compiler emits branches in some
       loops, and a mispredicted branch per EV costs more than all of its arithmetic. */
    #if defined(__GNUC__) && defined(__x86_64__)
    static inline double sdg_max(double x, double y) {
        __asm__("maxsd %1, %0" : "+x"(x) : "x"(y));
        return x;
    }
    static inline double sdg_min(double x, double y) {
        __asm__("minsd %1, %0" : "+x"(x) : "x"(y));
        return x;
    }
    #else
    static inline double sdg_max(double x, double y) { return x > y ? x : y; }
    static inline double sdg_min(double x, double y) { return x < y ? x : y; }
    #endif
    """
    double _max "sdg_max"(double x, double y) noexcept nogil
    double _min "sdg_min"(double x, double y) noexcept nogil

cdef double EPS_KW = 1e-9
cdef double FEAS_TOL = 1e-9
# Input ranges that keep every intermediate finite (see ext.dispatch_api): energies, times and
# powers; charge rates below RATE_FLOOR_KW count as 0 and laxities are held within LAX_MAX_H.
cdef double MAX_KWH = 1e9
cdef double MAX_S = 1e12
cdef double MAX_KW = 1e9
cdef double RATE_FLOOR_KW = 1e-9
cdef double LAX_MAX_H = 1e9
cdef double INV_3600 = 1.0 / 3600.0
cdef Py_ssize_t _N_TOTALS = 6
N_TOTALS = _N_TOTALS

# Fields of an EV record (8 doubles, one cache line).
cdef enum:
    R_A = 0       # charge slope p_rate / dt [kW/h]
    R_INV_A = 1   # dt / p_rate (0 when p_rate = 0) [h/kW]
    R_C = 2       # laxity - dt [h]
    R_HMAX = 3    # most charge power this step; later the site-capped bound [kW]
    R_DMAX = 4    # most discharge power keeping the need feasible; 0 if not a candidate [kW]
    R_P = 5       # power so far [kW]
    R_PNEED = 6   # power that leaves the need exactly feasible (any sign, unclamped) [kW]
    R_IDX = 7     # index of the EV in the inputs
    R_LEN = 8

# What the bounds of a level are, per phase.
cdef enum:
    MODE_MAND = 0  # lo 0, hi p (the mandatory power)
    MODE_CHG = 1   # lo p, hi hmax
    MODE_DIS = 2   # lo 0, hi dmax, mirrored laxity, slopes scaled by eta_ch * eta_dis

ctypedef struct Seg:
    double lo
    double hi
    double a
    double bl
    double bh

ctypedef struct Work:
    # segments of the EVs that can move, structure of arrays [kW], [kW], [kW/h], [h], [h]
    double* lo
    double* hi
    double* a
    double* bl
    double* bh


cdef inline void _seg(const double* rec, int mode, double k_a, double k_inv,
                      Seg* s) noexcept nogil:
    """Bounds, slope and breakpoints of one EV in ``mode`` (it can move if hi > lo)."""
    cdef double inv, c
    if mode == MODE_CHG:
        s.lo = rec[R_P]
        s.hi = rec[R_HMAX]
        s.a = rec[R_A]
        inv = rec[R_INV_A]
        c = rec[R_C]
    elif mode == MODE_MAND:
        s.lo = 0.0
        s.hi = rec[R_P]
        s.a = rec[R_A]
        inv = rec[R_INV_A]
        c = rec[R_C]
    else:
        s.lo = 0.0
        s.hi = rec[R_DMAX]
        s.a = rec[R_A] * k_a
        inv = rec[R_INV_A] * k_inv
        c = -rec[R_C]
    s.bl = c + s.lo * inv
    s.bh = c + s.hi * inv


cdef inline double _clip_at(double lam, double lo, double hi, double a,
                            double bl) noexcept nogil:
    """Power at level ``lam``, clipped to ``[lo, hi]`` (min/max, no branches)."""
    return _min(_max(lo + a * (lam - bl), lo), hi)


cdef inline double _at(const double* rec, int mode, double k_a, double k_inv,
                       double lam) noexcept nogil:
    """Power of one EV at level ``lam`` in ``mode`` (its ``lo`` if it cannot move)."""
    cdef Seg s
    _seg(rec, mode, k_a, k_inv, &s)
    # hi <= lo means hi == lo here; a NaN from a = 0 fails the first comparison and gives lo
    return _clip_at(lam, s.lo, s.hi, s.a, s.bl)


cdef inline uint64_t _xorshift(uint64_t* state) noexcept nogil:
    cdef uint64_t x = state[0]
    x ^= x << 13
    x ^= x >> 7
    x ^= x << 17
    state[0] = x
    return x


cdef inline double _inside(const Work* w, Py_ssize_t n, double lo_b, double hi_b,
                           uint64_t* rng) noexcept nogil:
    """A breakpoint strictly inside ``(lo_b, hi_b)`` of a random segment (each has one)."""
    # multiply-shift maps 32 random bits to [0, n) without a division
    cdef Py_ssize_t k = <Py_ssize_t>(((_xorshift(rng) >> 32) * <uint64_t>n) >> 32)
    if w.bl[k] > lo_b and w.bl[k] < hi_b:
        return w.bl[k]
    return w.bh[k]


cdef inline double _median3(double v1, double v2, double v3) noexcept nogil:
    cdef double t
    if v1 > v2:
        t = v1
        v1 = v2
        v2 = t
    return v2 if v2 < v3 else (v3 if v3 > v1 else v1)


cdef inline double _pivot(const Work* w, Py_ssize_t n, double lo_b, double hi_b,
                          uint64_t* rng) noexcept nogil:
    """Median of three random inside breakpoints; median of three such medians for large n."""
    cdef double v1 = _median3(_inside(w, n, lo_b, hi_b, rng), _inside(w, n, lo_b, hi_b, rng),
                              _inside(w, n, lo_b, hi_b, rng))
    if n < 256:
        return v1
    return _median3(v1,
                    _median3(_inside(w, n, lo_b, hi_b, rng), _inside(w, n, lo_b, hi_b, rng),
                             _inside(w, n, lo_b, hi_b, rng)),
                    _median3(_inside(w, n, lo_b, hi_b, rng), _inside(w, n, lo_b, hi_b, rng),
                             _inside(w, n, lo_b, hi_b, rng)))


cdef double _sum_at(double v, Py_ssize_t n, const Work* w) noexcept nogil:
    """Sum of the segments' powers at level ``v`` (four accumulators for throughput)."""
    cdef const double* lo = w.lo
    cdef const double* hi = w.hi
    cdef const double* a = w.a
    cdef const double* bl = w.bl
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef Py_ssize_t k = 0
    while k + 4 <= n:
        s0 += _clip_at(v, lo[k], hi[k], a[k], bl[k])
        s1 += _clip_at(v, lo[k + 1], hi[k + 1], a[k + 1], bl[k + 1])
        s2 += _clip_at(v, lo[k + 2], hi[k + 2], a[k + 2], bl[k + 2])
        s3 += _clip_at(v, lo[k + 3], hi[k + 3], a[k + 3], bl[k + 3])
        k += 4
    while k < n:
        s0 += _clip_at(v, lo[k], hi[k], a[k], bl[k])
        k += 1
    return (s0 + s1) + (s2 + s3)


cdef Py_ssize_t _filter(Work* w, Py_ssize_t n, double lo_b, double hi_b, double ref,
                        double* fixed, double* sa, double* s_ref) noexcept nogil:
    """Move segments constant or linear on ``[lo_b, hi_b]`` into the sums; keep the rest.

    Branch-free: the flags are 0/1 integers, every segment is copied to the next free slot
    and the slot advances only for kept ones. Two sets of accumulators shorten the add chains.
    """
    cdef double* lo = w.lo
    cdef double* hi = w.hi
    cdef double* a = w.a
    cdef double* bl = w.bl
    cdef double* bh = w.bh
    cdef double f0 = 0.0, f1 = 0.0, a0 = 0.0, a1 = 0.0, r0 = 0.0, r1 = 0.0
    cdef double l, h, aa, b0, b1, lin
    cdef int hf, lf, li
    cdef Py_ssize_t k, n2 = 0
    for k in range(n):
        l = lo[k]
        h = hi[k]
        aa = a[k]
        b0 = bl[k]
        b1 = bh[k]
        hf = b1 <= lo_b
        lf = b0 >= hi_b
        li = (b0 <= lo_b) & (b1 >= hi_b)
        lin = <double>li
        lo[n2] = l
        hi[n2] = h
        a[n2] = aa
        bl[n2] = b0
        bh[n2] = b1
        n2 += 1 - (hf | lf | li)
        if k & 1:
            f1 += <double>hf * h + <double>lf * l
            a1 += lin * aa
            r1 += lin * (l + aa * (ref - b0))
        else:
            f0 += <double>hf * h + <double>lf * l
            a0 += lin * aa
            r0 += lin * (l + aa * (ref - b0))
    fixed[0] += f0 + f1
    sa[0] += a0 + a1
    s_ref[0] += r0 + r1
    return n2


cdef double _level(const double* rec, Py_ssize_t m, int mode, double extra, double k_a,
                   double k_inv, Work* w) noexcept nogil:
    """Level at which the ``m`` records at ``rec`` take ``sum(lo) + extra`` in total.

    Returns ``-inf`` when no EV can move or ``extra <= 0``, ``+inf`` when ``extra`` covers all
    their room. ``w`` is scratch space for ``m`` segments.
    """
    cdef Py_ssize_t k, n = 0
    cdef Seg s
    cdef int act
    cdef double sum_lo = 0.0, room = 0.0, target, lo_b = -INFINITY, hi_b = INFINITY
    cdef double fixed = 0.0, sa = 0.0, s_ref = 0.0, ref = 0.0, f, v, x
    cdef uint64_t rng = 0x9E3779B97F4A7C15ULL
    for k in range(m):
        _seg(rec + k * R_LEN, mode, k_a, k_inv, &s)
        act = s.hi > s.lo
        w.lo[n] = s.lo
        w.hi[n] = s.hi
        w.a[n] = s.a
        w.bl[n] = s.bl
        w.bh[n] = s.bh
        sum_lo += <double>act * s.lo
        room += <double>act * (s.hi - s.lo)
        n += act
    if n == 0 or not (extra > 0.0):
        return -INFINITY
    if extra >= room:
        return INFINITY
    target = sum_lo + extra
    # Invariants: lo_b <= lam* <= hi_b; every segment in w[:n] has a breakpoint strictly inside
    # the bracket; the segments linear on it sum to s_ref + sa * (lam - ref), those below or
    # above it to fixed.
    v = _pivot(w, n, lo_b, hi_b, &rng)
    f = _sum_at(v, n, w)
    while True:
        f += fixed + s_ref + sa * (v - ref)
        if f < target:
            lo_b = v
        elif f > target:
            hi_b = v
        else:
            return v
        s_ref += sa * (v - ref)
        ref = v
        n = _filter(w, n, lo_b, hi_b, ref, &fixed, &sa, &s_ref)
        if n == 0:
            break
        v = _pivot(w, n, lo_b, hi_b, &rng)
        f = _sum_at(v, n, w)
    if sa > 0.0:
        x = ref + (target - fixed - s_ref) / sa
        if x < lo_b:
            x = lo_b
        if x > hi_b:
            x = hi_b
        return x
    return ref  # S is flat on the bracket: any point of it gives the same powers


cdef inline bint _bad(int code, Py_ssize_t i, const double* need, const double* t_dep,
                      const double* p_max, const double* p_min, const double* p_rate,
                      const int64_t* site, Py_ssize_t n_site) noexcept nogil:
    if code == 1:
        return not (need[i] >= 0.0 and need[i] <= MAX_KWH)
    if code == 2:
        return not (t_dep[i] > 0.0 and t_dep[i] <= MAX_S)
    if code == 3:
        return not (p_max[i] >= 0.0 and p_max[i] <= MAX_KW)
    if code == 4:
        return not (p_min[i] <= 0.0 and p_min[i] >= -MAX_KW)
    if code == 5:
        return not (p_rate[i] >= 0.0 and p_rate[i] <= MAX_KW)
    return not (site[i] >= 0 and site[i] < n_site)


cdef int _first_bad(Py_ssize_t n, Py_ssize_t n_site, const double* need, const double* t_dep,
                    const double* p_max, const double* p_min, const double* p_rate,
                    const int64_t* site, const double* cap, const double* pv,
                    Py_ssize_t* bad) noexcept nogil:
    """Argument code (1..8) and first element of the first invalid argument; 0 if none."""
    cdef int code
    cdef Py_ssize_t i
    for code in range(1, 7):
        for i in range(n):
            if _bad(code, i, need, t_dep, p_max, p_min, p_rate, site, n_site):
                bad[0] = i
                return code
    for i in range(n_site):
        if not (cap[i] >= 0.0 and cap[i] <= MAX_KW):
            bad[0] = i
            return 7
    for i in range(n_site):
        if not (pv[i] >= 0.0 and pv[i] <= MAX_KW):
            bad[0] = i
            return 8
    return 0


cdef int _allocate(Py_ssize_t n, Py_ssize_t n_site, const double* need, const double* t_dep,
                   const double* p_max, const double* p_min, const double* p_rate,
                   const int64_t* site, const double* cap, const double* pv, double budget,
                   double step_s, double eta_ch, double eta_dis, double* p_out, double* pv_used,
                   double* shortfall, double* site_p, double* totals,
                   Py_ssize_t* bad) noexcept nogil:
    """The whole step. Returns 0, an argument code 1..8 (``bad`` = element), or -1 (memory)."""
    cdef Py_ssize_t i, k, s, m, b0
    cdef int64_t j
    cdef double dt_h = step_s / 3600.0
    cdef double inv_dt = 1.0 / dt_h, inv_den = 1.0 / (eta_ch * dt_h)
    cdef double eta_cd = eta_ch * eta_dis
    cdef double k_cd = 1.0 / eta_cd
    cdef double r, rate, t_h, after, lax, inv_a, x, y, pm, lam, rest, grid_rest = 0.0
    cdef double mand_total = 0.0, grid = 0.0, discharge = 0.0, charge = 0.0, y_need
    cdef Py_ssize_t n_infeasible = 0, n_cap_limited = 0
    cdef int global_mode = -1
    cdef double* rec
    cdef double* q

    for i in range(n_site):
        if not (cap[i] >= 0.0 and cap[i] <= MAX_KW and pv[i] >= 0.0 and pv[i] <= MAX_KW):
            return _first_bad(n, n_site, need, t_dep, p_max, p_min, p_rate, site, cap, pv, bad)

    # one block: records (64-byte aligned), scratch segments, site sums, site offsets
    cdef size_t n_bytes = (<size_t>n * R_LEN * sizeof(double) + 64 + 5 * <size_t>n * sizeof(double)
                           + 3 * <size_t>n_site * sizeof(double)
                           + 2 * (<size_t>n_site + 1) * sizeof(int64_t))
    cdef char* block = <char*>malloc(n_bytes)
    if block == NULL:
        return -1
    cdef double* recs = <double*>((<uintptr_t>block + 63) & ~(<uintptr_t>63))
    cdef Work work
    work.lo = recs + n * R_LEN
    work.hi = work.lo + n
    work.a = work.hi + n
    work.bl = work.a + n
    work.bh = work.bl + n
    cdef Work* w = &work
    cdef double* chg_s = work.bh + n   # charging power per site [kW]
    cdef double* mand_s = chg_s + n_site  # mandatory power per site [kW]
    cdef double* room_s = mand_s + n_site  # sum of hmax - p over a site's EVs [kW]
    cdef int64_t* start = <int64_t*>(room_s + n_site)
    cdef int64_t* fill = start + n_site + 1

    # -- group the EVs by site (counting sort, index order kept within a site)
    for s in range(n_site + 1):
        start[s] = 0
    for i in range(n):
        if <uint64_t>site[i] >= <uint64_t>n_site:  # negative indices wrap to huge values
            free(block)
            return _first_bad(n, n_site, need, t_dep, p_max, p_min, p_rate, site, cap, pv, bad)
        start[site[i] + 1] += 1
    for s in range(n_site):
        start[s + 1] += start[s]
        fill[s] = start[s]
        mand_s[s] = 0.0
        room_s[s] = 0.0

    # -- per EV: laxity, mandatory power, charge and discharge room (and the remaining checks)
    for i in range(n):
        # one branch for all checks (comparisons with NaN are false)
        if not ((need[i] >= 0.0) & (need[i] <= MAX_KWH) & (t_dep[i] > 0.0)
                & (t_dep[i] <= MAX_S) & (p_max[i] >= 0.0) & (p_max[i] <= MAX_KW)
                & (p_min[i] <= 0.0) & (p_min[i] >= -MAX_KW) & (p_rate[i] >= 0.0)
                & (p_rate[i] <= MAX_KW)):
            free(block)
            return _first_bad(n, n_site, need, t_dep, p_max, p_min, p_rate, site, cap, pv, bad)
        rate = _max(p_rate[i], p_max[i])  # never below this step's
        rate = rate if rate >= RATE_FLOOR_KW else 0.0
        r = eta_ch * rate
        t_h = t_dep[i] * INV_3600
        after = t_h - dt_h
        if after < 0.0:
            after = 0.0
        inv_a = dt_h / rate if rate > 0.0 else 0.0
        if r > 0.0:
            lax = t_h - need[i] * (inv_a * inv_den)  # need / r without a second division
        elif need[i] > 0.0:
            lax = -LAX_MAX_H
        else:
            lax = t_h
        if lax < -LAX_MAX_H:
            lax = -LAX_MAX_H
        if lax > LAX_MAX_H:
            lax = LAX_MAX_H
        j = fill[site[i]]
        fill[site[i]] += 1
        rec = recs + j * R_LEN
        rec[R_A] = rate * inv_dt
        rec[R_INV_A] = inv_a
        rec[R_C] = lax - dt_h
        x = need[i] * inv_den
        y = p_max[i] if p_max[i] >= RATE_FLOOR_KW else 0.0
        x = _min(y, x)
        rec[R_HMAX] = x
        y = (need[i] - r * after) * inv_den
        rec[R_PNEED] = y
        pm = _min(x, _max(y, 0.0))
        rec[R_P] = pm
        x -= pm
        room_s[site[i]] += _max(x, 0.0)
        rec[R_DMAX] = _max(_min(-p_min[i], -eta_cd * y), 0.0)
        rec[R_IDX] = <double>i
        mand_s[site[i]] += pm
        mand_total += pm

    # -- 1. mandatory power, levelled within sites whose connection cannot carry it
    x = 0.0
    for s in range(n_site):
        shortfall[s] = 0.0
        chg_s[s] = mand_s[s]
        if mand_s[s] > cap[s]:
            shortfall[s] = mand_s[s] - cap[s]
            b0 = start[s]
            m = start[s + 1] - b0
            lam = _level(recs + b0 * R_LEN, m, MODE_MAND, cap[s], 0.0, 0.0, w)
            y = 0.0
            rest = 0.0
            for k in range(b0, b0 + m):
                q = recs + k * R_LEN
                pm = q[R_P]
                q[R_P] = _at(q, MODE_MAND, 0.0, 0.0, lam)
                if pm - q[R_P] > FEAS_TOL * (1.0 + pm):
                    n_cap_limited += 1
                y += q[R_P]
                rest += _max(q[R_HMAX] - q[R_P], 0.0)
            chg_s[s] = y
            room_s[s] = rest
        if chg_s[s] - pv[s] > 0.0:
            x += chg_s[s] - pv[s]  # mandatory power the local PV does not cover
    if budget > 0.0:
        grid_rest = budget - x
        if grid_rest > 0.0:
            global_mode = MODE_CHG
    elif budget < 0.0:
        global_mode = MODE_DIS

    # -- per site, while its records are in cache: 2. its PV surplus to its EVs, then the level
    # that holds it to its capacity in the zone-wide phase (3. charging or 4. discharging)
    for s in range(n_site):
        b0 = start[s]
        m = start[s + 1] - b0
        x = chg_s[s]
        rest = pv[s] - x
        if rest < 0.0:
            rest = 0.0
        if rest > cap[s] - x:
            rest = cap[s] - x
        if rest > 0.0 and room_s[s] > 0.0:
            # when all of the room fits, every EV goes to its bound without a level
            lam = INFINITY if rest >= room_s[s] else _level(recs + b0 * R_LEN, m, MODE_CHG, rest,
                                                              0.0, 0.0, w)
            x = 0.0
            y = 0.0
            for k in range(b0, b0 + m):
                q = recs + k * R_LEN
                q[R_P] = _at(q, MODE_CHG, 0.0, 0.0, lam)
                x += q[R_P]
                y += _max(q[R_HMAX] - q[R_P], 0.0)
            chg_s[s] = x
            room_s[s] = y
        if global_mode == MODE_CHG:
            x = cap[s] - chg_s[s]
            if x < 0.0:
                x = 0.0
            if room_s[s] > 0.0 and x < room_s[s]:
                # no room on the connection (x = 0): the level is -inf, every EV stays put
                lam = _level(recs + b0 * R_LEN, m, MODE_CHG, x, 0.0, 0.0, w) if x > 0.0 \
                    else -INFINITY
                for k in range(b0, b0 + m):
                    q = recs + k * R_LEN
                    q[R_HMAX] = _at(q, MODE_CHG, 0.0, 0.0, lam)  # hi <- p(lam)
        elif global_mode == MODE_DIS:
            # candidates: V2G EVs with slack that do not charge (a trace of PV power is dropped)
            x = 0.0
            y = 0.0
            for k in range(b0, b0 + m):
                q = recs + k * R_LEN
                if q[R_DMAX] > 0.0 and q[R_P] <= EPS_KW:
                    q[R_P] = 0.0
                else:
                    q[R_DMAX] = 0.0
                x += q[R_P]
                y += q[R_DMAX]
            chg_s[s] = x
            if y > cap[s] + x:  # the site's discharge room exceeds what its connection carries
                lam = _level(recs + b0 * R_LEN, m, MODE_DIS, cap[s] + x, eta_cd, k_cd, w)
                for k in range(b0, b0 + m):
                    q = recs + k * R_LEN
                    q[R_DMAX] = _at(q, MODE_DIS, eta_cd, k_cd, lam)  # hi <- d(lam)

    # -- the zone-wide level: 3. rest of a positive grid budget, or 4. the discharge asked for
    lam = -INFINITY
    if global_mode == MODE_CHG:
        lam = _level(recs, n, MODE_CHG, grid_rest, 0.0, 0.0, w)
    elif global_mode == MODE_DIS:
        lam = _level(recs, n, MODE_DIS, -budget, eta_cd, k_cd, w)

    # -- final powers, accounting, and the powers back in input order
    for s in range(n_site):
        x = 0.0
        y = 0.0
        for k in range(start[s], start[s + 1]):
            q = recs + k * R_LEN
            if global_mode == MODE_CHG:
                q[R_P] = _at(q, MODE_CHG, 0.0, 0.0, lam)
            elif global_mode == MODE_DIS and q[R_DMAX] > 0.0:
                q[R_P] = -_at(q, MODE_DIS, eta_cd, k_cd, lam)
            rest = q[R_P]
            x += _max(rest, 0.0)
            y += _max(-rest, 0.0)
            y_need = q[R_PNEED]
            pm = y_need if rest >= 0.0 else eta_cd * y_need
            n_infeasible += rest < pm - FEAS_TOL * (1.0 + _max(y_need, -y_need))
            p_out[<Py_ssize_t>q[R_IDX]] = rest
        pv_used[s] = pv[s] if pv[s] < x else x
        site_p[s] = x - y
        grid += x - pv_used[s]
        discharge += y
        charge += x
    totals[0] = mand_total
    totals[1] = grid
    totals[2] = discharge
    totals[3] = charge
    totals[4] = <double>n_infeasible
    totals[5] = <double>n_cap_limited
    free(block)
    return 0


cdef inline const double* _dptr(const double[::1] x) noexcept:
    return &x[0] if x.shape[0] > 0 else NULL


def allocate_into(const double[::1] need_kwh, const double[::1] t_dep_s,
                  const double[::1] p_max_kw, const double[::1] p_min_kw,
                  const double[::1] p_rate_kw, const int64_t[::1] site,
                  const double[::1] site_cap_kw, const double[::1] site_pv_kw,
                  double grid_budget_kw, double step_s, double eta_ch, double eta_dis,
                  double[::1] p_kw, double[:, ::1] site_out, double[::1] totals):
    """Allocate one step's EV power into ``p_kw``, ``site_out`` and ``totals``.

    Inputs are float64 (``site`` int64) C-contiguous arrays; ``step_s > 0`` and the
    efficiencies in ``(0, 1]`` are the caller's to check. ``site_out`` (3, n_site) receives PV
    used, mandatory shortfall and net EV power per site [kW]; ``totals`` (6,) mandatory, grid,
    discharge and charge power [kW], then the counts of EVs left infeasible and of EVs given
    less than their mandatory power. Returns ``(code, index)``: ``(0, -1)`` on success, else the
    1-based number of the first invalid array argument (need, t_dep, p_max, p_min, p_rate,
    site, site_cap, site_pv) and the index of its first invalid element.
    """
    cdef Py_ssize_t n = need_kwh.shape[0], n_site = site_cap_kw.shape[0]
    cdef Py_ssize_t bad = -1
    cdef int status
    if (t_dep_s.shape[0] != n or p_max_kw.shape[0] != n or p_min_kw.shape[0] != n
            or p_rate_kw.shape[0] != n or site.shape[0] != n or p_kw.shape[0] != n
            or site_pv_kw.shape[0] != n_site or site_out.shape[0] != 3
            or site_out.shape[1] != n_site or totals.shape[0] < _N_TOTALS):
        raise ValueError("allocate_into: array sizes do not match")
    cdef const double* need_p = _dptr(need_kwh)
    cdef const double* t_p = _dptr(t_dep_s)
    cdef const double* pmax_p = _dptr(p_max_kw)
    cdef const double* pmin_p = _dptr(p_min_kw)
    cdef const double* rate_p = _dptr(p_rate_kw)
    cdef const int64_t* site_p = &site[0] if n > 0 else NULL
    cdef const double* cap_p = _dptr(site_cap_kw)
    cdef const double* pv_p = _dptr(site_pv_kw)
    cdef double* p_p = &p_kw[0] if n > 0 else NULL
    cdef double* out_p = &site_out[0, 0] if n_site > 0 else NULL
    cdef double* tot_p = &totals[0]
    with nogil:
        status = _allocate(n, n_site, need_p, t_p, pmax_p, pmin_p, rate_p, site_p, cap_p, pv_p,
                           grid_budget_kw, step_s, eta_ch, eta_dis, p_p, out_p,
                           out_p + n_site if n_site > 0 else NULL,
                           out_p + 2 * n_site if n_site > 0 else NULL, tot_p, &bad)
    if status < 0:
        raise MemoryError("allocate_into: out of memory")
    return status, bad
