"""The ``rasterflow`` command: one subcommand per client method, plus ``demo``.

Parameters mirror the client's; list parameters repeat (``--band red --band
green``) and ``--env KEY=VALUE`` fills ``envs``. Partition progress is shown as
it happens and a summary of what was written where at the end.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

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

if TYPE_CHECKING:  # the config module is imported when a command needs it
    from .config import RasterflowConfig

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Raster workflows on Prefect: mosaic, predict, vectorize, pyramids; view and "
                       "export the results.\n\nExample: rasterflow demo")
console = Console(stderr=True)


class _ProgressHandler(logging.Handler):
    """Progress and the run's UI link, from ``rasterflow.progress`` log records (a run here) or from
    the background runner's events (a run there), onto a rich progress bar."""

    def __init__(self, progress: Progress):
        super().__init__()
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.event(vars(record))

    def event(self, event: dict[str, Any]) -> None:
        if event.get("event") == "declined":
            self.progress.console.print(f"[dim]running here, not in the background runner: {event['reason']} "
                                        "(`rasterflow server stop`, then `start`, runs this copy)[/]")
        elif event.get("run_url"):
            self.progress.console.print(f"Prefect UI: {event['run_url']}", soft_wrap=True, markup=False)
        elif event.get("message") is not None and event.get("event") == "log":
            self.progress.console.print(event["message"], soft_wrap=True, markup=False)
        label, done, total = event.get("label"), event.get("done"), event.get("total")
        if label is None or done is None:
            return
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=done)


def _quiet_console(verbose: bool) -> None:
    if not verbose:
        # Quiet the console only; run logs still reach the Prefect API and UI.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


def _invoke(method: str, arguments: dict[str, Any], config: Path | RasterflowConfig | None,
            verbose: bool, **options: bool) -> tuple[Any, dict[str, Any]]:
    """``client.<method>(**arguments)`` with a progress bar: in the background runner of ``rasterflow
    server start`` when it takes the call (everything already imported there), else in this process.
    Returns the result and its report (the rows of the summary table). ``options`` (the client's
    ``dry_run``, ``cache``) other than the defaults run here."""
    from . import runner

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)
    handler = _ProgressHandler(progress)
    with progress:
        plain = not options.get("dry_run") and options.get("cache", True)
        if plain and (config is None or isinstance(config, Path)):  # a config object is this process's own
            answer = runner.submit(method, arguments, str(config) if config else None, verbose, handler.event)
            if answer is not None:
                return _answered(answer)
        return _run_here(method, arguments, config, verbose, handler, **options)


def _answered(answer: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The runner's last event: the result, or the error the call ended with (as a run here would)."""
    if answer["event"] == "result":
        return answer["value"], answer["report"]
    if answer["kind"] == "rasterflow":
        raise _fail(answer["message"])
    console.print(answer.get("traceback") or answer["message"], markup=False, soft_wrap=True)
    raise typer.Exit(1)


class _UserMistakes(logging.Filter):
    """Keeps Prefect's console lines about a user's mistake (a ``RasterflowError`` that failed a task or
    the flow, with its traceback) off the terminal: the command prints it once, as one line. The run's
    log in the Prefect API keeps them, and ``--verbose`` shows them.

    It sits on the flow and task run loggers, whose API handler must see every record, and puts
    ``console`` on the root logger's handlers (Prefect's console) when a mistake passes: Prefect
    replaces those handlers when its embedded server starts, so they are found at that moment.
    """

    LOGGERS = ("prefect.flow_runs", "prefect.task_runs")

    def __init__(self) -> None:
        super().__init__()
        self.console = logging.Filter()
        self.console.filter = lambda record: not self.mistake(record)  # type: ignore[method-assign]

    @staticmethod
    def mistake(record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], RasterflowError):
            return True
        text = record.getMessage() if record.levelno >= logging.ERROR else ""
        return any(f"{name}(" in text or f"{name}:" in text for name in _mistake_names())

    def filter(self, record: logging.LogRecord) -> bool:
        if self.mistake(record):
            for handler in logging.getLogger().handlers:
                if self.console not in handler.filters:
                    handler.addFilter(self.console)
        return True

    def __enter__(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)

    def __exit__(self, *_: object) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self.console)


def _mistake_names() -> set[str]:
    found, todo = set(), [RasterflowError]
    while todo:
        kind = todo.pop()
        found.add(kind.__name__)
        todo += kind.__subclasses__()
    return found


def _run_here(method: str, arguments: dict[str, Any], config: Path | RasterflowConfig | None, verbose: bool,
              handler: _ProgressHandler, **options: bool) -> tuple[Any, dict[str, Any]]:
    _quiet_console(verbose)
    from . import runner
    from .client import RasterflowClient

    logger = logging.getLogger("rasterflow.progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the bar replaces the log lines
    failed = True
    try:
        with contextlib.nullcontext() if verbose else _UserMistakes():
            client = RasterflowClient(config, **options)
            result = getattr(client, method)(**arguments)
        failed = False
        return result, {} if options.get("dry_run") else runner.report(method, result)
    except RasterflowError as exc:
        raise _fail(str(exc)) from None
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        if not failed:
            _suggest_server()


def _suggest_server() -> None:
    """After a run on Prefect's embedded server (its UI gone with this process), say how to keep one."""
    from . import services

    if not os.environ.get("PREFECT_API_URL") and services.status(services.PREFECT) is None:
        console.print("[dim]tip: `rasterflow server start` keeps a Prefect server with its UI, and later "
                      "calls start in about a second[/]")


def _print_stores(result: str, report: dict[str, Any]) -> None:
    if "levels" in report:  # build_zarr_multiscales given a store: its multiscales store
        _print_pyramid(result, report)
        return
    table = Table(title="Written", show_lines=False)
    table.add_column("location", overflow="fold")
    for col in ("bands", "shape", "crs", "time"):
        table.add_column(col)
    for row in report["rows"]:
        table.add_row(row["location"], row["bands"], row["shape"], row["crs"], row["time"])
    Console().print(table)
    Console(soft_wrap=True).print(f"index: {result}")


def _print_pyramid(result: str, report: dict[str, Any]) -> None:
    table = Table(title="Written: multiscales store")
    for col in ("level", "shape", "pixel size"):
        table.add_column(col)
    for level in report["levels"]:
        table.add_row(level["asset"], level["shape"], level["pixel_size"])
    Console().print(table)
    Console(soft_wrap=True).print(f"multiscales store: {result}")


def _plan_table(report) -> None:
    """A dry run's ``PlanReport``, one line per fact; nothing was written."""
    table = Table(title=f"Dry run: {report.workflow} (nothing written)", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for what, value in report.rows():
        table.add_row(what, value)
    Console().print(table)


def _print_polygons(result: str | None, report: dict[str, Any]) -> None:
    if result is None:
        Console().print("no polygon: no pixel reached the threshold (or none of the polygons met min_area)")
        return
    table = Table(title="Polygons")
    table.add_column("label")
    table.add_column("polygons", justify="right")
    for label, count in report["labels"].items():
        table.add_row(label, str(count))
    Console().print(table)
    Console(soft_wrap=True).print(f"polygons: {result}")


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
    report: Callable[[Any, dict[str, Any]], None]
    help: str
    example: str  # a command line that runs, in the help
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
    }, _print_stores, "Mosaic the tiles of a GTI tile index over an AOI into sharded Zarr v3 stores.",
        "rasterflow build-gti-mosaic tiles.parquet aoi.geojson -b red -b green -b blue "
        "--location-field location --resolution 30"),
    Command("build-mosaic", BuildMosaicParams, {
        "aoi": Shape(argument=True), "datasets": Shape(flags=("--dataset", "-d")),
        "start": _DATE, "end": _DATE,
    }, _print_stores, "Composite named datasets (Sentinel-2 medians, NAIP) from STAC catalogs "
                 "into Zarr v3 stores.",
        "rasterflow build-mosaic aoi.geojson -d s2med_harvest --start 2021-01-01 --end 2021-12-31"),
    Command("build-and-predict-mosaic-recipe", BuildAndPredictMosaicRecipeParams, {
        "aoi": Shape(argument=True), "model_recipe": Shape(flags=("--recipe", "-m")),
        "start": _DATE, "end": _DATE,
    }, _print_stores,
        "Build a recipe's mosaic over an AOI and run its model: predictions from an area and dates.",
        "rasterflow build-and-predict-mosaic-recipe aoi.geojson -m ftw --start 2021-01-01 --end 2021-12-31",
        skip=("model_path",)),
    Command("build-zarr-multiscales", BuildZarrMultiscalesParams, {
        "store": Shape(argument=True),
        "resampling": Shape(flags=("--resampling", "-r"), cli_type=list[str], default=[],
                            parse=_parse_resampling,
                            help="METHOD for all bands, or BAND=METHOD (repeat); average, near, mode."),
    }, _print_stores, "Add overview levels and band statistics to a store, as a new multiscales Zarr store.",
        "rasterflow build-zarr-multiscales rasterflow-output/build-gti-mosaic/ab12/index.parquet"),
    Command("predict-mosaic", PredictMosaicParams, {
        "store": Shape(argument=True), "features": Shape(flags=("--feature", "-f")),
        "labels": Shape(flags=("--label", "-l")),
        "select_labels": Shape(flags=("--select-label",), cli_type=list[str], default=[],
                               parse=lambda v: list(v) or None),
    }, _print_stores, "Run a PyTorch model over mosaic stores into prediction stores (one band per label).",
        "rasterflow predict-mosaic mosaic/index.parquet --model-path water.pt2 --patch-size 256 "
        "--clip-size 8 -f blue -f green -f red -l land -l water "
        "--actor semantic_segmentation_pytorch --max-batch-size 8 --merge-mode clip"),
    Command("vectorize-mosaic", VectorizeMosaicParams, {
        "store": Shape(argument=True), "features": Shape(flags=("--feature", "-f")),
        "vectorize_config": Shape(cli_type=list[str], default=[], parse=_parse_vectorize_config,
                                  help="KEY=VALUE (repeat): stats, connectivity (4|8), min_area, "
                                       "simplify_tolerance."),
        "vector_crs": Shape(cli_type=str, parse=lambda v: None if v.lower() == "none" else v,
                            help="CRS of the polygons, e.g. EPSG:4326; 'none' keeps the store's."),
    }, _print_polygons, "Threshold store bands into polygons (exact across block seams), as one GeoParquet.",
        "rasterflow vectorize-mosaic predictions/index.parquet -f water --threshold 0.5"),
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
        if set(args) <= {int, str}:  # a code or a text (target_crs): the model reads either from text
            return Optional[str]  # noqa: UP045
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
    inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, "--dry-run", help="Validate and plan, print the plan and its estimates; write nothing.")),
    inspect.Parameter("cache", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        True, "--cache/--no-cache", help="--no-cache recomputes every task instead of reusing results.")),
]


def _register(command: Command) -> None:
    fields = {name: f for name, f in command.params.model_fields.items() if name not in command.skip}
    arguments = [n for n, s in command.shapes.items() if s.argument]
    order = arguments + [n for n in fields if n not in arguments and n not in _EXECUTION] + list(_EXECUTION)
    parameters = [_cli_parameter(n, fields[n], command.shape(n)) for n in order] + _COMMON

    def run(**values: Any) -> None:
        config, verbose = values.pop("config"), values.pop("verbose")
        dry_run, cache = values.pop("dry_run"), values.pop("cache")
        call = {n: parse(v) if (parse := command.shape(n).parse) else v for n, v in values.items()}
        result, report = _invoke(command.method, call, config, verbose, dry_run=dry_run, cache=cache)
        if dry_run:
            _plan_table(result)
        else:
            command.report(result, report)

    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__doc__ = f"{command.help}\n\nExample: {command.example}"
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
    output_uri: str | None = typer.Option(
        None, "--output-uri",
        help="Absolute output root of every run on these pools (RASTERFLOW_OUTPUT_URI); a call's own wins."),
    config: Path | None = typer.Option(None, help="rasterflow.yaml to use (its work_pools names)."),
) -> None:
    """Create the work pools and deployments that are missing; update only what rasterflow owns.

    Against the Prefect API in use (PREFECT_API_URL). Schedules, parameter
    overrides, job variables, other tags and an edited description survive;
    what already matches is left alone, so a second run reports everything
    unchanged.

    Example: rasterflow deploy --pool-type kubernetes --dry-run
    """
    from .config import load_config
    from .deploy import apply_plan, deployment_plan, pool_plan

    _quiet_console(verbose=False)
    try:
        settings = load_config(config)
        pools = pool_plan(settings, pool_type, image, runtime or None, output_uri)
        deployments = deployment_plan(settings, runtime or None)
        if dry_run:
            rows = [("work pool", p.name, f"{p.type}: {p.description}") for p in pools]
            rows += [("deployment", d.full_name, f"pool {d.work_pool_name}") for d in deployments]
        else:
            rows = [(a.kind, a.name, a.action) for a in apply_plan(pools, deployments)]
    except RasterflowError as exc:
        raise _fail(exc) from None
    table = Table("kind", "name", "would register" if dry_run else "action")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _step(method: str, config: RasterflowConfig | None, verbose: bool, **arguments: Any) -> Any:
    """One demo call, its summary printed; its result."""
    result, report = _invoke(method, arguments, config, verbose)
    (_print_polygons if method == "vectorize_mosaic" else _print_stores)(result, report)
    return result


def sample_path(*parts: str) -> str:
    """A file of the bundled samples (rasterflow/samples)."""
    return str(resources.files("rasterflow").joinpath("samples", *parts))


@app.command()
def demo(
    output: Path | None = typer.Option(None, help="Output root (default: the config's output_uri)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
) -> None:
    """Run the bundled Landsat-8 sample through every workflow rasterflow has (and, with the csmask
    extra, mask clouds and shadows on the bundled Sentinel-2 scene).

    Example: rasterflow demo --output demo-output
    """
    from .config import load_config

    config: RasterflowConfig | None = None
    if output is not None:
        config = load_config().model_copy(update={"output_uri": str(output.resolve())})
    console.print("[bold]1. build_gti_mosaic[/]: Landsat-8 Iguazu sample, 4 COG tiles -> EPSG:3857 Zarr v3")
    mosaic = _step("build_gti_mosaic", config, verbose, gti=sample_path("landsat8_iguazu", "tiles.parquet"),
                   aoi=sample_path("landsat8_iguazu", "aoi.geojson"), bands=["red", "green", "blue"],
                   location_field="location", xy_chunksize=256, shard_size_bytes=4_000_000)

    console.print("\n[bold]2. predict_mosaic[/]: the shipped water/land model "
                  "(a stand-in trained on this sample)")
    model = str(resources.files("rasterflow").joinpath("models", "landsat8_water.pt2"))
    predictions = _step(
        "predict_mosaic", config, verbose, store=mosaic, model_path=model, patch_size=256, clip_size=8,
        device="auto", features=["blue", "green", "red"], labels=["land", "water"],
        actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH, max_batch_size=8,
        merge_mode=MergeModeEnum.WEIGHTED_AVERAGE,
    )

    console.print("\n[bold]3. vectorize_mosaic[/]: water probability >= 0.5 -> polygons, exact across blocks")
    polygons = _step("vectorize_mosaic", config, verbose, store=predictions, features=["water"],
                     threshold=0.5, vectorize_config={"connectivity": 8, "min_area": 20_000})

    console.print("\n[bold]4. build_zarr_multiscales[/]: overview levels and band statistics of the mosaic "
                  "store (a store in, its multiscales store out)")
    from .engine.index import read_index

    pyramid = _step("build_zarr_multiscales", config, verbose, store=read_index(mosaic).location[0])

    clouds = _demo_cloud_masks(config, verbose)

    Console(soft_wrap=True).print(
        "\nOpen them:\n  import geopandas, xarray\n"
        f"  mosaic = xarray.open_zarr(geopandas.read_parquet({mosaic!r}).location[0])[\"variables\"]\n"
        f"  water = xarray.open_zarr(geopandas.read_parquet({predictions!r}).location[0])[\"variables\"]\n"
        f"  polygons = geopandas.read_parquet({polygons!r})\n"
        f"  pyramid = xarray.open_datatree({pyramid!r}, engine=\"zarr\")"
        + (f"\n  clouds = xarray.open_zarr(geopandas.read_parquet({clouds!r}).location[0])[\"variables\"]"
           if clouds else "")
    )


def _demo_cloud_masks(config: RasterflowConfig | None, verbose: bool) -> str | None:
    """Step 5, with the csmask extra: ukis-csmask's real weights on a real Sentinel-2 scene, offline."""
    import importlib.util

    from .engine.build_and_predict_mosaic_recipe import csmask

    console.print("\n[bold]5. predict_mosaic[/]: cloud and shadow masks by DLR's ukis-csmask (real weights, "
                  "from its wheel) on a Sentinel-2 L1C scene near Brandenburg an der Havel")
    if importlib.util.find_spec(csmask.PACKAGE) is None:
        console.print(f"   skipped: pip install 'rasterflow[{csmask.EXTRA}]' to run it (nothing downloads)")
        return None
    scene = _step("build_gti_mosaic", config, verbose, gti=sample_path("s2_l1c_brandenburg", "tiles.parquet"),
                  aoi=sample_path("s2_l1c_brandenburg", "aoi.parquet"), bands=list(csmask.BANDS),
                  location_field="location", crs_epsg=32633, xy_chunksize=256)  # the scene's own 20 m grid
    model = str(csmask.local_model(6, "l1c"))  # top-of-atmosphere graph: the scene is Level-1C
    masks = _step("predict_mosaic", config, verbose, store=scene, model_path=model,
                  patch_size=csmask.PATCH_SIZE, clip_size=csmask.CLIP_SIZE, device="auto",
                  features=list(csmask.BANDS), labels=list(csmask.LABELS),
                  actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH, max_batch_size=8,
                  merge_mode=MergeModeEnum.TUKEY)
    import numpy as np

    from .engine.index import read_index
    from .engine.store import open_store

    probabilities = open_store(read_index(masks).location[0])["variables"].values[0]
    classes = probabilities.argmax(axis=0)[~np.isnan(probabilities).any(axis=0)]
    shares = ", ".join(f"{name} {(classes == k).mean():.1%}" for k, name in enumerate(csmask.LABELS))
    console.print(f"   pixels: {shares}")
    return masks


# ---------------------------------------------------------------- seeing the results, local servers


def _fail(error: RasterflowError | str) -> typer.Exit:
    """One line for a user's mistake (no traceback); exit status 2, like a wrong option."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(' '.join(str(error).split()))}", highlight=False,
                  soft_wrap=True)
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


server_app = typer.Typer(no_args_is_help=True, help="A Prefect server, the map viewer and a warm runner "
                         "in the background, reused by every call (start, stop, status).\n\n"
                         "Example: rasterflow server start")
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start(
    config: Path | None = typer.Option(None, help="rasterflow.yaml (server_port, view_port, runner_port)."),
) -> None:
    """Start a Prefect server, the viewer and a warm runner in the background (127.0.0.1).

    Calls from any process then run on that server (its UI keeps every run)
    instead of starting an embedded one, and commands run in the warm runner,
    which has imported everything once: a call served from the cache returns
    in about a second instead of ~8 s. Stop them with `rasterflow server stop`.

    Example: rasterflow server start
    """
    from concurrent.futures import ThreadPoolExecutor

    from . import services
    from .config import load_config

    try:
        settings = load_config(config)
        api = f"http://{services.LOOPBACK}:{settings.server_port}/api"
        starts = {services.PREFECT: (settings.server_port,),
                  services.VIEWER: (settings.view_port, str(config) if config else None)}
        if services.can_fork():
            starts[services.RUNNER] = (settings.runner_port, None, api)
        with ThreadPoolExecutor(len(starts)) as pool:  # the three start-ups overlap
            futures = {name: pool.submit(services.start, name, *args) for name, args in starts.items()}
            states = {name: future.result() for name, future in futures.items()}
    except RasterflowError as exc:
        raise _fail(exc) from None
    shown = f"Prefect UI: {states[services.PREFECT]['url']}\nviewer:     {states[services.VIEWER]['url']}/map"
    if services.RUNNER in states:
        shown += f"\nrunner:     {states[services.RUNNER]['url']}"
    Console(soft_wrap=True).print(shown)


@server_app.command("stop")
def server_stop() -> None:
    """Stop the background servers.

    Example: rasterflow server stop
    """
    from . import services

    for name in reversed(services.NAMES):
        Console().print(f"{name}: {'stopped' if services.stop(name) else 'was not running'}")


@server_app.command("status")
def server_status() -> None:
    """Say whether the background servers run, and where.

    Example: rasterflow server status
    """
    from . import services

    for name in services.NAMES:
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
