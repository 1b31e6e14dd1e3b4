"""Stable hashes: of requests (output paths) and of our own code (cache keys).

A cache key that ignored the code would serve results computed by an older,
possibly buggy, engine; one that included the run id would never hit.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from .. import __version__


def stable_hash(obj: Any, length: int = 64) -> str:
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@cache
def code_fingerprint() -> str:
    """Package version plus a hash of the engine and task sources."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(__version__.encode())
    for path in sorted([*root.glob("engine/*.py"), *root.glob("tasks/*.py")]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
