"""Background servers on 127.0.0.1 that outlive one call: a Prefect server and the map viewer.

Without ``PREFECT_API_URL`` every process starts Prefect's embedded server,
~8 s even for a call served from the cache. ``rasterflow server start``
starts one ``prefect server start`` in the background (its database is
PREFECT_HOME's, the one the embedded server uses); the client finds it through
a state file and runs there, and falls back to the embedded server when it is
gone. The viewer is kept the same way, so ``map_url`` links keep working.
State files (pid, URL) live in ``RASTERFLOW_STATE_DIR`` (default
``~/.cache/rasterflow``); processes are stopped by their recorded PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .errors import RasterflowError

LOOPBACK = "127.0.0.1"
PREFECT, VIEWER = "prefect-server", "viewer"
# `prefect server start` needs ~10 s, more on a fresh database (migrations) or a loaded machine.
START_TIMEOUT = {PREFECT: 180.0, VIEWER: 60.0}


def state_dir() -> Path:
    return Path(os.environ.get("RASTERFLOW_STATE_DIR", "~/.cache/rasterflow")).expanduser()


def _state_file(name: str) -> Path:
    return state_dir() / f"{name}.json"


def _health_url(name: str, url: str) -> str:
    return f"{url}/api/health" if name == PREFECT else f"{url}/health"


def _healthy(name: str, url: str, timeout: float = 1.0) -> bool:
    import httpx

    try:
        answer = httpx.get(_health_url(name, url), timeout=timeout)
    except httpx.TransportError:
        return False
    return answer.status_code == 200


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def status(name: str) -> dict[str, Any] | None:
    """The recorded server ``name`` (pid, url, log) when it is alive and answering, else None."""
    path = _state_file(name)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not _alive(int(state["pid"])) or not _healthy(name, state["url"]):
        return None
    return state


def background_api_url() -> str | None:
    """The API URL of the background Prefect server, or None (then the embedded server runs)."""
    state = status(PREFECT)
    return f"{state['url']}/api" if state else None


def start(name: str, port: int, config: str | None = None) -> dict[str, Any]:
    """Start server ``name`` on ``port`` in the background unless it runs; its state."""
    running = status(name)
    if running:
        return running
    url = f"http://{LOOPBACK}:{port}"
    if _healthy(name, url):
        raise RasterflowError(f"port {port} already answers at {url} but was not started by rasterflow: "
                              "stop that server, or choose another port (server_port / view_port)")
    if name == PREFECT:
        args = [sys.executable, "-m", "prefect", "server", "start", "--host", LOOPBACK, "--port", str(port)]
        env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
                   PREFECT_UI_API_URL=f"{url}/api")
        env.pop("PREFECT_API_URL", None)
    else:
        args = [sys.executable, "-m", "rasterflow.view", "--port", str(port)]
        args += ["--config", config] if config else []
        env = dict(os.environ)
    state_dir().mkdir(parents=True, exist_ok=True)
    log = state_dir() / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)  # outlives this process and its terminal
    deadline = time.monotonic() + START_TIMEOUT[name]
    while not _healthy(name, url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _terminate(proc.pid)
            raise RasterflowError(f"{name} did not start on {url} (see {log})")
        time.sleep(0.25)
    state = {"pid": proc.pid, "url": url, "log": str(log), "started": time.time()}
    _state_file(name).write_text(json.dumps(state))
    return state


def stop(name: str) -> bool:
    """Stop server ``name`` by its recorded PID; False when none was running."""
    path = _state_file(name)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    stopped = _alive(int(state["pid"]))
    if stopped:
        _terminate(int(state["pid"]))
    path.unlink(missing_ok=True)
    return stopped


def _terminate(pid: int) -> None:
    """SIGTERM, again, then SIGKILL (a Prefect server may want two)."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if not _alive(pid):
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(pid):
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
            except ChildProcessError:
                pass
            time.sleep(0.1)
