"""Scenarios the tests of several packages share."""

from __future__ import annotations

# A tiny zone on pandapower's case33bw: fast enough to run many times.
TINY = {
    "name": "tiny",
    "start": "2026-06-03 00:00",
    "days": 1,
    "seed": 7,
    "grid": {"source": "pandapower", "name": "case33bw"},
    "factories": [{"name": "works", "bus": 5, "preset": "auto_parts"}],
    "pv": {
        "plants": [{"name": "roof", "bus": 5, "kwp": 800, "tilt_deg": 10, "azimuth_deg": 180}],
        "generated": [{"total_kwp": 600, "count": 3, "buses": [12, 20], "name_prefix": "res"}],
    },
    "ev": {
        "fleet_size": 60,
        "user_mix": {"commuter": 0.6, "shift_worker": 0.3, "commercial": 0.1},
        "sites": [
            {"name": "homes", "kind": "home", "bus": 25,
             "chargers": [{"type": "ac7", "count": 40}, {"type": "v2g", "count": 10}]},
            {"name": "works", "kind": "workplace", "bus": 5,
             "chargers": [{"type": "ac7", "count": 20}, {"type": "v2g", "count": 10}]},
            {"name": "depot", "kind": "depot", "bus": 30, "chargers": [{"type": "ac7", "count": 6}]},
        ],
    },
}
