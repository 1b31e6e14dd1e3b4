"""Background servers on 127.0.0.1 that outlive one call: a Prefect server and the map viewer.

Without ``PREFECT_API_URL`` every process starts Prefect's embedded server,
~8 s even for a call served from the cache. ``rasterflow server start``
starts one ``prefect server start`` in the background (its database is
PREFECT_HOME's, the one the embedded server uses); the client finds it through
a state file and runs there, and falls back to the embedded server when it is
gone. The viewer is kept the same way, so ``map_url`` links keep working, and
so is the warm runner of command-line calls (``rasterflow.runner``, where
``os.fork`` exists). State files (pid, URL, the runner's token; readable by
their owner only) live in ``RASTERFLOW_STATE_DIR`` (default
``~/.cache/rasterflow``); processes are stopped by their recorded PID.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .errors import RasterflowError

LOOPBACK = "127.0.0.1"
PREFECT, VIEWER, RUNNER = "prefect-server", "viewer", "runner"
NAMES = (PREFECT, VIEWER, RUNNER)
# `prefect server start` needs ~10 s, more on a fresh database (migrations) or a loaded machine;
# the runner imports everything a call needs (torch included) before it answers.
START_TIMEOUT = {PREFECT: 180.0, VIEWER: 60.0, RUNNER: 180.0}
TOKEN_ENV = "RASTERFLOW_RUNNER_TOKEN"


def can_fork() -> bool:
    """The warm runner forks a child per call: Linux only (macOS frameworks and Windows cannot)."""
    return sys.platform.startswith("linux")


def code_identity() -> str:
    """This copy of rasterflow as the runner compares it: its folder, Python, and every module's size
    and modification time (a stat per file, no reading): a runner started before an upgrade or an
    edit declines calls instead of running old code."""
    package = Path(__file__).resolve().parent
    files = sorted(package.rglob("*.py"))
    stamps = [(str(p.relative_to(package)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps([str(package), sys.executable, stamps]).encode()).hexdigest()[:16]


def state_dir() -> Path:
    return Path(os.environ.get("RASTERFLOW_STATE_DIR", "~/.cache/rasterflow")).expanduser()


def _state_file(name: str) -> Path:
    return state_dir() / f"{name}.json"


def _health_url(name: str, url: str) -> str:
    return f"{url}/api/health" if name == PREFECT else f"{url}/health"


def _healthy(name: str, url: str, timeout: float = 1.0) -> bool:
    """Whether ``url`` answers its health check (the standard library's client: the command line
    asks on every call, and importing httpx would cost more than the question)."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("GET", _health_url(name, url).removeprefix(url))
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


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


def start(name: str, port: int, config: str | None = None, api_url: str | None = None) -> dict[str, Any]:
    """Start server ``name`` on ``port`` in the background unless it runs; its state.

    ``api_url``: the Prefect API the runner's calls use (the background server's).
    """
    running = status(name)
    if running:
        return running
    token = secrets.token_urlsafe(24) if name == RUNNER else None
    url = f"http://{LOOPBACK}:{port}"
    if _healthy(name, url):
        raise RasterflowError(f"port {port} already answers at {url} but was not started by rasterflow: stop "
                              "that server, or choose another port (server_port, view_port, runner_port)")
    if name == PREFECT:
        args = [sys.executable, "-m", "prefect", "server", "start", "--host", LOOPBACK, "--port", str(port)]
        env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
                   PREFECT_UI_API_URL=f"{url}/api")
        env.pop("PREFECT_API_URL", None)
    elif name == VIEWER:
        args = [sys.executable, "-m", "rasterflow.view", "--port", str(port)]
        args += ["--config", config] if config else []
        env = dict(os.environ)
    else:
        args = [sys.executable, "-m", "rasterflow.runner", "--port", str(port)]
        env = dict(os.environ, PREFECT_API_URL=api_url or "", **{TOKEN_ENV: token or ""})
    state_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
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
    if token:
        state["token"] = token
    descriptor = os.open(_state_file(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # the runner's token: its owner's only
    with os.fdopen(descriptor, "w") as out:
        out.write(json.dumps(state))
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
