"""The run's ledger writer: hourly blocks, sealed in this process or in a forked one, the same
ledger either way, and failures of the sealing process reported, not lost."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest

import twin
from twin import ledger as L
from twin.ledger_writer import LedgerWriter, spare_core
from twin.scenario import load_scenario

START = pd.Timestamp("2026-06-01 00:00", tz="Asia/Shanghai")
MODES = pytest.mark.parametrize("separate", [False, True], ids=["inline", "forked"])


def _trades(rng: np.random.Generator) -> list[tuple]:
    n = int(rng.integers(0, 6))
    return [("pv:roof", f"site:s{i}", float(rng.uniform(0.5, 30)), 0.65, "pv_to_ev")
            for i in range(n)] + [("grid", "site:s0", float(rng.uniform(0.5, 9)), 0.8,
                                   "grid_to_ev")]


def _tables(folder) -> tuple[list, list]:
    db = sqlite3.connect(folder / L.LEDGER_FILE)
    try:
        return (db.execute("SELECT * FROM transactions ORDER BY seq").fetchall(),
                db.execute("SELECT * FROM blocks ORDER BY height").fetchall())
    finally:
        db.close()


def test_forked_and_inline_sealing_write_the_same_ledger(tmp_path):
    key = L.generate_key()  # Ed25519 signatures are deterministic: even they must agree
    for separate in (False, True):
        rng = np.random.default_rng(3)
        (tmp_path / str(separate)).mkdir()
        writer = LedgerWriter(tmp_path / str(separate), START, 900, 30,
                              separate_process=separate, key=key)
        assert writer.separate_process is separate
        counts = [writer.add(k, _trades(rng)) for k in range(30)]
        writer.finish()
        assert counts[3]["n_blocks"] == 1 and counts[-1]["n_blocks"] == 8  # 7 hours and a half
        assert L.verify(tmp_path / str(separate), key.public_key()).ok
    transactions, blocks = _tables(tmp_path / "False")
    assert (transactions, blocks) == _tables(tmp_path / "True")
    assert len(transactions) == counts[-1]["n_transactions"] and len(blocks) == 8


@MODES
def test_writer_stamps_each_step_with_its_local_start_across_a_dst_change(tmp_path, separate):
    """Berlin's clocks go forward at 02:00 on 29 March 2026: the step times stay 15 min apart."""
    start = pd.Timestamp("2026-03-29 00:00", tz="Europe/Berlin")
    writer = LedgerWriter(tmp_path, start, 900, 16, separate_process=separate)
    for k in range(16):
        writer.add(k, [("grid", "site:b", 1.0 + k, 0.5, "grid_to_ev")])
    writer.finish()
    db = sqlite3.connect(tmp_path / L.LEDGER_FILE)
    times = [t for (t,) in db.execute("SELECT time FROM transactions ORDER BY seq")]
    assert times == [(start + pd.Timedelta(minutes=15 * k)).isoformat() for k in range(16)]
    assert times[8] == "2026-03-29T03:00:00+02:00"
    assert L.verify(tmp_path).n_blocks == 4


@MODES
def test_a_bad_trade_fails_the_step_that_made_it(tmp_path, separate):
    writer = LedgerWriter(tmp_path, START, 900, 8, separate_process=separate)
    writer.add(0, [("grid", "site:b", 1.0, 0.5, "grid_to_ev")])
    with pytest.raises(ValueError, match="kwh must be finite and > 0"):
        writer.add(1, [("grid", "site:b", float("nan"), 0.5, "grid_to_ev")])
    writer.close()
    assert L.verify(tmp_path).n_blocks == 0  # the open hour was never sealed


def test_an_error_in_the_sealing_process_is_raised_in_the_run(tmp_path):
    writer = LedgerWriter(tmp_path, START, 900, 8, separate_process=True)
    for k in (0, 1, 2, 3):
        writer.add(k, [("grid", "site:b", 1.0, 0.5, "grid_to_ev")])
    for k in (2, 3, 4, 5):  # steps the first block has sealed already: the sealer refuses them
        writer.add(k, [("grid", "site:b", 1.0, 0.5, "grid_to_ev")])
    with pytest.raises(RuntimeError, match="ledger: ValueError: step 2 belongs to a sealed block"):
        writer.finish()
    writer.close()  # after a failure, closing again is quiet


def test_a_killed_sealing_process_is_reported(tmp_path):
    writer = LedgerWriter(tmp_path, START, 900, 96, separate_process=True)
    writer.add(0, [("grid", "site:b", 1.0, 0.5, "grid_to_ev")])
    os.kill(writer._sealer._proc.pid, signal.SIGKILL)
    writer._sealer._proc.join()
    with pytest.raises(RuntimeError, match=r"sealing process ended \(exit code -9\)"):
        for k in range(1, 96):
            writer.add(k, [("grid", "site:b", 1.0, 0.5, "grid_to_ev")])
        writer.finish()
    writer.close()


def test_a_ledger_that_cannot_be_opened_fails_at_once(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(RuntimeError, match="ledger: OperationalError: unable to open"):
        LedgerWriter(not_a_folder, START, 900, 8, separate_process=True)


def _report_spare_core(queue) -> None:
    queue.put(spare_core())


def test_a_daemonic_process_seals_inline():
    """Sweep workers are daemonic processes, which may not fork children of their own."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_report_spare_core, args=(queue,), daemon=True)
    child.start()
    assert queue.get(timeout=30) is False
    child.join()


def test_a_process_with_other_threads_seals_inline():
    """A fork copies only the forking thread: another thread's locks could stay locked in the
    child (HIL runs, for one, talk to their devices from threads)."""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert spare_core() is False
    finally:
        stop.set()
        other.join()


def test_runs_with_either_sealer_agree(tiny, write_yaml, tmp_path):
    tiny["coordinator"] = {"strategy": "pv_following"}
    scenario = load_scenario(write_yaml(tiny))
    runs = [twin.run(scenario, out=tmp_path / f"r{separate}", progress=False,
                     ledger_process=separate) for separate in (False, True)]
    inline, forked = ((r.out_dir / "kpis.json").read_text() for r in runs)
    assert inline == forked
    assert runs[1].kpis["ledger_blocks"] == 24 and runs[1].kpis["ledger_transactions"] > 0
    for r in runs:
        assert L.verify(r.out_dir).ok
        assert sorted(p.name for p in r.out_dir.glob("ledger*")) == ["ledger.pub", "ledger.sqlite"]


def test_the_sealing_process_leaves_the_parents_garbage_alone(tmp_path):
    """Objects the fork copied are the parent's: their finalizers must not run in the child."""
    parent = os.getpid()

    class Sentinel:
        def __del__(self):
            if os.getpid() != parent:
                (tmp_path / f"finalized-in-{os.getpid()}").touch()

    gc.collect()
    cycle = Sentinel()
    cycle.me = cycle
    del cycle  # garbage that only the cycle collector frees: it is the child's too after fork
    (tmp_path / "ledger").mkdir()
    writer = LedgerWriter(tmp_path / "ledger", START, 900, 400, separate_process=True)
    for k in range(400):  # enough allocations in the child for its collector to run
        writer.add(k, [("grid", f"site:{k % 7}", 1.0, 0.5, "grid_to_ev")])
    writer.finish()
    gc.collect()
    assert not list(tmp_path.glob("finalized-in-*"))
