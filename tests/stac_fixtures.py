"""STAC catalogs for the build_mosaic tests: generated samples and a real STAC API on loopback.

The collections are made by the committed ``scripts/make_stac_sample.py`` into
a temporary folder once per session (about 2 s), and served by ``rustac
serve`` (a STAC API server in Rust, from the ``rustac`` wheel of the test
extra; memory backend, no database) on a free loopback port, stopped by PID.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box

from rasterflow.config import DatasetSource, RasterflowConfig
from rasterflow.enums import DatasetEnum

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_stac_sample.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_stac_sample", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_stac_sample = _load_script()


@pytest.fixture(scope="session")
def stac_sample(tmp_path_factory) -> dict[str, Path]:
    """Collection id -> folder with collection.json, items.json and the COGs."""
    return make_stac_sample.make(tmp_path_factory.mktemp("stac"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rustac_executable() -> str:
    found = shutil.which("rustac") or str(Path(sys.executable).parent / "rustac")
    if not Path(found).exists():
        pytest.fail("rustac is not installed: pip install -e .[test]")
    return found


@pytest.fixture(scope="session")
def stac_api(stac_sample) -> str:
    """URL of a real STAC API serving both collections."""
    port = _free_port()
    files = [str(f / name) for f in stac_sample.values() for name in ("collection.json", "items.json")]
    proc = subprocess.Popen([rustac_executable(), "serve", "--addr", f"127.0.0.1:{port}", *files],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/collections", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    stderr = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"rustac serve did not start: {stderr}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def catalog_overrides(url: str) -> dict[DatasetEnum, DatasetSource]:
    """Every dataset pointed at ``url`` (collections keep their default ids)."""
    return {d: DatasetSource(stac_url=url) for d in DatasetEnum}


def stac_config(url: str, output_root: Path, **extra) -> RasterflowConfig:
    return RasterflowConfig(output_uri=str(output_root), datasets=catalog_overrides(url), max_workers=2,
                            retries=1, retry_delay_seconds=0.1, **extra)


def s2_grid_bounds(stac_sample) -> tuple[float, float, float, float]:
    """Bounds (EPSG:32621) of the Sentinel-2-like scenes."""
    import rasterio

    first = sorted((stac_sample["sentinel-2-l2a"]).glob("S2X_*"))[0]
    with rasterio.open(first / "B02.tif") as src:
        return tuple(src.bounds)


def write_aoi(path: Path, bounds, crs: str) -> str:
    gpd.GeoDataFrame(geometry=[box(*bounds)], crs=crs).to_file(path, driver="GeoJSON")
    return str(path)


def s2_scene_dirs(stac_sample) -> list[Path]:
    return sorted(stac_sample["sentinel-2-l2a"].glob("S2X_*"))


def s2_items(stac_sample) -> list[dict]:
    import json

    return json.loads((stac_sample["sentinel-2-l2a"] / "items.json").read_text())["features"]


def expected_median(stack_items: list[dict], bands: list[str], masked: tuple[int, ...],
                    window: tuple[slice, slice] | None = None):
    """The composite computed the plain way: read each 10 m band and the 20 m SCL with
    rasterio at their native grids, drop masked classes and pixels without data,
    remove the +1000 offset of baseline 04.00, then ``np.nanmedian``.

    Returns (median (bands, rows, cols), count (rows, cols)) on the scenes' 10 m grid.
    """
    import warnings

    import numpy as np
    import rasterio

    keys = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
    layers = []
    for item in stack_items:
        assets = item["assets"]
        obs = []
        for band in bands:
            with rasterio.open(assets[keys[band]]["href"]) as src:
                obs.append(src.read(1).astype("float64"))
        obs = np.stack(obs)
        with rasterio.open(assets["scl"]["href"]) as src:
            scl = src.read(1).repeat(2, axis=0).repeat(2, axis=1)
        invalid = np.isin(scl, masked) | (obs == 0).any(axis=0)
        if item["properties"]["s2:processing_baseline"] >= "04.00":
            obs = np.maximum(obs - 1000, 0)
        obs[:, invalid] = np.nan
        layers.append(obs)
    stack = np.stack(layers)
    if window is not None:
        stack = stack[(slice(None), slice(None), *window)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        median = np.nanmedian(stack, axis=0)
    return median, np.count_nonzero(~np.isnan(stack[:, 0]), axis=0)
