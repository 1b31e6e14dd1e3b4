"""The dataset catalog: what each ``DatasetEnum`` member is made of.

A named dataset resolves to two things the mosaic engine already understands:
a tile index (the STAC items of a collection, found by ``engine.stac``) and a
compositing rule (``engine.composite``): the median of cloud-masked
observations for the Sentinel-2 medians, the most recent acquisition on top
for NAIP and for the Sentinel-2 scenes that cloud masks are made from.
Everything else (grid, partitions, warped reads, stores, index) is the
build-gti-mosaic machinery.

Sources default to public catalogs and can be pointed elsewhere per dataset in
rasterflow.yaml (``datasets: {s2med_harvest: {stac_url: ..., collection: ...}}``
or ``{geoparquet: ...}``), for a mirror or an offline catalog.
"""

from __future__ import annotations

import calendar
from datetime import date
from enum import Enum

from pydantic import BaseModel, ConfigDict

from ...enums import DatasetEnum

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"


class DatasetSource(BaseModel):
    """Where a named dataset's STAC items come from: an API and collection, or a stac-geoparquet file.

    The catalog's entries have one; the config's ``datasets`` key replaces it per dataset.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    stac_url: str | None = None
    collection: str | None = None
    geoparquet: str | None = None

    def describe(self) -> str:
        return f"stac-geoparquet {self.geoparquet}" if self.geoparquet else \
            f"STAC API {self.stac_url} (collection {self.collection!r})"



class Rule(str, Enum):
    """How the observations of one pixel become one value."""

    MEDIAN = "median"  # per-pixel median of valid (unmasked) observations, plus their count
    LATEST = "latest"  # the most recent valid acquisition on top


class Season(str, Enum):
    """Which part of each calendar year feeds a time slice."""

    YEAR = "year"
    PLANTING = "planting"
    HARVEST = "harvest"


class Band(BaseModel):
    """One output band: the STAC asset holding it and its (1-based) index there."""

    model_config = ConfigDict(frozen=True)

    name: str
    asset: str
    index: int = 1


class DatasetSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    dataset: DatasetEnum
    source: DatasetSource
    bands: tuple[Band, ...]
    resolution: float  # native, metres
    dtype: str
    nodata: float  # of the assets (0 for Sentinel-2 DN and NAIP)
    rule: Rule
    season: Season
    max_cloud_cover: float | None = None  # items with eo:cloud_cover >= this are skipped
    mask_asset: str | None = None  # scene classification (Sentinel-2 SCL)
    mask_classes: tuple[int, ...] = ()
    harmonize: bool = False  # remove the +1000 BOA offset of processing baseline >= 04.00
    requester_pays: bool = False

    @property
    def prefix(self) -> str:
        return self.dataset.value

    @property
    def output_bands(self) -> list[str]:
        names = [b.name for b in self.bands] + ([COUNT_BAND] if self.rule is Rule.MEDIAN else [])
        return [f"{self.prefix}:{n}" for n in names]


COUNT_BAND = "N_VALID_PIXELS"

# SCL classes that never reach a composite: 0 no data, 1 saturated or defective,
# 3 cloud shadow, 7 unclassified, 8 cloud medium probability, 9 cloud high
# probability, 10 thin cirrus (ESA Sentinel-2 L2A product specification).
S2_MASKED_SCL = (0, 1, 3, 7, 8, 9, 10)
S2_MAX_CLOUD_COVER = 75.0

# Band -> Earth Search v1 asset key. B10 (cirrus) is not in L2A products.
_S2_ASSETS = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
    "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B11": "swir16", "B12": "swir22",
}
S2_BANDS = ("B02", "B03", "B04", "B08")
S2_ALL_BANDS = tuple(_S2_ASSETS)
NAIP_BANDS = ("red", "green", "blue", "nir")


def _s2(dataset: DatasetEnum, bands: tuple[str, ...], season: Season) -> DatasetSpec:
    return DatasetSpec(
        dataset=dataset, source=DatasetSource(stac_url=EARTH_SEARCH, collection="sentinel-2-l2a"),
        bands=tuple(Band(name=b, asset=_S2_ASSETS[b]) for b in bands), resolution=10.0, dtype="float32",
        nodata=0, rule=Rule.MEDIAN, season=season, max_cloud_cover=S2_MAX_CLOUD_COVER, mask_asset="scl",
        mask_classes=S2_MASKED_SCL, harmonize=True,
    )


def _s2_latest(dataset: DatasetEnum, bands: tuple[str, ...]) -> DatasetSpec:
    """Scenes as they were seen: the latest acquisition on top, clouds and shadows kept, no cover limit.

    What a cloud mask needs (a median of SCL-masked scenes has no clouds left
    to find); harmonised like the medians, so values are reflectance x 10000.
    """
    return DatasetSpec(
        dataset=dataset, source=DatasetSource(stac_url=EARTH_SEARCH, collection="sentinel-2-l2a"),
        bands=tuple(Band(name=b, asset=_S2_ASSETS[b]) for b in bands), resolution=10.0, dtype="float32",
        nodata=0, rule=Rule.LATEST, season=Season.YEAR, harmonize=True,
    )


def _naip(dataset: DatasetEnum, resolution: float) -> DatasetSpec:
    # Earth Search's NAIP assets live in a requester-pays bucket.
    return DatasetSpec(
        dataset=dataset, source=DatasetSource(stac_url=EARTH_SEARCH, collection="naip"),
        bands=tuple(Band(name=b, asset="image", index=i + 1) for i, b in enumerate(NAIP_BANDS)),
        resolution=resolution, dtype="uint8", nodata=0, rule=Rule.LATEST, season=Season.YEAR,
        requester_pays=True,
    )


CATALOG: dict[DatasetEnum, DatasetSpec] = {
    DatasetEnum.S2_MED_WINDOWED_PIXEL: _s2(DatasetEnum.S2_MED_WINDOWED_PIXEL, S2_BANDS, Season.YEAR),
    DatasetEnum.S2_MED_WINDOWED_PIXEL_ALL_BANDS: _s2(DatasetEnum.S2_MED_WINDOWED_PIXEL_ALL_BANDS,
                                                     S2_ALL_BANDS, Season.YEAR),
    DatasetEnum.S2_LATEST_ALL_BANDS: _s2_latest(DatasetEnum.S2_LATEST_ALL_BANDS, S2_ALL_BANDS),
    DatasetEnum.S2_MED_PLANTING: _s2(DatasetEnum.S2_MED_PLANTING, S2_BANDS, Season.PLANTING),
    DatasetEnum.S2_MED_HARVEST: _s2(DatasetEnum.S2_MED_HARVEST, S2_BANDS, Season.HARVEST),
    DatasetEnum.NAIP_30CM: _naip(DatasetEnum.NAIP_30CM, 0.3),
    DatasetEnum.NAIP_60CM: _naip(DatasetEnum.NAIP_60CM, 0.6),
}


def dataset_spec(dataset: DatasetEnum,
                 overrides: dict[DatasetEnum, DatasetSource] | None = None) -> DatasetSpec:
    """The catalog entry, with its source replaced by the config's ``datasets`` entry if any."""
    spec = CATALOG[dataset]
    override = (overrides or {}).get(dataset)
    if override is None:
        return spec
    if override.geoparquet:
        return spec.model_copy(update={"source": override})
    # A mirror may name only its URL and keep the collection, or the other way round.
    merged = spec.source.model_copy(update=override.model_dump(exclude_none=True))
    return spec.model_copy(update={"source": merged})


# Season windows: (first month, last month) within one calendar year, by
# hemisphere and climate band of the AOI's centroid latitude.
#   tropical   |lat| < 23.5: planting at the onset of the main rainy season,
#              harvest at its end (north: Jun-Aug / Oct-Dec; south: Nov-Dec / Mar-May);
#   temperate  23.5 <= |lat| < 50: spring sowing and autumn harvest
#              (north: Apr-Jun / Sep-Nov; south, six months on: Oct-Dec / Mar-May);
#   boreal     |lat| >= 50: a short season (north: May-Jun / Aug-Sep; south: Nov-Dec / Feb-Mar).
# Windows stay inside a calendar year so each yearly slice has its own.
TROPIC, BOREAL = 23.5, 50.0
SEASONS: dict[tuple[str, str], dict[Season, tuple[int, int]]] = {
    ("north", "tropical"): {Season.PLANTING: (6, 8), Season.HARVEST: (10, 12)},
    ("north", "temperate"): {Season.PLANTING: (4, 6), Season.HARVEST: (9, 11)},
    ("north", "boreal"): {Season.PLANTING: (5, 6), Season.HARVEST: (8, 9)},
    ("south", "tropical"): {Season.PLANTING: (11, 12), Season.HARVEST: (3, 5)},
    ("south", "temperate"): {Season.PLANTING: (10, 12), Season.HARVEST: (3, 5)},
    ("south", "boreal"): {Season.PLANTING: (11, 12), Season.HARVEST: (2, 3)},
}


def climate_zone(latitude: float) -> tuple[str, str]:
    """(hemisphere, climate band) of a latitude; the equator counts as north."""
    band = "tropical" if abs(latitude) < TROPIC else "temperate" if abs(latitude) < BOREAL else "boreal"
    return ("north" if latitude >= 0 else "south"), band


def season_window(season: Season, year: int, latitude: float) -> tuple[date, date]:
    """First and last day of ``season`` in ``year`` at ``latitude``."""
    if season is Season.YEAR:
        return date(year, 1, 1), date(year, 12, 31)
    first, last = SEASONS[climate_zone(latitude)][season]
    return date(year, first, 1), date(year, last, calendar.monthrange(year, last)[1])


def yearly_windows(season: Season, start: date, end: date, latitude: float) -> list[tuple[int, date, date]]:
    """(year, first day, last day) of each calendar year in [start, end], clipped to it.

    Years whose window falls outside [start, end] are left out.
    """
    out = []
    for year in range(start.year, end.year + 1):
        first, last = season_window(season, year, latitude)
        first, last = max(first, start), min(last, end)
        if first <= last:
            out.append((year, first, last))
    return out
