"""PV fleet physics: pvlib's model chain, vectorised over time x plants.

The whole horizon is computed once, at construction, for all plants together (arrays of shape
``(T, n)``; the sun position is computed once). The chain is the one pvlib's
:class:`~pvlib.modelchain.ModelChain` runs with its PVWatts configuration, so results can be
checked against it:

1. sun position (NREL SPA, numpy) and relative/absolute air mass (Kasten-Young 1989);
2. angle of incidence and the physical (Fresnel/Snell) incidence-angle modifier on beam light;
3. plane-of-array irradiance: beam + Perez 1990 sky diffuse + ground-reflected (albedo 0.25);
4. cell temperature: SAPM, with parameters chosen by mounting type;
5. DC power: PVWatts (linear temperature derate) or the CEC single-diode model;
6. PVWatts system losses on DC power;
7. inverter: PVWatts efficiency curve with ``pdc0 = inverter_kw / eta_nom``, which clips AC at
   ``inverter_kw``.

At each step :meth:`PVFleet.dispatch` applies the operating limits: curtailment, reactive power
and the inverters' autonomous volt-var / volt-watt functions (:mod:`components.pv.inverter`).
``inverter_kw`` is the apparent-power rating ``S`` of the inverter: ``P² + Q² <= S²``.

Sign: inside this module generation is positive (``ac_kw``); reactive power follows the load
convention of :mod:`components.base` (positive = absorbed from the grid).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np
import pandas as pd
import pvlib
from pvlib import atmosphere, irradiance, pvsystem, spa, temperature

from components.pv.config import SAPM_MOUNTING, cec_module_database
from components.pv.inverter import InverterControl
from components.pv.weather import sun_position

ALBEDO = 0.25  # pvlib's default ground albedo
ETA_INV_NOM = 0.96  # PVWatts nominal inverter efficiency
ETA_INV_REF = 0.9637  # PVWatts reference inverter efficiency
SPA_REFRACTION_DEG = 0.5667  # spa_python's default atmos_refract: refraction at sunrise [°]


class PlantSpec(Protocol):
    """What the fleet needs to know about a plant (e.g. a ``PVPlantConfig``)."""

    name: str
    kwp: float
    tilt_deg: float
    azimuth_deg: float
    inverter_kw: float
    mounting: str


def _dc_pvwatts(fleet: PVFleet, eff_irr: np.ndarray, temp_cell: np.ndarray) -> np.ndarray:
    """PVWatts DC power [kW] (Dobos 2014, :doi:`10.2172/1158421`)."""
    return pvsystem.pvwatts_dc(eff_irr, temp_cell, fleet.kwp[None, :], fleet.gamma_pdc_per_c)


def _dc_cec(fleet: PVFleet, eff_irr: np.ndarray, temp_cell: np.ndarray) -> np.ndarray:
    """CEC single-diode DC power at the maximum power point [kW] (De Soto et al. 2006,
    :doi:`10.1016/j.solener.2005.06.010`; Dobos 2012, :doi:`10.1115/1.4005759`).

    Each plant is ``kwp / P_stc`` modules of the chosen type; only daylight points are solved.
    """
    m = fleet.module
    dc = np.zeros_like(eff_irr)
    lit = eff_irr > 0
    il, io, rs, rsh, nnsvth = pvsystem.calcparams_cec(
        eff_irr[lit], temp_cell[lit], m["alpha_sc"], m["a_ref"], m["I_L_ref"], m["I_o_ref"],
        m["R_sh_ref"], m["R_s"], m["Adjust"],
    )
    mpp = pvsystem.max_power_point(il, io, rs, rsh, nnsvth, method="newton")
    p_stc_w = float(m["I_mp_ref"] * m["V_mp_ref"])
    modules = np.broadcast_to(fleet.kwp[None, :] / p_stc_w, eff_irr.shape)[lit]
    dc[lit] = np.maximum(np.asarray(mpp["p_mp"], dtype=float), 0.0) * modules
    return dc


def apparent_zenith(elevation_deg: np.ndarray, temp_air_c: np.ndarray,
                    altitude_m: float) -> np.ndarray:
    """Refracted sun zenith from the true elevation, at each step's air temperature and the
    site's standard pressure: the steps :func:`pvlib.solarposition.spa_python` takes, so the
    result equals its ``apparent_zenith`` at that temperature bit for bit. [°]"""
    pressure_mbar = atmosphere.alt2pres(altitude_m) / 100
    refraction = spa.atmospheric_refraction_correction(pressure_mbar, temp_air_c, elevation_deg,
                                                       SPA_REFRACTION_DEG)
    return spa.topocentric_zenith_angle(spa.topocentric_elevation_angle(elevation_deg,
                                                                        refraction))


DC_MODELS: dict[str, Callable[[PVFleet, np.ndarray, np.ndarray], np.ndarray]] = {
    "pvwatts": _dc_pvwatts,
    "cec": _dc_cec,
}


class PVFleet:
    """Available AC power of a fleet of fixed-tilt PV plants over a whole horizon.

    Parameters
    ----------
    plants : sequence of PlantSpec
        The plants (name, kwp [kWp], tilt_deg [°], azimuth_deg [°], inverter_kw [kW],
        mounting), in the order of every output array's second axis.
    latitude_deg, longitude_deg : float
        Site position, north and east positive. [°]
    altitude_m : float
        Site elevation. [m]
    weather : pandas.DataFrame
        Indexed by time-zone aware timestamps (step midpoints) with columns ghi, dni, dhi
        [W/m²], temp_air [°C], wind_speed [m/s].
    dc_model : {'pvwatts', 'cec'}
        DC model.
    losses_pct : float
        PVWatts system losses applied to DC power. [%]
    gamma_pdc_per_c : float
        PVWatts temperature coefficient of DC power. [1/°C]
    cec_module : str or mapping, optional
        CEC module name (pvlib database) or its parameters; required for ``dc_model='cec'``.
    control : InverterControl, optional
        Volt-var / volt-watt state of the plants' inverters (same plant order); ``None``: every
        plant at unity power factor unless reactive power is requested.
    solar_position : pandas.DataFrame, optional
        :func:`~components.pv.weather.sun_position` at the weather's timestamps for the site,
        if the caller has it (the synthetic weather needs it too); computed when omitted. Its
        true elevation and azimuth are used; refraction follows ``temp_air``.

    Attributes
    ----------
    available_ac_kw : numpy.ndarray
        AC power the plants can deliver, shape (T, n), >= 0 and finite; read-only. [kW]
    dc_kw : numpy.ndarray
        DC power after system losses, shape (T, n). [kW]
    poa_global_wm2 : numpy.ndarray
        Plane-of-array irradiance, shape (T, n). [W/m²]
    """

    def __init__(
        self,
        plants: Sequence[PlantSpec],
        latitude_deg: float,
        longitude_deg: float,
        altitude_m: float,
        weather: pd.DataFrame,
        dc_model: str = "pvwatts",
        losses_pct: float = 14.0,
        gamma_pdc_per_c: float = -0.0037,
        cec_module: str | Mapping[str, float] | None = None,
        control: InverterControl | None = None,
        solar_position: pd.DataFrame | None = None,
    ) -> None:
        if dc_model not in DC_MODELS:
            raise ValueError(f"dc_model must be one of {sorted(DC_MODELS)}, not {dc_model!r}")
        missing = [c for c in ("ghi", "dni", "dhi", "temp_air", "wind_speed")
                   if c not in weather.columns]
        if missing:
            raise ValueError(f"weather lacks column(s) {missing}")
        times = pd.DatetimeIndex(weather.index)
        if times.tz is None:
            raise ValueError("weather must be indexed by time-zone aware timestamps")
        self.times = times
        self.names = [p.name for p in plants]
        self.kwp = np.array([p.kwp for p in plants], dtype=float)
        self.inverter_kw = np.array([p.inverter_kw for p in plants], dtype=float)
        self.gamma_pdc_per_c = float(gamma_pdc_per_c)
        self.losses_pct = float(losses_pct)
        self.dc_model = dc_model
        if control is not None and len(control.modes) != len(self.names):
            raise ValueError(f"control has {len(control.modes)} modes for {len(self.names)} plants")
        self.control = control
        self.module: Mapping[str, float] | None = None
        if dc_model == "cec":
            if cec_module is None:
                raise ValueError("dc_model='cec' needs cec_module (a CEC database name)")
            self.module = (cec_module_database()[cec_module] if isinstance(cec_module, str)
                           else cec_module)
        tilt = np.array([p.tilt_deg for p in plants], dtype=float)[None, :]
        azimuth = np.array([p.azimuth_deg for p in plants], dtype=float)[None, :]
        tparams = [temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"][SAPM_MOUNTING[p.mounting]]
                   for p in plants]
        col = {c: weather[c].to_numpy(dtype=float)[:, None]
               for c in ("ghi", "dni", "dhi", "temp_air", "wind_speed")}

        if solar_position is None:
            solar_position = sun_position(times, latitude_deg, longitude_deg, altitude_m)
        elif not solar_position.index.equals(times):
            raise ValueError("solar_position must be indexed by the weather's timestamps")
        zenith = apparent_zenith(solar_position["elevation"].to_numpy(), col["temp_air"][:, 0],
                                 altitude_m)[:, None]
        sun_az = solar_position["azimuth"].to_numpy()[:, None]
        dni_extra = irradiance.get_extra_radiation(times).to_numpy()[:, None]
        am_rel = atmosphere.get_relative_airmass(zenith, model="kastenyoung1989")

        aoi = irradiance.aoi(tilt, azimuth, zenith, sun_az)
        poa_direct = np.maximum(col["dni"] * np.cos(np.radians(aoi)), 0.0)
        sky = irradiance.perez(tilt, azimuth, col["dhi"], col["dni"], dni_extra, zenith, sun_az,
                               am_rel)
        sky = np.nan_to_num(np.asarray(sky, dtype=float))
        ground = irradiance.get_ground_diffuse(tilt, col["ghi"], albedo=ALBEDO)
        poa_diffuse = sky + ground
        self.poa_global_wm2 = poa_direct + poa_diffuse
        iam = np.asarray(pvlib.iam.physical(aoi), dtype=float)
        eff_irr = poa_direct * iam + poa_diffuse

        a = np.array([t["a"] for t in tparams])[None, :]
        b = np.array([t["b"] for t in tparams])[None, :]
        delta_t = np.array([t["deltaT"] for t in tparams])[None, :]
        self.cell_temp_c = temperature.sapm_cell(self.poa_global_wm2, col["temp_air"],
                                                 col["wind_speed"], a, b, delta_t)

        dc_kw = DC_MODELS[dc_model](self, eff_irr, self.cell_temp_c)
        self.dc_kw = dc_kw * (1.0 - self.losses_pct / 100.0)
        ac = pvlib.inverter.pvwatts(self.dc_kw, self.inverter_kw[None, :] / ETA_INV_NOM,
                                    eta_inv_nom=ETA_INV_NOM, eta_inv_ref=ETA_INV_REF)
        self.available_ac_kw = np.nan_to_num(np.asarray(ac, dtype=float))
        np.clip(self.available_ac_kw, 0.0, self.inverter_kw[None, :],
                out=self.available_ac_kw)
        self.available_ac_kw.flags.writeable = False  # its rows are handed out step by step
        self._rating_sq = self.inverter_kw**2  # S² per plant, for the P-Q capability [kVA²]

    @property
    def n_plants(self) -> int:
        """Number of plants."""
        return len(self.names)

    @property
    def n_steps(self) -> int:
        """Number of time steps of the horizon."""
        return len(self.times)

    def dispatch(
        self,
        k: int,
        curtail_kw: np.ndarray | None = None,
        q_kvar_set: np.ndarray | None = None,
        vm_pu: np.ndarray | None = None,
        before: tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Operate every plant at step ``k`` under set-points and its inverter functions.

        Plants at unity power factor take ``q_kvar_set`` as far as the rating allows after their
        active power (active priority). Plants in a volt-var mode ignore ``q_kvar_set`` and follow
        their curve with reactive priority: active power yields so that ``P² + Q² <= S²``. Plants
        in a volt-watt mode cap their active power by the curve. With a ``control``, each call
        advances the inverters' response by one step: call it once per step, in order.

        Parameters
        ----------
        k : int
            Step index, ``0 <= k < n_steps``.
        curtail_kw : numpy.ndarray, optional
            Upper limit of each plant's AC output, shape (n,); ``None`` means no limit,
            negative limits count as zero. [kW]
        q_kvar_set : numpy.ndarray, optional
            Requested reactive power of each plant, load convention (positive = absorbed from
            the grid), shape (n,); ``None`` means zero. [kvar]
        vm_pu : numpy.ndarray, optional
            Voltage each plant measures at its bus, shape (n,); ``None`` means nominal (1 pu).
            Used only by plants in a voltage-dependent mode. [pu]
        before : tuple (share, curtail_kw, q_kvar_set), optional
            Set-points that still applied at the start of the step (a late message): each plant
            runs on them for the first ``share`` (0..1, shape (n,)) of the step and on
            ``curtail_kw`` / ``q_kvar_set`` after; the results are step means.

        Returns
        -------
        ac_kw : numpy.ndarray
            Delivered AC power, generation positive, ``0 <= ac_kw <= available``. [kW]
        q_kvar : numpy.ndarray
            Reactive power, load convention, ``ac_kw² + q_kvar² <= inverter_kw²``. [kvar]
        curtailed_kw : numpy.ndarray
            Available power not delivered, ``available - ac_kw`` (>= 0). [kW]
        """
        if not 0 <= k < self.n_steps:
            raise IndexError(f"step {k} is outside the horizon [0, {self.n_steps})")
        q_inj_pu = p_cap_pu = None
        if self.control is not None and self.control.any_active:
            v = np.ones(self.n_plants) if vm_pu is None else self._per_plant(vm_pu, "vm_pu")
            q_inj_pu, p_cap_pu = self.control.step(v)
        ac, q, curtailed = self._operate(k, curtail_kw, q_kvar_set, q_inj_pu, p_cap_pu)
        if before is not None:
            share = np.clip(self._per_plant(before[0], "before share"), 0.0, 1.0)
            if share.any():
                # the first part of the step ran on the earlier set-points: step means mix
                ac0, q0, c0 = self._operate(k, before[1], before[2], q_inj_pu, p_cap_pu)
                ac, q = share * ac0 + (1 - share) * ac, share * q0 + (1 - share) * q
                curtailed = share * c0 + (1 - share) * curtailed
        return ac, q, curtailed

    def _operate(self, k: int, curtail_kw: np.ndarray | None, q_kvar_set: np.ndarray | None,
                 q_inj_pu: np.ndarray | None, p_cap_pu: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        available = self.available_ac_kw[k]
        rating = self.inverter_kw
        if curtail_kw is not None:
            ac = np.minimum(available, np.maximum(self._per_plant(curtail_kw, "curtail_kw"), 0.0))
        else:
            ac = available.copy()
        volt_var = None
        if q_inj_pu is not None:
            ac = np.minimum(ac, p_cap_pu * rating)
            volt_var = self.control.volt_var
            # reactive priority (IEEE 1547-2018 volt-var): Q as the curve says, P yields
            q = np.where(volt_var, -np.nan_to_num(q_inj_pu) * rating, 0.0)
            ac = np.where(volt_var, np.minimum(ac, np.sqrt(np.maximum(self._rating_sq - q**2,
                                                                        0.0))), ac)
        if q_kvar_set is not None:
            # 0 <= ac <= available <= inverter_kw, so the rating's headroom is never negative
            q_max = np.sqrt(self._rating_sq - ac**2)
            # np.clip's values (the same maximum, then minimum) without its wrapper's cost
            q_req = np.minimum(np.maximum(self._per_plant(q_kvar_set, "q_kvar_set"), -q_max),
                               q_max)
            # plants on a volt-var curve keep its Q
            q = q_req if volt_var is None else np.where(volt_var, q, q_req)
        elif volt_var is None:
            q = np.zeros(self.n_plants)
        return ac, q, available - ac

    def _per_plant(self, values: np.ndarray, name: str) -> np.ndarray:
        arr = np.asarray(values, dtype=float)
        if arr.shape != (self.n_plants,):
            raise ValueError(f"{name} must have one value per plant, shape ({self.n_plants},), "
                             f"got shape {arr.shape}")
        return arr
