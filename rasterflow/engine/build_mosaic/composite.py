"""Compositing the scenes of one partition into one value per pixel.

Two rules (``catalog.Rule``):

- MEDIAN (Sentinel-2): every scene touching the partition is read with the
  mosaic engine's warped reads onto the partition's grid, its pixels whose
  scene class (SCL) is masked are dropped, its DN are harmonised across
  processing baselines, and the per-pixel median of what is left is taken for
  all pixels at once (sort along the observation axis, then pick the middle:
  what ``np.nanmedian`` returns, without its per-pixel fallbacks). The count
  of valid observations is written as ``N_VALID_PIXELS``. An observation is
  valid when its class is not masked and every band has data, so all bands
  of a pixel are medians over the same scenes.
- LATEST (NAIP, Sentinel-2 scenes): the mosaic engine's own compositing with
  scenes in ascending acquisition time, so the most recent valid pixel is on
  top; Sentinel-2 scenes are harmonised one by one first.

Work and memory. A partition is composited chunk by chunk (``shards``: every
core on its chunks, the shard streamed), each chunk reading only the scenes
whose footprint reaches it. A median needs every observation of a pixel at
once: the stack is observations x bands x rows x cols float32 (sorted in
place). A chunk whose stack would exceed ``MAX_STACK_BYTES`` is processed in
strips of rows that fit; a single row that does not fit is an error (raise
the cap or shorten the period). So memory is bounded by ``MAX_STACK_BYTES``
per thread, never by the shard or the area. Warps run on the store's fixed
lattice (``warp``), so strips and chunks never change a pixel.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict

from ...enums import ResamplingMethod
from ...errors import RasterflowError
from .. import uris
from ..grid import Grid
from ..partitions import AoiMask, Window
from ..warp import OpenTiles, TileRead, read_aligned, render_window
from .catalog import DatasetSpec, Rule

MAX_STACK_BYTES = 1 << 28  # observation stack of one strip of a chunk, per thread


class Scene(BaseModel):
    """One STAC item as a partition reads it."""

    model_config = ConfigDict(frozen=True)

    id: str
    datetime: str
    hrefs: dict[str, str]  # asset key -> href
    offset: float = 0.0  # added to valid DN (harmonisation)
    bounds: tuple[float, float, float, float] | None = None  # footprint's box in the store's CRS (plan)

    def reaches(self, grid: Grid) -> bool:
        return TileRead(uri="", band_indexes=(), nodata=None, bounds=self.bounds).reaches(grid)


class DatasetPart(BaseModel):
    """One dataset's scenes for one partition and time slot, and where its bands go."""

    model_config = ConfigDict(frozen=True)

    spec: DatasetSpec
    scenes: list[Scene]  # oldest first
    band_offset: int  # index of its first band in the store


class CompositeJob(BaseModel):
    """One partition of one store and time slot: the unit of a build-shard task."""

    model_config = ConfigDict(frozen=True)

    key: str
    store_uri: str
    time_index: int
    window: Window
    grid: Grid
    n_bands: int
    parts: list[DatasetPart]
    dtype: str
    nodata: float
    mask_wkb: str | None = None
    max_stack_bytes: int = MAX_STACK_BYTES
    warp_error_threshold: float = 0.0  # gdalwarp's -et
    store_width: int | None = None  # the warp lattice ends at the store's edge


class StackTooLargeError(RasterflowError):
    """Even one row of a partition's observation stack exceeds the memory cap."""


def masked_median(stack: np.ndarray, overwrite_input: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median over axis 0 of (obs, bands, rows, cols), NaN = no observation.

    Returns (median (bands, rows, cols) with NaN where no observation, count
    (rows, cols) of observations). Equal to ``np.nanmedian(stack, axis=0)``.
    ``overwrite_input`` sorts ``stack`` in place (as ``np.median``'s does),
    saving a copy of it.

    Speed. The sort is most of the cost, numpy's per-slice overhead more than
    the comparisons. When no value has its sign bit set (reflectance, DN), the
    float32 bits are sorted as uint32, about a third faster and the same
    order: IEEE 754 orders non-negative floats like their bit patterns, and
    NaN's pattern is above +inf's. The middle values are picked with one flat
    ``take`` per band; ``take_along_axis`` builds an index per dimension and
    cost half as much as the sort.
    """
    n_bands = stack.shape[1]
    count = np.count_nonzero(~np.isnan(stack[:, 0]), axis=0)
    ordered = stack if overwrite_input else stack.copy()
    non_negative = ordered.dtype == np.float32 and ordered.view(np.int32).min(initial=0) >= 0
    (ordered.view(np.uint32) if non_negative else ordered).sort(axis=0)  # NaN sorts last
    plane = count.size  # pixels of one band
    counts = count.ravel()
    # Flat position of each pixel's lower middle value in band 0, and the step to the upper one.
    low_at = np.maximum((counts - 1) // 2, 0) * (n_bands * plane) + np.arange(plane)
    high_step = ((counts % 2 == 0) & (counts > 0)) * (n_bands * plane)
    flat = ordered.reshape(-1)
    median = np.empty((n_bands,) + count.shape, dtype=np.float32)
    for band in range(n_bands):
        at = low_at + band * plane
        low = flat.take(at)
        at += high_step
        np.add(low, flat.take(at), out=low)
        np.divide(low, 2, out=median[band].reshape(-1))
    median[:, count == 0] = np.nan
    return median, count


def _asset_groups(spec: DatasetSpec) -> dict[str, list[tuple[int, int]]]:
    """asset -> [(position in the dataset's bands, band index in the asset)]."""
    groups: dict[str, list[tuple[int, int]]] = {}
    for pos, band in enumerate(spec.bands):
        groups.setdefault(band.asset, []).append((pos, band.index))
    return groups


class WarpAt(NamedTuple):
    """Where a window lies on the store's warp lattice (``warp``), and GDAL's error threshold."""

    origin: tuple[int, int] = (0, 0)  # the window's first row and column in the store
    error_threshold: float = 0.0
    output_width: int | None = None  # the store's: where the lattice ends
    opened: OpenTiles | None = None  # the task's open scenes

    def down(self, rows: int) -> WarpAt:
        return self._replace(origin=(self.origin[0] + rows, self.origin[1]))


EXACT_AT_ORIGIN = WarpAt()


def _nearest(grid: Grid, read: TileRead, dtype: str, nodata: float, requester_pays: bool,
             storage_options: dict[str, Any], at: WarpAt) -> np.ndarray:
    """One asset on ``grid``, nearest neighbour: a plain read when the grids align, else the warp."""
    values = read_aligned(grid, read, dtype, nodata, requester_pays, storage_options, at.opened)
    if values is None:
        values = render_window(grid, [read], dtype, nodata, ResamplingMethod.NEAREST,
                               requester_pays=requester_pays, storage_options=storage_options,
                               error_threshold=at.error_threshold, origin=at.origin,
                               output_width=at.output_width, opened=at.opened)
    return values


def _class_table(classes: tuple[int, ...]) -> np.ndarray:
    """Lookup table class -> masked, for uint8 class rasters (faster than ``np.isin``)."""
    table = np.zeros(256, dtype=bool)
    table[list(classes)] = True
    return table


def read_observation(grid: Grid, spec: DatasetSpec, scene: Scene, out: np.ndarray | None = None,
                     storage_options_for: uris.OptionsFor = uris.no_options, at: WarpAt = EXACT_AT_ORIGIN
                     ) -> np.ndarray:
    """One scene on ``grid`` as float32 (bands, rows, cols): NaN where masked or without data.

    ``out``, when given, receives it (a slot of the observation stack).
    """
    if out is None:
        out = np.empty((len(spec.bands), grid.height, grid.width), dtype=np.float32)
    for asset, members in _asset_groups(spec).items():
        read = TileRead(uri=scene.hrefs[asset], band_indexes=tuple(i for _, i in members), nodata=spec.nodata)
        out[[p for p, _ in members]] = _nearest(grid, read, "float32", math.nan, spec.requester_pays,
                                                storage_options_for(read.uri), at)
    if scene.offset:
        # Reflectance below the offset is clipped to 0, as ESA's harmonisation does (NaN stays NaN).
        out += np.float32(scene.offset)
        np.maximum(out, 0, out=out)
    invalid = np.isnan(out).any(axis=0)  # an observation counts only with every band
    if spec.mask_asset:
        read = TileRead(uri=scene.hrefs[spec.mask_asset], band_indexes=(1,), nodata=None)
        classes = _nearest(grid, read, "uint8", 0, spec.requester_pays, storage_options_for(read.uri), at)[0]
        invalid |= _class_table(spec.mask_classes)[classes]
    np.copyto(out, np.float32(np.nan), where=invalid)
    return out


def stack_row_bytes(n_scenes: int, n_bands: int, width: int) -> int:
    """Bytes of one row of the observation stack (float32, sorted in place)."""
    return n_scenes * n_bands * width * 4


def check_stack(spec: DatasetSpec, n_scenes: int, width: int, max_stack_bytes: int = MAX_STACK_BYTES) -> int:
    """Rows of a strip within the cap; raises when not even one row fits."""
    row_bytes = stack_row_bytes(n_scenes, len(spec.bands), width)
    rows = max_stack_bytes // max(row_bytes, 1)
    if rows < 1:
        raise StackTooLargeError(
            f"dataset {spec.prefix}: {n_scenes} observations of a {width}-pixel row need {row_bytes} bytes, "
            f"above the compositing cap of {max_stack_bytes}; use a shorter period or a smaller "
            "xy_chunksize"
        )
    return rows


def median_composite(grid: Grid, spec: DatasetSpec, scenes: list[Scene],
                     max_stack_bytes: int = MAX_STACK_BYTES,
                     storage_options_for: uris.OptionsFor = uris.no_options, at: WarpAt = EXACT_AT_ORIGIN
                     ) -> np.ndarray:
    """(bands + 1, rows, cols) float32: per-band medians, then N_VALID_PIXELS."""
    nb = len(spec.bands)
    out = np.full((nb + 1, grid.height, grid.width), np.nan, dtype=np.float32)
    out[nb] = 0
    scenes = [s for s in scenes if s.reaches(grid)]
    if not scenes:
        return out
    rows = check_stack(spec, len(scenes), grid.width, max_stack_bytes)
    for r0 in range(0, grid.height, rows):
        r1 = min(r0 + rows, grid.height)
        strip = grid.window(r0, r1, 0, grid.width)
        stack = np.empty((len(scenes), nb, r1 - r0, grid.width), dtype=np.float32)
        for i, scene in enumerate(scenes):
            read_observation(strip, spec, scene, out=stack[i], storage_options_for=storage_options_for,
                             at=at.down(r0))
        median, count = masked_median(stack, overwrite_input=True)
        out[:nb, r0:r1], out[nb, r0:r1] = median, count
    return out


def latest_composite(grid: Grid, spec: DatasetSpec, scenes: list[Scene], dtype: str, nodata: float,
                     storage_options_for: uris.OptionsFor = uris.no_options, at: WarpAt = EXACT_AT_ORIGIN
                     ) -> np.ndarray:
    """(bands, rows, cols): the most recent valid acquisition on top.

    Scenes that need their own treatment (a harmonisation offset, a class
    mask) are read one by one and laid oldest first; otherwise GDAL's mosaic
    does it in one pass.
    """
    if spec.mask_asset or any(scene.offset for scene in scenes):
        out = np.full((len(spec.bands), grid.height, grid.width), nodata, dtype=dtype)
        for scene in scenes:
            observation = read_observation(grid, spec, scene, storage_options_for=storage_options_for, at=at)
            seen = ~np.isnan(observation).any(axis=0)
            out[:, seen] = observation[:, seen]
        return out
    out = np.full((len(spec.bands), grid.height, grid.width), nodata, dtype=dtype)
    scenes = [s for s in scenes if s.reaches(grid)]
    if not scenes:
        return out
    for asset, members in _asset_groups(spec).items():
        reads = [TileRead(uri=s.hrefs[asset], band_indexes=tuple(i for _, i in members), nodata=spec.nodata)
                 for s in scenes]
        out[[p for p, _ in members]] = render_window(grid, reads, dtype, nodata, ResamplingMethod.NEAREST,
                                                     requester_pays=spec.requester_pays,
                                                     storage_options=storage_options_for(reads[0].uri),
                                                     error_threshold=at.error_threshold, origin=at.origin,
                                                     output_width=at.output_width, opened=at.opened)
    return out


def composite_window(job: CompositeJob, grid: Grid, at: WarpAt,
                     storage_options_for: uris.OptionsFor = uris.no_options,
                     aoi: AoiMask | None = None) -> np.ndarray | None:
    """Every dataset's composite of ``grid`` (a window of the job's partition), in store band order.

    AOI-masked (``aoi``: the job's mask, parsed once); None when no scene
    reaches the window or it lies outside the AOI.
    """
    aoi = aoi or AoiMask(job.mask_wkb)
    if aoi.outside(grid) or not any(s.reaches(grid) for part in job.parts for s in part.scenes):
        return None
    out = np.full((job.n_bands, grid.height, grid.width), job.nodata, dtype=job.dtype)
    for part in job.parts:
        if part.spec.rule is Rule.MEDIAN:
            values = median_composite(grid, part.spec, part.scenes, job.max_stack_bytes, storage_options_for,
                                      at)
        else:
            values = latest_composite(grid, part.spec, part.scenes, job.dtype, job.nodata,
                                      storage_options_for, at)
        out[part.band_offset: part.band_offset + len(values)] = values
    mask = aoi.across(grid)
    if mask is not None:
        from rasterio.features import geometry_mask

        out[:, geometry_mask([mask], out_shape=out.shape[1:], transform=grid.affine)] = job.nodata
    return out
