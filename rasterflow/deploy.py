"""Work pools and deployments: how a ``RuntimeEnum`` size reaches infrastructure.

Prefect's ``run_deployment`` cannot choose a work pool (the pool belongs to the
deployment), so every (flow, size) pair is its own deployment, named
``<flow>/<size>``, on the size's pool (``config.work_pools``). Each pool's base
job template is Prefect's default for its type with the size's resources as
defaults: CPU and memory requests/limits, GPUs with a node selector and a
toleration on Kubernetes. Runs can still override any job variable.

Entry points are module paths (``rasterflow.flows...``): workers run flows from
the installed package (the image in ``infra/``), not from a copy of the source.

``apply_plan`` is idempotent: what already matches is left untouched, so running
``rasterflow deploy`` twice changes nothing the second time.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from .config import RasterflowConfig
from .enums import RuntimeEnum
from .errors import InvalidParameterError, RasterflowError

PoolType = Literal["process", "docker", "kubernetes"]
POOL_TYPES: tuple[str, ...] = ("process", "docker", "kubernetes")
DEFAULT_IMAGE = "rasterflow:latest"
GPU_RESOURCE = "nvidia.com/gpu"
# Prefect's bundled worker metadata: the default templates, without network access.
_WORKER_METADATA = ("server", "api", "collections_data", "views", "aggregate-worker-metadata.json")
_COLLECTIONS = {"process": "prefect", "docker": "prefect-docker", "kubernetes": "prefect-kubernetes"}


@dataclass(frozen=True)
class PoolSpec:
    name: str
    type: str
    description: str
    base_job_template: dict[str, Any]


@dataclass(frozen=True)
class DeploymentSpec:
    flow_name: str
    name: str
    entrypoint: str
    work_pool_name: str
    description: str
    parameter_openapi_schema: dict[str, Any]
    job_variables: dict[str, Any] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


def deployment_name(flow_name: str, runtime: RuntimeEnum) -> str:
    """``<flow>/<size>``: what the client passes to ``run_deployment``."""
    return f"{flow_name}/{runtime.value}"


def default_job_template(pool_type: str) -> dict[str, Any]:
    """Prefect's own default base job template for ``pool_type`` (read offline)."""
    if pool_type not in POOL_TYPES:
        raise InvalidParameterError("pool_type", pool_type, "is not a supported work pool type",
                                    ", ".join(POOL_TYPES))
    metadata = json.loads(resources.files("prefect").joinpath(*_WORKER_METADATA).read_text())
    worker = metadata[_COLLECTIONS[pool_type]][pool_type]
    return copy.deepcopy(worker["default_base_job_configuration"])


def job_template(pool_type: str, runtime: RuntimeEnum, image: str = DEFAULT_IMAGE) -> dict[str, Any]:
    """The base job template of ``runtime``'s pool: the size's resources as defaults."""
    template = default_job_template(pool_type)
    spec = runtime.spec
    variables = template["variables"]["properties"]
    threads = str(int(spec.cpu))
    # A flow run on a worker gets the flow's default thread pool, which Prefect
    # leaves unbounded: bound it (and so memory, to shards in flight) by the size.
    env = {"RASTERFLOW_RUNTIME": runtime.value, "PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS": threads,
           "OMP_NUM_THREADS": threads}
    variables["env"]["default"] = env
    if pool_type == "docker":
        variables["image"]["default"] = image
        variables["mem_limit"]["default"] = f"{spec.memory_gib}g"
        if runtime.is_gpu:
            # Docker's pool has no device requests: GPUs come from the nvidia runtime.
            env["NVIDIA_VISIBLE_DEVICES"] = "all"
    elif pool_type == "kubernetes":
        variables["image"]["default"] = image
        cpu = f"{spec.cpu:g}"
        memory = f"{spec.memory_gib}Gi"
        resources = {"cpu_request": cpu, "cpu_limit": cpu, "memory_request": memory, "memory_limit": memory}
        for key, value in resources.items():
            variables[key]["default"] = value
        if runtime.is_gpu:
            pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
            pod["containers"][0]["resources"]["limits"][GPU_RESOURCE] = str(spec.gpus)
            pod["nodeSelector"] = {f"{GPU_RESOURCE}.present": "true"}
            pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return template


def pool_plan(config: RasterflowConfig, pool_type: str = "process", image: str = DEFAULT_IMAGE,
              runtimes: list[RuntimeEnum] | None = None) -> list[PoolSpec]:
    plan = []
    for runtime in runtimes or list(RuntimeEnum):
        spec = runtime.spec
        gpus = f", {spec.gpus} GPU" if spec.gpus else ""
        plan.append(PoolSpec(
            name=config.work_pools[runtime], type=pool_type,
            description=f"rasterflow {runtime.value}: {spec.cpu:g} CPU, {spec.memory_gib} GiB{gpus}",
            base_job_template=job_template(pool_type, runtime, image),
        ))
    return plan


def deployment_plan(config: RasterflowConfig,
                    runtimes: list[RuntimeEnum] | None = None) -> list[DeploymentSpec]:
    from prefect.utilities.callables import parameter_schema

    from .flows import FLOWS

    plan = []
    for flow_name, flow in FLOWS.items():
        schema = parameter_schema(flow.fn).model_dump_for_openapi()
        summary = (flow.fn.__doc__ or flow_name).strip().splitlines()[0]
        for runtime in runtimes or list(RuntimeEnum):
            plan.append(DeploymentSpec(
                flow_name=flow_name, name=runtime.value,
                entrypoint=f"{flow.fn.__module__}:{flow.fn.__name__}",
                work_pool_name=config.work_pools[runtime],
                description=f"{summary} (runtime {runtime.value})",
                parameter_openapi_schema=schema,
            ))
    return plan


@dataclass(frozen=True)
class Applied:
    kind: Literal["work pool", "deployment"]
    name: str
    action: Literal["created", "updated", "unchanged"]


def apply_plan(pools: list[PoolSpec], deployments: list[DeploymentSpec]) -> list[Applied]:
    """Create or update pools and deployments on the Prefect API in use.

    Every conflict is found before anything is written.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.api_healthcheck()
        except Exception as exc:  # noqa: BLE001 - any failure means no usable API
            raise RasterflowError(f"cannot reach the Prefect API ({api_url()}): {exc}") from None
        existing = {}
        for pool in pools:
            try:
                existing[pool.name] = found = client.read_work_pool(pool.name)
            except ObjectNotFound:
                continue
            if found.type != pool.type:
                raise InvalidParameterError(
                    "pool_type", pool.type,
                    f"work pool {pool.name!r} already exists with type {found.type!r}",
                    f"{found.type!r}, or delete the pool first (prefect work-pool delete {pool.name})",
                )
        applied = [_apply_pool(client, pool, existing.get(pool.name)) for pool in pools]
        applied += [_apply_deployment(client, deployment) for deployment in deployments]
    return applied


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or "the embedded server"


def _apply_pool(client, pool: PoolSpec, existing) -> Applied:
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate

    if existing is None:
        client.create_work_pool(WorkPoolCreate(
            name=pool.name, type=pool.type, description=pool.description,
            base_job_template=pool.base_job_template,
        ))
        return Applied("work pool", pool.name, "created")
    if existing.base_job_template == pool.base_job_template and existing.description == pool.description:
        return Applied("work pool", pool.name, "unchanged")
    client.update_work_pool(pool.name, WorkPoolUpdate(
        description=pool.description, base_job_template=pool.base_job_template,
    ))
    return Applied("work pool", pool.name, "updated")


def _apply_deployment(client, spec: DeploymentSpec) -> Applied:
    from prefect.exceptions import ObjectNotFound

    try:
        existing = client.read_deployment_by_name(spec.full_name)
    except ObjectNotFound:
        existing = None
    if existing is not None and (
        existing.entrypoint == spec.entrypoint
        and existing.work_pool_name == spec.work_pool_name
        and existing.description == spec.description
        and existing.parameter_openapi_schema == spec.parameter_openapi_schema
        and (existing.job_variables or {}) == spec.job_variables
        and not existing.pull_steps
    ):
        return Applied("deployment", spec.full_name, "unchanged")
    flow_id = client.create_flow_from_name(spec.flow_name)
    # create_deployment upserts by (flow, name).
    client.create_deployment(
        flow_id=flow_id, name=spec.name, entrypoint=spec.entrypoint, work_pool_name=spec.work_pool_name,
        description=spec.description, parameter_openapi_schema=spec.parameter_openapi_schema,
        job_variables=spec.job_variables, pull_steps=[], enforce_parameter_schema=True,
    )
    return Applied("deployment", spec.full_name, "created" if existing is None else "updated")


def render_prefect_yaml(config: RasterflowConfig) -> str:
    """``deployments/prefect.yaml``: the same deployments for ``prefect deploy --all``.

    Ends with a scheduled example (paused: its parameters are placeholders).
    """
    import yaml

    deployments: list[dict[str, Any]] = [
        {"name": spec.name, "flow_name": spec.flow_name, "entrypoint": spec.entrypoint,
         "description": spec.description, "work_pool": {"name": spec.work_pool_name}}
        for spec in deployment_plan(config)
    ]
    deployments.append({
        "name": "nightly-example", "flow_name": "build-gti-mosaic",
        "entrypoint": "rasterflow.flows.build_gti_mosaic:build_gti_mosaic_flow",
        "description": "Example: rebuild a mosaic every night at 03:00 UTC "
                       "(edit the parameters, then unpause).",
        "work_pool": {"name": config.work_pools[RuntimeEnum.MEDIUM]},
        "schedules": [{"cron": "0 3 * * *", "timezone": "UTC", "active": False}],
        "parameters": {
            "gti": "s3://my-bucket/tiles.parquet", "aoi": "s3://my-bucket/aoi.geojson",
            "bands": ["red", "green", "blue"], "location_field": "location", "crs_epsg": 3857,
        },
    })
    header = (
        "# Generated by scripts/export_deployment_files.py from rasterflow/deploy.py; do not edit.\n"
        "# One deployment per (flow, runtime size), on that size's work pool. Register them with\n"
        "# `rasterflow deploy` (also creates the pools), or with `prefect --no-prompt deploy --all`\n"
        "# from this directory once the pools exist.\n"
    )
    body = {"name": "rasterflow", "prefect-version": _prefect_version(), "pull": [],
            "deployments": deployments}
    return header + yaml.safe_dump(body, sort_keys=False, width=110)


def _prefect_version() -> str:
    import prefect

    return prefect.__version__
