"""The client: validation before any flow run, and how envs are handled."""

from __future__ import annotations

import os

import pytest

from rasterflow import RasterflowClient
from rasterflow.client import _environment
from rasterflow.config import RasterflowConfig
from rasterflow.errors import InvalidParameterError


def test_every_enum_of_the_api_is_importable_from_the_package():
    import rasterflow

    assert {m.name for m in rasterflow.RuntimeEnum} >= {"SMALL", "MEDIUM", "LARGE", "GPU_SMALL"}
    assert {m.name for m in rasterflow.DatasetEnum} == {
        "S2_MED_HARVEST", "S2_MED_PLANTING", "S2_MED_WINDOWED_PIXEL", "S2_MED_WINDOWED_PIXEL_ALL_BANDS",
        "S2_LATEST_ALL_BANDS", "NAIP_30CM", "NAIP_60CM",
    }
    assert {m.name for m in rasterflow.ModelRecipes} == {"FTW", "META_CHM_V1", "CHESAPEAKE_RSC", "TILE_2_NET",
                                                         "UKIS_CSMASK"}
    assert {m.name for m in rasterflow.MergeModeEnum} == {"WEIGHTED_AVERAGE", "CLIP", "TUKEY"}
    assert len(rasterflow.ResamplingMethod) == 14


def test_invalid_parameters_fail_before_any_flow_run(tmp_path):
    """No Prefect server runs in this test: validation must not need one."""
    client = RasterflowClient(RasterflowConfig(output_uri=str(tmp_path)))
    with pytest.raises(InvalidParameterError) as err:
        client.build_gti_mosaic("tiles.parquet", "aoi.geojson", ["red"], "location", xy_chunksize=0)
    assert err.value.param == "xy_chunksize"
    with pytest.raises(InvalidParameterError) as err:
        client.build_gti_mosaic("tiles.parquet", "aoi.geojson", ["red"], "location", resampling="bicubic-ish")
    assert err.value.param == "resampling" and "bicubic-ish" in str(err.value)
    assert not any(tmp_path.iterdir())


def test_a_missing_local_input_fails_before_any_flow_run(tmp_path, landsat):
    """No Prefect server runs in this test either: a typo in a path needs no flow run to be told."""
    client = RasterflowClient(RasterflowConfig(output_uri=str(tmp_path / "out")))
    tiles, aoi = str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson")
    with pytest.raises(InvalidParameterError) as err:
        client.build_gti_mosaic(str(tmp_path / "tiles.parquet"), aoi, ["red"], "location")
    assert err.value.param == "gti" and "no such file" in str(err.value)
    with pytest.raises(InvalidParameterError) as err:
        client.build_gti_mosaic(tiles, "file://" + str(tmp_path / "aoi.geojson"), ["red"], "location")
    assert err.value.param == "aoi"
    with pytest.raises(InvalidParameterError) as err:
        client.vectorize_mosaic(str(tmp_path / "a.zarr"), ["water"], 0.5)
    assert err.value.param == "store" and "no such file" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_envs_overlay_the_process_only_for_the_call(monkeypatch):
    monkeypatch.setenv("GDAL_CACHEMAX", "64")
    monkeypatch.delenv("AWS_REQUEST_PAYER", raising=False)
    with _environment({"GDAL_CACHEMAX": "512", "AWS_REQUEST_PAYER": "requester"}):
        assert os.environ["GDAL_CACHEMAX"] == "512" and os.environ["AWS_REQUEST_PAYER"] == "requester"
    assert os.environ["GDAL_CACHEMAX"] == "64" and "AWS_REQUEST_PAYER" not in os.environ
