"""The warm runner: command-line calls that start with everything imported.

A ``rasterflow`` command is a new process, and a new process spends 3-5 s of
CPU importing Prefect, GDAL, pandas, zarr and the flows before its first task,
even when every task is then answered from the cache. ``rasterflow server
start`` starts this runner beside the background Prefect server: it imports
all of that once and forks one child per call (``os.fork``: a child is a copy
of a process that has imported, not started, anything: no thread, no Prefect
client). The child takes the caller's working directory and environment, runs
the client method as the command would, on the background server (so the run
is in its UI), and streams the run's UI link, progress and the result back as
JSON lines. A caller that goes away (Ctrl-C) interrupts its child, and Prefect
ends that flow run as it ends any interrupted run.

The command line (``submit``) uses the runner only when it would run on the
same server with the same code: it declines (HTTP 409) a caller with other
Prefect settings or another copy of rasterflow, and the command then runs in
its own process. Requests carry a token from the runner's state file (readable
by its owner only): a call can run code (a TorchScript model), so other local
users must not reach it. Python scripts call the client directly and pay the
imports once per process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import sys
import threading
import traceback
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from . import services

# Variables that select another Prefect server or database: a caller whose values differ runs alone.
_OWN_PREFECT = ("PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_UI_URL")


def prefect_environment(env: dict[str, str]) -> dict[str, str]:
    """The PREFECT_* settings of ``env`` that decide where and how runs are recorded (not logging)."""
    return {k: v for k, v in env.items()
            if k.startswith("PREFECT_") and k not in _OWN_PREFECT and not k.startswith("PREFECT_LOGGING_")}


# ---------------------------------------------------------------- the caller's side (standard library only)


def submit(method: str, arguments: dict[str, Any], config: str | None, verbose: bool,
           on_event: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
    """Run ``client.<method>(**arguments)`` in the background runner; its last event (``result`` or
    ``error``), or None when no runner answers or it declines (then the caller runs the call itself).

    ``on_event`` receives the events before the last (``run``, ``progress``, ``log``), or
    ``declined`` with the runner's reason.
    """
    import http.client

    state = services.status(services.RUNNER)
    if state is None or os.environ.get("PREFECT_API_URL"):  # none, or the caller names its own server
        return None
    host, port = state["url"].removeprefix("http://").split(":")
    body = json.dumps({
        "method": method, "arguments": arguments, "config": os.path.abspath(config) if config else None,
        "cwd": os.getcwd(), "env": dict(os.environ), "verbose": verbose, "code": services.code_identity(),
    }, default=str).encode()
    connection = http.client.HTTPConnection(host, int(port), timeout=None)
    try:
        connection.request("POST", "/call", body, {"Authorization": f"Bearer {state['token']}",
                                                   "Content-Type": "application/json"})
        answer = connection.getresponse()
        if answer.status != HTTPStatus.OK:
            reason = json.loads(answer.read() or b"{}").get("reason") or f"HTTP {answer.status}"
            on_event({"event": "declined", "reason": reason})
            return None
        last = None
        for line in answer:
            event = json.loads(line)
            if event["event"] in ("result", "error"):
                last = event
            else:
                on_event(event)
        if last is None:
            raise RuntimeError("the background runner ended the call without a result (see its log: "
                               f"{state['log']})")
        return last
    except ConnectionError:
        return None
    finally:
        connection.close()


# ---------------------------------------------------------------- the runner's side


class _Server(socketserver.ForkingMixIn, HTTPServer):
    token = ""
    code = ""
    environment: dict[str, str] = {}

    def process_request(self, request, client_address):  # noqa: ANN001 - socketserver's signature
        pid = os.fork()
        if pid:
            self.active_children = (self.active_children or set()) | {pid}
            self.close_request(request)
            return
        self.socket.close()  # the child serves this one request, never the next
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - one failed request must not end the child unreported
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            _exit_child()


def _exit_child() -> None:
    """Send the run's last logs and events, then leave without tearing the interpreter down.

    A child is a copy-on-write image of the runner: a normal exit would visit every object
    the parent imported (measured: ~6 s of CPU a call on a loaded machine) only to free it.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):  # what Prefect's exit hooks would drain
        service.drain_all(timeout=10)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _answer(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/health":
            self._answer(HTTPStatus.OK, {"pid": os.getppid(), "code": self.server.code})
        else:
            self._answer(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if self.path != "/call" or self.headers.get("Authorization") != f"Bearer {self.server.token}":
            self._answer(HTTPStatus.FORBIDDEN, {"error": "forbidden"})
            return
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reason = self._declined(request)
        if reason:
            self._answer(HTTPStatus.CONFLICT, {"reason": reason})
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        _run_call(request, _EventWriter(self.wfile), self.connection)

    def _declined(self, request: dict[str, Any]) -> str | None:
        if request.get("code") != self.server.code:
            return "the caller runs another copy or version of rasterflow"
        if prefect_environment(request["env"]) != self.server.environment:
            return "the caller's Prefect settings differ from the runner's"
        return None


class _EventWriter:
    """JSON lines to the caller, from any thread; a caller gone is not the run's failure."""

    def __init__(self, out):  # noqa: ANN001 - a socket file
        self.out, self.lock = out, threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event} | fields, default=str).encode() + b"\n"
        with self.lock:
            try:
                self.out.write(line)
                self.out.flush()
            except OSError:
                pass


class _Forwarder:
    """Log records as events: progress from ``rasterflow.progress``, Prefect's lines when verbose."""

    def __init__(self, send: _EventWriter):
        import logging

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                fields = {k: getattr(record, k) for k in ("label", "done", "total", "run_url")
                          if hasattr(record, k)}
                if fields:
                    send("run" if "run_url" in fields else "progress", **fields)
                elif record.name.startswith("prefect"):
                    send("log", message=self.format(record))

        self.handler = Handler()
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s - %(message)s"))


def _watch_caller(connection: socket.socket, answered: threading.Event) -> None:
    """Interrupt this child when its caller closes the connection before the answer (Ctrl-C)."""
    import select

    def watch() -> None:
        try:
            while not answered.is_set():
                readable, _, _ = select.select([connection], [], [], 0.5)
                if readable and not connection.recv(1, socket.MSG_PEEK) and not answered.is_set():
                    os.kill(os.getpid(), signal.SIGINT)
                    return
        except (OSError, ValueError):  # the connection closed under us: the call is over
            return

    threading.Thread(target=watch, name="rasterflow-caller-watch", daemon=True).start()


def _run_call(request: dict[str, Any], send: _EventWriter, connection: socket.socket) -> None:
    """In the forked child: become the caller (directory, environment), run the call, answer."""
    import logging

    os.chdir(request["cwd"])
    api_url = os.environ["PREFECT_API_URL"]
    os.environ.clear()
    os.environ.update(request["env"], PREFECT_API_URL=api_url)
    forwarder = _Forwarder(send)
    loggers = [logging.getLogger("rasterflow.progress")] + ([logging.getLogger("prefect")]
                                                           if request["verbose"] else [])
    for logger in loggers:
        logger.addHandler(forwarder.handler)
        logger.setLevel(logging.INFO)
    loggers[0].propagate = False  # progress goes to the caller, not to the runner's log
    answered = threading.Event()
    _watch_caller(connection, answered)
    from .client import RasterflowClient
    from .errors import RasterflowError

    try:
        client = RasterflowClient(request["config"])
        result = getattr(client, request["method"])(**request["arguments"])
        summary = report(request["method"], result)
        answered.set()
        send("result", value=result, report=summary)
    except RasterflowError as exc:
        answered.set()
        send("error", kind="rasterflow", message=str(exc))
    except BaseException as exc:  # noqa: BLE001 - whatever ended the call, the caller hears of it
        answered.set()
        send("error", kind=type(exc).__name__, message=str(exc), traceback=traceback.format_exc())


def report(method: str, result: Any) -> dict[str, Any]:
    """What a call wrote, for the command line's summary table (read where the call ran)."""
    if method == "vectorize_mosaic":
        if result is None:
            return {"labels": {}}
        import pyarrow.parquet as pq

        labels = pq.read_table(result, columns=["label"])["label"].to_pandas().value_counts(sort=False)
        return {"labels": {str(k): int(v) for k, v in labels.items()}}
    from .engine.index import is_zarr_group, read_index

    if is_zarr_group(result):  # build_zarr_multiscales given a store answers its multiscales store
        return {"levels": _pyramid_levels(result)}
    rows = []
    for row in read_index(result).itertuples():
        when = "-" if str(row.start_time) == "NaT" else f"{row.start_time:%Y-%m-%d}..{row.end_time:%Y-%m-%d}"
        rows.append({"location": row.location, "bands": ", ".join(row.bands),
                     "shape": f"{row.height} x {row.width}", "crs": row.crs, "time": when})
    return {"rows": rows}


def _pyramid_levels(uri: str) -> list[dict[str, str]]:
    import zarr

    from .engine.store import zarr_store

    attrs = zarr.open_group(zarr_store(uri, read_only=True), mode="r").attrs
    layout = attrs["multiscales"]["layout"]  # type: ignore[index, call-overload]
    return [{"asset": item["asset"], "shape": f"{item['spatial:shape'][0]} x {item['spatial:shape'][1]}",
             "pixel_size": f"{item['spatial:transform'][0]:g}"} for item in layout]


# What a call imports on first use, beyond the flows' modules (measured: about 2 s of CPU per child).
_FIRST_USE = ("prefect.flow_engine", "prefect.task_engine", "prefect.concurrency.sync", "fastapi.encoders",
              "pyogrio", "pyarrow.dataset", "pyarrow.parquet", "graphviz")


def _warm_up() -> None:
    """Import what calls use, so no child pays for it (torch for predict-mosaic included).

    Imports only: nothing here may start a thread or open a connection, which a fork would copy.
    """
    import importlib

    import rasterflow.client  # noqa: F401
    from rasterflow.flows import FLOWS  # noqa: F401  (every workflow's module)

    for module in _FIRST_USE:
        try:
            importlib.import_module(module)
        except ImportError:  # an optional part of a dependency: the call that needs it imports it
            pass

    try:
        import torch  # noqa: F401
    except ImportError:  # an install without the model extra: predict imports it when asked
        pass


def serve(port: int) -> None:
    """Serve calls on 127.0.0.1:``port`` until SIGTERM (``python -m rasterflow.runner``)."""
    import gc

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    _warm_up()
    server = _Server((services.LOOPBACK, port), _Handler)
    server.token = os.environ.pop(services.TOKEN_ENV)
    server.code = services.code_identity()
    server.environment = prefect_environment(dict(os.environ))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # The run settings of every call (flows.runtime.run_settings), built once here, not in each child.
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        gc.freeze()  # what is imported stays out of the children's collections, and so uncopied
        server.serve_forever()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rasterflow.runner")
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args().port)
