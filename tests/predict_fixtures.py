"""Models and stores for the predict_mosaic tests, made by code (no committed fixtures).

Models are tiny fully convolutional nets exported with ``torch.export`` (or
scripted with TorchScript), with a known receptive field, so the tests can
compare tiled prediction against one forward pass over a whole image. Stores
are built from the bundled real samples by the real mosaic engine (GDAL,
Zarr), without Prefect.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from rasterflow.engine.build_gti_mosaic.plan import plan_gti_mosaic
from rasterflow.engine.build_gti_mosaic.shard import build_shard
from rasterflow.engine.store import commit_store, create_store
from rasterflow.params import BuildGtiMosaicParams

SAMPLES = Path(__file__).resolve().parents[1] / "rasterflow" / "samples"
RGB = ["blue", "green", "red"]
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "rasterflow" / "models" / "landsat8_water.pt2"


class Fcn(torch.nn.Module):
    """Three 3x3 convolutions: receptive field 7 (radius 3), so clip_size >= 3 is exact."""

    def __init__(self, in_channels: int, out_channels: int, seed: int = 0, scale: float = 1000.0):
        super().__init__()
        torch.manual_seed(seed)
        self.scale = scale
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, out_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x / self.scale - 7.0)


class FlattenHead(torch.nn.Module):
    """Works only on 32 x 32 patches: fails on any other input shape."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3 * 32 * 32, 2 * 32 * 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(x.shape[0], 3 * 32 * 32)).reshape(x.shape[0], 2, 32, 32)


def export(model: torch.nn.Module, path: Path, channels: int,
           dynamic_batch: bool = True, batch: int = 2) -> Path:
    """A .pt2 with dynamic height and width (and batch unless told otherwise)."""
    dims = {2: torch.export.Dim("h", min=8, max=4096), 3: torch.export.Dim("w", min=8, max=4096)}
    if dynamic_batch:
        dims[0] = torch.export.Dim("b", min=1, max=4096)
    program = torch.export.export(model.eval(), (torch.zeros(batch, channels, 32, 32),),
                                  dynamic_shapes={"x": dims})
    torch.export.save(program, path)
    return path


def clear_of_nodata(valid: np.ndarray, radius: int = 3) -> np.ndarray:
    """Valid pixels with no nodata within ``radius`` (the fixtures' receptive field): there a tiled
    prediction equals ``whole_image``'s whatever nodata is fed as (predict fills it per patch)."""
    from scipy import ndimage

    return ndimage.binary_erosion(valid, np.ones((2 * radius + 1,) * 2, bool), border_value=1)


def whole_image(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """The model over a whole (channels, rows, cols) image in one forward pass, nodata (0) as is."""
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(image[None].astype(np.float32)))[0].numpy()


def build_store(root: Path, sample: str, crs_epsg: int, bands: list[str], chunk: int = 128,
                time_column: str | None = None, aoi: str | None = None) -> str:
    """A mosaic store of a bundled sample, built by the mosaic engine without Prefect."""
    folder = SAMPLES / sample
    params = BuildGtiMosaicParams(
        gti=str(folder / "tiles.parquet"), aoi=aoi or str(folder / "aoi.geojson"), bands=bands,
        location_field="location", crs_epsg=crs_epsg, xy_chunksize=chunk,
        shard_size_bytes=chunk * chunk * len(bands) * 2 * 4, time_column=time_column,
    )
    plan = plan_gti_mosaic(params, str(root))
    for store in plan.stores:
        create_store(store.spec, store.fingerprint, plan.provenance)
        for job in store.jobs:
            build_shard(job)
        commit_store(store.spec.uri)
    return plan.stores[0].spec.uri


def rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes] | None = None,
                add: dict[str, bytes] | None = None) -> Path:
    """A copy of a zip archive with entries replaced (by their name after the top folder) or added."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        prefix = zin.namelist()[0].split("/", 1)[0] + "/"
        for info in zin.infolist():
            rel = info.filename[len(prefix):]
            zout.writestr(info.filename, replace.get(rel, zin.read(info.filename)))
        for rel, data in add.items():
            zout.writestr(prefix + rel, data)
    return dst


class Tripwire:
    """Unpickling this creates ``path``: proof that a file was (or was not) unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def torch_save_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class TinyUNet(torch.nn.Module):
    """Batch norm, pooling, bilinear upsampling, a skip connection: what real segmentation nets use."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        block = lambda cin, cout: torch.nn.Sequential(  # noqa: E731
            torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU())
        self.down, self.bottom, self.head = block(3, 8), block(8, 16), torch.nn.Conv2d(24, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x / 1000.0)
        deep = torch.nn.functional.interpolate(self.bottom(torch.nn.functional.max_pool2d(skip, 2)),
                                               scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.head(torch.cat([skip, deep], dim=1))


def export_even(model: torch.nn.Module, path: Path) -> Path:
    """Height and width dynamic but even (2 * Dim), as pooling nets need."""
    dims = {0: torch.export.Dim("b", min=1, max=4096), 2: 2 * torch.export.Dim("h", min=4, max=4096),
            3: 2 * torch.export.Dim("w", min=4, max=4096)}
    program = torch.export.export(model.eval(), (torch.zeros(2, 3, 64, 64),), dynamic_shapes={"x": dims})
    torch.export.save(program, path)
    return path


def onnx_fcn(net: Fcn, path: Path, batch: int | str = "b", size: int | str = "h") -> Path:
    """``net`` as an ONNX graph written by hand with onnx.helper (standard opset 17 operators only).

    Written node by node rather than by torch.onnx.export, so the tests control
    every byte that the checks read (domains, tensors, functions).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    convs = [m for m in net.body if isinstance(m, torch.nn.Conv2d)]
    inits = [numpy_helper.from_array(np.array([net.scale], np.float32), "scale"),
             numpy_helper.from_array(np.array([7.0], np.float32), "seven")]
    nodes = [helper.make_node("Div", ["x", "scale"], ["scaled"]),
             helper.make_node("Sub", ["scaled", "seven"], ["h0"])]
    for k, conv in enumerate(convs):
        inits += [numpy_helper.from_array(conv.weight.detach().numpy(), f"w{k}"),
                  numpy_helper.from_array(conv.bias.detach().numpy(), f"b{k}")]
        last = k == len(convs) - 1
        nodes.append(helper.make_node("Conv", [f"h{k}", f"w{k}", f"b{k}"], ["y" if last else f"c{k}"],
                                      pads=[1, 1, 1, 1], kernel_shape=[3, 3]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"c{k}"], [f"h{k + 1}"]))
    channels = convs[0].in_channels
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, convs[-1].out_channels, size, size])
    model = helper.make_model(helper.make_graph(nodes, "fcn", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save_model(model, str(path))
    return path
