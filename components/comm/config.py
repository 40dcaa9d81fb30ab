"""Scenario section ``comm``: the channel that carries the coordinator's set-points to the devices.

Every message (one per plugged EV and per PV plant each step) is delayed by a latency drawn from a
log-normal law, given by its median and its 98th percentile, and lost with a fixed probability.
The technology presets below use published targets and budgets:

``5g``
    median 4 ms: ITU-R M.2410-0 (2017) section 4.7.1, minimum user-plane latency requirement of
    IMT-2020 for eMBB (also 3GPP TR 38.913 section 7.5). 98th percentile 50 ms and loss 1e-3:
    3GPP TS 23.501 Table 5.7.4-1, standardised 5QI 3 ("electricity distribution - medium
    voltage", with V2X messages): packet delay budget 50 ms, packet error rate 1e-3.
``lte``
    median 5 ms: 3GPP TR 25.913 section 7.2.2, E-UTRA user-plane latency requirement (< 5 ms one
    way, unloaded). 98th percentile 300 ms and loss 1e-6: 3GPP TS 23.203 Table 6.1.7, QCI 9
    (the default bearer a charge point on a commercial subscription uses): packet delay budget
    300 ms, packet error loss rate 1e-6.
``fibre``
    median 1 ms: propagation over a 20 km metro path at 4.9 us/km (group index about 1.47 of
    ITU-T G.652 fibre) plus store-and-forward in a few switches (an engineering estimate).
    98th percentile 3 ms: IEC 61850-5 transfer time class TT6 (3 ms), the class a utility fibre
    network is engineered for. Loss 1.2e-8: IEEE 802.3 bit error ratio objective 1e-12 over a
    1,500-byte frame (12,000 bits).
``ideal``
    no latency, no loss: the world is wired as without a ``comm`` section.

In both 3GPP tables the delay budget is to be read as a maximum delay with a confidence level of
98 percent (3GPP TS 23.203 section 6.1.7.2), hence the 98th percentile.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.base import StrictModel

Technology = Literal["5g", "lte", "fibre", "ideal"]
EVFallback = Literal["hold", "uncontrolled", "idle"]


class ChannelParams(StrictModel):
    """Latency and loss of one technology."""

    latency_median_ms: float = Field(..., ge=0, description="Median one-way latency [ms]")
    latency_p98_ms: float = Field(..., ge=0, description="98th percentile of the latency [ms]")
    loss_probability: float = Field(..., ge=0, le=1, description="Probability a message is lost [-]")

    @model_validator(mode="after")
    def _tail_above_median(self) -> ChannelParams:
        _check_tail(self.latency_median_ms, self.latency_p98_ms)
        return self


def _check_tail(median_ms: float, p98_ms: float) -> None:
    if p98_ms < median_ms:
        raise ValueError(f"latency_p98_ms ({p98_ms}) must be >= latency_median_ms ({median_ms})")
    if median_ms == 0 and p98_ms > 0:
        raise ValueError("latency_median_ms = 0 needs latency_p98_ms = 0 (a log-normal latency "
                         "has a positive median); give a small positive median instead")


TECHNOLOGIES: dict[str, ChannelParams] = {
    "5g": ChannelParams(latency_median_ms=4.0, latency_p98_ms=50.0, loss_probability=1e-3),
    "lte": ChannelParams(latency_median_ms=5.0, latency_p98_ms=300.0, loss_probability=1e-6),
    "fibre": ChannelParams(latency_median_ms=1.0, latency_p98_ms=3.0, loss_probability=1.2e-8),
    "ideal": ChannelParams(latency_median_ms=0.0, latency_p98_ms=0.0, loss_probability=0.0),
}


class CommConfig(StrictModel):
    """The ``comm`` section: technology preset, optional overrides, what devices do on loss.

    Example::

        comm:
          technology: lte
          loss_probability: 0.05      # override the preset
          ev_fallback: hold
    """

    technology: Technology = Field("5g", description="Preset: 5g, lte, fibre or ideal")
    latency_median_ms: float | None = Field(
        None, ge=0, description="Median one-way latency [ms]; default: the technology's")
    latency_p98_ms: float | None = Field(
        None, ge=0, description="98th percentile of the latency [ms]; default: the technology's")
    loss_probability: float | None = Field(
        None, ge=0, le=1, description="Probability a message is lost [-]; default: the "
                                      "technology's")
    ev_fallback: EVFallback = Field(
        "hold",
        description="What a charger does after a step without a set-point arriving: hold (keep "
                    "the last one), uncontrolled (charge at the maximum) or idle (0 kW)",
    )
    pv: bool = Field(True, description="Also send the PV plants' set-points over the channel")

    @model_validator(mode="after")
    def _consistent(self) -> CommConfig:
        p = self.params()
        _check_tail(p.latency_median_ms, p.latency_p98_ms)
        return self

    def params(self) -> ChannelParams:
        """The channel's latency and loss: the preset with the overrides applied."""
        base = TECHNOLOGIES[self.technology]
        return ChannelParams.model_construct(
            latency_median_ms=_pick(self.latency_median_ms, base.latency_median_ms),
            latency_p98_ms=_pick(self.latency_p98_ms, base.latency_p98_ms),
            loss_probability=_pick(self.loss_probability, base.loss_probability),
        )

    def is_ideal(self) -> bool:
        """No latency and no loss: the channel changes nothing and is left out of the world."""
        p = self.params()
        return p.latency_p98_ms == 0 and p.loss_probability == 0


def _pick(value: float | None, default: float) -> float:
    return default if value is None else float(value)
