"""Output grids: a CRS, an affine transform and a shape, north-up.

Grids are snapped to whole multiples of the resolution (``gdalwarp -tap``), so
stores built for neighbouring or overlapping AOIs share pixel edges and can be
compared or merged without resampling.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import pyproj
import shapely
from affine import Affine
from pydantic import BaseModel, ConfigDict
from rasterio.crs import CRS
from rasterio.warp import calculate_default_transform, transform_geom
from rasterio.warp import transform as transform_points
from shapely.geometry import box, mapping, shape


def grid_crs(crs: pyproj.CRS) -> CRS:
    """rasterio's CRS for a grid in ``crs``: by its EPSG code when it is exactly one, else by its WKT."""
    epsg = crs.to_epsg(min_confidence=100)
    return CRS.from_epsg(epsg) if epsg else CRS.from_wkt(crs.to_wkt())


class Grid(BaseModel):
    """A north-up pixel grid. ``transform`` is GDAL order (a, b, c, d, e, f)."""

    model_config = ConfigDict(frozen=True)

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @cached_property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @cached_property
    def rio_crs(self) -> CRS:
        return CRS.from_user_input(self.crs)

    @property
    def res(self) -> tuple[float, float]:
        return self.transform[0], -self.transform[4]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        a = self.affine
        return a.c, a.f + a.e * self.height, a.c + a.a * self.width, a.f

    def window(self, row0: int, row1: int, col0: int, col1: int) -> Grid:
        """The sub-grid of rows [row0, row1) and columns [col0, col1)."""
        t = self.affine @ Affine.translation(col0, row0)
        return Grid(crs=self.crs, transform=tuple(t)[:6], width=col1 - col0, height=row1 - row0)

    def footprint(self, dst_crs: str = "EPSG:4326"):
        """The grid's outline in ``dst_crs``, densified so edges follow the projection."""
        minx, miny, maxx, maxy = self.bounds
        outline = box(minx, miny, maxx, maxy).segmentize(max(maxx - minx, maxy - miny) / 32)
        return reproject_geometry(outline, self.crs, dst_crs)


def source_resolution(crs: str, transform: tuple[float, ...], width: int, height: int,
                      dst_crs: CRS) -> tuple[float, float]:
    """(x, y) size of a source's pixels carried into ``dst_crs``: GDAL's suggested warp output."""
    a = Affine(*transform)
    left, top = a.c, a.f
    right, bottom = a.c + a.a * width, a.f + a.e * height
    t, _, _ = calculate_default_transform(CRS.from_user_input(crs), dst_crs, width, height,
                                          left, bottom, right, top)
    return t.a, -t.e


def native_resolution(
    sources: list[tuple[str, tuple[float, ...], int, int]], dst_crs: CRS
) -> tuple[float, float]:
    """Finest (x, y) resolution of the sources carried into ``dst_crs``.

    Same rule as gdalwarp without ``-tr``: GDAL's suggested warp output for each
    source (``GDALSuggestedWarpOutput2``), then the minimum per axis.
    ``sources`` are (crs wkt, gdal transform, width, height).
    """
    resolutions = [source_resolution(*source, dst_crs) for source in sources]
    return min(r[0] for r in resolutions), min(r[1] for r in resolutions)


def snapped_grid(
    bounds: tuple[float, float, float, float],
    res: tuple[float, float],
    crs: str,
    anchor: tuple[float, float] = (0.0, 0.0),
) -> Grid:
    """The grid covering ``bounds`` whose pixel edges sit on ``anchor + k * res``."""
    minx, miny, maxx, maxy = bounds
    (xres, yres), (ax, ay) = res, anchor
    # Tolerance keeps bounds that sit on a pixel edge from growing a whole pixel.
    eps = 1e-9
    x0 = ax + math.floor((minx - ax) / xres + eps) * xres
    x1 = ax + math.ceil((maxx - ax) / xres - eps) * xres
    y0 = ay + math.floor((miny - ay) / yres + eps) * yres
    y1 = ay + math.ceil((maxy - ay) / yres - eps) * yres
    width = max(1, round((x1 - x0) / xres))
    height = max(1, round((y1 - y0) / yres))
    return Grid(crs=crs, transform=(xres, 0.0, x0, 0.0, -yres, y1), width=width, height=height)


def shared_anchor(
    sources: list[tuple[str, tuple[float, ...]]], crs: CRS, res: tuple[float, float]
) -> tuple[float, float]:
    """Pixel-edge anchor of sources already on the target grid, else (0, 0).

    When every source is north-up in ``crs`` at ``res`` with the same pixel
    phase, the output grid takes that phase, so a mosaic at native resolution
    copies pixels instead of resampling them (Landsat grids, for one, sit at
    15 m offsets from multiples of 30 m). ``sources`` are (crs wkt, transform).
    """
    phases = set()
    for src_crs, t in sources:
        a = Affine(*t)
        if CRS.from_user_input(src_crs) != crs or a.b or a.d:
            return 0.0, 0.0
        if not (math.isclose(a.a, res[0], rel_tol=1e-9) and math.isclose(-a.e, res[1], rel_tol=1e-9)):
            return 0.0, 0.0
        phases.add((round(a.c % res[0], 6) % res[0], round(a.f % res[1], 6) % res[1]))
    return phases.pop() if len(phases) == 1 else (0.0, 0.0)


def reproject_geometry(geometry, src_crs, dst_crs):
    """A shapely geometry in ``dst_crs`` (vertices transformed by PROJ via GDAL)."""
    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    if src == dst:
        return geometry
    return shape(transform_geom(src, dst, mapping(geometry)))


def reproject_geometries(geometries: np.ndarray, src_crs, dst_crs) -> np.ndarray:
    """Many shapely geometries in ``dst_crs``: every vertex in one GDAL call, the same arithmetic as
    ``reproject_geometry`` (tens of thousands of scene footprints take a fraction of a second)."""
    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    if src == dst or not len(geometries):
        return geometries

    def project(xy: np.ndarray) -> np.ndarray:
        xs, ys = transform_points(src, dst, xy[:, 0], xy[:, 1])
        return np.column_stack((xs, ys))

    return shapely.transform(geometries, project)


def utm_epsg(lon: float, lat: float) -> int:
    """WGS 84 / UTM zone of a point: 326xx north of the equator, 327xx south."""
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone
