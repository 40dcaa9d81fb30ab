"""Grid model: network loading, bus references, SimBench profile rows, power-flow physics."""

import copy

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.grid.config import GridConfig
from components.grid.model import (
    CACHE_ENV,
    INJECTION_LOAD_TYPE,
    GridModel,
    _label_day_and_second,
    background_profiles,
    load_network,
    load_shed_classes,
    network_cache_dir,
    profile_lookup,
    profile_rows,
    resolve_bus,
)

SIMBENCH_ROWS = 35_136
# MV buses of the commercial grid that carry commercial (G*) loads: factory candidates.
FACTORY_BUSES = [9, 12, 28, 45, 62, 86]
SOLVERS = ("compiled", "pandapower")


def _times(start: str, n: int, step_s: int = 900) -> pd.DatetimeIndex:
    return pd.date_range(pd.Timestamp(start), periods=n, freq=pd.Timedelta(seconds=step_s))


def _relative_scale(residual_kw: float, *terms_kw: float) -> float:
    return abs(residual_kw) / max(sum(abs(t) for t in terms_kw), 1e-9)


# ---- loading ---------------------------------------------------------------------------------

def test_load_simbench(comm_net):
    assert len(comm_net.bus) == 107 and len(comm_net.load) == 98 and len(comm_net.sgen) == 89
    assert len(comm_net.profiles["load"]) == SIMBENCH_ROWS


def test_load_pandapower_function():
    net = load_network(GridConfig(source="pandapower", name="case33bw"))
    assert len(net.bus) == 33 and len(net.ext_grid) == 1


def test_load_json(tmp_path):
    original = pn.create_cigre_network_mv(with_der="pv_wind")
    path = tmp_path / "cigre.json"
    pp.to_json(original, str(path))
    net = load_network(GridConfig(source="json", path=path))
    assert len(net.bus) == len(original.bus) and len(net.sgen) == len(original.sgen)
    pp.runpp(net, numba=False)
    pp.runpp(original, numba=False)
    np.testing.assert_allclose(net.res_bus.vm_pu, original.res_bus.vm_pu, atol=1e-10)


@pytest.mark.parametrize("fields, field", [
    ({"source": "simbench", "code": "1-MV-nowhere--0-sw"}, "code"),
    ({"source": "pandapower", "name": "case_does_not_exist"}, "name"),
    ({"source": "json", "path": "/nonexistent/net.json"}, "path"),
])
def test_load_bad_reference_names_field(fields, field):
    # Bypass validation, as a caller holding an unchecked config would.
    cfg = GridConfig.model_construct(**fields)
    with pytest.raises(ValueError, match=rf"^{field}: "):
        load_network(cfg)


def test_load_foreign_json_names_path(tmp_path):
    path = tmp_path / "not_a_net.json"
    path.write_text('{"hello": [1, 2, 3]}')
    with pytest.raises(ValueError, match=r"^path: .*pandapower"):
        load_network(GridConfig(source="json", path=path))


def test_network_without_slack_is_rejected(case33, tmp_path):
    net = copy.deepcopy(case33)
    net.ext_grid["in_service"] = False
    path = tmp_path / "no_slack.json"
    pp.to_json(net, str(path))
    with pytest.raises(ValueError, match=r"^path: network .* has no in-service ext_grid"):
        load_network(GridConfig(source="json", path=path))


# ---- bus references --------------------------------------------------------------------------

def test_resolve_bus_by_index_and_name(comm_net):
    assert resolve_bus(comm_net, 12) == 12
    assert resolve_bus(comm_net, np.int64(45)) == 45
    assert resolve_bus(comm_net, "MV4.101 Bus 12") == 12
    assert resolve_bus(comm_net, "MV4.101 busbar1.1") == 2


def test_resolve_unknown_bus_lists_what_exists(comm_net):
    with pytest.raises(ValueError, match=r"bus 500 not found: .* 107 buses with indices 0\.\.106"):
        resolve_bus(comm_net, 500)
    with pytest.raises(ValueError, match=r"did you mean 'MV4\.101 Bus 12'"):
        resolve_bus(comm_net, "MV4.101 Bus12")
    with pytest.raises(ValueError, match=r"names include 'HV1 Bus 13'"):
        resolve_bus(comm_net, "factory gate")
    with pytest.raises(ValueError, match="index .int. or a bus name"):
        resolve_bus(comm_net, True)


def test_resolve_ambiguous_and_out_of_service(case33):
    net = copy.deepcopy(case33)
    net.bus.loc[[3, 4], "name"] = "twin"
    net.bus.loc[7, "in_service"] = False
    with pytest.raises(ValueError, match=r"ambiguous: used by buses \[3, 4\]"):
        resolve_bus(net, "twin")
    with pytest.raises(ValueError, match="bus 7 .* out of service"):
        resolve_bus(net, 7)


# ---- profile rows ----------------------------------------------------------------------------

def _table_values(net, row: int) -> tuple[np.ndarray, np.ndarray]:
    """Absolute load P and sgen P at a profile row, computed from the relative tables."""
    rel_load = net.profiles["load"]
    load = np.array([rel_load.at[row, f"{p}_pload"] for p in net.load.profile]) * net.load.p_mw
    rel_gen = pd.concat([net.profiles["renewables"], net.profiles["powerplants"]], axis=1)
    sgen = np.array([rel_gen.at[row, p] for p in net.sgen.profile]) * net.sgen.p_mw
    return load.to_numpy(), sgen.to_numpy()


def test_profile_rows_january_noon_and_july_night(comm_net):
    # 7 Jan 2026 (a Wednesday) is day 7: the table's 07.01.2016; 15 Jul 2026 is day 196, which
    # in leap-year 2016 is 14 July. In summer the table's labels are German summer time, one
    # hour ahead of the row position: 02:00 on the wall clock is position 01:00.
    times = pd.DatetimeIndex([pd.Timestamp("2026-01-07T12:00+08:00"),
                              pd.Timestamp("2026-07-15T02:00+08:00")])
    prof = background_profiles(comm_net, times)
    assert prof["row"].tolist() == [6 * 96 + 48, 195 * 96 + 4]
    stamps = comm_net.profiles["load"]["time"].iloc[prof["row"]].tolist()
    assert stamps == ["07.01.2016 12:00", "14.07.2016 02:00"]
    for k, row in enumerate(prof["row"]):
        load_mw, sgen_mw = _table_values(comm_net, row)
        np.testing.assert_allclose(prof["load_p_mw"][k], load_mw, rtol=1e-12)
        np.testing.assert_allclose(prof["sgen_p_mw"][k], sgen_mw, rtol=1e-12)
    assert prof["load_p_mw"].shape == (2, len(comm_net.load))
    # Profile values, not the static (peak) values.
    assert not np.allclose(prof["load_p_mw"][0], comm_net.load.p_mw)


def test_profile_lookup_follows_wall_clock_labels(comm_net):
    labels = comm_net.profiles["load"]["time"]
    lookup = profile_lookup(labels)
    assert lookup.shape == (366, 96)
    stamps = pd.to_datetime(labels, format="%d.%m.%Y %H:%M")
    unique = ~stamps.duplicated(keep=False)
    day0 = stamps.dt.dayofyear.to_numpy() - 1
    slot = stamps.dt.hour.to_numpy() * 4 + stamps.dt.minute.to_numpy() // 15
    np.testing.assert_array_equal(lookup[day0[unique], slot[unique]],
                                  np.flatnonzero(unique.to_numpy()))
    # Spring: 02:00-02:45 on 27 March 2016 does not exist; it takes the 03:00 row.
    spring = int(np.flatnonzero(labels == "27.03.2016 03:00")[0])
    np.testing.assert_array_equal(lookup[86, 8:13], spring)
    # Autumn: 02:00-02:45 on 30 October 2016 occurs twice; the first (summer time) counts.
    first = int(np.flatnonzero(labels == "30.10.2016 02:15")[0])
    assert lookup[303, 9] == first and (labels == "30.10.2016 02:15").sum() == 2
    # Without labels the rows are positional.
    assert profile_lookup(SIMBENCH_ROWS)[195, 8] == 195 * 96 + 8


def test_label_parser_matches_pandas_and_rejects_bad_labels(comm_net):
    labels = pd.concat([comm_net.profiles["load"]["time"],
                        pd.Series(["29.02.2016 23:45", "31.12.2017 00:15"])], ignore_index=True)
    day0, second = _label_day_and_second(labels)
    stamps = pd.to_datetime(labels, format="%d.%m.%Y %H:%M")
    np.testing.assert_array_equal(day0, stamps.dt.dayofyear.to_numpy() - 1)
    np.testing.assert_array_equal(second, stamps.dt.hour.to_numpy() * 3600
                                  + stamps.dt.minute.to_numpy() * 60)
    # Not a date (30 February), another layout, out-of-range time: pandas' parser says which.
    for bad in ("30.02.2016 00:00", "2016-01-01 00:00", "01.01.2016 24:00"):
        with pytest.raises(ValueError):
            _label_day_and_second(pd.Series(["01.01.2016 00:00", bad]))
    # Other widths go through pandas as well.
    day0, second = _label_day_and_second(pd.Series(["1.1.2016 0:15"]))
    assert (day0.tolist(), second.tolist()) == ([0], [900])


def test_short_run_profiles_equal_the_whole_year_rows(comm_net):
    times = _times("2026-06-03T18:00+08:00", 8)
    short = background_profiles(comm_net, times)
    year = background_profiles(comm_net, _times("2026-01-01T00:00+08:00", 365 * 96))
    step_of_row = {row: j for j, row in reversed(list(enumerate(year["row"].tolist())))}
    steps = [step_of_row[row] for row in short["row"].tolist()]
    for key, values in short.items():
        if key != "row":
            np.testing.assert_array_equal(values, year[key][steps])
    assert "time" in comm_net.profiles["load"] and len(comm_net.profiles["load"]) == SIMBENCH_ROWS


def test_network_cache_returns_the_built_network(tmp_path, monkeypatch):
    from pandapower.toolbox import nets_equal

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    cfg = GridConfig(source="pandapower", name="case33bw")
    built = load_network(cfg)
    entries = list((tmp_path / "cache").glob("net-*.pickle"))
    assert len(entries) == 1
    cached = load_network(cfg)
    assert cached is not built and nets_equal(built, cached, check_only_results=False)
    # An unreadable entry is rebuilt and replaced.
    entries[0].write_bytes(b"not a pickle")
    assert nets_equal(load_network(cfg), built, check_only_results=False)
    assert entries[0].stat().st_size > 1000
    # Another network has its own entry; nothing half-written is left behind.
    load_network(GridConfig(source="pandapower", name="case9", solver="pandapower"))
    assert sorted(p.name.startswith("net-") for p in (tmp_path / "cache").iterdir()) == [True] * 2


def test_network_cache_off_or_unwritable(tmp_path, monkeypatch):
    cfg = GridConfig(source="pandapower", name="case33bw")
    monkeypatch.setenv(CACHE_ENV, "off")
    assert network_cache_dir() is None
    assert len(load_network(cfg).bus) == 33
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocked / "cache"))  # cannot be created
    assert len(load_network(cfg).bus) == 33
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert network_cache_dir() == tmp_path / "xdg" / "sdg-twin"


def test_profile_rows_use_local_wall_clock():
    lookup = profile_lookup(SIMBENCH_ROWS)
    utc = pd.DatetimeIndex([pd.Timestamp("2026-01-07T04:00Z")])
    assert profile_rows(utc, lookup).tolist() == [6 * 96 + 16]
    local = utc.tz_convert("Asia/Shanghai")
    assert profile_rows(local, lookup).tolist() == [6 * 96 + 48]


def test_profile_rows_wrap_at_year_end(comm_net):
    lookup = profile_lookup(comm_net.profiles["load"]["time"])
    rows = profile_rows(_times("2026-12-31T23:30+08:00", 4), lookup)
    assert rows.tolist() == [364 * 96 + 94, 364 * 96 + 95, 0, 1]
    leap = profile_rows(_times("2028-12-31T23:45+08:00", 2), lookup)
    assert leap.tolist() == [SIMBENCH_ROWS - 1, 0]
    # A run longer than a year comes back to the same rows.
    year = profile_rows(_times("2026-03-01T00:00+08:00", 2, step_s=365 * 86_400), lookup)
    assert year[0] == year[1]


@pytest.mark.parametrize("step_s, expected", [(300, [40, 40, 40, 41]),
                                              (3600, [40, 44, 48, 52]),
                                              (600, [40, 40, 41, 42])])
def test_profile_rows_other_step_sizes(step_s, expected):
    # Step starts at 10:00 on 1 January: the row containing each start.
    rows = profile_rows(_times("2026-01-01T10:00+08:00", 4, step_s), profile_lookup(SIMBENCH_ROWS))
    assert rows.tolist() == expected


def test_network_without_profiles_keeps_static_values(case33):
    net = copy.deepcopy(case33)
    assert background_profiles(net, _times("2026-01-01T00:00+08:00", 3)) == {}
    static_mw = net.load.p_mw.sum()
    model = GridModel(net, _times("2026-01-01T00:00+08:00", 3), background_scale=0.5)
    res = [model.solve_step(k, np.zeros(0), np.zeros(0)) for k in range(3)]
    for r in res:
        assert r.converged and r.background_load_kw == pytest.approx(500 * static_mw, rel=1e-12)


# ---- physics ---------------------------------------------------------------------------------

def _random_day(seed: int, n_buses: int, reverse_mw: float, n: int):
    """Injections over a day of n steps: loads and PV around noon that reverses the flow.

    The PV is spread over the buses (each gets at least half an even share), as a 20 kV bus
    taking all of 30 MW would rise to 1.4 pu.
    """
    rng = np.random.default_rng(seed)
    p_kw = rng.uniform(0.0, 800.0, (n, n_buses))
    solar = np.clip(np.sin(2 * np.pi * (np.arange(n) / n - 0.25)), 0.0, None)
    share = 0.5 / n_buses + 0.5 * rng.dirichlet(np.ones(n_buses))
    p_kw -= np.outer(solar, share) * reverse_mw * 1e3
    q_kvar = rng.uniform(-200.0, 300.0, (n, n_buses))
    return p_kw, q_kvar


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_buses=st.integers(3, 6),
       reverse_mw=st.floats(18.0, 30.0))
def test_energy_balance_closes_every_step_of_a_day(comm_net, seed, n_buses, reverse_mw):
    rng = np.random.default_rng(seed)
    buses = rng.choice(np.arange(2, 107), n_buses, replace=False)
    # A day in 30-minute steps (the row containing each step start, see profile_rows).
    n = 48
    model = GridModel(copy.deepcopy(comm_net), _times("2026-06-01T00:00+08:00", n, 1800),
                      injection_buses=buses)
    p_kw, q_kvar = _random_day(seed, n_buses, reverse_mw, n)
    imports = []
    for k in range(n):
        r = model.solve_step(k, p_kw[k], q_kvar[k])
        assert r.converged
        assert r.injection_kw == pytest.approx(p_kw[k].sum(), rel=1e-9, abs=1e-9)
        rel = _relative_scale(r.balance_residual_kw, r.import_kw, r.background_load_kw,
                              r.background_gen_kw, r.injection_kw, r.losses_kw)
        assert rel < 1e-6, (k, r.balance_residual_kw)
        assert r.losses_kw > 0 and np.all((r.vm_pu > 0.8) & (r.vm_pu < 1.3))
        imports.append(r.import_kw)
    # The day has both directions: import at night, export (reverse flow) at noon.
    assert max(imports) > 0 > min(imports)
    assert model.nonconverged_steps == 0


@pytest.mark.parametrize("solver", SOLVERS)
def test_results_equal_direct_runpp_with_loads_written_normally(comm_net, solver):
    # 2016 dates: the profile row is the row whose time stamp reads the same date and time.
    times = _times("2016-03-15T00:00+01:00", 96)
    buses = np.array(FACTORY_BUSES)
    model = GridModel(copy.deepcopy(comm_net), times, background_scale=0.8,
                      injection_buses=buses, solver=solver)
    rng = np.random.default_rng(7)
    stamp_rows = {t: i for i, t in enumerate(comm_net.profiles["load"]["time"])}
    rel_load = comm_net.profiles["load"]
    rel_gen = pd.concat([comm_net.profiles["renewables"], comm_net.profiles["powerplants"]],
                        axis=1)
    for k in (3, 50, 77):
        p_kw = rng.uniform(-2000.0, 1500.0, buses.size)
        q_kvar = rng.uniform(-300.0, 300.0, buses.size)
        got = model.solve_step(k, p_kw, q_kvar)

        ref = copy.deepcopy(comm_net)
        row = stamp_rows[times[k].strftime("%d.%m.%Y %H:%M")]
        for i in ref.load.index:
            name = ref.load.at[i, "profile"]
            ref.load.at[i, "p_mw"] = 0.8 * rel_load.at[row, f"{name}_pload"] * comm_net.load.at[
                i, "p_mw"]
            ref.load.at[i, "q_mvar"] = 0.8 * rel_load.at[row, f"{name}_qload"] * comm_net.load.at[
                i, "q_mvar"]
        for i in ref.sgen.index:
            ref.sgen.at[i, "p_mw"] = rel_gen.at[row, ref.sgen.at[i, "profile"]] * comm_net.sgen.at[
                i, "p_mw"]
        for bus, p, q in zip(buses, p_kw, q_kvar, strict=True):
            pp.create_load(ref, bus, p_mw=p / 1e3, q_mvar=q / 1e3)
        pp.runpp(ref, numba=False)

        assert got.converged
        np.testing.assert_allclose(got.vm_pu, ref.res_bus.vm_pu.to_numpy(), atol=1e-8)
        np.testing.assert_allclose(got.va_deg, ref.res_bus.va_degree.to_numpy(), atol=1e-6)
        np.testing.assert_allclose(got.line_loading_pct, ref.res_line.loading_percent, atol=1e-6)
        np.testing.assert_allclose(got.trafo_loading_pct, ref.res_trafo.loading_percent,
                                   atol=1e-6)
        assert got.import_kw == pytest.approx(1e3 * ref.res_ext_grid.p_mw.sum(), abs=1e-4)
        assert got.q_import_kvar == pytest.approx(1e3 * ref.res_ext_grid.q_mvar.sum(), abs=1e-4)
        ref_losses_kw = 1e3 * (ref.res_line.pl_mw.sum() + ref.res_trafo.pl_mw.sum())
        assert got.losses_kw == pytest.approx(ref_losses_kw, abs=1e-4)
        n_bg = len(comm_net.load)
        assert got.background_load_kw == pytest.approx(1e3 * ref.res_load.p_mw[:n_bg].sum())
        assert got.background_gen_kw == pytest.approx(1e3 * ref.res_sgen.p_mw.sum())


def test_pandapower_solver_adds_injection_loads_once(comm_net):
    net = copy.deepcopy(comm_net)
    model = GridModel(net, _times("2026-06-01T00:00+08:00", 2), injection_buses=[12, 9],
                      solver="pandapower")
    added = net.load[net.load.type == INJECTION_LOAD_TYPE]
    assert added.bus.tolist() == [12, 9] and len(net.load) == len(comm_net.load) + 2
    model.solve_step(0, np.array([100.0, -50.0]), np.array([10.0, 0.0]))
    np.testing.assert_allclose(added.index.map(net.load.p_mw), [0.1, -0.05])
    assert model.bus_ids.tolist() == comm_net.bus.index.tolist()
    assert model.line_ids.size == len(comm_net.line) and model.trafo_ids.size == 2


def test_compiled_solver_leaves_the_net_alone_and_reads_no_table_per_step(comm_net):
    net = copy.deepcopy(comm_net)
    times = _times("2026-06-01T00:00+08:00", 3)
    model = GridModel(net, times, injection_buses=[12, 9])
    assert model.solver == "compiled"
    assert len(net.load) == len(comm_net.load)
    pd.testing.assert_frame_equal(net.load, comm_net.load)
    pd.testing.assert_frame_equal(net.sgen, comm_net.sgen)
    reference = GridModel(copy.deepcopy(comm_net), times, injection_buses=[12, 9])
    expected = [reference.solve_step(k, np.array([100.0, -50.0]), np.array([10.0, 0.0]))
                for k in range(3)]
    # After set-up the steps need no DataFrame: empty the network and step on.
    net.clear()
    for k in range(3):
        got = model.solve_step(k, np.array([100.0, -50.0]), np.array([10.0, 0.0]))
        np.testing.assert_array_equal(got.vm_pu, expected[k].vm_pu)
        assert got.import_kw == expected[k].import_kw
    np.testing.assert_array_equal(model.injection_p_kw, [100.0, -50.0])
    assert model.bus_ids.tolist() == comm_net.bus.index.tolist()
    assert model.line_ids.size == len(comm_net.line) and model.trafo_ids.size == 2


@pytest.mark.parametrize("solver", SOLVERS)
def test_nonconvergence_is_counted_keeps_last_state_and_recovers(comm_net, solver):
    times = _times("2026-06-01T00:00+08:00", 4)
    buses = np.array([77, 102])
    model = GridModel(copy.deepcopy(comm_net), times, injection_buses=buses, solver=solver)
    good = model.solve_step(0, np.array([300.0, 200.0]), np.zeros(2))
    # 1 GW drawn at the end of a 20 kV feeder: no power-flow solution exists.
    absurd = model.solve_step(1, np.array([1e6, 0.0]), np.zeros(2))
    assert good.converged and not absurd.converged
    assert model.nonconverged_steps == 1 and model.nonconverged_at == [1]
    np.testing.assert_array_equal(absurd.vm_pu, good.vm_pu)
    assert absurd.import_kw == good.import_kw and absurd.losses_kw == good.losses_kw

    after = model.solve_step(2, np.array([300.0, 200.0]), np.zeros(2))
    fresh = GridModel(copy.deepcopy(comm_net), times, injection_buses=buses, solver=solver)
    expected = fresh.solve_step(2, np.array([300.0, 200.0]), np.zeros(2))
    assert after.converged and model.nonconverged_steps == 1
    np.testing.assert_allclose(after.vm_pu, expected.vm_pu, atol=1e-9)


def test_bad_injection_buses_and_inputs(comm_net):
    times = _times("2026-06-01T00:00+08:00", 2)
    with pytest.raises(ValueError, match="unique"):
        GridModel(copy.deepcopy(comm_net), times, injection_buses=[9, 9])
    with pytest.raises(ValueError, match="bus 999 not found"):
        GridModel(copy.deepcopy(comm_net), times, injection_buses=[999])
    model = GridModel(copy.deepcopy(comm_net), times, injection_buses=[9])
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        model.solve_step(0, np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="outside the 2 steps"):
        model.solve_step(2, np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match="non-finite"):
        model.solve_step(0, np.array([np.nan]), np.zeros(1))


def test_unsupplied_injection_bus_is_rejected(case33):
    net = copy.deepcopy(case33)
    net.line.loc[net.line.to_bus == 17, "in_service"] = False  # cuts off the feeder end
    with pytest.raises(ValueError, match=r"\[17\] are not connected"):
        GridModel(net, _times("2026-01-01T00:00+08:00", 1), injection_buses=[17])


def test_balance_closes_with_every_kind_of_element():
    """Shunt, impedance, ward, motor, gen, storage and an impedance switch all close the sum.

    The compiled solver refuses several of these elements; the reference solver models them.
    """
    net = pn.create_cigre_network_mv(with_der="all")
    pp.create_shunt(net, bus=5, q_mvar=-0.2, p_mw=0.015)
    pp.create_impedance(net, from_bus=3, to_bus=8, rft_pu=0.02, xft_pu=0.05, sn_mva=10.0)
    pp.create_ward(net, bus=9, ps_mw=0.1, qs_mvar=0.02, pz_mw=0.01, qz_mvar=0.0)
    pp.create_motor(net, bus=6, pn_mech_mw=0.3, cos_phi=0.9, efficiency_percent=95.0)
    pp.create_gen(net, bus=12, p_mw=0.5, vm_pu=1.0)
    extra = pp.create_bus(net, vn_kv=20.0, name="behind impedance switch")
    pp.create_switch(net, bus=4, element=extra, et="b", closed=True, z_ohm=0.5)
    pp.create_load(net, extra, p_mw=0.4, q_mvar=0.1)
    times = _times("2026-06-01T12:00+08:00", 3)
    model = GridModel(net, times, injection_buses=[extra, 11, 14], solver="pandapower")
    for k, p in enumerate(([200.0, -300.0, 50.0], [0.0, 0.0, 0.0], [-900.0, 400.0, 1000.0])):
        r = model.solve_step(k, np.array(p), np.array([20.0, -10.0, 0.0]))
        assert r.converged
        line_trafo_kw = 1e3 * (net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum())
        assert r.losses_kw > line_trafo_kw + 1e3 * net.res_shunt.p_mw.sum() - 1e-9
        assert r.background_storage_kw != 0.0
        rel = _relative_scale(r.balance_residual_kw, r.import_kw, r.background_load_kw,
                              r.background_gen_kw, r.injection_kw, r.losses_kw)
        assert rel < 1e-6, r.balance_residual_kw


def test_warnings_inside_the_kernel_stay_quiet_and_an_error_filter_means_divergence(
        comm_net, monkeypatch):
    import warnings

    from scipy.sparse.linalg import MatrixRankWarning

    times = _times("2026-06-01T00:00+08:00", 3)
    model = GridModel(copy.deepcopy(comm_net), times, injection_buses=np.array([77, 102]))
    network = model._flow.network
    fallback = network._newton_fallback

    def diverging(solve):  # the fixed point gives up: the Newton-Raphson fallback takes over
        def run(*args):
            solve(*args)
            return -network.max_iteration
        return run

    def noisy(*args):  # what a diverging fallback may raise
        warnings.warn("Matrix is exactly singular", MatrixRankWarning, stacklevel=1)
        warnings.warn("overflow encountered", RuntimeWarning, stacklevel=1)
        _ = np.ones(2) / np.zeros(2)  # a floating-point warning from NumPy itself
        return fallback(*args)

    monkeypatch.setattr(network, "_kernel_solve_row", diverging(network._kernel_solve_row))
    monkeypatch.setattr(network, "_newton_fallback", noisy)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        quiet = model.solve_step(0, np.array([300.0, 200.0]), np.zeros(2))
    assert quiet.converged and shown == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        failed = model.solve_step(1, np.array([300.0, 200.0]), np.zeros(2))
    assert not failed.converged and model.nonconverged_at == [1]


def test_background_classes_sum_each_steps_loads_like_bincount(comm_net):
    times = _times("2026-01-05T00:00+08:00", 192)
    model = GridModel(copy.deepcopy(comm_net), times, background_scale=1.3)
    net = model.net
    load_p = background_profiles(net, times)["load_p_mw"] * 1.3
    w = net.load["scaling"].to_numpy(float) * net.load["in_service"].to_numpy(float)
    classes = load_shed_classes(net)
    assert 0 < classes.sum() < classes.size  # both classes present
    for k in (0, 37, 100, 191):
        got = model.solve_step(k, np.zeros(0), np.zeros(0)).background_class_kw
        want = np.bincount(classes, weights=1e3 * load_p[k] * w, minlength=2)
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("solver", SOLVERS)
def test_solve_step_sum_equals_solve_step_of_the_per_bus_sums(comm_net, solver):
    times = _times("2026-06-01T00:00+08:00", 3)
    buses = [12, 9, 77]
    by_sum = GridModel(copy.deepcopy(comm_net), times, injection_buses=buses, solver=solver)
    by_bus = GridModel(copy.deepcopy(comm_net), times, injection_buses=buses, solver=solver)
    rng = np.random.default_rng(4)
    # P of two sources, then Q of one: bins 0..2 are P, 3..5 Q of injection_buses
    bins = np.array([0, 2, 0, 1, 1, 2, 5, 3, 5], dtype=np.int64)
    ptr = np.array([0, 3, 6, 9], dtype=np.int64)
    for k in range(3):
        parts = [rng.normal(size=3) * np.array([300.0, 1e-7, 40.0]) for _ in range(3)]
        total = np.bincount(bins, weights=np.concatenate(parts), minlength=6)
        got = by_sum.solve_step_sum(k, parts, ptr, bins)
        want = by_bus.solve_step(k, total[:3], total[3:])
        assert by_sum.injection_p_kw.tobytes() == total[:3].tobytes()
        assert by_sum.injection_q_kvar.tobytes() == total[3:].tobytes()
        for name in ("vm_pu", "va_deg", "line_loading_pct", "trafo_loading_pct"):
            assert getattr(got, name).tobytes() == getattr(want, name).tobytes()
        assert (got.import_kw, got.losses_kw, got.injection_kw) == (
            want.import_kw, want.losses_kw, want.injection_kw)
    # lists and other dtypes are converted; bad parts fail before anything is stepped
    solved = by_sum.steps_solved
    listed = by_sum.solve_step_sum(2, [p.tolist() for p in parts], ptr, bins)
    assert listed.converged and by_sum.injection_p_kw.tobytes() == total[:3].tobytes()
    np.testing.assert_allclose(listed.vm_pu, got.vm_pu, atol=1e-9)  # from another start
    with pytest.raises(ValueError, match="part 1 must be a contiguous 1-D float64 array of 3"):
        by_sum.solve_step_sum(2, [parts[0], parts[1][:2], parts[2]], ptr, bins)
    with pytest.raises(ValueError, match="parts: non-finite injection"):
        by_sum.solve_step_sum(2, [parts[0], np.array([1.0, np.nan, 0.0]), parts[2]], ptr, bins)
    with pytest.raises(ValueError, match="bin 6 of element 8"):
        by_sum.solve_step_sum(2, parts, ptr, np.where(np.arange(9) == 8, 6, bins))
    with pytest.raises(ValueError, match="step 3 outside"):
        by_sum.solve_step_sum(3, parts, ptr, bins)
    assert by_sum.steps_solved == solved + 1


def test_background_sums_filled_at_set_up_equal_a_steps_own_dot_products(comm_net):
    times = _times("2026-06-01T00:00+08:00", 2 * 96)
    normal = GridModel(copy.deepcopy(comm_net), times, background_scale=0.9)._flow._normal
    assert normal.per_step is not None and normal.profiled
    filled, normal.per_step = normal.per_step, None
    assert [normal.served_mw(k) for k in range(len(times))] == filled
