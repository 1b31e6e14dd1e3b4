"""vectorize_mosaic: store bands thresholded into polygons, one GeoParquet, exact across blocks.

request -> plan (stores described, blocks; create_output adopts or starts the
output folder) -> polygonize (the work of a polygonize task: one block in
pixel coordinates, into a part of finished rows and border pieces, parts) ->
merge (the work of merge-parquet: border pieces joined across blocks, seams,
and every row written into one GeoParquet).
"""
