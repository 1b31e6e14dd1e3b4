"""polygonize: one block of one store thresholded and polygonized, into part rows.

A block is ``xy_block_multiplier`` chunks on a side (a polygonize task runs a
group of them, ``group``). GDAL's polygonize (``gdal_polygonize``, without the
GIL) traces the block's foreground (value >= threshold, never nodata) under
the requested connectivity, as one polygon per connected region. With
statistics, each polygon's sum comes from its outline and the row prefix sums
of the band (``pixel_sums``): no labelling pass, no rasterization.
Polygonizing happens in pixel coordinates (offset to the block's place in the
raster), where every vertex is an integer and unions are exact; the store's
transform is applied at the end, with the arithmetic GDAL uses, so coordinates
match a whole-raster run bit for bit.

A piece that touches no interior block edge is a whole component: it leaves
finished (in the output CRS, filtered, simplified). A piece that touches one
is kept in pixel coordinates with the runs of edge pixels it owns (found by
the centre of each run's first pixel, inside exactly one piece): ``seams``
joins such pieces across blocks from their runs alone, so joining never looks
at the pixels again and holds only border pieces in memory.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from rasterio.features import shapes

from ..partitions import Window
from ..store import open_data_array
from . import gdal_polygonize
from .gdal_polygonize import Outlines
from .parts import _RUN, _TIME, PART_SCHEMA, Finisher, _finished_rows, _rows, pixel_transform
from .plan import PolygonizeJob, VectorizeSettings


def _pixel_polygons(foreground: np.ndarray, connectivity: int, col0: int, row0: int) -> Outlines:
    """GDAL's polygon of each region of ``foreground``, in pixel coordinates (column, -row).

    The flat arrays are GDAL's rings as traced; the geometries are made valid.
    """
    if gdal_polygonize.available():
        traced = gdal_polygonize.polygonize(foreground.view(np.uint8), connectivity, col0, row0)
    else:
        traced = _rasterio_polygons(foreground, connectivity, col0, row0)
    if connectivity == 8:
        # GDAL traces 8-connected regions whose pixels meet only at a corner as one
        # self-touching ring; the valid form of that point set is a MultiPolygon.
        # 4-connected output is always valid (none invalid in 10^5-polygon noise).
        geoms = traced.geoms.copy()
        for k in np.flatnonzero(~shapely.is_valid(geoms)):
            geoms[k] = _made_valid(geoms[k])
        traced = traced._replace(geoms=geoms)
    return traced


def _rasterio_polygons(foreground: np.ndarray, connectivity: int, col0: int, row0: int) -> Outlines:
    """The same polygons through ``rasterio.features.shapes`` (holds the GIL), where ctypes cannot reach
    GDAL."""
    rings: list[list[tuple[float, float]]] = []
    rings_per_polygon: list[int] = []
    image = foreground.view(np.uint8)
    for geom, _ in shapes(image, mask=foreground, connectivity=connectivity,
                          transform=pixel_transform(col0, row0)):
        rings.extend(geom["coordinates"])
        rings_per_polygon.append(len(geom["coordinates"]))
    ring_sizes = np.fromiter(map(len, rings), np.int64, count=len(rings))
    # One flat array for all vertices, read straight from GDAL's tuples: about
    # 3x faster than np.array of the tuples (itself 3x faster than a Polygon each).
    xy = np.fromiter(chain.from_iterable(chain.from_iterable(rings)), np.float64,
                     count=2 * int(ring_sizes.sum())).reshape(-1, 2)
    ring_offsets = np.concatenate(([0], np.cumsum(ring_sizes)))
    polygon_offsets = np.concatenate(([0], np.cumsum(rings_per_polygon)))
    geoms = shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy, (ring_offsets, polygon_offsets))
    return Outlines(geoms, xy, ring_offsets, polygon_offsets)


def pixel_sums(band: np.ndarray, foreground: np.ndarray, window: Window,
               outlines: Outlines) -> tuple[np.ndarray, np.ndarray]:
    """Each polygon's sum of ``band`` over its pixels, from its outline: no labels, no rasterizing.

    With row prefix sums P (P[r, c] = the row's pixels left of column c), the
    sum over the pixels inside a rectilinear ring is a sum over its vertical
    edges (a discrete Green's theorem): an edge at column c spanning rows
    [a, b) contributes the sum of P[a:b, c], with the sign of its direction,
    and the same sum over ones (a pixel count) gives the ring's orientation;
    holes subtract. So the cost is one pass for P plus the outlines' length,
    instead of labelling every pixel (numpy's cumulative sums run fast only
    along rows, which is why it is not a summed-area table). Exact for
    integer bands (int64 sums); float bands are summed in float64, whose
    rounding is far below float32 data's own precision. The rings are GDAL's
    as traced (an 8-connected one may touch itself: its winding number is
    still one inside), on this window's pixel corners. Returns the sums and
    the pixel counts.
    """
    exact = np.issubdtype(band.dtype, np.integer) and band.dtype.itemsize <= 4
    values = band * foreground if exact else np.where(foreground, band, 0)
    height, width = values.shape
    prefix = np.zeros((height, width + 1), _prefix_type(band.dtype, width))
    np.cumsum(values, axis=1, out=prefix[:, 1:])

    ring_offsets, polygon_offsets = outlines.ring_offsets, outlines.polygon_offsets
    rows = np.rint(-outlines.xy[:, 1]).astype(np.int64) - window.row0
    cols = np.rint(outlines.xy[:, 0]).astype(np.int64) - window.col0
    n_rings, n_polygons = len(ring_offsets) - 1, len(polygon_offsets) - 1
    ring = np.repeat(np.arange(n_rings), np.diff(ring_offsets))
    edge = np.flatnonzero((cols[1:] == cols[:-1]) & (rows[1:] != rows[:-1]) & (ring[1:] == ring[:-1]))
    a, b, c = rows[edge], rows[edge + 1], cols[edge]
    lo, length, direction = np.minimum(a, b), np.abs(b - a), np.sign(b - a)
    # Every pixel next to a vertical edge: rows lo .. lo + length - 1 of its column, edge after edge.
    first = np.cumsum(length) - length
    step = np.arange(int(length.sum())) - np.repeat(first, length)
    along = prefix.ravel()[(np.repeat(lo, length) + step) * (width + 1) + np.repeat(c, length)]
    along = along.astype(np.int64 if exact else np.float64, copy=False)
    edge_sums = np.add.reduceat(along, first) if len(first) else along[:0]
    ring_sums = _sum_by(ring[edge], direction * edge_sums, n_rings, exact)
    ring_counts = _sum_by(ring[edge], direction * length * c, n_rings, True)
    hole = np.ones(n_rings, np.int64)
    hole[polygon_offsets[:-1]] = 0
    sign = (1 - 2 * hole) * np.sign(ring_counts)  # exterior +, holes -, whatever way GDAL turned them
    polygon = np.repeat(np.arange(n_polygons), np.diff(polygon_offsets))
    counts = _sum_by(polygon, sign * ring_counts, n_polygons, True)
    return _sum_by(polygon, sign * ring_sums, n_polygons, exact).astype(np.float64), counts


def _prefix_type(dtype: np.dtype, width: int) -> type:
    """Row prefix sums in int32 when a row cannot overflow it (8- and 16-bit data): half the memory
    traffic of int64; float64 for floats."""
    if not np.issubdtype(dtype, np.integer) or dtype.itemsize > 4:
        return np.float64
    info = np.iinfo(dtype)
    return np.int32 if max(abs(int(info.min)), int(info.max)) * width < 2**31 else np.int64


def _sum_by(index: np.ndarray, values: np.ndarray, n: int, exact: bool) -> np.ndarray:
    """Sums of ``values`` by ``index``; exact integers when ``exact``.

    bincount adds in float64, exact while the absolute values add up to less
    than 2**53 (any block of 16-bit data); larger integers take the slower
    exact ``add.at``.
    """
    if exact and np.abs(values).sum(dtype=np.float64) >= 2**52:
        out = np.zeros(n, np.int64)
        np.add.at(out, index, values)
        return out
    sums = np.bincount(index, weights=values, minlength=n)
    return np.rint(sums).astype(np.int64) if exact else sums


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Each connected region's polygon, its pixel count, and its sum of ``band`` when stats are asked
    for.

    GDAL polygonizes the foreground mask; the sums come from the outlines
    (``pixel_sums``), a fraction of the cost of labelling the regions first.
    """
    outlines = _pixel_polygons(foreground, settings.connectivity, window.col0, window.row0)
    # Unit squares with integer corners: the area is the pixel count, exactly.
    pixels = np.rint(shapely.area(outlines.geoms)).astype(np.int64)
    if not settings.stats:
        return outlines.geoms, pixels, None
    sums, counts = pixel_sums(band, foreground, window, outlines)
    if not np.array_equal(counts, pixels):  # a ring read wrongly: a bug, never a result
        raise RuntimeError("pixel counts from the outlines disagree with the polygons' areas")
    return outlines.geoms, pixels, sums


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
        geoms, pixels, sums = _regions(band, foreground, settings, window)

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


def read_block(job: PolygonizeJob, window: Window, storage_options: dict[str, Any] | None = None
               ) -> np.ndarray:
    """The job's features over one block (features x rows x cols): whole chunks, one read."""
    array = open_data_array(job.store.uri, storage_options)
    block = np.asarray(array[job.time_index, :, window.row0 : window.row1, window.col0 : window.col1])
    return block[job.store.feature_indexes]


def polygonize_block(job: PolygonizeJob, window: Window, settings: VectorizeSettings,
                     storage_options: dict[str, Any] | None = None) -> pa.Table:
    """Read and polygonize one block of the job's group: its part rows.

    Module level with plain arguments, so a process pool can run it too.
    """
    s = job.store
    return polygonize_array(
        read_block(job, window, storage_options), window, (s.grid.height, s.grid.width), s.nodata, settings,
        Finisher(s.grid, settings), time=s.times[job.time_index], store=job.store_index,
        time_index=job.time_index,
    )
