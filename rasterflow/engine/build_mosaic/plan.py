"""Planning build_mosaic: named datasets over an AOI to composite jobs.

Each dataset resolves to a tile index of scenes per yearly time slot
(``search``, ``stac``) and a compositing rule (``catalog``); from there the
plan is build_gti_mosaic's: one store per AOI geometry on a grid snapped to
the resolution, partitions of whole shards, and per partition and slot only
the scenes whose footprint touches it. Several datasets share one grid and one
store, their bands named ``<dataset>:<band>``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import shapely
from rasterio.crs import CRS

from .. import uris
from ..build_gti_mosaic.plan import MosaicPlan, MosaicStorePlan, aoi_stores, require_jobs, store_partitions
from ..grid import grid_crs, reproject_geometries
from ..plan import Rate
from ..provenance import output_dir, provenance, request_id
from ..vectors import read_aoi
from .catalog import DatasetSpec, Rule
from .composite import CompositeJob, DatasetPart, Scene, check_stack
from .request import BuildMosaicRequest
from .search import SceneIndex

WORKFLOW = "build-mosaic"
METRES_PER_DEGREE = 111_320.0  # at the equator; native resolutions in a geographic CRS


class CompositeStorePlan(MosaicStorePlan):
    jobs: list[CompositeJob]  # type: ignore[assignment]  # narrower job type


class DatasetMosaicPlan(MosaicPlan):
    """build-gti-mosaic's plan, with composite jobs in place of tile-mosaic jobs."""

    stores: list[CompositeStorePlan]  # type: ignore[assignment]

    # Per-pixel medians over every scene of a year (benchmarks/dry_run_estimates.py).
    RATE: ClassVar[Rate] = Rate(run_seconds=2.0, task_seconds=0.08, megapixels_per_second=4.0)

    def index_columns(self) -> dict[str, Any]:
        return {"datasets": list(self.provenance["inputs"]["datasets"])}

    def sources_read(self, job: Any) -> int:
        """Scenes a job composites, in units of the store's bands (each dataset reads its own)."""
        return max(1, round(sum(len(p.scenes) * len(p.spec.output_bands) for p in job.parts) / job.n_bands))

    def input_uris(self) -> list[str]:
        inputs = self.provenance["inputs"]
        return [inputs["aoi"], *(f"{name}: {len(d['scenes'])} scene(s) from {d['source']}"
                                 for name, d in inputs["datasets"].items())]


def _dtype_and_nodata(specs: list[DatasetSpec]) -> tuple[str, float]:
    dtype = str(np.result_type(*[np.dtype(s.dtype) for s in specs]))
    if np.issubdtype(dtype, np.floating):
        return dtype, math.nan
    return dtype, float(specs[0].nodata)


def _resolution(request: BuildMosaicRequest, specs: list[DatasetSpec], dst_crs: CRS) -> tuple[float, float]:
    if request.resolution is not None:
        return request.resolution, request.resolution
    metres = min(s.resolution for s in specs)
    res = metres / METRES_PER_DEGREE if dst_crs.is_geographic else metres
    return res, res


SceneTrees = dict[tuple[str, int], tuple[list[Scene], shapely.STRtree]]


def scene_trees(found: SceneIndex, dst_crs: CRS) -> SceneTrees:
    """Per dataset and year, its scenes and a tree of their footprints in the target CRS.

    Footprints are densified and reprojected all at once, each distinct one
    once (a year of a tile's acquisitions often shares one), and each
    partition asks the tree for the scenes near it: a continental index of
    tens of thousands of scenes over a thousand partitions plans in seconds
    (one intersection test per scene and partition took minutes). Edges are
    cut into 16 segments before reprojection: the chord of a 7 km segment of
    a 110 km scene edge strays about a metre from the curve (length^2 / 8R),
    inside the pixel of reach every partition has.
    """
    trees: SceneTrees = {}
    for prefix, fps in found.footprints.items():
        ids = list(fps)
        distinct, which = np.unique(np.array([fps[i] for i in ids], dtype=object), return_inverse=True)
        geoms = shapely.from_wkb(distinct)
        bounds = shapely.bounds(geoms)
        extent = np.maximum(np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]), 1e-9)
        projected = reproject_geometries(shapely.segmentize(geoms, extent / 16), "EPSG:4326", dst_crs)
        by_id = dict(zip(ids, projected[which.ravel()], strict=True))
        for year, scenes in found.scenes[prefix].items():
            trees[prefix, year] = scenes, shapely.STRtree([by_id[s.id] for s in scenes])
    return trees


def _parts(found: SceneIndex, trees: SceneTrees, offsets: list[int], year: int, wbox, reach: float,
           width: int) -> list[DatasetPart]:
    """Each dataset's scenes of ``year`` within ``reach`` (a pixel) of the partition ``wbox``, oldest
    first, with where its bands go.

    Each scene carries its footprint's box, so a chunk reads only the scenes reaching it;
    ``width`` is a chunk's (medians are stacked chunk by chunk).
    """
    parts = []
    for ds, offset in zip(found.specs, offsets, strict=False):  # offsets end with the total: one more
        scenes, tree = trees.get((ds.prefix, year), ([], shapely.STRtree([])))
        xmin, ymin, xmax, ymax = wbox.bounds  # grown by the reach (a pixel), corners square
        near = tree.query(shapely.box(xmin - reach, ymin - reach, xmax + reach, ymax + reach),
                          predicate="intersects")
        touching = [scenes[i].model_copy(update={"bounds": tuple(tree.geometries[i].bounds)})
                    for i in np.sort(near)]
        if touching:
            if ds.rule is Rule.MEDIAN:
                check_stack(ds, len(touching), width)  # fails here, before any store exists
            parts.append(DatasetPart(spec=ds, scenes=touching, band_offset=offset))
    return parts


def plan_dataset_mosaic(
    request: BuildMosaicRequest,
    found: SceneIndex,
    output_root: str,
    storage_options_for: uris.OptionsFor = uris.no_options,
) -> DatasetMosaicPlan:
    uris.check_output_root(output_root, storage_options_for(output_root))
    aoi = read_aoi(request.aoi, storage_options_for(request.aoi))
    assert request.output_crs is not None  # a default when neither crs_epsg nor target_crs is given
    dst_crs = grid_crs(request.output_crs)
    res = _resolution(request, found.specs, dst_crs)
    dtype, nodata = _dtype_and_nodata(found.specs)
    bands = [b for spec in found.specs for b in spec.output_bands]
    offsets = np.cumsum([0] + [len(s.output_bands) for s in found.specs]).tolist()
    times: list[str | None] = [f"{year}-01-01T00:00:00" for year in found.years]

    # Scenes whose footprint (in the target CRS) comes within a pixel of a partition: edge pixels
    # still read them.
    reach = max(res)
    trees = scene_trees(found, dst_crs)
    rid = request_id(
        params=request.fingerprint_parameters(), sources=[s.source.describe() for s in found.specs],
        scenes={p: {y: [s.model_dump() for s in sc] for y, sc in by.items()}
                for p, by in found.scenes.items()},
        aoi=[g.wkb_hex for g in aoi.geometry], aoi_crs=aoi.crs.to_string(),
    )
    out = output_dir(output_root, WORKFLOW, rid)
    stores = []
    for store in aoi_stores(aoi, dst_crs, res, (0.0, 0.0), out, rid, bands=bands, times=times, dtype=dtype,
                            nodata=nodata, chunk=request.xy_chunksize,
                            shard_size_bytes=request.shard_size_bytes, skip_xy_coords=request.skip_xy_coords):
        jobs = [
            CompositeJob(key=f"{store.fingerprint[:16]}-t{t}-{window.id}", store_uri=store.spec.uri,
                         time_index=t, window=window, grid=wgrid, n_bands=len(bands), parts=parts,
                         dtype=dtype, nodata=nodata, mask_wkb=mask,
                         warp_error_threshold=request.warp_error_threshold,
                         store_width=store.spec.grid.width)
            for window, wgrid, wbox, mask in store_partitions(store, request.shard_size_bytes)
            for t, year in enumerate(found.years)
            if (parts := _parts(found, trees, offsets, year, wbox, reach,
                                min(wgrid.width, request.xy_chunksize)))
        ]
        require_jobs(request.aoi, store, jobs, f"no scene of {[s.prefix for s in found.specs]} in the period")
        footprint = store.spec.grid.footprint("EPSG:4326").wkb_hex
        stores.append(CompositeStorePlan(spec=store.spec, fingerprint=store.fingerprint,
                                         aoi_index=store.aoi_index, jobs=jobs, footprint_wkb=footprint))
    inputs = {
        "aoi": request.aoi,
        "datasets": {s.prefix: {"source": s.source.describe(),
                                "scenes": sorted({sc.id for sc_list in found.scenes[s.prefix].values()
                                                  for sc in sc_list})}
                     for s in found.specs},
    }
    return DatasetMosaicPlan(workflow=WORKFLOW, request_id=rid, output_dir=out, stores=stores,
                             provenance=provenance(WORKFLOW, request.fingerprint_parameters(), inputs, rid))
