"""Seams: border pieces of neighbouring blocks joined into the polygons they are parts of.

The merge connects two pieces when their runs on the two pixel lines facing
each other across a block edge overlap (4-connectivity) or overlap or meet
diagonally (8-connectivity, which also covers pieces meeting only at a block
corner), takes the connected components of that graph, and unions each
component's pieces: the union of its pixel squares, the point set GDAL returns
for it when it polygonizes the whole raster. Nothing else is compared, so the
merge never looks at the pixels again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .parts import PART_SCHEMA, Finisher, _finished_rows
from .plan import VectorizeSettings
from .polygonize import _containing


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
    holes = np.concatenate([shapely.get_interior_ring(p, np.arange(shapely.get_num_interior_rings(p)))
                            for p in top])
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
        merged = [shapely.Polygon(p.exterior, [*p.interiors, *holes[owner == k]])
                  for k, p in enumerate(merged)]
    parts = [*merged, *polygons[island]]
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def join_border_pieces(border: pa.Table, finishers: Sequence[Finisher],
                       settings: VectorizeSettings) -> pa.Table:
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
            geoms[joined] = list(pool.map(lambda k, idx=idx: union_pieces(pieces[members[idx[k]]]), joined))
        stamp = None
        if times is not None and len(idx) and not pd.isna(times[idx[0]]):
            stamp = pd.Timestamp(times[idx[0]])
        tables.append(_finished_rows(
            finishers[s], geoms, pixels[idx], None if sums is None else sums[idx], label, stamp, int(s),
            int(t),
        ))
    return pa.concat_tables(tables) if tables else PART_SCHEMA.empty_table()
