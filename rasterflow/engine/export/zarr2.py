"""A store as unsharded Zarr v2: what GDAL 3.4-3.12 (so QGIS 3.x) reads of Zarr.

Same array, coordinates and CRS (``spatial_ref``); chunks as the store's, Zstandard.
GDAL shows the 4-D ``variables`` as one subdataset per (time, band) in 3.6, as bands in 3.10.
"""

from __future__ import annotations

from numcodecs import Zstd

from .. import uris
from ..store import DATA_VAR, open_store, zarr_store
from ..view.layers import RasterLayer
from . import stem


def store_to_zarr2(layer: RasterLayer, folder: str, storage_options_for: uris.OptionsFor) -> str:
    level = layer.levels[0]
    target = uris.join(folder, f"{stem(layer.uri)}-v2.zarr")
    dataset = open_store(level.uri, storage_options_for(level.uri))
    rows, cols = dataset[DATA_VAR].encoding["chunks"][-2:]
    for variable in dataset.variables.values():
        variable.encoding = {}
    # One chunk per (time, band): GDAL reads a band without decoding the others.
    dataset[DATA_VAR].encoding = {"chunks": (1, 1, rows, cols), "compressor": Zstd(level=3)}
    dataset = dataset.chunk({"time": 1, "band": 1, "y": rows, "x": cols})
    uris.remove(target, storage_options_for(target))
    dataset.to_zarr(zarr_store(target, storage_options_for(target)), zarr_format=2, consolidated=True,
                    mode="w")
    return target
