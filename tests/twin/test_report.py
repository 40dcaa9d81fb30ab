"""HTML reports: built from run folders only, self-contained, and rendering in a real browser.

The browser tests open the files in headless Chromium (Debian's ``chromium``; installed with
apt-get when missing) over the DevTools protocol, record console errors and uncaught exceptions,
and read back every plot's data from plotly's graph divs.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from zones import TINY

from twin.report import (
    SOC_ATTR,
    fig_network_map,
    flows_kw,
    for_plot,
    load_run,
    relative_changes,
    report_main,
    scenario_differences,
    voltage_stats,
    write_comparison,
    write_report,
)
from twin.run import run
from twin.scenario import load_scenario

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--remote-allow-origins=*",
                  "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1"]


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A baseline tiny-zone run and a strategy with twice the rooftop PV and more V2G."""
    folder = tmp_path_factory.mktemp("report")
    scenario_file = folder / "tiny.yaml"
    scenario_file.write_text(yaml.safe_dump(TINY))
    out = {}
    for label, overrides in (("baseline", {}),
                             ("more_pv", {"pv.plants.0.kwp": 1600, "ev.v2g_willing_share": 1.0})):
        scenario = load_scenario(scenario_file, overrides)
        out[label] = run(scenario, out=folder / label, progress=False).out_dir
    return out


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's chromium; installed with apt-get when missing (we run as root)."""
    exe = shutil.which("chromium")
    if exe is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "update", "-q"], check=True, env=env, timeout=600,
                           capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env,
                           timeout=900, capture_output=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"chromium is not installed and apt-get could not install it: {exc}")
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed and cannot be installed here "
                    "(needs root and apt-get)")
    return exe


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, exe: str, profile: Path):
        from websockets.sync.client import connect

        self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                      "about:blank"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stderr],
                         daemon=True).start()
        deadline = time.monotonic() + 60
        port = None
        while port is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port within 60 s")
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = int(found.group(1)) if found else None
        targets = []
        while not targets and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = [t for t in json.load(r) if t["type"] == "page"]
            time.sleep(0.1)
        self.ws = connect(targets[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        self.events: list[dict] = []
        self._id = 0

    def send(self, method: str, params: dict | None = None, timeout_s: float = 60) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout_s
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout_s: float = 60) -> dict:
        deadline = time.monotonic() + timeout_s
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("method") == method:
                return msg
            self.events.append(msg)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, path: Path) -> None:
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": path.resolve().as_uri()})
        self.wait_event("Page.loadEventFired", timeout_s=90)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                out.append(f"{details.get('text')} "
                           f"{details.get('exception', {}).get('description', '')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error",
                                                                                   "assert"):
                out.append(" ".join(str(a.get("value", a.get("description")))
                                    for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                out.append(f"{params['entry'].get('source')}: {params['entry']['text']} "
                           f"{params['entry'].get('url', '')}")
        return out

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def browser(chromium, tmp_path):
    b = Browser(chromium, tmp_path / "profile")
    yield b
    b.close()


# What the page reports about each plot once plotly has drawn it: its title and, per trace,
# how many points have both coordinates (numbers must be finite).
PLOTS_JS = """
new Promise((resolve, reject) => {
  const started = Date.now();
  const valid = v => v !== null && v !== undefined && v !== ''
      && !(typeof v === 'number' && !isFinite(v));
  const summary = () => [...document.querySelectorAll('.js-plotly-plot')].map(gd => ({
    title: (gd._fullLayout && gd._fullLayout.title && gd._fullLayout.title.text) || '',
    drawn: !!(gd._fullLayout && gd.querySelector('.main-svg')),
    traces: (gd._fullData || []).map(t => {
      const xs = t.x ? Array.from(t.x) : [], ys = t.y ? Array.from(t.y) : [];
      let n = 0;
      for (let i = 0; i < Math.max(xs.length, ys.length); i++)
        if (valid(xs[i]) && valid(ys[i])) n++;
      return {name: t.name || '', type: t.type, points: n};
    }),
  }));
  const poll = () => {
    const s = summary();
    if (s.length && s.every(p => p.drawn)) resolve(JSON.stringify(s));
    else if (Date.now() - started > 30000) reject(new Error('plots not drawn in 30 s'));
    else setTimeout(poll, 100);
  };
  poll();
})
"""


def plots_in(browser: Browser, path: Path) -> list[dict]:
    browser.open(path)
    plots = json.loads(browser.evaluate(PLOTS_JS))
    return plots


def by_title(plots: list[dict], start: str) -> dict:
    found = [p for p in plots if p["title"].startswith(start)]
    assert len(found) == 1, [p["title"] for p in plots]
    return found[0]


# -- data the report shows -------------------------------------------------------------------

def test_flows_close_the_energy_balance(runs):
    """The plotted flows are the KPIs' flows: integrated, they give the KPI energies and the
    zone's energy balance closes step by step."""
    data = load_run(runs["baseline"])
    flows = flows_kw(data)
    h = data.scenario.step_s / 3600.0
    assert len(flows) == data.scenario.n_steps
    k = data.kpis
    assert flows["PV generation"].sum() * h / 1000 == pytest.approx(k["pv_energy_mwh"], rel=1e-9)
    assert flows["grid import"].sum() * h / 1000 == pytest.approx(k["grid_import_mwh"],
                                                                  rel=1e-9)
    assert flows["EV charging"].sum() * h / 1000 == pytest.approx(k["ev_charge_energy_mwh"],
                                                                  rel=1e-9)
    supplied = (flows["PV generation"] + flows.get("background generation", 0)
                + flows["EV discharging (V2G)"] + flows["grid import"])
    used = (flows["factories"] + flows["background load"] + flows["EV charging"]
            + flows["losses"] + flows["grid export"])
    np.testing.assert_allclose(supplied, used, rtol=1e-6, atol=1e-3)
    assert (flows.drop(columns=["grid import", "grid export"]) >= -1e-9).all().all()


def test_long_runs_are_plotted_as_hourly_means():
    index = pd.date_range("2026-01-01", periods=366 * 96, freq="900s", tz="Asia/Shanghai")
    p_kw = pd.DataFrame({"p": np.random.default_rng(0).uniform(0, 100, len(index))}, index)
    shown, note = for_plot(p_kw)
    assert note == "hourly means" and len(shown) == 366 * 24
    assert shown.index.tz is None and shown.index[0] == pd.Timestamp("2026-01-01 00:00")
    assert shown["p"].mean() == pytest.approx(p_kw["p"].mean())  # energy kept
    short, note = for_plot(p_kw.iloc[:96])
    assert note == "" and len(short) == 96


def test_voltage_envelope_matches_kpis(runs):
    data = load_run(runs["baseline"])
    stats = voltage_stats(data)
    assert len(stats) == 33  # case33bw
    assert stats["min"].min() == pytest.approx(data.kpis["v_min_pu"], abs=1e-12)
    assert stats["max"].max() == pytest.approx(data.kpis["v_max_pu"], abs=1e-12)
    assert (stats["min"] <= stats["mean"]).all() and (stats["mean"] <= stats["max"]).all()
    assert stats.loc[0, "min"] == pytest.approx(1.0, abs=1e-6)  # the slack holds its setpoint


def test_comparison_names_what_differs(runs):
    base, strategy = load_run(runs["baseline"]), load_run(runs["more_pv"])
    diff = scenario_differences([base, strategy])
    assert diff.pop("pv.plants.0.kwp") == [800.0, 1600.0]
    assert diff.pop("ev.v2g_willing_share") == [0.5, 1.0]
    # The resolved scenario sizes the inverter from the array (DC/AC ratio 1.2).
    assert diff.pop("pv.plants.0.inverter_kw") == pytest.approx([800 / 1.2, 1600 / 1.2])
    assert diff == {}


def test_comparison_changes_follow_the_kpis(runs):
    base, strategy = load_run(runs["baseline"]), load_run(runs["more_pv"])
    changes = relative_changes([base, strategy])[strategy.label]
    expected = (strategy.kpis["grid_import_mwh"] / base.kpis["grid_import_mwh"] - 1) * 100
    assert changes["grid_import_mwh"] == pytest.approx(expected)
    # Twice the rooftop PV imports less.
    assert changes["grid_import_mwh"] < 0


def test_network_without_coordinates_gets_a_layout(runs):
    """A network without bus coordinates is laid out; the map still shows every bus."""
    import pandapower.networks as pn

    net = pn.case33bw()
    net.bus["geo"] = None
    fig = fig_network_map(load_run(runs["baseline"]), net)
    xy = {(round(x, 9), round(y, 9)) for t in fig["data"] if t.get("name") == "buses"
          for x, y in zip(t["x"], t["y"])}
    assert len(xy) == 33  # every bus placed, no two on the same spot
    assert sum(1 for t in fig["data"] if t.get("name") == "lines") == 32
    assert net.bus["geo"].isna().all()  # the caller's network is left as it was


def test_network_map_drawn_again_matches_a_fresh_drawing(runs):
    """Maps drawn from the traces kept in the process show each run's own loadings and texts:
    the same as pandapower drawing the network anew."""
    from twin import report
    from twin.scenario import grid_network

    def mapped(label: str) -> str:
        fig = fig_network_map(load_run(runs[label]), grid_network(load_run(runs[label])
                                                                  .scenario.grid))
        return json.dumps(fig["data"], sort_keys=True, default=str)

    fresh = {}
    for label in runs:
        report._BRANCH_TRACES.clear()
        fresh[label] = mapped(label)
    assert fresh["baseline"] != fresh["more_pv"]  # the loadings differ between the runs
    for label in ["baseline", "more_pv", "baseline"]:
        assert mapped(label) == fresh[label]
    # Each line's colour is its maximum loading on the jet colour map (0-100 %).
    from matplotlib import colormaps

    data = load_run(runs["more_pv"])
    fig = fig_network_map(data, grid_network(data.scenario.grid))
    loading = data.frames["grid"].filter(like="line_loading_pct[").max()
    lines = [t for t in fig["data"] if t.get("name") == "lines" and len(t["x"]) == 3]
    assert len(lines) == 32
    for trace in lines:
        i = int(re.search(r"\(line (\d+)\)", trace["text"]).group(1))
        assert f"max loading {loading[f'line_loading_pct[{i}]']:.1f} %" in trace["text"]
        rgb = [float(v) for v in re.findall(r"[\d.]+", trace["line"]["color"])]
        expected = np.array(colormaps["jet"](loading[f"line_loading_pct[{i}]"] / 100.0)[:3])
        np.testing.assert_allclose(rgb, expected * 255, atol=1e-6)


def test_report_is_self_contained(runs, tmp_path):
    target = write_report(runs["baseline"], tmp_path / "r.html")
    text = target.read_text()
    assert text.count("Plotly.newPlot(") >= 5
    # plotly.js is embedded exactly once, and nothing outside it names another address.
    bundle = re.search(r"<script type=\"text/javascript\">(.*?)</script>", text, re.DOTALL)
    assert bundle and "plotly.js v" in bundle.group(1)
    assert text.count("plotly.js v") == 1
    rest = text.replace(bundle.group(0), "")
    assert not re.search(r"<script[^>]+src=", rest)
    assert not re.search(r"https?://", rest)


def test_report_cli_exit_codes(runs, tmp_path, capsys):
    assert report_main([str(runs["baseline"])]) == 0
    assert (runs["baseline"] / "report.html").stat().st_size > 1_000_000
    assert report_main([str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report_main([str(tmp_path / "empty")]) == 2
    assert "not a finished run folder (missing scenario.yaml, kpis.json" in capsys.readouterr().err
    out = tmp_path / "cmp.html"
    assert report_main([str(runs["baseline"]), str(runs["more_pv"]), "--out", str(out)]) == 0
    assert out.is_file()


# -- in the browser --------------------------------------------------------------------------

def test_run_report_renders_with_data(runs, browser):
    path = write_report(runs["baseline"])
    plots = plots_in(browser, path)
    assert browser.errors() == []
    n = load_run(runs["baseline"]).scenario.n_steps
    for plot in plots:
        assert max(t["points"] for t in plot["traces"]) >= 2, plot
    flows = {t["name"]: t["points"] for t in by_title(plots, "Energy flows")["traces"]}
    for name in ("PV generation", "EV charging", "EV discharging (V2G)", "factories",
                 "background load", "grid import", "grid export"):
        assert flows[name] == n, name
    envelope = by_title(plots, "Voltage envelope per bus")["traces"]
    assert envelope[0]["points"] == 33
    network = by_title(plots, "Network")["traces"]
    buses = [t for t in network if t["name"] == "buses"]
    assert buses and buses[0]["points"] == 33
    # case33bw: 32 lines in service, 5 open tie lines drawn apart.
    assert sum(1 for t in network if t["name"] == "lines" and t["points"] >= 2) == 32
    assert sum(1 for t in network if t["name"] == "lines out of service") == 5
    ev = by_title(plots, "EV energy users lacked")["traces"]
    assert {t["name"]: t["points"] for t in ev}["EVs plugged in"] == n


def test_soc_distribution_is_shown_when_recorded(runs, browser, tmp_path):
    """A fleet recording ``soc_quantiles`` (5 values a step) gets a fan chart."""
    folder = tmp_path / "with_soc"
    shutil.copytree(runs["baseline"], folder)
    ev_file = folder / "timeseries" / "ev.parquet"
    ev = pd.read_parquet(ev_file)
    rng = np.random.default_rng(1)
    base = np.sort(rng.uniform(0.2, 0.9, size=(len(ev), 5)), axis=1)
    for j, label in enumerate(["p05", "p25", "p50", "p75", "p95"]):
        ev[f"{SOC_ATTR}[{label}]"] = base[:, j]
    ev.to_parquet(ev_file)
    plots = plots_in(browser, write_report(folder))
    assert browser.errors() == []
    soc = by_title(plots, "EV state of charge")["traces"]
    assert [t["name"] for t in soc] == ["p05", "p05 to p95", "p25", "p25 to p75", "p50"]
    assert all(t["points"] == len(ev) for t in soc)


def test_coordinator_flows_are_shown_when_recorded(runs, browser, tmp_path):
    """A run with a coordinator gets its ``*_kw`` outputs plotted (vectors summed)."""
    folder = tmp_path / "with_coordinator"
    shutil.copytree(runs["baseline"], folder)
    ev = pd.read_parquet(folder / "timeseries" / "ev.parquet")
    coordinator = pd.DataFrame({"pv_to_ev_kw": ev["charge_kw"] * 0.4,
                                "grid_to_ev_kw": ev["charge_kw"] * 0.6,
                                "n_controlled": ev["n_plugged"],
                                "shed_kw[works]": 5.0}, index=ev.index)
    coordinator.to_parquet(folder / "timeseries" / "coordinator.parquet")
    plots = plots_in(browser, write_report(folder))
    assert browser.errors() == []
    traces = {t["name"]: t["points"] for t in by_title(plots, "Coordinator")["traces"]}
    assert traces == {"pv to ev": len(ev), "grid to ev": len(ev), "shed (sum)": len(ev)}


def test_comparison_renders_with_data(runs, browser, tmp_path):
    path = write_comparison([runs["baseline"], runs["more_pv"]], tmp_path / "cmp.html")
    plots = plots_in(browser, path)
    assert browser.errors() == []
    assert len(plots) == 2
    for plot in plots:
        assert max(t["points"] for t in plot["traces"]) >= 2, plot
    series = by_title(plots, "Baseline (dashed)")["traces"]
    assert sorted({t["name"] for t in series}) == ["baseline", "more_pv"]
    assert len(series) == 6  # import, lowest voltage, EV net charging for each run


def test_sweep_report_plots_each_kpi_against_each_parameter(runs, browser, tmp_path):
    rows = []
    for i, (label, folder) in enumerate(runs.items()):
        kpis = json.loads((folder / "kpis.json").read_text())
        scenario = yaml.safe_load((folder / "scenario.yaml").read_text())
        rows.append({"run": i, "run_id": label, "seed": 7, "status": "ok", "executed": True,
                     "error": "", "wall_time_s": 1.0, "worker": "", "run_dir": str(folder),
                     "pv.plants.0.kwp": scenario["pv"]["plants"][0]["kwp"],
                     "ev.v2g_willing_share": scenario["ev"]["v2g_willing_share"], **kpis})
    rows.append({**rows[0], "run": 2, "run_id": "broken", "status": "failed",
                 "error": "simulator Grid-0 failed", **{k: np.nan for k in kpis}})
    table = pd.DataFrame(rows)
    table.attrs = {"sweep": "two", "parameters": ["pv.plants.0.kwp", "ev.v2g_willing_share"],
                   "kpis": list(kpis)}
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    table.to_parquet(sweep_dir / "sweep.parquet")
    assert report_main([str(sweep_dir)]) == 0
    text = (sweep_dir / "sweep.html").read_text()
    assert "simulator Grid-0 failed" in text and "3 runs, 2 finished, 1 failed" in text
    plots = plots_in(browser, sweep_dir / "sweep.html")
    assert browser.errors() == []
    (plot,) = plots
    finite = [k for k in kpis if np.isfinite(float(kpis[k]))]
    assert len(plot["traces"]) == 2 * len(finite)
    assert all(t["points"] == 2 for t in plot["traces"])  # the failed run is not plotted


def test_page_with_a_script_error_is_caught(browser, tmp_path):
    """The console check itself works: a broken page is reported."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>console.error('boom'); undefinedCall();</script>"
                    "</body></html>")
    browser.open(page)
    errors = browser.errors()
    assert any("boom" in e for e in errors)
    assert any("undefinedCall" in e for e in errors)
