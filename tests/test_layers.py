"""The house has one direction: imports only go down the layers (docs/architecture.md).

cli -> runner -> client -> deploy -> flows -> tasks -> (params, config) -> engine -> (enums, errors).
Every import in the package, lazy ones inside functions included, is read
from the syntax tree and checked against that order: a module may import its
own layer and the layers below it, never one above. The engine, in
particular, imports only itself, enums and errors, so it runs without Prefect.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rasterflow

PACKAGE = Path(rasterflow.__file__).parent

# Layer of each top-level part of the package, bottom up. params and config are
# declarations the layers above the engine share; neither imports the other.
# view (the map viewer's web server) and services (background servers) serve the
# client and the command line, beside deploy; the runner (calls of the command line in a warm
# process) sits between the client and the command line.
LAYERS = {
    "enums": 0, "errors": 0,
    "engine": 1,
    "params": 2, "config": 2,
    "tasks": 3,
    "flows": 4,
    "deploy": 5, "view": 5, "services": 5,
    "client": 6,
    "runner": 7,
    "cli": 8,
}


def part_of(module: str) -> str:
    """``rasterflow.engine.store`` -> ``engine``; the package root is ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if path.name == "__init__.py" else parts)


def imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module) of every rasterflow import in ``path``, relative ones resolved."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "rasterflow"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "rasterflow":
                continue
            if target.count(".") == 0:  # from rasterflow import x, from .. import x
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


def upward_imports(path: Path, root: Path = PACKAGE) -> list[str]:
    """The imports of ``path`` that reach a layer above its own (or the package root)."""
    source = part_of(module_name(path, root))
    if source == "__init__":
        return []  # the package's public face: names from every layer, lazily
    upward = []
    for line, target in imported_modules(path, root):
        dest = part_of(target)
        if dest != source and (dest not in LAYERS or LAYERS[dest] >= LAYERS[source]):
            upward.append(f"line {line}: {target}")
    return upward


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "samples" not in p.parts)


def test_the_layers_cover_the_package():
    assert {part_of(module_name(p, PACKAGE)) for p in modules()} - {"__init__"} == set(LAYERS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down(path):
    assert not upward_imports(path), f"{path.relative_to(PACKAGE)} imports up the layers"


def test_the_engine_needs_no_prefect():
    """No engine module names Prefect: the engine runs in notebooks and Dask jobs as it is."""
    offenders = []
    for path in (PACKAGE / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n.split(".")[0] == "prefect"]
    assert not offenders


def test_an_upward_import_is_caught(tmp_path):
    """Planted modules that import up, absolutely, relatively and lazily, are each found."""
    root = tmp_path / "rasterflow"
    engine = root / "engine" / "sub"
    engine.mkdir(parents=True)
    (engine / "bad.py").write_text(
        "from ...params import BuildGtiMosaicParams\nimport rasterflow.flows.runtime\n"
        "def f():\n    from ... import config\n    from ..store import x\n")
    (root / "config.py").write_text("from . import params\n")
    assert upward_imports(engine / "bad.py", root) == [
        "line 1: rasterflow.params", "line 2: rasterflow.flows.runtime", "line 4: rasterflow.config"]
    assert upward_imports(root / "config.py", root) == ["line 1: rasterflow.params"]  # declarations sideways
