"""OCPP 2.0.1 smart charging inside a charging station: profile checks, stacking, composite.

Pure logic, no networking. A :class:`ProfileStore` holds the installed charging profiles of one
station and answers "what is the limit of EVSE ``n`` at time ``t``" and "what is the composite
schedule over the next ``d`` seconds" following OCPP 2.0.1 part 2, functional block K:

* per purpose, the valid profile with the highest ``stackLevel`` applies; a profile for a
  specific EVSE takes precedence over one for the whole station (``evseId = 0``);
* a ``TxProfile`` (bound to the running transaction) overrides the ``TxDefaultProfile``;
* the result is capped by ``ChargingStationMaxProfile``, ``ChargingStationExternalConstraints``
  and the EVSE's own rating.

Limits are kept in watts internally: ``W = A * V * phases``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

PURPOSES = ("ChargingStationMaxProfile", "TxDefaultProfile", "TxProfile",
            "ChargingStationExternalConstraints")
KINDS = ("Absolute", "Recurring", "Relative")
UNITS = ("A", "W")
_RECURRENCE_S = {"Daily": 86400, "Weekly": 7 * 86400}


class ProfileRejected(ValueError):
    """A charging profile the station refuses; ``reason_code`` goes into ``statusInfo``."""

    def __init__(self, reason_code: str, message: str):
        super().__init__(message)
        self.reason_code = reason_code[:20]


@dataclass(frozen=True)
class EVSERating:
    """Electrical rating of an EVSE.

    Attributes
    ----------
    voltage_v : float
        Phase-to-neutral voltage. [V]
    phases : int
        Phases wired (1 or 3).
    max_current_a : float
        Rated current per phase. [A]
    """

    voltage_v: float
    phases: int
    max_current_a: float

    @property
    def max_power_w(self) -> float:
        """Rated power. [W]"""
        return self.voltage_v * self.phases * self.max_current_a

    def to_w(self, limit: float, unit: str, phases: int | None = None) -> float:
        """A limit in ``unit`` ('A' per phase or 'W') as watts."""
        if unit == "W":
            return float(limit)
        n = min(phases or self.phases, self.phases)
        return float(limit) * self.voltage_v * n

    def from_w(self, p_w: float, unit: str) -> float:
        """Watts as a limit in ``unit``."""
        return p_w if unit == "W" else p_w / (self.voltage_v * self.phases)


@dataclass(frozen=True)
class SchedulePeriod:
    """One period of a schedule: from ``start_s`` after the schedule start, ``limit``."""

    start_s: int
    limit: float
    phases: int | None = None


@dataclass(frozen=True)
class ChargingProfile:
    """An installed charging profile (one schedule)."""

    id: int
    stack_level: int
    purpose: str
    kind: str
    evse_id: int
    unit: str
    periods: tuple[SchedulePeriod, ...]
    start_schedule: datetime | None = None
    duration_s: int | None = None
    recurrency: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: str | None = None


def _time(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(str(value))  # Python >= 3.11 reads a trailing Z
    except ValueError:
        raise ProfileRejected("InvalidSchedule", f"{name} {value!r} is not an ISO 8601 time"
                              ) from None
    if t.tzinfo is None:
        raise ProfileRejected("InvalidSchedule", f"{name} {value!r} has no UTC offset")
    return t


def parse_profile(evse_id: int, data: dict[str, Any], rating: EVSERating, n_evse: int,
                  transactions: dict[int, str]) -> ChargingProfile:
    """Check a ``SetChargingProfileRequest`` (snake_case keys) and return the profile.

    Parameters
    ----------
    evse_id : int
        ``evseId`` of the request (0 = the whole station).
    data : dict
        ``chargingProfile`` with snake_case keys (as the ``ocpp`` package passes it).
    rating : EVSERating
        Rating every limit must respect.
    n_evse : int
        Number of EVSEs of the station (ids 1..n).
    transactions : dict of int to str
        Running transaction id per EVSE.

    Raises
    ------
    ProfileRejected
        For a limit that is NaN, infinite, negative or above the rating, periods that do not
        start at 0 or are not ascending, a TxProfile without a matching running transaction, a
        ChargingStationMaxProfile for a single EVSE, an unknown EVSE, or a schedule the station
        cannot follow.
    """
    if not 0 <= evse_id <= n_evse:
        raise ProfileRejected("UnknownEvse", f"evseId {evse_id} does not exist (0..{n_evse})")
    purpose, kind = data.get("charging_profile_purpose"), data.get("charging_profile_kind")
    if purpose not in PURPOSES or kind not in KINDS:
        raise ProfileRejected("InvalidProfile", f"purpose {purpose!r} / kind {kind!r} unknown")
    if purpose == "ChargingStationMaxProfile" and evse_id != 0:
        raise ProfileRejected("InvalidProfile",
                              "a ChargingStationMaxProfile applies to evseId 0 only")
    tx_id = data.get("transaction_id")
    if purpose == "TxProfile":
        if evse_id == 0:
            raise ProfileRejected("InvalidProfile", "a TxProfile needs a specific EVSE")
        if transactions.get(evse_id) is None:
            raise ProfileRejected("TxNotFound", f"no transaction is running on EVSE {evse_id}")
        if tx_id is not None and tx_id != transactions[evse_id]:
            raise ProfileRejected("TxNotFound", f"transaction {tx_id!r} is not the one running on"
                                  f" EVSE {evse_id} ({transactions[evse_id]!r})")
        tx_id = transactions[evse_id]
    elif tx_id is not None:
        raise ProfileRejected("InvalidProfile", "transactionId is only allowed in a TxProfile")
    schedules = data.get("charging_schedule") or []
    if len(schedules) != 1:
        raise ProfileRejected("InvalidSchedule", "this station follows exactly one "
                              f"chargingSchedule per profile, got {len(schedules)}")
    sched = schedules[0]
    unit = sched.get("charging_rate_unit")
    if unit not in UNITS:
        raise ProfileRejected("InvalidSchedule", f"chargingRateUnit {unit!r} is not A or W")
    cap = rating.max_current_a if unit == "A" else rating.max_power_w
    periods = []
    last = -1
    for i, per in enumerate(sched.get("charging_schedule_period") or []):
        start, limit = per.get("start_period"), per.get("limit")
        phases = per.get("number_phases")
        if not isinstance(limit, (int, float)) or isinstance(limit, bool):
            raise ProfileRejected("InvalidValue", f"period {i}: limit {limit!r} is not a number")
        if not math.isfinite(limit):
            raise ProfileRejected("InvalidValue", f"period {i}: limit {limit} is not finite")
        if limit < 0:
            raise ProfileRejected("InvalidValue", f"period {i}: limit {limit} is negative")
        if limit > cap:
            raise ProfileRejected("ExceedsRating", f"period {i}: limit {limit} {unit} exceeds "
                                  f"the rating {cap:g} {unit}")
        if not isinstance(start, int) or start <= last or (i == 0 and start != 0):
            raise ProfileRejected("InvalidSchedule", f"period {i}: startPeriod {start!r} must be"
                                  " 0 for the first period and ascending after it")
        if phases is not None and phases not in (1, 2, 3):
            raise ProfileRejected("InvalidSchedule", f"period {i}: numberPhases {phases}")
        last = start
        periods.append(SchedulePeriod(start, float(limit), phases))
    if not periods:
        raise ProfileRejected("InvalidSchedule", "the schedule has no period")
    start_schedule = _time(sched.get("start_schedule"), "startSchedule")
    if kind in ("Absolute", "Recurring") and start_schedule is None:
        raise ProfileRejected("InvalidSchedule", f"a {kind} profile needs startSchedule")
    recurrency = data.get("recurrency_kind")
    if kind == "Recurring" and recurrency not in _RECURRENCE_S:
        raise ProfileRejected("InvalidSchedule", "a Recurring profile needs recurrencyKind "
                              "Daily or Weekly")
    duration = sched.get("duration")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        raise ProfileRejected("InvalidSchedule", f"duration {duration!r} must be > 0 s")
    for name in ("id", "stack_level"):
        if not isinstance(data.get(name), int) or data[name] < 0:
            raise ProfileRejected("InvalidProfile", f"{name} must be an integer >= 0")
    return ChargingProfile(
        id=data["id"], stack_level=data["stack_level"], purpose=purpose, kind=kind,
        evse_id=evse_id, unit=unit, periods=tuple(periods), start_schedule=start_schedule,
        duration_s=duration, recurrency=recurrency if kind == "Recurring" else None,
        valid_from=_time(data.get("valid_from"), "validFrom"),
        valid_to=_time(data.get("valid_to"), "validTo"), transaction_id=tx_id,
    )


class ProfileStore:
    """The charging profiles installed in one station.

    Parameters
    ----------
    rating : EVSERating
        Rating of each EVSE (all EVSEs alike).
    n_evse : int
        Number of EVSEs.
    """

    def __init__(self, rating: EVSERating, n_evse: int = 1) -> None:
        self.rating = rating
        self.n_evse = n_evse
        self.profiles: dict[int, ChargingProfile] = {}

    def install(self, p: ChargingProfile) -> None:
        """Add ``p``, replacing a profile with the same id or the same EVSE, purpose and level."""
        for other in list(self.profiles.values()):
            if other.id == p.id or (other.evse_id == p.evse_id and other.purpose == p.purpose
                                    and other.stack_level == p.stack_level):
                del self.profiles[other.id]
        self.profiles[p.id] = p

    def clear(self, profile_id: int | None = None, evse_id: int | None = None,
              purpose: str | None = None, stack_level: int | None = None) -> int:
        """Remove matching profiles (all criteria that are given must match); return how many.

        External constraints are not the CSMS's to clear and stay.
        """
        gone = [p.id for p in self.profiles.values()
                if p.purpose != "ChargingStationExternalConstraints"
                and (profile_id is None or p.id == profile_id)
                and (evse_id is None or p.evse_id == evse_id)
                and (purpose is None or p.purpose == purpose)
                and (stack_level is None or p.stack_level == stack_level)]
        for pid in gone:
            del self.profiles[pid]
        return len(gone)

    def end_transaction(self, transaction_id: str) -> None:
        """Drop the TxProfiles of a finished transaction (they end with it)."""
        for pid in [p.id for p in self.profiles.values() if p.transaction_id == transaction_id]:
            del self.profiles[pid]

    # ------------------------------------------------------------------ evaluation
    @staticmethod
    def _schedule_start(p: ChargingProfile, t: datetime, tx_start: datetime | None
                        ) -> datetime | None:
        if p.kind == "Absolute":
            return p.start_schedule
        if p.kind == "Relative":
            return tx_start
        period = _RECURRENCE_S[p.recurrency]
        k = math.floor((t - p.start_schedule).total_seconds() / period)
        return p.start_schedule + timedelta(seconds=k * period)

    def _value_w(self, p: ChargingProfile, t: datetime, tx_start: datetime | None
                 ) -> float | None:
        """Limit of profile ``p`` at ``t`` in watts, None when it does not apply then."""
        if (p.valid_from and t < p.valid_from) or (p.valid_to and t >= p.valid_to):
            return None
        s0 = self._schedule_start(p, t, tx_start)
        if s0 is None:
            return None
        e = (t - s0).total_seconds()
        if e < 0 or (p.duration_s is not None and e >= p.duration_s):
            return None
        current = None
        for per in p.periods:
            if per.start_s <= e:
                current = per
            else:
                break
        return self.rating.to_w(current.limit, p.unit, current.phases)

    def _purpose_w(self, purpose: str, evse_id: int, t: datetime, tx_id: str | None,
                   tx_start: datetime | None) -> float | None:
        """Limit from the top-stack applicable profile of ``purpose`` (EVSE-specific first)."""
        for scope in ((evse_id, 0) if evse_id != 0 else (0,)):
            cands = sorted((p for p in self.profiles.values()
                            if p.purpose == purpose and p.evse_id == scope
                            and (purpose != "TxProfile" or p.transaction_id == tx_id)),
                           key=lambda p: -p.stack_level)
            for p in cands:
                v = self._value_w(p, t, tx_start)
                if v is not None:
                    return v
        return None

    def limit_w(self, evse_id: int, t: datetime, tx_id: str | None = None,
                tx_start: datetime | None = None, ignore_tx_profiles: bool = False) -> float:
        """Power limit of ``evse_id`` at ``t`` (the composite value). [W]

        ``ignore_tx_profiles`` leaves TxProfiles out (offline fallback to the TxDefaultProfile).
        """
        limit = self.rating.max_power_w
        for purpose in ("ChargingStationMaxProfile", "ChargingStationExternalConstraints"):
            v = self._purpose_w(purpose, 0 if purpose == "ChargingStationMaxProfile" else evse_id,
                                t, tx_id, tx_start)
            if v is not None:
                limit = min(limit, v)
        tx = None
        if tx_id is not None and not ignore_tx_profiles:
            tx = self._purpose_w("TxProfile", evse_id, t, tx_id, tx_start)
        if tx is None:
            tx = self._purpose_w("TxDefaultProfile", evse_id, t, tx_id, tx_start)
        if tx is not None:
            limit = min(limit, tx)
        return max(limit, 0.0)

    def _breakpoints(self, start: datetime, end: datetime, tx_start: datetime | None
                     ) -> list[datetime]:
        pts = {start}
        for p in self.profiles.values():
            for t in (p.valid_from, p.valid_to):
                if t is not None and start < t < end:
                    pts.add(t)
            if p.kind == "Recurring":
                period = timedelta(seconds=_RECURRENCE_S[p.recurrency])
                s0 = self._schedule_start(p, start, tx_start)
                starts = []
                while s0 < end:
                    starts.append(s0)
                    s0 += period
            else:
                s0 = self._schedule_start(p, start, tx_start)
                starts = [] if s0 is None else [s0]
            for s0 in starts:
                offsets = [per.start_s for per in p.periods]
                if p.duration_s is not None:
                    offsets.append(p.duration_s)
                for off in offsets:
                    t = s0 + timedelta(seconds=off)
                    if start < t < end:
                        pts.add(t)
        return sorted(pts)

    def composite(self, evse_id: int, start: datetime, duration_s: int, unit: str,
                  tx_id: str | None = None, tx_start: datetime | None = None,
                  ignore_tx_profiles: bool = False) -> list[SchedulePeriod]:
        """Composite schedule of ``evse_id`` over ``[start, start + duration_s)`` in ``unit``.

        Periods start at the instants where any profile may change; consecutive equal limits
        are merged. Limits in amperes are per phase, rounded to 0.1 A; watts to 0.1 W.
        """
        end = start + timedelta(seconds=duration_s)
        out: list[SchedulePeriod] = []
        for t in self._breakpoints(start, end, tx_start):
            w = self.limit_w(evse_id, t, tx_id, tx_start, ignore_tx_profiles)
            value = round(self.rating.from_w(w, unit), 1)
            if not out or out[-1].limit != value:
                out.append(SchedulePeriod(round((t - start).total_seconds()), value,
                                          self.rating.phases))
        return out
