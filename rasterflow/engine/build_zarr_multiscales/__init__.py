"""build_zarr_multiscales: stores to overview pyramids with band statistics (Zarr multiscales).

request -> source (input stores described and read) -> plan (levels,
partitions, chains) -> stages (the one build order) running levels (the work
of build-shard, build-levels, count-shard; downsample halves, stats
summarizes) -> statistics (summaries merged) -> pyramid (root created,
described and committed last).
"""
