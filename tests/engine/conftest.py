"""Paths to the real sample rasters and indexes bundled with the package."""

from __future__ import annotations

from pathlib import Path

import pytest

import rasterflow

SAMPLES = Path(rasterflow.__file__).parent / "samples"
LANDSAT = SAMPLES / "landsat8_iguazu"
HAITI = SAMPLES / "haiti_rgbn"


@pytest.fixture(scope="session")
def landsat_tiles() -> list[Path]:
    """The four overlapping Landsat-8 tiles (3 bands uint16, nodata 0, EPSG:32621, 30 m)."""
    tiles = sorted(LANDSAT.glob("LC08_*.tif"))
    assert len(tiles) == 4
    return tiles


@pytest.fixture(scope="session")
def landsat_tile(landsat_tiles) -> Path:
    return landsat_tiles[0]


@pytest.fixture(scope="session")
def landsat_index() -> Path:
    return LANDSAT / "tiles.parquet"


@pytest.fixture(scope="session")
def haiti_tiles() -> list[Path]:
    """rgbn_suba, rgbn_subb: 4 bands uint8, nodata 0, EPSG:32618, 5 m, grids offset by a fraction
    of a pixel."""
    return [HAITI / "rgbn_suba.tif", HAITI / "rgbn_subb.tif"]


@pytest.fixture(scope="session")
def haiti_aoi() -> Path:
    return HAITI / "aoi.geojson"
