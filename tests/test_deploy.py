"""Work pools and deployments as data: every (flow, size) pair, each size's resources.

Registration against a real server is in test_client_deployment.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from rasterflow.config import RasterflowConfig
from rasterflow.deploy import GPU_RESOURCE, deployment_plan, job_template, pool_plan
from rasterflow.enums import RuntimeEnum
from rasterflow.errors import InvalidParameterError
from rasterflow.flows import FLOWS

ROOT = Path(__file__).resolve().parents[1]


def _export_script():
    spec = importlib.util.spec_from_file_location("export", ROOT / "scripts" / "export_deployment_files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_deployment_per_flow_and_size_on_the_sizes_pool():
    config = RasterflowConfig(work_pools={RuntimeEnum.GPU_SMALL: "my-gpus"})
    plan = deployment_plan(config)
    assert {(d.flow_name, d.name) for d in plan} == {(f, r.value) for f in FLOWS for r in RuntimeEnum}
    assert len(plan) == len(FLOWS) * len(RuntimeEnum)
    by_name = {d.full_name: d for d in plan}
    assert by_name["predict-mosaic/gpu-small"].work_pool_name == "my-gpus"
    assert by_name["predict-mosaic/large"].work_pool_name == "rasterflow-large"
    assert by_name["predict-mosaic/large"].entrypoint == "rasterflow.flows.predict_mosaic:predict_mosaic_flow"
    # envs and runtime are never flow parameters.
    properties = by_name["build-gti-mosaic/small"].parameter_openapi_schema["properties"]
    assert "gti" in properties and "envs" not in properties and "runtime" not in properties


def test_kubernetes_templates_carry_each_sizes_resources():
    large = job_template("kubernetes", RuntimeEnum.LARGE)
    variables = large["variables"]["properties"]
    assert (variables["cpu_request"]["default"], variables["memory_limit"]["default"]) == ("16", "64Gi")
    assert "nodeSelector" not in large["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]

    gpu = job_template("kubernetes", RuntimeEnum.GPU_LARGE, image="registry.example/rasterflow:1")
    pod = gpu["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"][GPU_RESOURCE] == "4"
    assert pod["nodeSelector"] == {f"{GPU_RESOURCE}.present": "true"}
    assert pod["tolerations"][0]["key"] == GPU_RESOURCE
    assert gpu["variables"]["properties"]["image"]["default"] == "registry.example/rasterflow:1"


def test_every_pool_bounds_its_thread_pool_by_its_cpus():
    for pool_type in ("process", "docker", "kubernetes"):
        for pool, runtime in zip(pool_plan(RasterflowConfig(), pool_type), RuntimeEnum, strict=True):
            env = pool.base_job_template["variables"]["properties"]["env"]["default"]
            assert env["PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS"] == str(int(runtime.spec.cpu))
            assert pool.name == f"rasterflow-{runtime.value}" and pool.type == pool_type
    docker = job_template("docker", RuntimeEnum.MEDIUM)["variables"]["properties"]
    assert docker["mem_limit"]["default"] == "32g"


def test_unknown_pool_type_is_a_clear_error():
    with pytest.raises(InvalidParameterError, match="pool_type='ecs'.*process"):
        pool_plan(RasterflowConfig(), "ecs")


def test_committed_deployment_files_match_the_code():
    """deployments/prefect.yaml and infra/job-templates/ are generated: regenerate on drift."""
    for path, text in _export_script().expected_files().items():
        assert path.is_file() and path.read_text() == text, (
            f"{path.relative_to(ROOT)} is stale: run python scripts/export_deployment_files.py"
        )


def test_prefect_yaml_declares_the_same_deployments_plus_a_paused_schedule():
    declared = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]
    plan = {(d.flow_name, d.name, d.work_pool_name) for d in deployment_plan(RasterflowConfig())}
    assert {(d["flow_name"], d["name"], d["work_pool"]["name"])
            for d in declared if "schedules" not in d} == plan
    (scheduled,) = [d for d in declared if "schedules" in d]
    assert scheduled["schedules"][0]["cron"] == "0 3 * * *" and scheduled["schedules"][0]["active"] is False


def test_forms_describe_every_parameter_and_offer_only_valid_choices():
    by_name = {d.full_name: d for d in deployment_plan(RasterflowConfig())}
    for spec in by_name.values():
        form = spec.parameter_openapi_schema
        assert all(prop.get("description") for prop in form["properties"].values()), spec.full_name
        assert all(" " in prop["title"] or prop["title"].istitle() for prop in form["properties"].values())
        assert set(spec.tags) == {"rasterflow", f"flow:{spec.flow_name}", f"size:{spec.name}"}
        assert spec.description.endswith("(registered by rasterflow deploy)")
    predict = by_name["predict-mosaic/small"].parameter_openapi_schema
    assert predict["properties"]["device"]["default"] == "auto" and "device" not in predict["required"]
    pyramid = by_name["build-zarr-multiscales/small"].parameter_openapi_schema["properties"]["resampling"]
    assert [sorted(choice.get("enum", choice.get("additionalProperties", {}).get("enum", [])))
            for choice in pyramid["anyOf"][:2]] == [["average", "mode", "near"]] * 2
    recipe = by_name["build-and-predict-mosaic-recipe/small"].parameter_openapi_schema
    assert "model_path" not in recipe["required"] and recipe["properties"]["model_path"]["default"] is None
    run_config = recipe["definitions"]["RunConfig"]["properties"]
    assert set(run_config) == {"output_uri", "datasets", "retries", "retry_delay_seconds"}
    assert "storage_options" not in run_config  # credentials never become parameters


def test_pools_can_carry_an_absolute_output_root():
    (pool,) = pool_plan(RasterflowConfig(), runtimes=[RuntimeEnum.SMALL], output_uri="s3://bucket/runs")
    assert pool.base_job_template["variables"]["properties"]["env"]["default"]["RASTERFLOW_OUTPUT_URI"] == (
        "s3://bucket/runs")
    with pytest.raises(InvalidParameterError, match="output_uri='runs'.*relative"):
        pool_plan(RasterflowConfig(), output_uri="runs")
