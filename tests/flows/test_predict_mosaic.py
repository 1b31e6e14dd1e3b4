"""predict_mosaic through the client: real Prefect, real mosaics, the shipped model.

The mosaic is what a user would have: build_gti_mosaic on the bundled
Landsat-8 sample in its own CRS (EPSG:32621).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import torch
import xarray as xr
from loopback import wait_until
from predict_fixtures import (
    RGB,
    SHIPPED_MODEL,
    Fcn,
    FlattenHead,
    Tripwire,
    clear_of_nodata,
    export,
    whole_image,
)
from prefect_runs import latest_flow_run, task_runs, task_states
from shapely.geometry import box
from typer.testing import CliRunner

from rasterflow import InferenceActorEnum, MergeModeEnum, RasterflowClient
from rasterflow.cli import app
from rasterflow.errors import RasterflowError

SEG = InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH
LABELS = ["land", "water"]


# TorchScript is accepted, and torch 2.13 says on every load that it is deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

@pytest.fixture(scope="module")
def mosaics(landsat, tmp_path_factory):
    """Two stores of the sample (one per AOI geometry), 256 px chunks, and their index."""
    from rasterflow import RasterflowClient
    from rasterflow.config import RasterflowConfig

    root = tmp_path_factory.mktemp("predict-mosaics")
    aoi = root / "two.geojson"
    boxes = [box(-54.66, -25.43, -54.52, -25.30), box(-54.52, -25.40, -54.40, -25.26)]
    gpd.GeoDataFrame(geometry=boxes, crs="EPSG:4326").to_file(aoi)
    client = RasterflowClient(RasterflowConfig(output_uri=str(root / "out"), max_workers=2))
    return client.build_gti_mosaic(
        str(landsat / "tiles.parquet"), str(aoi), RGB, "location", crs_epsg=32621, xy_chunksize=128,
        shard_size_bytes=256 * 256 * 6,
    )


def predict(client, store, model=SHIPPED_MODEL, **overrides):
    values = dict(patch_size=128, clip_size=8, device="auto", features=RGB, labels=LABELS, actor=SEG,
                  max_batch_size=16, merge_mode=MergeModeEnum.WEIGHTED_AVERAGE) | overrides
    return client.predict_mosaic(store, str(model), **values)


def test_shipped_model_maps_the_reservoir_from_an_index(client, mosaics, landsat):
    index_uri = predict(client, mosaics)
    index = gpd.read_parquet(index_uri)
    sources = gpd.read_parquet(mosaics)
    assert len(index) == 2 and list(index.source) == list(sources.location)
    assert set(index.columns) >= {"location", "geometry", "workflow", "bands", "crs", "actor", "model_sha256"}
    assert index.crs.to_epsg() == 4326 and list(index.bands[0]) == LABELS
    for row, src_uri in zip(index.itertuples(), sources.location, strict=True):
        out, src = xr.open_zarr(row.location)["variables"], xr.open_zarr(src_uri)["variables"]
        assert out.dtype == np.float32 and out.rio.crs.to_epsg() == 32621
        assert out.rio.transform() == src.rio.transform() and out.shape[-2:] == src.shape[-2:]
        prob = out.values[0]
        dn = src.values[0].astype(np.float32)
        valid = (dn != 0).any(axis=0)
        np.testing.assert_allclose(prob[:, valid].sum(axis=0), 1.0, atol=1e-5)
        assert np.isnan(prob[:, ~valid]).all()
        # The model was trained on the spectral rule of scripts/train_sample_model.py.
        rule = (dn[0] - dn[2]) > 1550
        agreement = ((prob[1] > 0.5) == rule)[valid].mean()
        assert agreement > 0.98 and 0.1 < rule[valid].mean() < 0.9


def test_identical_call_reuses_the_stores_and_the_cache(client, mosaics):
    first = predict(client, mosaics, select_labels=["water"])
    assert set(task_states("predict-mosaic", "infer-block")) == {"Completed"}
    assert predict(client, mosaics, select_labels=["water"]) == first
    assert set(task_states("predict-mosaic", "infer-block")) == {"Cached"}
    (location, *_) = gpd.read_parquet(first).location
    assert list(xr.open_zarr(location).band.values) == ["water"]


def test_block_and_task_sizes_do_not_change_the_result(client, mosaics, output_root):
    """One block; 128 px blocks in one task; 128 px blocks in 2 x 2 tasks sharing their border patches
    through scratch files, removed after the run."""
    store = gpd.read_parquet(mosaics).location[0]
    indexes = [predict(client, store, xy_block_multiplier=m) for m in (4, 1)]
    config = client.config.model_copy(update={"task_pixels": 2 * 128 * 2 * 128})
    indexes.append(predict(RasterflowClient(config), store, xy_block_multiplier=1))
    whole, *others = (xr.open_zarr(gpd.read_parquet(i).location[0])["variables"].values for i in indexes)
    for values in others:  # batch sizes differ: CPU kernels may too (<= 2e-7)
        np.testing.assert_allclose(values, whole, atol=1e-6, rtol=0)
    assert not list(Path(indexes[-1]).parent.glob(".scratch*"))
    # The last run's second-phase tasks waited for the neighbours whose predictions they took.
    n_tasks = math.prod(math.ceil(n / 256) for n in whole.shape[-2:])
    run_id = latest_flow_run("predict-mosaic").id
    finished = lambda: [t for t in task_runs(run_id, "infer-block%") if t.end_time]  # noqa: E731
    wait_until(lambda: len(finished()) == n_tasks, 30, "task run states (they reach the API as events)")
    tasks = {t.id: t for t in finished()}
    waiting = [t for t in tasks.values() if t.task_inputs.get("wait_for")]
    assert 0 < len(waiting) < n_tasks
    for t in waiting:
        assert all(tasks[u.id].end_time <= t.start_time for u in t.task_inputs["wait_for"])


def test_regression_model(client, mosaics, tmp_path):
    store = gpd.read_parquet(mosaics).location[0]
    net = Fcn(3, 1, seed=2)
    index = gpd.read_parquet(predict(client, store, export(net, tmp_path / "reg.pt2", 3),
                                     actor=InferenceActorEnum.REGRESSION_PYTORCH, labels=["height"],
                                     merge_mode=MergeModeEnum.CLIP))
    got = xr.open_zarr(index.location[0])["variables"].values[0]
    dn = xr.open_zarr(store)["variables"].values[0].astype(np.float32)
    clear = clear_of_nodata((dn != 0).any(axis=0))
    expected = whole_image(net, dn)  # raw outputs: no softmax over a single label
    assert got.shape[0] == 1 and np.abs(got[:, clear] - expected[:, clear]).max() <= 1e-4


def test_change_detection_through_the_client(client, haiti, tmp_path):
    """Two dates of the Haiti sample: one time slice out, at the later date, with its time_delta."""
    import pandas as pd

    bands = ["red", "green", "blue", "nir"]
    mosaic = client.build_gti_mosaic(str(haiti / "tiles.parquet"), str(haiti / "aoi.geojson"), bands,
                                     "location", crs_epsg=32618, time_column="datetime", xy_chunksize=64)
    net = Fcn(8, 2, seed=5, scale=100.0)
    index = gpd.read_parquet(predict(
        client, mosaic, export(net, tmp_path / "change.pt2", 8), features=bands, labels=["same", "changed"],
        actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_CHANGE_DETECTION_PYTORCH, patch_size=32, clip_size=3,
    ))
    got = xr.open_zarr(index.location[0])
    src = xr.open_zarr(gpd.read_parquet(mosaic).location[0])["variables"].values.astype(np.float32)
    assert got["variables"].shape[0] == 1 and pd.Timestamp(got.time.values[0]) == pd.Timestamp("2016-04-01")
    assert got["time_delta"].values[0] == np.timedelta64(91, "D")
    both = (src[0] != 0).any(axis=0) & (src[1] != 0).any(axis=0)
    logits = whole_image(net, np.concatenate([src[0], src[1]]))
    expected = np.exp(logits - logits.max(axis=0)) / np.exp(logits - logits.max(axis=0)).sum(axis=0)
    values = got["variables"].values[0]
    clear = clear_of_nodata(both)
    assert np.abs(values[:, clear] - expected[:, clear]).max() <= 1e-5
    assert np.isnan(values[:, ~both]).all()  # a change needs both dates


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-models")
    wire = folder / "unpickled"
    torch.save(Fcn(3, 2), folder / "checkpoint.pt")
    (folder / "raw.pkl").write_bytes(pickle.dumps(Tripwire(wire)))
    with pytest.warns(Warning):  # torch 2.13 deprecates torch.jit.save
        torch.jit.save(torch.jit.script(FlattenHead()), folder / "flat.ts")
    return folder


@pytest.mark.parametrize("overrides,param,match", [
    (dict(features=["blue", "green", "nir"]), "features", "nir"),
    (dict(labels=["land", "water", "cloud"]), "labels", "returns 2 channels"),
    (dict(clip_size=64), "clip_size", "less than patch_size"),
    (dict(device="cuda"), "device", "no CUDA GPU"),
    (dict(model="absent.pt2"), "model_path", "no such file"),
    (dict(model="checkpoint.pt"), "model_path", "torch.save checkpoint"),
    (dict(model="raw.pkl"), "model_path", "pickle stream"),
    (dict(model="flat.ts", patch_size=64, clip_size=4, merge_mode=MergeModeEnum.CLIP), "model_path",
     r"failed on an input of shape \(2, 3, 64, 64\)"),
    (dict(select_labels=["cloud"]), "select_labels", "not among labels"),
])
def test_bad_inputs_fail_before_anything_is_written(client, mosaics, bad_models, output_root,
                                                    overrides, param, match):
    if param == "device" and torch.cuda.is_available():  # pragma: no cover - no GPU on the test machines
        pytest.skip("a GPU is present")
    if "model" in overrides:
        overrides["model"] = bad_models / overrides["model"]
    with pytest.raises(RasterflowError, match=match) as err:
        predict(client, mosaics, **overrides)
    assert err.value.param == param
    assert not (output_root / "predict-mosaic").exists()
    assert not (bad_models / "unpickled").exists()


def test_predict_mosaic_command(mosaics, tmp_path):
    (tmp_path / "rasterflow.yaml").write_text(f"output_uri: {tmp_path / 'out'}\nmax_workers: 2\n")
    result = CliRunner().invoke(app, [
        "predict-mosaic", mosaics, "--model-path", str(SHIPPED_MODEL), "--patch-size", "128",
        "--clip-size", "8", "--feature", "blue", "--feature", "green", "--feature", "red",
        "--label", "land", "--label", "water", "--actor", SEG.value, "--max-batch-size", "8",
        "--merge-mode", "clip", "--select-label", "water", "--device", "cpu",
        "--config", str(tmp_path / "rasterflow.yaml"),
    ])
    assert result.exit_code == 0, result.output
    (index_path,) = (tmp_path / "out" / "predict-mosaic").rglob("index.parquet")
    assert str(index_path) in result.output.replace("\n", "")  # rich wraps long paths
    assert list(gpd.read_parquet(index_path).bands[0]) == ["water"]
