"""The commands that read outputs: view, export, server and --version, as a user types them."""

from __future__ import annotations

import subprocess
import sys

import view_fixtures
from loopback import child_env
from typer.testing import CliRunner

from rasterflow import __version__
from rasterflow.cli import app

runner = CliRunner()


def test_version_and_every_commands_help_fits_80_columns_with_an_example():
    assert runner.invoke(app, ["--version"]).output.strip() == f"rasterflow {__version__}"
    env = child_env(COLUMNS="80", TERM="dumb")
    for command in ("view", "export", "server"):
        shown = subprocess.run([sys.executable, "-m", "rasterflow.cli", command, "--help"], env=env,
                               capture_output=True, text=True, check=True).stdout
        assert max(len(line) for line in shown.splitlines()) <= 80, shown
        assert "Example" in shown or command == "server", shown


def test_export_writes_a_cog_and_a_wrong_uri_is_one_line(landsat, tmp_path):
    store = view_fixtures.mosaic(landsat, tmp_path / "mosaic")
    done = runner.invoke(app, ["export", store, "--format", "cog", "--output", str(tmp_path / "out")])
    assert done.exit_code == 0 and done.output.strip().endswith("aoi-0.tif")
    wrong = runner.invoke(app, ["export", str(tmp_path / "nothing.zarr")])
    assert wrong.exit_code == 2 and "does not exist" in wrong.output and "Traceback" not in wrong.output


def test_view_refuses_what_it_cannot_draw_before_serving(tmp_path):
    answer = runner.invoke(app, ["view", str(tmp_path / "missing.parquet"), "--no-browser"])
    assert answer.exit_code == 2 and "does not exist" in answer.output


def test_server_status_says_nothing_runs():
    shown = runner.invoke(app, ["server", "status"]).output
    assert "prefect-server: not running" in shown and "viewer: not running" in shown
