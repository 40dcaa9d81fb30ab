"""The production lines' kernel (``ext.factory``) and its NumPy twin: the exact step energies of
hand-built timelines, the machine state handed to the next window, and the same results, bit
for bit, from both."""

from __future__ import annotations

import datetime as dt
import importlib.util

import numpy as np
import pytest

from components.factory.config import FactoriesConfig
from components.factory.model import CHANNELS, FactoryFleet
from ext import select_kernel

pytestmark = pytest.mark.kernels

HAS_COMPILED = importlib.util.find_spec("ext.factory") is not None
BACKENDS = ["numpy", pytest.param("compiled", marks=pytest.mark.skipif(
    not HAS_COMPILED, reason="ext.factory is not built"))]
MONDAY = dt.datetime.fromisoformat("2026-06-01T00:00:00+08:00")


def _case(n: int, n_jobs: int, *, rng: np.random.Generator | None = None,
          **values: np.ndarray | float) -> dict:
    """Arguments of ``line_window`` for ``n`` machines: one 10-kW machine kind, no carry-over,
    every machine starting its warm-up at the lead; ``values`` override (or randomise)."""
    case = {
        "gap": np.zeros((n, n_jobs)), "proc": np.zeros((n, n_jobs)),
        "share": np.full((n, n_jobs), 0.5), "repair": np.zeros((n, n_jobs)),
        "setup": np.zeros((n, n_jobs)), "carry": np.zeros((n, 4)), "carry_share": np.zeros(n),
        "warm_start": np.zeros(n), "job_start": np.zeros(n), "idle_kw": np.full(n, 1.0),
        "setup_kw": np.full(n, 2.0), "rated_kw": np.full(n, 10.0),
        "setup_every": np.full(n, 3, dtype=np.int64),
        "jobs_since_setup": np.zeros(n, dtype=np.int64), "down_until": np.full(n, -np.inf),
        "lead_s": 0.0, "close_s": 3600.0, "edges_s": np.arange(0.0, 3601.0, 900.0),
        "continues": False,
    }
    case.update(values)
    return case


def _copy(case: dict) -> dict:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in case.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_built_timeline_gives_exact_step_energies(backend):
    kern = select_kernel("factory", backend)
    # warm-up 0..600 s idle (1 kW); slot 1: gap 300 s, job 1200 s at 5 kW, set-up 600 s at
    # 2 kW; slot 2: job 1200 s at 5 kW, past the close at 3600 s (cut there)
    case = _case(1, 2, job_start=np.array([600.0]), gap=np.array([[300.0, 0.0]]),
                 proc=np.array([[1200.0, 1200.0]]), setup=np.array([[600.0, 0.0]]))
    e_m, busy = kern.line_window(**case)
    # piece by piece: idle [0, 900), job [900, 2100), set-up [2100, 2700), job [2700, 3600)
    np.testing.assert_allclose(e_m, [[900.0, 900 * 5.0, 300 * 5.0 + 600 * 2.0, 900 * 5.0]])
    np.testing.assert_allclose(busy, [[0.0, 900.0, 300.0, 900.0]])
    # one job finished before the close (the set-up counter counts it), no repair pending
    np.testing.assert_array_equal(case["jobs_since_setup"], [1])
    assert case["down_until"][0] == -np.inf
    np.testing.assert_array_equal(case["carry"], np.zeros((1, 4)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_slot_in_progress_is_carried_and_played_first(backend):
    kern = select_kernel("factory", backend)
    first = _case(1, 1, gap=np.array([[600.0]]), proc=np.array([[6000.0]]),
                  share=np.array([[0.8]]), setup=np.array([[60.0]]), continues=True)
    kern.line_window(**first)
    # the job runs 600..6600 s: 3000 s are left at the close, then the set-up
    np.testing.assert_allclose(first["carry"], [[0.0, 3000.0, 0.0, 60.0]])
    np.testing.assert_allclose(first["carry_share"], [0.8])
    assert first["jobs_since_setup"][0] == 0  # not done yet
    # the next part starts with the rest: 3000 s at 8 kW, the set-up at 2 kW, then idle
    second = _case(1, 1, carry=first["carry"], carry_share=first["carry_share"],
                   gap=np.array([[1000.0]]),
                   lead_s=3600.0, warm_start=np.array([3600.0]), job_start=np.array([3600.0]),
                   close_s=7200.0, edges_s=np.array([3600.0, 6600.0, 7200.0]))
    e_m, busy = kern.line_window(**second)
    np.testing.assert_allclose(e_m, [[3000 * 8.0, 60 * 2.0 + 540 * 1.0]])
    np.testing.assert_allclose(busy, [[3000.0, 0.0]])
    assert second["jobs_since_setup"][0] == 1  # the carried job ends in this part


@pytest.mark.parametrize("backend", BACKENDS)
def test_repair_outlasting_the_window_keeps_the_machine_down(backend):
    kern = select_kernel("factory", backend)
    # machine 0 breaks down at 1200 s for 7200 s; machine 1 does not start before the close
    case = _case(2, 1, proc=np.array([[1200.0], [600.0]]), repair=np.array([[7200.0], [0.0]]),
                 job_start=np.array([0.0, 4000.0]), warm_start=np.array([0.0, 3600.0]))
    e_m, _ = kern.line_window(**case)
    np.testing.assert_allclose(case["down_until"], [8400.0, -np.inf])
    np.testing.assert_array_equal(case["jobs_since_setup"], [1, 0])
    np.testing.assert_allclose(e_m.sum(axis=1), [1200 * 5.0, 0.0])


def _random_case(rng: np.random.Generator, cover: bool = True) -> dict:
    n, n_jobs = int(rng.integers(1, 9)), int(rng.integers(1, 12))
    lead = float(rng.uniform(-3 * 3600, 86400))
    close = lead + float(rng.uniform(600, 30000))
    job_start = lead + rng.uniform(0, close - lead + 3600, n) * (rng.random(n) < 0.9)
    warm_start = np.minimum(lead + rng.uniform(0, 1800, n), job_start)

    def durations(scale, zero_share):
        d = rng.exponential(scale, (n, n_jobs))
        return np.where(rng.random((n, n_jobs)) < zero_share, 0.0, d)

    step = float(rng.choice([60.0, 300.0, 900.0, 3600.0]))
    k0 = np.floor(max(lead, 0.0) / step)
    edges = np.arange(k0, np.ceil(close / step) + 1) * step
    carry = np.where(rng.random((n, 1)) < 0.5, rng.exponential(300, (n, 4)), 0.0)
    gap = durations(300, 0.3)
    if cover:  # the slots cover the window, as the model draws them
        gap[:, -1] += close - lead
    return _case(
        n, n_jobs, gap=gap, proc=durations(1500, 0.1),
        share=rng.uniform(0, 1, (n, n_jobs)), repair=durations(2000, 0.8),
        setup=durations(600, 0.7), carry=carry, carry_share=rng.uniform(0, 1, n),
        warm_start=warm_start, job_start=job_start, idle_kw=rng.uniform(0, 5, n),
        setup_kw=rng.uniform(0, 10, n), rated_kw=rng.uniform(5, 200, n),
        setup_every=rng.integers(1, 6, n), jobs_since_setup=rng.integers(0, 5, n),
        down_until=np.where(rng.random(n) < 0.3, lead + 600.0, -np.inf), lead_s=lead,
        close_s=close, edges_s=edges, continues=bool(rng.random() < 0.5))


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.factory is not built")
def test_compiled_equals_numpy_bit_for_bit_on_random_windows():
    rng = np.random.default_rng(11)
    compiled, twin = select_kernel("factory", "compiled"), select_kernel("factory", "numpy")
    for m in range(300):
        case = _random_case(rng, cover=m % 4 > 0)  # also rows that end before the close
        a, b = _copy(case), _copy(case)
        for got, want in zip(compiled.line_window(**a), twin.line_window(**b)):
            np.testing.assert_array_equal(got, want)
        for key in ("carry", "carry_share", "jobs_since_setup", "down_until"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_energy_of_random_windows_closes(backend):
    kern = select_kernel("factory", backend)
    rng = np.random.default_rng(5)
    for _ in range(50):
        case = _random_case(rng)
        case["edges_s"] = np.array([case["lead_s"], case["close_s"]])  # the whole part
        e_m, busy = kern.line_window(**_copy(case))
        # integrate the same pieces directly: durations in order, cut at the close
        carry, n = case["carry"], case["proc"].shape[0]
        for i in range(n):
            d = [case["warm_start"][i] - case["lead_s"],
                 case["job_start"][i] - case["warm_start"][i]]
            kw = [0.0, case["idle_kw"][i]]
            slots = [(*carry[i], case["carry_share"][i])] + list(zip(
                case["gap"][i], case["proc"][i], case["repair"][i], case["setup"][i],
                case["share"][i]))
            for gap, proc, repair, setup, share in slots:
                d += [gap, proc, repair, setup]
                kw += [case["idle_kw"][i], share * case["rated_kw"][i], 0.0, case["setup_kw"][i]]
            end = np.minimum(np.cumsum(d), case["close_s"] - case["lead_s"])
            length = np.diff(np.concatenate([[0.0], end]))
            assert e_m[i, 0] == pytest.approx(np.dot(kw, length), rel=1e-9, abs=1e-6)
            assert busy[i, 0] == pytest.approx(length[3::4].sum(), rel=1e-9, abs=1e-6)


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.factory is not built")
def test_fleet_results_identical_with_either_kernel():
    section = FactoriesConfig.model_validate(
        [{"name": "a", "bus": 0, "preset": "auto_parts"},
         {"name": "b", "bus": 1, "preset": "food_processing"}])
    runs = [FactoryFleet(section, MONDAY, 900, 4 * 96, np.random.default_rng(3),
                         backend=backend).run() for backend in ("compiled", "numpy")]
    for channel in CHANNELS:
        np.testing.assert_array_equal(getattr(runs[0], channel), getattr(runs[1], channel))


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.factory is not built")
def test_compiled_kernel_rejects_arrays_of_the_wrong_kind_naming_them():
    kern = select_kernel("factory", "compiled")
    with pytest.raises(ValueError, match=r"share: needs a C-contiguous array of float64 with "
                                         r"shape \(2, 3\)"):
        kern.line_window(**_case(2, 3, share=np.zeros((2, 4))))
    with pytest.raises(ValueError, match="jobs_since_setup: needs a C-contiguous writable"):
        kern.line_window(**_case(2, 3, jobs_since_setup=np.zeros(2)))
    with pytest.raises(ValueError, match="carry: needs"):
        kern.line_window(**_case(2, 3, carry=np.zeros((4, 2)).T))


def _shed_case(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Step energies of ``n`` factories (critical parts below the totals, some equal, some
    idle) and shedding requests (negative, zero, within and beyond the sheddable part)."""
    p = rng.uniform(0.0, 900e3, n)
    crit = p * rng.choice([0.0, 0.3, 1.0], n)
    q = p * rng.uniform(-0.2, 0.6, n)
    energy = np.stack([p, q, crit, crit * rng.uniform(0.0, 0.6, n),
                       p * rng.uniform(-0.1, 0.5, n)], axis=1)
    energy[rng.random(n) < 0.2] = 0.0
    request = rng.choice([-50.0, 0.0, 100.0, 5e3], n) * rng.random(n)
    return energy, request


@pytest.mark.parametrize("backend", BACKENDS)
def test_shed_step_clamps_requests_to_the_sheddable_part(backend):
    kern = select_kernel("factory", backend)
    step_s = 900.0
    # factory 0: 1000 kW of which 400 critical, asks 900: sheds 600, Q of the rest in ratio;
    # factory 1: asks a negative amount: nothing; factory 2: all critical
    energy = step_s * np.array([[1000.0, 300.0, 400.0, 60.0, 500.0],
                                [200.0, 50.0, 50.0, 10.0, 100.0],
                                [300.0, 90.0, 300.0, 90.0, 0.0]])
    out = np.empty((5, 3))
    assert kern.shed_step(energy, step_s, np.array([900.0, -10.0, 50.0]), out)
    p, q, crit, defer, applied = out
    np.testing.assert_allclose(applied, [600.0, 0.0, 0.0])
    np.testing.assert_allclose(p, [400.0, 200.0, 300.0])
    np.testing.assert_allclose(q, [60.0, 50.0, 90.0])  # the non-critical Q is shed entirely
    np.testing.assert_allclose(crit, [400.0, 50.0, 300.0])
    np.testing.assert_allclose(defer, [0.0, 100.0, 0.0])  # never more than stays flexible
    # without a request the means are the energies over the step
    assert kern.shed_step(energy, step_s, None, out)
    np.testing.assert_array_equal(out[[0, 1, 2]], energy.T[[0, 1, 2]] / step_s)
    np.testing.assert_array_equal(out[4], np.zeros(3))
    energy[1, 1] = np.inf
    assert not kern.shed_step(energy, step_s, None, out)


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.factory is not built")
def test_shed_step_identical_with_either_kernel():
    rng = np.random.default_rng(11)
    kernels = [select_kernel("factory", b) for b in ("compiled", "numpy")]
    for n in (1, 3, 8, 33):
        for _ in range(20):
            energy, request = _shed_case(rng, n)
            for req in (request, None, np.zeros(n), -np.zeros(n)):
                outs = [np.full((5, n), np.nan) for _ in kernels]
                finite = [k.shed_step(energy, 900.0, req, o) for k, o in zip(kernels, outs)]
                assert finite == [True, True]
                assert outs[0].tobytes() == outs[1].tobytes()  # signed zeros alike
    with pytest.raises(ValueError, match=r"out: needs a C-contiguous writable"):
        kernels[0].shed_step(energy, 900.0, None, np.empty((n, 5)))
