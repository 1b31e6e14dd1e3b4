"""What predict_mosaic takes: mosaic stores, a model and how to run it over them."""

from __future__ import annotations

import re
from typing import Annotated

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
    store: StoreOrIndex
    model_path: Annotated[Uri, Field(description=(
        "The model (a local path or fsspec URL): a torch.export .pt2 or a TorchScript archive taking (B, C, H, W) "
        "float32 and returning (B, len(labels), H, W). Pickles are refused unread."))]
    patch_size: Annotated[int, Field(ge=8, le=8192, description="Patch side in pixels: what the model sees at once.")]
    clip_size: Annotated[int, Field(ge=0, description=(
        "Pixels dropped from each patch edge before merging; at least the model's receptive-field radius, so "
        "results do not depend on where patches fall."))]
    device: Annotated[str, AfterValidator(_device), Field(
        json_schema_extra={"pattern": f"^({DEVICE_PATTERN})$"},
        description="cpu, cuda (or cuda:N), or auto: a GPU when there is one.")]
    features: Annotated[list[str], Field(min_length=1), AfterValidator(unique_names("feature")), Field(description=(
        "Input bands of the store, in the model's channel order (twice over for change detection: earlier, "
        "then later slice)."))]
    labels: Annotated[list[str], Field(min_length=1), AfterValidator(unique_names("label")), Field(description=(
        "One name per model output channel; the output store's bands."))]
    actor: Annotated[InferenceActorEnum, Field(description=(
        "How outputs are read: softmax per pixel (semantic segmentation), raw values (regression), or change "
        "detection over two time slices."))]
    max_batch_size: Annotated[int, Field(ge=1, le=65536, description="Patches per forward pass, at most.")]
    merge_mode: Annotated[MergeModeEnum, Field(description=(
        "How overlapping patches merge: clip (each pixel from the one patch whose centre owns it) or "
        "weighted_average (Hann-weighted blend)."))]
    select_labels: Annotated[list[str] | None, Field(description=(
        "Write only these labels (in this order); None writes them all."))] = None
    xy_block_multiplier: BlockMultiplier = DEFAULT_BLOCK_MULTIPLIER
    output_xy_chunksize: Annotated[int | None, AfterValidator(_output_chunksize), Field(description=(
        "Chunk size of the output stores in pixels; None: the input store's."))] = None

    @field_validator("clip_size")
    @classmethod
    def _clip(cls, value: int, info: ValidationInfo) -> int:
        patch = info.data.get("patch_size")
        if patch is not None and 2 * value >= patch:
            raise ValueError(f"2 * clip_size must be less than patch_size={patch} so each patch keeps a centre "
                             f"(valid: 0..{(patch - 1) // 2}, and at least the model's receptive-field radius)")
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
