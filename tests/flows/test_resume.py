"""A run killed half-way resumes: only unfinished partitions (or groups of blocks) are recomputed.

The first run is a separate process, SIGKILLed while it writes; its task runs
and the re-run's are read from the Prefect API, and the resumed output is
compared with a clean run (a mosaic byte for byte; polygons vertex for vertex;
predictions within the CPU kernels' rounding).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import xarray as xr
from predict_fixtures import RGB, SHIPPED_MODEL
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowRunFilter
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL
from prefect_runs import latest_flow_run, task_runs

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


# ---------------------------------------------------------------- groups of blocks

GROUPED = {  # 128 px blocks (7 x 8) in groups of 2 x 2: 16 tasks
    "vectorize-mosaic": ("polygonize", "vectorize_mosaic", dict(features=["red"], threshold=6271,
                                                                xy_block_multiplier=1, vector_crs=None)),
    "predict-mosaic": ("infer-block", "predict_mosaic", dict(
        model_path=str(SHIPPED_MODEL), patch_size=128, clip_size=8, device="cpu", features=RGB,
        labels=["land", "water"], actor="semantic_segmentation_pytorch", max_batch_size=4,
        merge_mode="clip", xy_block_multiplier=1)),
}


@pytest.fixture(scope="module")
def small_chunks(landsat, tmp_path_factory) -> str:
    """The Landsat sample at 30 m in its UTM zone (801 x 1001 px), 128 px chunks."""
    root = tmp_path_factory.mktemp("mosaic")
    return RasterflowClient(RasterflowConfig(output_uri=str(root), max_workers=2)).build_gti_mosaic(
        str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), RGB, "location", crs_epsg=32621,
        xy_chunksize=128, shard_size_bytes=128 * 128 * 6)


def task_states_of(run_id, prefix: str, expected: int) -> list:
    deadline = time.monotonic() + 30  # task run states reach the API as events, a moment after the flow
    while len(runs := task_runs(run_id, f"{prefix}%")) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return runs


@pytest.mark.parametrize("flow", list(GROUPED))
def test_killed_run_recomputes_only_unfinished_groups(flow, small_chunks, tmp_path):
    prefix, method, call = GROUPED[flow]
    config = dict(max_workers=1, task_pixels=256 * 256)
    out = tmp_path / "resumed"
    script = textwrap.dedent(f"""
        from rasterflow import RasterflowClient
        from rasterflow.config import RasterflowConfig
        RasterflowClient(RasterflowConfig(output_uri={str(out)!r}, **{config!r})).{method}(
            {small_chunks!r}, **{call!r})
    """)
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = out / ".prefect-results"

    def finished() -> int:  # groups whose result (the cache entry) is on disk
        return sum(1 for p in results.glob(f"{prefix}-*") if p.is_file()) if results.is_dir() else 0

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and finished() < 3:
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    results_on_disk = finished()
    assert 3 <= results_on_disk < 16

    getattr(RasterflowClient(RasterflowConfig(output_uri=str(out), **config)), method)(small_chunks, **call)
    resumed_runs = task_states_of(latest_flow_run(flow).id, prefix, 16)
    resumed = [t.state.name for t in resumed_runs]
    assert len(resumed) == 16
    # Every group whose result was on disk is Cached (one may have been half-written at the kill);
    # the others ran again, and nothing else did.
    cached = resumed.count("Cached")
    cached_unrun = sum(t.state.name == "Cached" and t.run_count <= 1 for t in resumed_runs)
    assert results_on_disk - 1 <= cached < 16 and cached_unrun <= results_on_disk
    assert resumed.count("Completed") == 16 - cached

    clean = getattr(RasterflowClient(RasterflowConfig(output_uri=str(tmp_path / "clean"), **config)), method)(
        small_chunks, **call)
    resumed_uri = next(out.rglob("polygons.parquet" if flow == "vectorize-mosaic" else "index.parquet"))
    if flow == "vectorize-mosaic":
        got, expected = gpd.read_parquet(resumed_uri), gpd.read_parquet(clean)
        assert sorted(shapely.to_wkb(shapely.normalize(got.geometry.values))) == sorted(
            shapely.to_wkb(shapely.normalize(expected.geometry.values)))
        np.testing.assert_array_equal(np.sort(got.score_mean), np.sort(expected.score_mean))
    else:
        got, expected = (xr.open_zarr(gpd.read_parquet(i).location[0])["variables"].values
                         for i in (resumed_uri, clean))
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)  # batch sizes are timed per run
        assert not list(resumed_uri.parent.glob(".scratch*"))
