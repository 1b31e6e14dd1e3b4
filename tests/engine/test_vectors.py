from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import box

from rasterflow.engine.vectors import read_vector
from rasterflow.errors import InvalidParameterError


def test_read_vector_parquet_index(landsat_index):
    frame = read_vector(str(landsat_index), "gti")
    assert len(frame) == 4
    assert frame.crs.to_epsg() == 32621
    assert "location" in frame.columns


def test_read_vector_geojson(haiti_aoi):
    frame = read_vector(f"file://{haiti_aoi}", "aoi")
    assert len(frame) == 1
    assert frame.crs.to_epsg() == 4326


@pytest.mark.parametrize("name", ["missing.parquet", "missing.geojson", "missing.gpkg"])
def test_read_vector_missing_file(tmp_path, name):
    uri = str(tmp_path / name)
    with pytest.raises(InvalidParameterError) as info:
        read_vector(uri, "aoi")
    assert info.value.param == "aoi"
    assert info.value.value == uri
    assert "no such file" in str(info.value).lower()


def test_read_vector_raster_file(landsat_tile):
    with pytest.raises(InvalidParameterError, match="cannot be read as a vector dataset") as info:
        read_vector(str(landsat_tile), "gti")
    assert info.value.param == "gti"
    assert str(landsat_tile) in str(info.value)


@pytest.mark.parametrize("name", ["notes.txt", "index.parquet", "aoi.geojson"])
def test_read_vector_not_a_vector_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("hello, this is not a vector dataset\n")
    with pytest.raises(InvalidParameterError, match="cannot be read as a vector dataset") as info:
        read_vector(str(path), "gti")
    assert info.value.param == "gti"
    assert "GeoParquet" in str(info.value)  # says what would be valid


def test_read_vector_without_crs(tmp_path):
    path = tmp_path / "nocrs.parquet"
    gpd.GeoDataFrame({"location": ["a.tif"]}, geometry=[box(0, 0, 1, 1)]).to_parquet(path)
    with pytest.raises(InvalidParameterError, match="has no CRS") as info:
        read_vector(str(path), "gti")
    assert info.value.param == "gti"


def test_read_vector_without_geometries(tmp_path):
    path = tmp_path / "empty.parquet"
    gpd.GeoDataFrame({"location": ["a.tif"]}, geometry=[None], crs="EPSG:4326").to_parquet(path)
    with pytest.raises(InvalidParameterError, match="holds no geometries") as info:
        read_vector(str(path), "aoi")
    assert info.value.param == "aoi"
