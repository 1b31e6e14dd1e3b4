"""polygonize: one block of one store thresholded and polygonized, into a part file.

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
(found by the centre of each run's first pixel, inside exactly one piece):
``seams`` joins such pieces across blocks from their runs alone, so the merge
never looks at the pixels again and holds only border pieces in memory.
"""

from __future__ import annotations

import io
import math
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pydantic import BaseModel, ConfigDict
from rasterio.features import shapes
from scipy import ndimage

from .. import uris
from ..partitions import Window
from ..store import open_data_array
from .parts import _RUN, _TIME, PART_SCHEMA, Finisher, _finished_rows, _rows, pixel_transform
from .plan import PolygonizeJob, VectorizeSettings

# 4-connectivity: edge neighbours; 8: edge and corner neighbours (GDAL's 8CONNECTED=8).
_STRUCTURE = {4: ndimage.generate_binary_structure(2, 1), 8: ndimage.generate_binary_structure(2, 2)}


class PolygonizeSummary(BaseModel):
    """What a polygonize task reports (and caches): its part file, if any, and what it holds."""

    model_config = ConfigDict(frozen=True)

    key: str
    part: str | None  # None: no foreground in the block, no part written
    finished: int  # polygons whole within the block
    border: int  # pieces touching a block edge, joined by merge-parquet


def _pixel_polygons(
    image: np.ndarray, foreground: np.ndarray, connectivity: int, col0: int, row0: int
) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's polygon of each region of ``foreground`` (pixel coordinates: column, -row), and its value
    in ``image``."""
    rings: list[list[tuple[float, float]]] = []
    rings_per_polygon: list[int] = []
    values: list[float] = []
    for geom, value in shapes(image, mask=foreground, connectivity=connectivity,
                              transform=pixel_transform(col0, row0)):
        rings.extend(geom["coordinates"])
        rings_per_polygon.append(len(geom["coordinates"]))
        values.append(value)
    ring_sizes = np.fromiter(map(len, rings), np.int64, count=len(rings))
    # One flat array for all vertices, read straight from GDAL's tuples: about
    # 3x faster than np.array of the tuples (itself 3x faster than a Polygon each).
    coords = np.fromiter(chain.from_iterable(chain.from_iterable(rings)), np.float64,
                         count=2 * int(ring_sizes.sum()))
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
    valid = shapely.make_valid(shapely.Polygon(rings[0], list(rings[touching][1:])), method="structure",
                               keep_collapsed=False)
    free = rings[~touching]
    if len(free):
        parts = shapely.get_parts(valid)
        part, hole = _containing(parts, shapely.point_on_surface(shapely.polygons(free)))
        filled = [shapely.Polygon(p.exterior, [*p.interiors, *free[hole[part == k]]])
                  for k, p in enumerate(parts)]
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


def _edge_runs(foreground: np.ndarray, window: Window,
               raster_shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
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
        first_x, first_y = ((start + 0.5, -(lines + 0.5)) if side in ("top", "bottom")
                            else (lines + 0.5, -(start + 0.5)))
        columns = (np.full(k, side, dtype=object), lines, start, stop, first_x, first_y)
        for acc, value in zip(out, columns, strict=True):
            acc.append(value)
    empty = [np.zeros(0, object), *(np.zeros(0, np.int64),) * 3, *(np.zeros(0),) * 2]
    return tuple(np.concatenate(acc) if acc else e for acc, e in zip(out, empty, strict=True))


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
    for feature, band in zip(settings.features, values, strict=True):
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


def read_block(job: PolygonizeJob, storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """The job's features over its window (features x rows x cols): whole chunks, one read."""
    array = open_data_array(job.store.uri, storage_options)
    w = job.window
    block = np.asarray(array[job.time_index, :, w.row0 : w.row1, w.col0 : w.col1])
    return block[job.store.feature_indexes]


def polygonize_block(job: PolygonizeJob, settings: VectorizeSettings,
                     storage_options: dict[str, Any] | None = None) -> PolygonizeSummary:
    """Polygonize one block and write its part (none when it has no foreground)."""
    s = job.store
    values = read_block(job, storage_options)
    table = polygonize_array(
        values, job.window, (s.grid.height, s.grid.width), s.nodata, settings, Finisher(s.grid, settings),
        time=s.times[job.time_index], store=job.store_index, time_index=job.time_index,
    )
    finished = int(table["pixels_wkb"].null_count)
    if table.num_rows:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        uris.write_bytes_atomic(job.part_uri, buffer.getvalue(), storage_options)
    return PolygonizeSummary(key=job.key, part=job.part_uri if table.num_rows else None, finished=finished,
                             border=table.num_rows - finished)
