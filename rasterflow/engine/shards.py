"""Writing shards whole, chunk by chunk, on every core, with memory bounded by chunks.

A shard is the unit one task writes, in one object, once (partitions.py); a
chunk is the unit of work inside it. ``write_shards`` computes the chunks of
each shard of a window in a thread pool of the process's cores (GDAL warps,
numpy and zstd release the GIL), encodes each chunk as soon as it is done, and
streams the encoded chunks into the shard object in a fixed order, then the
shard index. Only a few chunks per thread are ever in memory, never the shard:
RasterFlow's default shard is 3.5 GB.

The bytes are those zarr-python writes for the same array in one call
(``array[window] = data``): inner chunks encoded by the array's own codec
pipeline, in Morton order, chunks equal to the fill value left out, edge
chunks padded with the fill value, and the index encoded by the sharding
codec's index codecs at the end (tests/engine/test_shards.py compares them
byte for byte). zarr-python has no public API to build a shard piecewise, so
this uses its sharding codec's helpers (zarr is pinned below 3.2 for that).

The object is written like a file and appears whole: a local shard is written
next to its place and renamed into it, an object-store shard is one multipart
upload committed at the end (aborted on failure).
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from zarr.codecs.sharding import MAX_UINT_64, ShardingCodec, _ShardIndex
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.buffer.cpu import NDBuffer
from zarr.core.indexing import morton_order_iter
from zarr.core.sync import sync

from . import uris
from .partitions import Window
from .store import DATA_VAR, open_data_array, partial_path

# Chunks in flight per thread: one being computed, one waiting to be written.
IN_FLIGHT_PER_THREAD = 2

# What a chunk is computed by: the chunk's window of the array (rows, cols, clipped to the
# array) in, its pixels (bands, rows, cols) out, or None when it holds nothing but the fill value.
RenderChunk = Callable[[Window], np.ndarray | None]


def cpu_count() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:  # cgroup v2: "<quota> <period>" or "max <period>"
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): a forked child makes its own


def chunk_pool() -> ThreadPoolExecutor:
    """The process's pool for chunk work, one thread per core, shared by every task of the process.

    Tasks that run side by side (Prefect's thread runner) share it, so the
    process never computes more chunks at once than it has cores, and memory
    stays a few chunks per core however many shards are being written.
    """
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(cpu_count(), thread_name_prefix="rasterflow-chunk"))
        return _pool[1]


@dataclass(frozen=True)
class _Layout:
    """What writing shards of an array needs to know about it."""

    shape: tuple[int, ...]
    chunk: tuple[int, ...]
    shard: tuple[int, ...]
    fill: Any
    codec: ShardingCodec
    chunk_spec: ArraySpec
    key: Callable[[tuple[int, ...]], str]

    @classmethod
    def of(cls, array) -> _Layout:
        codecs = array.metadata.codecs
        if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec) or array.shards is None:
            raise ValueError(f"{array.store_path}: not a sharded array")
        shard_spec = ArraySpec(shape=array.shards, dtype=array.metadata.data_type,
                               fill_value=array.metadata.fill_value,
                               config=ArrayConfig(order="C", write_empty_chunks=False),
                               prototype=default_buffer_prototype())
        codec = codecs[0]
        return cls(shape=array.shape, chunk=array.chunks, shard=array.shards, fill=array.fill_value,
                   codec=codec, chunk_spec=codec._get_chunk_spec(shard_spec),
                   key=array.metadata.encode_chunk_key)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.chunk_spec.dtype.to_native_dtype())

    def encode(self, values: np.ndarray) -> bytes:
        """One inner chunk (full chunk shape) through the array's codec pipeline."""
        buffer = NDBuffer.from_numpy_array(values)
        (encoded,) = sync(self.codec.codec_pipeline.encode([(buffer, self.chunk_spec)]))
        assert encoded is not None
        return encoded.to_bytes()

    def encode_index(self, index: _ShardIndex) -> bytes:
        return sync(self.codec._encode_shard_index(index)).to_bytes()


def _is_nan(value: Any) -> bool:
    return isinstance(value, float | np.floating) and bool(np.isnan(value))


def _is_fill(values: np.ndarray, fill: Any) -> bool:
    if _is_nan(fill):
        return bool(np.isnan(values).all())
    return bool((values == fill).all())


def count_valid(values: np.ndarray, fill: Any) -> int:
    """Values that are not the fill value (not NaN, for a NaN fill)."""
    if _is_nan(fill):
        return int(np.count_nonzero(~np.isnan(values)))
    return int(np.count_nonzero(values != fill))


class _ShardSink:
    """One shard object, written front to back, visible only once complete."""

    def __init__(self, uri: str, key: str, storage_options: dict[str, Any] | None):
        self.uri = uri
        self.fs, root = uris.filesystem(uris.join(uri, DATA_VAR), storage_options)
        self.path = f"{root}/{key}"
        self._file: Any = None
        self._temp: str | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        try:
            if self._file is None:
                self._open()
            self._file.write(data)
        except OSError as exc:  # what fsspec raises for every storage failure
            raise uris.storage_error(self.uri, exc) from exc
        self.size += len(data)

    def _open(self) -> None:
        parent = self.path.rsplit("/", 1)[0]
        if uris.is_local(self.uri):
            os.makedirs(parent, exist_ok=True)
            self._temp = partial_path(self.path)
            self._file = open(self._temp, "wb")
        else:
            self.fs.makedirs(parent, exist_ok=True)
            self._file = self.fs.open(self.path, "wb", autocommit=False)

    def commit(self) -> None:
        """Make the shard visible; without a byte written, remove any earlier one (all fill)."""
        try:
            self._commit()
        except OSError as exc:
            raise uris.storage_error(self.uri, exc) from exc

    def _commit(self) -> None:
        if self._file is None:
            if self.fs.exists(self.path):
                self.fs.rm(self.path)
            return
        self._file.close()
        if self._temp is not None:
            os.replace(self._temp, self.path)
        else:
            self._file.commit()

    def discard(self) -> None:
        """Drop what was written (best effort: the task is failing with its own error already)."""
        if self._file is None:
            return
        try:
            if self._temp is not None:
                self._file.close()
                os.remove(self._temp)
            else:
                self._file.discard()
        except OSError:
            pass


def _chunk_windows(layout: _Layout,
                   shard_index: tuple[int, int]) -> Iterator[tuple[tuple[int, int], Window | None]]:
    """(position in the shard, window of the array or None past its edge) of each chunk, Morton order."""
    (height, width), (ch, cw), (sh, sw) = layout.shape[-2:], layout.chunk[-2:], layout.shard[-2:]
    per_shard = (1,) * (len(layout.shape) - 2) + (sh // ch, sw // cw)
    for coords in morton_order_iter(per_shard):
        i, j = coords[-2:]
        row0, col0 = shard_index[0] * sh + i * ch, shard_index[1] * sw + j * cw
        inside = row0 < height and col0 < width
        yield (i, j), (Window(row0=row0, row1=min(row0 + ch, height), col0=col0, col1=min(col0 + cw, width))
                       if inside else None)


def _encoded_chunk(layout: _Layout, window: Window, render: RenderChunk) -> tuple[bytes | None, int]:
    """A chunk rendered, padded to the chunk shape with the fill value and encoded (None: all fill)."""
    values = render(window)
    if values is None:
        return None, 0
    values = np.asarray(values, dtype=layout.dtype)
    if _is_fill(values, layout.fill):
        return None, 0
    full = layout.chunk[-2:]
    if values.shape[-2:] != full:
        padded = np.full(values.shape[:-2] + full, layout.fill, dtype=layout.dtype)
        padded[..., : values.shape[-2], : values.shape[-1]] = values
        values = padded
    chunk = values.reshape(layout.chunk)
    return layout.encode(chunk), count_valid(values, layout.fill)


def _write_shard(layout: _Layout, sink: _ShardSink, shard_index: tuple[int, int], render: RenderChunk,
                 pool: ThreadPoolExecutor, in_flight: int) -> int:
    """Stream one shard into ``sink``: chunks computed in ``pool``, written in Morton order."""
    (sh, sw), (ch, cw) = layout.shard[-2:], layout.chunk[-2:]
    index = _ShardIndex.create_empty((1,) * (len(layout.shape) - 2) + (sh // ch, sw // cw))
    lead = (0,) * (len(layout.shape) - 2)
    todo = _chunk_windows(layout, shard_index)
    pending: deque[tuple[tuple[int, int], Future[tuple[bytes | None, int]]]] = deque()

    def submit() -> None:
        for position, window in todo:
            if window is not None:
                pending.append((position, pool.submit(_encoded_chunk, layout, window, render)))
                return

    for _ in range(in_flight):
        submit()
    valid = 0
    try:
        while pending:
            position, future = pending.popleft()
            encoded, count = future.result()
            submit()
            if encoded is not None:
                index.set_chunk_slice(lead + position, slice(sink.size, sink.size + len(encoded)))
                sink.write(encoded)
                valid += count
    except BaseException:
        for _, future in pending:
            future.cancel()
        for _, future in pending:  # none still writing into memory we are about to drop
            if not future.cancelled():
                future.exception()
        raise
    if sink.size:
        assert not np.array_equiv(index.offsets_and_lengths, MAX_UINT_64)
        sink.write(layout.encode_index(index))
    return valid


def write_shards(uri: str, time_index: int, window: Window, render: RenderChunk,
                 storage_options: dict[str, Any] | None = None, threads: int | None = None) -> int:
    """Write every shard of ``window`` (shard aligned: a partition) chunk by chunk; the values written.

    ``render`` computes one chunk; it runs in the process's chunk pool, several
    chunks at once, or in a pool of its own of ``threads`` (tests, benchmarks).
    Storage failures come out as a ``StorageError`` naming the store; a shard
    that fails is never left half-written.
    """
    array = open_data_array(uri, storage_options, mode="r")
    layout = _Layout.of(array)
    sh, sw = layout.shard[-2:]
    if window.row0 % sh or window.col0 % sw:
        raise ValueError(f"window {window} is not shard aligned (shards of {sh} x {sw})")
    own = ThreadPoolExecutor(threads, thread_name_prefix="rasterflow-chunk") if threads else None
    pool = own or chunk_pool()
    in_flight = IN_FLIGHT_PER_THREAD * (threads or cpu_count())
    valid = 0
    try:
        for si in range(window.row0 // sh, math.ceil(window.row1 / sh)):
            for sj in range(window.col0 // sw, math.ceil(window.col1 / sw)):
                coords = (time_index,) + (0,) * (len(layout.shape) - 3) + (si, sj)
                sink = _ShardSink(uri, layout.key(coords), storage_options)
                try:
                    valid += _write_shard(layout, sink, (si, sj), render, pool, in_flight)
                    sink.commit()
                except BaseException:
                    sink.discard()
                    raise
    finally:
        if own is not None:
            own.shutdown(wait=True)
    return valid
