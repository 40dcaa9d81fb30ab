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
deterministic (the kernel ``settle_into`` of :mod:`ext.dispatch` fills the tables and lists
the trades).
Matched PV is priced at the local PV price of the step
(:meth:`.tariffs.TariffConfig.pv_to_ev_price_cny_per_kwh`).

Energy closes per plant (``matched + exported = generated``) and per site (``from PV + from the
grid = charged``). Trades smaller than ``MIN_TRADE_KWH`` (half the ledger's 1 Wh resolution)
are left out of the transaction list, not out of the totals.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from components.coordinator.core import Prices, dispatch_kernel

MIN_TRADE_KWH = 0.0005
GRID = "grid"
KINDS = ("pv_to_ev", "grid_to_ev", "v2g", "pv_export")
"""The kinds of trade, in the order a step lists them."""

Transaction = tuple[str, str, float, float, str]
"""(seller, buyer, kWh, price [CNY/kWh], kind), kind one of ``pv_to_ev``, ``grid_to_ev``,
``v2g``, ``pv_export``."""


class Settlement(NamedTuple):
    """The trades and totals of one step (immutable: a named tuple, quick to make every step).
    Powers are means over the step [kW].

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
    pv_to_ev_kw, grid_to_ev_kw, v2g_kw, pv_export_total_kw : float
        Totals of ``flow_kw``, ``grid_to_site_kw``, ``v2g_site_kw`` and ``pv_export_kw`` [kW].
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
    pv_to_ev_kw: float
    grid_to_ev_kw: float
    v2g_kw: float
    pv_export_total_kw: float


def _groups(members: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Groups of indices as the start of each and all of them in order (for
    ``north_west_into``)."""
    start = np.cumsum([0, *(len(m) for m in members)], dtype=np.int64)
    return start, np.array([i for m in members for i in m], dtype=np.int64)


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
        n_plants, n_sites = plant_bus.size, site_bus.size
        self.n_plants, self.n_sites = n_plants, n_sites
        self.plants = plants = [f"pv:{name}" for name in plant_names]
        self.sites = sites = [f"site:{name}" for name in site_names]
        # plants and sites sharing a bus, each group in configured order
        self.groups = [(np.flatnonzero(plant_bus == bus).tolist(),
                        np.flatnonzero(site_bus == bus).tolist())
                       for bus in np.intersect1d(plant_bus, site_bus).tolist()]
        # the same-bus transport tables (north_west_into's groups), one per bus
        self._bus_groups = (*_groups([g[0] for g in self.groups]),
                            *_groups([g[1] for g in self.groups]))
        self._kernel = dispatch_kernel()
        # the same-bus cells in table order (row by row), as trades are listed
        cells = sorted((i, j) for bus_plants, bus_sites in self.groups
                       for i in bus_plants for j in bus_sites)
        self._same_cells = np.array([i * n_sites + j for i, j in cells], dtype=np.int64)
        # every possible trade in listing order: same-bus cells, the pool's table row by row,
        # grid to each site, each site's V2G, each plant's export; (seller, buyer, kind index,
        # kind)
        self._trades = [(seller, buyer, kind, KINDS[kind]) for seller, buyer, kind in (
            *((plants[i], sites[j], 0) for i, j in cells),
            *((plants[i], sites[j], 0) for i in range(n_plants) for j in range(n_sites)),
            *((GRID, site, 1) for site in sites),
            *((site, GRID, 2) for site in sites),
            *((plant, GRID, 3) for plant in plants),
        )]
        # settle_into's trade list and totals, read into Python objects before settle returns
        self._scratch = (np.empty(len(self._trades)), np.empty(len(self._trades), dtype=np.int64),
                         np.empty(4))

    def settle(self, pv_kw: np.ndarray, charge_kw: np.ndarray, discharge_kw: np.ndarray,
               dt_h: float, prices: Prices) -> Settlement:
        """Settle one step (see :func:`match_step`)."""
        pv = np.ascontiguousarray(pv_kw, dtype=float)
        ch = np.ascontiguousarray(charge_kw, dtype=float)
        dis = np.ascontiguousarray(discharge_kw, dtype=float)
        if pv.shape != (self.n_plants,) or ch.shape != (self.n_sites,) \
                or dis.shape != (self.n_sites,):
            raise ValueError(f"match: {self.n_plants} plants and {self.n_sites} sites, got "
                             f"pv {pv.shape}, charge {ch.shape}, discharge {dis.shape}")
        return self.settle_arrays(pv, ch, dis, dt_h, prices)

    def settle_arrays(self, pv_kw: np.ndarray, charge_kw: np.ndarray, discharge_kw: np.ndarray,
                      dt_h: float, prices: Prices) -> Settlement:
        """:meth:`settle` of contiguous float64 arrays of the zone's sizes (as the coordinator
        holds them; the kernel raises ``ValueError`` for any other)."""
        pv, ch, dis = pv_kw, charge_kw, discharge_kw
        flow = np.empty((self.n_plants, self.n_sites))
        export = np.empty(self.n_plants)
        site_kw = np.empty((2, self.n_sites))
        kwh, listed, totals = self._scratch
        n_listed = self._kernel.settle_into(pv, ch, dis, *self._bus_groups, self._same_cells,
                                            dt_h, MIN_TRADE_KWH, flow, export, site_kw, kwh,
                                            listed, totals)
        pv_to_ev, grid_to_ev, v2g, export_kw = totals.tolist()
        pv_kwh = pv_to_ev * dt_h
        grid_kwh = grid_to_ev * dt_h
        cost = pv_kwh * prices.pv_local + grid_kwh * prices.grid
        revenue = v2g * dt_h * prices.v2g
        pv_revenue = pv_kwh * prices.pv_local + export_kw * dt_h * prices.feed_in

        # same-bus trades first, then the pool, each in table order; one trade per plant-site
        # pair; then the grid's sales, V2G and exports
        tx: list[Transaction] = self._kernel.listed_trades(
            self._trades, listed, kwh, n_listed,
            (prices.pv_local, prices.grid, prices.v2g, prices.feed_in))
        return Settlement(flow_kw=flow, pv_export_kw=export, grid_to_site_kw=site_kw[0],
                          v2g_site_kw=site_kw[1], cost_cny=cost, ev_user_revenue_cny=revenue,
                          pv_revenue_cny=pv_revenue, grid_cost_cny=grid_kwh * prices.grid,
                          transactions=tx, pv_to_ev_kw=pv_to_ev, grid_to_ev_kw=grid_to_ev,
                          v2g_kw=v2g, pv_export_total_kw=export_kw)


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
