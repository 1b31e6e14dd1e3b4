"""Vectorizing stores: each feature band thresholded and polygonized in blocks,
with the block seams joined so the result equals one whole-raster polygonize.

A block task holds one block (``xy_block_multiplier`` chunks on a side). GDAL
(``rasterio.features.shapes``) polygonizes the block's foreground (value >=
threshold, never nodata) under the requested connectivity. With statistics,
``scipy.ndimage.label`` labels the connected components first and GDAL
polygonizes the label image: one polygon per label, so each polygon knows its
pixels, and its statistics are a bincount instead of a rasterization.
Polygonizing happens in pixel coordinates (offset to the block's place in the
raster), where every vertex is an integer and unions are exact; the store's
transform is applied at the end, with the arithmetic GDAL uses, so coordinates
match a whole-raster run bit for bit.

A piece that touches no interior block edge is a whole component: it leaves
its task finished (in the output CRS, filtered, simplified). A piece that
touches one is kept in pixel coordinates with the runs of edge pixels it owns
(found by the centre of each run's first pixel, inside exactly one piece).
The merge connects two pieces when their runs on the two pixel lines facing
each other across a block edge overlap (4-connectivity) or overlap or meet
diagonally (8-connectivity, which also covers pieces meeting only at a block
corner), takes the connected components of that graph, and unions each
component's pieces: the union of its pixel squares, the point set GDAL returns
for it when it polygonizes the whole raster. Nothing else is compared, so the
merge never looks at the pixels again and holds only border pieces in memory.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely
from affine import Affine
from pydantic import BaseModel, ConfigDict
from pyproj import CRS, Transformer
from rasterio.features import shapes
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .. import __version__
from ..errors import InvalidParameterError, RasterflowError, StoreError
from ..params import VectorizeMosaicParams
from . import uris
from .fingerprint import code_fingerprint, stable_hash
from .grid import Grid
from .index import stores_of
from .partitions import Window
from .store import DATA_VAR, open_data_array, open_store, read_marker

WORKFLOW = "vectorize-mosaic"
RESULT_NAME = "polygons.parquet"

# 4-connectivity: edge neighbours; 8: edge and corner neighbours (GDAL's 8CONNECTED=8).
_STRUCTURE = {4: ndimage.generate_binary_structure(2, 1), 8: ndimage.generate_binary_structure(2, 2)}


class SourceStore(BaseModel):
    """One input store as the vectorizer sees it."""

    model_config = ConfigDict(frozen=True)

    uri: str
    identity: str  # fingerprint and generation: a replaced store is another input
    grid: Grid
    bands: list[str]
    times: list[str | None]
    nodata: float
    feature_indexes: list[int]  # of the features, in the store's band order
    block: tuple[int, int]  # rows, cols of a block: xy_block_multiplier chunks


class VectorizeSettings(BaseModel):
    """What every block of one request shares."""

    model_config = ConfigDict(frozen=True)

    features: list[str]
    threshold: float
    connectivity: int
    stats: bool
    min_area: float  # squared units of the store's CRS
    simplify_tolerance: float  # units of the store's CRS
    output_crs: str  # vector_crs, or the stores' own
    with_time: bool  # some store has more than one time slice


class BlockJob(BaseModel):
    """One block of one store and time slice: the unit of a polygonize task."""

    model_config = ConfigDict(frozen=True)

    key: str
    part_uri: str
    store_index: int
    store: SourceStore
    time_index: int
    window: Window

    @property
    def name(self) -> str:
        return f"s{self.store_index}-t{self.time_index}-{self.window.id}"


class VectorizePlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    request_id: str
    output_dir: str
    result_uri: str
    stores: list[SourceStore]
    settings: VectorizeSettings
    jobs: list[BlockJob]
    provenance: dict[str, Any]


# ---------------------------------------------------------------- planning


def block_windows(height: int, width: int, rows: int, cols: int) -> list[Window]:
    """The raster cut into blocks of ``rows`` x ``cols`` (smaller at the far edges)."""
    return [
        Window(row0=r, row1=min(r + rows, height), col0=c, col1=min(c + cols, width))
        for r in range(0, height, rows)
        for c in range(0, width, cols)
    ]



def _source_store(uri: str, features: list[str], multiplier: int, storage_options: dict[str, Any]) -> SourceStore:
    try:
        ds = open_store(uri, storage_options)
    except StoreError as exc:
        raise InvalidParameterError(
            "store", uri, str(exc), "a complete rasterflow store, or an index GeoParquet listing them"
        ) from None
    var = ds[DATA_VAR]
    bands = [str(b) for b in ds["band"].values]
    missing = [f for f in features if f not in bands]
    if missing:
        raise InvalidParameterError("features", features, f"{missing} not bands of {uri}", f"bands of that store: {bands}")
    marker = read_marker(uri, storage_options) or {}
    transform = ds.rio.transform()
    grid = Grid(crs=ds.rio.crs.to_wkt(), transform=tuple(transform)[:6], width=var.sizes["x"], height=var.sizes["y"])
    times = [None if pd.isna(t) else pd.Timestamp(t).isoformat() for t in ds["time"].values]
    nodata = var.attrs.get("nodata", var.encoding.get("fill_value"))
    chunk_rows, chunk_cols = var.encoding["chunks"][-2:]
    return SourceStore(
        uri=uri, identity=f"{marker.get('fingerprint')}:{marker.get('generation')}", grid=grid, bands=bands,
        times=times, nodata=float("nan") if nodata is None else float(nodata),
        feature_indexes=[bands.index(f) for f in features],
        block=(chunk_rows * multiplier, chunk_cols * multiplier),
    )


def plan_vectorize(
    params: VectorizeMosaicParams,
    output_root: str,
    storage_options_for: Callable[[str], dict[str, Any]] = lambda uri: {},
) -> VectorizePlan:
    """Check the inputs and lay out every block; writes nothing."""
    uris.check_output_root(output_root, storage_options_for(output_root))
    store_uris = stores_of(params.store, storage_options_for(params.store))
    stores = [
        _source_store(u, params.features, params.xy_block_multiplier, storage_options_for(u)) for u in store_uris
    ]
    if params.vector_crs is not None:
        output_crs = params.vector_crs
    else:
        crss = {CRS.from_wkt(s.grid.crs) for s in stores}
        if len(crss) > 1:
            raise InvalidParameterError(
                "vector_crs", None, f"the stores are in {len(crss)} different CRSs, and None keeps each store's own",
                "one CRS for all of them, e.g. 'EPSG:4326'",
            )
        output_crs = stores[0].grid.crs
    config = params.vectorize_config
    settings = VectorizeSettings(
        features=list(params.features), threshold=params.threshold, connectivity=config.connectivity,
        stats=config.stats, min_area=config.min_area, simplify_tolerance=config.simplify_tolerance,
        output_crs=output_crs, with_time=any(len(s.times) > 1 for s in stores),
    )
    request_id = stable_hash({
        "params": params.flow_parameters(),
        "stores": [(s.uri, s.identity) for s in stores],
        "code": code_fingerprint(),
    })
    output_dir = uris.join(output_root, WORKFLOW, request_id[:16])
    jobs = [
        BlockJob(
            key=f"{request_id[:16]}-s{i}-t{t}-{w.id}", part_uri=uris.join(output_dir, "parts", f"s{i}-t{t}-{w.id}.parquet"),
            store_index=i, store=s, time_index=t, window=w,
        )
        for i, s in enumerate(stores)
        for t in range(len(s.times))
        for w in block_windows(s.grid.height, s.grid.width, *s.block)
    ]
    provenance = {
        "workflow": WORKFLOW,
        "rasterflow_version": __version__,
        "parameters": params.flow_parameters(),
        "inputs": {"store": params.store, "stores": [s.uri for s in stores]},
        "request_id": request_id,
    }
    return VectorizePlan(
        request_id=request_id, output_dir=output_dir, result_uri=uris.join(output_dir, RESULT_NAME),
        stores=stores, settings=settings, jobs=jobs, provenance=provenance,
    )


def create_output(plan: VectorizePlan, storage_options: dict[str, Any] | None = None) -> str:
    """Adopt the request's output folder or start it; returns its generation id.

    The generation goes into every cache key, so deleting the folder also
    retires the cached block results that pointed into it (as store
    generations do for build-shard).
    """
    uri = uris.join(plan.output_dir, "request.json")
    try:
        with uris.open_input(uri, storage_options) as fh:
            record = json.load(fh)
        if record.get("request_id") == plan.request_id and record.get("generation"):
            return record["generation"]
    except (FileNotFoundError, ValueError):
        pass
    generation = uuid.uuid4().hex
    record = {"request_id": plan.request_id, "generation": generation,
              "created": datetime.now(timezone.utc).isoformat(), **plan.provenance}
    uris.write_bytes_atomic(uri, json.dumps(record, indent=1, default=str).encode(), storage_options)
    return generation


# ---------------------------------------------------------------- output geometry


def pixel_transform(col0: int, row0: int) -> Affine:
    """Block pixels to whole-raster pixel coordinates (column, -row).

    Integers, so unions of pieces are exact; y up like a north-up CRS, so
    rings keep their orientation when the store's transform is applied (and
    the transform is never the identity, which rasterio warns about).
    """
    return Affine(1.0, 0.0, col0, 0.0, -1.0, -row0)


class Finisher:
    """Turns pixel-space pieces of one store into output rows' geometries.

    Order matters: the area filter is exact on pixel counts; simplification is
    in the store's CRS (its tolerance is in those units); reprojection last.
    """

    def __init__(self, grid: Grid, settings: VectorizeSettings):
        self.affine = grid.affine
        self.pixel_area = abs(self.affine.determinant)
        self.settings = settings
        src, dst = CRS.from_user_input(grid.crs), CRS.from_user_input(settings.output_crs)
        self.transformer = None if src == dst else Transformer.from_crs(src, dst, always_xy=True)

    def keep(self, pixels: np.ndarray) -> np.ndarray:
        return pixels * self.pixel_area >= self.settings.min_area

    def to_crs(self, xy: np.ndarray) -> np.ndarray:
        # GDAL's own arithmetic for a geotransform, so vertices equal a whole-raster run's.
        a, col, row = self.affine, xy[:, 0], -xy[:, 1]
        return np.column_stack((a.c + col * a.a + row * a.b, a.f + col * a.d + row * a.e))

    def geometries(self, pixel_geoms: np.ndarray) -> np.ndarray:
        geoms = shapely.transform(pixel_geoms, self.to_crs)
        if self.settings.simplify_tolerance > 0:
            geoms = shapely.simplify(geoms, self.settings.simplify_tolerance, preserve_topology=True)
        if self.transformer is not None:
            t = self.transformer
            geoms = shapely.transform(geoms, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
        return geoms


# ---------------------------------------------------------------- parts

_RUN = pa.struct([("side", pa.string()), ("line", pa.int32()), ("start", pa.int32()), ("stop", pa.int32())])
_BBOX = pa.struct([("xmin", pa.float64()), ("ymin", pa.float64()), ("xmax", pa.float64()), ("ymax", pa.float64())])
_TIME = pa.timestamp("us")

# A part holds finished rows (geometry set) and border pieces (pixels_wkb and
# runs set). Runs: the piece's pixels on the block's outermost row (side top or
# bottom, line = that row, start/stop = columns) or column (left/right, line =
# that column, start/stop = rows), in whole-raster pixel indexes.
PART_SCHEMA = pa.schema([
    ("geometry", pa.binary()),
    ("label", pa.string()),
    ("score_mean", pa.float64()),
    ("time", _TIME),
    ("bbox", _BBOX),
    ("store", pa.int32()),
    ("time_index", pa.int32()),
    ("pixels", pa.int64()),
    ("value_sum", pa.float64()),
    ("pixels_wkb", pa.binary()),
    ("runs", pa.list_(_RUN)),
])


def _bbox_array(geoms: np.ndarray) -> pa.StructArray:
    b = shapely.bounds(geoms).reshape(-1, 4)
    return pa.StructArray.from_arrays([pa.array(b[:, i]) for i in range(4)], fields=list(_BBOX))


def _rows(n: int, **columns: Any) -> pa.Table:
    """A table of PART_SCHEMA with ``columns`` given, nulls elsewhere; scalars repeat."""
    arrays = []
    for field in PART_SCHEMA:
        value = columns.get(field.name)
        if value is None:
            arrays.append(pa.nulls(n, field.type))
        elif isinstance(value, pa.Array):
            arrays.append(value)
        elif np.isscalar(value) or isinstance(value, str):
            arrays.append(pa.array([value] * n, field.type))
        else:
            arrays.append(pa.array(value, field.type))
    return pa.Table.from_arrays(arrays, schema=PART_SCHEMA)


def _finished_rows(
    finisher: Finisher, pixel_geoms: np.ndarray, pixels: np.ndarray, sums: np.ndarray | None, label: str,
    time: pd.Timestamp | None, store: int, time_index: int,
) -> pa.Table:
    keep = finisher.keep(pixels)
    geoms = finisher.geometries(pixel_geoms[keep])
    score = sums[keep] / pixels[keep] if sums is not None else None
    return _rows(
        len(geoms), geometry=pa.array(shapely.to_wkb(geoms), pa.binary()), label=label, score_mean=score,
        time=None if time is None else pa.array([time] * len(geoms), _TIME),
        bbox=_bbox_array(geoms), store=store, time_index=time_index, pixels=pixels[keep],
    )


def _pixel_polygons(
    image: np.ndarray, foreground: np.ndarray, connectivity: int, col0: int, row0: int
) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's polygon of each region of ``foreground`` (pixel coordinates: column, -row), and its value in ``image``."""
    rings: list[list[tuple[float, float]]] = []
    rings_per_polygon: list[int] = []
    values: list[float] = []
    for geom, value in shapes(image, mask=foreground, connectivity=connectivity, transform=pixel_transform(col0, row0)):
        rings.extend(geom["coordinates"])
        rings_per_polygon.append(len(geom["coordinates"]))
        values.append(value)
    ring_sizes = np.fromiter(map(len, rings), np.int64, count=len(rings))
    # One flat array for all vertices, read straight from GDAL's tuples: about
    # 3x faster than np.array of the tuples (itself 3x faster than a Polygon each).
    coords = np.fromiter(chain.from_iterable(chain.from_iterable(rings)), np.float64, count=2 * int(ring_sizes.sum()))
    geoms = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, coords.reshape(-1, 2),
        (np.concatenate(([0], np.cumsum(ring_sizes))), np.concatenate(([0], np.cumsum(rings_per_polygon)))),
    )
    if connectivity == 8:
        # GDAL traces 8-connected regions whose pixels meet only at a corner as one
        # self-touching ring; the valid form of that point set is a MultiPolygon.
        # 4-connected output is always valid (none invalid in 10^5-polygon noise).
        for k in np.flatnonzero(~shapely.is_valid(geoms)):
            geoms[k] = _made_valid(geoms[k])
    return geoms, np.asarray(values)


def _made_valid(polygon: shapely.Polygon):
    """The valid form of an 8-connected GDAL polygon, the overlay paid only for rings that touch.

    Corner contacts are vertices shared by two rings, or twice by one.
    make_valid's cost grows with the holes, and most holes of a lake-sized
    polygon touch nothing: they go back afterwards into the part that holds
    them, holes of the same point set (2-4x less CPU on the benchmark rasters).
    The result must be valid with the polygon's area (exact: integer
    vertices; a hole left out or put in twice changes it), else make_valid
    of the whole polygon stands in.
    """
    rings = np.asarray(shapely.get_rings(polygon))  # exterior first
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    is_open = np.ones(len(ring), dtype=bool)
    is_open[np.append(np.flatnonzero(np.diff(ring)), len(ring) - 1)] = False  # each ring's closing vertex
    xy, ring = xy[is_open].astype(np.int64), ring[is_open]
    lo = xy.min(axis=0)
    key = (xy[:, 0] - lo[0]) * (xy[:, 1].max() - lo[1] + 1) + (xy[:, 1] - lo[1])
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    touching = np.zeros(len(rings), dtype=bool)
    touching[ring[counts[inverse] > 1]] = True
    touching[0] = True
    valid = shapely.make_valid(shapely.Polygon(rings[0], list(rings[touching][1:])), method="structure", keep_collapsed=False)
    free = rings[~touching]
    if len(free):
        parts = shapely.get_parts(valid)
        part, hole = _containing(parts, shapely.point_on_surface(shapely.polygons(free)))
        filled = [shapely.Polygon(p.exterior, [*p.interiors, *free[hole[part == k]]]) for k, p in enumerate(parts)]
        valid = filled[0] if len(filled) == 1 else shapely.MultiPolygon(filled)
    if not shapely.is_valid(valid) or shapely.area(valid) != shapely.area(polygon):
        return shapely.make_valid(polygon, method="structure", keep_collapsed=False)
    return valid


def _regions(
    band: np.ndarray, foreground: np.ndarray, settings: VectorizeSettings, window: Window
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each connected region's polygon, and its sum of ``band`` when stats are asked for.

    Without stats GDAL polygonizes the foreground mask itself. For stats,
    scipy labels the regions first (about a fifth of the block's CPU): GDAL
    polygonizes the label image, so each polygon's value names its pixels and
    their sum is a bincount rather than a rasterization.
    """
    if settings.stats:
        image, n = ndimage.label(foreground, structure=_STRUCTURE[settings.connectivity])
    else:
        image = foreground.view(np.uint8)
    geoms, values = _pixel_polygons(image, foreground, settings.connectivity, window.col0, window.row0)
    if not settings.stats:
        return geoms, None
    if len(values) != n:  # scipy and GDAL disagree on the regions: never seen, never ignore
        raise RuntimeError(f"GDAL returned {len(values)} polygons for {n} connected components")
    by_label = np.empty(n, dtype=object)
    by_label[values.astype(np.int64) - 1] = geoms
    return by_label, np.bincount(image.ravel(), weights=band.ravel(), minlength=n + 1)[1:]


def _edge_runs(foreground: np.ndarray, window: Window, raster_shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Runs of foreground on the block's interior edges: side, line, start, stop, and the
    centre of each run's first pixel in pixel coordinates (x = column, y = -row)."""
    height, width = raster_shape
    edges = []
    if window.row0 > 0:
        edges.append(("top", foreground[0, :], window.row0, window.col0))
    if window.row1 < height:
        edges.append(("bottom", foreground[-1, :], window.row1 - 1, window.col0))
    if window.col0 > 0:
        edges.append(("left", foreground[:, 0], window.col0, window.row0))
    if window.col1 < width:
        edges.append(("right", foreground[:, -1], window.col1 - 1, window.row0))
    out: list[list[np.ndarray]] = [[], [], [], [], [], []]
    for side, pixels, line, offset in edges:
        steps = np.diff(np.concatenate(([0], pixels.view(np.int8), [0])))
        start, stop = np.flatnonzero(steps == 1) + offset, np.flatnonzero(steps == -1) + offset
        k = len(start)
        lines = np.full(k, line)
        first_x, first_y = (start + 0.5, -(lines + 0.5)) if side in ("top", "bottom") else (lines + 0.5, -(start + 0.5))
        for acc, value in zip(out, (np.full(k, side, dtype=object), lines, start, stop, first_x, first_y)):
            acc.append(value)
    empty = [np.zeros(0, object), *(np.zeros(0, np.int64),) * 3, *(np.zeros(0),) * 2]
    return tuple(np.concatenate(acc) if acc else e for acc, e in zip(out, empty))


def _owners(geoms: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Index of the polygon holding each point: pixel centres lie inside exactly one."""
    polygon, point = _containing(geoms, shapely.points(x, y))
    if not np.array_equal(np.bincount(point, minlength=len(x)), np.ones(len(x), np.int64)):
        raise RuntimeError(f"{len(x)} edge pixels found in {len(point)} polygons")  # a gap or a repeat: a bug
    owner = np.empty(len(x), np.int64)
    owner[point] = polygon
    return owner


def _containing(polygons: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (polygon, point) with the point inside the polygon.

    The tree holds the points and the polygons are the queries: STRtree
    prepares its query geometries, so each large outline is indexed once
    instead of walked whole for every point (0.4 s of 0.75 s in the seam
    unions at 2.5 m, 8-connected).
    """
    return shapely.STRtree(points).query(polygons, predicate="contains")


def polygonize_array(
    values: np.ndarray,
    window: Window,
    raster_shape: tuple[int, int],
    nodata: float,
    settings: VectorizeSettings,
    finisher: Finisher,
    time: str | None = None,
    store: int = 0,
    time_index: int = 0,
) -> pa.Table:
    """Polygonize one block (``values``: features x rows x cols) into part rows."""
    stamp = pd.Timestamp(time) if time is not None else None
    tables = []
    for feature, band in zip(settings.features, values):
        foreground = band >= settings.threshold  # NaN compares False: never foreground
        # Nodata pixels pass the threshold only if nodata does, compared as the pixels are.
        if not math.isnan(nodata) and band.dtype.type(nodata) >= settings.threshold:
            foreground &= band != nodata
        if not foreground.any():
            continue
        geoms, sums = _regions(band, foreground, settings, window)
        # Unit squares with integer corners: the area is the pixel count, exactly.
        pixels = np.rint(shapely.area(geoms)).astype(np.int64)

        side, line, start, stop, x, y = _edge_runs(foreground, window, raster_shape)
        owner = _owners(geoms, x, y)
        on_border = np.zeros(len(geoms), dtype=bool)
        on_border[owner] = True
        inner = ~on_border
        tables.append(_finished_rows(
            finisher, geoms[inner], pixels[inner], None if sums is None else sums[inner], feature, stamp,
            store, time_index,
        ))
        if on_border.any():
            order = np.argsort(owner, kind="stable")
            counts = np.bincount(owner, minlength=len(geoms))[on_border]
            offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
            runs = pa.StructArray.from_arrays(
                [pa.array(side[order], pa.string()), pa.array(line[order], pa.int32()),
                 pa.array(start[order], pa.int32()), pa.array(stop[order], pa.int32())], fields=list(_RUN),
            )
            tables.append(_rows(
                int(on_border.sum()), label=feature,
                time=None if stamp is None else pa.array([stamp] * int(on_border.sum()), _TIME),
                store=store, time_index=time_index, pixels=pixels[on_border],
                value_sum=None if sums is None else sums[on_border],
                pixels_wkb=pa.array(shapely.to_wkb(geoms[on_border]), pa.binary()),
                runs=pa.ListArray.from_arrays(pa.array(offsets), runs),
            ))
    return pa.concat_tables(tables) if tables else PART_SCHEMA.empty_table()


def read_block(job: BlockJob, storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """The job's features over its window (features x rows x cols): whole chunks, one read."""
    array = open_data_array(job.store.uri, storage_options)
    w = job.window
    block = array[job.time_index, :, w.row0 : w.row1, w.col0 : w.col1]
    return block[job.store.feature_indexes]


def polygonize_block(job: BlockJob, settings: VectorizeSettings, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Polygonize one block and write its part (none when it has no foreground)."""
    s = job.store
    values = read_block(job, storage_options)
    table = polygonize_array(
        values, job.window, (s.grid.height, s.grid.width), s.nodata, settings, Finisher(s.grid, settings),
        time=s.times[job.time_index], store=job.store_index, time_index=job.time_index,
    )
    finished = int(table["pixels_wkb"].null_count)
    summary = {"key": job.key, "part": None, "finished": finished, "border": table.num_rows - finished}
    if table.num_rows:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        uris.write_bytes_atomic(job.part_uri, buffer.getvalue(), storage_options)
        summary["part"] = job.part_uri
    return summary


# ---------------------------------------------------------------- merging


def _touching(
    a_key: np.ndarray, a_start: np.ndarray, a_stop: np.ndarray,
    b_key: np.ndarray, b_start: np.ndarray, b_stop: np.ndarray, reach: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) of runs a[i], b[j] with the same key whose pixels touch.

    a and b runs lie on two facing pixel lines; runs of one side never overlap
    each other. They touch when [start - reach, stop + reach) intervals
    overlap: reach 0 is edge contact (4-connectivity), reach 1 adds corners (8).
    Sorted by key then start, b's starts and stops both increase, so each a's
    partners are one contiguous range found by two binary searches.
    """
    if not len(a_key) or not len(b_key):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    span = int(max(a_stop.max(), b_stop.max())) + 3  # room for start - 1 .. stop + 1

    def code(key, pos):
        return key.astype(np.int64) * span + pos + 1

    order = np.lexsort((b_start, b_key))
    b_starts, b_stops = code(b_key, b_start)[order], code(b_key, b_stop)[order]
    lo = np.searchsorted(b_stops, code(a_key, a_start - reach), side="right")
    hi = np.searchsorted(b_starts, code(a_key, a_stop + reach), side="left")
    counts = np.maximum(hi - lo, 0)
    i = np.repeat(np.arange(len(a_key)), counts)
    first = np.repeat(lo, counts)
    j = first + np.arange(len(i)) - np.repeat(np.cumsum(counts) - counts, counts)
    return i, order[j]


def _components(table: pa.Table, connectivity: int) -> np.ndarray:
    """Component id of each border piece: pieces connected across block edges."""
    n = table.num_rows
    keys = table.select(["store", "time_index", "label"]).to_pandas()
    group = keys.groupby(["store", "time_index", "label"], sort=False).ngroup().to_numpy()
    runs = table["runs"].combine_chunks()
    piece = pc.list_parent_indices(runs).to_numpy()
    flat = pc.list_flatten(runs)
    side = flat.field("side").to_numpy(zero_copy_only=False)
    line = flat.field("line").to_numpy().astype(np.int64)
    start = flat.field("start").to_numpy().astype(np.int64)
    stop = flat.field("stop").to_numpy().astype(np.int64)
    height = int(line.max()) + 2 if len(line) else 1
    reach = 1 if connectivity == 8 else 0
    rows, cols = [], []
    # Bottom runs on line L face top runs on line L + 1; right runs face left runs likewise.
    for near, far in (("bottom", "top"), ("right", "left")):
        a, b = side == near, side == far
        pa_, pb = piece[a], piece[b]
        i, j = _touching(group[pa_] * height + line[a] + 1, start[a], stop[a],
                         group[pb] * height + line[b], start[b], stop[b], reach)
        rows.append(pa_[i])
        cols.append(pb[j])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def union_pieces(pieces: np.ndarray):
    """The union of one component's pieces (pixel coordinates, disjoint interiors).

    Only outlines need an overlay, which saves most of the work on pieces with
    many holes: a hole lies inside its block, at least a pixel from every block
    edge, so no other piece reaches it and it is a hole of the union too. So
    are islands in those holes (8-connected parts of a piece that touch it at a
    corner): no seam reaches them either. The union is therefore the union of
    the outermost outlines, the holes put back into the part that encloses
    them (the innermost one, when parts nest), plus the islands as they are.
    """
    polygons, owner_piece = shapely.get_parts(pieces, return_index=True)  # 8-connected: MultiPolygons
    outlines = shapely.polygons(shapely.get_exterior_ring(polygons))
    island = np.zeros(len(polygons), dtype=bool)
    multi = np.flatnonzero(np.bincount(owner_piece) > 1)  # only a piece's own parts can nest
    for k in multi:
        own = np.flatnonzero(owner_piece == k)
        j, i = _containing(outlines[own], shapely.point_on_surface(outlines[own]))
        island[own[i[i != j]]] = True
    top = polygons[~island]
    # The outlines have disjoint interiors and integer vertices. buffer(0) unions
    # them in one noding pass (at distance 0 a ring's offset curve is the ring
    # itself): 5-7x less CPU than union_all's cascade of pairwise overlays on
    # large components. Their union's area is the sum of theirs, exactly, in
    # doubles; union_all stands in should GEOS's buffer ever disagree.
    outer = outlines[~island]
    union = shapely.buffer(shapely.multipolygons(outer), 0.0)
    if shapely.area(union) != shapely.area(outer).sum():
        union = shapely.union_all(outer)
    # The union keeps a vertex wherever an outline crossed a seam; simplify(0)
    # drops such collinear vertices (exact on integer coordinates). Douglas-Peucker
    # at tolerance 0 moves no edge, so the topology-preserving variant (3x the
    # CPU on large unions) has nothing to preserve.
    merged = shapely.get_parts(shapely.simplify(union, 0.0, preserve_topology=False))
    holes = np.concatenate([shapely.get_interior_ring(p, np.arange(shapely.get_num_interior_rings(p))) for p in top])
    if len(holes) and len(merged) == 1:
        merged = [shapely.Polygon(merged[0].exterior, [*merged[0].interiors, *holes])]
    elif len(holes):
        shells = shapely.polygons(shapely.get_exterior_ring(merged))
        m, h = _containing(shells, shapely.point_on_surface(shapely.polygons(holes)))
        order = np.lexsort((shapely.area(shells)[m], h))  # per hole, smallest enclosing shell first
        h, m = h[order], m[order]
        first = np.concatenate(([True], h[1:] != h[:-1]))
        owner = np.full(len(holes), -1)
        owner[h[first]] = m[first]
        if (owner < 0).any():  # a hole outside every outline: the reasoning above failed
            raise RuntimeError(f"{int((owner < 0).sum())} hole(s) enclosed by no part of their component")
        merged = [shapely.Polygon(p.exterior, [*p.interiors, *holes[owner == k]]) for k, p in enumerate(merged)]
    parts = [*merged, *polygons[island]]
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def join_border_pieces(border: pa.Table, finishers: Sequence[Finisher], settings: VectorizeSettings) -> pa.Table:
    """Union the border pieces of each component and finish them like whole pieces."""
    if border.num_rows == 0:
        return PART_SCHEMA.empty_table()
    comp = _components(border, settings.connectivity)
    n_comp = int(comp.max()) + 1
    order = np.argsort(comp, kind="stable")
    members = np.split(order, np.flatnonzero(np.diff(comp[order])) + 1)
    first = np.array([m[0] for m in members])
    pixels = np.bincount(comp, weights=border["pixels"].to_numpy(), minlength=n_comp).astype(np.int64)
    sums = None
    if settings.stats:
        sums = np.bincount(comp, weights=border["value_sum"].to_numpy(zero_copy_only=False), minlength=n_comp)
    store = border["store"].to_numpy()[first]
    labels = border["label"].to_numpy(zero_copy_only=False)[first]
    time_index = border["time_index"].to_numpy()[first]
    times = border["time"].to_numpy(zero_copy_only=False)[first] if settings.with_time else None
    pieces = shapely.from_wkb(border["pixels_wkb"].to_numpy(zero_copy_only=False))
    tables = []
    # One finishing call per (store, time, label): the rows of that combination.
    keys = pd.DataFrame({"store": store, "time_index": time_index, "label": labels})
    for (s, t, label), idx in keys.groupby(["store", "time_index", "label"], sort=False).indices.items():
        idx = idx[finishers[s].keep(pixels[idx])]
        geoms = np.empty(len(idx), dtype=object)
        joined = [k for k, c in enumerate(idx) if len(members[c]) > 1]
        for k, c in enumerate(idx):
            geoms[k] = pieces[members[c][0]]
        # GEOS releases the GIL: the unions of large components run side by side.
        with ThreadPoolExecutor(max_workers=min(len(joined), os.cpu_count() or 1) or 1) as pool:
            geoms[joined] = list(pool.map(lambda k: union_pieces(pieces[members[idx[k]]]), joined))
        stamp = None
        if times is not None and len(idx) and not pd.isna(times[idx[0]]):
            stamp = pd.Timestamp(times[idx[0]])
        tables.append(_finished_rows(
            finishers[s], geoms, pixels[idx], None if sums is None else sums[idx], label, stamp, int(s), int(t),
        ))
    return pa.concat_tables(tables) if tables else PART_SCHEMA.empty_table()


def output_columns(settings: VectorizeSettings) -> list[str]:
    stats = ["score_mean"] if settings.stats else []
    return ["geometry", "label", *stats, *(["time"] if settings.with_time else []), "bbox"]


class ResultWriter:
    """Streams rows into a local GeoParquet file in row groups of ``ROW_GROUP`` rows.

    The file is written beside its destination (local output) or in a
    temporary folder, and ``_publish_file`` moves it into place whole, so
    readers never see half a result.
    """

    ROW_GROUP = 65_536

    def __init__(self, settings: VectorizeSettings, provenance: dict[str, Any], path: str):
        self.columns = output_columns(settings)
        crs = CRS.from_user_input(settings.output_crs)
        geometry_types = ["Polygon"] if settings.connectivity == 4 else ["MultiPolygon", "Polygon"]
        geo = {
            "version": "1.1.0",
            "primary_column": "geometry",
            "columns": {"geometry": {
                "encoding": "WKB", "geometry_types": geometry_types, "crs": crs.to_json_dict(),
                "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
            }},
            "creator": {"library": "rasterflow", "version": __version__},
        }
        self.schema = pa.schema([PART_SCHEMA.field(c) for c in self.columns]).with_metadata({
            "geo": json.dumps(geo), "rasterflow": json.dumps(provenance, default=str),
        })
        self.path = path
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._writer = pq.ParquetWriter(path, self.schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._pending.append(table.select(self.columns))
            self._pending_rows += table.num_rows
            self.rows += table.num_rows
        if self._pending_rows >= self.ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.concat_tables(self._pending).replace_schema_metadata(self.schema.metadata)
            self._writer.write_table(table, row_group_size=self.ROW_GROUP)
        self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


def merge_tables(
    parts: Iterable[pa.Table], finishers: Sequence[Finisher], settings: VectorizeSettings, writer: ResultWriter
) -> None:
    """Stream finished rows into ``writer``; join the border pieces, then write them.

    Memory: one part plus the border pieces of all parts (their pixel-space
    polygons and runs): pieces that touch an interior block edge, never more
    than the runs of foreground pixels along those edges.
    """
    border = []
    for table in parts:
        is_border = table["pixels_wkb"].is_valid()
        writer.write(table.filter(pc.invert(is_border)))
        border.append(table.filter(is_border))
    if border:
        writer.write(join_border_pieces(pa.concat_tables(border), finishers, settings))


def _publish_file(local_path: str, uri: str, storage_options: dict[str, Any] | None) -> None:
    if uris.is_local(uri):
        os.replace(local_path, uris.local_path(uri))  # same folder: an atomic rename
    else:
        fs, path = uris.filesystem(uri, storage_options)
        fs.put_file(local_path, path)  # object stores replace whole objects
        os.remove(local_path)


def read_part(uri: str, storage_options: dict[str, Any] | None = None) -> pa.Table:
    fs, path = uris.filesystem(uri, storage_options)
    try:
        return pq.read_table(path, filesystem=fs, schema=PART_SCHEMA)
    except FileNotFoundError:
        folder = uri.rsplit("/parts/", 1)[0]
        raise RasterflowError(
            f"{uri}: a block result of this request is missing (deleted while cached?); "
            f"delete {folder} and make the call again"
        ) from None


def merge_parts(plan: VectorizePlan, part_uris: list[str], storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Join the parts into the request's GeoParquet; its URI, or None without polygons."""
    finishers = [Finisher(s.grid, plan.settings) for s in plan.stores]
    uri = plan.result_uri
    if uris.is_local(uri):
        os.makedirs(uris.local_path(plan.output_dir), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{RESULT_NAME}.", dir=uris.local_path(plan.output_dir))
    else:
        fd, tmp = tempfile.mkstemp(suffix=".parquet")
    os.close(fd)
    try:
        writer = ResultWriter(plan.settings, plan.provenance, tmp)
        try:
            merge_tables((read_part(p, storage_options) for p in part_uris), finishers, plan.settings, writer)
        finally:
            writer.close()
        if writer.rows == 0:
            uris.remove(uri, storage_options)
            return {"uri": None, "polygons": 0}
        _publish_file(tmp, uri, storage_options)
        return {"uri": uri, "polygons": writer.rows}
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
