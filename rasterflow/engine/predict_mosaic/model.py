"""Models: fetched once, checked (model_check), loaded once per device, run in batches.

PyTorch programs run as torch modules; ONNX models run on onnxruntime behind
the same interface (onnx_model).

A model is loaded once per process and device and shared by the tasks of a
run; forward passes on a device are serialised by a lock, so concurrent block
tasks overlap their reading and merging with one model's compute instead of
oversubscribing the cores.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InvalidParameterError
from .. import uris
from .model_check import ACCEPTED, ModelFormat, check_pt2_archive, model_format, refuse
from .onnx_model import load_onnx, onnxruntime_has_cuda

# ---------------------------------------------------------------- fetching


def model_cache_dir() -> Path:
    """Where remote models are copied (``RASTERFLOW_MODEL_CACHE`` overrides)."""
    root = (os.environ.get("RASTERFLOW_MODEL_CACHE")
            or os.path.join(tempfile.gettempdir(), "rasterflow-models"))
    return Path(root)


def fetch_model(uri: str, storage_options: dict[str, Any] | None = None) -> Path:
    """A local file holding the model at ``uri`` (remote ones are copied once).

    torch reads archives by seeking in them, so a remote model is copied to a
    cache file named by its URI and ETag/mtime; the copy is written aside and
    renamed, so a concurrent task never reads half a file.
    """
    if uris.is_local(uri):
        path = Path(uris.local_path(uri)).expanduser()
        if not path.is_file():
            raise InvalidParameterError("model_path", uri, "no such file", ACCEPTED)
        return path.resolve()
    try:
        stamp = uris.file_fingerprint(uri, storage_options)
    except FileNotFoundError:
        raise InvalidParameterError("model_path", uri, "no such file or object", ACCEPTED) from None
    name = hashlib.sha256(f"{uri}\n{stamp}".encode()).hexdigest()[:24]
    suffix = Path(uri.split("?", 1)[0]).suffix[:8]
    target = model_cache_dir() / f"{name}{suffix}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with uris.open_input(uri, storage_options) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        os.replace(tmp, target)
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    """A model ready to run on ``device``; ``static_*`` are None when dynamic or unknown."""

    module: Any
    device: str
    format: ModelFormat
    source: str  # the model_path the user gave, for messages
    static_batch: int | None = None
    static_channels: int | None = None
    static_hw: tuple[int | None, int | None] = (None, None)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # input -> output shape
    probed: dict[tuple[int, ...], tuple[int, ...]] = field(default_factory=dict, repr=False)
    # input shape -> seconds per patch of a timed batch (dry runs' estimates)
    timed: dict[tuple[int, ...], float] = field(default_factory=dict, repr=False)


def resolve_device(device: str, fmt: ModelFormat | None = None) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; ``cuda`` without one is an error.

    For an ONNX model a GPU is usable when onnxruntime has its CUDA provider
    too (onnxruntime-gpu); explicit ``cuda`` without it fails when the model loads.
    """
    import torch

    if device == "auto":
        usable = torch.cuda.is_available() and (fmt != "onnx" or onnxruntime_has_cuda())
        return "cuda" if usable else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidParameterError("device", device, "no CUDA GPU is available to this process "
                                        f"(torch {torch.__version__}, torch.cuda.is_available() is False)",
                                        "'cpu', or 'auto' to use a GPU only when there is one")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InvalidParameterError("device", device, f"only {torch.cuda.device_count()} GPU(s) here",
                                        f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


_LOADED: OrderedDict[tuple[str, str, str], LoadedModel] = OrderedDict()
_LOADED_LOCK = threading.Lock()
_LOADED_MAX = 4


def load_model(path: Path, sha256: str, device: str, shown: str | None = None) -> LoadedModel:
    """Check and load the model once per process and device (tasks share it)."""
    key = (str(path), sha256, device)
    with _LOADED_LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
        model = _load(path, device, shown or str(path))
        _LOADED[key] = model
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.popitem(last=False)
        return model


def _load(path: Path, device: str, shown: str) -> LoadedModel:
    import torch

    fmt = model_format(path, shown)
    if fmt == "onnx":
        runner, (batch, channels, h, w) = load_onnx(path, device, shown)
        return LoadedModel(module=runner, device=device, format=fmt, source=shown, static_batch=batch,
                           static_channels=channels, static_hw=(h, w))
    if fmt == "torchscript":
        try:
            module = torch.jit.load(str(path), map_location=device).eval()
        except Exception as exc:
            raise refuse(shown, f"could not be loaded as TorchScript ({exc})") from None
        return LoadedModel(module=module, device=device, format=fmt, source=shown)
    check_pt2_archive(path, shown)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise refuse(shown, f"could not be loaded as a torch.export archive ({exc})") from None
    user_inputs = program.graph_signature.user_inputs
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs]
    if len(inputs) != 1:
        raise refuse(shown, f"takes {len(inputs)} inputs; one (B, C, H, W) float32 tensor is expected")
    if device != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    shape = inputs[0].meta["val"].shape
    if len(shape) != 4:
        raise refuse(shown, f"takes a {len(shape)}-d input; a (B, C, H, W) tensor is expected")
    static = [d if isinstance(d, int) else None for d in shape]
    module = program.module(check_guards=False)  # guards are archive code: never exec'd
    return LoadedModel(module=module, device=device, format=fmt, source=shown, static_batch=static[0],
                       static_channels=static[1], static_hw=(static[2], static[3]))


# ---------------------------------------------------------------- running


class BatchRunner:
    """Runs batches of patches through a model; yields outputs as numpy, in order.

    ``activation`` is ``softmax`` (over the label axis) or None; ``keep`` are
    the output channels to return (after the softmax over all of them). On a
    GPU, batches go through pinned host buffers with non-blocking copies and
    one event per batch; batch i+1 is queued before batch i is handed back,
    so transfers and kernels overlap the caller's merging, and nothing waits
    per patch. On the CPU the model runs where the data is.
    """

    def __init__(self, model: LoadedModel, n_labels: int, activation: str | None,
                 keep: list[int] | None = None):
        self.model = model
        self.n_labels = n_labels
        self.activation = activation
        self.keep = keep
        self.checked = False

    def _forward(self, x):
        import torch

        try:
            out = self.model.module(x)
        except torch.cuda.OutOfMemoryError:
            raise InvalidParameterError("max_batch_size", x.shape[0],
                                        f"out of GPU memory on a batch of shape {tuple(x.shape)}",
                                        "a smaller max_batch_size") from None
        except Exception as exc:
            raise InvalidParameterError(
                "model_path", self.model.source,
                f"the model failed on an input of shape {tuple(x.shape)} float32 "
                f"(batch, channels, height, width): {type(exc).__name__}: {str(exc)[:300]}",
                "a model taking (B, C, H, W) float32 with C = the number of features "
                "(times 2 for change detection)",
            ) from None
        if not self.checked:
            check_output(tuple(x.shape), out, self.n_labels, self.model.source)
            self.checked = True
        if self.activation == "softmax":
            out = torch.softmax(out.float(), dim=1)
        if self.keep is not None and self.keep != list(range(out.shape[1])):
            out = out[:, self.keep]
        return out

    def run(self, batches):
        import torch

        if self.model.device == "cpu":
            for batch in batches:
                with self.model.lock, torch.inference_mode():
                    out = self._forward(torch.from_numpy(batch))
                    yield out.float().numpy()
            return
        yield from self._run_cuda(batches)

    def _run_cuda(self, batches):  # pragma: no cover - no GPU on the test machines
        import torch

        device = torch.device(self.model.device)
        stream = torch.cuda.current_stream(device)
        pending = None  # (event, host output, n)
        in_bufs: list = [None, None]
        out_bufs: list = [None, None]
        for i, batch in enumerate(batches):
            slot = i % 2
            host_in = in_bufs[slot]
            if host_in is None or host_in.shape[1:] != batch.shape[1:] or host_in.shape[0] < batch.shape[0]:
                host_in = in_bufs[slot] = torch.empty(batch.shape, dtype=torch.float32).pin_memory()
            n = batch.shape[0]
            # the previous use of this slot finished: its event was waited on
            host_in[:n].numpy()[...] = batch
            with self.model.lock, torch.inference_mode():
                x = host_in[:n].to(device, non_blocking=True)
                out = self._forward(x)
                host_out = out_bufs[slot]
                if host_out is None or host_out.shape[1:] != out.shape[1:] or host_out.shape[0] < n:
                    host_out = out_bufs[slot] = torch.empty(out.shape, dtype=torch.float32).pin_memory()
                host_out[:n].copy_(out, non_blocking=True)
                event = torch.cuda.Event()
                event.record(stream)
            if pending is not None:
                yield _finish(pending)
            pending = (event, host_out, n)
        if pending is not None:
            yield _finish(pending)


def _finish(pending):  # pragma: no cover - GPU only
    event, host_out, n = pending
    event.synchronize()
    return host_out[:n].numpy().copy()


def check_output(in_shape: tuple[int, ...], out: Any, n_labels: int, source: str) -> None:
    """The model's output must be (B, len(labels), H, W) for a (B, C, H, W) input."""
    import torch

    if not isinstance(out, torch.Tensor):
        raise InvalidParameterError("model_path", source,
                                    f"returned {type(out).__name__} for an input of shape {in_shape}; "
                                    "a single (B, labels, H, W) tensor is expected")
    shape = tuple(out.shape)
    if len(shape) == 4 and shape[0] == in_shape[0] and shape[2:] == in_shape[2:] and shape[1] != n_labels:
        raise InvalidParameterError("labels", n_labels,
                                    f"the model returns {shape[1]} channels (output shape {shape} "
                                    f"for an input of shape {in_shape}) but {n_labels} labels were given",
                                    f"{shape[1]} label names, one per output channel")
    if len(shape) != 4 or shape[0] != in_shape[0] or shape[2:] != in_shape[2:]:
        raise InvalidParameterError("model_path", source,
                                    f"returned shape {shape} for an input of shape {in_shape}; "
                                    "predict_mosaic needs (B, labels, H, W) with the input's batch, height "
                                    "and width")


def probe(model: LoadedModel, in_channels: int, patch_size: int, batch: int,
          n_labels: int) -> tuple[int, ...]:
    """One forward pass on zeros, so a wrong model fails the plan, before anything is written.

    A shape that passed is remembered with the loaded model (itself kept per
    file content and device), so repeated calls in one session skip the pass:
    on CPU it costs as much as two patches of the real run.
    """
    import torch

    key = (batch, in_channels, patch_size, patch_size)
    if key in model.probed:
        check_output(key, torch.empty(model.probed[key], device="meta"), n_labels, model.source)
        return model.probed[key]
    runner = BatchRunner(model, n_labels, activation=None)
    zeros = np.zeros(key, np.float32)
    with model.lock, torch.inference_mode():
        out = runner._forward(torch.from_numpy(zeros).to(model.device))
    model.probed[key] = tuple(out.shape)
    return model.probed[key]


def seconds_per_patch(model: LoadedModel, in_channels: int, patch_size: int, batch: int) -> float:
    """Forward time per patch on the model's device, for a dry run's estimate.

    The faster of two timed batches of zeros of the run's patch shape, after a
    warm-up batch (a first call pays for allocation and kernel selection);
    remembered with the loaded model, like the probe. Real patches cost the
    same: the work depends on the shape, not the values. Batches of at most 8
    patches (the run's own size for a static batch) keep a dry run quick; a
    forward pass costs about the same per patch beyond that.
    """
    import time

    import torch

    batch = model.static_batch or min(batch, 8)
    key = (batch, in_channels, patch_size, patch_size)
    if key not in model.timed:
        runner = BatchRunner(model, 0, activation=None)
        runner.checked = True  # the plan's probe checked the output shape
        zeros = torch.zeros(key, device=model.device)
        timings = []
        with model.lock, torch.inference_mode():
            for _ in range(3):
                start = time.perf_counter()
                runner._forward(zeros)
                if model.device.startswith("cuda"):
                    torch.cuda.synchronize(model.device)
                timings.append(time.perf_counter() - start)
        model.timed[key] = min(timings[1:]) / batch
    return model.timed[key]
