"""Weather: synthetic Chongqing climate and TMY3/EPW files mapped onto step midpoints."""

from pathlib import Path

import numpy as np
import pandas as pd
import pvlib
import pytest

from components.pv.config import LocationConfig, WeatherConfig
from components.pv.weather import synthetic_weather, weather_from_file

TMY3 = Path(pvlib.__file__).parent / "data" / "703165TY.csv"
CQ = LocationConfig()


def _year(step_s: int = 900, year: int = 2025) -> pd.DatetimeIndex:
    start = pd.Timestamp(f"{year}-01-01", tz="Asia/Shanghai") + pd.Timedelta(seconds=step_s / 2)
    return pd.date_range(start, periods=int(365 * 86400 / step_s), freq=f"{step_s}s")


def _synthetic(seed: int, times=None, cfg=None) -> pd.DataFrame:
    times = _year() if times is None else times
    return synthetic_weather(times, CQ.latitude_deg, CQ.longitude_deg, CQ.altitude_m,
                             cfg or WeatherConfig(), np.random.default_rng(seed))


@pytest.fixture(scope="module")
def years() -> list[pd.DataFrame]:
    return [_synthetic(seed) for seed in range(6)]


def test_synthetic_columns_and_bounds(years):
    w = years[0]
    assert list(w.columns[:5]) == ["ghi", "dni", "dhi", "temp_air", "wind_speed"]
    assert len(w) == 35040 and w.index.equals(_year())
    assert np.isfinite(w.to_numpy()).all()
    assert (w[["ghi", "dni", "dhi", "wind_speed"]] >= 0).all().all()
    # never above clear sky times the cloud-enhancement cap
    assert (w.ghi <= w.ghi_clear * WeatherConfig().max_clear_sky_index + 1e-9).all()
    night = w.ghi_clear == 0
    assert night.sum() > 10000 and (w.ghi[night] == 0).all() and (w.dni[night] == 0).all()


def test_components_close_to_ghi(years):
    w = years[1]
    zen = pvlib.solarposition.get_solarposition(w.index, CQ.latitude_deg, CQ.longitude_deg,
                                                CQ.altitude_m)["zenith"]
    cos_z = np.cos(np.radians(zen)).clip(lower=0)
    np.testing.assert_allclose(w.dhi + w.dni * cos_z, w.ghi, atol=1e-6)


def test_same_seed_same_weather_other_seed_differs(years):
    again = _synthetic(0)
    pd.testing.assert_frame_equal(again, years[0])
    assert not np.allclose(years[0].ghi, years[1].ghi)


def test_step_size_keeps_the_climate():
    hourly = _synthetic(5, _year(3600))
    quarter = _synthetic(5)
    e_hourly = hourly.ghi.sum() / 1000
    e_quarter = quarter.ghi.sum() * 0.25 / 1000
    assert e_hourly == pytest.approx(e_quarter, rel=0.1)


def test_chongqing_climate(years):
    """Annual GHI, sunshine duration and temperatures against published Chongqing figures.

    Climatological means over six seeded years: single years spread by about 5 % in GHI and
    10 % in sunshine duration, as observed years do.

    GHI: 905 kWh/m² (CMA 2010 assessment, Chongqing the national minimum) to 1,161 kWh/m²
    (top of China's least-resourced zone, 4,180 MJ/m²). Sunshine (DNI >= 120 W/m²): 1,000-1,500 h
    in most of Chongqing, 924 h at the least sunny station (CMA Chongqing forecast manual).
    """
    ghi = np.mean([w.ghi.sum() * 0.25 / 1000 for w in years])
    sunshine_h = np.mean([(w.dni >= 120).sum() * 0.25 for w in years])
    assert 905 <= ghi <= 1161
    assert 924 <= sunshine_h <= 1500
    w = years[0]
    monthly_t = w.temp_air.groupby(w.index.month).mean()
    assert 17.0 <= w.temp_air.mean() <= 20.0
    assert 5.0 <= monthly_t[1] <= 10.0 and 26.0 <= monthly_t[7] <= 31.0
    monthly_ghi = w.ghi.groupby(w.index.month).sum()
    assert monthly_ghi.idxmin() in (1, 12) and monthly_ghi.idxmax() in (7, 8)
    assert 0.8 <= w.wind_speed.mean() <= 2.0


def test_naive_times_rejected():
    with pytest.raises(ValueError, match="time-zone aware"):
        synthetic_weather(pd.date_range("2025-01-01", periods=4, freq="h"), 29.5, 106.5, 260,
                          WeatherConfig(), np.random.default_rng(0))


# --- files ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tmy3() -> pd.DataFrame:
    data, _ = pvlib.iotools.read_tmy3(str(TMY3), map_variables=True)
    return data


def test_tmy3_rows_are_hour_ending(tmy3):
    # step midpoints inside 12:00-13:00 (file time, UTC-9) take the row labelled 13:00
    times = pd.date_range("2023-01-01 12:07:30", periods=4, freq="15min", tz="Etc/GMT+9")
    w = weather_from_file(TMY3, times)
    row13 = tmy3.loc["1997-01-01 13:00"]
    row12 = tmy3.loc["1997-01-01 12:00"]
    for col in ("ghi", "dni", "dhi"):
        assert (w[col] == float(row13[col])).all()
    # temperature is given at the hour's end and interpolated in time
    t12, t13 = float(row12["temp_air"]), float(row13["temp_air"])
    np.testing.assert_allclose(w.temp_air, t12 + (t13 - t12) * np.array([0.125, 0.375, 0.625,
                                                                          0.875]))
    assert w.attrs["latitude_deg"] == pytest.approx(55.317)


def test_file_mapping_ignores_year_and_converts_time_zone(tmy3):
    in_file_tz = pd.date_range("2021-06-10 00:30", periods=48, freq="h", tz="Etc/GMT+9")
    a = weather_from_file(TMY3, in_file_tz)
    b = weather_from_file(TMY3, in_file_tz.tz_convert("Asia/Shanghai"))
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    hour_ending = tmy3[(tmy3.index.month == 6) & (tmy3.index.day == 10)]["ghi"].to_numpy()
    # labels 00:00 ... 23:00 of 10 June: the 00:30 step takes the row labelled 01:00
    np.testing.assert_array_equal(a.ghi.to_numpy()[:23], hour_ending[1:24])
    # 29 February reads 28 February
    leap = pd.date_range("2024-02-29 00:30", periods=24, freq="h", tz="Etc/GMT+9")
    np.testing.assert_array_equal(weather_from_file(TMY3, leap).ghi.to_numpy(),
                                  weather_from_file(TMY3, leap - pd.Timedelta(days=1)).ghi)
    # the last hour of the year (labelled 24:00 in the file) is found
    assert len(weather_from_file(TMY3, pd.DatetimeIndex(
        [pd.Timestamp("2023-12-31 23:30", tz="Etc/GMT+9")]))) == 1


_EPW_COLUMNS = 35


def _write_epw(path: Path, tmy3: pd.DataFrame) -> None:
    """Write the TMY3 data as an EPW file (hour h of an EPW covers (h-1, h])."""
    header = [
        "LOCATION,Sand Point,AK,USA,TMY3,703165,55.317,-160.517,-9.0,7.0",
        "DESIGN CONDITIONS,0", "TYPICAL/EXTREME PERIODS,0", "GROUND TEMPERATURES,0",
        "HOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0", "COMMENTS 1,converted for a test",
        "COMMENTS 2,", "DATA PERIODS,1,1,Data,Sunday, 1/ 1,12/31",
    ]
    starts = tmy3.index - pd.Timedelta(hours=1)
    lines = []
    for start, (_, row) in zip(starts, tmy3.iterrows()):
        fields = ["0"] * _EPW_COLUMNS
        fields[0:6] = [str(start.year), str(start.month), str(start.day), str(start.hour + 1),
                       "60", "?"]
        fields[6] = str(row["temp_air"])
        fields[13], fields[14], fields[15] = str(row["ghi"]), str(row["dni"]), str(row["dhi"])
        fields[21] = str(row["wind_speed"])
        lines.append(",".join(fields))
    path.write_text("\n".join(header + lines) + "\n")


def test_epw_rows_align_like_tmy3(tmp_path, tmy3):
    epw = tmp_path / "sand_point.epw"
    _write_epw(epw, tmy3)
    times = pd.date_range("2023-01-01 00:07:30", periods=4 * 24 * 20, freq="15min",
                          tz="Etc/GMT+9")
    a = weather_from_file(TMY3, times)
    b = weather_from_file(epw, times)
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy())
    assert b.attrs["utc_offset_h"] == -9.0


def test_missing_unreadable_and_unknown_files_name_the_path(tmp_path):
    times = pd.date_range("2023-01-01 00:30", periods=3, freq="h", tz="UTC")
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(ValueError, match="nowhere.csv"):
        weather_from_file(missing, times)
    junk = tmp_path / "junk.epw"
    junk.write_text("this is not a weather file\n")
    with pytest.raises(ValueError, match="junk.epw"):
        weather_from_file(junk, times)
    with pytest.raises(ValueError, match="weather.txt"):
        weather_from_file(tmp_path / "weather.txt", times)
