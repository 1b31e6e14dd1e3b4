"""PyTorch models: fetched, checked without unpickling, loaded once, run in batches.

Accepted formats: a ``torch.export`` archive (``.pt2``, from
``torch.export.save``) and a TorchScript archive (``torch.jit.save``). A
``torch.save`` checkpoint or any other pickle is refused before a byte of it
is unpickled: unpickling runs whatever code the file names.

Why loading a ``.pt2`` here is safe when ``torch.export.load`` alone is not.
Read in torch 2.13 (``torch/export/pt2_archive/_package.py``,
``torch/_export/serde/serialize.py``), ``torch.export.load`` is not a
weights-only loader (pytorch/pytorch#153410 is still open): it calls
``torch.load(..., weights_only=False)`` on payloads flagged ``use_pickle``,
``pickle.loads`` on "opaque" constants, ``torch.load`` on the sample inputs
with a fallback to ``weights_only=False`` when the safe load fails, goes back
to a legacy layout loaded the same way, dlopens AOTInductor libraries,
``sympy.sympify`` (an ``eval``) on the shape expressions of the graph, and
resolves node targets by ``getattr`` from the ``torch`` module (so a graph
can name any function reachable from it); ``ExportedProgram.module()`` then
``exec``s the archive's guard code unless ``check_guards=False``.
``check_pt2_archive`` reads the zip's entry names and JSON (never executing
any of it) and accepts only what the safe paths handle: an allow-list of
entries, no AOTInductor, no legacy files, no pickled payloads, sample inputs
that torch's restricted ``weights_only=True`` unpickler accepts (torch tries
that first on the same bytes, so its fallback never runs), node targets that
are ``torch.ops``/``operator``/``math`` names, shape expressions that are
literal sympy constructors, and no control characters that could end a
comment in the code FX generates. The module is built with
``check_guards=False``. Running a model still runs its operators: a model
from a stranger can compute nonsense or exhaust memory, but not run Python
of its choosing.

TorchScript is accepted as the issue asks, with less to promise: its
``data.pkl`` is read by TorchScript's own C++ unpickler (no Python callables
are imported), but the archive carries TorchScript code, and PyTorch has no
safe mode for ``torch.jit.load`` (SECURITY.md: treat TorchScript like code;
pytorch/pytorch#143403). Use TorchScript models from sources you trust.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import re
import tempfile
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InvalidParameterError
from . import uris

ModelFormat = Literal["pt2", "torchscript"]
ACCEPTED = (
    "a torch.export archive (.pt2 written by torch.export.save) or a TorchScript archive "
    "(torch.jit.save); export a checkpoint with torch.export.export(model.eval(), (example,), "
    "dynamic_shapes=...) then torch.export.save"
)
_PICKLE_PROTOCOL_MARK = b"\x80"  # PROTO opcode: how every pickle of protocol >= 2 starts


def _refuse(path: str, problem: str) -> InvalidParameterError:
    return InvalidParameterError("model_path", path, problem, ACCEPTED)


# ---------------------------------------------------------------- fetching


def model_cache_dir() -> Path:
    """Where remote models are copied (``RASTERFLOW_MODEL_CACHE`` overrides)."""
    root = os.environ.get("RASTERFLOW_MODEL_CACHE") or os.path.join(tempfile.gettempdir(), "rasterflow-models")
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


# ---------------------------------------------------------------- format checks


def model_format(path: Path, shown: str | None = None) -> ModelFormat:
    """Which archive ``path`` is; any pickle is refused here, unread."""
    shown = shown or str(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head[:1] == _PICKLE_PROTOCOL_MARK:
            raise _refuse(shown, "is a pickle stream (pickle.dump or a legacy torch.save); loading it would "
                                 "run code named in the file, so it is refused unread")
        raise _refuse(shown, "is not a PyTorch model archive (not a zip file)")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        prefix = _single_prefix(names)
        rel = {n.split("/", 1)[1] for n in names if "/" in n}
        if prefix is not None and "archive_format" in rel:
            if zf.read(prefix + "archive_format").decode(errors="replace").strip() == "pt2":
                return "pt2"
    if prefix is not None and "data.pkl" in rel and "constants.pkl" in rel and any(n.startswith("code/") for n in rel):
        return "torchscript"
    if "data.pkl" in rel:
        raise _refuse(shown, "is a torch.save checkpoint (a pickle in a zip); loading it would run code "
                             "named in the file, so it is refused unread")
    raise _refuse(shown, "is a zip file but neither a torch.export nor a TorchScript archive")


def _single_prefix(names: list[str]) -> str | None:
    """The one top-level folder every entry sits in (PyTorch archives have one)."""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1 or any("/" not in n for n in names):
        return None
    return tops.pop() + "/"


_PT2_ENTRY = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/[A-Za-z0-9_.-]+\.json|data/sample_inputs/[A-Za-z0-9_.-]+\.pt"
    r"|data/weights/(weight_\d+|[A-Za-z0-9_.-]+_weights_config\.json)"
    r"|data/constants/(tensor_\d+|[A-Za-z0-9_.-]+_constants_config\.json)"
    r"|extra/[^\x00-\x1f]+)"
)
_TARGET = re.compile(
    r"(torch\.ops(\.[A-Za-z_][A-Za-z0-9_]*){2,3}|torch\._?sym_[a-z_]+|_operator\.[a-z_]+|math\.[a-z_0-9]+)"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\x85]")


def check_pt2_archive(path: Path, shown: str | None = None) -> None:
    """Refuse a ``.pt2`` that ``torch.export.load`` would unpickle or execute.

    See the module docstring for why each rule exists. Reads only zip entry
    names and JSON, plus the sample inputs through torch's weights-only
    unpickler.
    """
    import torch

    shown = shown or str(path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        prefix = _single_prefix(names) or ""
        for name in names:
            rel = name[len(prefix):]
            if name.endswith("/"):
                continue
            if rel.startswith("data/aotinductor/"):
                raise _refuse(shown, "holds AOTInductor-compiled native code, which loading would execute; "
                                     "save the ExportedProgram with torch.export.save instead")
            if not _PT2_ENTRY.fullmatch(rel):
                raise _refuse(shown, f"has an entry torch.export.save does not write for a plain model ({rel!r}); "
                                     "pickled payloads, legacy layouts and compiled artefacts are refused")
        models = [n for n in names if n[len(prefix):].startswith("models/")]
        if len(models) != 1:
            raise _refuse(shown, f"holds {len(models)} exported programs; one is expected")
        model_name = models[0][len(prefix) + len("models/") : -len(".json")]
        for config in (f"data/weights/{model_name}_weights_config.json", f"data/constants/{model_name}_constants_config.json"):
            if prefix + config not in names:
                raise _refuse(shown, f"lacks {config}")
            for fqn, meta in json.loads(zf.read(prefix + config))["config"].items():
                if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")):
                    raise _refuse(shown, f"stores {fqn!r} as a pickled object (a tensor subclass, TorchScript "
                                         "object or opaque constant); only plain tensors are accepted")
        program = json.loads(zf.read(models[0]))
        _check_program(program, shown)
        sample = prefix + f"data/sample_inputs/{model_name}.pt"
        if sample in names and zf.getinfo(sample).file_size:
            try:
                torch.load(io.BytesIO(zf.read(sample)), weights_only=True)
            except Exception as exc:  # the restricted unpickler refuses anything but tensors and containers
                raise _refuse(shown, f"its sample inputs need more than the weights-only unpickler allows ({exc})") from None


def _check_program(node: Any, shown: str) -> None:
    """Walk the program's JSON: node targets, shape expressions, strings."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                stack.append(key)
                if key == "target" and isinstance(value, str) and not _TARGET.fullmatch(value):
                    raise _refuse(shown, f"calls {value!r}; only torch.ops, operator and math functions are accepted")
                if key == "expr_str" and isinstance(value, str):
                    _check_sympy_literal(value, shown)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and _CONTROL.search(item):
            raise _refuse(shown, "contains control characters in its program text")


_SYMPY_NAMES: frozenset[str] | None = None


def _sympy_names() -> frozenset[str]:
    """Names of sympy and torch sympy classes a shape expression may construct."""
    global _SYMPY_NAMES
    if _SYMPY_NAMES is None:
        import sympy
        import torch.utils._sympy.functions as torch_sympy

        names = set()
        for module in (sympy, torch_sympy):
            for name in dir(module):
                obj = getattr(module, name)
                if not name.startswith("_") and isinstance(obj, type) and issubclass(obj, sympy.Basic):
                    names.add(name)
        _SYMPY_NAMES = frozenset(names)
    return _SYMPY_NAMES


def _check_sympy_literal(text: str, shown: str) -> None:
    """``text`` must be nested constructor calls on literals, e.g. Symbol('s0', integer=True)."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise _refuse(shown, f"has a shape expression that does not parse: {text[:80]!r}") from None
    allowed = _sympy_names()
    for sub in ast.walk(tree):
        ok = isinstance(sub, (ast.Expression, ast.Call, ast.keyword, ast.Load, ast.UnaryOp, ast.USub)) or (
            isinstance(sub, ast.Name) and sub.id in allowed
        ) or (
            isinstance(sub, ast.Constant) and (
                isinstance(sub.value, (bool, int, float))
                or (isinstance(sub.value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", sub.value))
            )
        )
        if isinstance(sub, ast.Call) and not isinstance(sub.func, ast.Name):
            ok = False
        if isinstance(sub, ast.keyword) and (sub.arg is None or sub.arg.startswith("_")):
            ok = False
        if not ok:
            raise _refuse(shown, f"has a shape expression that is not a plain sympy literal: {text[:80]!r}")


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
    probed: dict[tuple[int, ...], tuple[int, ...]] = field(default_factory=dict, repr=False)  # input -> output shape


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; ``cuda`` without one is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
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
    if fmt == "torchscript":
        try:
            module = torch.jit.load(str(path), map_location=device).eval()
        except Exception as exc:
            raise _refuse(shown, f"could not be loaded as TorchScript ({exc})") from None
        return LoadedModel(module=module, device=device, format=fmt, source=shown)
    check_pt2_archive(path, shown)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise _refuse(shown, f"could not be loaded as a torch.export archive ({exc})") from None
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    if len(inputs) != 1:
        raise _refuse(shown, f"takes {len(inputs)} inputs; one (B, C, H, W) float32 tensor is expected")
    if device != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    shape = inputs[0].meta["val"].shape
    if len(shape) != 4:
        raise _refuse(shown, f"takes a {len(shape)}-d input; a (B, C, H, W) tensor is expected")
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

    def __init__(self, model: LoadedModel, n_labels: int, activation: str | None, keep: list[int] | None = None):
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
            raise InvalidParameterError("max_batch_size", x.shape[0], f"out of GPU memory on a batch of shape {tuple(x.shape)}",
                                        "a smaller max_batch_size") from None
        except Exception as exc:
            raise InvalidParameterError(
                "model_path", self.model.source, f"the model failed on an input of shape {tuple(x.shape)} float32 "
                f"(batch, channels, height, width): {type(exc).__name__}: {str(exc)[:300]}",
                "a model taking (B, C, H, W) float32 with C = the number of features (times 2 for change detection)",
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
            host_in[:n].numpy()[...] = batch  # the previous use of this slot finished: its event was waited on
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
        raise InvalidParameterError("model_path", source, f"returned {type(out).__name__} for an input of shape "
                                    f"{in_shape}; a single (B, labels, H, W) tensor is expected")
    shape = tuple(out.shape)
    if len(shape) == 4 and shape[0] == in_shape[0] and shape[2:] == in_shape[2:] and shape[1] != n_labels:
        raise InvalidParameterError("labels", n_labels, f"the model returns {shape[1]} channels (output shape {shape} "
                                    f"for an input of shape {in_shape}) but {n_labels} labels were given",
                                    f"{shape[1]} label names, one per output channel")
    if len(shape) != 4 or shape[0] != in_shape[0] or shape[2:] != in_shape[2:]:
        raise InvalidParameterError("model_path", source, f"returned shape {shape} for an input of shape {in_shape}; "
                                    "predict_mosaic needs (B, labels, H, W) with the input's batch, height and width")


def probe(model: LoadedModel, in_channels: int, patch_size: int, batch: int, n_labels: int) -> tuple[int, ...]:
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
