"""Zarr v3 mosaic stores: the store contract of docs/architecture.md.

One group; ``variables(time, band, y, x)`` chunked ``xy_chunksize`` and sharded;
``time``, ``band``, ``y``, ``x`` coordinates; a rioxarray ``spatial_ref``; GeoZarr
``proj:``/``spatial:`` attributes; provenance and a commit marker under the
``rasterflow`` group attribute. Metadata is created first (by xarray, so any
xarray reader agrees with it), shards are written later by tasks, and the
marker flips to ``complete`` last, after metadata consolidation.
"""

from __future__ import annotations

import uuid
import warnings
from datetime import datetime, timezone
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from pydantic import BaseModel, ConfigDict
from zarr.errors import ZarrUserWarning

from ..errors import StoreError
from . import uris
from .grid import Grid
from .partitions import ShardShape, Window

ATTR = "rasterflow"
WRITING, COMPLETE = "writing", "complete"
DATA_VAR = "variables"


class StoreSpec(BaseModel):
    """Everything that fixes a store's layout."""

    model_config = ConfigDict(frozen=True)

    uri: str
    grid: Grid
    bands: list[str]
    times: list[str | None]  # ISO timestamps; None is the single ungrouped (NaT) slot
    dtype: str
    nodata: float
    shard: ShardShape
    skip_xy_coords: bool = False


def zarr_store(uri: str, storage_options: dict[str, Any] | None = None, read_only: bool = False):
    if uris.is_local(uri):
        return zarr.storage.LocalStore(uris.local_path(uri), read_only=read_only)
    return zarr.storage.FsspecStore.from_url(uri, storage_options=storage_options or {}, read_only=read_only)


def open_data_array(uri: str, storage_options: dict[str, Any] | None = None, mode: str = "r") -> zarr.Array:
    """The ``variables`` array of a rasterflow store.

    Our stores are Zarr v3: saying so spares object stores zarr's probes for v2
    metadata (.zarray, .zattrs, ...), each a HEAD and a LIST with s3fs.
    """
    return zarr.open_array(zarr_store(uri, storage_options, read_only=mode == "r"), path=DATA_VAR, mode=mode,
                           zarr_format=3)


def read_marker(uri: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The store's ``rasterflow`` attribute, or None if there is no such store."""
    try:
        # v3 only: rasterflow writes no other, so a v2 group is "not ours" (None), unprobed.
        group = zarr.open_group(zarr_store(uri, storage_options, read_only=True), mode="r", zarr_format=3)
    except (FileNotFoundError, ValueError, zarr.errors.GroupNotFoundError, zarr.errors.ContainsArrayError,
            zarr.errors.NodeTypeValidationError):
        return None  # nothing there, an array, or unreadable metadata (JSONDecodeError is a ValueError)
    return dict(group.attrs.get(ATTR, {})) or None


# The zarr-conventions v1 schemas of the proj: and spatial: attributes below.
PROJ_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/geo-proj/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/geo-proj/blob/v1/README.md",
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
    "name": "proj:",
    "description": "Coordinate reference system information for geospatial data",
}
SPATIAL_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/spatial/blob/v1/README.md",
    "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
    "name": "spatial",
    "description": "Spatial coordinate information",
}


def _geozarr_attrs(grid: Grid) -> dict[str, Any]:
    epsg = grid.rio_crs.to_epsg()
    proj = {"proj:code": f"EPSG:{epsg}"} if epsg else {"proj:wkt2": grid.rio_crs.to_wkt()}
    return proj | {
        "zarr_conventions": [PROJ_CONVENTION, SPATIAL_CONVENTION],
        "spatial:dimensions": ["y", "x"],
        "spatial:transform": list(grid.transform),
        "spatial:shape": [grid.height, grid.width],
        "spatial:bbox": list(grid.bounds),
    }


def _template(spec: StoreSpec) -> xr.Dataset:
    grid = spec.grid
    nb, nt = len(spec.bands), len(spec.times)
    data = da.zeros(
        (nt, nb, grid.height, grid.width), dtype=spec.dtype,
        chunks=(1, nb, spec.shard.rows, spec.shard.cols),
    )
    coords: dict[str, Any] = {
        "time": pd.to_datetime([t if t is not None else pd.NaT for t in spec.times], format="ISO8601")
        .values.astype("datetime64[ns]"),
        "band": np.array(spec.bands, dtype=object),
    }
    if not spec.skip_xy_coords:
        a = grid.affine
        coords["x"] = a.c + a.a * (np.arange(grid.width) + 0.5)
        coords["y"] = a.f + a.e * (np.arange(grid.height) + 0.5)
    ds = xr.Dataset({DATA_VAR: (("time", "band", "y", "x"), data)}, coords=coords)
    ds = ds.rio.write_crs(grid.rio_crs).rio.write_transform(grid.affine)
    ds[DATA_VAR].attrs["nodata"] = spec.nodata
    # CF leaves grid-mapping variables out of "coordinates"; listing it keeps
    # spatial_ref a coordinate for readers that do not pass decode_coords="all".
    ds[DATA_VAR].encoding["coordinates"] = "spatial_ref"
    return ds


def create_store(
    spec: StoreSpec, fingerprint: str, provenance: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> str:
    """Create (or adopt) the store's metadata; returns its generation id.

    A store already at ``spec.uri`` with the same ``fingerprint`` is adopted with
    its generation, so a re-run after a crash keeps the shards it has; anything
    else there is replaced and gets a new generation. Task cache keys include the
    generation, so a deleted or replaced store never serves stale cache hits.
    """
    marker = read_marker(spec.uri, storage_options)
    if marker and marker.get("fingerprint") == fingerprint and marker.get("generation"):
        return marker["generation"]
    ds = _template(spec)  # before removing anything: a bad spec must not cost the old store
    uris.remove(spec.uri, storage_options)
    generation = uuid.uuid4().hex
    ds.attrs = _geozarr_attrs(spec.grid) | {
        ATTR: {
            "status": WRITING, "generation": generation, "fingerprint": fingerprint,
            "created": datetime.now(timezone.utc).isoformat(), **provenance,
        }
    }
    c = spec.shard.chunk
    # On the variable's own encoding, beside rioxarray's grid_mapping.
    ds[DATA_VAR].encoding.update(
        chunks=(1, len(spec.bands), c, c),
        shards=(1, len(spec.bands), spec.shard.rows, spec.shard.cols),
        fill_value=np.asarray(spec.nodata, dtype=spec.dtype).item(),
        compressors=[zarr.codecs.ZstdCodec(level=3)],
    )
    ds.to_zarr(zarr_store(spec.uri, storage_options), mode="w", compute=False, zarr_format=3, consolidated=False)
    return generation


def write_window(
    uri: str, time_index: int, window: Window, data: np.ndarray, storage_options: dict[str, Any] | None = None
) -> None:
    """Write whole shards: ``window`` must be shard aligned (see partitions).

    Storage failures come out as a ``StorageError`` naming the store, transient
    or not (a refused write is not worth retrying, a throttled one is).
    """
    try:
        array = open_data_array(uri, storage_options, mode="r+")
        array[time_index, :, window.row0 : window.row1, window.col0 : window.col1] = data
    except OSError as exc:  # what fsspec raises for every storage failure
        raise uris.storage_error(uri, exc) from exc


def commit_store(uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Consolidate metadata, then mark the store complete (the last write).

    Committing a complete store changes nothing: it was adopted with the same
    fingerprint, so its content is what it was, and keeping ``completed``
    keeps the identity that downstream workflows' cache keys are built on.
    """
    if (read_marker(uri, storage_options) or {}).get("status") == COMPLETE:
        return
    store = zarr_store(uri, storage_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZarrUserWarning)  # consolidated metadata is not in the v3 spec yet
        zarr.consolidate_metadata(store)
    group = zarr.open_group(store, mode="r+", zarr_format=3)
    marker = dict(group.attrs[ATTR])
    marker.update(status=COMPLETE, completed=datetime.now(timezone.utc).isoformat())
    group.attrs[ATTR] = marker


def open_store(uri: str, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """Open a complete rasterflow store with xarray; refuse incomplete ones."""
    marker = read_marker(uri, storage_options)
    if marker is None:
        raise StoreError(f"{uri}: not a rasterflow Zarr store (no '{ATTR}' attribute or no store at all)")
    if marker.get("status") != COMPLETE:
        raise StoreError(
            f"{uri}: store is incomplete (status {marker.get('status')!r}); its workflow did not "
            "finish. Re-run the same call to resume it."
        )
    return xr.open_zarr(zarr_store(uri, storage_options, read_only=True), consolidated=True, zarr_format=3)
