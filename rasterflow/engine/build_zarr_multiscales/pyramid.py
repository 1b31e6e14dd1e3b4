"""The pyramid's root group: created (or adopted) with its levels, described, committed last.

A pyramid is a root group (zarr-conventions multiscales v0.1 with proj and
spatial v0.1) over one store-contract store per level, so each level opens alone
with xarray + rioxarray and is written, committed and cached like any store;
the root's marker is written after every level's.
"""

from __future__ import annotations

from typing import Any

import zarr

from .. import uris
from ..store import (
    ATTR,
    PROJ_CONVENTION,
    SPATIAL_CONVENTION,
    adopted_generation,
    commit_store,
    create_store,
    open_data_array,
    read_marker,
    start_marker,
    zarr_store,
)
from .plan import CONVENTION_METHOD, PyramidPlan

# zarr-conventions/multiscales at its published version, v0.1 (see PROJ_CONVENTION in engine/store.py).
MULTISCALES_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/multiscales/refs/tags/v0.1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/multiscales/blob/v0.1/README.md",
    "uuid": "d35379db-88df-4056-af3a-620245f8e347",
    "name": "multiscales",
    "description": "Multiscale layout of zarr datasets",
}


def create_pyramid(pyramid: PyramidPlan, provenance: dict[str, Any],
                   storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """Create (or adopt) the root group, then every level's store; their generations by URI.

    Same adoption rule as ``create_store``: a root with the same fingerprint is
    kept with its levels (a resumed run keeps their shards); anything else at
    the URI is removed first. The root's marker says 'writing' until
    ``commit_pyramid``.
    """
    with uris.creating(pyramid.uri):
        generation = adopted_generation(read_marker(pyramid.uri, storage_options), pyramid.fingerprint)
        if generation is None:
            uris.remove(pyramid.uri, storage_options)
            marker = start_marker(pyramid.fingerprint, provenance)
            group = zarr.open_group(zarr_store(pyramid.uri, storage_options), mode="w", zarr_format=3)
            group.attrs[ATTR] = marker.model_dump(mode="json", exclude_none=True)
            generation = marker.generation
    levels = {
        lvl.spec.uri: create_store(lvl.spec, lvl.fingerprint, provenance | {"level": lvl.level},
                                   storage_options)
        for lvl in pyramid.levels
    }
    return {pyramid.uri: generation} | levels


def multiscales_attributes(pyramid: PyramidPlan, level0_attrs: dict[str, Any]) -> dict[str, Any]:
    """Root attributes: zarr-conventions multiscales v0.1 composed with proj and spatial v0.1.

    ``spatial:transform``/``spatial:shape`` go on each layout item and not on the
    root (the spatial convention's rule for multiscales groups); ``transform.scale``
    is relative to ``derived_from`` (the level before), as the spec and GDAL's
    writer have it, on the (y, x) axes named by ``spatial:dimensions``.
    """
    methods = {CONVENTION_METHOD[m] for m in pyramid.methods}
    method = methods.pop() if len(methods) == 1 else None
    layout = []
    for lvl in pyramid.levels:
        item: dict[str, Any] = {"asset": str(lvl.level)}
        if lvl.level:
            item["derived_from"] = str(lvl.level - 1)
            item["transform"] = {"scale": [2.0, 2.0], "translation": [0.0, 0.0]}
            if method:
                item["resampling_method"] = method
        else:
            item["transform"] = {"scale": [1.0, 1.0], "translation": [0.0, 0.0]}
        item["spatial:shape"] = [lvl.spec.grid.height, lvl.spec.grid.width]
        item["spatial:transform"] = list(lvl.spec.grid.transform)
        layout.append(item)
    multiscales: dict[str, Any] = {"layout": layout}
    if method:
        multiscales["resampling_method"] = method
    proj = {k: v for k, v in level0_attrs.items() if k.startswith("proj:")}
    return {
        "zarr_conventions": [MULTISCALES_CONVENTION, PROJ_CONVENTION, SPATIAL_CONVENTION],
        "multiscales": multiscales,
        **proj,
        "spatial:dimensions": level0_attrs.get("spatial:dimensions", ["y", "x"]),
        "spatial:bbox": level0_attrs.get("spatial:bbox"),
        "spatial:registration": level0_attrs.get("spatial:registration", "pixel"),
    }


def commit_pyramid(pyramid: PyramidPlan, bands: list[dict[str, Any]],
                   storage_options: dict[str, Any] | None = None) -> None:
    """Statistics and metadata in, then every level committed, then the root, last.

    The statistics go on level 0's ``variables`` (a reader of level 0 alone finds
    them) and on the root (where a multiscales reader looks first).
    """
    level0 = pyramid.base.uri
    open_data_array(level0, storage_options, mode="r+").attrs["bands"] = bands
    for lvl in pyramid.levels:
        commit_store(lvl.spec.uri, storage_options)
    level0_attrs = dict(zarr.open_group(zarr_store(level0, storage_options, read_only=True), mode="r").attrs)
    root = zarr.open_group(zarr_store(pyramid.uri, storage_options), mode="r+")
    root.attrs.update(multiscales_attributes(pyramid, level0_attrs) | {"bands": bands})
    commit_store(pyramid.uri, storage_options)
