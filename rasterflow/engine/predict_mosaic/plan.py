"""predict-mosaic: a PyTorch model over whole mosaic stores, block by block, groups of blocks per task.

Plan (``plan_predict_mosaic``): resolve the input stores (one store, or every
row of an index), the device and the model, check everything a user can get
wrong (features, time slices, the model's format, its output channels, that
it runs on a patch of the asked shape) with one probe forward pass, time the
batch sizes on a CPU (``batch``), and cut each output store into blocks and
the blocks into groups. Nothing is written until the plan is whole.

A block is ``xy_block_multiplier`` input chunks on a side, rounded up to
whole output chunks, and always whole output shards, so it writes its shards
whole and alone. It reads its patches' halo from the input store, so its
result is the result of the global patch grid of ``patches``: independent of
the block size, which only bounds memory (one block of input, one of output
per thread). A task (``InferBlockJob``, run by ``group``) is a square group
of neighbouring blocks holding about ``task_pixels`` pixels
(``engine.groups``): the plan holds one job per group, never one per block.

Every patch runs once. A patch whose region straddles a block border is
needed by both blocks; run by both, it cost 18% more forward passes at the
default block size on the benchmark. So blocks are coloured like a
checkerboard, and so are groups: a second-phase block takes the predictions
its first-phase neighbours ran, in memory inside a group and through scratch
files under the output directory across group edges (a second-phase group
starts after its first-phase neighbours). Only patches at block corners,
needed by two first-phase blocks, still run twice. A prediction missing from
the scratch (a neighbour with no valid pixel) is simply run, so the result
never depends on the sharing, and the scratch is removed once every group is
written.

Conventions (docs/workflows.md): output values are float32 with NaN as
nodata; a pixel whose features are all nodata (in either slice, for change
detection) comes out NaN; the model sees a nodata pixel as the nearest valid
pixel of its patch (``block.patch_input``); patches whose pixels are all
nodata are not run at all.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import zarr
from pydantic import BaseModel, ConfigDict

from ...enums import InferenceActorEnum, MergeModeEnum
from ...errors import InvalidParameterError, StoreError
from .. import uris
from ..groups import DEFAULT_TASK_PIXELS, BlockGrid, blocks_of, group_sides
from ..index import store_row, stores_of
from ..partitions import ShardShape, Window
from ..plan import PlanReport, Rate, StorePlan, StoresPlan
from ..provenance import output_dir, provenance, request_id, stable_hash
from ..store import (
    DATA_VAR,
    StoreDescription,
    StoreSpec,
    create_store,
    describe_store,
    read_marker,
    zarr_store,
)
from .batch import fastest_batch
from .model import (
    LoadedModel,
    fetch_model,
    file_sha256,
    load_model,
    probe,
    resolve_device,
    seconds_per_patch,
)
from .model_check import model_format
from .patches import hop_length, patch_origins
from .request import PredictMosaicRequest

WORKFLOW = "predict-mosaic"
# Reading features and merging predictions, besides the model (timed per patch at plan time);
# measured on the bundled sample (benchmarks/dry_run_estimates.py).
RATE = Rate(run_seconds=2.0, task_seconds=0.08, megapixels_per_second=20.0,
            unit="block pixels x (features x input slices + labels written)")
OUTPUT_DTYPE = "float32"
SHARD_BUDGET_BYTES = 512 * 2**20  # uncompressed; a block holds one or more shards
CHANGE = InferenceActorEnum.SEMANTIC_SEGMENTATION_CHANGE_DETECTION_PYTORCH


class InferenceSpec(BaseModel):
    """What every block of one request shares."""

    model_config = ConfigDict(frozen=True)

    model_uri: str
    model_sha256: str
    device: str  # resolved: cpu, cuda, cuda:N
    actor: InferenceActorEnum
    merge_mode: MergeModeEnum
    patch_size: int
    clip_size: int
    batch_size: int
    pad_batches: bool  # the model takes exactly batch_size patches: pad the last batch
    labels: list[str]
    keep: list[int]  # output channels written, in order


class InferBlockJob(BaseModel):
    """A group of neighbouring blocks of one output time slice: the unit of an infer-block task.

    Blocks are ``block`` px squares of the store's block grid; the group is a
    rectangle of them (``window``, starting on the grid), at ``group`` in the
    grid of groups. Groups are coloured like a checkerboard (``phase``), and
    so are blocks within a group (by their own position): what a block shares
    with its neighbours follows from these alone (``group``).
    """

    model_config = ConfigDict(frozen=True)

    key: str
    input_uri: str
    output_uri: str
    input_times: list[int]  # one slice, or two (earlier, later) for change detection
    output_time: int
    window: Window  # the group's
    block: int  # pixels on a side of a block
    group: tuple[int, int]  # row and column in the grid of groups
    height: int  # the whole grid's, which fixes the global patch grid
    width: int
    feature_indexes: list[int]
    input_nodata: float
    spec: InferenceSpec
    phase: int = 0  # group checkerboard colour: phase-1 groups run after their phase-0 neighbours
    scratch_uri: str  # where blocks share predictions across group edges (this time slice's folder)

    @property
    def blocks(self) -> list[Window]:
        return blocks_of(self.window, self.block, self.block)


class PredictStorePlan(StorePlan):
    source: str
    source_times: list[str | None]
    change_detection: bool = False
    time_delta_seconds: float | None = None  # change detection: later minus earlier slice
    jobs: list[InferBlockJob]  # one per group and output time slice, phase 0 first
    scratch_uri: str  # predictions shared across group edges; removed when every group is written


class PredictPlan(StoresPlan):
    stores: list[PredictStorePlan]  # type: ignore[assignment]  # narrower store type

    def report(self, workers: int, patch_seconds: float) -> PlanReport:
        """What the run would do, for a dry run: the forward passes at the model's timed speed
        (serialised on its device), plus the reading and merging at ``RATE``."""
        patches = sum(patch_count(s.spec.grid.height, s.spec.grid.width, s.jobs[0].spec) * len(s.spec.times)
                      for s in self.stores if s.jobs)
        read = written = 0
        for job in (job for s in self.stores for job in s.jobs):
            area = job.window.shape[0] * job.window.shape[1]
            read += area * len(job.feature_indexes) * len(job.input_times) * 4  # float32, as the model sees
            written += area * len(job.spec.keep) * 4
        n, n_jobs = len(self.stores), self.n_jobs
        blocks = sum(len(job.blocks) for s in self.stores for job in s.jobs)  # side by side inside a task
        report = self.reported(
            RATE, workers, tasks={"infer-block": n_jobs, "create-store": n, "commit-store": n},
            parallel=blocks, pixels=(read + written) // 4, bytes_read=read, bytes_written=written,
            inputs=list(self.provenance["inputs"]["stores"]) + [self.provenance["inputs"]["model_path"]],
            stores=[s.spec for s in self.stores], answer=self.index_uri,
        )
        return report.model_copy(update={
            "estimated_seconds": report.estimated_seconds + patches * patch_seconds,
            "rate": f"{report.rate}; the model: {patches} patch(es) x {patch_seconds * 1000:.1f} ms "
                    f"(timed on {self.provenance['inputs']['device']})",
        })

    def index_rows(self) -> list[dict[str, Any]]:
        return [
            store_row(sp.spec, self.workflow, sp.footprint_wkb, times=sp.source_times, source=sp.source,
                      actor=self.provenance["parameters"]["actor"],
                      model_sha256=self.provenance["inputs"]["model_sha256"])
            for sp in self.stores
        ]


# ---------------------------------------------------------------- plan


def input_stores(store: str, request: PredictMosaicRequest, storage_options_for: uris.OptionsFor
                 ) -> list[StoreDescription]:
    """The stores ``store`` names (itself, or an index's rows), each complete and holding the features."""
    described = []
    for uri in stores_of(store, storage_options_for(store)):
        if read_marker(uri, storage_options_for(uri)) is None:
            raise InvalidParameterError("store", uri, "is not a rasterflow store (no 'rasterflow' attribute)",
                                        "a store written by a rasterflow workflow, or an index of them")
        try:
            source = describe_store(uri, storage_options_for(uri))
        except StoreError as exc:
            raise InvalidParameterError("store", uri, str(exc), "complete rasterflow stores") from None
        source.band_indexes(request.features, "features")
        if request.actor == CHANGE and len(source.times) != 2:
            raise InvalidParameterError("store", uri,
                                        f"has {len(source.times)} time slice(s); change detection "
                                        "stacks exactly two (earlier, later)",
                                        "a store built with a time_column giving two slices")
        described.append(source)
    return described


def _batch_size(model: LoadedModel, request: PredictMosaicRequest, in_channels: int) -> tuple[int, bool]:
    """(patches per forward pass, pad the last batch?) after the model's static dims."""
    channels, (h, w) = model.static_channels, model.static_hw
    if channels is not None and channels != in_channels:
        what = "features" if request.actor != CHANGE else "features (x2 slices for change detection)"
        raise InvalidParameterError("features", request.features,
                                    f"the model takes {channels} input channels, {what} give {in_channels}",
                                    f"{channels} channels' worth of features")
    if (h is not None and h != request.patch_size) or (w is not None and w != request.patch_size):
        raise InvalidParameterError("patch_size", request.patch_size,
                                    f"the model was exported for {h} x {w} patches only",
                                    f"patch_size={h}, or export with dynamic height and width")
    if model.static_batch is not None:
        if request.max_batch_size != model.static_batch:
            raise InvalidParameterError(
                "max_batch_size", request.max_batch_size,
                f"the model was exported with a static batch size of {model.static_batch}",
                f"max_batch_size={model.static_batch}, or export with torch.export.Dim for dimension 0",
            )
        return model.static_batch, True
    return request.max_batch_size, False


def _shard_shape(block_px: int, chunk: int, n_bands: int) -> ShardShape:
    """The largest square shard of whole chunks that tiles the block, within the budget."""
    k = block_px // chunk
    fits = [d for d in range(1, k + 1) if k % d == 0 and (d * chunk) ** 2 * n_bands * 4 <= SHARD_BUDGET_BYTES]
    side = max(fits, default=1) * chunk  # a chunk is never split, even over the budget
    return ShardShape(chunk=chunk, rows=side, cols=side)


def patch_count(height: int, width: int, spec: InferenceSpec) -> int:
    """Patches of the global patch grid over a store (all run, unless wholly nodata) per time slice."""
    hop = hop_length(spec.patch_size, spec.clip_size, spec.merge_mode)
    return len(patch_origins(height, spec.patch_size, hop)) * len(patch_origins(width, spec.patch_size, hop))


def patch_seconds(request: PredictMosaicRequest, batch: int,
                  storage_options_for: uris.OptionsFor = uris.no_options) -> float:
    """The model's forward time per patch of ``request``'s shape (``model.seconds_per_patch``)."""
    model, _, _ = checked_model(request, storage_options_for)
    channels = len(request.features) * (2 if request.actor == CHANGE else 1)
    return seconds_per_patch(model, channels, request.patch_size, batch)


def checked_model(request: PredictMosaicRequest, storage_options_for: uris.OptionsFor
                  ) -> tuple[LoadedModel, str, str]:
    """(model, its sha256, the device) once the file is known not to be a pickle."""
    local = fetch_model(request.model_path, storage_options_for(request.model_path))
    fmt = model_format(local, request.model_path)  # refuses pickles before anything else reads the file
    device = resolve_device(request.device, fmt)
    sha = file_sha256(local)
    return load_model(local, sha, device, shown=request.model_path), sha, device


class CheckedModel(NamedTuple):
    """A model that takes the request's patches and answers with its labels."""

    model: LoadedModel
    sha256: str
    device: str
    batch: int
    pad: bool


def check_model(request: PredictMosaicRequest, storage_options_for: uris.OptionsFor) -> CheckedModel:
    """Format, channels, patch and batch shapes, and one probe pass: every mistake a model can hold.

    Needs no input store, so the recipe checks its model with it before any
    mosaic is built.
    """
    model, sha, device = checked_model(request, storage_options_for)
    in_channels = len(request.features) * (2 if request.actor == CHANGE else 1)
    batch, pad = _batch_size(model, request, in_channels)
    probe(model, in_channels, request.patch_size, batch if pad else min(batch, 2), len(request.labels))
    return CheckedModel(model, sha, device, batch, pad)


def plan_predict_mosaic(
    request: PredictMosaicRequest, output_root: str, storage_options_for: uris.OptionsFor = uris.no_options,
    task_pixels: int = DEFAULT_TASK_PIXELS, slots: int = 1,
) -> PredictPlan:
    uris.check_output_root(output_root, storage_options_for(output_root))
    sources = input_stores(request.store, request, storage_options_for)
    return plan_on_stores(request, sources, output_root, storage_options_for, task_pixels, slots)


def plan_on_stores(request: PredictMosaicRequest, sources: list[StoreDescription], output_root: str,
                   storage_options_for: uris.OptionsFor = uris.no_options,
                   task_pixels: int = DEFAULT_TASK_PIXELS, slots: int = 1) -> PredictPlan:
    """The plan over described stores: the model checked (probe pass), every store cut into blocks.

    A recipe's dry run plans on the stores its mosaic would write
    (``store.planned_description``), before they exist.
    """
    model, sha, device, batch, pad = check_model(request, storage_options_for)
    if not pad:  # the fastest batch on this device, up to the request's
        in_channels = len(request.features) * (2 if request.actor == CHANGE else 1)
        batch = fastest_batch(model, in_channels, request.patch_size, batch, len(request.labels))

    written = request.select_labels or request.labels
    spec = InferenceSpec(
        model_uri=request.model_path, model_sha256=sha, device=device, actor=request.actor,
        merge_mode=request.merge_mode, patch_size=request.patch_size, clip_size=request.clip_size,
        batch_size=batch, pad_batches=pad, labels=list(request.labels),
        keep=[request.labels.index(label) for label in written],
    )
    rid = request_id(params=request.fingerprint_parameters(), model_sha256=sha,
                     inputs=[[s.uri, s.identity] for s in sources])
    out = output_dir(output_root, WORKFLOW, rid)
    blocks = [_block_px(source, request) for source in sources]
    change = request.actor == CHANGE
    grids = [BlockGrid(s.grid.height, s.grid.width, px, px, count=1 if change else len(s.times))
             for s, px in zip(sources, blocks, strict=True)]
    sides = group_sides(grids, task_pixels, slots)
    stores = [_store_plan(n, source, request, spec, written, rid, out, grid, side)
              for n, (source, grid, side) in enumerate(zip(sources, grids, sides, strict=True))]
    inputs = {"store": request.store, "stores": [s.uri for s in sources], "model_path": request.model_path,
              "model_sha256": sha, "model_format": model.format, "device": device, "batch_size": batch}
    return PredictPlan(workflow=WORKFLOW, request_id=rid, output_dir=out, stores=stores,
                       provenance=provenance(WORKFLOW, request.fingerprint_parameters(), inputs, rid))


def _block_px(source: StoreDescription, request: PredictMosaicRequest) -> int:
    """A block's side: ``xy_block_multiplier`` input chunks, rounded up to whole output chunks."""
    in_chunk = source.chunk[1]
    chunk = request.output_xy_chunksize or in_chunk
    return math.ceil(request.xy_block_multiplier * in_chunk / chunk) * chunk


def _store_plan(n: int, source: StoreDescription, request: PredictMosaicRequest, spec: InferenceSpec,
                written: list[str], rid: str, out: str, blocks: BlockGrid, side: int) -> PredictStorePlan:
    """The prediction store of input ``n``: its grid, shards, and groups of blocks in checkerboard order."""
    chunk = request.output_xy_chunksize or source.chunk[1]
    shard = _shard_shape(blocks.rows, chunk, len(written))
    change = request.actor == CHANGE
    out_times, delta = (([source.times[1]], _delta_seconds(source.times)) if change
                        else (list(source.times), None))
    spec_out = StoreSpec(
        uri=uris.join(out, f"prediction-{n}.zarr"), grid=source.grid, bands=list(written), times=out_times,
        dtype=OUTPUT_DTYPE, nodata=float("nan"), shard=shard, skip_xy_coords=source.skip_xy_coords,
    )
    store_fp = stable_hash([rid, n])
    feature_indexes = source.band_indexes(request.features, "features")
    g = source.grid
    scratch = uris.join(out, f".scratch-prediction-{n}")
    jobs = sorted(
        (InferBlockJob(key=f"{store_fp[:16]}-t{t}-{window.id}-{side}", input_uri=source.uri,
                       output_uri=spec_out.uri, input_times=[0, 1] if change else [t], output_time=t,
                       window=window, block=blocks.rows, group=at, height=g.height, width=g.width,
                       feature_indexes=feature_indexes, input_nodata=source.nodata, spec=spec,
                       phase=sum(at) % 2, scratch_uri=uris.join(scratch, f"t{t}"))
         for at, window in blocks.groups(side) for t, _ in enumerate(out_times)),
        key=lambda job: job.phase,  # stable: phase 0 first, each phase in row-major order
    )
    return PredictStorePlan(
        spec=spec_out, fingerprint=store_fp, source=source.uri, source_times=source.times,
        change_detection=change, time_delta_seconds=delta, jobs=jobs, scratch_uri=scratch,
        footprint_wkb=g.footprint("EPSG:4326").wkb_hex,
    )


def _delta_seconds(times: list[str | None]) -> float | None:
    if times[0] is None or times[1] is None:
        return None
    return (pd.Timestamp(times[1]) - pd.Timestamp(times[0])).total_seconds()


def create_prediction_store(
    store: PredictStorePlan, provenance: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> str:
    """create_store, plus the ``time_delta`` coordinate of a change-detection store."""
    generation = create_store(store.spec, store.fingerprint, provenance, storage_options)
    if store.change_detection:
        _write_time_delta(store, storage_options)
    return generation


def _write_time_delta(store: PredictStorePlan, storage_options: dict[str, Any] | None) -> None:
    import xarray as xr

    seconds = store.time_delta_seconds
    delta = np.array([np.timedelta64("NaT") if seconds is None else np.timedelta64(int(seconds), "s")],
                     dtype="timedelta64[ns]")
    target = zarr_store(store.spec.uri, storage_options)
    attrs = dict(zarr.open_group(target, mode="r").attrs)  # xarray's append rewrites the group's attributes
    xr.Dataset(coords={"time_delta": ("time", delta)}).to_zarr(target, mode="a", zarr_format=3,
                                                              consolidated=False)
    zarr.open_group(target, mode="r+").attrs.put(attrs)
    # Listed beside spatial_ref, so readers take it as a coordinate of `variables`.
    zarr.open_array(target, path=DATA_VAR, mode="r+").attrs["coordinates"] = "spatial_ref time_delta"
