"""Start-up: what a `rasterflow` call costs from a new process, against the gdalwarp it replaces.

Why: every CLI call and script used to start Prefect's embedded server (~8 s
for a call served entirely from the cache, ~15 s on a fresh PREFECT_HOME). The
goals: a second identical call from a new process <= 2 s, a first call on a
fresh machine <= 6 s of overhead. The anchor is `gdalwarp` warping the same
four Landsat tiles onto a grid as a user runs it (a new process, no cache).

What runs: `rasterflow build-gti-mosaic` on the bundled Landsat-8 sample at
120 m (a tiny job: the time is start-up and orchestration), each call a new
process, in three set-ups, each on a fresh PREFECT_HOME and output root:
  embedded:   no server: the command starts Prefect's embedded server (the default);
  background: `rasterflow server start` once (its time reported), then commands, which
              run in its warm runner;
  script:     the same background servers, and the call made from a new Python process
              with `RasterflowClient` (no runner: a script pays its imports).
For each: the first call (cold: empty cache and database) and the median of
`--runs` identical second calls (answered from the cache). On a shared machine
wall times stretch with the load, so the CPU seconds a call costs are printed
too: the command's process and its children, plus what the background
processes (Prefect server, runner and its forked children) spent meanwhile
beyond their idle rate (measured for 5 s before the calls). The server and the
runner's child work in parallel on two cores, so on an idle machine a call's
wall time is at most that CPU time.
Run from the repository root::

    python benchmarks/startup_vs_gdalwarp.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "rasterflow" / "samples" / "landsat8_iguazu"
OUT = REPO / "benchmarks" / "out" / "startup"
TICK = os.sysconf("SC_CLK_TCK")


def environment(home: Path, state: Path) -> dict[str, str]:
    env = dict(os.environ, PREFECT_HOME=str(home), RASTERFLOW_STATE_DIR=str(state), DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(REPO),
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    env.pop("PREFECT_API_URL", None)
    env.pop("RASTERFLOW_CONFIG_FILE", None)
    return env


def process_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and of its children it has reaped (utime, stime, cutime, cstime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / TICK


def background_pids(state: Path) -> list[int]:
    return [json.loads(p.read_text())["pid"] for p in state.glob("*.json")]


def idle_rates(state: Path, seconds: float = 5.0) -> dict[int, float]:
    """CPU seconds per second each background server spends with no call (its own loops)."""
    pids = background_pids(state)
    before = {pid: process_cpu(pid) for pid in pids}
    time.sleep(seconds)
    return {pid: (process_cpu(pid) - before[pid]) / seconds for pid in pids}


def timed(args: list[str], env: dict[str, str], idle: dict[int, float] | None = None) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of the process, its children and the background servers (``idle``:
    their pids and idle rates, subtracted over the call)."""
    idle = idle or {}
    before = {pid: process_cpu(pid) for pid in idle}
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, capture_output=True, cwd=OUT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    settle = 2.0 if idle else 0.0
    time.sleep(settle)  # the runner reaps its finished child (which sends its last events) meanwhile
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    cpu += sum(process_cpu(pid) - before[pid] - rate * (wall + settle) for pid, rate in idle.items())
    return wall, cpu


def command(out: Path) -> list[str]:
    return [sys.executable, "-m", "rasterflow.cli", "build-gti-mosaic", str(SAMPLE / "tiles.parquet"),
            str(SAMPLE / "aoi.geojson"), "-b", "red", "-b", "green", "-b", "blue", "--location-field",
            "location", "--crs-epsg", "3857", "--resolution", "120", "--config", str(out / "rasterflow.yaml")]


def script(out: Path) -> list[str]:
    code = ("from rasterflow import RasterflowClient as C\n"
            f"C({str(out / 'rasterflow.yaml')!r}).build_gti_mosaic({str(SAMPLE / 'tiles.parquet')!r}, "
            f"{str(SAMPLE / 'aoi.geojson')!r}, ['red', 'green', 'blue'], 'location', crs_epsg=3857, "
            "resolution=120)\n")
    return [sys.executable, "-c", code]


def median_pair(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def setup(name: str, runs: int) -> dict[str, tuple[float, float]]:
    root = OUT / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "rasterflow.yaml").write_text(
        f"output_uri: {root / 'out'}\nserver_port: 4299\nview_port: 8799\nrunner_port: 8798\n")
    state = root / "state"
    env = environment(root / "prefect-home", state)
    cli = [sys.executable, "-m", "rasterflow.cli"]
    call = script if name == "script" else command
    times: dict[str, tuple[float, float]] = {}
    if name != "embedded":
        start = cli + ["server", "start", "--config", str(root / "rasterflow.yaml")]
        times["server start"] = timed(start, env)
    try:
        idle = idle_rates(state) if name != "embedded" else None
        times["first call"] = timed(call(root), env, idle)
        times["second call"] = median_pair([timed(call(root), env, idle) for _ in range(runs)])
    finally:
        if name != "embedded":
            subprocess.run(cli + ["server", "stop"], env=env, check=True, capture_output=True)
    return times


def gdalwarp(runs: int) -> tuple[float, float]:
    tiles = sorted(str(p) for p in SAMPLE.glob("LC08_*.tif"))
    target = OUT / "gdalwarp.tif"

    def once() -> tuple[float, float]:
        target.unlink(missing_ok=True)
        return timed(["gdalwarp", "-q", "-t_srs", "EPSG:3857", "-tr", "120", "120", "-tap", *tiles,
                      str(target)], dict(os.environ))
    return median_pair([once() for _ in range(runs)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--setups", nargs="+", default=["embedded", "background", "script"])
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()}")
    anchor = gdalwarp(args.runs)
    results = {name: setup(name, args.runs) for name in args.setups}
    print(f"\nanchor gdalwarp (new process): wall {anchor[0]:.2f} s, cpu {anchor[1]:.2f} s")
    print("seconds: wall / cpu (the command, its children and the background servers)")
    columns = ("server start", "first call", "second call", "second / gdalwarp")
    print(f"{'set-up':<12} " + " ".join(f"{c:>14}" for c in columns[:3]) + f" {columns[3]:>18}")
    for name, times in results.items():
        cells = [f"{times[k][0]:6.2f} /{times[k][1]:5.2f}" if k in times else "-"
                 for k in ("server start", "first call", "second call")]
        ratio = times["second call"][0] / anchor[0]
        print(f"{name:<12} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14} {ratio:>17.1f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
