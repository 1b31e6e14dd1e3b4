"""Make small STAC collections (Sentinel-2-L2A-like and NAIP-like) from the bundled real samples.

Why a script: build_mosaic's tests need a catalog with the awkward parts of the
real ones (clouds, shadows and no-data in SCL, two processing baselines, bands
at 10, 20 and 60 m, overlapping acquisitions) but must run offline, and the
files are cheap to make, so tests generate them into a temporary folder in a
session fixture instead of the repository carrying them.

Sentinel-2-like (collection ``sentinel-2-l2a``): the ground is the bundled
Landsat-8 tile ``LC08_224078_20200518_r0c0`` (Iguazu, 30 m, blue/green/red DN),
a 3 x 3 km cut upsampled to 10 m, its DN turned into TOA reflectance x 10000
(USGS scale 2e-5, offset -0.1). Each scene scales that ground by a seeded gain
and adds noise; NIR and the other L2A bands are derived from it (they are not
measurements), each at its Sentinel-2 resolution (10, 20 or 60 m). The grid
origin is moved by < 60 m onto a multiple of 60 m, as Sentinel-2 tiles are.
SCL (20 m) is vegetation/water with cloud blobs (8, 9, 10: bright in the
bands), their shadows (3: dark), a few saturated (1) and unclassified (7)
pixels; one scene has a no-data strip (SCL 0, bands 0). Scenes from 2022-01-25
on use processing baseline 04.00 and carry the +1000 BOA offset, earlier ones
03.01. One scene per year has 90 % cloud cover (above build_mosaic's 75 %
limit). Asset keys follow Earth Search v1 (``blue``, ``green``, ..., ``scl``).

NAIP-like (collection ``naip``): the two Haiti RGBN cut-outs (uint8, 5 m,
overlapping) as two acquisitions, the second cut-out the OLDER one, so "most
recent on top" is visible in the overlap. One 4-band asset ``image``.

Usage: python scripts/make_stac_sample.py OUT_DIR [SIZE]   (SIZE: Sentinel-2 pixels a side, default 300)
Writes OUT_DIR/{sentinel-2-l2a,naip}/{collection.json,items.json,<scene>/*.tif}.
"""

from __future__ import annotations

import json
import shutil
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.shutil import copy as rio_copy
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "rasterflow" / "samples"
LANDSAT_TILE = SAMPLES / "landsat8_iguazu" / "LC08_224078_20200518_r0c0.tif"
HAITI = SAMPLES / "haiti_rgbn"

COG = dict(driver="COG", compress="DEFLATE", predictor="2", blocksize=256, overviews="NONE")
S2_SIZE_10M = 300  # pixels on a side at 10 m (3 km); a multiple of 60 m, at most 1620 (the tile)
S2_COLLECTION = "sentinel-2-l2a"
NAIP_COLLECTION = "naip"

# Earth Search v1 asset key -> (L2A band, resolution in m)
S2_ASSETS = {
    "coastal": ("B01", 60), "blue": ("B02", 10), "green": ("B03", 10), "red": ("B04", 10),
    "rededge1": ("B05", 20), "rededge2": ("B06", 20), "rededge3": ("B07", 20), "nir": ("B08", 10),
    "nir08": ("B8A", 20), "nir09": ("B09", 60), "swir16": ("B11", 20), "swir22": ("B12", 20),
}
# (datetime, cloud cover %, seed); baselines follow the date like ESA's reprocessing did.
S2_SCENES = [
    ("2021-03-12T13:46:21Z", 12.0, 1), ("2021-04-21T13:46:19Z", 30.5, 2), ("2021-05-16T13:46:22Z", 5.0, 3),
    ("2021-07-20T13:46:20Z", 90.0, 4), ("2021-10-18T13:46:21Z", 22.0, 5), ("2021-11-12T13:46:25Z", 41.0, 6),
    ("2022-03-07T13:46:21Z", 18.0, 7), ("2022-04-16T13:46:19Z", 9.5, 8), ("2022-05-11T13:46:22Z", 60.0, 9),
    ("2022-07-15T13:46:20Z", 90.0, 10), ("2022-10-13T13:46:21Z", 3.0, 11), ("2022-11-22T13:46:25Z", 35.0, 12),
]
BASELINE_04_FROM = "2022-01-25"
BOA_ADD_OFFSET = 1000

NAIP_SCENES = [("rgbn_suba.tif", "2019-06-14T00:00:00Z"), ("rgbn_subb.tif", "2018-07-02T00:00:00Z")]


def _cog(path: Path, data: np.ndarray, transform: Affine, crs, nodata, descriptions=None) -> None:
    tmp = path.with_suffix(".tmp.tif")
    profile = dict(driver="GTiff", width=data.shape[-1], height=data.shape[-2], count=data.shape[0],
                   dtype=data.dtype, crs=crs, transform=transform, nodata=nodata)
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = descriptions
    rio_copy(tmp, path, **COG)
    tmp.unlink()


def _ground(size: int) -> tuple[np.ndarray, Affine, object]:
    """TOA reflectance x 10000 (blue, green, red) at 10 m, ``size`` pixels a side, and its grid."""
    with rasterio.open(LANDSAT_TILE) as src:
        n30 = size // 3
        row0, col0 = (src.height - n30) // 2, (src.width - n30) // 2
        dn = src.read(window=((row0, row0 + n30), (col0, col0 + n30))).astype("float64")
        x0, y0 = src.transform * (col0, row0)
        crs = src.crs
    refl = np.clip(dn * 2e-5 - 0.1, 0.0001, 1.0) * 10000
    refl = refl.repeat(3, axis=1).repeat(3, axis=2)
    x0, y0 = np.floor(x0 / 60) * 60, np.ceil(y0 / 60) * 60  # Sentinel-2 tiles sit on 60 m
    return refl, Affine(10, 0, x0, 0, -10, y0), crs


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    h, w = a.shape
    return a.reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def _scene_bands(ground: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Reflectance x 10000 of the 12 L2A bands at 10 m (before any offset)."""
    gain = rng.uniform(0.9, 1.1)
    blue, green, red = (g * gain + rng.normal(0, 40, g.shape) for g in ground)
    nir = np.clip(3.0 * green - 1.2 * red + 900, 1, None)
    return {
        "B01": blue * 1.05, "B02": blue, "B03": green, "B04": red, "B05": 0.7 * red + 0.3 * nir,
        "B06": 0.4 * red + 0.6 * nir, "B07": 0.2 * red + 0.8 * nir, "B08": nir, "B8A": nir * 0.98,
        "B09": nir * 0.3, "B11": green * 0.8 + 300, "B12": red * 0.6 + 200,
    }


def _scl(ground: np.ndarray, rng: np.random.Generator, nodata_strip: bool) -> np.ndarray:
    """Scene classification at 20 m: vegetation (4) or water (6), clouds, shadows, defects."""
    n = ground.shape[-1] // 2
    scale = n / 150  # cloud counts grow with the area
    nir = np.clip(3.0 * ground[1] - 1.2 * ground[2] + 900, 1, None)
    scl = np.where(_block_mean(nir, 2) < _block_mean(ground[1], 2) * 1.3, 6, 4).astype("uint8")
    yy, xx = np.mgrid[0:n, 0:n]
    for cls in rng.choice([8, 9, 10], size=int(rng.integers(2, 5) * scale**2)):
        cy, cx, r = rng.integers(0, n), rng.integers(0, n), rng.integers(6, 20)
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        shadow = (yy - cy - r // 2 - 4) ** 2 + (xx - cx - r // 2 - 4) ** 2 < r**2
        scl[shadow & ~blob & (scl != 8) & (scl != 9) & (scl != 10)] = 3
        scl[blob] = cls
    scl[rng.random((n, n)) < 0.003] = 1
    scl[rng.random((n, n)) < 0.01] = 7
    if nodata_strip:
        scl[:, : n // 5] = 0
    return scl


def _as_seen(values: np.ndarray, scl10: np.ndarray) -> np.ndarray:
    """What the sensor records where SCL says cloud, cirrus, shadow or saturation.

    Clouds are bright (>= 9000) and shadows dark, so a composite that let a
    masked class through would show it.
    """
    values = values.copy()
    values[(scl10 == 8) | (scl10 == 9)] = 9000 + (values[(scl10 == 8) | (scl10 == 9)] % 500)
    values[scl10 == 10] += 2500
    values[scl10 == 3] *= 0.3
    values[scl10 == 1] = 20000
    return values


def _item(item_id: str, collection: str, dt: str, geom_4326: dict, bbox, properties: dict,
          assets: dict) -> dict:
    return {
        "type": "Feature", "stac_version": "1.1.0", "stac_extensions": [], "id": item_id,
        "collection": collection, "geometry": geom_4326, "bbox": list(bbox),
        "properties": {"datetime": dt, **properties}, "assets": assets, "links": [],
    }


def _footprint(bounds, crs) -> tuple[dict, tuple]:
    geom = transform_geom(crs, "EPSG:4326", mapping(box(*bounds)))
    lons = [p[0] for p in geom["coordinates"][0]]
    lats = [p[1] for p in geom["coordinates"][0]]
    return geom, (min(lons), min(lats), max(lons), max(lats))


def _collection(cid: str, items: list[dict], description: str) -> dict:
    xs = [v for it in items for v in it["bbox"][0::2]]
    ys = [v for it in items for v in it["bbox"][1::2]]
    times = sorted(it["properties"]["datetime"] for it in items)
    return {
        "type": "Collection", "stac_version": "1.1.0", "id": cid, "description": description,
        "license": "other", "links": [],
        "extent": {"spatial": {"bbox": [[min(xs), min(ys), max(xs), max(ys)]]},
                   "temporal": {"interval": [[times[0], times[-1]]]}},
    }


def _write_collection(out: Path, collection: dict, items: list[dict]) -> None:
    (out / "collection.json").write_text(json.dumps(collection, indent=1))
    (out / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": items}, indent=1))


def make_sentinel2(out: Path, size: int = S2_SIZE_10M) -> list[dict]:
    ground, transform, crs = _ground(size)
    items = []
    for n, (dt, cloud, seed) in enumerate(S2_SCENES):
        rng = np.random.default_rng(seed)
        day = dt[:10]
        baseline = "04.00" if day >= BASELINE_04_FROM else "03.01"
        offset = BOA_ADD_OFFSET if baseline >= "04.00" else 0
        scl = _scl(ground, rng, nodata_strip=(n % 4 == 2))
        nodata10 = np.repeat(np.repeat(scl == 0, 2, axis=0), 2, axis=1)
        item_id = f"S2X_MSIL2A_{day.replace('-', '')}_T21JXN"
        scene_dir = out / item_id
        scene_dir.mkdir(parents=True, exist_ok=True)
        assets = {}
        scl10 = np.repeat(np.repeat(scl, 2, axis=0), 2, axis=1)
        for key, values in _scene_bands(ground, rng).items():
            values = _as_seen(values, scl10)
            asset = next(a for a, (b, _) in S2_ASSETS.items() if b == key)
            res = S2_ASSETS[asset][1]
            dn = np.clip(np.rint(values), 1, 20000) + offset
            dn[nodata10] = 0
            if res > 10:
                dn = np.rint(_block_mean(dn, res // 10))
                dn[_block_mean(nodata10.astype(float), res // 10) > 0] = 0
            path = scene_dir / f"{key}.tif"
            _cog(path, dn[None].astype("uint16"), transform * Affine.scale(res / 10), crs, 0)
            assets[asset] = {"href": str(path.resolve()),
                             "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                             "roles": ["data"], "gsd": res}
        scl_path = scene_dir / "SCL.tif"
        _cog(scl_path, scl[None], transform * Affine.scale(2), crs, None)
        assets["scl"] = {"href": str(scl_path.resolve()), "type": "image/tiff; application=geotiff",
                         "roles": ["data"], "gsd": 20}
        bounds = (transform.c, transform.f - 10 * size, transform.c + 10 * size, transform.f)
        geom, bbox = _footprint(bounds, crs)
        props = {"eo:cloud_cover": cloud, "s2:processing_baseline": baseline, "proj:code": crs.to_string(),
                 "platform": "sentinel-2x"}
        items.append(_item(item_id, S2_COLLECTION, dt, geom, bbox, props, assets))
    _write_collection(out, _collection(S2_COLLECTION, items,
                                       "Sentinel-2 L2A-like scenes made from Landsat-8 (tests)"),
                      items)
    return items


def make_naip(out: Path) -> list[dict]:
    items = []
    for name, dt in NAIP_SCENES:
        scene_dir = out / Path(name).stem
        scene_dir.mkdir(parents=True, exist_ok=True)
        path = scene_dir / "image.tif"
        shutil.copyfile(HAITI / name, path)
        with rasterio.open(path) as src:
            geom, bbox = _footprint(src.bounds, src.crs)
            crs = src.crs.to_string()
        assets = {"image": {"href": str(path.resolve()),
                            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                            "roles": ["data"]}}
        items.append(_item(f"naip_{Path(name).stem}_{dt[:10]}", NAIP_COLLECTION, dt, geom, bbox,
                           {"proj:code": crs, "gsd": 5.0}, assets))
    _write_collection(out, _collection(NAIP_COLLECTION, items,
                                       "NAIP-like RGBN acquisitions made from the Haiti sample"),
                      items)
    return items


def make(out_dir: Path, size: int = S2_SIZE_10M) -> dict[str, Path]:
    """Write both collections under ``out_dir`` (Sentinel-2 scenes ``size`` px a side at 10 m);
    returns collection id -> folder."""
    folders = {S2_COLLECTION: out_dir / S2_COLLECTION, NAIP_COLLECTION: out_dir / NAIP_COLLECTION}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    make_sentinel2(folders[S2_COLLECTION], size)
    make_naip(folders[NAIP_COLLECTION])
    return folders


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    start = datetime.now()
    for cid, folder in make(Path(sys.argv[1]),
                            int(sys.argv[2]) if len(sys.argv) == 3 else S2_SIZE_10M).items():
        print(f"{cid}: {folder}")
    print(f"done in {(datetime.now() - start).total_seconds():.1f} s")
