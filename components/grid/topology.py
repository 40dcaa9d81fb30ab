"""Switching states of the network: islanding, fault isolation, tie switches, shunt steps.

A :class:`Topology` says which elements differ from the network as loaded: whether the upstream
grid is lost (external grids out of service; the grid-forming unit, if any, is the slack),
which lines and transformers are out, which switches were opened to isolate a fault and which
tie switches were closed to restore supply, and the step of every switched shunt bank.
:class:`SwitchingBase` writes a topology into a pandapower net (the network's own columns are
kept, so any topology can follow any other).

Fault isolation (:func:`fault_section`) follows the switch table: from the faulted element it
walks the network through buses and branches until it meets a switch on every path (or the
bus of an external grid, whose feeder breaker then trips the branch). The branches walked are
the faulted section; the closed switches met are opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandapower.topology as top

if TYPE_CHECKING:
    from pandapower import pandapowerNet


@dataclass(frozen=True)
class Topology:
    """A switching state (hashable: power-flow networks are cached per topology)."""

    islanded: bool = False
    """The upstream grid is lost: every external grid is out of service."""
    gfm_on: bool = False
    """The grid-forming unit is the slack (only while ``islanded``)."""
    out_lines: frozenset[int] = frozenset()
    """Lines taken out of service (faulted sections). [net.line index]"""
    out_trafos: frozenset[int] = frozenset()
    """Transformers taken out of service. [net.trafo index]"""
    open_switches: frozenset[int] = frozenset()
    """Switches opened to isolate faults. [net.switch index]"""
    closed_switches: frozenset[int] = frozenset()
    """Tie switches closed to restore supply. [net.switch index]"""
    shunt_steps: tuple[int, ...] = ()
    """Step of each switched shunt bank, in ``grid.shunts`` order."""

    def with_tie(self, switch: int) -> Topology:
        return Topology(self.islanded, self.gfm_on, self.out_lines, self.out_trafos,
                        self.open_switches, self.closed_switches | {switch}, self.shunt_steps)

    def without_gfm(self) -> Topology:
        return Topology(self.islanded, False, self.out_lines, self.out_trafos,
                        self.open_switches, self.closed_switches, self.shunt_steps)


@dataclass
class SwitchingBase:
    """The network's own switching columns, to write any :class:`Topology` into a net.

    Parameters
    ----------
    net : pandapowerNet
        The network as loaded, with the grid-forming unit's external grid (out of service)
        and the switched shunt banks already added.
    gfm_ext_grid : int or None
        ``net.ext_grid`` index of the grid-forming unit.
    shunt_index : ndarray
        ``net.shunt`` index of each switched bank, in ``grid.shunts`` order.
    """

    line_in_service: np.ndarray
    trafo_in_service: np.ndarray
    switch_closed: np.ndarray
    ext_grid_in_service: np.ndarray
    line_index: np.ndarray
    trafo_index: np.ndarray
    switch_index: np.ndarray
    gfm_pos: int | None
    shunt_pos: np.ndarray
    shunt_step0: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def of(cls, net: pandapowerNet, gfm_ext_grid: int | None,
           shunt_index: np.ndarray) -> SwitchingBase:
        eg = net.ext_grid["in_service"].astype(bool).to_numpy().copy()
        gfm_pos = None if gfm_ext_grid is None else int(net.ext_grid.index.get_loc(gfm_ext_grid))
        if gfm_pos is not None:
            eg[gfm_pos] = False
        shunt_pos = np.asarray(net.shunt.index.get_indexer(shunt_index), dtype=np.int64)
        return cls(
            line_in_service=net.line["in_service"].astype(bool).to_numpy().copy(),
            trafo_in_service=net.trafo["in_service"].astype(bool).to_numpy().copy(),
            switch_closed=net.switch["closed"].astype(bool).to_numpy().copy(),
            ext_grid_in_service=eg,
            line_index=net.line.index.to_numpy(),
            trafo_index=net.trafo.index.to_numpy(),
            switch_index=net.switch.index.to_numpy(),
            gfm_pos=gfm_pos,
            shunt_pos=shunt_pos,
            shunt_step0=net.shunt["step"].to_numpy(np.float64)[shunt_pos].copy()
            if shunt_pos.size else np.zeros(0),
        )

    def apply(self, net: pandapowerNet, topo: Topology) -> None:
        """Write ``topo`` into ``net`` (in place)."""
        line = self.line_in_service & ~np.isin(self.line_index, list(topo.out_lines))
        trafo = self.trafo_in_service & ~np.isin(self.trafo_index, list(topo.out_trafos))
        closed = self.switch_closed.copy()
        closed[np.isin(self.switch_index, list(topo.open_switches))] = False
        closed[np.isin(self.switch_index, list(topo.closed_switches))] = True
        eg = self.ext_grid_in_service & (not topo.islanded)
        if self.gfm_pos is not None:
            eg = eg.copy()
            eg[self.gfm_pos] = topo.islanded and topo.gfm_on
        net.line["in_service"] = line
        net.trafo["in_service"] = trafo
        net.switch["closed"] = closed
        net.ext_grid["in_service"] = eg
        if self.shunt_pos.size:
            steps = net.shunt["step"].to_numpy(np.float64).copy()
            steps[self.shunt_pos] = topo.shunt_steps if topo.shunt_steps else self.shunt_step0
            net.shunt["step"] = steps.astype(net.shunt["step"].dtype)


def resolve_tie_switches(net: pandapowerNet, tie_switches: Sequence[Any]
                         ) -> tuple[list[tuple[int, float]], list[str]]:
    """``(net.switch index, switching time [s])`` of each tie switch, and one problem line per
    bad reference (``grid.tie_switches.<i>.switch``): unknown, ambiguous or normally closed.

    Parameters
    ----------
    tie_switches : sequence of TieSwitchConfig
        ``switch`` (index or name) and ``switching_time_s`` of each.
    """
    ties: list[tuple[int, float]] = []
    problems: list[str] = []
    for i, tie in enumerate(tie_switches):
        where = f"grid.tie_switches.{i}.switch"
        ref = tie.switch
        if isinstance(ref, str):
            hits = net.switch.index[net.switch["name"] == ref]
            if len(hits) != 1:
                names = [str(n) for n in net.switch["name"] if isinstance(n, str)][:6]
                problems.append(f"{where}: switch name {ref!r} " + (
                    f"is ambiguous (indices {list(map(int, hits))})" if len(hits) else
                    f"not found; switch names include {names}"))
                continue
            sw = int(hits[0])
        elif ref not in net.switch.index:
            problems.append(f"{where}: switch {ref} not found; the network has "
                            f"{len(net.switch)} switches")
            continue
        else:
            sw = int(ref)
        if bool(net.switch.at[sw, "closed"]):
            problems.append(f"{where}: switch {sw} is closed in the network; a tie switch "
                            "must be a normally open point")
            continue
        ties.append((sw, float(tie.switching_time_s)))
    return ties, problems


def has_slack(net: pandapowerNet) -> bool:
    """Whether an external grid is in service (the compiled and pandapower solvers need one)."""
    return bool(net.ext_grid["in_service"].astype(bool).any())


def energised_buses(net: pandapowerNet) -> np.ndarray:
    """Per bus (``net.bus`` order): in service and connected to an in-service external grid."""
    in_service = net.bus["in_service"].astype(bool).to_numpy()
    if not has_slack(net):
        return np.zeros(len(net.bus), dtype=bool)
    dead = top.unsupplied_buses(net, respect_switches=True)
    return in_service & ~net.bus.index.isin(list(dead))


@dataclass(frozen=True)
class FaultSection:
    """What isolating a fault takes out."""

    lines: frozenset[int]
    trafos: frozenset[int]
    buses: frozenset[int]
    switches: frozenset[int]
    """Closed switches opened to isolate the section."""


def fault_section(net: pandapowerNet, element: str, index: int) -> FaultSection:
    """The section around a faulted line or transformer, bounded by switches.

    Parameters
    ----------
    net : pandapowerNet
        The network in its normal switching state.
    element : {"line", "trafo"}
    index : int
        pandapower index of the faulted element.

    Returns
    -------
    FaultSection
        Branches and buses reached from the faulted element without passing a switch or an
        external grid's bus, and the closed switches met on the way.
    """
    sw = net.switch
    closed = sw["closed"].astype(bool).to_numpy()
    et = sw["et"].to_numpy()
    sw_bus = sw["bus"].to_numpy(np.int64)
    sw_elem = sw["element"].to_numpy(np.int64)
    sw_idx = sw.index.to_numpy()
    branch_switch: dict[tuple[int, str, int], list[int]] = {}
    bus_switch: dict[int, list[int]] = {}
    for pos in range(len(sw)):
        if et[pos] == "l":
            branch_switch.setdefault((sw_bus[pos], "line", sw_elem[pos]), []).append(pos)
        elif et[pos] == "t":
            branch_switch.setdefault((sw_bus[pos], "trafo", sw_elem[pos]), []).append(pos)
        elif et[pos] == "b":
            bus_switch.setdefault(int(sw_bus[pos]), []).append(pos)
            bus_switch.setdefault(int(sw_elem[pos]), []).append(pos)

    ends = {"line": ("from_bus", "to_bus"), "trafo": ("hv_bus", "lv_bus")}
    branches_at: dict[int, list[tuple[str, int]]] = {}
    end_buses: dict[tuple[str, int], tuple[int, int]] = {}
    for kind, (a, b) in ends.items():
        df = net[kind]
        live = df["in_service"].astype(bool).to_numpy()
        for idx, fb, tb, ok in zip(df.index, df[a], df[b], live, strict=True):
            if not ok:
                continue
            end_buses[(kind, int(idx))] = (int(fb), int(tb))
            branches_at.setdefault(int(fb), []).append((kind, int(idx)))
            branches_at.setdefault(int(tb), []).append((kind, int(idx)))
    slack_buses = set(net.ext_grid.loc[net.ext_grid["in_service"].astype(bool), "bus"].astype(int))

    lines: set[int] = set()
    trafos: set[int] = set()
    buses: set[int] = set()
    opened: set[int] = set()
    seen: set[tuple[str, int]] = set()
    stack = [(element, int(index))]
    while stack:
        branch = stack.pop()
        if branch in seen:
            continue
        seen.add(branch)
        (lines if branch[0] == "line" else trafos).add(branch[1])
        for bus in end_buses.get(branch, ()):
            switches = branch_switch.get((bus, *branch))
            if switches:  # a switch between this branch and the bus bounds the section
                opened.update(sw_idx[p] for p in switches if closed[p])
                continue
            if bus in slack_buses or bus in buses:
                continue
            buses.add(bus)
            opened.update(sw_idx[p] for p in bus_switch.get(bus, ()) if closed[p])
            for other in branches_at.get(bus, ()):
                if other in seen:
                    continue
                others = branch_switch.get((bus, *other))
                if others:
                    opened.update(sw_idx[p] for p in others if closed[p])
                else:
                    stack.append(other)
    return FaultSection(frozenset(lines), frozenset(trafos), frozenset(buses),
                        frozenset(int(s) for s in opened))
