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

Phases 2 and 3 share one level per site: an EV's power is the same line ``a_i * (lam - c_i)``
in every phase, only clipped, so after phase 2 at level ``lam2`` and a cap level ``lamc``
the zone-wide level sees a site's EVs as ``p_i(median(lam2, lam, lamc))``, whose sum is
``S_s(lam)`` clamped to [its PV share, its connection]. When the zone-wide level is charging,
phases 2 and 3 are therefore solved together: the zone-wide level runs over the sites' sums
clamped to those bounds (``_level_clamped``), and a site's own level is computed only where a
bound binds at the result (usually a few sites out of many). The powers are those of the
phases one after the other up to rounding (within 1e-10 kW on random zones).

Layout: the EVs are copied once, grouped by site (counting sort, index order kept within a
site), into one 64-byte record each, so that every per-site pass reads contiguous memory; a
site's levels run while its records are in cache. The hot loops are branch-free (min/max
clipping, 0/1 flags, compaction by an advancing slot): written as conditionals, the compiler
turns some clips into branches that mispredict on every other EV, so the clips use the
processor's min/max instructions directly (``_min``/``_max``). The loops that touch every EV
(the per-EV pass, the segments of a level, its rounds, the final pass) are written in C with
SSE2 intrinsics, two EVs per instruction; SSE2 is part of every x86-64 processor, other
processors (or a build with ``-DSDG_NO_SIMD``) take the plain C loops, which do the same
operations in the same order and give identical results. Everything runs without the GIL; the
Python wrapper validates scalars and turns the status code into an exception.

Numerical guards (the same in the twin): inputs are limited to ranges that keep every
intermediate finite (see ``ext.dispatch_api``), charge rates below 1e-9 kW count as 0 and
laxities are held within +-1e9 h.

The coordinator's other per-step passes over its EVs and trades live here too, each a plain
loop where NumPy needs a dozen array operations: its view of the plugged EVs
(``plugged_into``), the step's PV and factory totals (``supply_into``), the whole step of the
``pv_following`` strategy (``charge_into``: targets, PV per site, the allocations of mandatory
power, PV and the off-peak fill, in a work array the caller keeps for every step, sized by
``charge_work_size``), what the EVs do with its set-points (``done_into``), the transport
tables of the settlement (``north_west_into``), the whole settlement (``settle_into``) and its
list of trades (``listed_trades``). They use NumPy's maxima, minima and summation order
(pairwise sums as ``numpy.sum`` adds them, ``_np_sum``), so their twins give the same values to
the bit (``charge_into``: given the same allocation kernel). The per-step ones (all but
``north_west_into``) take NumPy arrays (C-contiguous float64; indices int64, flags uint8;
outputs writable) and raise a ``ValueError`` naming the kernel and the argument for any other.
"""

cimport numpy as cnp
from libc.math cimport INFINITY, NAN
from libc.stdint cimport int64_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc

from ext.arrays cimport array_data

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
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

# Constants as C macros, not module variables: the compiler must reload a variable after every
# store through a pointer in the loops, a literal costs nothing.
cdef extern from *:
    """
    #define SDG_EPS_KW 1e-9
    #define SDG_FEAS_TOL 1e-9
    #define SDG_MAX_KWH 1e9
    #define SDG_MAX_S 1e12
    #define SDG_MAX_KW 1e9
    #define SDG_RATE_FLOOR_KW 1e-9
    #define SDG_LAX_MAX_H 1e9
    #define SDG_INV_3600 (1.0 / 3600.0)
    """
    const double EPS_KW "SDG_EPS_KW"
    const double FEAS_TOL "SDG_FEAS_TOL"
    # Input ranges that keep every intermediate finite (see ext.dispatch_api): energies, times
    # and powers; charge rates below RATE_FLOOR_KW count as 0, laxities are held within
    # LAX_MAX_H.
    const double MAX_KWH "SDG_MAX_KWH"
    const double MAX_S "SDG_MAX_S"
    const double MAX_KW "SDG_MAX_KW"
    const double RATE_FLOOR_KW "SDG_RATE_FLOOR_KW"
    const double LAX_MAX_H "SDG_LAX_MAX_H"
    const double INV_3600 "SDG_INV_3600"

cdef extern from *:
    """
    /* The two loops of a level's rounds, two EVs per instruction with SSE2 (part of every
       x86-64 processor) and plainly elsewhere or with SDG_NO_SIMD. Lane 0 holds the even
       positions, lane 1 the odd ones: the same accumulators, added in the same order, as the
       scalar code, so both give identical results. */
    #if defined(__SSE2__) && !defined(SDG_NO_SIMD)
    #include <emmintrin.h>
    #define SDG_SIMD 1
    /* Lane 0 or 1 of a pair. */
    static inline double sdg_lane(__m128d v, int lane) {
        return _mm_cvtsd_f64(lane ? _mm_unpackhi_pd(v, v) : v);
    }
    #else
    #define SDG_SIMD 0
    #endif

    /* Sum over k < n of min(max(lo + a * (v - bl), lo), hi); accumulator k mod 4, the tail
       into the first, summed as (s0 + s1) + (s2 + s3). */
    static double sdg_sum_at(double v, Py_ssize_t n, const double* lo, const double* hi,
                             const double* a, const double* bl) {
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        Py_ssize_t k = 0;
    #if SDG_SIMD
        __m128d vv = _mm_set1_pd(v), acc01 = _mm_setzero_pd(), acc23 = _mm_setzero_pd();
        for (; k + 4 <= n; k += 4) {
            __m128d l01 = _mm_loadu_pd(lo + k), l23 = _mm_loadu_pd(lo + k + 2);
            __m128d t01 = _mm_add_pd(l01, _mm_mul_pd(_mm_loadu_pd(a + k),
                                                     _mm_sub_pd(vv, _mm_loadu_pd(bl + k))));
            __m128d t23 = _mm_add_pd(l23, _mm_mul_pd(_mm_loadu_pd(a + k + 2),
                                                     _mm_sub_pd(vv, _mm_loadu_pd(bl + k + 2))));
            t01 = _mm_min_pd(_mm_max_pd(t01, l01), _mm_loadu_pd(hi + k));
            t23 = _mm_min_pd(_mm_max_pd(t23, l23), _mm_loadu_pd(hi + k + 2));
            acc01 = _mm_add_pd(acc01, t01);
            acc23 = _mm_add_pd(acc23, t23);
        }
        s0 = _mm_cvtsd_f64(acc01);
        s1 = _mm_cvtsd_f64(_mm_unpackhi_pd(acc01, acc01));
        s2 = _mm_cvtsd_f64(acc23);
        s3 = _mm_cvtsd_f64(_mm_unpackhi_pd(acc23, acc23));
    #else
        for (; k + 4 <= n; k += 4) {
            s0 += sdg_min(sdg_max(lo[k] + a[k] * (v - bl[k]), lo[k]), hi[k]);
            s1 += sdg_min(sdg_max(lo[k + 1] + a[k + 1] * (v - bl[k + 1]), lo[k + 1]), hi[k + 1]);
            s2 += sdg_min(sdg_max(lo[k + 2] + a[k + 2] * (v - bl[k + 2]), lo[k + 2]), hi[k + 2]);
            s3 += sdg_min(sdg_max(lo[k + 3] + a[k + 3] * (v - bl[k + 3]), lo[k + 3]), hi[k + 3]);
        }
    #endif
        for (; k < n; k++)
            s0 += sdg_min(sdg_max(lo[k] + a[k] * (v - bl[k]), lo[k]), hi[k]);
        return (s0 + s1) + (s2 + s3);
    }

    /* Moves the segments constant or linear on [lo_b, hi_b] into the sums (fixed: their
       constant powers; sa: their slopes; s_ref: their powers at ref) and compacts the rest
       into the arrays d* (at or before the source arrays); returns how many are kept. Every
       segment is copied to the next free slot, the slot advances only for kept ones;
       accumulators by position parity. */
    static Py_ssize_t sdg_filter(const double* lo, const double* hi, const double* a,
                                 const double* bl, const double* bh, double* dlo, double* dhi,
                                 double* da, double* dbl, double* dbh,
                                 Py_ssize_t n, double lo_b, double hi_b, double ref,
                                 double* fixed, double* sa, double* s_ref) {
        double f0 = 0.0, f1 = 0.0, a0 = 0.0, a1 = 0.0, r0 = 0.0, r1 = 0.0;
        Py_ssize_t k = 0, n2 = 0;
    #if SDG_SIMD
        __m128d lob = _mm_set1_pd(lo_b), hib = _mm_set1_pd(hi_b), rf = _mm_set1_pd(ref);
        __m128d f = _mm_setzero_pd(), sl = _mm_setzero_pd(), r = _mm_setzero_pd();
        for (; k + 2 <= n; k += 2) {
            __m128d l = _mm_loadu_pd(lo + k), h = _mm_loadu_pd(hi + k);
            __m128d aa = _mm_loadu_pd(a + k), b0 = _mm_loadu_pd(bl + k);
            __m128d b1 = _mm_loadu_pd(bh + k);
            __m128d hf = _mm_cmple_pd(b1, lob), lf = _mm_cmpge_pd(b0, hib);
            __m128d li = _mm_and_pd(_mm_cmple_pd(b0, lob), _mm_cmpge_pd(b1, hib));
            int gone = _mm_movemask_pd(_mm_or_pd(_mm_or_pd(hf, lf), li));
            /* a flag times a value is the value or zero, as the masks give */
            f = _mm_add_pd(f, _mm_add_pd(_mm_and_pd(hf, h), _mm_and_pd(lf, l)));
            sl = _mm_add_pd(sl, _mm_and_pd(li, aa));
            r = _mm_add_pd(r, _mm_and_pd(li, _mm_add_pd(l, _mm_mul_pd(aa, _mm_sub_pd(rf, b0)))));
            _mm_storel_pd(dlo + n2, l);
            _mm_storel_pd(dhi + n2, h);
            _mm_storel_pd(da + n2, aa);
            _mm_storel_pd(dbl + n2, b0);
            _mm_storel_pd(dbh + n2, b1);
            n2 += 1 - (gone & 1);
            _mm_storeh_pd(dlo + n2, l);
            _mm_storeh_pd(dhi + n2, h);
            _mm_storeh_pd(da + n2, aa);
            _mm_storeh_pd(dbl + n2, b0);
            _mm_storeh_pd(dbh + n2, b1);
            n2 += 1 - (gone >> 1);
        }
        f0 = _mm_cvtsd_f64(f);
        f1 = _mm_cvtsd_f64(_mm_unpackhi_pd(f, f));
        a0 = _mm_cvtsd_f64(sl);
        a1 = _mm_cvtsd_f64(_mm_unpackhi_pd(sl, sl));
        r0 = _mm_cvtsd_f64(r);
        r1 = _mm_cvtsd_f64(_mm_unpackhi_pd(r, r));
    #endif
        for (; k < n; k++) {
            double l = lo[k], h = hi[k], aa = a[k], b0 = bl[k], b1 = bh[k];
            int hf = b1 <= lo_b, lf = b0 >= hi_b, li = (b0 <= lo_b) & (b1 >= hi_b);
            double lin = (double)li;
            dlo[n2] = l;
            dhi[n2] = h;
            da[n2] = aa;
            dbl[n2] = b0;
            dbh[n2] = b1;
            n2 += 1 - (hf | lf | li);
            if (k & 1) {
                f1 += (double)hf * h + (double)lf * l;
                a1 += lin * aa;
                r1 += lin * (l + aa * (ref - b0));
            } else {
                f0 += (double)hf * h + (double)lf * l;
                a0 += lin * aa;
                r0 += lin * (l + aa * (ref - b0));
            }
        }
        *fixed += f0 + f1;
        *sa += a0 + a1;
        *s_ref += r0 + r1;
        return n2;
    }
    """
    double _sum_at_c "sdg_sum_at"(double v, Py_ssize_t n, const double* lo, const double* hi,
                                  const double* a, const double* bl) noexcept nogil
    Py_ssize_t _filter_c "sdg_filter"(const double* lo, const double* hi, const double* a,
                                      const double* bl, const double* bh, double* dlo,
                                      double* dhi, double* da, double* dbl, double* dbh,
                                      Py_ssize_t n, double lo_b, double hi_b, double ref,
                                      double* fixed, double* sa, double* s_ref) noexcept nogil

cdef Py_ssize_t _N_TOTALS = 6
N_TOTALS = _N_TOTALS

cdef extern from *:
    """
    /* Fields of an EV record (8 doubles, one cache line) and what the bounds of a level are,
       per phase; described where Cython declares them below. */
    enum { R_A = 0, R_INV_A = 1, R_C = 2, R_HMAX = 3, R_DMAX = 4, R_P = 5, R_PNEED = 6,
           R_IDX = 7, R_LEN = 8 };
    enum { MODE_MAND = 0, MODE_CHG = 1, MODE_DIS = 2 };

    /* The input index of an EV is kept as the bits of an integer in its record's last slot
       (no conversions). */
    static inline void sdg_set_idx(double* rec, Py_ssize_t i) {
        int64_t v = (int64_t)i;
        memcpy(rec + R_IDX, &v, sizeof v);
    }
    static inline Py_ssize_t sdg_idx(const double* rec) {
        int64_t v;
        memcpy(&v, rec + R_IDX, sizeof v);
        return (Py_ssize_t)v;
    }

    /* Appends the segments of the m records at rec that can move (hi > lo) to the arrays at
       position n, adds their sum(lo) to sums[0] and sum(hi - lo) to sums[1], in record
       order; returns the new count. Segment of a record in mode: see _seg. */
    static Py_ssize_t sdg_push(const double* rec, Py_ssize_t m, int mode, double k_a,
                               double k_inv, double* lo, double* hi, double* a, double* bl,
                               double* bh, Py_ssize_t n, double* sums) {
        double sum_lo = sums[0], room = sums[1];
        /* lo is the power so far (charging) or 0; a and 1/a are scaled and the laxity
           mirrored when discharging (times 1.0 and a zero sign flip change nothing) */
        int f_hi = mode == MODE_CHG ? R_HMAX : (mode == MODE_MAND ? R_P : R_DMAX);
        double ka = mode == MODE_DIS ? k_a : 1.0, ki = mode == MODE_DIS ? k_inv : 1.0;
        Py_ssize_t k = 0;
    #if SDG_SIMD
        __m128d lo_mask = _mm_castsi128_pd(_mm_set1_epi32(mode == MODE_CHG ? -1 : 0));
        __m128d c_sign = _mm_set1_pd(mode == MODE_DIS ? -0.0 : 0.0);
        __m128d vka = _mm_set1_pd(ka), vki = _mm_set1_pd(ki);
        for (; k + 2 <= m; k += 2) {
            const double* r0 = rec + k * R_LEN;
            const double* r1 = r0 + R_LEN;
            __m128d l = _mm_and_pd(lo_mask, _mm_loadh_pd(_mm_load_sd(r0 + R_P), r1 + R_P));
            __m128d h = _mm_loadh_pd(_mm_load_sd(r0 + f_hi), r1 + f_hi);
            __m128d aa = _mm_mul_pd(_mm_loadh_pd(_mm_load_sd(r0 + R_A), r1 + R_A), vka);
            __m128d inv = _mm_mul_pd(_mm_loadh_pd(_mm_load_sd(r0 + R_INV_A), r1 + R_INV_A), vki);
            __m128d c = _mm_xor_pd(_mm_loadh_pd(_mm_load_sd(r0 + R_C), r1 + R_C), c_sign);
            __m128d b0 = _mm_add_pd(c, _mm_mul_pd(l, inv));
            __m128d b1 = _mm_add_pd(c, _mm_mul_pd(h, inv));
            __m128d act = _mm_cmpgt_pd(h, l);
            int mv = _mm_movemask_pd(act);
            __m128d t_lo = _mm_and_pd(act, l), t_room = _mm_and_pd(act, _mm_sub_pd(h, l));
            sum_lo += _mm_cvtsd_f64(t_lo);
            room += _mm_cvtsd_f64(t_room);
            sum_lo += _mm_cvtsd_f64(_mm_unpackhi_pd(t_lo, t_lo));
            room += _mm_cvtsd_f64(_mm_unpackhi_pd(t_room, t_room));
            _mm_storel_pd(lo + n, l);
            _mm_storel_pd(hi + n, h);
            _mm_storel_pd(a + n, aa);
            _mm_storel_pd(bl + n, b0);
            _mm_storel_pd(bh + n, b1);
            n += mv & 1;
            _mm_storeh_pd(lo + n, l);
            _mm_storeh_pd(hi + n, h);
            _mm_storeh_pd(a + n, aa);
            _mm_storeh_pd(bl + n, b0);
            _mm_storeh_pd(bh + n, b1);
            n += mv >> 1;
        }
    #endif
        for (; k < m; k++) {
            const double* r = rec + k * R_LEN;
            double l = mode == MODE_CHG ? r[R_P] : 0.0, h = r[f_hi];
            double aa = r[R_A] * ka, inv = r[R_INV_A] * ki;
            double c = mode == MODE_DIS ? -r[R_C] : r[R_C];
            int act = h > l;
            lo[n] = l;
            hi[n] = h;
            a[n] = aa;
            bl[n] = c + l * inv;
            bh[n] = c + h * inv;
            sum_lo += (double)act * l;
            room += (double)act * (h - l);
            n += act;
        }
        sums[0] = sum_lo;
        sums[1] = room;
        return n;
    }
    """
    # Fields of an EV record (8 doubles, one cache line).
    enum:
        R_A       # charge slope p_rate / dt [kW/h]
        R_INV_A   # dt / p_rate (0 when p_rate = 0) [h/kW]
        R_C       # laxity - dt [h]
        R_HMAX    # most charge power this step; later the site-capped bound [kW]
        R_DMAX    # most discharge power keeping the need feasible; 0 if not a candidate [kW]
        R_P       # power so far [kW]
        R_PNEED   # power that leaves the need exactly feasible (any sign, unclamped) [kW]
        R_IDX     # index of the EV in the inputs (an int64, see sdg_idx)
        R_LEN
    # What the bounds of a level are, per phase.
    enum:
        MODE_MAND  # lo 0, hi p (the mandatory power)
        MODE_CHG   # lo p, hi hmax
        MODE_DIS   # lo 0, hi dmax, mirrored laxity, slopes scaled by eta_ch * eta_dis
    Py_ssize_t _push_c "sdg_push"(const double* rec, Py_ssize_t m, int mode, double k_a,
                                  double k_inv, double* lo, double* hi, double* a, double* bl,
                                  double* bh, Py_ssize_t n, double* sums) noexcept nogil


cdef extern from *:
    """
    /* The per-EV pass of _allocate (see there): each EV's fields into its record, at the next
       free slot of its site, and the mandatory power and charge room summed per site and in
       total, in input order. Returns 0 at the first pair of EVs with an input out of range
       (the caller then looks for the culprit), else 1. The SSE2 path computes two EVs at a
       time with exactly the operations of the scalar one. */
    typedef struct {
        double dt_h, inv_dt, inv_den, eta_ch, neg_eta_cd;
    } sdg_step;

    static inline int sdg_ev_one(const sdg_step* st, double nd, double td, double pmx,
                                 double pmn, double prt, double* rec, double* room) {
        int ok = (nd >= 0.0) & (nd <= SDG_MAX_KWH) & (td > 0.0) & (td <= SDG_MAX_S)
                 & (pmx >= 0.0) & (pmx <= SDG_MAX_KW) & (pmn <= 0.0) & (pmn >= -SDG_MAX_KW)
                 & (prt >= 0.0) & (prt <= SDG_MAX_KW);
        double rate = sdg_max(prt, pmx);  /* never below this step's */
        rate = rate >= SDG_RATE_FLOOR_KW ? rate : 0.0;
        double r = st->eta_ch * rate, t_h = td * SDG_INV_3600, after = t_h - st->dt_h;
        if (after < 0.0) after = 0.0;
        double inv_a = rate > 0.0 ? st->dt_h / rate : 0.0, lax;
        if (r > 0.0) lax = t_h - nd * (inv_a * st->inv_den);  /* need / r, one division */
        else lax = nd > 0.0 ? -SDG_LAX_MAX_H : t_h;
        lax = sdg_max(lax, -SDG_LAX_MAX_H);
        lax = sdg_min(lax, SDG_LAX_MAX_H);
        double x = sdg_min(pmx >= SDG_RATE_FLOOR_KW ? pmx : 0.0, nd * st->inv_den);
        double y = (nd - r * after) * st->inv_den;
        double pm = sdg_min(x, sdg_max(y, 0.0));
        rec[R_A] = rate * st->inv_dt;
        rec[R_INV_A] = inv_a;
        rec[R_C] = lax - st->dt_h;
        rec[R_HMAX] = x;
        rec[R_DMAX] = sdg_max(sdg_min(-pmn, st->neg_eta_cd * y), 0.0);
        rec[R_P] = pm;
        rec[R_PNEED] = y;
        *room = sdg_max(x - pm, 0.0);
        return ok;
    }

    static int sdg_ev_records(const sdg_step* st, Py_ssize_t n, const double* need,
                              const double* t_dep, const double* p_max, const double* p_min,
                              const double* p_rate, const int64_t* site, double* recs,
                              int64_t* fill, double* room_s, double* mand_s,
                              double* mand_total) {
        double total = *mand_total, room, *rec;
        Py_ssize_t k = 0;
    #if SDG_SIMD
        const __m128d zero = _mm_setzero_pd(), floor_kw = _mm_set1_pd(SDG_RATE_FLOOR_KW);
        const __m128d sign = _mm_set1_pd(-0.0), lax_max = _mm_set1_pd(SDG_LAX_MAX_H);
        const __m128d lax_min = _mm_set1_pd(-SDG_LAX_MAX_H), max_kw = _mm_set1_pd(SDG_MAX_KW);
        const __m128d max_kwh = _mm_set1_pd(SDG_MAX_KWH), max_s = _mm_set1_pd(SDG_MAX_S);
        const __m128d min_kw = _mm_set1_pd(-SDG_MAX_KW), inv_3600 = _mm_set1_pd(SDG_INV_3600);
        const __m128d dt_h = _mm_set1_pd(st->dt_h), inv_dt = _mm_set1_pd(st->inv_dt);
        const __m128d inv_den = _mm_set1_pd(st->inv_den), eta_ch = _mm_set1_pd(st->eta_ch);
        const __m128d neg_eta_cd = _mm_set1_pd(st->neg_eta_cd);
        for (; k + 2 <= n; k += 2) {
            __m128d nd = _mm_loadu_pd(need + k), td = _mm_loadu_pd(t_dep + k);
            __m128d pmx = _mm_loadu_pd(p_max + k), pmn = _mm_loadu_pd(p_min + k);
            __m128d prt = _mm_loadu_pd(p_rate + k);
            __m128d c = _mm_and_pd(_mm_cmpge_pd(nd, zero), _mm_cmple_pd(nd, max_kwh));
            c = _mm_and_pd(c, _mm_and_pd(_mm_cmpgt_pd(td, zero), _mm_cmple_pd(td, max_s)));
            c = _mm_and_pd(c, _mm_and_pd(_mm_cmpge_pd(pmx, zero), _mm_cmple_pd(pmx, max_kw)));
            c = _mm_and_pd(c, _mm_and_pd(_mm_cmple_pd(pmn, zero), _mm_cmpge_pd(pmn, min_kw)));
            c = _mm_and_pd(c, _mm_and_pd(_mm_cmpge_pd(prt, zero), _mm_cmple_pd(prt, max_kw)));
            if (_mm_movemask_pd(c) != 3) {
                *mand_total = total;
                return 0;
            }
            __m128d rate = _mm_max_pd(prt, pmx);
            rate = _mm_and_pd(_mm_cmpge_pd(rate, floor_kw), rate);
            __m128d r = _mm_mul_pd(eta_ch, rate);
            __m128d t_h = _mm_mul_pd(td, inv_3600);
            __m128d after = _mm_sub_pd(t_h, dt_h);
            after = _mm_andnot_pd(_mm_cmplt_pd(after, zero), after);
            __m128d inv_a = _mm_and_pd(_mm_cmpgt_pd(rate, zero), _mm_div_pd(dt_h, rate));
            __m128d lax_r = _mm_sub_pd(t_h, _mm_mul_pd(nd, _mm_mul_pd(inv_a, inv_den)));
            __m128d need_pos = _mm_cmpgt_pd(nd, zero);
            __m128d lax_0 = _mm_or_pd(_mm_and_pd(need_pos, lax_min),
                                      _mm_andnot_pd(need_pos, t_h));
            __m128d r_pos = _mm_cmpgt_pd(r, zero);
            __m128d lax = _mm_or_pd(_mm_and_pd(r_pos, lax_r), _mm_andnot_pd(r_pos, lax_0));
            lax = _mm_min_pd(_mm_max_pd(lax, lax_min), lax_max);
            __m128d x = _mm_min_pd(_mm_and_pd(_mm_cmpge_pd(pmx, floor_kw), pmx),
                                   _mm_mul_pd(nd, inv_den));
            __m128d y = _mm_mul_pd(_mm_sub_pd(nd, _mm_mul_pd(r, after)), inv_den);
            __m128d pm = _mm_min_pd(x, _mm_max_pd(y, zero));
            __m128d f_a = _mm_mul_pd(rate, inv_dt), f_c = _mm_sub_pd(lax, dt_h);
            __m128d f_d = _mm_max_pd(_mm_min_pd(_mm_xor_pd(pmn, sign),
                                                _mm_mul_pd(neg_eta_cd, y)), zero);
            __m128d f_room = _mm_max_pd(_mm_sub_pd(x, pm), zero);
            for (int lane = 0; lane < 2; lane++) {  /* unrolled by the compiler */
                int64_t s = site[k + lane];
                rec = recs + fill[s]++ * R_LEN;
                rec[R_A] = sdg_lane(f_a, lane);
                rec[R_INV_A] = sdg_lane(inv_a, lane);
                rec[R_C] = sdg_lane(f_c, lane);
                rec[R_HMAX] = sdg_lane(x, lane);
                rec[R_DMAX] = sdg_lane(f_d, lane);
                rec[R_P] = sdg_lane(pm, lane);
                rec[R_PNEED] = sdg_lane(y, lane);
                sdg_set_idx(rec, k + lane);
                room_s[s] += sdg_lane(f_room, lane);
                mand_s[s] += sdg_lane(pm, lane);
                total += sdg_lane(pm, lane);
            }
        }
    #endif
        for (; k < n; k++) {
            rec = recs + fill[site[k]]++ * R_LEN;
            if (!sdg_ev_one(st, need[k], t_dep[k], p_max[k], p_min[k], p_rate[k], rec, &room)) {
                *mand_total = total;
                return 0;
            }
            sdg_set_idx(rec, k);
            room_s[site[k]] += room;
            mand_s[site[k]] += rec[R_P];
            total += rec[R_P];
        }
        *mand_total = total;
        return 1;
    }
    """
    ctypedef struct StepConsts "sdg_step":
        double dt_h
        double inv_dt
        double inv_den
        double eta_ch
        double neg_eta_cd
    bint _ev_records "sdg_ev_records"(const StepConsts* st, Py_ssize_t n, const double* need,
                                      const double* t_dep, const double* p_max,
                                      const double* p_min, const double* p_rate,
                                      const int64_t* site, double* recs, int64_t* fill,
                                      double* room_s, double* mand_s,
                                      double* mand_total) noexcept nogil


cdef extern from *:
    """
    /* The final pass over the m records of one site (see _allocate): each EV's power at the
       zone-wide level lam (mode MODE_CHG or MODE_DIS; any other mode keeps the power so far)
       into p_out at its input index; the site's charging and discharging powers summed in
       record order into *chg and *dis; returns how many EVs are left unable to meet their
       departure need. The SSE2 path does exactly the scalar operations, two EVs at a time. */
    static inline double sdg_final_one(const double* q, int mode, double lam, double eta_cd,
                                       double k_cd) {
        if (mode == MODE_CHG) {
            double lo = q[R_P], bl = q[R_C] + lo * q[R_INV_A];
            return sdg_min(sdg_max(lo + q[R_A] * (lam - bl), lo), q[R_HMAX]);
        }
        if (mode == MODE_DIS && q[R_DMAX] > 0.0) {
            double inv = q[R_INV_A] * k_cd, bl = -q[R_C] + 0.0 * inv;
            return -sdg_min(sdg_max(0.0 + q[R_A] * eta_cd * (lam - bl), 0.0), q[R_DMAX]);
        }
        return q[R_P];
    }

    static Py_ssize_t sdg_final(double* rec, Py_ssize_t m, int mode, double lam,
                                double eta_cd, double k_cd, double* p_out, double* chg,
                                double* dis) {
        double x = 0.0, y = 0.0, p, y_need, pm;
        Py_ssize_t k = 0, n_bad = 0;
    #if SDG_SIMD
        const __m128d zero = _mm_setzero_pd(), sign = _mm_set1_pd(-0.0);
        const __m128d one = _mm_set1_pd(1.0), tol = _mm_set1_pd(SDG_FEAS_TOL);
        const __m128d vlam = _mm_set1_pd(lam), veta = _mm_set1_pd(eta_cd);
        /* discharging, the scalar loop is faster (few EVs are candidates) */
        for (; mode != MODE_DIS && k + 2 <= m; k += 2) {
            double* r0 = rec + k * R_LEN;
            double* r1 = r0 + R_LEN;
            __m128d pv = _mm_loadh_pd(_mm_load_sd(r0 + R_P), r1 + R_P);
            if (mode == MODE_CHG) {
                __m128d bl = _mm_add_pd(_mm_loadh_pd(_mm_load_sd(r0 + R_C), r1 + R_C),
                                        _mm_mul_pd(pv, _mm_loadh_pd(_mm_load_sd(r0 + R_INV_A),
                                                                    r1 + R_INV_A)));
                __m128d t = _mm_add_pd(pv, _mm_mul_pd(_mm_loadh_pd(_mm_load_sd(r0 + R_A),
                                                                   r1 + R_A),
                                                      _mm_sub_pd(vlam, bl)));
                pv = _mm_min_pd(_mm_max_pd(t, pv),
                                _mm_loadh_pd(_mm_load_sd(r0 + R_HMAX), r1 + R_HMAX));
            }
            __m128d yn = _mm_loadh_pd(_mm_load_sd(r0 + R_PNEED), r1 + R_PNEED);
            __m128d up = _mm_max_pd(pv, zero), down = _mm_max_pd(_mm_xor_pd(pv, sign), zero);
            x += _mm_cvtsd_f64(up);
            y += _mm_cvtsd_f64(down);
            x += _mm_cvtsd_f64(_mm_unpackhi_pd(up, up));
            y += _mm_cvtsd_f64(_mm_unpackhi_pd(down, down));
            __m128d charging = _mm_cmpge_pd(pv, zero);
            __m128d floor = _mm_or_pd(_mm_and_pd(charging, yn),
                                      _mm_andnot_pd(charging, _mm_mul_pd(veta, yn)));
            __m128d slack = _mm_mul_pd(tol, _mm_add_pd(one, _mm_max_pd(yn, _mm_xor_pd(yn, sign))));
            int bad = _mm_movemask_pd(_mm_cmplt_pd(pv, _mm_sub_pd(floor, slack)));
            n_bad += (bad & 1) + (bad >> 1);
            _mm_storel_pd(r0 + R_P, pv);
            _mm_storeh_pd(r1 + R_P, pv);
            _mm_storel_pd(p_out + sdg_idx(r0), pv);
            _mm_storeh_pd(p_out + sdg_idx(r1), pv);
        }
    #endif
        for (; k < m; k++) {
            double* q = rec + k * R_LEN;
            p = sdg_final_one(q, mode, lam, eta_cd, k_cd);
            q[R_P] = p;
            x += sdg_max(p, 0.0);
            y += sdg_max(-p, 0.0);
            y_need = q[R_PNEED];
            pm = p >= 0.0 ? y_need : eta_cd * y_need;
            n_bad += p < pm - SDG_FEAS_TOL * (1.0 + sdg_max(y_need, -y_need));
            p_out[sdg_idx(q)] = p;
        }
        *chg = x;
        *dis = y;
        return n_bad;
    }
    """
    Py_ssize_t _final "sdg_final"(double* rec, Py_ssize_t m, int mode, double lam,
                                  double eta_cd, double k_cd, double* p_out, double* chg,
                                  double* dis) noexcept nogil


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


cdef inline double _sum_at(double v, Py_ssize_t n, const Work* w) noexcept nogil:
    """Sum of the segments' powers at level ``v``."""
    return _sum_at_c(v, n, w.lo, w.hi, w.a, w.bl)


cdef inline Py_ssize_t _filter(Work* w, Py_ssize_t n, double lo_b, double hi_b, double ref,
                               double* fixed, double* sa, double* s_ref) noexcept nogil:
    """Move segments constant or linear on ``[lo_b, hi_b]`` into the sums; keep the rest."""
    return _filter_c(w.lo, w.hi, w.a, w.bl, w.bh, w.lo, w.hi, w.a, w.bl, w.bh, n, lo_b, hi_b,
                     ref, fixed, sa, s_ref)


cdef inline Py_ssize_t _push(const double* rec, Py_ssize_t m, int mode, double k_a,
                            double k_inv, Work* w, Py_ssize_t n, double* sums) noexcept nogil:
    """Append the segments of the ``m`` records at ``rec`` that can move to ``w[n:]``.

    Adds their ``sum(lo)`` to ``sums[0]`` and their room ``sum(hi - lo)`` to ``sums[1]``;
    returns the new count. Every segment is written, the count advances only for movable ones.
    """
    return _push_c(rec, m, mode, k_a, k_inv, w.lo, w.hi, w.a, w.bl, w.bh, n, sums)


cdef double _level(const double* rec, Py_ssize_t m, int mode, double extra, double k_a,
                   double k_inv, Work* w) noexcept nogil:
    """Level at which the ``m`` records at ``rec`` take ``sum(lo) + extra`` in total.

    Returns ``-inf`` when no EV can move or ``extra <= 0``, ``+inf`` when ``extra`` covers all
    their room. ``w`` is scratch space for ``m`` segments.
    """
    cdef double sums[2]
    sums[0] = 0.0
    sums[1] = 0.0
    cdef Py_ssize_t n = _push(rec, m, mode, k_a, k_inv, w, 0, sums)
    return _level_of(w, n, sums[0], sums[1], extra)


cdef double _level_of(Work* w, Py_ssize_t n, double sum_lo, double room,
                      double extra) noexcept nogil:
    """Level at which the ``n`` movable segments in ``w`` take ``sum_lo + extra`` in total.

    ``sum_lo`` and ``room`` are their ``sum(lo)`` and ``sum(hi - lo)``; ``w`` is overwritten.
    """
    cdef uint64_t rng = 0x9E3779B97F4A7C15ULL
    if n == 0 or not (extra > 0.0):
        return -INFINITY
    if extra >= room:
        return INFINITY
    return _level_from(w, n, -INFINITY, INFINITY, 0.0, 0.0, 0.0, 0.0, sum_lo + extra, &rng)


cdef double _level_from(Work* w, Py_ssize_t n, double lo_b, double hi_b, double ref,
                        double fixed, double sa, double s_ref, double target,
                        uint64_t* rng) noexcept nogil:
    """The selection rounds of ``_level_of`` from a bracket and sums already found."""
    cdef double f, v, x
    # Invariants: lo_b <= lam* <= hi_b; every segment in w[:n] has a breakpoint strictly inside
    # the bracket; the segments linear on it sum to s_ref + sa * (lam - ref), those below or
    # above it to fixed.
    if n > 0:
        v = _pivot(w, n, lo_b, hi_b, rng)
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
            v = _pivot(w, n, lo_b, hi_b, rng)
            f = _sum_at(v, n, w)
    if sa > 0.0:
        x = ref + (target - fixed - s_ref) / sa
        if x < lo_b:
            x = lo_b
        if x > hi_b:
            x = hi_b
        return x
    # S is flat on the bracket: any point of it gives the same powers
    if ref < lo_b:
        return lo_b
    if ref > hi_b:
        return hi_b
    return ref


cdef inline void _at_offset(const Work* w, Py_ssize_t k, Work* o) noexcept nogil:
    o.lo = w.lo + k
    o.hi = w.hi + k
    o.a = w.a + k
    o.bl = w.bl + k
    o.bh = w.bh + k


# State of a clamped group (a site held to [its PV share, its connection]) on the bracket: what
# may still bind inside it (bits), or which bound binds on the whole bracket and at the level.
cdef enum:
    G_FREE = 0  # neither bound binds: its segments count like the others
    G_MAY_FLOOR = 1
    G_MAY_CAP = 2
    G_FLOORED = 4  # at its lower bound (the site's PV share) from hi_b down
    G_CAPPED = 8  # at its upper bound (the site's connection) from lo_b up


cdef inline int _binding(int state, double v, double floor_at, double cap_at) noexcept nogil:
    """Which bound of a group that may bind (``state``) binds at ``v``: below ``floor_at`` its
    floor, above ``cap_at`` its cap, else none."""
    if state & G_MAY_FLOOR and v < floor_at:
        return G_FLOORED
    if state & G_MAY_CAP and v > cap_at:
        return G_CAPPED
    return G_FREE


cdef double _level_clamped(Work* w, Py_ssize_t nf, Py_ssize_t n_g, Py_ssize_t* cnt,
                           const double* g_lo, const double* g_hi, double* g_fix, double* g_sa,
                           double* g_ref, double* g_val, int* state, double sum_lo,
                           double room, double extra) noexcept nogil:
    """``_level_of`` where groups of segments are held, as a whole, within bounds.

    ``w[:nf]`` are free segments; then come ``n_g`` groups, group ``g`` being the next
    ``cnt[g]`` segments, whose powers count as their sum clamped to ``[g_lo[g], g_hi[g]]``.
    The level solves ``sum(free p) + sum_g clamp(sum(p of g)) = sum_lo + extra``, where
    ``sum_lo`` is that left side at the lowest level and ``room`` how far it can rise. On entry
    ``state[g]`` says which bounds may bind (``G_MAY_FLOOR``, ``G_MAY_CAP``); on return it is
    ``G_FLOORED``, ``G_CAPPED`` or ``G_FREE``: which bound binds at the level. ``g_fix``,
    ``g_sa``, ``g_ref`` and ``g_val`` are scratch space for ``n_g`` groups.

    The selection of ``_level_of``. A group whose bounds may bind inside the bracket keeps the
    segments it loses in sums of its own (constant, slope, value at ``ref``); once neither bound
    can bind they join the common sums, once one binds on the whole bracket the group leaves
    as a constant. Groups left without segments are linear between two kinks, where they reach
    their bounds: each becomes one segment of that shape and the rounds go on with those.
    """
    cdef double target, lo_b = -INFINITY, hi_b = INFINITY
    cdef double fixed = 0.0, sa = 0.0, s_ref = 0.0, ref = 0.0, f, v, x, d, val, lam
    cdef uint64_t rng = 0x9E3779B97F4A7C15ULL
    cdef Py_ssize_t g, n, pos, dst, c, c2, nf2
    cdef Work src, to
    cdef bint up
    n = nf
    for g in range(n_g):
        g_fix[g] = 0.0
        g_sa[g] = 0.0
        g_ref[g] = 0.0
        n += cnt[g]
    if n == 0 or not (extra > 0.0):
        for g in range(n_g):
            state[g] = G_FLOORED if state[g] & G_MAY_FLOOR else G_FREE
        return -INFINITY
    if extra >= room:
        for g in range(n_g):
            state[g] = G_CAPPED if state[g] & G_MAY_CAP else G_FREE
        return INFINITY
    target = sum_lo + extra
    while n > 0:
        v = _pivot(w, n, lo_b, hi_b, &rng)
        f = fixed + s_ref + sa * (v - ref) + _sum_at(v, nf, w)
        pos = nf
        for g in range(n_g):
            c = cnt[g]
            x = 0.0
            if c > 0:
                _at_offset(w, pos, &src)
                x = _sum_at(v, c, &src)
            if state[g] == G_FREE:
                f += x
            elif state[g] < G_FLOORED:
                val = x + g_fix[g] + g_ref[g] + g_sa[g] * (v - ref)
                g_val[g] = val
                f += _min(_max(val, g_lo[g]), g_hi[g])
            pos += c
        if f < target:
            lo_b = v
            up = True
        elif f > target:
            hi_b = v
            up = False
        else:
            for g in range(n_g):
                if 0 < state[g] < G_FLOORED:
                    if state[g] & G_MAY_FLOOR and g_val[g] < g_lo[g]:
                        state[g] = G_FLOORED
                    elif state[g] & G_MAY_CAP and g_val[g] > g_hi[g]:
                        state[g] = G_CAPPED
                    else:
                        state[g] = G_FREE
            return v
        d = v - ref
        s_ref += sa * d
        for g in range(n_g):
            if 0 < state[g] < G_FLOORED:
                g_ref[g] += g_sa[g] * d
        ref = v
        nf2 = _filter(w, nf, lo_b, hi_b, ref, &fixed, &sa, &s_ref)
        pos = nf
        dst = nf2
        for g in range(n_g):
            c = cnt[g]
            if 0 < state[g] < G_FLOORED:
                if up:
                    if state[g] & G_MAY_CAP and g_val[g] >= g_hi[g]:
                        state[g] = G_CAPPED  # at its cap from lo_b up
                    elif g_val[g] >= g_lo[g]:
                        state[g] &= ~G_MAY_FLOOR
                else:
                    if state[g] & G_MAY_FLOOR and g_val[g] <= g_lo[g]:
                        state[g] = G_FLOORED  # at its floor from hi_b down
                    elif g_val[g] <= g_hi[g]:
                        state[g] &= ~G_MAY_CAP
                if state[g] >= G_FLOORED:
                    fixed += g_lo[g] if state[g] == G_FLOORED else g_hi[g]
                    cnt[g] = 0
                    pos += c
                    continue
                if state[g] == G_FREE:
                    fixed += g_fix[g]
                    sa += g_sa[g]
                    s_ref += g_ref[g]
            c2 = 0
            if c > 0:
                _at_offset(w, pos, &src)
                _at_offset(w, dst, &to)
                if state[g] == G_FREE:
                    c2 = _filter_c(src.lo, src.hi, src.a, src.bl, src.bh, to.lo, to.hi, to.a,
                                   to.bl, to.bh, c, lo_b, hi_b, ref, &fixed, &sa, &s_ref)
                else:
                    c2 = _filter_c(src.lo, src.hi, src.a, src.bl, src.bh, to.lo, to.hi, to.a,
                                   to.bl, to.bh, c, lo_b, hi_b, ref, &g_fix[g], &g_sa[g],
                                   &g_ref[g])
            cnt[g] = c2
            pos += c
            dst += c2
        nf = nf2
        n = dst
    # Groups still open have no segments: each is clamp(val + slope * (lam - ref)), one
    # segment from its floor to its cap with the kinks as breakpoints (g_val, g_ref keep them).
    n = 0
    for g in range(n_g):
        if not (0 < state[g] < G_FLOORED):
            continue
        val = g_fix[g] + g_ref[g]
        if g_sa[g] > 0.0:
            w.lo[n] = g_lo[g]
            w.hi[n] = g_hi[g]
            w.a[n] = g_sa[g]
            g_val[g] = ref + (g_lo[g] - val) / g_sa[g]
            g_ref[g] = ref + (g_hi[g] - val) / g_sa[g]
            w.bl[n] = g_val[g]
            w.bh[n] = g_ref[g]
            n += 1
        else:  # flat
            fixed += _min(_max(val, g_lo[g]), g_hi[g])
            state[g] = _binding(state[g], val, g_lo[g], g_hi[g])
    n = _filter(w, n, lo_b, hi_b, ref, &fixed, &sa, &s_ref)
    lam = _level_from(w, n, lo_b, hi_b, ref, fixed, sa, s_ref, target, &rng)
    for g in range(n_g):
        if 0 < state[g] < G_FLOORED:
            state[g] = _binding(state[g], lam, g_val[g], g_ref[g])
    return lam


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


cdef inline size_t _allocate_bytes(Py_ssize_t n, Py_ssize_t n_site) noexcept nogil:
    """Size of ``_allocate_in``'s work block for ``n`` EVs at ``n_site`` sites [bytes]: records
    (64-byte aligned), scratch segments, site sums, site offsets, groups."""
    return (<size_t>n * R_LEN * sizeof(double) + 64 + 5 * <size_t>n * sizeof(double)
            + 3 * <size_t>n_site * sizeof(double)
            + 2 * (<size_t>n_site + 1) * sizeof(int64_t)
            + 8 * <size_t>n_site * sizeof(double)
            + <size_t>n_site * (2 * sizeof(Py_ssize_t) + sizeof(int)))


cdef int _allocate(Py_ssize_t n, Py_ssize_t n_site, const double* need, const double* t_dep,
                   const double* p_max, const double* p_min, const double* p_rate,
                   const int64_t* site, const double* cap, const double* pv, double budget,
                   double step_s, double eta_ch, double eta_dis, double* p_out, double* pv_used,
                   double* shortfall, double* site_p, double* totals,
                   Py_ssize_t* bad) noexcept nogil:
    """The whole step. Returns 0, an argument code 1..8 (``bad`` = element), or -1 (memory)."""
    cdef char* block = <char*>malloc(_allocate_bytes(n, n_site))
    if block == NULL:
        return -1
    cdef int status = _allocate_in(n, n_site, need, t_dep, p_max, p_min, p_rate, site, cap, pv,
                                   budget, step_s, eta_ch, eta_dis, p_out, pv_used, shortfall,
                                   site_p, totals, bad, block)
    free(block)
    return status


cdef int _allocate_in(Py_ssize_t n, Py_ssize_t n_site, const double* need, const double* t_dep,
                      const double* p_max, const double* p_min, const double* p_rate,
                      const int64_t* site, const double* cap, const double* pv, double budget,
                      double step_s, double eta_ch, double eta_dis, double* p_out,
                      double* pv_used, double* shortfall, double* site_p, double* totals,
                      Py_ssize_t* bad, char* block) noexcept nogil:
    """``_allocate`` in the work block ``block`` (``_allocate_bytes`` of it): returns 0 or an
    argument code 1..8 (``bad`` = element)."""
    cdef Py_ssize_t i, k, s, m, b0
    cdef double dt_h = step_s / 3600.0
    cdef double inv_dt = 1.0 / dt_h, inv_den = 1.0 / (eta_ch * dt_h)
    cdef double eta_cd = eta_ch * eta_dis
    cdef double k_cd = 1.0 / eta_cd
    cdef double x, y, pm, lam, rest, grid_rest = 0.0
    cdef double mand_total = 0.0, grid = 0.0, discharge = 0.0, charge = 0.0
    cdef Py_ssize_t n_infeasible = 0, n_cap_limited = 0
    cdef int global_mode = -1
    cdef double* q
    cdef Work site_w  # a site's scratch: the part of ``work`` the zone-wide segments do not use yet
    cdef Py_ssize_t n_zone = 0  # zone-wide segments collected so far
    cdef double zone_sums[2]
    cdef double k_a = 0.0, k_inv = 0.0

    for i in range(n_site):
        if not (cap[i] >= 0.0 and cap[i] <= MAX_KW and pv[i] >= 0.0 and pv[i] <= MAX_KW):
            return _first_bad(n, n_site, need, t_dep, p_max, p_min, p_rate, site, cap, pv, bad)

    # the block: records (64-byte aligned), scratch segments, site sums, site offsets, groups
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
    # sites held within bounds at the zone-wide charging level (groups): the site, its PV
    # share and its connection's room above its sum(lo) [kW] (-1: cannot bind), the bounds of
    # its sum [kW], its segments, its state, scratch
    cdef double* g_pv = <double*>(fill + n_site + 1)
    cdef double* g_cap = g_pv + n_site
    cdef double* g_lo = g_cap + n_site
    cdef double* g_hi = g_lo + n_site
    cdef double* g_fix = g_hi + n_site
    cdef double* g_sa = g_fix + n_site
    cdef double* g_ref = g_sa + n_site
    cdef double* g_val = g_ref + n_site
    cdef Py_ssize_t* g_site = <Py_ssize_t*>(g_val + n_site)
    cdef Py_ssize_t* g_cnt = g_site + n_site
    cdef int* g_state = <int*>(g_cnt + n_site)
    cdef Py_ssize_t n_g = 0, n_free, g
    cdef double grp_sums[2]

    # -- group the EVs by site (counting sort, index order kept within a site)
    for s in range(n_site + 1):
        start[s] = 0
    for i in range(n):
        if <uint64_t>site[i] >= <uint64_t>n_site:  # negative indices wrap to huge values
            return _first_bad(n, n_site, need, t_dep, p_max, p_min, p_rate, site, cap, pv, bad)
        start[site[i] + 1] += 1
    for s in range(n_site):
        start[s + 1] += start[s]
        fill[s] = start[s]
        mand_s[s] = 0.0
        room_s[s] = 0.0

    # -- per EV: laxity, mandatory power, charge and discharge room (and the remaining checks)
    cdef StepConsts consts
    consts.dt_h = dt_h
    consts.inv_dt = inv_dt
    consts.inv_den = inv_den
    consts.eta_ch = eta_ch
    consts.neg_eta_cd = -eta_cd
    if not _ev_records(&consts, n, need, t_dep, p_max, p_min, p_rate, site, recs, fill, room_s,
                       mand_s, &mand_total):
        return _first_bad(n, n_site, need, t_dep, p_max, p_min, p_rate, site, cap, pv, bad)

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
        k_a = eta_cd
        k_inv = k_cd
    zone_sums[0] = 0.0
    zone_sums[1] = 0.0

    # -- per site, while its records are in cache: 2. its PV surplus to its EVs, then the level
    # that holds it to its capacity in the zone-wide phase (3. charging or 4. discharging)
    for s in range(n_site):
        b0 = start[s]
        m = start[s + 1] - b0
        site_w.lo = work.lo + b0
        site_w.hi = work.hi + b0
        site_w.a = work.a + b0
        site_w.bl = work.bl + b0
        site_w.bh = work.bh + b0
        x = chg_s[s]
        rest = pv[s] - x
        if rest < 0.0:
            rest = 0.0
        if rest > cap[s] - x:
            rest = cap[s] - x
        if global_mode == MODE_CHG and rest > 0.0 and rest < room_s[s]:
            # 2 and 3 at once: the site takes at least its PV surplus and at most what its
            # connection carries; its segments join the zone-wide level as a group clamped to
            # those bounds, and its own level is needed only if one of them binds there
            g_site[n_g] = s
            g_pv[n_g] = rest
            x = cap[s] - chg_s[s]
            g_cap[n_g] = x if x < room_s[s] else -1.0
            n_g += 1
            continue
        if rest > 0.0 and room_s[s] > 0.0:
            # when all of the room fits, every EV goes to its bound without a level
            lam = INFINITY if rest >= room_s[s] else _level(recs + b0 * R_LEN, m, MODE_CHG, rest,
                                                              0.0, 0.0, &site_w)
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
                if x > 0.0:
                    # the connection may hold the site back: a group capped at x above its
                    # sum(lo), whose own level is needed only if the cap binds
                    g_site[n_g] = s
                    g_pv[n_g] = 0.0
                    g_cap[n_g] = x
                    n_g += 1
                    continue
                # no room on the connection: every EV stays put
                for k in range(b0, b0 + m):
                    q = recs + k * R_LEN
                    q[R_HMAX] = _at(q, MODE_CHG, 0.0, 0.0, -INFINITY)  # hi <- p(-inf) = p
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
                lam = _level(recs + b0 * R_LEN, m, MODE_DIS, cap[s] + x, eta_cd, k_cd, &site_w)
                for k in range(b0, b0 + m):
                    q = recs + k * R_LEN
                    q[R_DMAX] = _at(q, MODE_DIS, eta_cd, k_cd, lam)  # hi <- d(lam)
        if global_mode >= 0:
            # the site's segments for the zone-wide level while its records are in cache; they
            # go before the site's scratch (n_zone <= b0), which is no longer needed
            n_zone = _push(recs + b0 * R_LEN, m, global_mode, k_a, k_inv, w, n_zone, zone_sums)

    # (groups: segments after the free ones, one site after the other; see _level_clamped)

    # -- the zone-wide level: 3. rest of a positive grid budget, or 4. the discharge asked for
    lam = -INFINITY
    if global_mode == MODE_CHG and n_g == 0:
        lam = _level_of(w, n_zone, zone_sums[0], zone_sums[1], grid_rest)
    elif global_mode == MODE_CHG:
        n_free = n_zone
        x = zone_sums[0]  # the left side at the lowest level
        y = zone_sums[1]  # how far it can rise
        for g in range(n_g):
            s = g_site[g]
            grp_sums[0] = 0.0
            grp_sums[1] = 0.0
            k = _push(recs + start[s] * R_LEN, start[s + 1] - start[s], MODE_CHG, 0.0, 0.0, w,
                      n_zone, grp_sums)
            g_cnt[g] = k - n_zone
            n_zone = k
            g_state[g] = G_MAY_FLOOR if g_pv[g] > 0.0 else G_FREE
            g_lo[g] = grp_sums[0] + g_pv[g]
            if g_cap[g] >= 0.0:
                g_state[g] |= G_MAY_CAP
                g_hi[g] = grp_sums[0] + g_cap[g]
                y += g_cap[g] - g_pv[g]
            else:
                g_hi[g] = grp_sums[0] + grp_sums[1]  # every EV at its bound
                y += grp_sums[1] - g_pv[g]
            x += g_lo[g]
        lam = _level_clamped(w, n_free, n_g, g_cnt, g_lo, g_hi, g_fix, g_sa, g_ref, g_val,
                             g_state, x, y, grid_rest)
        # the sites held at a bound get their own level: the PV level of phase 2, or the one
        # that holds them to their connection (then their EVs' upper bounds)
        for g in range(n_g):
            if g_state[g] == G_FREE:
                continue
            s = g_site[g]
            b0 = start[s]
            m = start[s + 1] - b0
            if g_state[g] == G_FLOORED:
                rest = _level(recs + b0 * R_LEN, m, MODE_CHG, g_pv[g], 0.0, 0.0, w)
                for k in range(b0, b0 + m):
                    q = recs + k * R_LEN
                    q[R_P] = _at(q, MODE_CHG, 0.0, 0.0, rest)
            else:
                rest = _level(recs + b0 * R_LEN, m, MODE_CHG, g_cap[g], 0.0, 0.0, w)
                for k in range(b0, b0 + m):
                    q = recs + k * R_LEN
                    q[R_HMAX] = _at(q, MODE_CHG, 0.0, 0.0, rest)
    elif global_mode == MODE_DIS:
        lam = _level_of(w, n_zone, zone_sums[0], zone_sums[1], -budget)

    # -- final powers, accounting, and the powers back in input order
    for s in range(n_site):
        n_infeasible += _final(recs + start[s] * R_LEN, start[s + 1] - start[s], global_mode,
                               lam, eta_cd, k_cd, p_out, &x, &y)
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
    return 0


cdef inline const double* _dptr(const double[::1] x) noexcept nogil:
    return &x[0] if x.shape[0] > 0 else NULL


# The coordinator's per-step kernels take NumPy arrays (see ext/arrays.pxd).

cdef inline double* _f64(cnp.ndarray a, str func, str name, int ndim=1,
                         bint out=False) except NULL:
    return <double*>array_data(a, cnp.NPY_FLOAT64, ndim, out, func, name)


cdef inline int64_t* _i64(cnp.ndarray a, str func, str name) except NULL:
    return <int64_t*>array_data(a, cnp.NPY_INT64, 1, False, func, name)


cdef inline Py_ssize_t _len(cnp.ndarray a) noexcept:
    return cnp.PyArray_DIM(a, 0)


cdef inline const int64_t* _iptr(const int64_t[::1] x) noexcept nogil:
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


cdef inline double _np_max(double a, double b) noexcept nogil:
    # numpy.maximum: NaN propagates, ties give the second argument
    if a != a:
        return a
    if b != b:
        return b
    return a if a > b else b


cdef inline double _np_min(double a, double b) noexcept nogil:
    # numpy.minimum: NaN propagates, ties give the second argument
    if a != a:
        return a
    if b != b:
        return b
    return a if a < b else b


def north_west_into(const double[::1] supply, const double[::1] demand,
                    const int64_t[::1] row_start, const int64_t[::1] rows,
                    const int64_t[::1] col_start, const int64_t[::1] cols,
                    double[:, ::1] flow):
    """Add the transport tables of groups of suppliers and consumers, each filled by the
    north-west corner rule, to ``flow`` (suppliers x consumers).

    Group ``g`` pairs the suppliers ``rows[row_start[g]:row_start[g + 1]]`` with the consumers
    ``cols[col_start[g]:col_start[g + 1]]``, in that order (distinct indices within a group);
    negative supply and demand count as 0. Supplier ``i`` and consumer ``j`` exchange the
    overlap of the intervals they occupy on the cumulative supply and demand axes of their
    group, ``max(min(s_hi, d_hi) - max(s_lo, d_lo), 0)``, with NumPy's cumulative sums,
    minimum and maximum (so the twin's table is the same to the bit). Raises ``ValueError``
    when an index or a group bound is out of range.
    """
    cdef Py_ssize_t n_rows = flow.shape[0], n_cols = flow.shape[1]
    cdef Py_ssize_t n_groups = row_start.shape[0] - 1
    if supply.shape[0] != n_rows or demand.shape[0] != n_cols:
        raise ValueError("north_west_into: array sizes do not match")
    _check_groups("north_west_into", n_rows, n_cols, &row_start[0], row_start.shape[0],
                  _iptr(rows), rows.shape[0], &col_start[0], col_start.shape[0], _iptr(cols),
                  cols.shape[0])
    with nogil:
        _north_west(&supply[0] if n_rows > 0 else NULL, &demand[0] if n_cols > 0 else NULL,
                    &row_start[0], _iptr(rows), &col_start[0], _iptr(cols), n_groups,
                    &flow[0, 0] if n_rows > 0 and n_cols > 0 else NULL, n_cols)


cdef int _check_groups(str name, Py_ssize_t n_rows, Py_ssize_t n_cols,
                       const int64_t* row_start, Py_ssize_t n_row_start, const int64_t* rows,
                       Py_ssize_t n_row_members, const int64_t* col_start,
                       Py_ssize_t n_col_start, const int64_t* cols,
                       Py_ssize_t n_col_members) except -1:
    """Raise ``ValueError`` unless the groups of ``north_west_into`` are within bounds."""
    cdef Py_ssize_t n_groups = n_row_start - 1, g, a
    if n_groups < 0 or n_col_start != n_groups + 1:
        raise ValueError(f"{name}: array sizes do not match")
    for g in range(n_groups):
        if not (0 <= row_start[g] <= row_start[g + 1] <= n_row_members
                and 0 <= col_start[g] <= col_start[g + 1] <= n_col_members):
            raise ValueError(f"{name}: group bounds out of range")
    for a in range(n_row_members):
        if not 0 <= rows[a] < n_rows:
            raise ValueError(f"{name}: supplier index out of range")
    for a in range(n_col_members):
        if not 0 <= cols[a] < n_cols:
            raise ValueError(f"{name}: consumer index out of range")
    return 0


cdef void _north_west(const double* supply, const double* demand, const int64_t* row_start,
                      const int64_t* rows, const int64_t* col_start, const int64_t* cols,
                      Py_ssize_t n_groups, double* flow, Py_ssize_t n_cols) noexcept nogil:
    """The loops of ``north_west_into`` on checked arguments (``flow`` row-major)."""
    cdef Py_ssize_t g, a, b, i, j
    cdef double v, w, s_lo, s_hi, d_lo, d_hi
    for g in range(n_groups):
        s_hi = 0.0
        for a in range(row_start[g], row_start[g + 1]):
            i = rows[a]
            v = _np_max(supply[i], 0.0)
            s_lo = s_hi if a > row_start[g] else 0.0
            s_hi = s_lo + v if a > row_start[g] else v
            d_hi = 0.0
            for b in range(col_start[g], col_start[g + 1]):
                j = cols[b]
                w = _np_max(demand[j], 0.0)
                d_lo = d_hi if b > col_start[g] else 0.0
                d_hi = d_lo + w if b > col_start[g] else w
                flow[i * n_cols + j] += _np_max(_np_min(s_hi, d_hi) - _np_max(s_lo, d_lo), 0.0)


def plugged_into(cnp.ndarray ids not None, cnp.ndarray site not None,
                 cnp.ndarray soc not None, cnp.ndarray need_kwh not None,
                 cnp.ndarray departure_s not None, cnp.ndarray p_max_kw not None,
                 cnp.ndarray p_min_kw not None, cnp.ndarray v2g not None, double t_s,
                 double step_s, cnp.ndarray site_point_kw not None,
                 cnp.ndarray capacity_kwh not None, double soc_max, cnp.ndarray rate_kw not None,
                 cnp.ndarray dis_rate_kw not None, cnp.ndarray delta_e_kwh not None,
                 cnp.ndarray site_of not None, cnp.ndarray out not None):
    """The coordinator's view of the EVs plugged at ``t_s``, and its memory of each EV.

    Per plugged EV ``ids[i]`` (fleet index) at ``site[i]``, with the fleet's ``soc``,
    ``need_kwh``, ``departure_s`` [s since the start], ``p_max_kw``, ``p_min_kw`` and ``v2g``
    (0/1): raises the charge and discharge rates it was last seen to take (``rate_kw``,
    ``dis_rate_kw``, per fleet EV [kW]) to its bounds now, restarts the energy the coordinator
    has added to it (``delta_e_kwh`` [kWh]) when it was not plugged at that site before
    (``site_of``: the site of every fleet EV at the previous step, -1 if none; set to this
    step's) and writes the rows of ``out`` (8, n): need (>= 0) [kWh], time to departure (at
    least ``step_s``) [s], charge bound (>= 0) and discharge bound (<= 0) [kW], the charge and
    discharge rates to plan with (the site's ``site_point_kw`` where none was seen yet; 0 for
    EVs without V2G) [kW], the energy V2G has to give back [kWh] and the room to
    ``soc_max`` of ``capacity_kwh`` (per fleet EV; empty: unknown, the need) [kWh]. Maxima
    and minima are NumPy's, so the twin's values are the same to the bit.

    Returns 0, or before changing anything 1 when an EV index is outside the fleet and 2 when a
    site index is outside ``site_point_kw``.
    """
    cdef str f = "plugged_into"
    cdef const int64_t* ids_p = _i64(ids, f, "ids")
    cdef const int64_t* site_p = _i64(site, f, "site")
    cdef const double* soc_p = _f64(soc, f, "soc")
    cdef const double* need_p = _f64(need_kwh, f, "need_kwh")
    cdef const double* dep_p = _f64(departure_s, f, "departure_s")
    cdef const double* pmax_p = _f64(p_max_kw, f, "p_max_kw")
    cdef const double* pmin_p = _f64(p_min_kw, f, "p_min_kw")
    cdef const unsigned char* v2g_p = <unsigned char*>array_data(v2g, cnp.NPY_UINT8, 1, False,
                                                                 f, "v2g")
    cdef const double* point_p = _f64(site_point_kw, f, "site_point_kw")
    cdef const double* cap_p = _f64(capacity_kwh, f, "capacity_kwh")
    cdef double* rate_p = _f64(rate_kw, f, "rate_kw", 1, True)
    cdef double* dis_rate_p = _f64(dis_rate_kw, f, "dis_rate_kw", 1, True)
    cdef double* delta_p = _f64(delta_e_kwh, f, "delta_e_kwh", 1, True)
    cdef int64_t* site_of_p = <int64_t*>array_data(site_of, cnp.NPY_INT64, 1, True, f, "site_of")
    cdef double* out_p = _f64(out, f, "out", 2, True)
    cdef Py_ssize_t n = _len(ids), n_ev = _len(rate_kw), n_site = _len(site_point_kw)
    cdef Py_ssize_t i, e
    cdef bint known_cap = _len(capacity_kwh) > 0
    cdef double rate, dis_rate, need, point
    if (_len(site) != n or _len(soc) != n or _len(need_kwh) != n or _len(departure_s) != n
            or _len(p_max_kw) != n or _len(p_min_kw) != n or _len(v2g) != n
            or _len(dis_rate_kw) != n_ev or _len(delta_e_kwh) != n_ev or _len(site_of) != n_ev
            or (known_cap and _len(capacity_kwh) != n_ev)
            or _len(out) != 8 or cnp.PyArray_DIM(out, 1) != n):
        raise ValueError("plugged_into: array sizes do not match")
    for i in range(n):
        if not 0 <= ids_p[i] < n_ev:
            return 1
    for i in range(n):
        if not 0 <= site_p[i] < n_site:
            return 2
    with nogil:
        for i in range(n):
            if site_of_p[ids_p[i]] != site_p[i]:  # a new stay
                delta_p[ids_p[i]] = 0.0
        for e in range(n_ev):
            site_of_p[e] = -1
        for i in range(n):
            e = ids_p[i]
            site_of_p[e] = site_p[i]
            point = point_p[site_p[i]]
            need = _np_max(need_p[i], 0.0)
            out_p[i] = need
            out_p[n + i] = _np_max(dep_p[i] - t_s, step_s)
            out_p[2 * n + i] = _np_max(pmax_p[i], 0.0)
            out_p[3 * n + i] = _np_min(pmin_p[i], 0.0)
            rate = _np_max(rate_p[e], out_p[2 * n + i])
            dis_rate = _np_max(dis_rate_p[e], -out_p[3 * n + i])
            rate_p[e] = rate
            dis_rate_p[e] = dis_rate
            out_p[4 * n + i] = rate if rate > 0 else point
            out_p[5 * n + i] = (dis_rate if dis_rate > 0 else point) if v2g_p[i] else 0.0
            out_p[6 * n + i] = _np_max(-delta_p[e], 0.0)
            out_p[7 * n + i] = _np_max((soc_max - soc_p[i]) * cap_p[e], need) if known_cap \
                else need
    return 0


def done_into(cnp.ndarray p_kw not None, cnp.ndarray p_min_kw not None,
              cnp.ndarray p_max_kw not None, cnp.ndarray ids not None, cnp.ndarray site not None,
              double eta_ch, double eta_dis, double dt_h, cnp.ndarray delta_e_kwh not None,
              cnp.ndarray p_done_kw not None, cnp.ndarray site_kw not None,
              cnp.ndarray p_set_kw not None):
    """What the plugged EVs do with the coordinator's set-points ``p_kw`` (NaN: their
    maximum), and the coordinator's record of it.

    ``p_done_kw`` receives each plugged EV's power within ``[p_min_kw, p_max_kw]`` (NumPy's
    ``clip``), ``site_kw`` (2, n_site) its charging and discharging summed per site in EV order
    (as ``numpy.bincount`` sums them) [kW]; the battery energy each EV gains,
    ``(eta_ch * charging - discharging / eta_dis) * dt_h``, is added to ``delta_e_kwh[ids]``
    [kWh]; ``p_set_kw`` (per fleet EV) receives ``p_kw`` at ``ids`` and NaN elsewhere [kW].
    Returns ``(total_kw, n_finite, n_infinite)``: the plugged EVs' total power,
    ``numpy.sum(p_done_kw)`` [kW], and the numbers of finite and of infinite values of
    ``p_set_kw``. Raises ``ValueError`` when sizes or indices do not match.
    """
    cdef str f = "done_into"
    cdef const double* p_p = _f64(p_kw, f, "p_kw")
    cdef const double* pmin_p = _f64(p_min_kw, f, "p_min_kw")
    cdef const double* pmax_p = _f64(p_max_kw, f, "p_max_kw")
    cdef const int64_t* ids_p = _i64(ids, f, "ids")
    cdef const int64_t* site_p = _i64(site, f, "site")
    cdef double* delta_p = _f64(delta_e_kwh, f, "delta_e_kwh", 1, True)
    cdef double* done_p = _f64(p_done_kw, f, "p_done_kw", 1, True)
    cdef double* site_kw_p = _f64(site_kw, f, "site_kw", 2, True)
    cdef double* set_p = _f64(p_set_kw, f, "p_set_kw", 1, True)
    cdef Py_ssize_t n = _len(p_kw), n_ev = _len(delta_e_kwh)
    cdef Py_ssize_t n_site = cnp.PyArray_DIM(site_kw, 1), i, e
    cdef Py_ssize_t n_finite = 0, n_infinite = 0
    cdef double p, d, charging, discharging
    if (_len(p_min_kw) != n or _len(p_max_kw) != n or _len(ids) != n or _len(site) != n
            or _len(p_done_kw) != n or _len(site_kw) != 2 or _len(p_set_kw) != n_ev):
        raise ValueError("done_into: array sizes do not match")
    for i in range(n):
        if not (0 <= ids_p[i] < n_ev and 0 <= site_p[i] < n_site):
            raise ValueError("done_into: EV or site index out of range")
    with nogil:
        for i in range(2 * n_site):
            site_kw_p[i] = 0.0
        for e in range(n_ev):
            set_p[e] = NAN
        for i in range(n):
            p = p_p[i]
            set_p[ids_p[i]] = p
            if p != p:
                p = pmax_p[i]
            p = _np_min(_np_max(p, pmin_p[i]), pmax_p[i])
            done_p[i] = p
            charging = _np_max(p, 0.0)
            discharging = _np_max(-p, 0.0)
            site_kw_p[site_p[i]] += charging
            site_kw_p[n_site + site_p[i]] += discharging
            delta_p[ids_p[i]] = delta_p[ids_p[i]] \
                + (eta_ch * charging - discharging / eta_dis) * dt_h
        # counted without branches: NaN and numbers alternate at random along the fleet
        for e in range(n_ev):
            p = set_p[e]
            d = p - p  # 0 for a finite value, NaN for an infinite one or NaN
            n_finite += d == d
            n_infinite += p == p
        n_infinite -= n_finite
    return _np_sum(done_p, n) if n > 0 else 0.0, n_finite, n_infinite


def supply_into(cnp.ndarray pv_p_kw not None, cnp.ndarray pv_avail_kw not None,
                cnp.ndarray factory_p_kw not None, cnp.ndarray pv_kw not None):
    """The step's PV and factory power as the coordinator counts it.

    ``pv_kw`` receives each plant's generation, ``max(-pv_p_kw, 0)`` (``pv_p_kw`` in load
    convention, generation negative) [kW]. Returns ``(pv_total_kw, factory_total_kw,
    pv_curtailed_kw)``: the sums of ``pv_kw`` and ``factory_p_kw`` and of the available power
    not generated, ``max(pv_avail_kw - pv_kw, 0)`` [kW]. Maxima and sums are NumPy's, so the
    twin's values are the same to the bit. Raises ``ValueError`` when sizes do not match.
    """
    cdef str f = "supply_into"
    cdef const double* p_p = _f64(pv_p_kw, f, "pv_p_kw")
    cdef const double* avail_p = _f64(pv_avail_kw, f, "pv_avail_kw")
    cdef const double* fac_p = _f64(factory_p_kw, f, "factory_p_kw")
    cdef double* pv_p = _f64(pv_kw, f, "pv_kw", 1, True)
    cdef Py_ssize_t n = _len(pv_p_kw), n_fac = _len(factory_p_kw), i
    cdef double pv_total, fac_total, curtailed
    if _len(pv_avail_kw) != n or _len(pv_kw) != n:
        raise ValueError("supply_into: array sizes do not match")
    cdef double* withheld = <double*>malloc((<size_t>n + 1) * sizeof(double))
    if withheld == NULL:
        raise MemoryError("supply_into: out of memory")
    with nogil:
        for i in range(n):
            pv_p[i] = _np_max(-p_p[i], 0.0)
            withheld[i] = _np_max(avail_p[i] - pv_p[i], 0.0)
        pv_total = _np_sum(pv_p, n)
        fac_total = _np_sum(fac_p, n_fac)
        curtailed = _np_sum(withheld, n)
    free(withheld)
    return pv_total, fac_total, curtailed


# -- pv_following's charging of one step --------------------------------------------------------
#
# ``charge_into`` is the strategy's whole step in one call: its targets, the PV of each site's bus,
# the allocation of mandatory power and PV, the sharing of PV left over and the off-peak fill,
# each a call of ``_allocate`` on inputs worked out here. Every other operation is the NumPy
# operation the twin (``ext.dispatch_np.charge_into``) does, in its order: elementwise arithmetic
# as written, NumPy's maxima and minima, sums as ``numpy.sum`` adds (``_np_sum``), per-site sums
# as ``numpy.bincount`` adds, cumulative sums in order. Given the same allocation, both give
# the same powers to the bit.

cdef enum:
    TARGET_FULL = 0         # departure_target "full"
    TARGET_MORNING_FULL = 1  # "morning_full"
    TARGET_NEED = 2         # "need"

cdef extern from *:
    """
    #define SDG_SHARE_EPS_KW 1e-6
    #define SDG_FILL_EPS_KWH 1e-9
    """
    # PV or room below this is none to share [kW]; energy below this none to fill [kWh]
    const double SHARE_EPS_KW "SDG_SHARE_EPS_KW"
    const double FILL_EPS_KWH "SDG_FILL_EPS_KWH"


cdef double _pairwise(const double* a, Py_ssize_t n) noexcept nogil:
    """NumPy's pairwise summation of ``a[:n]``: blocks of up to 128 values added with eight
    accumulators, larger arrays halved (at a multiple of 8) and the halves added."""
    cdef Py_ssize_t i, n2
    cdef double res, r0, r1, r2, r3, r4, r5, r6, r7
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    if n <= 128:
        r0 = a[0]
        r1 = a[1]
        r2 = a[2]
        r3 = a[3]
        r4 = a[4]
        r5 = a[5]
        r6 = a[6]
        r7 = a[7]
        i = 8
        while i < n - n % 8:
            r0 += a[i]
            r1 += a[i + 1]
            r2 += a[i + 2]
            r3 += a[i + 3]
            r4 += a[i + 4]
            r5 += a[i + 5]
            r6 += a[i + 6]
            r7 += a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise(a, n2) + _pairwise(a + n2, n - n2)


cdef inline double _np_sum(const double* a, Py_ssize_t n) noexcept nogil:
    """``numpy.sum(a[:n])`` to the bit: the identity 0.0 plus the pairwise sum."""
    return 0.0 + _pairwise(a, n)


cdef inline double _py_max(double a, double b) noexcept nogil:
    # the built-in max(a, b): a unless b is larger
    return b if b > a else a


cdef inline void _site_sums(Py_ssize_t n, Py_ssize_t n_site, const int64_t* site,
                            const double* x, const double* y, double* out) noexcept nogil:
    """``numpy.bincount(site, x + y, n_site)`` (``y`` NULL: ``x``), in EV order."""
    cdef Py_ssize_t i
    for i in range(n_site):
        out[i] = 0.0
    if y == NULL:
        for i in range(n):
            out[site[i]] += x[i]
    else:
        for i in range(n):
            out[site[i]] += x[i] + y[i]


ctypedef struct Charge:
    # one step's fixed inputs
    Py_ssize_t n
    Py_ssize_t n_site
    const double* p_max
    const int64_t* site
    const double* cap
    const double* t_dep  # planned departures [s]
    double step_s
    double dt_h
    double eta_ch
    double eta_dis
    # scratch: n zeros, an allocation's powers and inputs, n_site zeros, site outputs, totals
    double* zeros
    double* x
    double* need
    double* t_alloc
    double* room
    double* want
    double* zeros_s
    double* site_out
    double* cap_left
    char* alloc_block  # ``_allocate_in``'s work block
    double totals[6]
    Py_ssize_t bad


cdef inline int _alloc(Charge* c, const double* need, const double* t_dep, const double* p_max,
                       const double* cap, const double* pv, double budget) noexcept nogil:
    """``_allocate`` of charging only (no discharge, the rate is ``p_max``) into ``c.x``."""
    return _allocate_in(c.n, c.n_site, need, t_dep, p_max, c.zeros, p_max, c.site, cap, pv,
                        budget, c.step_s, c.eta_ch, c.eta_dis, c.x, c.site_out,
                        c.site_out + c.n_site, c.site_out + 2 * c.n_site, c.totals, &c.bad,
                        c.alloc_block)


cdef int _share(Charge* c, const double* p, const double* want_kwh, double* site_pv,
                double* pool, double* extra) noexcept nogil:
    """Extra charging from PV left over (``site_pv`` per site, ``pool`` for the zone), toward
    ``want_kwh`` (NULL: up to full) this step, into ``extra``; the PV left is written back.

    Each site's PV goes to its own EVs first, then the pool (with what the sites left) to all;
    within each, the EVs leaving soonest first: one step of room as the need, departures one
    step past the planned ones (no mandatory power). Returns ``_allocate``'s status."""
    cdef Py_ssize_t i, s, n = c.n, n_site = c.n_site
    cdef double den = c.eta_ch * c.dt_h, w
    cdef int local, status
    for i in range(n):
        extra[i] = 0.0
    if _np_sum(site_pv, n_site) + pool[0] <= SHARE_EPS_KW:
        return 0
    for i in range(n):
        w = _np_max(c.p_max[i] - p[i], 0.0)
        if want_kwh != NULL:
            w = _np_min(w, _np_max(want_kwh[i], 0.0) / den)
        c.want[i] = w
    if _np_sum(c.want, n) <= SHARE_EPS_KW:
        return 0
    for local in range(1, -1, -1):
        if not local:  # the sites' leftovers, pooled
            pool[0] += _np_sum(site_pv, n_site)
            for s in range(n_site):
                site_pv[s] = 0.0
        for i in range(n):
            c.room[i] = c.want[i] - extra[i]
        if pool[0] + _np_sum(site_pv, n_site) <= SHARE_EPS_KW \
                or _np_sum(c.room, n) <= SHARE_EPS_KW:
            break
        _site_sums(n, n_site, c.site, p, extra, c.cap_left)
        for s in range(n_site):
            c.cap_left[s] = _np_max(c.cap[s] - c.cap_left[s], 0.0)
        for i in range(n):
            c.need[i] = c.room[i] * c.eta_ch * c.dt_h
            c.t_alloc[i] = c.t_dep[i] + c.step_s
        status = _alloc(c, c.need, c.t_alloc, c.room, c.cap_left, site_pv, pool[0])
        if status:
            return status
        for i in range(n):
            extra[i] += c.x[i]
        for s in range(n_site):
            site_pv[s] = _np_max(site_pv[s] - c.site_out[s], 0.0)
        pool[0] = _py_max(pool[0] - c.totals[1], 0.0)
    return 0


cdef int _fill(Charge* c, double* p, const double* target, const double* forecast,
               Py_ssize_t n_fc, double window_lo, double window_hi, double fill_s,
               double lead_h, double* left, double* pv_kwh) noexcept nogil:
    """Off-peak grid charging of the EVs leaving in the fill window (departure in steps within
    ``[window_lo, window_hi]``) toward their targets, less the share of the PV forecast before
    they leave, spread evenly over the ``fill_s`` seconds of the off-peak period and done
    ``lead_h`` early; added to ``p``. Returns ``_allocate``'s status."""
    cdef Py_ssize_t i, j, n = c.n, m
    cdef int64_t at
    cdef double dep, left_kwh, lead, budget, end
    cdef bint morning, any_morning = False
    for i in range(n):
        dep = c.t_dep[i] / c.step_s
        morning = dep >= window_lo and dep <= window_hi
        any_morning |= morning
        left[i] = _np_max((target[i] if morning else 0.0) - c.eta_ch * p[i] * c.dt_h, 0.0)
        c.room[i] = _np_max(c.p_max[i] - p[i], 0.0) if left[i] > 0 else 0.0
    if not any_morning:
        return 0
    left_kwh = _np_sum(left, n)
    if left_kwh <= FILL_EPS_KWH or _np_sum(c.room, n) <= SHARE_EPS_KW:
        return 0
    # PV energy expected from the next step up to each step of the forecast [kWh]; an EV
    # counts the steps before its departure's
    m = n_fc if n_fc > 1 else 1
    pv_kwh[0] = 0.0
    for j in range(1, n_fc):
        pv_kwh[j] = _np_max(forecast[j], 0.0) * c.dt_h
        if j > 1:
            pv_kwh[j] = pv_kwh[j - 1] + pv_kwh[j]
    for i in range(n):
        at = <int64_t>(c.t_dep[i] / c.step_s) - 1
        at = at if at > 0 else 0
        at = at if at < m - 1 else m - 1
        left[i] = _np_max(left[i] - c.eta_ch * pv_kwh[at] * left[i] / left_kwh, 0.0)
    if _np_sum(left, n) <= FILL_EPS_KWH:
        return 0
    # done ahead of the window's end (or departure): mandatory power within the window only
    lead = 3600.0 * lead_h
    for i in range(n):
        end = _np_min(c.t_dep[i], fill_s)
        c.t_alloc[i] = _np_max(end - lead, c.step_s)
        c.need[i] = left[i] / (c.eta_ch * (_np_min(c.t_alloc[i], fill_s) / 3600.0))
    budget = _np_sum(c.need, n)  # the grid power that spreads the fill evenly
    _site_sums(n, c.n_site, c.site, p, NULL, c.cap_left)
    for i in range(c.n_site):
        c.cap_left[i] = _np_max(c.cap[i] - c.cap_left[i], 0.0)
    status = _alloc(c, left, c.t_alloc, c.room, c.cap_left, c.zeros_s, budget)
    if status:
        return status
    for i in range(n):
        p[i] = p[i] + c.x[i]
    return 0


cdef int _charge(Charge* c, const double* need_kwh, const double* restore_kwh,
                 const double* room_kwh, const double* t_dep_s, const double* pv,
                 Py_ssize_t n_plant, const int64_t* g_site_start, const int64_t* g_sites,
                 const int64_t* g_plant_start, const int64_t* g_plants, Py_ssize_t n_group,
                 const double* forecast, Py_ssize_t n_fc, double need_margin,
                 double departure_margin_s, int target_mode, bint pv_to_full,
                 double window_lo, double window_hi, double fill_s, double lead_h,
                 double* p, double* need_out, double* t_dep_out, double* target,
                 double* scratch) noexcept nogil:
    """The step (see ``charge_into``); ``scratch`` holds 3 n + 4 n_site + n_plant + n_fc + 1
    doubles besides those of ``c``. Returns ``_allocate``'s status."""
    cdef Py_ssize_t i, j, g, s, n = c.n, n_site = c.n_site, k0, k1, n_here
    cdef double factor = 1.0 + need_margin, nd, tg, dep, pool, pool_left, supply, w_sum
    cdef double* extra = scratch
    cdef double* rest = extra + n
    cdef double* left = rest + n
    cdef double* site_pv = left + n
    cdef double* site_left = site_pv + n_site
    cdef double* weight = site_left + n_site
    cdef double* gather = weight + n_site  # n_plant + n_site
    cdef double* pv_kwh = gather + n_plant + n_site
    cdef bint weighted = False
    cdef int status
    c.t_dep = t_dep_out
    # the planned need and departure (margins applied) and the target of each EV
    for i in range(n):
        nd = _np_max(need_kwh[i], restore_kwh[i]) * factor
        need_out[i] = nd
        t_dep_out[i] = _np_max(t_dep_s[i] - departure_margin_s, c.step_s)
        tg = _np_max(room_kwh[i], nd)
        if target_mode != TARGET_FULL:
            dep = t_dep_out[i] / c.step_s
            if not (dep >= window_lo and dep <= window_hi):
                tg = nd
        target[i] = tg
    # each bus's PV to the sites on it (by their EVs' maximum power where they share it), the
    # PV of buses without a site to the zone pool
    for s in range(n_site):
        site_pv[s] = 0.0
    pool = _np_sum(pv, n_plant)
    if n_plant > 0 and n_site > 0:
        for g in range(n_group):
            if g_site_start[g + 1] - g_site_start[g] > 1:
                weighted = True
        if weighted:
            _site_sums(n, n_site, c.site, c.p_max, NULL, weight)
        for g in range(n_group):
            k0, k1 = g_plant_start[g], g_plant_start[g + 1]
            for j in range(k0, k1):
                gather[j - k0] = pv[g_plants[j]]
            supply = _np_sum(gather, k1 - k0)
            if supply <= 0:
                continue
            k0, k1 = g_site_start[g], g_site_start[g + 1]
            n_here = k1 - k0
            if n_here == 1:  # the weight's share is 1 exactly
                site_pv[g_sites[k0]] = supply
            elif n_here > 1:
                for j in range(k0, k1):
                    gather[j - k0] = weight[g_sites[j]]
                w_sum = _np_sum(gather, n_here)
                for j in range(k0, k1):
                    site_pv[g_sites[j]] = supply * (weight[g_sites[j]] / w_sum if w_sum > 0
                                                    else 1.0 / n_here)
            pool -= supply
        pool = _py_max(pool, 0.0)
    if n == 0:
        return 0
    # 1. mandatory power and PV up to the targets
    status = _alloc(c, target, t_dep_out, c.p_max, c.cap, site_pv, pool)
    if status:
        return status
    for i in range(n):
        p[i] = c.x[i]
    for s in range(n_site):
        site_left[s] = _np_max(site_pv[s] - c.site_out[s], 0.0)
    pool_left = _py_max(pool - c.totals[1], 0.0)
    if _np_sum(site_left, n_site) + pool_left > SHARE_EPS_KW:
        # PV a site's EVs do not need goes to the targets of EVs elsewhere
        for i in range(n):
            rest[i] = _np_max(target[i] - c.eta_ch * p[i] * c.dt_h, 0.0)
        status = _share(c, p, rest, site_left, &pool_left, extra)
        if status:
            return status
        for i in range(n):
            p[i] = p[i] + extra[i]
        # 2. PV left over, up to full
        if pv_to_full:
            status = _share(c, p, NULL, site_left, &pool_left, extra)
            if status:
                return status
            for i in range(n):
                p[i] = p[i] + extra[i]
    # 3. off-peak grid energy for the EVs leaving in the morning
    if fill_s > 0:
        return _fill(c, p, target, forecast, n_fc, window_lo, window_hi, fill_s, lead_h,
                     left, pv_kwh)
    return 0


cdef inline bint _out_of(double x, double lo, double hi) noexcept nogil:
    return not (x >= lo and x <= hi)  # NaN is out of every range


cdef extern from *:
    """
    /* Whether every value of an argument is valid: the usual case, checked two values per
       instruction (SSE2; one at a time elsewhere) without branches; only an invalid argument
       is searched for its first invalid value. NaN is never valid (ordered comparisons). */
    static int sdg_all_within(const double* x, Py_ssize_t n, double lo, double hi,
                              int lo_open) {
        int ok = 1;
        Py_ssize_t i = 0;
    #if SDG_SIMD
        __m128d vlo = _mm_set1_pd(lo), vhi = _mm_set1_pd(hi);
        __m128d all = _mm_cmpeq_pd(vlo, vlo);  /* all bits set */
        for (; i + 2 <= n; i += 2) {
            __m128d v = _mm_loadu_pd(x + i);
            all = _mm_and_pd(all, _mm_and_pd(lo_open ? _mm_cmpgt_pd(v, vlo)
                                                     : _mm_cmpge_pd(v, vlo),
                                             _mm_cmple_pd(v, vhi)));
        }
        ok = _mm_movemask_pd(all) == 3;
    #endif
        for (; i < n; i++)
            ok &= (lo_open ? x[i] > lo : x[i] >= lo) & (x[i] <= hi);
        return ok;
    }
    /* Whether 0 <= x[i] < size for every i (negative indices wrap to huge values). */
    static int sdg_all_indices(const int64_t* x, Py_ssize_t n, Py_ssize_t size) {
        int ok = 1;
        for (Py_ssize_t i = 0; i < n; i++)
            ok &= (uint64_t)x[i] < (uint64_t)size;
        return ok;
    }
    """
    bint _all_within "sdg_all_within"(const double* x, Py_ssize_t n, double lo, double hi,
                                      bint lo_open) noexcept nogil
    bint _all_indices "sdg_all_indices"(const int64_t* x, Py_ssize_t n,
                                        Py_ssize_t size) noexcept nogil


cdef inline size_t _charge_doubles(Py_ssize_t n, Py_ssize_t n_site, Py_ssize_t n_plant,
                                   Py_ssize_t n_fc) noexcept nogil:
    """Length of ``charge_into``'s work array: its own scratch, then the allocations' block."""
    return (9 * <size_t>n + 9 * <size_t>n_site + <size_t>n_plant + <size_t>n_fc + 1
            + (_allocate_bytes(n, n_site) + sizeof(double) - 1) // sizeof(double))


def charge_work_size(Py_ssize_t n, Py_ssize_t n_site, Py_ssize_t n_plant, Py_ssize_t n_fc):
    """Length of the work array ``charge_into`` needs for ``n`` plugged EVs, ``n_site`` sites,
    ``n_plant`` plants and a PV forecast of ``n_fc`` values (any larger array does too)."""
    if n < 0 or n_site < 0 or n_plant < 0 or n_fc < 0:
        raise ValueError("charge_work_size: sizes must be >= 0")
    return _charge_doubles(n, n_site, n_plant, n_fc)


def charge_into(cnp.ndarray need_kwh not None, cnp.ndarray restore_kwh not None,
                cnp.ndarray room_kwh not None, cnp.ndarray t_dep_s not None,
                cnp.ndarray p_max_kw not None, cnp.ndarray site not None,
                cnp.ndarray site_cap_kw not None, cnp.ndarray pv_kw not None,
                cnp.ndarray group_site_start not None, cnp.ndarray group_sites not None,
                cnp.ndarray group_plant_start not None, cnp.ndarray group_plants not None,
                cnp.ndarray pv_forecast_kw not None, double step_s, double eta_ch,
                double eta_dis, double need_margin, double departure_margin_s, int target_mode,
                bint pv_to_full, double window_lo, double window_hi, double fill_s,
                double fill_lead_h, cnp.ndarray out not None, cnp.ndarray work not None):
    """Charging powers of the plugged EVs for one step of ``pv_following`` into ``out``.

    See ``ext.dispatch_np.charge_into`` (the twin) for the method and the arguments; the
    compiled kernel does each NumPy operation of the twin as NumPy does it, so given the same
    allocation kernel both give the same values to the bit. Returns ``(code, index)``:
    ``(0, -1)``, or the number of the first invalid array argument (see ``CHARGE_ARRAYS``) and
    the index of its first invalid element; ``(len(CHARGE_ARRAYS) + 1, index)`` when an
    allocation refused its inputs (``index``: the element). Raises ``ValueError`` when sizes or
    groups do not match.
    """
    cdef str f = "charge_into"
    cdef const double* need_p = _f64(need_kwh, f, "need_kwh")
    cdef const double* restore_p = _f64(restore_kwh, f, "restore_kwh")
    cdef const double* room_p = _f64(room_kwh, f, "room_kwh")
    cdef const double* t_dep_p = _f64(t_dep_s, f, "t_dep_s")
    cdef const double* p_max_p = _f64(p_max_kw, f, "p_max_kw")
    cdef const int64_t* site_p = _i64(site, f, "site")
    cdef const double* cap_p = _f64(site_cap_kw, f, "site_cap_kw")
    cdef const double* pv_p = _f64(pv_kw, f, "pv_kw")
    cdef const int64_t* g_site_start = _i64(group_site_start, f, "group_site_start")
    cdef const int64_t* g_sites_p = _i64(group_sites, f, "group_sites")
    cdef const int64_t* g_plant_start = _i64(group_plant_start, f, "group_plant_start")
    cdef const int64_t* g_plants_p = _i64(group_plants, f, "group_plants")
    cdef const double* fc_p = _f64(pv_forecast_kw, f, "pv_forecast_kw")
    cdef double* p_out = _f64(out, f, "out", 2, True)
    cdef double* block = _f64(work, f, "work", 1, True)
    cdef Py_ssize_t n = _len(need_kwh), n_site = _len(site_cap_kw)
    cdef Py_ssize_t n_plant = _len(pv_kw), n_group = _len(group_site_start) - 1
    cdef Py_ssize_t n_fc = _len(pv_forecast_kw), n_g_sites = _len(group_sites)
    cdef Py_ssize_t n_g_plants = _len(group_plants), i, g
    cdef int status, code = 0
    cdef Charge c
    if (_len(restore_kwh) != n or _len(room_kwh) != n or _len(t_dep_s) != n
            or _len(p_max_kw) != n or _len(site) != n or _len(out) != 4
            or cnp.PyArray_DIM(out, 1) != n or n_group < 0
            or _len(group_plant_start) != n_group + 1):
        raise ValueError("charge_into: array sizes do not match")
    if <size_t>_len(work) < _charge_doubles(n, n_site, n_plant, n_fc):
        raise ValueError("charge_into: work holds fewer values than charge_work_size asks")
    for g in range(n_group):
        if not (0 <= g_site_start[g] <= g_site_start[g + 1] <= n_g_sites
                and 0 <= g_plant_start[g] <= g_plant_start[g + 1] <= n_g_plants):
            raise ValueError("charge_into: group bounds out of range")
    for i in range(n_g_sites):
        if not 0 <= g_sites_p[i] < n_site:
            raise ValueError("charge_into: group site index out of range")
    for i in range(n_g_plants):
        if not 0 <= g_plants_p[i] < n_plant:
            raise ValueError("charge_into: group plant index out of range")
    if not (1e-3 <= step_s <= 1e9 and 0.0 < eta_ch <= 1.0 and 0.0 < eta_dis <= 1.0
            and 0.0 <= need_margin <= 1.0 and 0.0 <= departure_margin_s <= MAX_S
            and TARGET_FULL <= target_mode <= TARGET_NEED and fill_s >= 0.0
            and 0.0 <= fill_lead_h <= 1e6):
        raise ValueError("charge_into: a scalar argument is out of range")
    if not (_all_within(need_p, n, 0.0, MAX_KWH, False)
            and _all_within(restore_p, n, 0.0, MAX_KWH, False)
            and _all_within(room_p, n, 0.0, MAX_KWH, False)
            and _all_within(t_dep_p, n, 0.0, MAX_S, True)
            and _all_within(p_max_p, n, 0.0, MAX_KW, False)
            and _all_indices(site_p, n, n_site)
            and _all_within(cap_p, n_site, 0.0, MAX_KW, False)
            and _all_within(pv_p, n_plant, 0.0, MAX_KW, False)
            and _all_within(fc_p, n_fc, -MAX_KW, MAX_KW, False)):
        for i in range(n):
            if _out_of(need_p[i], 0.0, MAX_KWH):
                return 1, i
        for i in range(n):
            if _out_of(restore_p[i], 0.0, MAX_KWH):
                return 2, i
        for i in range(n):
            if _out_of(room_p[i], 0.0, MAX_KWH):
                return 3, i
        for i in range(n):
            if _out_of(t_dep_p[i], 0.0, MAX_S) or t_dep_p[i] == 0.0:
                return 4, i
        for i in range(n):
            if _out_of(p_max_p[i], 0.0, MAX_KW):
                return 5, i
        for i in range(n):
            if not 0 <= site_p[i] < n_site:
                return 6, i
        for i in range(n_site):
            if _out_of(cap_p[i], 0.0, MAX_KW):
                return 7, i
        for i in range(n_plant):
            if _out_of(pv_p[i], 0.0, MAX_KW):
                return 8, i
        for i in range(n_fc):
            if _out_of(fc_p[i], -MAX_KW, MAX_KW):
                return 9, i
    c.n = n
    c.n_site = n_site
    c.p_max = p_max_p if n > 0 else NULL
    c.site = site_p if n > 0 else NULL
    c.cap = cap_p if n_site > 0 else NULL
    c.step_s = step_s
    c.dt_h = step_s / 3600.0
    c.eta_ch = eta_ch
    c.eta_dis = eta_dis
    c.bad = -1
    # the work array: the scratch of c, that of _charge, then the allocations' block (reused
    # by each allocation of the step)
    c.zeros = block
    c.x = c.zeros + n
    c.need = c.x + n
    c.t_alloc = c.need + n
    c.room = c.t_alloc + n
    c.want = c.room + n
    c.zeros_s = c.want + n
    c.site_out = c.zeros_s + n_site
    c.cap_left = c.site_out + 3 * n_site
    c.alloc_block = <char*>(block + 9 * n + 9 * n_site + n_plant + n_fc + 1)
    for i in range(n):
        c.zeros[i] = 0.0
    for i in range(n_site):
        c.zeros_s[i] = 0.0
    if target_mode == TARGET_NEED:  # no EV counts as leaving in the window
        window_lo, window_hi = INFINITY, -INFINITY
    if n == 0:
        p_out = NULL
    with nogil:
        status = _charge(&c, need_p, restore_p, room_p, t_dep_p, pv_p, n_plant,
                         g_site_start, g_sites_p, g_plant_start, g_plants_p,
                         n_group, fc_p, n_fc, need_margin, departure_margin_s, target_mode,
                         pv_to_full, window_lo, window_hi, fill_s, fill_lead_h, p_out,
                         p_out + n if n > 0 else NULL, p_out + 2 * n if n > 0 else NULL,
                         p_out + 3 * n if n > 0 else NULL, c.cap_left + n_site)
    if status:
        return 10, c.bad
    return 0, -1



# -- the settlement of one step ------------------------------------------------------------------

cdef inline void _column_sums(const double* m, Py_ssize_t n_rows, Py_ssize_t n_cols,
                              double* out) noexcept nogil:
    """``m.sum(axis=0)`` of a row-major table as NumPy adds it: from 0, row after row."""
    cdef Py_ssize_t i, j
    for j in range(n_cols):
        out[j] = 0.0
    for i in range(n_rows):
        for j in range(n_cols):
            out[j] += m[i * n_cols + j]


def settle_into(cnp.ndarray pv_kw not None, cnp.ndarray charge_kw not None,
                cnp.ndarray discharge_kw not None, cnp.ndarray row_start not None,
                cnp.ndarray rows not None, cnp.ndarray col_start not None,
                cnp.ndarray cols not None, cnp.ndarray same_cells not None, double dt_h,
                double min_kwh, cnp.ndarray flow not None, cnp.ndarray export_kw not None,
                cnp.ndarray site_kw not None, cnp.ndarray kwh not None,
                cnp.ndarray listed not None, cnp.ndarray totals not None):
    """The transport tables, leftovers and trades of one step's settlement.

    See ``ext.dispatch_np.settle_into`` (the twin) for the method and the arguments; every
    operation is the twin's NumPy operation as NumPy does it (tables by ``_north_west``, row
    sums pairwise, column sums in row order, totals by ``_np_sum``), so both give the same
    values to the bit. Returns the number of trades listed. Raises ``ValueError`` when sizes,
    groups or cells do not match.
    """
    cdef str f = "settle_into"
    cdef const double* pv_in = _f64(pv_kw, f, "pv_kw")
    cdef const double* ch_in = _f64(charge_kw, f, "charge_kw")
    cdef const double* dis_in = _f64(discharge_kw, f, "discharge_kw")
    cdef const int64_t* starts = _i64(row_start, f, "row_start")
    cdef const int64_t* rows_p = _i64(rows, f, "rows")
    cdef const int64_t* col_starts = _i64(col_start, f, "col_start")
    cdef const int64_t* cols_p = _i64(cols, f, "cols")
    cdef const int64_t* cells = _i64(same_cells, f, "same_cells")
    cdef double* flow_p = _f64(flow, f, "flow", 2, True)
    cdef double* export_p = _f64(export_kw, f, "export_kw", 1, True)
    cdef double* grid_p = _f64(site_kw, f, "site_kw", 2, True)
    cdef double* kwh_p = _f64(kwh, f, "kwh", 1, True)
    cdef int64_t* listed_p = <int64_t*>array_data(listed, cnp.NPY_INT64, 1, True, f, "listed")
    cdef double* tot_p = _f64(totals, f, "totals", 1, True)
    cdef Py_ssize_t n_p = _len(pv_kw), n_s = _len(charge_kw), n_c = n_p * n_s
    cdef Py_ssize_t n_same = _len(same_cells), n_trades = n_same + n_c + 2 * n_s + n_p
    cdef Py_ssize_t i, j, k, m = 0
    if (_len(discharge_kw) != n_s or _len(flow) != n_p or cnp.PyArray_DIM(flow, 1) != n_s
            or _len(export_kw) != n_p or _len(site_kw) != 2 or cnp.PyArray_DIM(site_kw, 1) != n_s
            or _len(kwh) != n_trades or _len(listed) != n_trades or _len(totals) < 4):
        raise ValueError("settle_into: array sizes do not match")
    _check_groups("settle_into", n_p, n_s, starts, _len(row_start), rows_p, _len(rows),
                  col_starts, _len(col_start), cols_p, _len(cols))
    for k in range(n_same):
        if not 0 <= cells[k] < n_c:
            raise ValueError("settle_into: same-bus cell out of range")
    # scratch: supply and demand (clamped, then what the same-bus tables leave), the same-bus
    # table, the pool's group (everyone, in order)
    cdef size_t n_bytes = (2 * <size_t>(n_p + n_s) + <size_t>n_c) * sizeof(double) \
        + (<size_t>(n_p + n_s) + 4) * sizeof(int64_t)
    cdef char* block = <char*>malloc(n_bytes)
    if block == NULL:
        raise MemoryError("settle_into: out of memory")
    cdef double* pv = <double*>block
    cdef double* ch = pv + n_p
    cdef double* pv_rest = ch + n_s
    cdef double* ch_rest = pv_rest + n_p
    cdef double* same = ch_rest + n_s
    cdef int64_t* everyone = <int64_t*>(same + n_c)
    cdef int64_t* pool_rows = everyone + n_p + n_s
    cdef int64_t* pool_cols = pool_rows + 2
    cdef double* dis_p = grid_p + n_s
    cdef Py_ssize_t n_groups = _len(row_start) - 1
    cdef double x
    with nogil:
        for i in range(n_p):
            pv[i] = _np_max(pv_in[i], 0.0)
            everyone[i] = i
        for j in range(n_s):
            ch[j] = _np_max(ch_in[j], 0.0)
            dis_p[j] = _np_max(dis_in[j], 0.0)
            everyone[n_p + j] = j
        pool_rows[0] = 0
        pool_rows[1] = n_p
        pool_cols[0] = 0
        pool_cols[1] = n_s
        # 1. same bus first
        for k in range(n_c):
            same[k] = 0.0
        _north_west(pv, ch, starts, rows_p, col_starts, cols_p, n_groups, same, n_s)
        # 2. then the zone pool, on what each plant and site has left
        for i in range(n_p):
            pv_rest[i] = pv[i] - _np_sum(same + i * n_s, n_s)
        _column_sums(same, n_p, n_s, ch_rest)
        for j in range(n_s):
            ch_rest[j] = ch[j] - ch_rest[j]
        for k in range(n_c):
            flow_p[k] = same[k]
        _north_west(pv_rest, ch_rest, pool_rows, everyone, pool_cols, everyone + n_p, 1,
                    flow_p, n_s)
        # 3. leftovers: PV exported, charging from the grid
        for i in range(n_p):
            export_p[i] = _np_max(pv[i] - _np_sum(flow_p + i * n_s, n_s), 0.0)
        _column_sums(flow_p, n_p, n_s, grid_p)
        for j in range(n_s):
            grid_p[j] = _np_max(ch[j] - grid_p[j], 0.0)
        tot_p[0] = _np_sum(flow_p, n_c)
        tot_p[1] = _np_sum(grid_p, n_s)
        tot_p[2] = _np_sum(dis_p, n_s)
        tot_p[3] = _np_sum(export_p, n_p)
        # the energy of every possible trade, in listing order
        k = 0
        for i in range(n_same):
            kwh_p[k] = same[cells[i]] * dt_h
            k += 1
        for i in range(n_c):
            kwh_p[k] = (flow_p[i] - same[i]) * dt_h
            k += 1
        for j in range(n_s):
            kwh_p[k] = grid_p[j] * dt_h
            kwh_p[k + n_s] = dis_p[j] * dt_h
            k += 1
        k += n_s
        for i in range(n_p):
            kwh_p[k] = export_p[i] * dt_h
            k += 1
        # the trades listed, moved to the front in order
        for k in range(n_trades):
            if kwh_p[k] >= min_kwh:
                kwh_p[m] = kwh_p[k]
                listed_p[m] = k
                m += 1
    free(block)
    return m



def listed_trades(list trades not None, cnp.ndarray listed not None, cnp.ndarray kwh not None,
                  Py_ssize_t n, tuple price not None):
    """The ``n`` trades ``settle_into`` listed, as tuples ``(seller, buyer, kWh, price,
    kind)``: trade ``listed[m]`` of ``trades`` (each ``(seller, buyer, kind index, kind)``),
    its energy ``kwh[m]`` [kWh] and the price of its kind, ``price[kind index]`` [CNY/kWh].
    Raises ``ValueError`` when ``n`` exceeds the arrays or a trade is no such tuple,
    ``IndexError`` for a trade or kind index out of range."""
    cdef str f = "listed_trades"
    cdef const int64_t* listed_p = _i64(listed, f, "listed")
    cdef const double* kwh_p = _f64(kwh, f, "kwh")
    cdef Py_ssize_t m, j, n_trades = len(trades)
    cdef tuple trade
    if not 0 <= n <= _len(listed) or n > _len(kwh):
        raise ValueError("listed_trades: n exceeds the arrays")
    out = []
    for m in range(n):  # indices checked here: the module is compiled without bounds checks
        j = listed_p[m]
        if not 0 <= j < n_trades:
            raise IndexError(f"listed_trades: trade {j} is not one of the {n_trades}")
        trade = trades[j]
        if len(trade) != 4:
            raise ValueError("listed_trades: a trade is (seller, buyer, kind index, kind)")
        out.append((trade[0], trade[1], kwh_p[m], price[trade[2]], trade[3]))
    return out
