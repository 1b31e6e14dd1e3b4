"""A continental job, planned and never run: Sentinel-2 at 10 m over the contiguous US, then predict and
vectorize over the mosaic, each at its defaults.

The scene index is made here (no catalog is reached): one 110 km tile per
degree cell of the AOI's bounding box (Sentinel-2's MGRS tiles are 110 km),
``scenes_per_tile`` acquisitions each in a year (a 5-day revisit leaves 70-75;
fewer pass the cloud limit). The stores predict and vectorize read are the
planned stores themselves, created and committed empty (metadata only), so
their plans see exactly the grids a real run would.

``python tests/continental.py`` prints the table; ``tests/engine/
test_continental_plan.py`` checks the limits.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import Polygon, box, mapping

from rasterflow.engine.build_mosaic.catalog import dataset_spec
from rasterflow.engine.build_mosaic.composite import Scene
from rasterflow.engine.build_mosaic.plan import plan_dataset_mosaic
from rasterflow.engine.build_mosaic.request import BuildMosaicRequest
from rasterflow.engine.build_mosaic.search import SceneIndex
from rasterflow.engine.predict_mosaic.plan import create_prediction_store, plan_predict_mosaic
from rasterflow.engine.predict_mosaic.request import PredictMosaicRequest
from rasterflow.engine.store import commit_store, create_store, describe_store
from rasterflow.engine.vectorize_mosaic.plan import plan_vectorize
from rasterflow.engine.vectorize_mosaic.request import VectorizeMosaicRequest
from rasterflow.enums import DatasetEnum, InferenceActorEnum, MergeModeEnum

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "rasterflow" / "models" / "landsat8_water.pt2"
DATASET = DatasetEnum.S2_MED_WINDOWED_PIXEL
YEAR = 2023

# The contiguous US, coarsely (lon, lat): a simple polygon is all a plan needs.
CONUS = Polygon([
    (-124.7, 48.4), (-124.4, 42.0), (-120.5, 34.5), (-117.1, 32.5), (-111.0, 31.3), (-106.5, 31.8),
    (-103.0, 29.0), (-97.4, 25.9), (-97.0, 28.0), (-90.0, 29.0), (-83.0, 29.0), (-80.4, 25.2),
    (-80.0, 32.0), (-75.5, 35.3), (-70.0, 41.5), (-67.0, 44.8), (-69.2, 47.4), (-71.5, 45.0),
    (-76.0, 44.9), (-79.0, 43.5), (-83.0, 42.0), (-82.5, 45.5), (-88.0, 48.0), (-95.2, 49.0),
])


def scene_index(scenes_per_tile: int) -> SceneIndex:
    """A year of Sentinel-2 acquisitions over every 1-degree cell that touches CONUS."""
    spec = dataset_spec(DATASET)
    assets = [b.asset for b in spec.bands] + ([spec.mask_asset] if spec.mask_asset else [])
    minx, miny, maxx, maxy = (int(v) for v in CONUS.buffer(1).bounds)
    scenes, footprints = [], {}
    for lon in range(minx, maxx):
        for lat in range(miny, maxy):
            tile = box(lon, lat, lon + 1, lat + 1)
            if not tile.intersects(CONUS):
                continue
            name = f"T{lon + 180:03d}{lat + 90:03d}"
            for k in range(scenes_per_tile):
                day = 1 + (k * 365) // scenes_per_tile
                sid = f"S2B_{name}_{YEAR}{day:03d}"
                scenes.append(Scene(id=sid, datetime=f"{YEAR}-01-01T16:00:00+00:00", offset=-1000.0,
                                    hrefs={a: f"s3://sentinel-cogs/{name}/{sid}/{a}.tif" for a in assets}))
                footprints[sid] = tile.wkb_hex
    scenes.sort(key=lambda s: s.id[-3:])
    return SceneIndex(specs=[spec], years=[YEAR], scenes={spec.prefix: {YEAR: scenes}},
                      footprints={spec.prefix: footprints})


@dataclass
class Planned:
    workflow: str
    tasks: int
    blocks: int  # blocks (predict, vectorize) or partitions (mosaic)
    seconds: float
    peak_mb: float  # Python allocations while planning (tracemalloc)
    plan_kb: float  # the plan as JSON: what a flow holds and ships
    first_seconds: float | None = None  # predict: the session's first plan (model load, batch timing)

    def row(self) -> str:
        first = f"   (first plan of a session: {self.first_seconds:.1f} s)" if self.first_seconds else ""
        return (f"{self.workflow:<18}{self.tasks:>8}{self.blocks:>10}{self.seconds:>10.2f}"
                f"{self.peak_mb:>12.1f}{self.plan_kb:>12.0f}{first}")


def measured(workflow: str, plan: Callable[[], Any], blocks: Callable[[Any], int]) -> tuple[Planned, Any]:
    tracemalloc.start()
    started = time.perf_counter()
    result = plan()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    tasks = sum(len(s.jobs) for s in result.stores) if hasattr(result.stores[0], "jobs") else len(result.jobs)
    return Planned(workflow, tasks, blocks(result), seconds, peak / 2**20,
                   len(result.model_dump_json()) / 1024), result


def plan_mosaic(root: Path, scenes_per_tile: int = 50) -> tuple[Planned, str]:
    """Plan the Sentinel-2 mosaic over CONUS at its defaults and create its store empty (the next plan
    describes it); (the row, the store's URI)."""
    root.mkdir(parents=True, exist_ok=True)
    aoi = root / "conus.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": mapping(CONUS)}]}))
    found = scene_index(scenes_per_tile)
    request = BuildMosaicRequest(datasets=[DATASET], aoi=str(aoi), start=date(YEAR, 1, 1),
                                 end=date(YEAR, 12, 31))
    row, plan = measured("build-mosaic", lambda: plan_dataset_mosaic(request, found, str(root)),
                         lambda p: p.n_jobs)
    store = plan.stores[0]
    create_store(store.spec, store.fingerprint, plan.provenance)
    commit_store(store.spec.uri)
    return row, store.spec.uri


def plan_downstream(root: Path, mosaic: str, xy_block_multiplier: int = 4) -> list[Planned]:
    """Plan predict (the shipped water model on B02-B04) over the mosaic, create its store empty, then
    plan vectorize over the prediction: defaults but for ``xy_block_multiplier`` (4 is the default)."""
    bands = [b for b in describe_store(mosaic).bands if b.split(":")[1] in ("B02", "B03", "B04")]
    predict_request = PredictMosaicRequest(
        store=mosaic, model_path=str(SHIPPED_MODEL), patch_size=256, clip_size=16, device="cpu",
        features=bands, labels=["land", "water"], actor=InferenceActorEnum.SEMANTIC_SEGMENTATION_PYTORCH,
        max_batch_size=16, merge_mode=MergeModeEnum.CLIP, xy_block_multiplier=xy_block_multiplier)
    # A session's first plan loads the model and times batch sizes (seconds, whatever the area); the
    # rows measure what grows with the area.
    started = time.perf_counter()
    plan_predict_mosaic(predict_request, str(root))
    model_seconds = time.perf_counter() - started
    predict, predict_plan = measured("predict-mosaic",
                                     lambda: plan_predict_mosaic(predict_request, str(root)),
                                     lambda p: sum(len(j.blocks) for s in p.stores for j in s.jobs))
    predict.first_seconds = model_seconds
    prediction = predict_plan.stores[0]
    create_prediction_store(prediction, predict_plan.provenance)
    commit_store(prediction.spec.uri)
    vectorize_request = VectorizeMosaicRequest(store=prediction.spec.uri, features=["water"], threshold=0.5,
                                               xy_block_multiplier=xy_block_multiplier)
    vectorize, _ = measured("vectorize-mosaic", lambda: plan_vectorize(vectorize_request, str(root)),
                            lambda p: sum(len(j.blocks) for j in p.jobs))
    return [predict, vectorize]


def plan_continent(root: Path, scenes_per_tile: int = 50, xy_block_multiplier: int = 4) -> list[Planned]:
    """The three workflows over CONUS, each planned at its defaults."""
    mosaic, uri = plan_mosaic(root, scenes_per_tile)
    return [mosaic, *plan_downstream(root, uri, xy_block_multiplier)]


def main() -> None:
    import tempfile

    scenes = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        rows = plan_continent(Path(tmp), scenes)
        print(f"CONUS ({shapely.area(CONUS):.0f} square degrees), Sentinel-2 10 m, {scenes} scenes per tile, "
              f"defaults; {time.perf_counter() - started:.1f} s in all, peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        print(f"{'workflow':<18}{'tasks':>8}{'blocks':>10}{'seconds':>10}{'peak MB':>12}{'plan kB':>12}")
        for row in rows:
            print(row.row())


if __name__ == "__main__":
    main()
