"""Settles the coordinator's trades into the run's ledger as the run goes.

Each step the world hands over the coordinator's ``transactions`` (``(seller, buyer, kWh,
CNY/kWh, kind)`` tuples of that step); they are appended to a :class:`~twin.ledger.SqliteLedger`
and a block is sealed at the end of every simulated hour (and at the end of the run), so block
heights follow the hours. The signing key is made for the run; its public half is written as
``ledger.pub`` beside ``ledger.sqlite``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd

from twin.ledger import LEDGER_FILE, SqliteLedger, generate_key

BLOCK_S = 3600
"""A block per simulated hour."""


class LedgerWriter:
    """Appends each step's trades to ``folder/ledger.sqlite`` and seals a block per hour."""

    def __init__(self, folder: str | Path, start: pd.Timestamp, step_s: int,
                 n_steps: int) -> None:
        path = Path(folder) / LEDGER_FILE
        if path.exists():
            raise ValueError(f"{path} exists; a run writes a new ledger")
        self.ledger = SqliteLedger(path, generate_key())
        self.start = pd.Timestamp(start)
        self._start_utc = self.start.tz_convert("UTC").to_pydatetime()
        self._tz = self.start.tzinfo
        self.step_s = int(step_s)
        self.n_steps = int(n_steps)
        self.steps_per_block = max(1, BLOCK_S // self.step_s)
        self.n_tx = 0

    def add(self, k: int, trades) -> dict[str, int]:
        """Append step ``k``'s trades, seal the block if the hour (or run) ends there; return
        the blocks sealed and trades appended so far."""
        # the step's start in the scenario's zone (via UTC, so also right across DST changes)
        when = (self._start_utc + timedelta(seconds=k * self.step_s)).astimezone(self._tz)
        self.n_tx += self.ledger.extend(k, when, trades or ())
        if (k + 1) % self.steps_per_block == 0 or k + 1 == self.n_steps:
            self.ledger.close_block(k)
        return {"n_blocks": self.ledger.n_blocks, "n_transactions": self.n_tx}

    def close(self) -> None:
        """Close the database (a run that failed leaves its unsealed trades out)."""
        self.ledger.close(discard_pending=True)
