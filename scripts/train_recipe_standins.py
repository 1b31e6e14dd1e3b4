"""Train the stand-in models of the model recipes, shipped in rasterflow/models/standins/.

Why they exist: each ``ModelRecipes`` member names a public model (FTW, Meta's
canopy height model, Chesapeake RSC, Tile2Net) whose weights are downloaded
at run time, which cannot happen offline. The recipe chain must still be
testable and demonstrable offline, so each recipe gets a STAND-IN: a tiny net
with exactly the public model's input and output contract (channels in the
recipe's feature order, input scale, labels or regression target), trained
here on the bundled real samples to reproduce a simple spectral rule. They are
not field, canopy or road mappers; they only make the recipe's plumbing real.

Data: the Haiti RGBN sample (rasterflow/samples/haiti_rgbn: uint8 red, green,
blue, nir at 5 m, a NAIP-like image), both cut-outs. For FTW, whose input is
Sentinel-2 L2A reflectance x 10000 in two seasons, the same pixels are scaled
to that range (DN x 3000 / 255) and each season gets its own seeded per-band
gain, so planting and harvest differ.

Rules (targets), all from the pixels themselves:

* FTW (8 channels: planting B04, B03, B02, B08, then harvest; labels
  non_field_background, field, field_boundaries): field where the NDVI of
  either season exceeds 0.3; boundary where a field pixel has a non-field
  4-neighbour; else background.
* META_CHM_V1 (red, green, blue uint8 -> height in metres, regression):
  height = 30 x clip(excess green (2G - R - B) / 255 / 0.25, 0, 1).
* CHESAPEAKE_RSC (red, green, blue, nir -> background, road): road where the
  pixel is grey (max |R-G|, |G-B| < 14), not vegetated (NDVI < 0.1) and of
  road brightness (70 <= mean RGB <= 200).
* TILE_2_NET (red, green, blue -> background, road, sidewalk, crosswalk):
  grey pixels (as above, no NIR) are road below mean RGB 140, sidewalk from
  140 to 215, crosswalk (paint) above 215.

Net: conv3x3 (C -> 16) ReLU, conv3x3 (16 -> 16) ReLU, conv3x3 (16 -> K):
receptive field radius 3; the input normalisation of the public model (FTW
/3000; CHM /255 then its mean/std; Chesapeake /255; Tile2Net /255 then
ImageNet mean/std) is the first operation, so the nets read store values as
the public models do. Exported with ``torch.export`` (dynamic batch, height,
width). Deterministic (seeded, one thread); a few seconds each. Run from the
repository root::

    python scripts/train_recipe_standins.py
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch

REPO = Path(__file__).resolve().parents[1]
HAITI = REPO / "rasterflow" / "samples" / "haiti_rgbn"
OUT = REPO / "rasterflow" / "models" / "standins"
SEED, STEPS, BATCH, CROP, WIDTH = 20160101, 300, 16, 48, 16


def _grey(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb
    return (np.abs(r - g) < 14) & (np.abs(g - b) < 14)


def _ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    return (nir - red) / np.maximum(nir + red, 1e-6)


def ftw_rule(x: np.ndarray) -> np.ndarray:
    field = (_ndvi(x[0], x[3]) > 0.3) | (_ndvi(x[4], x[7]) > 0.3)
    edge = np.zeros_like(field)
    edge[1:] |= field[1:] & ~field[:-1]
    edge[:-1] |= field[:-1] & ~field[1:]
    edge[:, 1:] |= field[:, 1:] & ~field[:, :-1]
    edge[:, :-1] |= field[:, :-1] & ~field[:, 1:]
    return np.where(edge, 2, np.where(field, 1, 0))


def chm_rule(x: np.ndarray) -> np.ndarray:
    r, g, b = x
    return 30.0 * np.clip((2 * g - r - b) / 255.0 / 0.25, 0, 1)


def chesapeake_rule(x: np.ndarray) -> np.ndarray:
    brightness = x[:3].mean(axis=0)
    road = _grey(x[:3]) & (_ndvi(x[0], x[3]) < 0.1) & (brightness >= 70) & (brightness <= 200)
    return road.astype(np.int64)


def tile2net_rule(x: np.ndarray) -> np.ndarray:
    brightness = x.mean(axis=0)
    grey = _grey(x)
    return np.where(grey & (brightness > 215), 3,
                    np.where(grey & (brightness >= 140), 2, np.where(grey, 1, 0)))


@dataclass(frozen=True)
class Standin:
    name: str
    channels: list[str]
    labels: list[str]  # one entry = regression target
    regression: bool
    scale: float
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    rule: Callable[[np.ndarray], np.ndarray]
    rule_text: str
    input_text: str


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
STANDINS = [
    Standin("ftw", ["planting B04", "planting B03", "planting B02", "planting B08",
                    "harvest B04", "harvest B03", "harvest B02", "harvest B08"],
            ["non_field_background", "field", "field_boundaries"], False, 3000.0, None, None, ftw_rule,
            "field where NDVI > 0.3 in either season; boundary = field pixel with a non-field 4-neighbour",
            "(B, 8, H, W) float32 Sentinel-2 L2A reflectance x 10000, planting then harvest, "
            "each B04 B03 B02 B08"),
    Standin("meta_chm_v1", ["red", "green", "blue"], ["height"], True, 255.0,
            (0.420, 0.411, 0.296), (0.213, 0.156, 0.143), chm_rule,
            "height = 30 m x clip(excess green / 0.25, 0, 1)",
            "(B, 3, H, W) float32 NAIP red, green, blue (0-255)"),
    Standin("chesapeake_rsc", ["red", "green", "blue", "nir"], ["background", "road"], False, 255.0,
            None, None, chesapeake_rule, "road where grey, NDVI < 0.1 and 70 <= mean RGB <= 200",
            "(B, 4, H, W) float32 NAIP red, green, blue, nir (0-255)"),
    Standin("tile_2_net", ["red", "green", "blue"], ["background", "road", "sidewalk", "crosswalk"],
            False, 255.0, *IMAGENET, tile2net_rule,
            "grey pixels: road (mean RGB < 140), sidewalk (140-215), crosswalk (> 215)",
            "(B, 3, H, W) float32 NAIP red, green, blue (0-255)"),
]


class StandinNet(torch.nn.Module):
    """Three 3 x 3 convolutions after the public model's own input normalisation."""

    def __init__(self, spec: Standin):
        super().__init__()
        n_in, n_out = len(spec.channels), len(spec.labels)
        self.scale = spec.scale
        mean = torch.zeros(n_in) if spec.mean is None else torch.tensor(spec.mean)
        std = torch.ones(n_in) if spec.std is None else torch.tensor(spec.std)
        self.register_buffer("mean", mean.float().view(1, -1, 1, 1))
        self.register_buffer("std", std.float().view(1, -1, 1, 1))
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(n_in, WIDTH, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(WIDTH, WIDTH, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(WIDTH, n_out, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x / self.scale - self.mean) / self.std)


def haiti_images() -> list[np.ndarray]:
    images = []
    for name in ("rgbn_suba.tif", "rgbn_subb.tif"):
        with rasterio.open(HAITI / name) as src:
            images.append(src.read().astype(np.float32))  # red, green, blue, nir; nodata 0
    return images


def inputs_for(spec: Standin, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if spec.name == "ftw":
        reflectance = image * (3000.0 / 255.0)
        order = reflectance[[0, 1, 2, 3]]  # Haiti's red, green, blue, nir = B04, B03, B02, B08
        seasons = [order * rng.uniform(0.8, 1.2, size=(4, 1, 1)).astype(np.float32) for _ in range(2)]
        return np.concatenate(seasons)
    return image[: len(spec.channels)]


def train(spec: Standin) -> dict:
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    images = [inputs_for(spec, image, rng) for image in haiti_images()]
    targets = [spec.rule(x) for x in images]
    valids = [(x != 0).any(axis=0) for x in images]
    model = StandinNet(spec)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(STEPS):
        xs, ys, ms = [], [], []
        for _ in range(BATCH):
            k = rng.integers(len(images))
            _, rows, cols = images[k].shape
            r, c = rng.integers(rows - CROP), rng.integers(cols - CROP)
            xs.append(images[k][:, r : r + CROP, c : c + CROP])
            ys.append(targets[k][r : r + CROP, c : c + CROP])
            ms.append(valids[k][r : r + CROP, c : c + CROP])
        x, m = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ms))
        out = model(x)
        if spec.regression:
            y = torch.from_numpy(np.stack(ys).astype(np.float32))
            loss = (((out[:, 0] - y) ** 2) * m).sum() / m.sum().clamp(min=1)
        else:
            y = torch.from_numpy(np.stack(ys).astype(np.int64))
            loss = ((torch.nn.functional.cross_entropy(out, y, reduction="none") * m).sum()
                    / m.sum().clamp(min=1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.inference_mode():
        out = model(torch.from_numpy(images[1][None]))[0].numpy()
    valid = valids[1]
    if spec.regression:
        score = {"mean_abs_error_m": round(float(np.abs(out[0] - targets[1])[valid].mean()), 3)}
    else:
        score = {"agreement_with_rule": round(float((out.argmax(axis=0) == targets[1])[valid].mean()), 4)}

    dims = {0: torch.export.Dim("batch", min=1, max=65536), 2: torch.export.Dim("height", min=8, max=16384),
            3: torch.export.Dim("width", min=8, max=16384)}
    example = torch.from_numpy(images[0][None, :, :32, :32].copy()).repeat(2, 1, 1, 1)
    program = torch.export.export(model, (example,), dynamic_shapes={"x": dims})
    path = OUT / f"{spec.name}.pt2"
    torch.export.save(program, path)
    return {
        "recipe": spec.name, "file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "stand_in": True,
        "what": "a stand-in with the public model's input/output contract, NOT the public model",
        "input": spec.input_text, "channels": spec.channels,
        "output": ("(B, 1, H, W) float32 " + spec.labels[0]) if spec.regression
        else f"(B, {len(spec.labels)}, H, W) float32 logits",
        "labels": spec.labels,
        "normalisation": {"divide_by": spec.scale, "mean": spec.mean, "std": spec.std},
        "receptive_field": {"radius": 3},
        "training": {"data": "rasterflow/samples/haiti_rgbn, crops of both cut-outs; "
                             "scored on all of rgbn_subb",
                     "rule": spec.rule_text, "seed": SEED, "steps": STEPS, "crop": CROP,
                     "script": "scripts/train_recipe_standins.py", **score},
        "torch": torch.__version__.split("+")[0],
    }


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    cards = {spec.name: train(spec) for spec in STANDINS}
    (OUT / "standins.json").write_text(json.dumps(cards, indent=2) + "\n")
    for name, card in cards.items():
        print(name, card["file"], card["training"])


if __name__ == "__main__":
    main()
