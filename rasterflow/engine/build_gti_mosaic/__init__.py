"""build_gti_mosaic: a GTI tile index and an AOI to sharded Zarr v3 mosaics, warped by GDAL.

request (what a call asks for) -> plan (tiles read for their headers, grids,
partitions) -> shard (one partition warped and written whole: the work of a
build-shard task). tiles and query read and filter the tile index.
"""
