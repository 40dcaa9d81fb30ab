"""Compiled kernels (Cython), each with a NumPy twin of the same signature.

The compiled module is used when it was built; the twin otherwise, or when the environment
variable ``SDG_TWIN_PURE_PYTHON=1`` asks for it (one CI pass runs the tests that way).
"""

import importlib
import os
from types import ModuleType
from typing import Literal

Backend = Literal["auto", "compiled", "numpy"]


def select_kernel(name: str, backend: Backend = "auto") -> ModuleType:
    """Return the compiled ``ext.<name>`` or its twin ``ext.<name>_np``.

    ``"auto"`` takes the compiled module unless it is missing or ``SDG_TWIN_PURE_PYTHON=1``.
    """
    if backend not in ("auto", "compiled", "numpy"):
        raise ValueError(f"backend: must be 'auto', 'compiled' or 'numpy', got {backend!r}")
    if backend == "numpy" or (
        backend == "auto" and os.environ.get("SDG_TWIN_PURE_PYTHON", "") == "1"
    ):
        return importlib.import_module(f"ext.{name}_np")
    try:
        return importlib.import_module(f"ext.{name}")
    except ImportError:
        if backend == "compiled":
            raise ImportError(
                f"backend='compiled' asks for ext.{name}, which is not built; build it with "
                "`python setup.py build_ext --inplace` or use backend='auto'"
            ) from None
        return importlib.import_module(f"ext.{name}_np")
