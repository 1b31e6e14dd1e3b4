"""Seams: border pieces of neighbouring blocks joined into the polygons they are parts of.

Two pieces connect when their runs on the two pixel lines facing each other
across a block edge overlap (4-connectivity) or overlap or meet diagonally
(8-connectivity, which also covers pieces meeting only at a block corner);
the connected components of that graph are unioned: the union of their pixel
squares, the point set GDAL returns for them when it polygonizes the whole
raster. Nothing else is compared, so joining never looks at the pixels again.

Seams are joined in two levels (``join_pieces``): a polygonize task joins the
seams between the blocks of its group, and merge-parquet those between groups.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..partitions import Window
from .parts import _TIME, PART_SCHEMA, Finisher, _finished_rows, _rows
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


def _key_codes(table: pa.Table) -> np.ndarray:
    """A code per row for its (store, time index, label): pieces of different keys never join."""
    label = pc.dictionary_encode(table["label"].combine_chunks()).indices.to_numpy()
    keys = np.stack([table["store"].to_numpy(), table["time_index"].to_numpy(), label])
    return np.unique(keys, axis=1, return_inverse=True)[1].ravel()


def _components(table: pa.Table, connectivity: int) -> np.ndarray:
    """Component id of each border piece: pieces connected across block edges."""
    n = table.num_rows
    group = _key_codes(table)
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


Finishers = Sequence[Finisher] | Mapping[int, Finisher]  # by store index


def join_border_pieces(border: pa.Table, finishers: Finishers, settings: VectorizeSettings) -> pa.Table:
    """merge-parquet's level: union the border pieces of each component and finish them like whole
    pieces."""
    return join_pieces(border, finishers, settings)[0]


def join_pieces(border: pa.Table, finishers: Finishers, settings: VectorizeSettings,
                window: Window | None = None) -> tuple[pa.Table, pa.Table]:
    """Join border pieces into components: (finished rows, pieces still on ``window``'s edges).

    Two levels use it. A polygonize task joins its blocks' pieces across the
    block edges inside its group (``window``, the group's): a component with
    no run on the group's edges is whole and leaves finished; one with runs
    there stays a piece, the union of its members with the runs on the
    group's edges, for merge-parquet. The union of a component's pieces is
    the point set GDAL gives for it over the group, so the next level joins it
    exactly as it would a block's piece. Without ``window`` (merge-parquet)
    every component is whole.
    """
    empty = PART_SCHEMA.empty_table()
    if border.num_rows == 0:
        return empty, empty
    comp = _components(border, settings.connectivity)
    n_comp = int(comp.max()) + 1
    order = np.argsort(comp, kind="stable")
    members = np.split(order, np.flatnonzero(np.diff(comp[order])) + 1)
    first = np.array([m[0] for m in members])
    pixels = np.bincount(comp, weights=border["pixels"].to_numpy(), minlength=n_comp).astype(np.int64)
    sums = None
    if settings.stats:
        sums = np.bincount(comp, weights=border["value_sum"].to_numpy(zero_copy_only=False), minlength=n_comp)
    pieces = shapely.from_wkb(border["pixels_wkb"].to_numpy(zero_copy_only=False))
    outer_runs = _runs_on_edges(border, comp, window)
    outer = np.zeros(n_comp, bool)
    outer[outer_runs[1]] = True
    first_rows = border.take(pa.array(first))
    stores, time_indexes = first_rows["store"].to_numpy(), first_rows["time_index"].to_numpy()
    labels = first_rows["label"].to_numpy(zero_copy_only=False)
    times = first_rows["time"].to_numpy(zero_copy_only=False) if settings.with_time else None
    codes = _key_codes(first_rows)
    finished, kept = [], []
    # One finishing call per (store, time, label): the rows of that combination.
    for code in np.unique(codes):
        idx = np.flatnonzero(codes == code)
        s, t, label = stores[idx[0]], time_indexes[idx[0]], labels[idx[0]]
        stamp = None
        if times is not None and not pd.isna(times[idx[0]]):
            stamp = pd.Timestamp(times[idx[0]])
        whole = idx[~outer[idx]]
        whole = whole[finishers[s].keep(pixels[whole])]
        if len(whole):
            finished.append(_finished_rows(
                finishers[s], _unions(pieces, members, whole), pixels[whole],
                None if sums is None else sums[whole], label, stamp, int(s), int(t),
            ))
        on_edge = idx[outer[idx]]
        if len(on_edge):
            kept.append(_edge_rows(pieces, members, on_edge, outer_runs, pixels, sums, label, stamp,
                                   int(s), int(t)))
    return (pa.concat_tables(finished) if finished else empty), (pa.concat_tables(kept) if kept else empty)


def _unions(pieces: np.ndarray, members: list[np.ndarray], components: np.ndarray) -> np.ndarray:
    """Each component's geometry: its one piece, or the union of its pieces."""
    geoms = np.empty(len(components), dtype=object)
    joined = [k for k, c in enumerate(components) if len(members[c]) > 1]
    for k, c in enumerate(components):
        geoms[k] = pieces[members[c][0]]
    # GEOS releases the GIL: the unions of large components run side by side.
    with ThreadPoolExecutor(max_workers=min(len(joined), os.cpu_count() or 1) or 1) as pool:
        geoms[joined] = list(pool.map(lambda k: union_pieces(pieces[members[components[k]]]), joined))
    return geoms


def _runs_on_edges(border: pa.Table, comp: np.ndarray, window: Window | None
                   ) -> tuple[pa.StructArray, np.ndarray]:
    """The runs on ``window``'s edges (none without a window) and the component of each."""
    runs = border["runs"].combine_chunks()
    flat = pc.list_flatten(runs)
    if window is None:
        return flat.slice(0, 0), np.zeros(0, np.int64)
    piece = pc.list_parent_indices(runs).to_numpy()
    side = flat.field("side").to_numpy(zero_copy_only=False)
    line = flat.field("line").to_numpy()
    on_edge = (((side == "top") & (line == window.row0)) | ((side == "bottom") & (line == window.row1 - 1))
               | ((side == "left") & (line == window.col0)) | ((side == "right") & (line == window.col1 - 1)))
    at = np.flatnonzero(on_edge)
    return flat.take(pa.array(at)), comp[piece[at]]


def _edge_rows(pieces: np.ndarray, members: list[np.ndarray], components: np.ndarray,
               outer_runs: tuple[pa.StructArray, np.ndarray], pixels: np.ndarray, sums: np.ndarray | None,
               label: str, stamp: pd.Timestamp | None, store: int, time_index: int) -> pa.Table:
    """Part rows of components still on the group's edges: the union in pixel coordinates, the runs
    there."""
    runs, run_comp = outer_runs
    mine = np.flatnonzero(np.isin(run_comp, components))
    position = np.full(int(components.max()) + 1, -1)
    position[components] = np.arange(len(components))
    order = mine[np.argsort(position[run_comp[mine]], kind="stable")]
    counts = np.bincount(position[run_comp[order]], minlength=len(components))
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
    n = len(components)
    return _rows(
        n, label=label, time=None if stamp is None else pa.array([stamp] * n, _TIME), store=store,
        time_index=time_index, pixels=pixels[components],
        value_sum=None if sums is None else sums[components],
        pixels_wkb=pa.array(shapely.to_wkb(_unions(pieces, members, components)), pa.binary()),
        runs=pa.ListArray.from_arrays(pa.array(offsets), runs.take(pa.array(order))),
    )
