"""Map tiles per second from a local pyramid, against rio-tiler's XarrayReader (titiler.xarray's reader).

Why: the viewer must keep up with a person panning a map: >= 50 tiles/s on 2
cores. The anchor is what titiler.xarray serves with: rio-tiler's
``XarrayReader.tile`` on the same level opened with xarray, rendered to PNG
the same way, in a pool of 2 threads (no HTTP: the anchor is favoured).

What runs: the Landsat-8 sample mosaicked at its native 30 m in EPSG:3857
and its pyramid (engine only, untimed), then every tile of the pyramid's
extent at the three finest zooms, RGB with the statistics' colour limits:
rasterflow through its real server (`python -m rasterflow.view`, HTTP on
loopback, `--clients` concurrent clients), the anchor in process. Each tile
is drawn once per round (no tile cache on either side). Run from the
repository root::

    python benchmarks/view_tiles_vs_rio_tiler_xarray.py [--rounds 3] [--clients 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
OUT = REPO / "benchmarks" / "out" / "view_tiles"
SAMPLE = REPO / "rasterflow" / "samples" / "landsat8_iguazu"


def build() -> str:
    import view_fixtures

    from rasterflow.engine.build_gti_mosaic.plan import plan_gti_mosaic
    from rasterflow.engine.build_gti_mosaic.shard import build_shard
    from rasterflow.engine.store import commit_store, create_store
    from rasterflow.params import BuildGtiMosaicParams

    shutil.rmtree(OUT, ignore_errors=True)
    params = BuildGtiMosaicParams.parse(gti=str(SAMPLE / "tiles.parquet"), aoi=str(SAMPLE / "aoi.geojson"),
                                        bands=view_fixtures.BANDS, location_field="location", crs_epsg=3857)
    plan = plan_gti_mosaic(params, str(OUT / "mosaic"))
    (store,) = plan.stores
    create_store(store.spec, store.fingerprint, plan.provenance)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(build_shard, store.jobs))
    commit_store(store.spec.uri)
    return view_fixtures.pyramid(store.spec.uri, OUT / "pyramid")


def served(pyramid: str, tiles, clients: int, port: int) -> float:
    import httpx

    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen([sys.executable, "-m", "rasterflow.view", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        layer, = httpx.get(f"{base}/api/layers", params={"uri": pyramid}, timeout=60).json()["layers"]
        http = httpx.Client(base_url=base, timeout=60, limits=httpx.Limits(max_connections=clients))

        def fetch(tile) -> int:
            answer = http.get(layer["tiles"].format(z=tile.z, x=tile.x, y=tile.y), params={"bands": "0,1,2"})
            return answer.status_code

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            codes = list(pool.map(fetch, tiles))
        elapsed = time.perf_counter() - start
        assert set(codes) <= {200, 204}, codes
        return len(tiles) / elapsed
    finally:
        server.terminate()
        server.wait(10)


def anchor(pyramid: str, layer, tiles) -> float:
    import xarray as xr
    from rio_tiler.io.xarray import XarrayReader

    from rasterflow.engine.view.tiles import TMS

    readers = {}
    for n, level in enumerate(layer.levels):
        data = xr.open_dataset(level.uri, engine="zarr", chunks=None, decode_coords="all")["variables"]
        readers[n] = XarrayReader(data.isel(time=0), tms=TMS)
    limits = [(b.low, b.high) for b in layer.bands]

    from rasterflow.engine.view.tiles import TileSource

    chooser = TileSource(layer)

    def draw(tile) -> None:
        from rasterio.warp import transform_bounds

        level = chooser.level_for(transform_bounds(TMS.rasterio_crs, chooser.crs, *TMS.xy_bounds(tile)))
        try:
            image = readers[level].tile(tile.x, tile.y, tile.z, indexes=(1, 2, 3))
        except Exception:  # noqa: BLE001 - rio-tiler's "tile outside bounds"
            return
        image.rescale(in_range=limits)
        image.render(img_format="PNG", ZLEVEL=1)

    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(draw, tiles))
    return len(tiles) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--port", type=int, default=8798)
    args = parser.parse_args()
    from rasterflow.engine.view.layers import layers_of
    from rasterflow.engine.view.tiles import TMS

    pyramid = build()
    layer, = layers_of(pyramid)
    tiles = [t for z in range(layer.maxzoom - 3, layer.maxzoom) for t in TMS.tiles(*layer.bounds, zooms=[z])]
    print(f"{len(tiles)} tiles, zooms {layer.maxzoom - 3}-{layer.maxzoom - 1}, {len(layer.levels)} levels; "
          f"load average before: {os.getloadavg()}")
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(served(pyramid, tiles, args.clients, args.port))
        theirs.append(anchor(pyramid, layer, tiles))
    rasterflow, rio_tiler = statistics.median(ours), statistics.median(theirs)
    print(f"rasterflow viewer (HTTP, {args.clients} clients): {rasterflow:.1f} tiles/s")
    print(f"rio-tiler XarrayReader (in process, 2 threads):  {rio_tiler:.1f} tiles/s")
    print(f"ratio rasterflow / rio-tiler XarrayReader: {rasterflow / rio_tiler:.1f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
