"""build_gti_mosaic vs gdalwarp: speed, memory and pixels on the bundled Landsat-8 sample.

Why: ``RasterflowClient().build_gti_mosaic`` does what a user would otherwise do
with one ``gdalwarp`` call: warp several tiles onto a grid in another CRS,
later tiles on top. The anchor is that call as users run it, with every core:
``gdalwarp -multi -wo NUM_THREADS=ALL_CPUS`` at its default error threshold
(``-et 0.125``). rasterflow earns its Prefect orchestration, sharded Zarr v3
output and caching only if it is at least as fast, in as little memory.

The job: all four Landsat tiles of ``rasterflow/samples/landsat8_iguazu``
(red, green, blue, uint16) at 10 m in EPSG:3857 over their whole extent (the
AOI is the tiles' extent in EPSG:3857 on whole 10 m, so no pixel is masked;
3703 x 3069 px, 11.4 Mpx x 3 bands). What runs, in interleaved rounds:

* headline: rasterflow **at its defaults** (3.5 GB shards: one partition;
  512 px chunks; ``warp_error_threshold=0.125``) against default ``gdalwarp
  -multi -wo NUM_THREADS=ALL_CPUS``, onto the grid rasterflow planned (``-te``
  ``-ts``), GeoTIFF tiled 512 and ZSTD like the store's chunks;
* exact: rasterflow with ``warp_error_threshold=0`` against the same gdalwarp
  with ``-et 0`` (these must be equal pixel for pixel);
* labelled variants: rasterflow's engine without Prefect, at defaults.

rasterflow runs in this process with Prefect's embedded server, warm (one
untimed call first), each call into a fresh output root so the cache never
answers. For every contender: median wall time, median CPU seconds (its
processes and children, Prefect's server included), the largest peak RSS of
the process doing the work (``measure.py``), the ratio anchor / rasterflow
(above 1: rasterflow is faster) and the output pixels that differ from the
paired contender's.

``--memory`` adds the memory case: peak RSS of rasterflow at its default
shard size for the central quarter of the extent and for the whole extent (4x
the area), at ``--memory-resolution`` (5 m: 11.4 and 45.5 Mpx), and
gdalwarp's for the same. ``--profile`` breaks one warm call down (Prefect,
plan, warps, encoding, writes).

Run from the repository root (outputs go to ``benchmarks/out/``, git-ignored)::

    python benchmarks/build_gti_mosaic_vs_gdalwarp.py [--runs 3] [--memory] [--profile]
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

from measure import Measured, child, in_process

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "rasterflow" / "samples" / "landsat8_iguazu"
TILE_INDEX = SAMPLE / "tiles.parquet"
OUT = REPO / "benchmarks" / "out" / "build_gti_mosaic_vs_gdalwarp"
BANDS = ["red", "green", "blue"]
CRS_EPSG = 3857
RESOLUTION = 10.0
GDALWARP = ["-multi", "-wo", "NUM_THREADS=ALL_CPUS"]


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
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def extent_aoi(path: Path, fraction: float = 1.0, resolution: float = RESOLUTION) -> Path:
    """The tiles' extent in EPSG:3857 on whole pixels (its central ``fraction`` of each side)."""
    import geopandas as gpd
    from shapely.geometry import box

    minx, miny, maxx, maxy = gpd.read_parquet(TILE_INDEX).to_crs(CRS_EPSG).total_bounds
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    hw, hh = fraction * (maxx - minx) / 2, fraction * (maxy - miny) / 2
    snap = [resolution * round(v / resolution) for v in (cx - hw, cy - hh, cx + hw, cy + hh)]
    path.parent.mkdir(parents=True, exist_ok=True)
    gpd.GeoDataFrame(geometry=[box(*snap)], crs=CRS_EPSG).to_file(path, driver="GeoJSON")
    return path


def tile_paths() -> list[str]:
    """The index's tiles in index order (the last one on top), as absolute paths."""
    import geopandas as gpd

    return [str(SAMPLE / loc) for loc in gpd.read_parquet(TILE_INDEX)["location"]]


# --------------------------------------------------------------------- runs


def rasterflow_call(output_uri: Path, aoi: Path, resolution: float = RESOLUTION, **options) -> str:
    """One client call at rasterflow's defaults (plus ``options``) into a fresh output root."""
    from rasterflow.client import RasterflowClient
    from rasterflow.config import RasterflowConfig

    client = RasterflowClient(RasterflowConfig(output_uri=str(output_uri)))
    return client.build_gti_mosaic(gti=str(TILE_INDEX), aoi=str(aoi), bands=BANDS, location_field="location",
                                   crs_epsg=CRS_EPSG, resolution=resolution, **options)


def engine_call(output_uri: Path, aoi: Path, **options) -> str:
    """The flow's engine steps without Prefect: plan, create, every partition, commit, index."""
    from rasterflow.engine import store
    from rasterflow.engine.build_gti_mosaic.plan import plan_gti_mosaic
    from rasterflow.engine.build_gti_mosaic.shard import build_shard
    from rasterflow.engine.index import write_index
    from rasterflow.params import BuildGtiMosaicParams

    params = BuildGtiMosaicParams.parse(gti=str(TILE_INDEX), aoi=str(aoi), bands=BANDS,
                                        location_field="location", crs_epsg=CRS_EPSG, resolution=RESOLUTION,
                                        **options)
    plan = plan_gti_mosaic(params, str(output_uri))
    for sp in plan.stores:
        store.create_store(sp.spec, sp.fingerprint, plan.provenance)
        for job in sp.jobs:
            build_shard(job)
        store.commit_store(sp.spec.uri)
    write_index(plan.index_rows(), plan.index_uri)
    return plan.index_uri


@dataclass(frozen=True)
class OutputGrid:
    crs: str
    bounds: tuple[float, float, float, float]  # minx, miny, maxx, maxy
    width: int
    height: int


def read_store(index_uri: str):
    """(OutputGrid, pixels as (band, y, x) in BANDS order) of a one-store index."""
    import geopandas as gpd
    import rioxarray  # noqa: F401  (.rio accessor)
    import xarray as xr

    location = gpd.read_parquet(index_uri)["location"].iloc[0]
    variables = xr.open_zarr(location)["variables"]
    t = variables.rio.transform()
    height, width = variables.sizes["y"], variables.sizes["x"]
    bounds = (t.c, t.f + t.e * height, t.c + t.a * width, t.f)
    grid = OutputGrid(str(variables.rio.crs), bounds, width, height)
    return grid, variables.isel(time=0).sel(band=BANDS).values


def gdalwarp_command(gdalwarp: str, grid: OutputGrid, extra: list[str], dst: Path) -> list[str]:
    return [
        gdalwarp, "-q", "-overwrite", *GDALWARP, *extra, "-r", "near", "-t_srs", grid.crs,
        "-te", *(repr(v) for v in grid.bounds), "-ts", str(grid.width), str(grid.height),
        "-of", "GTiff", "-co", "TILED=YES", "-co", "COMPRESS=ZSTD", "-co", "BLOCKXSIZE=512",
        "-co", "BLOCKYSIZE=512", *tile_paths(), str(dst),
    ]


def read_geotiff(path: Path):
    import rasterio

    with rasterio.open(path) as src:
        names = list(src.descriptions)
        return src.read([names.index(b) + 1 for b in BANDS])


def differing(a, b) -> int:
    """Output pixels (any band) that differ."""
    return int((a != b).any(axis=0).sum())


# ---------------------------------------------------------------- profile


@dataclass
class Recorder:
    """Wall-clock intervals and thread CPU time of wrapped functions, from any thread."""

    events: dict[str, list[tuple[float, float, float]]] = field(default_factory=lambda: defaultdict(list))
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
                with self._lock:
                    self.events[label].append((start, time.perf_counter(), time.thread_time() - cpu))

        self._restore.append((owner, name, original))
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)

    def span(self, label: str) -> float:
        events = self.events[label]
        return max(e[1] for e in events) - min(e[0] for e in events) if events else 0.0

    def cpu(self, label: str) -> float:
        return sum(e[2] for e in self.events[label])


def profile(output_uri: Path, aoi: Path) -> None:
    """One warm call, instrumented: where the wall time and the CPU go."""
    import rasterflow.engine.build_gti_mosaic.shard as shard
    import rasterflow.engine.shards as shards
    import rasterflow.tasks.build_gti_mosaic as tasks
    import rasterflow.tasks.publish as publish
    import rasterflow.tasks.stores as stores

    recorder = Recorder()
    recorder.wrap(tasks, "plan_gti_mosaic", "plan")
    recorder.wrap(stores, "create_store", "create store")
    recorder.wrap(tasks, "build_shard", "build-shard (all chunks)")
    recorder.wrap(shard, "render_window", "warp + composite + mask (render_window)")
    recorder.wrap(shards._Layout, "encode", "encode chunk (zstd)")
    recorder.wrap(stores, "commit_store", "commit store")
    recorder.wrap(stores, "write_index", "write index")
    recorder.wrap(publish.quicklook, "store_png", "quicklook (publish-outputs)")
    try:
        measured = in_process(lambda: rasterflow_call(output_uri, aoi))
    finally:
        recorder.restore()
    steps = ["plan", "create store", "build-shard (all chunks)", "commit store", "write index",
             "quicklook (publish-outputs)"]
    engine = sum(recorder.span(s) for s in steps)
    print(f"\nProfile of one warm call at defaults: {measured.wall:.2f} s wall, {measured.cpu:.2f} s CPU")
    for label in steps:
        print(f"  {label:<45} {recorder.span(label):6.2f} s wall")
    print(f"  {'Prefect (the rest of the call)':<45} {measured.wall - engine:6.2f} s wall")
    print("  CPU in the chunk threads:")
    for label in ("warp + composite + mask (render_window)", "encode chunk (zstd)"):
        print(f"    {label:<43} {recorder.cpu(label):6.2f} s CPU")


# -------------------------------------------------------------------- main


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        cells_widths = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in cells_widths)

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def run_rounds(contenders: dict, runs: int) -> dict[str, list[Measured]]:
    measured: dict[str, list[Measured]] = defaultdict(list)
    for r in range(runs):
        for name, run in contenders.items():
            measured[name].append(run(r))
        walls = ", ".join(f"{n} {m[-1].wall:.2f} s" for n, m in measured.items())
        print(f"round {r + 1}/{runs}: {walls}", flush=True)
    return measured


def speed(gdalwarp: str, runs: int) -> None:
    aoi = extent_aoi(OUT / "extent.geojson")
    rasterflow_call(OUT / "rasterflow" / "warmup", aoi)  # starts the embedded server
    grid, _ = read_store(rasterflow_call(OUT / "rasterflow" / "warmup-exact", aoi, warp_error_threshold=0))
    print(f"job: {len(tile_paths())} tiles -> {grid.crs} at {RESOLUTION:g} m, {grid.width} x {grid.height} "
          f"px ({grid.width * grid.height / 1e6:.1f} Mpx) x {len(BANDS)} bands uint16")
    tif = {"default": OUT / "gdalwarp-default.tif", "exact": OUT / "gdalwarp-exact.tif"}
    commands = {"default": gdalwarp_command(gdalwarp, grid, [], tif["default"]),
                "exact": gdalwarp_command(gdalwarp, grid, ["-et", "0"], tif["exact"])}
    print("anchor: " + " ".join(commands["default"]))
    child(commands["exact"])  # untimed: page cache and PROJ database as warm as rasterflow's

    contenders = {
        "rasterflow, defaults": lambda r: in_process(
            lambda: rasterflow_call(OUT / "rasterflow" / f"d{r}", aoi)),
        "gdalwarp -multi -wo NUM_THREADS=ALL_CPUS": lambda r: child(commands["default"]),
        "rasterflow, warp_error_threshold=0": lambda r: in_process(
            lambda: rasterflow_call(OUT / "rasterflow" / f"e{r}", aoi, warp_error_threshold=0)),
        "gdalwarp -multi -wo NUM_THREADS=ALL_CPUS -et 0": lambda r: child(commands["exact"]),
        "variant: rasterflow engine only (no Prefect), defaults": lambda r: in_process(
            lambda: engine_call(OUT / "engine" / f"d{r}", aoi)),
    }
    measured = run_rounds(contenders, runs)
    engine_only = "variant: rasterflow engine only (no Prefect), defaults"
    ours_default = read_store(measured["rasterflow, defaults"][-1].result)[1]
    ours_exact = read_store(measured["rasterflow, warp_error_threshold=0"][-1].result)[1]
    anchors = {"default": read_geotiff(tif["default"]), "exact": read_geotiff(tif["exact"])}
    pairs = {  # contender -> (its paired contender, pixels that differ from it)
        "rasterflow, defaults": ("gdalwarp -multi -wo NUM_THREADS=ALL_CPUS",
                                 differing(ours_default, anchors["default"])),
        "rasterflow, warp_error_threshold=0": ("gdalwarp -multi -wo NUM_THREADS=ALL_CPUS -et 0",
                                               differing(ours_exact, anchors["exact"])),
        engine_only: ("gdalwarp -multi -wo NUM_THREADS=ALL_CPUS",
                      differing(read_store(measured[engine_only][-1].result)[1], anchors["default"])),
    }
    rows = []
    for name, ms in measured.items():
        wall = statistics.median(m.wall for m in ms)
        paired = pairs.get(name)
        ratio = f"{statistics.median(m.wall for m in measured[paired[0]]) / wall:.2f}" if paired else ""
        rss = max(m.rss_mb for m in ms)
        rss_ratio = f"{rss / max(m.rss_mb for m in measured[paired[0]]):.2f}" if paired else ""
        added = f"{max(m.rss_mb - m.baseline_mb for m in ms):.0f}" if paired else ""
        rows.append([name, f"{wall:.2f}", f"{statistics.median(m.cpu for m in ms):.2f}", f"{rss:.0f}", added,
                     ratio, rss_ratio, f"{paired[1]:,}" if paired else ""])
    print(f"\nMedians of {runs} interleaved runs. speed = gdalwarp wall / rasterflow wall (above 1: "
          "rasterflow faster); RSS = peak of the working process (rasterflow: this process, Prefect's server "
          "apart; call = above what the process held before: interpreter, libraries, Prefect); differ = "
          f"output pixels (any band) unlike the paired gdalwarp's, of {grid.width * grid.height:,}.")
    print(table(rows, ["contender", "wall s", "CPU s", "peak RSS MB", "call MB", "speed", "RSS ratio",
                       "px differ"]))
    same = differing(ours_default, read_store(measured["rasterflow, defaults"][0].result)[1]) == 0
    print(f"rasterflow runs reproduce each other: {'yes' if same else 'NO'}; "
          f"defaults vs exact: {differing(ours_default, ours_exact):,} px "
          f"({100 * differing(ours_default, ours_exact) / (grid.width * grid.height):.2f}%)")


def memory(gdalwarp: str, runs: int, resolution: float) -> None:
    print(f"\nMemory: rasterflow at its default shard size (3.5 GB), {resolution:g} m, an AOI and one 4x "
          "larger")
    rows = []
    peaks = {}
    for label, fraction in (("central quarter of the extent", 0.5), ("whole extent (4x the area)", 1.0)):
        aoi = extent_aoi(OUT / f"aoi-{fraction}.geojson", fraction, resolution)
        ours = [in_process(functools.partial(rasterflow_call, OUT / "memory" / f"{fraction}-{r}", aoi,
                                             resolution)) for r in range(runs)]
        grid, _ = read_store(ours[-1].result)
        theirs = [child(gdalwarp_command(gdalwarp, grid, [], OUT / "memory.tif")) for _ in range(runs)]
        peaks[label] = max(m.rss_mb for m in ours)
        rows.append([label, f"{grid.width * grid.height / 1e6:.1f}", f"{peaks[label]:.0f}",
                     f"{max(m.rss_mb - m.baseline_mb for m in ours):.0f}",
                     f"{max(m.rss_mb for m in theirs):.0f}",
                     f"{statistics.median(m.wall for m in ours):.2f}",
                     f"{statistics.median(m.wall for m in theirs):.2f}"])
    print(table(rows, ["AOI", "Mpx", "rasterflow RSS MB", "call MB", "gdalwarp RSS MB", "rasterflow s",
                       "gdalwarp s"]))
    small, large = peaks.values()
    print(f"peak RSS, 4x the area / the smaller AOI: {large / small:.2f} (goal <= 1.25)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each contender (median reported)")
    parser.add_argument("--memory", action="store_true", help="also the 4x-area memory case")
    parser.add_argument("--memory-resolution", type=float, default=5.0)
    parser.add_argument("--profile", action="store_true", help="also break down one warm call")
    args = parser.parse_args()

    gdalwarp = require_gdalwarp()
    shutil.rmtree(OUT, ignore_errors=True)
    quiet_prefect(OUT / "prefect-home")
    import rasterio

    version = subprocess.run([gdalwarp, "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    print(f"gdalwarp: {version} | rasterflow's GDAL (rasterio {rasterio.__version__}): "
          f"{rasterio.__gdal_version__} | CPUs: {os.cpu_count()} | load average at start: "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    speed(gdalwarp, args.runs)
    if args.memory:
        memory(gdalwarp, args.runs, args.memory_resolution)
    if args.profile:
        profile(OUT / "profile", extent_aoi(OUT / "extent.geojson"))
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
