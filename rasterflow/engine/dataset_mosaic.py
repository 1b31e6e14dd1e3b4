"""Planning build_mosaic: named datasets over an AOI to composite jobs.

Each dataset resolves to a tile index of scenes per yearly time slot
(``engine.stac``) and a compositing rule (``engine.catalog``); from there the
plan is build_gti_mosaic's: one store per AOI geometry on a grid snapped to
the resolution, partitions of whole shards, and per partition and slot only
the scenes whose footprint touches it. Several datasets share one grid and one
store, their bands named ``<dataset>:<band>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date
from typing import Any

import geopandas as gpd
import numpy as np
from pydantic import BaseModel, ConfigDict
from rasterio.crs import CRS

from .. import __version__
from ..config import DatasetSource
from ..enums import DatasetEnum
from ..errors import InvalidParameterError
from ..params import BuildMosaicParams
from . import uris
from .catalog import DatasetSpec, Rule, dataset_spec, season_window, yearly_windows
from .composite import CompositeJob, DatasetPart, Scene, check_stack
from .fingerprint import code_fingerprint, stable_hash
from .grid import reproject_geometry, snapped_grid
from .index import store_row
from .mosaic import MosaicPlan, StorePlan, _segment, aoi_partitions
from .partitions import shard_shape
from .stac import search_dataset
from .store import StoreSpec
from .tileindex import read_vector

WORKFLOW = "build-mosaic"
METRES_PER_DEGREE = 111_320.0  # at the equator; native resolutions in a geographic CRS


class SceneIndex(BaseModel):
    """The search result the plan works from: per dataset, per year, the usable scenes."""

    model_config = ConfigDict(frozen=True)

    specs: list[DatasetSpec]
    years: list[int]
    scenes: dict[str, dict[int, list[Scene]]]  # dataset value -> year -> scenes, oldest first
    footprints: dict[str, dict[str, str]]  # dataset value -> scene id -> footprint hex WKB (EPSG:4326)


class CompositeStorePlan(StorePlan):
    jobs: list[CompositeJob]


class DatasetMosaicPlan(MosaicPlan):
    """build-gti-mosaic's plan, with composite jobs in place of tile-mosaic jobs."""

    stores: list[CompositeStorePlan]


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


def search_catalog(params: BuildMosaicParams, overrides: dict[DatasetEnum, DatasetSource] | None,
                   storage_options_for: Callable[[str], dict[str, Any]] = lambda uri: {}) -> SceneIndex:
    """Search every dataset's source over the AOI; errors name the dataset, window and area."""
    aoi = read_vector(params.aoi, "aoi", storage_options_for(params.aoi)).to_crs("EPSG:4326")
    area = aoi.union_all()
    latitude = area.centroid.y
    specs = [dataset_spec(d, overrides) for d in params.datasets]
    years: set[int] = set()
    scenes: dict[str, dict[int, list[Scene]]] = {}
    footprints: dict[str, dict[str, str]] = {}
    for spec in specs:
        windows = _windows(spec, params.start, params.end, latitude)
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


def _dtype_and_nodata(specs: list[DatasetSpec]) -> tuple[str, float]:
    dtype = str(np.result_type(*[np.dtype(s.dtype) for s in specs]))
    if np.issubdtype(dtype, np.floating):
        return dtype, math.nan
    return dtype, float(specs[0].nodata)


def _resolution(params: BuildMosaicParams, specs: list[DatasetSpec], dst_crs: CRS) -> tuple[float, float]:
    if params.resolution is not None:
        return params.resolution, params.resolution
    metres = min(s.resolution for s in specs)
    res = metres / METRES_PER_DEGREE if dst_crs.is_geographic else metres
    return res, res


def plan_dataset_mosaic(
    params: BuildMosaicParams,
    found: SceneIndex,
    output_root: str,
    storage_options_for: Callable[[str], dict[str, Any]] = lambda uri: {},
) -> DatasetMosaicPlan:
    aoi = read_vector(params.aoi, "aoi", storage_options_for(params.aoi))
    dst_crs = CRS.from_epsg(params.crs_epsg)
    res = _resolution(params, found.specs, dst_crs)
    dtype, nodata = _dtype_and_nodata(found.specs)
    bands = [b for spec in found.specs for b in spec.output_bands]
    offsets = np.cumsum([0] + [len(s.output_bands) for s in found.specs]).tolist()
    times = [f"{year}-01-01T00:00:00" for year in found.years]

    # Scene footprints in the target CRS, grown by a pixel so edge pixels still read them.
    reach = max(res)
    footprints = {
        prefix: {sid: reproject_geometry(_densified(h), "EPSG:4326", dst_crs).buffer(reach) for sid, h in fps.items()}
        for prefix, fps in found.footprints.items()
    }
    fingerprint_inputs = {
        "params": params.flow_parameters(),
        "sources": [s.source.describe() for s in found.specs],
        "scenes": {p: {y: [s.model_dump() for s in sc] for y, sc in by.items()} for p, by in found.scenes.items()},
        "aoi": [g.wkb_hex for g in aoi.geometry],
        "aoi_crs": aoi.crs.to_string(),
        "code": code_fingerprint(),
    }
    request_id = stable_hash(fingerprint_inputs)
    output_dir = uris.join(output_root, WORKFLOW, request_id[:16])
    bytes_per_pixel = len(bands) * np.dtype(dtype).itemsize

    stores = []
    for i, geom in enumerate(aoi.geometry):
        geom_dst = reproject_geometry(geom.segmentize(_segment(geom)), aoi.crs, dst_crs)
        grid = snapped_grid(geom_dst.bounds, res, dst_crs.to_wkt())
        shard = shard_shape(grid.height, grid.width, bytes_per_pixel, params.xy_chunksize, params.shard_size_bytes)
        spec = StoreSpec(uri=uris.join(output_dir, f"aoi-{i}.zarr"), grid=grid, bands=bands, times=times,
                         dtype=dtype, nodata=nodata, shard=shard, skip_xy_coords=params.skip_xy_coords)
        store_fp = stable_hash([request_id, i])
        jobs = []
        for window, wgrid, wbox, mask in aoi_partitions(grid, geom_dst, shard, bytes_per_pixel, params.shard_size_bytes):
            for t, year in enumerate(found.years):
                parts = []
                for ds, offset in zip(found.specs, offsets):
                    touching = [s for s in found.scenes[ds.prefix].get(year, [])
                                if footprints[ds.prefix][s.id].intersects(wbox)]
                    if touching:
                        if ds.rule is Rule.MEDIAN:
                            check_stack(ds, len(touching), wgrid.width)  # fails here, before any store exists
                        parts.append(DatasetPart(spec=ds, scenes=touching, band_offset=offset))
                if parts:
                    jobs.append(CompositeJob(
                        key=f"{store_fp[:16]}-t{t}-{window.id}", store_uri=spec.uri, time_index=t, window=window,
                        grid=wgrid, n_bands=len(bands), parts=parts, dtype=dtype, nodata=nodata, mask_wkb=mask,
                    ))
        stores.append(CompositeStorePlan(spec=spec, fingerprint=store_fp, aoi_index=i, jobs=jobs,
                                         footprint_wkb=grid.footprint("EPSG:4326").wkb_hex))

    provenance = {
        "workflow": WORKFLOW,
        "rasterflow_version": __version__,
        "parameters": params.flow_parameters(),
        "inputs": {
            "aoi": params.aoi,
            "datasets": {s.prefix: {"source": s.source.describe(),
                                    "scenes": sorted({sc.id for sc_list in found.scenes[s.prefix].values()
                                                      for sc in sc_list})}
                         for s in found.specs},
        },
        "request_id": request_id,
    }
    return DatasetMosaicPlan(workflow=WORKFLOW, output_dir=output_dir,
                             index_uri=uris.join(output_dir, "index.parquet"), stores=stores, provenance=provenance)


def _densified(hex_wkb: str):
    from shapely import wkb

    geom = wkb.loads(bytes.fromhex(hex_wkb))
    return geom.segmentize(_segment(geom))


def index_rows(plan: DatasetMosaicPlan) -> list[dict[str, Any]]:
    """One index row per store, with the datasets it holds."""
    datasets = list(plan.provenance["inputs"]["datasets"])
    return [store_row(sp.spec, plan.workflow, sp.footprint_wkb, aoi_index=sp.aoi_index, datasets=datasets)
            for sp in plan.stores]
