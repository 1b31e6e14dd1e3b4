"""Deployment mode end to end: a real ``prefect server start``, ``rasterflow deploy``
and one real process worker per pool, all on loopback.

The runtime size must really choose the infrastructure: a SMALL and a LARGE
call land on their two pools, with the call's ``envs`` as job variables, and
return what a local run returns.
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
        yield {"api": api, "config": config, "config_file": config_file, "second_deploy": result.output}


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
        assert run.job_variables == {"env": {"RASTERFLOW_CALL": size.value}}
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
    client = RasterflowClient(deployed["config"].model_copy(update={"execution": "deployment"}))
    with pytest.raises(RasterflowError) as raised:
        client.build_gti_mosaic(str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), ["nir"],
                                "location")
    message = str(raised.value)
    run = _latest_run_of("build-gti-mosaic/small")
    assert str(run.id) in message and "FAILED" in message and "nir" in message


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
