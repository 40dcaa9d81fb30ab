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

Outages and islanding: ``islanded_hours``, ``island_lost_steps`` (islanded steps the
grid-forming unit could not hold), ``critical_load_served_fraction`` (the factories'
``critical_kw`` served at energised buses over what they asked, during islanded steps; the grid's
background loads are not critical; 1 when no critical load was asked while islanded),
``shed_energy_mwh`` (background load the grid shed on request plus the factories' shed load) and
``energy_not_supplied_mwh`` (load at de-energised buses, plus load shed during islanded steps).

With a non-ideal ``comm`` channel: ``messages_sent``, ``messages_lost`` and ``messages_late``
(set-point messages to EV chargers and PV plants; late = arrived after the step they were for).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from components.hil import results as hil_results
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


def _bus_label(labels: list[str], pos: int | None) -> int:
    """pandapower index of the bus in column ``pos`` (-1 when there is none)."""
    try:
        return int(float(labels[pos])) if pos is not None else -1
    except (ValueError, IndexError):
        return -1


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
    # devices in the loop (components/hil): their PV, batteries and metered charging sites
    hil = hil_results.power_terms(frames, n)
    pv_kw = pv_kw + hil["pv_gen_kw"]
    pv_avail_kw = pv_avail_kw + hil["pv_avail_kw"]

    import_kw = _col(grid, "import_kw", n)
    losses_kw = _col(grid, "losses_kw", n)
    bg_load_kw = _col(grid, "background_load_kw", n)
    bg_gen_kw = _col(grid, "background_gen_kw", n)
    bg_storage_kw = _col(grid, "background_storage_kw", n)

    imp = np.where(ok, np.maximum(import_kw, 0.0), 0.0)
    exp = np.where(ok, np.maximum(-import_kw, 0.0), 0.0)
    load_kw = factory_kw + bg_load_kw + bg_storage_kw + ev_charge_kw
    load_kw = load_kw + hil["load_kw"]
    # Island mode: the grid-forming battery supplies (or absorbs) like the upstream grid; the
    # devices' powers at de-energised buses were asked but not delivered.
    gfm_kw = _col(grid, "gfm_supply_kw", n)
    unserved = _cols(grid, "injection_unserved_kw")
    unserved_load_kw = np.maximum(unserved, 0.0).sum(axis=1) if unserved.size else np.zeros(n)
    untaken_gen_kw = np.maximum(-unserved, 0.0).sum(axis=1) if unserved.size else np.zeros(n)

    supplied = (pv_kw + bg_gen_kw + ev_discharge_kw + imp + np.maximum(gfm_kw, 0.0)
                - untaken_gen_kw)[ok].sum()
    used = (load_kw + losses_kw + exp + np.maximum(-gfm_kw, 0.0) - unserved_load_kw)[ok].sum()
    balance = (supplied - used) / supplied if supplied > 0 else 0.0

    islanded = _col(grid, "islanded", n) > 0.5
    # load shed on request: the grid's own loads and the factories'
    shed_kw = _col(grid, "background_load_shed_kw", n) + _cols(
        frames.get("factory"), "shed_applied_kw").sum(axis=1) if "factory" in frames \
        else _col(grid, "background_load_shed_kw", n)

    vm = _cols(grid, "vm_pu")[ok]
    lo, hi = scenario.grid.v_band_pu
    live = _cols(grid, "energised")[ok]
    energized = (live > 0.5) if live.shape == vm.shape and live.size else np.isfinite(vm)
    # EN 50160 style: share of energised bus-steps with the step-mean voltage within ±10 %.
    vq_ok = _cols(grid, "v_quality_ok")[ok]
    if vq_ok.shape != vm.shape or not vq_ok.size:
        vq_ok = energized & (np.abs(vm - 1.0) <= 0.1)
    vq_ok = (vq_ok > 0.5) & energized
    bus_steps = energized.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_bus = np.where(bus_steps > 0, vq_ok.sum(axis=0) / np.maximum(bus_steps, 1), np.nan)
    bus_labels = [c[len("vm_pu["):-1] for c in grid.columns if c.startswith("vm_pu[")]
    worst = int(np.nanargmin(per_bus)) if np.isfinite(per_bus).any() else None
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
        "voltage_quality_compliance": float(vq_ok.sum() / energized.sum()) if energized.any()
        else float("nan"),
        "voltage_quality_worst_bus": _bus_label(bus_labels, worst),
        "voltage_quality_worst_bus_compliance": float(per_bus[worst]) if worst is not None
        else float("nan"),
        "islanded_hours": float(_col(grid, "islanded", n).sum()) * h,
        "island_lost_steps": int(((_col(grid, "islanded", n) > 0.5)
                                  & (_col(grid, "island_held", n) < 0.5)).sum()),
        "energy_not_supplied_mwh": float((_col(grid, "background_load_unserved_kw", n)
                                          + unserved_load_kw + np.where(islanded, shed_kw, 0.0)
                                          )[ok].sum()) * mwh,
        "shed_energy_mwh": float(shed_kw[ok].sum()) * mwh,
        "critical_load_served_fraction": _critical_served(scenario, frames, grid,
                                                          islanded & ok),
        "customers_interrupted": int(_col(grid, "customers_interrupted", n)[ok].sum()),
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
        kpis["pv_curtailed_mwh"] += hil["pv_curtailed_kw"].sum() * mwh
        kpis["cost_cny"] = _col(coord, "cost_cny", n).sum()
        kpis["ev_grid_cost_cny"] = _col(coord, "grid_cost_cny", n).sum()
        kpis["ev_user_revenue_cny"] = _col(coord, "ev_user_revenue_cny", n).sum()
        kpis["pv_revenue_cny"] = _col(coord, "pv_revenue_cny", n).sum()
    comm = frames.get("comm")
    if comm is not None:
        # set-point messages over a non-ideal channel (an ideal one is not simulated)
        for key in ("messages_sent", "messages_lost", "messages_late"):
            kpis[key] = int(_col(comm, key, n).sum())
    ledger = frames.get("ledger")
    if ledger is not None and len(ledger):
        kpis["ledger_blocks"] = int(ledger["n_blocks"].iloc[-1])
        kpis["ledger_transactions"] = int(ledger["n_transactions"].iloc[-1])
    kpis.update(hil_results.kpis(frames, n, mwh))
    return {k: (round(float(v), 12) if isinstance(v, float) else v) for k, v in kpis.items()}


def _critical_served(scenario: Scenario, frames: dict[str, pd.DataFrame], grid: pd.DataFrame,
                     steps: np.ndarray) -> float:
    """Critical factory energy served at energised buses / asked, over ``steps`` (1 when none
    was asked: nothing was lost)."""
    factory = frames.get("factory")
    critical = _cols(factory, "critical_kw")
    if factory is None or not steps.any() or critical.shape[1] != len(scenario.factories):
        return 1.0
    asked = critical[steps]
    if asked.sum() <= 0:
        return 1.0
    refs = [f.bus for f in scenario.factories]
    if any(isinstance(b, str) for b in refs):  # bus names: the network resolves them
        from components.grid.model import resolve_bus
        from twin.scenario import grid_network

        net = grid_network(scenario.grid)
        refs = [resolve_bus(net, b) for b in refs]
    live = np.column_stack([_col(grid, f"energised[{int(b)}]", len(grid)) for b in refs])
    served = asked * (live[steps] > 0.5)
    return float(served.sum() / asked.sum())


UNITS = {"islanded_hours": "h", "_mwh": "MWh", "_mw": "MW", "_pu": "p.u.", "_pct": "%", "_t": "t",
         "_hours": "bus·h",
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
