"""Settlement of a step: energy closes per plant and site, same bus first, prices, trades."""

from __future__ import annotations

import numpy as np
import pytest

from components.coordinator.core import Prices
from components.coordinator.matching import MIN_TRADE_KWH, match_step

PRICES = Prices(grid=1.133067, pv_local=0.963107, feed_in=0.3964, v2g=0.63424, period=2)
PLANTS = ("roof_a", "roof_b", "field")
SITES = ("home", "work", "hub")
PLANT_BUS = np.array([1, 2, 5])
SITE_BUS = np.array([1, 2, 3])


def settle(pv, charge, discharge=(0.0, 0.0, 0.0), dt_h=0.25):
    return match_step(np.asarray(pv, float), PLANT_BUS, np.asarray(charge, float),
                      np.asarray(discharge, float), SITE_BUS, dt_h, PRICES, PLANTS, SITES)


@pytest.mark.parametrize("seed", range(10))
def test_energy_closes_per_plant_and_per_site(seed):
    rng = np.random.default_rng(seed)
    pv = rng.uniform(0, 300, 3) * (rng.random(3) < 0.8)
    charge = rng.uniform(0, 250, 3) * (rng.random(3) < 0.8)
    s = settle(pv, charge, rng.uniform(0, 50, 3))
    np.testing.assert_allclose(s.flow_kw.sum(axis=1) + s.pv_export_kw, pv, atol=1e-9)
    np.testing.assert_allclose(s.flow_kw.sum(axis=0) + s.grid_to_site_kw, charge, atol=1e-9)
    assert s.pv_to_ev_kw == pytest.approx(min(pv.sum(), charge.sum()))
    assert (s.flow_kw >= 0).all() and (s.pv_export_kw >= 0).all()
    # both PV left over and charging uncovered at once would be a missed match
    assert min(s.pv_export_kw.sum(), s.grid_to_site_kw.sum()) < 1e-9
    # at most plants + sites - 1 trades per stage (same bus, pool)
    assert np.count_nonzero(s.flow_kw) <= 2 * (3 + 3 - 1)


def test_same_bus_first_then_the_pool():
    # home (bus 1) and work (bus 2) each have a plant on their bus; the field (bus 5) is pool
    s = settle([50.0, 200.0, 100.0], [120.0, 80.0, 60.0])
    # home takes all of roof_a (its bus) and 70 kW from the pool
    assert s.flow_kw[0, 0] == pytest.approx(50.0)
    assert s.flow_kw[1, 1] == pytest.approx(80.0)  # work covered by roof_b on its bus
    # roof_b's 120 kW left and the field's 100 kW cover home's 70 and the hub's 60
    assert s.flow_kw[:, 0].sum() == pytest.approx(120.0)
    assert s.flow_kw[:, 2].sum() == pytest.approx(60.0)
    assert s.pv_export_kw.sum() == pytest.approx(350.0 - 260.0)
    assert s.grid_to_ev_kw == pytest.approx(0.0)


def test_prices_and_money():
    s = settle([100.0, 0.0, 0.0], [60.0, 80.0, 0.0], [0.0, 0.0, 40.0])
    dt = 0.25
    assert s.cost_cny == pytest.approx((100 * PRICES.pv_local + 40 * PRICES.grid) * dt)
    assert s.grid_cost_cny == pytest.approx(40 * PRICES.grid * dt)
    assert s.ev_user_revenue_cny == pytest.approx(40 * PRICES.v2g * dt)
    assert s.pv_revenue_cny == pytest.approx(100 * PRICES.pv_local * dt)
    kinds = {}
    for seller, buyer, kwh, price, kind in s.transactions:
        kinds[kind] = kinds.get(kind, 0.0) + kwh
        expected = {"pv_to_ev": PRICES.pv_local, "grid_to_ev": PRICES.grid,
                    "v2g": PRICES.v2g, "pv_export": PRICES.feed_in}[kind]
        assert price == expected
        assert seller != buyer
        if kind == "v2g":
            assert (seller, buyer) == ("site:hub", "grid")
    assert kinds == pytest.approx({"pv_to_ev": 25.0, "grid_to_ev": 10.0, "v2g": 10.0})


def test_trades_below_the_ledger_resolution_are_left_out_of_the_list_only():
    tiny_kw = MIN_TRADE_KWH / 0.25 / 2
    s = settle([tiny_kw, 0.0, 0.0], [tiny_kw, 0.0, 0.0])
    assert s.transactions == []
    assert s.pv_to_ev_kw == pytest.approx(tiny_kw)


def test_nothing_to_settle():
    s = settle([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert s.transactions == [] and s.cost_cny == 0.0 and s.pv_to_ev_kw == 0.0


def _reference_settle(pv, plant_bus, charge, site_bus):
    """The table filled with the vectorised rule per bus, then the pool (the definition)."""
    from ext.dispatch_np import north_west_table as _north_west

    pv, ch = np.maximum(pv, 0.0), np.maximum(charge, 0.0)
    flow = np.zeros((pv.size, ch.size))
    for bus in np.intersect1d(plant_bus, site_bus):
        pi, si = np.flatnonzero(plant_bus == bus), np.flatnonzero(site_bus == bus)
        flow[np.ix_(pi, si)] = _north_west(pv[pi], ch[si])
    same = flow.copy()
    flow += _north_west(pv - flow.sum(axis=1), ch - flow.sum(axis=0))
    return same, flow


@pytest.mark.parametrize("seed", range(20))
def test_matcher_equals_the_vectorised_rule_bit_for_bit(seed):
    from components.coordinator.matching import Matcher

    rng = np.random.default_rng(seed)
    n_plants, n_sites = rng.integers(1, 12), rng.integers(1, 8)
    plant_bus, site_bus = rng.integers(0, 5, n_plants), rng.integers(0, 5, n_sites)
    # zeros of both signs, idle plants and sites, and exact ties between supply and demand
    pv = rng.uniform(0, 300, n_plants) * (rng.random(n_plants) < 0.7)
    pv[rng.random(n_plants) < 0.2] = -0.0
    charge = rng.uniform(0, 250, n_sites) * (rng.random(n_sites) < 0.7)
    if n_sites > 1:
        charge[0] = pv[0]
    plants = tuple(f"p{i}" for i in range(n_plants))
    sites = tuple(f"s{j}" for j in range(n_sites))
    s = Matcher(plant_bus, site_bus, plants, sites).settle(pv, charge, np.zeros(n_sites), 0.25,
                                                          PRICES)
    same, flow = _reference_settle(pv, plant_bus, charge, site_bus)
    assert s.flow_kw.tobytes() == flow.tobytes()
    # same-bus trades first, then the pool, each row by row
    want = [(f"pv:{plants[i]}", f"site:{sites[j]}", part[i, j] * 0.25)
            for part in (same, flow - same) for i, j in zip(*np.nonzero(part > 0), strict=True)
            if part[i, j] * 0.25 >= MIN_TRADE_KWH]
    got = [t[:3] for t in s.transactions if t[4] == "pv_to_ev"]
    assert got == want


def test_matcher_rejects_arrays_of_the_wrong_length():
    from components.coordinator.matching import Matcher

    m = Matcher(PLANT_BUS, SITE_BUS, PLANTS, SITES)
    with pytest.raises(ValueError, match="3 plants and 3 sites"):
        m.settle(np.ones(2), np.ones(3), np.zeros(3), 0.25, PRICES)
