"""Prefect flows, one module per workflow; each composes tasks and nothing else."""

from .build_gti_mosaic import build_gti_mosaic_flow

FLOWS = {"build-gti-mosaic": build_gti_mosaic_flow}

__all__ = ["FLOWS", "build_gti_mosaic_flow"]
