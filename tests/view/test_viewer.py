"""The map viewer: its web API (in process), then the real server on loopback drawn by headless Chromium."""

from __future__ import annotations

import sys
import time

import httpx
import numpy as np
import pytest
import view_fixtures
from browser import browser_page
from fastapi.testclient import TestClient
from loopback import child_env, free_port, process, wait_until
from pictures import pixels

from rasterflow.config import RasterflowConfig
from rasterflow.engine.view import map_link
from rasterflow.view.app import create_app

READY = "document.body.dataset.ready === 'true'"


@pytest.fixture(scope="module")
def stores(landsat, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("viewer")
    mosaic = view_fixtures.mosaic(landsat, tmp / "mosaic")
    return {"pyramid": view_fixtures.pyramid(mosaic, tmp / "pyramid"),
            "polygons": view_fixtures.polygons(landsat, tmp / "polygons.parquet")}


@pytest.fixture
def api(tmp_path):
    app = create_app(RasterflowConfig().storage_options_for, cache_dir=tmp_path)
    return TestClient(app, base_url="http://127.0.0.1")


def test_the_api_describes_layers_and_serves_their_tiles(api, stores):
    body = api.get("/api/layers", params={"uri": stores["pyramid"]}).json()
    layer, = body["layers"]
    assert layer["kind"] == "raster" and layer["levels"] >= 2 and body["basemap"] is None
    assert len(layer["ramps"]["values"]) == 8

    from rasterflow.engine.view.tiles import TMS

    tiles = list(TMS.tiles(*layer["bounds"], zooms=[layer["maxzoom"] - 2]))
    t = tiles[len(tiles) // 2]
    answer = api.get(layer["tiles"].format(z=t.z, x=t.x, y=t.y), params={"bands": "0,1,2"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert pixels(answer.content).shape == (4, 256, 256)
    assert api.get(layer["tiles"].format(z=t.z, x=0, y=0)).status_code == 204  # nothing there
    assert api.get(layer["tiles"].format(z=t.z, x=t.x, y=t.y), params={"bands": "0,7"}).status_code == 422

    polygons, = api.get("/api/layers", params={"uri": stores["polygons"]}).json()["layers"]
    assert polygons["format"] == "geojson" and api.get(polygons["data"]).json()["type"] == "FeatureCollection"


def test_the_api_says_why_a_uri_does_not_open_and_serves_only_what_was_opened(api, tmp_path):
    answer = api.get("/api/layers", params={"uri": str(tmp_path / "nothing.zarr")})
    assert answer.status_code == 400 and "does not exist" in answer.json()["detail"]
    assert api.get("/tiles/0123456789ab/1/0/0.png").status_code == 404
    # Only loopback host names: a page elsewhere cannot reach local files through a rebound DNS name.
    assert api.get("/health", headers={"host": "attacker.example"}).status_code == 400


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _map_pixels(picture: np.ndarray) -> np.ndarray:
    """The map's part of a screenshot: right of the panel, without the controls' corners."""
    return picture[:3, 60:-60, 360:-80]


def test_the_page_draws_the_pyramid_the_polygons_and_a_legend(stores, tmp_path, tmp_path_factory):
    port = free_port()
    server = [sys.executable, "-m", "rasterflow.view", "--port", str(port)]
    shots = tmp_path_factory.getbasetemp() / "viewer-screenshots"
    shots.mkdir(exist_ok=True)
    with process(server, tmp_path / "viewer.log", child_env()) as proc:
        wait_until(lambda: _up(f"http://127.0.0.1:{port}/health"), 60, "viewer", proc)
        url = map_link([stores["pyramid"], stores["polygons"]], f"http://127.0.0.1:{port}")
        with browser_page(url, tmp_path / "chromium") as page:
            page.wait_for(READY)
            both = pixels(page.screenshot(shots / "pyramid-and-polygons.png"))
            legend = page.evaluate(
                "[...document.querySelectorAll('.legend')].map(e => e.textContent).join('|')")
            status = page.evaluate("document.getElementById('status').textContent")
            # Hide the polygons: what changes is where they are.
            page.evaluate("document.querySelector('.layer h2 input').click()")
            time.sleep(2)  # one frame is enough; the map redraws at once
            raster_only = pixels(page.screenshot(shots / "pyramid-only.png"))

    assert status == "2 layers"
    assert "water" in legend and "R: red" in legend and "B: blue" in legend
    drawn = _map_pixels(both)
    background = np.array([223, 228, 234])[:, None, None]  # the page's #dfe4ea
    painted = (np.abs(drawn.astype(int) - background).sum(axis=0) > 30).mean()
    colours = len(np.unique(drawn.reshape(3, -1), axis=1).T)
    assert painted > 0.2 and colours > 2000, f"blank map? see {shots}"  # a photo, not a flat fill
    changed = (np.abs(_map_pixels(both).astype(int) - _map_pixels(raster_only)).sum(axis=0) > 30).mean()
    assert 0.0005 < changed < 0.2  # three 1 km squares among 30 km of mosaic
