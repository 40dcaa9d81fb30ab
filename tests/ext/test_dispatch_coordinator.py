"""The coordinator's per-step kernels of ``ext.dispatch`` besides the allocation: the plugged EVs'
view (``plugged_into``), the step's PV and factory totals (``supply_into``), what the EVs do with
the set-points (``done_into``), the north-west-corner transport tables of the settlement
(``north_west_into``) and the settlement (``settle_into``). The compiled kernels equal the NumPy
twins to the bit, do what they are defined to and name arrays of the wrong kind."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import ext.dispatch_np as twin

pytestmark = pytest.mark.kernels

HAS_COMPILED = importlib.util.find_spec("ext.dispatch") is not None
BACKENDS = ["numpy", *(["compiled"] if HAS_COMPILED else [])]


def _kernel(backend: str):
    from ext.dispatch_api import kernel_module

    return kernel_module(backend)


def _groups(members: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    start = np.cumsum([0, *(len(m) for m in members)], dtype=np.int64)
    return start, np.array([i for m in members for i in m], dtype=np.int64)


def _case(seed: int):
    """Random supply and demand (zeros of both signs, negatives, exact ties) and disjoint
    groups of suppliers and consumers in shuffled order."""
    rng = np.random.default_rng(seed)
    n_rows, n_cols = int(rng.integers(1, 15)), int(rng.integers(1, 10))
    supply = rng.uniform(-50, 300, n_rows) * (rng.random(n_rows) < 0.8)
    supply[rng.random(n_rows) < 0.2] = -0.0
    demand = rng.uniform(-50, 250, n_cols) * (rng.random(n_cols) < 0.8)
    demand[0] = supply[0]
    n_groups = int(rng.integers(0, 4))
    rows = np.array_split(rng.permutation(n_rows), max(n_groups, 1))[:n_groups]
    cols = np.array_split(rng.permutation(n_cols), max(n_groups, 1))[:n_groups]
    flow = rng.uniform(0, 10, (n_rows, n_cols)) * (rng.random((n_rows, n_cols)) < 0.3)
    return supply, demand, [r.tolist() for r in rows], [c.tolist() for c in cols], flow


@pytest.mark.parametrize("seed", range(40))
def test_compiled_kernel_and_twin_agree_to_the_bit(seed: int) -> None:
    if not HAS_COMPILED:
        pytest.skip("ext.dispatch is not built")
    supply, demand, rows, cols, flow = _case(seed)
    out = {}
    for backend in ("numpy", "compiled"):
        out[backend] = flow.copy()
        _kernel(backend).north_west_into(supply, demand, *_groups(rows), *_groups(cols),
                                         out[backend])
    assert out["compiled"].tobytes() == out["numpy"].tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(20))
def test_each_group_ships_what_it_can_in_order(backend: str, seed: int) -> None:
    supply, demand, rows, cols, flow = _case(seed)
    out = flow.copy()
    _kernel(backend).north_west_into(supply, demand, *_groups(rows), *_groups(cols), out)
    added = out - flow
    in_group = np.zeros(flow.shape, dtype=bool)
    for r, c in zip(rows, cols, strict=True):
        in_group[np.ix_(r, c)] = True
        table = added[np.ix_(r, c)]
        s, d = np.maximum(supply[r], 0.0), np.maximum(demand[c], 0.0)
        # no supplier ships more than it has, no consumer gets more than it wants, and the
        # group ships all it can
        assert (table >= 0).all()
        assert (table.sum(axis=1) <= s + 1e-9).all() and (table.sum(axis=0) <= d + 1e-9).all()
        assert table.sum() == pytest.approx(min(s.sum(), d.sum()), abs=1e-9)
        # in order: a supplier ships to a later consumer only once the earlier ones are served
        for a in range(len(r)):
            served = np.flatnonzero(table[a] > 0)
            if served.size:
                last = served[-1]
                left = d[:last] - table[:, :last].sum(axis=0)
                assert (left <= 1e-9).all()
    assert not added[~in_group].any()


def test_by_hand() -> None:
    # two plants (100, 50) for three sites (30, 80, 100): 30 and 70 from the first plant,
    # 10 and 40 from the second
    flow = np.zeros((2, 3))
    twin.north_west_into(np.array([100.0, 50.0]), np.array([30.0, 80.0, 100.0]),
                         *_groups([[0, 1]]), *_groups([[0, 1, 2]]), flow)
    assert flow.tolist() == [[30.0, 70.0, 0.0], [0.0, 10.0, 40.0]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_indices_and_sizes_are_refused(backend: str) -> None:
    kernel = _kernel(backend)
    supply, demand, flow = np.ones(2), np.ones(3), np.zeros((2, 3))
    ok_rows, ok_cols = _groups([[0, 1]]), _groups([[0, 1, 2]])
    with pytest.raises(ValueError, match="supplier index"):
        kernel.north_west_into(supply, demand, *_groups([[0, 2]]), *ok_cols, flow)
    with pytest.raises(ValueError, match="consumer index"):
        kernel.north_west_into(supply, demand, *ok_rows, *_groups([[-1]]), flow)
    with pytest.raises(ValueError, match="group bounds"):
        kernel.north_west_into(supply, demand, np.array([0, 5]), ok_rows[1], *ok_cols, flow)
    with pytest.raises(ValueError, match="sizes"):
        kernel.north_west_into(np.ones(3), demand, *ok_rows, *ok_cols, flow)
    with pytest.raises(ValueError, match="sizes"):
        kernel.north_west_into(supply, demand, *ok_rows, *_groups([[0], [1]]), flow)


def _fleet(seed: int):
    """A fleet of 40 EVs on 5 sites, some plugged (shuffled, with zeros of both signs, NaN
    set-points and bounds that cross zero), and the coordinator's memory of each EV."""
    rng = np.random.default_rng(seed)
    n_ev, n_site = 40, 5
    n = int(rng.integers(0, n_ev + 1))
    ids = rng.permutation(n_ev)[:n].astype(np.int64)
    site = rng.integers(0, n_site, n).astype(np.int64)
    view = {"soc": rng.uniform(0, 1, n), "need_kwh": rng.uniform(-5, 40, n),
            "departure_s": rng.uniform(0, 2e5, n), "p_max_kw": rng.uniform(-1, 11, n),
            "p_min_kw": rng.uniform(-11, 1, n), "v2g": (rng.random(n) < 0.5).view(np.uint8)}
    for a in ("need_kwh", "p_max_kw", "p_min_kw"):
        view[a][rng.random(n) < 0.2] = -0.0
        view[a][rng.random(n) < 0.1] = 0.0
    state = {"rate_kw": rng.uniform(0, 11, n_ev) * (rng.random(n_ev) < 0.6),
             "dis_rate_kw": rng.uniform(0, 11, n_ev) * (rng.random(n_ev) < 0.6),
             "delta_e_kwh": rng.uniform(-20, 20, n_ev),
             "site_of": np.where(rng.random(n_ev) < 0.5, rng.integers(0, n_site, n_ev), -1)}
    state["site_of"][ids[: n // 2]] = site[: n // 2]  # half of them stay where they were
    p = np.where(rng.random(n) < 0.2, np.nan, rng.uniform(-12, 12, n))
    p[rng.random(n) < 0.1] = -0.0
    return ids, site, view, state, p, rng.uniform(3, 11, n_site), rng.uniform(30, 90, n_ev)


def _plugged(backend: str, ids, site, view, state, point, capacity):
    state = {k: v.copy() for k, v in state.items()}
    out = np.full((8, ids.size), -1.0)
    code = _kernel(backend).plugged_into(
        ids, site, view["soc"], view["need_kwh"], view["departure_s"], view["p_max_kw"],
        view["p_min_kw"], view["v2g"], 3600.0, 900.0, point, capacity, 0.95,
        state["rate_kw"], state["dis_rate_kw"], state["delta_e_kwh"], state["site_of"], out)
    return code, out, state


@pytest.mark.parametrize("known_capacity", [True, False])
@pytest.mark.parametrize("seed", range(15))
def test_plugged_view_compiled_equals_twin_to_the_bit(seed: int, known_capacity: bool) -> None:
    if not HAS_COMPILED:
        pytest.skip("ext.dispatch is not built")
    ids, site, view, state, _, point, capacity = _fleet(seed)
    capacity = capacity if known_capacity else np.zeros(0)
    got = {b: _plugged(b, ids, site, view, state, point, capacity) for b in ("numpy", "compiled")}
    assert got["numpy"][0] == got["compiled"][0] == 0
    assert got["numpy"][1].tobytes() == got["compiled"][1].tobytes()
    for k in state:
        assert got["numpy"][2][k].tobytes() == got["compiled"][2][k].tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(10))
def test_plugged_view_follows_its_definition(backend: str, seed: int) -> None:
    ids, site, view, state, _, point, capacity = _fleet(seed)
    code, out, after = _plugged(backend, ids, site, view, state, point, capacity)
    assert code == 0
    need, t_dep, p_max, p_min, p_rate, p_dis_rate, restore, room = out
    assert (need >= 0).all() and (t_dep >= 900.0).all() and (p_max >= 0).all()
    assert (p_min <= 0).all()
    np.testing.assert_array_equal(t_dep, np.maximum(view["departure_s"] - 3600.0, 900.0))
    # the rates seen only grow; an EV without a rate seen plans with its site's point
    rate = np.maximum(state["rate_kw"][ids], p_max)
    np.testing.assert_array_equal(after["rate_kw"][ids], rate)
    np.testing.assert_array_equal(p_rate, np.where(rate > 0, rate, point[site]))
    assert (p_dis_rate[view["v2g"] == 0] == 0).all()
    # a new stay (another site, or not plugged before) starts with nothing to give back
    new = state["site_of"][ids] != site
    assert (restore[new] == 0).all()
    np.testing.assert_array_equal(restore[~new],
                                  np.maximum(-state["delta_e_kwh"][ids[~new]], 0.0))
    assert (after["delta_e_kwh"][ids[new]] == 0).all()
    expected_site_of = np.full(state["site_of"].size, -1)
    expected_site_of[ids] = site
    np.testing.assert_array_equal(after["site_of"], expected_site_of)
    np.testing.assert_array_equal(room, np.maximum((0.95 - view["soc"]) * capacity[ids], need))


@pytest.mark.parametrize("backend", BACKENDS)
def test_plugged_view_refuses_bad_indices_before_changing_anything(backend: str) -> None:
    ids, site, view, state, _, point, capacity = _fleet(3)
    assert ids.size
    for bad_ids, bad_site, code in ((ids.copy(), site, 1), (ids, site.copy(), 2)):
        if code == 1:
            bad_ids[-1] = state["rate_kw"].size
        else:
            bad_site[0] = -1
        got, _, after = _plugged(backend, bad_ids, bad_site, view, state, point, capacity)
        assert got == code
        for k in state:
            assert after[k].tobytes() == state[k].tobytes()
    with pytest.raises(ValueError, match="sizes"):
        _plugged(backend, ids, site[:-1], view, state, point, capacity)


def _done(backend: str, p, ids, site, state, p_min, p_max, n_site):
    delta = state["delta_e_kwh"].copy()
    p_done, site_kw, p_set = np.full(p.size, -1.0), np.full((2, n_site), -1.0), np.zeros(delta.size)
    total, n_finite, n_infinite = _kernel(backend).done_into(
        p, p_min, p_max, ids, site, 0.92, 0.9, 0.25, delta, p_done, site_kw, p_set)
    assert type(n_finite) is int and type(n_infinite) is int
    return delta, p_done, site_kw, p_set, np.array([total, n_finite, n_infinite])


@pytest.mark.parametrize("seed", range(15))
def test_done_compiled_equals_twin_to_the_bit(seed: int) -> None:
    if not HAS_COMPILED:
        pytest.skip("ext.dispatch is not built")
    ids, site, view, state, p, point, _ = _fleet(seed)
    p_min, p_max = np.minimum(view["p_min_kw"], 0.0), np.maximum(view["p_max_kw"], 0.0)
    got = {b: _done(b, p, ids, site, state, p_min, p_max, point.size)
           for b in ("numpy", "compiled")}
    for a, b in zip(got["numpy"], got["compiled"], strict=True):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(10))
def test_done_follows_its_definition(backend: str, seed: int) -> None:
    ids, site, view, state, p, point, _ = _fleet(seed)
    p_min, p_max = np.minimum(view["p_min_kw"], 0.0), np.maximum(view["p_max_kw"], 0.0)
    p[np.random.default_rng(seed).random(p.size) < 0.1] = np.inf  # a strategy's error
    delta, p_done, site_kw, p_set, total = _done(backend, p, ids, site, state, p_min, p_max,
                                                 point.size)
    assert total[0] == p_done.sum()  # as numpy adds them
    # the set-points sent: finite ones (EVs controlled) and infinite ones (refused when sent)
    assert total[1] == np.isfinite(p_set).sum() and total[2] == np.isinf(p_set).sum()
    # NaN: the EV's maximum; everything within the EV's bounds
    np.testing.assert_array_equal(p_done, np.clip(np.where(np.isnan(p), p_max, p), p_min, p_max))
    charging, discharging = np.maximum(p_done, 0.0), np.maximum(-p_done, 0.0)
    np.testing.assert_allclose(site_kw[0], [charging[site == j].sum() for j in range(point.size)])
    np.testing.assert_allclose(site_kw[1],
                               [discharging[site == j].sum() for j in range(point.size)])
    gained = delta - state["delta_e_kwh"]
    np.testing.assert_allclose(gained[ids], (0.92 * charging - discharging / 0.9) * 0.25)
    others = np.setdiff1d(np.arange(delta.size), ids)
    assert (gained[others] == 0).all()
    np.testing.assert_array_equal(p_set[ids], p)
    assert np.isnan(p_set[others]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_done_refuses_bad_indices_and_sizes(backend: str) -> None:
    ids, site, view, state, p, point, _ = _fleet(4)
    assert ids.size
    p_min, p_max = np.minimum(view["p_min_kw"], 0.0), np.maximum(view["p_max_kw"], 0.0)
    bad = site.copy()
    bad[0] = point.size
    with pytest.raises(ValueError, match="out of range"):
        _done(backend, p, ids, bad, state, p_min, p_max, point.size)
    with pytest.raises(ValueError, match="sizes"):
        _done(backend, p[:-1], ids, site, state, p_min, p_max, point.size)


def _supply_case(seed: int):
    """PV in load convention (generation negative; zeros of both signs, some consumption),
    available power at or above it (or below: a plant's reading may lag), factory loads."""
    rng = np.random.default_rng(seed)
    n, n_fac = int(rng.integers(0, 300)), int(rng.integers(0, 140))
    p = -rng.uniform(-20, 900, n) * (rng.random(n) < 0.8)
    p[rng.random(n) < 0.1] = -0.0
    avail = np.maximum(-p, 0.0) + rng.uniform(-5, 50, n) * (rng.random(n) < 0.5)
    return p, avail, rng.uniform(0, 3000, n_fac)


def _supply(backend: str, p, avail, fac):
    pv_kw = np.full(p.size, np.nan)
    totals = _kernel(backend).supply_into(p, avail, fac, pv_kw)
    assert all(type(t) is float for t in totals)
    return pv_kw, np.array(totals)


@pytest.mark.parametrize("seed", range(30))
def test_supply_compiled_equals_twin_to_the_bit(seed: int) -> None:
    if not HAS_COMPILED:
        pytest.skip("ext.dispatch is not built")
    case = _supply_case(seed)
    got = [_supply(b, *case) for b in ("numpy", "compiled")]
    for a, b in zip(*got, strict=True):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(10))
def test_supply_follows_its_definition(backend: str, seed: int) -> None:
    p, avail, fac = _supply_case(seed)
    pv_kw, (pv_total, fac_total, curtailed) = _supply(backend, p, avail, fac)
    # generation counted positive, consumption as none; the sums as numpy adds them
    np.testing.assert_array_equal(pv_kw, np.where(p < 0, -p, 0.0))
    assert pv_total == pv_kw.sum() and fac_total == fac.sum()
    assert curtailed == np.maximum(avail - pv_kw, 0.0).sum()


@pytest.mark.parametrize("backend", BACKENDS)
def test_supply_refuses_bad_sizes(backend: str) -> None:
    p, avail, fac = _supply_case(2)
    with pytest.raises(ValueError, match="sizes"):
        _supply(backend, p, np.append(avail, 1.0), fac)


def _settle_case(seed: int):
    """A random settlement: plants and sites on a few buses (some shared), negative and zero
    powers of both signs, and the same-bus cells in table order."""
    rng = np.random.default_rng(seed)
    n_p, n_s = int(rng.integers(0, 30)), int(rng.integers(0, 12))
    plant_bus, site_bus = rng.integers(0, 5, n_p), rng.integers(0, 5, n_s)
    pv = rng.uniform(-20, 400, n_p) * (rng.random(n_p) < 0.8)
    pv[rng.random(n_p) < 0.1] = -0.0
    ch = rng.uniform(-20, 300, n_s) * (rng.random(n_s) < 0.8)
    dis = rng.uniform(-5, 80, n_s) * (rng.random(n_s) < 0.4)
    buses = np.intersect1d(plant_bus, site_bus).tolist()
    rows = [np.flatnonzero(plant_bus == b).tolist() for b in buses]
    cols = [np.flatnonzero(site_bus == b).tolist() for b in buses]
    cells = np.array(sorted(i * n_s + j for r, c in zip(rows, cols, strict=True)
                            for i in r for j in c), dtype=np.int64)
    return pv, ch, dis, (*_groups(rows), *_groups(cols)), cells


MIN_KWH = 0.0005


def _settle(backend: str, pv, ch, dis, groups, cells, min_kwh: float = MIN_KWH):
    """The settlement's outputs; ``kwh`` and ``listed`` cut to the trades listed."""
    n_p, n_s = pv.size, ch.size
    n_trades = cells.size + n_p * n_s + 2 * n_s + n_p
    flow, export, site_kw, kwh, listed, totals = (
        np.full((n_p, n_s), np.nan), np.full(n_p, np.nan), np.full((2, n_s), np.nan),
        np.full(n_trades, np.nan), np.full(n_trades, -1, dtype=np.int64), np.full(4, np.nan))
    m = _kernel(backend).settle_into(pv, ch, dis, *groups, cells, 0.25, min_kwh, flow, export,
                                     site_kw, kwh, listed, totals)
    assert type(m) is int
    return flow, export, site_kw, kwh[:m], listed[:m], totals


@pytest.mark.parametrize("seed", range(40))
def test_settlement_compiled_equals_twin_to_the_bit(seed: int) -> None:
    if not HAS_COMPILED:
        pytest.skip("ext.dispatch is not built")
    case = _settle_case(seed)
    got = [_settle(b, *case) for b in ("numpy", "compiled")]
    for a, b in zip(*got, strict=True):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(20))
def test_settlement_follows_its_definition(backend: str, seed: int) -> None:
    pv, ch, dis, groups, cells = _settle_case(seed)
    flow, export, site_kw, _, _, totals = _settle(backend, pv, ch, dis, groups, cells)
    pv, ch, dis = np.maximum(pv, 0.0), np.maximum(ch, 0.0), np.maximum(dis, 0.0)
    # same bus first: each bus ships what it can by the north-west corner rule
    same = np.zeros(flow.shape)
    twin.north_west_into(pv, ch, *groups, same)
    np.testing.assert_array_equal(flow[same > 0] >= same[same > 0], True)
    # energy closes per plant and per site; the pool ships all it can of what is left
    np.testing.assert_allclose(flow.sum(axis=1) + export, pv, atol=1e-9)
    np.testing.assert_allclose(flow.sum(axis=0) + site_kw[0], ch, atol=1e-9)
    assert min(export.sum(), site_kw[0].sum()) <= 1e-9
    np.testing.assert_array_equal(site_kw[1], dis)
    np.testing.assert_allclose(totals, [flow.sum(), site_kw[0].sum(), dis.sum(), export.sum()],
                               rtol=1e-12, atol=1e-12)
    # every trade in listing order: same-bus cells, the pool's table, grid sales, V2G, exports
    n_c = flow.size
    trades = np.concatenate((same.reshape(-1)[cells], (flow - same).reshape(-1),
                             site_kw[0], dis, export)) * 0.25
    _, _, _, kwh, listed, _ = _settle(backend, pv, ch, dis, groups, cells, min_kwh=-np.inf)
    np.testing.assert_array_equal(listed, np.arange(trades.size))
    np.testing.assert_array_equal(kwh[:cells.size], trades[:cells.size])
    np.testing.assert_allclose(kwh[cells.size:cells.size + n_c],
                               trades[cells.size:cells.size + n_c], atol=1e-12)
    np.testing.assert_array_equal(kwh[cells.size + n_c:], trades[cells.size + n_c:])
    # only trades of at least the least energy are listed, in order
    _, _, _, kwh_min, listed_min, _ = _settle(backend, pv, ch, dis, groups, cells)
    np.testing.assert_array_equal(listed_min, np.flatnonzero(kwh >= MIN_KWH))
    np.testing.assert_array_equal(kwh_min, kwh[listed_min])


@pytest.mark.parametrize("backend", BACKENDS)
def test_settlement_refuses_bad_sizes_and_cells(backend: str) -> None:
    pv, ch, dis, groups, cells = _settle_case(3)
    with pytest.raises(ValueError, match="sizes"):
        _settle(backend, pv, ch, dis[:-1] if dis.size else np.ones(1), groups, cells)
    bad = np.array([pv.size * ch.size], dtype=np.int64)
    with pytest.raises(ValueError, match="cell"):
        _settle(backend, pv, ch, dis, groups, bad)
    with pytest.raises(ValueError, match="settle_into: group bounds"):
        _settle(backend, pv, ch, dis, (np.array([0, 99]), *groups[1:]), cells)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(10))
def test_listed_trades_are_named_and_priced_by_kind(backend: str, seed: int) -> None:
    """The trades listed by the settlement as tuples: both kernels give the same objects (the
    names and prices themselves, the energies as Python floats of the same value)."""
    pv, ch, dis, groups, cells = _settle_case(seed)
    _, _, _, kwh, listed, _ = _settle(backend, pv, ch, dis, groups, cells)
    kinds = ("pv_to_ev", "grid_to_ev", "v2g", "pv_export")
    n_trades = cells.size + pv.size * ch.size + 2 * ch.size + pv.size
    trades = [(f"seller{i}", f"buyer{i}", i % 4, kinds[i % 4]) for i in range(n_trades)]
    price = (0.4, 0.8, 1.1, 0.3)
    kernel = _kernel(backend)
    n = listed.size
    pad = (np.append(listed, np.zeros(3, np.int64)), np.append(kwh, np.full(3, np.nan)))
    got = kernel.listed_trades(trades, *pad, n, price)
    assert got == [(*trades[j][:2], x, price[trades[j][2]], trades[j][3])
                   for j, x in zip(listed.tolist(), kwh.tolist(), strict=True)]
    assert all(type(t[2]) is float for t in got)
    assert got[0][0] is trades[listed[0]][0] if n else got == []
    with pytest.raises(ValueError, match="listed_trades: n exceeds"):
        kernel.listed_trades(trades, *pad, n + 4, price)
    with pytest.raises(IndexError):
        kernel.listed_trades(trades[:1], np.array([1], np.int64), np.ones(1), 1, price)


def _compiled_calls():
    """Each per-step kernel's arguments (a valid call), by kernel name."""
    ids, site, view, state, p, point, capacity = _fleet(5)
    p_min, p_max = np.minimum(view["p_min_kw"], 0.0), np.maximum(view["p_max_kw"], 0.0)
    pv, ch, dis, groups, cells = _settle_case(5)
    n_p, n_s = pv.size, ch.size
    n_trades = cells.size + n_p * n_s + 2 * n_s + n_p
    return {
        "plugged_into": [ids, site, view["soc"], view["need_kwh"], view["departure_s"],
                         view["p_max_kw"], view["p_min_kw"], view["v2g"], 3600.0, 900.0, point,
                         capacity, 0.95, *(state[k].copy() for k in state),
                         np.zeros((8, ids.size))],
        "supply_into": [*_supply_case(5)[:2], np.ones(3), np.zeros(_supply_case(5)[0].size)],
        "done_into": [p, p_min, p_max, ids, site, 0.92, 0.9, 0.25,
                      state["delta_e_kwh"].copy(), np.zeros(p.size), np.zeros((2, point.size)),
                      np.zeros(state["delta_e_kwh"].size)],
        "settle_into": [pv, ch, dis, *groups, cells, 0.25, MIN_KWH, np.zeros((n_p, n_s)),
                        np.zeros(n_p), np.zeros((2, n_s)), np.zeros(n_trades),
                        np.zeros(n_trades, np.int64), np.zeros(4)],
        "charge_into": [np.zeros(2), np.zeros(2), np.zeros(2), np.ones(2), np.zeros(2),
                        np.zeros(2, np.int64), np.ones(1), np.zeros(0), np.zeros(1, np.int64),
                        np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64),
                        np.zeros(0), 900.0, 0.9, 0.9, 0.0, 0.0, 0, True, 0.0, 1.0, 0.0, 0.0,
                        np.zeros((4, 2)), np.zeros(twin.charge_work_size(2, 1, 0, 0))],
    }


@pytest.mark.parametrize("name", ["plugged_into", "supply_into", "done_into", "settle_into",
                                  "charge_into"])
def test_compiled_kernels_name_arrays_of_the_wrong_kind(name: str) -> None:
    """Another dtype, a strided view, a read-only output, another number of dimensions or no
    array at all: the compiled kernel names itself, the argument and what it needs."""
    if not HAS_COMPILED:
        pytest.skip("ext.dispatch is not built")
    kernel = getattr(_kernel("compiled"), name)
    args = _compiled_calls()[name]
    kernel(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])  # valid as given
    first = 0  # a 1-d float64 input of every kernel
    last = len(args) - 1  # a writable output of every kernel
    read_only = args[last].copy()
    read_only.flags.writeable = False
    wide = np.zeros(2 * args[first].size)
    bad_cases = [
        (first, args[first].astype(np.float32), "float32"),
        (first, wide[::2], "non-contiguous"),
        (first, args[first].reshape(1, -1), "2-d"),
        (last, read_only, "read-only"),
    ]
    for i, value, got in bad_cases:
        call = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        call[i] = value
        with pytest.raises(ValueError, match=f"{name}: .* needs a C-contiguous") as err:
            kernel(*call)
        assert got in str(err.value)
    with pytest.raises(TypeError):
        kernel(*[args[first].tolist(), *args[1:]])
