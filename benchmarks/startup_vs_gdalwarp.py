"""Start-up: what a `rasterflow` command costs from a new process, against the gdalwarp it replaces.

Why: every CLI call and script used to start Prefect's embedded server (~8 s
for a call served entirely from the cache, ~15 s on a fresh PREFECT_HOME). The
goals: a second identical call from a new process <= 2 s, a first call on a
fresh machine <= 6 s of overhead. The anchor is `gdalwarp` warping the same
four Landsat tiles onto a grid as a user runs it (a new process, no cache).

What runs: `rasterflow build-gti-mosaic` on the bundled Landsat-8 sample at
120 m (a tiny job: the time is start-up and orchestration), each call a new
process, in two set-ups on a fresh PREFECT_HOME and output root each:
  embedded:   no server; each process starts Prefect's embedded server;
  background: `rasterflow server start` once (its time reported), then calls.
For each: the first call (cold: empty cache and database) and the median of
`--runs` identical second calls (answered from the cache). Run from the
repository root::

    python benchmarks/startup_vs_gdalwarp.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "rasterflow" / "samples" / "landsat8_iguazu"
OUT = REPO / "benchmarks" / "out" / "startup"


def environment(home: Path, state: Path) -> dict[str, str]:
    env = dict(os.environ, PREFECT_HOME=str(home), RASTERFLOW_STATE_DIR=str(state), DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(REPO),
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    env.pop("PREFECT_API_URL", None)
    env.pop("RASTERFLOW_CONFIG_FILE", None)
    return env


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True, cwd=OUT)
    return time.perf_counter() - start


def call(out: Path) -> list[str]:
    return [sys.executable, "-m", "rasterflow.cli", "build-gti-mosaic", str(SAMPLE / "tiles.parquet"),
            str(SAMPLE / "aoi.geojson"), "-b", "red", "-b", "green", "-b", "blue", "--location-field",
            "location", "--crs-epsg", "3857", "--resolution", "120", "--config", str(out / "rasterflow.yaml")]


def setup(name: str, runs: int) -> dict[str, float]:
    root = OUT / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    config = f"output_uri: {root / 'out'}\nserver_port: 4299\nview_port: 8799\n"
    (root / "rasterflow.yaml").write_text(config)
    env = environment(root / "prefect-home", root / "state")
    times: dict[str, float] = {}
    cli = [sys.executable, "-m", "rasterflow.cli"]
    if name == "background":
        start = cli + ["server", "start", "--config", str(root / "rasterflow.yaml")]
        times["server start"] = timed(start, env)
    try:
        times["first call"] = timed(call(root), env)
        times["second call"] = statistics.median(timed(call(root), env) for _ in range(runs))
    finally:
        if name == "background":
            subprocess.run(cli + ["server", "stop"], env=env, check=True, capture_output=True)
    return times


def gdalwarp(runs: int) -> float:
    tiles = sorted(str(p) for p in SAMPLE.glob("LC08_*.tif"))
    target = OUT / "gdalwarp.tif"

    def once() -> float:
        target.unlink(missing_ok=True)
        return timed(["gdalwarp", "-q", "-t_srs", "EPSG:3857", "-tr", "120", "120", "-tap", *tiles,
                      str(target)], dict(os.environ))
    return statistics.median(once() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()}")
    anchor = gdalwarp(args.runs)
    results = {name: setup(name, args.runs) for name in ("embedded", "background")}
    print(f"\nanchor gdalwarp (new process): {anchor:.2f} s")
    header = ("set-up", "server start", "first call", "second call", "second / gdalwarp")
    print(f"{header[0]:<12} {header[1]:>12} {header[2]:>11} {header[3]:>12} {header[4]:>18}")
    for name, times in results.items():
        start = f"{times['server start']:.2f} s" if "server start" in times else "-"
        print(f"{name:<12} {start:>12} {times['first call']:>9.2f} s {times['second call']:>10.2f} s "
              f"{times['second call'] / anchor:>17.1f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
