"""predict_mosaic with a real ONNX model (ukis-csmask) against the same model in a bare loop, and CSmask.

Why: the question users ask of a pipeline around a heavy model is what it adds
on top of the model. Three ways to get the same cloud and shadow classes of
the bundled Sentinel-2 sample (rasterflow/samples/s2_l1c_brandenburg, mosaicked
at ``--resolution`` m so the model has work: 5 m gives 128 patches of 256 px):

* bare: the model file predict_mosaic runs (the package's 6-band L1C graph
  with the scaling in front), in the same onnxruntime session, over the same
  patches (every TUKEY patch of the global grid, mirrored at the edges, as
  predict_mosaic needs them), already in memory as float32 batches of 8.
  No I/O, no softmax, no merging: the floor.
* CSmask (the outside anchor, as users run it): ``ukis_csmask.mask.CSmask``
  on the image as a numpy array, onnxruntime's CPU provider, its default
  batch size (1) and ``--csmask-batch`` (8).
* predict_mosaic at the recipe's defaults (TUKEY 256/51, batch 8, block
  multiplier 4, Prefect's thread runner with 2 workers) on a warm client
  (one untimed call first starts Prefect and loads the model), each timed
  call into a fresh output root so the cache never answers.

Efficiency = bare / predict_mosaic (goal >= 0.9 on CPU); the speed-up over
CSmask is CSmask / predict_mosaic. Medians of ``--runs``, ratios from one
run; the load average is printed before and after. Needs the csmask extra.
Run from the repository root (outputs under benchmarks/out/, git-ignored)::

    python benchmarks/predict_mosaic_csmask_efficiency.py [--runs 3] [--resolution 5]
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
SAMPLE = REPO / "rasterflow" / "samples" / "s2_l1c_brandenburg"
OUT = REPO / "benchmarks" / "out" / "predict_mosaic_csmask_efficiency"
BATCH = 8


def patches(image, patch: int, clip: int):
    """Every TUKEY patch of the image, mirrored past its edges, as predict_mosaic feeds them."""
    import numpy as np

    from rasterflow.engine.predict_mosaic.patches import AxisTiling, mirror_index
    from rasterflow.enums import MergeModeEnum

    _, h, w = image.shape
    rows, cols = (AxisTiling(h, patch, clip, MergeModeEnum.TUKEY),
                  AxisTiling(w, patch, clip, MergeModeEnum.TUKEY))
    out = []
    for r in rows.origins:
        for c in cols.origins:
            ri, ci = mirror_index(np.arange(r, r + patch), h), mirror_index(np.arange(c, c + patch), w)
            out.append(image[:, ri][:, :, ci])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--resolution", type=float, default=5.0)
    parser.add_argument("--csmask-batch", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_HOME", str(OUT / "prefect-home"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # loaded machines
    shutil.rmtree(OUT / "rasterflow", ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()}")

    import numpy as np
    import torch
    from ukis_csmask.mask import CSmask

    from rasterflow import InferenceActorEnum, MergeModeEnum, RasterflowClient
    from rasterflow.config import RasterflowConfig
    from rasterflow.engine.build_and_predict_mosaic_recipe import csmask
    from rasterflow.engine.index import read_index
    from rasterflow.engine.predict_mosaic.model import file_sha256, load_model
    from rasterflow.engine.store import open_store

    model_path = csmask.local_model(6, "l1c", folder=OUT / "models")
    client = RasterflowClient(RasterflowConfig(output_uri=str(OUT / "rasterflow" / "mosaic"), max_workers=2))
    mosaic = client.build_gti_mosaic(
        str(SAMPLE / "tiles.parquet"), str(SAMPLE / "aoi.parquet"), list(csmask.BANDS), "location",
        crs_epsg=32633, resolution=args.resolution, xy_chunksize=512,
    )
    store = read_index(mosaic).location[0]
    image = open_store(store)["variables"].values[0].astype(np.float32)
    values = dict(store=store, model_path=str(model_path), patch_size=csmask.PATCH_SIZE,
                  clip_size=csmask.CLIP_SIZE, device="cpu", features=list(csmask.BANDS),
                  labels=list(csmask.LABELS), actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH,
                  max_batch_size=BATCH, merge_mode=MergeModeEnum.TUKEY)

    module = load_model(model_path.resolve(), file_sha256(model_path), "cpu").module  # what predict runs
    stack = patches(image, csmask.PATCH_SIZE, csmask.CLIP_SIZE)
    batches = [torch.from_numpy(np.stack(stack[k : k + BATCH])) for k in range(0, len(stack), BATCH)]
    reflectance = np.moveaxis(image, 0, -1) / np.float32(10000)
    print(f"mosaic {image.shape[1]} x {image.shape[2]} px at {args.resolution} m, {len(stack)} patches of "
          f"{csmask.PATCH_SIZE} px, batch {BATCH}, onnxruntime CPU")

    def bare() -> None:
        with torch.inference_mode():
            for batch in batches:
                module(batch)

    def reference(batch: int) -> np.ndarray:
        return CSmask(reflectance.copy(), band_order=list(csmask.BANDS), product_level="l1c", nodata_value=0,
                      providers=["CPUExecutionProvider"], batch_size=batch).csm[..., 0]

    def predict(root: Path) -> str:
        config = RasterflowConfig(output_uri=str(root), max_workers=2)
        return RasterflowClient(config).predict_mosaic(**values)

    bare()  # warm the kernels
    predict(OUT / "rasterflow" / "warmup")  # warm client: Prefect up, model loaded and probed
    rows = {"bare loop (floor)": [], "predict_mosaic (defaults)": [], "CSmask batch 1 (anchor)": [],
            f"CSmask batch {args.csmask_batch}": []}
    answer = None
    for run in range(args.runs):
        root = OUT / "rasterflow" / f"run{run}"
        for name, call in (("bare loop (floor)", bare),
                           ("predict_mosaic (defaults)", lambda r=root: predict(r)),
                           ("CSmask batch 1 (anchor)", lambda: reference(1)),
                           (f"CSmask batch {args.csmask_batch}", lambda: reference(args.csmask_batch))):
            started = time.perf_counter()
            result = call()
            rows[name].append(time.perf_counter() - started)
            if name.startswith("CSmask batch 1"):
                answer = result
    # The first timed run's answer (a second call into its root is served by the cache).
    predicted = open_store(read_index(predict(OUT / "rasterflow" / "run0")).location[0])
    classes = predicted["variables"].values[0].argmax(axis=0)
    pipeline = statistics.median(rows["predict_mosaic (defaults)"])
    floor = statistics.median(rows["bare loop (floor)"])
    print(f"\n{'':28s} {'median s':>9s} {'patches/s':>10s} {'bare/this':>10s} {'this/predict':>12s}")
    for name, times in rows.items():
        t = statistics.median(times)
        print(f"{name:28s} {t:9.2f} {len(stack) / t:10.2f} {floor / t:10.3f} {t / pipeline:12.3f}")
    anchor = statistics.median(rows["CSmask batch 1 (anchor)"])
    print(f"\nefficiency (bare / predict_mosaic): {floor / pipeline:.3f}; predict_mosaic is "
          f"{anchor / pipeline:.2f}x CSmask (batch 1); classes equal to CSmask's on "
          f"{(classes == answer).mean():.6f} of {classes.size} px")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    sys.exit(main())
