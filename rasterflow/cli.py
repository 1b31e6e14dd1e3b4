"""The ``rasterflow`` command: one subcommand per client method, plus ``demo``.

Parameters mirror the client's; list parameters repeat (``--band red --band
green``) and ``--env KEY=VALUE`` fills ``envs``. Partition progress is shown as
it happens and a summary of what was written where at the end.
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .enums import (
    DatasetEnum, InferenceActorEnum, MergeModeEnum, ModelRecipes, ResamplingMethod, RuntimeEnum, VectorizeMethodEnum,
)
from .errors import RasterflowError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
console = Console(stderr=True)


class _ProgressHandler(logging.Handler):
    """Feeds ``rasterflow.progress`` log records into a rich progress bar."""

    def __init__(self, progress: Progress):
        super().__init__()
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        label, done, total = getattr(record, "label", None), getattr(record, "done", None), getattr(record, "total", None)
        if label is None or done is None:
            return
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=done)


def _client(config: Optional[Path], verbose: bool):
    if not verbose:
        # Quiet the console only; run logs still reach the Prefect API and UI.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from .client import RasterflowClient

    return RasterflowClient(config)


def _run_with_progress(call):
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
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


def _parse_envs(pairs: list[str]) -> dict[str, str] | None:
    envs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--env")
        envs[key] = value
    return envs or None


@app.command("build-gti-mosaic")
def build_gti_mosaic(
    gti: str = typer.Argument(..., help="Tile index (GeoParquet or any file geopandas reads)."),
    aoi: str = typer.Argument(..., help="Area of interest; one store per geometry."),
    band: list[str] = typer.Option(..., "--band", "-b", help="Band name (repeat, in output order)."),
    location_field: str = typer.Option(..., help="Index column with each tile's path or URL."),
    crs_epsg: int = typer.Option(3857, help="EPSG code of the output grid."),
    time_column: Optional[str] = typer.Option(None, help="Index column grouping tiles into time slices."),
    skip_xy_coords: bool = typer.Option(False, help="Write no x/y coordinate arrays."),
    xy_chunksize: int = typer.Option(512, help="Zarr chunk size in x and y (pixels)."),
    shard_size_bytes: int = typer.Option(3_500_000_000, help="Uncompressed size budget of one shard."),
    query: Optional[str] = typer.Option(None, help="Filter on index columns, pandas query syntax."),
    requester_pays: bool = typer.Option(False, help="Read tiles with requester-pays on."),
    env: list[str] = typer.Option([], "--env", help="KEY=VALUE for the reading tasks (repeat)."),
    sort_field: Optional[str] = typer.Option(None, help="Index column; highest value on top."),
    resampling: ResamplingMethod = typer.Option(ResamplingMethod.NEAREST, help="GDAL warp kernel."),
    resolution: Optional[float] = typer.Option(None, help="Pixel size in CRS units (default: native)."),
    nodata: Optional[float] = typer.Option(None, help="Nodata value (default: the tiles')."),
    runtime: RuntimeEnum = typer.Option(RuntimeEnum.SMALL, help="Runtime size."),
    config: Optional[Path] = typer.Option(None, help="rasterflow.yaml to use."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
) -> None:
    """Mosaic the tiles of a GTI tile index over an AOI into sharded Zarr v3 stores."""
    client = _client(config, verbose)
    index_uri = _run_with_progress(lambda: client.build_gti_mosaic(
        gti, aoi, band, location_field, crs_epsg=crs_epsg, time_column=time_column,
        skip_xy_coords=skip_xy_coords, xy_chunksize=xy_chunksize, shard_size_bytes=shard_size_bytes,
        query=query, requester_pays=requester_pays, envs=_parse_envs(env), sort_field=sort_field,
        resampling=resampling, resolution=resolution, nodata=nodata, runtime=runtime,
    ))
    _summary(index_uri)


@app.command("build-mosaic")
def build_mosaic(
    aoi: str = typer.Argument(..., help="Area of interest; one store per geometry."),
    dataset: list[DatasetEnum] = typer.Option(..., "--dataset", "-d", help="Named dataset (repeat; one grid)."),
    start: str = typer.Option(..., help="First day, YYYY-MM-DD."),
    end: str = typer.Option(..., help="Last day, YYYY-MM-DD (one time slice per calendar year)."),
    crs_epsg: int = typer.Option(3857, help="EPSG code of the output grid."),
    xy_chunksize: int = typer.Option(512, help="Zarr chunk size in x and y (pixels)."),
    shard_size_bytes: int = typer.Option(3_500_000_000, help="Uncompressed size budget of one shard."),
    resolution: Optional[float] = typer.Option(None, help="Pixel size in CRS units (default: finest native)."),
    skip_xy_coords: bool = typer.Option(False, help="Write no x/y coordinate arrays."),
    env: list[str] = typer.Option([], "--env", help="KEY=VALUE for the reading tasks (repeat)."),
    runtime: RuntimeEnum = typer.Option(RuntimeEnum.SMALL, help="Runtime size."),
    config: Optional[Path] = typer.Option(None, help="rasterflow.yaml to use."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
) -> None:
    """Composite named datasets (Sentinel-2 medians, NAIP) from STAC catalogs into Zarr v3 stores."""
    client = _client(config, verbose)
    index_uri = _run_with_progress(lambda: client.build_mosaic(
        dataset, aoi, start, end, crs_epsg=crs_epsg, xy_chunksize=xy_chunksize, shard_size_bytes=shard_size_bytes,
        envs=_parse_envs(env), resolution=resolution, skip_xy_coords=skip_xy_coords, runtime=runtime,
    ))
    _summary(index_uri)


@app.command("build-and-predict-mosaic-recipe")
def build_and_predict_mosaic_recipe(
    aoi: str = typer.Argument(..., help="Area of interest; one prediction store per geometry."),
    recipe: ModelRecipes = typer.Option(..., "--recipe", "-m", help="Model recipe."),
    start: str = typer.Option(..., help="First day, YYYY-MM-DD."),
    end: str = typer.Option(..., help="Last day, YYYY-MM-DD."),
    crs_epsg: Optional[int] = typer.Option(None, help="EPSG code of the grid (default: native UTM zone)."),
    env: list[str] = typer.Option([], "--env", help="KEY=VALUE for the reading tasks (repeat)."),
    runtime: RuntimeEnum = typer.Option(RuntimeEnum.SMALL, help="Runtime size."),
    config: Optional[Path] = typer.Option(None, help="rasterflow.yaml to use (recipe_models, datasets)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
) -> None:
    """Build a recipe's mosaic over an AOI and run its model: predictions from an area and dates."""
    client = _client(config, verbose)
    index_uri = _run_with_progress(lambda: client.build_and_predict_mosaic_recipe(
        aoi, start, end, recipe, crs_epsg=crs_epsg, envs=_parse_envs(env), runtime=runtime,
    ))
    _summary(index_uri)


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


@app.command("build-zarr-multiscales")
def build_zarr_multiscales(
    store: str = typer.Argument(..., help="Zarr store, or index GeoParquet of stores (one output per row)."),
    levels: Optional[int] = typer.Option(None, help="Levels in all, level 0 included (default: down to one chunk)."),
    resampling: list[str] = typer.Option(
        [], "--resampling", "-r", help="METHOD for all bands, or BAND=METHOD (repeat); average, near, mode."
    ),
    env: list[str] = typer.Option([], "--env", help="KEY=VALUE for the reading tasks (repeat)."),
    runtime: RuntimeEnum = typer.Option(RuntimeEnum.SMALL, help="Runtime size."),
    config: Optional[Path] = typer.Option(None, help="rasterflow.yaml to use."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
) -> None:
    """Add overview levels and band statistics to a store, as a new multiscales Zarr store."""
    client = _client(config, verbose)
    index_uri = _run_with_progress(lambda: client.build_zarr_multiscales(
        store, levels=levels, resampling=_parse_resampling(resampling), runtime=runtime, envs=_parse_envs(env),
    ))
    _summary(index_uri)


@app.command("predict-mosaic")
def predict_mosaic(
    store: str = typer.Argument(..., help="Mosaic store URI, or an index GeoParquet (every row is predicted)."),
    model_path: str = typer.Option(..., help="torch.export .pt2 or TorchScript archive (path or fsspec URL)."),
    patch_size: int = typer.Option(..., help="Patch side in pixels."),
    clip_size: int = typer.Option(..., help="Pixels dropped from each patch edge (>= the model's receptive-field radius)."),
    feature: list[str] = typer.Option(..., "--feature", "-f", help="Input band, in model-channel order (repeat)."),
    label: list[str] = typer.Option(..., "--label", "-l", help="Output label, one per model channel (repeat)."),
    actor: InferenceActorEnum = typer.Option(..., help="How outputs are read: softmax, raw, or change detection."),
    max_batch_size: int = typer.Option(..., help="Patches per forward pass."),
    merge_mode: MergeModeEnum = typer.Option(..., help="clip or weighted_average."),
    device: str = typer.Option("auto", help="cpu, cuda[:N], or auto."),
    select_label: list[str] = typer.Option([], "--select-label", help="Write only these labels (repeat)."),
    xy_block_multiplier: int = typer.Option(4, help="Input chunks per block side (one task)."),
    output_xy_chunksize: Optional[int] = typer.Option(None, help="Output chunk size (default: the input's)."),
    env: list[str] = typer.Option([], "--env", help="KEY=VALUE for the tasks (repeat)."),
    runtime: RuntimeEnum = typer.Option(RuntimeEnum.SMALL, help="Runtime size."),
    config: Optional[Path] = typer.Option(None, help="rasterflow.yaml to use."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
) -> None:
    """Run a PyTorch model over mosaic stores into prediction stores (one band per label)."""
    client = _client(config, verbose)
    index_uri = _run_with_progress(lambda: client.predict_mosaic(
        store, model_path, patch_size, clip_size, device, feature, label, actor, max_batch_size, merge_mode,
        select_labels=select_label or None, xy_block_multiplier=xy_block_multiplier,
        output_xy_chunksize=output_xy_chunksize, runtime=runtime, envs=_parse_envs(env),
    ))
    _summary(index_uri)


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


@app.command("vectorize-mosaic")
def vectorize_mosaic(
    store: str = typer.Argument(..., help="Store URI, or an index GeoParquet (every row is vectorized)."),
    feature: list[str] = typer.Option(..., "--feature", "-f", help="Band to polygonize (repeat); its name is the label."),
    threshold: float = typer.Option(..., help="Pixels with value >= threshold are foreground (nodata never)."),
    vectorize_method: VectorizeMethodEnum = typer.Option(
        VectorizeMethodEnum.SEMANTIC_SEGMENTATION_RASTERIO, help="Vectorizer."),
    vectorize_config: list[str] = typer.Option(
        [], "--vectorize-config", help="KEY=VALUE (repeat): stats, connectivity (4|8), min_area, simplify_tolerance."),
    xy_block_multiplier: int = typer.Option(4, help="Store chunks per block side (one task)."),
    vector_crs: str = typer.Option("EPSG:4326", help="CRS of the polygons; 'none' keeps the store's."),
    env: list[str] = typer.Option([], "--env", help="KEY=VALUE for the tasks (repeat)."),
    runtime: RuntimeEnum = typer.Option(RuntimeEnum.SMALL, help="Runtime size."),
    config: Optional[Path] = typer.Option(None, help="rasterflow.yaml to use."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
) -> None:
    """Threshold store bands into polygons (exact across block seams), as one GeoParquet."""
    client = _client(config, verbose)
    uri = _run_with_progress(lambda: client.vectorize_mosaic(
        store, feature, threshold, vectorize_method=vectorize_method,
        vectorize_config=_parse_vectorize_config(vectorize_config), xy_block_multiplier=xy_block_multiplier,
        vector_crs=None if vector_crs.lower() == "none" else vector_crs, runtime=runtime, envs=_parse_envs(env),
    ))
    _vector_summary(uri)


@app.command()
def deploy(
    pool_type: str = typer.Option("process", help="Work pool type: process, docker or kubernetes."),
    image: str = typer.Option("rasterflow:latest", help="Worker image (docker and kubernetes pools)."),
    runtime: list[RuntimeEnum] = typer.Option([], "--runtime", "-r", help="Sizes to deploy (repeat; default all)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be registered; change nothing."),
    config: Optional[Path] = typer.Option(None, help="rasterflow.yaml to use (its work_pools names)."),
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
    output: Optional[Path] = typer.Option(None, help="Output root (default: the config's output_uri)."),
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
        gti=sample_path("landsat8_iguazu", "tiles.parquet"), aoi=sample_path("landsat8_iguazu", "aoi.geojson"),
        bands=["red", "green", "blue"], location_field="location", xy_chunksize=256,
        shard_size_bytes=4_000_000,
    ))
    _summary(mosaic)

    console.print("\n[bold]2. predict_mosaic[/]: the shipped water/land model (a stand-in trained on this sample)")
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
