"""Every step's outputs of the simulators, kept in memory for the run folder and KPIs.

The world reads each in-process simulator's outputs right after its step (see
:func:`twin.world.build`) and hands them here, instead of routing them to a sink simulator:
a sink costs mosaik a simulator process and a dependency per source on every step, measured at
a third of a simulated year's wall time. Rows are preallocated once the first value of an
attribute shows its width.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Recorder:
    """Rows of every recorded attribute, keyed by ``(simulator name, attribute)``."""

    def __init__(self, n_steps: int) -> None:
        self.n_steps = int(n_steps)
        self.series: dict[tuple[str, str], np.ndarray] = {}
        self._rows: dict[str, dict[str, np.ndarray]] = {}  # the same rows by source, then attr

    def record(self, k: int, source: str, values: dict[str, Any]) -> None:
        """Keep step ``k``'s ``values`` (attribute -> number or array) of ``source``."""
        rows_of = self._rows.get(source)
        if rows_of is None:
            rows_of = self._rows[source] = {}
        for attr, value in values.items():
            rows = rows_of.get(attr)
            if rows is None:
                rows = np.full((self.n_steps, *np.shape(value)), np.nan)
                rows_of[attr] = self.series[(source, attr)] = rows
            rows[k] = value
