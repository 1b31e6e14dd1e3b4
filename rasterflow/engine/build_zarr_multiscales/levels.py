"""The work of build-shard, build-levels and count-shard: levels built partition by partition.

Level L+1 is built from level L, one task per partition of level L+1 (whole
shards), each chunk from the 2x window of level L under it, chunks computed on
every core and streamed into their shards (``shards``); level 0 copies the input
(its shard objects byte for byte when the layouts agree, else decoded and
re-encoded). Each task summarizes the level-0 pixels it holds (``stats``) in
its ``LevelSummary``, which ``statistics`` merges.
"""

from __future__ import annotations

import functools
import math
import shutil
import threading
from typing import Any

import numpy as np
import zarr
from pydantic import BaseModel, ConfigDict

from .. import uris
from ..partitions import Window
from ..shards import write_shards
from ..store import DATA_VAR, open_data_array, write_window, zarr_store
from .downsample import halve, valid_mask
from .plan import LevelChain, LevelJob, tallied
from .source import MAX_SHARD_BYTES, layout, read_source
from .stats import Bins, Moments, ValueCounts, band_counts, band_moments, pack_counts, value_counts


class LevelSummary(BaseModel):
    """What a level task reports (and caches): the level-0 pixels it summarized, what it wrote.

    ``moments`` or ``values`` summarize level 0 (moments for most types,
    per-value counts for 8- and 16-bit integers); ``counts`` are histogram
    counts into the pyramid's bins (packed, ``stats.pack_counts``).
    """

    model_config = ConfigDict(frozen=True)

    key: str
    time_index: int
    valid_values: int | list[int] | None = None  # written (a chain: per level; None: copied, not decoded)
    moments: list[Moments] | None = None
    values: list[ValueCounts] | None = None
    counts: list[str | None] | None = None


def build_level_shard(job: LevelJob, bins: list[Bins | None] | None = None,
                      storage_options_for: uris.OptionsFor = uris.no_options,
                      threads: int | None = None) -> LevelSummary:
    """Build one partition of a level, chunk by chunk on every core, and write its shards whole.

    The level-0 pixels it holds are summarized per band (module docstring):
    per-value counts with ``job.tally``, else the moments at level 0, else
    histogram counts into ``bins`` when given (level 1). Chunks without data
    are not written: they read as the fill value, which is nodata.
    """
    for copy in job.copies:
        build_level_shard(copy, None, storage_options_for, threads)
    out_options = storage_options_for(job.store_uri)
    # A copied level 0 of 8- or 16-bit integers is tallied by whoever reads it next (level 1, or
    # the count pass), even when the copy falls back to decoding: never twice.
    summarize = not (job.copy_shards and tallied(job.dtype))
    if job.level == 0 and job.copy_shards and _copy_shards(job, storage_options_for):
        if not summarize:
            return LevelSummary(key=job.key, time_index=job.time_index)
        moments = _window_moments(job, out_options)
        return LevelSummary(key=job.key, time_index=job.time_index, moments=moments,
                            valid_values=sum(m.count for m in moments))
    if job.level == 0:
        kind = ("values" if job.tally else "moments") if summarize else None
    else:
        kind = "values" if job.tally else "counts" if bins is not None else None
    summaries = ChunkSummaries(kind, job.nodata, bins)
    n_valid = write_shards(job.store_uri, job.time_index, job.window,
                           _render_level(job, summaries, storage_options_for), out_options, threads)
    return LevelSummary(key=job.key, time_index=job.time_index, valid_values=n_valid, **summaries.merged())


def _render_level(job: LevelJob, summaries: ChunkSummaries, storage_options_for: uris.OptionsFor):
    """One chunk of a level: level 0 read from the input, others halved from the 2x window below."""
    def render(chunk: Window) -> np.ndarray:
        if job.level == 0:
            assert job.source is not None
            data = read_source(job.source, job.time_index, chunk, storage_options_for(job.source.uri))
            data = data.astype(job.dtype, copy=False)
            summaries.add(chunk, data)
            return data
        assert job.previous_uri is not None and job.source_window is not None
        below = Window(row0=2 * chunk.row0, row1=min(2 * chunk.row1, job.source_window.row1),
                       col0=2 * chunk.col0, col1=min(2 * chunk.col1, job.source_window.col1))
        source = read_level(job.previous_uri, job.time_index, below, storage_options_for(job.previous_uri))
        summaries.add(chunk, source)
        return halve(source, job.nodata, job.methods)

    return render


class ChunkSummaries:
    """The level-0 pixels of a partition's chunks summarized per band, as chunks finish.

    ``kind``: "values" (per-value counts), "moments", "counts" (into ``bins``)
    or None. Integer counts add up as they come; moments are merged in chunk
    order at the end, so the result does not depend on which thread finished
    first.
    """

    def __init__(self, kind: str | None, nodata: float, bins: list[Bins | None] | None = None):
        self.kind, self.nodata, self.bins = kind, nodata, bins
        self._lock = threading.Lock()
        self._sums: list[np.ndarray | None] | None = None  # per band: per-value or histogram counts
        self._offset = 0  # of the per-value counts (the type's: 0, or -32768 for int16)
        self._moments: dict[tuple[int, int], list[Moments]] = {}

    def add(self, chunk: Window, data: np.ndarray) -> None:
        if self.kind == "moments":
            moments = [band_moments(band, self.nodata) for band in data]
            with self._lock:
                self._moments[(chunk.row0, chunk.col0)] = moments
        elif self.kind == "values":
            tallies = [value_counts(band, self.nodata) for band in data]
            self._add([t[0] for t in tallies if t is not None], tallies[0][1] if tallies[0] else 0)
        elif self.kind == "counts":
            assert self.bins is not None
            self._add([band_counts(band, self.nodata, b) if b is not None else None
                       for band, b in zip(data, self.bins, strict=True)])

    def _add(self, parts: list[np.ndarray | None], offset: int = 0) -> None:
        with self._lock:
            self._offset = offset
            if self._sums is None:
                self._sums = parts
                return
            for total, part in zip(self._sums, parts, strict=True):
                if total is not None and part is not None:
                    total += part

    def merged(self) -> dict[str, Any]:
        """The LevelSummary fields: ``values``, ``moments`` or ``counts``."""
        if self.kind == "moments":
            per_chunk = [self._moments[k] for k in sorted(self._moments)]
            return {"moments": [functools.reduce(Moments.merge, band)
                                for band in zip(*per_chunk, strict=True)]}
        if self.kind == "values":
            return {"values": [ValueCounts.trimmed(part, self._offset) for part in self._sums or []
                               if part is not None]}
        if self.kind == "counts":
            return {"counts": [pack_counts(part) if part is not None else None for part in self._sums or []]}
        return {}


def build_level_chain(chain: LevelChain,
                      storage_options_for: uris.OptionsFor = uris.no_options) -> LevelSummary:
    """Build the chain's levels from one read of the level before its first, each from the last, in memory."""
    first = chain.jobs[0]
    assert first.previous_uri is not None and first.source_window is not None
    data = read_level(first.previous_uri, first.time_index, first.source_window,
                      storage_options_for(first.previous_uri))
    written = []
    for job in chain.jobs:
        data = halve(data, job.nodata, job.methods)
        n_valid = int(np.count_nonzero(valid_mask(data, job.nodata)))
        if n_valid:
            write_window(job.store_uri, job.time_index, job.window, data, storage_options_for(job.store_uri))
        written.append(n_valid)
    return LevelSummary(key=chain.key, time_index=first.time_index, valid_values=written)


def _copy_shards(job: LevelJob, storage_options_for: uris.OptionsFor) -> bool:
    """Copy the input's shard objects of ``job.window`` into level 0, byte for byte.

    Only when both arrays have one layout (shape, type, chunks, shards, codecs,
    fill value); returns False otherwise, and the caller decodes and re-encodes.
    A shard the input never wrote is not copied: both read it as the fill value.
    """
    assert job.source is not None
    src_uri, dst_uri = job.source.uri, job.store_uri
    src_options, dst_options = storage_options_for(src_uri), storage_options_for(dst_uri)
    src = zarr.open_array(zarr_store(src_uri, src_options, read_only=True), path=DATA_VAR, mode="r")
    dst = open_data_array(dst_uri, dst_options)
    if layout(src) != layout(dst):
        return False
    assert dst.shards is not None  # rasterflow stores are sharded
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
    assert job.source is not None and job.source.shard is not None
    width = job.window.col1 - job.window.col0
    chunk = job.source.shard.chunk
    row_bytes = width * len(job.methods) * np.dtype(job.dtype).itemsize
    step = max(chunk, MAX_SHARD_BYTES // max(row_bytes, 1) // chunk * chunk)
    moments = [Moments() for _ in job.methods]
    for r in range(job.window.row0, job.window.row1, step):
        strip = Window(row0=r, row1=min(r + step, job.window.row1), col0=job.window.col0,
                       col1=job.window.col1)
        data = read_level(job.store_uri, job.time_index, strip, storage_options)
        moments = [m.merge(band_moments(band, job.nodata)) for m, band in zip(moments, data, strict=True)]
    return moments


def count_level_shard(job: LevelJob, bins: list[Bins | None] | None,
                      storage_options_for: uris.OptionsFor = uris.no_options) -> LevelSummary:
    """A level-0 partition already written, summarized (pyramids of one level).

    Histogram counts into ``bins``; per-value counts when there are no bins
    (8- and 16-bit integers, whose copied level 0 nobody has read yet).
    """
    data = read_level(job.store_uri, job.time_index, job.window, storage_options_for(job.store_uri))
    summaries = ChunkSummaries("values" if bins is None else "counts", job.nodata, bins)
    summaries.add(job.window, data)
    return LevelSummary(key=job.key, time_index=job.time_index, **summaries.merged())


def read_level(uri: str, time_index: int, window: Window,
               storage_options: dict[str, Any] | None) -> np.ndarray:
    array = open_data_array(uri, storage_options)
    return np.asarray(array[time_index, :, window.row0 : window.row1, window.col0 : window.col1])
