"""Key performance indicators of a run, computed from the recorded series.

Every key carries its unit. Energies integrate step-mean powers (``p_kw * step_s / 3600``).
Grid quantities (voltages, loading, import, losses) count only steps whose power flow converged;
``pf_nonconverged_steps`` says how many did not.

The energy balance: PV + background generation + EV discharge (V2G) + import
= factories + background loads and storage + EV charging + losses + export.
``energy_balance_error`` is the signed residual divided by the total supplied energy.

With a coordinator: ``pv_to_ev_mwh`` (PV matched to EV charging), ``grid_to_ev_mwh``,
``v2g_mwh`` (EV discharge sold to the grid), ``pv_feed_in_mwh`` (PV sold to the grid),
``pv_curtailed_mwh``, ``cost_cny`` (what EV users pay for charging), ``ev_grid_cost_cny`` (its grid
part), ``ev_user_revenue_cny`` (V2G remuneration), ``pv_revenue_cny`` (the plants' income) and
``ledger_blocks`` / ``ledger_transactions`` (sealed into the run's ledger).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from twin.scenario import Scenario


def _cols(df: pd.DataFrame | None, attr: str) -> np.ndarray:
    """All columns of a vector attribute (``attr[...]``) as a (T, n) array; (T, 0) if none."""
    if df is None:
        return np.zeros((0, 0))
    cols = [c for c in df.columns if c.startswith(attr + "[")]
    return df[cols].to_numpy(dtype=float)


def _col(df: pd.DataFrame | None, attr: str, n: int) -> np.ndarray:
    if df is None or attr not in df:
        return np.zeros(n)
    return df[attr].to_numpy(dtype=float)


def compute(scenario: Scenario, frames: dict[str, pd.DataFrame]) -> dict[str, float | int]:
    grid = frames["grid"]
    n = len(grid)
    h = scenario.step_s / 3600.0
    mwh = h / 1000.0  # kW summed over steps -> MWh
    ok = _col(grid, "converged", n) > 0.5

    pv = frames.get("pv")
    pv_kw = -_cols(pv, "p_kw").sum(axis=1) if pv is not None else np.zeros(n)
    pv_avail_kw = _cols(pv, "p_avail_kw").sum(axis=1) if pv is not None else np.zeros(n)
    factory_kw = _cols(frames.get("factory"), "p_kw").sum(axis=1) if "factory" in frames \
        else np.zeros(n)
    ev = frames.get("ev")
    ev_charge_kw = _col(ev, "charge_kw", n)
    ev_discharge_kw = _col(ev, "discharge_kw", n)

    import_kw = _col(grid, "import_kw", n)
    losses_kw = _col(grid, "losses_kw", n)
    bg_load_kw = _col(grid, "background_load_kw", n)
    bg_gen_kw = _col(grid, "background_gen_kw", n)
    bg_storage_kw = _col(grid, "background_storage_kw", n)

    imp = np.where(ok, np.maximum(import_kw, 0.0), 0.0)
    exp = np.where(ok, np.maximum(-import_kw, 0.0), 0.0)
    load_kw = factory_kw + bg_load_kw + bg_storage_kw + ev_charge_kw

    supplied = (pv_kw + bg_gen_kw + ev_discharge_kw + imp)[ok].sum()
    used = (load_kw + losses_kw + exp)[ok].sum()
    balance = (supplied - used) / supplied if supplied > 0 else 0.0

    vm = _cols(grid, "vm_pu")[ok]
    lo, hi = scenario.grid.v_band_pu
    energized = np.isfinite(vm)
    outside = energized & ((vm < lo) | (vm > hi))
    line = _cols(grid, "line_loading_pct")[ok]
    trafo = _cols(grid, "trafo_loading_pct")[ok]

    pv_mwh = pv_kw.sum() * mwh
    local_gen_mwh = (pv_kw + bg_gen_kw).sum() * mwh
    load_mwh = load_kw.sum() * mwh
    import_mwh = imp.sum() * mwh
    export_mwh = exp.sum() * mwh

    kpis: dict[str, float | int] = {
        "pv_energy_mwh": pv_mwh,
        "pv_available_mwh": pv_avail_kw.sum() * mwh,
        "background_gen_mwh": bg_gen_kw.sum() * mwh,
        "load_energy_mwh": load_mwh,
        "factory_energy_mwh": factory_kw.sum() * mwh,
        "background_load_mwh": (bg_load_kw + bg_storage_kw).sum() * mwh,
        "grid_import_mwh": import_mwh,
        "grid_export_mwh": export_mwh,
        "losses_mwh": losses_kw[ok].sum() * mwh,
        # Share of local generation (zone PV and the grid's own generators) used in the zone,
        # and share of the zone's load covered without imports.
        "self_consumption": 1.0 - export_mwh / local_gen_mwh if local_gen_mwh > 0 else 0.0,
        "self_sufficiency": 1.0 - import_mwh / load_mwh if load_mwh > 0 else 0.0,
        "peak_import_mw": float(imp.max()) / 1000.0 if n else 0.0,
        "v_min_pu": float(np.nanmin(vm)) if energized.any() else float("nan"),
        "v_max_pu": float(np.nanmax(vm)) if energized.any() else float("nan"),
        "voltage_violation_bus_hours": float(outside.sum()) * h,
        "max_line_loading_pct": float(np.nanmax(line)) if line.size else 0.0,
        "max_trafo_loading_pct": float(np.nanmax(trafo)) if trafo.size else 0.0,
        "pf_nonconverged_steps": int((~ok).sum()),
        "co2_t": import_mwh * scenario.kpi.co2_t_per_mwh,
        "energy_balance_error": balance,
    }
    if ev is not None:
        # The fleet keeps running totals; the last step holds the run's figures.
        last = ev.iloc[-1]
        kpis["ev_charge_energy_mwh"] = ev_charge_kw.sum() * mwh
        kpis["ev_discharge_energy_mwh"] = ev_discharge_kw.sum() * mwh
        kpis["ev_unmet_energy_mwh"] = float(last["ev_unmet_energy_mwh"])
        kpis["ev_trips_short"] = int(last["ev_trips_short"])
        kpis["ev_plug_refusals"] = int(last["ev_plug_refusals"])
        kpis["ev_capacity_fade_pct_mean"] = float(last["ev_capacity_fade_pct_mean"])
        kpis["ev_driven_energy_mwh"] = float(last["ev_driven_energy_mwh"])
        kpis["ev_trips"] = int(last["ev_trips"])
    coord = frames.get("coordinator")
    if coord is not None:
        kpis["pv_to_ev_mwh"] = _col(coord, "pv_to_ev_kw", n).sum() * mwh
        kpis["grid_to_ev_mwh"] = _col(coord, "grid_to_ev_kw", n).sum() * mwh
        kpis["v2g_mwh"] = _col(coord, "v2g_kw", n).sum() * mwh
        kpis["pv_feed_in_mwh"] = _col(coord, "pv_export_kw", n).sum() * mwh
        kpis["pv_curtailed_mwh"] = _cols(pv, "p_curtailed_kw").sum() * mwh if pv is not None \
            else 0.0
        kpis["cost_cny"] = _col(coord, "cost_cny", n).sum()
        kpis["ev_grid_cost_cny"] = _col(coord, "grid_cost_cny", n).sum()
        kpis["ev_user_revenue_cny"] = _col(coord, "ev_user_revenue_cny", n).sum()
        kpis["pv_revenue_cny"] = _col(coord, "pv_revenue_cny", n).sum()
    ledger = frames.get("ledger")
    if ledger is not None and len(ledger):
        kpis["ledger_blocks"] = int(ledger["n_blocks"].iloc[-1])
        kpis["ledger_transactions"] = int(ledger["n_transactions"].iloc[-1])
    return {k: (round(float(v), 12) if isinstance(v, float) else v) for k, v in kpis.items()}


UNITS = {"_mwh": "MWh", "_mw": "MW", "_pu": "p.u.", "_pct": "%", "_t": "t", "_hours": "bus·h",
         "_steps": "steps", "_cny": "CNY"}


def table(kpis: dict[str, float | int], columns: dict[str, dict] | None = None) -> str:
    """A plain-text table of KPIs; with ``columns`` ({run name: kpis}) side by side."""
    runs = columns or {"value": kpis}
    keys = list(dict.fromkeys(k for r in runs.values() for k in r))
    width = max(len(k) for k in keys)
    header = f"{'kpi':<{width}}  " + "  ".join(f"{name:>14}" for name in runs) + "  unit"
    lines = [header, "-" * len(header)]
    for key in keys:
        unit = next((u for s, u in UNITS.items() if key.endswith(s)), "")
        cells = "  ".join(f"{_fmt(r.get(key)):>14}" for r in runs.values())
        lines.append(f"{key:<{width}}  {cells}  {unit}")
    return "\n".join(lines)


def _fmt(v: float | int | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "nan"
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.3e}"
    return f"{v:,.4f}" if abs(v) < 1000 else f"{v:,.1f}"
