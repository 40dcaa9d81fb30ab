"""Results of the devices in the loop: their share of the zone's energy, KPIs, the step table.

Reads the recorded frames of the ``HIL`` (inverters, batteries) and ``HILSites`` (charging
stations) simulators, named ``hil`` and ``hilsites``. Timing figures (lag, round trips) are
wall-clock measurements and differ between runs; everything else is deterministic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FRAMES = ("hil", "hilsites")


def _col(df: pd.DataFrame | None, name: str, n: int) -> np.ndarray:
    if df is None or name not in df:
        return np.zeros(n)
    return df[name].to_numpy(dtype=float)


def _cols(df: pd.DataFrame | None, attr: str) -> np.ndarray:
    if df is None:
        return np.zeros((0, 0))
    return df[[c for c in df.columns if c.startswith(attr + "[")]].to_numpy(dtype=float)


def power_terms(frames: dict[str, pd.DataFrame], n: int) -> dict[str, np.ndarray]:
    """Per-step powers the zone balance needs [kW]: ``pv_gen_kw``, ``pv_avail_kw``,
    ``pv_curtailed_kw`` of the inverters in the loop, and ``load_kw``: the batteries' power
    (load convention) plus, per replaced charging site, metered minus simulated power."""
    dev, sites = frames.get("hil"), frames.get("hilsites")
    return {
        "pv_gen_kw": _col(dev, "pv_gen_kw", n),
        "pv_avail_kw": _col(dev, "pv_avail_total_kw", n),
        "pv_curtailed_kw": _col(dev, "pv_curtailed_total_kw", n),
        "load_kw": (_col(dev, "battery_p_kw", n) + _col(sites, "evse_metered_kw", n)
                    - _col(sites, "evse_sim_kw", n)),
    }


def kpis(frames: dict[str, pd.DataFrame], n: int, mwh_per_kw_step: float
         ) -> dict[str, float | int]:
    """KPIs of the devices in the loop (empty without them).

    ``hil_stale_steps`` (steps where at least one device answered late or not at all and its
    fallback was used), ``hil_stale_device_steps``, ``hil_max_lag_s`` / ``hil_mean_lag_s``
    (behind the real-time schedule), ``hil_rtt_max_ms`` (slowest step exchange), energies of
    the devices, and ``hil_evse_mismatch_mwh`` (metered minus simulated charging energy).
    """
    present = [frames[f] for f in FRAMES if f in frames]
    if not present:
        return {}
    stale = np.zeros(n, dtype=bool)
    device_steps = 0
    lag = np.zeros(n)
    rtt = np.zeros(n)
    for df in present:
        s = _cols(df, "stale")
        if s.size:
            stale |= (s > 0.5).any(axis=1)
            device_steps += int((s > 0.5).sum())
        lag = np.maximum(lag, _col(df, "lag_s", n))
        rtt = np.maximum(rtt, _col(df, "rtt_max_ms", n))
    dev, sites = frames.get("hil"), frames.get("hilsites")
    battery = _col(dev, "battery_p_kw", n)
    metered, sim = _col(sites, "evse_metered_kw", n), _col(sites, "evse_sim_kw", n)
    return {
        "hil_stale_steps": int(stale.sum()),
        "hil_stale_device_steps": device_steps,
        "hil_max_lag_s": float(lag.max()) if n else 0.0,
        "hil_mean_lag_s": float(lag.mean()) if n else 0.0,
        "hil_rtt_max_ms": float(rtt.max()) if n else 0.0,
        "hil_pv_energy_mwh": float(_col(dev, "pv_gen_kw", n).sum()) * mwh_per_kw_step,
        "hil_battery_charge_mwh": float(np.maximum(battery, 0.0).sum()) * mwh_per_kw_step,
        "hil_battery_discharge_mwh": float(np.maximum(-battery, 0.0).sum()) * mwh_per_kw_step,
        "hil_evse_energy_mwh": float(metered.sum()) * mwh_per_kw_step,
        "hil_evse_mismatch_mwh": float((metered - sim).sum()) * mwh_per_kw_step,
    }


def step_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """One row per step: lag behind the real-time schedule, the slowest exchange, how many
    devices were stale, and per device its round trip and stale flag (None without devices)."""
    present = {f: frames[f] for f in FRAMES if f in frames}
    if not present:
        return None
    parts = []
    for name, df in present.items():
        cols = [c for c in df.columns
                if c in ("lag_s", "n_stale", "rtt_max_ms") or c.startswith(("rtt_ms[", "stale["))]
        parts.append(df[cols].add_prefix(f"{name}."))
    table = pd.concat(parts, axis=1)
    lag_cols = [c for c in table.columns if c.endswith(".lag_s")]
    table.insert(0, "lag_s", table[lag_cols].max(axis=1))
    table.insert(1, "n_stale", table[[c for c in table.columns
                                      if c.endswith(".n_stale")]].sum(axis=1).astype(int))
    return table
