"""The Prefect UI shows a run's artifacts: a real `prefect server start` on
loopback, one small build-gti-mosaic run against it, and headless Chromium
screenshots of the flow run page and of its table and summary (with the
inlined quicklook) artifacts. The PNGs stay under pytest's base temp dir (ui-screenshots/)
for people to look at; the test checks that they are pictures of a page with
content, not a blank or an error page, that the outputs table fits a 1600 px
window without scrolling, and that the quicklook (an SVG with its legend and
scale bar) is drawn.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest
from browser import browser_page
from loopback import child_env, prefect_server
from pictures import pixels
from tools import chromium

WINDOW = (1600, 1000)

RUN = """
import sys
from rasterflow import RasterflowClient
from rasterflow.config import RasterflowConfig
tiles, aoi, out = sys.argv[1:]
client = RasterflowClient(RasterflowConfig(output_uri=out, max_workers=2))
print(client.build_gti_mosaic(tiles, aoi, ["red", "green", "blue"], "location", crs_epsg=32621,
                              resolution=120, xy_chunksize=128, shard_size_bytes=256 * 256 * 6))
"""


@pytest.fixture
def prefect_server_process(tmp_path):
    """URL of a `prefect server start` on a free loopback port, with its own PREFECT_HOME."""
    with prefect_server(tmp_path / "prefect-home") as api:
        yield api.removesuffix("/api")


def _screenshot(url: str, out, profile) -> np.ndarray:
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
         "--virtual-time-budget=20000", f"--screenshot={out}", url],
        check=True, timeout=120, capture_output=True,
    )
    return pixels(out.read_bytes())


def test_the_ui_shows_a_runs_artifacts(prefect_server_process, landsat, tmp_path, tmp_path_factory):
    chromium()
    url = prefect_server_process
    env = child_env(PREFECT_API_URL=f"{url}/api", PREFECT_HOME=str(tmp_path / "client-home"))
    subprocess.run([sys.executable, "-c", RUN, str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"),
                    str(tmp_path / "out")], env=env, check=True, timeout=300, capture_output=True)
    api = httpx.Client(base_url=f"{url}/api", timeout=30)
    flow_run, = api.post("/flow_runs/filter", json={}).json()
    found = api.post("/artifacts/filter", json={"flow_runs": {"id": {"any_": [flow_run["id"]]}}}).json()
    table, = [a for a in found if a["type"] == "table"]
    summary, = [a for a in found if a["type"] == "markdown"]
    assert "data:image/png;base64," in summary["data"]

    shots = tmp_path_factory.getbasetemp() / "ui-screenshots"
    shots.mkdir(exist_ok=True)
    # The flow run page's graph marks the task that published the artifacts; each artifact has its page.
    # (Its Artifacts tab cannot be opened by URL: ?tab=Artifacts falls back to Logs while the run loads.)
    pages = {
        "flow-run": (f"{url}/runs/flow-run/{flow_run['id']}", 200),
        "outputs-table": (f"{url}/artifacts/artifact/{table['id']}", 200),
        # a photo: many colours
        "summary-with-quicklook": (f"{url}/artifacts/artifact/{summary['id']}", 2000),
    }
    for name, (page, least) in pages.items():
        picture = _screenshot(page, shots / f"{name}.png", tmp_path / "chromium")
        assert picture.shape[1:] == (WINDOW[1], WINDOW[0])
        colours = np.unique(picture[:3].reshape(3, -1), axis=1).shape[1]
        print(name, colours)
        assert colours > least, f"{name}: {colours} colours, a blank or broken page? see {shots / name}.png"

    # In real time: the table's width against its box, and the quicklook's image once decoded.
    with browser_page(pages["outputs-table"][0], tmp_path / "chromium-live", WINDOW) as page:
        page.wait_for("document.querySelector('table tbody tr') !== null")
        fits = page.evaluate(
            "[...document.querySelectorAll('table')].every(t => t.scrollWidth <= t.parentElement.clientWidth)"
            " && document.documentElement.scrollWidth <= innerWidth")
        assert fits, f"the outputs table needs scrolling at {WINDOW[0]} px: see {shots}/outputs-table.png"
    with browser_page(pages["summary-with-quicklook"][0], tmp_path / "chromium-live", WINDOW) as page:
        page.wait_for("[...document.images].some(i => i.src.startsWith('data:image/svg+xml') && i.complete "
                      "&& i.naturalWidth >= 320)")
