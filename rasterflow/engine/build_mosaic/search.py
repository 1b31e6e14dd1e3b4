"""search-catalog: every dataset's source searched over the AOI, per yearly window.

The answer, a ``SceneIndex``, is what the plan works from: per dataset and
year, the usable scenes (a tile index of scenes, ``stac.tile_index``) and their
footprints. Errors name the dataset, the window and the area.
"""

from __future__ import annotations

from datetime import date

import geopandas as gpd
from pydantic import BaseModel, ConfigDict

from ...enums import DatasetEnum
from ...errors import InvalidParameterError
from .. import uris
from ..vectors import read_aoi
from .catalog import DatasetSource, DatasetSpec, dataset_spec, season_window, yearly_windows
from .composite import Scene
from .request import BuildMosaicRequest
from .stac import search_dataset


class SceneIndex(BaseModel):
    """The search result the plan works from: per dataset, per year, the usable scenes."""

    model_config = ConfigDict(frozen=True)

    specs: list[DatasetSpec]
    years: list[int]
    scenes: dict[str, dict[int, list[Scene]]]  # dataset value -> year -> scenes, oldest first
    footprints: dict[str, dict[str, str]]  # dataset value -> scene id -> footprint hex WKB (EPSG:4326)


def _windows(spec: DatasetSpec, start: date, end: date, latitude: float) -> list[tuple[int, date, date]]:
    windows = yearly_windows(spec.season, start, end, latitude)
    if not windows:
        first, last = season_window(spec.season, start.year, latitude)
        raise InvalidParameterError(
            "start", start.isoformat(), f"the {spec.season.value} window of {spec.prefix} at latitude "
            f"{latitude:.2f} ({first:%b %d}..{last:%b %d} each year) does not overlap {start}..{end}",
            "a period that includes that window (docs/workflows.md, season windows)",
        )
    return windows


def search_catalog(request: BuildMosaicRequest, overrides: dict[DatasetEnum, DatasetSource] | None,
                   storage_options_for: uris.OptionsFor = uris.no_options) -> SceneIndex:
    """Search every dataset's source over the AOI; errors name the dataset, window and area."""
    aoi = read_aoi(request.aoi, storage_options_for(request.aoi)).to_crs("EPSG:4326")
    area = aoi.union_all()
    latitude = area.centroid.y
    specs = [dataset_spec(d, overrides) for d in request.datasets]
    years: set[int] = set()
    scenes: dict[str, dict[int, list[Scene]]] = {}
    footprints: dict[str, dict[str, str]] = {}
    for spec in specs:
        windows = _windows(spec, request.start, request.end, latitude)
        years.update(y for y, _, _ in windows)
        found = search_dataset(spec, area, windows, storage_options_for(spec.source.geoparquet or ""))
        scenes[spec.prefix] = {year: _scenes(spec, frame) for year, frame in found.items()}
        footprints[spec.prefix] = {
            row.id: row.geometry.wkb_hex for frame in found.values() for row in frame.itertuples()
        }
    return SceneIndex(specs=specs, years=sorted(years), scenes=scenes, footprints=footprints)


def _scenes(spec: DatasetSpec, frame: gpd.GeoDataFrame) -> list[Scene]:
    href_cols = [c for c in frame.columns if c.startswith("href:")]
    return [
        Scene(id=row["id"], datetime=row["datetime"].isoformat(), offset=float(row["offset"]),
              hrefs={c.removeprefix("href:"): row[c] for c in href_cols})
        for row in frame.to_dict("records")
    ]
