"""rasterflow.yaml: where outputs go and how flows run.

Looked up in this order: the file named by ``RASTERFLOW_CONFIG_FILE``, then
``~/.config/rasterflow.yaml``, then built-in defaults that work offline (outputs
under ``./rasterflow-output``, Prefect's embedded server, a thread pool). Unknown
keys are errors: a typo in a config file should not silently run with defaults.
``RASTERFLOW_OUTPUT_URI``, when set, replaces ``output_uri`` (what
``rasterflow deploy --output-uri`` sets for a work pool's runs).

Keys
----
output_uri       Root URI of every output (local path, file://, s3://, memory://). A relative
                 path is resolved against the current folder; a deployment run refuses one
                 (a worker's run folder is temporary): give it an absolute location.
storage_options  fsspec options per URI scheme, e.g. ``{s3: {endpoint_url: ...}}``.
                 Never logged or written to provenance.
execution        ``local``: flows run in the calling process. ``deployment``: each call
                 runs deployment ``<flow>/<runtime>`` on that size's work pool (see
                 ``rasterflow deploy``) and waits for it, unless ``wait=False``.
task_runner      ``threads`` (default) or ``dask``.
dask_address     Scheduler address for ``dask``; None starts a local cluster.
max_workers      Threads (or local Dask workers), and the threads a task runs its blocks
                 on; None = the CPUs this process may use.
task_pixels      Pixels of work in one predict-mosaic or vectorize-mosaic task (default
                 2**28 = 268,435,456: 64 blocks of 2048 px). A task takes a square group
                 of neighbouring blocks holding about this many pixels, fewer when a job
                 would otherwise leave Dask workers idle; its blocks run side by side on
                 its worker's cores. Larger: fewer task runs (a continental job stays in
                 the hundreds), coarser resume; smaller: finer resume and progress, more
                 orchestration. Never changes a result.
process_pool     With ``threads``: run vectorize's blocks in worker processes instead of
                 threads (default false; GDAL's polygonize already runs without the
                 GIL; like any process pool, its workers import the caller's main
                 script, which then needs an ``if __name__ == "__main__":`` guard).
retries          Retries of each I/O task on transient errors.
retry_delay_seconds  First back-off delay; doubles on each retry, with jitter.
work_pools       RuntimeEnum value -> Prefect work pool name.
check_inputs     Read every input's metadata (files, bands, columns, stores, the model) in the
                 calling process before a flow run exists, so a mistake is one error there,
                 not a failed run (default true; a local run reuses that plan). Turn it off
                 with ``execution: deployment`` when only the workers can read the inputs.
datasets         DatasetEnum value -> where build_mosaic finds its items, replacing
                 the catalog's default: ``{stac_url: ..., collection: ...}`` (either
                 alone keeps the other) or ``{geoparquet: <stac-geoparquet URI>}``.
recipe_models    ModelRecipes value -> model URI (a mirror, a local .pt2 or .onnx) used instead
                 of the recipe's public weights, e.g. ``{ftw: /models/ftw.pt2}``.
view_port        Port of the map viewer on 127.0.0.1 (``rasterflow view``, ``map_url``; default 8765).
basemap_url      XYZ tile URL template drawn under the viewer's layers, e.g.
                 ``https://tile.openstreetmap.org/{z}/{x}/{y}.png``; none by default (offline).
server_port      Port of the background Prefect server of ``rasterflow server start`` (default 4200).
runner_port      Port of its warm runner of command-line calls (default 8766).
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .engine.build_mosaic.catalog import DatasetSource
from .engine.groups import DEFAULT_TASK_PIXELS
from .engine.uris import check_scheme
from .enums import DatasetEnum, ModelRecipes, RuntimeEnum
from .errors import ConfigError, InvalidParameterError, is_secret

CONFIG_ENV_VAR = "RASTERFLOW_CONFIG_FILE"
OUTPUT_ENV_VAR = "RASTERFLOW_OUTPUT_URI"
RUN_CONFIG = "run_config"  # the flow parameter a deployment run takes the caller's RunConfig as
DEFAULT_OUTPUT_URI = "rasterflow-output"
DEFAULT_CONFIG_PATH = Path("~/.config/rasterflow.yaml")
S3_RETRIES = {"max_attempts": 10, "mode": "standard"}  # botocore's retry config


class _InvalidValues(ConfigError):
    """Values pydantic refused, for a config built in code; ``parse_config`` names the file instead."""

    def __init__(self, problems: str):
        super().__init__(f"RasterflowConfig: {problems}")
        self.problems = problems


def _default_work_pools() -> dict[RuntimeEnum, str]:
    return {size: f"rasterflow-{size.value}" for size in RuntimeEnum}


class RasterflowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    output_uri: str = Field(default=DEFAULT_OUTPUT_URI, validate_default=True)
    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False)
    execution: Literal["local", "deployment"] = "local"
    task_runner: Literal["threads", "dask"] = "threads"
    dask_address: str | None = None
    max_workers: int | None = Field(default=None, ge=1)
    task_pixels: int = Field(default=DEFAULT_TASK_PIXELS, gt=0)
    process_pool: bool = False
    retries: int = Field(default=3, ge=0, le=20)
    retry_delay_seconds: float = Field(default=2.0, ge=0)
    work_pools: dict[RuntimeEnum, str] = Field(default_factory=_default_work_pools)
    check_inputs: bool = True
    datasets: dict[DatasetEnum, DatasetSource] = Field(default_factory=dict)
    recipe_models: dict[ModelRecipes, str] = Field(default_factory=dict)
    view_port: int = Field(default=8765, ge=1, le=65535)
    basemap_url: str | None = None
    server_port: int = Field(default=4200, ge=1, le=65535)
    runner_port: int = Field(default=8766, ge=1, le=65535)

    # (as written, as resolved) when output_uri was relative: deployment runs refuse it.
    _relative_output: tuple[str, str] | None = PrivateAttr(default=None)

    def __init__(self, **data: Any):
        """Built in code (``RasterflowConfig(task_pixels=0)``): the same ConfigError a file gets."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _InvalidValues(_problems(exc)) from None

    @field_validator("output_uri")
    @classmethod
    def _absolute_output(cls, value: str) -> str:
        try:
            check_scheme(value, "output_uri")
        except InvalidParameterError as exc:
            raise ValueError(f"{exc.problem} (valid: {exc.valid})") from None
        if "://" in value:
            return value.rstrip("/")
        # Resolved once, so tasks in other threads or processes agree on it.
        return str(Path(value).expanduser().resolve())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_relative_output(cls, data: Any, handler: Any) -> RasterflowConfig:
        config = handler(data)
        given = data.get("output_uri", DEFAULT_OUTPUT_URI) if isinstance(data, dict) else None
        if isinstance(given, str) and not is_absolute_uri(given):
            config._relative_output = (given, config.output_uri)
        return config

    @property
    def relative_output_uri(self) -> str | None:
        """``output_uri`` as written when it was a relative path (this process's folder is its base)."""
        if self._relative_output is None or self._relative_output[1] != self.output_uri:
            return None  # absolute, or replaced since (model_copy)
        return self._relative_output[0]

    def run_config(self) -> RunConfig:
        """What of this config a deployment run takes as its ``run_config`` parameter: the run keys set here.

        Keys left at their defaults are not sent, so the worker's config keeps
        them (its pool's ``output_uri`` above all).
        """
        values = {key: getattr(self, key) for key in RunConfig.model_fields if key in self.model_fields_set}
        if self.relative_output_uri is not None:
            values.pop("output_uri", None)  # refused by the client before a run (see client._run_deployment)
        return RunConfig.model_validate(values)

    def with_run(self, run: RunConfig | None) -> RasterflowConfig:
        """This config with a run's ``run_config`` over it (None: unchanged)."""
        if run is None:
            return self
        update = run.model_dump(exclude_none=True)
        if "datasets" in update:
            update["datasets"] = self.datasets | run.datasets  # type: ignore[operator]
        return self.model_copy(update=update)

    @field_validator("work_pools")
    @classmethod
    def _all_sizes(cls, value: dict[RuntimeEnum, str]) -> dict[RuntimeEnum, str]:
        return _default_work_pools() | value

    def recipe_model(self, recipe: ModelRecipes) -> str:
        """The weights ``recipe`` runs: the config's ``recipe_models`` entry, else the recipe's public URI.

        A recipe whose weights ship in a package (ukis-csmask) has no public
        URI: its model file goes under ``<output_uri>/models/``, named by the
        installed package's version (an error names the extra when it is
        missing).
        """
        from .engine.build_and_predict_mosaic_recipe.recipes import packaged_model_uri, recipe_spec

        spec = recipe_spec(recipe)
        return self.recipe_models.get(recipe) or spec.model_uri or packaged_model_uri(spec, self.output_uri)

    def storage_options_for(self, uri: str) -> dict[str, Any]:
        """fsspec options for ``uri``'s scheme (``file`` for local paths).

        For s3, botocore retries throttling and 5xx answers in its "standard"
        mode up to 10 attempts unless the config says otherwise: object stores
        shed load with 503 SlowDown, and a run should ride that out.
        """
        scheme = uri.split("://", 1)[0] if "://" in uri else "file"
        options = copy.deepcopy(self.storage_options.get(scheme, {}))
        if scheme in ("s3", "s3a"):
            options["config_kwargs"] = options.get("config_kwargs") or {}
            options["config_kwargs"].setdefault("retries", dict(S3_RETRIES))
        return options


def is_absolute_uri(uri: str) -> bool:
    """A URI with a scheme, or an absolute local path (``~`` counts: it is the user's home)."""
    return "://" in uri or Path(uri).expanduser().is_absolute()


class RunConfig(BaseModel):
    """The keys of a caller's config that belong to one run; a deployment run takes them as a parameter.

    The rest of the config is about the caller (execution, work pools) or the
    machine that runs the flow (task runner, threads) and stays with each;
    ``storage_options`` hold credentials and never become a parameter.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    output_uri: str | None = Field(default=None, description=(
        "Root URI of the outputs (and of the task cache, under .prefect-results): an absolute path or a URI "
        "such as s3://bucket/prefix. None: the worker's configured output_uri (rasterflow.yaml or "
        "RASTERFLOW_OUTPUT_URI), which must be absolute in a deployment run."))
    datasets: dict[DatasetEnum, DatasetSource] | None = Field(default=None, description=(
        "Dataset -> where build_mosaic finds its STAC items, over the worker's config."))
    retries: int | None = Field(default=None, ge=0, le=20, description="Retries of each I/O task.")
    retry_delay_seconds: float | None = Field(default=None, ge=0, description=(
        "First retry delay; doubles on each retry."))

    @field_validator("output_uri")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not is_absolute_uri(value):
            raise ValueError("must be an absolute path or a URI: a run on a worker has no folder of the "
                             "caller's to resolve it against")
        try:
            check_scheme(value, "output_uri")
        except InvalidParameterError as exc:
            raise ValueError(f"{exc.problem} (valid: {exc.valid})") from None
        return value.rstrip("/") if "://" in value else str(Path(value).expanduser())


def config_path() -> Path | None:
    """The config file in effect, or None when running on defaults."""
    named = os.environ.get(CONFIG_ENV_VAR)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{CONFIG_ENV_VAR}={named!r}: no such file "
                f"(unset it to use {DEFAULT_CONFIG_PATH} or the built-in defaults)"
            )
        return path
    default = DEFAULT_CONFIG_PATH.expanduser()
    return default if default.is_file() else None


def load_config(path: str | Path | None = None) -> RasterflowConfig:
    """Read and validate the configuration (``path`` overrides the lookup)."""
    path = Path(path).expanduser() if path is not None else config_path()
    if path is None:
        return parse_config(_with_output_env({}), source="defaults")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the rasterflow config ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return parse_config(_with_output_env(data), source=str(path))


def _with_output_env(data: dict[str, Any]) -> dict[str, Any]:
    """``RASTERFLOW_OUTPUT_URI`` over the file's ``output_uri``: a work pool sets it for its runs."""
    value = os.environ.get(OUTPUT_ENV_VAR)
    return data | {"output_uri": value} if value else data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without PyYAML's quote of the offending line: it may hold a credential."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def parse_config(data: dict[str, Any], source: str = "config") -> RasterflowConfig:
    try:
        return RasterflowConfig.model_validate(data)
    except _InvalidValues as exc:  # a nested model built through __init__
        raise ConfigError(f"{source}: {exc.problems}") from None
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    known = ", ".join(RasterflowConfig.model_fields)
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r} (known keys: {known})")
        elif is_secret(key):  # storage_options hold credentials: name the key, never the value
            lines.append(f"{key}: {err['msg']} (value not shown)")
        else:
            lines.append(f"{key}={err.get('input')!r}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


_ACTIVE: ContextVar[RasterflowConfig | None] = ContextVar("rasterflow_config", default=None)


@contextmanager
def using_config(config: RasterflowConfig):
    """Make ``config`` the one tasks see (threads of this run inherit it)."""
    token = _ACTIVE.set(config)
    try:
        yield config
    finally:
        _ACTIVE.reset(token)


def activate(config: RasterflowConfig) -> None:
    """Make ``config`` the one tasks see from here on in this context (a flow run with a run_config)."""
    _ACTIVE.set(config)


def current_config() -> RasterflowConfig:
    """The config of the running client call, else the one on disk (workers)."""
    return _ACTIVE.get() or load_config()
