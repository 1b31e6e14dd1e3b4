"""The rasterflow command, driven as a user would (typer's runner, real flows)."""

from __future__ import annotations

import geopandas as gpd
import pytest
import xarray as xr
from typer.testing import CliRunner

from rasterflow.cli import app

pytestmark = pytest.mark.usefixtures("prefect_server")
runner = CliRunner()


def test_demo_builds_the_sample_mosaic(tmp_path):
    result = runner.invoke(app, ["demo", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (index_path,) = tmp_path.rglob("index.parquet")
    assert str(index_path) in result.output
    location = gpd.read_parquet(index_path).location[0]
    data = xr.open_zarr(location)["variables"]
    assert list(data.band.values) == ["red", "green", "blue"] and int((data != 0).sum()) > 0


def test_build_gti_mosaic_command(tmp_path, landsat, monkeypatch):
    (tmp_path / "rasterflow.yaml").write_text(f"output_uri: {tmp_path / 'out'}\nmax_workers: 2\n")
    result = runner.invoke(app, [
        "build-gti-mosaic", str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"),
        "--band", "red", "--band", "nir", "--location-field", "location",
        "--config", str(tmp_path / "rasterflow.yaml"),
    ])
    assert result.exit_code == 2
    assert "bands=" in result.output and "nir" in result.output
    result = runner.invoke(app, [
        "build-gti-mosaic", str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"),
        "--band", "red", "--location-field", "location", "--crs-epsg", "32621", "--resolution", "60",
        "--env", "GDAL_CACHEMAX=128", "--config", str(tmp_path / "rasterflow.yaml"),
    ])
    assert result.exit_code == 0, result.output
    (index_path,) = (tmp_path / "out").rglob("index.parquet")
    assert gpd.read_parquet(index_path).res_x[0] == 60.0


def test_env_option_must_be_key_value(landsat):
    result = runner.invoke(app, [
        "build-gti-mosaic", str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"),
        "--band", "red", "--location-field", "location", "--env", "NOEQUALS",
    ])
    assert result.exit_code != 0 and "KEY=VALUE" in result.output
