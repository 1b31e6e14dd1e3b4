"""Independent reference for vectorize tests: GDAL polygonizing the whole raster at once.

``whole_raster_polygons`` is one ``rasterio.features.shapes`` call over the
entire foreground, with no blocks, labels or unions: what vectorize_mosaic
must reproduce. GDAL returns 8-connected components that meet only at a
corner as one self-touching ring; ``make_valid`` gives that same point set
its valid form, so areas compare without GEOS topology errors.
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from shapely.geometry import shape


def foreground(values: np.ndarray, threshold: float, nodata: float) -> np.ndarray:
    fg = values >= threshold
    if not np.isnan(nodata):
        fg &= values != nodata
    return fg


def whole_raster_polygons(fg: np.ndarray, transform: Affine, connectivity: int) -> np.ndarray:
    pieces = shapes(fg.astype(np.uint8), mask=fg, connectivity=connectivity, transform=transform)
    found = [shape(g) for g, _ in pieces]
    return shapely.make_valid(np.array(found, dtype=object), method="structure", keep_collapsed=False)


def assert_same_polygons(got: np.ndarray, expected: np.ndarray) -> None:
    """Same count, a one-to-one matching, and zero-area symmetric differences."""
    got, expected = np.asarray(got, dtype=object), np.asarray(expected, dtype=object)
    assert len(got) == len(expected), f"{len(got)} polygons, whole-raster GDAL has {len(expected)}"
    inside = shapely.point_on_surface(got)
    g, e = shapely.STRtree(expected).query(inside, predicate="within")
    match = np.full(len(got), -1)
    match[g] = e
    assert (match >= 0).all(), f"{int((match < 0).sum())} polygons lie in no whole-raster polygon"
    assert len(np.unique(match)) == len(expected), "two polygons matched one whole-raster polygon"
    sym = shapely.area(shapely.symmetric_difference(got, expected[match]))
    assert sym.max() == 0.0, f"largest symmetric difference {sym.max()} (polygon {int(sym.argmax())})"
