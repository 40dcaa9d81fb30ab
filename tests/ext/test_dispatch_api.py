"""The allocation wrapper: kernel choice, input coercion and errors that name the argument."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import ext.dispatch_np
from ext.dispatch_api import allocate, kernel_module

pytestmark = pytest.mark.kernels

HAS_COMPILED = importlib.util.find_spec("ext.dispatch") is not None
BACKENDS = ["numpy", pytest.param("compiled", marks=pytest.mark.skipif(
    not HAS_COMPILED, reason="ext.dispatch is not built"))]

ARRAYS = ("need_kwh", "t_dep_s", "p_max_kw", "p_min_kw", "site", "site_cap_kw", "site_pv_kw")


def valid_args() -> dict:
    return {
        "need_kwh": np.array([10.0, 0.0, 25.0]),
        "t_dep_s": np.array([3600.0, 7200.0, 28800.0]),
        "p_max_kw": np.array([11.0, 7.4, 22.0]),
        "p_min_kw": np.array([0.0, -7.4, -10.0]),
        "site": np.array([0, 1, 1]),
        "site_cap_kw": np.array([50.0, 30.0]),
        "site_pv_kw": np.array([5.0, 0.0]),
        "grid_budget_kw": 20.0,
        "step_s": 900.0,
        "eta_ch": 0.95,
        "eta_dis": 0.95,
    }


def test_kernel_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert kernel_module("numpy") is ext.dispatch_np
    monkeypatch.setenv("SDG_TWIN_PURE_PYTHON", "1")
    assert kernel_module() is ext.dispatch_np
    monkeypatch.setenv("SDG_TWIN_PURE_PYTHON", "0")
    assert kernel_module().__name__ == ("ext.dispatch" if HAS_COMPILED else "ext.dispatch_np")
    with pytest.raises(ValueError, match="backend: must be 'auto', 'compiled' or 'numpy'"):
        kernel_module("cython")


@pytest.mark.skipif(not HAS_COMPILED, reason="ext.dispatch is not built")
def test_compiled_kernel_is_chosen_when_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDG_TWIN_PURE_PYTHON", raising=False)
    assert kernel_module("compiled").__name__ == "ext.dispatch"
    assert kernel_module("auto").__name__ == "ext.dispatch"


@pytest.mark.parametrize("backend", BACKENDS)
def test_valid_call(backend: str) -> None:
    p, info = allocate(**valid_args(), backend=backend)
    assert p.dtype == np.float64 and p.shape == (3,)
    assert info.pv_used_kw.shape == info.site_p_kw.shape == info.site_shortfall_kw.shape == (2,)


def bad_element(name: str, value) -> tuple[dict, str]:
    args = valid_args()
    arr = np.array(args[name], dtype=float if name != "site" else np.int64)
    arr[-1] = value
    args[name] = arr
    return args, f"^{name}: .*element {arr.size - 1} is"


INVALID_ELEMENTS = [
    ("need_kwh", np.nan), ("need_kwh", -1.0), ("need_kwh", np.inf),
    ("t_dep_s", 0.0), ("t_dep_s", np.nan), ("t_dep_s", -60.0),
    ("p_max_kw", -0.1), ("p_max_kw", np.nan),
    ("p_min_kw", 0.5), ("p_min_kw", -np.inf), ("p_min_kw", np.nan),
    ("site_cap_kw", -1.0), ("site_cap_kw", np.nan),
    ("site_pv_kw", -1.0), ("site_pv_kw", np.inf),
    ("site", 2), ("site", -1),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "value"), INVALID_ELEMENTS)
def test_invalid_element_names_the_argument(backend: str, name: str, value) -> None:
    args, pattern = bad_element(name, value)
    with pytest.raises(ValueError, match=pattern):
        allocate(**args, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rate_below_max_power_is_raised_to_it(backend: str) -> None:
    args = valid_args()
    p_default, _ = allocate(**args, backend=backend)
    p_low, _ = allocate(**args, p_rate_kw=[0.0, 7.4, 21.0], backend=backend)
    np.testing.assert_array_equal(p_low, p_default)
    p_high, _ = allocate(**args, p_rate_kw=[11.0, 7.4, 44.0], backend=backend)
    assert p_high[2] < p_default[2]  # a faster future charger leaves more laxity: less now
    with pytest.raises(ValueError, match=r"^p_rate_kw: must be in \[0, 1e9\] .*element 1 is"):
        allocate(**args, p_rate_kw=[11.0, np.nan, 22.0], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_invalid_argument_is_reported(backend: str) -> None:
    args = valid_args()
    args["p_min_kw"] = np.array([0.0, 1.0, 0.0])
    args["need_kwh"] = np.array([1.0, 2.0, np.nan])
    with pytest.raises(ValueError, match="^need_kwh: .*element 2 is nan"):
        allocate(**args, backend=backend)


@pytest.mark.parametrize("name", ARRAYS[1:5])
def test_length_mismatch_names_the_argument(name: str) -> None:
    args = valid_args()
    args[name] = np.asarray(args[name])[:2]
    with pytest.raises(ValueError, match=f"^{name}: has 2 values, need_kwh has 3"):
        allocate(**args)
    with pytest.raises(ValueError, match=f"^{name}: has 2 values, need_kwh has 3"):
        allocate(**args, p_rate_kw=[11.0, 7.4, 22.0])


def test_site_arrays_must_match() -> None:
    args = valid_args()
    args["site_pv_kw"] = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="^site_pv_kw: has 3 values, site_cap_kw has 2"):
        allocate(**args)
    with pytest.raises(ValueError, match="^p_rate_kw: has 2 values"):
        allocate(**valid_args(), p_rate_kw=[11.0, 7.4])


@pytest.mark.parametrize(("name", "value", "pattern"), [
    ("need_kwh", np.ones((3, 1)), "^need_kwh: must be one-dimensional"),
    ("site", np.zeros((1, 3), np.int64), "^site: must be one-dimensional"),
    ("site", np.array([0.0, 1.0, 1.0]), "^site: must hold integer site indices"),
    ("t_dep_s", ["soon", "later", "never"], "^t_dep_s: must be an array of numbers"),
    ("step_s", 0.0, r"^step_s: must be in \[0.001, 1e9\] \[s\], got 0.0"),
    ("step_s", np.nan, r"^step_s: must be in"),
    ("eta_ch", 0.0, r"^eta_ch: must be in \(0, 1\]"),
    ("eta_dis", 1.2, r"^eta_dis: must be in \(0, 1\]"),
    ("grid_budget_kw", np.nan, "^grid_budget_kw: must be in"),
    ("grid_budget_kw", "lots", "^grid_budget_kw: must be a number"),
])
def test_malformed_argument_names_it(name: str, value, pattern: str) -> None:
    args = valid_args()
    args[name] = value
    with pytest.raises(ValueError, match=pattern):
        allocate(**args)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_checks_its_array_sizes(backend: str) -> None:
    """Called directly (bypassing the wrapper), the kernel still refuses mismatched arrays."""
    kernel = kernel_module(backend)
    a = np.zeros(3)
    site = np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="array sizes do not match"):
        kernel.allocate_into(a, a, a, a, a, site, np.zeros(2), np.zeros(2), 0.0, 900.0, 1.0, 1.0,
                             np.zeros(2), np.zeros((3, 2)), np.zeros(kernel.N_TOTALS))
