"""Prefect tasks: retries, cache keys and result persistence around engine calls."""
