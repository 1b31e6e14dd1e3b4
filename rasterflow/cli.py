"""The ``rasterflow`` command: one subcommand per client method, plus ``demo``.

Parameters mirror the client's; list parameters repeat (``--band red --band
green``) and ``--env KEY=VALUE`` fills ``envs``. Partition progress is shown as
it happens and a summary of what was written where at the end.
"""

from __future__ import annotations

import inspect
import logging
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .enums import InferenceActorEnum, MergeModeEnum, ResamplingMethod, RuntimeEnum
from .errors import RasterflowError
from .params import (
    BuildAndPredictMosaicRecipeParams,
    BuildGtiMosaicParams,
    BuildMosaicParams,
    BuildZarrMultiscalesParams,
    PredictMosaicParams,
    VectorizeMosaicParams,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
console = Console(stderr=True)


class _ProgressHandler(logging.Handler):
    """Feeds ``rasterflow.progress`` log records into a rich progress bar."""

    def __init__(self, progress: Progress):
        super().__init__()
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        label, done = getattr(record, "label", None), getattr(record, "done", None)
        total = getattr(record, "total", None)
        if label is None or done is None:
            return
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=done)


def _client(config: Path | None, verbose: bool):
    if not verbose:
        # Quiet the console only; run logs still reach the Prefect API and UI.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from .client import RasterflowClient

    return RasterflowClient(config)


def _run_with_progress(call):
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)
    handler = _ProgressHandler(progress)
    logger = logging.getLogger("rasterflow.progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the bar replaces the log lines
    try:
        with progress:
            return call()
    except RasterflowError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def _summary(index_uri: str) -> None:
    from .engine.index import read_index

    index = read_index(index_uri)
    table = Table(title="Written", show_lines=False)
    table.add_column("location", overflow="fold")
    for col in ("bands", "shape", "crs", "time"):
        table.add_column(col)
    for row in index.itertuples():
        when = "-" if str(row.start_time) == "NaT" else f"{row.start_time:%Y-%m-%d}..{row.end_time:%Y-%m-%d}"
        table.add_row(row.location, ", ".join(row.bands), f"{row.height} x {row.width}", row.crs, when)
    Console().print(table)
    Console().print(f"index: {index_uri}")


def _vector_summary(uri: str | None) -> None:
    if uri is None:
        Console().print("no polygon: no pixel reached the threshold (or none of the polygons met min_area)")
        return
    import pyarrow.parquet as pq

    labels = pq.read_table(uri, columns=["label"])["label"].to_pandas().value_counts(sort=False)
    table = Table(title="Polygons")
    table.add_column("label")
    table.add_column("polygons", justify="right")
    for label, count in labels.items():
        table.add_row(str(label), str(count))
    Console().print(table)
    Console(soft_wrap=True).print(f"polygons: {uri}")


# ---------------------------------------------------------------- the workflow commands
#
# Each is made from its parameter model: option names, defaults and help come
# from the fields declared in engine/<workflow>/request.py (and params.py),
# so the command line cannot drift from the client. What the command line
# does differently is declared here, field by field.


@dataclass(frozen=True)
class Shape:
    """How a field appears on the command line, where that differs from the plain rule."""

    flags: tuple[str, ...] = ()  # option names: a list field takes one value per flag given
    argument: bool = False  # positional, in the order of the command's arguments
    cli_type: Any = None  # what Click reads, when the field's own type is not one it takes
    default: Any = inspect.Parameter.empty  # a command-line default where the client has none
    parse: Callable[[Any], Any] | None = None  # command-line value -> the client's value
    help: str | None = None  # instead of the field's description


@dataclass(frozen=True)
class Command:
    name: str
    params: type[BaseModel]
    shapes: dict[str, Shape]
    report: Callable[[Any], None]
    help: str
    skip: tuple[str, ...] = ()  # fields the command does not take (derived by the client)

    @property
    def method(self) -> str:
        return self.name.replace("-", "_")

    def shape(self, name: str) -> Shape:
        """How ``name`` appears on this command's line (every command shares runtime and envs)."""
        return self.shapes.get(name) or _EXECUTION.get(name) or Shape()


def _parse_envs(pairs: list[str]) -> dict[str, str] | None:
    envs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--env")
        envs[key] = value
    return envs or None


def _parse_resampling(values: list[str]) -> ResamplingMethod | dict[str, ResamplingMethod] | None:
    """One METHOD for every band, or BAND=METHOD pairs."""
    if not values:
        return None
    try:
        if len(values) == 1 and "=" not in values[0]:
            return ResamplingMethod(values[0])
        pairs = [v.partition("=") for v in values]
        if any(not sep or not band for band, sep, _ in pairs):
            raise ValueError
        return {band: ResamplingMethod(method) for band, _, method in pairs}
    except ValueError:
        raise typer.BadParameter(
            f"{values!r}: give one method, or BAND=METHOD pairs (methods: average, near, mode)",
            param_hint="--resampling",
        ) from None


def _parse_vectorize_config(pairs: list[str]) -> dict[str, object] | None:
    """``KEY=VALUE`` pairs; values are YAML scalars (``8``, ``true``, ``900.5``)."""
    import yaml

    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--vectorize-config")
        values[key] = yaml.safe_load(value)
    return values or None


# Every workflow command takes these, from WorkflowParams.
_EXECUTION = {
    "runtime": Shape(help="Runtime size: the work pool the run needs (with execution: deployment)."),
    "envs": Shape(flags=("--env",), cli_type=list[str], default=[], parse=_parse_envs,
                  help="KEY=VALUE for the reading tasks (repeat); never logged or stored."),
}
_DATE = Shape(cli_type=str)

COMMANDS = [
    Command("build-gti-mosaic", BuildGtiMosaicParams, {
        "gti": Shape(argument=True), "aoi": Shape(argument=True), "bands": Shape(flags=("--band", "-b")),
    }, _summary, "Mosaic the tiles of a GTI tile index over an AOI into sharded Zarr v3 stores."),
    Command("build-mosaic", BuildMosaicParams, {
        "aoi": Shape(argument=True), "datasets": Shape(flags=("--dataset", "-d")),
        "start": _DATE, "end": _DATE,
    }, _summary, "Composite named datasets (Sentinel-2 medians, NAIP) from STAC catalogs "
                 "into Zarr v3 stores."),
    Command("build-and-predict-mosaic-recipe", BuildAndPredictMosaicRecipeParams, {
        "aoi": Shape(argument=True), "model_recipe": Shape(flags=("--recipe", "-m")),
        "start": _DATE, "end": _DATE,
    }, _summary, "Build a recipe's mosaic over an AOI and run its model: predictions from an area and dates.",
        skip=("model_path",)),
    Command("build-zarr-multiscales", BuildZarrMultiscalesParams, {
        "store": Shape(argument=True),
        "resampling": Shape(flags=("--resampling", "-r"), cli_type=list[str], default=[],
                            parse=_parse_resampling,
                            help="METHOD for all bands, or BAND=METHOD (repeat); average, near, mode."),
    }, _summary, "Add overview levels and band statistics to a store, as a new multiscales Zarr store."),
    Command("predict-mosaic", PredictMosaicParams, {
        "store": Shape(argument=True), "features": Shape(flags=("--feature", "-f")),
        "labels": Shape(flags=("--label", "-l")), "device": Shape(default="auto"),
        "select_labels": Shape(flags=("--select-label",), cli_type=list[str], default=[],
                               parse=lambda v: list(v) or None),
    }, _summary, "Run a PyTorch model over mosaic stores into prediction stores (one band per label)."),
    Command("vectorize-mosaic", VectorizeMosaicParams, {
        "store": Shape(argument=True), "features": Shape(flags=("--feature", "-f")),
        "vectorize_config": Shape(cli_type=list[str], default=[], parse=_parse_vectorize_config,
                                  help="KEY=VALUE (repeat): stats, connectivity (4|8), min_area, "
                                       "simplify_tolerance."),
        "vector_crs": Shape(cli_type=str, parse=lambda v: None if v.lower() == "none" else v,
                            help="CRS of the polygons, e.g. EPSG:4326; 'none' keeps the store's."),
    }, _vector_summary, "Threshold store bands into polygons (exact across block seams), as one GeoParquet."),
]


def first_sentence(text: str) -> str:
    """A field description's first sentence: the command line's help for it."""
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _plain_type(annotation: Any) -> Any:
    """The Click-friendly type of a field: Optional[X] stays, lists and enums as they are."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _plain_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return Optional[_plain_type(args[0])]  # noqa: UP045 (Click reads typing.Optional)
    if origin is list:
        return list[_plain_type(typing.get_args(annotation)[0])]
    return annotation


def _cli_parameter(name: str, field: Any, shape: Shape) -> inspect.Parameter:
    """The typer parameter of one field."""
    default = field.get_default(call_default_factory=True) if not field.is_required() else ...
    if shape.default is not inspect.Parameter.empty:
        default = shape.default
    help_text = shape.help or first_sentence(field.description or "")
    if shape.argument:
        info = typer.Argument(default, help=help_text, show_default=False)
    else:
        flags = shape.flags or ("--" + name.replace("_", "-"),)
        info = typer.Option(default, *flags, help=help_text)
    annotation = shape.cli_type or _plain_type(field.annotation)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


_COMMON = [
    inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],  # noqa: UP045
                      default=typer.Option(None, help="rasterflow.yaml to use.")),
    inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, "--verbose", "-v", help="Show Prefect's logs.")),
]


def _register(command: Command) -> None:
    fields = {name: f for name, f in command.params.model_fields.items() if name not in command.skip}
    arguments = [n for n, s in command.shapes.items() if s.argument]
    order = arguments + [n for n in fields if n not in arguments and n not in _EXECUTION] + list(_EXECUTION)
    parameters = [_cli_parameter(n, fields[n], command.shape(n)) for n in order] + _COMMON

    def run(**values: Any) -> None:
        config, verbose = values.pop("config"), values.pop("verbose")
        call = {n: parse(v) if (parse := command.shape(n).parse) else v for n, v in values.items()}
        client = _client(config, verbose)
        command.report(_run_with_progress(lambda: getattr(client, command.method)(**call)))

    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__doc__ = command.help
    app.command(command.name)(run)


for _command in COMMANDS:
    _register(_command)


@app.command()
def deploy(
    pool_type: str = typer.Option("process", help="Work pool type: process, docker or kubernetes."),
    image: str = typer.Option("rasterflow:latest", help="Worker image (docker and kubernetes pools)."),
    runtime: list[RuntimeEnum] = typer.Option([], "--runtime", "-r",
                                              help="Sizes to deploy (repeat; default all)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be registered; change nothing."),
    config: Path | None = typer.Option(None, help="rasterflow.yaml to use (its work_pools names)."),
) -> None:
    """Create the work pools and register one deployment per (flow, runtime size).

    Against the Prefect API in use (PREFECT_API_URL). Idempotent: what already
    matches is left alone, so a second run reports everything unchanged.
    """
    from .config import load_config
    from .deploy import apply_plan, deployment_plan, pool_plan

    try:
        settings = load_config(config)
        pools = pool_plan(settings, pool_type, image, runtime or None)
        deployments = deployment_plan(settings, runtime or None)
        if dry_run:
            rows = [("work pool", p.name, f"{p.type}: {p.description}") for p in pools]
            rows += [("deployment", d.full_name, f"pool {d.work_pool_name}") for d in deployments]
        else:
            rows = [(a.kind, a.name, a.action) for a in apply_plan(pools, deployments)]
    except RasterflowError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    table = Table("kind", "name", "would register" if dry_run else "action")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def sample_path(*parts: str) -> str:
    """A file of the bundled samples (rasterflow/samples)."""
    return str(resources.files("rasterflow").joinpath("samples", *parts))


@app.command()
def demo(
    output: Path | None = typer.Option(None, help="Output root (default: the config's output_uri)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
) -> None:
    """Run the bundled Landsat-8 sample through every workflow rasterflow has."""
    from .config import load_config

    config = load_config()
    if output is not None:
        config = config.model_copy(update={"output_uri": str(output.resolve())})
    if not verbose:
        # Quiet the console only; run logs still reach the Prefect API and UI.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from .client import RasterflowClient

    client = RasterflowClient(config)
    console.print("[bold]1. build_gti_mosaic[/]: Landsat-8 Iguazu sample, 4 COG tiles -> EPSG:3857 Zarr v3")
    mosaic = _run_with_progress(lambda: client.build_gti_mosaic(
        gti=sample_path("landsat8_iguazu", "tiles.parquet"),
        aoi=sample_path("landsat8_iguazu", "aoi.geojson"),
        bands=["red", "green", "blue"], location_field="location", xy_chunksize=256,
        shard_size_bytes=4_000_000,
    ))
    _summary(mosaic)

    console.print("\n[bold]2. predict_mosaic[/]: the shipped water/land model "
                  "(a stand-in trained on this sample)")
    model = str(resources.files("rasterflow").joinpath("models", "landsat8_water.pt2"))
    predictions = _run_with_progress(lambda: client.predict_mosaic(
        mosaic, model, patch_size=256, clip_size=8, device="auto",
        features=["blue", "green", "red"], labels=["land", "water"],
        actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH, max_batch_size=8,
        merge_mode=MergeModeEnum.WEIGHTED_AVERAGE,
    ))
    _summary(predictions)

    console.print("\n[bold]3. vectorize_mosaic[/]: water probability >= 0.5 -> polygons, exact across blocks")
    polygons = _run_with_progress(lambda: client.vectorize_mosaic(
        predictions, ["water"], 0.5, vectorize_config={"connectivity": 8, "min_area": 20_000},
    ))
    _vector_summary(polygons)

    console.print("\n[bold]4. build_zarr_multiscales[/]: overview levels and band statistics of the mosaic")
    pyramids = _run_with_progress(lambda: client.build_zarr_multiscales(mosaic))
    _summary(pyramids)

    Console(soft_wrap=True).print(
        "\nOpen them:\n  import geopandas, xarray\n"
        f"  mosaic = xarray.open_zarr(geopandas.read_parquet({mosaic!r}).location[0])[\"variables\"]\n"
        f"  water = xarray.open_zarr(geopandas.read_parquet({predictions!r}).location[0])[\"variables\"]\n"
        f"  polygons = geopandas.read_parquet({polygons!r})\n"
        f"  pyramid = xarray.open_datatree(geopandas.read_parquet({pyramids!r}).location[0], engine=\"zarr\")"
    )


# ---------------------------------------------------------------- seeing the results, local servers


def _fail(exc: RasterflowError) -> typer.Exit:
    console.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(2)


@app.command()
def view(
    uris: list[str] = typer.Argument(..., metavar="URI...", help="Stores, indexes or polygon files, "
                                     "drawn together."),
    port: int | None = typer.Option(None, help="Port on 127.0.0.1 (default: the config's view_port, 8765)."),
    browser: bool = typer.Option(True, "--browser/--no-browser", help="Open the map in a web browser."),
    config: Path | None = typer.Option(None, help="rasterflow.yaml to use."),
) -> None:
    """Open a web map of outputs: bands, colour limits, time, polygons.

    Serves the viewer on 127.0.0.1 until Ctrl-C, or reuses the background one
    of `rasterflow server start`.

    Example: rasterflow view rasterflow-output/build-zarr-multiscales/*/index.parquet
    """
    from . import services
    from .config import load_config
    from .engine.view import map_link
    from .engine.view.layers import layers_of

    try:
        settings = load_config(config)
        for uri in uris:
            layers_of(uri, settings.storage_options_for(uri))
    except RasterflowError as exc:
        raise _fail(exc) from None
    port = port or settings.view_port
    running = services.status(services.VIEWER)
    url = map_link(uris, running["url"] if running else f"http://127.0.0.1:{port}")
    Console(soft_wrap=True).print(url)
    if browser:
        import webbrowser

        webbrowser.open(url)
    if not running:
        from .view import serve

        console.print("serving the viewer on 127.0.0.1; Ctrl-C stops it")
        serve(settings, port=port)


@app.command()
def export(
    uri: str = typer.Argument(..., help="A store, multiscales store, index, or polygons GeoParquet."),
    format: str = typer.Option("cog", "--format", "-f",
                               help="cog or zarr-v2 (stores); gpkg or fgb (polygons)."),
    output: str | None = typer.Option(None, "--output", "-o", help="Folder (default: beside URI)."),
    config: Path | None = typer.Option(None, help="rasterflow.yaml to use."),
) -> None:
    """Write outputs as GeoTIFF (COG), Zarr v2, GeoPackage or FlatGeobuf.

    For GDAL < 3.13 and QGIS, which cannot read sharded Zarr v3.

    Example: rasterflow export rasterflow-output/predict-mosaic/ab12/index.parquet -f cog
    """
    from .config import load_config
    from .engine.export import export as write

    try:
        settings = load_config(config)
        written = write(uri, format, output, settings.storage_options_for)
    except RasterflowError as exc:
        raise _fail(exc) from None
    for path in written:
        Console(soft_wrap=True).print(path)


server_app = typer.Typer(no_args_is_help=True, help="A Prefect server and the map viewer in the "
                         "background, reused by every call (start, stop, status).")
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start(
    config: Path | None = typer.Option(None, help="rasterflow.yaml (its server_port, view_port)."),
) -> None:
    """Start a Prefect server and the viewer in the background (127.0.0.1).

    Calls from any process then run on that server (its UI keeps every run)
    instead of starting an embedded one: a call served from the cache returns
    in about a second instead of ~8 s. Example: rasterflow server start
    """
    from . import services
    from .config import load_config

    try:
        settings = load_config(config)
        prefect = services.start(services.PREFECT, settings.server_port)
        viewer = services.start(services.VIEWER, settings.view_port, str(config) if config else None)
    except RasterflowError as exc:
        raise _fail(exc) from None
    Console(soft_wrap=True).print(f"Prefect UI: {prefect['url']}\nviewer:     {viewer['url']}/map")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the background Prefect server and viewer. Example: rasterflow server stop"""
    from . import services

    for name in (services.PREFECT, services.VIEWER):
        Console().print(f"{name}: {'stopped' if services.stop(name) else 'was not running'}")


@server_app.command("status")
def server_status() -> None:
    """Say whether the background servers run, and where. Example: rasterflow server status"""
    from . import services

    for name in (services.PREFECT, services.VIEWER):
        state = services.status(name)
        where = f"running at {state['url']} (pid {state['pid']})" if state else "not running"
        Console(soft_wrap=True).print(f"{name}: {where}")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        Console().print(f"rasterflow {version('rasterflow')}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
    """Self-hostable raster workflows: mosaics, models, polygons and maps, as Prefect flows."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
