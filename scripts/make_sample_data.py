"""Make the small real samples bundled in ``rasterflow/samples`` from the shared originals.

Why a script: fixtures are reproducible, and the originals (about 24 MB) are too
big to ship. Each Landsat tile is cut to the area of interest plus a margin, so
the four tiles still overlap (96 px on inner edges, identical values) and the
AOI still crosses all four. Pixel values, block size, nodata, band descriptions
and the tile index columns are kept; only the extent changes.

Usage: python scripts/make_sample_data.py [SOURCE_DIR]   (default ../shared/data)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import geopandas as gpd
import rasterio
from rasterio.shutil import copy as rio_copy
from rasterio.windows import Window, from_bounds
from shapely.geometry import box

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "rasterflow" / "samples"
MARGIN_M = 1500.0  # keeps some context around the AOI for resampling kernels

COG_OPTIONS = dict(
    driver="COG", compress="DEFLATE", predictor="2", blocksize=256, overviews="AUTO", level=9
)


def crop_landsat(src_dir: Path, dst_dir: Path) -> None:
    dst_dir.mkdir(parents=True, exist_ok=True)
    tiles = gpd.read_parquet(src_dir / "tiles.parquet")
    aoi = gpd.read_file(src_dir / "aoi.geojson").to_crs(tiles.crs)
    minx, miny, maxx, maxy = aoi.total_bounds
    area = box(minx - MARGIN_M, miny - MARGIN_M, maxx + MARGIN_M, maxy + MARGIN_M)
    footprints = []
    for location in tiles["location"]:
        with rasterio.open(src_dir / location) as src:
            inter = box(*src.bounds).intersection(area)
            win = from_bounds(*inter.bounds, transform=src.transform)
            win = win.round_offsets().round_lengths()
            win = win.intersection(Window(0, 0, src.width, src.height))
            profile = src.profile | {
                "driver": "GTiff", "width": int(win.width), "height": int(win.height),
                "transform": src.window_transform(win),
            }
            tmp = dst_dir / f"{location}.tmp.tif"
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(src.read(window=win))
                dst.descriptions = src.descriptions
                footprints.append(box(*dst.bounds))
        rio_copy(tmp, dst_dir / location, **COG_OPTIONS)
        tmp.unlink()
    out = tiles.copy()
    out["geometry"] = gpd.GeoSeries(footprints, crs=tiles.crs)
    out.to_parquet(dst_dir / "tiles.parquet")
    for name in ("aoi.geojson", "aoi.parquet"):
        shutil.copy(src_dir / name, dst_dir / name)


def copy_haiti(src_dir: Path, dst_dir: Path) -> None:
    dst_dir.mkdir(parents=True, exist_ok=True)
    for name in ("rgbn_suba.tif", "rgbn_subb.tif", "tiles.parquet", "aoi.geojson"):
        shutil.copy(src_dir / name, dst_dir / name)


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data"
    crop_landsat(src / "landsat8_iguazu", OUT / "landsat8_iguazu")
    copy_haiti(src / "haiti_rgbn", OUT / "haiti_rgbn")
    note = (
        "\n## In this repository\n"
        f"Made by `scripts/make_sample_data.py`: each Landsat tile is cut to the AOI plus {MARGIN_M:.0f} m "
        "(646 x 546 px, still overlapping by 96 px on inner edges) and re-encoded as COG (DEFLATE, "
        "predictor 2); `tiles.parquet` footprints follow the cut. The Haiti files are copied as they are.\n"
    )
    source = OUT / "SOURCE.md"
    kept = ""  # sections other scripts own (scripts/make_csmask_sample.py), between their markers
    if source.exists() and "<!-- " in source.read_text():
        kept = "\n" + source.read_text()[source.read_text().index("<!-- "):]
    source.write_text((src / "README.md").read_text() + note + kept)
    for path in sorted(OUT.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(REPO)}  {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
