"""Train the sample water/land model shipped in rasterflow/models/.

Why it exists: predict_mosaic needs a real model to show and to test on real
data, and a model file is only trustworthy if the code that made it is in
the repository. This script is that code; its outputs are committed:

* ``rasterflow/models/landsat8_water.pt2``: a ``torch.export`` archive
  (dynamic batch, height and width) taking (B, 3, H, W) float32 Landsat-8
  digital numbers in the order blue, green, red, returning (B, 2, H, W)
  logits for the labels land, water (use the semantic segmentation actor,
  which applies the softmax).
* ``rasterflow/models/landsat8_water.json``: features, labels, the
  normalisation baked into the model, the receptive field, the labelling
  rule, the training settings and the accuracy on a held-out tile.

Data: the four Landsat-8 OLI tiles of rasterflow/samples/landsat8_iguazu
(path 224 row 78, 2020-05-18; blue, green, red as uint16 DN; nodata 0).

Labels come from a spectral rule, not from ground truth: water where
blue - red > 1550 DN. On this scene the histogram of blue - red is bimodal
with its valley between 1500 and 1600 DN: the Itaipu reservoir sits at
1650-1800, forest at 1250-1500, fields below 1100 (printed by ``--explain``).
The net learns the rule from 7 x 7 neighbourhoods, so it is a demonstration
model, good for showing the pipeline, not a water mapper.

Net: three 3 x 3 convolutions (3 -> 16 -> 16 -> 2) with ReLU: receptive
field 7 x 7, radius 3, so predict_mosaic with ``clip_size >= 3`` reproduces
one forward pass over the whole mosaic exactly. Normalisation ((DN - mean) /
std per band, from the training pixels) is the model's first operation, so
it takes the store's values as they are. Nodata pixels are 0, as
predict_mosaic feeds them, and are left out of the loss.

Deterministic: seeded crops and weights, deterministic algorithms, one
thread; about ten seconds on a laptop CPU. Run from the repository root::

    python scripts/train_sample_model.py [--explain]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "rasterflow" / "samples" / "landsat8_iguazu"
OUT = REPO / "rasterflow" / "models"
NAME = "landsat8_water"
FEATURES = ["blue", "green", "red"]
LABELS = ["land", "water"]
RULE_THRESHOLD = 1550  # DN of blue - red
TRAIN_TILES = ["r0c0", "r0c1", "r1c0"]
HOLDOUT_TILE = "r1c1"
SEED, STEPS, BATCH, CROP, WIDTH = 20200518, 400, 16, 64, 16


class WaterNet(torch.nn.Module):
    """Three 3 x 3 convolutions; normalisation inside, so it reads raw DN."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, WIDTH, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(WIDTH, WIDTH, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(WIDTH, len(LABELS), 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


def read_tile(tag: str) -> np.ndarray:
    path = SAMPLE / f"LC08_224078_20200518_{tag}.tif"
    with rasterio.open(path) as src:
        assert list(src.descriptions) == FEATURES, src.descriptions
        return src.read().astype(np.float32)  # (3, rows, cols), nodata 0


def rule(dn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label per pixel: 1 = water, valid pixel mask)."""
    blue, red = dn[0], dn[2]
    valid = (dn != 0).any(axis=0)
    return ((blue - red) > RULE_THRESHOLD).astype(np.int64), valid


def explain() -> None:
    dn = np.concatenate([read_tile(t).reshape(3, -1) for t in TRAIN_TILES + [HOLDOUT_TILE]], axis=1)
    valid = (dn != 0).any(axis=0)
    diff = (dn[0] - dn[2])[valid]
    counts, edges = np.histogram(diff, bins=np.arange(0, 2001, 100))
    print("blue - red (DN), all tiles:")
    for lo, n in zip(edges[:-1], counts, strict=True):
        print(f"  {int(lo):5d}..{int(lo) + 99:5d} {n:8d} {'#' * int(60 * n / counts.max())}")


def crops(tiles: list[np.ndarray], labels: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator):
    x = np.zeros((BATCH, 3, CROP, CROP), np.float32)
    y = np.zeros((BATCH, CROP, CROP), np.int64)
    m = np.zeros((BATCH, CROP, CROP), bool)
    for b in range(BATCH):
        k = rng.integers(len(tiles))
        _, rows, cols = tiles[k].shape
        r, c = rng.integers(rows - CROP), rng.integers(cols - CROP)
        x[b] = tiles[k][:, r : r + CROP, c : c + CROP]
        y[b] = labels[k][0][r : r + CROP, c : c + CROP]
        m[b] = labels[k][1][r : r + CROP, c : c + CROP]
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(m)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--explain", action="store_true", help="print the histogram behind the rule")
    args = parser.parse_args()
    if args.explain:
        explain()
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(SEED)
    started = time.perf_counter()

    tiles = [read_tile(t) for t in TRAIN_TILES]
    labels = [rule(t) for t in tiles]
    pixels = np.concatenate([t[:, v] for t, (_, v) in zip(tiles, labels, strict=True)], axis=1)
    mean, std = pixels.mean(axis=1), pixels.std(axis=1)
    water_share = float(np.mean(np.concatenate([y[v] for y, v in labels])))

    model = WaterNet(mean, std)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
    for step in range(STEPS):
        x, y, m = crops(tiles, labels, rng)
        loss = (loss_fn(model(x), y) * m).sum() / m.sum().clamp(min=1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 100 == 0 or step == STEPS - 1:
            print(f"step {step:4d} loss {loss.item():.4f}")
    model.eval()

    holdout = read_tile(HOLDOUT_TILE)
    truth, valid = rule(holdout)
    with torch.inference_mode():
        predicted = model(torch.from_numpy(holdout[None])).argmax(dim=1)[0].numpy()
    accuracy = float((predicted == truth)[valid].mean())
    print(f"held-out tile {HOLDOUT_TILE}: agreement with the rule {accuracy:.4f}")

    batch = torch.export.Dim("batch", min=1, max=65536)
    height = torch.export.Dim("height", min=8, max=16384)
    width = torch.export.Dim("width", min=8, max=16384)
    example = torch.from_numpy(tiles[0][None, :, :32, :32].copy()).repeat(2, 1, 1, 1)
    program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch, 2: height, 3: width}})
    OUT.mkdir(parents=True, exist_ok=True)
    pt2 = OUT / f"{NAME}.pt2"
    torch.export.save(program, pt2)
    meta = {
        "name": NAME,
        "file": pt2.name,
        "sha256": hashlib.sha256(pt2.read_bytes()).hexdigest(),
        "format": "torch.export archive (torch.export.save), torch " + torch.__version__.split("+")[0],
        "input": "(B, 3, H, W) float32 Landsat-8 OLI L1 digital numbers; B, H and W dynamic (H, W >= 8)",
        "output": "(B, 2, H, W) float32 logits; actor semantic_segmentation_pytorch turns them "
                  "into probabilities",
        "features": FEATURES,
        "labels": LABELS,
        "normalisation": {
            "inside_model": True,
            "formula": "(DN - mean) / std per band, before the first convolution",
            "mean": [round(float(v), 3) for v in mean],
            "std": [round(float(v), 3) for v in std],
        },
        "nodata": "0 in every band; predict_mosaic feeds nodata as 0 and writes NaN there",
        "receptive_field": {"size": 7, "radius": 3, "layers": "3 x conv3x3 (3-16-16-2), ReLU"},
        "recommended": {"patch_size": 256, "clip_size": 8, "min_clip_size": 3,
                        "actor": "semantic_segmentation_pytorch"},
        "training": {
            "data": f"rasterflow/samples/landsat8_iguazu tiles {TRAIN_TILES} (LC08 224/078 2020-05-18)",
            "rule": f"water where blue - red > {RULE_THRESHOLD} DN, else land; nodata pixels left out",
            "rule_why": "blue - red is bimodal on this scene, valley at 1500-1600 DN "
                        "(scripts/train_sample_model.py --explain)",
            "water_share": round(water_share, 4),
            "seed": SEED, "steps": STEPS, "batch": BATCH, "crop": CROP, "optimiser": "Adam lr 1e-2",
            "holdout_tile": HOLDOUT_TILE, "holdout_agreement_with_rule": round(accuracy, 4),
            "script": "scripts/train_sample_model.py",
        },
    }
    (OUT / f"{NAME}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {pt2} ({pt2.stat().st_size} bytes) and {NAME}.json "
          f"in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
