from __future__ import annotations

import shutil

import geopandas as gpd
import pytest
from shapely.geometry import box

from rasterflow.engine.tileindex import TileInfo, band_indexes, inspect_tile, inspect_tiles, read_vector
from rasterflow.errors import InputReadError, InvalidParameterError


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


def test_inspect_tile(haiti_tiles):
    info = inspect_tile(str(haiti_tiles[0]))
    assert info.uri == str(haiti_tiles[0])
    assert (info.width, info.height) == (276, 212)
    assert info.transform == (5.0, 0.0, 792928.0, 0.0, -5.0, 2050112.0)
    assert info.dtype == "uint8"
    assert info.nodata == 0
    assert info.descriptions == ("red", "green", "blue", "nir")
    assert "32618" in info.crs
    assert info.fingerprint.startswith(f"{haiti_tiles[0].stat().st_size}:")


def test_inspect_tiles_keeps_order(landsat_tiles):
    infos = inspect_tiles([str(p) for p in landsat_tiles])
    assert [i.uri for i in infos] == [str(p) for p in landsat_tiles]
    assert inspect_tiles([]) == []


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_inspect_missing_tile(tmp_path, scheme):
    uri = f"{scheme}{tmp_path / 'gone.tif'}"
    with pytest.raises(InputReadError, match="does not exist") as info:
        inspect_tile(uri)
    assert info.value.uri == uri
    assert uri in str(info.value)
    assert info.value.transient is False


@pytest.mark.parametrize("damage", ["truncated header", "overwritten header"])
def test_inspect_corrupt_tile(tmp_path, haiti_tiles, damage):
    path = tmp_path / "corrupt.tif"
    shutil.copy(haiti_tiles[0], path)
    with open(path, "r+b") as fh:
        if damage == "truncated header":
            fh.truncate(200)
        else:
            fh.write(b"\0" * 64)
    with pytest.raises(InputReadError, match="cannot read tile") as info:
        inspect_tile(str(path))
    assert info.value.uri == str(path)
    assert str(path) in str(info.value)
    assert info.value.transient is False


def test_inspect_text_file_as_tile(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("not a raster")
    with pytest.raises(InputReadError) as info:
        inspect_tile(str(path))
    assert not info.value.transient


def _info(descriptions) -> TileInfo:
    return TileInfo(
        uri="t.tif", crs="EPSG:3857", transform=(1, 0, 0, 0, -1, 0), width=1, height=1,
        dtype="uint8", nodata=0, descriptions=descriptions, fingerprint="x",
    )


def test_band_indexes():
    info = _info(("red", "green", "blue", "nir"))
    assert band_indexes(info, ["red"]) == (1,)
    assert band_indexes(info, ["nir", "red", "green"]) == (4, 1, 2)
    assert band_indexes(info, ["red", "swir"]) is None
    assert band_indexes(info, ["Red"]) is None


def test_band_indexes_without_descriptions():
    assert band_indexes(_info((None, None, None)), ["red"]) is None


def test_band_indexes_of_real_tile(landsat_tile):
    assert band_indexes(inspect_tile(str(landsat_tile)), ["red", "green", "blue"]) == (3, 2, 1)


def test_gdal_env_from_s3_storage_options(monkeypatch):
    """One endpoint in rasterflow.yaml configures GDAL's /vsis3/ as it configures s3fs."""
    from rasterflow.engine.tileindex import gdal_credentials, gdal_env

    monkeypatch.delenv("GDAL_HTTP_MAX_RETRY", raising=False)
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")  # the environment wins over our default
    options = {"endpoint_url": "http://127.0.0.1:9000", "key": "k", "secret": "s", "requester_pays": True,
               "client_kwargs": {"region_name": "eu-west-1"}}
    env = gdal_env(storage_options=options)
    assert env["AWS_S3_ENDPOINT"] == "127.0.0.1:9000"
    assert (env["AWS_HTTPS"], env["AWS_VIRTUAL_HOSTING"]) == ("NO", "FALSE")
    assert (env["AWS_REGION"], env["AWS_REQUEST_PAYER"]) == ("eu-west-1", "requester")
    assert env["GDAL_HTTP_MAX_RETRY"] == "5" and "GDAL_HTTP_RETRY_DELAY" not in env
    assert not any(k.startswith("AWS_") and "KEY" in k for k in env)  # credentials go through a session
    assert gdal_credentials(options) == {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}

    virtual = gdal_env(storage_options={"endpoint_url": "https://s3.example.org/",
                                        "config_kwargs": {"s3": {"addressing_style": "virtual"}}, "anon": True})
    assert (virtual["AWS_S3_ENDPOINT"], virtual["AWS_HTTPS"], virtual["AWS_VIRTUAL_HOSTING"]) == (
        "s3.example.org", "YES", "TRUE")
    assert virtual["AWS_NO_SIGN_REQUEST"] == "YES"
    assert gdal_env(requester_pays=True)["AWS_REQUEST_PAYER"] == "requester"
    assert "AWS_S3_ENDPOINT" not in gdal_env() and gdal_credentials(None) == {}
