"""Orchestration overhead: what Prefect (and Dask) add to a run, per run and per task.

Why: every workflow is a Prefect flow of coarse tasks, so a user pays for
orchestration once per run and once per partition. The goals are <= 2 s per
run and <= 50 ms per task with the thread pool. The anchor is the same work
without any orchestration: the engine functions a build-gti-mosaic run calls
(plan, create the store, build every shard in a thread pool of the same size,
commit, write the index), as plain Python calls.

What runs: build_gti_mosaic on the bundled Landsat-8 sample at a coarse
resolution (``--resolution``, 240 m: a grid of about 150 x 160 px), so a
partition's work is tiny, in two layouts of the same pixels: ONE partition
(one shard holds the grid) and MANY (one 16 px chunk per shard). Per layout:
the plain calls, the client with ``task_runner: threads``, with
``task_runner: dask`` (a LocalCluster of ``--workers`` processes started by the
run, as a laptop user gets it) and, with ``--cluster``, with an existing
cluster (``dask_address``): a ``dask scheduler`` and ``--workers`` ``dask
worker`` processes (one thread each) on 127.0.0.1, with a ``prefect server``
on 127.0.0.1 that the client and workers share (``PREFECT_API_URL``), as a
platform runs them; the benchmark starts them first and stops them by PID.
Rounds are interleaved and medians reported; every call writes into a fresh
output root, so the cache never answers.

Overhead per run = flow time - plain time, ONE partition (a run's fixed cost:
flow and task-run bookkeeping, the publish-outputs artifacts, for Dask the
cluster start). Overhead per task = the growth of that overhead from ONE to
MANY partitions, divided by the added partitions.

Prefect runs with its embedded server (no PREFECT_API_URL), as on a laptop;
one untimed call first starts it. With ``--cluster`` every mode talks to the
started ``prefect server`` instead. Run from the repository root::

    python benchmarks/orchestration_overhead.py [--runs 3] [--resolution 240] [--workers 2] [--no-dask]
        [--cluster]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "rasterflow" / "samples" / "landsat8_iguazu"
OUT = REPO / "benchmarks" / "out" / "orchestration_overhead"
BANDS = ["red", "green", "blue"]
CHUNK = 16
LAYOUTS = {"one partition": 1 << 30, "many partitions": CHUNK * CHUNK * 2 * len(BANDS)}  # uint16 bytes


def quiet_prefect(home: Path) -> None:
    """A throwaway Prefect home, no telemetry, quiet console; before Prefect is imported."""
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"  # a loaded 2-core machine
    os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
    os.environ.pop("PREFECT_API_URL", None)


def request(resolution: float, shard_size_bytes: int) -> dict:
    return dict(gti=str(SAMPLE / "tiles.parquet"), aoi=str(SAMPLE / "aoi.geojson"), bands=BANDS,
                location_field="location", crs_epsg=32621, resolution=resolution, xy_chunksize=CHUNK,
                shard_size_bytes=shard_size_bytes)


def run_plain(out: Path, args: dict, workers: int) -> tuple[float, int]:
    """The engine calls of one run without Prefect; (seconds, partitions)."""
    from rasterflow.config import RasterflowConfig
    from rasterflow.engine.build_gti_mosaic.plan import plan_gti_mosaic
    from rasterflow.engine.build_gti_mosaic.shard import build_shard
    from rasterflow.engine.index import write_index
    from rasterflow.engine.store import commit_store, create_store
    from rasterflow.params import BuildGtiMosaicParams

    options = RasterflowConfig(output_uri=str(out)).storage_options_for
    start = time.perf_counter()
    plan = plan_gti_mosaic(BuildGtiMosaicParams.parse(**args), str(out), options)
    for s in plan.stores:
        create_store(s.spec, s.fingerprint, plan.provenance, options(s.spec.uri))
    jobs = [job for s in plan.stores for job in s.jobs]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda job: build_shard(job, options), jobs))
    for s in plan.stores:
        commit_store(s.spec.uri, options(s.spec.uri))
    write_index(plan.index_rows(), plan.index_uri, options(plan.index_uri))
    return time.perf_counter() - start, len(jobs)


def run_flow(out: Path, args: dict, workers: int, runner: str, address: str | None = None) -> float:
    from rasterflow.client import RasterflowClient
    from rasterflow.config import RasterflowConfig

    client = RasterflowClient(RasterflowConfig(output_uri=str(out), task_runner=runner, max_workers=workers,
                                               dask_address=address))
    start = time.perf_counter()
    client.build_gti_mosaic(**args)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def started(argv: list[str], log: Path):
    """A service process, stopped by its PID (SIGTERM, then SIGKILL) however the benchmark ends."""
    with open(log, "wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(check, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} did not come up in {timeout:.0f} s")


def start_cluster(stack: ExitStack, workers: int) -> str:
    """A Prefect server and a Dask scheduler with ``workers`` one-thread workers, all on 127.0.0.1;
    returns the scheduler's address. PREFECT_API_URL is set for this process and the workers."""
    bin_dir = Path(sys.executable).parent
    logs = OUT / "services"
    logs.mkdir(parents=True, exist_ok=True)
    api_port = free_port()
    stack.enter_context(started([str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1",
                                 "--port", str(api_port)], logs / "prefect-server.log"))
    api = f"http://127.0.0.1:{api_port}/api"
    wait_for(lambda: urllib.request.urlopen(f"{api}/health", timeout=2).read() == b"true", "prefect server")
    os.environ["PREFECT_API_URL"] = api
    address = f"tcp://127.0.0.1:{free_port()}"
    stack.enter_context(started([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                                 address.rsplit(":", 1)[1], "--no-dashboard"], logs / "scheduler.log"))
    for n in range(workers):
        stack.enter_context(started([str(bin_dir / "dask"), "worker", address, "--nthreads", "1",
                                     "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                    logs / f"worker-{n}.log"))
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(workers, timeout=120)
    return address


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--resolution", type=float, default=240.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-dask", action="store_true", help="no LocalCluster started per run")
    parser.add_argument("--cluster", action="store_true",
                        help="also an existing cluster: dask scheduler, workers, prefect server on loopback")
    opts = parser.parse_args()

    shutil.rmtree(OUT, ignore_errors=True)
    quiet_prefect(OUT / "prefect-home")
    modes = ["plain", "threads"] + ([] if opts.no_dask else ["dask"]) + (["cluster"] if opts.cluster else [])
    print(f"load average before: {os.getloadavg()}")
    with ExitStack() as stack:
        address = start_cluster(stack, opts.workers) if opts.cluster else None
        measure(opts, modes, address)


def measure(opts: argparse.Namespace, modes: list[str], address: str | None) -> None:
    start = time.perf_counter()
    run_flow(OUT / "cold", request(opts.resolution, LAYOUTS["one partition"]), opts.workers, "threads")
    what = "connects to the prefect server" if address else "starts Prefect's embedded server"
    print(f"cold call ({what}, untimed below): {time.perf_counter() - start:.1f} s")
    if address:  # the workers import Prefect and rasterflow on their first task, once per cluster
        run_flow(OUT / "cold-cluster", request(opts.resolution, LAYOUTS["many partitions"]), opts.workers,
                 "dask", address)

    times = {(layout, mode): [] for layout in LAYOUTS for mode in modes}
    partitions = {}
    for round_ in range(opts.runs):
        for layout, shard_size in LAYOUTS.items():
            args = request(opts.resolution, shard_size)
            for mode in modes:
                out = OUT / f"{round_}-{layout.replace(' ', '-')}-{mode}"
                if mode == "plain":
                    seconds, partitions[layout] = run_plain(out, args, opts.workers)
                elif mode == "cluster":
                    seconds = run_flow(out, args, opts.workers, "dask", address)
                else:
                    seconds = run_flow(out, args, opts.workers, mode)
                times[layout, mode].append(seconds)

    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"\nbuild_gti_mosaic at {opts.resolution:g} m, {opts.workers} workers, median of {opts.runs} "
          f"interleaved rounds (seconds):")
    print(f"{'layout':<17} {'partitions':>10} " + " ".join(f"{m:>9}" for m in modes))
    for layout in LAYOUTS:
        print(f"{layout:<17} {partitions[layout]:>10} "
              + " ".join(f"{median[layout, m]:9.3f}" for m in modes))
    added = partitions["many partitions"] - partitions["one partition"]
    for mode in modes[1:]:
        one = median["one partition", mode] - median["one partition", "plain"]
        many = median["many partitions", mode] - median["many partitions", "plain"]
        per_task = (many - one) / added
        goal = "1 s" if mode == "cluster" else "2 s"
        print(f"{mode:>8}: overhead per run {one:6.2f} s (goal <= {goal}), "
              f"per task {1000 * per_task:6.1f} ms "
              f"(goal <= 50 ms); {median['many partitions', mode] / median['many partitions', 'plain']:.1f}x "
              f"the plain calls with {partitions['many partitions']} partitions")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":  # LocalCluster spawns worker processes that re-import this module
    main()
