"""Warp and composite tiles into one window of the output grid, with GDAL.

Each tile goes through a ``WarpedVRT`` onto the window's grid, and valid pixels
of later tiles overwrite earlier ones: the compositing of gdalwarp with several
inputs and of GDAL's GTI driver (sources in ascending priority, the last on top).

A fixed lattice. GDAL's approximate transformer (``gdalwarp -et``, 0.125 px by
default) interpolates coordinates along each row of the region it warps, and a
downsampling kernel's width follows the source window of that region, so GDAL's
pixels depend on how the output is cut into regions. Every warp here runs on one
fixed lattice of regions, whatever window is asked for: the warped VRT of a
window starts on the store's lattice of 512 x 128 pixel blocks (GDAL's own
warped-VRT blocks) and is padded to whole blocks (the last column of blocks
ends at the store's edge), and GDAL warps it block by block. A pixel
therefore always comes out of the same block warp: the same value whatever
the chunk size, shard size, partitioning, thread count or task runner, and
the same as one WarpedVRT over the whole store. The padding also
avoids a GDAL defect: a warped VRT whose last row of blocks is short returns
wrong values there for interpolating kernels (measured up to 808 DN off with
bilinear, GDAL 3.6 and 3.10). Downsampling kernels get the tile's scale
(GDAL's ``XSCALE``/``YSCALE`` warp options, ``TileRead.scale``) rather than one
estimated per block, so they filter alike everywhere.

``error_threshold`` is ``gdalwarp -et``: 0 transforms every pixel exactly with
PROJ. rasterio 1.4's WarpedVRT rejects a tolerance of exactly 0, so 0 becomes a
tolerance far below any pixel size, which makes GDAL's approximator fall back
to the exact transform everywhere (checked pixel for pixel against PROJ and
``gdalwarp -et 0``).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from pydantic import BaseModel, ConfigDict
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.features import geometry_mask
from rasterio.vrt import WarpedVRT

from ..enums import ResamplingMethod
from . import uris
from .gdal import read_error, tile_env
from .grid import Grid

GDAL_ERROR_THRESHOLD = 0.125  # gdalwarp's default -et, in pixels
EXACT_TOLERANCE = 1e-9
BLOCK_COLS, BLOCK_ROWS = 512, 128  # the lattice: GDAL's warped-VRT block size

_RESAMPLING = {
    ResamplingMethod.NEAREST: Resampling.nearest,
    ResamplingMethod.BILINEAR: Resampling.bilinear,
    ResamplingMethod.CUBIC: Resampling.cubic,
    ResamplingMethod.CUBIC_SPLINE: Resampling.cubic_spline,
    ResamplingMethod.LANCZOS: Resampling.lanczos,
    ResamplingMethod.AVERAGE: Resampling.average,
    ResamplingMethod.MODE: Resampling.mode,
    ResamplingMethod.MIN: Resampling.min,
    ResamplingMethod.MAX: Resampling.max,
    ResamplingMethod.MED: Resampling.med,
    ResamplingMethod.Q1: Resampling.q1,
    ResamplingMethod.Q3: Resampling.q3,
    ResamplingMethod.SUM: Resampling.sum,
    ResamplingMethod.RMS: Resampling.rms,
}


class TileRead(BaseModel):
    """One tile as a partition reads it: where, which bands, its nodata.

    ``bounds``: what the tile can reach in the output CRS (its footprint's box
    grown by the kernel's radius); windows outside it skip the tile. ``scale``:
    destination pixels per source pixel in x and y (GDAL's XSCALE/YSCALE), for
    downsampling kernels.
    """

    model_config = ConfigDict(frozen=True)

    uri: str
    band_indexes: tuple[int, ...]
    nodata: float | None
    bounds: tuple[float, float, float, float] | None = None
    scale: tuple[float, float] | None = None

    def reaches(self, grid: Grid) -> bool:
        if self.bounds is None:
            return True
        minx, miny, maxx, maxy = grid.bounds
        x0, y0, x1, y1 = self.bounds
        return x0 < maxx and minx < x1 and y0 < maxy and miny < y1


def gdal_resampling(method: ResamplingMethod) -> Resampling:
    return _RESAMPLING[method]


def _valid(values: np.ndarray, nodata: float) -> np.ndarray:
    return ~np.isnan(values) if np.isnan(nodata) else values != nodata


def gdal_scale(native_res: tuple[float, float], res: tuple[float, float]) -> tuple[float, float]:
    """XSCALE/YSCALE of a source whose pixels measure ``native_res`` in the output CRS, onto ``res``.

    GDAL's own estimate for a region covering the whole source, snapped as GDAL
    snaps it: a downsampling factor within 0.05 of a whole number is taken as
    that number (gdalwarpkernel.cpp).
    """
    def axis(native: float, target: float) -> float:
        scale = native / target
        if scale < 1:
            whole = round(1 / scale)
            if abs(1 / scale - whole) < 0.05:
                return 1 / whole
        return scale

    return axis(native_res[0], res[0]), axis(native_res[1], res[1])


Span = tuple[int, int]


def _lattice(grid: Grid, origin: tuple[int, int],
             output_width: int | None) -> tuple[Affine, int, int, tuple[Span, Span]]:
    """(transform, width, height, window of ``grid`` in it) of the VRT on the lattice around ``grid``.

    Rows are padded to whole blocks (a short last row of blocks is GDAL's defect);
    the last column of blocks may end at the output's edge (short columns are exact).
    """
    top, left = origin[0] % BLOCK_ROWS, origin[1] % BLOCK_COLS
    height = math.ceil((top + grid.height) / BLOCK_ROWS) * BLOCK_ROWS
    width = math.ceil((left + grid.width) / BLOCK_COLS) * BLOCK_COLS
    if output_width is not None:
        width = min(width, output_width - (origin[1] - left))
    transform = grid.affine * Affine.translation(-left, -top)
    return transform, width, height, ((top, top + grid.height), (left, left + grid.width))


class OpenTiles:
    """Tile datasets kept open while one task renders its chunks: one set per thread.

    Opening a tile costs a header read (an HTTP request or two when remote)
    and each open handle keeps the tile's decoded blocks in GDAL's cache, so
    neighbouring chunks share them. A GDAL handle serves one thread at a
    time, hence a set per thread, each at most ``per_thread`` tiles (least
    recently used closed first). ``close`` once the task's chunks are done.
    """

    def __init__(self, per_thread: int = 32):
        self.per_thread = per_thread
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sets: list[OrderedDict] = []

    @contextmanager
    def open(self, uri: str) -> Iterator[Any]:
        opened: OrderedDict | None = getattr(self._local, "opened", None)
        if opened is None:
            opened = self._local.opened = OrderedDict()
            with self._lock:
                self._sets.append(opened)
        if uri in opened:
            opened.move_to_end(uri)
        else:
            opened[uri] = rasterio.open(uris.rasterio_path(uri))
            while len(opened) > self.per_thread:
                opened.popitem(last=False)[1].close()
        yield opened[uri]

    def close(self) -> None:
        with self._lock:
            for opened in self._sets:
                for dataset in opened.values():
                    dataset.close()
                opened.clear()

    def __enter__(self) -> OpenTiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def _opened(uri: str, tiles: OpenTiles | None) -> Iterator[Any]:
    if tiles is not None:
        with tiles.open(uri) as src:
            yield src
    else:
        with rasterio.open(uris.rasterio_path(uri)) as src:
            yield src


def _warp_tile(tile: TileRead, grid: Grid, origin: tuple[int, int], output_width: int | None,
               kernel: Resampling, dtype: str, nodata: float, error_threshold: float,
               out: np.ndarray, opened: OpenTiles | None) -> None:
    transform, width, height, window = _lattice(grid, origin, output_width)
    extras = {}
    if tile.scale is not None and kernel is not Resampling.nearest:
        extras = {"XSCALE": repr(tile.scale[0]), "YSCALE": repr(tile.scale[1])}
    with _opened(tile.uri, opened) as src, WarpedVRT(
        src, crs=grid.rio_crs, transform=transform, width=width, height=height, resampling=kernel,
        src_nodata=tile.nodata, nodata=nodata, dtype=dtype,
        tolerance=error_threshold if error_threshold > 0 else EXACT_TOLERANCE, **extras,
    ) as vrt:
        vrt.read(indexes=list(tile.band_indexes), window=window, out=out)


def render_window(
    grid: Grid,
    tiles: list[TileRead],
    dtype: str,
    nodata: float,
    resampling: ResamplingMethod,
    mask_geometry=None,
    requester_pays: bool = False,
    storage_options: dict[str, Any] | None = None,
    error_threshold: float = GDAL_ERROR_THRESHOLD,
    origin: tuple[int, int] = (0, 0),
    output_width: int | None = None,
    opened: OpenTiles | None = None,
) -> np.ndarray:
    """Pixels of ``grid`` (bands, rows, cols) from ``tiles`` in ascending priority.

    ``grid`` is a window of the output whose first row and column are
    ``origin``, in an output ``output_width`` wide (warps run on the output's
    lattice, module docstring; None: as wide as the window's blocks). Pixels
    whose centre falls outside ``mask_geometry`` (in the grid's CRS) are
    nodata, as are pixels no tile covers. ``storage_options`` are the tiles'
    (s3fs options, also turned into GDAL's /vsis3/ configuration). ``opened``:
    the task's open tiles, else each tile is opened for this call.
    """
    shape = (len(tiles[0].band_indexes) if tiles else 0, grid.height, grid.width)
    out = np.full(shape, nodata, dtype=dtype)
    scratch = np.empty_like(out)
    kernel = gdal_resampling(resampling)
    with tile_env(requester_pays, storage_options):
        for tile in tiles:
            if not tile.reaches(grid):
                continue
            try:
                _warp_tile(tile, grid, origin, output_width, kernel, dtype, nodata, error_threshold, scratch,
                           opened)
            except RasterioError as exc:
                raise read_error(tile.uri, exc, storage_options) from None
            valid = _valid(scratch, nodata)
            np.copyto(out, scratch, where=valid)
    if mask_geometry is not None and shape[0]:
        outside = geometry_mask([mask_geometry], out_shape=shape[1:], transform=grid.affine)
        out[:, outside] = nodata
    return out


def _whole(value: float) -> int | None:
    nearest = round(value)
    return nearest if abs(value - nearest) < 1e-6 else None


def read_aligned(
    grid: Grid,
    tile: TileRead,
    dtype: str,
    nodata: float,
    requester_pays: bool = False,
    storage_options: dict[str, Any] | None = None,
    opened: OpenTiles | None = None,
) -> np.ndarray | None:
    """``render_window(grid, [tile], ..., NEAREST)`` without a warp, or None when it needs one.

    When the tile is north-up in the grid's CRS, its pixels are whole multiples
    of the grid's (10, 20, 60 m bands onto a 10 m grid) and their edges fall
    on grid edges, nearest neighbour is a window read and a repeat: each grid
    pixel centre lies in exactly one tile pixel. Same pixels as the warp
    (tests/engine/test_warp.py), at a fraction of its cost (no per-pixel
    coordinate transformation). Tiles with masks other than nodata are left to
    the warp, which honours them.
    """
    from rasterio.enums import MaskFlags

    with tile_env(requester_pays, storage_options):
        try:
            with _opened(tile.uri, opened) as src:
                st, gt = src.transform, grid.affine
                if src.crs is None or src.crs != grid.rio_crs or st.b or st.d or gt.b or gt.d or st.e > 0:
                    return None
                kx, ky = _whole(st.a / gt.a), _whole(st.e / gt.e)
                ox, oy = _whole((gt.c - st.c) / gt.a), _whole((gt.f - st.f) / gt.e)
                if kx is None or ky is None or ox is None or oy is None or kx < 1 or ky < 1:
                    return None
                if any(set(src.mask_flag_enums[i - 1]) - {MaskFlags.all_valid, MaskFlags.nodata}
                       for i in tile.band_indexes):
                    return None
                # Tile pixels holding grid rows oy .. oy+height-1 (in grid pixels from the tile's origin).
                r0, r1 = oy // ky, (oy + grid.height - 1) // ky + 1
                c0, c1 = ox // kx, (ox + grid.width - 1) // kx + 1
                rr0, rr1 = max(r0, 0), min(r1, src.height)
                cc0, cc1 = max(c0, 0), min(c1, src.width)
                inside = (rr0, rr1, cc0, cc1) == (r0, r1, c0, c1)
                if inside:
                    raw = src.read(list(tile.band_indexes), window=((r0, r1), (c0, c1)))
                    block = raw.astype(dtype, copy=False)
                else:
                    block = np.full((len(tile.band_indexes), r1 - r0, c1 - c0), nodata, dtype=dtype)
                    if rr0 < rr1 and cc0 < cc1:
                        raw = src.read(list(tile.band_indexes), window=((rr0, rr1), (cc0, cc1)))
                        block[:, rr0 - r0: rr1 - r0, cc0 - c0: cc1 - c0] = raw
                if tile.nodata is not None and rr0 < rr1 and cc0 < cc1:
                    part = block[:, rr0 - r0: rr1 - r0, cc0 - c0: cc1 - c0]
                    part[raw == tile.nodata] = nodata
        except RasterioError as exc:
            raise read_error(tile.uri, exc, storage_options) from None
    if kx > 1 or ky > 1:
        block = block.repeat(ky, axis=1).repeat(kx, axis=2)
    top, left = oy - r0 * ky, ox - c0 * kx
    return block[:, top: top + grid.height, left: left + grid.width]
