"""SunSpec information models: register layout, encoding and "not implemented" markers.

The point definitions (offsets, types, scale factors, access) are the SunSpec Alliance's own
JSON model definitions, as shipped with its client ``pysunspec2``; nothing is transcribed by
hand. A device map is the ``"SunS"`` marker at a base address (40000 by default), the models one
after the other (each ``ID``, ``L`` then ``L`` registers), and the end marker ``0xFFFF, 0``.

Values are kept as registers (``list[int]``, 16-bit words, big-endian for wider types) in a
:class:`SunSpecImage`; :meth:`SunSpecImage.get` and :meth:`SunSpecImage.set` convert to and
from engineering units with the scale factor the map carries (``value = raw * 10**sf``).

Sign convention of the DER models (701-704): active and reactive power are positive when
*injected* into the grid (generator convention). Adapters convert to the project's load
convention (:mod:`components.base`) at their boundary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType

SUNS_BASE_ADDR = 40000
SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
END_MODEL_ID = 0xFFFF

# Register pattern that means "not implemented", per point type (SunSpec Information Model
# Specification; the same table as pysunspec2's ``mb.SUNS_UNIMPL_*``, except ``pad``, which the
# specification fills with 0x8000).
NOT_IMPLEMENTED: Mapping[str, int] = MappingProxyType({
    "int16": 0x8000, "uint16": 0xFFFF, "count": 0xFFFF, "acc16": 0, "enum16": 0xFFFF,
    "bitfield16": 0xFFFF, "sunssf": 0x8000, "pad": 0x8000,
    "int32": 0x8000_0000, "uint32": 0xFFFF_FFFF, "acc32": 0, "enum32": 0xFFFF_FFFF,
    "bitfield32": 0xFFFF_FFFF, "ipaddr": 0, "float32": 0x7FC0_0000,
    "int64": 0x8000_0000_0000_0000, "uint64": 0xFFFF_FFFF_FFFF_FFFF, "acc64": 0,
    "float64": 0x7FF8_0000_0000_0000,
})
_SIGNED = {"int16", "int32", "int64", "sunssf"}
_ACCUMULATORS = {"acc16", "acc32", "acc64"}


@dataclass(frozen=True)
class PointDef:
    """One point of a model.

    Attributes
    ----------
    name : str
        Point name; points of a (non-repeating) group are named ``"<group>.<point>"``.
    offset : int
        Offset from the model's ``ID`` register. [registers]
    size : int
        Length. [registers]
    type : str
        SunSpec type (``uint16``, ``int32``, ``enum16``, ``sunssf``, ``string`` ...).
    sf : str or int or None
        Scale factor: the name of a ``sunssf`` point of the same model, a fixed exponent, or none.
    writable : bool
        True for ``RW`` points.
    units : str or None
        Unit as written in the model definition.
    symbols : mapping of str to int
        Enumeration or bit names and their values.
    """

    name: str
    offset: int
    size: int
    type: str
    sf: str | int | None = None
    writable: bool = False
    units: str | None = None
    symbols: Mapping[str, int] = field(default_factory=dict)

    @property
    def not_implemented(self) -> int:
        """The raw value meaning "not implemented" (0 for strings and accumulators)."""
        return NOT_IMPLEMENTED.get(self.type, 0)


@dataclass(frozen=True)
class ModelDef:
    """A SunSpec model: its id, length ``L`` (registers after ``ID`` and ``L``) and points."""

    model_id: int
    name: str
    length: int
    points: Mapping[str, PointDef]

    def point(self, name: str) -> PointDef:
        """The point called ``name``; ``KeyError`` names the model and its points if unknown."""
        try:
            return self.points[name]
        except KeyError:
            raise KeyError(f"model {self.model_id} ({self.name}) has no point {name!r}; "
                           f"points are {sorted(self.points)}") from None


def _flatten(group: dict, prefix: str, offset: int, out: dict[str, PointDef]) -> int:
    """Add the points of ``group`` (and its fixed sub-groups) to ``out``; return the end offset."""
    for p in group.get("points", []):
        name = prefix + p["name"]
        symbols = {s["name"]: int(s["value"]) for s in p.get("symbols", [])}
        out[name] = PointDef(
            name=name, offset=offset, size=int(p["size"]), type=p["type"], sf=p.get("sf"),
            writable=p.get("access", "R") == "RW", units=p.get("units"), symbols=symbols,
        )
        offset += int(p["size"])
    for g in group.get("groups", []):
        count = g.get("count", 1)
        if not isinstance(count, int) or count != 1:
            raise ValueError(f"group {g['name']!r} repeats ({count!r}); repeating groups are "
                             "not supported by this map")
        offset = _flatten(g, prefix + g["name"] + ".", offset, out)
    return offset


@cache
def model_def(model_id: int) -> ModelDef:
    """The definition of SunSpec model ``model_id`` from the SunSpec Alliance's JSON files."""
    from sunspec2 import device as ss_device

    raw = ss_device.get_model_def(int(model_id))
    points: dict[str, PointDef] = {}
    end = _flatten(raw["group"], "", 0, points)
    return ModelDef(model_id=int(model_id), name=raw["group"]["name"], length=end - 2,
                    points=MappingProxyType(points))


class SunSpecMap:
    """Addresses of a device's models laid out one after another from ``base``.

    Parameters
    ----------
    model_ids : sequence of int
        The models in map order (model 1, the common model, first).
    base : int
        Address of the ``"SunS"`` marker (0-based Modbus PDU address).
    """

    def __init__(self, model_ids: tuple[int, ...] | list[int], base: int = SUNS_BASE_ADDR):
        ids = tuple(int(m) for m in model_ids)
        if not ids or ids[0] != 1:
            raise ValueError("a SunSpec map starts with the common model 1")
        if len(set(ids)) != len(ids):
            raise ValueError(f"each model may appear once in this map, got {list(ids)}")
        self.base = int(base)
        self.model_ids = ids
        self.models: dict[int, ModelDef] = {m: model_def(m) for m in ids}
        self.model_addr: dict[int, int] = {}
        addr = self.base + 2
        for m in ids:
            self.model_addr[m] = addr
            addr += 2 + self.models[m].length
        self.end_addr = addr  # address of the end marker
        self.size = addr + 2 - self.base

    def address(self, model_id: int, point: str) -> int:
        """Absolute register address of ``point`` of ``model_id``."""
        return self.model_addr[model_id] + self._model(model_id).point(point).offset

    def point(self, model_id: int, point: str) -> PointDef:
        """The definition of ``point`` in ``model_id``."""
        return self._model(model_id).point(point)

    def _model(self, model_id: int) -> ModelDef:
        try:
            return self.models[model_id]
        except KeyError:
            raise KeyError(f"model {model_id} is not in this map (models {list(self.model_ids)})"
                           ) from None

    def locate(self, address: int) -> tuple[int, PointDef] | None:
        """The ``(model_id, point)`` whose registers contain ``address``, or None."""
        for m, start in self.model_addr.items():
            if start <= address < start + 2 + self.models[m].length:
                off = address - start
                for p in self.models[m].points.values():
                    if p.offset <= off < p.offset + p.size:
                        return m, p
        return None

    def blank_image(self) -> SunSpecImage:
        """An image with marker, model headers and end marker, every point "not implemented"."""
        regs = [0] * self.size
        img = SunSpecImage(self, regs)
        regs[0], regs[1] = SUNS_MARKER
        for m in self.model_ids:
            md = self.models[m]
            for p in md.points.values():
                img.set_raw(m, p.name, p.not_implemented)
            img.set_raw(m, "ID", m)
            img.set_raw(m, "L", md.length)
        regs[self.end_addr - self.base] = END_MODEL_ID
        regs[self.end_addr - self.base + 1] = 0
        return img


class SunSpecImage:
    """Register values of a :class:`SunSpecMap` with typed, scaled access.

    Parameters
    ----------
    smap : SunSpecMap
        The layout.
    registers : list of int
        ``smap.size`` registers, the first at ``smap.base``; used in place (not copied).
    """

    def __init__(self, smap: SunSpecMap, registers: list[int]):
        if len(registers) != smap.size:
            raise ValueError(f"image needs {smap.size} registers, got {len(registers)}")
        self.map = smap
        self.registers = registers

    def copy(self) -> SunSpecImage:
        """An independent copy (for validating a write before committing it)."""
        return SunSpecImage(self.map, list(self.registers))

    def _span(self, model_id: int, point: str) -> tuple[PointDef, int]:
        p = self.map.point(model_id, point)
        return p, self.map.address(model_id, point) - self.map.base

    def get_raw(self, model_id: int, point: str) -> int | str:
        """Unscaled value: an unsigned integer of ``size*16`` bits, or the text of a string."""
        p, i = self._span(model_id, point)
        words = self.registers[i:i + p.size]
        if p.type == "string":
            data = b"".join(w.to_bytes(2, "big") for w in words)
            return data.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        raw = 0
        for w in words:
            raw = (raw << 16) | (w & 0xFFFF)
        return raw

    def set_raw(self, model_id: int, point: str, raw: int | str) -> None:
        """Store an unscaled value (unsigned bit pattern, or text for strings)."""
        p, i = self._span(model_id, point)
        if p.type == "string":
            data = str(raw).encode("utf-8") if raw else b""
            if len(data) > 2 * p.size:
                raise ValueError(f"{point!r} holds {2 * p.size} bytes, got {len(data)}")
            data = data.ljust(2 * p.size, b"\0")
            self.registers[i:i + p.size] = [int.from_bytes(data[k:k + 2], "big")
                                            for k in range(0, len(data), 2)]
            return
        raw = int(raw) & ((1 << (16 * p.size)) - 1)
        self.registers[i:i + p.size] = [(raw >> (16 * (p.size - 1 - k))) & 0xFFFF
                                        for k in range(p.size)]

    def is_implemented(self, model_id: int, point: str) -> bool:
        """False when the point holds its type's "not implemented" pattern."""
        p = self.map.point(model_id, point)
        raw = self.get_raw(model_id, point)
        if p.type == "string":
            return raw != ""
        if p.type in _ACCUMULATORS:
            return True  # 0 is both "not implemented" and a legal count; treat it as a count
        return raw != p.not_implemented

    def scale_exponent(self, model_id: int, point: str) -> int:
        """Exponent of ``point``'s scale factor (0 if it has none)."""
        p = self.map.point(model_id, point)
        if p.sf is None:
            return 0
        if isinstance(p.sf, int):
            return p.sf
        sf = self.get_int(model_id, p.sf)
        if sf is None:
            raise ValueError(f"scale factor {p.sf!r} of {point!r} is not implemented")
        return sf

    def get_int(self, model_id: int, point: str) -> int | None:
        """Signed or unsigned integer value, None when not implemented."""
        p = self.map.point(model_id, point)
        if not self.is_implemented(model_id, point):
            return None
        raw = self.get_raw(model_id, point)
        if p.type in _SIGNED and raw >= 1 << (16 * p.size - 1):
            raw -= 1 << (16 * p.size)
        return int(raw)

    def get(self, model_id: int, point: str) -> float | int | str | None:
        """Value in engineering units (scale factor applied), None when not implemented."""
        p = self.map.point(model_id, point)
        if p.type == "string":
            text = self.get_raw(model_id, point)
            return text or None
        v = self.get_int(model_id, point)
        if v is None or p.sf is None:
            return v
        return v * 10.0 ** self.scale_exponent(model_id, point)

    def set(self, model_id: int, point: str, value: float | str | None) -> None:
        """Store ``value`` in engineering units; None stores "not implemented".

        Raises ``ValueError`` if the value is not finite or does not fit the point's type.
        """
        p = self.map.point(model_id, point)
        if value is None:
            self.set_raw(model_id, point, p.not_implemented)
            return
        if p.type == "string":
            self.set_raw(model_id, point, str(value))
            return
        self.set_raw(model_id, point, encode(p, float(value), self.scale_exponent(model_id, point)))

    def model_registers(self, model_id: int) -> list[int]:
        """The registers of one model, from its ``ID`` register to its last point."""
        start = self.map.model_addr[model_id] - self.map.base
        return self.registers[start:start + 2 + self.map.models[model_id].length]


def encode(p: PointDef, value: float, sf: int) -> int:
    """Raw (unsigned bit pattern) of ``value`` for point ``p`` with scale exponent ``sf``.

    Raises ``ValueError`` when ``value`` is NaN or infinite, or when the scaled value falls
    outside the type's range or onto its "not implemented" pattern.
    """
    if not math.isfinite(value):
        raise ValueError(f"{p.name}: {value} is not a finite number")
    n = round(value / 10.0 ** sf)
    bits = 16 * p.size
    if p.type in _SIGNED:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    if not lo <= n <= hi:
        raise ValueError(f"{p.name}: {value} is outside the range of {p.type} with scale factor "
                         f"10^{sf} ([{lo * 10.0 ** sf:g}, {hi * 10.0 ** sf:g}])")
    raw = n & ((1 << bits) - 1)
    if p.type not in _ACCUMULATORS and raw == p.not_implemented:
        raise ValueError(f"{p.name}: {value} encodes as the 'not implemented' pattern "
                         f"0x{raw:X} of {p.type}")
    return raw
