"""Input stores of build-zarr-multiscales: any georeferenced Zarr, described and read as bands.

A rasterflow store, any Zarr that xarray opens and rioxarray georeferences
(``_choose_variables`` says which variable is read), north-up or south-up.
Planning describes each input once (``inspect_source``); level-0 tasks read
its raw values with zarr (``read_source``). When ``create_store`` would give
level 0 the input's own array layout, level 0 copies the input's shard
objects byte for byte (``SourceSpec.shard``).
"""

from __future__ import annotations

import math
import uuid
import warnings
from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from affine import Affine
from pydantic import BaseModel, ConfigDict

from ...errors import InvalidParameterError
from .. import uris
from ..grid import Grid
from ..index import is_zarr_group
from ..partitions import ShardShape, Window
from ..store import DATA_VAR, StoreSpec, create_store, read_marker, store_identity, zarr_store

DEFAULT_CHUNK = 512
# Shards of the pyramid: the input's shard size, at most this (uncompressed).
MAX_SHARD_BYTES = 16 * 2**20
# CF marks classes with flag_values/flag_meanings; categorical_bands names some bands.
CATEGORICAL_ATTRS = ("flag_values", "flag_meanings")
CATEGORICAL_BANDS_ATTR = "categorical_bands"


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


class Source(BaseModel):
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
        raise _bad_store(uri, f"has no data variable with spatial dimensions "
                              f"(data variables: {list(ds.data_vars)})")
    if len(rasters) == 1:
        return [str(rasters[0])]
    first = ds[rasters[0]]
    same = all(ds[n].dims == first.dims and ds[n].dtype == first.dtype for n in rasters)
    spatial = _spatial_dims(first)
    assert spatial is not None  # rasters have both spatial dimensions
    extra = set(first.dims) - set(spatial)
    if same and all(_is_time(ds, d) for d in extra):
        return sorted(str(n) for n in rasters)
    raise _bad_store(uri, f"has several raster variables {rasters} of different shapes or with a band "
                          "dimension",
                     "a store with 'variables', a single raster variable, or same-shaped 2-D variables "
                     "(read as bands)")


def _is_time(ds: xr.Dataset, dim: Hashable) -> bool:
    return dim == "time" or (dim in ds.coords and np.issubdtype(ds[dim].dtype, np.datetime64))


def _iso(value) -> str | None:
    stamp = pd.Timestamp(value)
    return None if pd.isna(stamp) else stamp.isoformat()


def inspect_source(uri: str, storage_options: dict[str, Any]) -> Source:
    """Everything planning needs from one input store; bad stores raise, naming ``store``."""
    if not is_zarr_group(uri, storage_options):
        raise _bad_store(uri, "is not a Zarr group (no zarr.json or .zgroup)")
    marker = read_marker(uri, storage_options)
    if marker is not None and not marker.complete:
        raise _bad_store(uri, f"is an incomplete rasterflow store (status {marker.status!r})",
                         "a complete store: re-run the workflow that writes it first")
    try:
        ds = _open(uri, storage_options)
    except Exception as exc:  # noqa: BLE001  (whatever the reader says, the store is unusable)
        raise _bad_store(uri, f"cannot be opened by xarray as a Zarr dataset ({exc})") from None
    try:
        return _describe(ds, uri, storage_options)
    finally:
        ds.close()


def _describe(ds: xr.Dataset, uri: str, storage_options: dict[str, Any]) -> Source:
    names = _choose_variables(ds, uri)
    da = ds[names[0]]
    spatial = _spatial_dims(da)
    if spatial is None:  # a `variables` array without both spatial dimensions
        raise _bad_store(uri, f"variable {names[0]!r} has dimensions {da.dims}, without both spatial "
                              "dimensions rioxarray can find")
    y_dim, x_dim = spatial
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
        raise _bad_store(uri, f"variable {names[0]!r} has data type {dtype}",
                         "integer or floating-point data")
    height, width = da.sizes[y_dim], da.sizes[x_dim]
    t = da.rio.transform()
    if t.b or t.d:
        raise _bad_store(uri, f"has a rotated grid (transform {tuple(t)[:6]})",
                         "a north-up (or south-up) grid")
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
    source = Source(
        uri=uri, identity=store_identity(uri, storage_options),
        spec=SourceSpec(uri=uri, variables=names, dims=[str(d) for d in da.dims], band_dim=band_dim,
                        time_dim=time_dim, y_dim=y_dim, x_dim=x_dim, height=height, flip_y=flip),
        grid=grid, bands=bands, times=times, dtype=str(dtype), nodata=nodata, chunk=chunk,
        shard_bytes=shard_bytes, categorical=_categorical(da, bands, dtype),
    )
    if names == [DATA_VAR] and not flip and shards and len(shards) == da.ndim and cy == cx == chunk:
        shard = ShardShape(chunk=chunk, rows=shards[dim_index[y_dim]], cols=shards[dim_index[x_dim]])
        if _layout_of_level0(source, shard) == layout(zarr.open_array(
                zarr_store(uri, storage_options, read_only=True), path=DATA_VAR, mode="r")):
            source = source.model_copy(update={"spec": source.spec.model_copy(update={"shard": shard})})
    return source


def _layout_of_level0(source: Source, shard: ShardShape) -> dict[str, Any]:
    """The layout ``create_store`` gives a level 0 on ``shard``: asked of it, in memory.

    When it is the input's own, level 0 copies the input's shard objects instead
    of decoding and re-encoding every pixel.
    """
    probe = StoreSpec(uri=f"memory://rasterflow-layout-probe/{uuid.uuid4().hex}", grid=source.grid,
                      bands=source.bands, times=source.times, dtype=source.dtype, nodata=source.nodata,
                      shard=shard, skip_xy_coords=True)
    try:
        create_store(probe, "probe", {})
        return layout(zarr.open_array(zarr_store(probe.uri), path=DATA_VAR, mode="r"))
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


def layout(array: zarr.Array) -> dict[str, Any]:
    """What decides a shard's bytes: equal layouts mean interchangeable shard objects."""
    meta = array.metadata.to_dict()
    keys = ("zarr_format", "shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs",
            "dimension_names")
    return {k: meta.get(k) for k in keys}
