"""The engine: pure functions and plain data, no Prefect.

One subpackage per workflow, named like its client method and flow
(build_gti_mosaic, build_mosaic, predict_mosaic, vectorize_mosaic,
build_zarr_multiscales, build_and_predict_mosaic_recipe), each split by role:
its request, its plan, and the work of its tasks. The contracts they share sit
here: grids, partitions, stores, indexes, URIs, GDAL's environment, warping,
vector inputs, requests, plans, provenance, the process pool, and what a run
publishes. Nothing here imports Prefect or the layers above; the engine
imports only itself, ``rasterflow.enums`` and ``rasterflow.errors``, so every
piece runs on its own (a notebook, a Dask job) and the flows stay thin.
"""
