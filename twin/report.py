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
import base64
import functools
import html
import json
import math
import sys
import warnings
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


FLOW_COLORS = {"PV generation": "#f2b701", "PV curtailed": "#d9a0a0", "factories": "#e73f74",
               "EV charging": "#3969ac", "EV discharging (V2G)": "#7f3c8d",
               "background load": "#80ba5a", "background generation": "#11a579",
               "grid import": "#222222", "grid export": "#a5aa99", "losses": "#cf1c90"}


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
#
# The figures of a run are plain plotly figure dicts ({"data": [...], "layout": {...}}) built in
# one go: plotly's graph objects validate every assignment, which took most of a report's time.
# Numeric series are plotly.js typed arrays (as plotly itself writes them) and the template is
# resolved once per process, so the page serialises them without another validation.

def fig_energy_flows(run: RunData) -> dict[str, Any]:
    flows, note = for_plot(flows_kw(run) / 1000.0)
    x = _times(flows.index)
    traces = []
    for name in flows.columns:
        dash = "dot" if name in ("grid export", "losses", "PV curtailed") else None
        line = {"color": FLOW_COLORS.get(name), "width": 2.5 if name == "grid import" else 1.5}
        if dash:
            line["dash"] = dash
        traces.append({"type": "scatter", "x": x, "y": _f8(flows[name]), "name": name,
                       "mode": "lines", "line": line})
    return _figure(traces, _layout("Energy flows" + (f" ({note})" if note else ""),
                                   "power [MW]", run.scenario.timezone))


def fig_coordinator(run: RunData) -> dict[str, Any] | None:
    """The coordinator's power flows [MW]: every ``*_kw`` output, vectors summed."""
    frame = run.frames.get("coordinator")
    if frame is None:
        return None
    flows = {}
    for col in frame.columns:
        if col.endswith("_kw"):
            flows[col[:-3].replace("_", " ")] = frame[col]
    for attr in dict.fromkeys(c.split("[")[0] for c in frame.columns if "[" in c):
        if attr.endswith("_kw"):
            flows[attr[:-3].replace("_", " ") + " (sum)"] = vector(frame, attr).sum(axis=1)
    if not flows:
        return None
    shown, note = for_plot(pd.DataFrame(flows, index=frame.index) / 1000.0)
    x = _times(shown.index)
    traces = [{"type": "scatter", "x": x, "y": _f8(shown[name]), "name": name, "mode": "lines",
               **({"line": {"dash": "dash"}} if "threshold" in name else {})}
              for name in shown.columns]
    return _figure(traces, _layout("Coordinator: matched and dispatched power"
                                   + (f" ({note})" if note else ""), "power [MW]",
                                   run.scenario.timezone))


def fig_ev(run: RunData) -> list[dict[str, Any]]:
    """EV figures: the SoC distribution when recorded, unmet energy and plugged EVs."""
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
    x = _times(frame.index)
    traces = [
        {"type": "bar", "x": x, "y": _f8(frame["unmet_kwh"]), "name": "unmet energy per step",
         "marker": {"color": "#e73f74"}, "xaxis": "x", "yaxis": "y"},
        {"type": "scatter", "x": _times(cumulative.index), "y": _f8(cumulative["c"]),
         "name": "unmet energy, total", "mode": "lines", "line": {"color": "#7f3c8d"},
         "xaxis": "x", "yaxis": "y"},
        {"type": "scatter", "x": x, "y": _f8(frame["n_plugged"]), "name": "EVs plugged in",
         "mode": "lines", "line": {"color": "#3969ac", "width": 1}, "xaxis": "x", "yaxis": "y2"},
    ]
    layout = _layout("EV energy users lacked at departure, and EVs plugged in"
                     + (f" ({note})" if note else ""), "energy [kWh]", run.scenario.timezone)
    # A secondary y axis on the right, as plotly's make_subplots lays it out.
    layout["xaxis"].update(anchor="y", domain=[0.0, 0.94])
    layout["yaxis"].update(anchor="x", domain=[0.0, 1.0])
    layout["yaxis2"] = {"anchor": "x", "overlaying": "y", "side": "right",
                        "title": {"text": "EVs plugged in [-]"}, "rangemode": "tozero"}
    figs.append(_figure(traces, layout))
    return figs


def fig_soc(run: RunData, soc: pd.DataFrame) -> dict[str, Any]:
    """The fleet's SoC distribution over time: quantile bands and the median [%]."""
    soc, note = for_plot(soc * 100.0)
    cols = list(soc.columns)
    x = _times(soc.index)
    traces = []
    # Outer pairs of quantiles become nested bands; a middle column is the median.
    for k in range(len(cols) // 2):
        lo, hi = cols[k], cols[-1 - k]
        alpha = 0.15 + 0.2 * k
        traces.append({"type": "scatter", "x": x, "y": _f8(soc[lo]), "mode": "lines",
                       "line": {"width": 0}, "showlegend": False, "name": lo,
                       "hoverinfo": "skip"})
        traces.append({"type": "scatter", "x": x, "y": _f8(soc[hi]), "mode": "lines",
                       "line": {"width": 0}, "fill": "tonexty",
                       "fillcolor": f"rgba(57,105,172,{alpha:.2f})", "name": f"{lo} to {hi}"})
    if len(cols) % 2:
        mid = cols[len(cols) // 2]
        traces.append({"type": "scatter", "x": x, "y": _f8(soc[mid]), "mode": "lines",
                       "name": mid, "line": {"color": "#3969ac", "width": 2}})
    layout = _layout("EV state of charge across the fleet" + (f" ({note})" if note else ""),
                     "state of charge [%]", run.scenario.timezone)
    layout["yaxis"]["range"] = [0, 100]
    return _figure(traces, layout)


def voltage_stats(run: RunData) -> pd.DataFrame:
    """Per bus: minimum, mean and maximum voltage over converged steps [pu]."""
    grid = run.frames["grid"]
    vm = vector(grid, "vm_pu")
    if "converged" in grid:
        vm = vm[grid["converged"] > 0.5]
    stats = pd.DataFrame({"min": vm.min(), "mean": vm.mean(), "max": vm.max()})
    stats.index = [int(i) if str(i).lstrip("-").isdigit() else i for i in stats.index]
    return stats


def fig_voltage_per_bus(run: RunData, net: Any = None,
                        stats: pd.DataFrame | None = None) -> dict[str, Any]:
    """``stats``: :func:`voltage_stats` of the run, when already at hand."""
    stats = (voltage_stats(run) if stats is None else stats).dropna()
    names = _names(net, "bus", stats.index)
    lo, mean, hi = (stats[c].to_numpy(dtype=float) for c in ("min", "mean", "max"))
    trace = {
        "type": "scatter", "x": [str(i) for i in stats.index], "y": _f8(mean), "mode": "markers",
        "name": "mean, with min–max range", "marker": {"color": "#3969ac", "size": 5},
        "error_y": {"type": "data", "symmetric": False, "array": _f8(hi - mean),
                    "arrayminus": _f8(mean - lo), "color": "#3969ac", "thickness": 1.2,
                    "width": 2},
        "text": [f"{n}<br>min {a:.4f} pu<br>mean {m:.4f} pu<br>max {b:.4f} pu"
                 for n, a, m, b in zip(names, lo, mean, hi)],
        "hoverinfo": "text"}
    layout = {"title": {"text": "Voltage envelope per bus (over the run)"},
              "template": _template(),
              "xaxis": {"title": {"text": "bus (pandapower index)"}, "type": "category"},
              "yaxis": {"title": {"text": "voltage [pu]"}}, "height": 420,
              "margin": {"l": 60, "r": 20, "t": 50, "b": 50}, "showlegend": True,
              **_band_lines(run)}
    return _figure([trace], layout)


def fig_voltage_time(run: RunData) -> dict[str, Any]:
    grid = run.frames["grid"]
    vm = vector(grid, "vm_pu").to_numpy(dtype=float)
    if "converged" in grid:
        vm = np.where((grid["converged"] > 0.5).to_numpy()[:, None], vm, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: unconverged steps
        env = pd.DataFrame({"min": np.nanmin(vm, axis=1), "max": np.nanmax(vm, axis=1)},
                           index=grid.index)
    env, note = for_plot(env)
    x = _times(env.index)
    traces = [{"type": "scatter", "x": x, "y": _f8(env["max"]), "mode": "lines",
               "name": "highest bus", "line": {"color": "#e73f74"}},
              {"type": "scatter", "x": x, "y": _f8(env["min"]), "mode": "lines",
               "name": "lowest bus", "line": {"color": "#3969ac"}, "fill": "tonexty",
               "fillcolor": "rgba(57,105,172,0.12)"}]
    layout = _layout("Voltage envelope over time" + (f" ({note})" if note else ""),
                     "voltage [pu]", run.scenario.timezone)
    layout.update(_band_lines(run))
    return _figure(traces, layout)


def fig_network_map(run: RunData, net: Any,
                    stats: pd.DataFrame | None = None) -> dict[str, Any]:
    """The network drawn with pandapower's plotly traces: buses coloured by their minimum
    voltage, lines and transformers by their maximum loading over the run.

    ``net`` is not changed (a network without bus coordinates is laid out on a view of it).
    ``stats``: :func:`voltage_stats` of the run, when already at hand.
    """
    from pandapower.plotting.plotly.traces import (
        create_bus_trace,
        create_line_trace,
        create_trafo_trace,
    )

    net = _with_coordinates(net)
    grid = run.frames["grid"]
    ok = grid["converged"] > 0.5 if "converged" in grid else pd.Series(True, grid.index)
    lo, hi = run.scenario.grid.v_band_pu
    stats = voltage_stats(run) if stats is None else stats
    placed = net.bus["geo"].map(lambda g: isinstance(g, str))
    finite_min = np.isfinite(stats["min"].reindex(net.bus.index).to_numpy(dtype=float))
    buses = net.bus.index[placed.to_numpy(dtype=bool) & finite_min].tolist()
    vmin = stats.loc[buses, "min"].to_numpy()
    bus_names = net.bus["name"]
    bus_info = pd.Series([f"{bus_names.at[b]} (bus {b})<br>min {stats.at[b, 'min']:.4f} pu"
                          f"<br>max {stats.at[b, 'max']:.4f} pu" for b in buses], index=buses)
    geometry = _geometry_key(net)
    traces: list[dict[str, Any]] = []

    line_names = net.line["name"]
    line_max = _max_by_index(vector(grid, "line_loading_pct")[ok], net.line.index)
    reported = np.isfinite(line_max)
    idle = net.line.index[~reported]
    if len(idle):
        # Lines the grid did not report (out of service): dotted grey.
        traces += _branch_traces(
            create_line_trace, "lines", net, geometry, idle,
            [f"{line_names.at[i]} (line {i})<br>out of service" for i in idle],
            use_line_geo=False, width=1.5, color="#aaaaaa", dash="dot",
            trace_name="lines out of service")
    active = net.line.index[reported]
    if len(active):
        traces += _branch_traces(
            create_line_trace, "lines", net, geometry, active,
            [f"{line_names.at[i]} (line {i})<br>max loading {v:.1f} %"
             for i, v in zip(active, line_max[reported])],
            values=line_max[reported], cmin=0.0, cmax=100.0,
            use_line_geo=False, width=2.5, cbar_title="max loading [%]", cpos=1.12)
    trafo_max = _max_by_index(vector(grid, "trafo_loading_pct")[ok], net.trafo.index)
    with_geo = (net.trafo.hv_bus.isin(net.bus.index[placed]) & net.trafo.lv_bus.isin(
        net.bus.index[placed])).to_numpy(dtype=bool)
    if with_geo.any():
        drawn = net.trafo.index[with_geo]
        trafo_names = net.trafo["name"]
        traces += _branch_traces(
            create_trafo_trace, "trafos", net, geometry, drawn,
            [f"{trafo_names.at[i]} (transformer {i})<br>max loading "
             + (f"{v:.1f} %" if np.isfinite(v) else "n/a")
             for i, v in zip(drawn, trafo_max[with_geo])],
            values=np.nan_to_num(trafo_max[with_geo], nan=0.0), cmin=0.0, cmax=100.0, width=5)
    if len(net.ext_grid):
        slack = [b for b in net.ext_grid.bus if b in placed.index and placed.at[b]]
        if slack:
            traces += _plain(create_bus_trace(net, buses=slack, color="grey", size=16,
                                              patch_type="square",
                                              trace_name="external grid"))
    traces += _plain(create_bus_trace(net, buses=buses, size=9, infofunc=bus_info, cmap="Jet",
                                      cmap_vals=vmin, cmin=lo, cmax=hi, cpos=1.0,
                                      cbar_title="min voltage [pu]", trace_name="buses"))
    # The layout of pandapower's draw_traces (axes without grid or ticks, nearest hover), at
    # the page's width and with equal scales on both axes.
    layout = {"template": _template(), "showlegend": False, "autosize": True,
              "hovermode": "closest", "legend": {"itemsizing": "constant"}, "height": 620,
              "title": {"text": "Network: buses by minimum voltage, lines and transformers by "
                                "maximum loading"},
              "margin": {"l": 10, "r": 10, "t": 50, "b": 10},
              "xaxis": {"showgrid": False, "zeroline": False, "showticklabels": False},
              "yaxis": {"showgrid": False, "zeroline": False, "showticklabels": False,
                        "scaleanchor": "x", "scaleratio": 1}}
    return _figure(traces, layout)


# Per process, pandapower's branch traces of the networks drawn last (their geometry), and the
# layouts of networks without coordinates: a sweep worker reports many runs on the same grid.
_BRANCH_TRACES: dict[tuple, list[dict[str, Any]]] = {}
_LAYOUTS: dict[tuple, pd.Series] = {}
_CACHE_SIZE = 8


def _branch_traces(create: Any, select: str, net: Any, geometry: tuple, elements: pd.Index,
                   info: list[str], values: np.ndarray | None = None, cmin: float = 0.0,
                   cmax: float = 100.0, **style: Any) -> list[dict[str, Any]]:
    """pandapower's traces of lines or transformers (``create``: its ``create_line_trace`` or
    ``create_trafo_trace``; ``select``: its argument naming the elements), with hover texts
    ``info`` and, given ``values``, colours from pandapower's jet colour map (``cmin``..``cmax``).

    pandapower draws the elements of a geometry once per process, each trace's text naming its
    element; later calls restyle copies of those traces with their own texts and colours.
    """
    from pandapower.plotting.plotly.get_colors import get_plotly_cmap

    elements = list(elements)
    key = (create.__name__, geometry, tuple(elements), values is not None, cmin, cmax,
           tuple(sorted(style.items())))
    drawn = _BRANCH_TRACES.get(key)
    if drawn is None:
        marks = pd.Series(elements, index=elements)
        colour = {"cmap": "jet", "cmap_vals": np.zeros(len(elements)), "cmin": cmin,
                  "cmax": cmax} if values is not None else {}
        drawn = _plain(create(net, **{select: elements}, infofunc=marks, **colour, **style))
        if len(_BRANCH_TRACES) >= _CACHE_SIZE:
            _BRANCH_TRACES.pop(next(iter(_BRANCH_TRACES)))
        _BRANCH_TRACES[key] = drawn
    position = {e: k for k, e in enumerate(elements)}
    colors = (get_plotly_cmap(np.asarray(values, dtype=float), cmap_name="jet", cmin=cmin,
                              cmax=cmax) if values is not None else None)
    out = []
    for trace in drawn:
        text = trace.get("text")
        if isinstance(text, list):  # hover markers at the branch centres: one per element
            trace = {**trace, "text": [info[position[m]] for m in text]}
            if colors is not None and text and select == "trafos":
                # pandapower colours the transformers' markers as the last transformer.
                trace["marker"] = {**trace["marker"], "color": colors[position[text[-1]]]}
        elif text is not None and not isinstance(text, str) and text in position:
            k = position[text]
            trace = {**trace, "text": info[k]}
            if colors is not None:
                trace["line"] = {**trace["line"], "color": colors[k]}
        out.append(trace)
    return out


def _plain(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pandapower's trace dicts with their plotly objects and pandas series as plain data."""
    out = []
    for trace in traces:
        plain = {}
        for k, v in trace.items():
            if hasattr(v, "to_plotly_json"):
                v = v.to_plotly_json()
            elif isinstance(v, (pd.Series, pd.Index, np.ndarray)):
                v = v.tolist()
            elif isinstance(v, tuple):
                v = list(v)
            plain[k] = v
        out.append(plain)
    return out


def _geometry_key(net: Any) -> tuple:
    """What pandapower's branch traces of ``net`` depend on: bus coordinates, the buses each
    line and transformer connects."""
    geo = tuple(g if isinstance(g, str) else None for g in net.bus["geo"].tolist())
    return (tuple(net.bus.index.tolist()), geo, tuple(net.line.index.tolist()),
            tuple(net.line.from_bus.tolist()), tuple(net.line.to_bus.tolist()),
            tuple(net.trafo.index.tolist()), tuple(net.trafo.hv_bus.tolist()),
            tuple(net.trafo.lv_bus.tolist()))


def _max_by_index(df: pd.DataFrame, index: pd.Index) -> np.ndarray:
    """Column maxima of ``df`` (columns labelled by element index) aligned to ``index``."""
    maxima = df.max() if len(df.columns) else pd.Series(dtype=float)
    maxima.index = [int(i) if str(i).lstrip("-").isdigit() else i for i in maxima.index]
    return maxima.reindex(index).to_numpy(dtype=float)


def _with_coordinates(net: Any) -> Any:
    """``net``, or when some bus lacks coordinates a view of it (its own bus table) with every
    bus laid out: pandapower's generic layout (igraph) when installed, otherwise a networkx
    Kamada-Kawai layout of the topology. Layouts are kept per topology in the process."""
    import copy

    if "geo" in net.bus and net.bus["geo"].map(lambda g: isinstance(g, str)).all():
        return net
    view = copy.copy(net)  # shares the tables; only the bus table is replaced
    view.bus = net.bus.copy()
    key = _topology_key(net)
    geo = _LAYOUTS.get(key)
    if geo is None:
        geo = _layout_buses(view)
        if len(_LAYOUTS) >= _CACHE_SIZE:
            _LAYOUTS.pop(next(iter(_LAYOUTS)))
        _LAYOUTS[key] = geo
    view.bus["geo"] = geo
    return view


def _layout_buses(net: Any) -> pd.Series:
    """Generic coordinates of every bus of ``net`` (GeoJSON points), set in ``net.bus``."""
    import geojson
    from pandapower.plotting import generic_geodata

    if generic_geodata.IGRAPH_INSTALLED:
        generic_geodata.create_generic_coordinates(net, respect_switches=True, overwrite=True)
        return net.bus["geo"].copy()
    import networkx as nx
    from pandapower.topology import create_nxgraph

    graph = nx.Graph(create_nxgraph(net, respect_switches=True, include_out_of_service=True))
    graph.add_nodes_from(net.bus.index)
    pos = nx.kamada_kawai_layout(graph)
    return pd.Series({b: geojson.dumps(geojson.Point((float(pos[b][0]), float(pos[b][1]))))
                      for b in net.bus.index})


def _topology_key(net: Any) -> tuple:
    """The tables a generic layout depends on: buses, branches and switches."""
    parts: list[Any] = [tuple(net.bus.index.tolist())]
    for table, cols in (("line", ["from_bus", "to_bus"]), ("trafo", ["hv_bus", "lv_bus"]),
                        ("trafo3w", ["hv_bus", "mv_bus", "lv_bus"]),
                        ("impedance", ["from_bus", "to_bus"]),
                        ("switch", ["bus", "element", "et", "closed"])):
        if table in net and len(net[table]):
            parts.append((table, tuple(net[table].index.tolist()),
                          tuple(map(tuple, net[table][cols].to_numpy().tolist()))))
    return tuple(parts)


def _names(net: Any, table: str, index: Any) -> list[str]:
    if net is None:
        return [f"{table} {i}" for i in index]
    names = net[table]["name"]
    return [f"{names.at[i]} ({table} {i})" if i in names.index else f"{table} {i}"
            for i in index]


def _band_lines(run: RunData) -> dict[str, list[dict[str, Any]]]:
    """Dashed lines at the voltage band's limits, labelled (as plotly's ``add_hline``)."""
    lo, hi = run.scenario.grid.v_band_pu
    shapes, annotations = [], []
    for v, label in ((lo, "lower limit"), (hi, "upper limit")):
        shapes.append({"type": "line", "xref": "x domain", "x0": 0, "x1": 1, "yref": "y",
                       "y0": v, "y1": v,
                       "line": {"color": "#999999", "dash": "dash", "width": 1}})
        annotations.append({"text": f"{label} {v:g} pu", "showarrow": False, "xref": "x domain",
                            "x": 0, "xanchor": "left", "yref": "y", "y": v,
                            "yanchor": "bottom"})
    return {"shapes": shapes, "annotations": annotations}


def _layout(title: str, y_title: str, tz: str) -> dict[str, Any]:
    """The layout of a time-series figure."""
    return {"title": {"text": title}, "template": _template(), "hovermode": "x unified",
            "xaxis": {"title": {"text": f"local time ({tz})"}},
            "yaxis": {"title": {"text": y_title}}, "height": 440,
            "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
            "legend": {"orientation": "h", "y": -0.18}}


def _figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> dict[str, Any]:
    return {"data": data, "layout": layout}


@functools.cache
def _template() -> dict[str, Any]:
    """plotly's ``plotly_white`` template as plain data (figure dicts are not validated, so
    the template is given itself rather than by name)."""
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()


def _f8(values: Any) -> dict[str, str]:
    """Numbers as a plotly.js typed array (float64, base64); NaN leaves a gap."""
    array = np.ascontiguousarray(np.asarray(values, dtype=float), dtype="<f8")
    return {"dtype": "f8", "bdata": base64.b64encode(array.tobytes()).decode("ascii")}


def _times(index: pd.Index) -> list[str] | list[Any]:
    """A plot's x values: wall-clock timestamps as ISO strings (plotly ignores offsets)."""
    if isinstance(index, pd.DatetimeIndex):
        return np.datetime_as_string(index.to_numpy(dtype="datetime64[ns]"), unit="s").tolist()
    return index.tolist()


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

    ``net``: the run's pandapower network when at hand (it is not changed); default: built
    from the scenario's ``grid`` section.
    """
    net = grid_network(run.scenario.grid) if net is None else net
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
    stats = voltage_stats(run)
    sections.append(("Voltages", [fig_voltage_per_bus(run, net, stats), fig_voltage_time(run)]))
    sections.append(("Network", [fig_network_map(run, net, stats)]))
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
    """A self-contained HTML page: plotly.js embedded once, each figure a div.

    A section's parts are HTML text, plotly figures, or figure dicts (written as they are:
    the figure functions build them valid, with typed arrays and the template resolved).
    """
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    body = []
    for heading, parts in sections:
        body.append(f"<section><h2>{html.escape(heading)}</h2>")
        for part in parts:
            if isinstance(part, str):
                body.append(part)
            else:
                body.append("<div class='figure'>" + pio.to_html(
                    part, validate=False, full_html=False, include_plotlyjs=False,
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
    seconds); it is not changed.
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
