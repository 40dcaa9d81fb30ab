"""Battery ageing (Xu et al. 2018): stress factors, streaming rainflow, calendar and cycle fade."""

import importlib.util
from itertools import pairwise

import numpy as np
import pytest

from components.ev.ageing import (
    FleetAgeing,
    StreamingRainflow,
    nonlinear_fade,
    stress_dod,
    stress_soc,
    stress_temperature,
)
from components.ev.config import AgeingParams
from ext import select_kernel

P = AgeingParams()
YEAR_S = 365 * 86_400
HAS_COMPILED = importlib.util.find_spec("ext.evstep") is not None
BACKENDS = ["numpy", pytest.param("compiled", marks=pytest.mark.skipif(
    not HAS_COMPILED, reason="ext.evstep is not built"))]
ASTM_EXAMPLE = [-2.0, 1.0, -3.0, 5.0, -1.0, 3.0, -4.0, 4.0, -2.0]
"""The load history of the rainflow example of ASTM E1049-85 (5.4.4); its cycle count:
range 3 x 0.5, 4 x 1.5, 6 x 0.5, 8 x 1.0, 9 x 0.5."""


def reference_rainflow(points: list[float]) -> list[tuple[float, float, float]]:
    """ASTM E1049-85 three-point rainflow, textbook form: (range, mean, count) per cycle."""
    out, stack = [], []
    for x in points:
        stack.append(x)
        while len(stack) >= 3:
            x_rng, y_rng = abs(stack[-1] - stack[-2]), abs(stack[-2] - stack[-3])
            if x_rng < y_rng:
                break
            mean = (stack[-2] + stack[-3]) / 2
            if len(stack) == 3:
                out.append((y_rng, mean, 0.5))
                stack.pop(0)
            else:
                out.append((y_rng, mean, 1.0))
                last = stack.pop()
                del stack[-2:]
                stack.append(last)
    out += [(abs(b - a), (a + b) / 2, 0.5) for a, b in zip(stack[:-1], stack[1:], strict=True)]
    return out


def turning_points(x: np.ndarray) -> list[float]:
    keep = [0] + [i for i in range(1, len(x) - 1)
                  if (x[i] - x[i - 1]) * (x[i + 1] - x[i]) < 0] + [len(x) - 1]
    return [float(x[i]) for i in keep]


def xu_stress(cycles: list[tuple[float, float, float]], temp_c: float = 25.0) -> float:
    return sum(n * stress_dod(np.array([r]), P)[0] * stress_soc(m, P)
               * stress_temperature(temp_c, P) for r, m, n in cycles)


def test_stress_factors_at_reference_conditions():
    assert stress_soc(P.sigma_ref, P) == pytest.approx(1.0)
    assert stress_temperature(P.temp_ref_c, P) == pytest.approx(1.0)
    # a full cycle: 1 / (k1 + k3) as published
    assert stress_dod(np.array([1.0]), P)[0] == pytest.approx(1 / (1.40e5 - 1.23e5))
    assert stress_dod(np.array([0.0]), P)[0] == 0.0
    depth = np.linspace(0.01, 1, 50)
    assert np.all(np.diff(stress_dod(depth, P)) > 0)  # deeper cycles wear more
    assert stress_temperature(35.0, P) > 1.0 > stress_temperature(10.0, P)
    assert stress_soc(0.9, P) > 1.0 > stress_soc(0.2, P)


def test_nonlinear_fade_shape():
    assert nonlinear_fade(np.array([0.0]), P)[0] == pytest.approx(0.0)
    f = np.linspace(0, 1, 200)
    fade = nonlinear_fade(f, P)
    assert np.all(np.diff(fade) > 0)
    # early SEI formation: the slope at 0 is alpha*beta + (1 - alpha)
    slope0 = (nonlinear_fade(np.array([1e-7]), P)[0]) / 1e-7
    assert slope0 == pytest.approx(P.alpha_sei * P.beta_sei + 1 - P.alpha_sei, rel=1e-4)


def test_streaming_rainflow_matches_the_textbook_algorithm():
    rng = np.random.default_rng(7)
    signals = [turning_points(np.clip(0.5 + np.cumsum(rng.normal(0, 0.15, rng.integers(3, 90))),
                                      0, 1)) for _ in range(150)]
    rf = StreamingRainflow(np.array([s[0] for s in signals]), P, max_depth=64)
    for j in range(1, max(len(s) for s in signals) - 1):
        ids = np.array([i for i, s in enumerate(signals) if j < len(s) - 1])
        if ids.size:
            rf.push(ids, np.array([signals[i][j] for i in ids]), 25.0)
    last = np.array([s[-1] for s in signals])
    got = rf.total_stress(last, 25.0)
    want = np.array([xu_stress(reference_rainflow(s)) for s in signals])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # evaluation does not change the counter
    np.testing.assert_allclose(rf.total_stress(last, 25.0), got)


def test_rainflow_counts_repeated_daily_cycles_as_full_cycles():
    # 100 days of 0.8 -> 0.3 -> 0.8: 100 full cycles of depth 0.5 (one half cycle in the residue)
    rf = StreamingRainflow(np.array([0.8]), P)
    for _ in range(100):
        rf.push(np.array([0]), np.array([0.3]), 25.0)
        rf.push(np.array([0]), np.array([0.8]), 25.0)
    per_cycle = stress_dod(np.array([0.5]), P)[0] * stress_soc(0.55, P)
    assert rf.n_cycles[0] == pytest.approx(99.5)
    assert rf.total_stress(None, 25.0)[0] == pytest.approx(100 * per_cycle, rel=1e-12)


def test_calendar_fade_of_a_year_matches_the_closed_form():
    age = FleetAgeing(np.array([0.5, 0.9]), P)
    for _ in range(365):
        age.add_calendar(np.array([0.5, 0.9]), 25.0, 86_400)
    f_t = P.k_time * YEAR_S * np.array([1.0, np.exp(P.k_sigma * 0.4)])
    np.testing.assert_allclose(age.linearised(), f_t, rtol=1e-12)
    fade = age.fade()
    np.testing.assert_allclose(fade, nonlinear_fade(f_t, P), rtol=1e-12)
    # LMO parameter set: a few percent in the first year, more at high SoC
    assert 0.03 < fade[0] < fade[1] < 0.12


def test_observe_finds_turning_points_and_ignores_noise():
    age = FleetAgeing(np.array([0.5]), P)
    ids = np.array([0])
    soc = 0.5
    for target in (0.9, 0.2, 0.6):  # charge, drive/discharge, charge, in small increments
        for s in np.linspace(soc, target, 7)[1:]:
            age.observe(ids, np.array([soc]), np.array([s]))
            soc = s
        age.observe(ids, np.array([soc]), np.array([soc + 1e-12]))  # no direction
    age.flush()
    # 0.5 -> 0.9 closed as a half cycle containing the start; 0.6 is still the running extreme
    assert age.rainflow.stack[0, : age.rainflow.depth[0]].tolist() == pytest.approx([0.9, 0.2])
    assert age.rainflow.n_cycles[0] == 0.5
    want = xu_stress(reference_rainflow([0.5, 0.9, 0.2, 0.6]), P.temp_ref_c)
    assert age.linearised()[0] == pytest.approx(want, rel=1e-12)


def test_buffer_overflow_flushes_in_order():
    age = FleetAgeing(np.array([0.5, 0.5]), P, buffer=4)
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.normal(0, 0.2, 200))
    path = 0.05 + 0.9 * (walk - walk.min()) / (walk.max() - walk.min())  # no plateaus
    soc = np.array([0.5, 0.5])
    for s in path:
        new = np.array([s, 0.5])
        age.observe(np.array([0, 1]), soc, new)
        soc = new
    want = xu_stress(reference_rainflow(turning_points(np.r_[0.5, path])))
    assert age.linearised()[0] == pytest.approx(want, rel=1e-12)
    assert age.linearised()[1] == 0.0


def rainflow_call(backend: str, stack: np.ndarray, depth: np.ndarray, rows: list[list[float]],
                  ids: np.ndarray | None = None) -> tuple[int, list[tuple]]:
    """Feed ``rows[i]`` to signal ``ids[i]`` with the kernel; the cycles as (ev, range, mean,
    weight) in list order."""
    ids = np.arange(len(rows)) if ids is None else ids
    width = max(1, max(len(r) for r in rows))
    points = np.zeros((len(rows), width))
    for i, r in enumerate(rows):
        points[i, : len(r)] = r
    n_points = np.array([len(r) for r in rows], dtype=np.int64)
    room = int(n_points.sum() + depth[ids].sum())
    out = (np.empty(room, dtype=np.int64), np.empty(room), np.empty(room), np.empty(room))
    m = select_kernel("evstep", backend).rainflow(ids, points, n_points, stack, depth, *out)
    return m, list(zip(*(o[:m].tolist() for o in out), strict=True))


def residue(stack: np.ndarray, depth: np.ndarray, j: int) -> list[tuple]:
    return [(abs(b - a), (a + b) / 2, 0.5) for a, b in pairwise(stack[j, : depth[j]])]


@pytest.mark.kernels
@pytest.mark.parametrize("backend", BACKENDS)
def test_rainflow_kernel_counts_the_astm_example(backend):
    stack, depth = np.zeros((1, 8)), np.ones(1, dtype=np.int64)
    stack[0, 0] = ASTM_EXAMPLE[0]
    _, cycles = rainflow_call(backend, stack, depth, [ASTM_EXAMPLE[1:]])
    counted = {}
    for _, rng, mean, weight in [(0, *c) for c in residue(stack, depth, 0)] + cycles:
        counted[rng] = counted.get(rng, 0.0) + weight
    assert counted == {3.0: 0.5, 4.0: 1.5, 6.0: 0.5, 8.0: 1.0, 9.0: 0.5}
    # and cycle by cycle, as the textbook algorithm closes them
    want = reference_rainflow(ASTM_EXAMPLE)
    got = [c[1:] for c in cycles] + residue(stack, depth, 0)
    assert got == want


@pytest.mark.kernels
@pytest.mark.parametrize("backend", BACKENDS)
def test_rainflow_kernel_matches_the_textbook_algorithm_in_chunks(backend):
    rng = np.random.default_rng(17)
    signals = [turning_points(np.clip(0.5 + np.cumsum(rng.normal(0, 0.15, rng.integers(3, 60))),
                                      0, 1)) for _ in range(80)]
    n = len(signals)
    stack, depth = np.zeros((n, 64)), np.ones(n, dtype=np.int64)
    stack[:, 0] = [s[0] for s in signals]
    fed = np.ones(n, dtype=np.int64)
    closed: list[list[tuple]] = [[] for _ in range(n)]
    while (fed < [len(s) for s in signals]).any():
        ids = np.flatnonzero(fed < [len(s) for s in signals])
        ids = ids[rng.random(ids.size) < 0.7]  # some signals wait a round
        rows = []
        for j in ids:
            take = int(rng.integers(0, 5))  # chunks of 0..4 points, in order
            rows.append(signals[j][fed[j]: fed[j] + take])
            fed[j] += len(rows[-1])
        if ids.size:
            _, cycles = rainflow_call(backend, stack, depth, rows, ids)
            for ev, *c in cycles:
                closed[ev].append(tuple(c))
    for j, s in enumerate(signals):
        assert closed[j] + residue(stack, depth, j) == reference_rainflow(s)


@pytest.mark.kernels
@pytest.mark.skipif(not HAS_COMPILED, reason="ext.evstep is not built")
def test_rainflow_compiled_equals_numpy_with_full_stacks():
    rng = np.random.default_rng(5)
    n, max_depth = 40, 4  # shallow stacks: the oldest range is counted when one is full
    stacks = {b: np.zeros((n, max_depth)) for b in ("compiled", "numpy")}
    depths = {b: np.ones(n, dtype=np.int64) for b in stacks}
    counts = {b: 0 for b in stacks}
    for _ in range(25):
        ids = np.sort(rng.choice(n, int(rng.integers(1, n)), replace=False))
        rows = [rng.uniform(0, 1, int(rng.integers(0, 6))).tolist() for _ in ids]
        results = {b: rainflow_call(b, stacks[b], depths[b], rows, ids) for b in stacks}
        # each signal's cycles in the order they closed (signals may interleave differently)
        by_signal = {b: sorted(results[b][1], key=lambda c: c[0]) for b in stacks}
        assert by_signal["compiled"] == by_signal["numpy"]
        for b in stacks:
            counts[b] += results[b][0]
        np.testing.assert_array_equal(stacks["compiled"], stacks["numpy"])
        np.testing.assert_array_equal(depths["compiled"], depths["numpy"])
    assert counts["compiled"] > 100 and depths["compiled"].max() == max_depth


@pytest.mark.kernels
@pytest.mark.parametrize("backend", BACKENDS)
def test_rainflow_kernel_rejects_bad_arguments_and_changes_nothing(backend):
    kern = select_kernel("evstep", backend)
    stack, depth = np.zeros((3, 8)), np.ones(3, dtype=np.int64)
    points, n_points = np.full((2, 2), 0.5), np.array([2, 1], dtype=np.int64)
    out = (np.empty(8, dtype=np.int64), np.empty(8), np.empty(8), np.empty(8))
    before = stack.copy(), depth.copy()
    bad = [
        ((np.array([1, 1]), points, n_points, stack, depth), "ids must be unique"),
        ((np.array([0, 3]), points, n_points, stack, depth), r"unique signals in \[0, 3\)"),
        ((np.array([0, 1]), points, np.array([2, 3]), stack, depth), "n_points"),
        ((np.array([0, 1]), points[:1], n_points, stack, depth), "one row per id"),
        ((np.array([0, 1]), points, n_points, stack, np.zeros(3, dtype=np.int64)), "depth"),
        ((np.array([0, 1]), points, n_points, stack[:, :1].copy(), depth), "room for 2 points"),
    ]
    for args, match in bad:
        with pytest.raises(ValueError, match=match):
            kern.rainflow(*args, *out)
    with pytest.raises(ValueError, match="room for 4 cycles, needs 5"):
        kern.rainflow(np.array([0, 1]), points, n_points, stack, depth, *(o[:4] for o in out))
    np.testing.assert_array_equal(stack, before[0])
    np.testing.assert_array_equal(depth, before[1])
    if backend == "compiled":
        with pytest.raises(ValueError, match="points: needs a C-contiguous 2-d array of float64"):
            kern.rainflow(np.array([0, 1]), points.astype(np.float32), n_points, stack, depth,
                          *out)
        with pytest.raises(ValueError, match="stack: needs a C-contiguous writable"):
            kern.rainflow(np.array([0, 1]), points, n_points, stack[:, ::2], depth, *out)


@pytest.mark.kernels
@pytest.mark.parametrize("backend", BACKENDS)
def test_fleet_ageing_does_not_depend_on_when_turning_points_are_flushed(backend):
    # a daily pattern with noise, fed step by step and flushed when the buffer fills
    rng = np.random.default_rng(9)
    n = 30
    age = FleetAgeing(np.full(n, 0.5), P, buffer=4, backend=backend)
    soc = np.full(n, 0.5)
    for step in range(400):
        new = np.clip(soc + rng.normal(0, 0.05, n) * (rng.random(n) < 0.5), 0.05, 0.95)
        ids = np.arange(n)
        age.observe(ids, soc, new)
        soc = new
        if age.tp_n.max() >= age.tp_buf.shape[1] - 1:
            age.flush()
        if step % 96 == 95:
            age.add_calendar(soc, 25.0, 86_400)
    want = FleetAgeing(np.full(n, 0.5), P, buffer=4, backend="numpy")
    rng = np.random.default_rng(9)
    soc = np.full(n, 0.5)
    for step in range(400):
        new = np.clip(soc + rng.normal(0, 0.05, n) * (rng.random(n) < 0.5), 0.05, 0.95)
        want.observe(np.arange(n), soc, new)
        soc = new
        if step % 96 == 95:
            want.add_calendar(soc, 25.0, 86_400)
    np.testing.assert_array_equal(age.linearised(), want.linearised())
    assert age.rainflow.n_cycles.sum() > 100
