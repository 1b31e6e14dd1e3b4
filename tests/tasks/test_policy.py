"""The work key: what a cached task computes, never the run it belongs to.

Keys are computed with real task run contexts (inside real tasks on the test
server), and a real cached task is run twice to see the second run Cached.
"""

from __future__ import annotations

import logging
import re

import pytest
from prefect import flow, task
from prefect.context import TaskRunContext

from rasterflow.engine.build_gti_mosaic.plan import ShardJob
from rasterflow.engine.build_gti_mosaic.shard import ShardSummary
from rasterflow.engine.build_zarr_multiscales.stats import Bins
from rasterflow.engine.grid import Grid
from rasterflow.engine.partitions import Window
from rasterflow.enums import ResamplingMethod
from rasterflow.tasks.policy import WORK_KEY, cached, describe, reporting

pytestmark = pytest.mark.usefixtures("prefect_server")

GRID = Grid(crs="EPSG:32621", transform=(30.0, 0.0, 0.0, 0.0, -30.0, 0.0), width=4, height=4)


def job(key: str = "abc-t0-r0-c0", **changes) -> ShardJob:
    values = dict(key=key, store_uri="/tmp/x.zarr", time_index=0,
                  window=Window(row0=0, row1=4, col0=0, col1=4), grid=GRID, tiles=[], dtype="uint16",
                  nodata=0.0, resampling=ResamplingMethod.NEAREST)
    return ShardJob(**(values | changes))


@task(name="build-shard")
def key_of(job: ShardJob, generation: str, bins: list[Bins | None] | None = None) -> str:
    ctx = TaskRunContext.get()
    return WORK_KEY.compute_key(ctx, {"job": job, "generation": generation, "bins": bins}, {})


@flow
def keys(calls: list[tuple]) -> list[str]:
    return [key_of(*call) for call in calls]


def test_the_key_names_the_task_and_the_job_and_hashes_the_rest():
    bins = [Bins(lo=0, hi=10, n=10, exact=True)]
    same, again, other_gen, other_job, other_bins, with_bins = keys([
        (job(), "g1"), (job(), "g1"), (job(), "g2"), (job("abd-t0-r0-c0"), "g1"),
        (job(), "g1", [Bins(lo=0, hi=11, n=11, exact=True)]), (job(), "g1", bins),
    ])
    assert same == again  # another run, another task run id: the same key
    assert same.startswith("build-shard-abc-t0-r0-c0-")
    assert len({same, other_gen, other_job, other_bins, with_bins}) == 5


def test_a_jobs_key_stands_for_the_job():
    """Fields a job's key already fingerprints (its request, its inputs) are not hashed again."""
    a, b = keys([(job(), "g1"), (job(store_uri="/elsewhere.zarr"), "g1")])
    assert a == b


calls = []


@task(name="count-calls", **cached())
def counted(job: ShardJob, generation: str) -> int:
    calls.append(job.key)
    return len(calls)


def test_a_cached_task_runs_once_per_key(tmp_path):
    options = dict(result_storage=tmp_path)

    @flow
    def run(generation: str):
        first = counted.with_options(**options)(job(), generation, return_state=True)
        second = counted.with_options(**options)(job(), generation, return_state=True)
        return first.name, second.name

    assert run("g1") == ("Completed", "Cached")
    assert run("g1") == ("Cached", "Cached")  # another flow run
    assert run("g2")[0] == "Completed"  # a new generation: computed again


def test_describe_says_what_a_summary_counts():
    summary = ShardSummary(key="k", rows=228, cols=281, valid_values=64_068, bytes=384_000)
    assert describe(summary) == "228 x 281 px, 64,068 valid values, 0.4 MB of pixels"
    assert describe("an index URI") == ""


def test_a_task_logs_what_it_did_and_how_long_it_took(caplog):
    @task(name="shard")
    @reporting
    def shard() -> ShardSummary:
        return ShardSummary(key="k", rows=228, cols=281, valid_values=64_068, bytes=384_000)

    @flow
    def run() -> ShardSummary:
        return shard()

    with caplog.at_level(logging.INFO, logger="prefect.task_runs"):
        run()
    said = [r.getMessage() for r in caplog.records if r.name == "prefect.task_runs"]
    wanted = r"228 x 281 px, 64,068 valid values, 0\.4 MB of pixels in \d+\.\d\d s"
    assert any(re.fullmatch(wanted, line) for line in said), said
