"""Settles the coordinator's trades into the run's ledger as the run goes.

Each step the world hands over the coordinator's ``transactions`` (``(seller, buyer, kWh,
CNY/kWh, kind)`` tuples of that step); they are appended to a :class:`~twin.ledger.SqliteLedger`
and a block is sealed at the end of every simulated hour (and at the end of the run), so block
heights follow the hours. The signing key is made for the run; its public half is written as
``ledger.pub`` beside ``ledger.sqlite``.

Sealing a block (hashing, signing, writing SQLite) costs about a sixth of a step's time. Where
the machine has a spare core, a forked process seals the blocks while the simulation goes on:
the run checks each step's trades itself, so a bad trade still fails the step that made it, and
hands each hour's trades to the sealer in one message. The ledger is the same either way.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from twin.ledger import LEDGER_FILE, SqliteLedger, check_trades, generate_key

BLOCK_S = 3600
"""A block per simulated hour."""

SEND_BLOCKS = 24
"""Blocks handed to a sealing process at once: every message wakes it (and on a busy machine
may take the parent's core for a while), so a simulated day of hourly blocks goes together."""


def spare_core() -> bool:
    """Whether a run may seal its ledger in a process of its own: Linux (fork), more than one
    core for this process, only this thread running (a fork copies no other thread, so their
    locks could stay locked in the child), and not a daemonic process (those have no children:
    sweep workers)."""
    return (sys.platform == "linux" and len(os.sched_getaffinity(0)) > 1
            and threading.active_count() == 1 and not multiprocessing.current_process().daemon)


class LedgerWriter:
    """Appends each step's trades to ``folder/ledger.sqlite`` and seals a block per hour.

    Parameters
    ----------
    folder : str or Path
        Where ``ledger.sqlite`` and ``ledger.pub`` are written (the file must not exist).
    start : Timestamp
        Time-zone-aware start of step 0.
    step_s : int
        Step length [s].
    n_steps : int
        Steps of the run; the block of the last step is sealed with it.
    separate_process : bool, optional
        Seal blocks in a forked process; by default when :func:`spare_core` allows it.
    key : Ed25519PrivateKey, optional
        Signing key; a fresh one by default.
    """

    def __init__(self, folder: str | Path, start: pd.Timestamp, step_s: int, n_steps: int,
                 *, separate_process: bool | None = None,
                 key: Ed25519PrivateKey | None = None) -> None:
        path = Path(folder) / LEDGER_FILE
        if path.exists():
            raise ValueError(f"{path} exists; a run writes a new ledger")
        key = generate_key() if key is None else key
        if separate_process is None:
            separate_process = spare_core()
        self.start = pd.Timestamp(start)
        self.step_s = int(step_s)
        clock = _Clock(self.start.tz_convert("UTC").to_pydatetime(), self.start.tzinfo,
                       self.step_s)
        self._sealer = (_ForkedSealer if separate_process else _Sealer)(path, key, clock)
        self.n_steps = int(n_steps)
        self.steps_per_block = max(1, BLOCK_S // self.step_s)
        self.n_tx = 0
        self.n_blocks = 0

    @property
    def separate_process(self) -> bool:
        return isinstance(self._sealer, _ForkedSealer)

    def add(self, k: int, trades) -> dict[str, int]:
        """Append step ``k``'s trades, seal the block if the hour (or run) ends there; return
        the blocks sealed and trades appended so far."""
        self.n_tx += self._sealer.add(k, list(trades or ()))
        if (k + 1) % self.steps_per_block == 0 or k + 1 == self.n_steps:
            self._sealer.seal(k)
            self.n_blocks += 1
        return {"n_blocks": self.n_blocks, "n_transactions": self.n_tx}

    def finish(self) -> None:
        """Wait until every sealed block is written and close the database; ``RuntimeError``
        if the ledger could not be written. Trades after the last sealed block (of a run that
        stopped early) are left out."""
        self._sealer.close(self.n_blocks)

    def close(self) -> None:
        """Close the database without raising, leaving unsealed trades out (after a failed
        run; after a completed one, :meth:`finish` reports what went wrong)."""
        try:
            self._sealer.close(self.n_blocks)
        except RuntimeError:
            pass


@dataclass(frozen=True)
class _Clock:
    """When each step starts: in the scenario's zone, via UTC (right across DST changes)."""

    start_utc: datetime
    tz: tzinfo
    step_s: int

    def __call__(self, k: int) -> datetime:
        return (self.start_utc + timedelta(seconds=k * self.step_s)).astimezone(self.tz)


class _Sealer:
    """Seals blocks in this process."""

    def __init__(self, path: Path, key: Ed25519PrivateKey, clock: _Clock) -> None:
        self.ledger = SqliteLedger(path, key)
        self.clock = clock

    def add(self, k: int, trades: list[tuple]) -> int:
        return self.ledger.extend(k, self.clock(k), trades)

    def seal(self, last_step: int) -> None:
        self.ledger.close_block(last_step)

    def close(self, n_blocks: int) -> None:
        self.ledger.close(discard_pending=True)


class _ForkedSealer:
    """Seals blocks in a forked child process. The parent checks each step's trades (a bad
    trade fails the step that made it), sends the blocks' steps down a pipe a batch at a time,
    and hears back at the end, or earlier once the child has failed."""

    def __init__(self, path: Path, key: Ed25519PrivateKey, clock: _Clock) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child_end = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child_end, path, key, clock), daemon=True,
                                 name="sdg-twin-ledger")
        self._proc.start()
        child_end.close()
        self._steps: list[tuple] = []  # (step, trades) of the open block
        self._blocks: list[tuple] = []  # (last step, steps) of the blocks not sent yet
        self._closed = False
        try:
            self._expect("ready")  # the database is open, or the reason why not
        except RuntimeError:
            self._closed = True
            self._conn.close()
            self._proc.join()
            raise

    def add(self, k: int, trades: list[tuple]) -> int:
        n = check_trades(trades)
        self._steps.append((k, trades))
        return n

    def seal(self, last_step: int) -> None:
        self._blocks.append((last_step, self._steps))
        self._steps = []
        if len(self._blocks) >= SEND_BLOCKS:
            if self._conn.poll():  # the child speaks before the end only when it failed
                self._expect("done")
            self._send()

    def _send(self) -> None:
        try:
            self._conn.send(self._blocks)
        except OSError:
            self._expect("done")  # its last words, if any
        self._blocks = []

    def close(self, n_blocks: int) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._blocks:
                self._send()
            self._conn.send(None)
            sealed = self._expect("done")
            if sealed != n_blocks:
                raise RuntimeError(f"ledger: {sealed} blocks written, {n_blocks} sealed")
        except OSError:
            self._expect("done")
        finally:
            self._conn.close()
            self._proc.join(timeout=60)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()

    def _expect(self, what: str):
        """The child's answer ``what``; ``RuntimeError`` with its reason if it failed."""
        try:
            said, value = self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(timeout=5)
            raise RuntimeError(f"ledger: the sealing process ended (exit code "
                               f"{self._proc.exitcode})") from None
        if said != what:
            raise RuntimeError(f"ledger: {value}")
        return value


def _serve(conn, path: Path, key: Ed25519PrivateKey, clock: _Clock) -> None:
    """The sealing process: open the ledger, seal each block received, answer the count."""
    # What the fork copied belongs to the parent: never collected here, so no finalizer of the
    # parent's (a temporary folder's clean-up, a pending asyncio task's warning) runs twice.
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which closes us
    try:
        ledger = SqliteLedger(path, key)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    try:
        while (blocks := conn.recv()) is not None:
            for last_step, steps in blocks:
                for k, trades in steps:
                    ledger.extend(k, clock(k), trades)
                ledger.close_block(last_step)
        ledger.close(discard_pending=True)
        conn.send(("done", ledger.n_blocks))
    except EOFError:  # the parent went away
        ledger.close(discard_pending=True)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        ledger.close(discard_pending=True)
