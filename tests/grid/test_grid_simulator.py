"""The grid's mosaik adapter: per-source aggregation, outputs, failure policy, a tiny World."""

from typing import ClassVar

import mosaik
import mosaik_api_v3
import numpy as np
import pytest

from components.grid.config import GridConfig
from components.grid.simulator import GridSimulator

CIGRE = GridConfig(source="pandapower", name="create_cigre_network_mv").model_dump(mode="json")
START = "2026-06-01T10:00:00+08:00"


def _grid(injectors: dict, n_steps: int = 4, config: dict = CIGRE) -> GridSimulator:
    sim = GridSimulator()
    sim.init("Grid-0", start=START, step_s=900, n_steps=n_steps, seed=1)
    assert sim.create(1, "Grid", config=config, injectors=injectors) == [
        {"eid": "grid", "type": "Grid"}]
    return sim


def _injection_p_kw(sim: GridSimulator) -> dict[int, float]:
    model = sim.model
    return {int(b): float(p) for b, p in zip(model.injection_buses, model.injection_p_kw,
                                             strict=True)}


def test_sources_are_summed_per_bus_and_missing_ones_count_as_zero():
    sim = _grid({"PV-0.pv": [3, 5, 3], "EV-0.fleet": ["Bus 5", 11]})
    assert sim.injection_buses.tolist() == [3, 5, 11]
    pv = np.array([-100.0, -40.0, -60.0])
    ev = np.array([30.0, 7.0])
    sim.step(0, {"grid": {"p_kw": {"PV-0.pv": pv, "EV-0.fleet": ev},
                          "q_kvar": {"PV-0.pv": np.zeros(3), "EV-0.fleet": np.ones(2)}}}, 900)
    assert _injection_p_kw(sim) == pytest.approx({3: -160.0, 5: -10.0, 11: 7.0})
    out = sim.get_data({"grid": ["injection_kw", "converged", "q_import_kvar"]})["grid"]
    assert out["injection_kw"] == pytest.approx(-163.0) and out["converged"] == 1

    # Step 1: the EV fleet sends nothing and no q arrives at all -> zeros there.
    assert sim.step(900, {"grid": {"p_kw": {"PV-0.pv": pv}}}, 1800) == 1800
    assert _injection_p_kw(sim) == pytest.approx({3: -160.0, 5: -40.0, 11: 0.0})
    # Step 2: no inputs at all.
    sim.step(1800, {}, 2700)
    assert _injection_p_kw(sim) == pytest.approx({3: 0.0, 5: 0.0, 11: 0.0})


def test_outputs_are_aligned_and_finite():
    sim = _grid({"PV-0.pv": [3]})
    sim.step(0, {"grid": {"p_kw": {"PV-0.pv": np.array([-500.0])}}}, 900)
    attrs = GridSimulator().meta["models"]["Grid"]["attrs"]
    outputs = [a for a in attrs if a not in ("p_kw", "q_kvar")]
    out = sim.get_data({"grid": outputs})["grid"]
    net = sim.model.net
    assert out["bus_ids"].tolist() == net.bus.index.tolist()
    assert out["vm_pu"].shape == out["va_deg"].shape == out["bus_ids"].shape
    assert out["line_loading_pct"].shape == (len(net.line),)
    assert out["trafo_loading_pct"].shape == out["trafo_ids"].shape == (len(net.trafo),)
    balance = out["import_kw"] - (out["background_load_kw"] + out["background_storage_kw"]
                                  + out["injection_kw"] - out["background_gen_kw"]
                                  + out["losses_kw"])
    assert abs(balance) < 1e-6 * out["background_load_kw"]
    assert out["converged"] == 1 and out["nonconverged_steps"] == 0


def test_initial_data_is_the_setup_state():
    sim = _grid({"PV-0.pv": [3]})
    out = sim.get_data({"grid": ["vm_pu", "import_kw", "injection_kw"]})["grid"]
    assert out["injection_kw"] == 0.0 and out["import_kw"] > 0
    assert out["vm_pu"].size == len(sim.model.net.bus)


def test_unknown_source_and_wrong_length_are_errors_naming_them():
    sim = _grid({"PV-0.pv": [3, 5]})
    with pytest.raises(ValueError, match=r"'Factory-0\.f', which is not among the injectors"):
        sim.step(0, {"grid": {"p_kw": {"Factory-0.f": np.ones(2)}}}, 900)
    with pytest.raises(ValueError, match=r"Grid-0\.grid at t=0 s: p_kw from 'PV-0\.pv' has "
                                         r"shape \(3,\), its bus list has 2"):
        sim.step(0, {"grid": {"p_kw": {"PV-0.pv": np.ones(3)}}}, 900)


def test_bad_config_and_bus_fail_at_create():
    sim = GridSimulator()
    sim.init("Grid-0")
    with pytest.raises(ValueError, match="code"):
        sim.create(1, "Grid", config={"source": "simbench", "code": "nope"}, injectors={})
    with pytest.raises(ValueError, match="bus 'Bus 99' not found"):
        sim.create(1, "Grid", config=CIGRE, injectors={"PV-0.pv": ["Bus 99"]})


def test_network_the_compiled_solver_refuses_fails_at_create_naming_solver():
    config = GridConfig(source="pandapower", name="case9").model_dump(mode="json")
    sim = GridSimulator()
    sim.init("Grid-0")
    with pytest.raises(ValueError, match=r"^solver: .*net\.gen.*grid\.solver: pandapower"):
        sim.create(1, "Grid", config=config, injectors={})
    sim = GridSimulator()
    sim.init("Grid-0", n_steps=2)
    sim.create(1, "Grid", config={**config, "solver": "pandapower"}, injectors={"PV-0.pv": [5]})
    sim.step(0, {"grid": {"p_kw": {"PV-0.pv": np.array([-20_000.0])}}}, 900)
    assert sim.get_data({"grid": ["converged"]})["grid"]["converged"] == 1


def test_too_many_nonconverged_steps_fail_the_run():
    # 4 steps at share 0.25: one failure is tolerated, the second fails the run.
    sim = _grid({"Factory-0.f": [14]}, config={**CIGRE, "max_nonconverged_share": 0.25})
    absurd = {"grid": {"p_kw": {"Factory-0.f": np.array([5e6])}}}
    sim.step(0, absurd, 900)
    out = sim.get_data({"grid": ["converged", "nonconverged_steps", "vm_pu"]})["grid"]
    assert out["converged"] == 0 and out["nonconverged_steps"] == 1
    np.testing.assert_array_equal(out["vm_pu"], sim.model.initial_result.vm_pu)
    with pytest.raises(RuntimeError, match=r"Grid-0\.grid at t=900 s .* 2 steps .*\[0, 1\]"):
        sim.step(900, absurd, 1800)


# ---- a tiny mosaik World -------------------------------------------------------------------

SOURCE_META = {"api_version": "3.0", "type": "time-based",
               "models": {"Source": {"public": True, "params": ["p_kw"],
                                     "attrs": ["p_kw", "q_kvar"]}}}
SINK_META = {"api_version": "3.0", "type": "time-based",
             "models": {"Sink": {"public": True, "params": [], "attrs": [
                 "vm_pu", "import_kw", "injection_kw", "losses_kw", "background_load_kw",
                 "background_gen_kw", "background_storage_kw", "converged", "bus_ids"]}}}


class SourceSim(mosaik_api_v3.Simulator):
    """Emits a fixed P profile per step (rows = steps) for its bus list, load convention."""

    def __init__(self):
        super().__init__(SOURCE_META)

    def init(self, sid, time_resolution=1.0, step_s=900):
        self.step_s = step_s
        return self.meta

    def create(self, num, model, p_kw):
        self.p_kw = np.asarray(p_kw, dtype=float)
        return [{"eid": "src", "type": model}]

    def step(self, time, inputs, max_advance):
        self.k = time // self.step_s
        return time + self.step_s

    def get_data(self, outputs):
        p = self.p_kw[self.k]
        return {"src": {"p_kw": p, "q_kvar": 0.2 * np.abs(p)}}


class SinkSim(mosaik_api_v3.Simulator):
    """Records every input it receives, per step."""

    records: ClassVar[list] = []

    def __init__(self):
        super().__init__(SINK_META)

    def init(self, sid, time_resolution=1.0, step_s=900):
        self.step_s = step_s
        return self.meta

    def create(self, num, model):
        return [{"eid": "sink", "type": model}]

    def step(self, time, inputs, max_advance):
        SinkSim.records.append((time, inputs["sink"]))
        return time + self.step_s


@pytest.mark.parametrize("solver", ["compiled", "pandapower"])
def test_grid_in_a_mosaik_world(solver):
    n_steps = 4
    p_kw = np.array([[100.0, 50.0], [-800.0, 20.0], [0.0, 0.0], [250.0, -3000.0]])
    SinkSim.records = []
    world = mosaik.World({
        "Source": {"python": f"{__name__}:SourceSim"},
        "Grid": {"python": "components.grid.simulator:GridSimulator"},
        "Sink": {"python": f"{__name__}:SinkSim"},
    }, skip_greetings=True, configure_logging=False)
    source = world.start("Source", step_s=900).Source(p_kw=p_kw)
    grid_sim = world.start("Grid", start=START, step_s=900, n_steps=n_steps, seed=3)
    grid = grid_sim.Grid(config={**CIGRE, "solver": solver},
                         injectors={source.full_id: [3, "Bus 11"]})
    sink = world.start("Sink", step_s=900).Sink()
    world.connect(source, grid, "p_kw", "q_kvar")
    world.connect(grid, sink, *SINK_META["models"]["Sink"]["attrs"])
    world.run(until=n_steps * 900, print_progress=False)

    assert [t for t, _ in SinkSim.records] == [0, 900, 1800, 2700]
    for k, (_, inputs) in enumerate(SinkSim.records):
        got = {attr: next(iter(by_src.values())) for attr, by_src in inputs.items()}
        assert got["converged"] == 1 and got["vm_pu"].shape == got["bus_ids"].shape
        assert got["injection_kw"] == pytest.approx(p_kw[k].sum())
        residual = got["import_kw"] - (got["background_load_kw"] + got["background_storage_kw"]
                                       + got["injection_kw"] - got["background_gen_kw"]
                                       + got["losses_kw"])
        assert abs(residual) < 1e-6 * abs(got["background_load_kw"])
    # The large export in the last step lowers the import below the first step's.
    imports = [next(iter(r[1]["import_kw"].values())) for r in SinkSim.records]
    assert imports[3] < imports[0] - 2000.0


def test_per_bus_sums_add_in_source_order_like_np_add_at():
    # values of very different magnitude: the order of the additions shows in the last bits
    sim = _grid({"PV-0.pv": [3, 5, 3, 11], "EV-0.fleet": [11, "Bus 5", 3]})
    rng = np.random.default_rng(3)
    pv = rng.normal(size=4) * np.array([1e3, 1.0, 1e-9, 10.0])
    ev = rng.normal(size=3) * np.array([1e-6, 1e2, 1.0])
    q_pv, q_ev = rng.normal(size=4), rng.normal(size=3) * 1e2
    sim.step(0, {"grid": {"p_kw": {"PV-0.pv": pv, "EV-0.fleet": ev},
                          "q_kvar": {"EV-0.fleet": q_ev, "PV-0.pv": q_pv}}}, 900)
    p_kw, q_kvar = sim.model.injection_p_kw, sim.model.injection_q_kvar
    pos = sim._source_pos
    want_p, want_q = np.zeros(3), np.zeros(3)
    for total, parts in ((want_p, [("PV-0.pv", pv), ("EV-0.fleet", ev)]),
                         (want_q, [("EV-0.fleet", q_ev), ("PV-0.pv", q_pv)])):
        for src, values in parts:
            np.add.at(total, pos[src], values)
    assert p_kw.tobytes() == want_p.tobytes() and q_kvar.tobytes() == want_q.tobytes()


def test_sources_as_lists_or_other_dtypes_sum_alike_and_bad_ones_fail_by_name():
    sim = _grid({"PV-0.pv": [3, 5], "EV-0.fleet": [5]})
    sim.step(0, {"grid": {"p_kw": {"PV-0.pv": np.array([-400.0, 30.0]),
                                   "EV-0.fleet": np.array([7.0])}}}, 900)
    want = sim.model.injection_p_kw.copy()
    inputs = {"PV-0.pv": [-400, 30], "EV-0.fleet": np.array([7.0], dtype=np.float32)}
    sim.step(900, {"grid": {"p_kw": inputs}}, 1800)
    assert sim.model.injection_p_kw.tobytes() == want.tobytes()
    strided = np.array([-400.0, 0.0, 30.0])[::2]  # a view that is not contiguous
    sim.step(1800, {"grid": {"p_kw": {"PV-0.pv": strided, "EV-0.fleet": np.array([7.0])}}},
             2700)
    assert sim.model.injection_p_kw.tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="p_kw from 'EV-0.fleet' has shape \\(2,\\)"):
        sim.step(2700, {"grid": {"p_kw": {"EV-0.fleet": np.zeros(2)}}}, 3600)
    with pytest.raises(ValueError, match="non-finite injection"):
        sim.step(2700, {"grid": {"q_kvar": {"EV-0.fleet": np.array([np.inf])}}}, 3600)
    with pytest.raises(ValueError, match="non-finite injection"):  # finite terms, sum overflows
        sim.step(2700, {"grid": {"p_kw": {"PV-0.pv": np.array([0.0, 1e308]),
                                          "EV-0.fleet": np.array([1e308])}}}, 3600)


def test_each_output_is_checked_for_finiteness_once_per_step():
    from dataclasses import replace

    sim = _grid({"PV-0.pv": [3]})
    sim.step(0, {"grid": {"p_kw": {"PV-0.pv": np.array([-500.0])}}}, 900)
    first = sim.get_data({"grid": ["vm_pu", "import_kw", "energised"]})["grid"]
    again = sim.get_data({"grid": ["vm_pu", "losses_kw"]})["grid"]
    assert again["vm_pu"] is first["vm_pu"]  # the checked value of this step, not a new one
    sim.step(900, {"grid": {"p_kw": {"PV-0.pv": np.array([-500.0])}}}, 1800)
    # a non-finite output is an error at the sender, naming the attribute
    bad = sim._result.vm_pu.copy()
    bad[2] = np.nan
    sim._result = replace(sim._result, vm_pu=bad, losses_kw=float("inf"))
    with pytest.raises(ValueError, match="'vm_pu' has 1 non-finite value"):
        sim.get_data({"grid": ["vm_pu"]})
    with pytest.raises(ValueError, match="'losses_kw' has 1 non-finite value"):
        sim.get_data({"grid": ["import_kw", "losses_kw"]})
