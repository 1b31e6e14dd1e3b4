"""Enumerations of the RasterFlow API.

Values are the lowercase strings users type in YAML, the CLI and the Prefect
UI; members keep RasterFlow's upper-case names for Python callers.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple


class DatasetEnum(str, Enum):
    S2_MED_HARVEST = "s2med_harvest"
    S2_MED_PLANTING = "s2med_planting"
    S2_MED_WINDOWED_PIXEL = "s2med_windowed_pixel"
    S2_MED_WINDOWED_PIXEL_ALL_BANDS = "s2med_windowed_pixel_all_bands"
    S2_LATEST_ALL_BANDS = "s2latest_all_bands"  # the latest scene on top, clouds kept (for cloud masks)
    NAIP_30CM = "naip_30cm"
    NAIP_60CM = "naip_60cm"


class ModelRecipes(str, Enum):
    FTW = "ftw"
    META_CHM_V1 = "meta_chm_v1"
    CHESAPEAKE_RSC = "chesapeake_rsc"
    TILE_2_NET = "tile_2_net"
    UKIS_CSMASK = "ukis_csmask"  # clear / cloud / shadow; weights inside the ukis-csmask wheel (offline)


class RuntimeSpec(NamedTuple):
    """What a runtime size asks of the infrastructure (per worker)."""

    cpu: float
    memory_gib: int
    gpus: int


class RuntimeEnum(str, Enum):
    """How big a machine a run needs; each size maps to its own work pool."""

    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"
    XLARGE = "xlarge"
    GPU_SMALL = "gpu-small"
    GPU_MEDIUM = "gpu-medium"
    GPU_LARGE = "gpu-large"

    @property
    def spec(self) -> RuntimeSpec:
        return _RUNTIME_SPECS[self]

    @property
    def is_gpu(self) -> bool:
        return self.spec.gpus > 0


_RUNTIME_SPECS = {
    RuntimeEnum.SMALL: RuntimeSpec(cpu=2, memory_gib=8, gpus=0),
    RuntimeEnum.MEDIUM: RuntimeSpec(cpu=8, memory_gib=32, gpus=0),
    RuntimeEnum.LARGE: RuntimeSpec(cpu=16, memory_gib=64, gpus=0),
    RuntimeEnum.XLARGE: RuntimeSpec(cpu=32, memory_gib=128, gpus=0),
    RuntimeEnum.GPU_SMALL: RuntimeSpec(cpu=4, memory_gib=16, gpus=1),
    RuntimeEnum.GPU_MEDIUM: RuntimeSpec(cpu=8, memory_gib=32, gpus=1),
    RuntimeEnum.GPU_LARGE: RuntimeSpec(cpu=32, memory_gib=128, gpus=4),
}


class InferenceActorEnum(str, Enum):
    REGRESSION_PYTORCH = "regression_pytorch"
    SEMANTIC_SEGMENTATION_PYTORCH = "semantic_segmentation_pytorch"
    SEMANTIC_SEGMENTATION_CHANGE_DETECTION_PYTORCH = (
        "semantic_segmentation_change_detection_pytorch"
    )


# RasterFlow's 2026 name for the same actors (inference maps a mosaic to a mosaic): one enum, two names,
# so code of either generation passes members the other accepts.
MosaicToMosaicActorEnum = InferenceActorEnum


class MergeModeEnum(str, Enum):
    WEIGHTED_AVERAGE = "weighted_average"
    CLIP = "clip"  # each pixel from the one patch whose clipped centre covers it
    TUKEY = "tukey"  # overlap clip_size + 1, Tukey-window blend, mirrored image edges (ukis-csmask's tiling)


class VectorizeMethodEnum(str, Enum):
    SEMANTIC_SEGMENTATION_RASTERIO = "semantic_segmentation_rasterio"


class ResamplingMethod(str, Enum):
    """GDAL's warp kernels, by the names ``gdalwarp -r`` takes."""

    NEAREST = "near"
    BILINEAR = "bilinear"
    CUBIC = "cubic"
    CUBIC_SPLINE = "cubicspline"
    LANCZOS = "lanczos"
    AVERAGE = "average"
    MODE = "mode"
    MIN = "min"
    MAX = "max"
    MED = "med"
    Q1 = "q1"
    Q3 = "q3"
    SUM = "sum"
    RMS = "rms"

    @property
    def kernel_radius(self) -> int:
        """Source pixels a kernel reaches beyond the one under the target pixel."""
        return {"near": 0, "bilinear": 1, "cubic": 2, "cubicspline": 2, "lanczos": 3}.get(
            self.value, 1
        )
