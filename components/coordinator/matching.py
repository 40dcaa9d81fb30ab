"""Settlement of one step: which PV plant's energy went to which charging site, at what price.

Matching rules, per step:

1. **Same bus first.** On each bus, the PV generated there supplies the EV charging there.
2. **Then the zone pool.** PV left over supplies the charging left over anywhere in the zone.
3. **Leftovers.** PV still left is sold to the grid (``pv_export``, feed-in price); charging
   still uncovered is bought from the grid (``grid_to_ev``, time-of-use price); energy EVs
   discharge is sold to the grid (``v2g``, V2G remuneration). PV curtailment is no trade; it is
   reported as a total.

Within a stage, plants and sites are paired in their configured order ("north-west corner" of
the transport table: the first plant supplies the first site until one of them is exhausted,
and so on), so a stage makes at most ``plants + sites - 1`` trades and the result is
deterministic. Matched PV is priced at the local PV price of the step
(:meth:`.tariffs.TariffConfig.pv_to_ev_price_cny_per_kwh`).

Energy closes per plant (``matched + exported = generated``) and per site (``from PV + from the
grid = charged``). Trades smaller than ``MIN_TRADE_KWH`` (half the ledger's 1 Wh resolution)
are left out of the transaction list, not out of the totals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.coordinator.core import Prices

MIN_TRADE_KWH = 0.0005
GRID = "grid"

Transaction = tuple[str, str, float, float, str]
"""(seller, buyer, kWh, price [CNY/kWh], kind), kind one of ``pv_to_ev``, ``grid_to_ev``,
``v2g``, ``pv_export``."""


@dataclass(frozen=True)
class Settlement:
    """The trades and totals of one step. Powers are means over the step [kW].

    Attributes
    ----------
    flow_kw : numpy.ndarray, shape (plants, sites)
        PV power each plant supplied to each site's EVs [kW].
    pv_export_kw, grid_to_site_kw : numpy.ndarray
        PV per plant sold to the grid; charging per site bought from the grid [kW].
    cost_cny : float
        What EV users pay for the step's charging (PV and grid energy) [CNY].
    ev_user_revenue_cny : float
        What EV users are paid for the step's V2G energy [CNY].
    pv_revenue_cny : float
        What the PV plants earn (sales to EVs and feed-in) [CNY].
    grid_cost_cny : float
        The part of ``cost_cny`` paid for grid energy [CNY].
    """

    flow_kw: np.ndarray
    pv_export_kw: np.ndarray
    grid_to_site_kw: np.ndarray
    v2g_site_kw: np.ndarray
    cost_cny: float
    ev_user_revenue_cny: float
    pv_revenue_cny: float
    grid_cost_cny: float
    transactions: list[Transaction]

    @property
    def pv_to_ev_kw(self) -> float:
        return float(self.flow_kw.sum())

    @property
    def grid_to_ev_kw(self) -> float:
        return float(self.grid_to_site_kw.sum())

    @property
    def v2g_kw(self) -> float:
        return float(self.v2g_site_kw.sum())


def _north_west(supply: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """Transport table filled in order; ships ``min(sum(supply), sum(demand))`` in total."""
    flow = np.zeros((supply.size, demand.size))
    s, d = supply.astype(float).copy(), demand.astype(float).copy()
    i = j = 0
    while i < s.size and j < d.size:
        q = min(s[i], d[j])
        if q > 0:
            flow[i, j] = q
            s[i] -= q
            d[j] -= q
        if s[i] <= 0:
            i += 1
        if j < d.size and d[j] <= 0:
            j += 1
    return flow


def match_step(pv_kw: np.ndarray, plant_bus: np.ndarray, charge_kw: np.ndarray,
               discharge_kw: np.ndarray, site_bus: np.ndarray, dt_h: float, prices: Prices,
               plant_names: tuple[str, ...], site_names: tuple[str, ...]) -> Settlement:
    """Settle one step.

    Parameters
    ----------
    pv_kw : numpy.ndarray
        Mean PV generation of each plant over the step (>= 0) [kW].
    plant_bus, site_bus : numpy.ndarray of int
        Grid bus of each plant and site.
    charge_kw, discharge_kw : numpy.ndarray
        Mean charging and discharging power of each site's EVs over the step (>= 0) [kW].
    dt_h : float
        Step length [h].
    prices : Prices
        Prices of the step [CNY/kWh].
    plant_names, site_names : tuple of str
        Participants are named ``pv:<plant>`` and ``site:<site>``.
    """
    pv = np.maximum(np.asarray(pv_kw, dtype=float), 0.0)
    ch = np.maximum(np.asarray(charge_kw, dtype=float), 0.0)
    dis = np.maximum(np.asarray(discharge_kw, dtype=float), 0.0)
    flow = np.zeros((pv.size, ch.size))
    for bus in np.intersect1d(plant_bus, site_bus):
        pi = np.flatnonzero(plant_bus == bus)
        si = np.flatnonzero(site_bus == bus)
        flow[np.ix_(pi, si)] = _north_west(pv[pi], ch[si])
    same_bus = flow.copy()
    flow += _north_west(pv - flow.sum(axis=1), ch - flow.sum(axis=0))
    export = np.maximum(pv - flow.sum(axis=1), 0.0)
    from_grid = np.maximum(ch - flow.sum(axis=0), 0.0)

    pv_kwh = flow.sum() * dt_h
    grid_kwh = from_grid.sum() * dt_h
    cost = pv_kwh * prices.pv_local + grid_kwh * prices.grid
    revenue = dis.sum() * dt_h * prices.v2g
    pv_revenue = pv_kwh * prices.pv_local + export.sum() * dt_h * prices.feed_in

    tx: list[Transaction] = []
    # same-bus trades first, then the pool, each in table order; one trade per plant-site pair
    pool = flow - same_bus
    for part in (same_bus, pool):
        for i, j in zip(*np.nonzero(part > 0), strict=True):
            kwh = part[i, j] * dt_h
            if kwh >= MIN_TRADE_KWH:
                tx.append((f"pv:{plant_names[i]}", f"site:{site_names[j]}", kwh,
                           prices.pv_local, "pv_to_ev"))
    for j in np.flatnonzero(from_grid * dt_h >= MIN_TRADE_KWH):
        tx.append((GRID, f"site:{site_names[j]}", from_grid[j] * dt_h, prices.grid,
                   "grid_to_ev"))
    for j in np.flatnonzero(dis * dt_h >= MIN_TRADE_KWH):
        tx.append((f"site:{site_names[j]}", GRID, dis[j] * dt_h, prices.v2g, "v2g"))
    for i in np.flatnonzero(export * dt_h >= MIN_TRADE_KWH):
        tx.append((f"pv:{plant_names[i]}", GRID, export[i] * dt_h, prices.feed_in, "pv_export"))
    return Settlement(flow_kw=flow, pv_export_kw=export, grid_to_site_kw=from_grid,
                      v2g_site_kw=dis, cost_cny=float(cost), ev_user_revenue_cny=float(revenue),
                      pv_revenue_cny=float(pv_revenue), grid_cost_cny=float(grid_kwh * prices.grid),
                      transactions=tx)
