"""Deployment mode end to end: a real ``prefect server start``, ``rasterflow deploy``
and one real process worker per pool, all on loopback.

The runtime size must really choose the infrastructure: a SMALL and a LARGE
call land on their two pools, with the call's ``envs`` as job variables, and
return what a local run returns. Outputs go where the caller's config says
and stay there (a process worker runs each flow in a temporary folder); a
re-deploy keeps what users set; a secret in ``envs`` reaches the run and
appears nowhere else.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack

import pytest
import yaml
from loopback import prefect_server, prefect_worker
from typer.testing import CliRunner

from rasterflow import RasterflowClient
from rasterflow.cli import app
from rasterflow.config import RasterflowConfig
from rasterflow.engine.index import read_index
from rasterflow.engine.store import read_marker
from rasterflow.enums import RuntimeEnum
from rasterflow.errors import InvalidParameterError, RasterflowError

SIZES = [RuntimeEnum.SMALL, RuntimeEnum.LARGE]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A deployed rasterflow (every size) with process workers on the SMALL and LARGE pools."""
    import os

    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = tmp_path_factory.mktemp("deployment")
    config = RasterflowConfig(output_uri=str(root / "out"), max_workers=2, retries=1, retry_delay_seconds=0.1)
    config_file = root / "rasterflow.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    with ExitStack() as stack:
        api = stack.enter_context(prefect_server(root / "server-home"))
        stack.enter_context(temporary_settings({PREFECT_API_URL: api}))
        runner = CliRunner()
        for _ in range(2):
            result = runner.invoke(app, ["deploy", "--config", str(config_file)])
            assert result.exit_code == 0, result.output
        logs = {}
        for size in SIZES:
            logs[size] = root / f"worker-{size.value}.log"
            # Workers share this process's PREFECT_HOME, so the caller can read run results.
            stack.enter_context(prefect_worker(config.work_pools[size], api, logs[size],
                                               RASTERFLOW_CONFIG_FILE=str(config_file),
                                               PREFECT_HOME=os.environ["PREFECT_HOME"]))
        yield {"api": api, "config": config, "config_file": config_file, "second_deploy": result.output,
               "root": root}


def _flow_run(flow_run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(flow_run_id))


def _latest_run_of(deployment: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])),
            sort=FlowRunSort.START_TIME_DESC, limit=1,
        )
    return runs[0]


def test_deploy_twice_changes_nothing(deployed):
    from prefect.client.orchestration import get_client

    assert "created" not in deployed["second_deploy"] and "updated" not in deployed["second_deploy"]
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("rasterflow-large")
        names = {d.name for d in client.read_deployments()}
    env = pool.base_job_template["variables"]["properties"]["env"]["default"]
    assert (env["RASTERFLOW_RUNTIME"] == "large"
            and env["PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS"] == "16")
    assert {"small", "large"} <= names


def test_runtime_size_picks_the_pool_and_envs_become_job_variables(deployed, landsat):
    client = RasterflowClient(deployed["config"].model_copy(update={"execution": "deployment"}))
    call = dict(gti=str(landsat / "tiles.parquet"), aoi=str(landsat / "aoi.geojson"), bands=["red"],
                location_field="location", xy_chunksize=256, shard_size_bytes=2_000_000, resolution=60.0)
    returned = {}
    for size in SIZES:
        returned[size] = client.build_gti_mosaic(**call, runtime=size, envs={"RASTERFLOW_CALL": size.value})
        run = _latest_run_of(f"build-gti-mosaic/{size.value}")
        assert run.work_pool_name == f"rasterflow-{size.value}"
        (reference,) = run.job_variables["env"].values()  # a Secret block's reference, not the value
        assert list(run.job_variables) == ["env"] and reference.startswith("{{ prefect.blocks.secret.")
        assert run.state.is_completed()
    # Same request, same content address: both sizes and a local run agree.
    local = RasterflowClient(deployed["config"]).build_gti_mosaic(**call)
    assert returned[RuntimeEnum.SMALL] == returned[RuntimeEnum.LARGE] == local
    store = read_index(local).location[0]
    assert read_marker(store).status == "complete"


def test_wait_false_returns_the_flow_run_id(deployed, landsat):
    from prefect.flow_runs import wait_for_flow_run

    client = RasterflowClient(deployed["config"].model_copy(update={"execution": "deployment"}))
    run_id = client.build_gti_mosaic(
        str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["green"], "location",
        resolution=120.0, wait=False,
    )
    run = _flow_run(run_id)
    assert run.deployment_id is not None and run.work_pool_name == "rasterflow-small"
    import asyncio

    final = asyncio.run(wait_for_flow_run(uuid.UUID(run_id), timeout=180, log_states=False))
    assert final.state.is_completed()


def test_a_failed_run_is_a_rasterflow_error_naming_the_run(deployed, landsat):
    """With the caller's checks off (only workers can read the inputs), the run's plan step finds it."""
    client = RasterflowClient(deployed["config"].model_copy(update={"execution": "deployment",
                                                                    "check_inputs": False}))
    with pytest.raises(RasterflowError) as raised:
        client.build_gti_mosaic(str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["nir"],
                                "location")
    message = str(raised.value)
    run = _latest_run_of("build-gti-mosaic/small")
    assert str(run.id) in message and "FAILED" in message and "bands=['nir']" in message
    assert "\n" not in message


def test_a_mistake_in_the_data_fails_before_a_flow_run_exists(deployed, landsat):
    client = RasterflowClient(deployed["config"].model_copy(update={"execution": "deployment"}))
    before = _flow_run_count()
    with pytest.raises(InvalidParameterError, match="bands=.*nir"):
        client.build_gti_mosaic(str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["nir"],
                                "location")
    with pytest.raises(InvalidParameterError, match="location_field='path'"):
        client.build_gti_mosaic(str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["red"], "path")
    relative = RasterflowConfig(execution="deployment", output_uri="relative/out")
    with pytest.raises(InvalidParameterError, match="output_uri='relative/out'.*relative"):
        RasterflowClient(relative).build_gti_mosaic(str(landsat / "tiles.parquet"),
                                                    str(landsat / "aoi.geojson"), ["red"], "location")
    assert _flow_run_count() == before


def _flow_run_count() -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.count_flow_runs()


def test_outputs_go_where_the_caller_says_stay_there_and_hit_the_cache(deployed, landsat, tmp_path):
    """The worker's config says root/out; the caller's output_uri wins, and the second run is all cache."""
    from prefect_runs import task_states

    config = deployed["config"].model_copy(update={"execution": "deployment", "output_uri": str(tmp_path)})
    client = RasterflowClient(config)
    call = dict(gti=str(landsat / "tiles.parquet"), aoi=str(landsat / "aoi.geojson"), bands=["blue"],
                location_field="location", xy_chunksize=256, shard_size_bytes=2_000_000, resolution=90.0)
    first = client.build_gti_mosaic(**call)
    assert first.startswith(str(tmp_path)) and read_marker(read_index(first).location[0]).complete
    assert _latest_run_of("build-gti-mosaic/small").parameters["run_config"]["output_uri"] == str(tmp_path)
    assert any((tmp_path / ".prefect-results").iterdir())  # the task cache, beside the outputs
    assert client.build_gti_mosaic(**call) == first
    states = task_states("build-gti-mosaic", "build-shard")
    assert states and set(states) == {"Cached"}, states


def test_a_relative_output_uri_on_the_worker_fails_the_run_naming_it(deployed, landsat, tmp_path):
    """A worker whose config (here given by the call's envs) has a relative output_uri refuses to run."""
    worker_config = tmp_path / "relative.yaml"
    worker_config.write_text("output_uri: outputs-in-the-run-folder\n")
    client = RasterflowClient(RasterflowConfig(execution="deployment"))  # no output_uri: the worker's
    with pytest.raises(RasterflowError, match="FAILED.*output_uri='outputs-in-the-run-folder'.*relative"):
        client.build_gti_mosaic(str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["red"],
                                "location", envs={"RASTERFLOW_CONFIG_FILE": str(worker_config)})


def test_wait_false_needs_deployment_mode(tmp_path, landsat):
    client = RasterflowClient(RasterflowConfig(output_uri=str(tmp_path)))
    with pytest.raises(InvalidParameterError, match="wait"):
        client.build_gti_mosaic(str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["red"],
                                "location", wait=False)
    assert not any(tmp_path.iterdir())


def test_prefect_yaml_example_deploys_with_prefects_own_cli(deployed):
    """deployments/prefect.yaml works with `prefect deploy`, cron schedule included."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from prefect.client.orchestration import get_client

    directory = Path(__file__).resolve().parents[1] / "deployments"
    done = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "-n", "nightly-example"],
                   cwd=directory, env=os.environ | {"PREFECT_API_URL": deployed["api"]}, check=False,
                   capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name("build-gti-mosaic/nightly-example")
    assert found.work_pool_name == "rasterflow-medium"
    assert [(s.schedule.cron, s.active) for s in found.schedules] == [("0 3 * * *", False)]


def test_redeploy_keeps_what_users_set_and_updates_what_rasterflow_owns(deployed):
    """A schedule attached in the UI, edited parameters, description, job variables and tags survive
    `rasterflow deploy`; a stale entry point (an older rasterflow's) is brought up to date."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.schedules import CronSchedule

    name = "build-zarr-multiscales/medium"
    mine = dict(description="Nightly pyramids of the team's mosaics", parameters={"levels": 3},
                job_variables={"env": {"GDAL_CACHEMAX": "512"}})
    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(name)
        client.create_deployment_schedules(found.id, [(CronSchedule(cron="0 4 * * *", timezone="UTC"), True)])
        client.update_deployment(found.id, DeploymentUpdate(
            **mine, tags=[*found.tags, "team:geo"], entrypoint="rasterflow.old_module:old_flow"))
    result = CliRunner().invoke(app, ["deploy", "--config", str(deployed["config_file"]), "-r", "medium"])
    assert result.exit_code == 0, result.output
    with get_client(sync_client=True) as client:
        after = client.read_deployment_by_name(name)
    assert [(s.schedule.cron, s.active) for s in after.schedules] == [("0 4 * * *", True)]
    assert (after.description, after.parameters, after.job_variables) == tuple(mine.values())
    assert set(after.tags) == {"rasterflow", "flow:build-zarr-multiscales", "size:medium", "team:geo"}
    assert after.entrypoint == "rasterflow.flows.build_zarr_multiscales:build_zarr_multiscales_flow"


def test_deployments_have_forms_tags_and_descriptions(deployed):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        predict = client.read_deployment_by_name("predict-mosaic/gpu-small")
        pyramid = client.read_deployment_by_name("build-zarr-multiscales/small")
        recipe = client.read_deployment_by_name("build-and-predict-mosaic-recipe/small")
    form = predict.parameter_openapi_schema
    assert form["properties"]["device"]["default"] == "auto" and "device" not in form["required"]
    assert all(prop.get("description") for prop in form["properties"].values())
    assert form["properties"]["merge_mode"]["title"] == "Merge mode"
    kernels = pyramid.parameter_openapi_schema["properties"]["resampling"]["anyOf"][0]["enum"]
    assert sorted(kernels) == ["average", "mode", "near"]
    assert "model_path" not in recipe.parameter_openapi_schema["required"]
    assert set(predict.tags) == {"rasterflow", "flow:predict-mosaic", "size:gpu-small"}
    assert "1 GPU" in predict.description and "rasterflow-gpu-small" in predict.description


def test_a_secret_in_envs_reaches_the_run_and_appears_nowhere_else(deployed, landsat, tmp_path):
    """The canary travels as a Secret block: not in any API answer, log, artifact, event, file under
    either PREFECT_HOME (the server's database included) or the outputs. RASTERFLOW_OUTPUT_URI, sent
    the same way, proves the envs reached the run."""
    import os
    from pathlib import Path

    import httpx

    canary = f"canary-{uuid.uuid4().hex}"
    out = tmp_path / "canary-out"
    client = RasterflowClient(RasterflowConfig(execution="deployment"))  # no output_uri: the worker's...
    index = client.build_gti_mosaic(  # ...which the envs replace
        str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["green"], "location",
        xy_chunksize=256, shard_size_bytes=2_000_000, resolution=120.0,
        envs={"RASTERFLOW_TEST_CANARY": canary, "RASTERFLOW_OUTPUT_URI": str(out)},
    )
    assert index.startswith(str(out)) and read_marker(read_index(index).location[0]).complete
    run = _latest_run_of("build-gti-mosaic/small")
    this_run = {"any_": [str(run.id)]}
    with httpx.Client(base_url=deployed["api"], timeout=60) as http:
        answers = {
            "flow run": http.get(f"/flow_runs/{run.id}"),
            "flow runs": http.post("/flow_runs/filter", json={}),
            "task runs": http.post("/task_runs/filter", json={"flow_runs": {"id": this_run}}),
            "logs": http.post("/logs/filter", json={"logs": {"flow_run_id": this_run}}),
            "artifacts": http.post("/artifacts/filter", json={}),
            "deployments": http.post("/deployments/filter", json={}),
            "work pools": http.post("/work_pools/filter", json={}),
            "variables": http.post("/variables/filter", json={}),
            "block documents (as the UI reads them)": http.post("/block_documents/filter", json={}),
            "events": http.post("/events/filter", json={"filter": {"any_resource": {
                "id_prefix": [f"prefect.flow-run.{run.id}"]}}, "limit": 50}),
        }
    assert all(answer.status_code == 200 for answer in answers.values()), {
        k: a.status_code for k, a in answers.items()}
    assert "rasterflow-env-rasterflow-test-canary" in answers["flow run"].text
    assert [name for name, answer in answers.items() if canary in answer.text] == []
    roots = [deployed["root"], Path(os.environ["PREFECT_HOME"]), out]  # server home, workers' home, outputs
    leaked = [str(path) for root in roots for path in root.rglob("*")
              if path.is_file() and canary.encode() in path.read_bytes()]
    assert leaked == []
