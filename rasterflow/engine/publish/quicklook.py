"""Quicklooks: a small PNG of a result, for people looking at a run.

A picture answers "did it do what I meant?" faster than a table: the right
place, the right bands, no holes. Stores are sampled (every n-th pixel of the
first time slot, n fixed by ``max_size``), never loaded whole: memory is the
picture plus the chunks being decoded. A multiscales store is drawn from its
coarsest level that is still ``max_size`` pixels wide, so drawing it reads
little. Polygons are simplified to the picture's pixel and burned onto a grid
over their bounds, a row group at a time; outlines are the fill's edge.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import shapely
import zarr
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds

from .. import uris
from ..store import DATA_VAR, zarr_store
from .legend import Legend, Quicklook, metres_per_pixel
from .outputs import parquet_bounds

# A photo-like RGBA PNG is ~2.5 bytes a pixel; 384 px keeps the artifact (base64 in the
# Prefect database) near 300 kB and is still readable in the UI.
MAX_SIZE = 384

# viridis at 0, .25, .5, .75, 1: one band reads as a ramp, dark to bright.
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)
_FILL, _EDGE = (30, 136, 229, 255), (13, 71, 161, 255)


def store_png(uri: str, storage_options: dict[str, Any] | None = None, max_size: int = MAX_SIZE) -> bytes:
    """The first 3 bands as RGB (one band: a colour ramp), stretched 2-98%, nodata transparent."""
    return store_quicklook(uri, storage_options, max_size).png


def store_quicklook(uri: str, storage_options: dict[str, Any] | None = None,
                    max_size: int = MAX_SIZE) -> Quicklook:
    """``store_png``'s picture with what its colours mean and its ground scale.

    One band whose values all lie in [0, 1] (a probability) is drawn from 0 to 1, not stretched,
    so the same colour means the same probability in every run.
    """
    group = zarr.open_group(zarr_store(uri, storage_options, read_only=True), mode="r")
    level = _coarsest_level(group, max_size)
    node = group[level] if level else group
    assert isinstance(node, zarr.Group)  # a multiscales level is a group, as the store is
    array = node[DATA_VAR]
    assert isinstance(array, zarr.Array)
    _, n_bands, height, width = array.shape
    step = max(1, math.ceil(max(height, width) / max_size))
    names = drawn_bands(_band_names(node, n_bands))
    data = np.asarray(array[0, : len(names), ::step, ::step], dtype="float64")
    valid = np.isfinite(data)
    if not np.isnan(array.fill_value):
        valid &= data != array.fill_value
    if len(names) == 3:
        rgb, limits = _stretch(data, valid)
        legend = Legend("rgb", names, limits)
    else:
        values = data[0][valid[0]]
        unit = values.size and values.min() >= 0 and values.max() <= 1
        scaled, limits = _stretch(data, valid, (0.0, 1.0) if unit else None)
        rgb = _ramp(scaled[0])
        legend = Legend("ramp", names, limits, ramp=[(int(r), int(g), int(b)) for r, g, b in _RAMP])
    alpha = np.where(valid.any(axis=0), 255, 0).astype("uint8")
    picture = np.concatenate([rgb, alpha[None]])
    return Quicklook(_png(picture), picture.shape[2], picture.shape[1], legend,
                     _store_scale(node.attrs, width, height, picture.shape[2]))


def drawn_bands(bands):
    """The bands a store's quicklook shows: the first three as RGB, else the first one."""
    return list(bands)[:3] if len(bands) >= 3 else list(bands)[:1]


def polygons_png(uri: str, storage_options: dict[str, Any] | None = None, max_size: int = MAX_SIZE) -> bytes:
    """Polygons of a GeoParquet filled in blue with darker outlines, on a transparent ground."""
    return polygons_quicklook(uri, storage_options, max_size).png


def polygons_quicklook(uri: str, storage_options: dict[str, Any] | None = None,
                       max_size: int = MAX_SIZE, names: list[str] | None = None) -> Quicklook:
    """``polygons_png``'s picture with its legend (how many polygons, of what) and ground scale."""
    fs, path = uris.filesystem(uri, storage_options)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        bounds = _bounds(parquet)
        xmin, ymin, xmax, ymax = bounds
        scale = max(xmax - xmin, ymax - ymin) / max_size or 1.0
        shape = (max(1, math.ceil((ymax - ymin) / scale)), max(1, math.ceil((xmax - xmin) / scale)))
        transform = from_bounds(xmin, ymin, xmin + shape[1] * scale, ymin + shape[0] * scale,
                                shape[1], shape[0])
        burned = np.zeros(shape, dtype="uint8")
        for geoms in _geometry_batches(parquet):
            if not len(geoms):
                continue
            rasterize(((g, 1) for g in _at_scale(geoms, scale)), out=burned, transform=transform,
                      all_touched=True)
        count, crs = parquet.metadata.num_rows, _parquet_crs(parquet)
    burned[_outline(burned == 1)] = 2
    palette = np.array([(0, 0, 0, 0), _FILL, _EDGE], dtype="uint8")
    legend = Legend("polygons", names or [], fill=_FILL[:3], count=count)
    ground = metres_per_pixel(crs, (xmin, ymin, xmin + shape[1] * scale, ymax), shape[1]) if crs else None
    return Quicklook(_png(np.moveaxis(palette[burned], -1, 0)), shape[1], shape[0], legend, ground)


def _band_names(node: zarr.Group, n_bands: int) -> list[str]:
    """The store's band labels (its ``band`` coordinate), or their numbers when it has none."""
    try:
        band = node["band"]
        assert isinstance(band, zarr.Array)
        return [str(b) for b in np.asarray(band[:])]
    except (KeyError, AssertionError):
        return [f"band {i + 1}" for i in range(n_bands)]


def _store_scale(attrs: Any, width: int, height: int, picture_width: int) -> float | None:
    """Ground metres per picture pixel from the store's GeoZarr attributes (None without them)."""
    crs = attrs.get("proj:code") or attrs.get("proj:wkt2")
    transform = attrs.get("spatial:transform")
    if not crs or not transform:
        return None
    a, _, c, _, e, f = transform[:6]
    bounds = (c, f + e * height, c + a * width, f) if e < 0 else (c, f, c + a * width, f + e * height)
    return metres_per_pixel(crs, bounds, picture_width)


def _parquet_crs(parquet: pq.ParquetFile) -> str | None:
    """The GeoParquet's geometry CRS as PROJJSON text (OGC:CRS84 when it declares none)."""
    import json

    geo = json.loads((parquet.schema_arrow.metadata or {}).get(b"geo", b"{}"))
    column = geo.get("columns", {}).get(geo.get("primary_column", "geometry"), {})
    if "crs" not in column:
        return "OGC:CRS84" if column else None
    return json.dumps(column["crs"]) if column["crs"] is not None else None


def _at_scale(geoms: np.ndarray, scale: float) -> np.ndarray:
    """The polygons as the picture can show them: simplified to a pixel, holes smaller than a pixel
    dropped. rasterio reads every vertex of every ring through Python, so a mask full of specks
    took seconds to draw; at the picture's scale the drawing is the same. A polygon that simplifies
    away (smaller than a pixel) is drawn as its bounding box, a pixel."""
    simple = shapely.simplify(geoms, scale, preserve_topology=False)
    lost = shapely.is_empty(simple)  # an invalid outline still draws right: GDAL burns what it encloses
    simple[lost] = shapely.envelope(geoms[lost])
    parts = shapely.get_parts(simple)
    rings, owner = shapely.get_rings(parts, return_index=True)
    shell = np.ones(len(rings), bool)
    shell[1:] = owner[1:] != owner[:-1]
    keep = shell | (shapely.area(shapely.polygons(rings)) >= scale * scale)
    return shapely.polygons(rings[keep], indices=owner[keep])


def _outline(filled: np.ndarray) -> np.ndarray:
    """Filled pixels with an unfilled (or outside) 4-neighbour: the outlines, drawn from the fill."""
    inner = np.zeros_like(filled)
    inner[1:-1, 1:-1] = (filled[1:-1, 1:-1] & filled[:-2, 1:-1] & filled[2:, 1:-1] & filled[1:-1, :-2]
                         & filled[1:-1, 2:])
    return filled & ~inner


def _coarsest_level(group: zarr.Group, max_size: int) -> str | None:
    """Path of the coarsest multiscales level at least ``max_size`` wide (or the finest), None if not a
    pyramid."""
    multiscales: Any = group.attrs.get("multiscales", {})  # JSON of the multiscales convention
    layout = multiscales.get("layout")
    if not layout:
        return None
    wide = [item for item in layout if max(item["spatial:shape"]) >= max_size]
    pick = min(wide, key=lambda item: max(item["spatial:shape"])) if wide else max(
        layout, key=lambda item: max(item["spatial:shape"]))
    return pick["asset"]


def _stretch(data: np.ndarray, valid: np.ndarray, fixed: tuple[float, float] | None = None
             ) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Each band to 0-255 between its 2nd and 98th percentile of valid pixels (or ``fixed``
    limits); the bytes and each band's limits."""
    out = np.zeros(data.shape, dtype="uint8")
    limits = []
    for i, (band, ok) in enumerate(zip(data, valid, strict=True)):
        if not ok.any():
            limits.append((math.nan, math.nan))
            continue
        low, high = fixed or tuple(float(v) for v in np.percentile(band[ok], [2, 98]))
        limits.append((low, high))
        scaled = (band - low) / (high - low) if high > low else np.full(band.shape, 0.5)
        out[i] = np.where(ok, np.clip(scaled, 0, 1) * 255, 0).astype("uint8")
    return out, limits


def _ramp(band: np.ndarray) -> np.ndarray:
    stops = np.linspace(0, 255, len(_RAMP))
    return np.stack([np.interp(band, stops, _RAMP[:, c]) for c in range(3)]).astype("uint8")


def _bounds(parquet: pq.ParquetFile) -> tuple[float, float, float, float]:
    """From the bbox column's statistics when the file has them, else from the geometries."""
    known = parquet_bounds(parquet)
    if known is not None:
        return known
    bounds = np.array([np.inf, np.inf, -np.inf, -np.inf])
    for geoms in _geometry_batches(parquet):
        if len(geoms):
            box = shapely.total_bounds(geoms)
            bounds = np.concatenate([np.minimum(bounds[:2], box[:2]), np.maximum(bounds[2:], box[2:])])
    if not np.isfinite(bounds).all():
        return (0.0, 0.0, 1.0, 1.0)
    return tuple(bounds)


def _geometry_batches(parquet: pq.ParquetFile):
    for group in range(parquet.num_row_groups):
        column = parquet.read_row_group(group, columns=["geometry"]).column("geometry")
        geoms = shapely.from_wkb(column.to_numpy(zero_copy_only=False))
        yield geoms[~shapely.is_missing(geoms)]


def _png(bands: np.ndarray) -> bytes:
    """``bands`` (count, height, width) uint8 as PNG bytes (GDAL's PNG driver)."""
    count, height, width = bands.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile() as memory:
            with memory.open(driver="PNG", width=width, height=height, count=count, dtype="uint8") as png:
                png.write(bands)
            return memory.read()
