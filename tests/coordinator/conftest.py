"""Synthetic zones and snapshots for strategy tests, and a battery integrator to close the loop."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from components.coordinator.config import CoordinatorConfig
from components.coordinator.core import Lookahead, PluggedEVs, Prices, Snapshot, ZoneLayout
from components.coordinator.tariffs import FLAT, PEAK, VALLEY

STEP_S = 900.0
DT_H = STEP_S / 3600.0


def make_zone(n_ev: int = 40, capacity_kwh: float | None = 50.0, grid: dict | None = None
              ) -> ZoneLayout:
    """Two sites (buses 1 and 2), plants on buses 1 and 3, a factory on bus 2."""
    sites = [{"name": "home", "bus": 1, "n_chargers": 40, "charge_kw": 40 * 7.0,
              "discharge_kw": 20 * 7.0},
             {"name": "work", "bus": 2, "n_chargers": 40, "charge_kw": 40 * 7.0,
              "discharge_kw": 20 * 7.0}]
    plants = [{"name": "roof", "bus": 1, "kwp": 120.0, "inverter_kw": 100.0},
              {"name": "field", "bus": 3, "kwp": 240.0, "inverter_kw": 200.0}]
    ev = {"charge_efficiency": 0.92, "discharge_efficiency": 0.92, "min_soc_v2g": 0.4,
          "soc_max": 1.0}
    if capacity_kwh is not None:
        ev["capacity_kwh"] = [capacity_kwh] * n_ev
    return ZoneLayout.from_params(n_ev, sites, plants, [{"name": "works", "bus": 2}], ev,
                                  {"latitude_deg": 29.56, "longitude_deg": 106.55}, grid)


@pytest.fixture
def zone() -> ZoneLayout:
    return make_zone()


def fleet(n: int, rng: np.random.Generator, v2g_share: float = 0.0, soc=(0.3, 0.7),
          need_kwh=(0.0, 20.0), dep_steps=(8, 60), p_max_kw: float = 7.0,
          capacity_kwh: float = 50.0) -> dict[str, np.ndarray]:
    """State of ``n`` plugged EVs: energy, need, departure step, limits (integrator input)."""
    e = rng.uniform(*soc, n) * capacity_kwh
    return {
        "ids": np.arange(n), "site": rng.integers(0, 2, n),
        "e_kwh": e, "cap_kwh": np.full(n, capacity_kwh),
        "req_kwh": np.minimum(e + rng.uniform(*need_kwh, n), capacity_kwh),
        "dep_step": rng.integers(*dep_steps, n).astype(float),
        "p_kw": np.full(n, p_max_kw), "v2g": rng.random(n) < v2g_share,
        "p_dis_kw": np.full(n, p_max_kw),
    }


def view(state: dict, k: int, min_soc_v2g: float = 0.4, eta_d: float = 0.92) -> PluggedEVs:
    """The PluggedEVs a fleet in ``state`` reports at step ``k`` (EVs not yet gone)."""
    here = state["dep_step"] > k
    e, cap = state["e_kwh"][here], state["cap_kwh"][here]
    room = np.maximum(cap - e, 0.0)
    p_max = np.minimum(state["p_kw"][here], room / (0.92 * DT_H))
    v2g = state["v2g"][here]
    above = np.maximum(e - min_soc_v2g * cap, 0.0) * eta_d / DT_H
    p_min = -np.where(v2g, np.minimum(state["p_dis_kw"][here], above), 0.0)
    need = np.maximum(state["req_kwh"][here] - e, 0.0)
    restore = state.get("restore_kwh", np.zeros(state["ids"].size))[here]
    return PluggedEVs(
        ids=state["ids"][here], site=state["site"][here], soc=e / cap, need_kwh=need,
        t_dep_s=(state["dep_step"][here] - k) * STEP_S, p_max_kw=p_max, p_min_kw=p_min,
        v2g=v2g, p_rate_kw=state["p_kw"][here],
        p_dis_rate_kw=np.where(v2g, state["p_dis_kw"][here], 0.0), restore_kwh=restore,
        room_kwh=np.maximum(room, need))


def apply(state: dict, ev: PluggedEVs, p: np.ndarray, eta: float = 0.92) -> None:
    """Integrate one step of powers ``p`` (clipped to the EVs' bounds) into ``state``."""
    p = np.clip(np.where(np.isnan(p), ev.p_max_kw, p), ev.p_min_kw, ev.p_max_kw)
    de = (eta * np.maximum(p, 0.0) - np.maximum(-p, 0.0) / eta) * DT_H
    state["e_kwh"][ev.ids] += de
    restore = state.setdefault("restore_kwh", np.zeros(state["ids"].size))
    restore[ev.ids] = np.maximum(restore[ev.ids] - de, 0.0)


def snapshot(zone: ZoneLayout, ev: PluggedEVs, k: int = 0, pv_kw=(0.0, 0.0),
             period: int | np.ndarray = FLAT, base_kw: float = np.nan,
             peak_kw: float = -np.inf, horizon: int = 96, grid=None,
             base_forecast: np.ndarray | None = None, pv_forecast: np.ndarray | None = None,
             **extra) -> Snapshot:
    """A snapshot of step ``k``; ``period`` is one code or an array of codes from ``k`` on;
    ``base_forecast`` the import without EVs from step ``k`` on (default: ``base_kw`` held)."""
    periods = np.full(horizon, period, dtype=np.int8) if np.isscalar(period) \
        else np.asarray(period, dtype=np.int8)
    prices = np.array([0.379, 0.762, 1.133, 1.331])[periods]
    pv = np.asarray(pv_kw, dtype=float)
    look = Lookahead(grid_price=prices, pv_price=np.maximum(prices * 0.85, 0.3964),
                     v2g_price=0.3964 * np.array([0.38, 1, 1.6, 1.92])[periods],
                     period=periods,
                     pv_kw=(lambda h: np.full(h, pv.sum())) if pv_forecast is None
                     else (lambda h: np.asarray(pv_forecast)[:h]),
                     base_import_kw=(lambda h: np.full(h, np.nan_to_num(base_kw)))
                     if base_forecast is None else (lambda h: np.asarray(base_forecast)[:h]))
    fields = {
        "k": k, "step_s": STEP_S, "zone": zone, "ev": ev, "pv_avail_kw": pv, "pv_kw": pv,
        "pv_q_kvar": np.zeros(pv.size), "factory_p_kw": np.zeros(zone.n_factories),
        "factory_deferrable_kw": np.zeros(zone.n_factories), "grid": grid,
        "base_import_kw": base_kw, "ctrl_p_kw": None, "ctrl_q_kvar": None,
        "prev_ctrl_p_kw": None, "prev_ctrl_q_kvar": None, "peak_import_kw": peak_kw,
        "prices": Prices(float(prices[0]), float(look.pv_price[0]), 0.3964,
                         float(look.v2g_price[0]), int(periods[0])),
        "lookahead": look}
    fields.update(extra)
    return Snapshot(**fields)


def strategy(name: str, zone: ZoneLayout, **cfg):
    from components.coordinator.strategies import STRATEGIES

    return STRATEGIES[name](CoordinatorConfig(strategy=name, **cfg), zone, STEP_S)


__all__ = ["FLAT", "PEAK", "VALLEY", "replace"]
