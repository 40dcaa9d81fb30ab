"""The power-flow kernel against pandapower.runpp on standard, SimBench, meshed and odd grids.

Every grid gets random load and generation (hypothesis), including reverse power flow: per
element, loads scale in [0, 2] with random power factor, generation in [0, 4] times its rating.
Acceptance: |dvm| <= 1e-6 pu, |dva| <= 1e-4 deg, loading within 1e-4 percentage points, losses
within 1e-6 MW; the same with the NumPy twin (the suite runs again with SDG_TWIN_PURE_PYTHON=1).
"""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from pathlib import Path

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest
import simbench as sb
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ext.powerflow_net import PowerFlowNetwork

pytestmark = pytest.mark.kernels

VM_TOL_PU = 1e-6
VA_TOL_DEG = 1e-4
LOADING_TOL_PCT = 1e-4
LOSS_TOL_MW = 1e-6
FLOW_TOL_MW = 1e-6


def simbench_codes() -> list[str]:
    """Every SimBench LV and MV grid of scenario 0 with switches as SimBench sets them."""
    codes = sb.collect_all_simbench_codes(scenario=0)
    return sorted(c for c in codes if c.startswith("1-") and c.endswith("--0-sw")
                  and ("-LV-" in c or "-MV-" in c))


def _meshed_cigre_mv() -> pp.pandapowerNet:
    net = pn.create_cigre_network_mv(with_der="all")
    net.switch["closed"] = True  # closes the two feeder rings
    return net


def _meshed_mv_urban() -> pp.pandapowerNet:
    net = load_net("1-MV-urban--0-sw")
    net.switch["closed"] = True  # every open ring point closed
    return net


def _phase_shifter() -> pp.pandapowerNet:
    """CIGRE MV with an off-nominal tap and a phase-shifting transformer in a closed ring."""
    net = _meshed_cigre_mv()
    net.trafo["tap_side"] = "hv"
    net.trafo["tap_neutral"] = 0
    net.trafo["tap_min"] = -9
    net.trafo["tap_max"] = 9
    net.trafo["tap_step_percent"] = 1.5
    net.trafo["tap_step_degree"] = 0.0
    net.trafo["tap_changer_type"] = "Ratio"
    net.trafo.loc[0, "tap_pos"] = 3
    net.trafo.loc[1, "tap_pos"] = -2
    net.trafo.loc[1, "tap_changer_type"] = "Ideal"
    net.trafo.loc[1, "tap_step_degree"] = 2.0  # 4 degrees of extra phase shift
    net.trafo.loc[1, "tap_step_percent"] = 0.0
    # tie the two transformer feeders together so the shift drives a loop flow
    pp.create_line(net, 11, 14, length_km=2.0, std_type="NA2XS2Y 1x185 RM/25 12/20 kV")
    return net


def _islanded() -> pp.pandapowerNet:
    """CIGRE MV with a feeder cut off, an out-of-service bus and an out-of-service line."""
    net = pn.create_cigre_network_mv(with_der="all")
    net.line.loc[net.line.index[5], "in_service"] = False
    net.line.loc[net.line.index[6], "in_service"] = False
    net.bus.loc[3, "in_service"] = False
    return net


def _other_base() -> pp.pandapowerNet:
    """Kerber grid on a 10 MVA system base with a shunt capacitor and a reactor."""
    net = pn.create_kerber_landnetz_kabel_2()
    net.sn_mva = 10.0
    pp.create_shunt(net, bus=int(net.load.bus.iloc[3]), q_mvar=-0.01, p_mw=0.0)
    pp.create_shunt(net, bus=int(net.load.bus.iloc[-1]), q_mvar=0.005, p_mw=0.0005)
    return net


GRIDS = {
    "case33bw": pn.case33bw,
    "cigre_mv_der": lambda: pn.create_cigre_network_mv(with_der="all"),
    "cigre_lv": pn.create_cigre_network_lv,
    "kerber_landnetz_freileitung_1": pn.create_kerber_landnetz_freileitung_1,
    "kerber_vorstadtnetz_kabel_1": pn.create_kerber_vorstadtnetz_kabel_1,
    "mv_oberrhein": pn.mv_oberrhein,
    "meshed_cigre_mv": _meshed_cigre_mv,
    "meshed_mv_urban": _meshed_mv_urban,
    "phase_shifter_ring": _phase_shifter,
    "islanded_cigre_mv": _islanded,
    "kerber_10mva_base_shunts": _other_base,
    **{code: functools.partial(sb.get_simbench_net, code) for code in simbench_codes()},
}


_CACHE_DIR: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _net_cache(request: pytest.FixtureRequest) -> None:
    """Keep converted SimBench nets (without profiles) in pytest's cache: reading the SimBench
    CSV files takes seconds per grid, and the suite runs twice (compiled and twin)."""
    cache = getattr(request.config, "cache", None)  # None with ``-p no:cacheprovider``
    _CACHE_DIR[:] = [Path(cache.mkdir("sdg_twin_powerflow_nets"))] if cache else []


def load_net(name: str) -> pp.pandapowerNet:
    if not name.startswith("1-") or not _CACHE_DIR:
        return GRIDS[name]()
    path = _CACHE_DIR[0] / f"{name}-simbench{sb.__version__}-pandapower{pp.__version__}.json"
    if path.exists():
        return pp.from_json(str(path))
    net = GRIDS[name]()
    net.profiles = {}
    pp.to_json(net, str(path))
    return net


@functools.cache
def grid(name: str) -> tuple[pp.pandapowerNet, PowerFlowNetwork]:
    """The net (with generation added where it has none) and its converted network, once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_net(name)
    if len(net.sgen) == 0:  # generation at every load bus, so reverse flow can occur
        for bus, p_mw in zip(net.load.bus, net.load.p_mw, strict=True):
            pp.create_sgen(net, bus=int(bus), p_mw=float(p_mw), q_mvar=0.0)
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    return net, PowerFlowNetwork(net)


_SCRATCH: dict[int, pp.pandapowerNet] = {}


def reference_copy(net: pp.pandapowerNet) -> pp.pandapowerNet:
    """One copy per grid for pandapower to write its results into (copying is slow)."""
    if id(net) not in _SCRATCH:
        _SCRATCH[id(net)] = copy.deepcopy(net)
    return _SCRATCH[id(net)]


def random_state(net: pp.pandapowerNet, seed: int, load_scale: float, gen_scale: float):
    """Per-element powers: loads with random power factor, generation up to gen_scale."""
    rng = np.random.default_rng(seed)
    n_load, n_sgen, n_sto = len(net.load), len(net.sgen), len(net.storage)
    load_p = net.load.p_mw.to_numpy() * rng.uniform(0.0, 2.0, n_load) * load_scale
    load_q = load_p * rng.uniform(-0.3, 0.6, n_load)
    rated = np.maximum(net.sgen.p_mw.to_numpy(), 1e-3)
    sgen_p = rated * rng.uniform(0.0, 1.0, n_sgen) * gen_scale
    sgen_q = sgen_p * rng.uniform(-0.3, 0.3, n_sgen)
    sto_p = net.storage.p_mw.to_numpy() * rng.uniform(-1.0, 1.0, n_sto) if n_sto else np.zeros(0)
    sto_q = np.zeros(n_sto)
    return {"load": (load_p, load_q), "sgen": (sgen_p, sgen_q), "storage": (sto_p, sto_q)}


def run_reference(net: pp.pandapowerNet, state: dict, **options) -> pp.pandapowerNet | None:
    """pandapower.runpp on a copy with the given element powers (None if it diverges).

    runpp compares its tolerance with the mismatch in per unit of ``net.sn_mva``; scaling it
    keeps the reference's own error at 1e-10 MVA on grids with another system base. (At
    1e-8 MVA the mismatches of a large low-voltage grid add up to 1e-7 kA in its transformer's
    current, the tolerance compared against.)
    """
    options.setdefault("tolerance_mva", 1e-10 / net.sn_mva)
    ref = reference_copy(net)
    for element, (p, q) in state.items():
        ref[element]["p_mw"] = p
        ref[element]["q_mvar"] = q
    try:
        pp.runpp(ref, **options)
    except pp.LoadflowNotConverged:
        return None
    return ref


def bus_injections(network: PowerFlowNetwork, state: dict) -> tuple[np.ndarray, np.ndarray]:
    p = np.zeros(network.n_bus)
    q = np.zeros(network.n_bus)
    for element, (pe, qe) in state.items():
        dp, dq = network.aggregate(element, pe, qe)
        p += dp
        q += dq
    return p, q


def assert_matches(res, ref: pp.pandapowerNet) -> None:
    """Compare one result with pandapower's, NaN where pandapower has NaN."""

    def close(name: str, ours: np.ndarray, theirs: np.ndarray, tol: float) -> None:
        ours = np.asarray(ours, dtype=float)
        theirs = np.asarray(theirs, dtype=float)
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs),
                                      err_msg=f"{name}: NaN pattern differs")
        both = ~np.isnan(theirs)
        if both.any():
            worst = float(np.max(np.abs(ours[both] - theirs[both])))
            assert worst <= tol, f"{name}: worst difference {worst:.3g} > {tol:.3g}"

    close("vm_pu", res.vm_pu, ref.res_bus.vm_pu, VM_TOL_PU)
    close("va_degree", res.va_degree, ref.res_bus.va_degree, VA_TOL_DEG)
    close("line loading", res.line_loading_pct, ref.res_line.loading_percent, LOADING_TOL_PCT)
    close("line i_ka", res.line_i_ka, ref.res_line.i_ka, 1e-7)
    close("line p_from_mw", res.line_p_from_mw, ref.res_line.p_from_mw, FLOW_TOL_MW)
    close("line q_to_mvar", res.line_q_to_mvar, ref.res_line.q_to_mvar, FLOW_TOL_MW)
    close("line pl_mw", res.line_pl_mw, ref.res_line.pl_mw, LOSS_TOL_MW)
    close("trafo loading", res.trafo_loading_pct, ref.res_trafo.loading_percent,
          LOADING_TOL_PCT)
    close("trafo p_hv_mw", res.trafo_p_hv_mw, ref.res_trafo.p_hv_mw, FLOW_TOL_MW)
    close("trafo q_lv_mvar", res.trafo_q_lv_mvar, ref.res_trafo.q_lv_mvar, FLOW_TOL_MW)
    close("trafo i_lv_ka", res.trafo_i_lv_ka, ref.res_trafo.i_lv_ka, 1e-7)
    close("ext_grid p_mw", res.ext_grid_p_mw, ref.res_ext_grid.p_mw, FLOW_TOL_MW)
    close("ext_grid q_mvar", res.ext_grid_q_mvar, ref.res_ext_grid.q_mvar, FLOW_TOL_MW)
    losses = ref.res_line.pl_mw.sum() + ref.res_trafo.pl_mw.sum()
    assert abs(res.p_loss_mw - losses) <= LOSS_TOL_MW, (res.p_loss_mw, losses)


@pytest.mark.parametrize("name", sorted(GRIDS))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), load_scale=st.floats(0.0, 1.5),
       gen_scale=st.floats(0.0, 4.0))
@example(seed=1, load_scale=0.3, gen_scale=4.0)  # strong reverse power flow
@example(seed=2, load_scale=1.5, gen_scale=0.0)  # heavy load, no generation
def test_matches_runpp(name: str, seed: int, load_scale: float, gen_scale: float) -> None:
    net, network = grid(name)
    state = random_state(net, seed, load_scale, gen_scale)
    ref = run_reference(net, state)
    assume(ref is not None)
    res = network.solve(*bus_injections(network, state))
    assert res.converged
    assert_matches(res, ref)


def test_every_simbench_lv_and_mv_grid_is_covered() -> None:
    codes = simbench_codes()
    assert len([c for c in codes if "-LV-" in c]) == 6
    assert len([c for c in codes if "-MV-" in c]) == 4
    assert set(codes) <= set(GRIDS)


def test_reverse_power_flow_is_exercised() -> None:
    net, network = grid("1-MV-semiurb--0-sw")
    state = random_state(net, seed=1, load_scale=0.3, gen_scale=4.0)
    res = network.solve(*bus_injections(network, state))
    assert res.ext_grid_p_mw.sum() < 0  # the grid exports
    ref = run_reference(net, state)
    assert_matches(res, ref)


@pytest.mark.parametrize("option", [{"trafo_loading": "power"}, {"trafo_model": "pi"},
                                    {"calculate_voltage_angles": False}])
def test_runpp_options_are_mirrored(option: dict) -> None:
    net, _ = grid("phase_shifter_ring")
    network = PowerFlowNetwork(net, **option)
    state = random_state(net, seed=7, load_scale=1.0, gen_scale=1.0)
    ref = run_reference(net, state, **option)
    res = network.solve(*bus_injections(network, state))
    assert_matches(res, ref)


def test_phase_shift_changes_the_flows() -> None:
    """The extra shift really acts: without it the ring flows differ (so the test can fail)."""
    net, network = grid("phase_shifter_ring")
    plain = copy.deepcopy(net)
    plain.trafo["tap_step_degree"] = 0.0
    p, q = network.base_injections()
    shifted = network.solve(p, q)
    unshifted = PowerFlowNetwork(plain).solve(p, q)
    assert np.max(np.abs(shifted.line_p_from_mw - unshifted.line_p_from_mw)) > 0.1
    assert np.max(np.abs(shifted.va_degree - unshifted.va_degree)) > 1.0
