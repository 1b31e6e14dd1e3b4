"""The 2x2 kernels against GDAL's own average overviews (gdaladdo -r average)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from rasterflow.engine.build_zarr_multiscales.downsample import halve, replacement_value
from rasterflow.enums import ResamplingMethod

AVERAGE, MODE, NEAREST = ResamplingMethod.AVERAGE, ResamplingMethod.MODE, ResamplingMethod.NEAREST


def gdal_average_overview(tmp_path, band: np.ndarray, nodata) -> np.ndarray:
    """GDAL's factor-2 average overview of ``band``, built in a GeoTIFF by GDAL itself."""
    path = tmp_path / "band.tif"
    profile = dict(driver="GTiff", width=band.shape[1], height=band.shape[0], count=1, dtype=band.dtype,
                   nodata=nodata, crs="EPSG:32621", transform=Affine(30, 0, 0, 0, -30, 0), tiled=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(band, 1)
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2], Resampling.average)
    with rasterio.open(path, overview_level=0) as ovr:
        return ovr.read(1)


@pytest.mark.parametrize(
    "dtype, low, high, nodata",
    [("uint8", 1, 256, 0), ("uint16", 0, 30000, 0), ("uint16", 0, 4, 2), ("uint8", 200, 256, 255),
     ("int16", -3000, 3000, -9999), ("float32", -1.0, 1.0, -9999.0)],
)
def test_average_matches_gdal_overviews(tmp_path, dtype, low, high, nodata):
    rng = np.random.default_rng(7)
    values = rng.uniform(low, high, (96, 130)) if dtype == "float32" else rng.integers(low, high, (96, 130))
    band = values.astype(dtype)
    band[rng.random(band.shape) < 0.35] = nodata  # blocks with 0 to 4 valid pixels
    band[:4, :6] = nodata  # some blocks entirely nodata
    ours = halve(band[None], float(nodata), [AVERAGE])[0]
    gdal = gdal_average_overview(tmp_path, band, nodata)
    assert ours.shape == gdal.shape == (48, 65)
    np.testing.assert_array_equal(ours == nodata, gdal == nodata)
    if dtype == "float32":
        np.testing.assert_allclose(ours, gdal, rtol=1e-6)
    else:  # integers: identical rounding (half away from zero), nodata replacement included
        np.testing.assert_array_equal(ours, gdal)
    assert (ours == nodata).sum() < ours.size / 2  # most blocks hold data: not a vacuous match


def test_integer_rounding_is_half_away_from_zero():
    band = np.array([[1, 2, -1, -2], [2, 2, -2, -2]], dtype=np.int16)  # means 1.75 and -1.75
    assert halve(band[None], -9999.0, [AVERAGE])[0].tolist() == [[2, -2]]
    band = np.array([[1, 2, -1, -2], [1, 2, -1, -2]], dtype=np.int16)  # means 1.5 and -1.5
    assert halve(band[None], -9999.0, [AVERAGE])[0].tolist() == [[2, -2]]


def test_a_mean_equal_to_nodata_is_replaced_not_lost():
    """Valid pixels never average into nodata (GDAL's replacement rule); Int16 GDAL 3.10 skips it."""
    band = np.array([[1, 3], [1, 3]], dtype=np.uint16)
    assert halve(band[None], 2.0, [AVERAGE])[0].tolist() == [[3]]
    band = np.array([[-1, 1], [-1, 1]], dtype=np.int16)
    assert halve(band[None], 0.0, [AVERAGE])[0].tolist() == [[1]]
    assert replacement_value(np.dtype("uint8"), 255) == 254
    assert replacement_value(np.dtype("float32"), 0.0) > 0


def test_odd_edges_average_the_partial_block():
    band = np.arange(1, 26, dtype=np.uint16).reshape(5, 5)
    out = halve(band[None], 0.0, [AVERAGE])[0]
    assert out.shape == (3, 3)
    assert out[0, 2] == round((5 + 10) / 2)  # right column: a 2 x 1 block
    assert out[2, 0] == round((21 + 22) / 2)  # bottom row: a 1 x 2 block
    assert out[2, 2] == 25  # the corner: one pixel
    assert out[0, 0] == 4  # (1 + 2 + 6 + 7) / 4 = 4


def test_nan_is_nodata_for_floats():
    band = np.array([[np.nan, 2.0], [4.0, np.nan]], dtype=np.float32)
    assert halve(band[None], float("nan"), [AVERAGE])[0].tolist() == [[3.0]]
    band = np.full((2, 2), np.nan, dtype=np.float32)
    assert np.isnan(halve(band[None], float("nan"), [AVERAGE])[0, 0, 0])


def test_mode_takes_the_most_frequent_valid_value_first_on_ties():
    band = np.array([
        [3, 5, 7, 7, 0, 0, 4, 9],
        [5, 3, 7, 0, 0, 0, 9, 4],
    ], dtype=np.uint8)
    # 3/5 tie -> 3 (first); 7 twice and nodata -> 7; all nodata -> 0; 4/9 tie -> 4 (first)
    assert halve(band[None], 0.0, [MODE])[0].tolist() == [[3, 7, 0, 4]]
    band = np.array([[0, 2], [2, 1]], dtype=np.uint8)  # nodata never wins, even when first
    assert halve(band[None], 0.0, [MODE])[0].tolist() == [[2]]


def test_one_method_per_band():
    band = np.array([[1, 2], [2, 2]], dtype=np.uint8)
    data = np.stack([band, band, band])
    out = halve(data, 0.0, [AVERAGE, MODE, NEAREST])
    assert out[:, 0, 0].tolist() == [2, 2, 1]  # mean 1.75 -> 2; mode 2; top-left 1
    with pytest.raises(ValueError):
        halve(data, 0.0, [AVERAGE])
