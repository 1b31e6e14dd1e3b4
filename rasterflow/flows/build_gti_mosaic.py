"""build-gti-mosaic: a GTI tile index and an AOI to sharded Zarr v3 mosaics.

plan-partitions -> create-store (one per AOI geometry) -> build-shard (one per
partition, cached) -> commit-store -> write-index. A store is committed only
after all its partitions succeeded; the index is written last.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from ..config import current_config
from ..enums import ResamplingMethod
from ..params import BuildGtiMosaicParams
from ..tasks.mosaic import (
    build_shard,
    commit_store_task,
    create_store_task,
    plan_partitions,
    write_index_task,
)
from ..tasks.policy import io_task_options
from ..tasks.publish import publish_stores
from .runtime import write_stores


@flow(name="build-gti-mosaic", validate_parameters=True, persist_result=True)
def build_gti_mosaic_flow(
    gti: str,
    aoi: str,
    bands: list[str],
    location_field: str,
    crs_epsg: int = 3857,
    time_column: str | None = None,
    skip_xy_coords: bool = False,
    xy_chunksize: int = 512,
    shard_size_bytes: int = 3_500_000_000,
    query: str | None = None,
    requester_pays: bool = False,
    sort_field: str | None = None,
    resampling: ResamplingMethod = ResamplingMethod.NEAREST,
    resolution: float | None = None,
    nodata: float | None = None,
) -> str:
    """Build one mosaic store per AOI geometry; returns the index GeoParquet URI."""
    params = BuildGtiMosaicParams.parse(
        gti=gti, aoi=aoi, bands=bands, location_field=location_field, crs_epsg=crs_epsg,
        time_column=time_column, skip_xy_coords=skip_xy_coords, xy_chunksize=xy_chunksize,
        shard_size_bytes=shard_size_bytes, query=query, requester_pays=requester_pays,
        sort_field=sort_field, resampling=resampling, resolution=resolution, nodata=nodata,
    )
    config = current_config()
    logger = get_run_logger()
    plan = plan_partitions(params, config.output_uri)
    logger.info("%d store(s), %d partition(s) under %s", len(plan.stores), plan.n_jobs, plan.output_dir)

    write_stores(plan, build_shard.with_options(**io_task_options(config)), create_store_task, commit_store_task)
    index_uri = write_index_task(plan)
    publish_stores(
        "build-gti-mosaic", index_uri,
        f"# build-gti-mosaic\n\nIndex: `{index_uri}`\n\n{len(plan.stores)} store(s), "
        f"{plan.n_jobs} partition(s), bands {', '.join(plan.stores[0].spec.bands) if plan.stores else '-'}.",
    )
    return index_uri
