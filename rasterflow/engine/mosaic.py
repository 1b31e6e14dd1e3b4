"""Planning a mosaic: from a tile index, an AOI and parameters to shard jobs.

Everything a user can get wrong is checked here, before anything is written:
the index and AOI must be readable, columns must exist, tiles must overlap the
AOI, carry the bands and a nodata value. The plan is plain data (pydantic), so
it crosses thread, process and Dask boundaries and is cheap to log.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from rasterio.crs import CRS
from shapely import wkb
from shapely.geometry import box

from .. import __version__
from ..errors import InvalidParameterError
from ..params import BuildGtiMosaicParams
from . import uris
from .fingerprint import code_fingerprint, stable_hash
from .grid import Grid, native_resolution, reproject_geometry, shared_anchor, snapped_grid
from .index import store_row
from .partitions import Window, partition_windows, shard_shape
from .query import apply_query
from .store import StoreSpec
from .tileindex import TileInfo, band_indexes, inspect_tiles, read_vector
from .warp import TileRead

WORKFLOW = "build-gti-mosaic"


class ShardJob(BaseModel):
    """One partition of one store and time slot: the unit of a build-shard task."""

    model_config = ConfigDict(frozen=True)

    key: str  # deterministic: store fingerprint + time slot + window
    store_uri: str
    time_index: int
    window: Window
    grid: Grid  # the window's own grid
    tiles: list[TileRead]  # ascending priority: the last one is on top
    dtype: str
    nodata: float
    resampling: str
    requester_pays: bool = False
    mask_wkb: str | None = None  # AOI part inside the window (hex WKB), None = no mask needed


class StorePlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: StoreSpec
    fingerprint: str
    aoi_index: int
    jobs: list[ShardJob]
    footprint_wkb: str  # EPSG:4326, hex WKB


class MosaicPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    workflow: str
    output_dir: str
    index_uri: str
    stores: list[StorePlan]
    provenance: dict[str, Any]

    @property
    def n_jobs(self) -> int:
        return sum(len(s.jobs) for s in self.stores)


def _require_column(frame: pd.DataFrame, column: str | None, param: str) -> None:
    if column is not None and column not in frame.columns:
        cols = [str(c) for c in frame.columns if c != frame.geometry.name]
        raise InvalidParameterError(param, column, "is not a column of the tile index", f"one of {cols}")


def _time_slots(values: pd.Series, param: str) -> pd.Series:
    """Timestamps of a time column: datetimes as they are, ints as years, strings parsed."""
    try:
        if pd.api.types.is_integer_dtype(values):
            return pd.to_datetime(values.astype(str), format="%Y")
        return pd.to_datetime(values, utc=False)
    except (ValueError, TypeError) as exc:
        raise InvalidParameterError(param, values.name, f"values cannot be read as dates ({exc})",
                                    "a datetime, date, ISO string or integer-year column") from None


def _nodata_and_dtype(tiles: list[TileInfo], nodata: float | None) -> tuple[float, str]:
    dtype = str(np.result_type(*[np.dtype(t.dtype) for t in tiles]))
    if nodata is None:
        missing = [t.uri for t in tiles if t.nodata is None]
        if missing:
            raise InvalidParameterError(
                "nodata", None, f"{len(missing)} tile(s) declare no nodata value, e.g. {missing[0]}",
                "a number to treat as nodata in the tiles and the output",
            )
        nodata = tiles[-1].nodata
    info = np.finfo(dtype) if np.issubdtype(dtype, np.floating) else np.iinfo(dtype)
    if not (np.isnan(nodata) and np.issubdtype(dtype, np.floating)) and not info.min <= nodata <= info.max:
        raise InvalidParameterError("nodata", nodata, f"does not fit the tiles' data type {dtype}",
                                    f"a value in [{info.min}, {info.max}]")
    return float(nodata), dtype


def plan_gti_mosaic(
    params: BuildGtiMosaicParams,
    output_root: str,
    storage_options_for: Callable[[str], dict[str, Any]] = lambda uri: {},
) -> MosaicPlan:
    uris.check_output_root(output_root, storage_options_for(output_root))

    def reading(uri: str) -> dict[str, Any]:
        return uris.with_requester_pays(uri, storage_options_for(uri), params.requester_pays)

    gti = read_vector(params.gti, "gti", reading(params.gti))
    _require_column(gti, params.location_field, "location_field")
    _require_column(gti, params.time_column, "time_column")
    _require_column(gti, params.sort_field, "sort_field")
    if params.query:
        gti = apply_query(gti, params.query)
        if gti.empty:
            raise InvalidParameterError("query", params.query, "selects no tiles from the index")

    aoi = read_vector(params.aoi, "aoi", reading(params.aoi))
    aoi_in_index = aoi.to_crs(gti.crs)
    hits = gti.geometry.intersects(aoi_in_index.union_all())
    if not hits.any():
        bounds = [round(v, 6) for v in gti.to_crs("EPSG:4326").total_bounds]
        raise InvalidParameterError("aoi", params.aoi, "does not overlap any tile of the index",
                                    f"an area within the index's extent {bounds} (EPSG:4326)")
    gti = gti[hits]
    if params.sort_field:
        # GTI's rule: ascending, so the highest value is drawn last, on top.
        gti = gti.sort_values(params.sort_field, kind="stable", na_position="first")

    base = uris.parent(params.gti)
    locations = [uris.resolve_location(str(loc), base) for loc in gti[params.location_field]]
    infos = inspect_tiles(locations, reading(locations[0]), params.requester_pays)
    reads: list[TileRead] = []
    for info in infos:
        idx = band_indexes(info, params.bands)
        if idx is None:
            raise InvalidParameterError(
                "bands", params.bands, f"not all present in tile {info.uri}",
                f"band descriptions of that tile: {[d for d in info.descriptions]}",
            )
        reads.append(TileRead(uri=info.uri, band_indexes=idx, nodata=info.nodata))
    nodata, dtype = _nodata_and_dtype(infos, params.nodata)

    dst_crs = CRS.from_epsg(params.crs_epsg)
    if params.resolution is not None:
        res = (params.resolution, params.resolution)
    else:
        res = native_resolution([(t.crs, t.transform, t.width, t.height) for t in infos], dst_crs)
    anchor = shared_anchor([(t.crs, t.transform) for t in infos], dst_crs, res)

    if params.time_column:
        stamps = _time_slots(gti[params.time_column], "time_column")
        slots = sorted(stamps.unique())
        slot_of = [slots.index(s) for s in stamps]
        times: list[str | None] = [pd.Timestamp(s).isoformat() for s in slots]
    else:
        slot_of, times = [0] * len(reads), [None]

    # Footprints in the target CRS, grown by the kernel's reach so a window that
    # only needs a tile's edge pixels for interpolation still reads that tile.
    reach = (params.resampling.kernel_radius + 1) * max(res)
    footprints = [
        reproject_geometry(geom.segmentize(_segment(geom)), gti.crs, dst_crs).buffer(reach)
        for geom in gti.geometry
    ]

    fingerprint_inputs = {
        "params": params.flow_parameters(),
        "tiles": [(t.uri, t.fingerprint) for t in infos],
        "aoi": [g.wkb_hex for g in aoi.geometry],
        "aoi_crs": aoi.crs.to_string(),
        "code": code_fingerprint(),
    }
    request_id = stable_hash(fingerprint_inputs)
    output_dir = uris.join(output_root, WORKFLOW, request_id[:16])
    bytes_per_pixel = len(params.bands) * np.dtype(dtype).itemsize

    stores = []
    for i, geom in enumerate(aoi.geometry):
        geom_dst = reproject_geometry(geom.segmentize(_segment(geom)), aoi.crs, dst_crs)
        grid = snapped_grid(geom_dst.bounds, res, dst_crs.to_wkt(), anchor)
        shard = shard_shape(grid.height, grid.width, bytes_per_pixel, params.xy_chunksize, params.shard_size_bytes)
        spec = StoreSpec(
            uri=uris.join(output_dir, f"aoi-{i}.zarr"), grid=grid, bands=list(params.bands), times=times,
            dtype=dtype, nodata=nodata, shard=shard, skip_xy_coords=params.skip_xy_coords,
        )
        store_fp = stable_hash([request_id, i])
        jobs = []
        for window, wgrid, wbox, mask in aoi_partitions(grid, geom_dst, shard, bytes_per_pixel, params.shard_size_bytes):
            for t, _ in enumerate(times):
                tiles = [r for r, s, fp in zip(reads, slot_of, footprints) if s == t and fp.intersects(wbox)]
                if not tiles:
                    continue
                jobs.append(ShardJob(
                    key=f"{store_fp[:16]}-t{t}-{window.id}", store_uri=spec.uri, time_index=t,
                    window=window, grid=wgrid, tiles=tiles, dtype=dtype, nodata=nodata,
                    resampling=params.resampling.value, requester_pays=params.requester_pays, mask_wkb=mask,
                ))
        footprint = grid.footprint("EPSG:4326")
        stores.append(StorePlan(spec=spec, fingerprint=store_fp, aoi_index=i, jobs=jobs, footprint_wkb=footprint.wkb_hex))

    provenance = {
        "workflow": WORKFLOW,
        "rasterflow_version": __version__,
        "parameters": params.flow_parameters(),
        "inputs": {"gti": params.gti, "aoi": params.aoi, "tiles": [t.uri for t in infos]},
        "request_id": request_id,
    }
    return MosaicPlan(
        workflow=WORKFLOW, output_dir=output_dir, index_uri=uris.join(output_dir, "index.parquet"),
        stores=stores, provenance=provenance,
    )


def aoi_partitions(grid: Grid, aoi, shard, bytes_per_pixel: int, shard_size_bytes: int
                   ) -> Iterator[tuple[Window, Grid, Any, str | None]]:
    """(window, its grid, its box, AOI mask as WKB hex or None when inside) of the partitions touching ``aoi``.

    Partitions outside the AOI are never planned: they read as the fill value,
    which is nodata. The mask is clipped to the window plus a pixel.
    """
    pixel = max(abs(grid.affine.a), abs(grid.affine.e))
    for window in partition_windows(grid.height, grid.width, shard, bytes_per_pixel, shard_size_bytes):
        wgrid = grid.window(window.row0, window.row1, window.col0, window.col1)
        wbox = box(*wgrid.bounds)
        if wbox.intersects(aoi):
            yield window, wgrid, wbox, None if aoi.contains(wbox) else aoi.intersection(wbox.buffer(pixel)).wkb_hex


def _segment(geom) -> float:
    minx, miny, maxx, maxy = geom.bounds
    return max(maxx - minx, maxy - miny, 1e-9) / 64


def build_shard(
    job: ShardJob, storage_options_for: Callable[[str], dict[str, Any]] = lambda uri: {}
) -> dict[str, Any]:
    """Render one partition and write it whole; returns a small summary."""
    from .store import write_window
    from .warp import render_window
    from ..enums import ResamplingMethod

    mask = wkb.loads(bytes.fromhex(job.mask_wkb)) if job.mask_wkb else None
    tile_options = uris.with_requester_pays(job.tiles[0].uri, storage_options_for(job.tiles[0].uri),
                                            job.requester_pays)
    data = render_window(
        job.grid, job.tiles, job.dtype, job.nodata, ResamplingMethod(job.resampling),
        mask_geometry=mask, requester_pays=job.requester_pays, storage_options=tile_options,
    )
    write_window(job.store_uri, job.time_index, job.window, data, storage_options_for(job.store_uri))
    valid = int(np.count_nonzero(data != job.nodata if not math.isnan(job.nodata) else ~np.isnan(data)))
    return {"key": job.key, "rows": job.window.shape[0], "cols": job.window.shape[1], "valid_values": valid}


def index_rows(plan: MosaicPlan) -> list[dict[str, Any]]:
    """One index row per store of the plan."""
    return [store_row(sp.spec, plan.workflow, sp.footprint_wkb, aoi_index=sp.aoi_index) for sp in plan.stores]
