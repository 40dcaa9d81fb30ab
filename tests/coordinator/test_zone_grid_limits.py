"""grid_aware on the default zone under a stricter voltage band than the zone's own."""

from __future__ import annotations

import pytest

from tests.coordinator.zone_runs import TIGHT_BAND, violation_hours, zone_run

SEASON = "summer"


@pytest.fixture(scope="module")
def runs():
    # the other strategies ignore the band: their runs under the zone's band serve, with the
    # violation hours recounted for the tight band
    return {name: zone_run(name, SEASON)
            for name in ("uncontrolled", "pv_following", "v2g_peak_shaving")}


def test_grid_aware_under_a_tight_band_removes_most_violations(runs):
    kpis, frames = zone_run("grid_aware", SEASON, f"grid.v_band_pu={list(TIGHT_BAND)}")
    others = {n: violation_hours(r[1], TIGHT_BAND) for n, r in runs.items()
              if n != "grid_aware"}
    assert min(others.values()) > 10.0  # the feeders do run high
    assert kpis["voltage_violation_bus_hours"] == pytest.approx(
        violation_hours(frames, TIGHT_BAND))
    assert kpis["voltage_violation_bus_hours"] < 0.25 * min(others.values())
    assert kpis["ev_unmet_energy_mwh"] <= runs["v2g_peak_shaving"][0]["ev_unmet_energy_mwh"] \
        + 1e-3
