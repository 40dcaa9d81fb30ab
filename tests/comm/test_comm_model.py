"""The channel model: latency and loss laws, and what devices apply (cases computed by hand)."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from components.comm.config import TECHNOLOGIES, CommConfig
from components.comm.model import Z98, Channel, EVLink, PVLink

STEP = 900.0


class Scripted(Channel):
    """A channel whose latencies and losses are given, message by message."""

    def __init__(self, latencies_s, lost=None):
        self.latencies = list(latencies_s)
        self.lost = list(lost) if lost is not None else [False] * len(self.latencies)

    def draw(self, n):
        lat, self.latencies = self.latencies[:n], self.latencies[n:]
        lost, self.lost = self.lost[:n], self.lost[n:]
        return np.array(lat, dtype=float), np.array(lost, dtype=bool)


def _fixed(latency_s, loss=0.0, seed=0):
    return Channel(latency_s, latency_s, loss, np.random.default_rng(seed))


def test_lognormal_latency_has_the_configured_median_and_p98_and_loss_rate():
    ch = Channel(0.004, 0.050, 0.02, np.random.default_rng(1))
    lat, lost = ch.draw(400_000)
    assert np.median(lat) == pytest.approx(0.004, rel=0.01)
    assert np.quantile(lat, 0.98) == pytest.approx(0.050, rel=0.02)
    assert lost.mean() == pytest.approx(0.02, abs=0.001)
    assert ch.sigma == pytest.approx(math.log(12.5) / Z98)


def test_ideal_channel_has_no_latency_and_no_loss():
    lat, lost = Channel(0.0, 0.0, 0.0, np.random.default_rng(0)).draw(1000)
    assert not lat.any() and not lost.any()


def test_config_presets_overrides_and_errors():
    assert CommConfig().params() == TECHNOLOGIES["5g"]
    cfg = CommConfig(technology="lte", loss_probability=0.1)
    assert cfg.params().loss_probability == 0.1
    assert cfg.params().latency_p98_ms == TECHNOLOGIES["lte"].latency_p98_ms
    assert CommConfig(technology="ideal").is_ideal()
    assert not CommConfig(technology="ideal", loss_probability=0.01).is_ideal()
    assert not CommConfig(technology="fibre").is_ideal()
    with pytest.raises(ValidationError, match="latency_p98_ms .* must be >= latency_median_ms"):
        CommConfig(technology="5g", latency_median_ms=100.0)
    with pytest.raises(ValidationError, match="ev_fallback"):
        CommConfig(ev_fallback="panic")
    with pytest.raises(ValidationError, match="loss_probability"):
        CommConfig(loss_probability=1.5)


def test_ev_message_late_within_the_step_mixes_old_and_new_by_hand():
    link = EVLink(3, STEP, _fixed(300.0), "hold")
    ids = np.array([0, 1])
    # step 0: sessions start uncontrolled (the old set-point is "charge at the maximum")
    out, c = link.step(0, np.array([3.0, np.nan, np.nan]), ids, np.array([7.0, 11.0]))
    assert out[0] == pytest.approx((300 * 7.0 + 600 * 3.0) / 900)  # 4.333 kW
    assert np.isnan(out[1])  # uncontrolled before and after: left to the fleet
    assert np.isnan(out[2])  # not plugged
    assert (c.sent, c.lost, c.late) == (2, 0, 0)
    # step 1: the held set-points are the old ones for the first 300 s
    out, _ = link.step(1, np.array([0.0, 5.0, np.nan]), ids, np.array([7.0, 11.0]))
    assert out[0] == pytest.approx((300 * 3.0 + 600 * 0.0) / 900)  # 1.0 kW
    assert out[1] == pytest.approx((300 * 11.0 + 600 * 5.0) / 900)  # 7.0 kW
    # energy over the two steps: the latency shifted 300 s of each change into the next
    e0 = (out[0] + (300 * 7.0 + 600 * 3.0) / 900) * STEP / 3600
    assert e0 == pytest.approx((300 * 7 + 900 * 3 + 600 * 0) / 3600)


def test_ev_message_later_than_the_step_applies_in_the_next_step():
    link = EVLink(1, STEP, _fixed(1200.0), "hold")
    ids, pmax = np.array([0]), np.array([7.0])
    out0, c0 = link.step(0, np.array([2.0]), ids, pmax)
    assert np.isnan(out0[0]) and c0.late == 1
    out1, _ = link.step(1, np.array([4.0]), ids, pmax)
    assert out1[0] == pytest.approx((300 * 7.0 + 600 * 2.0) / 900)  # step 0's, from 300 s on
    out2, _ = link.step(2, np.array([6.0]), ids, pmax)
    assert out2[0] == pytest.approx((300 * 2.0 + 600 * 4.0) / 900)


def test_an_older_message_arriving_after_a_newer_one_is_discarded():
    # step 0's message takes 1500 s (arrives 600 s into step 1); step 1's takes 100 s
    link = EVLink(1, STEP, Scripted([1500.0, 100.0, 50.0]), "hold")
    ids, pmax = np.array([0]), np.array([7.0])
    link.step(0, np.array([2.0]), ids, pmax)
    out1, _ = link.step(1, np.array([4.0]), ids, pmax)
    assert out1[0] == pytest.approx((100 * 7.0 + 800 * 4.0) / 900)
    assert link.held_kw[0] == 4.0 and link.held_seq[0] == 1
    out2, _ = link.step(2, np.array([1.0]), ids, pmax)
    assert out2[0] == pytest.approx((50 * 4.0 + 850 * 1.0) / 900)


def test_two_fresh_messages_in_one_step_are_applied_in_turn():
    # step 0's message arrives 200 s into step 1, step 1's 500 s into it
    link = EVLink(1, STEP, Scripted([1100.0, 500.0]), "hold")
    ids, pmax = np.array([0]), np.array([6.0])
    link.step(0, np.array([2.0]), ids, pmax)
    out1, _ = link.step(1, np.array([4.0]), ids, pmax)
    assert out1[0] == pytest.approx((200 * 6.0 + 300 * 2.0 + 400 * 4.0) / 900)


@pytest.mark.parametrize("fallback, step1", [("hold", 3.0), ("uncontrolled", np.nan),
                                             ("idle", 0.0)])
def test_lost_messages_are_never_applied_and_the_fallback_follows(fallback, step1):
    link = EVLink(1, STEP, Scripted([0.0, 0.0, 0.0], lost=[False, True, True]), fallback)
    ids, pmax = np.array([0]), np.array([7.0])
    out0, c0 = link.step(0, np.array([3.0]), ids, pmax)
    assert out0[0] == 3.0 and c0.lost == 0
    out1, c1 = link.step(1, np.array([5.0]), ids, pmax)
    assert out1[0] == 3.0 and (c1.sent, c1.lost) == (1, 1)  # step 0 was heard: still held
    out2, _ = link.step(2, np.array([5.0]), ids, pmax)
    np.testing.assert_equal(out2[0], step1)  # a silent step: the fallback from now on


def test_total_loss_leaves_every_ev_uncontrolled():
    rng = np.random.default_rng(3)
    link = EVLink(50, STEP, Channel(0.004, 0.05, 1.0, rng), "hold")
    sent = lost = 0
    for k in range(8):
        ids = np.sort(rng.choice(50, size=20, replace=False))
        out, c = link.step(k, rng.uniform(-5, 7, 50), ids, np.full(20, 7.0))
        assert np.isnan(out).all()
        sent, lost = sent + c.sent, lost + c.lost
    assert sent == lost == 160


def test_a_departed_ev_forgets_its_set_point_and_its_messages():
    link = EVLink(2, STEP, Scripted([0.0, 1000.0, 0.0]), "hold")
    link.step(0, np.array([3.0, np.nan]), np.array([0]), np.array([7.0]))
    link.step(1, np.array([4.0, np.nan]), np.array([0]), np.array([7.0]))  # arrives late
    out, _ = link.step(2, np.array([np.nan, 2.0]), np.array([1]), np.array([7.0]))
    assert np.isnan(out[0]) and np.isnan(link.held_kw[0]) and link.queue.ids.size == 0
    assert out[1] == 2.0


def test_ideal_ev_link_passes_set_points_unchanged():
    link = EVLink(4, STEP, Channel(0.0, 0.0, 0.0, np.random.default_rng(0)), "hold")
    p = np.array([1.5, np.nan, -3.0, 2.0])
    out, c = link.step(0, p, np.array([0, 1, 2]), np.array([7.0, 7.0, 7.0]))
    np.testing.assert_array_equal(out, np.array([1.5, np.nan, -3.0, np.nan]))
    assert (c.sent, c.lost, c.late) == (3, 0, 0)


def test_pv_link_delays_holds_on_loss_and_counts():
    link = PVLink(np.array([100.0, 50.0]), STEP, Scripted([120.0, 0.0, 30.0, 0.0],
                                                         lost=[False, False, False, True]))
    curtail, q, delay, c = link.step(0, np.array([80.0, 40.0]), np.array([-5.0, 0.0]))
    np.testing.assert_allclose(curtail, [80.0, 40.0])
    np.testing.assert_allclose(q, [-5.0, 0.0])
    np.testing.assert_allclose(delay, [120.0, 0.0])
    assert (c.sent, c.lost) == (2, 0)
    curtail, q, delay, c = link.step(1, np.array([60.0, 10.0]), np.array([0.0, 3.0]))
    np.testing.assert_allclose(curtail, [60.0, 40.0])  # plant 1's message is lost: held
    np.testing.assert_allclose(q, [0.0, 0.0])
    np.testing.assert_allclose(delay, [30.0, 0.0])
    assert (c.sent, c.lost) == (2, 1)
