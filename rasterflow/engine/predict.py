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
detection) comes out NaN; nodata feature values are replaced by 0 before the
model sees them; patches whose pixels are all nodata are not run at all.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import zarr
from pydantic import BaseModel, ConfigDict

from .. import __version__
from ..enums import InferenceActorEnum, MergeModeEnum
from ..errors import InvalidParameterError, StoreError
from ..params import PredictMosaicParams
from . import uris
from .fingerprint import code_fingerprint, stable_hash
from .grid import Grid
from .index import store_row, stores_of
from .model import BatchRunner, fetch_model, file_sha256, load_model, model_format, probe, resolve_device
from .partitions import ShardShape, Window
from .patches import AxisTiling, block_tiling
from .store import (
    DATA_VAR, StoreSpec, create_store, open_data_array, open_store, read_marker, write_window, zarr_store,
)

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


class BlockJob(BaseModel):
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


class PredictStorePlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: StoreSpec
    fingerprint: str
    source: str
    source_times: list[str | None]
    change_detection: bool = False
    time_delta_seconds: float | None = None  # change detection: later minus earlier slice
    jobs: list[BlockJob]  # phase 0 first
    scratch_uri: str  # predictions shared between blocks; removed when every block is written
    footprint_wkb: str


class PredictPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    workflow: str
    output_dir: str
    index_uri: str
    stores: list[PredictStorePlan]
    provenance: dict[str, Any]

    @property
    def n_jobs(self) -> int:
        return sum(len(s.jobs) for s in self.stores)


class _Input(BaseModel):
    uri: str
    grid: Grid
    bands: list[str]
    times: list[str | None]
    chunk: int
    nodata: float
    skip_xy_coords: bool
    identity: list[Any]


# ---------------------------------------------------------------- plan


def input_store_uris(store: str, storage_options_for: Callable[[str], dict[str, Any]]) -> list[str]:
    """The stores ``store`` names (itself, or an index's rows); each must be a rasterflow store."""
    uris_ = stores_of(store, storage_options_for(store))
    for uri in uris_:
        if read_marker(uri, storage_options_for(uri)) is None:
            raise InvalidParameterError("store", uri, "is not a rasterflow store (no 'rasterflow' attribute)",
                                        "a store written by a rasterflow workflow, or an index of them")
    return uris_


def _inspect_input(uri: str, params: PredictMosaicParams, storage_options: dict[str, Any]) -> _Input:
    try:
        ds = open_store(uri, storage_options)
    except StoreError as exc:
        raise InvalidParameterError("store", uri, str(exc), "complete rasterflow stores") from None
    bands = [str(b) for b in ds["band"].values]
    missing = [f for f in params.features if f not in bands]
    if missing:
        raise InvalidParameterError("features", params.features, f"{missing} not among the bands of {uri}",
                                    f"bands of that store: {bands}")
    times = [None if pd.isna(t) else pd.Timestamp(t).isoformat() for t in ds["time"].values]
    if params.actor == CHANGE and len(times) != 2:
        raise InvalidParameterError("store", uri, f"has {len(times)} time slice(s); change detection stacks "
                                    "exactly two (earlier, later)", "a store built with a time_column giving two slices")
    array = open_data_array(uri, storage_options)
    attrs = ds.attrs
    grid = Grid(crs=ds[DATA_VAR].rio.crs.to_wkt(), transform=tuple(attrs["spatial:transform"]),
                width=int(attrs["spatial:shape"][1]), height=int(attrs["spatial:shape"][0]))
    nodata = array.attrs.get("nodata", array.fill_value)
    marker = read_marker(uri, storage_options) or {}
    return _Input(
        uri=uri, grid=grid, bands=bands, times=times, chunk=int(array.chunks[-1]),
        nodata=float("nan") if nodata is None else float(nodata), skip_xy_coords="x" not in ds.coords,
        identity=[marker.get("fingerprint"), marker.get("generation"), marker.get("completed")],
    )


def _batch_size(model, params: PredictMosaicParams, in_channels: int) -> tuple[int, bool]:
    """(patches per forward pass, pad the last batch?) after the model's static dims."""
    channels, (h, w) = model.static_channels, model.static_hw
    if channels is not None and channels != in_channels:
        what = "features" if params.actor != CHANGE else "features (x2 slices for change detection)"
        raise InvalidParameterError("features", params.features, f"the model takes {channels} input channels, "
                                    f"{what} give {in_channels}", f"{channels} channels' worth of features")
    if (h is not None and h != params.patch_size) or (w is not None and w != params.patch_size):
        raise InvalidParameterError("patch_size", params.patch_size, f"the model was exported for {h} x {w} "
                                    "patches only", f"patch_size={h}, or export with dynamic height and width")
    if model.static_batch is not None:
        if params.max_batch_size != model.static_batch:
            raise InvalidParameterError(
                "max_batch_size", params.max_batch_size,
                f"the model was exported with a static batch size of {model.static_batch}",
                f"max_batch_size={model.static_batch}, or export with torch.export.Dim for dimension 0",
            )
        return model.static_batch, True
    return params.max_batch_size, False


def _shard_shape(block_px: int, chunk: int, n_bands: int) -> ShardShape:
    """The largest square shard of whole chunks that tiles the block, within the budget."""
    k = block_px // chunk
    fits = [d for d in range(1, k + 1) if k % d == 0 and (d * chunk) ** 2 * n_bands * 4 <= SHARD_BUDGET_BYTES]
    side = max(fits, default=1) * chunk  # a chunk is never split, even over the budget
    return ShardShape(chunk=chunk, rows=side, cols=side)


def plan_predict_mosaic(
    params: PredictMosaicParams,
    output_root: str,
    storage_options_for: Callable[[str], dict[str, Any]] = lambda uri: {},
) -> PredictPlan:
    uris.check_output_root(output_root, storage_options_for(output_root))
    sources = input_store_uris(params.store, storage_options_for)
    device = resolve_device(params.device)
    local = fetch_model(params.model_path, storage_options_for(params.model_path))
    model_format(local, params.model_path)  # refuses pickles before anything else reads the file
    sha = file_sha256(local)
    model = load_model(local, sha, device, shown=params.model_path)
    inputs = [_inspect_input(uri, params, storage_options_for(uri)) for uri in sources]

    slices = 2 if params.actor == CHANGE else 1
    in_channels = len(params.features) * slices
    batch, pad = _batch_size(model, params, in_channels)
    probe(model, in_channels, params.patch_size, batch if pad else min(batch, 2), len(params.labels))

    written = params.select_labels or params.labels
    spec = InferenceSpec(
        model_uri=params.model_path, model_sha256=sha, device=device, actor=params.actor,
        merge_mode=params.merge_mode, patch_size=params.patch_size, clip_size=params.clip_size,
        batch_size=batch, pad_batches=pad, labels=list(params.labels),
        keep=[params.labels.index(label) for label in written],
    )
    request_id = stable_hash({
        "params": params.flow_parameters(), "model_sha256": sha,
        "inputs": [[i.uri, i.identity] for i in inputs], "code": code_fingerprint(),
    })
    output_dir = uris.join(output_root, WORKFLOW, request_id[:16])

    stores = []
    for n, inp in enumerate(inputs):
        chunk = params.output_xy_chunksize or inp.chunk
        block_px = math.ceil(params.xy_block_multiplier * inp.chunk / chunk) * chunk
        shard = _shard_shape(block_px, chunk, len(written))
        if params.actor == CHANGE:
            out_times, delta = [inp.times[1]], _delta_seconds(inp.times)
        else:
            out_times, delta = list(inp.times), None
        spec_out = StoreSpec(
            uri=uris.join(output_dir, f"prediction-{n}.zarr"), grid=inp.grid, bands=list(written), times=out_times,
            dtype=OUTPUT_DTYPE, nodata=float("nan"), shard=shard, skip_xy_coords=inp.skip_xy_coords,
        )
        store_fp = stable_hash([request_id, n])
        feature_indexes = [inp.bands.index(f) for f in params.features]
        g = inp.grid
        scratch = uris.join(output_dir, f".scratch-prediction-{n}")
        blocks = _block_windows(g.height, g.width, block_px)
        jobs = sorted(
            (BlockJob(key=f"{store_fp[:16]}-t{t}-{window.id}", input_uri=inp.uri, output_uri=spec_out.uri,
                      input_times=[0, 1] if params.actor == CHANGE else [t], output_time=t, window=window,
                      height=g.height, width=g.width, feature_indexes=feature_indexes, input_nodata=inp.nodata,
                      spec=spec, **_sharing(at, blocks, uris.join(scratch, f"t{t}")))
             for at, window in blocks.items() for t, _ in enumerate(out_times)),
            key=lambda job: job.phase,  # stable: phase 0 first, each phase in row-major order
        )
        stores.append(PredictStorePlan(
            spec=spec_out, fingerprint=store_fp, source=inp.uri, source_times=inp.times,
            change_detection=params.actor == CHANGE, time_delta_seconds=delta, jobs=jobs, scratch_uri=scratch,
            footprint_wkb=g.footprint("EPSG:4326").wkb_hex,
        ))

    provenance = {
        "workflow": WORKFLOW,
        "rasterflow_version": __version__,
        "parameters": params.flow_parameters(),
        "inputs": {"store": params.store, "stores": sources, "model_path": params.model_path, "model_sha256": sha,
                   "model_format": model.format, "device": device},
        "request_id": request_id,
    }
    return PredictPlan(
        workflow=WORKFLOW, output_dir=output_dir, index_uri=uris.join(output_dir, "index.parquet"),
        stores=stores, provenance=provenance,
    )


def _block_windows(height: int, width: int, block_px: int) -> dict[tuple[int, int], Window]:
    """The blocks by (row, column) in the block grid."""
    return {(r // block_px, c // block_px): Window(row0=r, row1=min(r + block_px, height), col0=c,
                                                   col1=min(c + block_px, width))
            for r in range(0, height, block_px) for c in range(0, width, block_px)}


def _sharing(at: tuple[int, int], blocks: dict[tuple[int, int], Window], scratch: str) -> dict[str, Any]:
    """A block's checkerboard phase and what it shares or takes (``BlockJob`` fields)."""
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
    xr.Dataset(coords={"time_delta": ("time", delta)}).to_zarr(target, mode="a", zarr_format=3, consolidated=False)
    zarr.open_group(target, mode="r+").attrs.put(attrs)
    # Listed beside spatial_ref, so readers take it as a coordinate of `variables`.
    zarr.open_array(target, path=DATA_VAR, mode="r+").attrs["coordinates"] = "spatial_ref time_delta"


# ---------------------------------------------------------------- infer


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def _checked_model(spec: InferenceSpec, storage_options: dict[str, Any]):
    local = fetch_model(spec.model_uri, storage_options)
    stat = local.stat()
    memo_key = (str(local), stat.st_size, stat.st_mtime_ns)
    sha = _SHA_MEMO.get(memo_key) or _SHA_MEMO.setdefault(memo_key, file_sha256(local))
    if sha != spec.model_sha256:
        raise InvalidParameterError("model_path", spec.model_uri, "the file changed after this run was planned",
                                    f"the file with sha256 {spec.model_sha256[:12]}..., or a new run")
    return load_model(local, sha, resolve_device(spec.device), shown=spec.model_uri)


def read_block_input(job: BlockJob, read: tuple[int, int, int, int], storage_options: dict[str, Any] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Features of the read window (slices stacked on channels, nodata -> 0) and pixel validity.

    Parts of the window past the image (an axis shorter than one patch) are
    zeros and invalid.
    """
    r0, r1, c0, c1 = read
    rr, cc = min(r1, job.height) - r0, min(c1, job.width) - c0
    n_feat = len(job.feature_indexes)
    data = np.zeros((n_feat * len(job.input_times), r1 - r0, c1 - c0), np.float32)
    valid = np.zeros((r1 - r0, c1 - c0), bool)
    array = open_data_array(job.input_uri, storage_options)
    nodata = job.input_nodata
    # Basic slicing over the bands' span, then numpy picks the features: zarr 3.1's orthogonal
    # selection with an index list reads a sharded array about 100x slower (measured: 6.8 s vs 0.05 s).
    lo, hi = min(job.feature_indexes), max(job.feature_indexes) + 1
    pick = [i - lo for i in job.feature_indexes]
    for s, t in enumerate(job.input_times):
        raw = array[t, lo:hi, r0 : r0 + rr, c0 : c0 + cc][pick]
        values = data[s * n_feat : (s + 1) * n_feat, :rr, :cc]
        values[...] = raw
        floating = np.issubdtype(raw.dtype, np.floating)
        missing = raw == nodata  # all False for a NaN nodata
        if floating:
            missing |= np.isnan(raw)
        if floating or nodata != 0:  # nodata 0 is already the 0 the model sees
            np.copyto(values, np.float32(0), where=missing)
        pixel_valid = ~missing.all(axis=0)
        valid[:rr, :cc] = pixel_valid if s == 0 else valid[:rr, :cc] & pixel_valid
    return data, valid


class _Merger:
    """Block accumulators: CLIP copies owned pixels; weighted sums w * p and w."""

    def __init__(self, rows: AxisTiling, cols: AxisTiling, window: Window, n_out: int):
        self.rows, self.cols, self.w = rows, cols, window
        shape = (n_out, window.row1 - window.row0, window.col1 - window.col0)
        self.clip = rows.merge_mode == MergeModeEnum.CLIP
        if self.clip:
            self.out = np.full(shape, np.nan, np.float32)
        else:
            self.acc = np.zeros(shape, np.float32)
            self.wsum = np.zeros(shape[1:], np.float32)
            self.row_w = {}
            self.col_w = {}

    def span(self, i: int, j: int) -> tuple[slice, slice, slice, slice]:
        """Block slices and patch slices of patch (i, j)'s region within the block."""
        w, rows, cols = self.w, self.rows, self.cols
        rs, re = max(int(rows.start[i]), w.row0), min(int(rows.end[i]), w.row1)
        cs, ce = max(int(cols.start[j]), w.col0), min(int(cols.end[j]), w.col1)
        oi, oj = int(rows.origins[i]), int(cols.origins[j])
        return (slice(rs - w.row0, re - w.row0), slice(cs - w.col0, ce - w.col0),
                slice(rs - oi, re - oi), slice(cs - oj, ce - oj))

    def add(self, i: int, j: int, pred: np.ndarray) -> None:
        br, bc, pr, pc = self.span(i, j)
        if self.clip:
            self.out[:, br, bc] = pred[:, pr, pc]
            return
        if i not in self.row_w:
            self.row_w[i] = self.rows.weights(i)
        if j not in self.col_w:
            self.col_w[j] = self.cols.weights(j)
        weight = self.row_w[i][pr, None] * self.col_w[j][None, pc]
        self.acc[:, br, bc] += pred[:, pr, pc] * weight
        self.wsum[br, bc] += weight

    def result(self) -> np.ndarray:
        if self.clip:
            return self.out
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.wsum > 0, self.acc / self.wsum, np.float32(np.nan)).astype(np.float32, copy=False)


Patch = tuple[int, int]  # (row, column) index in the global patch grid


def predict_block(job: BlockJob, model, storage_options: dict[str, Any] | None = None,
                  known: dict[Patch, np.ndarray] | None = None
                  ) -> tuple[np.ndarray | None, dict[str, int], dict[Patch, np.ndarray]]:
    """The block's predictions (labels written, rows, cols), or None when it holds no valid pixel.

    Patches in ``known`` (predictions a neighbour ran) are merged, not run.
    Also returns the predictions of the patches it ran that the blocks of
    ``job.share_with`` need. Patches merge in row-major order whoever ran
    them, so weighted sums add up in the same order as in one big block.
    """
    spec = job.spec
    rows = AxisTiling(job.height, spec.patch_size, spec.clip_size, spec.merge_mode)
    cols = AxisTiling(job.width, spec.patch_size, spec.clip_size, spec.merge_mode)
    w = job.window
    tiling = block_tiling(rows, cols, (w.row0, w.row1, w.col0, w.col1))
    R0, _, C0, _ = tiling.read
    data, valid = read_block_input(job, tiling.read, storage_options)
    core = valid[w.row0 - R0 : w.row1 - R0, w.col0 - C0 : w.col1 - C0]
    stats = {"patches": 0, "patches_taken": 0, "valid_pixels": int(core.sum())}
    if not core.any():
        return None, stats, {}

    merger = _Merger(rows, cols, w, len(spec.keep))
    needed: list[Patch] = []
    for i in tiling.rows:
        for j in tiling.cols:
            br, bc, _, _ = merger.span(int(i), int(j))
            if core[br, bc].any():  # a patch with no valid pixel in its region only yields nodata
                needed.append((int(i), int(j)))
    known = known or {}
    to_run = [ij for ij in needed if ij not in known]
    stats["patches"], stats["patches_taken"] = len(to_run), len(needed) - len(to_run)
    wanted = _patches_of(rows, cols, job.share_with)
    p, size = spec.patch_size, spec.batch_size

    def batches() -> Iterator[np.ndarray]:
        for k in range(0, len(to_run), size):
            chunk = to_run[k : k + size]
            batch = np.zeros((size if spec.pad_batches else len(chunk), data.shape[0], p, p), np.float32)
            for b, (i, j) in enumerate(chunk):
                r, c = int(rows.origins[i]) - R0, int(cols.origins[j]) - C0
                batch[b] = data[:, r : r + p, c : c + p]
            yield batch

    merged = 0  # needed[:merged] are in the merger

    def merge_known_until(stop: Patch | None) -> None:
        nonlocal merged
        while merged < len(needed) and needed[merged] != stop:
            merger.add(*needed[merged], known[needed[merged]])
            merged += 1
        merged += 1  # ``stop`` itself is merged by the caller

    activation = None if spec.actor == InferenceActorEnum.REGRESSION_PYTORCH else "softmax"
    runner = BatchRunner(model, len(spec.labels), activation, spec.keep)
    shared: dict[Patch, np.ndarray] = {}
    for k, out in enumerate(runner.run(batches())):
        for b, ij in enumerate(to_run[k * size : (k + 1) * size]):
            merge_known_until(ij)
            merger.add(*ij, out[b])
            if ij in wanted:
                shared[ij] = out[b].copy()
    merge_known_until(None)
    result = merger.result()
    result[:, ~core] = np.nan
    return result, stats, shared


def _patches_of(rows: AxisTiling, cols: AxisTiling, windows: list[Window]) -> set[Patch]:
    """Every patch the blocks over ``windows`` may need."""
    out: set[Patch] = set()
    for w in windows:
        tiling = block_tiling(rows, cols, (w.row0, w.row1, w.col0, w.col1))
        out.update((int(i), int(j)) for i in tiling.rows for j in tiling.cols)
    return out


def save_shared(uri: str, shared: dict[Patch, np.ndarray], storage_options: dict[str, Any] | None = None) -> None:
    """One scratch file of patch predictions (at least one): their indices and a stack of the arrays."""
    buffer = io.BytesIO()
    patches = sorted(shared)
    np.savez(buffer, patches=np.array(patches, np.int64), predictions=np.stack([shared[ij] for ij in patches]))
    uris.write_bytes_atomic(uri, buffer.getvalue(), storage_options)


def load_shared(uri_list: list[str], storage_options: dict[str, Any] | None = None) -> dict[Patch, np.ndarray]:
    """The predictions in those scratch files; a missing file shares nothing (its block had no valid pixel)."""
    known: dict[Patch, np.ndarray] = {}
    for uri in uri_list:
        try:
            with uris.open_input(uri, storage_options) as fh:
                raw = fh.read()
        except FileNotFoundError:
            continue
        with np.load(io.BytesIO(raw)) as npz:
            known.update(zip(map(tuple, npz["patches"].tolist()), npz["predictions"]))
    return known


def infer_block(job: BlockJob, storage_options_for: Callable[[str], dict[str, Any]] = lambda uri: {}) -> dict[str, Any]:
    """Predict one block, share what its neighbours need, and write its shards whole; returns a small summary."""
    model = _checked_model(job.spec, storage_options_for(job.spec.model_uri))
    known = {}
    if job.take_from:
        known = load_shared(job.take_from, storage_options_for(job.take_from[0]))
    result, stats, shared = predict_block(job, model, storage_options_for(job.input_uri), known)
    if job.share_uri and shared:
        save_shared(job.share_uri, shared, storage_options_for(job.share_uri))
    if result is not None:
        write_window(job.output_uri, job.output_time, job.window, result, storage_options_for(job.output_uri))
    return {"key": job.key, "written": result is not None, **stats}


def remove_scratch(stores: list[PredictStorePlan],
                   storage_options_for: Callable[[str], dict[str, Any]] = lambda uri: {}) -> None:
    """Drop the predictions blocks shared, once every block is written."""
    for store in stores:
        uris.remove(store.scratch_uri, storage_options_for(store.scratch_uri))


def index_rows(plan: PredictPlan) -> list[dict[str, Any]]:
    """One index row per prediction store."""
    return [
        store_row(sp.spec, plan.workflow, sp.footprint_wkb, times=sp.source_times, source=sp.source,
                  actor=plan.provenance["parameters"]["actor"],
                  model_sha256=plan.provenance["inputs"]["model_sha256"])
        for sp in plan.stores
    ]
