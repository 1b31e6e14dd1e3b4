"""Exports opened as users open them: rasterio's GDAL and Debian's gdal-bin (gdalinfo, ogrinfo)."""

from __future__ import annotations

import json
import subprocess

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import view_fixtures
import zarr
from tools import tool

from rasterflow.engine.export import export
from rasterflow.errors import InvalidParameterError


@pytest.fixture(scope="module")
def outputs(landsat, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    mosaic = view_fixtures.mosaic(landsat, tmp / "mosaic")
    return {"mosaic": mosaic, "pyramid": view_fixtures.pyramid(mosaic, tmp / "pyramid"),
            "polygons": view_fixtures.polygons(landsat, tmp / "polygons.parquet")}


def _gdalinfo(path: str) -> dict:
    gdalinfo = tool("gdalinfo", why="apt-get install gdal-bin: Debian's GDAL opens the exports")
    return json.loads(subprocess.run([gdalinfo, "-json", path], check=True, capture_output=True,
                                     text=True).stdout)


def test_a_pyramid_becomes_a_cog_with_overviews_nodata_and_band_names(outputs, tmp_path):
    path, = export(outputs["pyramid"], "cog", str(tmp_path))
    level0 = zarr.open_array(outputs["pyramid"] + "/0", path="variables", mode="r")[0]

    with rasterio.open(path) as cog:
        assert cog.descriptions == tuple(view_fixtures.BANDS) and cog.nodata == 0
        assert cog.overviews(1) and cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        np.testing.assert_array_equal(cog.read(), level0)  # level 0's pixels, bit for bit
        assert cog.crs.to_epsg() == 32621
    info = _gdalinfo(path)  # Debian's GDAL 3.6, as QGIS 3.x users have it
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    assert [b["description"] for b in info["bands"]] == view_fixtures.BANDS
    assert all(b["noDataValue"] == 0 and b["overviews"] for b in info["bands"])


def test_a_store_becomes_zarr_v2_that_gdal_before_3_13_reads(outputs, tmp_path):
    path, = export(outputs["mosaic"], "zarr-v2", str(tmp_path))
    data = zarr.open_array(outputs["mosaic"], path="variables", mode="r")[0]

    with rasterio.open(f'ZARR:"{path}":/variables') as ds:  # rasterio's GDAL 3.10
        np.testing.assert_array_equal(ds.read(), data)
        assert ds.crs.to_epsg() == 32621
    info = _gdalinfo(f'ZARR:"{path}":/variables:0:1')  # Debian's 3.6: a subdataset per (time, band)
    assert info["size"] == [data.shape[-1], data.shape[-2]]


@pytest.mark.parametrize("fmt, driver", [("gpkg", "GPKG"), ("fgb", "FlatGeobuf")])
def test_polygons_become_geopackage_or_flatgeobuf(outputs, tmp_path, fmt, driver):
    path, = export(outputs["polygons"], fmt, str(tmp_path))
    ogrinfo = tool("ogrinfo", why="apt-get install gdal-bin")
    listing = subprocess.run([ogrinfo, "-so", "-al", path], check=True, capture_output=True, text=True).stdout
    assert f"using driver `{driver}'" in listing and "Feature Count: 3" in listing and "label" in listing
    frame = gpd.read_file(path)
    assert list(frame.label) == ["water"] * 3 and frame.crs.to_epsg() == 4326


def test_a_format_that_does_not_fit_is_refused_before_anything_is_written(outputs, tmp_path):
    with pytest.raises(InvalidParameterError, match="format.*does not fit"):
        export(outputs["polygons"], "cog", str(tmp_path))
    with pytest.raises(InvalidParameterError, match="is not an export format"):
        export(outputs["mosaic"], "jpeg", str(tmp_path))
    assert not list(tmp_path.iterdir())
