"""The models shipped in the package, known by their bytes, so a summary says what really ran.

The recipes' stand-ins have each public model's input and output contract and
run offline, but they are not those models: a run summary that named the public
model while a stand-in ran would mislead whoever reads the predictions. The
shipped files are recognised by the sha256 their descriptions record (the one
the plan computes of the file it runs), never by their path or name.
"""

from __future__ import annotations

import functools
import json
from importlib import resources


@functools.cache
def _bundled() -> dict[str, str]:
    models = resources.files("rasterflow").joinpath("models")
    water = json.loads(models.joinpath("landsat8_water.json").read_text())
    known = {water["sha256"]: "the shipped Landsat-8 water/land demonstration model, trained on the "
                              "bundled sample (scripts/train_sample_model.py)"}
    standins = json.loads(models.joinpath("standins", "standins.json").read_text())
    for recipe, entry in standins.items():
        known[entry["sha256"]] = (f"the bundled stand-in for the {recipe} recipe: {entry['what']} "
                                  "(scripts/train_recipe_standins.py)")
    return known


def bundled_model(sha256: str) -> str | None:
    """Which shipped model has these bytes, in words; None for any other file."""
    return _bundled().get(sha256)
