"""Searching a dataset's STAC source into a tile index of scenes.

The answer is a GeoDataFrame (EPSG:4326), one row per item: ``id``,
``datetime`` (UTC, naive), ``cloud_cover``, ``baseline`` (Sentinel-2
processing baseline, or None), ``offset`` (what to add to the DN to harmonise
it, e.g. -1000 from baseline 04.00 on), one ``href:<asset>`` column per asset
the dataset reads, and ``geometry``. That is a tile index like the ones
build_gti_mosaic takes, with scenes in place of tiles.

Sources are STAC APIs (searched with pystac-client, bbox + datetime, which
every STAC API supports; filters the server may not implement, like the cloud
cover limit, are applied here) or stac-geoparquet files (read with geopandas).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import geopandas as gpd
import pandas as pd
from shapely.geometry import shape

from ...errors import InputReadError, InvalidParameterError
from .. import uris
from .catalog import DatasetSpec, Rule

BOA_ADD_OFFSET = 1000  # added to L2A DN from processing baseline 04.00 (2022-01-25) on
HARMONIZED_FROM = "04.00"
MAX_ITEMS = 10_000  # per search: a sanity bound far above a few years over a county


def _iso(day: date, end: bool = False) -> str:
    moment = datetime.combine(day, time.max if end else time.min, tzinfo=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _item_time(item: dict[str, Any]) -> pd.Timestamp:
    props = item.get("properties", {})
    stamp = props.get("datetime") or props.get("start_datetime")
    return pd.Timestamp(stamp).tz_convert("UTC").tz_localize(None)


def search_items(spec: DatasetSpec, bbox: tuple[float, float, float, float], first: date | None,
                 last: date | None, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Items of the dataset's source over ``bbox`` (EPSG:4326) and [first, last] (None: open).

    ``storage_options`` are fsspec's, for a stac-geoparquet source.
    """
    if spec.source.geoparquet:
        return _geoparquet_items(spec.source.geoparquet, bbox, first, last, storage_options)
    return _api_items(spec, bbox, first, last)


def _api_items(spec: DatasetSpec, bbox, first: date | None, last: date | None) -> list[dict[str, Any]]:
    import pystac_client

    url, collection = spec.source.stac_url, spec.source.collection
    assert url is not None and collection is not None  # catalog entries name both; a mirror merges onto them
    start, end = _iso(first) if first else "..", _iso(last, end=True) if last else ".."
    span = f"{start}/{end}" if first or last else None
    try:
        client = pystac_client.Client.open(url)
        search = client.search(collections=[collection], bbox=list(bbox), datetime=span,
                               max_items=MAX_ITEMS, limit=250)
        return list(search.items_as_dicts())
    except Exception as exc:  # requests and pystac-client raise many types; all mean "cannot search"
        raise InputReadError(
            url, f"cannot search the STAC API for dataset {spec.prefix} ({type(exc).__name__}: {exc}); "
            f"check that the catalog is up, or point datasets.{spec.prefix}.stac_url in rasterflow.yaml "
            "at a mirror", transient=True,
        ) from None


def _geoparquet_items(uri: str, bbox, first: date | None, last: date | None,
                      storage_options: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Items of a stac-geoparquet file: properties are top-level columns, ``assets`` a struct."""
    try:
        fs, path = uris.filesystem(uri, storage_options)
        frame = gpd.read_parquet(path, filesystem=fs, bbox=bbox)
    except Exception as exc:
        raise InputReadError(uri, f"cannot read the stac-geoparquet file ({exc})") from None
    frame = frame.to_crs("EPSG:4326")
    skip = {"id", "assets", "links", "type", "stac_version", "stac_extensions", "collection", "bbox"}
    items = []
    for row in frame.to_dict("records"):
        props = {k: _plain(v) for k, v in row.items() if k not in skip and k != frame.geometry.name}
        items.append({"id": row["id"], "geometry": row[frame.geometry.name].__geo_interface__,
                      "properties": props, "assets": row["assets"]})
    return [it for it in items if _within(_item_time(it), first, last)]


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _within(stamp: pd.Timestamp, first: date | None, last: date | None) -> bool:
    return (first is None or stamp.date() >= first) and (last is None or stamp.date() <= last)


def _offset(spec: DatasetSpec, props: dict[str, Any]) -> tuple[str | None, float]:
    baseline = props.get("s2:processing_baseline")
    if not spec.harmonize or baseline is None:
        return baseline, 0.0
    # Earth Search marks items whose offset it already removed.
    if props.get("earthsearch:boa_offset_applied") is True:
        return baseline, 0.0
    return baseline, -float(BOA_ADD_OFFSET) if str(baseline) >= HARMONIZED_FROM else 0.0


def tile_index(spec: DatasetSpec, items: list[dict[str, Any]]) -> gpd.GeoDataFrame:
    """The tile index of ``items``: usable scenes only (cloud limit, all assets present), oldest first."""
    assets = sorted({b.asset for b in spec.bands} | ({spec.mask_asset} if spec.mask_asset else set()))
    rows = []
    for item in items:
        props = item.get("properties", {})
        cloud = props.get("eo:cloud_cover")
        if spec.max_cloud_cover is not None and cloud is not None and cloud >= spec.max_cloud_cover:
            continue
        hrefs = {a: (item.get("assets") or {}).get(a, {}) or {} for a in assets}
        if not all(h.get("href") for h in hrefs.values()):
            continue
        baseline, offset = _offset(spec, props)
        rows.append({
            "id": item["id"], "datetime": _item_time(item), "cloud_cover": cloud, "baseline": baseline,
            "offset": offset, **{f"href:{a}": h["href"] for a, h in hrefs.items()},
            "geometry": shape(item["geometry"]),
        })
    columns = ["id", "datetime", "cloud_cover", "baseline", "offset", *[f"href:{a}" for a in assets],
               "geometry"]
    frame = gpd.GeoDataFrame(rows, columns=columns, geometry="geometry", crs="EPSG:4326")
    frame["datetime"] = pd.to_datetime(frame["datetime"])  # typed even when empty
    return frame.sort_values(["datetime", "id"], kind="stable").reset_index(drop=True)


def search_dataset(spec: DatasetSpec, area, windows: list[tuple[int, date, date]],
                   storage_options: dict[str, Any] | None = None) -> dict[int, gpd.GeoDataFrame]:
    """Usable scenes touching ``area`` (shapely, EPSG:4326) for each (year, first, last) window.

    MEDIAN datasets search each window; LATEST datasets search [first, last]
    of the whole request once and give each year every scene up to its end
    (the most recent view as of that year). Raises when no window has a scene.
    """
    bbox = tuple(area.bounds)

    def found(first: date, last: date) -> tuple[gpd.GeoDataFrame, int]:
        items = search_items(spec, bbox, first, last, storage_options)
        index = tile_index(spec, items)
        return index[index.intersects(area)].reset_index(drop=True), len(items)

    out: dict[int, gpd.GeoDataFrame] = {}
    n_items = 0
    if spec.rule is Rule.LATEST:
        index, n_items = found(windows[0][1], windows[-1][2])
        for year, _, last in windows:
            out[year] = index[index["datetime"].dt.date <= last].reset_index(drop=True)
    else:
        for year, first, last in windows:
            out[year], n = found(first, last)
            n_items += n
    if all(frame.empty for frame in out.values()):
        raise nothing_found(spec, bbox, [(start, end) for _, start, end in windows], n_items, storage_options)
    return out


def nothing_found(spec: DatasetSpec, bbox, windows: list[tuple[date, date]], n_items: int,
                  storage_options: dict[str, Any] | None = None) -> InvalidParameterError:
    """The error for an empty search, with the nearest dates the source has over the area."""
    where = f"area {[round(v, 5) for v in bbox]} (EPSG:4326)"
    when = ", ".join(f"{start}..{end}" for start, end in windows)
    first, last = windows[0][0], windows[-1][1]
    if n_items:
        problem = (f"{n_items} item(s) of {spec.source.describe()} over {where} in {when}, but none "
                   f"usable (eo:cloud_cover >= {spec.max_cloud_cover}, missing assets, or outside the AOI)")
        return InvalidParameterError("datasets", spec.prefix, problem, "a wider date range or area")
    try:
        stamps = sorted(tile_index(spec, search_items(spec, bbox, None, None, storage_options))["datetime"])
    except Exception:  # a catalog that cannot list the area still gets the main message
        stamps = []
    before = [s for s in stamps if s.date() < first]
    after = [s for s in stamps if s.date() > last]
    near = []
    if before:
        near.append(f"latest before: {before[-1].date()}")
    if after:
        near.append(f"earliest after: {after[0].date()}")
    hint = "; ".join(near) if near else "the source has no usable scene over this area at any date"
    problem = (f"no scene of {spec.source.describe()} over {where} in {spec.season.value} window(s) {when} "
               f"({hint})")
    return InvalidParameterError("datasets", spec.prefix, problem, "dates or an area the source covers")

