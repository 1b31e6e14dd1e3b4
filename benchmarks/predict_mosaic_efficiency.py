"""predict_mosaic's pipeline efficiency: how close it runs to the bare model.

Why: users bring models that cost far more than any I/O, so the question is
what predict_mosaic adds on top of the model itself (reading, patching,
batching, merging, writing, Prefect). The anchor is the model alone:

* bare: the same exported module, under ``torch.inference_mode``, over the
  same patches (every patch of the global patch grid that touches a valid
  pixel), already in memory as float32 batches, at each batch size 1, 2, 4,
  ... up to ``--batch``; the fastest is the anchor. No I/O, no softmax, no
  merging: the floor a pipeline cannot beat on this device.
* predict_mosaic: ``RasterflowClient.predict_mosaic`` on a warm client (one
  untimed call first starts Prefect, imports torch and loads the model), each
  timed call into a fresh output root so the cache never answers.
* naive: the same module over the same patches one at a time (batch 1), the
  loop people write first.

Efficiency = fastest bare time / predict_mosaic wall time (goal >= 0.9 on
CPU), predict_mosaic at its defaults with ``max_batch_size=--batch`` (its plan
times the batch sizes up to it and runs the fastest; the chosen size is
printed).

The workload is model-bound on purpose, so the ratio measures the pipeline
and not a toy: the Landsat-8 sample mosaicked at 10 m in EPSG:32621 (about
2400 x 3000 px, nearest neighbour from 30 m) and a fully convolutional net of
four 3 x 3 convolutions 64 channels wide (3-64-64-64-2, receptive-field
radius 4), patches of 256 px with clip_size 8, CLIP merge, batches of 16.
The script also reports how many patches the blocks ran against the unique
ones (from the infer-block results): a patch whose region straddles a block
border is needed by both blocks; the second-phase block of the checkerboard
takes it from its neighbour instead of running it again, so only patches at
block corners run twice. It runs both the default multiplier (4) and one
large enough for one block per store.

On CPU, large batches of large patches are memory-bound: batch 16 ran
1.4-2.0x slower per patch than batch 1 here, which is why the anchor is the
best of the sizes and why predict_mosaic times them.

About seven minutes on two idle cores; timings mean something only on an
otherwise idle machine (the load average is printed before and after).
Run from the repository root (outputs under ``benchmarks/out/``, git-ignored)::

    python benchmarks/predict_mosaic_efficiency.py [--runs 3] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "rasterflow" / "samples" / "landsat8_iguazu"
OUT = REPO / "benchmarks" / "out" / "predict_mosaic_efficiency"
FEATURES, LABELS = ["blue", "green", "red"], ["land", "water"]
PATCH, CLIP = 256, 8


def heavy_model(path: Path) -> Path:
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            layers, width, channels = [], 64, 3
            for _ in range(3):
                layers += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU()]
                channels = width
            self.body = torch.nn.Sequential(*layers, torch.nn.Conv2d(width, len(LABELS), 3, padding=1))

        def forward(self, x):
            return self.body(x / 10000.0)

    dims = {0: torch.export.Dim("b", min=1, max=4096), 2: torch.export.Dim("h", min=8, max=8192),
            3: torch.export.Dim("w", min=8, max=8192)}
    program = torch.export.export(Net().eval(), (torch.zeros(2, 3, 64, 64),), dynamic_shapes={"x": dims})
    torch.export.save(program, path)
    return path


def unique_patches(store_uri: str) -> list[tuple[int, int]]:
    """Origins of the global patches touching a valid pixel: what any pipeline must run."""
    from rasterflow.engine.predict_mosaic.patches import AxisTiling
    from rasterflow.engine.store import open_store
    from rasterflow.enums import MergeModeEnum

    values = open_store(store_uri)["variables"].values[0]
    valid = (values != 0).any(axis=0)
    h, w = valid.shape
    rows, cols = (AxisTiling(h, PATCH, CLIP, MergeModeEnum.CLIP),
                  AxisTiling(w, PATCH, CLIP, MergeModeEnum.CLIP))
    return [(int(r), int(c)) for i, r in enumerate(rows.origins) for j, c in enumerate(cols.origins)
            if valid[rows.start[i]:rows.end[i], cols.start[j]:cols.end[j]].any()]


def block_results(output_root: Path) -> list:
    """The infer-block results a run persisted under its output root (patches run and taken)."""
    import json

    from rasterflow.engine.predict_mosaic.group import BlockSummary

    return [BlockSummary.model_validate(json.loads(json.loads(path.read_text())["result"])["data"])
            for path in (output_root / ".prefect-results").glob("infer-block-*")]


def time_model(module, batches) -> float:
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            module(batch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16, help="max_batch_size; bare runs 1, 2, 4 .. it")
    parser.add_argument("--multipliers", default="4,8", help="xy_block_multiplier values (4: the default)")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_HOME", str(OUT / "prefect-home"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # a loaded machine
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    shutil.rmtree(OUT / "rasterflow", ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()}")

    import numpy as np
    import torch

    from rasterflow import InferenceActorEnum, MergeModeEnum, RasterflowClient
    from rasterflow.config import RasterflowConfig
    from rasterflow.engine.index import read_index
    from rasterflow.engine.predict_mosaic.batch import candidate_sizes
    from rasterflow.engine.predict_mosaic.model import file_sha256, load_model
    from rasterflow.engine.predict_mosaic.plan import plan_predict_mosaic
    from rasterflow.params import PredictMosaicParams

    model_path = heavy_model(OUT / "heavy.pt2")
    client = RasterflowClient(RasterflowConfig(output_uri=str(OUT / "rasterflow" / "mosaic"), max_workers=2))
    mosaic = client.build_gti_mosaic(
        str(SAMPLE / "tiles.parquet"), str(SAMPLE / "aoi.geojson"), FEATURES, "location", crs_epsg=32621,
        resolution=10, xy_chunksize=512, shard_size_bytes=2048 * 2048 * 6,
    )
    store = read_index(mosaic).location[0]
    values = dict(store=store, model_path=str(model_path), patch_size=PATCH, clip_size=CLIP, device="cpu",
                  features=FEATURES, labels=LABELS, actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH,
                  max_batch_size=args.batch, merge_mode=MergeModeEnum.CLIP)

    # The same module object predict_mosaic runs (loaded once per process).
    model = load_model(model_path.resolve(), file_sha256(model_path), "cpu").module
    image = read_store(store)
    multipliers = {int(m): None for m in args.multipliers.split(",")}
    for m in multipliers:
        plan = plan_predict_mosaic(PredictMosaicParams.parse(**values, xy_block_multiplier=m),
                                   str(OUT / "plan"))
        multipliers[m] = plan
    patches = unique_patches(store)
    stack = [image[:, r : r + PATCH, c : c + PATCH] for r, c in patches]
    sizes = candidate_sizes(args.batch)
    batches = {size: [torch.from_numpy(np.stack(stack[k : k + size])) for k in range(0, len(stack), size)]
               for size in sizes}
    chosen = {plan.stores[0].jobs[0].spec.batch_size for plan in multipliers.values()}
    print(f"mosaic {image.shape[1]} x {image.shape[2]} px, {len(patches)} patches of {PATCH} px, "
          f"max_batch_size {args.batch}, batch chosen by predict_mosaic's plan {chosen}, "
          f"torch threads {torch.get_num_threads()}")

    for size in sizes:
        time_model(model, batches[size][:2])  # warm the kernels
    runs = {f"bare, batch {size}": [] for size in sizes} | {f"predict_mosaic m={m}": [] for m in multipliers}
    predict_call = lambda m, root: (RasterflowClient(RasterflowConfig(output_uri=str(root), max_workers=2))
                                    .predict_mosaic(**values, xy_block_multiplier=m))
    predict_call(4, OUT / "rasterflow" / "warmup")  # warm client: Prefect up, torch imported, model loaded
    for run in range(args.runs):
        for size in sizes:
            runs[f"bare, batch {size}"].append(time_model(model, batches[size]))
        for m in multipliers:
            root = OUT / "rasterflow" / f"run{run}-m{m}"
            shutil.rmtree(root, ignore_errors=True)
            started = time.perf_counter()
            predict_call(m, root)
            runs[f"predict_mosaic m={m}"].append(time.perf_counter() - started)

    bare_name, bare = min(((name, statistics.median(t)) for name, t in runs.items()
                           if name.startswith("bare")), key=lambda item: item[1])
    print(f"\n{'':24s} {'median s':>9s} {'patches/s':>10s} {'efficiency':>10s}  (fastest bare: {bare_name}, "
          "/ this)")
    for name, times in runs.items():
        t = statistics.median(times)
        print(f"{name:24s} {t:9.2f} {len(patches) / t:10.1f} {bare / t:10.3f}")
    for m, plan in multipliers.items():
        results = block_results(OUT / "rasterflow" / f"run0-m{m}")
        ran, taken = sum(r.patches for r in results), sum(r.patches_taken for r in results)
        jobs = plan.stores[0].jobs
        print(f"m={m}: {sum(len(j.blocks) for j in jobs)} block(s) of {jobs[0].block} px in {len(jobs)} "
              f"task(s), "
              f"{ran} patches run for {len(patches)} unique ({ran / len(patches):.3f}x), "
              f"{taken} taken from a neighbour")
    print(f"load average after: {os.getloadavg()}")


def read_store(uri: str):
    import numpy as np

    from rasterflow.engine.store import open_store

    raw = open_store(uri)["variables"].values[0]
    return np.where(raw == 0, 0, raw).astype(np.float32)


if __name__ == "__main__":
    sys.exit(main())
