"""The channel inside the twin: wiring, counts, and what loss and latency do to a small zone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from zones import TINY

from components.comm.config import CommConfig
from twin import kpis as kpi_mod
from twin import world
from twin.scenario import validate

# the tiny case33bw zone, coordinated, under a steady clear sky (one day)
ZONE = {**TINY, "name": "comm-tiny",
        "weather": {"monthly_mean_kc": [0.8] * 12, "intraday_sigma": 0.0},
        "coordinator": {"strategy": "pv_following"}}


def _run(comm=None, **changes):
    data = copy.deepcopy(ZONE)
    data.update(changes)
    if comm is not None:
        data["comm"] = comm
    scenario = validate(data)
    assembly = world.build(scenario)
    try:
        world.execute(assembly, progress=False)
        frames = world.frames(assembly)
        sims = {name: world._instance(assembly.world, e.sid)
                for name, e in assembly.entities.items()}
    finally:
        assembly.discard_ledger()
    return kpi_mod.compute(scenario, frames), frames, sims


@pytest.fixture(scope="module")
def no_channel():
    return _run()


def test_ideal_channel_is_not_simulated_and_gives_identical_kpis(no_channel):
    kpis, _, sims = _run({"technology": "ideal"})
    assert "Comm" not in sims
    assert kpis == no_channel[0]


def test_ideal_channel_simulated_gives_identical_kpis(no_channel, monkeypatch):
    # force the channel simulator into the world with zero latency and loss
    monkeypatch.setattr(CommConfig, "is_ideal", lambda self: False)
    kpis, _, sims = _run({"technology": "ideal"})
    assert "Comm" in sims
    counts = {k: kpis.pop(k) for k in ("messages_sent", "messages_lost", "messages_late")}
    assert counts["messages_sent"] > 0 and counts["messages_lost"] == counts["messages_late"] == 0
    assert kpis == no_channel[0]


def test_total_loss_leaves_the_fleet_uncontrolled_and_counts_match():
    kpis, frames, sims = _run({"technology": "5g", "loss_probability": 1.0})
    comm = frames["comm"]
    assert kpis["messages_sent"] == kpis["messages_lost"] == int(comm["messages_sent"].sum()) > 0
    # no set-point ever arrived: every charger charges as it would without a coordinator
    assert np.isnan(sims["Comm"].ev.held_kw).all()
    assert (sims["Comm"].ev.held_seq == -1).all()
    base, _, _ = _run(coordinator={"strategy": "uncontrolled"})
    for key in ("ev_charge_energy_mwh", "ev_discharge_energy_mwh", "ev_unmet_energy_mwh"):
        assert kpis[key] == pytest.approx(base[key], rel=1e-9, abs=1e-12)
    # plants kept their initial set-points: no curtailment
    assert kpis["pv_energy_mwh"] == pytest.approx(kpis["pv_available_mwh"])


def test_latency_moves_energy_and_every_balance_still_closes(no_channel):
    comm = {"technology": "lte", "latency_median_ms": 120_000, "latency_p98_ms": 600_000}
    kpis, _, sims = _run(comm)
    assert kpis["messages_lost"] == 0 and kpis["messages_late"] > 0
    assert kpis["ev_charge_energy_mwh"] != no_channel[0]["ev_charge_energy_mwh"]
    assert abs(kpis["energy_balance_error"]) < 1e-6
    fleet = sims["EV"].fleet
    assert np.abs(fleet.energy_balance_error_kwh()).max() < 1e-6
    soc = fleet.e_kwh / fleet.cap_kwh
    assert soc.min() >= 0.0 and soc.max() <= 1.0 + 1e-9


def test_lost_set_points_are_settled_as_the_sites_metered_them(no_channel):
    # chargers that miss their set-points hold the last one: they draw other power than was
    # dispatched, and the settlement (KPIs and ledger) follows what they drew
    kpis, frames, _ = _run({"technology": "5g", "loss_probability": 0.4},
                           coordinator={"strategy": "v2g_peak_shaving"})
    coord, ev = frames["coordinator"], frames["ev"]
    assert kpis["messages_lost"] > 0 and ev["discharge_kw"].max() > 0
    np.testing.assert_allclose(coord["pv_to_ev_kw"] + coord["grid_to_ev_kw"], ev["charge_kw"],
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(coord["v2g_kw"], ev["discharge_kw"], rtol=1e-9, atol=1e-9)
    assert kpis["v2g_mwh"] == pytest.approx(kpis["ev_discharge_energy_mwh"], rel=1e-9)


def test_same_seed_same_messages():
    comm = {"technology": "lte", "loss_probability": 0.2}
    a, _, _ = _run(comm)
    b, _, _ = _run(comm)
    assert a == b
    assert 0 < a["messages_lost"] < a["messages_sent"]
