"""build_and_predict_mosaic_recipe through the client, on the loopback STAC catalog.

The public recipe weights cannot be fetched here, so each recipe is pointed
(config ``recipe_models``) at its bundled stand-in: same input and output
contract, trained by scripts/train_recipe_standins.py.
"""

from __future__ import annotations

import socket
from datetime import datetime

import geopandas as gpd
import pytest
import xarray as xr
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowRunFilter
from prefect.client.schemas.sorting import FlowRunSort
from prefect_runs import artifacts, task_states
from stac_fixtures import s2_grid_bounds, stac_config, write_aoi

from rasterflow import RasterflowClient
from rasterflow.engine.build_and_predict_mosaic_recipe.recipes import recipe_spec
from rasterflow.engine.store import read_marker
from rasterflow.enums import ModelRecipes
from rasterflow.errors import InvalidParameterError

STANDINS = {recipe: recipe_spec(recipe).standin for recipe in ModelRecipes if recipe_spec(recipe).standin}


@pytest.fixture(scope="module")
def s2_aoi(stac_sample, tmp_path_factory) -> str:
    x0, y0, x1, y1 = s2_grid_bounds(stac_sample)
    path = tmp_path_factory.mktemp("recipe-aoi") / "aoi.geojson"
    return write_aoi(path, (x0 + 500, y0 + 500, x1 - 500, y1 - 500), "EPSG:32621")


def _client(stac_api, root) -> RasterflowClient:
    return RasterflowClient(stac_config(stac_api, root, recipe_models=STANDINS))


def _last_recipe_run_and_children():
    with get_client(sync_client=True) as api:
        by_name = FlowFilter(name={"any_": ["build-and-predict-mosaic-recipe"]})
        (parent,) = api.read_flow_runs(flow_filter=by_name, sort=FlowRunSort.START_TIME_DESC, limit=1)
        children = api.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [parent.id]}))
        flows = {f.id: f.name for f in api.read_flows()}
    return parent, {flows[c.flow_id]: c for c in children}


def test_ftw_on_planting_and_harvest_medians(stac_api, s2_aoi, tmp_path):
    client = _client(stac_api, tmp_path / "out")
    recipe = recipe_spec(ModelRecipes.FTW)
    index_uri = client.build_and_predict_mosaic_recipe(s2_aoi, datetime(2021, 1, 1), datetime(2021, 12, 31),
                                                        ModelRecipes.FTW)
    index = gpd.read_parquet(index_uri)
    predictions = xr.open_zarr(index.location[0])["variables"]
    assert list(predictions.band.values) == list(recipe.labels)
    # Native CRS: the UTM zone of the AOI's centroid (Iguazu, 25.4 S: zone 21 south).
    assert predictions.rio.crs.to_epsg() == 32721

    marker = read_marker(index.location[0])
    assert marker.parameters["features"] == list(recipe.features)  # the model's channel order
    assert marker.parameters["model_path"] == recipe.standin
    mosaic = xr.open_zarr(gpd.read_parquet(marker.parameters["store"]).location[0])["variables"]
    assert set(recipe.features) <= set(mosaic.band.values)
    assert mosaic.rio.crs.to_epsg() == 32721 and mosaic.rio.transform().a == 10.0

    parent, children = _last_recipe_run_and_children()
    assert set(children) == {"build-mosaic", "predict-mosaic"}  # recorded as subflows
    assert all(c.state.is_completed() for c in children.values()) and parent.state.is_completed()
    # The summary names what ran: the bundled stand-in, never "Fields of The World (FTW) baseline".
    summary, = artifacts(parent.id)["markdown"]
    assert summary.data.startswith("# ftw: a stand-in, not Fields of The World (FTW) baseline")
    assert "Model: the bundled stand-in for the ftw recipe" in summary.data

    # A second identical call: same answer, every shard and block from the cache.
    again = client.build_and_predict_mosaic_recipe(s2_aoi, "2021-01-01", "2021-12-31", "ftw")
    assert again == index_uri
    for flow_name, task_prefix in (("build-mosaic", "build-shard"), ("predict-mosaic", "infer-block")):
        states = task_states(flow_name, task_prefix)
        assert states and set(states) == {"Cached"}, (flow_name, task_prefix, states)


def test_chesapeake_on_naip_at_one_metre(stac_api, haiti, tmp_path):
    client = _client(stac_api, tmp_path / "out")
    recipe = recipe_spec(ModelRecipes.CHESAPEAKE_RSC)
    index_uri = client.build_and_predict_mosaic_recipe(str(haiti / "aoi.geojson"), "2019-01-01", "2019-12-31",
                                                        ModelRecipes.CHESAPEAKE_RSC)
    predictions = xr.open_zarr(gpd.read_parquet(index_uri).location[0])["variables"]
    assert list(predictions.band.values) == ["background", "road"]
    assert (predictions.rio.crs.to_epsg() == 32618
            and predictions.rio.transform().a == recipe.resolution == 1.0)
    values = predictions.values
    assert ((values >= 0) | (values != values)).all() and float(predictions.sum()) > 0


def test_explicit_crs_is_kept(stac_api, haiti, tmp_path):
    client = _client(stac_api, tmp_path / "out")
    index_uri = client.build_and_predict_mosaic_recipe(str(haiti / "aoi.geojson"), "2019-01-01", "2019-12-31",
                                                        ModelRecipes.CHESAPEAKE_RSC, crs_epsg=3857)
    assert xr.open_zarr(gpd.read_parquet(index_uri).location[0])["variables"].rio.crs.to_epsg() == 3857


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(("recipe", "start", "end", "param"), [
    ("not_a_recipe", "2021-01-01", "2021-12-31", "model_recipe"),
    (ModelRecipes.FTW, "2021-12-31", "2021-01-01", "end"),
    (ModelRecipes.FTW, "2021-01-01", "someday", "end"),
])
def test_bad_calls_fail_before_any_run(stac_api, s2_aoi, tmp_path, recipe, start, end, param):
    client = _client(stac_api, tmp_path / "out")
    with pytest.raises(InvalidParameterError) as raised:
        client.build_and_predict_mosaic_recipe(s2_aoi, start, end, recipe)
    assert raised.value.param == param
    assert not (tmp_path / "out").exists()


def test_unreachable_model_says_how_to_point_the_recipe_elsewhere(stac_api, s2_aoi, tmp_path):
    from rasterflow.config import RasterflowConfig

    url = f"http://127.0.0.1:{_closed_port()}/ftw.pt2"
    config = stac_config(stac_api, tmp_path / "out", recipe_models={ModelRecipes.FTW: url})
    assert isinstance(config, RasterflowConfig)
    with pytest.raises(InvalidParameterError) as raised:
        RasterflowClient(config).build_and_predict_mosaic_recipe(s2_aoi, "2021-01-01", "2021-12-31",
                                                                 ModelRecipes.FTW)
    message = str(raised.value)
    assert (url in message and "recipe_models: {ftw:" in message
            and recipe_spec(ModelRecipes.FTW).standin in message)
    assert not (tmp_path / "out").exists()


def test_ukis_csmask_runs_offline_and_equals_csmask_on_its_mosaic(stac_api, s2_aoi, tmp_path):
    """No stand-in: the real weights come from the installed ukis-csmask wheel (the csmask extra)."""
    import numpy as np
    from ukis_csmask.mask import CSmask

    from rasterflow.engine.build_and_predict_mosaic_recipe import csmask

    client = RasterflowClient(stac_config(stac_api, tmp_path / "out"))
    recipe = recipe_spec(ModelRecipes.UKIS_CSMASK)
    index_uri = client.build_and_predict_mosaic_recipe(s2_aoi, "2022-11-22", "2022-11-22",
                                                        ModelRecipes.UKIS_CSMASK)
    predictions = xr.open_zarr(gpd.read_parquet(index_uri).location[0])["variables"]
    assert list(predictions.band.values) == ["clear", "cloud", "shadow"]
    assert predictions.rio.crs.to_epsg() == 32721 and predictions.rio.transform().a == 30.0

    marker = read_marker(gpd.read_parquet(index_uri).location[0])
    model_path = marker.parameters["model_path"]
    assert model_path.startswith(str(tmp_path / "out" / "models"))
    assert model_path.endswith("-6b-l2a-23b28e94.onnx")
    mosaic = xr.open_zarr(gpd.read_parquet(marker.parameters["store"]).location[0])["variables"]
    values = mosaic.sel(band=list(recipe.features)).values[0]  # the latest scene, clouds kept
    valid = ~np.isnan(values).all(axis=0)
    image = np.moveaxis(np.nan_to_num(values, nan=0.0), 0, -1).astype(np.float32) / np.float32(10000)
    reference = CSmask(image, band_order=list(csmask.BANDS), product_level="l2a", nodata_value=0,
                       providers=["CPUExecutionProvider"]).csm[..., 0]
    ours = predictions.values[0]
    assert (ours.argmax(axis=0) == reference)[valid].mean() >= 0.999
    assert np.isnan(ours[:, ~valid]).all()

    again = client.build_and_predict_mosaic_recipe(s2_aoi, "2022-11-22", "2022-11-22", "ukis_csmask")
    assert again == index_uri  # the model file was kept (same sha256), so the run is the same
