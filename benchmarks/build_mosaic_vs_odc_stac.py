"""build_mosaic vs odc-stac + xarray: yearly cloud-masked Sentinel-2 medians to Zarr.

Why: without rasterflow, the usual way to make "a cloud-free Sentinel-2
composite per year" from a STAC catalog is odc-stac's ``load`` into a lazy
xarray cube, a masked median with xarray, and ``to_zarr`` (the Open Data Cube
/ Pangeo recipe). That is the anchor: the same scenes from the same STAC API,
the same grid, the same mask (SCL 0, 1, 3, 7, 8, 9, 10 and pixels without
data), the same harmonisation (baseline >= 04.00: -1000, clipped at 0), the
same yearly medians and valid counts, written as a Zarr store with the same
512 px chunks, on both cores (dask's threaded scheduler; rasterflow at its
defaults: one 3.5 GB shard, its chunks on every core).

Data: ``scripts/make_stac_sample.py`` at ``--size`` px a side (default 1500:
15 x 15 km at 10 m; 12 scenes over 2021-2022, 10 under the cloud limit, B02
B03 B04 B08 + SCL as COGs), served by ``rustac serve`` on loopback, as in the
tests. Both compute S2_MED_WINDOWED_PIXEL for 2021 and 2022 over the scenes'
footprint less 500 m, in EPSG:32621 at 10 m (the scenes' own grid: both copy
pixels). rasterflow: one untimed call first (it starts Prefect's embedded
server), then each timed call into a fresh output root so the cache never
answers. Rounds are interleaved; median wall and CPU seconds, peak RSS of
this process during each call (``measure.py``), the ratio odc / rasterflow
(above 1: rasterflow is faster) and how many output values differ between
the two stores are printed.

Needs ``odc-stac`` (``pip install odc-stac``) and the test extra (``rustac``).
From the repository root::

    python benchmarks/build_mosaic_vs_odc_stac.py [--runs 3] [--size 1500]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from measure import Measured, in_process

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "build_mosaic_vs_odc_stac"
MASKED = (0, 1, 3, 7, 8, 9, 10)
BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
YEARS = (2021, 2022)
MARGIN = 500.0
CHUNK = 512


def quiet_prefect(home: Path) -> None:
    """A throwaway Prefect home and no telemetry; must run before Prefect is imported."""
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


def make_sample(size: int) -> dict[str, Path]:
    spec = importlib.util.spec_from_file_location("make_stac_sample",
                                                  REPO / "scripts" / "make_stac_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = OUT / f"stac-{size}"
    if not (folder / "sentinel-2-l2a" / "items.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        module.make(folder, size)
    return {"sentinel-2-l2a": folder / "sentinel-2-l2a", "naip": folder / "naip"}


def serve(sample: dict[str, Path]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rustac = shutil.which("rustac") or str(Path(sys.executable).parent / "rustac")
    files = [str(f / n) for f in sample.values() for n in ("collection.json", "items.json")]
    proc = subprocess.Popen([rustac, "serve", "--addr", f"127.0.0.1:{port}", *files],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/collections", timeout=2).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("rustac serve did not start")


def aoi_file(sample: dict[str, Path]) -> tuple[Path, tuple[float, float, float, float]]:
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    first = sorted(sample["sentinel-2-l2a"].glob("S2X_*"))[0]
    with rasterio.open(first / "B02.tif") as src:
        x0, y0, x1, y1 = src.bounds
    bounds = (x0 + MARGIN, y0 + MARGIN, x1 - MARGIN, y1 - MARGIN)
    path = OUT / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[box(*bounds)], crs="EPSG:32621").to_file(path, driver="GeoJSON")
    return path, bounds


def run_rasterflow(url: str, aoi: Path, output_uri: Path, shard_size_bytes: int | None) -> str:
    """One call at rasterflow's defaults (the STAC API and the CRS are the job's)."""
    from rasterflow.client import RasterflowClient
    from rasterflow.config import DatasetSource, RasterflowConfig
    from rasterflow.enums import DatasetEnum

    dataset = DatasetEnum.S2_MED_WINDOWED_PIXEL
    client = RasterflowClient(RasterflowConfig(output_uri=str(output_uri),
                                               datasets={dataset: DatasetSource(stac_url=url)}))
    tuned = {"shard_size_bytes": shard_size_bytes} if shard_size_bytes else {}
    return client.build_mosaic([dataset], str(aoi), "2021-01-01", "2022-12-31", crs_epsg=32621, **tuned)


def run_odc(url: str, bounds, out_path: Path) -> None:
    """Search, load lazily, mask, harmonise, median per year, write: the odc-stac recipe."""
    import dask
    import numpy as np
    import odc.stac
    import pystac
    import pystac_client
    import xarray as xr
    from odc.geo.geobox import GeoBox

    shutil.rmtree(out_path, ignore_errors=True)
    geobox = GeoBox.from_bbox(bounds, crs="EPSG:32621", resolution=10)
    catalog = pystac_client.Client.open(url)
    search = catalog.search(collections=["sentinel-2-l2a"], bbox=list(geobox.geographic_extent.boundingbox),
                            datetime="2021-01-01/2022-12-31")
    # Links dropped: the sample's hrefs are local paths, which pystac would resolve against the API's URL.
    items = [pystac.Item.from_dict({**d, "links": []}) for d in search.items_as_dicts()
             if d["properties"]["eo:cloud_cover"] < 75]
    items.sort(key=lambda it: it.datetime)
    cube = odc.stac.load(items, bands=[*BANDS.values(), "scl"], geobox=geobox,
                         chunks={"x": CHUNK, "y": CHUNK}, resampling="nearest", groupby="id")
    cube = cube.sortby("time")
    offsets = xr.DataArray([-1000.0 if it.properties["s2:processing_baseline"] >= "04.00" else 0.0
                            for it in items],
                           dims="time", coords={"time": cube.time})
    reflectance = cube[list(BANDS.values())].to_array("band").astype("float32")
    valid = ~cube.scl.isin(MASKED) & (reflectance != 0).all("band")
    harmonised = xr.where(offsets < 0, np.maximum(reflectance + offsets, 0), reflectance)
    masked = harmonised.where(valid).chunk(time=-1)
    slices = []
    for year in YEARS:
        in_year = masked.time.dt.year == year
        median = masked.sel(time=in_year).median("time")
        count = valid.sel(time=in_year).sum("time").astype("float32").expand_dims(band=["N_VALID_PIXELS"])
        slices.append(xr.concat([median, count], "band"))
    result = xr.concat(slices, "time").assign_coords(time=[np.datetime64(f"{y}-01-01") for y in YEARS])
    result = result.chunk({"time": 1, "band": -1, "y": CHUNK, "x": CHUNK}).to_dataset(name="variables")
    with dask.config.set(scheduler="threads", num_workers=2):
        result.to_zarr(out_path, mode="w", zarr_format=3, consolidated=False)


def compare(index_uri: str, odc_path: Path) -> str:
    import geopandas as gpd
    import numpy as np
    import xarray as xr

    ours = xr.open_zarr(gpd.read_parquet(index_uri).location[0])["variables"].values
    theirs = xr.open_zarr(odc_path, consolidated=False)["variables"].values
    if ours.shape != theirs.shape:
        return f"shapes differ: {ours.shape} vs {theirs.shape}"
    same = (ours == theirs) | (np.isnan(ours) & np.isnan(theirs))
    return f"{np.count_nonzero(~same)} of {ours.size} values differ (shape {ours.shape})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=1500)
    parser.add_argument("--shard-size-bytes", type=int, default=None,
                        help="a tuned shard budget for rasterflow (default: the client's own default)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    quiet_prefect(OUT / "prefect-home")
    sample = make_sample(args.size)
    aoi, bounds = aoi_file(sample)
    proc, url = serve(sample)
    try:
        print(f"load average before: {os.getloadavg()}")
        start = time.perf_counter()
        run_rasterflow(url, aoi, OUT / "rf-cold", args.shard_size_bytes)
        print(f"rasterflow cold call (starts Prefect's embedded server): {time.perf_counter() - start:.2f} s")
        ours, theirs = "rasterflow build_mosaic, defaults", "odc-stac load + xarray median + to_zarr"
        measured: dict[str, list[Measured]] = {ours: [], theirs: []}
        for run in range(args.runs):
            shutil.rmtree(OUT / f"rf-{run}", ignore_errors=True)
            measured[ours].append(in_process(
                lambda run=run: run_rasterflow(url, aoi, OUT / f"rf-{run}", args.shard_size_bytes)))
            measured[theirs].append(in_process(lambda: run_odc(url, bounds, OUT / "odc.zarr")))
            print(f"round {run + 1}: " + ", ".join(f"{k} {v[-1].wall:.2f} s" for k, v in measured.items()))
        for name, ms in measured.items():
            print(f"{name}: median {statistics.median(m.wall for m in ms):.2f} s wall, "
                  f"{statistics.median(m.cpu for m in ms):.2f} s CPU, "
                  f"peak RSS {max(m.rss_mb for m in ms):.0f} MB over {args.runs} run(s)")
        walls = {k: statistics.median(m.wall for m in v) for k, v in measured.items()}
        print(f"ratio odc-stac / rasterflow: {walls[theirs] / walls[ours]:.2f}x (goal >= 2)")
        print(f"pixels: {compare(measured[ours][-1].result, OUT / 'odc.zarr')}")
        print(f"load average after: {os.getloadavg()}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
