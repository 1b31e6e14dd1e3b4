"""The warm runner of `rasterflow server start`, as a user meets it: commands in new processes run
in it, on the background Prefect server, and say where to watch the run.

Real servers on free loopback ports (a `prefect server start` and the runner), their state in this
test's own RASTERFLOW_STATE_DIR and PREFECT_HOME, stopped by `rasterflow server stop`.
"""

from __future__ import annotations

import http.client
import json
import re
import stat
import subprocess
import sys
import time

import httpx
import pytest
from loopback import child_env, free_port

from rasterflow import runner, services

pytestmark = pytest.mark.skipif(not services.can_fork(), reason="the runner forks (Linux)")


def cli(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rasterflow.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner")
    ports = {"server_port": free_port(), "view_port": free_port(), "runner_port": free_port()}
    config = root / "rasterflow.yaml"
    config.write_text(f"output_uri: {root / 'out'}\n" + "".join(f"{k}: {v}\n" for k, v in ports.items()))
    env = child_env(PREFECT_HOME=str(root / "prefect-home"), RASTERFLOW_STATE_DIR=str(root / "state"),
                    COLUMNS="100")
    env.pop("PREFECT_API_URL", None)
    # Commands invoked in this process (tests/test_cli.py) quiet Prefect's console through this
    # variable; the runner's log must keep its INFO lines, which the first test reads.
    env.pop("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", None)
    started = cli("server", "start", "--config", str(config), env=env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield env, config, ports, root / "state"
    finally:
        stopped = cli("server", "stop", env=env)
        assert "runner: stopped" in stopped.stdout and "prefect-server: stopped" in stopped.stdout


def test_a_command_runs_in_the_runner_on_the_background_server(servers, landsat):
    env, config, ports, state = servers
    args = ["build-gti-mosaic", str(landsat / "tiles.parquet"), str(landsat / "aoi.geojson"), "-b", "red",
            "--location-field", "location", "--resolution", "240", "--config", str(config)]
    done = cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    link = re.search(r"Prefect UI: (http://127\.0\.0\.1:(\d+)/runs/flow-run/([0-9a-f-]{36}))", done.stderr)
    assert link and int(link.group(2)) == ports["server_port"], done.stderr
    run = httpx.get(f"http://127.0.0.1:{ports['server_port']}/api/flow_runs/{link.group(3)}").json()
    assert run["state_type"] == "COMPLETED"
    assert "aoi-0.zarr" in done.stdout and "index:" in done.stdout  # the summary, read where it ran
    # It ran there, not here: the runner's log names the run (the child flushes it after answering).
    deadline = time.monotonic() + 30
    while f"Flow run '{run['name']}'" not in (state / "runner.log").read_text():
        assert time.monotonic() < deadline, (state / "runner.log").read_text()[-2000:]
        time.sleep(0.2)

    mistake = cli(*args[:-4], "-b", "nir", "--config", str(config), env=env)
    assert mistake.returncode == 2 and "error: bands=" in mistake.stderr and "Traceback" not in mistake.stderr


def test_the_runner_takes_only_its_owner_and_its_own_code(servers, monkeypatch):
    env, _, ports, state = servers
    recorded = state / "runner.json"
    assert stat.S_IMODE(recorded.stat().st_mode) == 0o600  # its token: the owner's only
    connection = http.client.HTTPConnection("127.0.0.1", ports["runner_port"], timeout=30)
    connection.request("POST", "/call", b"{}", {"Authorization": "Bearer guessed"})
    assert connection.getresponse().status == 403
    connection.close()

    monkeypatch.setenv("RASTERFLOW_STATE_DIR", env["RASTERFLOW_STATE_DIR"])
    monkeypatch.setattr(services, "code_identity", lambda: "another copy")  # as after an upgrade
    events: list[dict] = []
    assert runner.submit("build_gti_mosaic", {}, None, False, events.append) is None  # the caller runs it
    assert events == [{"event": "declined",
                       "reason": "the caller runs another copy or version of rasterflow"}]
    status = cli("server", "status", env=env).stdout
    assert f"runner: running at http://127.0.0.1:{ports['runner_port']}" in status
    assert json.loads(recorded.read_text())["pid"] > 0
