"""What the client's input checks cost: against looking at the inputs with GDAL's own tools.

Why: before a flow run exists, the client runs the workflow's planner (the
AOI and tile index read, every tile's header and block offsets, the grid and
partitions), so a mistake is one error in the caller, not a failed run. A
local run then takes that plan instead of planning again; a deployment run
plans again on its worker, so there the check is extra time in the caller.

Anchor: what a careful user runs by hand to look at the same inputs,
``ogrinfo -so -al`` on the AOI and ``gdalinfo -json`` on every tile (one
process each, as typed in a shell; Debian's GDAL has no Parquet driver, so the
index is not opened by the anchor, which flatters it). Also shown: one local
build_gti_mosaic run at its defaults into a fresh folder, the work the check
guards. Everything on the bundled Landsat-8 sample (4 COG tiles), at the
workflow's defaults (EPSG:3857, native resolution, 3 bands). Medians of
``--runs`` rounds, ratios from one run; the load average is printed, since a
shared machine makes every number noisy. From the repository root::

    python benchmarks/input_checks_vs_gdalinfo.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "rasterflow" / "samples" / "landsat8_iguazu"
CALL = dict(gti=str(SAMPLE / "tiles.parquet"), aoi=str(SAMPLE / "aoi.geojson"),
            bands=["red", "green", "blue"], location_field="location")


def gdal_look() -> None:
    import geopandas as gpd

    subprocess.run(["ogrinfo", "-so", "-al", CALL["aoi"]], check=True, capture_output=True)
    for location in gpd.read_parquet(CALL["gti"]).location:
        subprocess.run(["gdalinfo", "-json", str(SAMPLE / location)], check=True, capture_output=True)


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="rasterflow-bench-prefect-"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # a loaded machine
    from rasterflow import RasterflowClient
    from rasterflow.config import RasterflowConfig
    from rasterflow.params import BuildGtiMosaicParams
    from rasterflow.tasks.checks import check_inputs

    scratch = REPO / "benchmarks" / "out" / "input_checks"
    shutil.rmtree(scratch, ignore_errors=True)
    config = RasterflowConfig(output_uri=str(scratch / "out"))
    params = BuildGtiMosaicParams(**CALL)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    check_inputs("build-gti-mosaic", params, config, local=False)  # imports and GDAL's first open, untimed
    check = timed(lambda: check_inputs("build-gti-mosaic", params, config, local=False), args.runs)
    look = timed(gdal_look, args.runs)

    rounds = iter(range(10**6))
    client = RasterflowClient(config)
    client.build_gti_mosaic(**CALL)  # starts the embedded server, untimed

    def run() -> None:
        root = str(scratch / f"run-{next(rounds)}")
        RasterflowClient(config.model_copy(update={"output_uri": root})).build_gti_mosaic(**CALL)

    whole = timed(run, max(1, args.runs // 2))
    print(f"check (the planner, in the caller): {check:.3f} s")
    print(f"anchor: ogrinfo + gdalinfo x4:      {look:.3f} s  (anchor / check = {look / check:.1f})")
    print(f"one local run at defaults:          {whole:.3f} s  (check / run = {check / whole:.1%}; "
          "a local run takes the check's plan, so there it costs nothing more)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
