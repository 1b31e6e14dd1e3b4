"""What predict_mosaic takes: mosaic stores, a model and how to run it over them."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from ...enums import InferenceActorEnum, MergeModeEnum
from ..request import BlockMultiplier, Request, StoreOrIndex, Uri, unique_names

DEFAULT_BLOCK_MULTIPLIER = 4
DEVICE_PATTERN = r"cpu|auto|cuda(:\d+)?"


def _device(value: str) -> str:
    if not re.fullmatch(DEVICE_PATTERN, value):
        raise ValueError("must be 'cpu', 'cuda' (or 'cuda:N'), or 'auto' (a GPU when there is one)")
    return value


def _output_chunksize(value: int | None) -> int | None:
    if value is not None and not 16 <= value <= 16384:
        raise ValueError("must be between 16 and 16384 pixels, or None for the input store's chunk size")
    return value


class PredictMosaicRequest(Request):
    # RasterFlow's 2026 keyword for `store` (predict_mosaic(mosaics=...)): the same parameter.
    RENAMED: ClassVar[dict[str, str]] = {"mosaics": "store"}

    store: Annotated[StoreOrIndex, Field(description=(
        "A store URI, or an index GeoParquet (any workflow's answer): every store in its `location` column "
        "is predicted, into one prediction store each."))]
    model_path: Annotated[Uri, Field(description=(
        "The model: a local path or fsspec URL of a `torch.export` archive (`.pt2`, `torch.export.save`), "
        "a TorchScript archive (`torch.jit.save`) or an ONNX model (`.onnx`, one self-contained file of "
        "standard operators, run by onnxruntime: `pip install 'rasterflow[onnx]'`), taking (B, C, H, W) "
        "float32 and returning (B, "
        "len(labels), H, W). Remote files are copied once to a local cache (`RASTERFLOW_MODEL_CACHE`, "
        "default under the temporary folder). Pickles (`torch.save` checkpoints, `pickle.dump`) are refused "
        "unread."))]
    patch_size: Annotated[int, Field(ge=8, le=8192, description=(
        "Side of the square patches the model sees, in pixels (8..8192)."))]
    clip_size: Annotated[int, Field(ge=0, description=(
        "Pixels dropped from each patch edge before merging; `2 * clip_size < patch_size`. Make it at least "
        "the model's receptive-field radius: then tiled results equal one forward pass over the whole "
        "image."))]
    device: Annotated[str, AfterValidator(_device), Field(
        json_schema_extra={"pattern": f"^({DEVICE_PATTERN})$"}, description=(
            "`cpu`, `cuda` (or `cuda:N`), or `auto`: a GPU when torch sees one. `cuda` without a GPU fails "
            "before any work. The client requires it, as RasterFlow's does; flows and forms default to "
            "`auto`."))] = "auto"
    features: Annotated[list[str], Field(min_length=1), AfterValidator(unique_names("feature")), Field(
        description="Bands of the input store, in the model's channel order.")]
    labels: Annotated[list[str], Field(min_length=1), AfterValidator(unique_names("label")),
                      Field(description=(
        "Names of the model's output channels, in order; they become the output bands. A count that differs "
        "from the model's output is an error at the plan's probe pass, before anything is written."))]
    actor: Annotated[InferenceActorEnum, Field(description=(
        "How the model's outputs are read. `SEMANTIC_SEGMENTATION_PYTORCH`: softmax over the labels "
        "(probabilities). `REGRESSION_PYTORCH`: raw outputs. "
        "`SEMANTIC_SEGMENTATION_CHANGE_DETECTION_PYTORCH`: "
        "the store's two time slices (earlier first) stacked on the channel axis (`features` names one "
        "slice's bands, the model takes twice as many channels), softmax; the output has one time slice (the "
        "later date) and a `time_delta` coordinate (later minus earlier)."))]
    max_batch_size: Annotated[int, Field(ge=1, le=65536, description=(
        "Patches per forward pass, at most: on a CPU the plan times the sizes up to it and runs the "
        "fastest; on a GPU, this size. A model exported with a static batch size needs exactly that size "
        "(the last batch is padded)."))]
    merge_mode: Annotated[MergeModeEnum, Field(description=(
        "How overlapping patches merge. `CLIP`: each pixel from the one patch whose clipped centre covers "
        "it. `WEIGHTED_AVERAGE`: patches overlap by half their centre; each weighs its centre with a Hann "
        "window (zero in the clipped margin), values are normalised by the summed weights; about four times "
        "the forward passes of `CLIP`. `TUKEY`: patches overlap by `clip_size + 1` pixels, start "
        "`clip_size` before the image and see it mirrored past its edges, and blend with a Tukey window "
        "whose tapers are `clip_size` pixels (a partition of unity); ukis-csmask's tiling with "
        "`clip_size = int(0.2 * patch_size)`; needs `clip_size >= 1`."))]
    select_labels: Annotated[list[str] | None, Field(description=(
        "Write only these labels, in this order (after the softmax over all of them); None writes them "
        "all."))] = None
    xy_block_multiplier: Annotated[BlockMultiplier, Field(description=(
        "Input chunks per block side: a block is this many input chunks on a side, rounded up to whole "
        "output chunks; it bounds a thread's memory, never changes the result. A task runs a group of "
        "neighbouring blocks (config `task_pixels`). Blocks sharing a border share its patches' predictions "
        "(checkerboard order: half the blocks start after their neighbours), so a patch runs once whatever "
        "the block and task sizes."))] = DEFAULT_BLOCK_MULTIPLIER
    output_xy_chunksize: Annotated[int | None, AfterValidator(_output_chunksize), Field(description=(
        "Chunk size of the output stores in pixels (16..16384); None: the input's. Output shards tile the "
        "block, up to 512 MB each."))] = None

    @field_validator("clip_size")
    @classmethod
    def _clip(cls, value: int, info: ValidationInfo) -> int:
        patch = info.data.get("patch_size")
        if patch is not None and 2 * value >= patch:
            raise ValueError(f"2 * clip_size must be less than patch_size={patch} so each patch keeps a "
                             f"centre (valid: 0..{(patch - 1) // 2}, and at least the model's "
                             "receptive-field radius)")
        return value

    @field_validator("merge_mode")
    @classmethod
    def _tukey_taper(cls, value: MergeModeEnum, info: ValidationInfo) -> MergeModeEnum:
        if value == MergeModeEnum.TUKEY and info.data.get("clip_size") == 0:
            raise ValueError("TUKEY blends over tapers of clip_size pixels: it needs clip_size >= 1 (e.g. "
                             "int(0.2 * patch_size), as ukis-csmask)")
        return value

    @field_validator("select_labels")
    @classmethod
    def _select(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must name at least one label, or be None to write them all")
        unique_names("label")(value)
        labels = info.data.get("labels") or []
        unknown = [v for v in value if v not in labels]
        if unknown:
            raise ValueError(f"{unknown} not among labels {labels}")
        return value
