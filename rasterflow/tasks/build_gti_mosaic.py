"""Tasks of build-gti-mosaic: plan-partitions and build-shard (create-store, commit-store and
write-index are every store-writing workflow's, in ``tasks.stores``).

build-shard is cached across runs (``policy.WorkKey``): its key is the
partition key (which fingerprints the request and its input files), the store
generation and the code fingerprint, never the run id. A second identical run,
or a re-run after a crash, therefore skips every partition already written.
"""

from __future__ import annotations

from prefect import task

from ..config import current_config
from ..engine.build_gti_mosaic.plan import MosaicPlan, ShardJob, plan_gti_mosaic
from ..engine.build_gti_mosaic.request import BuildGtiMosaicRequest
from ..engine.build_gti_mosaic.shard import ShardSummary, build_shard
from .checks import planned
from .policy import cached, reporting


@task(name="plan-partitions", persist_result=False)
def plan_partitions(request: BuildGtiMosaicRequest, output_root: str) -> MosaicPlan:
    return planned("build-gti-mosaic", request, output_root,
                   lambda: plan_gti_mosaic(request, output_root, current_config().storage_options_for))


@task(name="build-shard", task_run_name="build-shard-{job.key}", **cached())
@reporting
def build_shard_task(job: ShardJob, generation: str) -> ShardSummary:
    return build_shard(job, current_config().storage_options_for)
