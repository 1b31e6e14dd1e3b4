"""Compositing rules on the generated Sentinel-2-like and NAIP-like scenes (real GDAL reads, no Prefect)."""

from __future__ import annotations

import calendar
import warnings
from datetime import date

import numpy as np
import pytest
import rasterio
from affine import Affine
from stac_fixtures import expected_median, s2_items

from rasterflow.engine.build_mosaic.catalog import (
    CATALOG,
    S2_MASKED_SCL,
    Season,
    climate_zone,
    season_window,
    yearly_windows,
)
from rasterflow.engine.build_mosaic.composite import (
    Scene,
    StackTooLargeError,
    latest_composite,
    masked_median,
    median_composite,
    read_observation,
)
from rasterflow.engine.grid import Grid
from rasterflow.engine.warp import TileRead, render_window
from rasterflow.enums import DatasetEnum, ResamplingMethod

S2 = CATALOG[DatasetEnum.S2_MED_WINDOWED_PIXEL]
S2_ALL = CATALOG[DatasetEnum.S2_MED_WINDOWED_PIXEL_ALL_BANDS]
NAIP = CATALOG[DatasetEnum.NAIP_60CM]


def _scene(item: dict) -> Scene:
    offset = -1000.0 if item["properties"]["s2:processing_baseline"] >= "04.00" else 0.0
    return Scene(id=item["id"], datetime=item["properties"]["datetime"], offset=offset,
                 hrefs={k: a["href"] for k, a in item["assets"].items()})


@pytest.fixture(scope="module")
def items(stac_sample) -> list[dict]:
    return [it for it in s2_items(stac_sample) if it["properties"]["eo:cloud_cover"] < 75]


@pytest.fixture(scope="module")
def s2_grid(items) -> Grid:
    """The scenes' own 10 m grid, so reads copy pixels."""
    with rasterio.open(items[0]["assets"]["blue"]["href"]) as src:
        return Grid(crs=src.crs.to_wkt(), transform=tuple(src.transform)[:6], width=src.width,
                    height=src.height)


@pytest.mark.parametrize("low", [1, -5000], ids=["non-negative (integer-view sort)", "signed (float sort)"])
def test_masked_median_equals_nanmedian(low):
    rng = np.random.default_rng(0)
    stack = rng.integers(low, 10000, (7, 3, 40, 50)).astype("float32")
    stack[0, 0, 5, :5] = [0.0, -0.0, np.inf, 0.5, 1e-40]  # zeros, infinity, fraction, subnormal
    dropped = rng.random((7, 1, 40, 50)) < 0.5
    stack[np.broadcast_to(dropped, stack.shape)] = np.nan
    stack[:, :, :3] = np.nan  # pixels without any observation
    median, count = masked_median(stack)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(stack, axis=0)
    np.testing.assert_array_equal(median, expected)
    np.testing.assert_array_equal(count, np.count_nonzero(~np.isnan(stack[:, 0]), axis=0))
    assert {0, 1, 2, 7} <= set(np.unique(count))  # odd, even and empty counts all occur


def test_median_equals_nanmedian_over_the_masked_stack(items, s2_grid):
    """Band medians and N_VALID_PIXELS against reading, masking and harmonising the plain way."""
    got = median_composite(s2_grid, S2, [_scene(it) for it in items])
    median, count = expected_median(items, ["B02", "B03", "B04", "B08"], S2_MASKED_SCL)
    np.testing.assert_array_equal(got[:4], median.astype("float32"))
    np.testing.assert_array_equal(got[4], count)
    assert 0 < count.min() < count.max() == len(items)


def test_masked_classes_never_reach_the_composite(items, s2_grid):
    """Clouds are >= 9000 and saturated pixels 20000 in the scenes; none survives the mask."""
    bright = sum(np.count_nonzero(read_observation(s2_grid, S2.model_copy(update={"mask_classes": ()}),
                                                   _scene(it))[0] >= 9000) for it in items)
    assert bright > 1000
    for item in items:
        one = median_composite(s2_grid, S2, [_scene(item)])
        with rasterio.open(item["assets"]["scl"]["href"]) as src:
            scl = src.read(1).repeat(2, axis=0).repeat(2, axis=1)
        masked = np.isin(scl, S2_MASKED_SCL)
        assert masked.any() and (~masked).any()
        assert np.isnan(one[:4, masked]).all() and (one[4, masked] == 0).all()
        assert not np.isnan(one[:4, ~masked & (scl != 0)]).any()
        assert np.nanmax(one[:4]) < 9000


@pytest.mark.parametrize("baseline", ["03.01", "04.00"])
def test_harmonisation_removes_the_baseline_04_offset(items, s2_grid, baseline):
    item = next(it for it in items if it["properties"]["s2:processing_baseline"] == baseline)
    one = median_composite(s2_grid, S2, [_scene(item)])
    with rasterio.open(item["assets"]["blue"]["href"]) as src:
        dn = src.read(1).astype("float32")
    valid = ~np.isnan(one[0])
    offset = 1000 if baseline == "04.00" else 0
    np.testing.assert_array_equal(one[0][valid], np.maximum(dn[valid] - offset, 0))


def test_medians_of_both_baselines_agree(items, s2_grid):
    """Same ground in 2021 (03.01) and 2022 (04.00): harmonised medians are close, raw ones 1000 apart."""
    years = {y: [_scene(it) for it in items
                 if it["properties"]["datetime"].startswith(y)] for y in ("2021", "2022")}
    m21, m22 = (np.nanmean(median_composite(s2_grid, S2, s)[0]) for s in years.values())
    assert abs(m22 - m21) < 100


def test_memory_cap_splits_partitions_into_strips(items, s2_grid):
    scenes = [_scene(it) for it in items[:4]]
    whole = median_composite(s2_grid, S2, scenes)
    row_bytes = len(scenes) * len(S2.bands) * s2_grid.width * 4
    strips = median_composite(s2_grid, S2, scenes, max_stack_bytes=7 * row_bytes)
    np.testing.assert_array_equal(strips, whole)
    with pytest.raises(StackTooLargeError, match="compositing cap"):
        median_composite(s2_grid, S2, scenes, max_stack_bytes=row_bytes - 1)


def test_all_bands_resampled_to_10m(items, s2_grid):
    """B01 and B09 are 60 m assets, B05 20 m: each 10 m pixel takes its source pixel's value."""
    one = median_composite(s2_grid, S2_ALL, [_scene(items[0])])
    names = [b.name for b in S2_ALL.bands]
    with rasterio.open(items[0]["assets"]["coastal"]["href"]) as src:
        b01 = src.read(1).astype("float32").repeat(6, axis=0).repeat(6, axis=1)
    got = one[names.index("B01")]
    valid = ~np.isnan(got)
    assert valid.mean() > 0.3
    np.testing.assert_array_equal(got[valid], np.maximum(b01[valid] + _scene(items[0]).offset, 0))
    assert one.shape == (13, s2_grid.height, s2_grid.width)


def test_sentinel2_scenes_latest_on_top_harmonised_clouds_kept(stac_sample, s2_grid):
    """S2_LATEST_ALL_BANDS: each pixel from the newest scene with data, offset removed, SCL not applied."""
    latest = CATALOG[DatasetEnum.S2_LATEST_ALL_BANDS]
    scenes = [_scene(it) for it in s2_items(stac_sample)]  # every scene: no cloud-cover limit either
    assert any(s.offset for s in scenes) and any(not s.offset for s in scenes)
    got = latest_composite(s2_grid, latest, scenes, "float32", np.nan)
    expected = np.full_like(got, np.nan)
    for scene in scenes:  # oldest first, as the tile index sorts them
        observation = np.stack([_read_band(scene.hrefs[b.asset], s2_grid) for b in latest.bands])
        seen = (observation != 0).all(axis=0)
        expected[:, seen] = np.maximum(observation[:, seen] + scene.offset, 0)
    np.testing.assert_array_equal(got, expected)


def _read_band(href: str, grid: Grid) -> np.ndarray:
    """One band on the 10 m grid the plain way (nearest: 20 and 60 m pixels repeated)."""
    with rasterio.open(href) as src:
        factor = grid.width // src.width
        return src.read(1).astype("float32").repeat(factor, axis=0).repeat(factor, axis=1)


def test_latest_acquisition_on_top(stac_sample):
    """NAIP-like: rgbn_suba is the 2019 acquisition, rgbn_subb 2018; suba wins in the overlap."""
    folder = stac_sample["naip"]
    a, b = folder / "rgbn_suba" / "image.tif", folder / "rgbn_subb" / "image.tif"
    with rasterio.open(a) as sa, rasterio.open(b) as sb:
        left, bottom = min(sa.bounds.left, sb.bounds.left), min(sa.bounds.bottom, sb.bounds.bottom)
        right, top = max(sa.bounds.right, sb.bounds.right), max(sa.bounds.top, sb.bounds.top)
        grid = Grid(crs=sa.crs.to_wkt(), transform=tuple(Affine(5, 0, left, 0, -5, top))[:6],
                    width=int((right - left) // 5), height=int((top - bottom) // 5))
    scenes = [Scene(id="b", datetime="2018-07-02", hrefs={"image": str(b)}),
              Scene(id="a", datetime="2019-06-14", hrefs={"image": str(a)})]
    got = latest_composite(grid, NAIP, scenes, "uint8", 0)
    reads = [TileRead(uri=str(p), band_indexes=(1, 2, 3, 4), nodata=0) for p in (b, a)]
    expected = render_window(grid, reads, "uint8", 0, ResamplingMethod.NEAREST)
    older_on_top = render_window(grid, reads[::-1], "uint8", 0, ResamplingMethod.NEAREST)
    np.testing.assert_array_equal(got, expected)
    assert (got != older_on_top).any()  # the overlap differs between the two orders


@pytest.mark.parametrize("latitude, zone, planting, harvest", [
    (45.0, ("north", "temperate"), (4, 6), (9, 11)),
    (-30.0, ("south", "temperate"), (10, 12), (3, 5)),
    (10.0, ("north", "tropical"), (6, 8), (10, 12)),
    (-10.0, ("south", "tropical"), (11, 12), (3, 5)),
    (60.0, ("north", "boreal"), (5, 6), (8, 9)),
    (-55.0, ("south", "boreal"), (11, 12), (2, 3)),
    (0.0, ("north", "tropical"), (6, 8), (10, 12)),
])
def test_season_windows_by_hemisphere_and_climate_band(latitude, zone, planting, harvest):
    assert climate_zone(latitude) == zone
    p0, p1 = season_window(Season.PLANTING, 2023, latitude)
    h0, h1 = season_window(Season.HARVEST, 2023, latitude)
    assert (p0.month, p1.month, p0.day) == (*planting, 1)
    assert (h0.month, h1.month, h0.day) == (*harvest, 1)
    assert p1 == date(2023, planting[1], calendar.monthrange(2023, planting[1])[1])
    assert h1 == date(2023, harvest[1], calendar.monthrange(2023, harvest[1])[1])


def test_yearly_windows_one_per_calendar_year_clipped_to_the_period():
    windows = yearly_windows(Season.YEAR, date(2021, 6, 15), date(2023, 2, 1), 45.0)
    assert windows == [(2021, date(2021, 6, 15), date(2021, 12, 31)),
                       (2022, date(2022, 1, 1), date(2022, 12, 31)),
                       (2023, date(2023, 1, 1), date(2023, 2, 1))]
    # Northern harvest (Sep-Nov) of 2021 is after the start; 2022's is cut at the end; 2023's is gone.
    harvest = yearly_windows(Season.HARVEST, date(2021, 6, 15), date(2022, 10, 15), 45.0)
    assert harvest == [(2021, date(2021, 9, 1), date(2021, 11, 30)),
                       (2022, date(2022, 9, 1), date(2022, 10, 15))]
    assert yearly_windows(Season.HARVEST, date(2021, 1, 1), date(2021, 6, 30), 45.0) == []
