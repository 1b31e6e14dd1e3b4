"""What every plan shares: a request id, an output folder, provenance, and its stores.

A plan is plain data (pydantic), made by a workflow's planner before anything
is written: it crosses thread, process and Dask boundaries, is cheap to log,
and names every task's job. ``StorePlan`` is one output store with the jobs
that write it; workflows narrow ``jobs`` to their own job type.
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


class StoresPlan(WorkflowPlan):
    """A plan whose outputs are stores listed by an index GeoParquet."""

    stores: list[StorePlan]

    @property
    def n_jobs(self) -> int:
        return sum(len(s.jobs) for s in self.stores)
