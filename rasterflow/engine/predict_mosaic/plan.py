"""predict-mosaic: a PyTorch model over whole mosaic stores, block by block.

Plan (``plan_predict_mosaic``): resolve the input stores (one store, or every
row of an index), the device and the model, check everything a user can get
wrong (features, time slices, the model's format, its output channels, that
it runs on a patch of the asked shape) with one probe forward pass, and cut
each output store into blocks. Nothing is written until the plan is whole.

Block (``infer_block``): the unit of one task. A block is
``xy_block_multiplier`` input chunks on a side, rounded up to whole output
chunks, and always whole output shards, so one task writes its shards whole
and alone. It reads its patches' halo from the input store, so its result is
the result of the global patch grid of ``engine/patches.py``: independent of
the block size, which only bounds memory (one block of input, one of output).

Every patch runs once. A patch whose region straddles a block border is
needed by both blocks; run by both, it cost 18% more forward passes at the
default block size on the benchmark. So blocks are coloured like a
checkerboard: the first phase runs everything it needs and shares, through a
scratch file under the output directory, the predictions its neighbours will
need; a second-phase block starts after its (first-phase) neighbours, takes
those predictions and runs only the rest. Only patches at block corners,
needed by two first-phase blocks, still run twice. A prediction missing from
the scratch (a neighbour with no valid pixel) is simply run, so the result
never depends on the sharing, and the scratch is removed once every block is
written.

Conventions (docs/workflows.md): output values are float32 with NaN as
nodata; a pixel whose features are all nodata (in either slice, for change
detection) comes out NaN; the model sees a nodata pixel as the nearest valid
pixel of its patch (``block.patch_input``); patches whose pixels are all
nodata are not run at all.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import zarr
from pydantic import BaseModel, ConfigDict

from ...enums import InferenceActorEnum, MergeModeEnum
from ...errors import InvalidParameterError, StoreError
from .. import uris
from ..index import store_row, stores_of
from ..partitions import ShardShape, Window
from ..plan import StorePlan, StoresPlan
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
from .model import LoadedModel, fetch_model, file_sha256, load_model, probe, resolve_device
from .model_check import model_format
from .request import PredictMosaicRequest

WORKFLOW = "predict-mosaic"
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
    """One block of one output time slice: the unit of an infer-block task."""

    model_config = ConfigDict(frozen=True)

    key: str
    input_uri: str
    output_uri: str
    input_times: list[int]  # one slice, or two (earlier, later) for change detection
    output_time: int
    window: Window
    height: int  # the whole grid's, which fixes the global patch grid
    width: int
    feature_indexes: list[int]
    input_nodata: float
    spec: InferenceSpec
    phase: int = 0  # checkerboard colour: phase-1 blocks run after their phase-0 neighbours
    share_with: list[Window] = []  # phase 0: neighbours' windows, whose patches it shares ...
    share_uri: str | None = None  # ... in this scratch file
    take_from: list[str] = []  # phase 1: the neighbours' scratch files


class PredictStorePlan(StorePlan):
    source: str
    source_times: list[str | None]
    change_detection: bool = False
    time_delta_seconds: float | None = None  # change detection: later minus earlier slice
    jobs: list[InferBlockJob]  # phase 0 first
    scratch_uri: str  # predictions shared between blocks; removed when every block is written


class PredictPlan(StoresPlan):
    stores: list[PredictStorePlan]  # type: ignore[assignment]  # narrower store type

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


def checked_model(request: PredictMosaicRequest, storage_options_for: uris.OptionsFor
                  ) -> tuple[LoadedModel, str, str]:
    """(model, its sha256, the device) once the file is known not to be a pickle."""
    device = resolve_device(request.device)
    local = fetch_model(request.model_path, storage_options_for(request.model_path))
    model_format(local, request.model_path)  # refuses pickles before anything else reads the file
    sha = file_sha256(local)
    return load_model(local, sha, device, shown=request.model_path), sha, device


def plan_predict_mosaic(
    request: PredictMosaicRequest, output_root: str, storage_options_for: uris.OptionsFor = uris.no_options
) -> PredictPlan:
    uris.check_output_root(output_root, storage_options_for(output_root))
    sources = input_stores(request.store, request, storage_options_for)
    model, sha, device = checked_model(request, storage_options_for)

    slices = 2 if request.actor == CHANGE else 1
    in_channels = len(request.features) * slices
    batch, pad = _batch_size(model, request, in_channels)
    probe(model, in_channels, request.patch_size, batch if pad else min(batch, 2), len(request.labels))

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
    stores = [_store_plan(n, source, request, spec, written, rid, out) for n, source in enumerate(sources)]
    inputs = {"store": request.store, "stores": [s.uri for s in sources], "model_path": request.model_path,
              "model_sha256": sha, "model_format": model.format, "device": device}
    return PredictPlan(workflow=WORKFLOW, request_id=rid, output_dir=out, stores=stores,
                       provenance=provenance(WORKFLOW, request.fingerprint_parameters(), inputs, rid))


def _store_plan(n: int, source: StoreDescription, request: PredictMosaicRequest, spec: InferenceSpec,
                written: list[str], rid: str, out: str) -> PredictStorePlan:
    """The prediction store of input ``n``: its grid, shards, and blocks in checkerboard order."""
    in_chunk = source.chunk[1]
    chunk = request.output_xy_chunksize or in_chunk
    block_px = math.ceil(request.xy_block_multiplier * in_chunk / chunk) * chunk
    shard = _shard_shape(block_px, chunk, len(written))
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
    blocks = _block_windows(g.height, g.width, block_px)
    jobs = sorted(
        (InferBlockJob(key=f"{store_fp[:16]}-t{t}-{window.id}", input_uri=source.uri,
                       output_uri=spec_out.uri, input_times=[0, 1] if change else [t], output_time=t,
                       window=window, height=g.height, width=g.width, feature_indexes=feature_indexes,
                       input_nodata=source.nodata, spec=spec,
                       **_sharing(at, blocks, uris.join(scratch, f"t{t}")))
         for at, window in blocks.items() for t, _ in enumerate(out_times)),
        key=lambda job: job.phase,  # stable: phase 0 first, each phase in row-major order
    )
    return PredictStorePlan(
        spec=spec_out, fingerprint=store_fp, source=source.uri, source_times=source.times,
        change_detection=change, time_delta_seconds=delta, jobs=jobs, scratch_uri=scratch,
        footprint_wkb=g.footprint("EPSG:4326").wkb_hex,
    )


def _block_windows(height: int, width: int, block_px: int) -> dict[tuple[int, int], Window]:
    """The blocks by (row, column) in the block grid."""
    return {(r // block_px, c // block_px): Window(row0=r, row1=min(r + block_px, height), col0=c,
                                                   col1=min(c + block_px, width))
            for r in range(0, height, block_px) for c in range(0, width, block_px)}


def _sharing(at: tuple[int, int], blocks: dict[tuple[int, int], Window], scratch: str) -> dict[str, Any]:
    """A block's checkerboard phase and what it shares or takes (``InferBlockJob`` fields)."""
    r, c = at
    neighbours = [blocks[k] for k in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)) if k in blocks]
    if (r + c) % 2 == 0:
        share_uri = uris.join(scratch, f"{blocks[at].id}.npz") if neighbours else None
        return {"phase": 0, "share_with": neighbours, "share_uri": share_uri}
    return {"phase": 1, "take_from": [uris.join(scratch, f"{w.id}.npz") for w in neighbours]}


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
