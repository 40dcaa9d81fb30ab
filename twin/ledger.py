"""Tamper-evident settlement ledger of a run: who sold how much energy to whom, at what price.

Every settled trade of a step (PV to EV, grid to EV, V2G, PV export) is a *transaction*.
Transactions are grouped into *blocks*, typically one per simulated hour; a block carries the
Merkle root of its transactions, the hash of the previous block and an Ed25519 signature of the
coordinator. Altering, adding, removing or reordering a transaction, removing or reordering a
block, or signing with another key is detected by :func:`verify`, which names the first bad block.

:class:`Ledger` is the interface the framework writes through; :class:`SqliteLedger` implements it
with an append-only SQLite file (``ledger.sqlite``) in the run folder, so that a distributed
ledger can replace it without touching the callers.

Design choices
--------------
Exact integer units
    Stored and hashed values are integers: energy ``e_wh`` in Wh (1 Wh resolution), price
    ``price_ucny_per_kwh`` in 1e-6 CNY/kWh (published tariffs have six decimals) and amount
    ``amount_mcny`` in 1e-3 CNY (厘), ``amount = round_half_up(e_wh * price / 1e6)``. Integers
    have one textual form, so a transaction serialises to the same bytes on every platform, and
    balances add up exactly: the statements of all participants sum to zero (double entry).
    The view ``transactions_cny`` shows kWh, CNY/kWh and CNY.
Canonical serialisation
    A transaction is the JSON object of all its fields (including ``block`` and ``seq``, which
    bind it to its position) with sorted keys, no whitespace and ASCII escapes, UTF-8 encoded.
Merkle tree
    RFC 6962 (Certificate Transparency) style: leaf = SHA-256(0x00 || transaction), node =
    SHA-256(0x01 || left || right), a tree of n leaves splits at the largest power of two below
    n, the empty tree hashes to SHA-256(""). Unlike Bitcoin's duplicate-the-last-leaf rule, two
    different transaction lists can never share a root, and the prefixes make a leaf
    indistinguishable from no inner node.
Block hash and signature
    ``block_hash`` = SHA-256 of the canonical JSON header (format version, height, first and last
    step, number of transactions, Merkle root, previous block hash, key fingerprint);
    ``signature`` = Ed25519 over the 32 bytes of ``block_hash``. Block 0's previous hash is 64
    zeros. Hashes and signatures are stored as lower-case hex.
Keys
    :func:`generate_key` makes the coordinator's key; the public key is written next to the
    database as ``ledger.pub`` (PEM) and its SHA-256 fingerprint (of the raw 32-byte key) is
    recorded in every block. :func:`verify` trusts the public key it is given, or by default
    ``ledger.pub`` in the run folder. Whoever can rewrite the run folder can also replace
    ``ledger.pub`` and re-sign everything, so real deployments keep the trusted key (and the
    private key) outside the run folder and pass it explicitly (``--public-key FILE``).
    Likewise, cutting off the last blocks together with their transactions leaves a shorter but
    consistent chain; compare ``VerifyResult.head_hash`` with a head published elsewhere to
    catch that.
Append-only
    The writer offers no update or delete, a block is written with its transactions in one
    SQLite transaction, and triggers abort any UPDATE or DELETE on the tables. That is defence in
    depth only: verification does not trust the file and recomputes everything.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import operator
import sqlite3
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Self

import pandas as pd
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT_VERSION = 1
LEDGER_FILE = "ledger.sqlite"
PUBLIC_KEY_FILE = "ledger.pub"
GENESIS_PREV_HASH = "0" * 64
KINDS: tuple[str, ...] = ("pv_to_ev", "grid_to_ev", "v2g", "pv_export")
"""Kinds of trade: PV plant to charging site, grid to site, EV discharge to grid, PV to grid."""

WH_PER_KWH = 1000
UCNY_PER_CNY = 1_000_000
MCNY_PER_CNY = 1000


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


def amount_mcny(e_wh: int, price_ucny_per_kwh: int) -> int:
    """Amount of a trade in 1e-3 CNY, rounded half up: Wh x 1e-6 CNY/kWh = 1e-9 CNY."""
    return (e_wh * price_ucny_per_kwh + 500_000) // 1_000_000


@dataclass(frozen=True, slots=True)
class Transaction:
    """One settled trade, in the ledger's exact integer units."""

    block: int
    seq: int
    step: int
    time: str
    seller: str
    buyer: str
    kind: str
    e_wh: int
    price_ucny_per_kwh: int
    amount_mcny: int

    @property
    def kwh(self) -> float:
        return self.e_wh / WH_PER_KWH

    @property
    def price_cny_per_kwh(self) -> float:
        return self.price_ucny_per_kwh / UCNY_PER_CNY

    @property
    def amount_cny(self) -> float:
        return self.amount_mcny / MCNY_PER_CNY

    def canonical(self) -> bytes:
        """The bytes that are hashed into the block's Merkle tree (see :func:`canonical_tx`)."""
        return canonical_tx(*_tx_row(self))


def canonical_tx(block: int, seq: int, step: int, time: str, seller: str, buyer: str, kind: str,
                 e_wh: int, price_ucny_per_kwh: int, amount: int) -> bytes:
    """Canonical JSON of a transaction's fields and ``v`` (keys sorted, no spaces, ASCII),
    written out directly because a simulated year settles over half a million trades."""
    return (f'{{"amount_mcny":{amount:d},"block":{block:d},'
            f'"buyer":{_json_str(buyer)},"e_wh":{e_wh:d},'
            f'"kind":{_json_str(kind)},"price_ucny_per_kwh":{price_ucny_per_kwh:d},'
            f'"seller":{_json_str(seller)},"seq":{seq:d},"step":{step:d},'
            f'"time":{_json_str(time)},"v":{FORMAT_VERSION:d}}}').encode("ascii")


@dataclass(frozen=True)
class Block:
    """A sealed block: its header fields, hash and signature."""

    height: int
    first_step: int
    last_step: int
    n_tx: int
    merkle_root: str
    prev_hash: str
    key_fingerprint: str
    block_hash: str
    signature: str

    def header(self) -> bytes:
        return block_header(self.height, self.first_step, self.last_step, self.n_tx,
                            self.merkle_root, self.prev_hash, self.key_fingerprint)


@dataclass(frozen=True)
class Statement:
    """A participant's balance over the whole ledger, in exact integer units."""

    participant: str
    bought_wh: int
    sold_wh: int
    paid_mcny: int
    received_mcny: int

    @property
    def bought_kwh(self) -> float:
        return self.bought_wh / WH_PER_KWH

    @property
    def sold_kwh(self) -> float:
        return self.sold_wh / WH_PER_KWH

    @property
    def paid_cny(self) -> float:
        return self.paid_mcny / MCNY_PER_CNY

    @property
    def received_cny(self) -> float:
        return self.received_mcny / MCNY_PER_CNY

    @property
    def net_sold_wh(self) -> int:
        """Energy sold minus energy bought [Wh]."""
        return self.sold_wh - self.bought_wh

    @property
    def net_received_mcny(self) -> int:
        """Money received minus money paid [1e-3 CNY]."""
        return self.received_mcny - self.paid_mcny


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`: ``ok``, or the first bad block and why."""

    ok: bool
    first_bad_block: int | None
    reason: str
    n_blocks: int
    n_transactions: int
    head_hash: str | None = None


# ---------------------------------------------------------------------------------------------
# Hashing, Merkle tree, keys
# ---------------------------------------------------------------------------------------------


def _canonical_json(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@functools.lru_cache(maxsize=4096)
def _json_str(text: str) -> str:
    """A string as canonical JSON (participants and step times repeat: cached)."""
    return json.dumps(text, ensure_ascii=True)


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> str:
    """RFC 6962 Merkle tree hash (hex) of already-hashed leaves.

    Built level by level: pairing neighbours and lifting an unpaired last node unchanged gives
    the same tree as RFC 6962's split at the largest power of two below n.
    """
    if not leaves:
        return hashlib.sha256(b"").hexdigest()
    level = list(leaves)
    while len(level) > 1:
        paired = [_node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0].hex()


def block_header(height: int, first_step: int, last_step: int, n_tx: int, merkle_root: str,
                 prev_hash: str, key_fingerprint: str) -> bytes:
    """Canonical bytes of a block header; its SHA-256 is the block hash."""
    return _canonical_json({
        "v": FORMAT_VERSION, "height": height, "first_step": first_step, "last_step": last_step,
        "n_tx": n_tx, "merkle_root": merkle_root, "prev_hash": prev_hash,
        "key_fingerprint": key_fingerprint,
    })


def generate_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 signing key for the coordinator."""
    return Ed25519PrivateKey.generate()


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Read a PEM Ed25519 public key (``ValueError`` if not PEM, ``TypeError`` if not Ed25519)."""
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise TypeError(f"{path}: not an Ed25519 public key")
    return key


def save_private_key(key: Ed25519PrivateKey, path: str | Path) -> None:
    """Write the signing key as unencrypted PKCS#8 PEM, readable by the owner only."""
    path = Path(path)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError(f"{path}: not an Ed25519 private key")
    return key


_MAX_INTEGER = 2**63 - 1  # SQLite's INTEGER


def tx_rows(block: int, seq: int, step: int, iso_time: str,
            trades: Iterable[tuple[str, str, float, float, str]]) -> list[tuple]:
    """Check a step's trades, ``(seller, buyer, kWh, CNY/kWh, kind)`` each, and return them as
    table rows in ``_TX_COLUMNS`` order (what is stored and hashed), numbered from ``seq``.
    Raises ``ValueError`` naming the first bad field."""
    rows = []
    for seller, buyer, kwh, price_cny_per_kwh, kind in trades:
        for role, name in (("seller", seller), ("buyer", buyer)):
            if not isinstance(name, str) or not name:
                raise ValueError(f"{role} must be a non-empty string, got {name!r}")
        if seller == buyer:
            raise ValueError(f"seller and buyer are both {seller!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        if not math.isfinite(kwh) or kwh <= 0:
            raise ValueError(f"kwh must be finite and > 0, got {kwh}")
        if not math.isfinite(price_cny_per_kwh) or price_cny_per_kwh < 0:
            raise ValueError(f"price_cny_per_kwh must be finite and >= 0, got "
                             f"{price_cny_per_kwh}")
        wh, ucny = kwh * WH_PER_KWH, price_cny_per_kwh * UCNY_PER_CNY
        if not (wh <= _MAX_INTEGER and ucny <= _MAX_INTEGER):
            raise ValueError(f"kwh {kwh} or price_cny_per_kwh {price_cny_per_kwh} is beyond the "
                             "ledger's 64-bit integers")
        e_wh = round(wh)
        if e_wh < 1:
            raise ValueError(f"kwh {kwh} is below the ledger's 1 Wh resolution")
        price = round(ucny)
        amount = amount_mcny(e_wh, price)
        if amount > _MAX_INTEGER:
            raise ValueError(f"the amount of {kwh} kWh at {price_cny_per_kwh} CNY/kWh is beyond "
                             "the ledger's 64-bit integers")
        rows.append((block, seq, step, iso_time, seller, buyer, kind, e_wh, price, amount))
        seq += 1
    return rows


_KIND_SET = frozenset(KINDS)


def check_trades(trades: Sequence[tuple[str, str, float, float, str]]) -> int:
    """Raise as :func:`tx_rows` does if any trade is invalid; return the number of trades.

    A quick test passes every valid trade of the usual kind (plain strings, at least 1 Wh
    after rounding: ``kWh x 1000 > 0.5``, below 1 TWh and 1e6 CNY/kWh, so that the amount
    fits too); anything else goes through :func:`tx_rows` itself.
    """
    for seller, buyer, kwh, price, kind in trades:
        if not (type(seller) is str and type(buyer) is str and seller and buyer
                and seller != buyer and kind in _KIND_SET
                and 0.5 < kwh * WH_PER_KWH < 1e12 and 0.0 <= price < 1e6):
            tx_rows(0, 0, 0, "", ((seller, buyer, kwh, price, kind),))
    return len(trades)


# ---------------------------------------------------------------------------------------------
# Interface
# ---------------------------------------------------------------------------------------------


class Ledger(ABC):
    """Where the framework settles trades. Writes are append-only.

    Transactions appended since the last block are pending; :meth:`close_block` seals them (all
    or nothing) into the next block. A sealed block never changes.
    """

    @abstractmethod
    def append(self, step: int, time: str | datetime | pd.Timestamp, seller: str, buyer: str,
               kwh: float, price_cny_per_kwh: float, kind: str) -> int:
        """Add a trade to the open block; returns its sequence number."""

    def extend(self, step: int, time: str | datetime | pd.Timestamp,
               trades: Iterable[tuple[str, str, float, float, str]]) -> int:
        """Add a step's trades, ``(seller, buyer, kWh, CNY/kWh, kind)`` each, in order; returns
        the number added. Invalid trades raise as :meth:`append` does."""
        n = 0
        for seller, buyer, kwh, price, kind in trades:
            self.append(step, time, seller, buyer, kwh, price, kind)
            n += 1
        return n

    @abstractmethod
    def close_block(self, last_step: int, first_step: int | None = None) -> Block:
        """Seal the pending trades as the block covering steps ``[first_step, last_step]``."""

    @abstractmethod
    def statements(self) -> list[Statement]:
        """Every participant's energy bought and sold and money paid and received."""

    @abstractmethod
    def verify(self, public_key: Ed25519PublicKey | str | Path | None = None) -> VerifyResult:
        """Check the whole ledger against the trusted public key."""

    @abstractmethod
    def close(self, *, discard_pending: bool = False) -> None:
        """Release the store; pending (unsealed) trades are an error unless discarded."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # While an exception propagates, unsealed trades are dropped rather than masking it.
        self.close(discard_pending=exc_type is not None)


# ---------------------------------------------------------------------------------------------
# SQLite implementation
# ---------------------------------------------------------------------------------------------

_TX_COLUMNS = ("block", "seq", "step", "time", "seller", "buyer", "kind", "e_wh",
               "price_ucny_per_kwh", "amount_mcny")
_BLOCK_COLUMNS = ("height", "first_step", "last_step", "n_tx", "merkle_root", "prev_hash",
                  "key_fingerprint", "block_hash", "signature")
_tx_row = operator.attrgetter(*_TX_COLUMNS)  # a Transaction as its table row

_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE transactions (
    seq INTEGER PRIMARY KEY,
    block INTEGER NOT NULL,
    step INTEGER NOT NULL,
    time TEXT NOT NULL,
    seller TEXT NOT NULL,
    buyer TEXT NOT NULL,
    kind TEXT NOT NULL,
    e_wh INTEGER NOT NULL,
    price_ucny_per_kwh INTEGER NOT NULL,
    amount_mcny INTEGER NOT NULL
) STRICT;
CREATE INDEX transactions_by_block ON transactions (block, seq);
CREATE TABLE blocks (
    height INTEGER PRIMARY KEY,
    first_step INTEGER NOT NULL,
    last_step INTEGER NOT NULL,
    n_tx INTEGER NOT NULL,
    merkle_root TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    block_hash TEXT NOT NULL,
    signature TEXT NOT NULL
) STRICT;
CREATE VIEW transactions_cny AS
    SELECT seq, block, step, time, seller, buyer, kind,
           e_wh / {WH_PER_KWH}.0 AS kwh,
           price_ucny_per_kwh / {UCNY_PER_CNY}.0 AS price_cny_per_kwh,
           amount_mcny / {MCNY_PER_CNY}.0 AS amount_cny
    FROM transactions;
CREATE VIEW statements AS
    SELECT participant,
           SUM(bought_wh) AS bought_wh, SUM(sold_wh) AS sold_wh,
           SUM(paid_mcny) AS paid_mcny, SUM(received_mcny) AS received_mcny,
           SUM(bought_wh) / {WH_PER_KWH}.0 AS bought_kwh,
           SUM(sold_wh) / {WH_PER_KWH}.0 AS sold_kwh,
           SUM(paid_mcny) / {MCNY_PER_CNY}.0 AS paid_cny,
           SUM(received_mcny) / {MCNY_PER_CNY}.0 AS received_cny
    FROM (SELECT seller AS participant, 0 AS bought_wh, e_wh AS sold_wh,
                 0 AS paid_mcny, amount_mcny AS received_mcny FROM transactions
          UNION ALL
          SELECT buyer, e_wh, 0, amount_mcny, 0 FROM transactions)
    GROUP BY participant ORDER BY participant;
""" + "".join(
    f"""
CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table}
BEGIN SELECT RAISE(ABORT, 'ledger is append-only: {op} on {table} refused'); END;"""
    for table in ("meta", "transactions", "blocks") for op in ("UPDATE", "DELETE")
)


def _resolve(run_dir_or_db: str | Path) -> Path:
    path = Path(run_dir_or_db)
    if path.is_dir():
        if not (path / LEDGER_FILE).is_file():
            raise FileNotFoundError(f"run folder {path} has no {LEDGER_FILE}")
        return path / LEDGER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no such run folder or ledger file: {path}")
    return path


class SqliteLedger(Ledger):
    """Append-only SQLite ledger at ``path`` (usually ``RUN_DIR/ledger.sqlite``).

    Parameters
    ----------
    path : str or Path
        Database file; created if missing, otherwise appended to (it must have been signed with
        the same key).
    signing_key : Ed25519PrivateKey
        The coordinator's key. Its public half is written to ``ledger.pub`` next to the file.
    """

    def __init__(self, path: str | Path, signing_key: Ed25519PrivateKey) -> None:
        self.path = Path(path)
        self._key = signing_key
        self._fp = fingerprint(signing_key.public_key())
        pub_path = self.path.parent / PUBLIC_KEY_FILE
        if pub_path.exists() and fingerprint(load_public_key(pub_path)) != self._fp:
            raise ValueError(f"{pub_path} holds another key than the signing key; a ledger is "
                             "signed by one key")
        new = not self.path.exists()
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            # No fsync per block: a process crash still cannot half-write a block (the rollback
            # journal keeps each block atomic); only an OS crash or power loss may lose the
            # latest blocks. With fsync, sealing a block took ~17 ms: minutes for a year.
            self._db.execute("PRAGMA synchronous = OFF")
            # The rollback journal stays between blocks instead of being created and deleted
            # for each (~100 µs a block); close() removes it.
            self._db.execute("PRAGMA journal_mode = PERSIST")
            if new:
                self._create_schema()
            self._load_state()
        except BaseException:
            self._db.close()
            raise
        if not pub_path.exists():
            pub_path.write_bytes(public_key_pem(signing_key.public_key()))
        self._pending: list[tuple] = []  # rows in _TX_COLUMNS order
        self._last_time: tuple[object, str] = (object(), "")

    def _create_schema(self) -> None:
        self._db.execute("BEGIN")
        for statement in _split_sql(_SCHEMA):
            self._db.execute(statement)
        self._db.executemany("INSERT INTO meta VALUES (?, ?)", [
            ("format_version", str(FORMAT_VERSION)), ("key_fingerprint", self._fp),
            ("merkle", "rfc6962-sha256"),
            ("units", "e_wh=Wh, price=1e-6 CNY/kWh, amount=1e-3 CNY"),
        ])
        self._db.execute("COMMIT")

    def _load_state(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        if meta.get("format_version") != str(FORMAT_VERSION):
            raise ValueError(f"{self.path}: ledger format {meta.get('format_version')!r}, "
                             f"this version writes {FORMAT_VERSION}")
        if meta.get("key_fingerprint") != self._fp:
            raise ValueError(f"{self.path} was signed by key {meta.get('key_fingerprint')}, "
                             f"not by the given signing key {self._fp}")
        last = self._db.execute("SELECT height, last_step, block_hash FROM blocks "
                                "ORDER BY height DESC LIMIT 1").fetchone()
        self._height, self._last_step, self._prev_hash = (
            (last[0] + 1, last[1], last[2]) if last else (0, None, GENESIS_PREV_HASH))
        self._next_seq = self._db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]

    # -- writing --------------------------------------------------------------------------------

    def append(self, step: int, time: str | datetime | pd.Timestamp, seller: str, buyer: str,
               kwh: float, price_cny_per_kwh: float, kind: str) -> int:
        """Add a trade to the open block and return its sequence number.

        Parameters
        ----------
        step : int
            Simulation step the energy flowed in.
        time : str, datetime or Timestamp
            Time-zone-aware start of the step; stored as ISO 8601 with offset.
        seller, buyer : str
            Participants, e.g. ``pv:roof``, ``site:depot``, ``grid``; must differ.
        kwh : float
            Energy traded, > 0, rounded to whole Wh [kWh].
        price_cny_per_kwh : float
            Unit price, >= 0, rounded to 1e-6 [CNY/kWh].
        kind : str
            One of :data:`KINDS`.
        """
        self.extend(step, time, ((seller, buyer, kwh, price_cny_per_kwh, kind),))
        return self._next_seq - 1

    def extend(self, step: int, time: str | datetime | pd.Timestamp,
               trades: Iterable[tuple[str, str, float, float, str]]) -> int:
        # The step's checks once, then each trade's; nothing is added unless all are valid.
        try:
            step = operator.index(step)
        except TypeError:
            raise TypeError(f"step must be an integer, got {step!r}") from None
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(f"step {step} belongs to a sealed block (last sealed step "
                             f"{self._last_step})")
        rows = tx_rows(self._height, self._next_seq, step, self._iso_time(time), trades)
        self._pending += rows
        self._next_seq += len(rows)
        return len(rows)

    def _iso_time(self, time) -> str:
        # A step's trades share one time object: convert it once.
        if time is self._last_time[0]:
            return self._last_time[1]
        ts = time if type(time) is datetime else pd.Timestamp(time)
        if ts.tzinfo is None:
            raise ValueError(f"time {time!r} must be time-zone aware")
        self._last_time = (time, ts.isoformat())
        return self._last_time[1]

    def close_block(self, last_step: int, first_step: int | None = None) -> Block:
        """Seal the pending trades as the next block, signed; returns the block.

        ``first_step`` defaults to the step after the previous block (0 for block 0). Empty
        blocks are allowed, so that block heights stay aligned with simulated hours.
        """
        if first_step is None:
            first_step = 0 if self._last_step is None else self._last_step + 1
        first_step, last_step = int(first_step), int(last_step)
        if self._last_step is not None and first_step <= self._last_step:
            raise ValueError(f"first_step {first_step} overlaps the previous block "
                             f"(last step {self._last_step})")
        if last_step < first_step:
            raise ValueError(f"last_step {last_step} < first_step {first_step}")
        outside = [row[2] for row in self._pending if not first_step <= row[2] <= last_step]
        if outside:
            raise ValueError(f"pending trade(s) at step {outside[0]} outside the block's steps "
                             f"[{first_step}, {last_step}]")
        root = merkle_root([leaf_hash(canonical_tx(*row)) for row in self._pending])
        header = block_header(self._height, first_step, last_step, len(self._pending), root,
                              self._prev_hash, self._fp)
        digest = hashlib.sha256(header).digest()
        block = Block(height=self._height, first_step=first_step, last_step=last_step,
                      n_tx=len(self._pending), merkle_root=root, prev_hash=self._prev_hash,
                      key_fingerprint=self._fp, block_hash=digest.hex(),
                      signature=self._key.sign(digest).hex())
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                f"INSERT INTO transactions ({', '.join(_TX_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_TX_COLUMNS))})",
                self._pending)
            self._db.execute(
                f"INSERT INTO blocks ({', '.join(_BLOCK_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_BLOCK_COLUMNS))})",
                tuple(getattr(block, c) for c in _BLOCK_COLUMNS))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._pending = []
        self._height += 1
        self._last_step = last_step
        self._prev_hash = block.block_hash
        return block

    # -- reading --------------------------------------------------------------------------------

    @property
    def n_blocks(self) -> int:
        return self._height

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    def statements(self) -> list[Statement]:
        return _read_statements(self._db)

    def verify(self, public_key: Ed25519PublicKey | str | Path | None = None) -> VerifyResult:
        return verify(self.path, public_key)

    def close(self, *, discard_pending: bool = False) -> None:
        if self._db is None:
            return
        pending = len(self._pending)
        self._pending = []
        try:
            self._db.execute("PRAGMA journal_mode = DELETE")
        finally:
            self._db.close()
        self._db = None
        if pending and not discard_pending:
            raise RuntimeError(f"{pending} trade(s) appended after the last block were not "
                               "sealed; call close_block before close")


def _split_sql(script: str) -> list[str]:
    """Split the schema into statements (triggers contain ``;`` inside BEGIN ... END)."""
    statements, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        text = "\n".join(buf).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            statements.append(text)
            buf = []
    return statements


def _read_statements(db: sqlite3.Connection) -> list[Statement]:
    rows = db.execute("SELECT participant, bought_wh, sold_wh, paid_mcny, received_mcny "
                      "FROM statements").fetchall()
    return [Statement(*row) for row in rows]


def _connect_read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def statements(run_dir_or_db: str | Path) -> list[Statement]:
    """Participants' balances of the ledger in a run folder (read-only, not verified)."""
    db = _connect_read_only(_resolve(run_dir_or_db))
    try:
        return _read_statements(db)
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------


def _trusted_key(db_path: Path, public_key) -> Ed25519PublicKey:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key
    key_path = Path(public_key) if public_key is not None else db_path.parent / PUBLIC_KEY_FILE
    if not key_path.is_file():
        raise FileNotFoundError(f"no public key to verify with: {key_path} does not exist "
                                "(give one with --public-key FILE)")
    return load_public_key(key_path)


def verify(run_dir_or_db: str | Path,
           public_key: Ed25519PublicKey | str | Path | None = None) -> VerifyResult:
    """Recompute and check the whole ledger of a run folder (or a database file).

    Checks, block by block in height order: heights contiguous from 0 (a block removed or
    reordered), step ranges increasing, transaction sequence numbers contiguous within and across
    blocks, each transaction's steps inside its block and its amount equal to energy x price,
    the number of transactions, the Merkle root, the block hash, the link to the previous block,
    the key fingerprint and the Ed25519 signature with the trusted key; finally that no
    transaction lies outside every sealed block.

    Parameters
    ----------
    run_dir_or_db : str or Path
        Run folder holding ``ledger.sqlite``, or the database file itself.
    public_key : Ed25519PublicKey, str, Path or None
        The trusted key or a PEM file of it; default ``ledger.pub`` beside the database. Real
        deployments pass a key kept outside the run folder.

    Raises
    ------
    FileNotFoundError
        No database, or no public key file.
    """
    db_path = _resolve(run_dir_or_db)
    key = _trusted_key(db_path, public_key)
    db = _connect_read_only(db_path)
    try:
        return _verify(db, key)
    except sqlite3.DatabaseError as exc:
        return VerifyResult(False, None, f"database unreadable ({exc})", 0, 0)
    except (TypeError, ValueError) as exc:
        return VerifyResult(False, None, f"malformed record ({exc})", 0, 0)
    finally:
        db.close()


def _verify(db: sqlite3.Connection, key: Ed25519PublicKey) -> VerifyResult:
    trusted_fp = fingerprint(key)
    blocks = db.execute(f"SELECT {', '.join(_BLOCK_COLUMNS)} FROM blocks "
                        "ORDER BY height").fetchall()
    n_tx_total = db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]

    def broken(k: int | None, reason: str) -> VerifyResult:
        return VerifyResult(False, k, reason, len(blocks), n_tx_total)

    prev_hash, prev_last_step, next_seq = GENESIS_PREV_HASH, None, 0
    for k, row in enumerate(blocks):
        b = Block(*row)
        if b.height != k:
            return broken(k, f"expected block height {k}, found {b.height}: a block was "
                             "removed or the blocks were reordered")
        if b.first_step > b.last_step or (prev_last_step is not None
                                          and b.first_step <= prev_last_step):
            return broken(k, f"steps [{b.first_step}, {b.last_step}] do not follow the previous "
                             f"block (last step {prev_last_step})")
        txs = [Transaction(*r) for r in db.execute(
            f"SELECT {', '.join(_TX_COLUMNS)} FROM transactions WHERE block = ? ORDER BY seq",
            (k,))]
        for tx in txs:
            if tx.seq != next_seq:
                return broken(k, f"transaction sequence jumps from {next_seq - 1} to {tx.seq}: "
                                 "a transaction was removed, added or moved")
            next_seq += 1
            problem = _transaction_problem(tx, b)
            if problem:
                return broken(k, f"transaction {tx.seq}: {problem}")
        if len(txs) != b.n_tx:
            return broken(k, f"block lists {b.n_tx} transactions, {len(txs)} are stored")
        root = merkle_root([leaf_hash(tx.canonical()) for tx in txs])
        if root != b.merkle_root:
            return broken(k, "Merkle root does not match the transactions (a transaction was "
                             "altered, added, removed or reordered)")
        digest = hashlib.sha256(b.header()).hexdigest()
        if digest != b.block_hash:
            return broken(k, "block hash does not match the block header")
        if b.prev_hash != prev_hash:
            return broken(k, f"previous-block hash does not match block {k - 1}"
                          if k else "block 0 does not start the chain")
        if b.key_fingerprint != trusted_fp:
            return broken(k, f"signed by key {b.key_fingerprint[:16]}..., not by the trusted "
                             f"key {trusted_fp[:16]}...")
        try:
            key.verify(bytes.fromhex(b.signature), bytes.fromhex(b.block_hash))
        except (InvalidSignature, ValueError):
            return broken(k, "signature does not verify with the trusted key")
        prev_hash, prev_last_step = b.block_hash, b.last_step

    stray = db.execute("SELECT MIN(block), COUNT(*) FROM transactions WHERE block < 0 "
                       "OR block >= ?", (len(blocks),)).fetchone()
    if stray[1]:
        return broken(stray[0], f"{stray[1]} transaction(s) in block {stray[0]}, which is "
                                "not sealed (blocks removed at the end, or transactions added)")
    return VerifyResult(True, None, "intact", len(blocks), n_tx_total,
                        prev_hash if blocks else None)


def _transaction_problem(tx: Transaction, b: Block) -> str | None:
    if not isinstance(tx.step, int) or not b.first_step <= tx.step <= b.last_step:
        return f"step {tx.step} outside the block's steps [{b.first_step}, {b.last_step}]"
    if tx.kind not in KINDS:
        return f"unknown kind {tx.kind!r}"
    if not (isinstance(tx.e_wh, int) and isinstance(tx.price_ucny_per_kwh, int)
            and isinstance(tx.amount_mcny, int)):
        return "energy, price and amount must be integers"
    if tx.e_wh < 1 or tx.price_ucny_per_kwh < 0:
        return f"energy {tx.e_wh} Wh or price {tx.price_ucny_per_kwh} out of range"
    if tx.amount_mcny != amount_mcny(tx.e_wh, tx.price_ucny_per_kwh):
        return "amount does not equal energy x price"
    if tx.seller == tx.buyer:
        return "seller and buyer are the same"
    return None


# ---------------------------------------------------------------------------------------------
# Command line (wired into ``twin ledger``)
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twin ledger",
                                description="Inspect the settlement ledger of a run.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check that the ledger of a run folder is intact",
                       description="Recompute every Merkle root, hash link and signature. "
                       "Exit 0 when intact, 1 when broken (naming the first bad block), 2 when "
                       "the ledger or key cannot be found.")
    v.add_argument("run_dir", type=Path, help="run folder holding ledger.sqlite (or the file)")
    v.add_argument("--public-key", type=Path, default=None,
                   help="trusted PEM public key (default: ledger.pub in the run folder; keep "
                   "the trusted key outside the run folder in real deployments)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``twin ledger verify RUN_DIR [--public-key FILE]``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        result = verify(args.run_dir, public_key=args.public_key)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.ok:
        print(f"ledger intact: {result.n_blocks} blocks, {result.n_transactions} transactions")
        if result.head_hash:
            print(f"head block hash: {result.head_hash}")
        return 0
    where = f" at block {result.first_bad_block}" if result.first_bad_block is not None else ""
    print(f"ledger broken{where}: {result.reason}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
