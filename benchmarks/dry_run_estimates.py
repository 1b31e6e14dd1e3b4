"""Dry-run estimates against the measured runs: every workflow on the bundled samples.

Why: ``RasterflowClient(dry_run=True)`` answers "what would this cost?" before
a continental job starts, with an estimated duration from each workflow's
documented rate (``Rate`` in its engine plan module; docs/workflows.md, "Dry
runs and the cache"). The goal is an estimate within 2x of the measured run. The anchor is
the run itself: the same call without ``dry_run``, timed. This script also
calibrates the rates: it prints, per workload, the pixels and task runs the
plan counted, so ``run_seconds``, ``task_seconds`` and ``megapixels_per_second``
can be fitted across the two sizes of each workflow.

What runs, at rasterflow's defaults except where a sample needs a size: the
six workflows on the bundled samples (build_mosaic and the recipe against a
STAC API of the samples served on loopback by ``rustac serve``, the recipe
with its bundled stand-in model), each at the sample's size and at a larger
resolution of the same pixels (``--no-large`` skips those). Per workload: the
dry run (its time; it must leave the output folder as it was), then ``--runs``
real runs, each into a fresh output root so the cache never answers, with
Prefect's embedded server already up (one untimed call starts it: a first
call in a process pays 5-15 s more). Printed: estimate, median measured,
measured / estimate (goal: 0.5..2), the CPU seconds of the run (this process
and its children, the server included: ``cputime.py``; less sensitive to
other people's load than wall time), the load average before and after.

    python benchmarks/dry_run_estimates.py [--runs 3] [--workers 2] [--no-large]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from build_mosaic_vs_odc_stac import aoi_file, make_sample, serve  # the STAC sample, served on loopback
from cputime import cpu_seconds
from orchestration_overhead import quiet_prefect

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "rasterflow" / "samples"
OUT = REPO / "benchmarks" / "out" / "dry_run_estimates"
RGB = ["red", "green", "blue"]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time: what a dry run must not change."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def workloads(ctx: dict, large: bool) -> list[tuple[str, str, Callable]]:
    """(name, client method, call(client)) in dependency order; later calls read ``ctx``."""
    from rasterflow import InferenceActorEnum, MergeModeEnum
    from rasterflow.enums import DatasetEnum, ModelRecipes

    landsat, haiti = SAMPLES / "landsat8_iguazu", SAMPLES / "haiti_rgbn"
    model = str(REPO / "rasterflow" / "models" / "landsat8_water.pt2")

    def gti(resolution):
        return lambda c: c.build_gti_mosaic(str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), RGB,
                                            "location", crs_epsg=32621, resolution=resolution)

    def predict(c):
        return c.predict_mosaic(ctx["mosaic"], model, patch_size=256, clip_size=8, device="auto",
                                features=["blue", "green", "red"], labels=["land", "water"],
                                actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH, max_batch_size=8,
                                merge_mode=MergeModeEnum.WEIGHTED_AVERAGE)

    def mosaic_store():
        import geopandas as gpd

        return gpd.read_parquet(ctx["mosaic"]).location[0]

    out = [
        ("build_gti_mosaic 30 m", "mosaic", gti(None)),
        ("predict_mosaic", "water", predict),
        ("vectorize_mosaic", None, lambda c: c.vectorize_mosaic(ctx["water"], ["water"], 0.5)),
        ("build_zarr_multiscales", None, lambda c: c.build_zarr_multiscales(mosaic_store())),
        ("build_mosaic S2 medians", None, lambda c: c.build_mosaic(
            [DatasetEnum.S2_MED_WINDOWED_PIXEL], ctx["s2_aoi"], "2021-01-01", "2022-12-31", crs_epsg=32621)),
        ("recipe chesapeake_rsc", None, lambda c: c.build_and_predict_mosaic_recipe(
            str(haiti / "aoi.geojson"), "2019-01-01", "2019-12-31", ModelRecipes.CHESAPEAKE_RSC)),
    ]
    if large:
        out += [
            ("build_gti_mosaic 10 m", "mosaic", gti(10.0)),
            ("predict_mosaic 10 m", "water", predict),
            ("vectorize_mosaic 10 m", None, lambda c: c.vectorize_mosaic(ctx["water"], ["water"], 0.5)),
            ("build_zarr_multiscales 10 m", None, lambda c: c.build_zarr_multiscales(mosaic_store())),
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-large", action="store_true", help="only the samples' own sizes")
    args = parser.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    quiet_prefect(OUT / "prefect-home")

    from rasterflow import RasterflowClient
    from rasterflow.config import RasterflowConfig
    from rasterflow.engine.build_and_predict_mosaic_recipe.recipes import recipe_spec
    from rasterflow.engine.build_mosaic.catalog import DatasetSource
    from rasterflow.enums import DatasetEnum, ModelRecipes

    sample = make_sample(300)
    server, url = serve(sample)
    try:
        ctx = {"s2_aoi": str(aoi_file(sample)[0])}

        def config(root: Path) -> RasterflowConfig:
            return RasterflowConfig(output_uri=str(root), max_workers=args.workers,
                                    datasets={d: DatasetSource(stac_url=url) for d in DatasetEnum},
                                    recipe_models={r: recipe_spec(r).standin for r in ModelRecipes})

        print(f"load average before: {os.getloadavg()}")
        landsat = SAMPLES / "landsat8_iguazu"
        RasterflowClient(config(OUT / "warm-up")).build_gti_mosaic(  # starts the embedded server, untimed
            str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), RGB, "location", resolution=240)
        rows = []
        for n, (name, keep, call) in enumerate(workloads(ctx, not args.no_large)):
            root = OUT / f"w{n}"
            before = tree(root)
            start = time.perf_counter()
            report = call(RasterflowClient(config(root), dry_run=True))
            planned = time.perf_counter() - start
            assert tree(root) == before, f"{name}: the dry run wrote {set(tree(root)) - set(before)}"
            times, cpu = [], []
            for r in range(args.runs):
                start, used = time.perf_counter(), cpu_seconds()
                answer = call(RasterflowClient(config(OUT / f"w{n}-run{r}")))
                times.append(time.perf_counter() - start)
                cpu.append(cpu_seconds() - used)
            if keep:
                ctx[keep] = answer
            measured = statistics.median(times)
            rows.append((name, report.estimated_seconds, measured, planned, sum(report.tasks.values()),
                         report.pixels))
            print(f"{name:28} estimate {report.estimated_seconds:6.1f} s  measured {measured:6.1f} s  "
                  f"ratio {measured / report.estimated_seconds:4.2f}  (dry run {planned:.1f} s, "
                  f"{sum(report.tasks.values())} tasks, {report.pixels / 1e6:.1f} Mpx, "
                  f"{statistics.median(cpu):.1f} CPU s)", flush=True)
        print(f"load average after: {os.getloadavg()}")
        worst = max(max(m / e, e / m) for _, e, m, *_ in rows)
        print(f"worst factor between estimate and measured: {worst:.2f} (goal: <= 2)")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
