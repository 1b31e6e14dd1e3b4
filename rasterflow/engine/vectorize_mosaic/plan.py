"""Planning vectorize-mosaic: the stores described, the settings every block shares, the groups.

A block is ``xy_block_multiplier`` chunks on a side and bounds a thread's
memory; a polygonize task takes a group of neighbouring blocks sized by
``task_pixels`` (``engine.groups``), so the plan holds one job per group,
never one per block. Nothing is written while planning. ``create_output``
then adopts the request's output folder (a resumed run keeps its parts) or
starts it under a new generation, which every cache key of the request
includes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from pyproj import CRS

from ...errors import InvalidParameterError, StoreError
from .. import uris
from ..grid import Grid
from ..groups import DEFAULT_TASK_PIXELS, BlockGrid, blocks_of, group_sides
from ..index import stores_of
from ..partitions import Window
from ..plan import PlanReport, Rate, WorkflowPlan
from ..provenance import output_dir, provenance, request_id
from ..store import Marker, adopted_generation, describe_store, parse_marker, start_marker
from .request import VectorizeMosaicRequest

WORKFLOW = "vectorize-mosaic"
RESULT_NAME = "polygons.parquet"
RECORD_NAME = "request.json"
# Measured on the bundled samples (benchmarks/dry_run_estimates.py); unit: store pixels x features x times.
RATE = Rate(run_seconds=1.5, task_seconds=0.08, megapixels_per_second=8.0,
            unit="store pixels x features x time slices")


class SourceStore(BaseModel):
    """One input store as the vectorizer sees it."""

    model_config = ConfigDict(frozen=True)

    uri: str
    identity: str  # the store's marker identity: a replaced store is another input
    grid: Grid
    bands: list[str]
    times: list[str | None]
    nodata: float
    dtype: str
    feature_indexes: list[int]  # of the features, in the store's band order
    block: tuple[int, int]  # rows, cols of a block: xy_block_multiplier chunks


class VectorizeSettings(BaseModel):
    """What every block of one request shares."""

    model_config = ConfigDict(frozen=True)

    features: list[str]
    threshold: float
    connectivity: int
    stats: bool
    min_area: float  # squared units of the store's CRS
    simplify_tolerance: float  # units of the store's CRS
    output_crs: str  # vector_crs, or the stores' own
    with_time: bool  # some store has more than one time slice


class PolygonizeJob(BaseModel):
    """A group of neighbouring blocks of one store and time slice: the unit of a polygonize task."""

    model_config = ConfigDict(frozen=True)

    key: str
    part_uri: str
    store_index: int
    store: SourceStore
    time_index: int
    window: Window  # the group's: whole blocks, starting on the block grid

    @property
    def name(self) -> str:
        return f"s{self.store_index}-t{self.time_index}-{group_id(self.window)}"

    @property
    def blocks(self) -> list[Window]:
        return blocks_of(self.window, *self.store.block)


def group_id(window: Window) -> str:
    """A group's name: its corner and size, so groupings of other sizes never share a name."""
    rows, cols = window.shape
    return f"{window.id}-{rows}x{cols}"


class VectorizePlan(WorkflowPlan):
    result_uri: str
    stores: list[SourceStore]
    settings: VectorizeSettings
    jobs: list[PolygonizeJob]

    def report(self, workers: int) -> PlanReport:
        """What the run would do, for a dry run: a polygonize task per group of blocks, one merge; the
        polygons (what it writes) are unknown until the pixels are read."""
        n = len(self.settings.features)
        pixels = sum(job.window.shape[0] * job.window.shape[1] * n for job in self.jobs)
        itemsize = {s.uri: np.dtype(s.dtype).itemsize for s in self.stores}
        return self.reported(
            RATE, workers, tasks={"polygonize": len(self.jobs), "create-output": 1, "merge-parquet": 1},
            parallel=sum(len(job.blocks) for job in self.jobs), pixels=pixels,  # blocks run side by side
            bytes_read=sum(job.window.shape[0] * job.window.shape[1] * n * itemsize[job.store.uri]
                           for job in self.jobs),
            bytes_written=None, inputs=[s.uri for s in self.stores], stores=[], answer=self.result_uri,
        )


def block_windows(height: int, width: int, rows: int, cols: int) -> list[Window]:
    """The raster cut into blocks of ``rows`` x ``cols`` (smaller at the far edges)."""
    return [
        Window(row0=r, row1=min(r + rows, height), col0=c, col1=min(c + cols, width))
        for r in range(0, height, rows)
        for c in range(0, width, cols)
    ]


def source_store(uri: str, features: list[str], multiplier: int,
                 storage_options: dict[str, Any]) -> SourceStore:
    try:
        store = describe_store(uri, storage_options)
    except StoreError as exc:
        raise InvalidParameterError(
            "store", uri, str(exc), "a complete rasterflow store, or an index GeoParquet listing them"
        ) from None
    chunk_rows, chunk_cols = store.chunk
    return SourceStore(
        uri=uri, identity=store.identity, grid=store.grid, bands=store.bands, times=store.times,
        nodata=store.nodata, dtype=store.dtype, feature_indexes=store.band_indexes(features, "features"),
        block=(chunk_rows * multiplier, chunk_cols * multiplier),
    )


def _output_crs(request: VectorizeMosaicRequest, stores: list[SourceStore]) -> str:
    if request.vector_crs is not None:
        return request.vector_crs
    crss = {CRS.from_wkt(s.grid.crs) for s in stores}
    if len(crss) > 1:
        raise InvalidParameterError(
            "vector_crs", None,
            f"the stores are in {len(crss)} different CRSs, and None keeps each store's own",
            "one CRS for all of them, e.g. 'EPSG:4326'",
        )
    return stores[0].grid.crs


def plan_vectorize(
    request: VectorizeMosaicRequest, output_root: str, storage_options_for: uris.OptionsFor = uris.no_options,
    task_pixels: int = DEFAULT_TASK_PIXELS, slots: int = 1,
) -> VectorizePlan:
    """Check the inputs and lay out the groups of blocks (``engine.groups``); writes nothing."""
    uris.check_output_root(output_root, storage_options_for(output_root))
    store_uris = stores_of(request.store, storage_options_for(request.store))
    stores = [source_store(u, request.features, request.xy_block_multiplier, storage_options_for(u))
              for u in store_uris]
    config = request.vectorize_config
    settings = VectorizeSettings(
        features=list(request.features), threshold=request.threshold, connectivity=config.connectivity,
        stats=config.stats, min_area=config.min_area, simplify_tolerance=config.simplify_tolerance,
        output_crs=_output_crs(request, stores), with_time=any(len(s.times) > 1 for s in stores),
    )
    rid = request_id(params=request.fingerprint_parameters(), stores=[(s.uri, s.identity) for s in stores])
    out = output_dir(output_root, WORKFLOW, rid)
    grids = [BlockGrid(s.grid.height, s.grid.width, *s.block, count=len(s.times)) for s in stores]
    sides = group_sides(grids, task_pixels, slots)
    jobs = [
        PolygonizeJob(
            key=f"{rid[:16]}-s{i}-t{t}-{group_id(w)}",
            part_uri=uris.join(out, "parts", f"s{i}-t{t}-{group_id(w)}.parquet"),
            store_index=i, store=s, time_index=t, window=w,
        )
        for i, (s, grid, side) in enumerate(zip(stores, grids, sides, strict=True))
        for t in range(len(s.times))
        for _, w in grid.groups(side)
    ]
    inputs = {"store": request.store, "stores": [s.uri for s in stores]}
    return VectorizePlan(
        workflow=WORKFLOW, request_id=rid, output_dir=out, result_uri=uris.join(out, RESULT_NAME),
        stores=stores, settings=settings, jobs=jobs,
        provenance=provenance(WORKFLOW, request.fingerprint_parameters(), inputs, rid),
    )


def _read_record(uri: str, storage_options: dict[str, Any] | None) -> Marker | None:
    try:
        with uris.open_input(uri, storage_options) as fh:
            return parse_marker(json.load(fh))
    except (FileNotFoundError, ValueError):
        return None


def create_output(plan: VectorizePlan, storage_options: dict[str, Any] | None = None) -> str:
    """Adopt the request's output folder or start it; returns its generation id.

    The folder's ``request.json`` is its marker, as a store's attribute is. The
    generation goes into every cache key, so deleting the folder also retires
    the cached block results that pointed into it (as store generations do for
    build-shard).
    """
    uri = uris.join(plan.output_dir, RECORD_NAME)
    with uris.creating(uri):
        generation = adopted_generation(_read_record(uri, storage_options), plan.request_id)
        if generation is not None:
            return generation
        marker = start_marker(plan.request_id, plan.provenance)
        record = marker.model_dump(mode="json", exclude_none=True)
        uris.write_bytes_atomic(uri, json.dumps(record, indent=1, default=str).encode(), storage_options)
        return marker.generation
