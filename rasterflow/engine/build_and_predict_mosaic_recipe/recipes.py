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
have each public model's contract for offline use.
"""

from __future__ import annotations

from importlib import resources

from pydantic import BaseModel, ConfigDict

from ...enums import DatasetEnum, InferenceActorEnum, MergeModeEnum, ModelRecipes
from ..grid import utm_epsg


class PublicModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    source: str
    paper: str
    licence: str


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
    model_uri: str
    notes: str

    @property
    def standin(self) -> str:
        """The bundled stand-in with this recipe's contract (not the public model)."""
        return str(resources.files("rasterflow").joinpath("models", "standins", f"{self.recipe.value}.pt2"))


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
}


def recipe_spec(recipe: ModelRecipes) -> RecipeSpec:
    return RECIPES[ModelRecipes(recipe)]


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
                   crs_epsg: int) -> str:
    """The run summary's markdown, naming the model that really ran: a bundled stand-in (recognised
    by its bytes) is never called the public model."""
    from ..predict_mosaic.bundled import bundled_model

    public = f"{spec.public_model.name} ({spec.public_model.source})"
    shipped = bundled_model(model_sha256)
    if shipped:
        title, model = f"{spec.recipe.value}: a stand-in, not {spec.public_model.name}", shipped
    elif model_path == spec.model_uri:
        title, model = f"{spec.recipe.value}: {spec.public_model.name}", public
    else:
        title, model = (f"{spec.recipe.value}: weights from the config's recipe_models",
                        f"the file the config names for this recipe, in place of {public}")
    return (f"# {title}\n\nModel: {model}.\n\n- model file: `{model_path}` (sha256 `{model_sha256[:12]}`)\n"
            f"- mosaic index: `{mosaic}` (EPSG:{crs_epsg})\n- predictions index: `{predictions}`\n"
            f"- labels: {', '.join(spec.labels)}\n")

