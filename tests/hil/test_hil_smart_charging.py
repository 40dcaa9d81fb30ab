"""OCPP 2.0.1 charging-profile checks, stacking and composite schedules."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from components.hil.smart_charging import (
    EVSERating,
    ProfileRejected,
    ProfileStore,
    parse_profile,
)

RATING = EVSERating(voltage_v=230.0, phases=3, max_current_a=32.0)  # 22.08 kW
T0 = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)
TX = {1: "tx-1"}


def profile(pid, purpose, limits, unit="W", stack=0, kind="Absolute", start=T0, duration=None,
            tx=None, recurrency=None, **kw):
    sched = {"id": 1, "charging_rate_unit": unit,
             "charging_schedule_period": [{"start_period": s, "limit": v} for s, v in limits]}
    if start is not None:
        sched["start_schedule"] = start.isoformat()
    if duration is not None:
        sched["duration"] = duration
    data = {"id": pid, "stack_level": stack, "charging_profile_purpose": purpose,
            "charging_profile_kind": kind, "charging_schedule": [sched], **kw}
    if tx is not None:
        data["transaction_id"] = tx
    if recurrency is not None:
        data["recurrency_kind"] = recurrency
    return data


def install(store, evse, data, txs=TX):
    store.install(parse_profile(evse, data, RATING, 1, txs))


def test_units_convert_with_voltage_and_phases():
    assert RATING.max_power_w == pytest.approx(22_080.0)
    assert RATING.to_w(16.0, "A") == pytest.approx(16 * 230 * 3)
    assert RATING.to_w(16.0, "A", phases=1) == pytest.approx(16 * 230)
    assert RATING.from_w(11_040.0, "A") == pytest.approx(16.0)


def test_tx_profile_overrides_tx_default_and_the_max_profile_caps_both():
    store = ProfileStore(RATING)
    assert store.limit_w(1, T0, "tx-1", T0) == pytest.approx(RATING.max_power_w)
    install(store, 0, profile(1, "TxDefaultProfile", [(0, 7000.0)]))
    assert store.limit_w(1, T0, "tx-1", T0) == pytest.approx(7000.0)
    install(store, 1, profile(2, "TxProfile", [(0, 16.0)], unit="A", tx="tx-1"))
    assert store.limit_w(1, T0, "tx-1", T0) == pytest.approx(16 * 230 * 3)
    assert store.limit_w(1, T0, "tx-1", T0, ignore_tx_profiles=True) == pytest.approx(7000.0)
    install(store, 0, profile(3, "ChargingStationMaxProfile", [(0, 9000.0)]))
    assert store.limit_w(1, T0, "tx-1", T0) == pytest.approx(9000.0)
    assert store.limit_w(1, T0, None, None) == pytest.approx(7000.0)  # no tx: default applies


def test_higher_stack_level_wins_until_its_duration_ends():
    store = ProfileStore(RATING)
    install(store, 1, profile(1, "TxDefaultProfile", [(0, 11_000.0)], stack=0))
    install(store, 1, profile(2, "TxDefaultProfile", [(0, 3_000.0)], stack=5, duration=600))
    assert store.limit_w(1, T0 + timedelta(seconds=599)) == pytest.approx(3_000.0)
    assert store.limit_w(1, T0 + timedelta(seconds=600)) == pytest.approx(11_000.0)


def test_evse_specific_default_beats_the_station_wide_one():
    store = ProfileStore(RATING)
    install(store, 0, profile(1, "TxDefaultProfile", [(0, 5_000.0)], stack=9))
    install(store, 1, profile(2, "TxDefaultProfile", [(0, 8_000.0)], stack=0))
    assert store.limit_w(1, T0) == pytest.approx(8_000.0)


def test_same_purpose_and_level_replaces_and_clear_removes():
    store = ProfileStore(RATING)
    install(store, 1, profile(1, "TxDefaultProfile", [(0, 5_000.0)]))
    install(store, 1, profile(7, "TxDefaultProfile", [(0, 6_000.0)]))
    assert list(store.profiles) == [7]
    assert store.clear(purpose="TxProfile") == 0
    assert store.clear(evse_id=1) == 1
    assert store.limit_w(1, T0) == pytest.approx(RATING.max_power_w)


def test_tx_profiles_end_with_their_transaction():
    store = ProfileStore(RATING)
    install(store, 1, profile(2, "TxProfile", [(0, 4_000.0)], tx="tx-1"))
    store.end_transaction("tx-1")
    assert store.profiles == {}


def test_relative_and_daily_recurring_schedules():
    store = ProfileStore(RATING)
    install(store, 1, profile(1, "TxProfile", [(0, 2_000.0), (1800, 9_000.0)],
                              kind="Relative", start=None, tx="tx-1"))
    tx_start = T0 + timedelta(hours=2)
    assert store.limit_w(1, tx_start + timedelta(seconds=10), "tx-1", tx_start) == 2_000.0
    assert store.limit_w(1, tx_start + timedelta(seconds=1800), "tx-1", tx_start) == 9_000.0
    store = ProfileStore(RATING)
    install(store, 0, profile(3, "ChargingStationMaxProfile",
                              [(0, 20_000.0), (10 * 3600, 6_000.0), (14 * 3600, 20_000.0)],
                              kind="Recurring", recurrency="Daily"))
    for day in range(3):
        base = T0 + timedelta(days=day)
        assert store.limit_w(1, base + timedelta(hours=11)) == 6_000.0
        assert store.limit_w(1, base + timedelta(hours=15)) == 20_000.0


def test_composite_schedule_lists_every_change_once():
    store = ProfileStore(RATING)
    install(store, 0, profile(1, "TxDefaultProfile", [(0, 7_000.0), (600, 3_000.0)]))
    install(store, 1, profile(2, "TxProfile", [(0, 11_000.0)], duration=300, tx="tx-1",
                              start=T0))
    periods = store.composite(1, T0, 1200, "W", "tx-1", T0)
    assert [(p.start_s, p.limit) for p in periods] == [(0, 11_000.0), (300, 7_000.0),
                                                       (600, 3_000.0)]
    amps = store.composite(1, T0, 1200, "A", "tx-1", T0)
    assert amps[0].limit == pytest.approx(round(11_000 / (230 * 3), 1))


@pytest.mark.parametrize("limit, code", [(math.nan, "InvalidValue"), (math.inf, "InvalidValue"),
                                         (-1.0, "InvalidValue"), (22_081.0, "ExceedsRating")])
def test_bad_limits_are_rejected(limit, code):
    with pytest.raises(ProfileRejected) as exc:
        parse_profile(1, profile(1, "TxDefaultProfile", [(0, limit)]), RATING, 1, TX)
    assert exc.value.reason_code == code


@pytest.mark.parametrize("evse, data, code", [
    (1, profile(1, "TxProfile", [(0, 5_000.0)]), "TxNotFound"),  # no transaction given
    (1, profile(1, "TxProfile", [(0, 5_000.0)], tx="other"), "TxNotFound"),
    (1, profile(1, "ChargingStationMaxProfile", [(0, 5_000.0)]), "InvalidProfile"),
    (2, profile(1, "TxDefaultProfile", [(0, 5_000.0)]), "UnknownEvse"),
    (1, profile(1, "TxDefaultProfile", [(10, 5_000.0)]), "InvalidSchedule"),
    (1, profile(1, "TxDefaultProfile", [(0, 5_000.0), (0, 6_000.0)]), "InvalidSchedule"),
    (1, profile(1, "TxDefaultProfile", [(0, 5_000.0)], start=None), "InvalidSchedule"),
    (1, profile(1, "TxDefaultProfile", [(0, 40.0)], unit="A"), "ExceedsRating"),
])
def test_inconsistent_profiles_are_rejected(evse, data, code):
    txs = {} if data.get("transaction_id") is None and code == "TxNotFound" else TX
    with pytest.raises(ProfileRejected) as exc:
        parse_profile(evse, data, RATING, 1, txs)
    assert exc.value.reason_code == code
