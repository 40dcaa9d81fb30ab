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
    """Transport table filled in order; ships ``min(sum(supply), sum(demand))`` in total.

    Filling in order (the north-west corner rule) gives plant ``i`` and site ``j`` the overlap
    of the intervals they occupy on the cumulative supply and demand axes; computed that way
    with no loop.
    """
    s_hi = np.cumsum(np.maximum(supply, 0.0))
    d_hi = np.cumsum(np.maximum(demand, 0.0))
    s_lo = np.concatenate(([0.0], s_hi[:-1]))
    d_lo = np.concatenate(([0.0], d_hi[:-1]))
    return np.maximum(np.minimum(s_hi[:, None], d_hi[None, :])
                      - np.maximum(s_lo[:, None], d_lo[None, :]), 0.0)


def _cumulative(values: list[float]) -> tuple[list[float], list[float]]:
    """Lower and upper ends of each value's interval on the cumulative axis (negatives as 0).

    Scalar twin of the cumulative sums of :func:`_north_west`, operation for operation: NumPy's
    ``maximum(x, y)`` and ``minimum(x, y)`` return ``y`` on ties (0.0 against -0.0), Python's
    ``max`` and ``min`` their first argument, hence the swapped arguments.
    """
    lo, hi = [], []
    acc = 0.0
    for i, v in enumerate(values):
        v = max(0.0, v)
        lo.append(acc)
        acc = v if i == 0 else acc + v
        hi.append(acc)
    return lo, hi


class Matcher:
    """:func:`match_step` for one zone: the same-bus groups and trade names worked out once.

    Parameters
    ----------
    plant_bus, site_bus : numpy.ndarray of int
        Grid bus of each plant and site.
    plant_names, site_names : tuple of str
        Participants are named ``pv:<plant>`` and ``site:<site>``.
    """

    def __init__(self, plant_bus: np.ndarray, site_bus: np.ndarray,
                 plant_names: tuple[str, ...], site_names: tuple[str, ...]) -> None:
        plant_bus = np.asarray(plant_bus, dtype=np.int64)
        site_bus = np.asarray(site_bus, dtype=np.int64)
        self.n_plants, self.n_sites = plant_bus.size, site_bus.size
        self.plants = [f"pv:{name}" for name in plant_names]
        self.sites = [f"site:{name}" for name in site_names]
        # plants and sites sharing a bus, each group in configured order
        self.groups = [(np.flatnonzero(plant_bus == bus).tolist(),
                        np.flatnonzero(site_bus == bus).tolist())
                       for bus in np.intersect1d(plant_bus, site_bus).tolist()]
        cells = [(i, j) for plants, sites in self.groups for i in plants for j in sites]
        # the same-bus cells in table order (row by row), as trades are listed
        order = sorted(range(len(cells)), key=lambda c: cells[c])
        self._cell_order = order
        self._cells = [cells[c] for c in order]
        self._flat = np.array([i * self.n_sites + j for i, j in self._cells], dtype=np.intp)

    def settle(self, pv_kw: np.ndarray, charge_kw: np.ndarray, discharge_kw: np.ndarray,
               dt_h: float, prices: Prices) -> Settlement:
        """Settle one step (see :func:`match_step`)."""
        pv = np.maximum(np.asarray(pv_kw, dtype=float), 0.0)
        ch = np.maximum(np.asarray(charge_kw, dtype=float), 0.0)
        dis = np.maximum(np.asarray(discharge_kw, dtype=float), 0.0)
        if pv.shape != (self.n_plants,) or ch.shape != (self.n_sites,) \
                or dis.shape != (self.n_sites,):
            raise ValueError(f"match: {self.n_plants} plants and {self.n_sites} sites, got "
                             f"pv {pv.shape}, charge {ch.shape}, discharge {dis.shape}")
        flow = np.zeros((self.n_plants, self.n_sites))
        same: list[float] = []
        if self.groups:
            # the same-bus tables are a few cells each: scalar arithmetic, the values of
            # _north_west exactly
            pv_l, ch_l = pv.tolist(), ch.tolist()
            for plants, sites in self.groups:
                s_lo, s_hi = _cumulative([pv_l[i] for i in plants])
                d_lo, d_hi = _cumulative([ch_l[j] for j in sites])
                for a, b in zip(s_lo, s_hi, strict=True):
                    for c, d in zip(d_lo, d_hi, strict=True):
                        # np.maximum(np.minimum(b, d) - np.maximum(a, c), 0.0)
                        same.append(max(0.0, min(d, b) - max(c, a)))
            same = [same[c] for c in self._cell_order]
            flow.reshape(-1)[self._flat] = same
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
        plants, sites = self.plants, self.sites
        # same-bus trades first, then the pool, each in table order; one trade per plant-site
        # pair
        for (i, j), x in zip(self._cells, same, strict=True):
            if x > 0 and x * dt_h >= MIN_TRADE_KWH:
                tx.append((plants[i], sites[j], x * dt_h, prices.pv_local, "pv_to_ev"))
        pool = flow - same_bus
        rows, cols = np.nonzero(pool > 0)
        for i, j, x in zip(rows.tolist(), cols.tolist(), pool[rows, cols].tolist(),
                           strict=True):
            if x * dt_h >= MIN_TRADE_KWH:
                tx.append((plants[i], sites[j], x * dt_h, prices.pv_local, "pv_to_ev"))
        for j, x in enumerate(from_grid.tolist()):
            if x * dt_h >= MIN_TRADE_KWH:
                tx.append((GRID, sites[j], x * dt_h, prices.grid, "grid_to_ev"))
        for j, x in enumerate(dis.tolist()):
            if x * dt_h >= MIN_TRADE_KWH:
                tx.append((sites[j], GRID, x * dt_h, prices.v2g, "v2g"))
        for i, x in enumerate(export.tolist()):
            if x * dt_h >= MIN_TRADE_KWH:
                tx.append((plants[i], GRID, x * dt_h, prices.feed_in, "pv_export"))
        return Settlement(flow_kw=flow, pv_export_kw=export, grid_to_site_kw=from_grid,
                          v2g_site_kw=dis, cost_cny=float(cost),
                          ev_user_revenue_cny=float(revenue), pv_revenue_cny=float(pv_revenue),
                          grid_cost_cny=float(grid_kwh * prices.grid), transactions=tx)


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

    Notes
    -----
    A coordinator settling every step of one zone keeps a :class:`Matcher`, which works out
    the zone's same-bus groups once.
    """
    return Matcher(plant_bus, site_bus, plant_names, site_names).settle(
        pv_kw, charge_kw, discharge_kw, dt_h, prices)
