"""predict-mosaic's engine (plan, blocks, merge) on real mosaics, without Prefect.

The reference everywhere is one forward pass of the same model over the whole
store's image: tiled inference must reproduce it, whatever the block size,
batch size or merge mode.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import torch
from polygon_reference import whole_raster_polygons
from predict_fixtures import RGB, SHIPPED_MODEL, Fcn, build_store, clear_of_nodata, export, whole_image
from scipy import ndimage
from shapely.geometry import box

from rasterflow.engine.predict_mosaic.block import patch_input
from rasterflow.engine.predict_mosaic.group import infer_group, layout, scratch_file
from rasterflow.engine.predict_mosaic.plan import create_prediction_store, plan_predict_mosaic
from rasterflow.engine.predict_mosaic.scratch import remove_scratch
from rasterflow.engine.store import commit_store, open_store
from rasterflow.enums import InferenceActorEnum, MergeModeEnum
from rasterflow.errors import InvalidParameterError
from rasterflow.params import PredictMosaicParams

SEG = InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH
REG = InferenceActorEnum.REGRESSION_PYTORCH
CHANGE = InferenceActorEnum.SEMANTIC_SEGMENTATION_CHANGE_DETECTION_PYTORCH
HAITI = ["red", "green", "blue", "nir"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("predict-engine")


@pytest.fixture(scope="module")
def landsat_store(work):
    """The Landsat sample in EPSG:32621 (801 x 1001 px), 128 px chunks, nodata 0 outside the AOI."""
    return build_store(work / "mosaics", "landsat8_iguazu", 32621, RGB, chunk=128)


@pytest.fixture(scope="module")
def small_store(work):
    """A 260 x 270 px cut of the same sample, 64 px chunks: cheap enough for batch size 1."""
    aoi = work / "small.geojson"
    gpd.GeoDataFrame(geometry=[box(-54.58, -25.37, -54.50, -25.30)], crs="EPSG:4326").to_file(aoi)
    return build_store(work / "small", "landsat8_iguazu", 32621, RGB, chunk=64, aoi=str(aoi))


@pytest.fixture(scope="module")
def seg_model(work):
    net = Fcn(3, 2)
    return net, export(net, work / "seg.pt2", 3)


@pytest.fixture(scope="module")
def image(landsat_store):
    return open_store(landsat_store)["variables"].values[0].astype(np.float32)


def run(store, model, root, task_pixels=1 << 28, **overrides):
    """plan -> create -> every group (two threads) -> commit, as the flow does; returns (values, dataset,
    plan)."""
    values = dict(store=store, model_path=str(model), patch_size=64, clip_size=4, device="cpu",
                  features=RGB, labels=["land", "water"], actor=SEG, max_batch_size=16,
                  merge_mode=MergeModeEnum.CLIP) | overrides
    plan = plan_predict_mosaic(PredictMosaicParams.parse(**values), str(root), task_pixels=task_pixels)
    for sp in plan.stores:
        create_prediction_store(sp, plan.provenance)
        for job in sp.jobs:  # phase 0 first: a group's neighbours are done when it starts
            infer_group(job, workers=2)
        commit_store(sp.spec.uri)
    ds = open_store(plan.stores[0].spec.uri)
    return ds["variables"].values, ds, plan


def softmax(x):
    return torch.softmax(torch.from_numpy(x), dim=0).numpy()


@pytest.mark.parametrize("mode", [MergeModeEnum.CLIP, MergeModeEnum.WEIGHTED_AVERAGE])
def test_tiled_prediction_equals_one_forward_pass(landsat_store, seg_model, image, work, mode):
    net, path = seg_model
    got, ds, _ = run(landsat_store, path, work / mode.value, merge_mode=mode)
    expected = softmax(whole_image(net, image))
    valid = (image != 0).any(axis=0)
    assert 0.5 < valid.mean() < 1  # the AOI leaves nodata corners: both cases are exercised
    # The global patch grid makes it exact everywhere, not only away from the border; next to
    # nodata the model sees the nearest valid pixels instead of zeros (test_patch_input_...).
    clear = clear_of_nodata(valid)
    assert np.abs(got[0][:, clear] - expected[:, clear]).max() <= 1e-5
    assert not np.isnan(got[0][:, valid]).any() and np.isnan(got[0][:, ~valid]).all()
    data = ds["variables"]
    assert data.dtype == np.float32 and list(data.band.values) == ["land", "water"]
    src = open_store(landsat_store)["variables"]
    assert data.rio.transform() == src.rio.transform() and data.rio.crs == src.rio.crs


@pytest.mark.parametrize("mode", [MergeModeEnum.CLIP, MergeModeEnum.WEIGHTED_AVERAGE])
def test_results_do_not_depend_on_block_batch_or_task_size(small_store, seg_model, work, mode):
    """64 px blocks in one task, one task per block, and 2 x 2 blocks per task (so both sharing
    paths, memory and scratch files, cross task edges) against one block for the whole store."""
    _, path = seg_model
    cases = {(4, 64, 1 << 28), (1, 64, 1 << 28), (1, 64, 64 * 64), (1, 64, 128 * 128), (4, 1, 1 << 28)}
    out = {(m, b, t): run(small_store, path, work / f"{mode.value}-{m}-{b}-{t}", task_pixels=t,
                          merge_mode=mode, xy_block_multiplier=m, max_batch_size=b)[0]
           for m, b, t in cases}
    # Same patches, merged in the same order. A patch may run in batches of another size, for which
    # the CPU kernels may pick another algorithm (measured: <= 2e-7); a seam would be an error of the
    # order of the values themselves.
    for key, values in out.items():
        np.testing.assert_allclose(values, out[(4, 64, 1 << 28)], atol=1e-6, rtol=0, err_msg=str(key))


@pytest.mark.parametrize("grouping", ["a block per task", "2 x 2 blocks per task", "one task"])
def test_every_patch_runs_once_except_at_block_corners(landsat_store, seg_model, work, grouping):
    """Second-phase blocks take the border patches their first-phase neighbours ran, in memory inside a
    task and through scratch files across tasks.

    CLIP regions tile the image and are smaller than a block, so a region
    touches two first-phase (diagonal) blocks only where it holds one of
    their common corners: at most one patch runs twice per interior corner.
    """
    _, path = seg_model
    task_pixels = {"a block per task": 256**2, "2 x 2 blocks per task": 512**2, "one task": 1 << 30}[grouping]

    def patches_run(root, multiplier, pixels):
        values = dict(store=landsat_store, model_path=str(path), patch_size=64, clip_size=4, device="cpu",
                      features=RGB, labels=["land", "water"], actor=SEG, max_batch_size=16,
                      merge_mode=MergeModeEnum.CLIP, xy_block_multiplier=multiplier)
        plan = plan_predict_mosaic(PredictMosaicParams.parse(**values), str(root), task_pixels=pixels)
        store = plan.stores[0]
        create_prediction_store(store, plan.provenance)
        stats = [infer_group(job, workers=2) for job in store.jobs]
        return sum(s.patches for s in stats), sum(s.patches_taken for s in stats), store

    unique, _, whole = patches_run(work / f"once-whole-{grouping}", 8, 1 << 30)  # one 1024 px block
    assert len(whole.jobs) == 1 and len(whole.jobs[0].blocks) == 1
    shared, taken, store = patches_run(work / f"once-{grouping}", 2, task_pixels)  # 256 px blocks: 4 x 4
    assert sum(len(job.blocks) for job in store.jobs) == 16
    assert len(store.jobs) == {"a block per task": 16, "2 x 2 blocks per task": 4, "one task": 1}[grouping]
    alone = shared + taken  # what the blocks would run each on its own
    corners = 3 * 3
    assert taken > 0
    assert unique <= shared <= unique + corners < alone
    scratch = Path(store.scratch_uri)
    files = list(scratch.rglob("*.npz"))
    # Files only across task edges: from the blocks of first-phase tasks that border another task
    # (those with a valid pixel: the AOI leaves a nodata corner).
    across = {scratch_file(job, b.window) for job in store.jobs if job.phase == 0 for b in layout(job)
              if b.outside}
    assert {str(f) for f in files} <= across and len(files) >= len(across) - 1
    assert len(across) == {"a block per task": 8, "2 x 2 blocks per task": 6, "one task": 0}[grouping]
    remove_scratch([store])
    assert not scratch.exists()


def test_blocks_are_whole_output_shards(landsat_store, seg_model, work):
    params = PredictMosaicParams.parse(
        store=landsat_store, model_path=str(seg_model[1]), patch_size=64, clip_size=4, device="cpu",
        features=RGB, labels=["land", "water"], actor=SEG, max_batch_size=8, merge_mode="clip",
        xy_block_multiplier=3, output_xy_chunksize=256,
    )
    store = plan_predict_mosaic(params, str(work / "shards"), task_pixels=512 * 512).stores[0]
    shard = store.spec.shard
    assert shard.chunk == 256 and 512 % shard.rows == 0  # 3 x 128 px rounded up to whole 256 px chunks
    for window in (block for job in store.jobs for block in job.blocks):
        assert window.row0 % shard.rows == 0 and window.col0 % shard.cols == 0
        assert window.shape == (min(512, 801 - window.row0), min(512, 1001 - window.col0))
    assert not (work / "shards").exists()  # planning writes nothing


def test_regression_writes_raw_values(small_store, work):
    image = open_store(small_store)["variables"].values[0].astype(np.float32)
    net = Fcn(3, 1, seed=3)
    got, _, _ = run(small_store, export(net, work / "reg.pt2", 3), work / "reg", actor=REG, labels=["height"],
                    merge_mode=MergeModeEnum.WEIGHTED_AVERAGE)
    clear = clear_of_nodata((image != 0).any(axis=0))
    expected = whole_image(net, image)
    assert np.abs(got[0][:, clear] - expected[:, clear]).max() <= 1e-4
    assert expected.min() < 0 or expected.max() > 1  # not probabilities: no softmax was applied


def test_select_labels_writes_a_subset_after_the_softmax(small_store, seg_model, work):
    full, _, _ = run(small_store, seg_model[1], work / "all")
    water, ds, _ = run(small_store, seg_model[1], work / "water", select_labels=["water"])
    assert list(ds.band.values) == ["water"]
    np.testing.assert_array_equal(water[0, 0], full[0, 1])
    swapped, ds, _ = run(small_store, seg_model[1], work / "swapped", select_labels=["water", "land"])
    assert list(ds.band.values) == ["water", "land"]
    np.testing.assert_array_equal(swapped[0], full[0, ::-1])


def test_a_store_smaller_than_a_patch_is_padded(small_store, seg_model, work):
    net, path = seg_model
    image = open_store(small_store)["variables"].values[0].astype(np.float32)
    rows, cols = image.shape[1:]
    assert rows < 512 and cols < 512
    got, _, _ = run(small_store, path, work / "big-patch", patch_size=512, clip_size=4)
    expected = softmax(whole_image(net, image))
    # The far edges meet padding instead of the model's own zero padding: compare inside them.
    inner = np.zeros((rows, cols), bool)
    inner[: rows - 4, : cols - 4] = True
    check = inner & clear_of_nodata((image != 0).any(axis=0))
    assert np.abs(got[0][:, check] - expected[:, check]).max() <= 1e-5


def test_change_detection_stacks_two_dates(work):
    store = build_store(work / "haiti", "haiti_rgbn", 32618, HAITI, chunk=64, time_column="datetime")
    src = open_store(store)["variables"].values.astype(np.float32)  # (2, 4, rows, cols)
    net = Fcn(8, 2, seed=5, scale=100.0)
    got, ds, _ = run(store, export(net, work / "change.pt2", 8), work / "change", actor=CHANGE,
                     features=HAITI, labels=["same", "changed"], patch_size=32, clip_size=3)
    assert got.shape[0] == 1
    assert pd.Timestamp(ds.time.values[0]) == pd.Timestamp("2016-04-01")  # the later date
    assert ds["time_delta"].values[0] == np.timedelta64(91, "D")
    both = (src[0] != 0).any(axis=0) & (src[1] != 0).any(axis=0)
    assert 0 < both.mean() < 1
    expected = softmax(whole_image(net, np.concatenate([src[0], src[1]])))
    clear = clear_of_nodata(both)
    assert np.abs(got[0][:, clear] - expected[:, clear]).max() <= 1e-5
    assert not np.isnan(got[0][:, both]).any()
    assert np.isnan(got[0][:, ~both]).all()  # a change needs both dates
    assert "time_delta" in ds.coords


def test_every_check_runs_before_anything_is_written(small_store, seg_model, work):
    root = work / "refused"
    cases = [
        (dict(features=["blue", "green", "nir"]), "features"),
        (dict(labels=["land", "water", "cloud"]), "labels"),
        (dict(actor=CHANGE), "store"),  # one time slice
        (dict(device="cuda"), "device"),
        (dict(model_path=str(work / "absent.pt2")), "model_path"),
    ]
    if torch.cuda.is_available():  # pragma: no cover
        cases.remove((dict(device="cuda"), "device"))
    for overrides, param in cases:
        with pytest.raises(InvalidParameterError) as err:
            run(small_store, seg_model[1], root, **overrides)
        assert err.value.param == param, (overrides, err.value)
    assert not root.exists()


def test_a_static_batch_model_needs_that_batch_size(small_store, work):
    image = open_store(small_store)["variables"].values[0].astype(np.float32)
    net = Fcn(3, 2)
    path = export(net, work / "static.pt2", 3, dynamic_batch=False, batch=4)
    with pytest.raises(InvalidParameterError, match="static batch size of 4") as err:
        run(small_store, path, work / "static-refused", max_batch_size=16)
    assert err.value.param == "max_batch_size"
    got, _, _ = run(small_store, path, work / "static", max_batch_size=4)  # the last batch is padded
    clear = clear_of_nodata((image != 0).any(axis=0))
    assert np.abs(got[0][:, clear] - softmax(whole_image(net, image))[:, clear]).max() <= 1e-5


def test_tukey_reproduces_ukis_csmasks_own_tiling(small_store, seg_model, work):
    """TUKEY against the reference's tile_array/untile_array (smooth blending) around the same model.

    ukis_csmask.utils is the code CSmask tiles with: overlap 0.2 of 66 px patches is a pad (clip_size)
    of 13 and a hop of 52, and mirrored ("symmetric") padding at the image edges. (66, like CSmask's 256:
    the reference's taper, 0.2 * (patch - 1) px, is then whole, and its blend a partition of unity.)
    """
    from ukis_csmask.utils import tile_array, untile_array

    net, path = seg_model
    image = open_store(small_store)["variables"].values[0].astype(np.float32)
    tiles = tile_array(np.moveaxis(image, 0, -1), xsize=66, ysize=66, overlap=0.2)
    with torch.inference_mode():
        probs = torch.softmax(net.eval()(torch.from_numpy(np.moveaxis(tiles, -1, 1).copy())), dim=1).numpy()
    expected = np.moveaxis(untile_array(np.moveaxis(probs, 1, -1), (*image.shape[1:], 2), overlap=0.2,
                                        smooth_blending=True), -1, 0)
    # Pixels clear of nodata: the reference feeds nodata to the model as zeros, rasterflow as the
    # nearest valid pixel (``block.patch_input``), which changes predictions within the model's reach.
    valid = clear_of_nodata((image != 0).any(axis=0))
    for m, b in [(1, 16), (4, 5)]:  # small blocks (mirrored reads at each edge), then large ones
        got, _, _ = run(small_store, path, work / f"tukey-{m}-{b}", merge_mode=MergeModeEnum.TUKEY,
                        patch_size=66, clip_size=13, xy_block_multiplier=m, max_batch_size=b)
        assert np.abs(got[0][:, valid] - expected[:, valid]).max() <= 1e-5
        assert np.isnan(got[0][:, ~(image != 0).any(axis=0)]).all()


def test_an_onnx_model_predicts_like_its_torch_twin(small_store, work):
    """The same net as .pt2 and as .onnx (fetched through fsspec): the same stores, within float rounding."""
    import fsspec
    from predict_fixtures import onnx_fcn

    net = Fcn(3, 2)
    pt2 = export(net, work / "twin.pt2", 3)
    fsspec.filesystem("memory").pipe("/models/twin.onnx", onnx_fcn(net, work / "twin.onnx").read_bytes())
    image = open_store(small_store)["variables"].values[0].astype(np.float32)
    valid = (image != 0).any(axis=0)
    for mode in (MergeModeEnum.WEIGHTED_AVERAGE, MergeModeEnum.TUKEY):
        from_pt2, _, _ = run(small_store, pt2, work / f"twin-pt2-{mode.value}", merge_mode=mode)
        from_onnx, _, plan = run(small_store, "memory://models/twin.onnx", work / f"twin-onnx-{mode.value}",
                                 merge_mode=mode)
        assert plan.provenance["inputs"]["model_format"] == "onnx"
        assert np.abs(from_onnx[0][:, valid] - from_pt2[0][:, valid]).max() <= 1e-5
    expected = softmax(whole_image(net, image))
    assert np.abs(from_onnx[0][:, valid] - expected[:, valid]).max() > 0  # TUKEY mirrors: not one pass


def test_tukey_needs_a_taper(small_store, seg_model, work):
    with pytest.raises(InvalidParameterError, match="clip_size >= 1") as err:
        run(small_store, seg_model[1], work / "tukey-0", merge_mode=MergeModeEnum.TUKEY, clip_size=0)
    assert err.value.param == "merge_mode" and not (work / "tukey-0").exists()


def thin_polygons_at_nodata(water: np.ndarray, valid: np.ndarray, transform) -> list:
    """Polygons of ``water`` (as the demo draws them: 8-connected, >= 20,000 m2) within 3 pixels of
    nodata (the shipped model's reach) that hold no 3 x 3 pixel square."""
    pixel = abs(transform.a)
    polygons = [p for p in whole_raster_polygons(water & valid, transform, 8) if p.area >= 20_000]
    nodata = shapely.union_all(whole_raster_polygons(~valid, transform, 4))
    return [p for p in polygons if p.distance(nodata) <= 3 * pixel and p.buffer(-1.5 * pixel).is_empty]


def test_sample_water_along_the_nodata_edge_is_real_water(work):
    """The demo on the Landsat sample (EPSG:3857 mosaic, the shipped water model, water >= 0.5):
    no polygon along the mosaic's nodata edge is a sliver. Fed as zeros, nodata reads as a dark
    surface to the model: 9 of the demo's 14 polygons were 1-2 px slivers along that edge."""
    store = build_store(work / "demo", "landsat8_iguazu", 3857, RGB, chunk=256)
    source = open_store(store)["variables"]
    image = source.values[0].astype(np.float32)  # blue, green, red: the model's features
    valid, transform = (image != 0).any(axis=0), source.rio.transform()
    got, _, _ = run(store, SHIPPED_MODEL, work / "demo-predict", patch_size=256, clip_size=8,
                    max_batch_size=8, merge_mode=MergeModeEnum.WEIGHTED_AVERAGE)
    water = got[0][1] >= 0.5
    assert not thin_polygons_at_nodata(water, valid, transform)
    # Within the model's reach of the edge (radius 3), water is where the spectral rule it learnt says.
    edge = ndimage.binary_dilation(~valid, iterations=3) & valid
    rule = (image[0] - image[2]) > 1550
    assert (water == rule)[edge].mean() > 0.99
    # The check can fail: the same model fed zeros for nodata drew 10 slivers there.
    with torch.inference_mode():
        logits = torch.export.load(SHIPPED_MODEL).module()(torch.from_numpy(image[None]))[0].numpy()
    zeros_fed = softmax(logits)[1] >= 0.5
    assert thin_polygons_at_nodata(zeros_fed, valid, transform)
    assert (zeros_fed == rule)[edge].mean() < 0.9


def test_patch_input_fills_nodata_from_the_nearest_valid_pixel():
    data = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    data[:, :, 4:] = np.nan  # the right two columns: nodata in both channels
    data[:, 0, 0] = np.nan
    patch = patch_input(data, 0, 1, 4)  # columns 1-4
    assert not np.isnan(patch).any()
    np.testing.assert_array_equal(patch[:, :, 3], data[:, :, 3])  # column 4 takes column 3's values
    np.testing.assert_array_equal(patch[:, :, :3], data[:, :, 1:4])  # valid pixels are untouched
    assert patch_input(data, 0, 0, 3) is not data  # (0, 0) is filled from a neighbour within the patch
    assert patch_input(data, 0, 0, 3)[0, 0, 0] in (data[0, 0, 1], data[0, 1, 0])
    clean = data[:, 1:, :3]
    assert np.shares_memory(patch_input(clean, 0, 0, 3), clean)  # no nodata: the window as it is
    empty = np.full((1, 4, 4), np.nan, np.float32)
    assert (patch_input(empty, 0, 0, 4) == 0).all()
