"""Outputs in the formats every GIS opens: Cloud Optimized GeoTIFF, Zarr v2, GeoPackage, FlatGeobuf.

Sharded Zarr v3 is read by GDAL only from 3.13 (2026-05); Debian 13 ships 3.10 and QGIS 4.0
bundles 3.12, and every earlier GDAL also refuses unsharded Zarr v3 ("Unsupported codec:
bytes"). So a store goes out as one COG per time slice (``cog``: tiled, DEFLATE, overviews,
nodata and band descriptions kept) or as an unsharded Zarr v2 copy (``zarr-v2``: GDAL >= 3.4
reads it, QGIS too), and polygons as GeoPackage (``gpkg``) or FlatGeobuf (``fgb``).
"""

from __future__ import annotations

from ...errors import InvalidParameterError
from .. import uris

RASTER_FORMATS = ("cog", "zarr-v2")
VECTOR_FORMATS = ("gpkg", "fgb")
FORMATS = RASTER_FORMATS + VECTOR_FORMATS


def export(uri: str, format: str, output: str | None = None,
           storage_options_for: uris.OptionsFor = uris.no_options) -> list[str]:
    """Write ``uri`` (a store, a multiscales store, an index of either, or polygons) as ``format``
    into the folder ``output`` (default: beside the input); the files written."""
    from ..view.layers import RasterLayer, layers_of

    if format not in FORMATS:
        raise InvalidParameterError("format", format, "is not an export format", ", ".join(FORMATS))
    layers = layers_of(uri, storage_options_for(uri))
    rasters = [layer for layer in layers if isinstance(layer, RasterLayer)]
    if (format in RASTER_FORMATS) != bool(rasters):
        valid = ", ".join(RASTER_FORMATS if rasters else VECTOR_FORMATS)
        raise InvalidParameterError("format", format, f"does not fit {uri} "
                                    f"({'raster stores' if rasters else 'polygons'})", valid)
    folder = output or uris.parent(uri)
    written: list[str] = []
    if format == "cog":
        from .cog import store_to_cogs

        for layer in rasters:
            written += store_to_cogs(layer, folder, storage_options_for)
    elif format == "zarr-v2":
        from .zarr2 import store_to_zarr2

        written += [store_to_zarr2(layer, folder, storage_options_for) for layer in rasters]
    else:
        from .vectors import polygons_to_file

        written.append(polygons_to_file(uri, folder, format, storage_options_for))
    return written


def stem(uri: str) -> str:
    """``.../aoi-0.zarr`` -> ``aoi-0``: the name exported files take."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name
