"""build_zarr_multiscales end to end: a real mosaic, real GDAL overviews, real Prefect."""

from __future__ import annotations

import hashlib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401
import xarray as xr
import zarr
from affine import Affine
from prefect_runs import task_states
from rasterio.enums import Resampling
from typer.testing import CliRunner

from rasterflow import RasterflowClient, ResamplingMethod
from rasterflow.cli import app
from rasterflow.config import RasterflowConfig
from rasterflow.errors import InvalidParameterError

BANDS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def mosaic(landsat, tmp_path_factory) -> str:
    """build_gti_mosaic of the Landsat sample over a disc (nodata around it), in EPSG:32621."""
    tmp = tmp_path_factory.mktemp("mosaic")
    aoi = gpd.read_file(landsat / "aoi.geojson").to_crs("EPSG:32621")
    disc = gpd.GeoDataFrame(geometry=[aoi.geometry[0].centroid.buffer(10_000)],
                            crs="EPSG:32621").to_crs("EPSG:4326")
    disc.to_file(tmp / "disc.geojson")
    client = RasterflowClient(RasterflowConfig(output_uri=str(tmp / "out"), max_workers=2))
    index = client.build_gti_mosaic(str(landsat / "tiles.parquet"), str(tmp / "disc.geojson"), BANDS,
                                    "location", crs_epsg=32621, xy_chunksize=128,
                                    shard_size_bytes=256 * 256 * 6)
    return index


def location(index_uri: str) -> str:
    (loc,) = gpd.read_parquet(index_uri).location
    return loc


def checksums(folder: str) -> dict[str, str]:
    root = Path(folder)
    files = [f for f in sorted(root.rglob("*")) if f.is_file()]
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def gdal_overviews(data: xr.DataArray, path: Path, factors: list[int]) -> list[np.ndarray]:
    """GDAL's average overviews (what gdaladdo -r average builds) of ``data`` as a tiled GeoTIFF."""
    data.rio.to_raster(path, tiled=True, nodata=0)
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews(factors, Resampling.average)
    out = []
    for i in range(len(factors)):
        with rasterio.open(path, overview_level=i) as ovr:
            out.append(ovr.read())
    return out


def test_levels_match_gdal_average_overviews(client, mosaic, tmp_path):
    source = location(mosaic)
    before = checksums(source)
    index_uri = client.build_zarr_multiscales(mosaic)
    assert checksums(source) == before  # the input is never modified
    index = gpd.read_parquet(index_uri)
    row = index.iloc[0]
    assert len(index) == 1 and row.source == source and row.crs == "EPSG:32621" and list(row.bands) == BANDS
    assert index.crs.to_epsg() == 4326 and row.levels >= 3

    root = row.location
    mosaic_data = xr.open_zarr(source)["variables"].isel(time=0)
    level0 = xr.open_zarr(f"{root}/0")["variables"]
    np.testing.assert_array_equal(level0.values[0], mosaic_data.values)

    # GDAL stretches overviews of odd sizes; on an even crop both are exact 2x2 blocks.
    height, width = (n - n % 4 for n in mosaic_data.shape[-2:])
    even = mosaic_data.isel(y=slice(0, height), x=slice(0, width))
    expected1, expected2 = gdal_overviews(even, tmp_path / "even.tif", [2, 4])
    for n, expected in ((1, expected1), (2, expected2)):
        level = xr.open_zarr(f"{root}/{n}")["variables"]
        assert level.rio.crs.to_epsg() == 32621
        assert level.rio.transform() == mosaic_data.rio.transform() * Affine.scale(2**n)
        ours = level.values[0][:, : height // 2**n, : width // 2**n]
        np.testing.assert_array_equal(ours == 0, expected == 0)  # nodata in the same places
        assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1
    # Not vacuous: nodata around the disc, and blocks on its edge with only some valid pixels.
    nonzero = mosaic_data.values[0, :height, :width] != 0
    blocks = nonzero.reshape(height // 2, 2, width // 2, 2).sum(axis=(1, 3))
    assert (expected1[0] == 0).mean() > 0.2 and ((blocks > 0) & (blocks < 4)).sum() > 100

    attrs = xr.open_zarr(root, consolidated=False).attrs
    assert attrs["rasterflow"]["status"] == "complete"
    assert [item["asset"] for item in attrs["multiscales"]["layout"]] == [str(n) for n in range(row.levels)]
    for band, name in zip(attrs["bands"], BANDS, strict=True):
        valid = mosaic_data.sel(band=name).values
        assert band["name"] == name
        assert band["statistics"]["count"] == (valid != 0).sum() == sum(band["histogram"]["buckets"])


def test_second_identical_run_is_cached(client, mosaic):
    first = client.build_zarr_multiscales(mosaic, levels=3)
    states = task_states("build-zarr-multiscales", "build-shard")
    assert len(states) > 3 and set(states) == {"Completed"}
    second = client.build_zarr_multiscales(mosaic, levels=3)
    assert second == first
    assert task_states("build-zarr-multiscales", "build-shard") == ["Cached"] * len(states)
    root = location(second)
    assert xr.open_zarr(root, consolidated=False).attrs["rasterflow"]["status"] == "complete"
    assert xr.open_zarr(f"{root}/2")["variables"].rio.crs.to_epsg() == 32621


def test_a_store_gives_its_multiscales_store_and_resampling_per_band(client, mosaic):
    """As RasterFlow's reference: a store in, the multiscales store out (an index gives an index)."""
    per_band = {"red": ResamplingMethod.NEAREST, "blue": ResamplingMethod.MODE}
    root = client.build_zarr_multiscales(location(mosaic), levels=2, resampling=per_band)
    group = zarr.open_group(root, mode="r")  # what a user of the reference writes
    assert sorted(group.group_keys()) == ["0", "1"] and group.attrs["rasterflow"]["status"] == "complete"
    (index_path,) = Path(root).parent.glob("index.parquet")  # listed in an index all the same
    assert location(str(index_path)) == root
    attrs = xr.open_zarr(root, consolidated=False).attrs
    assert [b["resampling"] for b in attrs["bands"]] == ["nearest", "average", "mode"]
    assert "resampling_method" not in attrs["multiscales"]  # mixed: named per band instead
    level0, level1 = (xr.open_zarr(f"{root}/{n}")["variables"].values[0] for n in (0, 1))
    np.testing.assert_array_equal(level1[0], level0[0, ::2, ::2])  # nearest: each block's top-left pixel


def test_one_level_is_a_copy_with_its_statistics(client, mosaic):
    """No level 1 to count the histograms: count-shard re-reads level 0."""
    root = location(client.build_zarr_multiscales(mosaic, levels=1))
    assert (task_states("build-zarr-multiscales", "count-shard")
            and set(task_states("build-zarr-multiscales", "count-shard")) == {"Completed"})
    attrs = xr.open_zarr(root, consolidated=False).attrs
    assert len(attrs["multiscales"]["layout"]) == 1
    source = xr.open_zarr(location(mosaic))["variables"].values[0]
    for b, band in enumerate(attrs["bands"]):
        assert band["statistics"]["count"] == (source[b] != 0).sum() == sum(band["histogram"]["buckets"])


def _nothing_written(output_root: Path) -> bool:
    return not output_root.exists() or not list(output_root.rglob("*.zarr"))


@pytest.mark.parametrize(
    "change, param",
    [
        (dict(store="/nonexistent/store.zarr"), "store"),
        (dict(levels=0), "levels"),
        (dict(levels=40), "levels"),
        (dict(resampling="cubic"), "resampling"),
        (dict(resampling={"swir": "mode"}), "resampling"),
    ],
)
def test_bad_input_names_the_parameter(client, mosaic, output_root, change, param):
    with pytest.raises(InvalidParameterError) as err:
        client.build_zarr_multiscales(**(dict(store=mosaic) | change))
    assert err.value.param == param and param in str(err.value)
    assert _nothing_written(output_root)


def test_cli_command(mosaic, tmp_path):
    (tmp_path / "rasterflow.yaml").write_text(f"output_uri: {tmp_path / 'out'}\nmax_workers: 2\n")
    runner = CliRunner()
    result = runner.invoke(app, ["build-zarr-multiscales", mosaic, "--levels", "2", "-r", "near",
                                 "--config", str(tmp_path / "rasterflow.yaml")])
    assert result.exit_code == 0, result.output
    (index_path,) = (tmp_path / "out").rglob("index.parquet")
    assert gpd.read_parquet(index_path).levels[0] == 2
    result = runner.invoke(app, ["build-zarr-multiscales", mosaic, "-r", "red=bogus"])
    assert result.exit_code != 0 and "BAND=METHOD" in result.output
