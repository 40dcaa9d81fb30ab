"""The settlement ledger: sealing, statements, and detection of every kind of tampering.

Each tampering test works on a copy of one ledger of 48 hourly blocks and goes around the
append-only triggers (dropping them, or editing the file's bytes), as an attacker would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import sqlite3
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from twin import ledger as L

N_BLOCKS = 48
STEPS_PER_BLOCK = 4  # 15-min steps, one block per simulated hour
EMPTY_BLOCK = 3  # an hour without any trade: blocks may be empty
PV = ["pv:roof", "pv:carport", "pv:res-1"]
SITES = ["site:depot", "site:office"]


def _random_trades(rng: np.random.Generator, step: int, hour: int):
    """Trades of one step: PV to sites by day, grid to sites, V2G and PV export."""
    trades = []
    for site in SITES:
        if 8 <= hour % 24 < 18:
            for plant in rng.choice(PV, size=rng.integers(0, 3), replace=False):
                trades.append((plant, site, rng.uniform(0.5, 40), rng.uniform(0.40, 1.0),
                               "pv_to_ev"))
        if rng.random() < 0.7:
            trades.append(("grid", site, rng.uniform(0.5, 60), rng.uniform(0.37, 1.34),
                           "grid_to_ev"))
        if rng.random() < 0.2:
            trades.append((site, "grid", rng.uniform(0.5, 20), rng.uniform(0.15, 0.77), "v2g"))
    if 8 <= hour % 24 < 18 and rng.random() < 0.5:
        trades.append((str(rng.choice(PV)), "grid", rng.uniform(0.1, 30), 0.3964, "pv_export"))
    return trades


def build(run_dir: Path, key, seed: int = 11) -> list[tuple]:
    """Write the reference ledger; return the trades as (block, seller, buyer, kwh, price)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    times = pd.date_range("2026-06-01", periods=N_BLOCKS * STEPS_PER_BLOCK, freq="15min",
                          tz="Asia/Shanghai")
    appended = []
    with L.SqliteLedger(run_dir / L.LEDGER_FILE, key) as led:
        for hour in range(N_BLOCKS):
            for step in range(hour * STEPS_PER_BLOCK, (hour + 1) * STEPS_PER_BLOCK):
                if hour == EMPTY_BLOCK:
                    continue
                for seller, buyer, kwh, price, kind in _random_trades(rng, step, hour):
                    led.append(step, times[step], seller, buyer, kwh, price, kind)
                    appended.append((hour, seller, buyer, kwh, price))
            block = led.close_block((hour + 1) * STEPS_PER_BLOCK - 1)
            assert block.height == hour
    return appended


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("ledger") / "run"
    key = L.generate_key()
    appended = build(run, key)
    return run, key, appended


@pytest.fixture
def run(reference, tmp_path) -> Path:
    """A private copy of the reference run folder."""
    src, _, _ = reference
    return Path(shutil.copytree(src, tmp_path / "run"))


@contextmanager
def raw(run_dir: Path):
    """Direct write access to the file with the append-only triggers dropped."""
    db = sqlite3.connect(run_dir / L.LEDGER_FILE)
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    try:
        yield db
        db.commit()
    finally:
        db.close()


def tx_rows(db, block: int) -> list[tuple]:
    return db.execute("SELECT seq, e_wh, price_ucny_per_kwh, buyer FROM transactions "
                      "WHERE block = ? ORDER BY seq", (block,)).fetchall()


def reseal(db, key, from_height: int, *, sign: bool) -> None:
    """What an attacker without the key (sign=False) or with another key (sign=True) can do:
    recompute every Merkle root, block hash and link from ``from_height`` on."""
    fp = L.fingerprint(key.public_key())
    heights = [h for (h,) in db.execute("SELECT height FROM blocks ORDER BY height")]
    prev = (L.GENESIS_PREV_HASH if from_height == 0 else
            db.execute("SELECT block_hash FROM blocks WHERE height = ?",
                       (from_height - 1,)).fetchone()[0])
    for h in heights[from_height:]:
        txs = [L.Transaction(*r) for r in db.execute(
            f"SELECT {', '.join(L._TX_COLUMNS)} FROM transactions WHERE block = ? ORDER BY seq",
            (h,))]
        first, last, old_sig, old_fp = db.execute(
            "SELECT first_step, last_step, signature, key_fingerprint FROM blocks "
            "WHERE height = ?", (h,)).fetchone()
        root = L.merkle_root([L.leaf_hash(tx.canonical()) for tx in txs])
        use_fp = fp if sign else old_fp
        digest = hashlib.sha256(L.block_header(h, first, last, len(txs), root, prev, use_fp))
        sig = key.sign(digest.digest()).hex() if sign else old_sig
        db.execute("UPDATE blocks SET n_tx = ?, merkle_root = ?, prev_hash = ?, block_hash = ?, "
                   "signature = ?, key_fingerprint = ? WHERE height = ?",
                   (len(txs), root, prev, digest.hexdigest(), sig, use_fp, h))
        prev = digest.hexdigest()


def assert_broken(run_dir: Path, block: int | None, *words: str, public_key=None):
    result = L.verify(run_dir, public_key)
    assert not result.ok, "tampering went undetected"
    assert result.first_bad_block == block, result.reason
    for word in words:
        assert word in result.reason, result.reason
    return result


# -- an intact ledger --------------------------------------------------------------------------


def test_intact_ledger_verifies(reference):
    run, key, appended = reference
    result = L.verify(run)
    assert result.ok and result.first_bad_block is None
    assert result.n_blocks == N_BLOCKS
    assert result.n_transactions == len(appended) > 400
    assert (run / L.PUBLIC_KEY_FILE).read_bytes() == L.public_key_pem(key.public_key())
    db = sqlite3.connect(run / L.LEDGER_FILE)
    n_tx, first, last = db.execute(
        f"SELECT n_tx, first_step, last_step FROM blocks WHERE height = {EMPTY_BLOCK}").fetchone()
    assert (n_tx, first, last) == (0, 12, 15)
    head = db.execute("SELECT block_hash FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
    assert result.head_hash == head[0]
    # the journal kept between blocks is gone once the ledger is closed
    assert sorted(p.name for p in run.iterdir()) == [L.PUBLIC_KEY_FILE, L.LEDGER_FILE]


def test_cli_reports_intact(reference, capsys):
    run, _, appended = reference
    assert L.main(["verify", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"ledger intact: {N_BLOCKS} blocks, {len(appended)} transactions" in out


def test_statements_balance_as_double_entry(reference):
    run, _, appended = reference
    statements = L.statements(run)
    assert sum(s.net_sold_wh for s in statements) == 0
    assert sum(s.net_received_mcny for s in statements) == 0
    expected = defaultdict(lambda: [0, 0, 0, 0])  # bought_wh, sold_wh, paid, received
    for _, seller, buyer, kwh, price in appended:
        e_wh, p = round(kwh * 1000), round(price * 1e6)
        amount = L.amount_mcny(e_wh, p)
        expected[buyer][0] += e_wh
        expected[buyer][2] += amount
        expected[seller][1] += e_wh
        expected[seller][3] += amount
    got = {s.participant: [s.bought_wh, s.sold_wh, s.paid_mcny, s.received_mcny]
           for s in statements}
    assert got == dict(expected)
    grid = next(s for s in statements if s.participant == "grid")
    assert grid.sold_kwh > 0 and grid.bought_kwh > 0 and grid.received_cny > grid.paid_cny


def test_amounts_are_energy_times_price(reference):
    run, _, appended = reference
    db = sqlite3.connect(run / L.LEDGER_FILE)
    rows = db.execute("SELECT kwh, price_cny_per_kwh, amount_cny FROM transactions_cny "
                      "ORDER BY seq").fetchall()
    kwh, price, amount = np.array(rows).T
    np.testing.assert_allclose(kwh, [round(a[3], 3) for a in appended])
    np.testing.assert_allclose(amount, kwh * price, atol=0.0005 + 1e-12)


def test_triggers_refuse_update_and_delete(run):
    db = sqlite3.connect(run / L.LEDGER_FILE)
    for sql in ("UPDATE transactions SET e_wh = 1 WHERE seq = 0",
                "DELETE FROM transactions WHERE seq = 0",
                "UPDATE blocks SET n_tx = 0 WHERE height = 1",
                "DELETE FROM blocks WHERE height = 47",
                "DELETE FROM meta"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(sql)
    db.close()
    assert L.verify(run).ok


# -- tampering with transactions ---------------------------------------------------------------


@pytest.mark.parametrize("column", ["e_wh", "price_ucny_per_kwh", "buyer", "time", "kind"])
def test_altered_transaction_is_detected(run, column):
    with raw(run) as db:
        seq, e_wh, price, buyer = tx_rows(db, 17)[2]
        new = {"e_wh": e_wh + 1, "price_ucny_per_kwh": price + 1,
               "buyer": "site:elsewhere" if buyer != "site:elsewhere" else "site:x",
               "time": "2026-06-01T16:00:00+08:00", "kind": "v2g"}[column]
        db.execute(f"UPDATE transactions SET {column} = ? WHERE seq = ?", (new, seq))
        if column in ("e_wh", "price_ucny_per_kwh"):  # a careful attacker keeps amounts right
            db.execute("UPDATE transactions SET amount_mcny = "
                       "(e_wh * price_ucny_per_kwh + 500000) / 1000000 WHERE seq = ?", (seq,))
    assert_broken(run, 17, "Merkle root")


def test_altered_amount_is_detected(run):
    with raw(run) as db:
        seq = tx_rows(db, 9)[0][0]
        db.execute("UPDATE transactions SET amount_mcny = amount_mcny + 1 WHERE seq = ?", (seq,))
    assert_broken(run, 9, f"transaction {seq}", "amount")


def test_deleted_transaction_is_detected(run):
    with raw(run) as db:
        seq = tx_rows(db, 21)[3][0]
        db.execute("DELETE FROM transactions WHERE seq = ?", (seq,))
    assert_broken(run, 21, "sequence jumps")


def test_deleted_last_transaction_of_a_block_is_detected(run):
    with raw(run) as db:
        seq = tx_rows(db, 30)[-1][0]
        db.execute("DELETE FROM transactions WHERE seq = ?", (seq,))
    assert_broken(run, 30, "transactions")


def test_transaction_added_at_the_end_of_a_block_is_detected(run):
    with raw(run) as db:
        total = db.execute("SELECT MAX(seq) FROM transactions").fetchone()[0]
        row = db.execute(f"SELECT {', '.join(L._TX_COLUMNS)} FROM transactions WHERE block = 25 "
                         "ORDER BY seq LIMIT 1").fetchone()
        db.execute(f"INSERT INTO transactions ({', '.join(L._TX_COLUMNS)}) VALUES "
                   f"({', '.join('?' * len(row))})", (25, total + 1, *row[2:]))
    assert_broken(run, 25, "sequence jumps")


def test_transaction_inserted_and_renumbered_is_detected(run):
    """The attacker shifts every later sequence number to make room: the Merkle root breaks."""
    with raw(run) as db:
        seq = tx_rows(db, 33)[1][0]
        for (s,) in db.execute("SELECT seq FROM transactions WHERE seq >= ? ORDER BY seq DESC",
                               (seq,)).fetchall():
            db.execute("UPDATE transactions SET seq = seq + 1 WHERE seq = ?", (s,))
        row = db.execute(f"SELECT {', '.join(L._TX_COLUMNS)} FROM transactions "
                         "WHERE seq = ?", (seq + 1,)).fetchone()
        db.execute(f"INSERT INTO transactions ({', '.join(L._TX_COLUMNS)}) VALUES "
                   f"({', '.join('?' * len(row))})", (33, seq, *row[2:]))
    assert_broken(run, 33)


def test_transaction_added_to_an_unsealed_block_is_detected(run):
    with raw(run) as db:
        total = db.execute("SELECT MAX(seq) FROM transactions").fetchone()[0]
        db.execute(f"INSERT INTO transactions ({', '.join(L._TX_COLUMNS)}) VALUES "
                   "(48, ?, 192, '2026-06-03T00:00:00+08:00', 'grid', 'site:depot', "
                   "'grid_to_ev', 1000, 379188, 379)", (total + 1,))
    assert_broken(run, N_BLOCKS, "not sealed")


def _swap_contents(db, seq_a: int, seq_b: int) -> None:
    cols = [c for c in L._TX_COLUMNS if c not in ("seq", "block")]
    a = db.execute(f"SELECT {', '.join(cols)} FROM transactions WHERE seq = ?", (seq_a,)).fetchone()
    b = db.execute(f"SELECT {', '.join(cols)} FROM transactions WHERE seq = ?", (seq_b,)).fetchone()
    assignment = ", ".join(f"{c} = ?" for c in cols)
    db.execute(f"UPDATE transactions SET {assignment} WHERE seq = ?", (*b, seq_a))
    db.execute(f"UPDATE transactions SET {assignment} WHERE seq = ?", (*a, seq_b))


def test_swapped_transactions_in_a_block_are_detected(run):
    with raw(run) as db:
        rows = tx_rows(db, 14)
        _swap_contents(db, rows[0][0], rows[-1][0])
    assert_broken(run, 14, "Merkle root")


def test_transactions_swapped_across_blocks_are_detected(run):
    with raw(run) as db:
        _swap_contents(db, tx_rows(db, 10)[0][0], tx_rows(db, 40)[0][0])
    assert_broken(run, 10)


def test_transaction_moved_to_another_block_is_detected(run):
    with raw(run) as db:
        seq = tx_rows(db, 12)[-1][0]
        db.execute("UPDATE transactions SET block = 13 WHERE seq = ?", (seq,))
    assert_broken(run, 12)


def test_file_bytes_edited_without_sql_are_detected(run, reference):
    """No SQL, triggers intact: a participant name is changed in the file itself."""
    path = run / L.LEDGER_FILE
    data = path.read_bytes()
    at = data.index(b"site:office")
    path.write_bytes(data[:at] + b"site:offic3" + data[at + len(b"site:office"):])
    before = sqlite3.connect(reference[0] / L.LEDGER_FILE).execute(
        "SELECT seq, block, seller, buyer FROM transactions ORDER BY seq").fetchall()
    after = sqlite3.connect(path).execute(
        "SELECT seq, block, seller, buyer FROM transactions ORDER BY seq").fetchall()
    changed = [b for b, a in zip(before, after, strict=True) if b != a]
    assert len(changed) == 1
    assert_broken(run, changed[0][1], "Merkle root")


def test_unreadable_file_is_reported_broken(run, capsys):
    path = run / L.LEDGER_FILE
    path.write_bytes(b"\x00" * 100 + path.read_bytes()[100:])
    result = L.verify(run)
    assert not result.ok and result.first_bad_block is None
    assert L.main(["verify", str(run)]) == 1
    assert "ledger broken: database unreadable" in capsys.readouterr().out


# -- tampering with blocks ---------------------------------------------------------------------


def test_deleted_block_is_detected(run):
    with raw(run) as db:
        db.execute("DELETE FROM blocks WHERE height = 20")
    assert_broken(run, 20, "removed")


def test_deleted_last_block_is_detected(run):
    with raw(run) as db:
        db.execute("DELETE FROM blocks WHERE height = ?", (N_BLOCKS - 1,))
    assert_broken(run, N_BLOCKS - 1, "not sealed")


def test_swapped_blocks_are_detected(run):
    cols = [c for c in L._BLOCK_COLUMNS if c != "height"]
    with raw(run) as db:
        a = db.execute(f"SELECT {', '.join(cols)} FROM blocks WHERE height = 30").fetchone()
        b = db.execute(f"SELECT {', '.join(cols)} FROM blocks WHERE height = 31").fetchone()
        assignment = ", ".join(f"{c} = ?" for c in cols)
        db.execute(f"UPDATE blocks SET {assignment} WHERE height = 30", b)
        db.execute(f"UPDATE blocks SET {assignment} WHERE height = 31", a)
    assert_broken(run, 30)


def test_renumbered_blocks_are_detected(run):
    with raw(run) as db:
        db.execute("UPDATE blocks SET height = -1 WHERE height = 30")
        db.execute("UPDATE blocks SET height = 30 WHERE height = 31")
        db.execute("UPDATE blocks SET height = 31 WHERE height = -1")
        db.execute("UPDATE transactions SET block = -1 WHERE block = 30")
        db.execute("UPDATE transactions SET block = 30 WHERE block = 31")
        db.execute("UPDATE transactions SET block = 31 WHERE block = -1")
    assert_broken(run, 30)


def test_altered_merkle_root_is_detected(run):
    with raw(run) as db:
        db.execute("UPDATE blocks SET merkle_root = ? WHERE height = 12", ("ab" * 32,))
    assert_broken(run, 12, "Merkle root")


def test_rehashed_chain_without_the_key_is_detected(run, reference):
    """A transaction is altered and every root, hash and link after it recomputed; the
    attacker cannot sign, so the old signatures remain."""
    _, key, _ = reference
    with raw(run) as db:
        seq = tx_rows(db, 12)[0][0]
        db.execute("UPDATE transactions SET buyer = 'site:thief' WHERE seq = ?", (seq,))
        reseal(db, key, 12, sign=False)
    assert_broken(run, 12, "signature does not verify")


def test_resigned_with_another_key_is_detected(run):
    """Everything recomputed consistently and signed with the attacker's own key."""
    with raw(run) as db:
        db.execute("UPDATE transactions SET e_wh = e_wh * 2, amount_mcny = amount_mcny * 2 "
                   "WHERE block = 5")
        reseal(db, L.generate_key(), 0, sign=True)
    assert_broken(run, 0, "not by the trusted key")


def test_replaced_public_key_needs_the_trusted_key_outside_the_run(run, reference, tmp_path):
    """An attacker who re-signs and also swaps ledger.pub passes the default check; the key kept
    outside the run folder does not let it through."""
    _, key, _ = reference
    thief = L.generate_key()
    with raw(run) as db:
        reseal(db, thief, 0, sign=True)
    (run / L.PUBLIC_KEY_FILE).write_bytes(L.public_key_pem(thief.public_key()))
    assert L.verify(run).ok
    trusted = tmp_path / "trusted.pub"
    trusted.write_bytes(L.public_key_pem(key.public_key()))
    assert_broken(run, 0, "not by the trusted key", public_key=trusted)
    assert L.main(["verify", str(run), "--public-key", str(trusted)]) == 1


def test_forged_signature_with_the_original_fingerprint_is_detected(run):
    thief = L.generate_key()
    with raw(run) as db:
        (digest,) = db.execute("SELECT block_hash FROM blocks WHERE height = 7").fetchone()
        db.execute("UPDATE blocks SET signature = ? WHERE height = 7",
                   (thief.sign(bytes.fromhex(digest)).hex(),))
    assert_broken(run, 7, "signature does not verify")


def test_truncation_is_caught_by_the_published_head(run, reference):
    """Cutting the tail (blocks and their transactions) leaves a consistent, shorter chain; the
    head hash published elsewhere shows it."""
    head = L.verify(reference[0]).head_hash
    with raw(run) as db:
        db.execute("DELETE FROM transactions WHERE block >= 40")
        db.execute("DELETE FROM blocks WHERE height >= 40")
    result = L.verify(run)
    assert result.ok and result.n_blocks == 40
    assert result.head_hash != head


def test_cli_names_the_first_bad_block(run, capsys):
    with raw(run) as db:
        db.execute("UPDATE transactions SET price_ucny_per_kwh = 1, amount_mcny = 0 "
                   "WHERE block = 17")
    assert L.main(["verify", str(run)]) == 1
    assert capsys.readouterr().out.startswith("ledger broken at block 17: ")


def test_cli_missing_inputs_exit_2(tmp_path, run, capsys):
    assert L.main(["verify", str(tmp_path / "nowhere")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert L.main(["verify", str(tmp_path / "empty")]) == 2
    assert "has no ledger.sqlite" in capsys.readouterr().err
    (run / L.PUBLIC_KEY_FILE).unlink()
    assert L.main(["verify", str(run)]) == 2
    assert "no public key" in capsys.readouterr().err
    assert L.main(["verify", str(run / L.LEDGER_FILE), "--public-key",
                   str(tmp_path / "missing.pub")]) == 2


# -- the writer --------------------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path):
    key = L.generate_key()
    led = L.SqliteLedger(tmp_path / L.LEDGER_FILE, key)
    yield led, key, tmp_path
    led.close(discard_pending=True)


T0 = pd.Timestamp("2026-06-01 10:00", tz="Asia/Shanghai")


@pytest.mark.parametrize(("args", "message"), [
    ((0, T0, "pv:a", "site:b", -1.0, 0.5, "pv_to_ev"), "kwh must be finite and > 0"),
    ((0, T0, "pv:a", "site:b", float("nan"), 0.5, "pv_to_ev"), "kwh must be finite"),
    ((0, T0, "pv:a", "site:b", 0.0004, 0.5, "pv_to_ev"), "1 Wh resolution"),
    ((0, T0, "pv:a", "site:b", 1.0, -0.5, "pv_to_ev"), "price_cny_per_kwh must be finite"),
    ((0, T0, "pv:a", "pv:a", 1.0, 0.5, "pv_to_ev"), "seller and buyer are both"),
    ((0, T0, "", "site:b", 1.0, 0.5, "pv_to_ev"), "seller must be a non-empty string"),
    ((0, T0, "pv:a", "site:b", 1.0, 0.5, "gift"), "kind must be one of"),
    ((0, T0.tz_localize(None), "pv:a", "site:b", 1.0, 0.5, "pv_to_ev"), "time-zone aware"),
    ((-1, T0, "pv:a", "site:b", 1.0, 0.5, "pv_to_ev"), "step must be >= 0"),
    ((0, T0, "pv:a", "site:b", 1.0, 1e300, "pv_to_ev"), "beyond the ledger's 64-bit integers"),
    ((0, T0, "pv:a", "site:b", 1e10, 1e6, "pv_to_ev"), "amount of 10000000000.0 kWh at 1000000.0 CNY"),
])
def test_append_rejects_bad_trades(fresh, args, message):
    led, _, _ = fresh
    with pytest.raises(ValueError, match=message):
        led.append(*args)


def test_extend_adds_a_steps_trades_in_order_or_none(fresh):
    led, _, _ = fresh
    good = [("grid", "site:b", 2.0, 0.76, "grid_to_ev"), ("pv:a", "site:b", 1.5, 0.65, "pv_to_ev")]
    with pytest.raises(ValueError, match="kind must be one of"):
        led.extend(0, T0, good + [("site:b", "grid", 1.0, 0.3, "v2g_typo")])
    assert led.n_pending == 0
    assert led.extend(0, T0, good) == 2 and led.append(1, T0, *good[0]) == 2
    led.close_block(3)
    db = sqlite3.connect(led.path)
    rows = db.execute("SELECT seq, step, seller, e_wh FROM transactions ORDER BY seq").fetchall()
    assert rows == [(0, 0, "grid", 2000), (1, 0, "pv:a", 1500), (2, 1, "grid", 2000)]


def test_close_block_checks_steps(fresh):
    led, _, _ = fresh
    led.append(5, T0, "grid", "site:b", 2.0, 0.76, "grid_to_ev")
    with pytest.raises(ValueError, match="outside the block's steps"):
        led.close_block(3)
    led.close_block(7)
    with pytest.raises(ValueError, match="belongs to a sealed block"):
        led.append(7, T0, "grid", "site:b", 2.0, 0.76, "grid_to_ev")
    with pytest.raises(ValueError, match="overlaps the previous block"):
        led.close_block(10, first_step=6)


def test_unsealed_trades_on_close_are_an_error(fresh):
    led, _, _ = fresh
    led.append(0, T0, "grid", "site:b", 2.0, 0.76, "grid_to_ev")
    with pytest.raises(RuntimeError, match="not sealed"):
        led.close()


def test_reopened_ledger_continues_the_chain(fresh):
    led, key, folder = fresh
    led.append(0, T0, "grid", "site:b", 2.0, 0.76, "grid_to_ev")
    led.close_block(3)
    led.close()
    with L.SqliteLedger(folder / L.LEDGER_FILE, key) as again:
        assert again.n_blocks == 1
        seq = again.append(4, T0 + pd.Timedelta("1h"), "pv:a", "site:b", 1.5, 0.65, "pv_to_ev")
        assert seq == 1
        again.close_block(7)
        result = again.verify()
    assert result.ok and result.n_blocks == 2 and result.n_transactions == 2
    with pytest.raises(ValueError, match="another key"):
        L.SqliteLedger(folder / L.LEDGER_FILE, L.generate_key())
    (folder / L.PUBLIC_KEY_FILE).unlink()
    with pytest.raises(ValueError, match="was signed by key"):
        L.SqliteLedger(folder / L.LEDGER_FILE, L.generate_key())
    assert not (folder / L.PUBLIC_KEY_FILE).exists()


def test_private_key_round_trip(tmp_path):
    key = L.generate_key()
    L.save_private_key(key, tmp_path / "coordinator.pem")
    assert (tmp_path / "coordinator.pem").stat().st_mode & 0o077 == 0
    again = L.load_private_key(tmp_path / "coordinator.pem")
    assert L.fingerprint(again.public_key()) == L.fingerprint(key.public_key())


def test_sqlite_ledger_implements_the_interface():
    assert issubclass(L.SqliteLedger, L.Ledger)
    with pytest.raises(TypeError):
        L.Ledger()  # abstract


# -- the Merkle tree ---------------------------------------------------------------------------

# Certificate Transparency's reference vectors for RFC 6962 trees of the first n of 8 leaves.
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
             "606162636465666768696a6b6c6d6e6f"]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.mark.parametrize("n", range(1, 9))
def test_merkle_root_matches_rfc6962_reference_vectors(n):
    leaves = [L.leaf_hash(bytes.fromhex(d)) for d in CT_LEAVES[:n]]
    assert L.merkle_root(leaves) == CT_ROOTS[n - 1]


def _rfc6962_root(hashes: list[bytes]) -> bytes:
    """RFC 6962, section 2.1, as written: split at the largest power of two below n."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _rfc6962_root(hashes[:k]) + _rfc6962_root(hashes[k:])).digest()


def test_merkle_root_follows_rfc6962_for_every_size_of_a_block():
    """The level-by-level tree equals the recursive definition (a year's blocks hold ~70)."""
    for n in range(1, 140):
        leaves = [L.leaf_hash(n.to_bytes(2, "big") + bytes([i % 251])) for i in range(n)]
        assert L.merkle_root(leaves) == _rfc6962_root(leaves).hex(), n


def test_merkle_root_of_no_leaves_is_the_hash_of_nothing():
    assert L.merkle_root([]) == hashlib.sha256(b"").hexdigest()


def test_duplicated_last_leaf_changes_the_root():
    """Bitcoin's duplicate-last-leaf rule would give these two lists the same root."""
    leaves = [L.leaf_hash(bytes([i])) for i in range(3)]
    assert L.merkle_root(leaves) != L.merkle_root(leaves + leaves[-1:])


@pytest.mark.parametrize("name", ["pv:roof", 'site:"quoted"\\path', "pv:重庆-1", "site:\x01tab\t"])
def test_leaf_bytes_are_the_canonical_json(name):
    """The directly written leaf bytes equal json.dumps with sorted keys, for any participant."""
    tx = L.Transaction(block=3, seq=12345, step=17, time="2026-06-01T04:15:00+08:00",
                       seller=name, buyer="grid", kind="pv_export", e_wh=1500,
                       price_ucny_per_kwh=391_500, amount_mcny=L.amount_mcny(1500, 391_500))
    assert tx.canonical() == L._canonical_json({"v": L.FORMAT_VERSION, **dataclasses.asdict(tx)})


_NAMES = st.sampled_from(["pv:a", "site:b", "grid", "", "x"])
_NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([0.0005, 0.0005000001, 0.00049999, 0.0015, -0.0, 1e308]),
                     st.integers(-2, 5))


@given(st.lists(st.tuples(_NAMES, _NAMES, _NUMBERS, _NUMBERS,
                          st.sampled_from([*L.KINDS, "gift"])), max_size=4))
def test_the_quick_trade_check_accepts_exactly_what_tx_rows_accepts(trades):
    try:
        L.tx_rows(0, 0, 0, "", trades)
    except ValueError as exc:
        with pytest.raises(ValueError, match=re.escape(str(exc))):
            L.check_trades(trades)
    else:
        assert L.check_trades(trades) == len(trades)
