"""build_gti_mosaic vs gdalwarp: speed and pixels on the bundled Landsat-8 sample.

Why: ``RasterflowClient().build_gti_mosaic`` does what a user would otherwise do
with one ``gdalwarp`` call: warp several tiles onto a ``-tap``-style grid in
another CRS, later tiles on top, cut to an AOI. The anchor is therefore the
``gdalwarp`` program of GDAL's command-line tools (Debian package ``gdal-bin``),
run on the same tiles, onto the same output grid, with the same kernel, using
both cores (``-multi -wo NUM_THREADS=ALL_CPUS``). rasterflow earns its Prefect
orchestration, sharded Zarr v3 output and caching only if it stays in the same
league as that one-liner, and it claims the same pixels as ``gdalwarp -et 0``.

What runs:

* rasterflow: red, green, blue at 10 m in EPSG:3857 (about 9x the 30 m native
  pixels, reprojected from UTM 21N), nearest neighbour, default 512 px chunks,
  ``shard_size_bytes`` small enough for several partitions. One untimed call
  first (it starts Prefect's embedded server; reported as the cold time), then
  ``--runs`` timed calls, each with a fresh ``output_uri`` so Prefect's cache
  never serves a result.
* gdalwarp, onto the grid read back from rasterflow's first store (``-te``,
  ``-ts``, ``-t_srs``), GeoTIFF tiled 512 and ZSTD like the store's chunks, in
  four variants: ``-et 0`` (the exact transformation rasterflow uses), the
  default ``-et 0.125``, and both again with ``-cutline aoi.geojson``.
  gdalwarp's cutline masks *source* pixels whose centre is outside the AOI,
  rasterflow masks *output* pixels whose centre is outside it, so the cutline
  variants are there for their cost and differ along the AOI edge; the
  pixel-for-pixel check is ``-et 0`` without cutline, inside the AOI.
* Rounds are interleaved (rasterflow, then every gdalwarp variant, ``--runs``
  times) so background load hits all of them alike; medians are reported.

``--profile`` adds one instrumented rasterflow call with a breakdown of its wall
time (plan, store creation, GDAL warp, compositing, AOI mask, Zarr writes,
commit, index, and what is left: Prefect), and the same engine steps run in a
plain thread pool without Prefect.

Run from the repository root (outputs go to ``benchmarks/out/``, git-ignored)::

    python benchmarks/build_gti_mosaic_vs_gdalwarp.py [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "rasterflow" / "samples" / "landsat8_iguazu"
TILE_INDEX = SAMPLE / "tiles.parquet"
AOI = SAMPLE / "aoi.geojson"
OUT = REPO / "benchmarks" / "out" / "build_gti_mosaic_vs_gdalwarp"

BANDS = ["red", "green", "blue"]
CRS_EPSG = 3857
RESOLUTION = 10.0
XY_CHUNKSIZE = 512
# 64 MB gives this 2730 x 3366 grid one 3072 px partition and a 294 px sliver
# (one core does nearly all the work); 16 MB gives six 1536 px partitions.
SHARD_SIZE_BYTES = 16_000_000

GDALWARP_VARIANTS = {
    "gdalwarp -et 0": ["-et", "0"],
    "gdalwarp (default -et 0.125)": [],
    "gdalwarp -et 0 -cutline": ["-et", "0", "-cutline", str(AOI)],
    "gdalwarp -cutline (default -et)": ["-cutline", str(AOI)],
}
EXACT_VARIANT = "gdalwarp -et 0"


def require_gdalwarp() -> str:
    path = shutil.which("gdalwarp")
    if path is None:
        sys.exit(
            "error: gdalwarp is not on PATH. This benchmark compares rasterflow against GDAL's gdalwarp "
            "program; install GDAL's command-line tools, e.g. on Debian/Ubuntu:\n"
            "    apt-get update && apt-get install -y gdal-bin"
        )
    return path


def quiet_prefect(home: Path) -> None:
    """A throwaway Prefect home and no telemetry; must run before Prefect is imported."""
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"


# --------------------------------------------------------------------- runs


def run_rasterflow(output_uri: Path, shard_size_bytes: int) -> tuple[float, str]:
    """One client call into a fresh output root; (seconds, index URI)."""
    from rasterflow.client import RasterflowClient
    from rasterflow.config import RasterflowConfig
    from rasterflow.enums import ResamplingMethod

    client = RasterflowClient(RasterflowConfig(output_uri=str(output_uri)))
    start = time.perf_counter()
    index_uri = client.build_gti_mosaic(
        gti=str(TILE_INDEX), aoi=str(AOI), bands=BANDS, location_field="location",
        crs_epsg=CRS_EPSG, resolution=RESOLUTION, resampling=ResamplingMethod.NEAREST,
        xy_chunksize=XY_CHUNKSIZE, shard_size_bytes=shard_size_bytes,
    )
    return time.perf_counter() - start, index_uri


@dataclass(frozen=True)
class OutputGrid:
    crs: str
    bounds: tuple[float, float, float, float]  # minx, miny, maxx, maxy
    width: int
    height: int
    transform: object  # affine.Affine


def read_store(index_uri: str):
    """(OutputGrid, pixels as (band, y, x) in BANDS order, nodata, store URI) of a one-store index."""
    import geopandas as gpd
    import rioxarray  # noqa: F401  (.rio accessor)
    import xarray as xr

    location = gpd.read_parquet(index_uri)["location"].iloc[0]
    variables = xr.open_zarr(location)["variables"]
    transform = variables.rio.transform()
    height, width = variables.sizes["y"], variables.sizes["x"]
    bounds = (transform.c, transform.f + transform.e * height, transform.c + transform.a * width, transform.f)
    grid = OutputGrid(str(variables.rio.crs), bounds, width, height, transform)
    pixels = variables.isel(time=0).sel(band=BANDS).values
    return grid, pixels, variables.attrs.get("nodata"), location


def gdalwarp_command(gdalwarp: str, grid: OutputGrid, tiles: list[str], extra: list[str],
                     dst: Path) -> list[str]:
    return [
        gdalwarp, "-q", "-overwrite", "-multi", "-wo", "NUM_THREADS=ALL_CPUS", "-r", "near",
        "-t_srs", grid.crs, "-te", *(repr(v) for v in grid.bounds), "-ts", str(grid.width), str(grid.height),
        "-of", "GTiff", "-co", "TILED=YES", "-co", "COMPRESS=ZSTD",
        "-co", "BLOCKXSIZE=512", "-co", "BLOCKYSIZE=512",
        *extra, *tiles, str(dst),
    ]


def run_gdalwarp(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def tile_paths() -> list[str]:
    """The index's tiles in index order (the last one on top), as absolute paths."""
    import geopandas as gpd

    return [str(SAMPLE / loc) for loc in gpd.read_parquet(TILE_INDEX)["location"]]


# ------------------------------------------------------------ comparisons


def aoi_inside(grid: OutputGrid):
    """Output pixels whose centre is inside the AOI, densified as rasterflow's planner does."""
    import geopandas as gpd
    from rasterio.features import geometry_mask
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    aoi = gpd.read_file(AOI)
    geometry = aoi.union_all()
    minx, miny, maxx, maxy = geometry.bounds
    dense = geometry.segmentize(max(maxx - minx, maxy - miny, 1e-9) / 64)
    projected = shape(transform_geom(aoi.crs, grid.crs, mapping(dense)))
    return geometry_mask([projected], out_shape=(grid.height, grid.width), transform=grid.transform,
                         invert=True)


def read_geotiff(path: Path, grid: OutputGrid):
    """gdalwarp's output as (band, y, x) in BANDS order (gdalwarp keeps all source bands)."""
    import rasterio

    with rasterio.open(path) as src:
        assert (src.width, src.height) == (grid.width, grid.height), "gdalwarp wrote another grid"
        assert src.transform.almost_equals(grid.transform, precision=1e-6), "gdalwarp wrote another transform"
        descriptions = list(src.descriptions)
        return src.read([descriptions.index(b) + 1 for b in BANDS])


@dataclass
class PixelDiff:
    inside: int  # pixels (any band) that differ, centre inside the AOI
    outside: int  # same, outside the AOI (rasterflow has nodata there)


def compare(reference, other, inside) -> PixelDiff:
    differs = (reference != other).any(axis=0)
    return PixelDiff(int(differs[inside].sum()), int(differs[~inside].sum()))


# ---------------------------------------------------------------- profile


class Event(NamedTuple):
    label: str
    thread: int
    start: float  # perf_counter
    end: float
    cpu: float  # CPU seconds of the calling thread (GDAL warps in the caller's thread)


@dataclass
class Recorder:
    """Wall-clock intervals and thread CPU time of wrapped functions, from any thread."""

    events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _restore: list[tuple[object, str, object]] = field(default_factory=list)

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                event = Event(label, threading.get_ident(), start, time.perf_counter(),
                              time.thread_time() - cpu)
                with self._lock:
                    self.events.append(event)

        self.replace(owner, name, timed)

    def replace(self, owner, name: str, value) -> None:
        self._restore.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def restore(self) -> None:
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore.clear()

    def of(self, label: str) -> list[Event]:
        return [e for e in self.events if e.label == label]

    def wall(self, label: str) -> float:
        return sum(e.end - e.start for e in self.of(label))

    def cpu(self, label: str) -> float:
        return sum(e.cpu for e in self.of(label))

    def span(self, label: str) -> tuple[float, float]:
        events = self.of(label)
        return min(e.start for e in events), max(e.end for e in events)


def instrument(recorder: Recorder) -> None:
    """Time the engine calls the tasks make (the wrappers change no behaviour)."""
    from rasterio.vrt import WarpedVRT

    import rasterflow.engine.build_gti_mosaic.shard as shard
    import rasterflow.engine.warp as warp
    import rasterflow.tasks.build_gti_mosaic as tasks
    import rasterflow.tasks.stores as stores

    class TimedWarpedVRT(WarpedVRT):
        """WarpedVRT whose construction and reads are timed."""

    recorder.wrap(TimedWarpedVRT, "__init__", "create WarpedVRT")
    recorder.wrap(TimedWarpedVRT, "read", "gdal warp (WarpedVRT.read)")
    recorder.replace(warp, "WarpedVRT", TimedWarpedVRT)
    recorder.wrap(tasks, "plan_gti_mosaic", "plan")
    recorder.wrap(stores, "create_store", "create store")
    recorder.wrap(tasks, "build_shard", "build_shard")
    recorder.wrap(shard, "render_window", "render_window")
    recorder.wrap(warp, "geometry_mask", "aoi mask")
    recorder.wrap(shard, "write_window", "zarr write")
    recorder.wrap(stores, "commit_store", "commit store")
    recorder.wrap(stores, "write_index", "write index")


def profile_flow(output_uri: Path, shard_size_bytes: int) -> None:
    """One instrumented client call: where its wall time goes."""
    recorder = Recorder()
    instrument(recorder)
    try:
        wall, _ = run_rasterflow(output_uri, shard_size_bytes)
        call_end = time.perf_counter()
        call_start = call_end - wall
    finally:
        recorder.restore()

    plan0, plan1 = recorder.span("plan")
    create0, create1 = recorder.span("create store")
    shard0, shard1 = recorder.span("build_shard")
    commit0, commit1 = recorder.span("commit store")
    index0, index1 = recorder.span("write index")
    shards = recorder.of("build_shard")
    workers = len({e.thread for e in shards})

    print(f"\nProfile of one warm rasterflow call ({wall:.2f} s wall), timeline:")
    timeline = [
        ("Prefect: flow run start -> plan task", plan0 - call_start),
        ("plan (index, AOI, tile headers, partitions)", plan1 - plan0),
        ("Prefect: plan -> create-store", create0 - plan1),
        ("create store (Zarr metadata)", create1 - create0),
        ("Prefect: create-store -> first build-shard", shard0 - create1),
        (f"build-shard phase ({len(shards)} partitions on {workers} threads)", shard1 - shard0),
        ("Prefect: last build-shard -> commit-store", commit0 - shard1),
        ("commit store (consolidate, marker)", commit1 - commit0),
        ("Prefect: commit-store -> write-index", index0 - commit1),
        ("write index (GeoParquet)", index1 - index0),
        ("Prefect: write-index -> call returns (artifacts, flow end)", call_end - index1),
    ]
    for label, seconds in timeline:
        print(f"  {label:<62} {seconds:7.2f} s  {100 * seconds / wall:5.1f}%")
    engine = ((plan1 - plan0) + (create1 - create0) + (shard1 - shard0) + (commit1 - commit0)
              + (index1 - index0))
    print(f"  {'engine steps (critical path)':<62} {engine:7.2f} s  {100 * engine / wall:5.1f}%")
    print(f"  {'Prefect between steps':<62} {wall - engine:7.2f} s  {100 * (wall - engine) / wall:5.1f}%")

    phase = workers * (shard1 - shard0)
    print(f"\n  build-shard phase, summed over its {workers} threads ({phase:.2f} thread-s of wall time):")
    print(f"  {'':<62} {'wall':>7}    {'share':>5}  {'thread CPU':>10}")
    w, c = recorder.wall, recorder.cpu
    breakdown = [
        ("create WarpedVRT", w("create WarpedVRT"), c("create WarpedVRT")),
        ("GDAL warp (WarpedVRT.read, exact transform)", w("gdal warp (WarpedVRT.read)"),
         c("gdal warp (WarpedVRT.read)")),
        ("rest of render_window (open tiles, composite, buffers)",
         w("render_window") - w("gdal warp (WarpedVRT.read)") - w("create WarpedVRT") - w("aoi mask"),
         c("render_window") - c("gdal warp (WarpedVRT.read)") - c("create WarpedVRT") - c("aoi mask")),
        ("AOI mask (rasterize)", w("aoi mask"), c("aoi mask")),
        ("Zarr write (encoded in zarr's own threads: CPU not seen)", w("zarr write"), None),
        ("build_shard other (count valid, decode mask)",
         w("build_shard") - w("render_window") - w("zarr write"),
         c("build_shard") - c("render_window") - c("zarr write")),
        ("thread not in build_shard (Prefect task runs, idle)", phase - w("build_shard"), None),
    ]
    for label, seconds, cpu in breakdown:
        cpu_text = f"{cpu:8.2f} s" if cpu is not None else ""
        print(f"  {label:<62} {seconds:7.2f} s  {100 * seconds / phase:5.1f}%  {cpu_text:>10}")


def profile_engine(output_uri: Path, shard_size_bytes: int) -> None:
    """The same engine steps in a plain thread pool, without Prefect."""
    from concurrent.futures import ThreadPoolExecutor

    from rasterflow.engine import store
    from rasterflow.engine.build_gti_mosaic.plan import plan_gti_mosaic
    from rasterflow.engine.build_gti_mosaic.shard import build_shard
    from rasterflow.engine.index import write_index
    from rasterflow.enums import ResamplingMethod
    from rasterflow.params import BuildGtiMosaicParams

    params = BuildGtiMosaicParams.parse(
        gti=str(TILE_INDEX), aoi=str(AOI), bands=BANDS, location_field="location", crs_epsg=CRS_EPSG,
        resolution=RESOLUTION, resampling=ResamplingMethod.NEAREST, xy_chunksize=XY_CHUNKSIZE,
        shard_size_bytes=shard_size_bytes,
    )
    steps: dict[str, float] = defaultdict(float)
    shard_cpu = 0.0
    t = time.perf_counter()
    plan = plan_gti_mosaic(params, str(output_uri))
    steps["plan"] = time.perf_counter() - t
    for sp in plan.stores:
        t = time.perf_counter()
        store.create_store(sp.spec, sp.fingerprint, plan.provenance)
        steps["create store"] += time.perf_counter() - t
        t, cpu = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            list(pool.map(build_shard, sp.jobs))
        steps[f"build shards ({os.cpu_count()} threads)"] += time.perf_counter() - t
        shard_cpu += time.process_time() - cpu
        t = time.perf_counter()
        store.commit_store(sp.spec.uri)
        steps["commit store"] += time.perf_counter() - t
    t = time.perf_counter()
    write_index(plan.index_rows(), plan.index_uri)
    steps["write index"] = time.perf_counter() - t
    total = sum(steps.values())
    print(f"\nSame engine steps without Prefect ({total:.2f} s):")
    for label, seconds in steps.items():
        print(f"  {label:<62} {seconds:7.2f} s")
    print(f"  {'CPU time of the build shards step (all threads)':<62} {shard_cpu:7.2f} s")


# -------------------------------------------------------------------- main


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=False)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each contender (median reported)")
    parser.add_argument("--shard-size-bytes", type=int, default=SHARD_SIZE_BYTES)
    parser.add_argument("--profile", action="store_true", help="also break down one warm rasterflow call")
    args = parser.parse_args()

    gdalwarp = require_gdalwarp()
    if OUT.exists():
        shutil.rmtree(OUT)
    quiet_prefect(OUT / "prefect-home")

    import numpy as np
    import rasterio

    version = subprocess.run([gdalwarp, "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    print(f"gdalwarp: {version} | rasterflow's GDAL (rasterio {rasterio.__version__}): "
          f"{rasterio.__gdal_version__}")
    load = os.getloadavg()[0]
    print(f"CPUs: {os.cpu_count()} | load average at start: {load:.2f}")
    if load > 0.5:
        print("warning: the machine is busy; other processes share the cores and the timings will be noisy")

    tiles = tile_paths()
    cold, index_uri = run_rasterflow(OUT / "rasterflow" / "warmup", args.shard_size_bytes)
    grid, reference, nodata, store_uri = read_store(index_uri)
    print(f"rasterflow cold call (starts the embedded Prefect server): {cold:.2f} s")
    print(f"grid: {grid.crs} {grid.width} x {grid.height} px, bounds {grid.bounds}, "
          f"{len(BANDS)} bands, store {store_uri}")

    commands = {
        name: gdalwarp_command(gdalwarp, grid, tiles, extra, OUT / "gdalwarp" / f"variant{i}.tif")
        for i, (name, extra) in enumerate(GDALWARP_VARIANTS.items())
    }
    (OUT / "gdalwarp").mkdir(parents=True)
    print(f"{EXACT_VARIANT} command:\n  {' '.join(commands[EXACT_VARIANT])}")
    run_gdalwarp(commands[EXACT_VARIANT])  # untimed: page cache and PROJ database as warm as rasterflow's

    times: dict[str, list[float]] = defaultdict(list)
    last_index = index_uri
    for r in range(args.runs):
        seconds, last_index = run_rasterflow(OUT / "rasterflow" / f"run{r}", args.shard_size_bytes)
        times["rasterflow build_gti_mosaic"].append(seconds)
        for name, command in commands.items():
            times[name].append(run_gdalwarp(command))
        print(f"round {r + 1}/{args.runs}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()))

    inside = aoi_inside(grid)
    rasterflow_again = read_store(last_index)[1]
    leaks = int(((reference != nodata).any(axis=0) & ~inside).sum())
    diffs = {name: compare(reference, read_geotiff(Path(cmd[-1]), grid), inside)
             for name, cmd in commands.items()}

    rf = statistics.median(times["rasterflow build_gti_mosaic"])
    rows = [["rasterflow build_gti_mosaic (warm)", f"{rf:.2f}", "1.00", "reference", "reference"]]
    for name in commands:
        median = statistics.median(times[name])
        d = diffs[name]
        rows.append([name, f"{median:.2f}", f"{median / rf:.2f}", f"{d.inside:,}", f"{d.outside:,}"])
    print(f"\nMedian of {args.runs} runs; ratio > 1 means rasterflow is faster. Pixels = output pixels (all "
          f"{len(BANDS)} bands compared); AOI = pixel centre inside the AOI ({int(inside.sum()):,} inside, "
          f"{int((~inside).sum()):,} outside of {inside.size:,}).")
    print(table(rows, ["contender", "median s", "gdalwarp/rasterflow", "px differ in AOI",
                       "px differ outside"]))
    print(f"rasterflow cold (first call, embedded server start): {cold:.2f} s")
    equal = diffs[EXACT_VARIANT].inside == 0
    print(f"{EXACT_VARIANT} equals rasterflow inside the AOI, pixel for pixel: {'YES' if equal else 'NO'}")
    print(f"rasterflow pixels with data outside the AOI (expected 0): {leaks:,}")
    print("rasterflow runs reproduce each other: "
          f"{'yes' if np.array_equal(reference, rasterflow_again) else 'NO'}")
    print("Outside the AOI gdalwarp without -cutline keeps data where rasterflow writes nodata; with "
          "-cutline gdalwarp tests source pixel centres, rasterflow output pixel centres, so edge "
          "pixels differ.")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")

    if args.profile:
        profile_flow(OUT / "rasterflow" / "profile", args.shard_size_bytes)
        profile_engine(OUT / "rasterflow" / "engine-only", args.shard_size_bytes)


if __name__ == "__main__":
    main()
