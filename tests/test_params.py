from __future__ import annotations

import json

import pytest
from pyproj import CRS

from rasterflow.enums import ResamplingMethod, RuntimeEnum
from rasterflow.errors import InvalidParameterError
from rasterflow.params import BuildGtiMosaicParams

BASE = dict(gti="index.parquet", aoi="aoi.geojson", bands=["red", "nir"], location_field="location")


def test_minimal_call_gets_defaults():
    p = BuildGtiMosaicParams.parse(**BASE)
    assert p.crs_epsg is None and p.target_crs is None and p.output_crs.to_epsg() == 3857
    assert p.xy_chunksize == 512
    assert p.resampling is ResamplingMethod.NEAREST
    assert p.runtime is RuntimeEnum.SMALL
    assert p.resolution is None and p.nodata is None and p.query is None


def test_enums_from_strings():
    p = BuildGtiMosaicParams.parse(**BASE, resampling="bilinear", runtime="gpu-small")
    assert p.resampling is ResamplingMethod.BILINEAR
    assert p.runtime is RuntimeEnum.GPU_SMALL


@pytest.mark.parametrize(
    "param, value, says",
    [
        ("xy_chunksize", 0, "between 16 and 16384"),
        ("xy_chunksize", -5, "between 16 and 16384"),
        ("xy_chunksize", 20000, "between 16 and 16384"),
        ("crs_epsg", 999999, "not a known EPSG code"),
        ("crs_epsg", 5773, "not a horizontal CRS"),  # EGM96 height: vertical
        ("target_crs", "EPSG:999999", "not a CRS pyproj reads"),
        ("target_crs", "utm zone 10", "not a CRS pyproj reads"),
        ("target_crs", 5773, "not a horizontal CRS"),
        ("resolution", 0, "must be a positive size"),
        ("resolution", -30.0, "must be a positive size"),
        ("shard_size_bytes", 0, "positive number of bytes"),
        ("shard_size_bytes", -1, "positive number of bytes"),
        ("bands", [], "at least 1 item"),
        ("bands", ["red", "nir", "red"], "repeated: ['red']"),
        ("bands", ["red", ""], "non-empty"),
        ("query", "len(location) > 1", "function calls"),
        ("query", "__import__('os').system('true')", "function calls"),
        ("query", "year ==", "malformed"),
        ("query", "@year > 1", "'@'"),
        ("resampling", "nearest", "'near'"),
        ("runtime", "huge", "'small'"),
        ("gti", "", "at least 1 character"),
        ("location_field", "", "at least 1 character"),
    ],
)
def test_bad_value_names_param(param, value, says):
    with pytest.raises(InvalidParameterError) as info:
        BuildGtiMosaicParams.parse(**(BASE | {param: value}))
    err = info.value
    assert err.param == param
    assert err.value == value
    assert str(err).startswith(f"{param}=")
    assert says in str(err)


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(InvalidParameterError, match="unknown parameter") as info:
        BuildGtiMosaicParams.parse(**BASE, chunk_size=256)
    assert info.value.param == "chunk_size"
    assert "xy_chunksize" in str(info.value)


def test_missing_required_parameter():
    values = dict(BASE)
    del values["aoi"]
    with pytest.raises(InvalidParameterError) as info:
        BuildGtiMosaicParams.parse(**values)
    assert info.value.param == "aoi"


def test_safe_query_accepted_without_columns():
    p = BuildGtiMosaicParams.parse(**BASE, query="year >= 2020 and `cloud cover` < 0.2")
    assert p.query == "year >= 2020 and `cloud cover` < 0.2"


def test_flow_parameters_exclude_envs_and_runtime():
    p = BuildGtiMosaicParams.parse(
        **BASE, runtime="large", envs={"AWS_SECRET_ACCESS_KEY": "hunter2"}, resolution=10.0,
        resampling=ResamplingMethod.CUBIC, query="year > 2019",
    )
    params = p.flow_parameters()
    assert "envs" not in params and "runtime" not in params
    assert params["resampling"] == "cubic"
    assert params["resolution"] == 10.0
    assert params["bands"] == ["red", "nir"]
    text = json.dumps(params)
    assert "hunter2" not in text
    assert json.loads(text) == params
    # Everything else the model holds is there.
    assert set(params) == set(BuildGtiMosaicParams.model_fields) - {"envs", "runtime"}


def test_envs_kept_on_model_but_not_in_repr():
    p = BuildGtiMosaicParams.parse(**BASE, envs={"TOKEN": "hunter2"})
    assert p.envs == {"TOKEN": "hunter2"}
    assert "hunter2" not in repr(p)
    assert "envs" not in p.model_dump()


def test_flow_parameters_round_trip():
    p = BuildGtiMosaicParams.parse(**BASE, crs_epsg=32621, nodata=-9999.0, time_column="datetime")
    assert BuildGtiMosaicParams.parse(**p.flow_parameters()) == p


UTM10_WKT = CRS.from_epsg(32610).to_wkt()


@pytest.mark.parametrize("given", [32610, "32610", "EPSG:32610", "epsg:32610", UTM10_WKT,
                                   CRS.from_epsg(32610).to_json()])
def test_target_crs_takes_what_pyproj_reads_and_means_what_crs_epsg_does(given):
    """RasterFlow's 2026 target_crs and its first crs_epsg: the same request, the same request id."""
    new = BuildGtiMosaicParams.parse(**BASE, target_crs=given)
    old = BuildGtiMosaicParams.parse(**BASE, crs_epsg=32610)
    assert new.output_crs == old.output_crs == CRS.from_epsg(32610)
    assert new.fingerprint_parameters() == old.fingerprint_parameters()


def test_a_crs_without_an_epsg_code_is_kept_whole():
    mollweide = BuildGtiMosaicParams.parse(**BASE, target_crs="ESRI:54009")
    assert mollweide.output_crs == CRS("ESRI:54009")
    params = mollweide.fingerprint_parameters()
    assert params["crs_epsg"] is None and CRS.from_wkt(params["target_crs"]) == CRS("ESRI:54009")


def test_crs_epsg_and_target_crs_together_are_an_error_naming_target_crs():
    with pytest.raises(InvalidParameterError) as info:
        BuildGtiMosaicParams.parse(**BASE, crs_epsg=32610, target_crs="EPSG:32610")
    assert info.value.param == "target_crs" and "crs_epsg=32610 is given too" in str(info.value)
