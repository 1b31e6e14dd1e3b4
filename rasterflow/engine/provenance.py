"""Stable hashes of requests and of our own code, and the provenance every output carries.

A cache key that ignored the code would serve results computed by an older,
possibly buggy, engine; one that included the run id would never hit. Output
folders are named by a hash of the request, its inputs' identities and the
code, so an identical call lands on the same stores (and the cache serves
it) while a changed input or engine gets new ones.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

from . import uris

VERSION = version("rasterflow")

PACKAGE = Path(__file__).resolve().parents[1]
# What a task computes depends on: the engine, the tasks around it, and the enumerations
# (a ResamplingMethod's kernel radius decides which tiles a partition reads).
COMPUTING_SOURCES = ("engine/**/*.py", "tasks/**/*.py", "enums.py")


def stable_hash(obj: Any, length: int = 64) -> str:
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def source_fingerprint(root: Path, patterns: tuple[str, ...] = COMPUTING_SOURCES) -> str:
    """A hash of every file under ``root`` that ``patterns`` match, by relative path and content."""
    digest = hashlib.sha256(VERSION.encode())
    files = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@cache
def code_fingerprint() -> str:
    """Package version plus a hash of every module whose change can change an output."""
    return source_fingerprint(PACKAGE)


def request_id(**identity: Any) -> str:
    """The id of a request: its parameters, its inputs' identities and the code."""
    return stable_hash(identity | {"code": code_fingerprint()})


def output_dir(output_root: str, workflow: str, request: str) -> str:
    """``<output_root>/<workflow>/<request id>``: where one request writes."""
    return uris.join(output_root, workflow, request[:16])


def provenance(workflow: str, parameters: dict[str, Any], inputs: dict[str, Any],
               request: str) -> dict[str, Any]:
    """What an output records of how it was made (credentials are never parameters)."""
    return {
        "workflow": workflow,
        "rasterflow_version": VERSION,
        "parameters": parameters,
        "inputs": inputs,
        "request_id": request,
    }
