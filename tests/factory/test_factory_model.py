"""Factory fleet physics: bounds, shift calendar, reactive power, exact step means, seeds."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.factory.config import FactoriesConfig, FactoryConfig
from components.factory.model import (
    FactoryFleet,
    add_piece,
    season_factor,
    tan_phi,
    working_windows,
)

MONDAY = dt.datetime.fromisoformat("2026-06-01T00:00:00+08:00")  # a Monday in Chongqing
DAY_S = 86400


def _fleet(factories, start=MONDAY, step_s=900, days=1, seed=1, n_steps=None):
    section = FactoriesConfig.model_validate(factories)
    n = n_steps if n_steps is not None else int(days * DAY_S // step_s)
    return FactoryFleet(section, start, step_s, n, np.random.default_rng(seed))


def _presets(*names, **extra):
    return [{"name": f"f{i}", "bus": i, "preset": p, **extra} for i, p in enumerate(names)]


def _deterministic_factory(**overrides):
    """Two 10-kW machines, fixed 10-min jobs, a 5-min set-up after every 3rd job."""
    machine = {"name": "press", "count": 2, "rated_kw": 10.0, "power_factor": 0.8,
               "load_share": 0.5, "load_cv": 0.0, "idle_share": 0.1, "setup_share": 0.2,
               "cycle_min": 10.0, "cycle_cv": 0.0, "gap_min": 0.0, "setup_min": 5.0,
               "setup_cv": 0.0, "setup_every_jobs": 3, "mtbf_h": None}
    return {"name": "det", "bus": 0, "warmup_min": 30.0,
            "lines": [{"name": "l", "machines": [machine]}],
            "shifts": [{"start": "08:00", "end": "16:00", "days": ["Mon-Sun"]}],
            "base_loads": {"compressed_air_kw": 10.0, "compressed_air_floor_share": 0.5},
            **overrides}


def test_deterministic_factory_matches_hand_computed_energy():
    # day 1: 13 periods of (3 jobs + set-up) = 455 min, then 2.5 jobs: 415 min processing,
    # 65 min set-up, 41 jobs done (counter 41 % 3 = 2). Day 2 starts with a set-up after the
    # first job: 410 min processing, 70 min set-up.
    res = _fleet([_deterministic_factory()], step_s=60, days=2).run()
    e_kwh = res.p_kw[:, 0].reshape(2, -1).sum(axis=1) / 60.0
    warm = 2 * 1.0 * 0.5  # two machines idle at 1 kW for 30 min
    floor = 5.0 * 24.0  # compressed-air floor
    expected = [2 * (415 / 60 * 5.0 + 65 / 60 * 2.0) + warm + 2 * 2.5 * 415 / 60 + floor,
                2 * (410 / 60 * 5.0 + 70 / 60 * 2.0) + warm + 2 * 2.5 * 410 / 60 + floor]
    np.testing.assert_allclose(e_kwh, expected, rtol=1e-9)
    minute = res.p_kw[:, 0]
    assert minute[7 * 60 + 29] == pytest.approx(5.0)  # night: air floor only
    assert minute[7 * 60 + 45] == pytest.approx(5.0 + 2.0)  # warm-up at idle power
    assert minute[8 * 60 + 5] == pytest.approx(5.0 + 2 * 5.0 + 2 * 2.5)  # both processing
    assert minute[8 * 60 + 32] == pytest.approx(5.0 + 2 * 2.0)  # both in set-up
    assert minute[16 * 60] == pytest.approx(5.0)  # off after the shift
    # reactive power of machines at pf 0.8 (0.75 kvar/kW) plus air at pf 0.85
    assert res.q_kvar[8 * 60 + 32, 0] == pytest.approx(5.0 * tan_phi(0.85) + 4.0 * 0.75)


def test_continuous_operation_carries_jobs_across_midnight():
    # round-the-clock shifts merge into one window that opened two days before the start
    # (Saturday 00:00); the fixed 35-min pattern (three 10-min jobs at 5 kW, a 5-min set-up at
    # 2 kW) must run on through every local midnight, where the model cuts the window
    factory = _deterministic_factory(shifts=[{"start": "00:00", "end": "24:00",
                                              "days": ["Mon-Sun"]}], base_loads={})
    res = _fleet([factory], step_s=60, days=3).run()
    minute_of_pattern = (np.arange(3 * 1440) + 2 * 1440) % 35
    per_machine_kw = np.where(minute_of_pattern < 30, 5.0, 2.0)
    np.testing.assert_allclose(res.p_kw[:, 0], 2 * per_machine_kw, rtol=1e-9)


def test_step_means_are_exact_for_any_step_length():
    factories = _presets("auto_parts", "food_processing", "electronics")
    coarse = _fleet(factories, step_s=900, days=2, seed=5).run()
    fine = _fleet(factories, step_s=60, days=2, seed=5).run()
    for name in ("p_kw", "q_kvar", "critical_kw", "critical_q_kvar", "deferrable_kw"):
        c, f = getattr(coarse, name), getattr(fine, name)
        # each 15-min mean is the mean of its fifteen 1-min means: same trajectory, averaged
        np.testing.assert_allclose(c, f.reshape(-1, 15, 3).mean(axis=1), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(c.reshape(2, -1, 3).sum(axis=1) * 900,
                                   f.reshape(2, -1, 3).sum(axis=1) * 60, rtol=1e-12)
    assert fine.p_kw.std() > 0.1 * fine.p_kw.mean()  # the test would see a wrong trajectory


def test_stepping_one_step_at_a_time_equals_a_whole_run():
    factories = _presets("auto_parts", "electronics")
    whole = _fleet(factories, days=3, seed=9).run()
    fleet = _fleet(factories, days=3, seed=9)
    stepped = np.array([fleet.step(k).p_kw for k in range(fleet.n_steps)])
    np.testing.assert_array_equal(stepped, whole.p_kw)


def test_same_seed_identical_other_seed_different():
    factories = _presets("auto_parts", "food_processing")
    a = _fleet(factories, days=2, seed=11).run()
    b = _fleet(factories, days=2, seed=11).run()
    c = _fleet(factories, days=2, seed=12).run()
    for name in ("p_kw", "q_kvar", "critical_kw", "deferrable_kw"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.p_kw, c.p_kw)
    # a different seed changes the noise, not the plant: daily energies stay close
    np.testing.assert_allclose(a.p_kw.sum(axis=0), c.p_kw.sum(axis=0), rtol=0.05)


def test_power_bounded_by_ratings_and_shares_consistent():
    factories = _presets("auto_parts", "electronics", "food_processing")
    fleet = _fleet(factories, days=14, seed=3)
    res = fleet.run()
    assert (res.p_kw >= 0).all() and (res.q_kvar >= 0).all()
    assert (res.p_kw <= fleet.rated_kw).all()
    assert (res.p_kw.max(axis=0) > 0.5 * fleet.rated_kw).all()  # ratings are not far off
    assert (res.critical_kw >= 0).all() and (res.critical_kw <= res.p_kw).all()
    assert (res.deferrable_kw >= 0).all()
    assert (res.deferrable_kw <= res.p_kw - res.critical_kw + 1e-9).all()
    assert (res.critical_q_kvar <= res.q_kvar + 1e-9).all()
    # Q/P lies between the smallest and largest tan(phi) of the factory's loads
    for i, f in enumerate(fleet.factories):
        pfs = [m.power_factor for line in f.lines for m in line.machines]
        b = f.base_loads
        pfs += [b.hvac_pf, b.lighting_pf, b.compressed_air_pf, b.other_pf]
        ratio = res.q_kvar[:, i] / res.p_kw[:, i]
        assert ratio.min() >= tan_phi(max(pfs)) - 1e-12
        assert ratio.max() <= tan_phi(min(pfs)) + 1e-12


def test_two_shift_pattern_gives_sixteen_hours_of_high_load():
    holiday = "2026-06-03"  # a Wednesday
    fleet = _fleet(_presets("auto_parts", holidays=[holiday]), days=14, seed=2)
    p = fleet.run().p_kw[:, 0].reshape(14, 96)  # [day, quarter hour]
    days = [(MONDAY + dt.timedelta(days=d)).date() for d in range(14)]
    workdays = [d for d, day in enumerate(days)
                if day.isoweekday() <= 6 and day.isoformat() != holiday]
    idle_days = [d for d in range(14) if d not in workdays]
    assert len(workdays) == 11 and len(idle_days) == 3  # two Sundays and the holiday
    shift = p[workdays][:, 32:96]  # 08:00-24:00
    night = p[workdays][:, 0:28]  # 00:00-07:00
    assert shift.mean() > 8 * night.mean()
    assert shift.mean() > 8 * p[idle_days].mean()
    # hours per workday above 70 % of the shift mean (the warm-up quarter at idle stays below)
    high = (p[workdays] > 0.7 * shift.mean()).sum(axis=1) / 4.0
    np.testing.assert_array_equal(high, 16.0)
    # Sundays and the holiday: only the always-on floor, flat over the day
    assert np.ptp(p[idle_days], axis=1).max() < 1e-9 * p.max()


def test_shift_crossing_midnight_runs_into_the_next_day():
    factory = _deterministic_factory(
        shifts=[{"start": "22:00", "end": "06:00", "days": ["Fri"]}], warmup_min=0.0,
        base_loads={})
    p = _fleet([factory], step_s=3600, days=7).run().p_kw[:, 0]
    busy = np.flatnonzero(p > 0) / 24.0  # fractional day index of loaded hours
    np.testing.assert_array_equal(busy, (np.arange(4 * 24 + 22, 5 * 24 + 6)) / 24.0)


def test_clock_times_are_local_to_the_start_time_zone():
    factory = _presets("auto_parts")
    local = _fleet(factory, start=dt.datetime.fromisoformat("2026-06-01T06:00:00+08:00"),
                   n_steps=96).run().p_kw[:, 0]
    utc = _fleet(factory, start=dt.datetime.fromisoformat("2026-05-31T22:00:00+00:00"),
                 n_steps=96).run().p_kw[:, 0]
    # Monday 08:00 is 2 h after a 06:00+08:00 start; 10 h after Sunday 22:00 UTC
    assert np.flatnonzero(local > 0.5 * local.max())[0] == 8
    assert np.flatnonzero(utc > 0.5 * utc.max())[0] == 40
    with pytest.raises(ValueError, match="time-zone aware"):
        FactoryFleet(FactoriesConfig.model_validate(factory), dt.datetime(2026, 6, 1), 900, 4,
                     np.random.default_rng(0))


def test_working_windows_merge_touching_shifts_and_skip_holidays():
    f = FactoryConfig.model_validate({**_presets("auto_parts")[0],
                                      "holidays": ["2026-06-02"]})
    w = working_windows(f, MONDAY, 7 * DAY_S) / 3600.0
    # Mon, Wed, Thu, Fri, Sat; 08:00-24:00 each, warm-up from 07:45
    opens = np.array([0, 2, 3, 4, 5]) * 24 + 8.0
    np.testing.assert_allclose(w[:, 1], opens)
    np.testing.assert_allclose(w[:, 2], opens + 16.0)
    np.testing.assert_allclose(w[:, 0], opens - 0.25)


def test_breakdown_outlasting_a_shift_keeps_the_machine_down():
    machine = _deterministic_factory()["lines"][0]["machines"][0]
    broken = {**machine, "count": 1, "mtbf_h": 0.05, "mttr_min": 1e5}  # fails within the hour
    factory = _deterministic_factory(lines=[{"name": "l", "machines": [broken]}],
                                     base_loads={})
    p = _fleet([factory], step_s=3600, days=3).run().p_kw[:, 0].reshape(3, 24)
    assert 0 < p[0].sum() < 5.0 * 8  # a few jobs on day 1, then down
    assert p[1:].sum() == 0.0  # the repair (about 70 days) outlasts the next shifts


def test_breakdowns_and_gaps_lower_the_energy():
    base = _deterministic_factory(base_loads={})
    machine = base["lines"][0]["machines"][0]
    flaky = {**machine, "mtbf_h": 2.0, "mttr_min": 60.0, "gap_min": 2.0, "cycle_cv": 0.2}
    e_base = _fleet([base], days=7).run().p_kw.sum()
    e_flaky = _fleet([{**base, "lines": [{"name": "l", "machines": [flaky]}]}],
                     days=7).run().p_kw.sum()
    assert 0.5 * e_base < e_flaky < 0.9 * e_base


def test_critical_and_deferrable_machines_are_reported_as_such():
    machine = _deterministic_factory()["lines"][0]["machines"][0]
    lines = [{"name": "l", "machines": [{**machine, "name": "oven", "critical": True},
                                        {**machine, "name": "rack", "deferrable": True}]}]
    res = _fleet([_deterministic_factory(lines=lines, base_loads={})], days=1).run()
    np.testing.assert_allclose(res.critical_kw + res.deferrable_kw, res.p_kw, rtol=1e-12)
    np.testing.assert_allclose(res.critical_kw, res.deferrable_kw, rtol=1e-12)  # same duty
    assert res.p_kw.max() > 0


def test_hvac_follows_the_chongqing_seasons():
    from components.factory.config import BaseLoadConfig

    b = BaseLoadConfig(hvac_kw=100.0)
    july, april, january = (season_factor(dt.date(2026, m, d), b)
                            for m, d in ((7, 24), (4, 15), (1, 20)))
    assert july == pytest.approx(1.0, abs=1e-3)
    assert april < 0.4 and january == pytest.approx(0.5, abs=0.01)
    factory = _deterministic_factory(base_loads={"hvac_kw": 100.0, "hvac_floor_share": 0.2})
    summer = _fleet([factory], start=dt.datetime.fromisoformat("2026-07-24T00:00:00+08:00"),
                    step_s=3600).run().p_kw[:, 0]
    spring = _fleet([factory], start=dt.datetime.fromisoformat("2026-04-15T00:00:00+08:00"),
                    step_s=3600).run().p_kw[:, 0]
    assert summer[3] == pytest.approx(20.0, rel=1e-3)  # night: floor share of full HVAC
    assert summer[3] > 2.5 * spring[3]
    # 12:00-13:00: HVAC above its floor plus 50 min processing and 10 min set-up of machines
    assert summer[12] - summer[3] == pytest.approx(80.0 + (50 * 10.0 + 10 * 4.0) / 60, rel=1e-3)


def test_add_piece_matches_brute_force_overlap():
    rng = np.random.default_rng(0)
    n, step_s, n_steps, n_groups = 300, 900.0, 40, 3
    t0 = rng.uniform(-2000, 38000, n)
    t1 = t0 + rng.exponential(3000, n)
    t1[:5] = t0[:5]  # empty pieces
    t0[5] = 2 * step_s  # starts exactly on a boundary
    t1[5] = 4 * step_s  # and ends on one
    t0[6], t1[6] = 3 * step_s + 100.0, 3 * step_s + 400.0  # inside one step
    group = rng.integers(0, n_groups, n)
    w = rng.uniform(0, 50, (n, 2))
    out = np.zeros((n_steps, n_groups, 2))
    for i in range(n):
        add_piece(out[:, group[i]], float(t0[i]), float(t1[i]), w[i], step_s)
    expected = np.zeros_like(out)
    for i in range(n):
        for k in range(n_steps):
            overlap = min(t1[i], (k + 1) * step_s) - max(t0[i], k * step_s)
            if overlap > 0:
                expected[k, group[i]] += w[i] * overlap
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-9)
    assert out[2, group[5], 0] > 0 and out[2:4, group[5]].sum() > 0


_machine_strategy = st.fixed_dictionaries({
    "name": st.just("m"),
    "count": st.integers(1, 4),
    "rated_kw": st.floats(1.0, 300.0),
    "power_factor": st.floats(0.6, 1.0),
    "load_share": st.floats(0.0, 1.0),
    "load_cv": st.floats(0.0, 0.5),
    "idle_share": st.floats(0.0, 1.0),
    "setup_share": st.floats(0.0, 1.0),
    "cycle_min": st.floats(0.5, 240.0),
    "cycle_cv": st.floats(0.0, 1.0),
    "gap_min": st.floats(0.0, 30.0),
    "setup_min": st.floats(0.0, 90.0),
    "setup_every_jobs": st.integers(1, 50),
    "mtbf_h": st.one_of(st.none(), st.floats(0.1, 1000.0)),
    "mttr_min": st.floats(1.0, 3000.0),
    "critical": st.booleans(),
})


@settings(max_examples=25, deadline=None)
@given(machines=st.lists(_machine_strategy, min_size=1, max_size=3),
       air_kw=st.floats(0.0, 200.0), warmup=st.floats(0.0, 120.0),
       seed=st.integers(0, 2**32 - 1), step_s=st.sampled_from([300, 900, 3600]))
def test_random_plants_stay_within_ratings_and_steps_stay_exact(machines, air_kw, warmup,
                                                                seed, step_s):
    machines = [{**m, "name": f"m{i}"} for i, m in enumerate(machines)]
    factory = {"name": "h", "bus": 0, "warmup_min": warmup,
               "lines": [{"name": "l", "machines": machines}],
               "shifts": [{"start": "06:00", "end": "14:00"},
                          {"start": "22:00", "end": "06:00", "days": ["Fri-Sun"]}],
               "base_loads": {"compressed_air_kw": air_kw, "lighting_kw": 10.0}}
    start = dt.datetime.fromisoformat("2026-03-06T05:00:00+08:00")  # Friday
    fine = _fleet([factory], start=start, step_s=60, days=2, seed=seed)
    res = fine.run()
    coarse = _fleet([factory], start=start, step_s=step_s, days=2, seed=seed).run()
    assert (res.p_kw <= fine.rated_kw + 1e-9).all() and (res.p_kw >= 0).all()
    assert (res.critical_kw <= res.p_kw + 1e-9).all()
    per = step_s // 60
    np.testing.assert_allclose(coarse.p_kw, res.p_kw.reshape(-1, per, 1).mean(axis=1),
                               rtol=1e-9, atol=1e-9)


class _RunUntil(FactoryFleet):
    """The fleet driven by SimPy's own ``env.run(until=...)`` at every step end."""

    def advance_to(self, k: int) -> None:
        until = (k + 1) * self.step_s
        if until > self.env.now:
            self.env.run(until=until)


def test_stepping_processes_the_events_simpy_run_would():
    factories = _presets("auto_parts", "electronics", "food_processing")
    section = FactoriesConfig.model_validate(factories)
    n = 3 * DAY_S // 900
    fleet = FactoryFleet(section, MONDAY, 900, n, np.random.default_rng(4))
    reference = _RunUntil(section, MONDAY, 900, n, np.random.default_rng(4))
    for k in range(n):
        got, want = fleet.step(k), reference.step(k)
        for channel in ("p_kw", "q_kvar", "critical_kw", "critical_q_kvar", "deferrable_kw"):
            assert getattr(got, channel).tobytes() == getattr(want, channel).tobytes()
        assert fleet.env.peek() >= (k + 1) * 900  # nothing before the step's end is pending
    assert reference.step(n - 1).p_kw.max() > 0
