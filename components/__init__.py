"""Simulators of the district's devices and networks, one subpackage per domain.

Each subpackage holds a model (plain Python, NumPy, SimPy; no mosaik, no ``twin``), a pydantic
``config.py`` for its scenario section, and a thin mosaik adapter in ``simulator.py``.
"""
