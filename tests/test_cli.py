"""The rasterflow command, driven as a user would (typer's runner, real flows)."""

from __future__ import annotations

import subprocess
import sys

import geopandas as gpd
import pytest
import xarray as xr
from loopback import child_env
from typer.testing import CliRunner

from rasterflow.cli import app

pytestmark = pytest.mark.usefixtures("prefect_server")
runner = CliRunner()


def test_demo_runs_every_workflow_on_the_sample(tmp_path):
    result = runner.invoke(app, ["demo", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    # Step 5 (the csmask extra, which the tests install) adds a Sentinel-2 mosaic and its cloud masks.
    by_bands = {tuple(gpd.read_parquet(p).bands[0]): p for workflow in ("build-gti-mosaic", "predict-mosaic")
                for p in tmp_path.glob(f"{workflow}/*/index.parquet")}
    assert len(by_bands) == 4
    mosaic_index, predict_index = by_bands[("red", "green", "blue")], by_bands[("land", "water")]
    clouds = xr.open_zarr(gpd.read_parquet(by_bands[("clear", "cloud", "shadow")]).location[0])["variables"]
    assert clouds.rio.crs.to_epsg() == 32633 and not bool(clouds.isnull().any())  # the scene's own grid
    classes = clouds.values[0].argmax(axis=0)
    assert 0.02 < (classes == 1).mean() < 0.5 and 0.02 < (classes == 2).mean() < 0.5  # cloud streaks, shadows
    assert "pixels: clear" in result.output
    (polygons,) = tmp_path.glob("vectorize-mosaic/*/polygons.parquet")
    (pyramid,) = tmp_path.glob("build-zarr-multiscales/*/*.zarr")  # given the mosaic's store: its pyramid
    for path in (mosaic_index, predict_index, polygons, pyramid):
        assert str(path) in result.output
    mosaic = xr.open_zarr(gpd.read_parquet(mosaic_index).location[0])["variables"]
    assert list(mosaic.band.values) == ["red", "green", "blue"] and int((mosaic != 0).sum()) > 0
    water = xr.open_zarr(gpd.read_parquet(predict_index).location[0])["variables"].sel(band="water")
    # The Itaipu reservoir: a real share of the AOI is water, most of it is not.
    assert 0.05 < float((water >= 0.5).mean()) < 0.6
    assert set(gpd.read_parquet(polygons).label) == {"water"}


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


def test_a_users_data_mistake_is_one_line_without_a_traceback(tmp_path, landsat):
    """From a new process, as a user meets it: Prefect's own console lines (the failed task and flow,
    with their tracebacks) stay off the terminal unless --verbose; the run's log keeps them."""
    from prefect.settings import PREFECT_API_URL

    (tmp_path / "rasterflow.yaml").write_text(f"output_uri: {tmp_path / 'out'}\n")
    env = child_env(PREFECT_API_URL=str(PREFECT_API_URL.value()), COLUMNS="80",
                    RASTERFLOW_STATE_DIR=str(tmp_path / "state"))  # no background runner: it runs here
    tiles, aoi = str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson")

    def call(gti: str, band: str, field: str, *more: str) -> subprocess.CompletedProcess:
        args = ["build-gti-mosaic", gti, aoi, "-b", band, "--location-field", field, "--resolution", "240",
                "--config", str(tmp_path / "rasterflow.yaml"), *more]
        return subprocess.run([sys.executable, "-m", "rasterflow.cli", *args], env=env, capture_output=True,
                              text=True, timeout=600)

    mistakes = {"gti=": call(str(tmp_path / "missing.parquet"), "red", "location"),
                "bands=": call(tiles, "nir", "location"),
                "location_field=": call(tiles, "red", "path")}
    for named, done in mistakes.items():
        shown = done.stdout + done.stderr
        errors = [line for line in shown.splitlines() if "error" in line.lower()]
        assert done.returncode == 2 and len(errors) == 1 and errors[0].startswith(f"error: {named}"), shown
        assert "Traceback" not in shown, shown
    # Those were found before any run existed; one a run finds shows Prefect's tracebacks with --verbose.
    (tmp_path / "unchecked.yaml").write_text(f"output_uri: {tmp_path / 'out'}\ncheck_inputs: false\n")
    verbose = call(tiles, "red", "path", "--verbose", "--config", str(tmp_path / "unchecked.yaml"))
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1].startswith("error: location_field=")


def test_env_option_must_be_key_value(landsat):
    result = runner.invoke(app, [
        "build-gti-mosaic", str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"),
        "--band", "red", "--location-field", "location", "--env", "NOEQUALS",
    ])
    assert result.exit_code != 0 and "KEY=VALUE" in result.output


def test_build_mosaic_command(tmp_path, stac_api, stac_sample):
    """Catalog override from rasterflow.yaml, a real STAC API, one yearly median."""
    from stac_fixtures import s2_grid_bounds, write_aoi

    x0, y0, x1, y1 = s2_grid_bounds(stac_sample)
    aoi = write_aoi(tmp_path / "aoi.geojson", (x0 + 1000, y0 + 1000, x1 - 1000, y1 - 1000), "EPSG:32621")
    config = tmp_path / "rasterflow.yaml"
    config.write_text(f"output_uri: {tmp_path / 'out'}\nmax_workers: 2\n"
                      f"datasets:\n  s2med_windowed_pixel: {{stac_url: '{stac_api}'}}\n")
    args = ["build-mosaic", aoi, "--dataset", "s2med_windowed_pixel", "--crs-epsg", "32621",
            "--config", str(config)]
    result = runner.invoke(app, [*args, "--start", "2021-06-01", "--end", "2021-01-01"])
    assert result.exit_code == 2 and "end=" in result.output
    result = runner.invoke(app, [*args, "--start", "2021-01-01", "--end", "2021-12-31"])
    assert result.exit_code == 0, result.output
    (index_path,) = (tmp_path / "out").rglob("index.parquet")
    index = gpd.read_parquet(index_path)
    assert index.bands[0][-1] == "s2med_windowed_pixel:N_VALID_PIXELS" and index.res_x[0] == 10.0
def test_deploy_dry_run_lists_pools_and_deployments_without_an_api():
    result = runner.invoke(app, ["deploy", "--dry-run", "--pool-type", "kubernetes", "-r", "gpu-small"])
    assert result.exit_code == 0, result.output
    assert "rasterflow-gpu-small" in result.output and "kubernetes" in result.output
    assert "predict-mosaic/gpu-small" in result.output and "predict-mosaic/small" not in result.output


def test_deploy_with_an_unknown_pool_type_is_a_clear_error():
    result = runner.invoke(app, ["deploy", "--dry-run", "--pool-type", "ecs"])
    assert result.exit_code == 2 and "pool_type='ecs'" in result.output


def _command(*args: str, env: dict[str, str] | None = None, cwd=None):
    """``rasterflow ...`` in its own process, as a user's shell runs it (what Prefect prints included)."""
    import subprocess
    import sys

    from loopback import child_env

    return subprocess.run([sys.executable, "-m", "rasterflow.cli", *args], capture_output=True, text=True,
                          env=child_env(**(env or {})), cwd=cwd, timeout=300, check=False)


def _one_error_line(done) -> str:
    output = done.stdout + done.stderr
    # A run that started says first where to watch it ("Prefect UI: <url>"); then the one error line.
    lines = [line for line in output.splitlines() if line.strip() and not line.startswith("Prefect UI: ")]
    assert done.returncode == 2 and "Traceback" not in output and len(lines) == 1, output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_a_data_mistake_is_one_line_before_any_run(tmp_path, landsat):
    """A band not in the tiles: one line, nothing written (more mistakes: tests/test_bad_inputs.py)."""
    config = tmp_path / "rasterflow.yaml"
    config.write_text(f"output_uri: {tmp_path / 'out'}\n")
    line = _one_error_line(_command("build-gti-mosaic", str(landsat / "tiles.parquet"),
                                    str(landsat / "aoi.geojson"), "--band", "nir", "--location-field",
                                    "location", "--config", str(config)))
    assert "bands=['nir']" in line and "['blue', 'green', 'red']" in line
    assert not (tmp_path / "out").exists()


def test_a_mistake_found_by_the_run_is_one_line_too(tmp_path, landsat):
    """With the caller's checks off, the run's plan step fails: Prefect's tracebacks stay in its log."""
    from prefect.settings import PREFECT_API_URL

    config = tmp_path / "rasterflow.yaml"
    config.write_text(f"output_uri: {tmp_path / 'out'}\ncheck_inputs: false\n")
    done = _command("build-gti-mosaic", str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"),
                    "--band", "nir", "--location-field", "location", "--config", str(config),
                    env={"PREFECT_API_URL": PREFECT_API_URL.value()})
    assert "bands=['nir']" in _one_error_line(done)


def test_deploy_without_an_api_is_one_line():
    from loopback import free_port

    done = _command("deploy", env={"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"})
    assert "cannot reach the Prefect API" in _one_error_line(done)
