"""rasterflow: RasterFlow workflows on open parts (Prefect, GDAL, Zarr v3, GeoParquet)."""

from importlib.metadata import version

from .enums import (
    DatasetEnum,
    InferenceActorEnum,
    MergeModeEnum,
    ModelRecipes,
    MosaicToMosaicActorEnum,
    ResamplingMethod,
    RuntimeEnum,
    VectorizeMethodEnum,
)
from .errors import RasterflowError

__version__ = version(__name__)

__all__ = [
    "DatasetEnum", "InferenceActorEnum", "MergeModeEnum", "ModelRecipes", "MosaicToMosaicActorEnum",
    "RasterflowClient",
    "RasterflowError", "ResamplingMethod", "RuntimeEnum", "VectorizeMethodEnum", "__version__",
    "open_mosaic",
]


def __getattr__(name: str):
    # Lazy: the client pulls in Prefect (about a second); the engine must not.
    if name == "RasterflowClient":
        from .client import RasterflowClient

        return RasterflowClient
    if name == "open_mosaic":
        from .engine.store import open_store

        return open_store
    raise AttributeError(f"module 'rasterflow' has no attribute {name!r}")
