"""Set-points over a lossy, delayed channel: what each device actually applies, step by step.

A message leaves the coordinator at a *send time*, reaches the device ``latency`` seconds later
(log-normal: median ``m``, 98th percentile ``q``, so ``sigma = ln(q/m) / z_0.98``) or never (lost
with probability ``p_loss``). The device applies a message from its arrival on, unless it already
applies a newer one (messages carry the step they were made for; an older one arriving late is
discarded, never applied as fresh). Powers are step means, so a message arriving ``d`` seconds into
a step of length ``T`` gives the step mean ``(d * old + (T - d) * new) / T``; one arriving after
the step is over takes effect in the step it arrives in.

EV chargers (:class:`EVLink`). The coordinator sends one message per EV plugged at the start of
step ``k`` (time ``t_k``), for that step. A charging session starts without a set-point (the EV
charges at its maximum: NaN); a charger forgets its set-point when the EV leaves (a charging
profile lives as long as the charging transaction, as OCPP's ``TxProfile`` does). When a step
passes without any set-point arriving for a plugged EV, the charger applies its *fallback* from
the next step on: ``hold`` keeps the last set-point, ``uncontrolled`` charges at the maximum,
``idle`` stops (0 kW). While the old set-point is "uncontrolled" (NaN), its share of the step mean
is the EV's maximum power over the step.

PV plants (:class:`PVLink`). The coordinator's curtailment and reactive-power set-points made in
step ``k`` are for step ``k + 1``: they are sent at ``t_{k+1}``. A plant keeps its last set-points
when a message is lost. If two messages arrive in the same step, the plant switches once, at the
arrival of the newest; the older one's short interval is not modelled (this happens only when
latencies exceed a step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

Z98 = NormalDist().inv_cdf(0.98)  # standard normal 98th percentile, 2.0537
# what a charger applies after a silent step, per fallback (NaN: charge at the maximum)
FALLBACK_KW = {"uncontrolled": np.nan, "idle": 0.0}


@dataclass
class Counts:
    """Messages of one step: sent, lost, and late (arriving after the step they were made for)."""

    sent: int = 0
    lost: int = 0
    late: int = 0

    def add(self, other: Counts) -> None:
        self.sent += other.sent
        self.lost += other.lost
        self.late += other.late


class Channel:
    """Latency and loss of every message.

    Parameters
    ----------
    latency_median_s, latency_p98_s : float
        Median and 98th percentile of the one-way latency (log-normal; both 0 for none). [s]
    loss_probability : float
        Probability that a message never arrives. [-]
    rng : numpy.random.Generator
        The stream every draw comes from.
    """

    def __init__(self, latency_median_s: float, latency_p98_s: float, loss_probability: float,
                 rng: np.random.Generator) -> None:
        if latency_median_s < 0 or latency_p98_s < latency_median_s:
            raise ValueError("need 0 <= latency_median_s <= latency_p98_s, got "
                             f"{latency_median_s}, {latency_p98_s}")
        if latency_median_s == 0 and latency_p98_s > 0:
            raise ValueError("a log-normal latency needs a positive median")
        if not 0 <= loss_probability <= 1:
            raise ValueError(f"loss_probability must lie in [0, 1], got {loss_probability}")
        self.median_s = float(latency_median_s)
        self.sigma = (math.log(latency_p98_s / latency_median_s) / Z98
                      if latency_median_s > 0 else 0.0)
        self.loss = float(loss_probability)
        self.rng = rng

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Latencies [s] and loss flags of ``n`` messages (both drawn always, so that the
        stream does not depend on the outcomes)."""
        lost = self.rng.random(n) < self.loss
        normal = self.rng.standard_normal(n)
        return self.median_s * np.exp(self.sigma * normal), lost


class _Queue:
    """Messages on their way: device index, payload columns, arrival time, send step."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.ids = np.zeros(0, dtype=np.int64)
        self.values = np.zeros((0, width))
        self.arrival_s = np.zeros(0)
        self.seq = np.zeros(0, dtype=np.int64)

    def push(self, ids: np.ndarray, values: np.ndarray, arrival_s: np.ndarray, seq: int) -> None:
        self.ids = np.concatenate([self.ids, ids])
        self.values = np.concatenate([self.values, values.reshape(len(ids), self.width)])
        self.arrival_s = np.concatenate([self.arrival_s, arrival_s])
        self.seq = np.concatenate([self.seq, np.full(len(ids), seq, dtype=np.int64)])

    def pop_before(self, t_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Remove and return the messages arriving before ``t_s``, by device then arrival."""
        due = self.arrival_s < t_s
        out = self.ids[due], self.values[due], self.arrival_s[due], self.seq[due]
        keep = ~due
        self.ids, self.values = self.ids[keep], self.values[keep]
        self.arrival_s, self.seq = self.arrival_s[keep], self.seq[keep]
        order = np.lexsort((out[2], out[0]))
        return tuple(a[order] for a in out)  # type: ignore[return-value]

    def drop(self, gone: np.ndarray) -> None:
        """Forget the messages for devices flagged in the boolean array ``gone``."""
        keep = ~gone[self.ids]
        self.ids, self.values = self.ids[keep], self.values[keep]
        self.arrival_s, self.seq = self.arrival_s[keep], self.seq[keep]


class EVLink:
    """Per-EV charging set-points over a channel (see the module docstring).

    Parameters
    ----------
    n_ev : int
        Fleet size: length of every set-point vector.
    step_s : float
        Step length. [s]
    channel : Channel
        Latency and loss.
    fallback : {'hold', 'uncontrolled', 'idle'}
        What a charger applies after a step in which no set-point arrived.
    """

    def __init__(self, n_ev: int, step_s: float, channel: Channel, fallback: str = "hold") -> None:
        if fallback not in ("hold", *FALLBACK_KW):
            raise ValueError(f"fallback must be hold, uncontrolled or idle, not {fallback!r}")
        self.n_ev = int(n_ev)
        self.step_s = float(step_s)
        self.channel = channel
        self.fallback = fallback
        self.held_kw = np.full(self.n_ev, np.nan)  # what each charger applies now
        self.held_seq = np.full(self.n_ev, -1, dtype=np.int64)
        self.was_plugged = np.zeros(self.n_ev, dtype=bool)
        self.heard = np.zeros(self.n_ev, dtype=bool)  # a message arrived during the last step
        self.queue = _Queue(1)

    def step(self, k: int, p_set_kw: np.ndarray, plugged_ids: np.ndarray,
             p_max_kw: np.ndarray) -> tuple[np.ndarray, Counts]:
        """The mean set-point each EV applies over step ``k``.

        Parameters
        ----------
        k : int
            Step index; messages of this step leave at ``t_k = k * step_s``.
        p_set_kw : numpy.ndarray
            The coordinator's set-points over all EVs (NaN = charge at the maximum). [kW]
        plugged_ids : numpy.ndarray
            EVs plugged at ``t_k``: each gets one message.
        p_max_kw : numpy.ndarray
            Maximum mean charging power of each plugged EV over the step, aligned to
            ``plugged_ids`` (what "uncontrolled" draws). [kW]

        Returns
        -------
        p_kw : numpy.ndarray
            Set-point vector for the fleet (NaN = uncontrolled; NaN for EVs not plugged). [kW]
        counts : Counts
            This step's messages.
        """
        p_set = np.asarray(p_set_kw, dtype=float)
        if p_set.shape != (self.n_ev,):
            raise ValueError(f"p_set_kw must have {self.n_ev} values, got shape {p_set.shape}")
        ids = np.asarray(plugged_ids, dtype=np.int64)
        t0, t1 = k * self.step_s, (k + 1) * self.step_s
        plugged = np.zeros(self.n_ev, dtype=bool)
        plugged[ids] = True
        gone = ~plugged
        self.held_kw[gone], self.held_seq[gone] = np.nan, -1
        self.queue.drop(gone)
        if self.fallback != "hold":
            silent = plugged & self.was_plugged & ~self.heard
            self.held_kw[silent] = FALLBACK_KW[self.fallback]

        latency, lost = self.channel.draw(ids.size)
        counts = Counts(int(ids.size), int(lost.sum()), int((~lost & (latency >= self.step_s)).sum()))
        ok = ~lost
        self.queue.push(ids[ok], p_set[ids[ok]], t0 + latency[ok], k)

        p_max = np.zeros(self.n_ev)
        p_max[ids] = np.asarray(p_max_kw, dtype=float)
        out = self.held_kw.copy()
        m_ids, m_val, m_arr, m_seq = self.queue.pop_before(t1)
        m_val = m_val[:, 0]
        self.heard[:] = False
        self.heard[m_ids] = True
        if m_ids.size:
            first = np.r_[True, m_ids[1:] != m_ids[:-1]]
            single = first & np.r_[first[1:], True]
            self._apply_single(m_ids[single], m_val[single], m_arr[single], m_seq[single],
                               t0, out, p_max)
            for i in np.unique(m_ids[~single]):
                sel = m_ids == i
                self._apply_many(int(i), m_val[sel], m_arr[sel], m_seq[sel], t0, out, p_max)
        out[gone] = np.nan
        self.was_plugged = plugged
        return out, counts

    def _apply_single(self, i: np.ndarray, v: np.ndarray, arr: np.ndarray, seq: np.ndarray,
                      t0: float, out: np.ndarray, p_max: np.ndarray) -> None:
        fresh = seq > self.held_seq[i]
        i, v, arr, seq = i[fresh], v[fresh], arr[fresh], seq[fresh]
        before = (arr - t0) / self.step_s
        old = self.held_kw[i]
        mixed = before > 0
        # a switch inside the step: the step mean of old then new ("uncontrolled" = p_max)
        old_kw = np.where(np.isnan(old), p_max[i], old)
        new_kw = np.where(np.isnan(v), p_max[i], v)
        mean = before * old_kw + (1.0 - before) * new_kw
        both_free = np.isnan(old) & np.isnan(v)
        out[i] = np.where(mixed & ~both_free, mean, v)
        self.held_kw[i], self.held_seq[i] = v, seq

    def _apply_many(self, i: int, v: np.ndarray, arr: np.ndarray, seq: np.ndarray, t0: float,
                    out: np.ndarray, p_max: np.ndarray) -> None:
        # several arrivals in one step (latencies beyond a step): walk them in arrival order
        held, held_seq = self.held_kw[i], self.held_seq[i]
        segments = []  # (duration [s], set-point [kW] or NaN)
        t_last = t0
        for value, a, s in zip(v, arr, seq):
            if s > held_seq:
                segments.append((a - t_last, held))
                held, held_seq, t_last = value, s, a
        segments.append((t0 + self.step_s - t_last, held))
        if all(np.isnan(x) for d, x in segments if d > 0):
            out[i] = np.nan
        else:
            out[i] = sum(d * (p_max[i] if np.isnan(x) else x) for d, x in segments) / self.step_s
        self.held_kw[i], self.held_seq[i] = held, held_seq


class PVLink:
    """Per-plant curtailment and reactive-power set-points over a channel.

    Parameters
    ----------
    inverter_kw : numpy.ndarray
        Each plant's rating: the curtailment limit before any message ("no limit"). [kW]
    step_s : float
        Step length. [s]
    channel : Channel
        Latency and loss.
    """

    def __init__(self, inverter_kw: np.ndarray, step_s: float, channel: Channel) -> None:
        self.n = len(inverter_kw)
        self.step_s = float(step_s)
        self.channel = channel
        self.held = np.column_stack([np.asarray(inverter_kw, dtype=float), np.zeros(self.n)])
        self.held_seq = np.full(self.n, -1, dtype=np.int64)
        self.queue = _Queue(2)

    def step(self, k: int, curtail_kw: np.ndarray, q_kvar_set: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Counts]:
        """Send the set-points made in step ``k`` (for step ``k + 1``, leaving at ``t_{k+1}``).

        Returns
        -------
        curtail_kw, q_kvar_set : numpy.ndarray
            The set-points the plants apply from ``t_{k+1} + delay`` on (the held ones where
            nothing new arrives). [kW], [kvar]
        delay_s : numpy.ndarray
            Seconds into step ``k + 1`` before they apply (0: the whole step). [s]
        counts : Counts
            This step's messages.
        """
        values = np.column_stack([np.asarray(curtail_kw, dtype=float),
                                  np.asarray(q_kvar_set, dtype=float)])
        if values.shape != (self.n, 2):
            raise ValueError(f"curtail_kw and q_kvar_set must have {self.n} values each")
        t0 = (k + 1) * self.step_s
        latency, lost = self.channel.draw(self.n)
        counts = Counts(self.n, int(lost.sum()), int((~lost & (latency >= self.step_s)).sum()))
        ok = ~lost
        self.queue.push(np.flatnonzero(ok), values[ok], t0 + latency[ok], k)
        delay = np.zeros(self.n)
        ids, vals, arr, seq = self.queue.pop_before(t0 + self.step_s)
        for j in range(ids.size):  # in arrival order per plant: the newest fresh one wins
            i = ids[j]
            if seq[j] > self.held_seq[i]:
                self.held[i], self.held_seq[i], delay[i] = vals[j], seq[j], arr[j] - t0
        return self.held[:, 0].copy(), self.held[:, 1].copy(), delay, counts
