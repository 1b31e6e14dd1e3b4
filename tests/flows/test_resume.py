"""A run killed half-way resumes: only unfinished partitions are recomputed.

The first run is a separate process, SIGKILLed while it writes; its task runs
and the re-run's are read from the Prefect API, and the resumed store is
compared byte for byte with a clean run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowRunFilter
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL

from rasterflow import RasterflowClient
from rasterflow.config import RasterflowConfig
from rasterflow.engine.store import open_store
from rasterflow.errors import StoreError

# Landsat sample at 10 m in its UTM zone: 3003 x 2403 px, 768 px partitions -> 16.
CALL = dict(bands=["red", "green", "blue"], location_field="location", crs_epsg=32621, resolution=10.0,
            xy_chunksize=256, shard_size_bytes=768 * 768 * 6)


def shard_runs(run_id) -> list:
    with get_client(sync_client=True) as api:
        tasks = api.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [run_id]}))
    return [t for t in tasks if t.name.startswith("build-shard")]


def shard_states(run_id) -> list[str]:
    return [t.state.name for t in shard_runs(run_id)]


def newest_run_id():
    with get_client(sync_client=True) as api:
        runs = api.read_flow_runs(flow_filter=FlowFilter(name={"any_": ["build-gti-mosaic"]}),
                                  sort=FlowRunSort.START_TIME_DESC, limit=1)
    return runs[0].id


def data_files(store: Path) -> dict[str, bytes]:
    root = store / "variables" / "c"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_killed_run_resumes_recomputing_only_what_was_missing(landsat, tmp_path):
    out = tmp_path / "resumed"
    script = textwrap.dedent(f"""
        from rasterflow import RasterflowClient
        from rasterflow.config import RasterflowConfig
        RasterflowClient(RasterflowConfig(output_uri={str(out)!r}, max_workers=1)).build_gti_mosaic(
            {str(landsat / "tiles.parquet")!r}, {str(landsat / "aoi.geojson")!r}, **{CALL!r})
    """)
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        written = list(out.rglob("variables/c/**/*"))
        if sum(p.is_file() for p in written) >= 6:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    (store,) = out.rglob("*.zarr")
    # build-shard is the only task persisting a result, so these files are what can be cached.
    results_on_disk = sum(p.is_file() for p in (out / ".prefect-results").rglob("*"))
    with pytest.raises(StoreError, match="incomplete"):
        open_store(str(store))
    killed = shard_states(newest_run_id())
    finished_before = killed.count("Completed")
    assert 0 < finished_before < 16

    client = RasterflowClient(RasterflowConfig(output_uri=str(out), max_workers=2))
    client.build_gti_mosaic(str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), **CALL)
    run_id = newest_run_id()
    deadline = time.monotonic() + 30  # task run states reach the API as events, a moment after the flow
    while len(resumed_runs := shard_runs(run_id)) < 16 and time.monotonic() < deadline:
        time.sleep(0.5)
    resumed = [t.state.name for t in resumed_runs]
    assert len(resumed) == 16
    # A task killed between persisting its result and reporting Completed (or
    # before its task run even reached the API) is Cached now; the results on
    # disk at kill time bound what can be. (Shard files cannot: zarr writes no
    # shard that is all fill value.) A task retried on this loaded machine after
    # persisting its result is Cached on its second attempt: it ran this time.
    cached = resumed.count("Cached")
    cached_unrun = sum(t.state.name == "Cached" and t.run_count <= 1 for t in resumed_runs)
    assert finished_before <= cached and cached_unrun <= results_on_disk
    assert resumed.count("Completed") == 16 - cached
    assert open_store(str(store)).attrs["rasterflow"]["status"] == "complete"

    clean = tmp_path / "clean"
    RasterflowClient(RasterflowConfig(output_uri=str(clean), max_workers=2)).build_gti_mosaic(
        str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), **CALL)
    (clean_store,) = clean.rglob("*.zarr")
    assert data_files(store) == data_files(clean_store)
