"""ukis-csmask: DLR's cloud and cloud-shadow U-Nets, from the ONNX files inside its wheel.

The published graphs take standardised reflectance: CSmask (``ukis_csmask/mask.py``)
divides nothing, the user passes reflectance in [0, 1], and it subtracts the
per-band mean and divides by the standard deviation stored beside each graph
(``model_<4|6>b_<l1c|l2a>.json``) before running 256 px tiles. rasterflow
stores hold what the catalogs deliver (Sentinel-2: reflectance x 10000), and
predict_mosaic feeds a model the store's values, so ``csmask_model`` writes the
graph with that conversion in front of it, in float32 as the reference does
it: ``value / 10000`` (or ``* scale``), ``+ offset``, ``- mean``, ``/ std``. The
result is an ordinary self-contained ONNX file that predict_mosaic checks and
runs like any other; written deterministically, so its sha256 (and the run's
cache key) only changes with the package's weights or the scaling.

Band order and labels follow the reference: channels blue, green, red, nir
(+ swir16, swir22 for the 6-band models, the better ones), classes 0 clear
("background"), 1 cloud, 2 cloud shadow. Its tiling (256 px, overlap 0.2,
mirrored edges, Tukey blend) is ``MergeModeEnum.TUKEY`` with clip_size 51.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from ...errors import InvalidParameterError
from .. import uris

PACKAGE, DISTRIBUTION, EXTRA = "ukis_csmask", "ukis-csmask", "csmask"
BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
LABELS = ("clear", "cloud", "shadow")
PATCH_SIZE, OVERLAP = 256, 0.2
CLIP_SIZE = int(PATCH_SIZE * OVERLAP)  # tile_array's pad, and the Tukey taper
S2_SCALE = 1e-4  # Sentinel-2 L1C and harmonised L2A: reflectance x 10000


def installed_version(param: str = "model_recipe", value: Any = "ukis_csmask") -> str:
    """The installed ukis-csmask's version, or the error that names the extra to install."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise InvalidParameterError(
            param, value, f"needs DLR's {DISTRIBUTION} package, whose wheel carries the model weights, and "
            "it is not installed", f"pip install 'rasterflow[{EXTRA}]' (nothing is downloaded at run time)",
        ) from None


def model_name(bands: int = 6, product_level: str = "l2a", scale: float = S2_SCALE, offset: float = 0.0,
               version: str | None = None) -> str:
    """File name of the scaled graph: package version, variant and scaling, so a change makes a new file."""
    _check_variant(bands, product_level)
    tag = hashlib.sha256(json.dumps([scale, offset]).encode()).hexdigest()[:8]
    return f"ukis-csmask-{version or installed_version()}-{bands}b-{product_level}-{tag}.onnx"


def csmask_model(dest: str, bands: int = 6, product_level: str = "l2a", scale: float = S2_SCALE,
                 offset: float = 0.0, storage_options: dict[str, Any] | None = None) -> str:
    """Write (once) the graph taking ``bands`` store bands (``BANDS[:bands]``) at ``dest``; returns ``dest``.

    Reflectance = value * ``scale`` + ``offset``: Sentinel-2 L1C and L2A
    harmonised (what build_mosaic's Sentinel-2 datasets hold) 1e-4, 0;
    Landsat Collection 2 Level-2 surface reflectance 2.75e-5, -0.2.
    ``product_level`` picks the graph trained on top-of-atmosphere (``l1c``)
    or surface (``l2a``) reflectance. A file already at ``dest`` is kept: the
    name of ``model_name`` says what it holds.
    """
    _check_variant(bands, product_level)
    if uris.exists(dest, storage_options):
        return dest
    uris.write_bytes_atomic(dest, scaled_graph(bands, product_level, scale, offset), storage_options)
    return dest


def scaled_graph(bands: int, product_level: str, scale: float, offset: float) -> bytes:
    """The serialised ONNX model: the package's graph behind value -> standardised reflectance."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    version = installed_version()
    folder = resources.files(PACKAGE)
    stem = f"model_{bands}b_{product_level}"
    meta = json.loads(folder.joinpath(f"{stem}.json").read_text())
    stats = meta["data"]["dataset_statistics"]
    if tuple(stats["band_names"]) != BANDS[:bands] or meta["data"]["target_size"] != [PATCH_SIZE, PATCH_SIZE]:
        raise RuntimeError(f"{DISTRIBUTION} {version}: {stem}.json describes bands {stats['band_names']} and "
                           f"tiles {meta['data']['target_size']}; rasterflow knows {BANDS[:bands]}, 256 px")
    model = onnx.load_model_from_string(folder.joinpath(f"{stem}.onnx").read_bytes())
    graph = model.graph
    source = graph.input[0].name
    shape = (1, bands, 1, 1)
    consts = {"rf_mean": stats["img"][0], "rf_std": stats["img"][1]}
    steps: list[tuple[str, str]] = []
    divisor = round(1 / scale)
    if abs(divisor * scale - 1) < 1e-12:  # divide, as value / 10000 is done by users of the reference
        consts["rf_scale"], steps = [float(divisor)] * bands, [("Div", "rf_scale")]
    else:
        consts["rf_scale"], steps = [scale] * bands, [("Mul", "rf_scale")]
    if offset:
        consts["rf_offset"] = [offset] * bands
        steps.append(("Add", "rf_offset"))
    steps += [("Sub", "rf_mean"), ("Div", "rf_std")]
    values = "values"
    nodes, current = [], values
    for k, (op, const) in enumerate(steps):
        out = source if k == len(steps) - 1 else f"rf_step{k}"
        nodes.append(helper.make_node(op, [current, const], [out], name=f"rasterflow_{op.lower()}_{k}"))
        current = out
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32).reshape(shape), name)
                             for name, v in consts.items())
    new_input = helper.make_tensor_value_info(values, onnx.TensorProto.FLOAT, ["batch", bands, PATCH_SIZE,
                                                                              PATCH_SIZE])
    graph.input.remove(graph.input[0])
    graph.input.insert(0, new_input)
    for i, node in enumerate(nodes):
        graph.node.insert(i, node)
    del model.metadata_props[:]
    for key, value in {"source": f"{DISTRIBUTION} {version} ({stem}.onnx, Apache-2.0, DLR)",
                       "bands": ",".join(BANDS[:bands]), "labels": ",".join(LABELS),
                       "reflectance": f"value * {scale} + {offset}",
                       "written_by": "rasterflow csmask_model"}.items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString(deterministic=True)


def _check_variant(bands: int, product_level: str) -> None:
    if bands not in (4, 6):
        raise InvalidParameterError("bands", bands, "ukis-csmask has 4-band and 6-band models",
                                    "4 (blue, green, red, nir) or 6 (+ swir16, swir22; more accurate)")
    if product_level not in ("l1c", "l2a"):
        raise InvalidParameterError("product_level", product_level, "ukis-csmask has models for top-of-"
                                    "atmosphere and surface reflectance", "'l1c' or 'l2a'")


def local_model(bands: int = 6, product_level: str = "l2a", scale: float = S2_SCALE, offset: float = 0.0,
                folder: Path | None = None) -> Path:
    """``csmask_model`` in the local model cache (or ``folder``): for predict_mosaic on any mosaic."""
    from ..predict_mosaic.model import model_cache_dir

    target = (folder or model_cache_dir()) / model_name(bands, product_level, scale, offset)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(csmask_model(str(target), bands, product_level, scale, offset))
