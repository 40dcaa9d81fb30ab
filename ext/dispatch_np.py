"""NumPy twin of ``ext.dispatch``: the same allocation, the same outputs, without C.

See ``ext/dispatch.pyx`` for the method and ``ext/dispatch_api.py`` for the public function and
the meaning (and units) of every argument. Per-EV quantities use the compiled kernel's formulas
operation for operation. The water levels are found differently: the compiled kernel selects
them without sorting (expected O(N)), this twin sorts the breakpoints of all groups at once
(O(N log N)), reads each level off cumulative sums and refines it with one Newton step on the
exact sums. The level of a water-filling problem is unique wherever it matters (where it is
not, every EV gets the same power either way), so both give the same powers up to rounding.
The coordinator's other kernels (``plugged_into``, ``supply_into``, ``charge_into``,
``done_into``, ``north_west_into``, ``settle_into``, ``listed_trades``) are the NumPy (and
Python) operations they replace and give the same values to the bit (``charge_into`` given the
same allocation, see its ``allocate``).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "EPS_KW",
    "N_TOTALS",
    "allocate_into",
    "charge_into",
    "charge_work_size",
    "done_into",
    "listed_trades",
    "north_west_into",
    "north_west_table",
    "plugged_into",
    "pv_by_site",
    "settle_into",
    "spread_budget_kw",
    "supply_into",
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
              p_set_kw: np.ndarray) -> tuple[float, int, int]:
    """What the plugged EVs do with the set-points ``p_kw``, and the coordinator's record of it;
    returns their total power [kW] and the numbers of finite and of infinite set-points of
    ``p_set_kw`` (see ``ext/dispatch.pyx``)."""
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
    return (float(p_done_kw.sum()), int(np.count_nonzero(np.isfinite(p_set_kw))),
            int(np.count_nonzero(np.isinf(p_set_kw))))


def supply_into(pv_p_kw: np.ndarray, pv_avail_kw: np.ndarray, factory_p_kw: np.ndarray,
                pv_kw: np.ndarray) -> tuple[float, float, float]:
    """Each plant's generation into ``pv_kw``; the totals of PV, factories and curtailment
    [kW] (see ``ext/dispatch.pyx``)."""
    if pv_avail_kw.shape != pv_p_kw.shape or pv_kw.shape != pv_p_kw.shape:
        raise ValueError("supply_into: array sizes do not match")
    pv_kw[:] = np.maximum(-pv_p_kw, 0.0)
    return (float(np.add.reduce(pv_kw)), float(np.add.reduce(factory_p_kw)),
            float(np.add.reduce(np.maximum(pv_avail_kw - pv_kw, 0.0))))


CHARGE_ARRAYS = ("need_kwh", "restore_kwh", "room_kwh", "t_dep_s", "p_max_kw", "site",
                 "site_cap_kw", "pv_kw", "pv_forecast_kw")
"""The array arguments of :func:`charge_into` its codes 1.. name (code ``len + 1``: an
allocation refused the inputs worked out from them)."""

TARGET_MODES = ("full", "morning_full", "need")
"""``target_mode`` of :func:`charge_into`: which departure target the code stands for."""

SHARE_EPS_KW = 1e-6
"""PV or room to charge below this is none to share. [kW]"""

FILL_EPS_KWH = 1e-9
"""Energy below this is none to fill. [kWh]"""


def pv_by_site(pv_kw: np.ndarray, group_site_start: np.ndarray, group_sites: np.ndarray,
               group_plant_start: np.ndarray, group_plants: np.ndarray,
               weight: np.ndarray | None, n_site: int) -> tuple[np.ndarray, float]:
    """Each bus's PV shared among the sites on it; ``(per site [kW], zone pool [kW])``.

    Group ``g`` (a bus) pairs the sites ``group_sites[group_site_start[g]:...[g + 1]]`` with
    the plants ``group_plants[group_plant_start[g]:...]``; the sites of a group share its PV
    in proportion to ``weight`` (equally if their weights are all 0; only needed where a group
    has more than one site). PV of plants in no group forms the pool.
    """
    site_pv = np.zeros(n_site)
    pool = float(pv_kw.sum())
    if pv_kw.size == 0 or n_site == 0:
        return site_pv, pool
    for g in range(group_site_start.size - 1):
        supply = float(pv_kw[group_plants[group_plant_start[g]:group_plant_start[g + 1]]].sum())
        if supply <= 0:
            continue
        here = group_sites[group_site_start[g]:group_site_start[g + 1]]
        if here.size == 1:  # the weight's share is 1 exactly
            site_pv[here[0]] = supply
        elif here.size > 1:
            if weight is None:
                raise ValueError("pv_by_site: sites share a bus with PV, weight is needed")
            w = weight[here]
            w = w / w.sum() if w.sum() > 0 else np.full(w.size, 1.0 / w.size)
            site_pv[here] = supply * w
        pool -= supply
    return site_pv, max(pool, 0.0)


def spread_budget_kw(need_kwh: np.ndarray, t_dep_s: np.ndarray, window_s: float,
                     eta_ch: float) -> float:
    """Grid power that charges every need evenly over the rest of a window [kW].

    Each EV's need is spread over the time left until its departure or the window's end,
    whichever comes first.
    """
    if need_kwh.size == 0 or window_s <= 0:
        return 0.0
    hours = np.minimum(t_dep_s, window_s) / 3600.0
    return float((need_kwh / (eta_ch * hours)).sum())


class _Step:
    """One step's fixed inputs of :func:`charge_into` and the allocation kernel it uses."""

    def __init__(self, allocate, p_max: np.ndarray, site: np.ndarray, cap: np.ndarray,
                 t_dep: np.ndarray, step_s: float, eta_ch: float, eta_dis: float) -> None:
        self.allocate, self.p_max, self.site, self.cap, self.t_dep = (allocate, p_max, site,
                                                                      cap, t_dep)
        self.step_s, self.dt_h, self.eta_ch, self.eta_dis = step_s, step_s / 3600.0, eta_ch, \
            eta_dis
        self.n, self.n_site = p_max.size, cap.size

    def alloc(self, need: np.ndarray, t_dep: np.ndarray, p_max: np.ndarray, cap: np.ndarray,
              pv: np.ndarray, budget: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Charging only (no discharge, the rate is ``p_max``): powers, PV used per site and
        the grid power [kW]; ``_Refused`` when the allocation refuses its inputs."""
        p = np.empty(self.n)
        site_out = np.empty((3, self.n_site))
        totals = np.empty(N_TOTALS)
        code, bad = self.allocate(need, t_dep, p_max, np.zeros(self.n), p_max, self.site, cap,
                                  pv, budget, self.step_s, self.eta_ch, self.eta_dis, p,
                                  site_out, totals)
        if code:
            raise _Refused(bad)
        return p, site_out[0], float(totals[1])

    def share(self, p: np.ndarray, want_kwh: np.ndarray | None, site_pv: np.ndarray,
              pool: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Extra charging from PV left over toward ``want_kwh`` (None: up to full) [kW], and
        the PV left per site and in the pool (see ``charge_into``)."""
        extra = np.zeros(self.n)
        if site_pv.sum() + pool <= SHARE_EPS_KW:
            return extra, site_pv, pool
        want = np.maximum(self.p_max - p, 0.0)
        if want_kwh is not None:
            want = np.minimum(want, np.maximum(want_kwh, 0.0) / (self.eta_ch * self.dt_h))
        if want.sum() <= SHARE_EPS_KW:
            return extra, site_pv, pool
        for local in (True, False):
            if not local:  # the sites' leftovers, pooled
                pool += float(site_pv.sum())
                site_pv = np.zeros(self.n_site)
            room = want - extra
            if pool + site_pv.sum() <= SHARE_EPS_KW or room.sum() <= SHARE_EPS_KW:
                break
            cap_left = np.maximum(self.cap - np.bincount(self.site, p + extra, self.n_site),
                                  0.0)
            x, pv_used, grid_kw = self.alloc(room * self.eta_ch * self.dt_h,
                                             self.t_dep + self.step_s, room, cap_left, site_pv,
                                             pool)
            extra += x
            site_pv = np.maximum(site_pv - pv_used, 0.0)
            pool = max(pool - grid_kw, 0.0)
        return extra, site_pv, pool

    def fill(self, p: np.ndarray, target_kwh: np.ndarray, forecast: np.ndarray,
             fill_s: float, lead_h: float) -> np.ndarray:
        """Off-peak grid charging toward ``target_kwh`` (0: not filled) [kW] (see
        ``charge_into``)."""
        t_dep = self.t_dep
        left = np.maximum(target_kwh - self.eta_ch * p * self.dt_h, 0.0)
        filled = left > 0
        room = np.where(filled, np.maximum(self.p_max - p, 0.0), 0.0)
        left_kwh = left.sum()
        if left_kwh <= FILL_EPS_KWH or room.sum() <= SHARE_EPS_KW:
            return np.zeros(self.n)
        pv_fc = np.maximum(forecast, 0.0)
        pv_kwh = np.zeros(max(pv_fc.size, 1))
        np.cumsum(pv_fc[1:] * self.dt_h, out=pv_kwh[1:])
        at = (t_dep / self.step_s).astype(np.int64)
        at -= 1
        np.maximum(at, 0, out=at)
        np.minimum(at, pv_kwh.size - 1, out=at)
        left = np.maximum(left - self.eta_ch * pv_kwh[at] * left / left_kwh, 0.0)
        if left.sum() <= FILL_EPS_KWH:
            return np.zeros(self.n)
        end = np.minimum(t_dep, fill_s)
        t_fill = np.maximum(end - 3600.0 * lead_h, self.step_s)
        budget = spread_budget_kw(left, t_fill, fill_s, self.eta_ch)
        cap_left = np.maximum(self.cap - np.bincount(self.site, p, self.n_site), 0.0)
        extra, _, _ = self.alloc(left, t_fill, room, cap_left, np.zeros(self.n_site), budget)
        return extra


def charge_work_size(n: int, n_site: int, n_plant: int, n_fc: int) -> int:
    """Length of the work array :func:`charge_into` needs for ``n`` plugged EVs, ``n_site``
    sites, ``n_plant`` plants and a PV forecast of ``n_fc`` values (any larger array does too):
    the compiled kernel's scratch, then its allocations' block (64-byte records, aligned, and
    per-EV and per-site scratch) in doubles."""
    if min(n, n_site, n_plant, n_fc) < 0:
        raise ValueError("charge_work_size: sizes must be >= 0")
    alloc_bytes = 8 * (8 * n + 8 + 5 * n + 3 * n_site + 2 * (n_site + 1) + 8 * n_site) \
        + n_site * 20
    return 9 * n + 9 * n_site + n_plant + n_fc + 1 + -(-alloc_bytes // 8)


class _Refused(Exception):
    """An allocation of :func:`charge_into` refused the inputs worked out for it."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def charge_into(need_kwh: np.ndarray, restore_kwh: np.ndarray, room_kwh: np.ndarray,
                t_dep_s: np.ndarray, p_max_kw: np.ndarray, site: np.ndarray,
                site_cap_kw: np.ndarray, pv_kw: np.ndarray, group_site_start: np.ndarray,
                group_sites: np.ndarray, group_plant_start: np.ndarray,
                group_plants: np.ndarray, pv_forecast_kw: np.ndarray, step_s: float,
                eta_ch: float, eta_dis: float, need_margin: float, departure_margin_s: float,
                target_mode: int, pv_to_full: bool, window_lo: float, window_hi: float,
                fill_s: float, fill_lead_h: float, out: np.ndarray, work: np.ndarray, *,
                allocate=None) -> tuple[int, int]:
    """Charging powers (no discharge) of the plugged EVs for one step of ``pv_following``.

    1. Targets: each EV's planned need is ``max(need_kwh, restore_kwh) * (1 + need_margin)``
       (at least the energy V2G took), its planned departure ``t_dep_s - departure_margin_s``
       (at least one step); its target the room to full (``room_kwh``) or the planned need,
       as ``target_mode`` (:data:`TARGET_MODES`) says: ``morning_full`` is full only for the
       EVs leaving in the fill window, departures in steps within ``[window_lo, window_hi]``
       (an empty window, ``lo > hi``, has none; with ``need`` no EV counts as in it).
    2. Mandatory power and PV up to the targets: each bus's PV to its sites
       (:func:`pv_by_site`, sharing by the sites' summed ``p_max_kw``), the rest as the zone's
       grid budget; then the PV left over to the targets of EVs elsewhere, and with
       ``pv_to_full`` up to full: each site's PV to its own EVs first, then the pool to all,
       the EVs leaving soonest first.
    3. Off-peak fill (``fill_s > 0``: the seconds of off-peak from now): grid energy toward
       the targets of the EVs leaving in the window, less their share of the PV expected
       before they leave (``pv_forecast_kw`` from this step on, index 0 this step, reaching at
       least each such EV's departure or the end of the forecast's data), spread evenly over
       the off-peak period and done ``fill_lead_h`` early, each EV's mandatory power within
       it only.

    Each allocation is :func:`allocate_into` (``allocate``: another kernel's, the same
    signature); sums are ``numpy.sum``'s. ``site_cap_kw`` bounds each site's charging.
    ``out`` (4, n) receives the powers [kW], the planned needs [kWh], the planned departures
    [s] and the targets [kWh]. ``work`` is the compiled kernel's scratch, at least
    :func:`charge_work_size` values (a caller keeps one for every step; this twin only checks
    its size). Returns ``(code, index)``: ``(0, -1)``, the 1-based number of
    the first invalid array argument of :data:`CHARGE_ARRAYS` and its first invalid element,
    or ``(len(CHARGE_ARRAYS) + 1, index)`` when an allocation refused its inputs. Raises
    ``ValueError`` when sizes, groups or a scalar do not match.
    """
    n, n_site, n_group = need_kwh.size, site_cap_kw.size, group_site_start.size - 1
    if any(a.size != n for a in (restore_kwh, room_kwh, t_dep_s, p_max_kw, site)) \
            or out.shape != (4, n) or n_group < 0 or group_plant_start.size != n_group + 1:
        raise ValueError("charge_into: array sizes do not match")
    if work.size < charge_work_size(n, n_site, pv_kw.size, pv_forecast_kw.size):
        raise ValueError("charge_into: work holds fewer values than charge_work_size asks")
    for starts, members in ((group_site_start, group_sites),
                            (group_plant_start, group_plants)):
        if ((starts < 0) | (starts > members.size)).any() or (np.diff(starts) < 0).any():
            raise ValueError("charge_into: group bounds out of range")
    if ((group_sites < 0) | (group_sites >= n_site)).any():
        raise ValueError("charge_into: group site index out of range")
    if ((group_plants < 0) | (group_plants >= pv_kw.size)).any():
        raise ValueError("charge_into: group plant index out of range")
    if not (1e-3 <= step_s <= 1e9 and 0.0 < eta_ch <= 1.0 and 0.0 < eta_dis <= 1.0
            and 0.0 <= need_margin <= 1.0 and 0.0 <= departure_margin_s <= MAX_S
            and 0 <= target_mode < len(TARGET_MODES) and fill_s >= 0.0
            and 0.0 <= fill_lead_h <= 1e6):
        raise ValueError("charge_into: a scalar argument is out of range")
    with np.errstate(invalid="ignore"):
        checks = (
            ~((need_kwh >= 0.0) & (need_kwh <= MAX_KWH)),
            ~((restore_kwh >= 0.0) & (restore_kwh <= MAX_KWH)),
            ~((room_kwh >= 0.0) & (room_kwh <= MAX_KWH)),
            ~((t_dep_s > 0.0) & (t_dep_s <= MAX_S)),
            ~((p_max_kw >= 0.0) & (p_max_kw <= MAX_KW)),
            ~((site >= 0) & (site < n_site)),
            ~((site_cap_kw >= 0.0) & (site_cap_kw <= MAX_KW)),
            ~((pv_kw >= 0.0) & (pv_kw <= MAX_KW)),
            ~((pv_forecast_kw >= -MAX_KW) & (pv_forecast_kw <= MAX_KW)),
        )
    for code, bad in enumerate(checks, start=1):
        if bad.any():
            return code, int(np.argmax(bad))
    # 1. the planned need and departure, and the target of each EV
    need = np.maximum(need_kwh, restore_kwh) * (1.0 + need_margin)
    t_dep = np.maximum(t_dep_s - departure_margin_s, step_s)
    target = np.maximum(room_kwh, need)
    dep = t_dep / step_s
    morning = (dep >= window_lo) & (dep <= window_hi) if target_mode != 2 \
        else np.zeros(n, dtype=bool)
    if target_mode != 0:
        target = np.where(morning, target, need)
    out[1], out[2], out[3] = need, t_dep, target
    weight = np.bincount(site, p_max_kw, n_site) if (np.diff(group_site_start) > 1).any() \
        else None
    site_pv, pool = pv_by_site(pv_kw, group_site_start, group_sites, group_plant_start,
                               group_plants, weight, n_site)
    if n == 0:
        return 0, -1
    step = _Step(allocate_into if allocate is None else allocate, p_max_kw, site, site_cap_kw,
                 t_dep, step_s, eta_ch, eta_dis)
    try:
        # 2. mandatory power and PV up to the targets, PV left over to other sites' EVs
        p, pv_used, grid_kw = step.alloc(target, t_dep, p_max_kw, site_cap_kw, site_pv, pool)
        site_left = np.maximum(site_pv - pv_used, 0.0)
        pool_left = max(pool - grid_kw, 0.0)
        if site_left.sum() + pool_left > SHARE_EPS_KW:
            rest = np.maximum(target - eta_ch * p * step.dt_h, 0.0)
            extra, site_left, pool_left = step.share(p, rest, site_left, pool_left)
            p = p + extra
            if pv_to_full:
                extra, _, _ = step.share(p, None, site_left, pool_left)
                p = p + extra
        # 3. the off-peak fill
        if fill_s > 0 and morning.any():
            p = p + step.fill(p, np.where(morning, target, 0.0), pv_forecast_kw, fill_s,
                              fill_lead_h)
    except _Refused as refused:
        return len(CHARGE_ARRAYS) + 1, refused.index
    out[0] = p
    return 0, -1


def settle_into(pv_kw: np.ndarray, charge_kw: np.ndarray, discharge_kw: np.ndarray,
                row_start: np.ndarray, rows: np.ndarray, col_start: np.ndarray,
                cols: np.ndarray, same_cells: np.ndarray, dt_h: float, min_kwh: float,
                flow: np.ndarray, export_kw: np.ndarray, site_kw: np.ndarray, kwh: np.ndarray,
                listed: np.ndarray, totals: np.ndarray) -> int:
    """The transport tables, leftovers and trades of one step's settlement.

    PV of each plant (``pv_kw``) goes first to the charging of the sites on its bus, by the
    :func:`north_west_table` of each bus's group (``row_start``, ``rows``, ``col_start``,
    ``cols`` as for :func:`north_west_into`), then what is left to what is left of all sites'
    charging, plants and sites in order; negative powers count as 0. ``flow`` (plants x sites)
    receives the PV each plant supplied to each site [kW], ``export_kw`` the PV each plant
    has left (sold to the grid) [kW], ``site_kw`` (2, sites) each site's charging bought from
    the grid and its discharging [kW], ``totals`` the PV to EVs, grid to EVs, V2G and export
    powers [kW]. Every possible trade has an energy over ``dt_h`` hours [kWh], in listing
    order: the same-bus table's cells ``same_cells`` (flat indices), the pool's table row by
    row, the grid's sales to each site, each site's V2G, each plant's export; the ``m`` trades
    of at least ``min_kwh`` are listed: their energies in ``kwh[:m]``, their indices in that
    order in ``listed[:m]`` (both as long as the trades). Returns ``m``.
    """
    n_p, n_s = pv_kw.size, charge_kw.size
    n_trades = same_cells.size + n_p * n_s + 2 * n_s + n_p
    if discharge_kw.size != n_s or flow.shape != (n_p, n_s) or export_kw.size != n_p \
            or site_kw.shape != (2, n_s) or totals.size < 4 or kwh.size != n_trades \
            or listed.size != n_trades:
        raise ValueError("settle_into: array sizes do not match")
    if ((same_cells < 0) | (same_cells >= n_p * n_s)).any():
        raise ValueError("settle_into: same-bus cell out of range")
    pv = np.maximum(pv_kw, 0.0)
    ch = np.maximum(charge_kw, 0.0)
    dis = np.maximum(discharge_kw, 0.0)
    same_bus = np.zeros((n_p, n_s))
    try:
        north_west_into(pv, ch, row_start, rows, col_start, cols, same_bus)
    except ValueError as exc:
        raise ValueError(str(exc).replace("north_west_into", "settle_into")) from None
    flow[:] = same_bus
    north_west_into(pv - same_bus.sum(axis=1), ch - same_bus.sum(axis=0),
                    np.array([0, n_p]), np.arange(n_p), np.array([0, n_s]), np.arange(n_s),
                    flow)
    export_kw[:] = np.maximum(pv - flow.sum(axis=1), 0.0)
    site_kw[0] = np.maximum(ch - flow.sum(axis=0), 0.0)
    site_kw[1] = dis
    totals[:4] = flow.sum(), site_kw[0].sum(), dis.sum(), export_kw.sum()
    trades = np.concatenate((same_bus.reshape(-1)[same_cells], (flow - same_bus).reshape(-1),
                             site_kw[0], dis, export_kw)) * dt_h
    index = (trades >= min_kwh).nonzero()[0]
    kwh[:index.size] = trades[index]
    listed[:index.size] = index
    return int(index.size)


def listed_trades(trades: list[tuple], listed: np.ndarray, kwh: np.ndarray, n: int,
                  price: tuple[float, ...]) -> list[tuple]:
    """The ``n`` trades :func:`settle_into` listed, as tuples ``(seller, buyer, kWh, price,
    kind)``: trade ``listed[m]`` of ``trades`` (each ``(seller, buyer, kind index, kind)``),
    its energy ``kwh[m]`` [kWh] and the price of its kind, ``price[kind index]`` [CNY/kWh].
    Raises ``ValueError`` when ``n`` exceeds the arrays or a trade is no such tuple,
    ``IndexError`` for a trade or kind index out of range."""
    if not 0 <= n <= min(listed.size, kwh.size):
        raise ValueError("listed_trades: n exceeds the arrays")
    if n and not 0 <= listed[:n].min() <= listed[:n].max() < len(trades):
        raise IndexError(f"listed_trades: a trade is not one of the {len(trades)}")
    return [(seller, buyer, x, price[kind], name)
            for (seller, buyer, kind, name), x in zip(map(trades.__getitem__,
                                                          listed[:n].tolist()),
                                                      kwh[:n].tolist())]
