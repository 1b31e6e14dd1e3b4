"""Real services on 127.0.0.1 for tests: free ports, processes stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment, importing this checkout, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env | extra


@contextmanager
def process(args: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Run ``args`` with stdout and stderr in ``log``; stop it (by PID) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, once more if needed (a Prefect worker may want two), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def wait_until(ready: Callable[[], bool], timeout: float, what: str,
               proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {proc.returncode}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{what}: not ready after {timeout} s")


def _healthy(api_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=2).json() is True
    except httpx.TransportError:
        return False


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """``prefect server start`` on a free loopback port with its own PREFECT_HOME; yields its API URL."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home.mkdir(parents=True, exist_ok=True)
    env = child_env(PREFECT_HOME=str(home), PREFECT_UI_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                    DO_NOT_TRACK="1")
    env.pop("PREFECT_API_URL", None)
    args = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with process(args, home / "server.log", env) as server:
        wait_until(lambda: _healthy(api), 120, "prefect server", server)
        yield api


@contextmanager
def prefect_worker(pool: str, api_url: str, log: Path, **env: str) -> Iterator[subprocess.Popen]:
    """A process worker polling ``pool`` every second."""
    args = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    worker_env = child_env(PREFECT_API_URL=api_url, PREFECT_WORKER_QUERY_SECONDS="1", **env)
    with process(args, log, worker_env) as worker:
        yield worker
