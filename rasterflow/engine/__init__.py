"""Pure functions: grids, partitions, stores, tile indexes, warping, indexes.

Nothing here imports Prefect, so every piece is testable and reusable on its
own (a notebook, a Dask job) and the flows stay thin.
"""
