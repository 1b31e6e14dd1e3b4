"""Overview pyramids in the Zarr multiscales layout (build_zarr_multiscales).

Per input store, a new Zarr v3 group (the input is only ever read)::

    <output_uri>/build-zarr-multiscales/<request id>/<name>.zarr
        zarr.json   multiscales layout, proj:/spatial: attributes, band
                    statistics, provenance and the commit marker
        0/          level 0: the input's pixels
        1/          level 1: half the resolution of level 0, same origin
        ...

Every level is a complete store of the store contract (``engine.store``), so
``xr.open_zarr(root + "/1")`` gives rioxarray its CRS and transform, and a
multiscales-aware reader picks a level by resolution from the root's
``multiscales.layout`` (``spatial:transform`` and ``spatial:shape`` per level,
zarr-conventions/multiscales v0.1 with zarr-conventions/spatial and proj v0.1).

Level L+1 is built from level L, one task per partition of level L+1 (whole
shards); each of its chunks reads the 2x window of level L under it, on every
core, so memory is bounded by chunks per thread, never by the size of the area. Level 0 copies the
input (its shard objects byte for byte when ``create_store`` would write the
same array layout, else decoded and re-encoded); level 1 then reads the input
itself (the same bytes), so it need not wait for the copy, and where nothing
else waits for level 0 (see statistics) each level-1 task also copies the
level-0 shards under it: a file copy is not worth a task. The last levels,
each one partition, are one chain: one read of the level before them, every
further level halved in memory (``LevelChain``).

Statistics (``stats``) are computed over level 0 by the task that first
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
from typing import Any

import numpy as np
from affine import Affine
from pydantic import BaseModel, ConfigDict

from ...enums import ResamplingMethod
from ...errors import InvalidParameterError
from .. import uris
from ..grid import Grid
from ..index import store_row, stores_of
from ..partitions import Window, partition_windows, shard_shape
from ..plan import PlanReport, Rate, WorkflowPlan
from ..provenance import output_dir, provenance, request_id, stable_hash
from ..store import StoreSpec
from .downsample import halved_shape
from .request import BuildZarrMultiscalesRequest
from .source import MAX_SHARD_BYTES, Source, SourceSpec, inspect_source

WORKFLOW = "build-zarr-multiscales"
# Every task reads about the same: a level-0 partition copies up to 4 shards;
# any other partition is one shard, read from 4 shards' worth of the level before.
LEVEL0_PARTITION_SHARDS = 4
# Measured on the bundled samples (benchmarks/dry_run_estimates.py); unit: pixels x bands of every level.
RATE = Rate(run_seconds=2.0, task_seconds=0.08, megapixels_per_second=30.0,
            unit="pixels x bands x time slices of every level")
# The multiscales convention's names for our kernels.
CONVENTION_METHOD = {ResamplingMethod.AVERAGE: "average", ResamplingMethod.NEAREST: "nearest",
                     ResamplingMethod.MODE: "mode"}


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


class MultiscalesPlan(WorkflowPlan):
    pyramids: list[PyramidPlan]
    from_store: bool = False  # asked for one store (not an index of stores): the answer is its pyramid

    def answer(self) -> str:
        """What the workflow returns: the pyramid's root for a store, the index for an index of stores.

        RasterFlow's reference answers a store with "the generated multiscale
        Zarr store", so ``zarr.open_group(answer)`` works; an index of stores
        gets an index of pyramids, as every other workflow answers one.
        """
        return self.pyramids[0].uri if self.from_store else self.index_uri

    def index_rows(self) -> list[dict[str, Any]]:
        """One index row per pyramid; ``location`` is its root group."""
        return [store_row(p.base, self.workflow, p.footprint_wkb, location=p.uri, source=p.input_uri,
                          levels=len(p.levels)) for p in self.pyramids]

    @property
    def n_levels(self) -> int:
        return max(len(p.levels) for p in self.pyramids)

    def report(self, workers: int) -> PlanReport:
        """What the run would do, for a dry run: the flow's task runs by name, every level's pixels."""
        from .stages import stages  # it walks these plans

        names = {"shard": "build-shard", "count": "count-shard", "chain": "build-levels"}
        tasks: dict[str, int] = {"create-store": len(self.pyramids)}
        for stage in stages(self.pyramids):
            for work in stage.work:
                tasks[names[work.kind]] = tasks.get(names[work.kind], 0) + 1
            tasks["merge-statistics"] = tasks.get("merge-statistics", 0) + len(stage.bins_after)
        tasks["commit-store"] = len(self.pyramids)
        pixels = read = 0
        for pyramid in self.pyramids:
            bands, itemsize = len(pyramid.base.bands), np.dtype(pyramid.base.dtype).itemsize
            for level in pyramid.levels:
                for job in level.jobs:
                    pixels += job.window.shape[0] * job.window.shape[1] * bands
                    source = job.source_window or job.window
                    read += source.shape[0] * source.shape[1] * bands * itemsize
        work_tasks = sum(n for name, n in tasks.items() if name in names.values())
        return self.reported(
            RATE, workers, tasks=tasks, parallel=work_tasks, pixels=pixels, bytes_read=read,
            bytes_written=sum(lvl.spec.grid.width * lvl.spec.grid.height * len(lvl.spec.bands)
                              * len(lvl.spec.times) * np.dtype(lvl.spec.dtype).itemsize
                              for p in self.pyramids for lvl in p.levels),
            inputs=list(self.provenance["inputs"]["stores"]), answer=self.answer(),
            stores=[lvl.spec for p in self.pyramids for lvl in p.levels],
        )


def _methods(request: BuildZarrMultiscalesRequest, source: Source) -> list[ResamplingMethod]:
    """Per band: the user's choice, else mode for categorical bands and average for the rest."""
    def default(band: str) -> ResamplingMethod:
        return ResamplingMethod.MODE if band in source.categorical else ResamplingMethod.AVERAGE

    chosen = request.resampling
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


def level_shapes(height: int, width: int, chunk: int, levels: int | None,
                 uri: str = "") -> list[tuple[int, int]]:
    """(height, width) of every level: down to one chunk, or ``levels`` of them."""
    shapes = [(height, width)]
    while (levels is None and max(shapes[-1]) > chunk) or (levels is not None and len(shapes) < levels):
        if shapes[-1] == (1, 1):
            raise InvalidParameterError(
                "levels", levels,
                f"is more than {uri or 'the store'} allows: level {len(shapes) - 1} is one pixel",
                f"1 to {len(shapes)} for a {height} x {width} grid, or None (down to one {chunk} px chunk)",
            )
        shapes.append(halved_shape(*shapes[-1]))
    return shapes


def _store_names(uris_: list[str]) -> list[str]:
    """Output names from the inputs' names, made unique."""
    stems = [u.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zarr") or "store" for u in uris_]
    return [f"{s}.zarr" if stems.count(s) == 1 else f"{s}-{i}.zarr" for i, s in enumerate(stems)]


def plan_multiscales(
    request: BuildZarrMultiscalesRequest, output_root: str,
    storage_options_for: uris.OptionsFor = uris.no_options,
) -> MultiscalesPlan:
    """Every check that needs the inputs, then the levels and partitions; writes nothing."""
    uris.check_output_root(output_root, storage_options_for(output_root))
    stores = stores_of(request.store, storage_options_for(request.store))
    sources = [inspect_source(uri, storage_options_for(uri)) for uri in stores]
    shapes = [level_shapes(s.grid.height, s.grid.width, s.chunk, request.levels, s.uri) for s in sources]
    methods = [_methods(request, s) for s in sources]

    rid = request_id(params=request.fingerprint_parameters(), stores=[(s.uri, s.identity) for s in sources])
    out = output_dir(output_root, WORKFLOW, rid)
    names = _store_names(stores)
    pyramids = [
        _plan_pyramid(sources[i], shapes[i], methods[i], uris.join(out, names[i]), stable_hash([rid, i]))
        for i in range(len(sources))
    ]
    inputs = {"store": request.store, "stores": stores}
    return MultiscalesPlan(workflow=WORKFLOW, request_id=rid, output_dir=out, pyramids=pyramids,
                           from_store=stores == [request.store],
                           provenance=provenance(WORKFLOW, request.fingerprint_parameters(), inputs, rid))


def _plan_pyramid(source: Source, shapes: list[tuple[int, int]], methods: list[ResamplingMethod],
                  uri: str, fingerprint: str) -> PyramidPlan:
    base = source.grid.affine
    bytes_per_pixel = len(source.bands) * np.dtype(source.dtype).itemsize
    chunk_bytes = source.chunk * source.chunk * bytes_per_pixel
    budget = min(MAX_SHARD_BYTES, max(source.shard_bytes, chunk_bytes))
    tally = tallied(source.dtype)
    levels: list[LevelPlan] = []
    for level, (height, width) in enumerate(shapes):
        scale = 2**level
        grid = Grid(crs=source.grid.crs, transform=tuple(base * Affine.scale(scale))[:6], width=width,
                    height=height)
        shard = source.spec.shard if level == 0 else None  # level 0 takes the input's shards
        copy_shards = shard is not None
        if shard is None:
            shard = shard_shape(height, width, bytes_per_pixel, source.chunk, budget)
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
    rows = sorted({_source_window(j).row0 for j in jobs})
    cols = sorted({_source_window(j).col0 for j in jobs})
    by_corner = {(j.time_index, _source_window(j).row0, _source_window(j).col0): j for j in jobs}
    folded: dict[str, list[LevelJob]] = {j.key: [] for j in jobs}
    for c in copies:
        corner = (c.time_index, rows[bisect.bisect_right(rows, c.window.row0) - 1],
                  cols[bisect.bisect_right(cols, c.window.col0) - 1])
        owner = by_corner.get(corner)
        if owner is None or not _inside(c.window, _source_window(owner)):
            return jobs
        folded[owner.key].append(c)
    return [job.model_copy(update={"copies": folded[job.key]}) for job in jobs]


def _source_window(job: LevelJob) -> Window:
    assert job.source_window is not None  # jobs above level 0 read a window of the level below
    return job.source_window


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
