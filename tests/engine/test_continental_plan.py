"""A continental job planned, not run (tests/continental.py): Sentinel-2 10 m over the contiguous US, then
predict and vectorize over it at their defaults.

The limits are the issue's: at most 2,000 task runs per workflow, planning in
seconds, and a plan whose memory follows its task count, not its block
count. Six acquisitions per tile keep the mosaic's plan (which lists its
scenes per partition) small enough for CI; the task counts do not depend on
it. ``python tests/continental.py`` prints the table with a year's worth.
"""

from __future__ import annotations

import pytest
from continental import plan_downstream, plan_mosaic

MAX_TASKS = 2000
PLAN_SECONDS = 15.0  # generous for a loaded CI runner; measured 0.4-2 s on 2 shared cores


@pytest.fixture(scope="module")
def continent(tmp_path_factory):
    """The rows at the default block size, and predict's and vectorize's at half of it (4x the blocks)."""
    root = tmp_path_factory.mktemp("conus")
    mosaic, uri = plan_mosaic(root, scenes_per_tile=6)
    default = {row.workflow: row for row in [mosaic, *plan_downstream(root, uri)]}
    small = {row.workflow: row for row in plan_downstream(root, uri, xy_block_multiplier=2)}
    for row in default.values():
        print(row.row())
    return default, small


def test_each_workflow_is_hundreds_of_tasks_not_tens_of_thousands(continent):
    default, _ = continent
    assert set(default) == {"build-mosaic", "predict-mosaic", "vectorize-mosaic"}
    for row in default.values():
        assert 100 <= row.tasks <= MAX_TASKS, row.row()
    for workflow in ("predict-mosaic", "vectorize-mosaic"):
        assert default[workflow].blocks >= 20_000, default[workflow].row()  # a continent, one task per block
        assert default[workflow].blocks >= 20 * default[workflow].tasks


def test_planning_takes_seconds(continent):
    default, small = continent
    for row in [*default.values(), *small.values()]:
        assert row.seconds < PLAN_SECONDS, row.row()


def test_plan_memory_follows_tasks_not_blocks(continent):
    """Four times the blocks in the same tasks: the plan's size and its peak memory stay put."""
    default, small = continent
    for workflow in ("predict-mosaic", "vectorize-mosaic"):
        before, after = default[workflow], small[workflow]
        assert after.tasks == before.tasks
        assert after.blocks >= 3.5 * before.blocks
        assert after.plan_kb < 1.2 * before.plan_kb, (before.row(), after.row())
        assert after.peak_mb < 1.5 * before.peak_mb + 1, (before.row(), after.row())
        assert before.plan_kb / before.tasks < 4, before.row()  # a job is its window and where it goes
