"""Output grids: a CRS, an affine transform and a shape, north-up.

Grids are snapped to whole multiples of the resolution (``gdalwarp -tap``), so
stores built for neighbouring or overlapping AOIs share pixel edges and can be
compared or merged without resampling.
"""

from __future__ import annotations

import math
from functools import cached_property

from affine import Affine
from pydantic import BaseModel, ConfigDict
from rasterio.crs import CRS
from rasterio.warp import calculate_default_transform, transform_geom
from shapely.geometry import box, mapping, shape


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

    def window(self, row0: int, row1: int, col0: int, col1: int) -> "Grid":
        """The sub-grid of rows [row0, row1) and columns [col0, col1)."""
        t = self.affine * Affine.translation(col0, row0)
        return Grid(crs=self.crs, transform=tuple(t)[:6], width=col1 - col0, height=row1 - row0)

    def footprint(self, dst_crs: str = "EPSG:4326"):
        """The grid's outline in ``dst_crs``, densified so edges follow the projection."""
        minx, miny, maxx, maxy = self.bounds
        outline = box(minx, miny, maxx, maxy).segmentize(max(maxx - minx, maxy - miny) / 32)
        return reproject_geometry(outline, self.crs, dst_crs)


def native_resolution(
    sources: list[tuple[str, tuple[float, ...], int, int]], dst_crs: CRS
) -> tuple[float, float]:
    """Finest (x, y) resolution of the sources carried into ``dst_crs``.

    Same rule as gdalwarp without ``-tr``: GDAL's suggested warp output for each
    source (``GDALSuggestedWarpOutput2``), then the minimum per axis.
    ``sources`` are (crs wkt, gdal transform, width, height).
    """
    xres = yres = math.inf
    for crs, transform, width, height in sources:
        a = Affine(*transform)
        left, top = a.c, a.f
        right, bottom = a.c + a.a * width, a.f + a.e * height
        t, _, _ = calculate_default_transform(
            CRS.from_user_input(crs), dst_crs, width, height, left, bottom, right, top
        )
        xres, yres = min(xres, t.a), min(yres, -t.e)
    return xres, yres


def snapped_grid(geometry_bounds: tuple[float, float, float, float], res: tuple[float, float], crs: str) -> Grid:
    """The grid covering ``geometry_bounds`` with edges on multiples of ``res``."""
    minx, miny, maxx, maxy = geometry_bounds
    xres, yres = res
    # Tolerance keeps bounds that sit on a pixel edge from growing a whole pixel.
    eps = 1e-9
    x0 = math.floor(minx / xres + eps) * xres
    x1 = math.ceil(maxx / xres - eps) * xres
    y0 = math.floor(miny / yres + eps) * yres
    y1 = math.ceil(maxy / yres - eps) * yres
    width = max(1, round((x1 - x0) / xres))
    height = max(1, round((y1 - y0) / yres))
    return Grid(crs=crs, transform=(xres, 0.0, x0, 0.0, -yres, y1), width=width, height=height)


def reproject_geometry(geometry, src_crs, dst_crs):
    """A shapely geometry in ``dst_crs`` (vertices transformed by PROJ via GDAL)."""
    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    if src == dst:
        return geometry
    return shape(transform_geom(src, dst, mapping(geometry)))
