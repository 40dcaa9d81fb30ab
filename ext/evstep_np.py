"""NumPy twin of ``ext.evstep``: the same per-step EV physics, the same outputs, without C.

See ``ext/evstep.pyx`` for what each function does. The operations are the compiled kernel's,
element by element and in the same order, so both give bit-identical results.
"""

from __future__ import annotations

import numpy as np

__all__ = ["advance", "append_legs", "arrive", "depart", "due", "limits_cc", "limits_cv",
           "next_trip", "plugged", "rainflow", "serve_queue", "settle", "view_cc"]


def limits_cc(ids: np.ndarray, e_kwh: np.ndarray, cap_kwh: np.ndarray, p_ch_lim: np.ndarray,
              accept_kw: np.ndarray, p_dis_lim: np.ndarray, eta_c: float, eta_d: float,
              soc_cv: float, soc_max: float, end_share: float, min_soc_v2g: float, dt_h: float,
              full_tol_kwh: float, p_max: np.ndarray, p_min: np.ndarray, cv_pos: np.ndarray,
              cv_arg: np.ndarray, cv_start: np.ndarray) -> int:
    """Power limits of EVs ``ids`` [kW]; EVs entering the CV phase are listed, not finished."""
    n = ids.size
    width = soc_max - soc_cv
    soc_full = soc_max - end_share * width
    e, cap, acc = e_kwh[ids], cap_kwh[ids], accept_kw[ids]
    soc0 = e / cap
    p_batt = np.minimum(p_ch_lim[ids] * eta_c, acc)
    rate = p_batt / cap
    soc_x = soc_max - p_batt * width / acc
    soc1 = soc0 + rate * dt_h
    hi = np.maximum(soc0, soc_full)
    # full EVs get p_max = 0 without exp: the clipped integral cannot exceed this bound
    cv = (soc1 > soc_x) & ((hi - soc0) * cap / eta_c > full_tol_kwh)
    pos = np.flatnonzero(cv)
    n_cv = pos.size
    if n_cv:
        s0, r, sx = soc0[pos], rate[pos], soc_x[pos]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_cc = np.where(r > 0, np.maximum((sx - s0) / r, 0.0), dt_h)
        k_cv = acc[pos] / (cap[pos] * width)
        cv_pos[:n_cv] = pos
        cv_arg[:n_cv] = -k_cv * (dt_h - t_cc)
        cv_start[:n_cv] = np.maximum(s0, sx)
    soc1 = np.clip(soc1, soc0, hi)
    e_in = (soc1 - soc0) * cap / eta_c
    done = np.where(e_in > full_tol_kwh, e_in, 0.0) / dt_h
    if n_cv:
        keep = ~cv
        p_max[:n][keep] = done[keep]
    else:
        p_max[:n] = done
    room = np.maximum(e - min_soc_v2g * cap, 0.0) * eta_d / dt_h
    p_min[:n] = -np.minimum(p_dis_lim[ids], room)
    return int(n_cv)


def limits_cv(n_cv: int, cv_pos: np.ndarray, cv_exp: np.ndarray, cv_start: np.ndarray,
              ids: np.ndarray, e_kwh: np.ndarray, cap_kwh: np.ndarray, eta_c: float,
              soc_cv: float, soc_max: float, end_share: float, dt_h: float,
              full_tol_kwh: float, p_max: np.ndarray, p_max_copy: np.ndarray) -> bool:
    """Finish ``p_max`` of the EVs listed by ``limits_cc``; ``cv_exp = exp(cv_arg)``. The same
    values go to ``p_max_copy`` (which may be ``p_max``). Returns whether every value written
    is finite."""
    pos = cv_pos[:n_cv]
    j = ids[pos]
    cap = cap_kwh[j]
    soc0 = e_kwh[j] / cap
    soc_full = soc_max - end_share * (soc_max - soc_cv)
    soc1 = soc_max - (soc_max - cv_start[:n_cv]) * cv_exp[:n_cv]
    soc1 = np.clip(soc1, soc0, np.maximum(soc0, soc_full))
    e_in = (soc1 - soc0) * cap / eta_c
    p = np.where(e_in > full_tol_kwh, e_in, 0.0) / dt_h
    p_max[pos] = p
    p_max_copy[pos] = p
    return bool(np.isfinite(p).all())


def advance(ids: np.ndarray, p_set: np.ndarray, controlled: bool, plug: np.ndarray,
            p_max: np.ndarray, p_min: np.ndarray, e_kwh: np.ndarray, cap_kwh: np.ndarray,
            charged_kwh: np.ndarray, discharged_kwh: np.ndarray, site: np.ndarray,
            p_site_kw: np.ndarray, last_dir: np.ndarray, extreme: np.ndarray,
            tp_buf: np.ndarray, tp_n: np.ndarray, charging: np.ndarray, dt_h: float,
            eta_c: float, eta_d: float, soc_full: float, full_tol_kwh: float,
            ch_kw: np.ndarray, dis_kw: np.ndarray, ch_site_kw: np.ndarray,
            dis_site_kw: np.ndarray, q_per_p: float, q_site_kvar: np.ndarray,
            e_sum_kwh: np.ndarray) -> tuple[int, int, bool, bool, int] | None:
    """One step of EVs ``ids`` (the plugged EVs when ``controlled``, else the charging ones);
    ``None`` (nothing changed) when ``controlled`` and a setpoint is infinite."""
    n = ids.size
    if not p_site_kw.shape == ch_site_kw.shape == dis_site_kw.shape == q_site_kvar.shape:
        raise ValueError("advance: the site arrays need the length of p_site_kw")
    if not e_kwh.shape == e_sum_kwh.shape == plug.shape:
        raise ValueError("advance: e_kwh and e_sum_kwh need one value per EV, as plug")
    p = p_max[:n]
    clamped = 0
    if controlled:
        if p_set.shape != plug.shape:
            raise ValueError(f"advance: p_set needs one value per EV ({plug.size}), "
                             f"got {p_set.size}")
        if np.isinf(p_set).any():
            return None
        stray = (plug < 0) & (np.abs(np.nan_to_num(p_set)) > 1e-6)
        clamped += int(stray.sum())
        ps = p_set[ids]
        given = ~np.isnan(ps)
        p = np.where(given, np.clip(ps, p_min[:n], p), p)
        clamped += int((given & (np.abs(p - ps) > 1e-6)).sum())
    moving = p != 0.0
    mids, mp = ids[moving], p[moving]
    m = mids.size
    flush = False
    n_dis = int(np.count_nonzero(mp < 0.0))
    if m:
        e_old = e_kwh[mids]
        ch = np.maximum(mp, 0.0)
        dis = np.maximum(-mp, 0.0)
        e_new = e_old + ch * (dt_h * eta_c) - dis * (dt_h / eta_d)
        e_kwh[mids] = e_new
        charged_kwh[mids] += ch * dt_h
        discharged_kwh[mids] += dis * dt_h
        p_site_kw += np.bincount(site[mids], weights=mp, minlength=p_site_kw.size)
        ch_site_kw += np.bincount(site[mids], weights=ch, minlength=ch_site_kw.size)
        dis_site_kw += np.bincount(site[mids], weights=dis, minlength=dis_site_kw.size)
        ch_kw[:m] = ch
        dis_kw[:m] = dis
        cap = cap_kwh[mids]
        flush = _turning_points(mids, e_old / cap, e_new / cap, last_dir, extreme, tp_buf,
                                tp_n)
        if not controlled:
            done = e_new >= soc_full * cap - full_tol_kwh
            charging[mids[done]] = 0
    if controlled:
        charging[ids] = e_kwh[ids] < soc_full * cap_kwh[ids] - full_tol_kwh
    e_sum_kwh += e_kwh
    np.multiply(p_site_kw, q_per_p, out=q_site_kvar)
    finite = all(np.isfinite(a).all() for a in (p_site_kw, q_site_kvar, ch_site_kw, dis_site_kw))
    return m, clamped, flush, finite, n_dis


def _turning_points(ids: np.ndarray, soc_old: np.ndarray, soc_new: np.ndarray,
                    last_dir: np.ndarray, extreme: np.ndarray, tp_buf: np.ndarray,
                    tp_n: np.ndarray) -> bool:
    """Record turning points of SoC changes (changes below 1e-9 have no direction)."""
    delta = soc_new - soc_old
    move = np.abs(delta) > 1e-9
    if not move.any():
        return False
    ids, soc_new = ids[move], soc_new[move]
    direction = np.where(delta[move] > 0, 1, -1).astype(np.int8)
    last = last_dir[ids]
    turn = (last != 0) & (direction != last)
    flush = False
    if turn.any():
        t = ids[turn]
        n = tp_n[t]
        tp_buf[t, n] = extreme[t]
        tp_n[t] = n + 1
        flush = bool((n + 1).max() >= tp_buf.shape[1])
    last_dir[ids] = direction
    extreme[ids] = soc_new
    return flush


def view_cc(ids: np.ndarray, e_kwh: np.ndarray, cap_kwh: np.ndarray, p_ch_lim: np.ndarray,
            accept_kw: np.ndarray, p_dis_lim: np.ndarray, eta_c: float, eta_d: float,
            soc_cv: float, soc_max: float, end_share: float, min_soc_v2g: float, dt_h: float,
            full_tol_kwh: float, p_max: np.ndarray, p_min: np.ndarray, cv_pos: np.ndarray,
            cv_arg: np.ndarray, cv_start: np.ndarray, site: np.ndarray, req_kwh: np.ndarray,
            next_dep: np.ndarray, step_s: int, out_ids: np.ndarray, out_site: np.ndarray,
            out_soc: np.ndarray, out_need_kwh: np.ndarray, out_departure_s: np.ndarray,
            out_p_max: np.ndarray, out_p_min: np.ndarray, out_v2g: np.ndarray
            ) -> tuple[int, bool]:
    """``limits_cc`` of EVs ``ids`` and the EVs, their site, SoC, energy need, departure time
    [s], the limits again and the V2G flag. Returns ``(n_cv, finite)``: whether every value
    written is finite."""
    n = ids.size
    for a in (out_ids, out_site, out_soc, out_need_kwh, out_departure_s, out_p_max, out_p_min,
              out_v2g):
        if a.shape[0] < n:
            raise ValueError("view_cc: output arrays shorter than ids")
    n_cv = limits_cc(ids, e_kwh, cap_kwh, p_ch_lim, accept_kw, p_dis_lim, eta_c, eta_d, soc_cv,
                     soc_max, end_share, min_soc_v2g, dt_h, full_tol_kwh, p_max, p_min, cv_pos,
                     cv_arg, cv_start)
    e = e_kwh[ids]
    out_ids[:n] = ids
    out_p_max[:n] = p_max[:n]  # (finished by limits_cv for the EVs entering the CV phase)
    out_p_min[:n] = p_min[:n]
    out_site[:n] = site[ids]
    out_soc[:n] = e / cap_kwh[ids]
    out_need_kwh[:n] = np.maximum(req_kwh[ids] - e, 0.0)
    out_departure_s[:n] = next_dep[ids] * step_s
    out_v2g[:n] = p_dis_lim[ids] > 0
    written = np.ones(n, dtype=bool)
    written[cv_pos[:n_cv]] = False  # p_max still to be finished
    finite = (np.isfinite(p_max[:n][written]).all() and np.isfinite(p_min[:n]).all()
              and all(np.isfinite(a[:n]).all()
                      for a in (out_soc, out_need_kwh, out_departure_s)))
    return n_cv, bool(finite)


def serve_queue(k: int, waiting: np.ndarray, wait_since: np.ndarray, wait_until: np.ndarray,
                site: np.ndarray, site_kind: np.ndarray, pref: np.ndarray,
                n_chargers: np.ndarray, used: np.ndarray, plug: np.ndarray,
                charging: np.ndarray, e_kwh: np.ndarray, cap_kwh: np.ndarray, soc_full: float,
                full_tol_kwh: float, ac_kw: np.ndarray, dc_kw: np.ndarray,
                charger_kw: np.ndarray, charger_dis_kw: np.ndarray, v2g_user: np.ndarray,
                v2g_kw: np.ndarray, p_ch_lim: np.ndarray, p_dis_lim: np.ndarray,
                ac_max_type: int, v2g_type: int) -> tuple[int, int, int]:
    """Plug waiting EVs into free compatible chargers, first come first served; then let EVs
    whose patience ran out give up. Returns ``(n_plugged, n_expired, n_waiting)``."""
    n_types = n_chargers.shape[1]
    n_plugged = 0
    q = np.flatnonzero(waiting)
    free = n_chargers - used
    if q.size:
        q = q[free.sum(axis=1)[site[q]] > 0]  # at full sites, EVs just keep waiting
    if q.size:
        q = q[np.argsort(wait_since[q], kind="stable")]
        at = site[q]
        base = (q * pref.shape[1] + site_kind[at]) * n_types
        flat_pref, flat_free = pref.ravel(), free.ravel()
        for r in range(n_types):
            t = flat_pref[base + r]
            ok = t >= 0
            if not ok.any():
                break
            key = at * n_types + np.where(ok, t, 0)
            c = np.flatnonzero(ok & (flat_free[key] > 0))
            if c.size == 0:
                continue
            got = []
            for key_val in np.unique(key[c]):
                in_key = c[key[c] == key_val][: flat_free[key_val]]  # queue order = arrival
                flat_free[key_val] -= in_key.size
                got.append(in_key)
            got = np.sort(np.concatenate(got))
            ids, s, ct = q[got], at[got], t[got]
            np.add.at(used, (s, ct), 1)
            plug[ids] = ct
            charging[ids] = e_kwh[ids] < soc_full * cap_kwh[ids] - full_tol_kwh
            waiting[ids] = 0
            car_kw = np.where(ct <= ac_max_type, ac_kw[ids], dc_kw[ids])
            p_ch_lim[ids] = np.minimum(charger_kw[s, ct], car_kw)
            v2g = (ct == v2g_type) & (v2g_user[ids] != 0)
            p_dis_lim[ids] = np.where(v2g, np.minimum(charger_dis_kw[s, ct], v2g_kw[ids]), 0.0)
            n_plugged += ids.size
            keep = np.ones(q.size, dtype=bool)
            keep[got] = False
            q, at, base = q[keep], at[keep], base[keep]
            if q.size == 0:
                break
    expired = np.flatnonzero((waiting != 0) & (wait_until <= k))
    waiting[expired] = 0
    return n_plugged, int(expired.size), int(np.count_nonzero(waiting))


def next_trip(ids: np.ndarray, head: np.ndarray, tail: np.ndarray, leg_dep: np.ndarray,
              leg_rest_km: np.ndarray, leg_seq: np.ndarray, evt_step: np.ndarray,
              evt_seq: np.ndarray, next_dep: np.ndarray, req_kwh: np.ndarray,
              cap_kwh: np.ndarray, site: np.ndarray, site_kind: np.ndarray,
              kwh_per_km: np.ndarray, horizon_step: int, need_soc: float, target_soc: float,
              soc_full: float, home_kind: int, depot_kind: int, kind_out: np.ndarray) -> None:
    """Next departure step and energy wanted then [kWh] of parked EVs ``ids``; site kinds."""
    m = leg_dep.shape[1]
    has_next = head[ids] < tail[ids]
    nslot = head[ids] % m
    if leg_rest_km.shape != leg_dep.shape or leg_seq.shape != leg_dep.shape:
        raise ValueError("leg_rest_km, leg_seq: need as many leg slots as leg_dep")
    next_dep[ids] = np.where(has_next, leg_dep[ids, nslot], horizon_step)
    evt_step[ids] = np.where(has_next, leg_dep[ids, nslot], -1)
    evt_seq[ids[has_next]] = leg_seq[ids, nslot][has_next]
    rest_km = np.where(has_next, leg_rest_km[ids, nslot], 0.0)
    cap = cap_kwh[ids]
    s = site[ids]
    kind = np.where(s >= 0, site_kind[np.maximum(s, 0)], -1)
    base = (kind == home_kind) | (kind == depot_kind)
    trip_need = need_soc * cap + rest_km * kwh_per_km[ids]
    target = np.where(base, target_soc * cap, 0.0)
    req_kwh[ids] = np.minimum(np.maximum(trip_need, target), soc_full * cap)
    kind_out[: ids.size] = kind


def settle(ids: np.ndarray, dest: np.ndarray, k: int, site: np.ndarray, site_kind: np.ndarray,
           site_has_chargers: np.ndarray, patience_steps: np.ndarray, e_kwh: np.ndarray,
           plug_soc: np.ndarray, public_plug_soc: float, public_kind: int, wants: np.ndarray,
           waiting: np.ndarray, wait_since: np.ndarray, wait_until: np.ndarray,
           kind_buf: np.ndarray, head: np.ndarray, tail: np.ndarray, leg_dep: np.ndarray,
           leg_rest_km: np.ndarray, leg_seq: np.ndarray, evt_step: np.ndarray,
           evt_seq: np.ndarray, next_dep: np.ndarray, req_kwh: np.ndarray,
           cap_kwh: np.ndarray, kwh_per_km: np.ndarray, horizon_step: int, need_soc: float,
           target_soc: float, soc_full: float, home_kind: int, depot_kind: int) -> int:
    """EVs ``ids`` park at ``dest`` (-1 = no charging site) at step ``k``; returns the number
    of new waiting EVs."""
    n = ids.size
    site[ids] = dest
    next_trip(ids, head, tail, leg_dep, leg_rest_km, leg_seq, evt_step, evt_seq, next_dep,
              req_kwh, cap_kwh, site, site_kind, kwh_per_km, horizon_step, need_soc, target_soc,
              soc_full, home_kind, depot_kind, kind_buf)
    kind = kind_buf[:n]
    soc = e_kwh[ids] / cap_kwh[ids]
    want = (dest >= 0) & (site_has_chargers[np.maximum(dest, 0)] != 0)
    want &= np.where(kind == public_kind, soc < public_plug_soc, soc < plug_soc[ids])
    wants[ids] = want
    w = ids[want]
    waiting[w] = 1
    wait_since[w] = k
    wait_until[w] = np.minimum(k + patience_steps[site[w]], next_dep[w])
    return int(w.size)


def arrive(ids: np.ndarray, k: int, leg_arr: np.ndarray, leg_dest: np.ndarray, head: np.ndarray,
           driving: np.ndarray, dest_buf: np.ndarray, site: np.ndarray, site_kind: np.ndarray,
           site_has_chargers: np.ndarray, patience_steps: np.ndarray, e_kwh: np.ndarray,
           plug_soc: np.ndarray, public_plug_soc: float, public_kind: int, wants: np.ndarray,
           waiting: np.ndarray, wait_since: np.ndarray, wait_until: np.ndarray,
           kind_buf: np.ndarray, tail: np.ndarray, leg_dep: np.ndarray,
           leg_rest_km: np.ndarray, leg_seq: np.ndarray, evt_step: np.ndarray,
           evt_seq: np.ndarray, next_dep: np.ndarray, req_kwh: np.ndarray,
           cap_kwh: np.ndarray, kwh_per_km: np.ndarray, horizon_step: int, need_soc: float,
           target_soc: float, soc_full: float, home_kind: int, depot_kind: int) -> int:
    """EVs ``ids`` arrive at step ``k`` and settle; -1 (nothing changed) when the trip plan
    does not match."""
    n = ids.size
    slot = head[ids] % leg_arr.shape[1]
    if np.any(leg_arr[ids, slot] != k) or not np.all(driving[ids] != 0):
        return -1
    dest_buf[:n] = leg_dest[ids, slot]
    head[ids] += 1
    driving[ids] = 0
    return settle(ids, dest_buf[:n], k, site, site_kind, site_has_chargers, patience_steps,
                  e_kwh, plug_soc, public_plug_soc, public_kind, wants, waiting, wait_since,
                  wait_until, kind_buf, head, tail, leg_dep, leg_rest_km, leg_seq, evt_step,
                  evt_seq, next_dep, req_kwh, cap_kwh, kwh_per_km, horizon_step, need_soc,
                  target_soc, soc_full, home_kind, depot_kind)


def depart(ids: np.ndarray, k: int, leg_dep: np.ndarray, leg_arr: np.ndarray,
           evt_step: np.ndarray, leg_km: np.ndarray, head: np.ndarray, driving: np.ndarray,
           plug: np.ndarray, site: np.ndarray, used: np.ndarray,
           charging: np.ndarray, wants: np.ndarray, waiting: np.ndarray, req_kwh: np.ndarray,
           e_kwh: np.ndarray, cap_kwh: np.ndarray, kwh_per_km: np.ndarray, soc_min: float,
           unmet_kwh: np.ndarray, driven_kwh: np.ndarray, shortfall_kwh: np.ndarray,
           p_ch_lim: np.ndarray, p_dis_lim: np.ndarray, last_dir: np.ndarray,
           extreme: np.ndarray, tp_buf: np.ndarray, tp_n: np.ndarray, unmet_buf: np.ndarray
           ) -> tuple[int, int, int, int, bool, bool] | None:
    """EVs ``ids`` leave at step ``k``. Returns ``(n_unplugged, n_unmet, n_gave_up, n_short,
    flush, short_kwh)``, or ``None`` (nothing changed) when the trip plan does not match."""
    if leg_km.shape != leg_dep.shape or leg_arr.shape != leg_dep.shape:
        raise ValueError("leg_km, leg_arr: need as many leg slots as leg_dep")
    slot = head[ids] % leg_dep.shape[1]
    if np.any(leg_dep[ids, slot] != k) or np.any(driving[ids] != 0):
        return None
    plugged = ids[plug[ids] >= 0]
    if plugged.size:
        np.subtract.at(used, (site[plugged], plug[plugged]), 1)
        charging[plugged] = 0
    want = ids[wants[ids] != 0]
    unmet = np.maximum(req_kwh[want] - e_kwh[want], 0.0)
    unmet_kwh[want] += unmet
    unmet_buf[: want.size] = unmet
    gave_up = int(np.count_nonzero(waiting[ids]))
    e_trip = leg_km[ids, slot] * kwh_per_km[ids]
    avail = np.maximum(e_kwh[ids] - soc_min * cap_kwh[ids], 0.0)
    use = np.minimum(e_trip, avail)
    short = e_trip > avail + 1e-9
    cap = cap_kwh[ids]
    soc_old = e_kwh[ids] / cap
    e_kwh[ids] -= use
    driven_kwh[ids] += use
    shortfall_kwh[ids] += e_trip - use
    short_kwh = bool((e_trip - use != 0.0).any())
    flush = _turning_points(ids, soc_old, e_kwh[ids] / cap, last_dir, extreme, tp_buf, tp_n)
    plug[ids] = -1
    p_ch_lim[ids] = 0.0
    p_dis_lim[ids] = 0.0
    waiting[ids] = 0
    wants[ids] = 0
    site[ids] = -1
    driving[ids] = 1
    evt_step[ids] = leg_arr[ids, slot]
    n_unmet = int(want.size) if (unmet > 0.0).any() else 0
    return int(plugged.size), n_unmet, gave_up, int(np.count_nonzero(short)), flush, short_kwh


def rainflow(ids: np.ndarray, points: np.ndarray, n_points: np.ndarray, stack: np.ndarray,
             depth: np.ndarray, cyc_ev: np.ndarray, cyc_range: np.ndarray,
             cyc_mean: np.ndarray, cyc_weight: np.ndarray) -> int:
    """ASTM E1049-85 three-point rainflow counting of many signals, fed point by point; lists
    the cycles it closes and returns their number."""
    n, (n_sig, max_depth) = ids.size, stack.shape
    if points.ndim != 2 or points.shape[0] != n or n_points.shape != (n,):
        raise ValueError("rainflow: points and n_points need one row per id")
    if depth.shape != (n_sig,):
        raise ValueError("rainflow: depth needs one value per stack row")
    if max_depth < 2:
        raise ValueError(f"rainflow: the stack needs room for 2 points at least, has {max_depth}")
    cap = cyc_ev.size
    if min(cyc_range.size, cyc_mean.size, cyc_weight.size) < cap:
        raise ValueError("rainflow: cyc_range, cyc_mean and cyc_weight need the room of cyc_ev")
    if n and (ids.min() < 0 or ids.max() >= n_sig or np.unique(ids).size != n):
        raise ValueError(f"rainflow: ids must be unique signals in [0, {n_sig})")
    if n and (n_points.min() < 0 or n_points.max() > points.shape[1]):
        raise ValueError(f"rainflow: n_points must be within [0, {points.shape[1]}]")
    if n and (depth[ids].min() < 1 or depth[ids].max() > max_depth):
        raise ValueError(f"rainflow: depth must be within [1, {max_depth}]")
    need = int(n_points.sum() + depth[ids].sum())
    if cap < need:
        raise ValueError(f"rainflow: room for {cap} cycles, needs {need}")
    m = 0

    def emit(ev: np.ndarray, a: np.ndarray, b: np.ndarray, weight: np.ndarray | float) -> None:
        nonlocal m
        k = m + ev.size
        cyc_ev[m:k] = ev
        cyc_range[m:k] = np.abs(a - b)
        cyc_mean[m:k] = 0.5 * (a + b)
        cyc_weight[m:k] = weight
        m = k

    for col in range(int(n_points.max()) if n else 0):
        sel = np.flatnonzero(n_points > col)
        active = ids[sel]
        full = active[depth[active] >= max_depth]
        if full.size:
            emit(full, stack[full, 0], stack[full, 1], 0.5)
            stack[full, :-1] = stack[full, 1:]
            depth[full] -= 1
        d = depth[active]
        stack[active, d] = points[sel, col]
        depth[active] = d + 1
        while active.size:
            d = depth[active]
            active = active[d >= 3]
            if active.size == 0:
                break
            d = depth[active]
            s1 = stack[active, d - 1]
            s2 = stack[active, d - 2]
            s3 = stack[active, d - 3]
            go = np.abs(s1 - s2) >= np.abs(s2 - s3)
            if not go.any():
                break
            active, d, s1, s2, s3 = active[go], d[go], s1[go], s2[go], s3[go]
            half = d == 3  # the range holds the first point: half cycle, drop that point
            emit(active, s2, s3, np.where(half, 0.5, 1.0))
            stack[active, d - 3] = np.where(half, s2, s1)
            h = active[half]
            stack[h, 1] = s1[half]
            depth[active] = np.where(half, d - 1, d - 2)
    return m


def append_legs(ev: np.ndarray, dep_nom: np.ndarray, n_drive: np.ndarray, km: np.ndarray,
                dest: np.ndarray, rest_km: np.ndarray, head: np.ndarray, tail: np.ndarray,
                last_arr: np.ndarray, driving: np.ndarray, leg_dep: np.ndarray,
                leg_arr: np.ndarray, leg_km: np.ndarray, leg_dest: np.ndarray,
                leg_rest_km: np.ndarray, leg_seq: np.ndarray, seq: int, dep_out: np.ndarray,
                arr_out: np.ndarray, idle_out: np.ndarray) -> int:
    """Append legs sorted by EV, then nominal departure, to each EV's ring of planned legs;
    returns the number of EVs listed in ``idle_out``, or -1 (nothing changed) on overflow."""
    n, (n_ev, m) = ev.size, leg_dep.shape
    if any(a.shape != (n,) for a in (dep_nom, n_drive, km, dest, rest_km, dep_out, arr_out)):
        raise ValueError("append_legs: every leg array needs one value per leg")
    if any(a.shape != (n_ev,) for a in (tail, last_arr, driving, idle_out)):
        raise ValueError("append_legs: every EV array needs one value per EV")
    if any(a.shape != (n_ev, m) for a in (leg_arr, leg_km, leg_dest, leg_rest_km, leg_seq)):
        raise ValueError("append_legs: the leg rings need the shape of leg_dep, one row per EV")
    if n == 0:
        return 0
    if ev[0] < 0 or ev[-1] >= n_ev or np.any(ev[1:] < ev[:-1]):
        raise ValueError(f"append_legs: ev must be sorted EV indices in [0, {n_ev})")
    first = np.r_[True, ev[1:] != ev[:-1]]
    rank = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    if np.any(tail[ev] - head[ev] + rank + 1 > m):
        return -1
    prev_arr = np.zeros(n, dtype=np.int64)
    for j in range(int(rank.max()) + 1):
        sel = np.flatnonzero(rank == j)
        prev = last_arr[ev[sel]] if j == 0 else prev_arr[sel - 1]
        dep_out[sel] = np.maximum(dep_nom[sel], prev + 1)  # a stay lasts at least one step
        arr_out[sel] = dep_out[sel] + n_drive[sel]
        prev_arr[sel] = arr_out[sel]
    slot = (tail[ev] + rank) % m
    idle = ev[first & (head[ev] == tail[ev]) & (driving[ev] == 0)]
    leg_dep[ev, slot] = dep_out
    leg_arr[ev, slot] = arr_out
    leg_km[ev, slot] = km
    leg_dest[ev, slot] = dest
    leg_rest_km[ev, slot] = rest_km
    leg_seq[ev, slot] = seq
    last = np.r_[ev[1:] != ev[:-1], True]
    tail[ev[last]] += rank[last] + 1
    last_arr[ev[last]] = arr_out[last]
    idle_out[: idle.size] = idle
    return int(idle.size)


def due(k: int, evt_step: np.ndarray, evt_seq: np.ndarray, driving: np.ndarray,
        dep_out: np.ndarray, arr_out: np.ndarray) -> tuple[int, int]:
    """The EVs whose next event is at step ``k``, leaving and arriving, each by filing number
    of the leg, then EV. Returns ``(n_leaving, n_arriving)``."""
    if any(a.shape != evt_step.shape for a in (evt_seq, driving, dep_out, arr_out)):
        raise ValueError("due: every array needs one value per EV")
    now = evt_step == k
    counts = []
    for ids, out in ((np.flatnonzero(now & (driving == 0)), dep_out),
                     (np.flatnonzero(now & (driving != 0)), arr_out)):
        ids = ids[np.argsort(evt_seq[ids], kind="stable")]
        out[: ids.size] = ids
        counts.append(int(ids.size))
    return counts[0], counts[1]


def plugged(plug: np.ndarray, out: np.ndarray) -> int:
    """Write the EVs plugged in (``plug >= 0``), in increasing order, to ``out``; return their
    number."""
    if out.size < plug.size:
        raise ValueError("plugged: out needs room for every EV")
    ids = np.flatnonzero(plug >= 0)
    out[: ids.size] = ids
    return int(ids.size)
