"""build_mosaic: named datasets (Sentinel-2 medians, NAIP) from STAC catalogs to Zarr v3 mosaics.

request -> search (each dataset's STAC source over the AOI, per yearly
window: catalog says where and what, stac searches) -> plan (build-gti-mosaic's
stores and partitions, a partition naming the scenes that touch it) -> shard
(one partition composited by the dataset's rule, composite, and written whole).
"""
