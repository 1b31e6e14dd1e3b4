"""What people see in the Prefect UI: every flow's table, summary with a
quicklook, and progress, read back through the Prefect API."""

from __future__ import annotations

import json
import re

import geopandas as gpd
import numpy as np
import pytest
import zarr
from pictures import pixels, quicklook_pixels, quicklook_svg
from predict_fixtures import SHIPPED_MODEL
from prefect_runs import artifacts, latest_flow_run

from rasterflow import RasterflowClient
from rasterflow.config import RasterflowConfig
from rasterflow.engine.index import stores_of
from rasterflow.engine.publish.quicklook import MAX_SIZE, store_png
from rasterflow.enums import InferenceActorEnum, MergeModeEnum


@pytest.fixture(scope="module")
def chain(landsat, tmp_path_factory):
    """Each workflow once on the Landsat sample: {flow name: (its answer, its flow run's artifacts)}."""
    client = RasterflowClient(RasterflowConfig(output_uri=str(tmp_path_factory.mktemp("out")), max_workers=2))
    runs = {}

    def run(name, call):
        answer = call()
        runs[name] = (answer, artifacts(latest_flow_run(name).id))
        return answer

    mosaic = run("build-gti-mosaic", lambda: client.build_gti_mosaic(
        str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["red", "green", "blue"], "location",
        crs_epsg=32621, resolution=120, xy_chunksize=128, shard_size_bytes=256 * 256 * 6,
    ))
    water = run("predict-mosaic", lambda: client.predict_mosaic(
        mosaic, str(SHIPPED_MODEL), patch_size=128, clip_size=8, device="cpu",
        features=["blue", "green", "red"], labels=["land", "water"],
        actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH, max_batch_size=8,
        merge_mode=MergeModeEnum.CLIP, select_labels=["water"],
    ))
    run("vectorize-mosaic", lambda: client.vectorize_mosaic(water, ["water"], 0.5, xy_block_multiplier=1))
    run("build-zarr-multiscales", lambda: client.build_zarr_multiscales(mosaic))
    return runs


def _only(found: dict, kind: str):
    assert len(found.get(kind, [])) == 1, f"{kind} artifacts: {found.get(kind)}"
    return found[kind][0]


@pytest.mark.parametrize("name", ["build-gti-mosaic", "predict-mosaic", "build-zarr-multiscales"])
def test_store_workflows_publish_their_index_with_a_quicklook_and_progress(chain, name):
    index_uri, found = chain[name]
    index = gpd.read_parquet(index_uri)
    table = _only(found, "table")
    rows = json.loads(table.data)

    request = index_uri.rsplit("/", 2)[-2]
    assert table.key == f"{name}-{request}-outputs"  # one key per request
    folder = index_uri.rsplit("/", 1)[0]
    assert f"`{folder}`" in table.description  # the folder once; each row names its store under it
    assert [f"{folder}/{r['store']}" for r in rows] == stores_of(index_uri)
    assert all(len(value) <= 40 for r in rows for value in map(str, r.values()))  # fits 1600 px
    for row, expected in zip(rows, index.itertuples(), strict=True):
        assert row["bands"] == ", ".join(expected.bands)
        bounds = [float(v) for v in row["footprint"].split(", ")]
        np.testing.assert_allclose(bounds, expected.geometry.bounds, atol=5.1e-5)  # 4 decimals
        assert re.fullmatch(r"\d+(\.\d)? (B|kB|MB|GB)", row["size"]) and not row["size"].startswith("0 ")
    summary = _only(found, "markdown")
    assert summary.key == f"{name}-{request}-summary" and index_uri in summary.data
    assert all(f"`{uri}`" in summary.data for uri in stores_of(index_uri))  # full URIs, to copy
    if name == "build-zarr-multiscales":
        assert "Map: [http://127.0.0.1:8765/map?uri=" in summary.data
    bands = index.bands[0][:3] if len(index.bands[0]) >= 3 else index.bands[0][:1]
    assert f"{rows[0]['store']}: {', '.join(bands)} as" in summary.data  # the caption says what is drawn
    frame = quicklook_svg(summary.data)
    assert all(f">{band}<" in frame for band in bands) and re.search(r">\d+ k?m<", frame)  # legend, scale
    picture = quicklook_pixels(summary.data)
    assert picture.shape[0] == 4 and 16 <= max(picture.shape[1:]) <= MAX_SIZE
    assert (picture[3] == 255).mean() > 0.3  # mostly data, not nodata
    assert np.ptp(picture[:3][:, picture[3] == 255]) > 50  # stretched, not flat
    assert found["progress"] and all(p.data == 100 for p in found["progress"])


def test_vectorize_publishes_its_geoparquet_with_its_polygons_drawn(chain):
    uri, found = chain["vectorize-mosaic"]
    polygons = gpd.read_parquet(uri)
    row, = json.loads(_only(found, "table").data)

    assert row["file"] == "polygons.parquet" and row["polygons"] == len(polygons) > 0
    np.testing.assert_allclose([float(v) for v in row["footprint"].split(", ")],
                               polygons.to_crs("EPSG:4326").total_bounds, atol=1e-4)
    summary = _only(found, "markdown").data
    assert f">{len(polygons)} polygons<" in quicklook_svg(summary)
    picture = quicklook_pixels(summary)
    assert 0 < (picture[3] == 255).mean() < 1  # polygons drawn, ground left transparent
    assert found["progress"] and all(p.data == 100 for p in found["progress"])


def test_a_multiscales_store_is_drawn_from_its_coarsest_level_wide_enough(chain):
    root = stores_of(chain["build-zarr-multiscales"][0])[0]
    layout = zarr.open_group(root, mode="r").attrs["multiscales"]["layout"]
    shapes = [item["spatial:shape"] for item in layout]
    assert len(shapes) >= 2

    picture = pixels(store_png(root, max_size=max(shapes[-2])))
    assert list(picture.shape[1:]) == shapes[-2]  # that level, whole: no sampling step, no finer level read
