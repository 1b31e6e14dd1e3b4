"""Headless Chromium driven over the DevTools protocol: open a page, wait for it, screenshot it.

``--screenshot`` with ``--virtual-time-budget`` (what the Prefect UI test uses)
runs virtual time ahead of web workers, and MapLibre parses GeoJSON in a
worker: its polygons never arrived. Here the page runs in real time and the
test waits until a JavaScript expression says it is ready.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from loopback import free_port, stop, wait_until
from tools import chromium


class Page:
    def __init__(self, socket):
        self.socket = socket
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} still false after {timeout} s")
            time.sleep(0.2)

    def screenshot(self, path: Path) -> bytes:
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(png)
        return png


@contextmanager
def browser_page(url: str, profile: Path, size: tuple[int, int] = (1400, 900)) -> Iterator[Page]:
    """``url`` open in headless Chromium (software WebGL), stopped by PID on exit."""
    from websockets.sync.client import connect

    port = free_port()
    args = [chromium(), "--headless", "--no-sandbox", "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader", "--no-first-run", "--disable-background-networking",
            "--disable-component-update",
            "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
            f"--remote-debugging-port={port}", "--remote-allow-origins=*", url]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        targets: list[dict] = []

        def listed() -> bool:
            try:
                found = httpx.get(f"http://127.0.0.1:{port}/json", timeout=2).json()
            except httpx.TransportError:
                return False
            targets[:] = [t for t in found if t["type"] == "page"]
            return bool(targets)

        wait_until(listed, 60, "chromium", proc)
        with connect(targets[0]["webSocketDebuggerUrl"], max_size=2**26) as socket:
            yield Page(socket)
    finally:
        stop(proc)
