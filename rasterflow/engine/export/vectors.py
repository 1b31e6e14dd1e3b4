"""Polygons to GeoPackage or FlatGeobuf (GDAL's drivers through pyogrio), attributes kept."""

from __future__ import annotations

import os
import tempfile

from .. import uris
from ..view.vectors import read_polygons
from . import stem

DRIVERS = {"gpkg": ("GPKG", "gpkg"), "fgb": ("FlatGeobuf", "fgb")}


def polygons_to_file(uri: str, folder: str, format: str, storage_options_for: uris.OptionsFor) -> str:
    driver, suffix = DRIVERS[format]
    target = uris.join(folder, f"{stem(uri)}.{suffix}")
    frame = read_polygons(uri, storage_options_for(uri))
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, f"{stem(uri)}.{suffix}")
        frame.to_file(local, driver=driver, layer=stem(uri), engine="pyogrio")
        fs, path = uris.filesystem(target, storage_options_for(target))
        fs.put(local, path)
    return target
