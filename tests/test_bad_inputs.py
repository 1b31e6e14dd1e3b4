"""The bad-input corpus: one mistake per call, as a new user makes them, across every workflow,
the config and the command line.

Each case must fail with a ``RasterflowError`` subclass whose message names the
parameter (and never a credential), before a flow run exists (the Prefect API
holds no new run), with nothing written under the output root, no code run
from a query or a model (a tripwire file stays absent), in seconds. The inputs
are real: the bundled Landsat sample, stores and a pyramid built from it by
the engine, models exported with torch.export, pickles, truncated COGs.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.errors
from predict_fixtures import SHIPPED_MODEL, Fcn, Tripwire, build_store, export, torch_save_bytes
from shapely.geometry import LineString, Point, Polygon, box
from typer.testing import CliRunner

from rasterflow import RasterflowClient
from rasterflow.cli import app
from rasterflow.config import RasterflowConfig, load_config, parse_config
from rasterflow.engine.build_and_predict_mosaic_recipe.recipes import recipe_spec
from rasterflow.engine.build_gti_mosaic.plan import plan_gti_mosaic
from rasterflow.engine.build_zarr_multiscales.plan import plan_multiscales
from rasterflow.engine.build_zarr_multiscales.stages import build_pyramids
from rasterflow.engine.store import create_store
from rasterflow.enums import ModelRecipes
from rasterflow.errors import ConfigError, InvalidParameterError, RasterflowError
from rasterflow.params import BuildGtiMosaicParams, BuildZarrMultiscalesParams

pytestmark = pytest.mark.usefixtures("prefect_server")

SAMPLE = Path(__file__).resolve().parents[1] / "rasterflow" / "samples" / "landsat8_iguazu"
SECRET = "hunter2-canary"
# Seconds one refusal may take on a loaded 2-core machine: a check, never a run.
MAX_SECONDS = 30.0
TIMES: dict[str, float] = {}


@dataclass(frozen=True)
class Inputs:
    """Real inputs, each with one thing wrong, made once for the module."""

    root: Path
    tripwire: Path  # created if a query or a model ran code

    def __getattr__(self, name: str) -> str:  # inputs by name: inputs.point_aoi -> root/point_aoi.*
        found = sorted(self.root.glob(f"{name}.*")) or sorted(self.root.glob(name))
        if not found:
            raise AttributeError(name)
        return str(found[0])


def _frame(geoms: list, crs: str | None = "EPSG:32621", **columns) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(columns, geometry=geoms, crs=crs)


def _write_aois(root: Path) -> None:
    x0, y0 = 740_000, -2_805_000
    square = box(x0, y0, x0 + 5000, y0 + 5000)
    _frame([Point(x0, y0)]).to_file(root / "point_aoi.geojson")
    _frame([LineString([(x0, y0), (x0 + 5000, y0 + 5000)])]).to_file(root / "line_aoi.geojson")
    bowtie = Polygon([(x0, y0), (x0 + 5000, y0 + 5000), (x0 + 5000, y0), (x0, y0 + 5000)])
    _frame([bowtie]).to_file(root / "bowtie_aoi.geojson")
    _frame([square, None]).to_parquet(root / "empty_row_aoi.parquet")
    _frame([square, box(0, 0, 5000, 5000)]).to_file(root / "far_row_aoi.geojson")
    _frame([box(0, 0, 5000, 5000)]).to_file(root / "outside_aoi.geojson")
    _frame([square], crs=None).to_parquet(root / "no_crs_aoi.parquet")
    _frame([square]).to_file(root / "good_aoi.geojson")


def _write_indexes(root: Path, tripwire: Path) -> None:
    index = gpd.read_parquet(SAMPLE / "tiles.parquet")
    index["location"] = [str(SAMPLE / loc) for loc in index.location]
    index["id"] = range(len(index))
    index["name"] = [f"tile-{n}" for n in range(len(index))]
    index.to_parquet(root / "extra_columns.parquet")
    truncated = index.copy()
    data = (SAMPLE / index.location[0]).read_bytes()
    (root / "truncated.tif").write_bytes(data[: len(data) * 2 // 3])
    truncated.loc[0, "location"] = str(root / "truncated.tif")
    truncated.to_parquet(root / "truncated_tile.parquet")
    with rasterio.open(index.location[1]) as src:
        profile = src.profile | {"crs": None, "transform": rasterio.Affine.identity()}
        pixels = src.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # the point of this tile
        with rasterio.open(root / "no_crs.tif", "w", **profile) as dst:
            dst.write(pixels)
    no_crs = index.copy()
    no_crs.loc[1, "location"] = str(root / "no_crs.tif")
    no_crs.to_parquet(root / "no_crs_tile.parquet")
    (root / "not_vector.parquet").write_bytes(b"PAR1 not really")


def _write_models(root: Path, tripwire: Path) -> None:
    (root / "pickled.pt").write_bytes(torch_save_bytes({"weights": Tripwire(tripwire)}))
    (root / "random.pt2").write_bytes(np.random.default_rng(0).bytes(4096))
    export(Fcn(3, 3), root / "three_outputs.pt2", channels=3)
    export(Fcn(4, 2), root / "four_inputs.pt2", channels=4)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("bad-inputs")
    tripwire = root / "TRIPWIRE-code-ran"
    _write_aois(root)
    _write_indexes(root, tripwire)
    _write_models(root, tripwire)
    stores = root / "stores"
    store = build_store(stores, "landsat8_iguazu", 32621, ["blue", "green", "red"], chunk=64,
                        aoi=str(root / "good_aoi.geojson"))  # 5 km: a small store is as wrong as a big one
    shutil.copytree(store, root / "mosaic.zarr")
    plan = plan_multiscales(BuildZarrMultiscalesParams(store=str(root / "mosaic.zarr")), str(stores))
    build_pyramids(plan.pyramids, plan.provenance)
    shutil.copytree(plan.pyramids[0].uri, root / "pyramid.zarr")
    params = BuildGtiMosaicParams(gti=str(SAMPLE / "tiles.parquet"), aoi=str(SAMPLE / "aoi.geojson"),
                                  bands=["red"], location_field="location", crs_epsg=32621)
    unfinished = plan_gti_mosaic(params, str(stores)).stores[0]
    create_store(unfinished.spec, unfinished.fingerprint, {})  # never committed: status 'writing'
    shutil.copytree(unfinished.spec.uri, root / "unfinished.zarr")
    (root / "a_file").write_text("not a folder")
    (root / "malformed.yaml").write_text(f"storage_options:\n  s3: {{secret: '{SECRET}\n")
    return Inputs(root=root, tripwire=tripwire)


# ---------------------------------------------------------------- the calls

Call = Callable[[RasterflowClient, Inputs], Any]


def workflow(method: str, valid: Callable[[Inputs], dict[str, Any]]) -> Callable[..., Call]:
    """Cases of one client method: a valid call (``valid``) with ``overrides`` as the one mistake."""
    def with_overrides(**overrides) -> Call:
        def call(client: RasterflowClient, i: Inputs):
            return getattr(client, method)(**(valid(i) | _resolve(overrides, i)))
        call.family = method  # type: ignore[attr-defined]
        return call
    return with_overrides


gti = workflow("build_gti_mosaic", lambda i: dict(
    gti=str(SAMPLE / "tiles.parquet"), aoi=str(SAMPLE / "aoi.geojson"), bands=["red"],
    location_field="location", crs_epsg=32621, resolution=60.0, xy_chunksize=256, shard_size_bytes=2_000_000))
mosaic = workflow("build_mosaic", lambda i: dict(
    datasets=["s2med_harvest"], aoi=str(SAMPLE / "aoi.geojson"), start="2021-01-01", end="2021-12-31"))
predict = workflow("predict_mosaic", lambda i: dict(
    store=i.mosaic, model_path=str(SHIPPED_MODEL), patch_size=64, clip_size=8, device="cpu",
    features=["blue", "green", "red"], labels=["land", "water"], actor="semantic_segmentation_pytorch",
    max_batch_size=4, merge_mode="clip"))
vectorize = workflow("vectorize_mosaic", lambda i: dict(store=i.mosaic, features=["red"], threshold=1000.0))
pyramid = workflow("build_zarr_multiscales", lambda i: dict(store=i.mosaic))
_recipe = workflow("build_and_predict_mosaic_recipe", lambda i: dict(
    aoi=str(SAMPLE / "aoi.geojson"), start="2021-01-01", end="2021-12-31", model_recipe="ftw"))


def recipe(models: dict[str, str] | None = None, **overrides) -> Call:
    """The recipe call, offline: its weights are the bundled stand-in unless ``models`` says otherwise."""
    def call(client: RasterflowClient, i: Inputs):
        weights = _resolve(models or {"ftw": recipe_spec(ModelRecipes.FTW).standin}, i)
        client = RasterflowClient(client.config.model_copy(update={"recipe_models": weights}))
        return _recipe(**overrides)(client, i)
    call.family = "build_and_predict_mosaic_recipe"  # type: ignore[attr-defined]
    return call


def config(**values) -> Call:
    def call(client: RasterflowClient, i: Inputs):
        return parse_config(_resolve(values, i))
    call.family = "config"  # type: ignore[attr-defined]
    return call


def config_file(name: str) -> Call:
    def call(client: RasterflowClient, i: Inputs):
        return load_config(getattr(i, name))
    call.family = "config"  # type: ignore[attr-defined]
    return call


def with_config(call: Call, **values) -> Call:
    """``call`` by a client whose config also says ``values``."""
    def run(client: RasterflowClient, i: Inputs):
        return call(RasterflowClient(client.config.model_copy(update=_resolve(values, i))), i)
    return run


def without_an_api(call: Call) -> Call:
    """``call`` in deployment mode while PREFECT_API_URL names a port nobody listens on."""
    def run(client: RasterflowClient, i: Inputs):
        from loopback import free_port
        from prefect.settings import PREFECT_API_URL, temporary_settings

        deployed = RasterflowClient(client.config.model_copy(update={"execution": "deployment"}))
        with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
            return call(deployed, i)
    return run


class CliFailed(RasterflowError):
    """The command exited 2 with this one line (what a shell user reads)."""


def cli(*args: str) -> Call:
    def call(client: RasterflowClient, i: Inputs):
        config_path = i.root / f"cli-{abs(hash(args))}.yaml"
        config_path.write_text(f"output_uri: {client.config.output_uri}\n")
        argv = [a.format(i=i, sample=SAMPLE) for a in args]
        if argv[0] != "deploy":
            argv += ["--config", str(config_path)] if "--config" not in argv else []
        result = CliRunner().invoke(app, argv)
        if result.exit_code != 2 or not isinstance(result.exception, (SystemExit, type(None))):
            raise AssertionError(f"exit {result.exit_code}: {result.output}")
        raise CliFailed(" ".join(line.strip(" │") for line in result.output.splitlines() if line.strip()))
    call.family = "cli"  # type: ignore[attr-defined]
    return call


def _resolve(values: dict[str, Any], i: Inputs) -> dict[str, Any]:
    """``"@name"`` stands for the input file ``name`` (made by the fixture)."""
    def one(value):
        if isinstance(value, str) and value.startswith("@"):
            return getattr(i, value[1:])
        if isinstance(value, dict):
            return {k: one(v) for k, v in value.items()}
        return value
    return {k: one(v) for k, v in values.items()}


QUERY_RUNS_CODE = "__import__('os').system('touch {tripwire}') == 0"


@dataclass(frozen=True)
class Case:
    id: str
    param: str  # the parameter the message must name
    call: Call
    error: type[RasterflowError] = InvalidParameterError
    secret: bool = False  # SECRET was given: the message must not show it


CASES = [
    # ------------------------------------------------ build_gti_mosaic: AOI
    Case("aoi-missing", "aoi", gti(aoi="/nonexistent/aoi.geojson")),
    Case("aoi-not-vector", "aoi", gti(aoi=str(SAMPLE / "LC08_224078_20200518_r0c0.tif"))),
    Case("aoi-no-crs", "aoi", gti(aoi="@no_crs_aoi")),
    Case("aoi-point", "aoi", gti(aoi="@point_aoi")),
    Case("aoi-line", "aoi", gti(aoi="@line_aoi")),
    Case("aoi-self-intersecting", "aoi", gti(aoi="@bowtie_aoi")),
    Case("aoi-empty-row", "aoi", gti(aoi="@empty_row_aoi")),
    Case("aoi-row-outside-tiles", "aoi", gti(aoi="@far_row_aoi")),
    Case("aoi-outside-tiles", "aoi", gti(aoi="@outside_aoi")),
    Case("aoi-unknown-scheme", "aoi", gti(aoi="nosuchscheme://bucket/aoi.geojson")),
    # ------------------------------------------------ build_gti_mosaic: index and tiles
    Case("gti-missing", "gti", gti(gti="/nonexistent/tiles.parquet")),
    Case("gti-not-vector", "gti", gti(gti="@not_vector")),
    Case("gti-truncated-cog", "gti", gti(gti="@truncated_tile")),
    Case("gti-tile-without-crs", "gti", gti(gti="@no_crs_tile")),
    Case("location-field-missing", "location_field", gti(location_field="path")),
    Case("location-field-numbers", "location_field", gti(gti="@extra_columns", location_field="id")),
    Case("location-field-not-paths", "location_field", gti(gti="@extra_columns", location_field="name")),
    Case("bands-not-in-tiles", "bands", gti(bands=["nir"])),
    Case("bands-empty", "bands", gti(bands=[])),
    Case("bands-repeated", "bands", gti(bands=["red", "red"])),
    Case("time-column-missing", "time_column", gti(time_column="date")),
    Case("time-column-not-dates", "time_column", gti(time_column="location")),
    Case("sort-field-missing", "sort_field", gti(sort_field="quality")),
    # ------------------------------------------------ build_gti_mosaic: query
    Case("query-syntax", "query", gti(query="cloud_cover <")),
    Case("query-runs-code", "query",
         lambda c, i: gti(query=QUERY_RUNS_CODE.format(tripwire=i.tripwire))(c, i)),
    Case("query-attribute", "query", gti(query="location.__class__ == 1")),
    Case("query-at-variable", "query", gti(query="cloud_cover < @limit")),
    Case("query-deeply-nested", "query", gti(query="not " * 5000 + "cloud_cover")),
    Case("query-unknown-column", "query", gti(query="clouds < 10")),
    Case("query-selects-nothing", "query", gti(query="cloud_cover > 99")),
    # ------------------------------------------------ build_gti_mosaic: grid, CRS, nodata
    Case("crs-unknown", "crs_epsg", gti(crs_epsg=99999)),
    Case("crs-vertical", "crs_epsg", gti(crs_epsg=5703)),
    Case("resolution-negative", "resolution", gti(resolution=-30.0)),
    Case("resolution-infinite", "resolution", gti(resolution=math.inf)),
    Case("resolution-nan", "resolution", gti(resolution=math.nan)),
    Case("resolution-metres-on-degrees", "resolution", gti(crs_epsg=4326, resolution=30.0)),
    Case("resolution-grid-too-big", "resolution", gti(resolution=0.001)),
    Case("resolution-bigger-than-aoi", "resolution", gti(resolution=1e6)),
    Case("chunk-too-small", "xy_chunksize", gti(xy_chunksize=8)),
    Case("chunk-too-big", "xy_chunksize", gti(xy_chunksize=100_000)),
    Case("shard-zero", "shard_size_bytes", gti(shard_size_bytes=0)),
    Case("shard-below-one-chunk", "shard_size_bytes", gti(shard_size_bytes=1000)),
    Case("shard-too-many-partitions", "shard_size_bytes", gti(resolution=0.1, shard_size_bytes=131_072)),
    Case("nodata-out-of-dtype", "nodata", gti(nodata=-5.0)),
    Case("nodata-huge", "nodata", gti(nodata=1e10)),
    Case("resampling-unknown", "resampling", gti(resampling="cubicx")),
    Case("envs-not-strings", "envs", gti(envs={"AWS_SECRET_ACCESS_KEY": SECRET, "GDAL_CACHEMAX": 512}),
         secret=True),
    # ------------------------------------------------ build_mosaic
    Case("datasets-unknown", "datasets", mosaic(datasets=["sentinel9"])),
    Case("datasets-empty", "datasets", mosaic(datasets=[])),
    Case("datasets-repeated", "datasets", mosaic(datasets=["s2med_harvest", "s2med_harvest"])),
    Case("dates-reversed", "end", mosaic(start="2021-06-01", end="2021-01-01")),
    Case("date-invalid", "start", mosaic(start="2021-13-01")),
    Case("mosaic-aoi-missing", "aoi", mosaic(aoi="/nonexistent/aoi.geojson")),
    Case("mosaic-aoi-point", "aoi", mosaic(aoi="@point_aoi")),
    Case("mosaic-crs-unknown", "crs_epsg", mosaic(crs_epsg=1)),
    # ------------------------------------------------ predict_mosaic
    Case("store-missing", "store", predict(store="/nonexistent/store.zarr")),
    Case("store-unfinished", "store", predict(store="@unfinished.zarr")),
    Case("store-is-a-pyramid", "store", predict(store="@pyramid.zarr")),
    Case("store-is-not-an-index", "store", predict(store=str(SAMPLE / "aoi.parquet"))),
    Case("features-not-in-store", "features", predict(features=["nir", "red", "green"])),
    Case("model-missing", "model_path", predict(model_path="/nonexistent/model.pt2")),
    Case("model-pickled", "model_path", predict(model_path="@pickled")),
    Case("model-random-bytes", "model_path", predict(model_path="@random")),
    Case("model-wrong-output-channels", "labels", predict(model_path="@three_outputs")),
    Case("model-wrong-input-channels", "features", predict(model_path="@four_inputs")),
    Case("patch-too-small", "patch_size", predict(patch_size=4)),
    Case("clip-too-big", "clip_size", predict(clip_size=32)),
    Case("device-unknown", "device", predict(device="tpu")),
    Case("actor-unknown", "actor", predict(actor="classification")),
    Case("merge-mode-unknown", "merge_mode", predict(merge_mode="max")),
    Case("select-labels-unknown", "select_labels", predict(select_labels=["cloud"])),
    Case("batch-zero", "max_batch_size", predict(max_batch_size=0)),
    Case("change-detection-one-slice", "store",
         predict(actor="semantic_segmentation_change_detection_pytorch")),
    # ------------------------------------------------ vectorize_mosaic
    Case("vectorize-features-missing", "features", vectorize(features=["water"])),
    Case("vectorize-threshold-nan", "threshold", vectorize(threshold=math.nan)),
    Case("vectorize-config-unknown-key", "vectorize_config", vectorize(vectorize_config={"min_areaa": 5})),
    Case("vectorize-connectivity", "vectorize_config", vectorize(vectorize_config={"connectivity": 6})),
    Case("vectorize-crs-unknown", "vector_crs", vectorize(vector_crs="EPSG:99999")),
    Case("vectorize-store-pyramid", "store", vectorize(store="@pyramid.zarr")),
    Case("vectorize-block-zero", "xy_block_multiplier", vectorize(xy_block_multiplier=0)),
    # ------------------------------------------------ build_zarr_multiscales
    Case("levels-zero", "levels", pyramid(levels=0)),
    Case("levels-too-many", "levels", pyramid(levels=40)),
    Case("resampling-cubic", "resampling", pyramid(resampling="cubic")),
    Case("pyramid-store-missing", "store", pyramid(store="/nonexistent/store.zarr")),
    # ------------------------------------------------ build_and_predict_mosaic_recipe
    Case("recipe-unknown", "model_recipe", recipe(model_recipe="fields")),
    Case("recipe-model-pickled", "model_path", recipe(models={"ftw": "@pickled"})),
    Case("recipe-model-wrong-contract", "model_path", recipe(models={"ftw": str(SHIPPED_MODEL)})),
    Case("recipe-model-missing", "model_recipe", recipe(models={"ftw": "/nonexistent/ftw.pt2"})),
    Case("recipe-aoi-point", "aoi", recipe(aoi="@point_aoi")),
    Case("recipe-dates-reversed", "end", recipe(start="2022-01-01", end="2021-01-01")),
    Case("recipe-crs-unknown", "crs_epsg", recipe(crs_epsg=123456)),
    # ------------------------------------------------ the config
    Case("config-unknown-key", "outptu_uri", config(outptu_uri="/tmp/x"), ConfigError),
    Case("config-output-scheme", "output_uri", config(output_uri="nosuchscheme://b/out"), ConfigError),
    Case("config-output-under-a-file", "output_uri",
         lambda c, i: with_config(gti(), output_uri=str(i.root / "a_file" / "out"))(c, i)),
    Case("config-storage-options-not-a-mapping", "storage_options",
         config(storage_options={"s3": SECRET}), ConfigError, secret=True),
    Case("config-malformed-yaml", "line 3", config_file("malformed"), ConfigError, secret=True),
    Case("config-retries-negative", "retries", config(retries=-1), ConfigError),
    Case("config-execution-unknown", "execution", config(execution="cloud"), ConfigError),
    Case("config-task-runner-unknown", "task_runner", config(task_runner="ray"), ConfigError),
    Case("config-max-workers-zero", "max_workers", config(max_workers=0), ConfigError),
    Case("config-work-pool-unknown-size", "work_pools", config(work_pools={"huge": "p"}), ConfigError),
    Case("config-dataset-unknown", "datasets", config(datasets={"landsat9": {"stac_url": "x"}}), ConfigError),
    Case("config-deployment-without-an-api", "PREFECT_API_URL", lambda c, i: without_an_api(gti())(c, i),
         RasterflowError),
    Case("config-relative-output-in-deployment", "output_uri",
         lambda c, i: gti()(RasterflowClient(RasterflowConfig(execution="deployment", output_uri="out")), i)),
    # ------------------------------------------------ the command line
    Case("cli-band-not-in-tiles", "bands", cli("build-gti-mosaic", "{sample}/tiles.parquet",
                                               "{sample}/aoi.geojson", "-b", "nir", "--location-field",
                                               "location"), CliFailed),
    Case("cli-env-not-key-value", "--env", cli("build-gti-mosaic", "{sample}/tiles.parquet",
                                               "{sample}/aoi.geojson", "-b", "red", "--location-field",
                                               "location", "--env", "NOEQUALS"), CliFailed),
    Case("cli-resampling-pairs", "--resampling",
         cli("build-zarr-multiscales", "{i.mosaic}", "-r", "red:mode"), CliFailed),
    Case("cli-vectorize-config-pairs", "--vectorize-config",
         cli("vectorize-mosaic", "{i.mosaic}", "-f", "red", "--threshold", "1", "--vectorize-config", "s"),
         CliFailed),
    Case("cli-missing-config-file", "missing.yaml", cli("build-zarr-multiscales", "{i.mosaic}", "--config",
                                                        "/nonexistent/missing.yaml"), CliFailed),
    Case("cli-missing-store", "store", cli("build-zarr-multiscales", "/nonexistent/store.zarr"), CliFailed),
    Case("cli-deploy-pool-type", "pool_type", cli("deploy", "--dry-run", "--pool-type", "ecs"), CliFailed),
    Case("cli-deploy-relative-output", "output_uri", cli("deploy", "--dry-run", "--output-uri", "out"),
         CliFailed),
]


def _flow_runs() -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.count_flow_runs()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_one_mistake_is_one_clear_error_before_a_run(case: Case, inputs: Inputs, tmp_path):
    out = tmp_path / "out"
    client = RasterflowClient(RasterflowConfig(output_uri=str(out), max_workers=1, retries=0))
    runs = _flow_runs()
    start = time.perf_counter()
    with pytest.raises(case.error) as raised:
        case.call(client, inputs)
    TIMES[case.id] = elapsed = time.perf_counter() - start
    message = str(raised.value)
    assert re.search(rf"(^|\W){re.escape(case.param)}($|\W)", message), message
    assert "Traceback" not in message and len(message) < 2000
    if case.secret:
        assert SECRET not in message and SECRET not in repr(raised.value.__dict__)
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
    assert not inputs.tripwire.exists(), "a query or a model ran code"
    assert _flow_runs() == runs, "a flow run was created"
    assert elapsed < MAX_SECONDS, f"{elapsed:.1f} s"


def test_the_corpus_is_broad_and_fast():
    """At least 50 cases over the six workflows, the config and the CLI; print where the time goes."""
    families = {getattr(c.call, "family", "other") for c in CASES}
    assert len(CASES) >= 50 and len({c.id for c in CASES}) == len(CASES)
    assert {"build_gti_mosaic", "build_mosaic", "predict_mosaic", "vectorize_mosaic",
            "build_zarr_multiscales", "build_and_predict_mosaic_recipe", "config", "cli"} <= families
    if TIMES:
        slowest = sorted(TIMES.items(), key=lambda kv: -kv[1])[:5]
        print(f"\nbad-input corpus: {len(TIMES)} cases, median {statistics.median(TIMES.values()):.2f} s, "
              f"max {max(TIMES.values()):.2f} s, load average {os.getloadavg()[0]:.1f}; slowest: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in slowest))
