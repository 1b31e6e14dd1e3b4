"""build_zarr_multiscales vs gdaladdo -r average: overview pyramids of the same pixels.

Why: a user who wants overviews of a raster would otherwise run GDAL's
``gdaladdo -r average`` (Debian package ``gdal-bin``) on a GeoTIFF. rasterflow
does more (it copies level 0 into a new store, never touching the input, and
computes per-band statistics and histograms over level 0), so matching
gdaladdo's time is the bar for its orchestration and Zarr I/O.

What runs, on the same pixels:

* The input: ``build_gti_mosaic`` of the bundled Landsat-8 sample at 5 m
  (``--resolution``) in EPSG:32621 (4802 x 6001 pixels at 5 m, red/green/blue
  uint16, nodata 0; 512 px chunks, 3072 px shards), built once, untimed. The
  same pixels are written to a GeoTIFF tiled 512 x 512 and ZSTD-compressed
  like the store's chunks.
* rasterflow: ``RasterflowClient().build_zarr_multiscales(store)`` with its
  defaults (average, levels down to one 512 px chunk: 5 levels at 5 m; level 0
  copies the mosaic's shard objects; each partition's chunks on every core),
  Prefect's embedded server. One untimed call first (it starts the server: the warm
  client), then timed calls, each into a fresh ``output_uri`` so the cache
  never answers.
* the anchor, as users run it with every core: gdaladdo with ``--config
  GDAL_NUM_THREADS ALL_CPUS``, the same number of levels (factors 2 4 8 16 at
  5 m), on a fresh copy of the GeoTIFF each time (the copy is not timed); its
  overviews inherit the file's ZSTD compression. Its default single thread is
  a labelled variant.
* rasterflow's engine steps in a plain two-thread pool without Prefect, in the
  flow's order (``engine.build_zarr_multiscales.stages.build_pyramids``): the per-pixel work
  without the orchestration, and so what the orchestration costs.
* ``--resolution 2.5`` makes the input 4x larger (9604 x 12002 px, 692 MB raw,
  6 levels) from the same sample: a user's area is bigger than the bundled
  sample, and Prefect's fixed cost per run (about a second here) weighs less.
  The engine-only line shows the per-pixel speed whatever the size.

Rounds are interleaved so background load hits all contenders alike; medians
are reported, with the speed gdaladdo (all threads) / contender (above 1:
faster than the anchor), each contender's median CPU seconds (its processes
and their children, Prefect's server included: ``cputime.py``), which other
load on a shared machine sways much less than wall time, and its peak RSS
(``measure.py``). Run from the repository root
(outputs go to ``benchmarks/out/``)::

    python benchmarks/build_zarr_multiscales_vs_gdaladdo.py [--runs 3] [--resolution 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from measure import Measured, child, in_process

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "rasterflow" / "samples" / "landsat8_iguazu"
OUT = REPO / "benchmarks" / "out" / "build_zarr_multiscales_vs_gdaladdo"
BANDS = ["red", "green", "blue"]
CRS_EPSG = 32621
RESOLUTION = 5.0  # metres; --resolution changes it
XY_CHUNKSIZE = 512
MOSAIC_SHARD_BYTES = 64_000_000  # only shapes the input; the pyramid picks its own shards


def require_gdaladdo() -> str:
    path = shutil.which("gdaladdo")
    if path is None:
        sys.exit("error: gdaladdo is not on PATH; install GDAL's command-line tools, e.g. on Debian/Ubuntu:\n"
                 "    apt-get update && apt-get install -y gdal-bin")
    return path


def quiet_prefect(home: Path) -> None:
    """A throwaway Prefect home and no telemetry; must run before Prefect is imported."""
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # A fresh database migrates on first start: slow on a busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def client(output_uri: Path):
    from rasterflow.client import RasterflowClient
    from rasterflow.config import RasterflowConfig

    return RasterflowClient(RasterflowConfig(output_uri=str(output_uri)))


def build_input(resolution: float) -> tuple[str, Path]:
    """The mosaic (a Zarr store) and the same pixels as a tiled, ZSTD GeoTIFF."""
    import geopandas as gpd
    import rioxarray  # noqa: F401
    import xarray as xr

    index = client(OUT / "input").build_gti_mosaic(
        str(SAMPLE / "tiles.parquet"), str(SAMPLE / "aoi.geojson"), BANDS, "location", crs_epsg=CRS_EPSG,
        resolution=resolution, xy_chunksize=XY_CHUNKSIZE, shard_size_bytes=MOSAIC_SHARD_BYTES,
    )
    store = gpd.read_parquet(index).location[0]
    geotiff = OUT / "input.tif"
    data = xr.open_zarr(store)["variables"].isel(time=0)
    data.rio.to_raster(geotiff, tiled=True, blockxsize=XY_CHUNKSIZE, blockysize=XY_CHUNKSIZE,
                       compress="ZSTD", nodata=0)
    return store, geotiff


def run_rasterflow(store: str, output_uri: Path) -> Measured:
    """One call at rasterflow's defaults, measured."""
    return in_process(lambda: client(output_uri).build_zarr_multiscales(store))


def run_gdaladdo(gdaladdo: str, geotiff: Path, factors: list[int], threads: str | None) -> Measured:
    copy = OUT / "gdaladdo.tif"
    shutil.copyfile(geotiff, copy)  # not timed
    command = [gdaladdo, "-q", "-r", "average",
               *(["--config", "GDAL_NUM_THREADS", threads] if threads else []), str(copy), *map(str, factors)]
    return child(command)


def run_engine(store: str, output_uri: Path, workers: int = 2) -> Measured:
    """The flow's engine steps, in its order, in a plain thread pool (no Prefect)."""
    from rasterflow.engine.build_zarr_multiscales.plan import plan_multiscales
    from rasterflow.engine.build_zarr_multiscales.stages import build_pyramids
    from rasterflow.engine.index import write_index
    from rasterflow.params import BuildZarrMultiscalesParams

    def run() -> None:
        plan = plan_multiscales(BuildZarrMultiscalesParams.parse(store=store), str(output_uri))
        with ThreadPoolExecutor(workers) as pool:
            build_pyramids(plan.pyramids, plan.provenance, pool.map)
        write_index(plan.index_rows(), plan.index_uri)

    return in_process(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each contender (median reported)")
    parser.add_argument("--resolution", type=float, default=RESOLUTION,
                        help="pixel size of the input mosaic (m)")
    args = parser.parse_args()
    gdaladdo = require_gdaladdo()
    shutil.rmtree(OUT, ignore_errors=True)
    quiet_prefect(OUT / "prefect-home")
    print(f"load average before: {os.getloadavg()}")

    start = time.perf_counter()
    store, geotiff = build_input(args.resolution)
    from rasterflow.engine.build_zarr_multiscales.plan import plan_multiscales
    from rasterflow.params import BuildZarrMultiscalesParams

    (pyramid,) = plan_multiscales(BuildZarrMultiscalesParams.parse(store=store), str(OUT / "plan")).pyramids
    shapes = [(lvl.spec.grid.height, lvl.spec.grid.width) for lvl in pyramid.levels]
    factors = [2**n for n in range(1, len(shapes))]
    raw_mb = shapes[0][0] * shapes[0][1] * len(BANDS) * 2 / 1e6
    print(f"input: {shapes[0][0]} x {shapes[0][1]} px x {len(BANDS)} bands uint16 ({raw_mb:.0f} MB raw), "
          f"built in {time.perf_counter() - start:.1f} s")
    print(f"levels: {len(shapes)} ({', '.join(f'{h} x {w}' for h, w in shapes)}); "
          f"gdaladdo factors {factors}; partitions per level {[len(lvl.jobs) for lvl in pyramid.levels]}")

    cold = run_rasterflow(store, OUT / "rasterflow" / "warmup").wall
    print(f"rasterflow cold call (starts Prefect's embedded server): {cold:.2f} s")
    ours = "rasterflow build_zarr_multiscales, defaults"
    anchor = "gdaladdo -r average, GDAL_NUM_THREADS=ALL_CPUS"
    contenders = {
        ours: lambda r: run_rasterflow(store, OUT / "rasterflow" / f"run{r}"),
        anchor: lambda r: run_gdaladdo(gdaladdo, geotiff, factors, "ALL_CPUS"),
        "variant: gdaladdo -r average, 1 thread (its default)":
            lambda r: run_gdaladdo(gdaladdo, geotiff, factors, None),
        "variant: rasterflow engine only, no Prefect (2 threads)":
            lambda r: run_engine(store, OUT / "engine" / f"run{r}"),
    }
    measured: dict[str, list[Measured]] = {name: [] for name in contenders}
    for r in range(args.runs):
        for name, run in contenders.items():
            measured[name].append(run(r))
        walls = ", ".join(f"{n} {m[-1].wall:.2f} s" for n, m in measured.items())
        print(f"round {r + 1}/{args.runs}: {walls}", flush=True)
    anchor_wall = statistics.median(m.wall for m in measured[anchor])
    print(f"\nmedian of {args.runs} runs; speed = gdaladdo (all threads) wall / contender wall (above 1: "
          "faster than the anchor); RSS = peak of the working process (rasterflow: this process, Prefect's "
          "server apart)")
    width = max(map(len, measured))
    for name, ms in measured.items():
        wall = statistics.median(m.wall for m in ms)
        cpu, rss = statistics.median(m.cpu for m in ms), max(m.rss_mb for m in ms)
        runs = ", ".join(f"{m.wall:.2f}" for m in ms)
        print(f"  {name:<{width}}  {wall:6.2f} s   speed {anchor_wall / wall:5.2f}   CPU {cpu:5.2f} s   "
              f"RSS {rss:5.0f} MB   runs [{runs}]")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
