"""rasterflow.yaml: where outputs go and how flows run.

Looked up in this order: the file named by ``RASTERFLOW_CONFIG_FILE``, then
``~/.config/rasterflow.yaml``, then built-in defaults that work offline (outputs
under ``./rasterflow-output``, Prefect's embedded server, a thread pool). Unknown
keys are errors: a typo in a config file should not silently run with defaults.

Keys
----
output_uri       Root URI of every output (local path, file://, s3://, memory://).
storage_options  fsspec options per URI scheme, e.g. ``{s3: {endpoint_url: ...}}``.
                 Never logged or written to provenance.
execution        ``local``: flows run in the calling process. ``deployment``: each call
                 runs deployment ``<flow>/<runtime>`` on that size's work pool (see
                 ``rasterflow deploy``) and waits for it, unless ``wait=False``.
task_runner      ``threads`` (default) or ``dask``.
dask_address     Scheduler address for ``dask``; None starts a local cluster.
max_workers      Threads (or local Dask workers); None = number of CPUs.
process_pool     With ``threads``: run steps that hold the GIL (polygonize) in worker
                 processes, so they use every core (default false: like any process
                 pool, its workers import the caller's main script, which then needs
                 an ``if __name__ == "__main__":`` guard).
retries          Retries of each I/O task on transient errors.
retry_delay_seconds  First back-off delay; doubles on each retry, with jitter.
work_pools       RuntimeEnum value -> Prefect work pool name.
datasets         DatasetEnum value -> where build_mosaic finds its items, replacing
                 the catalog's default: ``{stac_url: ..., collection: ...}`` (either
                 alone keeps the other) or ``{geoparquet: <stac-geoparquet URI>}``.
recipe_models    ModelRecipes value -> model URI (a mirror or a local .pt2) used instead
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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .engine.build_mosaic.catalog import DatasetSource
from .enums import DatasetEnum, ModelRecipes, RuntimeEnum
from .errors import ConfigError

CONFIG_ENV_VAR = "RASTERFLOW_CONFIG_FILE"
DEFAULT_CONFIG_PATH = Path("~/.config/rasterflow.yaml")
S3_RETRIES = {"max_attempts": 10, "mode": "standard"}  # botocore's retry config


def _default_work_pools() -> dict[RuntimeEnum, str]:
    return {size: f"rasterflow-{size.value}" for size in RuntimeEnum}


class RasterflowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    output_uri: str = Field(default="rasterflow-output", validate_default=True)
    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False)
    execution: Literal["local", "deployment"] = "local"
    task_runner: Literal["threads", "dask"] = "threads"
    dask_address: str | None = None
    max_workers: int | None = Field(default=None, ge=1)
    process_pool: bool = False
    retries: int = Field(default=3, ge=0, le=20)
    retry_delay_seconds: float = Field(default=2.0, ge=0)
    work_pools: dict[RuntimeEnum, str] = Field(default_factory=_default_work_pools)
    datasets: dict[DatasetEnum, DatasetSource] = Field(default_factory=dict)
    recipe_models: dict[ModelRecipes, str] = Field(default_factory=dict)
    view_port: int = Field(default=8765, ge=1, le=65535)
    basemap_url: str | None = None
    server_port: int = Field(default=4200, ge=1, le=65535)
    runner_port: int = Field(default=8766, ge=1, le=65535)

    @field_validator("output_uri")
    @classmethod
    def _absolute_output(cls, value: str) -> str:
        if "://" in value:
            return value.rstrip("/")
        # Resolved once, so tasks in other threads or processes agree on it.
        return str(Path(value).expanduser().resolve())

    @field_validator("work_pools")
    @classmethod
    def _all_sizes(cls, value: dict[RuntimeEnum, str]) -> dict[RuntimeEnum, str]:
        return _default_work_pools() | value

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
        return RasterflowConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the rasterflow config: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return parse_config(data, source=str(path))


def parse_config(data: dict[str, Any], source: str = "config") -> RasterflowConfig:
    try:
        return RasterflowConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _describe(exc: ValidationError, source: str) -> str:
    known = ", ".join(RasterflowConfig.model_fields)
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r} (known keys: {known})")
        else:
            lines.append(f"{key}={err.get('input')!r}: {err['msg']}")
    return f"{source}: " + "; ".join(lines)


_ACTIVE: ContextVar[RasterflowConfig | None] = ContextVar("rasterflow_config", default=None)


@contextmanager
def using_config(config: RasterflowConfig):
    """Make ``config`` the one tasks see (threads of this run inherit it)."""
    token = _ACTIVE.set(config)
    try:
        yield config
    finally:
        _ACTIVE.reset(token)


def current_config() -> RasterflowConfig:
    """The config of the running client call, else the one on disk (workers)."""
    return _ACTIVE.get() or load_config()
