"""Tasks sized by work: neighbouring blocks grouped into one task, and run side by side inside it.

A block bounds memory (one block of input per thread); a task is the unit
of caching, retry and resume, and costs 10-120 ms of orchestration
(benchmarks/orchestration_overhead.py). One task per block made Prefect cost
as much as the work for vectorize-mosaic (a block is ~57 ms of polygonizing)
and made a continental run tens of thousands of task runs. So a task takes a
group of blocks: a square of ``side x side`` neighbouring blocks, sized so
that it holds about ``task_pixels`` pixels, and smaller when that would leave
fewer tasks than the runner has slots (Dask workers' threads) to fill.

Groups are rectangles of the block grid, so the seams and border patches
between most blocks stay inside one task, and they are a function of the
grid, the block size, ``task_pixels`` and the slot count only: a rerun of the
same request on the same runner lays out the same groups, so its cache keys
match and a resumed run recomputes only unfinished groups. Slots only shrink
groups of jobs smaller than ``slots`` tasks, where recomputing is cheap.

Inside a task, blocks run on one thread pool per process, sized to the cores
the worker has (``map_ordered``): concurrent tasks in one process share it,
so a thread task runner never runs more blocks at once than there are cores.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from .partitions import Window

DEFAULT_TASK_PIXELS = 1 << 28  # 16384 x 16384 px: 64 blocks of 2048 px
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BlockGrid:
    """One raster (a store's time slice, or several alike) cut into blocks of ``rows`` x ``cols`` px."""

    height: int
    width: int
    rows: int  # pixels of a block in y
    cols: int  # pixels of a block in x
    count: int = 1  # rasters of this shape (time slices): each is grouped alike

    @property
    def shape(self) -> tuple[int, int]:
        """Blocks in y and x."""
        return math.ceil(self.height / self.rows), math.ceil(self.width / self.cols)

    def side_for(self, task_pixels: int) -> int:
        """Blocks on a side of a square group holding at most ``task_pixels`` (at least one block)."""
        return max(1, math.isqrt(task_pixels // (self.rows * self.cols)))

    def tasks(self, side: int) -> int:
        by, bx = self.shape
        return self.count * math.ceil(by / side) * math.ceil(bx / side)

    def groups(self, side: int) -> Iterator[tuple[tuple[int, int], Window]]:
        """((group row, group column), pixel window) of each group, row-major."""
        by, bx = self.shape
        step_r, step_c = side * self.rows, side * self.cols
        for gr in range(math.ceil(by / side)):
            for gc in range(math.ceil(bx / side)):
                r0, c0 = gr * step_r, gc * step_c
                yield (gr, gc), Window(row0=r0, row1=min(r0 + step_r, self.height), col0=c0,
                                       col1=min(c0 + step_c, self.width))


def group_sides(grids: list[BlockGrid], task_pixels: int, slots: int = 1) -> list[int]:
    """Blocks on a side of each grid's groups: about ``task_pixels`` per task, at least ``slots`` tasks
    in all when there are that many blocks.

    The cap is searched for by bisection: the task count only grows as it shrinks.
    """
    if task_pixels <= 0 or slots <= 0:
        raise ValueError(f"task_pixels={task_pixels} and slots={slots} must be positive")
    natural = [g.side_for(task_pixels) for g in grids]

    def count(cap: int) -> int:
        return sum(g.tasks(min(side, cap)) for g, side in zip(grids, natural, strict=True))

    lo, hi = 1, max(natural, default=1)
    if count(hi) >= slots:
        return natural
    while lo < hi:  # the largest cap that still gives `slots` tasks (1 if none does)
        mid = (lo + hi + 1) // 2
        if count(mid) >= slots:
            lo = mid
        else:
            hi = mid - 1
    return [min(side, lo) for side in natural]


def blocks_of(window: Window, rows: int, cols: int) -> list[Window]:
    """The blocks of a group window, row-major; ``window`` starts on the block grid."""
    return [Window(row0=r, row1=min(r + rows, window.row1), col0=c, col1=min(c + cols, window.col1))
            for r in range(window.row0, window.row1, rows) for c in range(window.col0, window.col1, cols)]


# ---------------------------------------------------------------- running blocks

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def block_pool(workers: int) -> ThreadPoolExecutor:
    """The process's block threads: one pool of ``workers``, shared by every task of the process.

    Blocks never wait on other blocks of the pool, so sharing cannot deadlock.
    A call asking for another size replaces the pool; work already given to
    the old one finishes there.
    """
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rasterflow-block")
            _pool_size = workers
        return _pool


def default_workers() -> int:
    """Cores this process may use (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def map_ordered(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int | None = None
                ) -> Iterator[R]:
    """``fn`` over ``items`` on the block pool, results in the items' order.

    At most ``ahead`` items (default ``2 * workers``) are in flight or
    finished but not yet taken, so memory stays bounded by a few blocks
    however many a group holds. On the first failure nothing more is
    started; the error is raised once the blocks already running are done,
    so no thread still writes when the task reports it.
    """
    pool = block_pool(workers)
    ahead = ahead or 2 * workers
    pending: deque[Future[R]] = deque()
    source = iter(items)
    try:
        for item in source:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        for future in pending:
            if not future.cancelled():
                future.exception()  # wait: never leave a block running behind a failure
