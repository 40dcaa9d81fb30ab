"""Grid sensitivities for ``grid_aware``: how voltages and loadings move with injections.

Finite differences of pandapower's Newton-Raphson power flow around the network's own static
operating point: one base flow, then one flow per control bus with ``delta_kw`` more active
power drawn and one with ``delta_kvar`` more reactive power. The coordinator applies them to the
state of the last power flow of the run (:class:`~components.coordinator.core.GridSensitivity`);
for a radial distribution feeder voltage sensitivities change little with the operating point,
and the sign of a loading sensitivity is the one of the base flow's direction.

pandapower is imported here only; the coordinator's model and adapter need just the arrays.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from components.coordinator.core import GridSensitivity

DELTA_KW = 100.0
DELTA_KVAR = 100.0


def grid_sensitivity(net, ctrl_buses: Sequence[int], bus_ids: Sequence[int],
                     line_ids: Sequence[int], trafo_ids: Sequence[int],
                     v_band_pu: tuple[float, float], delta_kw: float = DELTA_KW,
                     delta_kvar: float = DELTA_KVAR) -> GridSensitivity:
    """Sensitivities of ``net`` (a pandapower network; it is copied, not changed).

    Parameters
    ----------
    ctrl_buses : sequence of int
        Buses of the injections the coordinator knows or controls (sites, plants, factories).
    bus_ids, line_ids, trafo_ids : sequence of int
        Rows: the grid simulator's output order of voltages and loadings.
    v_band_pu : tuple of float
        The grid's allowed voltage band [pu], carried along for the coordinator.
    delta_kw, delta_kvar : float
        Size of the finite-difference steps [kW], [kvar].

    Raises
    ------
    ValueError
        If a power flow does not converge.
    """
    import pandapower as pp

    net = copy.deepcopy(net)
    ctrl = np.unique(np.asarray(ctrl_buses, dtype=np.int64))
    buses = np.asarray(bus_ids, dtype=np.int64)
    lines = np.asarray(line_ids, dtype=np.int64)
    trafos = np.asarray(trafo_ids, dtype=np.int64)
    loads = pp.create_loads(net, ctrl, p_mw=0.0, q_mvar=0.0,
                            name=[f"sensitivity probe {b}" for b in ctrl])

    def state() -> np.ndarray:
        try:
            pp.runpp(net, init="results" if net.converged else "auto", numba=False)
        except pp.LoadflowNotConverged as exc:
            raise ValueError(f"grid sensitivities: power flow did not converge ({exc})") from None
        parts = [net.res_bus.loc[buses, "vm_pu"].to_numpy(float),
                 net.res_line.loc[lines, "loading_percent"].to_numpy(float) if lines.size
                 else np.zeros(0),
                 net.res_trafo.loc[trafos, "loading_percent"].to_numpy(float) if trafos.size
                 else np.zeros(0)]
        return np.concatenate(parts)

    net.converged = False
    base = state()
    dp = np.zeros((base.size, ctrl.size))
    dq = np.zeros((base.size, ctrl.size))
    for j, load in enumerate(loads):
        net.load.at[load, "p_mw"] = delta_kw / 1000.0
        dp[:, j] = (state() - base) / delta_kw
        net.load.at[load, "p_mw"] = 0.0
        net.load.at[load, "q_mvar"] = delta_kvar / 1000.0
        dq[:, j] = (state() - base) / delta_kvar
        net.load.at[load, "q_mvar"] = 0.0
    nb, nl = buses.size, lines.size
    # unsupplied or isolated rows come out NaN: no sensitivity there
    dp, dq = np.nan_to_num(dp), np.nan_to_num(dq)
    return GridSensitivity(
        bus_ids=buses, line_ids=lines, trafo_ids=trafos, ctrl_buses=ctrl,
        dv_dp=dp[:nb], dv_dq=dq[:nb], dline_dp=dp[nb:nb + nl], dline_dq=dq[nb:nb + nl],
        dtrafo_dp=dp[nb + nl:], dtrafo_dq=dq[nb + nl:],
        v_band_pu=(float(v_band_pu[0]), float(v_band_pu[1])))
