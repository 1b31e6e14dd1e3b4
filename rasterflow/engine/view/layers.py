"""What a URI holds for a map: raster layers (stores, pyramids) and polygon layers.

Any answer of a workflow opens: a store, a multiscales pyramid, an index
GeoParquet of either (one layer per row), or a vectorize GeoParquet of
polygons. Everything here comes from metadata and, for stores without
statistics, one sparse read: colour limits come from a pyramid's band
statistics (2nd-98th percentile, as the quicklook stretches), probabilities
are drawn 0-1, and classes get one colour each.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import zarr
from pydantic import BaseModel, ConfigDict
from rasterio.warp import transform_bounds

from ...errors import InvalidParameterError
from .. import uris
from ..index import is_zarr_group, stores_of
from ..provenance import stable_hash
from ..store import DATA_VAR, describe_store, read_marker, zarr_store

WGS84 = "EPSG:4326"
# Integer bands with at most this many values in their range are drawn as classes when marked categorical.
MAX_CLASSES = 64
# Pixels per side read to find colour limits of a store without statistics.
SAMPLE_SIZE = 512
# Zoom levels drawn below a store's own when it has no overview levels (each tile reads 4^n times its area).
ZOOM_OUT_WITHOUT_LEVELS = 3
VIEWABLE = ("a store, a multiscales store, an index GeoParquet of stores (what every workflow returns), "
            "or the polygons GeoParquet of vectorize_mosaic")

BandKind = Literal["values", "probability", "classes"]


class Level(BaseModel):
    """One resolution of a raster layer: a store-contract store."""

    model_config = ConfigDict(frozen=True)

    uri: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @property
    def resolution(self) -> float:
        return abs(self.transform[0])


class Band(BaseModel):
    """A band as the map draws it: its colour limits and what its values mean."""

    model_config = ConfigDict(frozen=True)

    name: str
    low: float
    high: float
    kind: BandKind = "values"
    classes: list[int] = []


class RasterLayer(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["raster"] = "raster"
    id: str
    uri: str
    title: str
    crs: str  # WKT
    levels: list[Level]  # finest first
    bands: list[Band]
    times: list[str]  # one label per time slice
    dtype: str
    nodata: float | None  # None: NaN
    bounds: tuple[float, float, float, float]  # west, south, east, north (EPSG:4326)
    minzoom: int
    maxzoom: int
    limits_from: Literal["statistics", "sample"]


class VectorLayer(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["vector"] = "vector"
    id: str
    uri: str
    title: str
    labels: list[str]
    polygons: int
    bounds: tuple[float, float, float, float]


Layer = RasterLayer | VectorLayer


def layer_id(uri: str) -> str:
    return stable_hash(uri)[:12]


def layers_of(uri: str, storage_options: dict[str, Any] | None = None) -> list[Layer]:
    """The layers ``uri`` holds, or an ``InvalidParameterError`` saying what would open."""
    if is_zarr_group(uri, storage_options):
        return [raster_layer(uri, storage_options)]
    if not uris.exists(uri, storage_options):
        raise InvalidParameterError("uri", uri, "does not exist", VIEWABLE)
    try:
        schema = _parquet_schema(uri, storage_options)
    except Exception as exc:  # parquet readers raise many types for a file that is not one
        raise InvalidParameterError("uri", uri, f"is neither a Zarr group nor a GeoParquet ({exc})",
                                    VIEWABLE) from None
    if "location" in schema.names:
        return [raster_layer(store, storage_options) for store in stores_of(uri, storage_options, "uri")]
    if b"geo" in (schema.metadata or {}):
        return [vector_layer(uri, storage_options)]
    raise InvalidParameterError("uri", uri, f"is a Parquet file with neither 'location' nor geometry "
                                f"(columns: {schema.names})", VIEWABLE)


def _parquet_schema(uri: str, storage_options: dict[str, Any] | None):
    fs, path = uris.filesystem(uri, storage_options)
    with fs.open(path, "rb") as handle:
        return pq.ParquetFile(handle).schema_arrow


def raster_layer(uri: str, storage_options: dict[str, Any] | None = None) -> RasterLayer:
    """A store or a multiscales store as a map layer (its metadata, plus one sparse read without
    statistics)."""
    group = zarr.open_group(zarr_store(uri, storage_options, read_only=True), mode="r")
    attrs: dict[str, Any] = dict(group.attrs)  # JSON
    layout = (attrs.get("multiscales") or {}).get("layout")
    marker = read_marker(uri, storage_options)
    if layout:
        from .. import store

        store.check_complete(uri, marker)
        levels = [Level(uri=uris.join(uri, item["asset"]), transform=tuple(item["spatial:transform"][:6]),
                        width=item["spatial:shape"][1], height=item["spatial:shape"][0]) for item in layout]
        levels.sort(key=lambda lvl: lvl.resolution)
        base = describe_store(levels[0].uri, storage_options)
        statistics = attrs.get("bands")
    else:
        base = describe_store(uri, storage_options)
        grid = base.grid
        levels = [Level(uri=uri, transform=grid.transform, width=grid.width, height=grid.height)]
        statistics = None
    workflow = str((marker.model_extra or {}).get("workflow", "")) if marker else ""
    bands = (_bands_from_statistics(statistics, base.dtype) if isinstance(statistics, list)
             else _bands_from_sample(levels[-1].uri, base.bands, base.dtype, base.nodata, workflow,
                                     storage_options))
    bounds = transform_bounds(base.grid.rio_crs, WGS84, *base.grid.bounds, densify_pts=21)
    finest, coarsest = _zoom(base.grid.rio_crs, levels[0]), _zoom(base.grid.rio_crs, levels[-1])
    minzoom = max(0, coarsest - (2 if len(levels) > 1 else ZOOM_OUT_WITHOUT_LEVELS))
    return RasterLayer(
        id=layer_id(uri), uri=uri, title=_title(uri, workflow), crs=base.grid.crs, levels=levels, bands=bands,
        times=[time_label(t) for t in base.times], dtype=base.dtype,
        nodata=None if math.isnan(base.nodata) else base.nodata, bounds=bounds,
        minzoom=min(minzoom, finest), maxzoom=max(finest, 0) + 2,
        limits_from="statistics" if isinstance(statistics, list) else "sample",
    )


def time_label(time: str | None) -> str:
    """A time slice as people write it: its date ("2021-01-01"), or "undated"."""
    if time is None or pd.isna(pd.Timestamp(time)):
        return "undated"
    stamp = pd.Timestamp(time)
    return stamp.strftime("%Y-%m-%d") if stamp == stamp.normalize() else stamp.strftime("%Y-%m-%d %H:%M")


def _title(uri: str, workflow: str) -> str:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return f"{name} ({workflow})" if workflow else name


def _zoom(crs, level: Level) -> int:
    """The web-mercator zoom whose pixel is the level's pixel (at the level's centre)."""
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    a = level.transform
    west, north = a[2], a[5]
    east, south = west + a[0] * level.width, north + a[4] * level.height
    x0, y0, x1, y1 = transform_bounds(crs, tms.rasterio_crs, west, south, east, north, densify_pts=21)
    resolution = min((x1 - x0) / level.width, (y1 - y0) / level.height)
    return int(tms.zoom_for_res(resolution))


def _bands_from_statistics(statistics: list[dict[str, Any]], dtype: str) -> list[Band]:
    """Colour limits from a pyramid's ``bands`` attribute: 2nd-98th percentiles of the whole store."""
    return [_band_from_statistics(entry, dtype) for entry in statistics]


def _band_from_statistics(entry: dict[str, Any], dtype: str) -> Band:
    stats = entry.get("statistics") or {}
    low = stats.get("percentile_2", stats.get("minimum", 0.0))
    high = stats.get("percentile_98", stats.get("maximum", 1.0))
    lowest, highest = stats.get("minimum"), stats.get("maximum")
    kind: BandKind = "values"
    classes: list[int] = []
    if lowest is not None and highest is not None:
        if entry.get("resampling") == "mode" and highest - lowest < MAX_CLASSES:
            kind, classes = "classes", list(range(int(lowest), int(highest) + 1))
            low, high = lowest, highest
        elif np.issubdtype(np.dtype(dtype), np.floating) and 0 <= lowest <= highest <= 1:
            kind, low, high = "probability", 0.0, 1.0
    return Band(name=entry["name"], low=float(low), high=float(high if high > low else low + 1),
                kind=kind, classes=classes)


def _bands_from_sample(uri: str, names: list[str], dtype: str, nodata: float, workflow: str,
                       storage_options: dict[str, Any] | None) -> list[Band]:
    """Colour limits of a store without statistics: 2-98% of every n-th pixel of its first time slice.

    Predictions (float bands of predict-mosaic) are probabilities: 0-1, unread.
    """
    if workflow == "predict-mosaic" and np.issubdtype(np.dtype(dtype), np.floating):
        return [Band(name=n, low=0.0, high=1.0, kind="probability") for n in names]
    array = zarr.open_array(zarr_store(uri, storage_options, read_only=True), path=DATA_VAR, mode="r",
                            zarr_format=3)
    _, _, height, width = array.shape
    step = max(1, math.ceil(max(height, width) / SAMPLE_SIZE))
    data = np.asarray(array[0, :, ::step, ::step], dtype="float64")
    bands = []
    for name, values in zip(names, data, strict=True):
        valid = values[np.isfinite(values) & (math.isnan(nodata) | (values != nodata))]
        low, high = np.percentile(valid, [2, 98]) if valid.size else (0.0, 1.0)
        bands.append(Band(name=name, low=float(low), high=float(high if high > low else low + 1)))
    return bands


def vector_layer(uri: str, storage_options: dict[str, Any] | None = None) -> VectorLayer:
    """A polygons GeoParquet as a map layer: its labels, count and bounds (from its metadata)."""
    from pyproj import CRS
    from pyproj.transformer import Transformer

    from ..publish.outputs import parquet_bounds

    fs, path = uris.filesystem(uri, storage_options)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        geo = json.loads(parquet.schema_arrow.metadata[b"geo"])
        column = geo.get("primary_column", "geometry")
        crs = CRS.from_json_dict(geo["columns"][column]["crs"]) if geo["columns"][column].get("crs") \
            else CRS.from_epsg(4326)
        bounds = parquet_bounds(parquet) or tuple(geo["columns"][column].get("bbox") or (0, 0, 0, 0))
        labels: list[str] = []
        if "label" in parquet.schema_arrow.names:
            labels = sorted({str(v) for v in parquet.read(columns=["label"])["label"].to_pylist()})
        polygons = parquet.metadata.num_rows
    west, south, east, north = Transformer.from_crs(crs, WGS84, always_xy=True).transform_bounds(*bounds)
    return VectorLayer(id=layer_id(uri), uri=uri, title=_title(uri, "vectorize-mosaic"), labels=labels,
                       polygons=polygons, bounds=(west, south, east, north))
