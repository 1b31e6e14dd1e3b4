"""Groups of blocks sized by work, and the block threads a task runs them on."""

from __future__ import annotations

import threading
import time

import pytest

from rasterflow.engine.groups import BlockGrid, blocks_of, group_sides, map_ordered


def covered(windows) -> set[tuple[int, int]]:
    return {(r, c) for w in windows for r in range(w.row0, w.row1) for c in range(w.col0, w.col1)}


def test_groups_tile_the_grid_with_whole_blocks():
    grid = BlockGrid(height=1000, width=700, rows=64, cols=48)
    for side in (1, 3, 100):
        groups = [w for _, w in grid.groups(side)]
        assert len(groups) == grid.tasks(side)
        cells = [covered([w]) for w in groups]
        assert sum(map(len, cells)) == 1000 * 700 == len(set().union(*cells))  # no gap, no overlap
        for w in groups:
            assert w.row0 % (64 * side) == 0 and w.col0 % (48 * side) == 0
            blocks = blocks_of(w, 64, 48)
            assert covered(blocks) == covered([w]) and all(b.row1 - b.row0 <= 64 for b in blocks)


def test_sides_follow_task_pixels_then_fill_the_slots():
    grid = BlockGrid(height=20_000, width=30_000, rows=2048, cols=2048)  # 10 x 15 blocks
    assert group_sides([grid], 1 << 28) == [8]  # 64 blocks of 2048 px
    assert grid.tasks(8) == 2 * 2
    assert group_sides([grid], 2048 * 2048) == [1]
    (whole,) = group_sides([grid], 1 << 40)
    assert grid.tasks(whole) == 1
    # Enough tasks for 16 worker threads: the largest side that still gives 16.
    (side,) = group_sides([grid], 1 << 40, slots=16)
    assert grid.tasks(side) >= 16 > grid.tasks(side + 1)
    # More slots than blocks: a block per task, never fewer blocks than that.
    assert group_sides([grid], 1 << 40, slots=1000) == [1]


def test_several_grids_and_time_slices_count_together():
    a = BlockGrid(height=4096, width=4096, rows=1024, cols=1024, count=2)  # 4 x 4 blocks, two slices
    b = BlockGrid(height=1024, width=1024, rows=512, cols=512)
    sides = group_sides([a, b], 1 << 30)
    assert [g.tasks(s) for g, s in zip([a, b], sides, strict=True)] == [2, 1]  # one per slice and store
    sides = group_sides([a, b], 1 << 30, slots=8)
    assert sum(g.tasks(s) for g, s in zip([a, b], sides, strict=True)) >= 8


@pytest.mark.parametrize("pixels, slots", [(0, 1), (-1, 1), (1, 0)])
def test_sizes_must_be_positive(pixels, slots):
    with pytest.raises(ValueError, match="must be positive"):
        group_sides([BlockGrid(10, 10, 5, 5)], pixels, slots)


def test_map_ordered_keeps_order_and_bounds_what_is_in_flight():
    running, peak = 0, 0
    lock = threading.Lock()

    def work(k: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01 * (k % 3))
        with lock:
            running -= 1
        return k * k

    taken = []
    for value in map_ordered(work, range(20), workers=2, ahead=3):
        taken.append(value)
        time.sleep(0.005)
    assert taken == [k * k for k in range(20)]
    assert peak <= 2


def test_map_ordered_raises_the_first_error_after_the_running_blocks_end():
    started, finished = [], []

    def work(k: int) -> int:
        started.append(k)
        if k == 1:
            raise OSError("block 1 failed")
        time.sleep(0.05)
        finished.append(k)
        return k

    with pytest.raises(OSError, match="block 1"):
        list(map_ordered(work, range(50), workers=2, ahead=4))
    assert set(finished) == set(started) - {1}  # whatever started has ended
    assert len(started) < 50  # nothing more was started after the failure
