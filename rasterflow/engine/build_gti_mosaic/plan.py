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

import math
from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd
import pyproj
from pydantic import BaseModel, ConfigDict
from rasterio.crs import CRS

from ...enums import ResamplingMethod
from ...errors import InputReadError, InvalidParameterError
from .. import uris
from ..grid import Grid, grid_crs, reproject_geometry, shared_anchor, snapped_grid, source_resolution
from ..index import store_row
from ..partitions import (
    ShardShape,
    Window,
    aoi_partitions,
    check_grid_size,
    check_partition_count,
    check_shard_budget,
    shard_shape,
)
from ..plan import PlanReport, Rate, StorePlan, StoresPlan
from ..provenance import output_dir, provenance, request_id, stable_hash
from ..store import StoreSpec
from ..vectors import densified, read_aoi, read_vector
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
    check_shard_budget(shard_size_bytes, chunk, bytes_per_pixel)
    for i, geom in enumerate(aoi.geometry):
        geom_dst = reproject_geometry(densified(geom), aoi.crs, dst_crs)
        grid = _checked_grid(geom_dst, res, dst_crs, anchor, i)
        shard = shard_shape(grid.height, grid.width, bytes_per_pixel, chunk, shard_size_bytes)
        check_partition_count(grid.height, grid.width, shard, bytes_per_pixel, shard_size_bytes)
        spec = StoreSpec(uri=uris.join(output, f"aoi-{i}.zarr"), grid=grid, bands=list(bands), times=times,
                         dtype=dtype, nodata=nodata, shard=shard, skip_xy_coords=skip_xy_coords)
        yield AoiStore(aoi_index=i, spec=spec, fingerprint=stable_hash([request, i]), geometry=geom_dst)


def _checked_grid(geom, res: tuple[float, float], crs: CRS, anchor: tuple[float, float], row: int) -> Grid:
    """The grid of one AOI row, refused when the CRS cannot hold the row or the resolution is off."""
    epsg = crs.to_epsg() or crs.to_string()
    if geom.is_empty or not all(np.isfinite(geom.bounds)):
        raise InvalidParameterError("crs_epsg", epsg, f"cannot represent aoi row {row} (outside the CRS's "
                                    "area of use)", "a CRS whose area of use covers the AOI")
    minx, miny, maxx, maxy = geom.bounds
    check_grid_size(math.ceil((maxy - miny) / res[1]), math.ceil((maxx - minx) / res[0]), res[0],
                    f"aoi row {row}")
    grid = snapped_grid(geom.bounds, res, crs.to_wkt(), anchor)
    if grid.width < 2 or grid.height < 2:
        axes = pyproj.CRS.from_wkt(crs.to_wkt()).axis_info
        unit = axes[0].unit_name if axes else "CRS units"
        raise InvalidParameterError(
            "resolution", res[0], f"gives a {grid.width} x {grid.height} pixel grid for aoi row {row}, whose "
            f"extent is {maxx - minx:.4g} x {maxy - miny:.4g} {unit} in EPSG:{epsg}",
            f"a pixel size in {unit}, well below the AOI's extent",
        )
    return grid


def store_partitions(store: AoiStore,
                     shard_size_bytes: int) -> Iterator[tuple[Window, Grid, Any, str | None]]:
    """The partitions of ``store`` that touch its AOI geometry (``partitions.aoi_partitions``)."""
    spec = store.spec
    shard: ShardShape = spec.shard
    bytes_per_pixel = len(spec.bands) * np.dtype(spec.dtype).itemsize
    return aoi_partitions(spec.grid, store.geometry, shard, bytes_per_pixel, shard_size_bytes)


def require_jobs(aoi_uri: str, store: AoiStore, jobs: list, what: str) -> None:
    """An AOI row that nothing covers would be a store of nodata among the outputs: name the row."""
    if not jobs:
        raise InvalidParameterError("aoi", aoi_uri, f"row {store.aoi_index} overlaps {what}, so its store "
                                    "would hold only nodata",
                                    "rows within the inputs' extent; remove that row")


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


def _locations(request: BuildGtiMosaicRequest, gti) -> list[str]:
    """The tiles' URIs from the location column, which must hold paths or URLs."""
    values = gti[request.location_field]
    odd = [v for v in values if not isinstance(v, str) or not v.strip()]
    if odd:
        raise InvalidParameterError("location_field", request.location_field,
                                    f"column holds {len(odd)} value(s) that are not tile paths, "
                                    f"e.g. {odd[0]!r}",
                                    "the index column with each tile's path or URL")
    base = uris.parent(request.gti)
    return [uris.resolve_location(v, base) for v in values]


def _inspect(request: BuildGtiMosaicRequest, locations: list[str],
             reading: uris.OptionsFor) -> list[TileInfo]:
    """The tiles' headers; a missing or broken tile is an error naming the parameter that chose it."""
    try:
        return inspect_tiles(locations, reading(locations[0]), request.requester_pays)
    except InputReadError as exc:
        if exc.transient:
            raise
        if "does not exist" in str(exc) and not _any_exists(locations, reading):
            raise InvalidParameterError(
                "location_field", request.location_field, f"names no file that exists, e.g. {exc.uri}",
                "the column whose values are the tiles' paths (relative ones resolve against the index's "
                "folder)") from None
        raise InvalidParameterError("gti", request.gti, f"selects an unusable tile: {exc}",
                                    "an index of readable, georeferenced tiles") from None


def _any_exists(locations: list[str], reading: uris.OptionsFor) -> bool:
    """Whether any tile is there: none at all means the column is wrong, not a file missing."""
    for uri in locations[:100]:
        try:
            if uris.exists(uri, reading(uri)):
                return True
        except Exception:  # noqa: BLE001 - a location fsspec cannot even parse is not a file
            continue
    return False


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

    aoi = read_aoi(request.aoi, reading(request.aoi))
    gti = _selected_tiles(request, aoi, reading)
    infos = _inspect(request, _locations(request, gti), reading)
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
        require_jobs(request.aoi, store, jobs, "no tile of the index")
        footprint = store.spec.grid.footprint("EPSG:4326").wkb_hex
        stores.append(MosaicStorePlan(spec=store.spec, fingerprint=store.fingerprint,
                                      aoi_index=store.aoi_index, jobs=jobs, footprint_wkb=footprint))

    inputs = {"gti": request.gti, "aoi": request.aoi, "tiles": [t.uri for t in infos]}
    return MosaicPlan(workflow=WORKFLOW, request_id=rid, output_dir=out, stores=stores,
                      provenance=provenance(WORKFLOW, request.fingerprint_parameters(), inputs, rid))
