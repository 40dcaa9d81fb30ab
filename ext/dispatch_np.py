"""NumPy twin of ``ext.dispatch``: the same allocation, the same outputs, without C.

See ``ext/dispatch.pyx`` for the method and ``ext/dispatch_api.py`` for the public function and
the meaning (and units) of every argument. Per-EV quantities use the compiled kernel's formulas
operation for operation. The water levels are found differently: the compiled kernel selects
them without sorting (expected O(N)), this twin sorts the breakpoints of all groups at once
(O(N log N)), reads each level off cumulative sums and refines it with one Newton step on the
exact sums. The level of a water-filling problem is unique wherever it matters (where it is
not, every EV gets the same power either way), so both give the same powers up to rounding.
The coordinator's other kernels (``plugged_into``, ``done_into``, ``north_west_into``) are the
NumPy operations they replace and give the same values to the bit.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EPS_KW",
    "N_TOTALS",
    "allocate_into",
    "done_into",
    "north_west_into",
    "north_west_table",
    "plugged_into",
]

EPS_KW = 1e-9
"""A charge power at most this large counts as none when choosing EVs that may discharge. [kW]"""

N_TOTALS = 6
"""Length of ``totals``: mandatory, grid, discharge, charge [kW], n_infeasible, n_cap_limited."""

_FEAS_TOL = 1e-9
"""Relative and absolute tolerance of the feasibility and mandatory-power counts. [kW]"""

MAX_KWH, MAX_S, MAX_KW = 1e9, 1e12, 1e9
"""Largest energy need [kWh], time to departure [s] and power [kW] accepted."""

RATE_FLOOR_KW = 1e-9
"""Charge rates below this count as 0. [kW]"""

LAX_MAX_H = 1e9
"""Laxities are held within +-LAX_MAX_H. [h]"""


def _seqsum(x: np.ndarray) -> float:
    """Left-to-right sum (the compiled kernel's order; ``np.sum`` sums pairwise)."""
    return float(np.cumsum(x)[-1]) if x.size else 0.0


def _first_bad(need: np.ndarray, t_dep: np.ndarray, p_max: np.ndarray, p_min: np.ndarray,
               p_rate: np.ndarray, site: np.ndarray, cap: np.ndarray,
               pv: np.ndarray) -> tuple[int, int]:
    """``(code, index)`` of the first invalid element, argument by argument; ``(0, -1)`` if none."""
    n_site = cap.size
    with np.errstate(invalid="ignore"):
        checks = (
            ~((need >= 0.0) & (need <= MAX_KWH)),
            ~((t_dep > 0.0) & (t_dep <= MAX_S)),
            ~((p_max >= 0.0) & (p_max <= MAX_KW)),
            ~((p_min <= 0.0) & (p_min >= -MAX_KW)),
            ~((p_rate >= 0.0) & (p_rate <= MAX_KW)),
            ~((site >= 0) & (site < n_site)),
            ~((cap >= 0.0) & (cap <= MAX_KW)),
            ~((pv >= 0.0) & (pv <= MAX_KW)),
        )
    for code, bad in enumerate(checks, start=1):
        if bad.any():
            return code, int(np.argmax(bad))
    return 0, -1


def _eval(lam: np.ndarray | float, lo: np.ndarray, hi: np.ndarray, a: np.ndarray,
          bl: np.ndarray, bh: np.ndarray) -> np.ndarray:
    """Power of each EV at water level ``lam``, clipped to ``[lo, hi]``."""
    return np.minimum(np.maximum(lo + a * (lam - bl), lo), hi)


def _group_cumsum(x: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    cs = np.cumsum(x)
    return cs - np.repeat(cs[starts] - x[starts], counts)


def _level_groups(g: np.ndarray, n_groups: int, lo: np.ndarray, hi: np.ndarray, a: np.ndarray,
                  bl: np.ndarray, bh: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """Water level of each group such that its powers add up to ``sum(lo) + extra``.

    Arrays are over active EVs only (``hi > lo``, ``a > 0``), ``g`` their group. Returns
    ``-inf`` for groups without members or with ``extra <= 0``, ``+inf`` where ``extra`` covers
    every member's room ``hi - lo``.
    """
    lam = np.full(n_groups, -np.inf)
    if g.size == 0:
        return lam
    sum_lo = np.bincount(g, lo, n_groups)
    room = np.bincount(g, hi - lo, n_groups)
    member = np.bincount(g, minlength=n_groups) > 0
    wanted = member & (extra > 0.0)
    lam[wanted & (extra >= room)] = np.inf
    solve = wanted & (extra < room)
    if not solve.any():
        return lam
    target = sum_lo + extra
    sel = solve[g]
    gs, los, his, a_s, bls, bhs = g[sel], lo[sel], hi[sel], a[sel], bl[sel], bh[sel]
    m = gs.size
    # The sum of powers S(lam) is piecewise linear: its slope gains a_i at bl_i, loses it at bh_i.
    v = np.concatenate((bls, bhs))
    eg = np.concatenate((gs, gs))
    order = np.lexsort((v, eg))
    v, eg = v[order], eg[order]
    da = np.concatenate((a_s, -a_s))[order]
    dn = np.concatenate((np.ones(m, np.int64), -np.ones(m, np.int64)))[order]
    first = np.empty(2 * m, dtype=bool)
    first[0] = True
    first[1:] = eg[1:] != eg[:-1]
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, 2 * m))
    slope = _group_cumsum(da, starts, counts)
    slope[_group_cumsum(dn, starts, counts) == 0] = 0.0  # flat: no EV in its linear range
    inc = np.zeros(2 * m)
    inc[1:] = slope[:-1] * np.diff(v)
    inc[first] = 0.0
    s_at = sum_lo[eg] + _group_cumsum(inc, starts, counts)
    below = (s_at < target[eg]).astype(np.int64)
    k = starts + np.add.reduceat(below, starts)  # first event where S reaches the target
    k = np.clip(k, starts + 1, starts + counts - 1)
    km = k - 1
    gid = eg[starts]
    sl = slope[km]
    step = np.divide(target[gid] - s_at[km], sl, out=np.zeros(gid.size), where=sl > 0.0)
    lam[gid] = np.minimum(v[km] + step, v[k])
    # One Newton step on the exact sums removes the rounding of the cumulative sums.
    lam_i = lam[gs]
    s_now = np.bincount(gs, _eval(lam_i, los, his, a_s, bls, bhs), n_groups)
    a_now = np.bincount(gs, a_s * ((bls < lam_i) & (lam_i < bhs)), n_groups)
    fix = np.divide(target - s_now, a_now, out=np.zeros(n_groups), where=a_now > 0.0)
    lam[gid] += fix[gid]
    return lam


def allocate_into(need_kwh: np.ndarray, t_dep_s: np.ndarray, p_max_kw: np.ndarray,
                  p_min_kw: np.ndarray, p_rate_kw: np.ndarray, site: np.ndarray,
                  site_cap_kw: np.ndarray, site_pv_kw: np.ndarray, grid_budget_kw: float,
                  step_s: float, eta_ch: float, eta_dis: float, p_kw: np.ndarray,
                  site_out: np.ndarray, totals: np.ndarray) -> tuple[int, int]:
    """Allocate one step's EV power into ``p_kw``, ``site_out`` and ``totals``.

    Same contract as ``ext.dispatch.allocate_into``: float64/int64 contiguous inputs, scalar
    arguments already checked by the caller. ``site_out`` rows: PV used, mandatory shortfall and
    net EV power per site [kW]. Returns ``(code, index)``: ``(0, -1)`` on success, otherwise the
    1-based number of the first invalid array argument (need, t_dep, p_max, p_min, p_rate,
    site, site_cap, site_pv) and the index of its first invalid element; outputs are then
    unspecified.
    """
    n, n_site = need_kwh.size, site_cap_kw.size
    sizes = (t_dep_s.size, p_max_kw.size, p_min_kw.size, p_rate_kw.size, site.size, p_kw.size)
    if any(s != n for s in sizes) or site_pv_kw.size != n_site \
            or site_out.shape != (3, n_site) or totals.size < N_TOTALS:
        raise ValueError("allocate_into: array sizes do not match")
    code, bad = _first_bad(need_kwh, t_dep_s, p_max_kw, p_min_kw, p_rate_kw, site, site_cap_kw,
                           site_pv_kw)
    if code:
        return code, bad
    need, p_max, p_min, p_rate = need_kwh, p_max_kw, p_min_kw, p_rate_kw
    cap, pv = site_cap_kw, site_pv_kw
    # the compiled kernel's formulas, operation for operation
    dt_h = step_s / 3600.0
    inv_dt = 1.0 / dt_h
    inv_den = 1.0 / (eta_ch * dt_h)
    eta_cd = eta_ch * eta_dis
    k_cd = 1.0 / eta_cd
    rate = np.where(p_rate > p_max, p_rate, p_max)  # never below this step's maximum
    rate = np.where(rate >= RATE_FLOOR_KW, rate, 0.0)
    r = eta_ch * rate  # battery-side charge rate assumed for the rest of the stay [kW]
    t_h = t_dep_s * (1.0 / 3600.0)
    after_h = np.maximum(t_h - dt_h, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_a = np.where(rate > 0.0, dt_h / rate, 0.0)
    lax = np.where(r > 0.0, t_h - need * (inv_a * inv_den),
                   np.where(need > 0.0, -LAX_MAX_H, t_h))
    lax = np.minimum(np.maximum(lax, -LAX_MAX_H), LAX_MAX_H)
    a_ch = rate * inv_dt
    c_ch = lax - dt_h
    h_max = np.minimum(np.where(p_max >= RATE_FLOOR_KW, p_max, 0.0), need * inv_den)
    p_need = (need - r * after_h) * inv_den
    d_max = np.minimum(-p_min, -eta_cd * p_need)
    d_max = np.where(d_max > 0.0, d_max, 0.0)
    p_mand = np.minimum(h_max, np.where(p_need > 0.0, p_need, 0.0))

    def charge_segments(sel: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple:
        a, inv, c = a_ch[sel], inv_a[sel], c_ch[sel]
        return a, c + lo * inv, c + hi * inv

    # 1. mandatory power, water-filled within each site whose connection cannot carry it all
    p = p_mand.copy()
    mand_s = np.bincount(site, p_mand, n_site)
    over = mand_s > cap
    shortfall = np.where(over, mand_s - cap, 0.0)
    sel = over[site] & (p_mand > 0.0)
    if sel.any():
        hi = p_mand[sel]
        lo = np.zeros(hi.size)
        a, bl, bh = charge_segments(sel, lo, hi)
        lam = _level_groups(site[sel], n_site, lo, hi, a, bl, bh, cap)
        p[sel] = _eval(lam[site[sel]], lo, hi, a, bl, bh)

    # 2. local PV surplus, water-filled within each site
    chg = np.bincount(site, p, n_site)
    # the grid budget left once the mandatory power that local PV does not cover is drawn
    grid_rest = grid_budget_kw - _seqsum(np.maximum(chg - pv, 0.0))
    pv_room = np.minimum(np.maximum(pv - chg, 0.0), cap - chg)
    sel = (h_max > p) & (pv_room[site] > 0.0)
    if sel.any():
        s_sel, lo, hi = site[sel], p[sel], h_max[sel]
        a, bl, bh = charge_segments(sel, lo, hi)
        lam = _level_groups(s_sel, n_site, lo, hi, a, bl, bh, pv_room)
        p[sel] = _eval(lam[s_sel], lo, hi, a, bl, bh)

    if grid_budget_kw > 0.0:
        # 3. what is left of the grid budget, one water level for the zone under site caps
        chg = np.bincount(site, p, n_site)
        sel = h_max > p
        if grid_rest > 0.0 and sel.any():
            s_sel, lo, hi = site[sel], p[sel], h_max[sel]
            a, bl, bh = charge_segments(sel, lo, hi)
            cap_room = np.maximum(cap - chg, 0.0)
            lam = _level_groups(s_sel, n_site, lo, hi, a, bl, bh, cap_room)
            hi = _eval(lam[s_sel], lo, hi, a, bl, bh)
            a, bl, bh = charge_segments(sel, lo, hi)
            act = hi > lo
            lam = _level_groups(np.zeros(int(act.sum()), np.int64), 1, lo[act], hi[act], a[act],
                                bl[act], bh[act], np.array([grid_rest]))
            p_sel = lo.copy()
            p_sel[act] = _eval(lam[0], lo[act], hi[act], a[act], bl[act], bh[act])
            p[sel] = p_sel
    elif grid_budget_kw < 0.0:
        # 4. discharge of the EVs with the most slack, levelled from the top, under site caps
        cand = (d_max > 0.0) & (p <= EPS_KW)
        p[cand] = 0.0
        if cand.any():
            chg = np.bincount(site, p, n_site)
            s_sel, hi = site[cand], d_max[cand]
            lo = np.zeros(hi.size)
            a = a_ch[cand] * eta_cd
            inv, c = inv_a[cand] * k_cd, -c_ch[cand]
            bl, bh = c + lo * inv, c + hi * inv
            lam = _level_groups(s_sel, n_site, lo, hi, a, bl, bh, cap + chg)
            hi = _eval(lam[s_sel], lo, hi, a, bl, bh)
            bh = c + hi * inv
            act = hi > lo
            lam = _level_groups(np.zeros(int(act.sum()), np.int64), 1, lo[act], hi[act], a[act],
                                bl[act], bh[act], np.array([-grid_budget_kw]))
            d = lo.copy()
            d[act] = _eval(lam[0], lo[act], hi[act], a[act], bl[act], bh[act])
            p[cand] = -d

    p_kw[:] = p
    chg = np.bincount(site, np.maximum(p, 0.0), n_site)
    dis = np.bincount(site, np.maximum(-p, 0.0), n_site)
    pv_used = np.minimum(pv, chg)
    site_out[0] = pv_used
    site_out[1] = shortfall
    site_out[2] = chg - dis
    # need still feasible: p >= p_need charging, p >= eta_ch * eta_dis * p_need discharging
    p_floor = np.where(p >= 0.0, p_need, eta_cd * p_need)
    infeasible = p < p_floor - _FEAS_TOL * (1.0 + np.abs(p_need))
    cap_limited = (p_mand > 0.0) & (p_mand - p > _FEAS_TOL * (1.0 + p_mand))
    totals[0] = _seqsum(p_mand)
    totals[1] = _seqsum(chg - pv_used)
    totals[2] = _seqsum(dis)
    totals[3] = _seqsum(chg)
    totals[4] = float(np.count_nonzero(infeasible))
    totals[5] = float(np.count_nonzero(cap_limited))
    return 0, -1


def north_west_table(supply: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """Transport table (supply x demand) filled in order by the north-west corner rule;
    ships ``min(sum(supply), sum(demand))`` in total, negative values counting as 0.

    Filling in order gives supplier ``i`` and consumer ``j`` the overlap of the intervals they
    occupy on the cumulative supply and demand axes; computed that way with no loop.
    """
    s_hi = np.cumsum(np.maximum(supply, 0.0))
    d_hi = np.cumsum(np.maximum(demand, 0.0))
    s_lo = np.concatenate(([0.0], s_hi[:-1]))
    d_lo = np.concatenate(([0.0], d_hi[:-1]))
    return np.maximum(np.minimum(s_hi[:, None], d_hi[None, :])
                      - np.maximum(s_lo[:, None], d_lo[None, :]), 0.0)


def north_west_into(supply: np.ndarray, demand: np.ndarray, row_start: np.ndarray,
                    rows: np.ndarray, col_start: np.ndarray, cols: np.ndarray,
                    flow: np.ndarray) -> None:
    """Add the :func:`north_west_table` of each group of suppliers and consumers to ``flow``
    (see ``ext/dispatch.pyx``)."""
    n_rows, n_cols = flow.shape
    n_groups = row_start.size - 1
    if supply.shape != (n_rows,) or demand.shape != (n_cols,) or n_groups < 0 \
            or col_start.size != n_groups + 1:
        raise ValueError("north_west_into: array sizes do not match")
    bounds = zip(row_start[:-1].tolist(), row_start[1:].tolist(), col_start[:-1].tolist(),
                 col_start[1:].tolist(), strict=True)
    groups = []
    for r0, r1, c0, c1 in bounds:
        if not (0 <= r0 <= r1 <= rows.size and 0 <= c0 <= c1 <= cols.size):
            raise ValueError("north_west_into: group bounds out of range")
        groups.append((rows[r0:r1], cols[c0:c1]))
    if ((rows < 0) | (rows >= n_rows)).any():
        raise ValueError("north_west_into: supplier index out of range")
    if ((cols < 0) | (cols >= n_cols)).any():
        raise ValueError("north_west_into: consumer index out of range")
    for r, c in groups:
        flow[np.ix_(r, c)] += north_west_table(supply[r], demand[c])


def plugged_into(ids: np.ndarray, site: np.ndarray, soc: np.ndarray, need_kwh: np.ndarray,
                 departure_s: np.ndarray, p_max_kw: np.ndarray, p_min_kw: np.ndarray,
                 v2g: np.ndarray, t_s: float, step_s: float, site_point_kw: np.ndarray,
                 capacity_kwh: np.ndarray, soc_max: float, rate_kw: np.ndarray,
                 dis_rate_kw: np.ndarray, delta_e_kwh: np.ndarray, site_of: np.ndarray,
                 out: np.ndarray) -> int:
    """The coordinator's view of the plugged EVs and its memory of each EV (see
    ``ext/dispatch.pyx``)."""
    n, n_ev = ids.size, rate_kw.size
    if any(a.shape != (n,) for a in (site, soc, need_kwh, departure_s, p_max_kw, p_min_kw, v2g)) \
            or any(a.shape != (n_ev,) for a in (dis_rate_kw, delta_e_kwh, site_of)) \
            or (capacity_kwh.size and capacity_kwh.shape != (n_ev,)) or out.shape != (8, n):
        raise ValueError("plugged_into: array sizes do not match")
    if n and (ids.min() < 0 or ids.max() >= n_ev):
        return 1
    if n and (site.min() < 0 or site.max() >= site_point_kw.size):
        return 2
    need = np.maximum(need_kwh, 0.0)
    p_max = np.maximum(p_max_kw, 0.0)
    p_min = np.minimum(p_min_kw, 0.0)
    rate = rate_kw[ids] = np.maximum(rate_kw[ids], p_max)
    dis_rate = dis_rate_kw[ids] = np.maximum(dis_rate_kw[ids], -p_min)
    new = site_of[ids] != site  # a new stay
    delta_e_kwh[ids[new]] = 0.0
    site_of[:] = -1
    site_of[ids] = site
    point = site_point_kw[site]
    out[0] = need
    out[1] = np.maximum(departure_s - t_s, step_s)
    out[2] = p_max
    out[3] = p_min
    out[4] = np.where(rate > 0, rate, point)
    out[5] = np.where(v2g, np.where(dis_rate > 0, dis_rate, point), 0.0)
    out[6] = np.maximum(-delta_e_kwh[ids], 0.0)
    out[7] = np.maximum((soc_max - soc) * capacity_kwh[ids], need) if capacity_kwh.size \
        else need
    return 0


def done_into(p_kw: np.ndarray, p_min_kw: np.ndarray, p_max_kw: np.ndarray, ids: np.ndarray,
              site: np.ndarray, eta_ch: float, eta_dis: float, dt_h: float,
              delta_e_kwh: np.ndarray, p_done_kw: np.ndarray, site_kw: np.ndarray,
              p_set_kw: np.ndarray) -> None:
    """What the plugged EVs do with the set-points ``p_kw``, and the coordinator's record of it
    (see ``ext/dispatch.pyx``)."""
    n, n_ev, n_site = p_kw.size, delta_e_kwh.size, site_kw.shape[1]
    if any(a.shape != (n,) for a in (p_min_kw, p_max_kw, ids, site, p_done_kw)) \
            or site_kw.shape[0] != 2 or p_set_kw.shape != (n_ev,):
        raise ValueError("done_into: array sizes do not match")
    if n and (ids.min() < 0 or ids.max() >= n_ev or site.min() < 0 or site.max() >= n_site):
        raise ValueError("done_into: EV or site index out of range")
    p_done_kw[:] = np.clip(np.where(np.isnan(p_kw), p_max_kw, p_kw), p_min_kw, p_max_kw)
    charging = np.maximum(p_done_kw, 0.0)
    discharging = np.maximum(-p_done_kw, 0.0)
    site_kw[0] = np.bincount(site, weights=charging, minlength=n_site)
    site_kw[1] = np.bincount(site, weights=discharging, minlength=n_site)
    delta_e_kwh[ids] += (eta_ch * charging - discharging / eta_dis) * dt_h
    p_set_kw[:] = np.nan
    p_set_kw[ids] = p_kw
