"""build_and_predict_mosaic_recipe: one call from an area and dates to predictions.

request -> recipes (what each ModelRecipes member is: datasets, model, settings,
and the native CRS over an AOI) -> check (the recipe's model against its
contract, before the mosaic is built). The work itself is build_mosaic's and
predict_mosaic's, run by the recipe flow as two subflows.
"""
