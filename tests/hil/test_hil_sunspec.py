"""SunSpec map layout, encoding and "not implemented" markers."""

from __future__ import annotations

import math

import pytest
from sunspec2 import device as ss_device
from sunspec2 import mb as ss_mb

from components.hil.sunspec import (
    END_MODEL_ID,
    NOT_IMPLEMENTED,
    SUNS_MARKER,
    SunSpecMap,
    encode,
    model_def,
)


@pytest.mark.parametrize("model_id, length", [(1, 66), (701, 153), (702, 50), (704, 65),
                                               (802, 62)])
def test_model_length_matches_sunspec_definition(model_id, length):
    # published lengths; where the definition states L itself, it must agree too
    assert model_def(model_id).length == length
    declared = ss_device.get_model_def(model_id)["group"]["points"][1].get("value")
    assert declared in (None, length)


def test_layout_is_marker_models_end():
    smap = SunSpecMap([1, 701, 702, 704, 802])
    img = smap.blank_image()
    regs = img.registers
    assert tuple(regs[:2]) == SUNS_MARKER
    addr = smap.base + 2
    for mid in (1, 701, 702, 704, 802):
        assert smap.model_addr[mid] == addr
        assert regs[addr - smap.base] == mid
        assert regs[addr - smap.base + 1] == model_def(mid).length
        addr += 2 + model_def(mid).length
    assert regs[addr - smap.base:addr - smap.base + 2] == [END_MODEL_ID, 0]
    assert smap.size == addr + 2 - smap.base


def test_blank_points_hold_not_implemented_patterns():
    smap = SunSpecMap([1, 701, 704])
    img = smap.blank_image()
    # the patterns the specification lists (and pysunspec2 decodes as None)
    assert img.get_raw(701, "W") == 0x8000 == ss_mb.SUNS_UNIMPL_INT16 & 0xFFFF
    assert img.get_raw(701, "LNV") == 0xFFFF == ss_mb.SUNS_UNIMPL_UINT16
    assert img.get_raw(704, "WSet") == 0x8000_0000
    assert img.get_raw(704, "WSetRvrtTms") == 0xFFFF_FFFF
    assert img.get_raw(701, "TotWhInj") == 0xFFFF_FFFF_FFFF_FFFF
    assert img.get_raw(701, "Alrm") == 0xFFFF_FFFF
    assert img.get(701, "W") is None and img.get(704, "WSet") is None
    assert img.get(1, "Mn") is None


def test_scaled_round_trip_and_signs():
    smap = SunSpecMap([1, 701, 704])
    img = smap.blank_image()
    img.set(704, "WSet_SF", 1)
    img.set(704, "WSet", -41_230.0)
    assert img.get_raw(704, "WSet") == (-4123) & 0xFFFF_FFFF
    assert img.get(704, "WSet") == pytest.approx(-41_230.0)
    img.set(701, "Hz_SF", -2)
    img.set(701, "Hz", 49.97)
    assert img.get(701, "Hz") == pytest.approx(49.97)
    img.set(1, "SN", "SDG-0001")
    assert img.get(1, "SN") == "SDG-0001"
    assert img.model_registers(704)[:2] == [704, model_def(704).length]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_encode_refuses_non_finite(value):
    with pytest.raises(ValueError, match="not a finite number"):
        encode(model_def(704).point("WMaxLimPct"), value, -1)


def test_encode_refuses_out_of_range_and_the_marker():
    p16 = model_def(704).point("WMaxLimPct")  # uint16
    with pytest.raises(ValueError, match="outside the range"):
        encode(p16, -1.0, 0)
    with pytest.raises(ValueError, match="outside the range"):
        encode(p16, 70_000.0, 0)
    with pytest.raises(ValueError, match="not implemented"):
        encode(p16, 0xFFFF, 0)
    pi16 = model_def(701).point("W")  # int16: -32768 is the marker
    with pytest.raises(ValueError, match="not implemented"):
        encode(pi16, -32768.0, 0)
    assert encode(pi16, -32767.0, 0) == 0x8001
    assert NOT_IMPLEMENTED["int32"] == 0x8000_0000


def test_locate_finds_every_register_of_a_point():
    smap = SunSpecMap([1, 701, 702, 704])
    a = smap.address(704, "WSet")
    assert smap.locate(a)[1].name == "WSet"
    assert smap.locate(a + 1)[1].name == "WSet"
    assert smap.locate(smap.base) is None  # the marker is no point
    assert smap.address(704, "PFWInj.PF") == smap.model_addr[704] + 59
