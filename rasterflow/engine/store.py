"""Zarr v3 mosaic stores: the store contract of docs/architecture.md.

One group; ``variables(time, band, y, x)`` chunked ``xy_chunksize`` and sharded;
``time``, ``band``, ``y``, ``x`` coordinates; a rioxarray ``spatial_ref``; GeoZarr
``proj:``/``spatial:`` attributes; provenance and a commit marker under the
``rasterflow`` group attribute. Metadata is created first (by xarray, so any
xarray reader agrees with it), shards are written later by tasks, and the
marker flips to ``complete`` last, after metadata consolidation.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import socket
import uuid
import warnings
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyproj
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from pydantic import BaseModel, ConfigDict, ValidationError
from zarr.codecs import ZstdCodec
from zarr.errors import ZarrUserWarning

from ..errors import StoreError
from . import uris
from .grid import Grid
from .partitions import ShardShape, Window
from .provenance import stable_hash

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


class Marker(BaseModel):
    """The ``rasterflow`` attribute of a store: its state, its identity and its provenance.

    ``fingerprint`` says what the store is meant to hold (the request and its
    place in it); ``generation`` which writing of it this is: a store replaced
    under the same fingerprint gets a new one, and task cache keys include it.
    Provenance keys (workflow, parameters, inputs, ...) ride along as extras.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    status: Literal["writing", "complete"]
    generation: str
    fingerprint: str
    created: str | None = None
    completed: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    @property
    def identity(self) -> str:
        """What changes when the content does: a rebuilt store has a new generation."""
        return stable_hash([self.fingerprint, self.generation])


def start_marker(fingerprint: str, provenance: dict[str, Any]) -> Marker:
    """The marker of a store being written anew: a fresh generation, status 'writing'."""
    return Marker(status=WRITING, generation=uuid.uuid4().hex, fingerprint=fingerprint,
                  created=datetime.now(UTC).isoformat(), **provenance)


def adopted_generation(marker: Marker | None, fingerprint: str) -> str | None:
    """The generation to keep when what is there was written for ``fingerprint`` (a resumed run).

    The one rule behind every "adopt or start a generation": stores, pyramids
    and vectorize output folders alike. None: replace whatever is there.
    """
    return marker.generation if marker is not None and marker.fingerprint == fingerprint else None


def read_marker(uri: str, storage_options: dict[str, Any] | None = None) -> Marker | None:
    """The store's marker, or None if there is no rasterflow store at ``uri``."""
    try:
        # v3 only: rasterflow writes no other, so a v2 group is "not ours" (None), unprobed.
        group = zarr.open_group(zarr_store(uri, storage_options, read_only=True), mode="r", zarr_format=3)
    except (FileNotFoundError, ValueError, zarr.errors.GroupNotFoundError, zarr.errors.ContainsArrayError,
            zarr.errors.NodeTypeValidationError):
        return None  # nothing there, an array, or unreadable metadata (JSONDecodeError is a ValueError)
    return parse_marker(group.attrs.get(ATTR))


def parse_marker(value: Any) -> Marker | None:
    """A marker from its stored form; None when it is missing or not one of ours."""
    if not isinstance(value, dict):
        return None
    try:
        return Marker.model_validate(value)
    except ValidationError:
        return None


def store_identity(uri: str, storage_options: dict[str, Any] | None = None) -> str:
    """What changes when the store's content changes: the one identity of an input store.

    A complete rasterflow store is identified by its marker (fingerprint and
    generation); any other Zarr store by the size and modification stamp of
    every object in it.
    """
    marker = read_marker(uri, storage_options)
    if marker is not None and marker.complete:
        return marker.identity
    fs, path = uris.filesystem(uri, storage_options)
    listing = fs.find(path, detail=True)

    def stamp(info: dict[str, Any]) -> str:
        return str(info.get("ETag") or info.get("mtime") or info.get("LastModified") or "")

    return stable_hash(sorted((name[len(path):], info.get("size"), stamp(info))
                              for name, info in listing.items()))


# The zarr-conventions our attributes follow, at their published versions: spatial v0.1
# and proj v0.1 (geo-proj's repository became zarr-conventions/proj, tagged v0.1 there).
# The "v1" tags once copied from their READMEs never existed. tests/conventions/ holds
# copies of these schemas; the store tests validate every store against them.
PROJ_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/proj/refs/tags/v0.1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/proj/blob/v0.1/README.md",
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
    "name": "proj",
    "description": "Coordinate reference system information for geospatial data",
}
SPATIAL_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v0.1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/spatial/blob/v0.1/README.md",
    "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
    "name": "spatial",
    "description": "Spatial coordinate information",
}


def proj_attrs(crs_wkt: str) -> dict[str, Any]:
    """``proj:wkt2`` always (proj v0.1: writers SHOULD, it needs no CRS database), and
    ``proj:code`` when the CRS is exactly an authority's code."""
    crs = pyproj.CRS.from_user_input(crs_wkt)
    code = crs.to_authority(min_confidence=100)
    return ({"proj:code": f"{code[0]}:{code[1]}"} if code else {}) | {"proj:wkt2": crs.to_wkt("WKT2_2019")}


def _geozarr_attrs(grid: Grid) -> dict[str, Any]:
    return proj_attrs(grid.crs) | {
        "zarr_conventions": [PROJ_CONVENTION, SPATIAL_CONVENTION],
        "spatial:dimensions": ["y", "x"],
        "spatial:transform": list(grid.transform),
        "spatial:shape": [grid.height, grid.width],
        "spatial:bbox": list(grid.bounds),
        "spatial:registration": "pixel",
    }


def _template(spec: StoreSpec) -> xr.Dataset:
    """The store's metadata as a lazy dataset; ``to_zarr(compute=False)`` writes it and no pixel.

    One dask chunk per time slice, not per shard: nothing is ever computed,
    and a graph of a task per shard (52,000 for Sentinel-2 over the
    contiguous US) took xarray tens of seconds and hundreds of MB to build
    and throw away.
    """
    import dask.array as da  # only to declare a new store's array lazily (a cached call never does)

    grid = spec.grid
    nb, nt = len(spec.bands), len(spec.times)
    data = da.zeros((nt, nb, grid.height, grid.width), dtype=spec.dtype, chunks=(1, nb, -1, -1))
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
    spec: StoreSpec, fingerprint: str, provenance: dict[str, Any],
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Create (or adopt) the store's metadata; returns its generation id.

    A store already at ``spec.uri`` with the same ``fingerprint`` is adopted with
    its generation, so a re-run after a crash keeps the shards it has; anything
    else there is replaced and gets a new generation. Task cache keys include the
    generation, so a deleted or replaced store never serves stale cache hits.
    """
    with uris.creating(spec.uri):
        return _create_store(spec, fingerprint, provenance, storage_options)


def _create_store(spec: StoreSpec, fingerprint: str, provenance: dict[str, Any],
                  storage_options: dict[str, Any] | None) -> str:
    generation = adopted_generation(read_marker(spec.uri, storage_options), fingerprint)
    if generation is not None:
        return generation
    ds = _template(spec)  # before removing anything: a bad spec must not cost the old store
    uris.remove(spec.uri, storage_options)
    marker = start_marker(fingerprint, provenance)
    ds.attrs = _geozarr_attrs(spec.grid) | {ATTR: marker.model_dump(mode="json", exclude_none=True)}
    c = spec.shard.chunk
    # On the variable's own encoding, beside rioxarray's grid_mapping.
    ds[DATA_VAR].encoding.update(
        chunks=(1, len(spec.bands), c, c),
        shards=(1, len(spec.bands), spec.shard.rows, spec.shard.cols),
        fill_value=np.asarray(spec.nodata, dtype=spec.dtype).item(),
        compressors=[ZstdCodec(level=3)],
    )
    ds.to_zarr(zarr_store(spec.uri, storage_options), mode="w", compute=False, zarr_format=3,
               consolidated=False)
    return marker.generation


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


def partial_path(path: str) -> str:
    """A writer's temporary file beside ``path``, renamed onto it when whole.

    Named by its process and host, so a commit can tell the files of writers
    that died (SIGKILL, out of memory) from those of a live concurrent run.
    """
    return f"{path}.{uuid.uuid4().hex[:16]}.{os.getpid()}@{socket.gethostname()}.partial"


def remove_dead_partials(uri: str) -> int:
    """Remove the temporary files of a local store's dead writers on this host; how many.

    Object stores need nothing: an upload is visible only when committed, and
    an abandoned multipart upload is the bucket's lifecycle rules' to expire.
    """
    if not uris.is_local(uri):
        return 0
    host, removed = socket.gethostname(), 0
    pattern = os.path.join(glob.escape(uris.local_path(uri)), "**", "*.partial")
    for path in glob.iglob(pattern, recursive=True):
        pid, _, at = path.removesuffix(".partial").rsplit(".", 1)[-1].partition("@")
        if at == host and pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def commit_store(uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Consolidate metadata, then mark the store complete (the last write).

    Committing a complete store changes nothing: it was adopted with the same
    fingerprint, so its content is what it was, and keeping ``completed``
    keeps the identity that downstream workflows' cache keys are built on.
    """
    marker = read_marker(uri, storage_options)
    if marker is not None and marker.complete:
        return
    remove_dead_partials(uri)  # a killed run's half-written shards, rewritten whole by this one
    store = zarr_store(uri, storage_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZarrUserWarning)  # consolidated metadata is not in the v3 spec yet
        zarr.consolidate_metadata(store)
    group = zarr.open_group(store, mode="r+", zarr_format=3)
    marked = group.attrs[ATTR]
    assert isinstance(marked, dict)  # the marker read above: a JSON object
    record = dict(marked)
    record.update(status=COMPLETE, completed=datetime.now(UTC).isoformat())
    group.attrs[ATTR] = record


def open_store(uri: str, storage_options: dict[str, Any] | None = None) -> xr.Dataset:
    """Open a complete rasterflow store with xarray; refuse incomplete ones."""
    check_complete(uri, read_marker(uri, storage_options))
    return xr.open_zarr(zarr_store(uri, storage_options, read_only=True), consolidated=True, zarr_format=3)


def check_complete(uri: str, marker: Marker | None) -> Marker:
    if marker is None:
        raise StoreError(f"{uri}: not a rasterflow Zarr store (no '{ATTR}' attribute or no store at all)")
    if not marker.complete:
        raise StoreError(
            f"{uri}: store is incomplete (status {marker.status!r}); its workflow did not "
            "finish. Re-run the same call to resume it."
        )
    return marker


class StoreDescription(BaseModel):
    """A complete rasterflow store as the workflows that read one see it."""

    model_config = ConfigDict(frozen=True)

    uri: str
    identity: str  # Marker.identity: a rebuilt store is another input
    grid: Grid
    bands: list[str]
    times: list[str | None]  # ISO timestamps; None for the single ungrouped (NaT) slot
    dtype: str
    nodata: float
    chunk: tuple[int, int]  # rows, cols of a chunk
    skip_xy_coords: bool

    def band_indexes(self, names: list[str], param: str) -> list[int]:
        """Positions of ``names`` among the bands; an error naming ``param`` when some are missing."""
        from ..errors import InvalidParameterError

        missing = [n for n in names if n not in self.bands]
        if missing:
            raise InvalidParameterError(param, names, f"{missing} not among the bands of {self.uri}",
                                        f"bands of that store: {self.bands}")
        return [self.bands.index(n) for n in names]


def planned_description(spec: StoreSpec, identity: str) -> StoreDescription:
    """What ``describe_store`` will say of the store ``spec`` once written (for plans made before)."""
    return StoreDescription(uri=spec.uri, identity=identity, grid=spec.grid, bands=list(spec.bands),
                            times=list(spec.times), dtype=spec.dtype, nodata=spec.nodata,
                            chunk=(spec.shard.chunk, spec.shard.chunk), skip_xy_coords=spec.skip_xy_coords)


def describe_store(uri: str, storage_options: dict[str, Any] | None = None) -> StoreDescription:
    """What a complete rasterflow store holds, from its metadata (no pixel is read)."""
    marker = check_complete(uri, read_marker(uri, storage_options))
    ds = xr.open_zarr(zarr_store(uri, storage_options, read_only=True), consolidated=True, zarr_format=3)
    if DATA_VAR not in ds:
        ds.close()
        if "multiscales" in ds.attrs:
            raise StoreError(f"{uri}: a multiscales pyramid (build_zarr_multiscales' output), not one store; "
                             f"give one of its levels, e.g. {uris.join(uri, '0')} (full resolution)")
        raise StoreError(f"{uri}: holds no {DATA_VAR!r} array")
    try:
        array = open_data_array(uri, storage_options)
        attrs = ds.attrs
        nodata = array.attrs.get("nodata", array.fill_value)
        return StoreDescription(
            uri=uri, identity=marker.identity,
            grid=Grid(crs=ds[DATA_VAR].rio.crs.to_wkt(), transform=tuple(attrs["spatial:transform"]),
                      width=int(attrs["spatial:shape"][1]), height=int(attrs["spatial:shape"][0])),
            bands=[str(b) for b in ds["band"].values],
            times=[None if pd.isna(t) else pd.Timestamp(t).isoformat() for t in ds["time"].values],
            dtype=str(array.dtype), nodata=math.nan if nodata is None else float(nodata),
            chunk=(int(array.chunks[-2]), int(array.chunks[-1])), skip_xy_coords="x" not in ds.coords,
        )
    finally:
        ds.close()
