"""A real S3-compatible server on loopback, and a fault-injecting proxy in front of it.

``MotoServer`` runs moto's server mode (``moto_server``) as a child process:
real HTTP, real S3 wire protocol, spoken to by s3fs/botocore and by GDAL's
/vsis3/ alike. ``FaultProxy`` is a plain threaded HTTP reverse proxy that
answers a seeded share of requests with the errors S3 itself sends when it is
overloaded (503 SlowDown, 500 InternalError) *before* forwarding them, so a
failed request has no effect on the server, exactly like a throttled one.
"""

from __future__ import annotations

import http.client
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Credentials moto accepts (it does not check them); never real ones.
ACCESS_KEY, SECRET_KEY = "rasterflow-test", "rasterflow-test-secret"

_FAULTS = [
    (503, "SlowDown", "Please reduce your request rate."),
    (500, "InternalError", "We encountered an internal error. Please try again."),
]
_DENIED = (403, "AccessDenied", "Access Denied")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    """The whole body of ``request``: chunked transfer encoding, or Content-Length bytes."""
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(request.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while request.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(request.rfile.read(size))
            request.rfile.readline()
    return request.rfile.read(int(request.headers.get("Content-Length") or 0))


class MotoServer:
    """``moto_server`` on 127.0.0.1:<free port>, stopped by its PID."""

    def __init__(self, log_path: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")
        executable = Path(sys.executable).with_name("moto_server")
        self.process = subprocess.Popen(
            [str(executable), "-H", "127.0.0.1", "-p", str(self.port)], stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_http(f"{self.endpoint}/moto-api/", timeout=60, process=self.process)
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class FaultProxy:
    """Forward HTTP to ``upstream``; fail ``rate`` of requests (seeded) with S3's transient errors.

    ``failing`` switches faults on and off between phases of a test; ``deny``
    (method, path) -> bool answers 403 AccessDenied to the requests it picks;
    ``counts`` says how many requests were forwarded, failed and denied, and
    ``requests`` lists (method, path, user agent, x-amz-request-payer) of each.
    """

    def __init__(self, upstream_port: int, rate: float, seed: int = 0):
        self.rate = rate
        self.failing = False
        self.deny: Callable[[str, str], bool] | None = None
        self.counts = {"forwarded": 0, "failed": 0, "denied": 0}
        self.requests: list[tuple[str, str, str, str | None]] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(upstream_port))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _fault(self, method: str, path: str) -> tuple[int, str, str] | None:
        with self._lock:
            if self.deny is not None and self.deny(method, path):
                self.counts["denied"] += 1
                return _DENIED
            if self.failing and self._random.random() < self.rate:
                self.counts["failed"] += 1
                return self._random.choice(_FAULTS)
            self.counts["forwarded"] += 1
            return None

    def _handler(self, upstream_port: int):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

            def log_message(self, *args) -> None:  # quiet
                pass

            def _relay(self) -> None:
                body = _read_body(self)  # read whole, so a faulted request leaves the connection usable
                with proxy._lock:
                    proxy.requests.append((self.command, self.path, self.headers.get("User-Agent", ""),
                                           self.headers.get("x-amz-request-payer")))
                fault = proxy._fault(self.command, self.path)
                if fault is not None:
                    status, code, message = fault
                    payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                               f"<Message>{message}</Message></Error>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in ("transfer-encoding", "connection", "content-length", "date",
                                               "server"):
                            self.send_header(key, value)
                    length = (response.getheader("Content-Length") if self.command == "HEAD"
                              else str(len(data)))
                    self.send_header("Content-Length", length or "0")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        return Handler

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
