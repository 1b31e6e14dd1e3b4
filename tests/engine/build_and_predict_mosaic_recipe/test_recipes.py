"""The recipe registry: every recipe complete, and its stand-in true to its contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from shapely.geometry import box

from rasterflow.engine.build_and_predict_mosaic_recipe.recipes import (
    RECIPES,
    native_crs_epsg,
    recipe_spec,
    recipe_summary,
)
from rasterflow.engine.predict_mosaic.bundled import bundled_model
from rasterflow.engine.predict_mosaic.model import file_sha256, load_model
from rasterflow.enums import InferenceActorEnum, ModelRecipes


def test_every_recipe_has_an_entry_naming_its_public_model():
    assert set(RECIPES) == set(ModelRecipes)
    for recipe, spec in RECIPES.items():
        # Public weights at a URL, or inside an installed package (offline).
        assert spec.recipe == recipe and (spec.model_uri or "").startswith("https://") != bool(spec.packaged)
        assert spec.public_model.source.startswith("https://github.com/") and spec.public_model.licence
        assert 2 * spec.clip_size < spec.patch_size
        # Features are bands of the recipe's own datasets.
        assert {f.split(":")[0] for f in spec.features} == {d.value for d in spec.datasets}


def test_ftw_is_planting_then_harvest_rgbn():
    spec = recipe_spec(ModelRecipes.FTW)
    assert spec.features == (
        "s2med_planting:B04", "s2med_planting:B03", "s2med_planting:B02", "s2med_planting:B08",
        "s2med_harvest:B04", "s2med_harvest:B03", "s2med_harvest:B02", "s2med_harvest:B08",
    )
    assert spec.labels == ("non_field_background", "field", "field_boundaries")
    assert (spec.patch_size, spec.clip_size) == (256, 32)


def test_ukis_csmask_is_the_references_contract():
    from rasterflow.engine.build_and_predict_mosaic_recipe import csmask
    from rasterflow.enums import DatasetEnum, MergeModeEnum

    spec = recipe_spec(ModelRecipes.UKIS_CSMASK)
    bands = ("B02", "B03", "B04", "B08", "B11", "B12")
    assert spec.features == tuple(f"s2latest_all_bands:{b}" for b in bands)
    assert spec.labels == ("clear", "cloud", "shadow") and spec.merge_mode == MergeModeEnum.TUKEY
    assert (spec.patch_size, spec.clip_size, spec.resolution) == (256, 51, 30.0)
    assert spec.datasets == (DatasetEnum.S2_LATEST_ALL_BANDS,) and spec.standin is None
    assert spec.packaged is not None and (spec.packaged.bands, spec.packaged.product_level) == (6, "l2a")
    assert spec.packaged.extra == csmask.EXTRA == "csmask"


@pytest.mark.parametrize("recipe", [r for r in ModelRecipes if not recipe_spec(r).packaged])
def test_standin_has_the_recipes_contract(recipe):
    spec = recipe_spec(recipe)
    path = Path(spec.standin)
    model = load_model(path, file_sha256(path), "cpu")
    assert model.static_channels == len(spec.features)
    with torch.inference_mode():
        out = model.module(torch.full((1, len(spec.features), 64, 64), 100.0))
    assert tuple(out.shape) == (1, len(spec.labels), 64, 64)
    assert (spec.actor == InferenceActorEnum.REGRESSION_PYTORCH) == (len(spec.labels) == 1)


def test_native_crs_is_the_centroids_zone_and_says_when_the_aoi_spans_zones():
    assert native_crs_epsg(box(-101.2, 37.3, -100.6, 37.7)) == (32614, False)
    assert native_crs_epsg(box(-103.0, 37.3, -101.0, 37.7)) == (32614, True)  # centroid -102: zone 14
    assert native_crs_epsg(box(-54.7, -25.5, -54.3, -25.2)) == (32721, False)


def test_a_summary_names_the_model_that_ran_by_its_bytes():
    shipped = Path(recipe_spec(ModelRecipes.FTW).standin).parent.parent / "landsat8_water.pt2"
    assert "Landsat-8 water" in bundled_model(file_sha256(shipped))
    spec = recipe_spec(ModelRecipes.FTW)
    sha = file_sha256(Path(spec.standin))
    standin = recipe_summary(spec, spec.standin, sha, "m.parquet", "p.parquet", "EPSG:32721", False)
    assert standin.startswith("# ftw: a stand-in, not Fields of The World (FTW) baseline")
    assert "NOT the public model" in standin and "- mosaic index: `m.parquet` (EPSG:32721)" in standin
    public = recipe_summary(spec, spec.model_uri, "0" * 64, "m.parquet", "p.parquet", "EPSG:32721", False)
    assert public.startswith(f"# ftw: {spec.public_model.name}\n") and spec.public_model.source in public
    mirror = recipe_summary(spec, "/models/ftw.pt2", "0" * 64, "m.parquet", "p.parquet", "EPSG:32721", True)
    assert mirror.startswith("# ftw: weights from the config's recipe_models") and "in place of" in mirror
    csmask = recipe_spec(ModelRecipes.UKIS_CSMASK)
    packaged = recipe_summary(csmask, "/out/models/csmask.onnx", "0" * 64, "m.parquet", "p.parquet",
                              "EPSG:32633", False)
    assert packaged.startswith(f"# ukis_csmask: {csmask.public_model.name}\n")
    assert "from the installed ukis-csmask package" in packaged
    assert bundled_model("0" * 64) is None

