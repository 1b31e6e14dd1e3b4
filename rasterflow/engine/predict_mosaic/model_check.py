"""Model files checked before a byte of them is unpickled or executed.

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

ONNX (``.onnx``, a protobuf ``ModelProto``) holds data, not code: parsing
it builds messages and never imports or calls anything. What an ONNX file
can still ask of a runtime is to load a shared library (custom-op domains,
which onnxruntime runs only after ``register_custom_ops_library``, which we
never call) and to read other files (tensors stored as "external data" at a
path the file names, relative or not). ``check_onnx_model`` parses the file
with ``onnx`` (without following external data) and refuses, before
onnxruntime sees it: operators outside the standard domains (``ai.onnx``,
``ai.onnx.ml``) and onnxruntime's built-in ``com.microsoft`` contrib ops,
unless they call a function defined in the file whose body passes the same
rule (checked recursively, subgraphs of If/Loop/Scan included); any tensor
stored outside the file; more than one input or output; an input that is not
a 4-d float32 tensor.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Literal

from ...errors import InvalidParameterError

ModelFormat = Literal["pt2", "torchscript", "onnx"]
ACCEPTED = (
    "a torch.export archive (.pt2 written by torch.export.save), a TorchScript archive "
    "(torch.jit.save) or an ONNX model (.onnx, one file, standard operators; runs with onnxruntime: "
    "pip install 'rasterflow[onnx]'); export a checkpoint with torch.export.export(model.eval(), "
    "(example,), dynamic_shapes=...) then torch.export.save"
)
ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
_ONNX_FLOAT = 1  # TensorProto.FLOAT
_ONNX_FIELD1_VARINT = 0x08  # how a serialised ModelProto starts: field 1 (ir_version), a varint
_PICKLE_PROTOCOL_MARK = b"\x80"  # PROTO opcode: how every pickle of protocol >= 2 starts


def refuse(path: str, problem: str) -> InvalidParameterError:
    return InvalidParameterError("model_path", path, problem, ACCEPTED)


def model_format(path: Path, shown: str | None = None) -> ModelFormat:
    """Which archive ``path`` is; any pickle is refused here, unread."""
    shown = shown or str(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head[:1] == _PICKLE_PROTOCOL_MARK:
            raise refuse(shown, "is a pickle stream (pickle.dump or a legacy torch.save); loading it would "
                                 "run code named in the file, so it is refused unread")
        if head[:1] == bytes([_ONNX_FIELD1_VARINT]) or shown.lower().split("?", 1)[0].endswith(".onnx"):
            return "onnx"  # parsed (and refused if it is not one) by check_onnx_model
        raise refuse(shown, "is not a PyTorch model archive (not a zip file) nor an ONNX model")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        prefix = _single_prefix(names)
        rel = {n.split("/", 1)[1] for n in names if "/" in n}
        if prefix is not None and "archive_format" in rel:
            if zf.read(prefix + "archive_format").decode(errors="replace").strip() == "pt2":
                return "pt2"
    if (prefix is not None and "data.pkl" in rel and "constants.pkl" in rel
            and any(n.startswith("code/") for n in rel)):
        return "torchscript"
    if "data.pkl" in rel:
        raise refuse(shown, "is a torch.save checkpoint (a pickle in a zip); loading it would run code "
                             "named in the file, so it is refused unread")
    raise refuse(shown, "is a zip file but neither a torch.export nor a TorchScript archive")


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
                raise refuse(shown, "holds AOTInductor-compiled native code, which loading would execute; "
                                     "save the ExportedProgram with torch.export.save instead")
            if not _PT2_ENTRY.fullmatch(rel):
                raise refuse(shown, "has an entry torch.export.save does not write for a plain model "
                                    f"({rel!r}); "
                                     "pickled payloads, legacy layouts and compiled artefacts are refused")
        models = [n for n in names if n[len(prefix):].startswith("models/")]
        if len(models) != 1:
            raise refuse(shown, f"holds {len(models)} exported programs; one is expected")
        model_name = models[0][len(prefix) + len("models/") : -len(".json")]
        for config in (f"data/weights/{model_name}_weights_config.json",
                       f"data/constants/{model_name}_constants_config.json"):
            if prefix + config not in names:
                raise refuse(shown, f"lacks {config}")
            for fqn, meta in json.loads(zf.read(prefix + config))["config"].items():
                if (meta.get("use_pickle")
                        or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_"))):
                    raise refuse(shown, f"stores {fqn!r} as a pickled object (a tensor subclass, TorchScript "
                                         "object or opaque constant); only plain tensors are accepted")
        program = json.loads(zf.read(models[0]))
        _check_program(program, shown)
        sample = prefix + f"data/sample_inputs/{model_name}.pt"
        if sample in names and zf.getinfo(sample).file_size:
            try:
                torch.load(io.BytesIO(zf.read(sample)), weights_only=True)
            except Exception as exc:  # the restricted unpickler refuses anything but tensors and containers
                raise refuse(shown, "its sample inputs need more than the weights-only unpickler allows "
                                    f"({exc})") from None


def _check_program(node: Any, shown: str) -> None:
    """Walk the program's JSON: node targets, shape expressions, strings."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                stack.append(key)
                if key == "target" and isinstance(value, str) and not _TARGET.fullmatch(value):
                    raise refuse(shown, f"calls {value!r}; only torch.ops, operator and math functions "
                                        "are accepted")
                if key == "expr_str" and isinstance(value, str):
                    _check_sympy_literal(value, shown)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and _CONTROL.search(item):
            raise refuse(shown, "contains control characters in its program text")


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
        raise refuse(shown, f"has a shape expression that does not parse: {text[:80]!r}") from None
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
            raise refuse(shown, f"has a shape expression that is not a plain sympy literal: {text[:80]!r}")


# ---------------------------------------------------------------- ONNX


def check_onnx_model(path: Path, shown: str | None = None) -> Any:
    """The parsed ``ModelProto`` once nothing in it reaches outside the file or past standard operators.

    See the module docstring. Raises when the ``onnx`` package is missing,
    naming the extra that brings it.
    """
    shown = shown or str(path)
    onnx = import_onnx_support(shown, "onnx")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # a protobuf DecodeError, or a truncated file
        raise refuse(shown, f"is not a valid ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise refuse(shown, "is not an ONNX model (no graph)")
    functions = {(f.domain, f.name) for f in model.functions}
    for domain in [o.domain for o in model.opset_import]:
        if domain not in ONNX_DOMAINS and not any(d == domain for d, _ in functions):
            raise refuse(shown, f"imports the operator domain {domain!r}, which needs a custom-op library; "
                                "only the standard ONNX domains and onnxruntime's com.microsoft ops are run")
    graphs = [model.graph] + [_function_as_graph(onnx, f) for f in model.functions]
    for graph in _walk_graphs(onnx, graphs):
        _check_onnx_graph(onnx, graph, functions, shown)
    _check_onnx_signature(model.graph, shown)
    return model


def import_onnx_support(shown: str, module: str) -> Any:
    """``onnx`` or ``onnxruntime``, or a refusal naming the extra that installs them."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InvalidParameterError(
            "model_path", shown, f"is an ONNX model, and running one needs the {module} package",
            "pip install 'rasterflow[onnx]' (onnx and onnxruntime; onnxruntime-gpu for CUDA)",
        ) from None


def _function_as_graph(onnx: Any, function: Any) -> Any:
    return onnx.helper.make_graph(list(function.node), function.name, [], [])


def _walk_graphs(onnx: Any, graphs: list[Any]):
    """Every graph and subgraph (If/Loop/Scan bodies), depth first."""
    stack = list(graphs)
    while stack:
        graph = stack.pop()
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)


def _check_onnx_graph(onnx: Any, graph: Any, functions: set[tuple[str, str]], shown: str) -> None:
    tensors = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
    for node in graph.node:
        if node.domain not in ONNX_DOMAINS and (node.domain, node.op_type) not in functions:
            raise refuse(shown, f"uses the operator {node.domain}::{node.op_type} (node {node.name!r}), "
                                "which needs a custom-op library; only the standard ONNX domains, "
                                "onnxruntime's com.microsoft ops and functions defined in the file are run")
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                tensors.append(attr.t)
            elif attr.type == onnx.AttributeProto.TENSORS:
                tensors.extend(attr.tensors)
            elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                tensors.append(attr.sparse_tensor.values)
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            where = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise refuse(shown, f"stores the tensor {tensor.name!r} outside the file (external data at "
                                f"{where!r}); save it whole with onnx.save_model(model, path, "
                                "save_as_external_data=False)")


def _check_onnx_signature(graph: Any, shown: str) -> None:
    """One 4-d float32 input (initialisers that old exporters list as inputs are not) and one output."""
    constants = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise refuse(shown, f"takes {len(inputs)} inputs; one (B, C, H, W) float32 tensor is expected")
    tensor_type = inputs[0].type.tensor_type
    if tensor_type.elem_type != _ONNX_FLOAT:
        raise refuse(shown, f"takes an input of ONNX element type {tensor_type.elem_type}; float32 (1) is "
                            "expected")
    rank = len(tensor_type.shape.dim)
    if tensor_type.HasField("shape") and rank != 4:
        raise refuse(shown, f"takes a {rank}-d input; a (B, C, H, W) tensor is expected")
    if len(graph.output) != 1:
        raise refuse(shown, f"returns {len(graph.output)} outputs; one (B, labels, H, W) tensor is "
                            "expected")
