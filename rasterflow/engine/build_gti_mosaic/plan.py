"""Planning a mosaic: from a tile index, an AOI and a request to shard jobs.

Everything a user can get wrong is checked here, before anything is written:
the index and AOI must be readable, columns must exist, tiles must overlap the
AOI, carry the bands and a nodata value. One store per AOI geometry, on a grid
snapped to the resolution; partitions of whole shards that touch the AOI,
each naming only the tiles whose footprint reaches it.

build_mosaic plans its stores the same way (``aoi_stores``, ``MosaicPlan``):
a named dataset is a tile index of scenes plus a compositing rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from rasterio.crs import CRS

from ...enums import ResamplingMethod
from ...errors import InvalidParameterError
from .. import uris
from ..grid import Grid, grid_crs, reproject_geometry, shared_anchor, snapped_grid, source_resolution
from ..index import store_row
from ..partitions import ShardShape, Window, aoi_partitions, shard_shape
from ..plan import PlanReport, Rate, StorePlan, StoresPlan
from ..provenance import output_dir, provenance, request_id, stable_hash
from ..store import StoreSpec
from ..vectors import densified, read_vector
from ..warp import TileRead, gdal_scale
from .query import apply_query
from .request import BuildGtiMosaicRequest
from .tiles import TileInfo, band_indexes, inspect_tiles

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
    resampling: ResamplingMethod
    requester_pays: bool = False
    mask_wkb: str | None = None  # AOI part inside the window (hex WKB), None = no mask needed
    warp_error_threshold: float = 0.0  # gdalwarp's -et
    store_width: int | None = None  # the warp lattice ends at the store's edge


class MosaicStorePlan(StorePlan):
    """One store per AOI geometry: ``aoi_index`` is its row in the AOI file."""

    aoi_index: int
    jobs: list[ShardJob]


class MosaicPlan(StoresPlan):
    stores: list[MosaicStorePlan]  # type: ignore[assignment]  # narrower store type

    # Measured on the bundled samples (benchmarks/dry_run_estimates.py); unit: output pixels x bands.
    RATE: ClassVar[Rate] = Rate(run_seconds=1.5, task_seconds=0.08, megapixels_per_second=25.0)

    def index_rows(self) -> list[dict[str, Any]]:
        return [store_row(sp.spec, self.workflow, sp.footprint_wkb, aoi_index=sp.aoi_index,
                          **self.index_columns())
                for sp in self.stores]

    def index_columns(self) -> dict[str, Any]:
        """Columns of the workflow's own, the same for every row."""
        return {}

    def sources_read(self, job: Any) -> int:
        """Input rasters (of the store's bands) a job reads: its tiles."""
        return len(job.tiles)

    def report(self, workers: int) -> PlanReport:
        """What the run would do, for a dry run: one build-shard task per partition and time slot."""
        n_jobs = sum(len(s.jobs) for s in self.stores)
        pixels = written = read = 0
        for store in self.stores:
            bands, itemsize = len(store.spec.bands), np.dtype(store.spec.dtype).itemsize
            for job in store.jobs:
                px = job.window.shape[0] * job.window.shape[1] * bands
                pixels += px
                written += px * itemsize
                read += px * itemsize * self.sources_read(job)
        n = len(self.stores)
        return self.reported(
            self.RATE, workers, tasks={"build-shard": n_jobs, "create-store": n, "commit-store": n},
            parallel=n_jobs, pixels=pixels, bytes_read=read, bytes_written=written, inputs=self.input_uris(),
            stores=[s.spec for s in self.stores], answer=self.index_uri,
        )

    def input_uris(self) -> list[str]:
        inputs = self.provenance["inputs"]
        return [inputs["gti"], inputs["aoi"], *inputs["tiles"]]


class AoiStore(NamedTuple):
    """What ``aoi_stores`` gives per AOI geometry: its store, and the geometry on the store's grid."""

    aoi_index: int
    spec: StoreSpec
    fingerprint: str
    geometry: Any  # shapely, in the store's CRS


def aoi_stores(aoi, dst_crs: CRS, res: tuple[float, float], anchor: tuple[float, float], output: str,
               request: str, *, bands: list[str], times: list[str | None], dtype: str, nodata: float,
               chunk: int, shard_size_bytes: int, skip_xy_coords: bool) -> Iterator[AoiStore]:
    """One store per geometry of ``aoi`` (a GeoDataFrame), on a grid snapped to ``res`` from ``anchor``."""
    bytes_per_pixel = len(bands) * np.dtype(dtype).itemsize
    for i, geom in enumerate(aoi.geometry):
        geom_dst = reproject_geometry(densified(geom), aoi.crs, dst_crs)
        grid = snapped_grid(geom_dst.bounds, res, dst_crs.to_wkt(), anchor)
        shard = shard_shape(grid.height, grid.width, bytes_per_pixel, chunk, shard_size_bytes)
        spec = StoreSpec(uri=uris.join(output, f"aoi-{i}.zarr"), grid=grid, bands=list(bands), times=times,
                         dtype=dtype, nodata=nodata, shard=shard, skip_xy_coords=skip_xy_coords)
        yield AoiStore(aoi_index=i, spec=spec, fingerprint=stable_hash([request, i]), geometry=geom_dst)


def store_partitions(store: AoiStore,
                     shard_size_bytes: int) -> Iterator[tuple[Window, Grid, Any, str | None]]:
    """The partitions of ``store`` that touch its AOI geometry (``partitions.aoi_partitions``)."""
    spec = store.spec
    shard: ShardShape = spec.shard
    bytes_per_pixel = len(spec.bands) * np.dtype(spec.dtype).itemsize
    return aoi_partitions(spec.grid, store.geometry, shard, bytes_per_pixel, shard_size_bytes)


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
    assert nodata is not None
    info = np.finfo(dtype) if np.issubdtype(dtype, np.floating) else np.iinfo(dtype)
    if not (np.isnan(nodata) and np.issubdtype(dtype, np.floating)) and not info.min <= nodata <= info.max:
        raise InvalidParameterError("nodata", nodata, f"does not fit the tiles' data type {dtype}",
                                    f"a value in [{info.min}, {info.max}]")
    return float(nodata), dtype


def _selected_tiles(request: BuildGtiMosaicRequest, aoi, reading: uris.OptionsFor):
    """The rows of the tile index that the request selects and the AOI touches, in drawing order."""
    gti = read_vector(request.gti, "gti", reading(request.gti))
    _require_column(gti, request.location_field, "location_field")
    _require_column(gti, request.time_column, "time_column")
    _require_column(gti, request.sort_field, "sort_field")
    if request.query:
        gti = apply_query(gti, request.query)
        if gti.empty:
            raise InvalidParameterError("query", request.query, "selects no tiles from the index")
    hits = gti.geometry.intersects(aoi.to_crs(gti.crs).union_all())
    if not hits.any():
        bounds = [round(v, 6) for v in gti.to_crs("EPSG:4326").total_bounds]
        raise InvalidParameterError("aoi", request.aoi, "does not overlap any tile of the index",
                                    f"an area within the index's extent {bounds} (EPSG:4326)")
    gti = gti[hits]
    if request.sort_field:
        # GTI's rule: ascending, so the highest value is drawn last, on top.
        gti = gti.sort_values(request.sort_field, kind="stable", na_position="first")
    return gti


def _tile_reads(infos: list[TileInfo], bands: list[str]) -> list[TileRead]:
    reads = []
    for info in infos:
        idx = band_indexes(info, bands)
        if idx is None:
            raise InvalidParameterError(
                "bands", bands, f"not all present in tile {info.uri}",
                f"band descriptions of that tile: {list(info.descriptions)}",
            )
        reads.append(TileRead(uri=info.uri, band_indexes=idx, nodata=info.nodata))
    return reads


def _slots(gti, time_column: str | None, n: int) -> tuple[list[int], list[str | None]]:
    """The time slot of each tile, and the slots' ISO timestamps (one None slot without a column)."""
    if not time_column:
        return [0] * n, [None]
    stamps = _time_slots(gti[time_column], "time_column")
    slots = sorted(stamps.unique())
    return [slots.index(s) for s in stamps], [pd.Timestamp(s).isoformat() for s in slots]


def plan_gti_mosaic(
    request: BuildGtiMosaicRequest, output_root: str, storage_options_for: uris.OptionsFor = uris.no_options
) -> MosaicPlan:
    uris.check_output_root(output_root, storage_options_for(output_root))

    def reading(uri: str) -> dict[str, Any]:
        return uris.with_requester_pays(uri, storage_options_for(uri), request.requester_pays)

    aoi = read_vector(request.aoi, "aoi", reading(request.aoi))
    gti = _selected_tiles(request, aoi, reading)
    base = uris.parent(request.gti)
    locations = [uris.resolve_location(str(loc), base) for loc in gti[request.location_field]]
    infos = inspect_tiles(locations, reading(locations[0]), request.requester_pays)
    reads = _tile_reads(infos, request.bands)
    nodata, dtype = _nodata_and_dtype(infos, request.nodata)

    assert request.output_crs is not None  # a default when neither crs_epsg nor target_crs is given
    dst_crs = grid_crs(request.output_crs)
    natives = [source_resolution(t.crs, t.transform, t.width, t.height, dst_crs) for t in infos]
    if request.resolution is not None:
        res = (request.resolution, request.resolution)
    else:  # the finest per axis, as gdalwarp picks it
        res = (min(n[0] for n in natives), min(n[1] for n in natives))
    anchor = shared_anchor([(t.crs, t.transform) for t in infos], dst_crs, res)
    slot_of, times = _slots(gti, request.time_column, len(reads))

    # Footprints in the target CRS, grown by the kernel's reach so a window that
    # only needs a tile's edge pixels for interpolation still reads that tile.
    reach = (request.resampling.kernel_radius + 1) * max(res)
    footprints = [reproject_geometry(densified(geom), gti.crs, dst_crs).buffer(reach)
                  for geom in gti.geometry]
    reads = [r.model_copy(update={"bounds": fp.bounds, "scale": gdal_scale(n, res)})
             for r, fp, n in zip(reads, footprints, natives, strict=True)]

    rid = request_id(params=request.fingerprint_parameters(), tiles=[(t.uri, t.fingerprint) for t in infos],
                     aoi=[g.wkb_hex for g in aoi.geometry], aoi_crs=aoi.crs.to_string())
    out = output_dir(output_root, WORKFLOW, rid)
    stores = []
    for store in aoi_stores(aoi, dst_crs, res, anchor, out, rid, bands=request.bands, times=times,
                            dtype=dtype, nodata=nodata, chunk=request.xy_chunksize,
                            shard_size_bytes=request.shard_size_bytes, skip_xy_coords=request.skip_xy_coords):
        jobs = [
            ShardJob(key=f"{store.fingerprint[:16]}-t{t}-{window.id}", store_uri=store.spec.uri, time_index=t,
                     window=window, grid=wgrid, tiles=tiles, dtype=dtype, nodata=nodata,
                     resampling=request.resampling, requester_pays=request.requester_pays, mask_wkb=mask,
                     warp_error_threshold=request.warp_error_threshold, store_width=store.spec.grid.width)
            for window, wgrid, wbox, mask in store_partitions(store, request.shard_size_bytes)
            for t in range(len(times))
            if (tiles := [r for r, s, fp in zip(reads, slot_of, footprints, strict=True)
                          if s == t and fp.intersects(wbox)])
        ]
        footprint = store.spec.grid.footprint("EPSG:4326").wkb_hex
        stores.append(MosaicStorePlan(spec=store.spec, fingerprint=store.fingerprint,
                                      aoi_index=store.aoi_index, jobs=jobs, footprint_wkb=footprint))

    inputs = {"gti": request.gti, "aoi": request.aoi, "tiles": [t.uri for t in infos]}
    return MosaicPlan(workflow=WORKFLOW, request_id=rid, output_dir=out, stores=stores,
                      provenance=provenance(WORKFLOW, request.fingerprint_parameters(), inputs, rid))
