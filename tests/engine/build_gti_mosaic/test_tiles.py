from __future__ import annotations

import shutil

import pytest

from rasterflow.engine.build_gti_mosaic.tiles import TileInfo, band_indexes, inspect_tile, inspect_tiles
from rasterflow.errors import InputReadError


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
