"""What every plan shares: a request id, an output folder, provenance, and its stores.

A plan is plain data (pydantic), made by a workflow's planner before anything
is written: it crosses thread, process and Dask boundaries, is cheap to log,
and names every task's job. ``StorePlan`` is one output store with the jobs
that write it; workflows narrow ``jobs`` to their own job type.

A plan also reports itself (``PlanReport``): what a dry run returns
(``RasterflowClient(dry_run=True)``), with an estimated duration from the
workflow's ``Rate``, measured on the bundled samples.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from . import uris
from .store import StoreSpec

INDEX_NAME = "index.parquet"


class StorePlan(BaseModel):
    """One output store and the jobs that write it."""

    model_config = ConfigDict(frozen=True)

    spec: StoreSpec
    fingerprint: str  # request id + store number: what an adopted store must match
    jobs: list[Any]
    footprint_wkb: str  # EPSG:4326, hex WKB


class WorkflowPlan(BaseModel):
    """A request laid out: where it writes, what it records, and its stores."""

    model_config = ConfigDict(frozen=True)

    workflow: str
    request_id: str
    output_dir: str
    provenance: dict[str, Any]

    @property
    def index_uri(self) -> str:
        return uris.join(self.output_dir, INDEX_NAME)

    def index_rows(self) -> list[dict[str, Any]]:
        """The rows of the plan's index GeoParquet, one per output store (``index.store_row``)."""
        raise NotImplementedError(f"{type(self).__name__} writes no index")

    def reported(self, rate: Rate, workers: int, *, tasks: dict[str, int], parallel: int, pixels: int,
                 bytes_read: int, bytes_written: int | None, inputs: list[str], stores: list[StoreSpec],
                 answer: str | None) -> PlanReport:
        """The plan's ``PlanReport``: what each workflow's ``report`` counts, and the rate's estimate."""
        return PlanReport(
            workflow=self.workflow, request_id=self.request_id, output_dir=self.output_dir, answer=answer,
            inputs=inputs, stores=[StoreReport.of(s) for s in stores], tasks=tasks, pixels=pixels,
            bytes_read=bytes_read, bytes_written=bytes_written, workers=workers,
            estimated_seconds=rate.seconds(sum(tasks.values()), pixels, workers, parallel),
            rate=rate.describe(),
        )


class StoresPlan(WorkflowPlan):
    """A plan whose outputs are stores listed by an index GeoParquet."""

    stores: list[StorePlan]

    @property
    def n_jobs(self) -> int:
        return sum(len(s.jobs) for s in self.stores)


# ---------------------------------------------------------------- dry runs


class Rate(BaseModel):
    """A workflow's documented cost model (docs/workflows.md, "Dry runs and the cache").

    Measured on the bundled samples with the thread task runner and the embedded
    Prefect server (benchmarks/dry_run_estimates.py). ``run_seconds``: the
    flow run, planning, creating and committing stores, the index and the
    artifacts; ``task_seconds``: Prefect's orchestration of one task run (it
    queues on the server, so it does not shrink with workers);
    ``megapixels_per_second``: one worker's throughput in output pixels x bands
    x time slices (the workflow's own unit, named by ``unit``).
    """

    model_config = ConfigDict(frozen=True)

    run_seconds: float
    task_seconds: float
    megapixels_per_second: float
    unit: str = "output pixels x bands x time slices"

    def seconds(self, tasks: int, pixels: int, workers: int, parallel: int) -> float:
        """Estimated wall time: ``parallel`` tasks can share the pixel work among ``workers``."""
        share = max(1, min(workers, parallel))
        work = pixels / 1e6 / self.megapixels_per_second / share
        return self.run_seconds + self.task_seconds * tasks + work

    def describe(self) -> str:
        return (f"{self.run_seconds:g} s per run + {self.task_seconds:g} s per task + "
                f"{self.megapixels_per_second:g} Mpx/s per worker ({self.unit})")


class StoreReport(BaseModel):
    """One output store as a dry run reports it."""

    model_config = ConfigDict(frozen=True)

    uri: str
    crs: str
    height: int
    width: int
    resolution: tuple[float, float]
    bands: list[str]
    times: list[str | None]
    dtype: str
    chunk: int
    shard: tuple[int, int]

    @classmethod
    def of(cls, spec: StoreSpec) -> StoreReport:
        crs = spec.grid.rio_crs
        code = crs.to_authority()
        return cls(uri=spec.uri, crs=":".join(code) if code else crs.to_wkt()[:60], height=spec.grid.height,
                   width=spec.grid.width, resolution=spec.grid.res, bands=list(spec.bands),
                   times=list(spec.times), dtype=spec.dtype, chunk=spec.shard.chunk,
                   shard=(spec.shard.rows, spec.shard.cols))


class PlanReport(BaseModel):
    """What a call would do: its stores, tasks, bytes and an estimated duration; nothing was written.

    ``bytes_read`` counts decoded input pixels (tiles at the output resolution,
    stores whole), ``bytes_written`` the uncompressed output pixels of the
    partitions that would be written (Zstandard makes what lands on storage
    smaller); None where the plan cannot know (the polygons of a vectorize).
    """

    model_config = ConfigDict(frozen=True)

    workflow: str
    request_id: str
    output_dir: str
    answer: str | None  # what the call would return
    inputs: list[str]
    stores: list[StoreReport]
    tasks: dict[str, int]  # task name -> task runs
    pixels: int  # the rate's unit
    bytes_read: int
    bytes_written: int | None
    workers: int
    estimated_seconds: float
    rate: str
    stages: list[PlanReport] = []  # subflows (a recipe's mosaic and prediction)

    def rows(self) -> list[tuple[str, str]]:
        """(what, value) lines of the report: what the CLI's table and ``str()`` show."""
        tasks = ", ".join(f"{name} x{n}" for name, n in self.tasks.items())
        rows = [("workflow", self.workflow), ("request id", self.request_id),
                ("output folder", self.output_dir), ("would return", self.answer or "-")]
        for store in self.stores:
            rows += [("store", store.uri),
                     ("  grid", f"{store.crs}, {store.height} x {store.width} px, "
                                f"{store.resolution[0]:g} x {store.resolution[1]:g} per px"),
                     ("  bands", ", ".join(store.bands)),
                     ("  time slices", ", ".join(t[:10] if t else "NaT" for t in store.times)),
                     ("  layout", f"{store.dtype}, chunks {store.chunk} px, shards {store.shard[0]} x "
                                  f"{store.shard[1]} px")]
        rows += [("tasks", tasks or "-"), ("inputs", f"{len(self.inputs)}: " + ", ".join(self.inputs[:3])
                                           + (", ..." if len(self.inputs) > 3 else "")),
                 ("bytes read", _size(self.bytes_read)),
                 ("bytes written", "unknown before the run" if self.bytes_written is None
                  else f"{_size(self.bytes_written)} uncompressed"),
                 ("estimated duration", f"{self.estimated_seconds:.1f} s on {self.workers} worker(s)"),
                 ("rate", self.rate)]
        for stage in self.stages:
            rows += [(f"{stage.workflow}: {what}", value) for what, value in stage.rows()[1:]]
        return rows

    def __str__(self) -> str:
        rows = self.rows()
        width = max(len(what) for what, _ in rows)
        return "\n".join(f"{what:<{width}}  {value}" for what, value in rows)


def combined_report(workflow: str, stages: list[PlanReport], own_tasks: dict[str, int]) -> PlanReport:
    """A flow of subflows run one after the other: the last stage's answer and stores, the sums."""
    tasks = dict(own_tasks)
    for stage in stages:
        for name, n in stage.tasks.items():
            tasks[f"{stage.workflow}: {name}"] = n
    last = stages[-1]
    return PlanReport(
        workflow=workflow, request_id=last.request_id, output_dir=last.output_dir, answer=last.answer,
        inputs=stages[0].inputs, stores=last.stores, tasks=tasks, pixels=sum(s.pixels for s in stages),
        bytes_read=sum(s.bytes_read for s in stages),
        bytes_written=sum(s.bytes_written or 0 for s in stages), workers=last.workers,
        estimated_seconds=sum(s.estimated_seconds for s in stages), rate="the stages' (below)", stages=stages,
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"
