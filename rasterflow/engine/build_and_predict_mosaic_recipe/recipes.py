"""Model recipes: the datasets, model and inference settings that belong together.

A recipe is what a user picks instead of a pipeline ("field boundaries for this
county in 2023"): which named datasets to mosaic, which of their bands feed
the model in which order, the labels it answers with, and how to run it.
Everything here is data; the build-and-predict-mosaic-recipe flow runs it as
build-mosaic then predict-mosaic.

Details the public models do not fix (a patch size, which NAIP resolution) are
taken from the model's own documentation or Wherobots' RasterFlow examples
where those say, and otherwise chosen here; each entry's ``notes`` says which.
Weights are fetched from ``model_uri`` at run time; the config's
``recipe_models`` points a recipe at a mirror or a local file, and the
stand-ins in rasterflow/models/standins/ (scripts/train_recipe_standins.py)
have each public model's contract for offline use. A recipe whose weights
ship inside a package (``packaged``: ukis-csmask) needs neither: its model
file is written from the installed package under the output root
(``packaged_model_uri``), where every worker of a run can read it.
"""

from __future__ import annotations

from datetime import date
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict

from ...enums import DatasetEnum, InferenceActorEnum, MergeModeEnum, ModelRecipes
from .. import uris
from ..grid import utm_epsg
from ..vectors import read_aoi
from . import csmask


class PublicModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    source: str
    paper: str
    licence: str


class PackagedWeights(BaseModel):
    """Weights inside an installed package (an optional extra), and the store scaling its graph takes."""

    model_config = ConfigDict(frozen=True)

    distribution: str
    extra: str
    bands: int
    product_level: str
    scale: float
    offset: float = 0.0


class RecipeSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    recipe: ModelRecipes
    public_model: PublicModel
    datasets: tuple[DatasetEnum, ...]
    features: tuple[str, ...]  # store bands "<dataset>:<band>", in the model's channel order
    labels: tuple[str, ...]
    actor: InferenceActorEnum
    merge_mode: MergeModeEnum
    patch_size: int
    clip_size: int
    max_batch_size: int
    resolution: float | None = None  # metres; None = the datasets' native resolution
    model_uri: str | None  # None: the weights are ``packaged``
    packaged: PackagedWeights | None = None
    notes: str

    @property
    def standin(self) -> str | None:
        """The bundled stand-in with this recipe's contract (not the public model); None when packaged."""
        if self.packaged:
            return None
        return str(resources.files("rasterflow").joinpath("models", "standins", f"{self.recipe.value}.pt2"))

    def mosaic_parameters(self, aoi: str, start: date, end: date, crs: dict[str, Any]) -> dict[str, Any]:
        """build_mosaic's parameters for this recipe (``crs``: its crs_epsg and/or target_crs)."""
        return dict(datasets=list(self.datasets), aoi=aoi, start=start, end=end, resolution=self.resolution,
                    **crs)

    def predict_parameters(self, store: str, model_path: str) -> dict[str, Any]:
        """predict_mosaic's parameters for this recipe on ``store`` (the mosaic's index)."""
        return dict(store=store, model_path=model_path, patch_size=self.patch_size, clip_size=self.clip_size,
                    device="auto", features=list(self.features), labels=list(self.labels), actor=self.actor,
                    max_batch_size=self.max_batch_size, merge_mode=self.merge_mode)


def _bands(dataset: DatasetEnum, bands: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{dataset.value}:{band}" for band in bands)


_S2_RGBN = ("B04", "B03", "B02", "B08")
_HF = "https://huggingface.co/wherobots"

RECIPES: dict[ModelRecipes, RecipeSpec] = {
    ModelRecipes.FTW: RecipeSpec(
        recipe=ModelRecipes.FTW,
        public_model=PublicModel(
            name="Fields of The World (FTW) baseline field-boundary segmentation",
            source="https://github.com/fieldsoftheworld/ftw-baselines",
            paper="Kerner et al., Fields of The World, arXiv:2409.16252 (AAAI 2025)",
            licence="code MIT; upstream weights come as CC-BY (commercial use) and FULL (non-commercial) "
                    "sets",
        ),
        datasets=(DatasetEnum.S2_MED_PLANTING, DatasetEnum.S2_MED_HARVEST),
        features=_bands(DatasetEnum.S2_MED_PLANTING, _S2_RGBN) + _bands(DatasetEnum.S2_MED_HARVEST, _S2_RGBN),
        labels=("non_field_background", "field", "field_boundaries"),
        actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH,
        merge_mode=MergeModeEnum.WEIGHTED_AVERAGE,
        patch_size=256, clip_size=32, max_batch_size=32,
        model_uri=f"{_HF}/ftw-v1.1-pt2/resolve/main/ftw-v1.1-ep.pt2",
        notes="Window A = planting, window B = harvest, each B04 B03 B02 B08 (the upstream channel order; "
              "the model scales by 1/3000 itself). Patch, clip and model URI from Wherobots' RasterFlow "
              "FTW examples; batch 32 chosen here for CPU memory (GPUs take far more).",
    ),
    ModelRecipes.META_CHM_V1: RecipeSpec(
        recipe=ModelRecipes.META_CHM_V1,
        public_model=PublicModel(
            name="Meta / WRI High Resolution Canopy Height (HighResCanopyHeight)",
            source="https://github.com/facebookresearch/HighResCanopyHeight",
            paper="Tolan et al., Remote Sensing of Environment 300:113888 (2024), arXiv:2304.07213",
            licence="Apache-2.0 (code and weights)",
        ),
        datasets=(DatasetEnum.NAIP_60CM,),
        features=_bands(DatasetEnum.NAIP_60CM, ("red", "green", "blue")),
        labels=("height",),
        actor=InferenceActorEnum.REGRESSION_PYTORCH,
        merge_mode=MergeModeEnum.WEIGHTED_AVERAGE,
        patch_size=256, clip_size=32, max_batch_size=32,
        model_uri=f"{_HF}/meta-chm-v1-pt2/resolve/main/meta-chm-v1-ep.pt2",
        notes="RGB only, height in metres. 256 px patches as upstream's crops; NAIP 60 cm as in Wherobots' "
              "canopy height example (Nashua, NH). Clip chosen here. The archive's file name follows the "
              "naming of the same organisation's FTW and ChesapeakeRSC archives: not verified offline.",
    ),
    ModelRecipes.CHESAPEAKE_RSC: RecipeSpec(
        recipe=ModelRecipes.CHESAPEAKE_RSC,
        public_model=PublicModel(
            name="Chesapeake Roads Spatial Context (ChesapeakeRSC) road segmentation",
            source="https://github.com/isaaccorley/ChesapeakeRSC",
            paper="Robinson, Corley et al., Seeing the roads through the trees, arXiv:2401.06762",
            licence="dataset MIT (torchgeo/ChesapeakeRSC); licence of code and weights not stated upstream",
        ),
        datasets=(DatasetEnum.NAIP_60CM,),
        features=_bands(DatasetEnum.NAIP_60CM, ("red", "green", "blue", "nir")),
        labels=("background", "road"),
        actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH,
        merge_mode=MergeModeEnum.WEIGHTED_AVERAGE,
        patch_size=512, clip_size=64, max_batch_size=8,
        resolution=1.0,
        model_uri=f"{_HF}/chesapeakersc-pt2/resolve/main/chesapeakersc-ep.pt2",
        notes="Trained on 1 m NAIP, so the 60 cm NAIP mosaic is built at 1 m (RasterFlow's Chesapeake "
              "example also models at 1 m). Patch, clip and model URI from that example; batch 8 chosen "
              "here for CPU memory.",
    ),
    ModelRecipes.TILE_2_NET: RecipeSpec(
        recipe=ModelRecipes.TILE_2_NET,
        public_model=PublicModel(
            name="Tile2Net (HRNet-OCR) pedestrian network segmentation",
            source="https://github.com/VIDA-NYU/tile2net",
            paper="Hosseini et al., Computers, Environment and Urban Systems 101:101950 (2023)",
            licence="code BSD-3-Clause; licence of the weights not stated upstream",
        ),
        datasets=(DatasetEnum.NAIP_30CM,),
        features=_bands(DatasetEnum.NAIP_30CM, ("red", "green", "blue")),
        labels=("background", "road", "sidewalk", "crosswalk"),
        actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH,
        merge_mode=MergeModeEnum.WEIGHTED_AVERAGE,
        patch_size=512, clip_size=64, max_batch_size=8,
        model_uri=f"{_HF}/tile2net-pt2/resolve/main/tile2net-ep.pt2",
        notes="NAIP 30 cm RGB as in RasterFlow's Tile2Net example; labels in RasterFlow's order (upstream's "
              "train ids differ). Patch and clip chosen here. The archive's file name follows the same "
              "organisation's naming: not verified offline.",
    ),
    ModelRecipes.UKIS_CSMASK: RecipeSpec(
        recipe=ModelRecipes.UKIS_CSMASK,
        public_model=PublicModel(
            name="UKIS-CSMASK (DLR) cloud and cloud-shadow segmentation, 6-band Level-2A U-Net",
            source="https://github.com/dlr-eoc/ukis-csmask",
            paper="Wieland, Li, Martinis, Remote Sensing of Environment 230 (2019), "
                  "doi:10.1016/j.rse.2019.05.022; Wieland, Fichtner, Martinis, ISPRS Archives "
                  "XLIII-B3-2022, 217-222, doi:10.5194/isprs-archives-XLIII-B3-2022-217-2022",
            licence="Apache-2.0 (code and weights, in the ukis-csmask 1.0.0 wheel)",
        ),
        datasets=(DatasetEnum.S2_LATEST_ALL_BANDS,),
        features=_bands(DatasetEnum.S2_LATEST_ALL_BANDS, ("B02", "B03", "B04", "B08", "B11", "B12")),
        labels=csmask.LABELS,
        actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH,
        merge_mode=MergeModeEnum.TUKEY,
        patch_size=csmask.PATCH_SIZE, clip_size=csmask.CLIP_SIZE, max_batch_size=8,
        resolution=30.0,
        model_uri=None,
        packaged=PackagedWeights(distribution=csmask.DISTRIBUTION, extra=csmask.EXTRA, bands=6,
                                 product_level="l2a", scale=csmask.S2_SCALE),
        notes="Everything as CSmask does it: blue, green, red, nir, swir16, swir22 (the 6-band model, the "
              "more accurate), surface reflectance (the L2A graph; the store's reflectance x 10000 is "
              "divided "
              "inside the model file), 256 px tiles overlapping by 0.2 with mirrored edges and a Tukey blend "
              "(TUKEY, clip 51), labels 0 clear, 1 cloud, 2 shadow. 30 m and nearest-neighbour resampling "
              "as the package's README advises. The scenes are the latest acquisition on top, clouds kept "
              "(a median would have none left); batch 8 chosen here.",
    ),
}


def recipe_spec(recipe: ModelRecipes) -> RecipeSpec:
    return RECIPES[ModelRecipes(recipe)]


def aoi_native_crs(aoi: str, storage_options: dict[str, Any]) -> tuple[int, bool]:
    """``native_crs_epsg`` of the AOI file at ``aoi``."""
    frame = read_aoi(aoi, storage_options)
    return native_crs_epsg(frame.to_crs(4326).union_all())


def packaged_model_uri(spec: RecipeSpec, output_root: str) -> str:
    """Where the packaged recipe's model file goes (named by package version and scaling).

    Raises, naming the extra, when the package is not installed.
    """
    assert spec.packaged is not None
    w = spec.packaged
    name = csmask.model_name(w.bands, w.product_level, w.scale, w.offset,
                             csmask.installed_version("model_recipe", spec.recipe.value))
    return uris.join(output_root, "models", name)


def write_packaged_model(spec: RecipeSpec, uri: str, storage_options: dict | None = None) -> str:
    """The packaged recipe's model file at ``uri`` (written once; an existing one is kept)."""
    assert spec.packaged is not None
    w = spec.packaged
    return csmask.csmask_model(uri, w.bands, w.product_level, w.scale, w.offset, storage_options)


def native_crs_epsg(aoi_4326) -> tuple[int, bool]:
    """(EPSG of the recipe datasets' native CRS over the AOI, whether the AOI spans zones).

    Sentinel-2 and NAIP are both delivered in the UTM zone of each scene, so an
    AOI inside one zone is mosaicked without resampling. An AOI across zones
    takes the zone of its centroid (the Norway/Svalbard exceptions of the UTM
    grid are not applied: Sentinel-2 tiles ignore them too).
    """
    west, south, east, north = aoi_4326.bounds
    centroid = aoi_4326.centroid
    epsg = utm_epsg(centroid.x, centroid.y)
    spans = utm_epsg(west, centroid.y) != utm_epsg(east, centroid.y) or (south < 0) != (north < 0)
    return epsg, spans


def recipe_summary(spec: RecipeSpec, model_path: str, model_sha256: str, mosaic: str, predictions: str,
                   crs: str, mirrored: bool) -> str:
    """The run summary's markdown, naming the model that really ran: a bundled stand-in (recognised
    by its bytes) is never called the public model. ``crs``: the mosaic's, as shown; ``mirrored``:
    the weights came from the config's ``recipe_models``."""
    from ..predict_mosaic.bundled import bundled_model

    public = f"{spec.public_model.name} ({spec.public_model.source})"
    shipped = bundled_model(model_sha256)
    if shipped:
        title, model = f"{spec.recipe.value}: a stand-in, not {spec.public_model.name}", shipped
    elif mirrored:
        title, model = (f"{spec.recipe.value}: weights from the config's recipe_models",
                        f"the file the config names for this recipe, in place of {public}")
    elif spec.packaged:
        title, model = (f"{spec.recipe.value}: {spec.public_model.name}",
                        f"{public}, from the installed {spec.packaged.distribution} package")
    else:
        title, model = f"{spec.recipe.value}: {spec.public_model.name}", public
    return (f"# {title}\n\nModel: {model}.\n\n- model file: `{model_path}` (sha256 `{model_sha256[:12]}`)\n"
            f"- mosaic index: `{mosaic}` ({crs})\n- predictions index: `{predictions}`\n"
            f"- labels: {', '.join(spec.labels)}\n")

