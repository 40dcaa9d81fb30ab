"""HTML reports of runs, comparisons and sweeps: one self-contained file each, opening offline.

A report is built from a run folder's files only (``scenario.yaml``, ``kpis.json``, ``run.json``,
``timeseries/*.parquet``; the network is rebuilt from the scenario's ``grid`` section), never
from a live world, so ``twin report RUN_DIR`` can rebuild it at any time. plotly.js is embedded
once per file; nothing is fetched when the page opens.

- ``report.html`` of a run: energy flows over time, EV state of charge (when the fleet records
  ``soc_quantiles``) and unmet energy, the voltage envelope per bus and over time, a network map
  coloured by minimum voltage and maximum loading (pandapower's plotly traces), the KPI table.
- A comparison of several runs (the first is the baseline): KPIs side by side with changes,
  the main series of each run overlaid.
- ``sweep.html`` of a sweep folder: each KPI against each varied parameter, and the run table.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twin.kpis import UNITS
from twin.scenario import Scenario, ScenarioError, grid_network, read_yaml, validate

REPORT_FILE = "report.html"
SWEEP_REPORT_FILE = "sweep.html"
# Beyond this many steps, time series are shown as hourly means to keep the file light.
MAX_PLOT_STEPS = 10_000
# The EV output with the state-of-charge distribution of the fleet, one column per quantile.
SOC_ATTR = "soc_quantiles"
# KPIs shown as relative changes in a comparison (when both runs have them).
COMPARED_KPIS = ["grid_import_mwh", "grid_export_mwh", "peak_import_mw", "self_sufficiency",
                 "self_consumption", "losses_mwh", "co2_t", "voltage_violation_bus_hours",
                 "max_line_loading_pct", "ev_unmet_energy_mwh"]


class ReportError(Exception):
    """The given folder is not a run (or sweep) folder, or lacks a file a report needs."""


@dataclass
class RunData:
    """What a report reads from a run folder."""

    path: Path
    label: str
    scenario: Scenario
    kpis: dict[str, Any]
    info: dict[str, Any]
    frames: dict[str, pd.DataFrame]


def load_run(run_dir: str | Path, label: str | None = None) -> RunData:
    """Read a run folder.

    Raises
    ------
    ReportError
        The folder or one of ``scenario.yaml``, ``kpis.json``, ``timeseries/grid.parquet`` is
        missing or unreadable.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ReportError(f"{path}: no such folder")
    missing = [f for f in ("scenario.yaml", "kpis.json", "timeseries/grid.parquet")
               if not (path / f).is_file()]
    if missing:
        raise ReportError(f"{path}: not a finished run folder (missing {', '.join(missing)})")
    try:
        scenario = validate(read_yaml(path / "scenario.yaml"))
    except ScenarioError as exc:
        raise ReportError(f"{path / 'scenario.yaml'}: {'; '.join(exc.problems)}") from None
    try:
        kpis = json.loads((path / "kpis.json").read_text())
        info = json.loads((path / "run.json").read_text()) if (path / "run.json").is_file() \
            else {}
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: unreadable JSON ({exc})") from None
    frames = {f.stem: pd.read_parquet(f) for f in sorted((path / "timeseries").glob("*.parquet"))}
    return RunData(path, label or path.resolve().name, scenario, kpis, info, frames)


# -- series ----------------------------------------------------------------------------------

def vector(df: pd.DataFrame | None, attr: str) -> pd.DataFrame:
    """The columns ``attr[label]`` of a frame, renamed to their labels."""
    if df is None:
        return pd.DataFrame()
    cols = [c for c in df.columns if c.startswith(attr + "[") and c.endswith("]")]
    return df[cols].rename(columns=lambda c: c[len(attr) + 1:-1])


def flows_kw(run: RunData) -> pd.DataFrame:
    """Zone power flows per step [kW], all positive: generation and loads by kind, import,
    export and losses. Grid quantities are NaN where the power flow did not converge."""
    grid = run.frames["grid"]
    ok = grid["converged"] > 0.5 if "converged" in grid else pd.Series(True, grid.index)
    out = pd.DataFrame(index=grid.index)
    if "pv" in run.frames:
        out["PV generation"] = -vector(run.frames["pv"], "p_kw").sum(axis=1)
        curtailed = vector(run.frames["pv"], "p_curtailed_kw").sum(axis=1)
        if (curtailed.abs() > 1e-9).any():
            out["PV curtailed"] = curtailed
    if "factory" in run.frames:
        out["factories"] = vector(run.frames["factory"], "p_kw").sum(axis=1)
    ev = run.frames.get("ev")
    if ev is not None:
        out["EV charging"] = ev["charge_kw"]
        out["EV discharging (V2G)"] = ev["discharge_kw"]
    background = sum(grid[c] for c in ("background_load_kw", "background_storage_kw")
                     if c in grid)
    if isinstance(background, pd.Series):
        out["background load"] = background
    if "background_gen_kw" in grid and (grid["background_gen_kw"].abs() > 0).any():
        out["background generation"] = grid["background_gen_kw"]
    out["grid import"] = grid["import_kw"].clip(lower=0).where(ok)
    out["grid export"] = (-grid["import_kw"]).clip(lower=0).where(ok)
    if "losses_kw" in grid:
        out["losses"] = grid["losses_kw"].where(ok)
    return out


FLOW_COLORS = {"PV generation": "#f2b701", "PV curtailed": "#d9a0a0", "factories": "#e73f74", "EV charging": "#3969ac",
               "EV discharging (V2G)": "#7f3c8d", "background load": "#80ba5a",
               "background generation": "#11a579", "grid import": "#222222",
               "grid export": "#a5aa99", "losses": "#cf1c90"}


def for_plot(df: pd.DataFrame, how: str = "mean") -> tuple[pd.DataFrame, str]:
    """Local wall-clock index (plotly ignores offsets) and hourly means for long runs."""
    out = df.copy()
    if isinstance(out.index, pd.DatetimeIndex) and out.index.tz is not None:
        out.index = out.index.tz_localize(None)
    if len(out) > MAX_PLOT_STEPS:
        out = out.resample("1h").agg(how)
        return out, "hourly means"
    return out, ""


# -- figures of one run ----------------------------------------------------------------------

def fig_energy_flows(run: RunData):
    import plotly.graph_objects as go

    flows, note = for_plot(flows_kw(run) / 1000.0)
    fig = go.Figure()
    for name in flows.columns:
        dash = "dot" if name in ("grid export", "losses", "PV curtailed") else None
        fig.add_trace(go.Scatter(x=flows.index, y=flows[name], name=name, mode="lines",
                                 line={"color": FLOW_COLORS.get(name), "dash": dash,
                                       "width": 2.5 if name == "grid import" else 1.5}))
    _layout(fig, "Energy flows" + (f" ({note})" if note else ""), "power [MW]",
            run.scenario.timezone)
    return fig


def fig_coordinator(run: RunData):
    """The coordinator's power flows [MW]: every ``*_kw`` output, vectors summed."""
    import plotly.graph_objects as go

    frame = run.frames.get("coordinator")
    if frame is None:
        return None
    flows = pd.DataFrame(index=frame.index)
    for col in frame.columns:
        if col.endswith("_kw"):
            flows[col[:-3].replace("_", " ")] = frame[col]
    for attr in dict.fromkeys(c.split("[")[0] for c in frame.columns if "[" in c):
        if attr.endswith("_kw"):
            flows[attr[:-3].replace("_", " ") + " (sum)"] = vector(frame, attr).sum(axis=1)
    if flows.empty:
        return None
    flows, note = for_plot(flows / 1000.0)
    fig = go.Figure()
    for name in flows.columns:
        fig.add_trace(go.Scatter(x=flows.index, y=flows[name], name=name, mode="lines",
                                 line={"dash": "dash" if "threshold" in name else None}))
    _layout(fig, "Coordinator: matched and dispatched power" + (f" ({note})" if note else ""),
            "power [MW]", run.scenario.timezone)
    return fig


def fig_ev(run: RunData) -> list:
    """EV figures: the SoC distribution when recorded, unmet energy and plugged EVs."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ev = run.frames.get("ev")
    if ev is None:
        return []
    figs = []
    soc = vector(ev, SOC_ATTR)
    if soc.shape[1]:
        figs.append(fig_soc(run, soc))
    frame, note = for_plot(ev[["unmet_kwh", "n_plugged"]], "mean")
    cumulative = ev["unmet_kwh"].cumsum()
    cumulative, _ = for_plot(cumulative.to_frame("c"), "last")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=frame.index, y=frame["unmet_kwh"], name="unmet energy per step",
                         marker_color="#e73f74"), secondary_y=False)
    fig.add_trace(go.Scatter(x=cumulative.index, y=cumulative["c"], name="unmet energy, total",
                             mode="lines", line={"color": "#7f3c8d"}), secondary_y=False)
    fig.add_trace(go.Scatter(x=frame.index, y=frame["n_plugged"], name="EVs plugged in",
                             mode="lines", line={"color": "#3969ac", "width": 1}),
                  secondary_y=True)
    _layout(fig, "EV energy users lacked at departure, and EVs plugged in"
            + (f" ({note})" if note else ""), "energy [kWh]", run.scenario.timezone)
    fig.update_yaxes(title_text="EVs plugged in [-]", secondary_y=True, rangemode="tozero")
    figs.append(fig)
    return figs


def fig_soc(run: RunData, soc: pd.DataFrame):
    """The fleet's SoC distribution over time: quantile bands and the median [%]."""
    import plotly.graph_objects as go

    soc, note = for_plot(soc * 100.0)
    cols = list(soc.columns)
    fig = go.Figure()
    # Outer pairs of quantiles become nested bands; a middle column is the median.
    for k in range(len(cols) // 2):
        lo, hi = cols[k], cols[-1 - k]
        alpha = 0.15 + 0.2 * k
        fig.add_trace(go.Scatter(x=soc.index, y=soc[lo], mode="lines", line={"width": 0},
                                 showlegend=False, name=lo, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=soc.index, y=soc[hi], mode="lines", line={"width": 0},
                                 fill="tonexty", fillcolor=f"rgba(57,105,172,{alpha:.2f})",
                                 name=f"{lo} to {hi}"))
    if len(cols) % 2:
        mid = cols[len(cols) // 2]
        fig.add_trace(go.Scatter(x=soc.index, y=soc[mid], mode="lines", name=mid,
                                 line={"color": "#3969ac", "width": 2}))
    _layout(fig, "EV state of charge across the fleet" + (f" ({note})" if note else ""),
            "state of charge [%]", run.scenario.timezone)
    fig.update_yaxes(range=[0, 100])
    return fig


def voltage_stats(run: RunData) -> pd.DataFrame:
    """Per bus: minimum, mean and maximum voltage over converged steps [pu]."""
    grid = run.frames["grid"]
    vm = vector(grid, "vm_pu")
    if "converged" in grid:
        vm = vm[grid["converged"] > 0.5]
    stats = pd.DataFrame({"min": vm.min(), "mean": vm.mean(), "max": vm.max()})
    stats.index = [int(i) if str(i).lstrip("-").isdigit() else i for i in stats.index]
    return stats


def fig_voltage_per_bus(run: RunData, net: Any = None):
    import plotly.graph_objects as go

    stats = voltage_stats(run).dropna()
    names = _names(net, "bus", stats.index)
    x = [str(i) for i in stats.index]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=x, y=stats["mean"], mode="markers", name="mean, with min–max range",
        marker={"color": "#3969ac", "size": 5},
        error_y={"type": "data", "symmetric": False, "array": stats["max"] - stats["mean"],
                 "arrayminus": stats["mean"] - stats["min"], "color": "#3969ac",
                 "thickness": 1.2, "width": 2},
        text=[f"{n}<br>min {a:.4f} pu<br>mean {m:.4f} pu<br>max {b:.4f} pu"
              for n, a, m, b in zip(names, stats["min"], stats["mean"], stats["max"])],
        hoverinfo="text"))
    _band_lines(fig, run)
    fig.update_layout(title="Voltage envelope per bus (over the run)", template="plotly_white",
                      xaxis={"title": "bus (pandapower index)", "type": "category"},
                      yaxis={"title": "voltage [pu]"}, height=420,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50}, showlegend=True)
    return fig


def fig_voltage_time(run: RunData):
    import plotly.graph_objects as go

    grid = run.frames["grid"]
    vm = vector(grid, "vm_pu")
    if "converged" in grid:
        vm = vm.where(grid["converged"] > 0.5, axis=0)
    env = pd.DataFrame({"min": vm.min(axis=1), "max": vm.max(axis=1)})
    env, note = for_plot(env)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=env.index, y=env["max"], mode="lines", name="highest bus",
                             line={"color": "#e73f74"}))
    fig.add_trace(go.Scatter(x=env.index, y=env["min"], mode="lines", name="lowest bus",
                             line={"color": "#3969ac"}, fill="tonexty",
                             fillcolor="rgba(57,105,172,0.12)"))
    _band_lines(fig, run)
    _layout(fig, "Voltage envelope over time" + (f" ({note})" if note else ""),
            "voltage [pu]", run.scenario.timezone)
    return fig


def fig_network_map(run: RunData, net: Any):
    """The network drawn with pandapower's plotly traces: buses coloured by their minimum
    voltage, lines and transformers by their maximum loading over the run.

    ``net`` is modified (coordinates added, unreported lines dropped): pass a fresh one.
    """
    from pandapower.plotting.plotly.traces import (
        create_bus_trace,
        create_line_trace,
        create_trafo_trace,
        draw_traces,
    )

    _ensure_coordinates(net)
    grid = run.frames["grid"]
    ok = grid["converged"] > 0.5 if "converged" in grid else pd.Series(True, grid.index)
    lo, hi = run.scenario.grid.v_band_pu
    stats = voltage_stats(run)
    buses = [b for b in net.bus.index if b in stats.index and np.isfinite(stats.at[b, "min"])
             and isinstance(net.bus.at[b, "geo"], str)]
    vmin = stats.loc[buses, "min"].to_numpy()
    bus_info = pd.Series([f"{net.bus.at[b, 'name']} (bus {b})<br>min {stats.at[b, 'min']:.4f} pu"
                          f"<br>max {stats.at[b, 'max']:.4f} pu" for b in buses], index=buses)
    traces = []

    line_max = _max_by_index(vector(grid, "line_loading_pct")[ok], net.line.index)
    idle = net.line.index[~np.isfinite(line_max)]
    if len(idle):
        # Lines the grid did not report (out of service): dotted grey, then left out of the
        # net so that the colour values align with the remaining lines by index.
        traces += create_line_trace(net, lines=idle, use_line_geo=False, width=1.5,
                                    color="#aaaaaa", dash="dot", trace_name="lines out of service",
                                    infofunc=pd.Series([f"{net.line.at[i, 'name']} (line {i})"
                                                        "<br>out of service" for i in idle],
                                                       index=idle))
        net.line = net.line.loc[np.isfinite(line_max)]
        line_max = line_max[np.isfinite(line_max)]
    if len(net.line):
        info = pd.Series([f"{net.line.at[i, 'name']} (line {i})<br>max loading {v:.1f} %"
                          for i, v in zip(net.line.index, line_max)], index=net.line.index)
        traces += create_line_trace(net, use_line_geo=False, width=2.5, infofunc=info,
                                    cmap="jet", cmap_vals=line_max,
                                    cmin=0.0, cmax=100.0, cbar_title="max loading [%]",
                                    cpos=1.12)
    trafo_max = _max_by_index(vector(grid, "trafo_loading_pct")[ok], net.trafo.index)
    with_geo = net.trafo.hv_bus.map(lambda b: isinstance(net.bus.at[b, "geo"], str)) \
        & net.trafo.lv_bus.map(lambda b: isinstance(net.bus.at[b, "geo"], str))
    if with_geo.any():
        info = pd.Series([f"{net.trafo.at[i, 'name']} (transformer {i})<br>max loading "
                          + (f"{v:.1f} %" if np.isfinite(v) else "n/a")
                          for i, v in zip(net.trafo.index, trafo_max)], index=net.trafo.index)
        traces += create_trafo_trace(net, width=5, infofunc=info, cmap="jet",
                                     cmap_vals=np.nan_to_num(trafo_max[with_geo.to_numpy()],
                                                             nan=0.0),
                                     cmin=0.0, cmax=100.0)
    if len(net.ext_grid):
        slack = [b for b in net.ext_grid.bus if isinstance(net.bus.at[b, "geo"], str)]
        if slack:
            traces += create_bus_trace(net, buses=slack, color="grey", size=16,
                                       patch_type="square", trace_name="external grid")
    traces += create_bus_trace(net, buses=buses, size=9, infofunc=bus_info, cmap="Jet",
                               cmap_vals=vmin, cmin=lo, cmax=hi, cpos=1.0,
                               cbar_title="min voltage [pu]", trace_name="buses")
    fig = draw_traces(traces, showlegend=False, filename=None, auto_open=False)
    fig.update_layout(width=None, height=620, autosize=True, template="plotly_white",
                      title="Network: buses by minimum voltage, lines and transformers by "
                            "maximum loading",
                      margin={"l": 10, "r": 10, "t": 50, "b": 10})
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def _max_by_index(df: pd.DataFrame, index: pd.Index) -> np.ndarray:
    """Column maxima of ``df`` (columns labelled by element index) aligned to ``index``."""
    maxima = df.max() if len(df.columns) else pd.Series(dtype=float)
    maxima.index = [int(i) if str(i).lstrip("-").isdigit() else i for i in maxima.index]
    return maxima.reindex(index).to_numpy(dtype=float)


def _ensure_coordinates(net: Any) -> None:
    """Give every bus coordinates when the network has none: pandapower's generic layout
    (igraph) when installed, otherwise a networkx Kamada-Kawai layout of the topology."""
    if "geo" in net.bus and net.bus["geo"].map(lambda g: isinstance(g, str)).all():
        return
    import geojson
    from pandapower.plotting import generic_geodata

    if generic_geodata.IGRAPH_INSTALLED:
        generic_geodata.create_generic_coordinates(net, respect_switches=True, overwrite=True)
        return
    import networkx as nx
    from pandapower.topology import create_nxgraph

    graph = nx.Graph(create_nxgraph(net, respect_switches=True, include_out_of_service=True))
    graph.add_nodes_from(net.bus.index)
    pos = nx.kamada_kawai_layout(graph)
    net.bus["geo"] = pd.Series({b: geojson.dumps(geojson.Point((float(pos[b][0]),
                                                                 float(pos[b][1]))))
                                for b in net.bus.index})


def _names(net: Any, table: str, index: Any) -> list[str]:
    if net is None:
        return [f"{table} {i}" for i in index]
    return [f"{net[table].at[i, 'name']} ({table} {i})" if i in net[table].index
            else f"{table} {i}" for i in index]


def _band_lines(fig: Any, run: RunData) -> None:
    lo, hi = run.scenario.grid.v_band_pu
    for v, label in ((lo, "lower limit"), (hi, "upper limit")):
        fig.add_hline(y=v, line={"color": "#999999", "dash": "dash", "width": 1},
                      annotation_text=f"{label} {v:g} pu", annotation_position="top left")


def _layout(fig: Any, title: str, y_title: str, tz: str) -> None:
    fig.update_layout(title=title, template="plotly_white", hovermode="x unified",
                      xaxis_title=f"local time ({tz})", yaxis_title=y_title, height=440,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50},
                      legend={"orientation": "h", "y": -0.18})


# -- figures of several runs -----------------------------------------------------------------

def fig_compare_series(runs: list[RunData]):
    """Grid import, lowest bus voltage and EV charging of every run, overlaid."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = [("grid import [MW]", lambda r: flows_kw(r)["grid import"] / 1000.0),
            ("lowest bus voltage [pu]", lambda r: _zone_vmin(r))]
    if any("ev" in r.frames for r in runs):
        rows.append(("EV charging − discharging [MW]",
                     lambda r: (r.frames["ev"]["charge_kw"] - r.frames["ev"]["discharge_kw"])
                     / 1000.0 if "ev" in r.frames else None))
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[t for t, _ in rows])
    palette = ["#222222", "#e73f74", "#3969ac", "#f2b701", "#11a579", "#7f3c8d", "#80ba5a"]
    for k, run in enumerate(runs):
        color = palette[k % len(palette)]
        for row, (_title, get) in enumerate(rows, start=1):
            series = get(run)
            if series is None:
                continue
            frame, _ = for_plot(series.to_frame("v"))
            fig.add_trace(go.Scatter(x=frame.index, y=frame["v"], mode="lines", name=run.label,
                                     legendgroup=run.label, showlegend=row == 1,
                                     line={"color": color, "width": 2 if k == 0 else 1.3,
                                           "dash": "dash" if k == 0 else None}),
                          row=row, col=1)
    for row, (title, _) in enumerate(rows, start=1):
        fig.update_yaxes(title_text=title.split(" [")[-1].rstrip("]"), row=row, col=1)
    fig.update_layout(title="Baseline (dashed) and strategies over time",
                      template="plotly_white", hovermode="x unified", height=300 * len(rows),
                      margin={"l": 60, "r": 20, "t": 70, "b": 70},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.05})
    return fig


def _zone_vmin(run: RunData) -> pd.Series:
    grid = run.frames["grid"]
    vm = vector(grid, "vm_pu")
    if "converged" in grid:
        vm = vm.where(grid["converged"] > 0.5, axis=0)
    return vm.min(axis=1)


def relative_changes(runs: list[RunData]) -> pd.DataFrame:
    """Change of each compared KPI against the baseline (the first run) [%]; rows: KPIs."""
    base = runs[0].kpis
    data = {}
    for run in runs[1:]:
        col = {}
        for key in COMPARED_KPIS:
            b, v = base.get(key), run.kpis.get(key)
            if _finite(b) and _finite(v) and b != 0:
                col[key] = (v - b) / abs(b) * 100.0
        data[run.label] = col
    return pd.DataFrame(data)


def fig_compare_kpis(runs: list[RunData]):
    import plotly.graph_objects as go

    changes = relative_changes(runs)
    if changes.empty:
        return None
    fig = go.Figure()
    for label in changes.columns:
        fig.add_trace(go.Bar(y=changes.index, x=changes[label], name=label, orientation="h"))
    fig.update_layout(title=f"KPI change against the baseline {runs[0].label} [%]",
                      template="plotly_white", barmode="group", xaxis_title="change [%]",
                      height=120 + 32 * len(changes.index) * max(1, len(changes.columns)),
                      margin={"l": 220, "r": 20, "t": 50, "b": 50})
    return fig


# -- sweep figure ----------------------------------------------------------------------------

def fig_sweep(table: pd.DataFrame, parameters: list[str], kpis: list[str]):
    """Each KPI (rows) against each varied parameter (columns), one point per finished run.

    The grid of axes is laid out here rather than with ``make_subplots`` and one update per
    axis: plotly validates every such update, which took most of a sweep report's time (the
    last, serial, step of a sweep).
    """
    import plotly.graph_objects as go

    ok = table[table["status"] == "ok"]
    kpis = [k for k in kpis if k in ok and pd.to_numeric(ok[k], errors="coerce").notna().any()]
    parameters = [p for p in parameters if p in ok and ok[p].notna().any()]
    if ok.empty or not kpis or not parameters:
        return None
    rows, cols = len(kpis), len(parameters)
    h_gap, v_gap = min(0.08, 0.5 / cols), min(0.02, 0.5 / rows)
    width, height = (1 - h_gap * (cols - 1)) / cols, (1 - v_gap * (rows - 1)) / rows
    hover = [f"run {r['run']} ({r['run_id']}), seed {r['seed']}<br>"
             + "<br>".join(f"{p} = {r[p]}" for p in parameters)
             for r in ok[["run", "run_id", "seed", *parameters]].to_dict("records")]
    seeds = sorted(ok["seed"].unique())
    marker = {"size": 7, "opacity": 0.8, "color": [seeds.index(s) for s in ok["seed"]],
              "colorscale": "Viridis", "cmin": 0, "cmax": max(1, len(seeds) - 1)}
    traces: list[dict[str, Any]] = []
    layout: dict[str, Any] = {}
    for i, kpi in enumerate(kpis):
        y = pd.to_numeric(ok[kpi], errors="coerce")
        y0 = (rows - 1 - i) * (height + v_gap)
        for j, param in enumerate(parameters):
            n = i * cols + j + 1
            bottom = (rows - 1) * cols + j + 1  # the column's x axis, shared by its rows
            suffix = "" if n == 1 else str(n)
            x = ok[param]
            traces.append({"type": "scatter", "x": x.to_numpy(), "y": y.to_numpy(),
                           "mode": "markers", "showlegend": False, "text": hover,
                           "hoverinfo": "text+y", "marker": marker,
                           "xaxis": f"x{suffix}", "yaxis": f"y{suffix}"})
            xaxis: dict[str, Any] = {"domain": [j * (width + h_gap), j * (width + h_gap) + width],
                                     "anchor": f"y{suffix}"}
            if n != bottom:
                xaxis.update(matches=f"x{bottom}", showticklabels=False)
            else:
                xaxis["title"] = {"text": param}
            if not pd.api.types.is_numeric_dtype(x):
                xaxis["type"] = "category"
            yaxis: dict[str, Any] = {"domain": [y0, y0 + height], "anchor": f"x{suffix}"}
            if j == 0:
                yaxis["title"] = {"text": _with_unit(kpi), "font": {"size": 10}}
            layout[f"xaxis{suffix}"], layout[f"yaxis{suffix}"] = xaxis, yaxis
    layout.update(template="plotly_white", height=60 + 170 * rows,
                  title={"text": "KPIs against the varied parameters (colour: seed)"},
                  margin={"l": 90, "r": 20, "t": 60, "b": 60})
    return go.Figure(data=traces, layout=layout)


# -- pages -----------------------------------------------------------------------------------

def run_report_html(run: RunData, net: Any = None) -> str:
    """The report of one run as a self-contained HTML page.

    ``net``: the run's pandapower network when at hand (it is copied, not changed); default:
    built from the scenario's ``grid`` section.
    """
    import copy

    net = grid_network(run.scenario.grid) if net is None else copy.deepcopy(net)
    sections: list[tuple[str, list]] = [
        ("Key performance indicators", [kpi_table_html({"value": run.kpis})]),
        ("Energy flows", [fig_energy_flows(run)]),
    ]
    coordinator = fig_coordinator(run)
    if coordinator is not None:
        sections.append(("Coordinator", [coordinator]))
    ev = fig_ev(run)
    if ev:
        note = [] if any(c.startswith(SOC_ATTR + "[") for c in run.frames["ev"].columns) else [
            ("<p class='note'>The state-of-charge distribution is shown when the EV fleet "
             f"records <code>{SOC_ATTR}</code>; this run did not.</p>")]
        sections.append(("Electric vehicles", ev + note))
    sections.append(("Voltages", [fig_voltage_per_bus(run, net), fig_voltage_time(run)]))
    sections.append(("Network", [fig_network_map(run, net)]))
    sections.append(("Run", [run_info_html(run)]))
    return page(f"{run.scenario.name}: run report", _subtitle(run), sections)


def comparison_html(runs: list[RunData]) -> str:
    """Several runs compared with the first (the baseline)."""
    kpi_columns = {r.label: r.kpis for r in runs}
    figs: list = [kpi_table_html(kpi_columns, baseline=runs[0].label)]
    bars = fig_compare_kpis(runs)
    if bars is not None:
        figs.append(bars)
    sections = [("Key performance indicators", figs),
                ("What differs", [scenario_diff_html(runs)]),
                ("Over time", [fig_compare_series(runs)]),
                ("Runs", ["".join(f"<h3>{html.escape(r.label)}</h3>{run_info_html(r)}"
                                  for r in runs)])]
    subtitle = (f"baseline <b>{html.escape(runs[0].label)}</b> against "
                + ", ".join(f"<b>{html.escape(r.label)}</b>" for r in runs[1:]))
    return page("Comparison of runs", subtitle, sections)


def sweep_html(sweep_dir: Path, table: pd.DataFrame) -> str:
    parameters = list(table.attrs.get("parameters", []))
    kpis = list(table.attrs.get("kpis", []))
    fig = fig_sweep(table, parameters, kpis)
    n_ok = int((table["status"] == "ok").sum())
    parts: list = [fig] if fig is not None else [
        "<p class='note'>No finished run to plot yet.</p>"]
    sections = [("KPIs against parameters", parts),
                ("Runs", [sweep_table_html(table, parameters)])]
    name = table.attrs.get("sweep", sweep_dir.name)
    description = table.attrs.get("description") or ""
    subtitle = (f"{html.escape(description) + ' — ' if description else ''}"
                f"{len(table)} runs, {n_ok} finished, {len(table) - n_ok} failed; varied: "
                + ", ".join(f"<code>{html.escape(p)}</code>" for p in parameters))
    return page(f"Sweep {name}", subtitle, sections)


def kpi_table_html(columns: dict[str, dict[str, Any]], baseline: str | None = None) -> str:
    """KPIs as an HTML table, one column per run; with a baseline, changes against it."""
    keys = list(dict.fromkeys(k for kpis in columns.values() for k in kpis))
    head = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    others = [n for n in columns if n != baseline] if baseline else []
    head += "".join(f"<th>Δ {html.escape(n)}</th>" for n in others)
    rows = []
    for key in keys:
        cells = "".join(f"<td>{format_value(kpis.get(key))}</td>" for kpis in columns.values())
        for name in others:
            b, v = columns[baseline].get(key), columns[name].get(key)
            cells += f"<td>{_delta(b, v)}</td>"
        rows.append(f"<tr><th>{html.escape(key)}</th>{cells}<td>{unit_of(key)}</td></tr>")
    return (f"<table class='kpis'><thead><tr><th>KPI</th>{head}<th>unit</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def scenario_differences(runs: list[RunData]) -> dict[str, list[Any]]:
    """Scenario fields (dotted paths) whose values differ between runs: path -> values."""
    flat = [_flatten(r.scenario.model_dump(mode="json")) for r in runs]
    paths = list(dict.fromkeys(k for f in flat for k in f))
    return {p: [f.get(p) for f in flat] for p in paths
            if len({json.dumps(f.get(p), sort_keys=True) for f in flat}) > 1}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): value}


def scenario_diff_html(runs: list[RunData], limit: int = 60) -> str:
    diff = scenario_differences(runs)
    if not diff:
        return "<p class='note'>The runs have the same scenario.</p>"
    head = "".join(f"<th>{html.escape(r.label)}</th>" for r in runs)
    rows = [f"<tr><th>{html.escape(path)}</th>"
            + "".join(f"<td>{html.escape(json.dumps(v))}</td>" for v in values) + "</tr>"
            for path, values in list(diff.items())[:limit]]
    more = (f"<p class='note'>... and {len(diff) - limit} more differing fields.</p>"
            if len(diff) > limit else "")
    return (f"<table class='kpis'><thead><tr><th>scenario field</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{more}")


def sweep_table_html(table: pd.DataFrame, parameters: list[str]) -> str:
    shown = ["grid_import_mwh", "self_sufficiency", "v_min_pu", "max_line_loading_pct"]
    shown = [k for k in shown if k in table]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in
                   ["run", "seed", *parameters, "status", *shown, "report", "error"])
    rows = []
    for _, r in table.iterrows():
        link = f"{r['run_dir']}/{REPORT_FILE}"
        cells = [str(r["run"]), str(r["seed"])]
        cells += [html.escape(str(r[p])) for p in parameters]
        cells += [html.escape(str(r["status"]))]
        cells += [format_value(r[k]) for k in shown]
        cells += [f"<a href='{html.escape(link)}'>{html.escape(str(r['run_id']))}</a>"
                  if r["status"] == "ok" else "", html.escape(str(r.get("error") or ""))]
        cls = " class='failed'" if r["status"] != "ok" else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f"<table class='runs'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def run_info_html(run: RunData) -> str:
    info = run.info
    items = [("folder", str(run.path)), ("scenario", run.scenario.name),
             ("start", run.scenario.start_ts.isoformat()),
             ("steps", f"{run.scenario.n_steps} × {run.scenario.step_s} s"),
             ("seed", str(run.scenario.seed))]
    if info:
        items += [("wall time", f"{info.get('wall_time_s')} s"),
                  ("finished", str(info.get("finished_at"))),
                  ("versions", ", ".join(f"{k} {v}" for k, v in
                                         (info.get("versions") or {}).items() if v))]
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                            for k, v in items) + "</dl>"


def page(title: str, subtitle: str, sections: list[tuple[str, list]]) -> str:
    """A self-contained HTML page: plotly.js embedded once, each figure a div."""
    from plotly.offline import get_plotlyjs

    body = []
    for heading, parts in sections:
        body.append(f"<section><h2>{html.escape(heading)}</h2>")
        for part in parts:
            if isinstance(part, str):
                body.append(part)
            else:
                body.append("<div class='figure'>" + part.to_html(
                    full_html=False, include_plotlyjs=False,
                    config={"displaylogo": False, "responsive": True}) + "</div>")
        body.append("</section>")
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<header><h1>{html.escape(title)}</h1><p>{subtitle}</p></header>
<main>
{''.join(body)}
</main>
<footer>sdg-twin report, written {stamp}</footer>
</body>
</html>
"""


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; }
header { background: #1f3b57; color: #fff; padding: 16px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header p { margin: 0; opacity: 0.9; }
main { padding: 8px 32px 32px 32px; max-width: 1400px; }
h2 { border-bottom: 2px solid #1f3b57; padding-bottom: 4px; margin-top: 32px; }
.figure { margin: 12px 0 24px 0; min-height: 200px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef2f6; }
tr.failed td { background: #fdecec; }
table.runs td:last-child { text-align: left; max-width: 480px; }
.note { color: #666; font-style: italic; }
dl { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; font-size: 13px; }
dt { font-weight: 600; }
footer { color: #888; font-size: 12px; padding: 16px 32px; }
"""


def format_value(v: Any) -> str:
    """A KPI value as text: integers as they are, floats to 4 decimals or 3 significant."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.3e}"
        return f"{v:,.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    return html.escape(str(v))


def unit_of(key: str) -> str:
    return next((u for s, u in UNITS.items() if key.endswith(s)), "")


def _with_unit(key: str) -> str:
    unit = unit_of(key)
    return f"{key} [{unit}]" if unit else key


def _delta(base: Any, value: Any) -> str:
    if not (_finite(base) and _finite(value)):
        return "–"
    diff = value - base
    if base != 0:
        return f"{format_value(float(diff))} ({diff / abs(base) * 100:+.1f} %)"
    return format_value(float(diff))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and math.isfinite(v)


def _subtitle(run: RunData) -> str:
    s = run.scenario
    text = (f"{html.escape(s.description or s.name)} — {s.start_ts:%Y-%m-%d %H:%M} "
            f"({html.escape(s.timezone)}), {s.days:g} d in {s.step_s} s steps, seed {s.seed}")
    return text


# -- writing ---------------------------------------------------------------------------------

def write_report(run_dir: str | Path, out: str | Path | None = None, net: Any = None) -> Path:
    """Write the report of a run folder (default ``RUN_DIR/report.html``); return its path.

    ``net``: the run's pandapower network, to spare rebuilding it (SimBench grids take
    seconds); it is copied, not changed.
    """
    run = load_run(run_dir)
    target = Path(out) if out is not None else run.path / REPORT_FILE
    _write(target, run_report_html(run, net))
    return target


def write_comparison(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Write a comparison of several run folders; the first is the baseline."""
    labels = _labels([Path(d) for d in run_dirs])
    runs = [load_run(d, label) for d, label in zip(run_dirs, labels)]
    target = Path(out)
    _write(target, comparison_html(runs))
    return target


def write_sweep_report(sweep_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``sweep.html`` of a sweep folder from its ``sweep.parquet``."""
    from twin.sweep import TABLE_FILE, read_table

    folder = Path(sweep_dir)
    if not (folder / TABLE_FILE).is_file():
        raise ReportError(f"{folder}: not a sweep folder (no {TABLE_FILE})")
    table = read_table(folder)
    target = Path(out) if out is not None else folder / SWEEP_REPORT_FILE
    _write(target, sweep_html(folder, table))
    return target


def _labels(paths: list[Path]) -> list[str]:
    names = [p.resolve().name for p in paths]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


def _write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)


# -- command line ----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="twin report",
        description="Write the HTML report of a run folder (RUN_DIR/report.html), of a sweep "
                    "folder (sweep.html), or a comparison of several runs (the first is the "
                    "baseline).")
    p.add_argument("folders", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run folder(s), or one sweep folder")
    p.add_argument("--out", type=Path, help="output file (default: report.html in the run "
                   "folder, sweep.html in the sweep folder, compare.html beside the baseline)")
    return p


def report_main(argv: list[str] | None = None) -> int:
    """``twin report``: exit 0 when written, 2 on bad input (not a run folder), 1 when the
    report could not be built."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    folders: list[Path] = args.folders
    try:
        if len(folders) == 1 and (folders[0] / "sweep.parquet").is_file():
            target = write_sweep_report(folders[0], args.out)
        elif len(folders) == 1:
            target = write_report(folders[0], args.out)
        else:
            bad = [f"{f}: not a sweep of runs; give run folders to compare" for f in folders
                   if (f / "sweep.parquet").is_file()]
            if bad:
                raise ReportError("; ".join(bad))
            out = args.out if args.out is not None else folders[0].parent / "compare.html"
            target = write_comparison(folders, out)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a report that cannot be built is a failure
        print(f"error: report failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"report: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(report_main())
