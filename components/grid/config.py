"""Scenario section ``grid``: which network, which background profiles, which solver.

Example (YAML)::

    grid:
      source: simbench
      code: 1-MV-comm--0-sw
      background_profiles: true
      background_scale: 1.0
      solver: compiled          # or pandapower (the reference, for networks compiled refuses)
      max_nonconverged_share: 0.05
      v_band_pu: [0.95, 1.05]
      grid_forming: {bus: 12, p_max_kw: 3000, e_kwh: 6000, soc_init: 0.9}
      tie_switches: [{switch: S1, switching_time_s: 300}]
      shunts:
        - {bus: 9, q_kvar: 200, steps: 2, v_on_pu: 1.04, v_off_pu: 1.01, delay_steps: 2}

Exactly one of ``code`` (``source: simbench``), ``name`` (``source: pandapower``) or ``path``
(``source: json``) is given; the others stay unset.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, ValidationInfo, field_validator

from components.base import BusRef, StrictModel

GridSource = Literal["simbench", "pandapower", "json"]

Solver = Literal["compiled", "pandapower"]
SOLVERS: tuple[str, ...] = get_args(Solver)
"""Power-flow solvers: the compiled kernel (default) and pandapower's runpp (the reference)."""

# Which network field each source needs; the other two must stay unset.
SOURCE_FIELD: dict[str, str] = {"simbench": "code", "pandapower": "name", "json": "path"}


@functools.cache
def simbench_codes() -> tuple[str, ...]:
    """All grid codes the installed ``simbench`` package can build."""
    import simbench

    return tuple(simbench.collect_all_simbench_codes())


@functools.cache
def pandapower_network_names() -> tuple[str, ...]:
    """Names of the ``pandapower.networks`` functions callable without arguments."""
    import pandapower.networks as pn

    names = []
    for name, obj in vars(pn).items():
        # Skip helpers the package imports (create_empty_network, runpp, ...).
        if (name.startswith("_") or not inspect.isfunction(obj)
                or not obj.__module__.startswith("pandapower.networks")):
            continue
        params = inspect.signature(obj).parameters.values()
        required = [
            p for p in params
            if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        if not required:
            names.append(name)
    return tuple(sorted(names))


def _suggest(value: str, allowed: tuple[str, ...], examples: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(value, allowed, n=3, cutoff=0.6)
    shown = close or list(examples)
    label = "did you mean" if close else "e.g."
    return f"{label} " + ", ".join(repr(s) for s in shown)


def _check_needed(field: str, value: object, info: ValidationInfo) -> bool:
    """Raise when ``field`` is missing or superfluous for the chosen source.

    Returns True when the field is the one the source needs (so it should be checked further).
    """
    source = info.data.get("source")
    if source is None:  # the source itself was invalid; that error is reported already
        return False
    needed = SOURCE_FIELD[source] == field
    if needed and value is None:
        raise ValueError(f"required when source is {source!r}")
    if not needed and value is not None:
        raise ValueError(
            f"only used with source {_source_of(field)!r}, but source is {source!r}; "
            f"remove it or set source: {_source_of(field)}"
        )
    return needed


def _source_of(field: str) -> str:
    return next(s for s, f in SOURCE_FIELD.items() if f == field)


class GridFormingConfig(StrictModel):
    """A stationary battery that forms the island's voltage (the slack) when the upstream grid
    is out; on grid it stands by. Its state of charge follows the power the island asks of it.
    """

    bus: BusRef = Field(..., description="Bus of the unit (index or name).")
    p_max_kw: float = Field(..., gt=0, description="Rated power, charging and discharging. [kW]")
    e_kwh: float = Field(..., gt=0, description="Usable energy capacity. [kWh]")
    soc_init: float = Field(0.9, ge=0, le=1, description="State of charge at the start. [-]")
    soc_min: float = Field(0.1, ge=0, le=1, description="Lowest state of charge. [-]")
    soc_max: float = Field(1.0, ge=0, le=1, description="Highest state of charge. [-]")
    efficiency: float = Field(
        0.92, gt=0, le=1,
        description="Round-trip efficiency; its square root applies on charge and on "
        "discharge. [-]")
    vm_pu: float = Field(1.0, gt=0.8, lt=1.2, description="Voltage set-point as slack. [pu]")

    @field_validator("soc_max")
    @classmethod
    def _soc_ordered(cls, soc_max: float, info: ValidationInfo) -> float:
        lo, init = info.data.get("soc_min"), info.data.get("soc_init")
        if lo is not None and not lo < soc_max:
            raise ValueError(f"must be above soc_min ({lo}), got {soc_max}")
        if lo is not None and init is not None and not lo <= init <= soc_max:
            raise ValueError(f"soc_init ({init}) must lie within [soc_min, soc_max] = "
                             f"[{lo}, {soc_max}]")
        return soc_max


class TieSwitchConfig(StrictModel):
    """A normally open switch between feeders that restoration may close after a fault."""

    switch: int | str = Field(
        ..., description="Row of net.switch (index or name); it must be open in the network.")
    switching_time_s: float = Field(
        300.0, ge=0, description="Time from the fault until the switch can be closed. [s]")


class ShuntBankConfig(StrictModel):
    """A switched shunt bank, stepped on the previous step's voltage at its bus.

    A reactor (``q_kvar > 0``, absorbing) adds a step when the voltage stayed above
    ``v_on_pu`` for ``delay_steps`` steps and removes one when it stayed below ``v_off_pu``
    (so ``v_off_pu < v_on_pu``). A capacitor (``q_kvar < 0``, supplying) adds a step below
    ``v_on_pu`` and removes one above ``v_off_pu`` (so ``v_off_pu > v_on_pu``).
    """

    bus: BusRef = Field(..., description="Bus of the bank (index or name).")
    q_kvar: float = Field(
        ..., description="Reactive power per step at 1 pu, pandapower's shunt sign: positive "
        "absorbs (reactor), negative supplies (capacitor). [kvar]")
    steps: int = Field(1, ge=1, le=100, description="Number of steps of the bank.")
    v_on_pu: float = Field(..., gt=0.5, lt=1.5, description="Voltage that adds a step. [pu]")
    v_off_pu: float = Field(..., gt=0.5, lt=1.5, description="Voltage that removes a step. [pu]")
    delay_steps: int = Field(1, ge=1, description="Steps a threshold must hold before a switch.")

    @field_validator("q_kvar")
    @classmethod
    def _nonzero(cls, q_kvar: float) -> float:
        if q_kvar == 0 or not math.isfinite(q_kvar):
            raise ValueError("must be nonzero: positive for a reactor, negative for a capacitor")
        return q_kvar

    @field_validator("v_off_pu")
    @classmethod
    def _hysteresis(cls, v_off: float, info: ValidationInfo) -> float:
        q, v_on = info.data.get("q_kvar"), info.data.get("v_on_pu")
        if q is None or v_on is None:
            return v_off
        if q > 0 and not v_off < v_on:
            raise ValueError(f"a reactor (q_kvar > 0) needs v_off_pu < v_on_pu ({v_on}) for "
                             f"hysteresis, got {v_off}")
        if q < 0 and not v_off > v_on:
            raise ValueError(f"a capacitor (q_kvar < 0) needs v_off_pu > v_on_pu ({v_on}) for "
                             f"hysteresis, got {v_off}")
        return v_off


class GridConfig(StrictModel):
    """The distribution grid of the demonstration zone."""

    source: GridSource = Field(
        ...,
        description="Where the network comes from: a SimBench code, a pandapower.networks "
        "function, or a pandapower JSON file.",
    )
    code: str | None = Field(
        None, validate_default=True,
        description="SimBench grid code, e.g. '1-MV-comm--0-sw' (source: simbench).",
    )
    name: str | None = Field(
        None, validate_default=True,
        description="pandapower.networks function taking no required arguments, e.g. "
        "'case33bw' or 'create_cigre_network_mv' (source: pandapower).",
    )
    path: Path | None = Field(
        None, validate_default=True,
        description="Network file written by pandapower.to_json (source: json).",
    )
    background_profiles: bool = Field(
        True,
        description="Drive the grid's own loads, sgens and storage with the SimBench one-year "
        "profiles; grids without profiles keep their static values.",
    )
    background_scale: float = Field(
        1.0, ge=0.0,
        description="Factor on the grid's own (background) loads, P and Q. [-]",
    )
    solver: Solver = Field(
        "compiled",
        description="Power-flow solver. 'compiled': the network converted once to arrays and "
        "solved by the compiled kernel (ext.powerflow), some hundred times faster per step; it "
        "models lines, two-winding transformers, switches, external grids, loads, sgens, storage "
        "and shunts, and a network with anything else (gen, ward, trafo3w, impedance, ...) is "
        "refused when it is loaded. 'pandapower': pandapower.runpp, the reference, which "
        "models every pandapower element.",
    )
    max_nonconverged_share: float = Field(
        0.05, ge=0.0, le=1.0,
        description="Share of the run's steps whose power flow may fail to converge before "
        "the run fails. [-]",
    )
    v_band_pu: tuple[float, float] = Field(
        (0.9, 1.1),
        description="Allowed voltage band (low, high) for the KPIs. [pu]",
    )

    grid_forming: GridFormingConfig | None = Field(
        None,
        description="Grid-forming battery that becomes the slack while the upstream grid is out "
        "(events: upstream_outage); without one an outage de-energises the zone.",
    )
    tie_switches: list[TieSwitchConfig] = Field(
        [],
        description="Normally open switches that restoration may close after a fault, in order "
        "of preference.",
    )
    shunts: list[ShuntBankConfig] = Field(
        [], description="Switched shunt capacitor and reactor banks.")
    restoration_max_loading_pct: float = Field(
        100.0, gt=0,
        description="Highest line and transformer loading a restoration may cause. [%]",
    )

    @field_validator("code")
    @classmethod
    def _code_known(cls, code: str | None, info: ValidationInfo) -> str | None:
        if _check_needed("code", code, info):
            codes = simbench_codes()
            if code not in codes:
                examples = ("1-MV-comm--0-sw", "1-MV-semiurb--0-sw", "1-MV-urban--0-sw",
                            "1-MV-rural--0-sw", "1-LV-urban6--0-sw")
                raise ValueError(
                    f"unknown SimBench code {code!r}; {_suggest(code, codes, examples)} "
                    f"({len(codes)} codes exist: simbench.collect_all_simbench_codes())"
                )
        return code

    @field_validator("name")
    @classmethod
    def _name_known(cls, name: str | None, info: ValidationInfo) -> str | None:
        if _check_needed("name", name, info):
            names = pandapower_network_names()
            if name not in names:
                examples = ("case33bw", "create_cigre_network_mv", "mv_oberrhein", "case118")
                raise ValueError(
                    f"{name!r} is not a pandapower.networks function callable without "
                    f"arguments; {_suggest(name, names, examples)}"
                )
        return name

    @field_validator("path")
    @classmethod
    def _path_exists(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if _check_needed("path", path, info) and not path.is_file():
            raise ValueError(
                f"file {str(path)!r} not found; give a JSON file written by pandapower.to_json"
            )
        return path

    @field_validator("v_band_pu")
    @classmethod
    def _band_ordered(cls, band: tuple[float, float]) -> tuple[float, float]:
        low, high = band
        if not 0.0 < low < high:
            raise ValueError(f"must be (low, high) with 0 < low < high, got ({low}, {high})")
        return band

