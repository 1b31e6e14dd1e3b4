"""Overview pyramids in the Zarr multiscales layout (build_zarr_multiscales).

Per input store, a new Zarr v3 group (the input is only ever read)::

    <output_uri>/build-zarr-multiscales/<request id>/<name>.zarr
        zarr.json   multiscales layout, proj:/spatial: attributes, band
                    statistics, provenance and the commit marker
        0/          level 0: the input's pixels
        1/          level 1: half the resolution of level 0, same origin
        ...

Every level is a complete store of the store contract (engine/store.py), so
``xr.open_zarr(root + "/1")`` gives rioxarray its CRS and transform, and a
multiscales-aware reader picks a level by resolution from the root's
``multiscales.layout`` (``spatial:transform`` and ``spatial:shape`` per level,
zarr-conventions/multiscales v1 with zarr-conventions/spatial and geo-proj).

Level L+1 is built from level L, one task per partition of level L+1 (whole
shards); a partition reads the 2x window of level L under it, so memory is
bounded by a partition, never by the size of the area. Level 0 copies the
input (its shard objects byte for byte when ``create_store`` would write the
same array layout, else decoded and re-encoded); level 1 then reads the input
itself (the same bytes), so it need not wait for the copy, and where nothing
else waits for level 0 (see statistics) each level-1 task also copies the
level-0 shards under it: a file copy is not worth a task. The last levels,
each one partition, are one chain: one read of the level before them, every
further level halved in memory (``LevelChain``).

Statistics (engine/stats.py) are computed over level 0 by the task that first
holds its pixels. Integers of 8 and 16 bits are summarized once, as per-value
counts (level 0 when it decodes them, else level 1, which reads them anyway),
which give the moments and the histogram alike. Other types need two passes:
moments first (level 0), which fix the histogram bins, then counts (level 1,
or a count pass over level 0 for pyramids of one level).

Inputs: a rasterflow store, any georeferenced Zarr that xarray opens and
rioxarray georeferences (``_choose_variables`` says which variable is read),
or an index GeoParquet of stores (its ``location`` column).
"""

from __future__ import annotations

import bisect
import math
import shutil
import uuid
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from affine import Affine
from pydantic import BaseModel, ConfigDict

from .. import __version__
from ..enums import ResamplingMethod
from ..errors import InvalidParameterError
from ..params import BuildZarrMultiscalesParams
from . import uris
from .downsample import halve, halved_shape, valid_mask
from .fingerprint import code_fingerprint, stable_hash
from .grid import Grid
from .index import is_zarr_group, store_row, stores_of
from .partitions import ShardShape, Window, partition_windows, shard_shape
from .stats import Bins, Moments, ValueCounts, band_counts, band_moments, pack_counts, summarize, unpack_counts
from .store import (
    ATTR, COMPLETE, DATA_VAR, PROJ_CONVENTION, SPATIAL_CONVENTION, WRITING, StoreSpec, commit_store, create_store,
    open_data_array, read_marker, write_window, zarr_store,
)

WORKFLOW = "build-zarr-multiscales"
DEFAULT_CHUNK = 512
# Shards of the pyramid: the input's shard size, at most this (uncompressed).
MAX_SHARD_BYTES = 16 * 2**20
# Every task reads about the same: a level-0 partition copies up to 4 shards;
# any other partition is one shard, read from 4 shards' worth of the level before.
LEVEL0_PARTITION_SHARDS = 4
# CF marks classes with flag_values/flag_meanings; categorical_bands names some bands.
CATEGORICAL_ATTRS = ("flag_values", "flag_meanings")
CATEGORICAL_BANDS_ATTR = "categorical_bands"
# The multiscales convention's names for our kernels.
CONVENTION_METHOD = {ResamplingMethod.AVERAGE: "average", ResamplingMethod.NEAREST: "nearest",
                     ResamplingMethod.MODE: "mode"}

MULTISCALES_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/multiscales/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/multiscales/blob/v1/README.md",
    "uuid": "d35379db-88df-4056-af3a-620245f8e347",
    "name": "multiscales",
    "description": "Multiscale layout of zarr datasets",
}



class SourceSpec(BaseModel):
    """How level 0 is read from the input store."""

    model_config = ConfigDict(frozen=True)

    uri: str
    variables: list[str]  # one data variable, or several stacked as bands
    dims: list[str]  # the variables' dimensions, in storage order
    band_dim: str | None
    time_dim: str | None
    y_dim: str
    x_dim: str
    height: int
    flip_y: bool = False  # stored south-up: rows are read bottom first
    shard: ShardShape | None = None  # the input's shards when level 0 can copy them byte for byte


class LevelJob(BaseModel):
    """One partition of one level and time slot: the unit of a build-shard task."""

    model_config = ConfigDict(frozen=True)

    key: str  # deterministic: pyramid fingerprint + level + time slot + window
    level: int
    store_uri: str
    time_index: int
    window: Window
    dtype: str
    nodata: float
    methods: list[ResamplingMethod]  # per band
    tally: bool = False  # return the per-value counts of the level-0 pixels this job holds
    copy_shards: bool = False  # level 0 on the input's shards: copy their bytes when the layouts agree
    source: SourceSpec | None = None  # level 0 reads the input...
    previous_uri: str | None = None  # ...other levels the level before (level 1 may read the input),
    source_window: Window | None = None  # in this window of it
    # Level-0 copies inside source_window, done first: a file copy is not worth a task of its own.
    copies: list[LevelJob] = []


class LevelChain(BaseModel):
    """Levels of one partition each, built from one read of the level before the first.

    The coarsest levels are small: a task per level would cost more in
    orchestration and re-reads than in pixels.
    """

    model_config = ConfigDict(frozen=True)

    key: str
    jobs: list[LevelJob]  # consecutive levels, one time slot; each halves the one before


class LevelPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    level: int
    spec: StoreSpec
    fingerprint: str
    jobs: list[LevelJob]


class PyramidPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    uri: str
    fingerprint: str
    input_uri: str
    methods: list[ResamplingMethod]
    levels: list[LevelPlan]
    tail: list[LevelChain] = []  # one per time slot: levels tail_start.. built as chains
    footprint_wkb: str  # EPSG:4326, hex WKB

    @property
    def base(self) -> StoreSpec:
        return self.levels[0].spec

    @property
    def integer(self) -> bool:
        return bool(np.issubdtype(np.dtype(self.base.dtype), np.integer))

    @property
    def tally(self) -> bool:
        """Level 0 is summarized by per-value counts in one pass (8- and 16-bit integers)."""
        return tallied(self.base.dtype)

    @property
    def tail_start(self) -> int:
        return self.tail[0].jobs[0].level if self.tail else len(self.levels)

    @property
    def level0_folded(self) -> bool:
        """Level 1's partitions copy level 0's shards: level 0 has no tasks of its own."""
        return len(self.levels) > 1 and bool(self.levels[1].jobs[0].copies)

    @property
    def level1_reads_input(self) -> bool:
        """Level 1 reads the input, not the copy of it: it may run beside level 0."""
        return len(self.levels) > 1 and self.levels[0].jobs[0].copy_shards

    @property
    def needs_bins(self) -> bool:
        """Histogram counts need bins from level 0's moments first (a second pass)."""
        return not self.tally

    @property
    def needs_count_pass(self) -> bool:
        """A pyramid of one level whose level-0 tasks did not summarize it completely."""
        return len(self.levels) == 1 and not all(job.tally for job in self.levels[0].jobs)


def tallied(dtype: str) -> bool:
    dt = np.dtype(dtype)
    return bool(np.issubdtype(dt, np.integer) and dt.itemsize <= 2)


class MultiscalesPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    workflow: str
    output_dir: str
    index_uri: str
    pyramids: list[PyramidPlan]
    provenance: dict[str, Any]

    @property
    def n_levels(self) -> int:
        return max(len(p.levels) for p in self.pyramids)


# --- reading inputs --------------------------------------------------------------------------


def _open(uri: str, storage_options: dict[str, Any] | None) -> xr.Dataset:
    """The input as xarray sees it: raw values (no masking or scaling), read lazily."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated-metadata and dtype notices of foreign stores
        return xr.open_zarr(zarr_store(uri, storage_options, read_only=True), chunks=None,
                            mask_and_scale=False, decode_coords="all", consolidated=None)


def read_source(source: SourceSpec, time_index: int, window: Window,
                storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """The input's pixels of ``window`` (north-up rows) as (bands, y, x).

    Read with zarr directly: the raw stored values, as xarray gives them with
    ``mask_and_scale=False``, without opening the dataset for every partition.
    """
    rows = (slice(source.height - window.row1, source.height - window.row0) if source.flip_y
            else slice(window.row0, window.row1))
    where: dict[str, Any] = {source.y_dim: rows, source.x_dim: slice(window.col0, window.col1)}
    if source.band_dim:
        where[source.band_dim] = slice(None)
    if source.time_dim:
        where[source.time_dim] = time_index
    order = [d for d in source.dims if d != source.time_dim]  # what is left after indexing
    wanted = [order.index(d) for d in (source.band_dim, source.y_dim, source.x_dim) if d]
    store = zarr_store(source.uri, storage_options, read_only=True)
    parts = []
    for name in source.variables:
        array = zarr.open_array(store, path=name, mode="r")
        parts.append(np.transpose(array[tuple(where[d] for d in source.dims)], wanted))
    data = np.concatenate(parts) if source.band_dim else np.stack(parts)
    return data[:, ::-1] if source.flip_y else data


def _read_level(uri: str, time_index: int, window: Window, storage_options: dict[str, Any] | None) -> np.ndarray:
    array = open_data_array(uri, storage_options)
    return array[time_index, :, window.row0 : window.row1, window.col0 : window.col1]


# --- planning --------------------------------------------------------------------------------


class _Source(BaseModel):
    """What planning learns about one input store."""

    uri: str
    identity: str
    spec: SourceSpec
    grid: Grid
    bands: list[str]
    times: list[str | None]
    dtype: str
    nodata: float
    chunk: int
    shard_bytes: int
    categorical: list[str]


def _bad_store(uri: str, problem: str, valid: str | None = None) -> InvalidParameterError:
    return InvalidParameterError(
        "store", uri, problem,
        valid or "a Zarr store with a georeferenced raster variable (a rasterflow store, or one written "
        "with xarray + rioxarray), or an index GeoParquet whose 'location' column lists such stores",
    )


def input_stores(store: str, storage_options_for: Callable[[str], dict[str, Any]]) -> list[str]:
    """``store`` itself, or the ``location`` of every row of the index it names."""
    return stores_of(store, storage_options_for(store))


def store_identity(uri: str, storage_options: dict[str, Any] | None = None) -> str:
    """What changes when the store's content changes.

    A complete rasterflow store is identified by its fingerprint and generation
    (a store rebuilt gets a new generation; an identical re-run re-commits the
    same one, which changes nothing); any other store by the size and
    modification stamp of every object in it.
    """
    marker = read_marker(uri, storage_options)
    if marker and marker.get("status") == COMPLETE:
        return stable_hash([marker.get("fingerprint"), marker.get("generation")])
    fs, path = uris.filesystem(uri, storage_options)
    listing = fs.find(path, detail=True)
    stamp = lambda info: str(info.get("ETag") or info.get("mtime") or info.get("LastModified") or "")  # noqa: E731
    return stable_hash(sorted((name[len(path):], info.get("size"), stamp(info)) for name, info in listing.items()))


def _spatial_dims(da: xr.DataArray) -> tuple[str, str] | None:
    try:
        return da.rio.y_dim, da.rio.x_dim
    except Exception:  # noqa: BLE001  (rioxarray's MissingSpatialDimensionError and friends)
        return None


def _choose_variables(ds: xr.Dataset, uri: str) -> list[str]:
    """The data variable(s) holding the raster.

    ``variables`` when present (the store contract); else the only data variable
    with both spatial dimensions; else several such variables of one shape and
    type with no band dimension, each becoming a band named after it, in name
    order (Zarr keeps no order of its members). Anything else is ambiguous and
    refused.
    """
    if DATA_VAR in ds.data_vars:
        return [DATA_VAR]
    rasters = [name for name, da in ds.data_vars.items() if da.ndim >= 2 and _spatial_dims(da)]
    if not rasters:
        raise _bad_store(uri, f"has no data variable with spatial dimensions (data variables: {list(ds.data_vars)})")
    if len(rasters) == 1:
        return [str(rasters[0])]
    first = ds[rasters[0]]
    same = all(ds[n].dims == first.dims and ds[n].dtype == first.dtype for n in rasters)
    extra = set(first.dims) - set(_spatial_dims(first))
    if same and all(_is_time(ds, d) for d in extra):
        return sorted(str(n) for n in rasters)
    raise _bad_store(uri, f"has several raster variables {rasters} of different shapes or with a band dimension",
                     "a store with 'variables', a single raster variable, or same-shaped 2-D variables (read as bands)")


def _is_time(ds: xr.Dataset, dim: str) -> bool:
    return dim == "time" or (dim in ds.coords and np.issubdtype(ds[dim].dtype, np.datetime64))


def _iso(value) -> str | None:
    stamp = pd.Timestamp(value)
    return None if pd.isna(stamp) else stamp.isoformat()


def inspect_source(uri: str, storage_options: dict[str, Any]) -> _Source:
    """Everything planning needs from one input store; bad stores raise, naming ``store``."""
    if not is_zarr_group(uri, storage_options):
        raise _bad_store(uri, "is not a Zarr group (no zarr.json or .zgroup)")
    marker = read_marker(uri, storage_options)
    if marker and marker.get("status") != COMPLETE:
        raise _bad_store(uri, f"is an incomplete rasterflow store (status {marker.get('status')!r})",
                         "a complete store: re-run the workflow that writes it first")
    try:
        ds = _open(uri, storage_options)
    except Exception as exc:  # noqa: BLE001  (whatever the reader says, the store is unusable)
        raise _bad_store(uri, f"cannot be opened by xarray as a Zarr dataset ({exc})") from None
    try:
        return _describe(ds, uri, storage_options)
    finally:
        ds.close()


def _describe(ds: xr.Dataset, uri: str, storage_options: dict[str, Any]) -> _Source:
    names = _choose_variables(ds, uri)
    da = ds[names[0]]
    y_dim, x_dim = _spatial_dims(da)
    extra = [d for d in da.dims if d not in (y_dim, x_dim)]
    time_dims = [d for d in extra if _is_time(ds, d)]
    band_dims = [d for d in extra if d not in time_dims]
    if len(time_dims) > 1 or len(band_dims) > 1 or (band_dims and len(names) > 1):
        raise _bad_store(uri, f"variable {names[0]!r} has dimensions {da.dims}; expected (y, x) plus at most "
                              "one band and one time dimension")
    time_dim, band_dim = (time_dims or [None])[0], (band_dims or [None])[0]

    crs = da.rio.crs
    if crs is None:
        raise _bad_store(uri, f"variable {names[0]!r} has no CRS that rioxarray can read (no grid-mapping "
                              "variable such as spatial_ref, no crs_wkt/spatial_ref attribute)",
                         "a georeferenced store: write it with da.rio.write_crs(...) before to_zarr")
    dtype = np.dtype(da.dtype)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise _bad_store(uri, f"variable {names[0]!r} has data type {dtype}", "integer or floating-point data")
    height, width = da.sizes[y_dim], da.sizes[x_dim]
    t = da.rio.transform()
    if t.b or t.d:
        raise _bad_store(uri, f"has a rotated grid (transform {tuple(t)[:6]})", "a north-up (or south-up) grid")
    flip = t.e > 0
    if flip:  # south-up storage: describe it north-up
        t = Affine(t.a, 0.0, t.c, 0.0, -t.e, t.f + t.e * height)
    grid = Grid(crs=crs.to_wkt(), transform=tuple(t)[:6], width=width, height=height)

    if band_dim:
        labels = ds[band_dim].values if band_dim in ds.coords else np.arange(1, da.sizes[band_dim] + 1)
        bands = [str(v) for v in labels]
    else:
        bands = names
    times = [_iso(v) for v in ds[time_dim].values] if time_dim else [None]
    nodata = _nodata(da, dtype, uri)
    encoding = da.encoding
    chunks = encoding.get("chunks") or ()
    dim_index = {d: i for i, d in enumerate(da.dims)}
    cy, cx = (chunks[dim_index[y_dim]], chunks[dim_index[x_dim]]) if len(chunks) == da.ndim else (0, 0)
    chunk = cy if cy == cx and cy >= 16 else DEFAULT_CHUNK
    bytes_per_pixel = len(bands) * dtype.itemsize
    shards = encoding.get("shards")
    shard_bytes = (shards[dim_index[y_dim]] * shards[dim_index[x_dim]] * bytes_per_pixel
                   if shards and len(shards) == da.ndim else MAX_SHARD_BYTES)
    source = _Source(
        uri=uri, identity=store_identity(uri, storage_options),
        spec=SourceSpec(uri=uri, variables=names, dims=[str(d) for d in da.dims], band_dim=band_dim,
                        time_dim=time_dim, y_dim=y_dim, x_dim=x_dim, height=height, flip_y=flip),
        grid=grid, bands=bands, times=times, dtype=str(dtype), nodata=nodata, chunk=chunk,
        shard_bytes=shard_bytes, categorical=_categorical(da, bands, dtype),
    )
    if names == [DATA_VAR] and not flip and shards and len(shards) == da.ndim and cy == cx == chunk:
        shard = ShardShape(chunk=chunk, rows=shards[dim_index[y_dim]], cols=shards[dim_index[x_dim]])
        if _layout_of_level0(source, shard) == _layout(zarr.open_array(
                zarr_store(uri, storage_options, read_only=True), path=DATA_VAR, mode="r")):
            source = source.model_copy(update={"spec": source.spec.model_copy(update={"shard": shard})})
    return source


def _layout_of_level0(source: _Source, shard: ShardShape) -> dict[str, Any]:
    """The layout ``create_store`` gives a level 0 on ``shard``: asked of it, in memory.

    When it is the input's own, level 0 copies the input's shard objects instead
    of decoding and re-encoding every pixel.
    """
    probe = StoreSpec(uri=f"memory://rasterflow-layout-probe/{uuid.uuid4().hex}", grid=source.grid,
                      bands=source.bands, times=source.times, dtype=source.dtype, nodata=source.nodata,
                      shard=shard, skip_xy_coords=True)
    try:
        create_store(probe, "probe", {})
        return _layout(zarr.open_array(zarr_store(probe.uri), path=DATA_VAR, mode="r"))
    finally:
        uris.remove(probe.uri)


def _nodata(da: xr.DataArray, dtype: np.dtype, uri: str) -> float:
    """The declared nodata; else NaN for floats and the Zarr fill value for integers.

    Integers have no NaN, and the fill value is what a reader gets for chunks
    never written: the store contract's nodata, and the best guess elsewhere.
    """
    nodata = da.rio.nodata
    if nodata is None:
        if np.issubdtype(dtype, np.floating):
            return math.nan
        nodata = da.encoding.get("fill_value", 0)
    nodata = float(nodata)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if math.isnan(nodata) or not info.min <= nodata <= info.max or nodata != int(nodata):
            raise _bad_store(uri, f"declares nodata {nodata} that its {dtype} data cannot hold",
                             f"an integer nodata in [{info.min}, {info.max}]")
    return nodata


def _categorical(da: xr.DataArray, bands: list[str], dtype: np.dtype) -> list[str]:
    """Integer bands that hold classes: all when the variable has CF flag attributes,
    else those listed in its ``categorical_bands`` attribute."""
    if not np.issubdtype(dtype, np.integer):
        return []
    if any(a in da.attrs for a in CATEGORICAL_ATTRS):
        return list(bands)
    listed = da.attrs.get(CATEGORICAL_BANDS_ATTR) or []
    listed = [listed] if isinstance(listed, str) else [str(b) for b in listed]
    return [b for b in bands if b in listed]


def _methods(params: BuildZarrMultiscalesParams, source: _Source) -> list[ResamplingMethod]:
    """Per band: the user's choice, else mode for categorical bands and average for the rest."""
    def default(band: str) -> ResamplingMethod:
        return ResamplingMethod.MODE if band in source.categorical else ResamplingMethod.AVERAGE

    chosen = params.resampling
    if chosen is None:
        return [default(b) for b in source.bands]
    if isinstance(chosen, ResamplingMethod):
        return [chosen] * len(source.bands)
    unknown = sorted(set(chosen) - set(source.bands))
    if unknown:
        raise InvalidParameterError("resampling", {k: v.value for k, v in chosen.items()},
                                    f"names bands that {source.uri} does not have: {unknown}",
                                    f"a mapping from some of {source.bands} to a method")
    return [chosen.get(b, default(b)) for b in source.bands]


def level_shapes(height: int, width: int, chunk: int, levels: int | None, uri: str = "") -> list[tuple[int, int]]:
    """(height, width) of every level: down to one chunk, or ``levels`` of them."""
    shapes = [(height, width)]
    while (levels is None and max(shapes[-1]) > chunk) or (levels is not None and len(shapes) < levels):
        if shapes[-1] == (1, 1):
            raise InvalidParameterError(
                "levels", levels, f"is more than {uri or 'the store'} allows: level {len(shapes) - 1} is one pixel",
                f"1 to {len(shapes)} for a {height} x {width} grid, or None (down to one {chunk} px chunk)",
            )
        shapes.append(halved_shape(*shapes[-1]))
    return shapes


def _store_names(uris_: list[str]) -> list[str]:
    """Output names from the inputs' names, made unique."""
    stems = [u.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zarr") or "store" for u in uris_]
    return [f"{s}.zarr" if stems.count(s) == 1 else f"{s}-{i}.zarr" for i, s in enumerate(stems)]


def plan_multiscales(
    params: BuildZarrMultiscalesParams,
    output_root: str,
    storage_options_for: Callable[[str], dict[str, Any]] = lambda uri: {},
) -> MultiscalesPlan:
    """Every check that needs the inputs, then the levels and partitions; writes nothing."""
    uris.check_output_root(output_root, storage_options_for(output_root))
    stores = input_stores(params.store, storage_options_for)
    sources = [inspect_source(uri, storage_options_for(uri)) for uri in stores]
    shapes = [level_shapes(s.grid.height, s.grid.width, s.chunk, params.levels, s.uri) for s in sources]
    methods = [_methods(params, s) for s in sources]

    request_id = stable_hash({
        "params": params.flow_parameters(),
        "stores": [(s.uri, s.identity) for s in sources],
        "code": code_fingerprint(),
    })
    output_dir = uris.join(output_root, WORKFLOW, request_id[:16])
    names = _store_names(stores)
    pyramids = [
        _plan_pyramid(sources[i], shapes[i], methods[i], uris.join(output_dir, names[i]), stable_hash([request_id, i]))
        for i in range(len(sources))
    ]
    provenance = {
        "workflow": WORKFLOW,
        "rasterflow_version": __version__,
        "parameters": params.flow_parameters(),
        "inputs": {"store": params.store, "stores": stores},
        "request_id": request_id,
    }
    return MultiscalesPlan(workflow=WORKFLOW, output_dir=output_dir, index_uri=uris.join(output_dir, "index.parquet"),
                           pyramids=pyramids, provenance=provenance)


def _plan_pyramid(source: _Source, shapes: list[tuple[int, int]], methods: list[ResamplingMethod],
                  uri: str, fingerprint: str) -> PyramidPlan:
    base = source.grid.affine
    bytes_per_pixel = len(source.bands) * np.dtype(source.dtype).itemsize
    chunk_bytes = source.chunk * source.chunk * bytes_per_pixel
    budget = min(MAX_SHARD_BYTES, max(source.shard_bytes, chunk_bytes))
    tally = tallied(source.dtype)
    levels: list[LevelPlan] = []
    for level, (height, width) in enumerate(shapes):
        scale = 2**level
        grid = Grid(crs=source.grid.crs, transform=tuple(base * Affine.scale(scale))[:6], width=width, height=height)
        copy_shards = level == 0 and source.spec.shard is not None  # level 0 takes the input's shards
        shard = source.spec.shard if copy_shards else shard_shape(height, width, bytes_per_pixel, source.chunk, budget)
        shard_bytes = shard.rows * shard.cols * bytes_per_pixel
        shards_per_partition = LEVEL0_PARTITION_SHARDS if level == 0 and not copy_shards else 1
        partition_bytes = shard_bytes * shards_per_partition
        spec = StoreSpec(uri=uris.join(uri, str(level)), grid=grid, bands=source.bands, times=source.times,
                         dtype=source.dtype, nodata=source.nodata, shard=shard)
        level_fp = stable_hash([fingerprint, level])
        jobs = []
        for window in partition_windows(height, width, shard, bytes_per_pixel, partition_bytes):
            for t in range(len(source.times)):
                job: dict[str, Any] = dict(
                    key=f"{fingerprint[:12]}-L{level}-t{t}-{window.id}", level=level, store_uri=spec.uri,
                    time_index=t, window=window, dtype=source.dtype, nodata=source.nodata, methods=methods,
                )
                if level == 0:
                    job["source"], job["copy_shards"] = source.spec, copy_shards
                    job["tally"] = tally and not copy_shards  # it decodes the pixels anyway
                else:
                    previous = levels[-1].spec.grid
                    from_input = level == 1 and levels[0].jobs[0].copy_shards  # the same bytes as level 0
                    job["previous_uri"] = source.uri if from_input else levels[-1].spec.uri
                    job["tally"] = tally and from_input
                    job["source_window"] = Window(
                        row0=2 * window.row0, row1=min(2 * window.row1, previous.height),
                        col0=2 * window.col0, col1=min(2 * window.col1, previous.width),
                    )
                jobs.append(LevelJob(**job))
        if level == 1 and tally and levels[0].jobs[0].copy_shards:  # level 1 need not wait for level 0
            jobs = _fold_copies(levels[0].jobs, jobs)
        levels.append(LevelPlan(level=level, spec=spec, fingerprint=level_fp, jobs=jobs))
    return PyramidPlan(uri=uri, fingerprint=fingerprint, input_uri=source.uri, methods=methods, levels=levels,
                       tail=_tail(levels, len(source.times), fingerprint),
                       footprint_wkb=source.grid.footprint("EPSG:4326").wkb_hex)


def _fold_copies(copies: list[LevelJob], jobs: list[LevelJob]) -> list[LevelJob]:
    """Level-1 jobs that also copy the level-0 partitions under them, when each lies under exactly one."""
    rows = sorted({j.source_window.row0 for j in jobs})
    cols = sorted({j.source_window.col0 for j in jobs})
    by_corner = {(j.time_index, j.source_window.row0, j.source_window.col0): j for j in jobs}
    folded: dict[str, list[LevelJob]] = {j.key: [] for j in jobs}
    for c in copies:
        corner = (c.time_index, rows[bisect.bisect_right(rows, c.window.row0) - 1],
                  cols[bisect.bisect_right(cols, c.window.col0) - 1])
        owner = by_corner.get(corner)
        if owner is None or not _inside(c.window, owner.source_window):
            return jobs
        folded[owner.key].append(c)
    return [job.model_copy(update={"copies": folded[job.key]}) for job in jobs]


def _inside(inner: Window, outer: Window) -> bool:
    return (outer.row0 <= inner.row0 and inner.row1 <= outer.row1
            and outer.col0 <= inner.col0 and inner.col1 <= outer.col1)


def _tail(levels: list[LevelPlan], n_times: int, fingerprint: str) -> list[LevelChain]:
    """Chains over the last levels of one partition each (from level 2: level 1 carries statistics)."""
    start = len(levels)
    while start > 2 and len(levels[start - 1].jobs) == n_times:
        start -= 1
    if start == len(levels):
        return []
    return [LevelChain(key=f"{fingerprint[:12]}-L{start}-L{len(levels) - 1}-t{t}",
                       jobs=[lvl.jobs[t] for lvl in levels[start:]]) for t in range(n_times)]


# --- building --------------------------------------------------------------------------------


def build_level_shard(job: LevelJob, bins: list[Bins | None] | None = None,
                      storage_options_for: Callable[[str], dict[str, Any]] = lambda uri: {}) -> dict[str, Any]:
    """Build one partition of a level and write it whole (unless it is all nodata).

    The level-0 pixels it holds are summarized per band (module docstring):
    per-value counts with ``job.tally``, else the moments at level 0, else
    histogram counts into ``bins`` when given (level 1). Windows without data
    are not written: they read as the fill value, which is nodata.
    """
    for copy in job.copies:
        build_level_shard(copy, None, storage_options_for)
    result: dict[str, Any] = {"key": job.key, "time_index": job.time_index}
    out_options = storage_options_for(job.store_uri)
    # A copied level 0 of 8- or 16-bit integers is tallied by whoever reads it next (level 1, or
    # the count pass), even when the copy falls back to decoding: never twice.
    summarize = not (job.copy_shards and tallied(job.dtype))
    if job.level == 0 and job.copy_shards and _copy_shards(job, storage_options_for):
        if not summarize:
            return result
        moments = _window_moments(job, out_options)
        return result | {"moments": [m.model_dump() for m in moments], "valid_values": sum(m.count for m in moments)}
    if job.level == 0:
        data = read_source(job.source, job.time_index, job.window, storage_options_for(job.source.uri))
        data = data.astype(job.dtype, copy=False)
        summary = (_summary(job, data) if summarize
                   else {"valid_values": int(np.count_nonzero(valid_mask(data, job.nodata)))})
        result |= summary
        n_valid = summary["valid_values"]
    else:
        source = _read_level(job.previous_uri, job.time_index, job.source_window,
                             storage_options_for(job.previous_uri))
        if job.tally:
            result["values"] = _summary(job, source)["values"]
        elif bins is not None:
            result["counts"] = _count(source, job.nodata, bins)
        data = halve(source, job.nodata, job.methods)
        n_valid = int(np.count_nonzero(valid_mask(data, job.nodata)))
    if n_valid:
        write_window(job.store_uri, job.time_index, job.window, data, out_options)
    return result | {"valid_values": n_valid}


def _summary(job: LevelJob, data: np.ndarray) -> dict[str, Any]:
    """Level-0 pixels summarized per band: per-value counts (``job.tally``) or moments."""
    if job.tally:
        values = [ValueCounts.of(band, job.nodata) for band in data]
        return {"values": [v.model_dump() for v in values], "valid_values": sum(v.total for v in values)}
    moments = [band_moments(band, job.nodata) for band in data]
    return {"moments": [m.model_dump() for m in moments], "valid_values": sum(m.count for m in moments)}


def build_level_chain(chain: LevelChain,
                      storage_options_for: Callable[[str], dict[str, Any]] = lambda uri: {}) -> dict[str, Any]:
    """Build the chain's levels from one read of the level before its first, each from the last, in memory."""
    first = chain.jobs[0]
    data = _read_level(first.previous_uri, first.time_index, first.source_window,
                       storage_options_for(first.previous_uri))
    written = []
    for job in chain.jobs:
        data = halve(data, job.nodata, job.methods)
        n_valid = int(np.count_nonzero(valid_mask(data, job.nodata)))
        if n_valid:
            write_window(job.store_uri, job.time_index, job.window, data, storage_options_for(job.store_uri))
        written.append(n_valid)
    return {"key": chain.key, "time_index": first.time_index, "valid_values": written}


def _layout(array: zarr.Array) -> dict[str, Any]:
    """What decides a shard's bytes: equal layouts mean interchangeable shard objects."""
    meta = array.metadata.to_dict()
    keys = ("zarr_format", "shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs",
            "dimension_names")
    return {k: meta.get(k) for k in keys}


def _copy_shards(job: LevelJob, storage_options_for: Callable[[str], dict[str, Any]]) -> bool:
    """Copy the input's shard objects of ``job.window`` into level 0, byte for byte.

    Only when both arrays have one layout (shape, type, chunks, shards, codecs,
    fill value); returns False otherwise, and the caller decodes and re-encodes.
    A shard the input never wrote is not copied: both read it as the fill value.
    """
    src_uri, dst_uri = job.source.uri, job.store_uri
    src_options, dst_options = storage_options_for(src_uri), storage_options_for(dst_uri)
    src = zarr.open_array(zarr_store(src_uri, src_options, read_only=True), path=DATA_VAR, mode="r")
    dst = open_data_array(dst_uri, dst_options)
    if _layout(src) != _layout(dst):
        return False
    rows, cols = dst.shards[-2:]
    src_fs, src_root = uris.filesystem(uris.join(src_uri, DATA_VAR), src_options)
    dst_fs, dst_root = uris.filesystem(uris.join(dst_uri, DATA_VAR), dst_options)
    for i in range(job.window.row0 // rows, math.ceil(job.window.row1 / rows)):
        for j in range(job.window.col0 // cols, math.ceil(job.window.col1 / cols)):
            key = dst.metadata.encode_chunk_key((job.time_index, 0, i, j))
            src_path, dst_path = f"{src_root}/{key}", f"{dst_root}/{key}"
            if not src_fs.exists(src_path):
                continue
            dst_fs.makedirs(dst_path.rsplit("/", 1)[0], exist_ok=True)
            with src_fs.open(src_path, "rb") as reader, dst_fs.open(dst_path, "wb") as writer:
                shutil.copyfileobj(reader, writer, length=16 * 2**20)
    return True


def _window_moments(job: LevelJob, storage_options: dict[str, Any]) -> list[Moments]:
    """Moments per band of a level-0 window, read in strips of whole chunk rows.

    A copied partition is one of the input's shards, which may be far bigger
    than a task should hold; strips keep memory at MAX_SHARD_BYTES.
    """
    width = job.window.col1 - job.window.col0
    chunk = job.source.shard.chunk
    row_bytes = width * len(job.methods) * np.dtype(job.dtype).itemsize
    step = max(chunk, MAX_SHARD_BYTES // max(row_bytes, 1) // chunk * chunk)
    moments = [Moments() for _ in job.methods]
    for r in range(job.window.row0, job.window.row1, step):
        strip = Window(row0=r, row1=min(r + step, job.window.row1), col0=job.window.col0, col1=job.window.col1)
        data = _read_level(job.store_uri, job.time_index, strip, storage_options)
        moments = [m.merge(band_moments(band, job.nodata)) for m, band in zip(moments, data)]
    return moments


def count_level_shard(job: LevelJob, bins: list[Bins | None] | None,
                      storage_options_for: Callable[[str], dict[str, Any]] = lambda uri: {}) -> dict[str, Any]:
    """A level-0 partition already written, summarized (pyramids of one level).

    Histogram counts into ``bins``; per-value counts when there are no bins
    (8- and 16-bit integers, whose copied level 0 nobody has read yet).
    """
    data = _read_level(job.store_uri, job.time_index, job.window, storage_options_for(job.store_uri))
    result: dict[str, Any] = {"key": job.key, "time_index": job.time_index}
    if bins is None:
        return result | {"values": _summary(job.model_copy(update={"tally": True}), data)["values"]}
    return result | {"counts": _count(data, job.nodata, bins)}


def _count(data: np.ndarray, nodata: float, bins: list[Bins | None]) -> list[str | None]:
    """Histogram counts per band, packed (``pack_counts``)."""
    return [pack_counts(band_counts(band, nodata, b)) if b is not None else None for band, b in zip(data, bins)]


# --- statistics ------------------------------------------------------------------------------


class PyramidStatistics(BaseModel):
    """Partition summaries merged per time slot and band, and the histogram bins per band."""

    model_config = ConfigDict(frozen=True)

    moments: list[list[Moments]]  # [time][band]
    bins: list[Bins | None]  # [band], shared by the time slots so they add up
    values: list[list[ValueCounts]] = []  # [time][band] when level 0 was summarized by per-value counts


def merge_moments(pyramid: PyramidPlan, results: list[dict[str, Any]]) -> PyramidStatistics:
    """Task results of one pyramid to per-(time, band) moments and per-band bins.

    Reads the results' level-0 summaries (``moments`` or ``values``); any
    other result (histogram counts, levels above 0) is passed over.
    """
    nt, nb = len(pyramid.base.times), len(pyramid.base.bands)
    moments = [[Moments() for _ in range(nb)] for _ in range(nt)]
    values = [[ValueCounts() for _ in range(nb)] for _ in range(nt)]
    for result in results:
        t = result["time_index"]
        for b, m in enumerate(result.get("moments") or []):
            moments[t][b] = moments[t][b].merge(Moments(**m))
        for b, v in enumerate(result.get("values") or []):
            values[t][b] = values[t][b].merge(ValueCounts(**v))
    tallied_values = any(result.get("values") for result in results)
    if tallied_values:
        moments = [[m.merge(v.moments()) for m, v in zip(ms, vs)] for ms, vs in zip(moments, values)]
    bins = []
    for b in range(nb):
        overall = Moments()
        for t in range(nt):
            overall = overall.merge(moments[t][b])
        bins.append(Bins.covering(overall, pyramid.integer))
    return PyramidStatistics(moments=moments, bins=bins, values=values if tallied_values else [])


def band_statistics(
    pyramid: PyramidPlan, stats: PyramidStatistics, results: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The ``bands`` attribute: per band its statistics and histogram, overall and per time slot."""
    spec = pyramid.base
    nt = len(spec.times)
    counts = [[np.zeros(b.n, dtype=np.int64) if b else None for b in stats.bins] for _ in range(nt)]
    for result in results:
        for b, c in enumerate(result.get("counts") or []):
            if c is not None:
                counts[result["time_index"]][b] += unpack_counts(c)
    for t, per_band in enumerate(stats.values):
        for b, v in enumerate(per_band):
            if stats.bins[b] is not None:
                counts[t][b] += v.histogram(stats.bins[b])
    pixels = spec.grid.width * spec.grid.height
    nodata = "nan" if math.isnan(spec.nodata) else spec.nodata  # JSON has no NaN; STAC writes "nan"
    bands = []
    for b, name in enumerate(spec.bands):
        bins = stats.bins[b]
        overall, total = Moments(), (np.zeros(bins.n, dtype=np.int64) if bins else None)
        slices = []
        for t in range(nt):
            overall = overall.merge(stats.moments[t][b])
            if bins:
                total += counts[t][b]
            slices.append({"time": spec.times[t], **summarize(stats.moments[t][b], bins, counts[t][b], pixels)})
        bands.append({
            "name": name, "data_type": spec.dtype, "nodata": nodata,
            "resampling": CONVENTION_METHOD[pyramid.methods[b]],
            **summarize(overall, bins, total, pixels * nt),
            "time_slices": slices,
        })
    return bands


def build_pyramid(pyramid: PyramidPlan, provenance: dict[str, Any], map_: Callable = map,
                  storage_options_for: Callable[[str], dict[str, Any]] = lambda uri: {}) -> None:
    """The whole pyramid without an orchestrator, in the flow's order.

    ``map_`` runs the partitions of each step (``map``, or a thread pool's
    ``map``); the flow does the same with Prefect tasks, retries and cache.
    """
    build = lambda job, bins=None: build_level_shard(job, bins, storage_options_for)  # noqa: E731
    create_pyramid(pyramid, provenance, storage_options_for(pyramid.uri))
    first = [] if pyramid.level0_folded else list(pyramid.levels[0].jobs)
    beside = pyramid.level1_reads_input and not pyramid.needs_bins
    results = list(map_(build, first + (pyramid.levels[1].jobs if beside else [])))
    bins = merge_moments(pyramid, results).bins if pyramid.needs_bins else None
    if len(pyramid.levels) > 1 and not beside:
        results += map_(lambda job: build(job, bins), pyramid.levels[1].jobs)
    if pyramid.needs_count_pass:
        results += map_(lambda job: count_level_shard(job, bins, storage_options_for), pyramid.levels[0].jobs)
    for lvl in pyramid.levels[2 : pyramid.tail_start]:
        list(map_(build, lvl.jobs))
    list(map_(lambda chain: build_level_chain(chain, storage_options_for), pyramid.tail))
    bands = band_statistics(pyramid, merge_moments(pyramid, results), results)
    commit_pyramid(pyramid, bands, storage_options_for(pyramid.uri))


# --- the root group: creation, multiscales metadata, commit ----------------------------------


def create_pyramid(pyramid: PyramidPlan, provenance: dict[str, Any],
                   storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """Create (or adopt) the root group, then every level's store; their generations by URI.

    Same adoption rule as ``create_store``: a root with the same fingerprint is
    kept with its levels (a resumed run keeps their shards); anything else at
    the URI is removed first. The root's marker says 'writing' until
    ``commit_pyramid``.
    """
    marker = read_marker(pyramid.uri, storage_options)
    if marker and marker.get("fingerprint") == pyramid.fingerprint and marker.get("generation"):
        generation = marker["generation"]
    else:
        uris.remove(pyramid.uri, storage_options)
        generation = uuid.uuid4().hex
        group = zarr.open_group(zarr_store(pyramid.uri, storage_options), mode="w", zarr_format=3)
        group.attrs[ATTR] = {
            "status": WRITING, "generation": generation, "fingerprint": pyramid.fingerprint,
            "created": datetime.now(timezone.utc).isoformat(), **provenance,
        }
    levels = {
        lvl.spec.uri: create_store(lvl.spec, lvl.fingerprint, provenance | {"level": lvl.level}, storage_options)
        for lvl in pyramid.levels
    }
    return {pyramid.uri: generation} | levels


def multiscales_attributes(pyramid: PyramidPlan, level0_attrs: dict[str, Any]) -> dict[str, Any]:
    """Root attributes: zarr-conventions multiscales v1 composed with proj: and spatial:.

    ``spatial:transform``/``spatial:shape`` go on each layout item and not on the
    root (the spatial convention's rule for multiscales groups); ``transform.scale``
    is relative to ``derived_from`` (the level before), as the spec and GDAL's
    writer have it, on the (y, x) axes named by ``spatial:dimensions``.
    """
    methods = {CONVENTION_METHOD[m] for m in pyramid.methods}
    method = methods.pop() if len(methods) == 1 else None
    layout = []
    for lvl in pyramid.levels:
        item: dict[str, Any] = {"asset": str(lvl.level)}
        if lvl.level:
            item["derived_from"] = str(lvl.level - 1)
            item["transform"] = {"scale": [2.0, 2.0], "translation": [0.0, 0.0]}
            if method:
                item["resampling_method"] = method
        else:
            item["transform"] = {"scale": [1.0, 1.0], "translation": [0.0, 0.0]}
        item["spatial:shape"] = [lvl.spec.grid.height, lvl.spec.grid.width]
        item["spatial:transform"] = list(lvl.spec.grid.transform)
        layout.append(item)
    multiscales: dict[str, Any] = {"layout": layout}
    if method:
        multiscales["resampling_method"] = method
    proj = {k: v for k, v in level0_attrs.items() if k.startswith("proj:")}
    return {
        "zarr_conventions": [MULTISCALES_CONVENTION, PROJ_CONVENTION, SPATIAL_CONVENTION],
        "multiscales": multiscales,
        **proj,
        "spatial:dimensions": level0_attrs.get("spatial:dimensions", ["y", "x"]),
        "spatial:bbox": level0_attrs.get("spatial:bbox"),
    }


def commit_pyramid(pyramid: PyramidPlan, bands: list[dict[str, Any]],
                   storage_options: dict[str, Any] | None = None) -> None:
    """Statistics and metadata in, then every level committed, then the root, last.

    The statistics go on level 0's ``variables`` (a reader of level 0 alone finds
    them) and on the root (where a multiscales reader looks first).
    """
    level0 = pyramid.base.uri
    open_data_array(level0, storage_options, mode="r+").attrs["bands"] = bands
    for lvl in pyramid.levels:
        commit_store(lvl.spec.uri, storage_options)
    level0_attrs = dict(zarr.open_group(zarr_store(level0, storage_options, read_only=True), mode="r").attrs)
    root = zarr.open_group(zarr_store(pyramid.uri, storage_options), mode="r+")
    root.attrs.update(multiscales_attributes(pyramid, level0_attrs) | {"bands": bands})
    commit_store(pyramid.uri, storage_options)


def index_rows(plan: MultiscalesPlan) -> list[dict[str, Any]]:
    """One index row per pyramid; ``location`` is its root group."""
    return [
        store_row(p.base, plan.workflow, p.footprint_wkb, location=p.uri, source=p.input_uri, levels=len(p.levels))
        for p in plan.pyramids
    ]
