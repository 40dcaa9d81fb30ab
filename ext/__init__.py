"""Compiled kernels (Cython), each with a NumPy twin of the same signature.

The compiled module is used when it was built; the twin otherwise, or when the environment
variable ``SDG_TWIN_PURE_PYTHON=1`` asks for it (one CI pass runs the tests that way).
"""
