"""The commands that read outputs: view, export, server and --version, as a user types them."""

from __future__ import annotations

import re
import shlex

import typer
import view_fixtures
from typer.testing import CliRunner

from rasterflow import __version__
from rasterflow.cli import app

runner = CliRunner()


def _commands(group, path: tuple[str, ...] = ()):
    """Every command and group of the ``rasterflow`` tree, as the words that reach it (typer vendors
    its own click: a group is what has ``commands``)."""
    for name, command in group.commands.items():
        yield path + (name,), command
        if hasattr(command, "commands"):
            yield from _commands(command, path + (name,))


def test_version_and_every_commands_help_fits_80_columns_with_an_example_that_parses():
    assert runner.invoke(app, ["--version"]).output.strip() == f"rasterflow {__version__}"
    root = typer.main.get_command(app)
    for words, _ in [((), root), *_commands(root)]:
        shown = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "80", "TERM": "dumb"}).output
        assert max(len(line) for line in shown.splitlines()) <= 80, shown
        example = re.search(r"Example: (rasterflow.*?)\n\s*\n", shown, re.S)
        assert example, f"{' '.join(words) or 'rasterflow'}: no example in\n{shown}"
        args = shlex.split(" ".join(example.group(1).split()))[1:]
        assert args[: len(words)] == list(words) or not words, example.group(1)
        target, rest = root, args  # the example's own words reach a command that takes its options
        while hasattr(target, "commands") and rest and rest[0] in target.commands:
            target, rest = target.commands[rest[0]], rest[1:]
        target.make_context(target.name or "rasterflow", list(rest), resilient_parsing=False)


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
