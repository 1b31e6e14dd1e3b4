"""What a recipe's model can get wrong, checked before its mosaic (the costly half) is built.

The recipe fixes the model's contract: features in order, labels, patch size
and batch. predict_mosaic's own model check (format without unpickling,
channels, static shapes, one probe pass) runs on that contract with no store,
so a pickle, a model for another recipe or a truncated download fails the call
before any scene is read.
"""

from __future__ import annotations

from ...enums import ModelRecipes
from ...errors import InvalidParameterError
from .. import uris
from ..predict_mosaic.plan import check_model
from ..predict_mosaic.request import PredictMosaicRequest
from .recipes import recipe_spec


def recipe_model_request(recipe: ModelRecipes, model_path: str) -> PredictMosaicRequest:
    """The predict-mosaic request of ``recipe`` with no store yet (a placeholder: nothing reads it)."""
    spec = recipe_spec(recipe)
    return PredictMosaicRequest(
        store="<the recipe's mosaic>", model_path=model_path, patch_size=spec.patch_size,
        clip_size=spec.clip_size, device="auto", features=list(spec.features), labels=list(spec.labels),
        actor=spec.actor, max_batch_size=spec.max_batch_size, merge_mode=spec.merge_mode,
    )


def check_recipe_model(recipe: ModelRecipes, model_path: str,
                       storage_options_for: uris.OptionsFor = uris.no_options) -> None:
    """Raise an error naming ``model_path`` unless it is a safe model with ``recipe``'s contract."""
    spec = recipe_spec(recipe)
    try:
        check_model(recipe_model_request(recipe, model_path), storage_options_for)
    except InvalidParameterError as exc:
        if exc.param == "model_path":
            raise
        raise InvalidParameterError(
            "model_path", model_path, f"does not fit recipe {recipe.value!r}: {exc}",
            f"a model with the recipe's contract ({len(spec.features)} input channels, {len(spec.labels)} "
            f"labels, {spec.patch_size} px patches), e.g. the stand-in {spec.standin}",
        ) from None
