"""Behaviour of the power-flow API: batch calls, starting points, islands, fallbacks, validation."""

from __future__ import annotations

import copy
import functools
import importlib.util
import logging

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from ext.powerflow_net import (
    BatchPowerFlowResult,
    PowerFlowNetwork,
    PowerFlowResult,
    UnsupportedNetworkError,
    kernel_module,
)

pytestmark = pytest.mark.kernels

logging.getLogger("pandapower").setLevel(logging.ERROR)
HAS_COMPILED = importlib.util.find_spec("ext.powerflow") is not None


@functools.cache
def cigre() -> pp.pandapowerNet:
    return pn.create_cigre_network_mv(with_der="all")


@functools.cache
def cigre_network() -> PowerFlowNetwork:
    return PowerFlowNetwork(cigre())


def daily_injections(network: PowerFlowNetwork, n_steps: int, seed: int = 0):
    """Base injections scaled per step and bus, plus local generation at every load bus that
    exceeds the load in some steps (reverse power flow)."""
    rng = np.random.default_rng(seed)
    p, q = network.base_injections()
    p_load, q_load = network.aggregate("load", cigre().load.p_mw, cigre().load.q_mvar)
    scale_load = rng.uniform(0.2, 1.6, (n_steps, 1)) * rng.uniform(0.8, 1.2, (n_steps, p.size))
    scale_gen = rng.uniform(0.0, 2.0, (n_steps, 1))
    return p + p_load * (scale_load - 1.0 - scale_gen), q + q_load * (scale_load - 1.0)


def test_solve_returns_a_result_with_every_quantity() -> None:
    network = cigre_network()
    res = network.solve(*network.base_injections())
    assert isinstance(res, PowerFlowResult)
    assert res.converged and 1 <= res.iterations < 30
    assert res.vm_pu.shape == res.va_degree.shape == (network.n_bus,)
    assert res.line_loading_pct.shape == res.line_i_ka.shape == (network.n_line,)
    assert res.trafo_loading_pct.shape == res.trafo_i_hv_ka.shape == (network.n_trafo,)
    assert res.ext_grid_p_mw.shape == (len(network.ext_grid_index),)
    np.testing.assert_allclose(res.line_pl_mw.sum() + res.trafo_pl_mw.sum(), res.p_loss_mw,
                               atol=1e-12)
    assert np.allclose(np.abs(res.v_pu), res.vm_pu)


def test_power_balance_closes() -> None:
    """Supplied by the external grid = drawn by the buses + branch losses (no shunts here),
    up to the convergence tolerance (1e-8 MVA per bus)."""
    network = cigre_network()
    p, q = daily_injections(network, 1, seed=3)
    res = network.solve(p[0], q[0])
    tol_mw = network.n_bus * network.tolerance_mva
    assert res.ext_grid_p_mw.sum() == pytest.approx(p[0].sum() + res.p_loss_mw, abs=tol_mw)
    assert res.ext_grid_q_mvar.sum() == pytest.approx(q[0].sum() + res.q_loss_mvar, abs=tol_mw)
    assert res.p_loss_mw > 0


def test_batch_equals_single_solves() -> None:
    network = cigre_network()
    p, q = daily_injections(network, 24)
    batch = network.solve_batch(p, q, flows=True)
    assert isinstance(batch, BatchPowerFlowResult)
    assert batch.vm_pu.shape == (24, network.n_bus)
    assert (batch.ext_grid_p_mw.sum(axis=1) < 0).any(), "no reverse flow in the sample"
    for t in range(24):
        single = network.solve(p[t], q[t])
        np.testing.assert_allclose(batch.vm_pu[t], single.vm_pu, atol=1e-8)
        np.testing.assert_allclose(batch.va_degree[t], single.va_degree, atol=1e-6)
        np.testing.assert_allclose(batch.line_loading_pct[t], single.line_loading_pct,
                                   atol=1e-6)
        np.testing.assert_allclose(batch.line_p_from_mw[t], single.line_p_from_mw, atol=1e-8)
        assert batch.p_loss_mw[t] == pytest.approx(single.p_loss_mw, abs=1e-7)


def test_warm_start_saves_iterations_not_accuracy() -> None:
    network = cigre_network()
    p, q = daily_injections(network, 48, seed=5)
    p = p[:1] * np.linspace(1.0, 1.05, 48)[:, None]  # slowly varying steps
    q = q[:1] * np.linspace(1.0, 1.05, 48)[:, None]
    warm = network.solve_batch(p, q)
    cold = network.solve_batch(p, q, warm_start=False)
    assert warm.iterations.sum() < cold.iterations.sum()
    np.testing.assert_allclose(warm.vm_pu, cold.vm_pu, atol=1e-8)
    first = network.solve(p[0], q[0])
    again = network.solve(p[0], q[0], v0=first.v_pu)
    assert again.iterations < first.iterations
    np.testing.assert_allclose(again.vm_pu, first.vm_pu, atol=1e-9)


BACKENDS = ["numpy", *(["compiled"] if HAS_COMPILED else [])]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flows", [False, True])
def test_solve_row_is_solve_of_the_summed_row_from_the_same_start(backend, flows) -> None:
    # a row plus extra injections at some buses, warm-started from an earlier result: the same
    # bits as solve() of the sum formed in NumPy, started from that result's v_pu
    network = PowerFlowNetwork(cigre(), backend=backend)
    p, q = daily_injections(network, 4, seed=3)
    at = network.bus_positions([4, 9, 14])
    rng = np.random.default_rng(8)
    extra = rng.normal(size=6) * np.array([1.0, 1e-3, 10.0, 0.1, 1e-6, 1.0])
    previous = network.solve(p[0], q[0], flows=flows)
    for k in (1, 2, 3):
        row = np.concatenate((p[k], q[k]))
        summed = row.copy()
        summed[np.concatenate((at, network.n_bus + at))] += extra
        want = network.solve(summed[:network.n_bus], summed[network.n_bus:],
                             previous.v_pu, flows=flows)
        got = network.solve_row(row, at, extra, previous, flows=flows)
        assert got.converged and got.iterations == want.iterations
        assert got._out.tobytes() == want._out.tobytes()
        # extras in kW and kvar, scaled in the kernel: the same bits as scaling them first
        scaled = network.solve_row(row, at, 1e3 * extra, previous, flows=flows, scale=1e-3)
        unscaled = network.solve_row(row, at, 1e-3 * (1e3 * extra), previous, flows=flows)
        assert scaled._out.tobytes() == unscaled._out.tobytes()
        assert got.finite and want.finite and np.isfinite(got._out).all()
        cold = network.solve_row(summed, start=None, flows=flows)
        assert cold._out.tobytes() == network.solve(summed[:network.n_bus],
                                                    summed[network.n_bus:],
                                                    flows=flows)._out.tobytes()
        previous = got


def test_solve_row_falls_back_and_checks_its_inputs() -> None:
    network = PowerFlowNetwork(cigre(), max_iteration=2)  # the Newton fallback must finish
    p, q = network.base_injections()
    at = network.bus_positions([4])
    got = network.solve_row(np.concatenate((p, q)), at, np.array([0.5, 0.1]))
    p_want, q_want = p.copy(), q.copy()
    p_want[at] += 0.5
    q_want[at] += 0.1
    np.testing.assert_allclose(got.vm_pu, cigre_network().solve(p_want, q_want).vm_pu,
                               atol=1e-9)
    row = np.concatenate((p, q))
    with pytest.raises(ValueError, match="another network"):
        network.solve_row(row, start=cigre_network().solve(p, q))
    with pytest.raises(ValueError, match="out of range"):
        network.solve_row(row, np.array([network.n_bus]), np.zeros(2))
    with pytest.raises(ValueError, match="shapes"):
        network.solve_row(row[:-1])
    bad = row.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="p_mw_bus: 1 non-finite"):
        network.solve_row(bad)


KERNELS = [kernel_module("numpy"), *([kernel_module("compiled")] if HAS_COMPILED else [])]


@pytest.mark.parametrize("kernels", KERNELS, ids=lambda m: m.__name__)
def test_bin_sums_add_like_bincount_and_check_their_arrays(kernels) -> None:
    # values of very different magnitude: the order of the additions shows in the last bits
    rng = np.random.default_rng(5)
    sizes = [4, 0, 7, 3]
    parts = [rng.normal(size=n) * 10.0 ** rng.integers(-6, 7, size=n) for n in sizes]
    ptr = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    bins = rng.integers(0, 5, size=ptr[-1]).astype(np.int64)
    out = np.full(6, np.nan)
    assert kernels.bin_sums(parts, ptr, bins, out)
    want = np.bincount(bins, weights=np.concatenate(parts), minlength=6)
    assert out.tobytes() == want.tobytes()
    assert kernels.bin_sums([], np.zeros(1, np.int64), np.zeros(0, np.int64), out)
    assert not out.any()
    bad = [p.copy() for p in parts]
    bad[2][1] = np.inf
    assert not kernels.bin_sums(bad, ptr, bins, out)
    huge = [np.full(2, 1e308)]  # finite terms whose sum overflows
    assert not kernels.bin_sums(huge, np.array([0, 2]), np.zeros(2, np.int64), out)
    with pytest.raises(ValueError, match="part 2 must be a contiguous 1-D float64 array of 7"):
        kernels.bin_sums([parts[0], parts[1], parts[2][:-1], parts[3]], ptr, bins, out)
    with pytest.raises(ValueError, match="part 0 must be"):
        kernels.bin_sums([parts[0].astype(np.float32), *parts[1:]], ptr, bins, out)
    with pytest.raises(ValueError, match="part 2 must be"):
        kernels.bin_sums([parts[0], parts[1], np.repeat(parts[2], 2)[::2], parts[3]], ptr,
                         bins, out)
    with pytest.raises(ValueError, match="bin 6 of element 3 outside 0..5"):
        kernels.bin_sums(parts, ptr, np.where(np.arange(bins.size) == 3, 6, bins), out)
    with pytest.raises(ValueError, match="bin -1 of element 0"):
        kernels.bin_sums(parts, ptr, np.where(np.arange(bins.size) == 0, -1, bins), out)
    with pytest.raises(ValueError, match="ptr must hold"):
        kernels.bin_sums(parts, ptr[:-1], bins, out)
    with pytest.raises(ValueError, match="one bin per element"):
        kernels.bin_sums(parts, ptr, bins[:-1], out)
    with pytest.raises(ValueError, match="bins must be a contiguous 1-D int64"):
        kernels.bin_sums(parts, ptr, bins.astype(np.int32), out)
    with pytest.raises(ValueError, match="out must be a writeable"):
        kernels.bin_sums(parts, ptr, bins, np.zeros(6, np.float32))
    with pytest.raises(TypeError):
        kernels.bin_sums(tuple(parts), ptr, bins, out)


def test_batch_without_flows_keeps_the_core_results() -> None:
    network = cigre_network()
    p, q = daily_injections(network, 3)
    res = network.solve_batch(p, q)
    assert res.line_loading_pct.shape == (3, network.n_line)
    with pytest.raises(AttributeError, match="flows=True"):
        _ = res.line_p_from_mw
    full = network.solve(p[1], q[1])
    core = network.solve(p[1], q[1], flows=False)
    for name in ("vm_pu", "va_degree", "line_loading_pct", "trafo_loading_pct", "ext_grid_p_mw"):
        np.testing.assert_array_equal(getattr(core, name), getattr(full, name))
        # the batch started step 1 from step 0's solution: same point within the tolerance
        np.testing.assert_allclose(getattr(res, name)[1], getattr(full, name), atol=1e-6)
    assert core.p_loss_mw == full.p_loss_mw
    with pytest.raises(AttributeError, match="flows=True"):
        _ = core.trafo_i_hv_ka


@pytest.mark.skipif(not HAS_COMPILED, reason="compiled kernel not built")
def test_compiled_kernel_and_twin_agree() -> None:
    compiled = PowerFlowNetwork(cigre(), backend="compiled")
    twin = PowerFlowNetwork(cigre(), backend="numpy")
    assert (compiled.backend, twin.backend) == ("compiled", "numpy")
    p, q = daily_injections(compiled, 12, seed=11)
    a = compiled.solve_batch(p, q, flows=True)
    b = twin.solve_batch(p, q, flows=True)
    np.testing.assert_array_equal(a.iterations, b.iterations)
    np.testing.assert_allclose(a._out, b._out, rtol=1e-9, atol=1e-10)
    one_a = compiled.solve(p[0], q[0])
    one_b = twin.solve(p[0], q[0])
    np.testing.assert_allclose(one_a._out, one_b._out, rtol=1e-9, atol=1e-10)


def test_environment_variable_selects_the_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDG_TWIN_PURE_PYTHON", "1")
    assert kernel_module().__name__ == "ext.powerflow_np"
    assert PowerFlowNetwork(pn.case33bw()).backend == "numpy"
    with pytest.raises(ValueError, match="backend"):
        kernel_module("fortran")  # type: ignore[arg-type]


def test_islanded_buses_are_reported_and_never_crash() -> None:
    net = copy.deepcopy(cigre())
    net.line.loc[[5, 6], "in_service"] = False  # cuts buses 4..11 off
    net.bus.loc[3, "in_service"] = False
    network = PowerFlowNetwork(net)
    assert list(network.out_of_service_buses) == [3]
    assert list(network.islanded_buses) == [4, 5, 6, 7, 8, 9, 10, 11]
    p, q = network.base_injections()
    res = network.solve(p, q)
    assert res.converged
    dead = np.isin(network.bus_index, [3, 4, 5, 6, 7, 8, 9, 10, 11])
    assert np.isnan(res.vm_pu[dead]).all() and not np.isnan(res.vm_pu[~dead]).any()
    assert res.p_islanded_mw == pytest.approx(p[dead].sum())
    assert res.q_islanded_mvar == pytest.approx(q[dead].sum())
    # power asked of islanded buses is not supplied by the external grid
    assert res.ext_grid_p_mw.sum() == pytest.approx(p[~dead].sum() + res.p_loss_mw, abs=1e-6)
    batch = network.solve_batch(np.vstack([p, 2 * p]), np.vstack([q, 2 * q]))
    assert batch.converged.all()
    for backend in BACKENDS:  # NaN marks the buses without voltage: the result is not finite
        other = PowerFlowNetwork(net, backend=backend)
        assert not other.solve(p, q).finite
        assert not other.solve_row(np.concatenate((p, q))).finite
        alive = np.where(dead, 0.0, p)
        assert PowerFlowNetwork(cigre(), backend=backend).solve(alive, q).finite


def test_newton_fallback_solves_what_the_fixed_point_leaves() -> None:
    net = cigre()
    network = PowerFlowNetwork(net, max_iteration=2)  # far too few fixed-point iterations
    p, q = network.base_injections()
    res = network.solve(p, q)
    assert res.converged
    reference = cigre_network().solve(p, q)
    np.testing.assert_allclose(res.vm_pu, reference.vm_pu, atol=1e-9)
    np.testing.assert_allclose(res.line_loading_pct, reference.line_loading_pct, atol=1e-6)
    batch = network.solve_batch(np.vstack([p, 0.5 * p]), np.vstack([q, 0.5 * q]), flows=True)
    assert batch.converged.all()
    np.testing.assert_allclose(batch.vm_pu[0], reference.vm_pu, atol=1e-9)
    np.testing.assert_allclose(batch.line_p_from_mw[0], reference.line_p_from_mw, atol=1e-8)


def test_unsolvable_step_is_flagged_not_raised() -> None:
    network = cigre_network()
    p, q = network.base_injections()
    impossible = network.solve(p * 500.0, q * 500.0)  # far beyond the voltage-collapse point
    assert not impossible.converged and not impossible.finite
    assert np.isnan(impossible.vm_pu).all()
    batch = network.solve_batch(np.vstack([p, p * 500.0, p]), np.vstack([q, q * 500.0, q]))
    np.testing.assert_array_equal(batch.converged, [True, False, True])
    np.testing.assert_allclose(batch.vm_pu[2], batch.vm_pu[0], atol=1e-8)


def test_aggregate_applies_sign_scaling_and_service() -> None:
    net = copy.deepcopy(pn.create_cigre_network_mv(with_der="all"))
    net.load.loc[net.load.index[0], "scaling"] = 0.5
    net.sgen.loc[net.sgen.index[0], "in_service"] = False
    network = PowerFlowNetwork(net)
    load_p = np.arange(len(net.load), dtype=float)
    p, _ = network.aggregate("load", load_p, np.zeros(len(net.load)))
    bus_pos = {b: i for i, b in enumerate(network.bus_index)}
    expected = np.zeros(network.n_bus)
    for k, (bus, scaling) in enumerate(zip(net.load.bus, net.load.scaling, strict=True)):
        expected[bus_pos[bus]] += load_p[k] * scaling
    np.testing.assert_allclose(p, expected)
    sgen_p = np.ones(len(net.sgen))
    p_gen, _ = network.aggregate("sgen", sgen_p, np.zeros(len(net.sgen)))
    assert p_gen.sum() == pytest.approx(-(len(net.sgen) - 1))  # generation enters negative
    two_d, _ = network.aggregate("load", np.vstack([load_p, 2 * load_p]),
                                 np.zeros((2, len(net.load))))
    np.testing.assert_allclose(two_d, [expected, 2 * expected])
    with pytest.raises(ValueError, match="p_mw"):
        network.aggregate("load", load_p[:-1], np.zeros(len(net.load) - 1))
    with pytest.raises(ValueError, match="element"):
        network.aggregate("motor", load_p, load_p)  # type: ignore[arg-type]


def test_bus_positions_locate_devices() -> None:
    net = copy.deepcopy(pn.case33bw())
    net.bus.index = net.bus.index * 10 + 5  # pandapower indices need not be positions
    net.line.from_bus = net.line.from_bus * 10 + 5
    net.line.to_bus = net.line.to_bus * 10 + 5
    net.load.bus = net.load.bus * 10 + 5
    net.ext_grid.bus = net.ext_grid.bus * 10 + 5
    network = PowerFlowNetwork(net)
    pos = network.bus_positions([325, 15, 15])
    np.testing.assert_array_equal(network.bus_index[pos], [325, 15, 15])
    p, q = network.base_injections()
    np.add.at(p, pos, 0.1)  # three devices of 100 kW
    res = network.solve(p, q)
    assert res.ext_grid_p_mw.sum() == pytest.approx(p.sum() + res.p_loss_mw, abs=1e-6)
    with pytest.raises(ValueError, match=r"buses: not in the network: \[7\]"):
        network.bus_positions([15, 7])


def test_bad_inputs_name_the_argument() -> None:
    network = cigre_network()
    p, q = network.base_injections()
    with pytest.raises(ValueError, match="p_mw_bus: expected shape"):
        network.solve(p[:-1], q)
    with pytest.raises(ValueError, match=r"q_mvar_bus: expected shape \(T, "):
        network.solve_batch(p[None, :], q)
    bad = p.copy()
    bad[4] = np.nan
    with pytest.raises(ValueError, match="p_mw_bus: 1 non-finite value"):
        network.solve(bad, q)
    with pytest.raises(ValueError, match="q_mvar_bus: 1 non-finite"):
        network.solve_batch(np.vstack([p, p]), np.vstack([q, bad]))
    with pytest.raises(ValueError, match="v0"):
        network.solve(p, q, v0=np.ones(3))
    # lists and integer arrays are coerced
    res = network.solve(list(p), list(q))
    assert res.converged
    with pytest.raises(ValueError, match="tolerance_ka"):
        PowerFlowNetwork(cigre(), tolerance_ka=0.0)
    with pytest.raises(ValueError, match="trafo_loading"):
        PowerFlowNetwork(cigre(), trafo_loading="heat")  # type: ignore[arg-type]


def test_unsupported_networks_are_refused_with_reasons() -> None:
    net = copy.deepcopy(pn.case33bw())
    pp.create_gen(net, bus=10, p_mw=0.1, vm_pu=1.0)
    with pytest.raises(UnsupportedNetworkError, match="net.gen"):
        PowerFlowNetwork(net)
    net = copy.deepcopy(pn.case33bw())
    net.load["const_z_p_percent"] = 50.0
    with pytest.raises(UnsupportedNetworkError, match="voltage-dependent"):
        PowerFlowNetwork(net)
    net = copy.deepcopy(pn.case33bw())
    net.ext_grid["in_service"] = False
    with pytest.raises(UnsupportedNetworkError, match="ext_grid"):
        PowerFlowNetwork(net)


def test_radial_network_factorises_without_fill_in() -> None:
    """Minimum-degree order on a tree: one off-diagonal per factor row (a sweep)."""
    network = PowerFlowNetwork(pn.case33bw())
    arrays = network._arrays
    n_pq = arrays["n_pq"]
    assert arrays["l_idx"].size == arrays["u_idx"].size == n_pq - 1
