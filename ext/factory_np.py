"""NumPy twin of ``ext.factory``: a production line's timeline and step energies, without C.

See ``ext/factory.pyx`` for what :func:`line_window` does. This is the vectorised reference
(NumPy over machines x job slots, one interpolation call for every machine); the compiled kernel
does the same floating-point operations per element, in the same order, so both give
bit-identical results.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["line_window"]

# columns of a machine timeline: off, warm-up, then per job slot gap, processing, repair, set-up
_GAP, _PROC, _REPAIR, _SETUP = _SLOT = tuple(slice(2 + p, None, 4) for p in range(4))


def line_window(gap: np.ndarray, proc: np.ndarray, share: np.ndarray, repair: np.ndarray,
                setup: np.ndarray, carry: np.ndarray, carry_share: np.ndarray,
                warm_start: np.ndarray, job_start: np.ndarray, idle_kw: np.ndarray,
                setup_kw: np.ndarray, rated_kw: np.ndarray, setup_every: np.ndarray,
                jobs_since_setup: np.ndarray, down_until: np.ndarray, lead_s: float,
                close_s: float, edges_s: np.ndarray,
                continues: bool) -> tuple[np.ndarray, np.ndarray]:
    """Timeline of every machine of a line over one window part, its state, its step energies.

    Parameters
    ----------
    gap, proc, share, repair, setup : numpy.ndarray
        Shape ``(n, n_jobs)``: drawn job slots per machine: idle gap [s], processing [s], power
        share of the rating [-], repair [s], set-up [s].
    carry : numpy.ndarray
        Shape ``(n, 4)``: rest of the slot in progress (gap, processing, repair, set-up) [s],
        played before the drawn slots; overwritten with the rest at ``close_s`` when
        ``continues``, else with zeros.
    carry_share : numpy.ndarray
        Power share of the carried slot [-]; overwritten like ``carry``.
    warm_start, job_start : numpy.ndarray
        Start of each machine's warm-up and of its first job slot [s].
    idle_kw, setup_kw, rated_kw : numpy.ndarray
        Power of each machine when idle and during set-up, and its rating [kW].
    setup_every : numpy.ndarray
        int64: a set-up follows every this many jobs.
    jobs_since_setup : numpy.ndarray
        int64, updated in place: jobs done since the last set-up.
    down_until : numpy.ndarray
        Updated in place unless ``continues``: end of a repair that outlasts the window [s].
    lead_s, close_s : float
        Start of the timeline (warm-up of the window) and end of this part [s].
    edges_s : numpy.ndarray
        Increasing step boundaries [s].
    continues : bool
        The window goes on after ``close_s`` (carry the slot in progress over).

    Returns
    -------
    tuple of numpy.ndarray
        Shape ``(n, len(edges_s) - 1)`` each: machine energy [kW s] and processing time [s]
        of each machine between consecutive edges.
    """
    n = proc.shape[0]
    active = job_start < close_s
    # slot 0 is the rest of the slot carried over from the previous part of the window
    gap, proc, repair, setup = (np.concatenate([carry[:, p:p + 1], x], axis=1)
                                for p, x in enumerate((gap, proc, repair, setup)))
    share = np.concatenate([carry_share[:, None], share], axis=1)
    n_slots = proc.shape[1]

    # timeline per machine from the window's lead: off until the warm-up (or the end of a
    # repair), idle warm-up, then job slots; the columns of slot part p are _SLOT[p]
    dur = np.empty((n, 2 + 4 * n_slots))
    dur[:, 0] = warm_start - lead_s
    dur[:, 1] = job_start - warm_start
    for part, values in zip(_SLOT, (gap, proc, repair, setup)):
        dur[:, part] = values
    machine_kw = np.empty_like(dur)
    machine_kw[:, 0] = 0.0
    machine_kw[:, 1] = idle_kw
    machine_kw[:, _GAP] = idle_kw[:, None]
    machine_kw[:, _PROC] = share * rated_kw[:, None]
    machine_kw[:, _REPAIR] = 0.0
    machine_kw[:, _SETUP] = setup_kw[:, None]
    t = np.empty((n, dur.shape[1] + 1))  # t[:, c], t[:, c + 1]: start, end of dur[:, c]
    t[:, 0] = 0.0
    np.cumsum(dur, axis=1, out=t[:, 1:])
    t += lead_s

    # state carried into the next window (or the next part of this one)
    proc_end = t[:, 1:][:, _PROC]
    done = np.count_nonzero((proc_end <= close_s) & (proc > 0) & active[:, None], axis=1)
    jobs_since_setup[:] = (jobs_since_setup + done) % setup_every
    if continues:
        part_start, part_end = t[:, 2:-1].reshape(n, n_slots, 4), t[:, 3:].reshape(n, n_slots, 4)
        in_progress = (part_start[:, :, 0] < close_s) & (part_end[:, :, 3] > close_s)
        rest = np.clip(part_end - np.maximum(part_start, close_s), 0.0, None)
        carry[:] = np.where(in_progress[:, :, None], rest, 0.0).sum(axis=1)
        carry_share[:] = np.where(in_progress, share, 0.0).sum(axis=1)
    else:
        carry[:] = 0.0
        carry_share[:] = 0.0
        rep_start, rep_end = t[:, :-1][:, _REPAIR], t[:, 1:][:, _REPAIR]
        straddle = (rep_start < close_s) & (rep_end > close_s) & active[:, None]
        down_until[:] = np.where(straddle.any(axis=1),
                                 np.max(np.where(straddle, rep_end, -math.inf), axis=1),
                                 down_until)

    # cumulative energy per machine is piecewise linear in time, so evaluating it at the
    # step edges gives the exact energy per step. Every row spans [0, close - lead] after
    # clipping; rows are laid side by side on one axis (offset per row) and the queries are
    # clamped into each row's span, so one interpolation call serves all machines.
    np.clip(t, None, close_s, out=t)
    t -= lead_s
    dt_s = np.diff(t, axis=1)
    e_machine = np.zeros_like(t)
    np.cumsum(machine_kw * dt_s, axis=1, out=e_machine[:, 1:])
    # compressed air follows processing time: cumulative busy time, constant outside jobs
    busy = np.cumsum(dt_s[:, _PROC], axis=1)
    e_air = np.zeros_like(t)
    slots = e_air[:, 3:].reshape(n, n_slots, 4)  # ends of gap, proc, repair, set-up
    slots[:, :, 1:] = busy[:, :, None]
    slots[:, 1:, 0] = busy[:, :-1]
    span_s = close_s - lead_s
    offset = np.arange(n)[:, None] * (span_s + 1.0)
    x = (t + offset).ravel()
    q = (np.clip(edges_s - lead_s, 0.0, span_s)[None, :] + offset).ravel()
    per_bin_m = np.diff(np.interp(q, x, e_machine.ravel()).reshape(n, -1), axis=1)
    per_bin_a = np.diff(np.interp(q, x, e_air.ravel()).reshape(n, -1), axis=1)
    return per_bin_m, per_bin_a


def shed_step(energy: np.ndarray, step_s: float, request: np.ndarray | None,
              out: np.ndarray) -> bool:
    """Step means of every factory with a shedding request applied, into ``out``.

    Only the non-critical part can be shed: each request is clamped to
    ``[0, p_kw - critical_kw]``. Shedding scales the non-critical reactive power in proportion
    and leaves the critical part untouched; what stays deferrable never exceeds what is left
    flexible.

    Parameters
    ----------
    energy : numpy.ndarray
        Shape ``(n, 5)``: energy of each factory over the step per channel, in the order
        ``p_kw, q_kvar, critical_kw, critical_q_kvar, deferrable_kw`` [kW s], [kvar s].
    step_s : float
        Step length [s].
    request : numpy.ndarray or None
        Shape ``(n,)``: load asked to shed per factory [kW]; None: nothing asked.
    out : numpy.ndarray
        Shape ``(5, n)``, written: ``p_kw``, ``q_kvar``, ``critical_kw``, ``deferrable_kw``
        and ``shed_applied_kw`` per factory, means over the step [kW], [kvar].

    Returns
    -------
    bool
        Whether every value written to ``out`` is finite.
    """
    p, q, critical, critical_q, deferrable = np.divide(energy.T, step_s)
    sheddable = np.maximum(p - critical, 0.0)
    asked = np.zeros(p.size) if request is None else request
    applied = np.minimum(np.maximum(asked, 0.0), sheddable)
    if applied.any():
        ratio = np.divide(q - critical_q, sheddable, out=np.zeros(p.size), where=sheddable > 0)
        p = p - applied
        q = q - applied * ratio
        flexible = np.maximum(p - critical, 0.0)
    else:  # nothing shed (the usual step): the powers stay as they are
        flexible = sheddable
    out[0], out[1], out[2], out[4] = p, q, critical, applied
    out[3] = np.minimum(np.maximum(deferrable, 0.0), flexible)
    return bool(np.isfinite(out).all())
