"""GDAL's polygonize without the GIL: ``GDALPolygonize`` called through ctypes, polygons read as WKB.

``rasterio.features.shapes`` runs GDAL's polygonize holding the GIL, then
builds a GeoJSON-like dict of float tuples per polygon (measured: two threads
ran it no faster than one, and the tuples cost about a third of its CPU). A
group task polygonizes its blocks on a thread pool, so that would use one
core of many. Here the same GDAL function is called through ctypes, which
releases the GIL for the call, on a MEM raster viewing the numpy array, into
an in-memory layer read back as one Arrow table of WKB
(``OGR_L_GetArrowStream``, GDAL >= 3.6): the polygons are GDAL's, vertex for
vertex, at about two thirds of the CPU, and threads run side by side.

The GDAL used is rasterio's own: its C API is found through rasterio's
extension module (``dlsym`` searches a library's dependencies), so there is
one GDAL in the process whatever the wheel bundles. Where that lookup fails
(Windows, a build without the symbols) ``available()`` is False and callers
use ``rasterio.features.shapes``. GDAL reports errors to a per-thread quiet
handler during the call, never to rasterio's Python handler: a GDAL thread
that needed the GIL to log while another thread held it and waited for a
GDAL lock would deadlock (rasterio/rasterio#3611).
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import shapely

_GDT = {np.dtype(np.uint8): 1, np.dtype(np.int32): 5}
_WKB_POLYGON = 3

_P = ctypes.c_void_p
_STR = ctypes.c_char_p
_INT = ctypes.c_int
_CSL = ctypes.POINTER(ctypes.c_char_p)
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "GDALAllRegister": (None, []),
    "GDALGetDriverByName": (_P, [_STR]),
    "GDALGetMetadataItem": (_STR, [_P, _STR, _STR]),
    "GDALCreate": (_P, [_P, _STR, _INT, _INT, _INT, _INT, _CSL]),
    "GDALAddBand": (_INT, [_P, _INT, _CSL]),
    "GDALGetRasterBand": (_P, [_P, _INT]),
    "GDALSetGeoTransform": (_INT, [_P, ctypes.POINTER(ctypes.c_double)]),
    "GDALClose": (_INT, [_P]),
    "GDALDatasetCreateLayer": (_P, [_P, _STR, _P, _INT, _CSL]),
    "GDALPolygonize": (_INT, [_P, _P, _P, _INT, _CSL, _P, _P]),
    "OGR_L_GetArrowStream": (_INT, [_P, _P, _CSL]),
    "CPLPushErrorHandler": (None, [_P]),
    "CPLPopErrorHandler": (None, []),
    "CPLErrorReset": (None, []),
    "CPLGetLastErrorMsg": (_STR, []),
}


class _ArrowArrayStream(ctypes.Structure):
    """The Arrow C stream interface's struct, filled by OGR and handed to pyarrow."""

    _fields_ = [("get_schema", _P), ("get_next", _P), ("get_last_error", _P), ("release", _P),
                ("private_data", _P)]


class _Gdal:
    """rasterio's GDAL, the few functions polygonizing needs, and the drivers it uses."""

    def __init__(self) -> None:
        import rasterio._features

        lib = ctypes.CDLL(rasterio._features.__file__)
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        self.lib = lib
        self.quiet = ctypes.cast(lib.CPLQuietErrorHandler, _P)
        lib.GDALAllRegister()  # idempotent; rasterio registers drivers only inside an Env
        self.raster = lib.GDALGetDriverByName(b"MEM")
        # GDAL >= 3.11 makes MEM a vector driver too and deprecates "Memory" (with a warning).
        vector = lib.GDALGetMetadataItem(self.raster, b"DCAP_VECTOR", None) == b"YES"
        self.vector = self.raster if vector else lib.GDALGetDriverByName(b"Memory")
        if not (self.raster and self.vector):
            raise OSError("GDAL's MEM or Memory driver is missing")


@functools.cache
def _gdal() -> _Gdal | None:
    try:
        return _Gdal()
    except (OSError, AttributeError, ImportError):
        return None


def available() -> bool:
    """Whether GDALPolygonize can be called without the GIL here."""
    return _gdal() is not None


def _csl(*items: str) -> Any:
    """A NULL-terminated C string list (GDAL's ``char **`` options)."""
    return (ctypes.c_char_p * (len(items) + 1))(*[s.encode() for s in items], None)


def _band_options(array: np.ndarray) -> Any:
    return _csl(f"DATAPOINTER={array.ctypes.data}", f"PIXELOFFSET={array.strides[1]}",
                f"LINEOFFSET={array.strides[0]}")



class Outlines(NamedTuple):
    """Polygons (shapely, GDAL's order) and the same as flat arrays: vertices, and where each ring and
    each polygon's rings start (``shapely.to_ragged_array``'s layout)."""

    geoms: np.ndarray
    xy: np.ndarray
    ring_offsets: np.ndarray
    polygon_offsets: np.ndarray


def polygonize(image: np.ndarray, connectivity: int, col0: int, row0: int) -> Outlines:
    """GDAL's polygons of the nonzero regions of ``image`` (uint8 or int32), in pixel coordinates of
    the whole raster (x = column, y = -row).

    ``image`` is its own mask: zero pixels belong to no polygon.
    """
    gdal = _gdal()
    if gdal is None:
        raise RuntimeError("GDALPolygonize is not callable through ctypes here; use rasterio's shapes")
    lib = gdal.lib
    gdt = _GDT[image.dtype]
    height, width = image.shape
    lib.CPLPushErrorHandler(gdal.quiet)  # per thread: GDAL never calls back into Python here
    raster = vectors = None
    try:
        lib.CPLErrorReset()
        raster = lib.GDALCreate(gdal.raster, b"", width, height, 0, gdt, None)
        if not raster or lib.GDALAddBand(raster, gdt, _band_options(image)) != 0:
            raise RuntimeError(f"GDAL could not view the block as a MEM raster: {_last_error(lib)}")
        geotransform = (ctypes.c_double * 6)(col0, 1.0, 0.0, -row0, 0.0, -1.0)
        lib.GDALSetGeoTransform(raster, geotransform)
        vectors = lib.GDALCreate(gdal.vector, b"", 0, 0, 0, 0, None)
        layer = vectors and lib.GDALDatasetCreateLayer(vectors, b"polygons", None, _WKB_POLYGON, None)
        if not layer:
            raise RuntimeError(f"GDAL could not create an in-memory layer: {_last_error(lib)}")
        band = lib.GDALGetRasterBand(raster, 1)
        options = _csl("8CONNECTED=8") if connectivity == 8 else None
        if lib.GDALPolygonize(band, band, layer, -1, options, None, None) != 0:
            raise RuntimeError(f"GDALPolygonize failed: {_last_error(lib)}")
        stream = _ArrowArrayStream()
        if not lib.OGR_L_GetArrowStream(layer, ctypes.addressof(stream), _csl("INCLUDE_FID=NO")):
            raise RuntimeError(f"GDAL could not stream the polygons as Arrow: {_last_error(lib)}")
        with pa.RecordBatchReader._import_from_c(ctypes.addressof(stream)) as reader:
            wkb = reader.read_all().column(0).combine_chunks()
        # Copied into GEOS and numpy before the layer goes.
        geoms = shapely.from_wkb(wkb.to_numpy(zero_copy_only=False))
        ring_sizes, n_rings = _ring_sizes(wkb)
        return Outlines(geoms, shapely.get_coordinates(geoms), _offsets(ring_sizes), _offsets(n_rings))
    finally:
        if vectors:
            lib.GDALClose(vectors)
        if raster:
            lib.GDALClose(raster)
        lib.CPLPopErrorHandler()


def _offsets(sizes: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)


def _ring_sizes(wkb: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(vertices of each ring, rings of each polygon) read from the WKB headers.

    A polygon is: byte order, type (uint32), ring count (uint32), then per
    ring its vertex count (uint32) and the vertices (16 bytes each). Rings are
    walked for all polygons at once, one ring depth at a time; the vertices
    themselves come from GEOS (``get_coordinates``), never from Python.
    """
    offset_type = np.int64 if pa.types.is_large_binary(wkb.type) else np.int32
    _, offset_buffer, data_buffer = wkb.buffers()
    offsets = np.frombuffer(offset_buffer, offset_type)[wkb.offset : wkb.offset + len(wkb) + 1]
    data = np.frombuffer(data_buffer, np.uint8)
    starts = offsets[:-1].astype(np.int64)
    if len(starts) and not (data[starts] == 1).all():
        raise RuntimeError("GDAL returned big-endian WKB")  # native order: never on the platforms we run
    n_rings = _uint32(data, starts + 5)
    first_ring = _offsets(n_rings)[:-1]
    sizes = np.zeros(int(n_rings.sum()), np.int64)
    position = starts + 9
    polygons = np.arange(len(starts))
    depth = 0
    while len(polygons):
        n = _uint32(data, position[polygons])
        sizes[first_ring[polygons] + depth] = n
        position[polygons] += 4 + 16 * n
        depth += 1
        polygons = polygons[n_rings[polygons] > depth]
    return sizes, n_rings


def _uint32(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    b = data[at[:, None] + np.arange(4)].astype(np.int64)
    return b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16 | b[:, 3] << 24


def _last_error(lib: Any) -> str:
    message = lib.CPLGetLastErrorMsg()
    return message.decode(errors="replace") if message else "no message"
