"""What build_zarr_multiscales takes: stores, how many levels, and each band's kernel."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from ...enums import ResamplingMethod
from ..request import Request, StoreOrIndex
from .downsample import SUPPORTED


def _levels(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise ValueError("must be at least 1 (level 0 alone), or None for levels down to one chunk")
    return value


def _overview_kernels(value):
    methods = value.values() if isinstance(value, dict) else [value] if value is not None else []
    unsupported = sorted({m.value for m in methods if m not in SUPPORTED})
    if unsupported:
        raise ValueError(f"{unsupported} cannot build overviews; use average, near or mode "
                         "(one method, or a mapping band -> method)")
    return value


class BuildZarrMultiscalesRequest(Request):
    store: Annotated[StoreOrIndex, Field(description=(
        "A Zarr store (a rasterflow store, or any georeferenced Zarr rioxarray reads), or an index GeoParquet "
        "of stores: one multiscales store per input. The input is never modified."))]
    levels: Annotated[int | None, AfterValidator(_levels), Field(description=(
        "Levels in all, level 0 included; None: down to one chunk."))] = None
    resampling: Annotated[ResamplingMethod | dict[str, ResamplingMethod] | None, AfterValidator(_overview_kernels),
                          Field(description=(
        "average, near or mode, for every band or as a mapping band -> method; None: average, and mode for "
        "integer bands marked categorical."))] = None
