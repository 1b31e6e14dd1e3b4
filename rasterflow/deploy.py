"""Work pools and deployments: how a ``RuntimeEnum`` size reaches infrastructure.

Prefect's ``run_deployment`` cannot choose a work pool (the pool belongs to the
deployment), so every (flow, size) pair is its own deployment, named
``<flow>/<size>``, on the size's pool (``config.work_pools``). Each pool's base
job template is Prefect's default for its type with the size's resources as
defaults: CPU and memory requests/limits, GPUs with a node selector and a
toleration on Kubernetes. Runs can still override any job variable.

Entry points are module paths (``rasterflow.flows...``): workers run flows from
the installed package (the image in ``infra/``), not from a copy of the source.

``apply_plan`` creates what is missing and updates only what rasterflow owns:
a pool's base job template and description; a deployment's entry point, pool,
parameter schema, its tags (``rasterflow``, ``flow:<flow>``, ``size:<size>``)
and its description while nobody edited it. Schedules, parameter overrides,
job variables, concurrency limits, a paused state, other tags and an edited
description are the users', and survive a re-deploy (after every upgrade).
What already matches is left untouched, so a second run changes nothing.

Parameter forms come from the request models (``engine/<workflow>/request.py``):
each field's description, default and constraints, enums restricted to what the
workflow accepts, over Prefect's schema of the flow's signature (positions,
which parameters a run must give).

A deployment run's ``envs`` become its ``env`` job variable with each value a
reference to a Prefect Secret block (``env_job_variable``): the worker resolves
it when it starts the run, and the database, the API and the UI hold only the
reference.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, cast

from .config import OUTPUT_ENV_VAR, RasterflowConfig, is_absolute_uri
from .enums import RuntimeEnum
from .errors import InvalidParameterError, RasterflowError

PoolType = Literal["process", "docker", "kubernetes"]
POOL_TYPES: tuple[str, ...] = ("process", "docker", "kubernetes")
DEFAULT_IMAGE = "rasterflow:latest"
GPU_RESOURCE = "nvidia.com/gpu"
# Prefect's bundled worker metadata: the default templates, without network access.
_WORKER_METADATA = ("server", "api", "collections_data", "views", "aggregate-worker-metadata.json")
_COLLECTIONS = {"process": "prefect", "docker": "prefect-docker", "kubernetes": "prefect-kubernetes"}
TAG = "rasterflow"
RUN_CONFIG_HELP = ("Settings of the caller's rasterflow config for this run (the client fills them in). "
                   "Empty: the workers' config, whose output_uri must be absolute.")
# Ends every description rasterflow writes: one without it was edited by someone, and is kept.
DESCRIBED_BY = "(registered by rasterflow deploy)"
ENV_SECRET_PREFIX = "rasterflow-env-"
_ENV_NAMING_KEY = "rasterflow-env-naming-key"


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
    tags: list[str] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


def owned_tag(tag: str) -> bool:
    """The tags rasterflow sets (and may replace); every other tag is a user's."""
    return tag == TAG or tag.startswith(("flow:", "size:"))


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


def job_template(pool_type: str, runtime: RuntimeEnum, image: str = DEFAULT_IMAGE,
                 output_uri: str | None = None) -> dict[str, Any]:
    """The base job template of ``runtime``'s pool: the size's resources (and outputs) as defaults."""
    template = default_job_template(pool_type)
    spec = runtime.spec
    variables = template["variables"]["properties"]
    threads = str(int(spec.cpu))
    # A flow run on a worker gets the flow's default thread pool, which Prefect
    # leaves unbounded: bound it (and so memory, to shards in flight) by the size.
    env = {"RASTERFLOW_RUNTIME": runtime.value, "PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS": threads,
           "OMP_NUM_THREADS": threads}
    if output_uri:
        env[OUTPUT_ENV_VAR] = output_uri
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
              runtimes: list[RuntimeEnum] | None = None, output_uri: str | None = None) -> list[PoolSpec]:
    """One pool per size; ``output_uri`` (absolute) becomes every run's default output root."""
    if output_uri is not None and not is_absolute_uri(output_uri):
        raise InvalidParameterError("output_uri", output_uri, "is relative, and a run's working folder on a "
                                    "worker is temporary", "an absolute path or a URI such as s3://bucket/prefix")
    plan = []
    for runtime in runtimes or list(RuntimeEnum):
        plan.append(PoolSpec(
            name=config.work_pools[runtime], type=pool_type,
            description=f"rasterflow {runtime.value}: {_resources(runtime)}",
            base_job_template=job_template(pool_type, runtime, image, output_uri),
        ))
    return plan


def deployment_plan(config: RasterflowConfig,
                    runtimes: list[RuntimeEnum] | None = None) -> list[DeploymentSpec]:
    from .flows import FLOWS
    from .params import PARAMS

    plan = []
    for flow_name, flow in FLOWS.items():
        schema = parameter_form(flow, PARAMS[flow_name])
        summary = " ".join((flow.fn.__doc__ or flow_name).split())
        for runtime in runtimes or list(RuntimeEnum):
            plan.append(DeploymentSpec(
                flow_name=flow_name, name=runtime.value,
                entrypoint=f"{flow.fn.__module__}:{flow.fn.__name__}",
                work_pool_name=config.work_pools[runtime],
                description=(f"{summary} Runtime {runtime.value}: {_resources(runtime)}, on work pool "
                             f"{config.work_pools[runtime]}. {DESCRIBED_BY}"),
                parameter_openapi_schema=schema,
                tags=[TAG, f"flow:{flow_name}", f"size:{runtime.value}"],
            ))
    return plan


def _resources(runtime: RuntimeEnum) -> str:
    spec = runtime.spec
    return f"{spec.cpu:g} CPU, {spec.memory_gib} GiB" + (f", {spec.gpus} GPU" if spec.gpus else "")


def parameter_form(flow, model) -> dict[str, Any]:
    """The deployment's parameter schema: Prefect's from the flow's signature, each field as declared.

    Prefect's schema gives the positions and which parameters a run must
    give; the request model gives each field's description, constraints and
    enums (restricted where the workflow takes only some members). Where the
    flow has a default the model lacks (predict's ``device="auto"``, the
    recipe's ``model_path=None``), the flow's default is what a run gets.
    """
    from prefect.utilities.callables import parameter_schema

    form = parameter_schema(flow.fn).model_dump_for_openapi()
    declared = model.model_json_schema(ref_template="#/definitions/{model}")
    form.setdefault("definitions", {}).update(declared.get("$defs", {}))
    required = set(declared.get("required", []))
    for name, prop in form["properties"].items():
        field_schema = declared["properties"].get(name)
        if field_schema is None:  # run_config: Prefect's schema of it, its fields described
            merged = dict(prop) | {"description": RUN_CONFIG_HELP}
        elif name in required and name not in form.get("required", []):  # the flow supplies a default
            merged = {k: v for k, v in prop.items() if k != "title"} | {
                "description": field_schema.get("description", "")}
        else:
            merged = {k: v for k, v in field_schema.items() if k != "title"}
        merged["position"] = prop["position"]
        merged["title"] = name.replace("_", " ").capitalize()
        form["properties"][name] = merged
    return form


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
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    with get_client(sync_client=True) as client:
        check_api(client)
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
        for deployment in deployments:
            try:
                applied.append(_apply_deployment(client, deployment))
            except PrefectHTTPStatusError as exc:  # e.g. a user's parameter override the new form refuses
                detail = " ".join(exc.response.text.split())[:500]
                raise RasterflowError(f"deployment {deployment.full_name}: the Prefect API refused the "
                                      f"change ({exc.response.status_code}: {detail})") from None
    return applied


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or "the embedded server"


def check_api(client) -> None:
    """One clear error when the API does not answer (Prefect returns the failure rather than raising it)."""
    try:
        failure = client.api_healthcheck()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable API
        failure = exc
    if failure is not None:
        raise unreachable_api(failure)


def unreachable_api(failure: BaseException) -> RasterflowError:
    reason = " ".join(str(failure).split()) or type(failure).__name__
    return RasterflowError(f"cannot reach the Prefect API at {api_url()} ({reason}): start it "
                           "(prefect server start) or point PREFECT_API_URL at a running one")


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
    if existing is None:
        flow_id = client.create_flow_from_name(spec.flow_name)
        client.create_deployment(
            flow_id=flow_id, name=spec.name, entrypoint=spec.entrypoint, work_pool_name=spec.work_pool_name,
            description=spec.description, parameter_openapi_schema=spec.parameter_openapi_schema,
            tags=spec.tags, pull_steps=[], enforce_parameter_schema=True,
        )
        return Applied("deployment", spec.full_name, "created")
    changes = _owned_changes(existing, spec)
    if not changes:
        return Applied("deployment", spec.full_name, "unchanged")
    from prefect.client.schemas.actions import DeploymentUpdate

    client.update_deployment(existing.id, DeploymentUpdate(**changes))
    return Applied("deployment", spec.full_name, "updated")


def _owned_changes(existing, spec: DeploymentSpec) -> dict[str, Any]:
    """The fields rasterflow owns that differ from ``spec``; nothing else of ``existing`` is touched."""
    wanted: dict[str, Any] = {
        "entrypoint": spec.entrypoint, "work_pool_name": spec.work_pool_name,
        "parameter_openapi_schema": spec.parameter_openapi_schema, "enforce_parameter_schema": True,
        "pull_steps": [],
        "tags": [t for t in existing.tags if not owned_tag(t)] + spec.tags,
    }
    if not existing.description or existing.description.endswith(DESCRIBED_BY):
        wanted["description"] = spec.description  # ours; an edited one is the user's
    def same(key: str, value: Any) -> bool:
        have = getattr(existing, key) or type(value)()
        return sorted(have) == sorted(value) if key == "tags" else have == value

    return {key: value for key, value in wanted.items() if not same(key, value)}


def env_job_variable(envs: dict[str, str]) -> dict[str, str]:
    """``envs`` as a run's ``env`` job variable: each value a reference to a Prefect Secret block.

    The worker resolves ``{{ prefect.blocks.secret.<name> }}`` when it builds
    the run's job; the run's record and every API answer keep the reference,
    and the UI shows Secret blocks masked. A block is named by the variable
    and a keyed hash (HMAC) of its value, so the same credentials reuse their
    block and a block's name tells nothing about its value to whoever cannot
    read the key, itself a Secret block.
    """
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    key = _naming_key().encode()
    env = {}
    with get_client(sync_client=True) as client:
        for variable, value in envs.items():
            digest = hmac.new(key, f"{variable}\0{value}".encode(), hashlib.sha256).hexdigest()[:20]
            slug = re.sub(r"[^a-z0-9]+", "-", variable.lower()).strip("-")[:40] or "var"
            name = f"{ENV_SECRET_PREFIX}{slug}-{digest}"
            try:
                client.read_block_document_by_name(name, "secret", include_secrets=False)
            except ObjectNotFound:
                Secret(value=value).save(name, overwrite=True)
            env[variable] = f"{{{{ prefect.blocks.secret.{name} }}}}"
    return env


def _naming_key() -> str:
    """The key that names env Secret blocks, made once per Prefect API and kept there as a Secret."""
    from prefect.blocks.system import Secret
    from prefect.exceptions import ObjectAlreadyExists

    def load() -> str:  # sync_compatible: called from sync code, load returns the block
        return str(cast(Secret, Secret.load(_ENV_NAMING_KEY)).get())

    try:
        return load()
    except ValueError:  # not there yet
        pass
    try:
        Secret(value=secrets.token_hex(32)).save(_ENV_NAMING_KEY)
    except ObjectAlreadyExists:  # another caller made it first: use theirs
        pass
    return load()


def render_prefect_yaml(config: RasterflowConfig) -> str:
    """``deployments/prefect.yaml``: the same deployments for ``prefect deploy --all``.

    Ends with a scheduled example (paused: its parameters are placeholders).
    """
    import yaml

    deployments: list[dict[str, Any]] = [
        {"name": spec.name, "flow_name": spec.flow_name, "entrypoint": spec.entrypoint,
         "description": spec.description, "tags": spec.tags, "work_pool": {"name": spec.work_pool_name}}
        for spec in deployment_plan(config)
    ]
    deployments.append({
        "name": "nightly-example", "flow_name": "build-gti-mosaic",
        "entrypoint": "rasterflow.flows.build_gti_mosaic:build_gti_mosaic_flow",
        "description": "Example: rebuild a mosaic every night at 03:00 UTC "
                       "(edit the parameters, then unpause).",
        "tags": [TAG, "flow:build-gti-mosaic", "size:medium", "example"],
        "work_pool": {"name": config.work_pools[RuntimeEnum.MEDIUM]},
        "schedules": [{"cron": "0 3 * * *", "timezone": "UTC", "active": False}],
        "parameters": {
            "gti": "s3://my-bucket/tiles.parquet", "aoi": "s3://my-bucket/aoi.geojson",
            "bands": ["red", "green", "blue"], "location_field": "location", "crs_epsg": 3857,
            "run_config": {"output_uri": "s3://my-bucket/rasterflow"},
        },
    })
    header = (
        "# Generated by scripts/export_deployment_files.py from rasterflow/deploy.py; do not edit.\n"
        "# One deployment per (flow, runtime size), on that size's work pool. Register them with\n"
        "# `rasterflow deploy` (also creates the pools, and gives each deployment its parameter form with\n"
        "# descriptions and restricted choices), or with `prefect --no-prompt deploy --all` from this\n"
        "# directory once the pools exist (forms then come from the flows' signatures alone).\n"
    )
    body = {"name": "rasterflow", "prefect-version": _prefect_version(), "pull": [],
            "deployments": deployments}
    return header + yaml.safe_dump(body, sort_keys=False, width=110)


def _prefect_version() -> str:
    import prefect

    return prefect.__version__
