"""A mosaik simulator that settles the coordinator's trades into the run's ledger.

Each step it receives the coordinator's ``transactions`` (``(seller, buyer, kWh, CNY/kWh,
kind)`` tuples of that step), appends them to a :class:`~twin.ledger.SqliteLedger` and seals a
block at the end of every simulated hour (and at the end of the run), so block heights follow
the hours. The signing key is made for the run; its public half is written as ``ledger.pub``
beside ``ledger.sqlite``.

Outputs (for the KPIs): ``n_blocks`` sealed so far and ``n_transactions`` appended so far.
"""

from __future__ import annotations

from pathlib import Path

import mosaik_api_v3
import pandas as pd

from twin.ledger import LEDGER_FILE, SqliteLedger, generate_key

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"LedgerWriter": {"public": True, "params": ["folder"],
                                "attrs": ["transactions", "n_blocks", "n_transactions"]}},
}
BLOCK_S = 3600
"""A block per simulated hour."""


class LedgerWriter(mosaik_api_v3.Simulator):
    """Appends each step's trades to the run's ledger and seals a block per simulated hour."""

    def __init__(self) -> None:
        super().__init__(META)
        self.ledger: SqliteLedger | None = None
        self.n_tx = 0

    def init(self, sid: str, time_resolution: float = 1.0,
             start: str = "2026-06-01T00:00:00+08:00", step_s: int = 900, n_steps: int = 96,
             seed: int = 0) -> dict:
        """Clock as every simulator's: step ``k`` starts at ``start + k * step_s``."""
        self.sid = sid
        self.start = pd.Timestamp(start)
        self.step_s = int(step_s)
        self.n_steps = int(n_steps)
        self.steps_per_block = max(1, BLOCK_S // self.step_s)
        return self.meta

    def create(self, num: int, model: str, folder: str) -> list[dict]:
        """Open ``folder/ledger.sqlite`` (a new file) with a fresh signing key."""
        if num != 1 or self.ledger is not None:
            raise ValueError(f"{self.sid}: one LedgerWriter entity per world")
        path = Path(folder) / LEDGER_FILE
        if path.exists():
            raise ValueError(f"{self.sid}: {path} exists; a run writes a new ledger")
        self.ledger = SqliteLedger(path, generate_key())
        return [{"eid": "ledger", "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        """Append the step's trades; seal a block at the end of each hour and of the run."""
        k = time // self.step_s
        when = self.start + pd.Timedelta(seconds=time)
        for trades in inputs.get("ledger", {}).get("transactions", {}).values():
            for seller, buyer, kwh, price, kind in trades or ():
                self.ledger.append(k, when, seller, buyer, kwh, price, kind)
                self.n_tx += 1
        if (k + 1) % self.steps_per_block == 0 or k + 1 == self.n_steps:
            self.ledger.close_block(k)
        return time + self.step_s

    def get_data(self, outputs: dict) -> dict:
        return {"ledger": {a: (self.ledger.n_blocks if a == "n_blocks" else self.n_tx)
                           for a in outputs.get("ledger", ())}}

    def finalize(self) -> None:
        """Close the database (a run that failed leaves its unsealed trades out)."""
        if self.ledger is not None:
            self.ledger.close(discard_pending=True)
