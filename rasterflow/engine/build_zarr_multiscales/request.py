"""What build_zarr_multiscales takes: stores, how many levels, and each band's kernel."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, WithJsonSchema

from ...enums import ResamplingMethod
from ..request import Request, StoreOrIndex

# What engine/build_zarr_multiscales/downsample.py implements.
SUPPORTED = (ResamplingMethod.AVERAGE, ResamplingMethod.NEAREST, ResamplingMethod.MODE)


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


# The kernels overviews take: forms and schemas offer only these members.
OverviewKernel = Annotated[ResamplingMethod, WithJsonSchema({
    "type": "string", "title": "OverviewKernel",
    "enum": [m.value for m in ResamplingMethod if m in SUPPORTED]})]


class BuildZarrMultiscalesRequest(Request):
    store: Annotated[StoreOrIndex, Field(description=(
        "A Zarr store, or an index GeoParquet whose `location` column lists stores (what every workflow "
        "returns): one multiscales store per input store. A store is a rasterflow store (mosaics, "
        "predictions) or any georeferenced Zarr xarray opens and rioxarray georeferences. The input is never "
        "modified."))]
    levels: Annotated[int | None, AfterValidator(_levels), Field(description=(
        "Levels in all, level 0 included (>= 1; 1 is level 0 alone, with its statistics). None: halve until "
        "a level fits in one chunk. More levels than it takes to reach one pixel is an error."))] = None
    resampling: Annotated[OverviewKernel | dict[str, OverviewKernel] | None,
                          AfterValidator(_overview_kernels), Field(description=(
        "Overview kernel: a `ResamplingMethod` for every band, or a mapping band name -> method; `average`, "
        "`near` or `mode`. None: `mode` for categorical bands, `average` for the rest."))] = None
